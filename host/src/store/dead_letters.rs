//! The `dead_letters` and `parked_events` tables: events a plugin could not
//! apply, with the reason, and the later events of their patients waiting
//! behind them, in order, until an operator retries or discards.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use super::bind_columns;

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

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Refused; its patient's later events wait (when it poisons).
    Dead,
    /// An operator asked for it to be applied again.
    Retrying,
    /// Applied on a retry.
    Resolved,
    /// An operator gave up on it.
    Discarded,
}

impl Status {
    /// As the table and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Dead => "dead",
            Status::Retrying => "retrying",
            Status::Resolved => "resolved",
            Status::Discarded => "discarded",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "dead" => Status::Dead,
            "retrying" => Status::Retrying,
            "resolved" => Status::Resolved,
            "discarded" => Status::Discarded,
            _ => return Err(format!("`{s}` is not a dead-letter status")),
        })
    }
}

impl TryFrom<String> for Status {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A dead letter as stored.
#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    plugin: String,
    stream_seq: i64,
    subject: String,
    event_id: Option<String>,
    patient_id: Option<String>,
    reason: String,
    raw: Vec<u8>,
    attempts: i32,
    #[sqlx(try_from = "String")]
    status: Status,
    created_at: DateTime<Utc>,
}

/// A dead letter as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Its id.
    pub id: i64,
    /// The plugin that refused it.
    pub plugin: String,
    /// Where it is in the stream.
    pub stream_seq: i64,
    /// Its subject.
    pub subject: String,
    /// Its eventId, when it could be read.
    pub event_id: Option<String>,
    /// Its patientId, when it could be read.
    pub patient_id: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// How many times it was tried.
    pub attempts: i32,
    /// Where it stands.
    pub status: Status,
    /// When it was first refused.
    pub created_at: DateTime<Utc>,
    /// The message as text (invalid UTF-8 replaced).
    pub raw: String,
    /// The message bytes exactly, hex-encoded.
    pub raw_hex: String,
}

impl From<Row> for DeadLetter {
    fn from(row: Row) -> Self {
        Self {
            raw: String::from_utf8_lossy(&row.raw).into_owned(),
            raw_hex: hex::encode(&row.raw),
            id: row.id,
            plugin: row.plugin,
            stream_seq: row.stream_seq,
            subject: row.subject,
            event_id: row.event_id,
            patient_id: row.patient_id,
            reason: row.reason,
            attempts: row.attempts,
            status: row.status,
            created_at: row.created_at,
        }
    }
}

/// A message to apply again: a dead letter being retried or a parked event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    /// The dead letter's id (`None` for a parked event).
    pub id: Option<i64>,
    /// Where it is in the stream.
    pub stream_seq: i64,
    /// Its subject.
    pub subject: String,
    /// The message bytes as received.
    pub raw: Vec<u8>,
    /// Its patient's partition.
    pub partition: i32,
}

/// The partitions of a projection one host holds: whose dead letters and
/// parked events it may apply again.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// How many partitions there are (`PARTITIONS`).
    pub partitions: u32,
    /// Those held.
    pub held: &'a [u32],
}

impl Held<'_> {
    fn bind(&self) -> (i32, Vec<i32>) {
        (
            self.partitions as i32,
            self.held.iter().map(|p| *p as i32).collect(),
        )
    }
}

/// Of a batch's patients, those whose later events must wait.
#[derive(Debug, Default)]
pub struct Poisoned {
    /// A dead letter of theirs that poisons is open.
    pub blocked: HashSet<String>,
    /// Events of theirs are parked.
    pub waiting: HashSet<String>,
}

