//! The `EMR_EVENTS` stream and the per-plugin consumers.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};

use crate::config::Config;

/// The domains whose subjects the stream captures.
const DOMAINS: [&str; 5] = ["patient", "lab", "radiology", "pharmacy", "encounter"];

/// The stream's subjects: `<prefix>patient.>` and so on.
pub fn stream_subjects(prefix: &str) -> Vec<String> {
    DOMAINS.iter().map(|d| format!("{prefix}{d}.>")).collect()
}

/// Creates the stream if it is missing (file storage, duplicate window for
/// `Nats-Msg-Id`), and accepts it as it is if it exists.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &Config,
) -> anyhow::Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: config.stream_name.clone(),
        subjects: stream_subjects(&config.subject_prefix),
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| format!("creating or opening stream {}", config.stream_name))
}

/// The durable consumer name of a plugin.
pub fn consumer_name(plugin: &str) -> String {
    format!("projector-{plugin}")
}

/// A plugin's durable pull consumer. One subject pattern becomes the
/// consumer's filter; several (nats-server 2.9 takes one filter) consume the
/// whole stream and the host skips what the plugin did not ask for.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    config: &Config,
    plugin: &str,
    subjects: &[String],
) -> anyhow::Result<consumer::PullConsumer> {
    let filter_subject = match subjects {
        [one] => format!("{}{one}", config.subject_prefix),
        _ => String::new(),
    };
    let name = consumer_name(plugin);
    stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_ack_pending: (config.batch_size * 4) as i64,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("creating consumer {name}"))
}

/// Messages a plugin's consumer has not had acknowledged yet.
pub async fn lag(stream: &stream::Stream, plugin: &str) -> anyhow::Result<u64> {
    let info = stream
        .consumer_info(consumer_name(plugin))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}
