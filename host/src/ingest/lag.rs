//! How far behind a projection is, whichever hosts hold its partitions:
//! for each partition, the stream positions from its checkpoint to the
//! newest event the plugin reads. A partition caught up is at 0; one that
//! nobody holds grows with every event of the plugin.

use anyhow::Context;
use async_nats::jetstream::stream;
use sqlx::PgPool;

use crate::config::Config;
use crate::store::{self, checkpoints};

/// The stream sequence of the newest message on any of `subjects` (without
/// the deployment's `prefix`); 0 when there is none. A partition whose
/// checkpoint is there is caught up.
pub async fn head(
    stream: &stream::Stream,
    prefix: &str,
    subjects: &[String],
) -> anyhow::Result<u64> {
    let mut head = 0;
    for subject in subjects {
        match stream
            .get_last_raw_message_by_subject(&format!("{prefix}{subject}"))
            .await
        {
            Ok(message) => head = head.max(message.sequence),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(anyhow::anyhow!("the newest message on {subject}: {e}")),
        }
    }
    Ok(head)
}

/// Each partition of projection `key`, which reads `subjects`, with how
/// far behind it is, in partition order.
pub async fn partitions_behind(
    pool: &PgPool,
    stream: &stream::Stream,
    config: &Config,
    key: &str,
    subjects: &[String],
) -> anyhow::Result<Vec<(u32, u64)>> {
    let head = head(stream, &config.subject_prefix, subjects).await?;
    let committed = checkpoints::by_partition(pool, key).await?;
    Ok((0..config.partitions)
        .map(|p| {
            let checkpoint = committed.get(&p).copied().unwrap_or(0);
            (p, head.saturating_sub(checkpoint))
        })
        .collect())
}

/// How far behind the slowest of `partitions` is.
pub fn slowest(partitions: &[(u32, u64)]) -> u64 {
    partitions
        .iter()
        .map(|(_, behind)| *behind)
        .max()
        .unwrap_or(0)
}

/// How far behind plugin `name`'s slowest partition is, in its live
/// views: 0 once every event on the subjects its views were built from
/// (as recorded in the database) is handled. Any host, or a tool, can ask.
pub async fn backlog(
    pool: &PgPool,
    stream: &stream::Stream,
    config: &Config,
    name: &str,
) -> anyhow::Result<u64> {
    let recorded = store::recorded(pool, name)
        .await?
        .with_context(|| format!("plugin `{name}` has no recorded views"))?;
    let behind = partitions_behind(pool, stream, config, name, &recorded.subjects).await?;
    Ok(slowest(&behind))
}
