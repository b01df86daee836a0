//! The `checkpoints` table: per projection and partition, the stream
//! sequence every event of the partition up to has been handled (applied,
//! parked, dead-lettered or skipped), and how many were applied and
//! dead-lettered. It moves in each batch's transaction, never backwards.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

/// A projection's checkpoint and counts, over all its partitions.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The projection (a [`super::Target`]'s key).
    pub plugin: String,
    /// Every stream event up to here has been handled, in every partition.
    pub seq: i64,
    /// Events applied.
    pub applied: i64,
    /// Events dead-lettered.
    pub dead_lettered: i64,
}

/// One partition's checkpoint of a projection.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PartitionCheckpoint {
    /// The projection (a [`super::Target`]'s key).
    pub plugin: String,
    /// The partition.
    pub partition: i32,
    /// Every stream event of the partition up to here has been handled.
    pub seq: i64,
}

/// The furthest any partition of a projection has come: a rebuild that
/// has handled everything up to it has applied all the live one has.
pub async fn furthest(pool: &PgPool, key: &str) -> Result<u64, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM checkpoints WHERE plugin = $1")
        .bind(key)
        .fetch_one(pool)
        .await?;
    Ok(seq.unwrap_or(0).max(0) as u64)
}

/// Each partition's checkpoint of projection `key`, by partition; a
/// partition without a row has handled nothing yet.
pub async fn by_partition(pool: &PgPool, key: &str) -> Result<HashMap<u32, u64>, sqlx::Error> {
    let rows: Vec<(i32, i64)> =
        sqlx::query_as("SELECT partition, seq FROM checkpoints WHERE plugin = $1")
            .bind(key)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(p, seq)| (p.max(0) as u32, seq.max(0) as u64))
        .collect())
}

/// Every projection's checkpoint and counts, by projection.
pub async fn all(pool: &PgPool) -> Result<HashMap<String, Checkpoint>, sqlx::Error> {
    let rows: Vec<Checkpoint> = sqlx::query_as(
        "SELECT plugin, min(seq) AS seq, sum(applied)::bigint AS applied,
                sum(dead_lettered)::bigint AS dead_lettered
         FROM checkpoints GROUP BY plugin",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|c| (c.plugin.clone(), c)).collect())
}

/// Every partition's checkpoint of the projections `keys`.
pub async fn partitions(
    pool: &PgPool,
    keys: &[String],
) -> Result<Vec<PartitionCheckpoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT plugin, partition, seq FROM checkpoints WHERE plugin = ANY($1)
         ORDER BY plugin, partition",
    )
    .bind(keys)
    .fetch_all(pool)
    .await
}

/// Events applied plus dead-lettered, summed over the projections `keys`:
/// how many a benchmark's projections have handled.
pub async fn handled(pool: &PgPool, keys: &[String]) -> Result<i64, sqlx::Error> {
    let sum: Option<i64> = sqlx::query_scalar(
        "SELECT sum(applied + dead_lettered)::bigint FROM checkpoints WHERE plugin = ANY($1)",
    )
    .bind(keys)
    .fetch_one(pool)
    .await?;
    Ok(sum.unwrap_or(0))
}

/// A batch's move of its projection's checkpoints.
#[derive(Debug, Clone)]
pub(crate) struct Advance<'a> {
    /// The projection.
    pub key: &'a str,
    /// The batch's highest stream sequence: every partition it moves has
    /// been handled up to here.
    pub to: u64,
    /// The partitions it moves, each at most once.
    pub partitions: Vec<Moved>,
}

/// What a batch did in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// The partition.
    pub partition: u32,
    /// Its events applied.
    pub applied: i64,
    /// Its events dead-lettered.
    pub dead_lettered: i64,
    /// Its lowest stream sequence in the batch: the partition's checkpoint
    /// must be below it (`None`: no stream events of it).
    pub first: Option<u64>,
}

/// A partition whose checkpoint is already at or past the batch's first
/// event of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Behind {
    /// The partition.
    pub partition: u32,
    /// Its committed checkpoint.
    pub checkpoint: u64,
    /// The batch's first stream sequence of it.
    pub first: u64,
}

/// Moves each partition's checkpoint forward from below the batch's first
/// event of it, and returns the transaction's id (the version every
/// document written in it is committed as); `Err` with a partition already
/// at or past the batch's first event of it.
pub(crate) async fn advance(
    tx: &mut Transaction<'_, Postgres>,
    advance: &Advance<'_>,
) -> Result<Result<String, Behind>, sqlx::Error> {
    let mut version = None;
    let mut left: Vec<&Moved> = advance.partitions.iter().collect();
    // The first try finds most rows; a partition's first batch adds its row.
    for first_try in [true, false] {
        if left.is_empty() {
            break;
        }
        if !first_try {
            sqlx::query(
                "INSERT INTO checkpoints (plugin, partition)
                 SELECT $1, unnest($2::int[]) ON CONFLICT DO NOTHING",
            )
            .bind(advance.key)
            .bind(left.iter().map(|m| m.partition as i32).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        let moved = update(tx, advance, &left).await?;
        version = version.or_else(|| moved.first().map(|(_, v)| v.clone()));
        left.retain(|m| !moved.iter().any(|(p, _)| *p == m.partition as i32));
    }
    if let Some(behind) = left.first() {
        let checkpoint: i64 =
            sqlx::query_scalar("SELECT seq FROM checkpoints WHERE plugin = $1 AND partition = $2")
                .bind(advance.key)
                .bind(behind.partition as i32)
                .fetch_one(&mut **tx)
                .await?;
        return Ok(Err(Behind {
            partition: behind.partition,
            checkpoint: checkpoint.max(0) as u64,
            first: behind.first.unwrap_or_default(),
        }));
    }
    match version {
        Some(version) => Ok(Ok(version)),
        // Nothing to move: the transaction's id all the same.
        None => sqlx::query_scalar("SELECT pg_current_xact_id()::xid::text")
            .fetch_one(&mut **tx)
            .await
            .map(Ok),
    }
}

/// Moves the rows of `partitions` that are below their first event;
/// returns the partitions moved, each with the transaction's id.
async fn update(
    tx: &mut Transaction<'_, Postgres>,
    advance: &Advance<'_>,
    partitions: &[&Moved],
) -> Result<Vec<(i32, String)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE checkpoints c SET seq = GREATEST(c.seq, $2),
            applied = c.applied + u.applied,
            dead_lettered = c.dead_lettered + u.dead_lettered,
            updated_at = now()
         FROM unnest($3::int[], $4::bigint[], $5::bigint[], $6::bigint[])
              AS u(partition, applied, dead_lettered, first)
         WHERE c.plugin = $1 AND c.partition = u.partition
           AND (u.first IS NULL OR c.seq < u.first)
         RETURNING c.partition, c.xmin::text",
    )
    .bind(advance.key)
    .bind(advance.to as i64)
    .bind(
        partitions
            .iter()
            .map(|m| m.partition as i32)
            .collect::<Vec<_>>(),
    )
    .bind(partitions.iter().map(|m| m.applied).collect::<Vec<_>>())
    .bind(
        partitions
            .iter()
            .map(|m| m.dead_lettered)
            .collect::<Vec<_>>(),
    )
    .bind(
        partitions
            .iter()
            .map(|m| m.first.map(|f| f as i64))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut **tx)
    .await
}
