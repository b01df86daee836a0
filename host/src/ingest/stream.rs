//! The `EMR_EVENTS` stream and the per-plugin consumers.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};

use uuid::Uuid;

use crate::config::Config;

/// The domains whose subjects the stream captures.
const DOMAINS: [&str; 5] = ["patient", "lab", "radiology", "pharmacy", "encounter"];

/// The stream's subjects: `<prefix>patient.>` and so on.
pub fn stream_subjects(prefix: &str) -> Vec<String> {
    DOMAINS.iter().map(|d| format!("{prefix}{d}.>")).collect()
}

/// Creates the stream if it is missing (file storage, `STREAM_REPLICAS`
/// replicas, duplicate window for `Nats-Msg-Id`), and accepts it as it is if
/// it exists.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &Config,
) -> anyhow::Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: config.stream_name.clone(),
        subjects: stream_subjects(&config.subject_prefix),
        storage: stream::StorageType::File,
        num_replicas: config.stream_replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| format!("creating or opening stream {}", config.stream_name))
}

/// The durable consumer of projection `key` on host `member`: each host
/// reads the stream for the partitions it holds on a consumer of its own.
/// One a host left behind is deleted by the server after
/// [`CONSUMER_IDLE_LIMIT`] without a pull.
pub fn consumer_name(key: &str, member: Uuid) -> String {
    format!("projector-{key}-{}", member.simple())
}

/// How long a consumer may go without a pull before the server deletes it
/// (nats-server 2.9 and later): one of a host that is gone, or of a
/// projection that holds no partition here (it is repositioned when it
/// takes one).
const CONSUMER_IDLE_LIMIT: Duration = Duration::from_secs(15 * 60);

/// A projection's durable pull consumer (named by [`consumer_name`]), filtered to the plugin's subjects
/// (several filter subjects need nats-server 2.10; 2.9 ignores them and
/// delivers the whole stream, and the host skips what the plugin did not
/// ask for). Subjects that overlap, which nats-server refuses as filters,
/// consume the whole stream too.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    config: &Config,
    name: &str,
    subjects: &[String],
) -> anyhow::Result<consumer::PullConsumer> {
    let settings = consumer_config(config, name, subjects, consumer::DeliverPolicy::All);
    stream
        .get_or_create_consumer(name, settings)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("creating consumer {name}"))
}

/// Replaces a plugin's consumer with one for other subjects that starts
/// after everything the old one had acknowledged (whatever was applied
/// beyond that comes again and is skipped as already applied). The plugin's
/// projection must stand still meanwhile and open its consumer again after.
pub async fn replace_consumer(
    stream: &stream::Stream,
    config: &Config,
    name: &str,
    subjects: &[String],
) -> anyhow::Result<()> {
    let floor = stream
        .consumer_info(name)
        .await
        .map(|info| info.ack_floor.stream_sequence)
        .unwrap_or(0);
    reposition(stream, config, name, subjects, floor).await
}

/// Replaces a plugin's consumer with one that delivers, in stream order,
/// everything after `after` (its committed checkpoint): nothing it had out
/// (prefetched, nak'ed, held by a killed host until the ack wait) can then
/// arrive after a later event. A projection repositions each time it
/// starts consuming.
pub async fn reposition(
    stream: &stream::Stream,
    config: &Config,
    name: &str,
    subjects: &[String],
    after: u64,
) -> anyhow::Result<()> {
    let _ = stream.delete_consumer(name).await;
    let start = consumer::DeliverPolicy::ByStartSequence {
        start_sequence: after + 1,
    };
    stream
        .create_consumer(consumer_config(config, name, subjects, start))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("repositioning consumer {name} after {after}"))?;
    Ok(())
}

/// Deletes a consumer, if it is there.
pub async fn delete_consumer(stream: &stream::Stream, name: &str) {
    let _ = stream.delete_consumer(name).await;
}

fn consumer_config(
    config: &Config,
    name: &str,
    subjects: &[String],
    deliver_policy: consumer::DeliverPolicy,
) -> consumer::pull::Config {
    let mut filter_subjects: Vec<String> = if overlapping(subjects) {
        Vec::new()
    } else {
        subjects
            .iter()
            .map(|s| format!("{}{s}", config.subject_prefix))
            .collect()
    };
    let filter_subject = match filter_subjects.len() {
        1 => filter_subjects.remove(0),
        _ => String::new(),
    };
    consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject,
        filter_subjects,
        // A batch acknowledges its last delivery only: it commits every
        // message before it too (see `Projection::apply_messages`).
        ack_policy: consumer::AckPolicy::All,
        ack_wait: config.ack_wait,
        max_ack_pending: (config.batch_size * 4) as i64,
        deliver_policy,
        inactive_threshold: CONSUMER_IDLE_LIMIT,
        ..Default::default()
    }
}

/// Whether some subject would match two of these patterns (a repeated one,
/// `lab.>` and `lab.result`, `lab.*.x` and `lab.y.*`).
fn overlapping(patterns: &[String]) -> bool {
    patterns
        .iter()
        .enumerate()
        .any(|(i, a)| patterns[i + 1..].iter().any(|b| intersect(a, b)))
}

/// Whether one subject matches both patterns: token by token each is the
/// same or a wildcard, until one's `>` takes the rest.
fn intersect(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether a consumer has had every message up to `seq`
/// acknowledged, or has nothing left at all.
pub async fn acknowledged_through(
    stream: &stream::Stream,
    name: &str,
    seq: u64,
) -> anyhow::Result<bool> {
    let info = stream
        .consumer_info(name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(info.ack_floor.stream_sequence >= seq
        || (info.num_pending == 0 && info.num_ack_pending == 0))
}

/// Messages a consumer has not had acknowledged yet.
pub async fn lag(stream: &stream::Stream, name: &str) -> anyhow::Result<u64> {
    let info = stream
        .consumer_info(name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn filter_subjects_that_overlap_are_found() {
        assert!(!overlapping(&subjects(&[
            "encounter.>",
            "lab.order.created",
            "radiology.order.created"
        ])));
        assert!(overlapping(&subjects(&["lab.>", "lab.result.available"])));
        assert!(overlapping(&subjects(&["lab.result", "lab.result"])));
        assert!(overlapping(&subjects(&["lab.*.x", "lab.y.*"])));
        assert!(!overlapping(&subjects(&["lab.*", "lab.a.b"])));
        assert!(!overlapping(&subjects(&["lab.>", "lab"])));
    }
}
