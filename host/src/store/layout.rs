//! How many partitions the checkpoints are kept for (`PARTITIONS`), agreed
//! by every host through the `partitioning` table. Changing it is a planned
//! operation: stop every host, start one with the new count; it moves every
//! projection's checkpoints to the new partitions, each at the slowest old
//! partition's (what lies between is read again and skipped as already
//! applied, by eventId). A host started with another count than the
//! recorded one while other hosts are live refuses to start, so two
//! layouts never project at once.

use sqlx::PgPool;

/// Why the layout could not be agreed.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Other hosts are live with another count.
    #[error(
        "PARTITIONS is {wanted} here but {recorded} for the {live} other live host(s): \
         changing it means stopping every host first (see the README, \"Partitions\")"
    )]
    Live {
        /// This host's `PARTITIONS`.
        wanted: u32,
        /// The count the live hosts use.
        recorded: u32,
        /// How many other hosts are live.
        live: usize,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Makes `partitions` the recorded count: as it is, recorded afresh (the
/// first start, or the first since partitions came), or changed when no
/// other host is live (`others_live`: how many are).
pub async fn ensure(pool: &PgPool, partitions: u32, others_live: usize) -> Result<(), LayoutError> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE partitioning IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let recorded: Option<i32> = sqlx::query_scalar("SELECT partitions FROM partitioning")
        .fetch_optional(&mut *tx)
        .await?;
    match recorded {
        Some(r) if r as u32 == partitions => return Ok(()),
        Some(r) if others_live > 0 => {
            return Err(LayoutError::Live {
                wanted: partitions,
                recorded: r as u32,
                live: others_live,
            });
        }
        _ => {}
    }
    spread(&mut tx, partitions).await?;
    sqlx::query(
        "INSERT INTO partitioning (partitions) VALUES ($1)
         ON CONFLICT (only_row) DO UPDATE SET partitions = $1, updated_at = now()",
    )
    .bind(partitions as i32)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(partitions, from = ?recorded, "partitions laid out");
    Ok(())
}

/// Replaces every projection's checkpoint rows by `partitions` rows at the
/// slowest old one, the counts summed into partition 0.
async fn spread(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    partitions: u32,
) -> Result<(), sqlx::Error> {
    let old: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT plugin, min(seq), sum(applied)::bigint, sum(dead_lettered)::bigint
         FROM checkpoints GROUP BY plugin",
    )
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM checkpoints")
        .execute(&mut **tx)
        .await?;
    for (plugin, seq, applied, dead_lettered) in old {
        sqlx::query(
            "INSERT INTO checkpoints (plugin, partition, seq, applied, dead_lettered)
             SELECT $1, p, $2, CASE WHEN p = 0 THEN $3 ELSE 0 END,
                    CASE WHEN p = 0 THEN $4 ELSE 0 END
             FROM generate_series(0, $5 - 1) AS p",
        )
        .bind(&plugin)
        .bind(seq)
        .bind(applied)
        .bind(dead_lettered)
        .bind(partitions as i32)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
