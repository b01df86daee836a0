//! How long the host remembers which events it applied. `processed_events`
//! grows with every event each plugin applies; past the horizon its rows
//! are deleted a chunk at a time by a background sweep, and the table is
//! vacuumed by the host itself (autovacuum may be off), so it stays flat
//! under steady traffic. An event published again after its row is gone is
//! applied again: the horizon must be longer than any publisher retries.

use std::time::Duration;

use sqlx::PgPool;

/// Rows deleted per statement: short transactions that never hold up a
/// batch for long.
const CHUNK: i64 = 10_000;

/// Deletes the processed-event rows of days before `horizon` ago; returns
/// how many. Batches go on meanwhile: the rows it deletes are old, and a
/// batch only inserts today's.
pub async fn sweep_processed(pool: &PgPool, horizon: Duration) -> Result<u64, sqlx::Error> {
    let horizon = chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::MAX);
    let cutoff = chrono::Utc::now()
        .date_naive()
        .checked_sub_signed(horizon)
        .unwrap_or(chrono::NaiveDate::MIN);
    // Ranges written since the last sweep are not in the index yet (that is
    // autovacuum's work, which may be off); unsummarised, they would be read.
    sqlx::query("SELECT brin_summarize_new_values('processed_events_day')")
        .execute(pool)
        .await?;
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM processed_events WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM processed_events WHERE day < $1 LIMIT $2))",
        )
        .bind(cutoff)
        .bind(CHUNK)
        .execute(pool)
        .await?
        .rows_affected();
        deleted += done;
        if done < CHUNK as u64 {
            break;
        }
    }
    if deleted > 0 {
        // The space of the deleted rows is used again only once vacuumed.
        sqlx::query("VACUUM (ANALYZE) processed_events")
            .execute(pool)
            .await?;
    }
    Ok(deleted)
}

/// Sweeps every `every`, for ever; a failed sweep is logged and tried again
/// at the next.
pub async fn sweep_processed_every(pool: PgPool, horizon: Duration, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        match sweep_processed(&pool, horizon).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "processed events past the retention deleted"),
            Err(e) => tracing::warn!(error = %e, "sweeping processed events failed"),
        }
    }
}
