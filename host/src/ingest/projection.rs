//! One plugin's projection: its consumer, its batches, its acks.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, stream};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::Notify;

use super::batch::{self, Item};
use super::stream::ensure_consumer;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::runtime::Plugin;

/// Environment variable for fault injection in tests: when `crash-after-commit`,
/// the process aborts after its first commit, before acking, as a host killed
/// at the worst moment would.
const FAULT_ENV: &str = "PROJECTOR_FAULT";

/// What a projection is doing, for `GET /api/plugins`, and the metrics
/// it moves.
pub struct ProjectionState {
    failure: std::sync::Mutex<Option<String>>,
    metrics: Arc<Metrics>,
}

impl ProjectionState {
    /// A running projection that records into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            failure: std::sync::Mutex::default(),
            metrics,
        }
    }

    /// `running`, or `retrying` with the error that stopped the last batch.
    pub fn describe(&self) -> (&'static str, Option<String>) {
        match self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            None => ("running", None),
            Some(error) => ("retrying", Some(error)),
        }
    }

    fn set(&self, failure: Option<String>) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
    }
}

/// Runs one plugin over the stream.
pub struct Projection {
    plugin: Plugin,
    pool: PgPool,
    stream: stream::Stream,
    config: Arc<Config>,
    redrive: Arc<Notify>,
    state: Arc<ProjectionState>,
    notifier: Notifier,
}

impl Projection {
    /// A projection for `plugin`; `redrive` wakes it to re-drive dead
    /// letters; it reports how it fares in `state`; `notifier` pushes the
    /// notifications each batch commits.
    pub fn new(
        plugin: Plugin,
        pool: PgPool,
        stream: stream::Stream,
        config: Arc<Config>,
        redrive: Arc<Notify>,
        state: Arc<ProjectionState>,
        notifier: Notifier,
    ) -> Self {
        Self {
            plugin,
            pool,
            stream,
            config,
            redrive,
            state,
            notifier,
        }
    }

    /// Consumes until the stream ends; restarts its consumer after NATS errors.
    pub async fn run(self) {
        loop {
            if let Err(e) = self.consume().await {
                self.state.set(Some(format!("{e:#}")));
                tracing::error!(
                    plugin = self.plugin.name(),
                    error = format!("{e:#}"),
                    "projection failed; restarting"
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn consume(&self) -> anyhow::Result<()> {
        let consumer = ensure_consumer(
            &self.stream,
            &self.config,
            self.plugin.name(),
            &self.plugin.info.subjects,
        )
        .await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.batch_size)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.redrive_dead_letters().await?;
        loop {
            tokio::select! {
                first = messages.next() => {
                    let Some(first) = first else { return Ok(()) };
                    let batch = self.gather(first, &mut messages).await?;
                    self.apply_messages(batch).await?;
                    self.state.set(None);
                }
                () = self.redrive.notified() => self.redrive_dead_letters().await?,
            }
        }
    }

    /// A batch: the first message, then what arrives within `BATCH_LINGER_MS`
    /// of it, up to `BATCH_SIZE`. Under a backlog batches fill at once; a
    /// lone event waits at most the linger.
    async fn gather<S, E>(
        &self,
        first: Result<jetstream::Message, E>,
        messages: &mut S,
    ) -> anyhow::Result<Vec<jetstream::Message>>
    where
        S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        let deadline = tokio::time::Instant::now() + self.config.batch_linger;
        let mut batch = vec![first.map_err(|e| anyhow::anyhow!("{e}"))?];
        while batch.len() < self.config.batch_size {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(message)) => batch.push(message.map_err(|e| anyhow::anyhow!("{e}"))?),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Applies a batch of stream messages, then acks them. If the commit
    /// fails they are nak'ed and come back; nothing is acked before commit.
    async fn apply_messages(&self, messages: Vec<jetstream::Message>) -> anyhow::Result<()> {
        let prefix = &self.config.subject_prefix;
        let mut items: Vec<Item> = messages
            .iter()
            .filter_map(|m| {
                let info = m.info().ok()?;
                Some(Item {
                    seq: info.stream_sequence,
                    subject: m
                        .subject
                        .strip_prefix(prefix.as_str())
                        .unwrap_or(&m.subject)
                        .to_owned(),
                    raw: m.payload.to_vec(),
                    redrive: None,
                })
            })
            .collect();
        items.sort_by_key(|i| i.seq);
        items.dedup_by_key(|i| i.seq);
        let started = std::time::Instant::now();
        let outcome = match batch::project(
            &self.plugin,
            &self.pool,
            self.config.max_attempts,
            items,
        )
        .await
        {
            Ok(batch) => {
                let projected = started.elapsed();
                let (applied, dead) = (batch.processed.len(), batch.dead_letters.len());
                let result = batch.commit(&self.pool).await.map_err(anyhow::Error::from);
                let took = started.elapsed();
                if result.is_ok() {
                    self.state
                        .metrics
                        .batch(self.plugin.name(), applied, dead, took);
                }
                tracing::debug!(plugin = self.plugin.name(), messages = messages.len(), ?projected, total = ?took, "batch committed");
                result
            }
            Err(e) => Err(e),
        };
        let notifications = match outcome {
            Ok(notifications) => notifications,
            Err(e) => {
                for m in &messages {
                    let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
                return Err(e.context("applying a batch"));
            }
        };
        if std::env::var(FAULT_ENV).as_deref() == Ok("crash-after-commit") {
            tracing::error!(
                plugin = self.plugin.name(),
                "fault injection: aborting between commit and ack"
            );
            std::process::abort();
        }
        self.notifier.push(notifications);
        for m in &messages {
            m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok(())
    }

    /// Re-applies the dead letters an operator asked to retry.
    async fn redrive_dead_letters(&self) -> anyhow::Result<()> {
        let rows: Vec<(i64, i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, stream_seq, subject, raw FROM dead_letters
             WHERE plugin = $1 AND status = 'retrying' ORDER BY stream_seq",
        )
        .bind(self.plugin.name())
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let items = rows
            .into_iter()
            .map(|(id, seq, subject, raw)| Item {
                seq: seq as u64,
                subject,
                raw,
                redrive: Some(id),
            })
            .collect();
        let batch =
            batch::project(&self.plugin, &self.pool, self.config.max_attempts, items).await?;
        self.notifier.push(batch.commit(&self.pool).await?);
        Ok(())
    }
}
