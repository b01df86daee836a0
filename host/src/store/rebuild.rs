//! The store's side of a blue/green rebuild: fresh shadow tables to project
//! into, and the switch that makes them live in one transaction.

use projector_contract::PluginInfo;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use super::target::processed_key;
use super::views::{ViewError, ensure_views, record_definition, table_name};
use super::{TARGET_ROWS, Target};

/// Starts a rebuild afresh: whatever an earlier, unfinished rebuild left is
/// dropped, then the shadow tables of `plugin`'s views are created empty.
pub async fn prepare(pool: &PgPool, target: &Target, plugin: &PluginInfo) -> Result<(), ViewError> {
    discard(pool, target).await?;
    ensure_views(pool, target, plugin).await
}

/// Drops a rebuild's shadow tables and its bookkeeping rows (an abandoned
/// rebuild, or one a crash interrupted); the live views, and the processed
/// events of the generation before `target`'s, are untouched.
pub async fn discard(pool: &PgPool, target: &Target) -> Result<(), sqlx::Error> {
    let schema = shadow_schema(target)?;
    let mut tx = pool.begin().await?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut *tx)
    .await?;
    for table in TARGET_ROWS {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE plugin = $1"
        )))
        .bind(&target.key)
        .execute(&mut *tx)
        .await?;
    }
    drop_other_generations(&mut *tx, &target.plugin, target.generation - 1).await?;
    tx.commit().await
}

/// Drops a plugin's processed events of every generation but `keep`'s:
/// those a switch left behind, or an abandoned rebuild's.
pub async fn drop_other_generations<'c, E>(
    executor: E,
    plugin: &str,
    keep: i32,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    sqlx::query(
        "DELETE FROM processed_events
         WHERE (plugin = $1 OR starts_with(plugin, $1 || '#')) AND plugin <> $2",
    )
    .bind(plugin)
    .bind(processed_key(plugin, keep))
    .execute(executor)
    .await?;
    Ok(())
}

/// Makes a finished rebuild live, all or nothing: its generation of
/// processed events becomes the live one (the old rows are dropped after,
/// by [`drop_other_generations`]), its dead letters and parked events
/// replace the live ones, and its tables
/// replace the live tables (views `next` no longer declares are dropped).
/// Readers see the old tables or the new ones, never a mix: the table
/// moves come last, so they are locked only for the moment before commit.
pub async fn switch(
    pool: &PgPool,
    rebuild: &Target,
    old_views: &[String],
    next: &PluginInfo,
) -> Result<(), sqlx::Error> {
    let (live, key) = (&rebuild.plugin, &rebuild.key);
    let schema = shadow_schema(rebuild)?;
    let mut tx = pool.begin().await?;
    // `$1` is the live plugin, `$2` the rebuild's key.
    for (sql, uses_key) in [
        // Open live letters the rebuilt version applied are resolved by it.
        (
            "UPDATE dead_letters l SET status = 'resolved', updated_at = now()
             WHERE l.plugin = $1 AND l.status IN ('dead', 'retrying') AND NOT EXISTS (
                SELECT 1 FROM dead_letters r WHERE r.plugin = $2 AND r.stream_seq = l.stream_seq)",
            true,
        ),
        // Letters both failed keep their id and history with the new reason;
        // an operator's discard stands.
        (
            "UPDATE dead_letters l SET reason = r.reason, poisons = r.poisons,
                attempts = l.attempts + r.attempts, updated_at = now(),
                status = CASE WHEN l.status = 'discarded' THEN 'discarded' ELSE 'dead' END
             FROM dead_letters r
             WHERE l.plugin = $1 AND r.plugin = $2 AND r.stream_seq = l.stream_seq",
            true,
        ),
        (
            "DELETE FROM dead_letters r USING dead_letters l
             WHERE r.plugin = $2 AND l.plugin = $1 AND l.stream_seq = r.stream_seq",
            true,
        ),
        (
            "UPDATE dead_letters SET plugin = $1 WHERE plugin = $2",
            true,
        ),
        ("DELETE FROM parked_events WHERE plugin = $1", false),
        (
            "UPDATE parked_events SET plugin = $1 WHERE plugin = $2",
            true,
        ),
    ] {
        let mut query = sqlx::query(sql).bind(live);
        if uses_key {
            query = query.bind(key);
        }
        query.execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM checkpoints WHERE plugin = $1")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    record_definition(&mut tx, next, rebuild.generation).await?;
    move_tables(&mut tx, schema, old_views, next).await?;
    tx.commit().await
}

async fn move_tables(
    tx: &mut Transaction<'_, Postgres>,
    schema: &str,
    old_views: &[String],
    next: &PluginInfo,
) -> Result<(), sqlx::Error> {
    for gone in old_views.iter().filter(|v| !next.owns_view(v)) {
        sqlx::query(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {}",
            table_name(gone)
        )))
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM views WHERE name = $1")
            .bind(gone)
            .execute(&mut **tx)
            .await?;
    }
    for view in &next.views {
        let table = table_name(&view.name);
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&mut **tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {schema}.{table} SET SCHEMA public"
        )))
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema}")))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A rebuild's schema; a live target has none, and discarding or switching
/// it in would be a bug in the caller.
fn shadow_schema(target: &Target) -> Result<&str, sqlx::Error> {
    target
        .schema()
        .ok_or_else(|| sqlx::Error::InvalidArgument(format!("`{}` is not a rebuild", target.key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_live_target_is_neither_discarded_nor_switched_in() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://unused@127.0.0.1:1/none")
            .expect("a lazy pool");
        let live = Target::live("lab");
        let info = PluginInfo::new("lab", "1", &["lab.>"], Vec::new());
        let refused = |e: sqlx::Error| matches!(e, sqlx::Error::InvalidArgument(_));
        assert!(discard(&pool, &live).await.is_err_and(refused));
        assert!(switch(&pool, &live, &[], &info).await.is_err_and(refused));
    }
}
