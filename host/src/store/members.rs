//! The `cluster_members` table: the hosts of a deployment and when each was
//! last heard of, for `GET /api/cluster`. Which host projects what is read
//! from the claims' locks themselves (`claim::holders`), not kept here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// A host as the cluster view shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The host's id for this run.
    pub id: Uuid,
    /// Where its API listens.
    pub address: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it was last heard of.
    pub heartbeat_at: DateTime<Utc>,
    /// Whether it was heard of within `LEASE_TTL`.
    pub live: bool,
}

/// Writes host `id`'s heartbeat.
pub async fn beat(
    pool: &PgPool,
    id: Uuid,
    address: &str,
    started_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cluster_members (id, address, started_at, heartbeat_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
    )
    .bind(id)
    .bind(address)
    .bind(started_at)
    .execute(pool)
    .await
    .map(drop)
}

/// Removes host `id` from the members at a graceful stop, so the others
/// count it out at their next heartbeat rather than after `LEASE_TTL`.
pub async fn leave(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM cluster_members WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map(drop)
}

/// Forgets the hosts not heard of since `cutoff`; returns how many.
pub async fn forget_silent(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM cluster_members WHERE heartbeat_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
}

/// Every host listed, oldest first; `live` when heard of within `ttl`.
pub async fn list(pool: &PgPool, ttl: Duration) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, address, started_at, heartbeat_at,
                heartbeat_at > now() - make_interval(secs => $1) AS live
         FROM cluster_members ORDER BY started_at, id",
    )
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await
}
