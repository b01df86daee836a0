//! Publishing events to JetStream as publishers must: subject = eventType
//! (after the deployment's prefix), `Nats-Msg-Id` = eventId.

use anyhow::Context;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use projector_events::{Envelope, Event};

/// How many publishes may await their acks at once.
const IN_FLIGHT: usize = 2000;

/// Publishes to the stream, keeping many publishes in flight.
pub struct Publisher {
    js: jetstream::Context,
    prefix: String,
    pending: Vec<PublishAckFuture>,
}

impl Publisher {
    /// A publisher for subjects under `prefix`.
    pub fn new(js: jetstream::Context, prefix: &str) -> Self {
        Self {
            js,
            prefix: prefix.to_owned(),
            pending: Vec::new(),
        }
    }

    /// Publishes raw bytes on `<prefix><event_type>`, deduplicated by `msg_id`.
    pub async fn publish_raw(
        &mut self,
        event_type: &str,
        msg_id: Option<&str>,
        bytes: Vec<u8>,
    ) -> anyhow::Result<()> {
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        let ack = self
            .js
            .publish_with_headers(
                format!("{}{event_type}", self.prefix),
                headers,
                bytes.into(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("publishing {event_type}"))?;
        self.pending.push(ack);
        if self.pending.len() >= IN_FLIGHT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Publishes an event with its eventId as message id.
    pub async fn publish(&mut self, event: &Event) -> anyhow::Result<()> {
        let id = event.envelope.event_id.to_string();
        self.publish_raw(&event.envelope.event_type, Some(&id), event.to_json_bytes())
            .await
    }

    /// Waits until JetStream has stored everything published so far.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        for ack in self.pending.drain(..) {
            ack.await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("awaiting a publish ack")?;
        }
        Ok(())
    }

    /// Publishes each line of a JSON-lines text; lines that are not valid
    /// events are refused with their line number before anything is sent.
    pub async fn publish_jsonl(&mut self, text: &str) -> anyhow::Result<usize> {
        let events = parse_jsonl(text)?;
        for event in &events {
            self.publish(event).await?;
        }
        self.flush().await?;
        Ok(events.len())
    }
}

/// The events of a JSON-lines file, each checked; an error names the
/// first line that is not a valid event.
pub fn parse_jsonl(text: &str) -> anyhow::Result<Vec<Event>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            Envelope::parse(line.as_bytes()).with_context(|| format!("line {}", n + 1))
        })
        .collect()
}
