//! The `processed_events` table: the eventIds each projection (and
//! generation) has applied, written in the batch's transaction, so an event
//! delivered twice is applied once.

use sqlx::{PgPool, Postgres, Transaction};

/// Records eventIds as applied by `processed_key` (a [`super::Target`]'s).
pub(crate) async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    processed_key: &str,
    event_ids: &[String],
) -> Result<(), sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO processed_events (plugin, event_id)
         SELECT $1, e FROM UNNEST($2::text[]) AS e ON CONFLICT DO NOTHING",
    )
    .bind(processed_key)
    .bind(event_ids)
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Of these eventIds, those `processed_key` has applied already.
pub async fn applied(
    pool: &PgPool,
    processed_key: &str,
    event_ids: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT event_id FROM processed_events WHERE plugin = $1 AND event_id = ANY($2)",
    )
    .bind(processed_key)
    .bind(event_ids)
    .fetch_all(pool)
    .await
}
