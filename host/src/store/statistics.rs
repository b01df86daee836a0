//! Keeping the planner's statistics of the host's own tables current.
//!
//! The plans of the hot queries (processed-event lookups, document loads,
//! parking checks, the outbox) are only as good as the statistics of the
//! tables they read. Worse, sqlx prepares each statement once per
//! connection and PostgreSQL caches a generic plan for it: made while a
//! table was small, that plan is a sequential scan, and only a change of the
//! table's statistics replaces it. Autovacuum analyses tables as they grow,
//! when it is on and keeps up; a database with it off left one projection at
//! 400 events/s where it could do 5,600. So the host does it itself: every few seconds it
//! asks the statistics collector (which counts changes whatever autovacuum
//! does) which of its tables changed by a fraction of their size since
//! their last analysis, and analyses those. `ANALYZE` reads a sample and
//! takes a lock that neither reads nor writes wait for, so batches go on.

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, PgPool};

/// Turns autovacuum off for every table of the host's, whatever the
/// server's setting: the soak benchmark and the plan tests run so, to show
/// the host does not depend on it.
pub async fn autovacuum_off(pool: &PgPool) -> Result<(), sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(pool)
    .await?;
    for table in tables {
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false)"
        )))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// A table is analysed again once this share of its rows changed…
const CHANGED_SHARE: f64 = 0.1;
/// …and at least this many: small tables are cheap to plan badly.
const MIN_CHANGED: i64 = 500;

/// The host's tables, and the views' tables, that changed enough since
/// their last analysis (by anyone: autovacuum's counts too).
async fn due(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT quote_ident(relname) FROM pg_stat_user_tables
         WHERE schemaname = current_schema()
           AND n_mod_since_analyze >= GREATEST($1, $2 * n_live_tup)
         ORDER BY n_mod_since_analyze DESC",
    )
    .bind(MIN_CHANGED)
    .bind(CHANGED_SHARE)
    .fetch_all(pool)
    .await
}

/// Analyses every table that is due; returns them with how long each took.
pub async fn analyse_due(pool: &PgPool) -> Result<Vec<(String, Duration)>, sqlx::Error> {
    let mut done = Vec::new();
    for table in due(pool).await? {
        let started = Instant::now();
        sqlx::query(AssertSqlSafe(format!("ANALYZE {table}")))
            .execute(pool)
            .await?;
        done.push((table, started.elapsed()));
    }
    Ok(done)
}

/// Analyses what is due every `every`, for ever; a failure is logged and
/// tried again at the next.
pub async fn analyse_every(pool: PgPool, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match analyse_due(&pool).await {
            Ok(done) => {
                for (table, took) in done {
                    tracing::debug!(table, took_ms = took.as_millis() as u64, "table analysed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "analysing the host's tables failed"),
        }
    }
}
