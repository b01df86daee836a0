//! What the host keeps of what grows with traffic, and for how long.
//!
//! `processed_events` grows with every event each plugin applies; past the
//! horizon its rows are deleted a chunk at a time by a background sweep. An
//! event published again after its row is gone is applied again: the
//! horizon must be longer than any publisher retries. Notifications that
//! were pushed and need nothing more (acknowledged, or never needing it)
//! go after their own horizon, and so do the raw bytes of dead letters that
//! are settled (discarded, or resolved by a re-drive). Swept tables are
//! vacuumed by the host itself (autovacuum may be off), so they stay flat
//! under steady traffic.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgPool};

use crate::config::Config;

/// Rows deleted per statement: short transactions that never hold up a
/// batch for long.
const CHUNK: i64 = 10_000;

/// The date `horizon` before today.
fn cutoff_day(horizon: Duration) -> chrono::NaiveDate {
    let horizon = chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::MAX);
    chrono::Utc::now()
        .date_naive()
        .checked_sub_signed(horizon)
        .unwrap_or(chrono::NaiveDate::MIN)
}

/// The instant `horizon` before now.
fn cutoff_instant(horizon: Duration) -> chrono::DateTime<chrono::Utc> {
    let horizon = chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::MAX);
    chrono::Utc::now()
        .checked_sub_signed(horizon)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// Runs `statement` (which changes at most `$2` rows below the cutoff `$1`)
/// until it changes fewer; then vacuums `table` if anything changed, as the
/// space is used again only once vacuumed. Returns the rows changed.
async fn in_chunks<C>(
    pool: &PgPool,
    table: &str,
    statement: &'static str,
    cutoff: C,
) -> Result<u64, sqlx::Error>
where
    C: for<'q> sqlx::Encode<'q, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + Copy
        + Send
        + 'static,
{
    let mut changed = 0;
    loop {
        let done = sqlx::query(statement)
            .bind(cutoff)
            .bind(CHUNK)
            .execute(pool)
            .await?
            .rows_affected();
        changed += done;
        if done < CHUNK as u64 {
            break;
        }
    }
    if changed > 0 {
        sqlx::query(AssertSqlSafe(format!("VACUUM (ANALYZE) {table}")))
            .execute(pool)
            .await?;
    }
    Ok(changed)
}

/// Deletes the processed-event rows of days before `horizon` ago; returns
/// how many. Batches go on meanwhile: the rows it deletes are old, and a
/// batch only inserts today's.
pub async fn sweep_processed(pool: &PgPool, horizon: Duration) -> Result<u64, sqlx::Error> {
    // Ranges written since the last sweep are not in the index yet (that is
    // autovacuum's work, which may be off); unsummarised, they would be read.
    sqlx::query("SELECT brin_summarize_new_values('processed_events_day')")
        .execute(pool)
        .await?;
    in_chunks(
        pool,
        "processed_events",
        "DELETE FROM processed_events WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM processed_events WHERE day < $1 LIMIT $2))",
        cutoff_day(horizon),
    )
    .await
}

/// Deletes notifications created before `horizon` ago that were pushed
/// and need nothing more: acknowledged, or never needing it. Returns how
/// many.
pub async fn sweep_notifications(pool: &PgPool, horizon: Duration) -> Result<u64, sqlx::Error> {
    sqlx::query("SELECT brin_summarize_new_values('notifications_created')")
        .execute(pool)
        .await?;
    in_chunks(
        pool,
        "notifications",
        "DELETE FROM notifications WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM notifications
            WHERE created_at < $1 AND pushed_at IS NOT NULL
              AND (NOT requires_ack OR acknowledged_at IS NOT NULL)
            LIMIT $2))",
        cutoff_instant(horizon),
    )
    .await
}

/// Empties the raw bytes of dead letters settled before `horizon` ago
/// (discarded, or resolved by a re-drive); returns how many.
pub async fn sweep_settled_raw(pool: &PgPool, horizon: Duration) -> Result<u64, sqlx::Error> {
    in_chunks(
        pool,
        "dead_letters",
        "UPDATE dead_letters SET raw = '\\x' WHERE id = ANY(ARRAY(
            SELECT id FROM dead_letters
            WHERE status IN ('discarded', 'resolved') AND updated_at < $1 AND length(raw) > 0
            LIMIT $2))",
        cutoff_instant(horizon),
    )
    .await
}

/// One sweep of everything with a horizon.
pub async fn sweep(pool: &PgPool, config: &Config) -> Result<[u64; 3], sqlx::Error> {
    Ok([
        sweep_processed(pool, config.processed_retention).await?,
        sweep_notifications(pool, config.notification_retention).await?,
        sweep_settled_raw(pool, config.dead_letter_raw_retention).await?,
    ])
}

/// How long a host that stopped writing its heartbeat stays in the
/// cluster view.
const SILENT_MEMBERS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Sweeps every `every`, for ever, and forgets the cluster's members
/// silent for a day; a failed sweep is logged and tried again at the next.
pub async fn sweep_every(pool: PgPool, config: Arc<Config>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        if let Err(e) =
            super::members::forget_silent(&pool, cutoff_instant(SILENT_MEMBERS_KEPT)).await
        {
            tracing::warn!(error = %e, "forgetting silent cluster members failed");
        }
        match sweep(&pool, &config).await {
            Ok([0, 0, 0]) => {}
            Ok([processed, notifications, raw]) => tracing::info!(
                processed,
                notifications,
                dead_letter_raw = raw,
                "rows past their retention swept"
            ),
            Err(e) => tracing::warn!(error = %e, "sweeping what is past its retention failed"),
        }
    }
}
