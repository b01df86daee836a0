//! Storing a batch's notification intents: each once per recipient and
//! dedupe key, each with its recipient's next seq.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Postgres, Transaction};
use uuid::Uuid;

use super::{COLUMNS, NewNotification, StoredNotification, body};
use crate::store::bind_columns;

/// One row to insert.
struct Row {
    id: Uuid,
    recipient: String,
    seq: i64,
    event_id: String,
    patient_id: String,
    kind: String,
    priority: &'static str,
    requires_ack: bool,
    dedupe_key: String,
    body: Value,
    event_at: DateTime<Utc>,
}

/// Stores notifications not stored before (per recipient and dedupe key),
/// each with the recipient's next `seq`, and returns those stored.
/// Recipients' counters are locked in sorted order so plugins committing
/// at once cannot deadlock.
pub(crate) async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    notifications: Vec<NewNotification>,
) -> Result<Vec<StoredNotification>, sqlx::Error> {
    let fresh = not_stored_yet(tx, notifications).await?;
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let mut next = reserve_seqs(tx, &fresh).await?;
    let rows: Vec<Row> = fresh
        .into_iter()
        .filter_map(|n| {
            let seq = next.get_mut(&n.intent.recipient)?;
            *seq += 1;
            Some(Row {
                id: Uuid::new_v4(),
                seq: *seq - 1,
                body: body(&n.intent),
                priority: n.intent.priority.as_str(),
                requires_ack: n.intent.requires_ack,
                recipient: n.intent.recipient,
                kind: n.intent.kind,
                dedupe_key: n.intent.dedupe_key,
                event_id: n.event_id,
                patient_id: n.patient_id,
                event_at: n.at,
            })
        })
        .collect();
    let query = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO notifications
            (notification_id, user_id, seq, event_id, patient_id, kind, priority, requires_ack, dedupe_key, body, event_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::bool[], $9::text[], $10::jsonb[], $11::timestamptz[])
         ON CONFLICT DO NOTHING
         RETURNING {COLUMNS}"
    )));
    bind_columns!(
        query,
        &rows,
        |r| r.id,
        |r| r.recipient.as_str(),
        |r| r.seq,
        |r| r.event_id.as_str(),
        |r| r.patient_id.as_str(),
        |r| r.kind.as_str(),
        |r| r.priority,
        |r| r.requires_ack,
        |r| r.dedupe_key.as_str(),
        |r| &r.body,
        |r| r.event_at,
    )
    .fetch_all(&mut **tx)
    .await
}

/// The intents that are neither repeated in this batch nor stored before.
async fn not_stored_yet(
    tx: &mut Transaction<'_, Postgres>,
    notifications: Vec<NewNotification>,
) -> Result<Vec<NewNotification>, sqlx::Error> {
    let mut seen = HashSet::new();
    let mut fresh: Vec<NewNotification> = notifications
        .into_iter()
        .filter(|n| seen.insert((n.intent.recipient.clone(), n.intent.dedupe_key.clone())))
        .collect();
    if fresh.is_empty() {
        return Ok(fresh);
    }
    let query = sqlx::query_as(
        "SELECT n.user_id, n.dedupe_key FROM notifications n
         JOIN UNNEST($1::text[], $2::text[]) AS c(u, k) ON n.user_id = c.u AND n.dedupe_key = c.k",
    );
    let stored: Vec<(String, String)> =
        bind_columns!(query, &fresh, |n| n.intent.recipient.as_str(), |n| n
            .intent
            .dedupe_key
            .as_str(),)
        .fetch_all(&mut **tx)
        .await?;
    let stored: HashSet<(String, String)> = stored.into_iter().collect();
    fresh.retain(|n| !stored.contains(&(n.intent.recipient.clone(), n.intent.dedupe_key.clone())));
    Ok(fresh)
}

/// Reserves a block of seqs per recipient; returns each recipient's first.
async fn reserve_seqs(
    tx: &mut Transaction<'_, Postgres>,
    fresh: &[NewNotification],
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let mut per_recipient: BTreeMap<&str, i64> = BTreeMap::new();
    for n in fresh {
        *per_recipient.entry(&n.intent.recipient).or_default() += 1;
    }
    let counts: Vec<(&str, i64)> = per_recipient.iter().map(|(r, c)| (*r, *c)).collect();
    let query = sqlx::query_as(
        "INSERT INTO notification_seqs (user_id, last_seq) SELECT * FROM UNNEST($1::text[], $2::bigint[])
         ON CONFLICT (user_id) DO UPDATE SET last_seq = notification_seqs.last_seq + EXCLUDED.last_seq
         RETURNING user_id, last_seq",
    );
    let last: Vec<(String, i64)> = bind_columns!(query, &counts, |c| c.0, |c| c.1)
        .fetch_all(&mut **tx)
        .await?;
    Ok(last
        .into_iter()
        .map(|(recipient, last)| {
            let count = per_recipient.get(recipient.as_str()).copied().unwrap_or(0);
            (recipient, last - count + 1)
        })
        .collect())
}