/// Writes a batch's dead letters; one refused again counts another attempt.
pub(crate) async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    plugin: &str,
    dead: &[NewDeadLetter],
) -> Result<(), sqlx::Error> {
    if dead.is_empty() {
        return Ok(());
    }
    let query = sqlx::query(
        "INSERT INTO dead_letters (plugin, stream_seq, subject, event_id, patient_id, reason, raw, attempts, poisons)
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::int[], $9::bool[])
         ON CONFLICT (plugin, stream_seq) DO UPDATE SET
            reason = EXCLUDED.reason,
            attempts = dead_letters.attempts + EXCLUDED.attempts,
            poisons = EXCLUDED.poisons,
            status = 'dead',
            updated_at = now()",
    )
    .bind(plugin);
    bind_columns!(
        query,
        dead,
        |d| d.stream_seq as i64,
        |d| d.subject.as_str(),
        |d| d.event_id.as_deref(),
        |d| d.patient_id.as_deref(),
        |d| d.reason.as_str(),
        |d| d.raw.as_slice(),
        |d| d.attempts,
        |d| d.poisons,
    )
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Marks dead letters applied on a retry as resolved.
pub(crate) async fn resolve(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE dead_letters SET status = 'resolved', updated_at = now() WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Parks a batch's events of poisoned patients.
pub(crate) async fn park(
    tx: &mut Transaction<'_, Postgres>,
    plugin: &str,
    parked: &[NewParked],
) -> Result<(), sqlx::Error> {
    if parked.is_empty() {
        return Ok(());
    }
    let query = sqlx::query(
        "INSERT INTO parked_events (plugin, stream_seq, subject, patient_id, raw)
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bytea[])
         ON CONFLICT DO NOTHING",
    )
    .bind(plugin);
    bind_columns!(
        query,
        parked,
        |p| p.stream_seq as i64,
        |p| p.subject.as_str(),
        |p| p.patient_id.as_str(),
        |p| p.raw.as_slice(),
    )
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Removes parked events that were applied or dead-lettered now.
pub(crate) async fn release(
    tx: &mut Transaction<'_, Postgres>,
    plugin: &str,
    stream_seqs: &[u64],
) -> Result<(), sqlx::Error> {
    if stream_seqs.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = stream_seqs.iter().map(|s| *s as i64).collect();
    sqlx::query("DELETE FROM parked_events WHERE plugin = $1 AND stream_seq = ANY($2)")
        .bind(plugin)
        .bind(seqs)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// Dead letters, newest first, optionally of one plugin and status.
pub async fn list(
    pool: &PgPool,
    plugin: Option<&str>,
    status: Option<Status>,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, plugin, stream_seq, subject, event_id, patient_id, reason, raw, attempts, status, created_at
         FROM dead_letters
         WHERE ($1::text IS NULL OR plugin = $1) AND ($2::text IS NULL OR status = $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(plugin)
    .bind(status.map(Status::as_str))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(DeadLetter::from).collect())
}

/// What settling a dead letter did.
#[derive(Debug)]
pub enum Settled {
    /// Moved on; the plugin that refused it, to wake.
    Now {
        /// The plugin.
        plugin: String,
    },
    /// It was not dead.
    NotDead(Status),
    /// No such dead letter.
    NotFound,
}

/// Moves a dead letter on from `dead` to `retrying` (an operator re-drives
/// it) or `discarded` (an operator gives up on it).
pub async fn settle(pool: &PgPool, id: i64, to: Status) -> Result<Settled, sqlx::Error> {
    let updated: Option<String> = sqlx::query_scalar(
        "UPDATE dead_letters SET status = $2, updated_at = now()
         WHERE id = $1 AND status = 'dead' RETURNING plugin",
    )
    .bind(id)
    .bind(to.as_str())
    .fetch_optional(pool)
    .await?;
    if let Some(plugin) = updated {
        return Ok(Settled::Now { plugin });
    }
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(match status.map(|s| s.parse::<Status>()) {
        Some(Ok(status)) => Settled::NotDead(status),
        Some(Err(_)) | None => Settled::NotFound,
    })
}

/// Of these patients, those a plugin failed on (an open dead letter that
/// poisons), and those with events parked: their later events must wait.
pub async fn poisoned(
    pool: &PgPool,
    plugin: &str,
    patients: &[&str],
) -> Result<Poisoned, sqlx::Error> {
    let mut poisoned = Poisoned::default();
    if patients.is_empty() {
        return Ok(poisoned);
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
    for (patient, has_dead_letter) in rows {
        if has_dead_letter {
            poisoned.blocked.insert(patient);
        } else {
            poisoned.waiting.insert(patient);
        }
    }
    Ok(poisoned)
}

/// A plugin's parked events whose patients are clear again (no open dead
/// letter), oldest first, of the partitions `held`.
pub async fn releasable(
    pool: &PgPool,
    plugin: &str,
    held: Held<'_>,
    limit: i64,
) -> Result<Vec<Stored>, sqlx::Error> {
    let (partitions, held) = held.bind();
    sqlx::query_as(
        "SELECT * FROM (
            SELECT NULL::bigint AS id, p.stream_seq, p.subject, p.raw,
                   projector_partition(p.patient_id, $3) AS partition
            FROM parked_events p
            WHERE p.plugin = $1 AND NOT EXISTS (
               SELECT 1 FROM dead_letters d
               WHERE d.plugin = p.plugin AND d.patient_id = p.patient_id
                 AND d.poisons AND d.status IN ('dead', 'retrying'))) AS clear
         WHERE partition = ANY($4)
         ORDER BY stream_seq LIMIT $2",
    )
    .bind(plugin)
    .bind(limit)
    .bind(partitions)
    .bind(held)
    .fetch_all(pool)
    .await
}

/// The dead letters an operator asked to retry, in stream order, of the
/// partitions `held`.
pub async fn retrying(
    pool: &PgPool,
    plugin: &str,
    held: Held<'_>,
) -> Result<Vec<Stored>, sqlx::Error> {
    let (partitions, held) = held.bind();
    sqlx::query_as(
        "SELECT * FROM (
            SELECT id, stream_seq, subject, raw,
                   projector_partition(patient_id, $2) AS partition
            FROM dead_letters WHERE plugin = $1 AND status = 'retrying') AS letters
         WHERE partition = ANY($3)
         ORDER BY stream_seq",
    )
    .bind(plugin)
    .bind(partitions)
    .bind(held)
    .fetch_all(pool)
    .await
}

/// Every dead letter's stream sequence and reason, in stream order (a
/// replay's report).
pub async fn reasons(pool: &PgPool) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT stream_seq, reason FROM dead_letters ORDER BY stream_seq")
        .fetch_all(pool)
        .await
}
