//! One batch, one transaction: the changed documents, the events now applied,
//! dead letters, the notification outbox, audit entries and the checkpoint
//! commit together or not at all. Each kind is one statement (UNNEST arrays),
//! so round trips grow with the tables touched, not the events.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use super::Target;
use super::outbox::{self, NewNotification};
use super::overlay::{Overlay, ViewWrites};

/// The largest document a view holds, serialised, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
/// The most document bytes one batch writes; a larger batch is split.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// Why a batch did not commit; each kind calls for its own remedy.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// What the batch holds cannot be stored: PostgreSQL refused it for its
    /// content (SQLSTATE classes 22, data exceptions, and 54, limits), or a
    /// document is over its size. One of its events is at fault; the same
    /// batch would fail again.
    #[error("the batch's content cannot be stored: {0}")]
    Refused(String),
    /// The projection's claim (see [`super::claim`]) is no longer held:
    /// another host may be projecting; this one must claim it again first.
    #[error("the projection's claim is lost")]
    Unclaimed,
    /// The checkpoint is already at or past the batch's first event:
    /// another commit got there first, and the projection must resume
    /// after it rather than apply events out of order.
    #[error("checkpoint is at {checkpoint}, at or past the batch's first event {first}")]
    Behind {
        /// The committed checkpoint.
        checkpoint: u64,
        /// The batch's first stream sequence.
        first: u64,
    },
    /// The database failed (connection, serialization, a timeout): the
    /// same batch can succeed later.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for CommitError {
    fn from(e: sqlx::Error) -> Self {
        let refused = matches!(&e, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("54")));
        if refused {
            Self::Refused(e.to_string())
        } else {
            Self::Database(e)
        }
    }
}

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
    /// Lowest stream sequence in the batch: the checkpoint must be below
    /// it, or the batch is out of order (`None`: no stream events).
    pub first: Option<u64>,
    /// The backend holding the projection's claim, checked in the
    /// transaction (`None`: unclaimed use, as a replay's).
    pub claimed_by: Option<i32>,
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
            first: None,
            claimed_by: None,
        }
    }

    /// Commits the batch in one transaction; returns the notifications it
    /// stored, as clients see them, to push once committed.
    pub async fn commit(self, pool: &PgPool) -> Result<Vec<Value>, CommitError> {
        let key = &self.target.key;
        let finished = self.views.map(Overlay::finish);
        let serialised = match &finished {
            Some(f) => serialise(&f.writes)?,
            None => Vec::new(),
        };
        let mut tx = pool.begin().await?;
        if let Some(pid) = self.claimed_by
            && !super::claim::held(&mut tx, key, pid).await?
        {
            return Err(CommitError::Unclaimed);
        }
        for (writes, docs) in finished.iter().flat_map(|f| &f.writes).zip(&serialised) {
            write_view(&mut tx, writes, docs).await?;
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
        // document written here is committed as. The checkpoint moves only
        // forward from below the batch's first event: no event is applied
        // out of stream order, whatever redelivered it.
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
        .bind(key)
        .bind(self.checkpoint as i64)
        .bind(self.processed.len() as i64)
        .bind(self.dead_letters.len() as i64)
        .bind(self.first.map(|s| s as i64))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(version) = version else {
            let checkpoint: i64 =
                sqlx::query_scalar("SELECT seq FROM checkpoints WHERE plugin = $1")
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
            return Err(CommitError::Behind {
                checkpoint: checkpoint as u64,
                first: self.first.unwrap_or_default(),
            });
        };
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

/// The changed documents of each view as JSON text, each within
/// [`MAX_DOCUMENT_BYTES`] and all within [`MAX_BATCH_BYTES`].
fn serialise(writes: &[ViewWrites]) -> Result<Vec<Vec<String>>, CommitError> {
    let mut total = 0;
    writes
        .iter()
        .map(|w| {
            w.upsert_docs
                .iter()
                .map(|doc| {
                    let text = doc.to_string();
                    if text.len() > MAX_DOCUMENT_BYTES {
                        return Err(CommitError::Refused(format!(
                            "a document of view `{}` would be {} bytes, over the limit of {MAX_DOCUMENT_BYTES}",
                            w.view,
                            text.len()
                        )));
                    }
                    total += text.len();
                    if total > MAX_BATCH_BYTES {
                        return Err(CommitError::Refused(format!(
                            "the batch's documents are over {MAX_BATCH_BYTES} bytes"
                        )));
                    }
                    Ok(text)
                })
                .collect()
        })
        .collect()
}

async fn write_view(
    tx: &mut Transaction<'_, Postgres>,
    writes: &ViewWrites,
    docs: &[String],
) -> Result<(), sqlx::Error> {
    let table = &writes.table;
    if !writes.upsert_keys.is_empty() {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (key, doc, updated_at)
             SELECT k, d::jsonb, now() FROM UNNEST($1::text[], $2::text[]) AS u(k, d)
             ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, updated_at = now()"
        )))
        .bind(&writes.upsert_keys)
        .bind(docs)
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
