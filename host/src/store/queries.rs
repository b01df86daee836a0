//! What the API reads. View names here are constants of the API, never input.

use std::collections::HashSet;

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, PgPool};

use super::views::table_name;

/// One document of a view.
pub async fn document(pool: &PgPool, view: &str, key: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT doc FROM {} WHERE key = $1",
        table_name(view)
    )))
    .bind(key)
    .fetch_optional(pool)
    .await
}

/// A patient's documents in a view (by its `patientId` index), newest first.
pub async fn by_patient(
    pool: &PgPool,
    view: &str,
    patient_id: &str,
    order_field: &str,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT doc FROM {} WHERE doc->>'patientId' = $1 ORDER BY doc->>$2 DESC NULLS LAST, key",
        table_name(view)
    )))
    .bind(patient_id)
    .bind(order_field)
    .fetch_all(pool)
    .await
}

/// A dead letter as stored.
#[derive(sqlx::FromRow)]
struct DeadLetterRow {
    id: i64,
    plugin: String,
    stream_seq: i64,
    subject: String,
    event_id: Option<String>,
    patient_id: Option<String>,
    reason: String,
    raw: Vec<u8>,
    attempts: i32,
    status: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Dead letters, newest first, optionally of one plugin and status. `raw` is
/// the message as text (invalid UTF-8 replaced); `rawHex` is exact.
pub async fn dead_letters(
    pool: &PgPool,
    plugin: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    let rows: Vec<DeadLetterRow> = sqlx::query_as(
        "SELECT id, plugin, stream_seq, subject, event_id, patient_id, reason, raw, attempts, status, created_at
         FROM dead_letters
         WHERE ($1::text IS NULL OR plugin = $1) AND ($2::text IS NULL OR status = $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(plugin)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id, "plugin": r.plugin, "streamSeq": r.stream_seq, "subject": r.subject,
                "eventId": r.event_id, "patientId": r.patient_id, "reason": r.reason,
                "attempts": r.attempts, "status": r.status, "createdAt": r.created_at,
                "raw": String::from_utf8_lossy(&r.raw), "rawHex": hex::encode(&r.raw),
            })
        })
        .collect())
}

/// Moves a dead letter on from `dead` to `retrying` (an operator re-drives
/// it) or `discarded` (an operator gives up on it); returns its plugin, or
/// its status when it was not dead (`None`: no such letter).
pub async fn settle_dead_letter(
    pool: &PgPool,
    id: i64,
    to: &str,
) -> Result<Result<String, Option<String>>, sqlx::Error> {
    let updated: Option<String> = sqlx::query_scalar(
        "UPDATE dead_letters SET status = $2, updated_at = now()
         WHERE id = $1 AND status = 'dead' RETURNING plugin",
    )
    .bind(id)
    .bind(to)
    .fetch_optional(pool)
    .await?;
    if let Some(plugin) = updated {
        return Ok(Ok(plugin));
    }
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(Err(status))
}

/// The stream sequence a projection (a [`super::Target`]'s key) has
/// handled every event up to: applied, parked, dead-lettered or skipped.
pub async fn checkpoint(pool: &PgPool, key: &str) -> Result<u64, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM checkpoints WHERE plugin = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?;
    Ok(seq.unwrap_or(0).max(0) as u64)
}

/// Each plugin's checkpoint and counts.
pub async fn checkpoints(pool: &PgPool) -> Result<Vec<(String, i64, i64, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT plugin, seq, applied, dead_lettered FROM checkpoints")
        .fetch_all(pool)
        .await
}

/// What to select from the audit trail.
#[derive(Debug, Default)]
pub struct AuditFilter {
    /// Whose data.
    pub patient_id: Option<String>,
    /// Who.
    pub user_id: Option<String>,
    /// From this time on.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Up to this time.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many.
    pub limit: i64,
}

/// Audit entries that match, newest first.
pub async fn audit_entries(pool: &PgPool, filter: &AuditFilter) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT jsonb_build_object('id', id, 'userId', user_id, 'action', action,
                'resourceType', resource_type, 'resourceId', resource_id, 'patientId', patient_id,
                'ipAddress', ip_address, 'status', status, 'at', at)
         FROM audit_log
         WHERE ($1::text IS NULL OR patient_id = $1) AND ($2::text IS NULL OR user_id = $2)
           AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at <= $4)
         ORDER BY at DESC, id DESC LIMIT $5",
    )
    .bind(&filter.patient_id)
    .bind(&filter.user_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}

/// Of these patients, those a plugin failed on (an open dead letter that
/// poisons), and those with events parked: their later events must wait.
pub async fn poisoned(
    pool: &PgPool,
    plugin: &str,
    patients: &[&str],
) -> Result<(HashSet<String>, HashSet<String>), sqlx::Error> {
    if patients.is_empty() {
        return Ok(Default::default());
    }
    // One round trip: this runs for every batch of every plugin.
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT patient_id, true FROM dead_letters
         WHERE plugin = $1 AND poisons AND status IN ('dead', 'retrying') AND patient_id = ANY($2)
         UNION
         SELECT patient_id, false FROM parked_events WHERE plugin = $1 AND patient_id = ANY($2)",
    )
    .bind(plugin)
    .bind(patients)
    .fetch_all(pool)
    .await?;
    let (mut blocked, mut waiting) = (HashSet::new(), HashSet::new());
    for (patient, has_dead_letter) in rows {
        if has_dead_letter {
            blocked.insert(patient);
        } else {
            waiting.insert(patient);
        }
    }
    Ok((blocked, waiting))
}

/// A plugin's parked events whose patients are clear again (no open dead
/// letter), oldest first: `(stream_seq, subject, raw)`.
pub async fn releasable(
    pool: &PgPool,
    plugin: &str,
    limit: i64,
) -> Result<Vec<(i64, String, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.stream_seq, p.subject, p.raw FROM parked_events p
         WHERE p.plugin = $1 AND NOT EXISTS (
            SELECT 1 FROM dead_letters d
            WHERE d.plugin = p.plugin AND d.patient_id = p.patient_id
              AND d.poisons AND d.status IN ('dead', 'retrying'))
         ORDER BY p.stream_seq LIMIT $2",
    )
    .bind(plugin)
    .bind(limit)
    .fetch_all(pool)
    .await
}
