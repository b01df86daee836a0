//! The `checkpoints` table: per projection, the stream sequence every event
//! up to has been handled (applied, parked, dead-lettered or skipped), and
//! how many were applied and dead-lettered. It moves in each batch's
//! transaction, never backwards.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

/// A projection's checkpoint and counts.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The projection (a [`super::Target`]'s key).
    pub plugin: String,
    /// Every stream event up to here has been handled.
    pub seq: i64,
    /// Events applied.
    pub applied: i64,
    /// Events dead-lettered.
    pub dead_lettered: i64,
}

/// The stream sequence a projection (a [`super::Target`]'s key) has
/// handled every event up to.
pub async fn of(pool: &PgPool, key: &str) -> Result<u64, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM checkpoints WHERE plugin = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?;
    Ok(seq.unwrap_or(0).max(0) as u64)
}

/// Every projection's checkpoint and counts, by projection.
pub async fn all(pool: &PgPool) -> Result<HashMap<String, Checkpoint>, sqlx::Error> {
    let rows: Vec<Checkpoint> =
        sqlx::query_as("SELECT plugin, seq, applied, dead_lettered FROM checkpoints")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|c| (c.plugin.clone(), c)).collect())
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

/// A batch's move of its projection's checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct Advance<'a> {
    /// The projection.
    pub key: &'a str,
    /// The batch's highest stream sequence.
    pub to: u64,
    /// Events it applied.
    pub applied: i64,
    /// Events it dead-lettered.
    pub dead_lettered: i64,
    /// Its lowest stream sequence: the checkpoint must be below it
    /// (`None`: no stream events).
    pub first: Option<u64>,
}

/// Moves the checkpoint forward from below the batch's first event and
/// returns the transaction's id (the version every document written in it
/// is committed as); `Err` with the checkpoint when it is already at or
/// past the batch's first event.
pub(crate) async fn advance(
    tx: &mut Transaction<'_, Postgres>,
    advance: &Advance<'_>,
) -> Result<Result<String, u64>, sqlx::Error> {
    // The row's xmin is this transaction's id.
    let version: Option<String> = sqlx::query_scalar(
        "INSERT INTO checkpoints (plugin, seq, applied, dead_lettered) VALUES ($1, $2, $3, $4)
         ON CONFLICT (plugin) DO UPDATE SET
            seq = GREATEST(checkpoints.seq, EXCLUDED.seq),
            applied = checkpoints.applied + EXCLUDED.applied,
            dead_lettered = checkpoints.dead_lettered + EXCLUDED.dead_lettered,
            updated_at = now()
         WHERE $5::bigint IS NULL OR checkpoints.seq < $5
         RETURNING xmin::text",
    )
    .bind(advance.key)
    .bind(advance.to as i64)
    .bind(advance.applied)
    .bind(advance.dead_lettered)
    .bind(advance.first.map(|s| s as i64))
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(version) = version {
        return Ok(Ok(version));
    }
    let checkpoint: i64 = sqlx::query_scalar("SELECT seq FROM checkpoints WHERE plugin = $1")
        .bind(advance.key)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Err(checkpoint as u64))
}
