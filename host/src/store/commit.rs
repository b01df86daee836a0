//! One batch, one transaction: the changed documents, the events now applied,
//! dead letters, the notification outbox, audit entries and the checkpoint
//! commit together or not at all. Each kind is one statement (UNNEST arrays),
//! so round trips grow with the tables touched, not the events.

use chrono::{DateTime, Utc};
use projector_sdk::Value;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use super::Target;
use super::outbox::{self, NewNotification};
use super::overlay::{Overlay, ViewWrites};

/// An event the plugin could not apply.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    /// Stream sequence of the message.
    pub stream_seq: u64,
    /// Its subject.
    pub subject: String,
    /// Its eventId, when it could be read.
    pub event_id: Option<String>,
    /// Its patientId, when it could be read.
    pub patient_id: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// The message bytes as received.
    pub raw: Vec<u8>,
    /// How many times it was tried.
    pub attempts: i32,
    /// Whether its patient's later events for the plugin wait behind it.
    pub poisons: bool,
}

/// A poisoned patient's event, waiting for its patient to be clear.
#[derive(Debug, Clone)]
pub struct NewParked {
    /// Stream sequence of the message.
    pub stream_seq: u64,
    /// Its subject.
    pub subject: String,
    /// Its patient.
    pub patient_id: String,
    /// The message bytes as received.
    pub raw: Vec<u8>,
}

/// An audit entry with the event's user, patient and time.
#[derive(Debug, Clone)]
pub struct NewAudit {
    /// Who.
    pub user_id: String,
    /// Did what.
    pub action: String,
    /// To which kind of resource.
    pub resource_type: String,
    /// Which one.
    pub resource_id: String,
    /// Whose data.
    pub patient_id: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Everything one batch of one plugin commits.
pub struct Batch {
    /// Where it lands: the name its bookkeeping rows go by, and the
    /// generation of its processed events.
    pub target: Target,
    /// The batch's documents.
    pub views: Option<Overlay>,
    /// eventIds applied.
    pub processed: Vec<String>,
    /// Events refused.
    pub dead_letters: Vec<NewDeadLetter>,
    /// Dead letters re-driven successfully.
    pub resolved: Vec<i64>,
    /// Events parked behind a poisoned patient's dead letter.
    pub parked: Vec<NewParked>,
    /// Parked events (by stream sequence) applied or dead-lettered now.
    pub released: Vec<u64>,
    /// Notification outbox entries.
    pub notifications: Vec<NewNotification>,
    /// Audit-log entries.
    pub audits: Vec<NewAudit>,
    /// Highest stream sequence covered by the batch.
    pub checkpoint: u64,
}

impl Batch {
    /// An empty batch for `target`.
    pub fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            views: None,
            processed: Vec::new(),
            dead_letters: Vec::new(),
            resolved: Vec::new(),
            parked: Vec::new(),
            released: Vec::new(),
            notifications: Vec::new(),
            audits: Vec::new(),
            checkpoint: 0,
        }
    }

    /// Commits the batch in one transaction; returns the notifications it
    /// stored, as clients see them, to push once committed.
    pub async fn commit(self, pool: &PgPool) -> Result<Vec<Value>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        let key = &self.target.key;
        let finished = self.views.map(Overlay::finish);
        for writes in finished.iter().flat_map(|f| &f.writes) {
            write_view(&mut tx, writes).await?;
        }
        if !self.processed.is_empty() {
            sqlx::query(
                "INSERT INTO processed_events (plugin, event_id)
                 SELECT $1, e FROM UNNEST($2::text[]) AS e ON CONFLICT DO NOTHING",
            )
            .bind(self.target.processed_key())
            .bind(&self.processed)
            .execute(&mut *tx)
            .await?;
        }
        insert_dead_letters(&mut tx, key, &self.dead_letters).await?;
        if !self.resolved.is_empty() {
            sqlx::query("UPDATE dead_letters SET status = 'resolved', updated_at = now() WHERE id = ANY($1)")
                .bind(&self.resolved)
                .execute(&mut *tx)
                .await?;
        }
        park(&mut tx, key, &self.parked).await?;
        if !self.released.is_empty() {
            let seqs: Vec<i64> = self.released.iter().map(|s| *s as i64).collect();
            sqlx::query("DELETE FROM parked_events WHERE plugin = $1 AND stream_seq = ANY($2)")
                .bind(key)
                .bind(seqs)
                .execute(&mut *tx)
                .await?;
        }
        let notifications = outbox::insert(&mut tx, self.notifications).await?;
        insert_audits(&mut tx, &self.audits).await?;
        // The row's xmin is this transaction's id: the version every
        // document written here is committed as.
        let version: String = sqlx::query_scalar(
            "INSERT INTO checkpoints (plugin, seq, applied, dead_lettered) VALUES ($1, $2, $3, $4)
             ON CONFLICT (plugin) DO UPDATE SET
                seq = GREATEST(checkpoints.seq, EXCLUDED.seq),
                applied = checkpoints.applied + EXCLUDED.applied,
                dead_lettered = checkpoints.dead_lettered + EXCLUDED.dead_lettered,
                updated_at = now()
             RETURNING xmin::text",
        )
        .bind(key)
        .bind(self.checkpoint as i64)
        .bind(self.processed.len() as i64)
        .bind(self.dead_letters.len() as i64)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(finished) = finished {
            let written = finished.writes.into_iter().flat_map(|w| {
                let view = w.view;
                let version = &version;
                w.upsert_keys
                    .into_iter()
                    .zip(w.upsert_docs)
                    .map(move |(key, doc)| (view.clone(), key, version.clone(), doc))
            });
            finished.cache.keep(written.chain(finished.unchanged));
        }
        Ok(notifications)
    }
}

async fn write_view(
    tx: &mut Transaction<'_, Postgres>,
    writes: &ViewWrites,
) -> Result<(), sqlx::Error> {
    let table = &writes.table;
    if !writes.upsert_keys.is_empty() {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (key, doc, updated_at)
             SELECT k, d, now() FROM UNNEST($1::text[], $2::jsonb[]) AS u(k, d)
             ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, updated_at = now()"
        )))
        .bind(&writes.upsert_keys)
        .bind(&writes.upsert_docs)
        .execute(&mut **tx)
        .await?;
    }
    if !writes.delete_keys.is_empty() {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE key = ANY($1)"
        )))
        .bind(&writes.delete_keys)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn park(
    tx: &mut Transaction<'_, Postgres>,
    plugin: &str,
    parked: &[NewParked],
) -> Result<(), sqlx::Error> {
    if parked.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = parked.iter().map(|p| p.stream_seq as i64).collect();
    let subjects: Vec<&str> = parked.iter().map(|p| p.subject.as_str()).collect();
    let patients: Vec<&str> = parked.iter().map(|p| p.patient_id.as_str()).collect();
    let raws: Vec<&[u8]> = parked.iter().map(|p| p.raw.as_slice()).collect();
    sqlx::query(
        "INSERT INTO parked_events (plugin, stream_seq, subject, patient_id, raw)
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bytea[])
         ON CONFLICT DO NOTHING",
    )
    .bind(plugin)
    .bind(seqs)
    .bind(subjects)
    .bind(patients)
    .bind(raws)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    plugin: &str,
    dead: &[NewDeadLetter],
) -> Result<(), sqlx::Error> {
    if dead.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = dead.iter().map(|d| d.stream_seq as i64).collect();
    let subjects: Vec<&str> = dead.iter().map(|d| d.subject.as_str()).collect();
    let event_ids: Vec<Option<&str>> = dead.iter().map(|d| d.event_id.as_deref()).collect();
    let patient_ids: Vec<Option<&str>> = dead.iter().map(|d| d.patient_id.as_deref()).collect();
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    let raws: Vec<&[u8]> = dead.iter().map(|d| d.raw.as_slice()).collect();
    let attempts: Vec<i32> = dead.iter().map(|d| d.attempts).collect();
    let poisons: Vec<bool> = dead.iter().map(|d| d.poisons).collect();
    sqlx::query(
        "INSERT INTO dead_letters (plugin, stream_seq, subject, event_id, patient_id, reason, raw, attempts, poisons)
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::int[], $9::bool[])
         ON CONFLICT (plugin, stream_seq) DO UPDATE SET
            reason = EXCLUDED.reason,
            attempts = dead_letters.attempts + EXCLUDED.attempts,
            poisons = EXCLUDED.poisons,
            status = 'dead',
            updated_at = now()",
    )
    .bind(plugin)
    .bind(seqs)
    .bind(subjects)
    .bind(event_ids)
    .bind(patient_ids)
    .bind(reasons)
    .bind(raws)
    .bind(attempts)
    .bind(poisons)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn insert_audits(
    tx: &mut Transaction<'_, Postgres>,
    audits: &[NewAudit],
) -> Result<(), sqlx::Error> {
    if audits.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = audits.iter().map(|a| a.user_id.as_str()).collect();
    let actions: Vec<&str> = audits.iter().map(|a| a.action.as_str()).collect();
    let types: Vec<&str> = audits.iter().map(|a| a.resource_type.as_str()).collect();
    let ids: Vec<&str> = audits.iter().map(|a| a.resource_id.as_str()).collect();
    let patients: Vec<&str> = audits.iter().map(|a| a.patient_id.as_str()).collect();
    let ats: Vec<DateTime<Utc>> = audits.iter().map(|a| a.at).collect();
    sqlx::query(
        "INSERT INTO audit_log (user_id, action, resource_type, resource_id, patient_id, at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])",
    )
    .bind(users)
    .bind(actions)
    .bind(types)
    .bind(ids)
    .bind(patients)
    .bind(ats)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
