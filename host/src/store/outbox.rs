//! The notification outbox: notifications are stored in the batch's
//! transaction (none lost, none doubled), then pushed, replayed, resent,
//! acknowledged and escalated from here.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use projector_contract::{Notification, Priority};
use serde_json::Value;
use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::commit::{NewAudit, insert_audits};

/// A notification intent with the event that caused it.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// The event.
    pub event_id: String,
    /// Its patient.
    pub patient_id: String,
    /// When the event happened.
    pub at: DateTime<Utc>,
    /// What the plugin asked for.
    pub intent: Notification,
}

/// A notification as clients receive it: the stored body with its id, seq,
/// eventId and createdAt, its recipient, and its acknowledgement and
/// escalation state.
pub const NOTIFICATION_JSON: &str = "body || jsonb_build_object(
        'notificationId', notification_id, 'seq', seq, 'eventId', event_id,
        'userId', user_id, 'createdAt', created_at, 'eventAt', event_at,
        'acknowledged', CASE WHEN acknowledged_at IS NULL THEN NULL ELSE jsonb_build_object(
            'at', acknowledged_at, 'by', acknowledged_by, 'device', acknowledged_device) END,
        'escalated', CASE WHEN escalated_at IS NULL THEN NULL ELSE jsonb_build_object(
            'at', escalated_at, 'notificationId', escalated_to) END)";

/// The recipient of notifications escalated to a role: roles share the
/// notifications table with users under this prefix.
pub fn role_recipient(role: &str) -> String {
    format!("role:{role}")
}

/// Stores notifications not stored before (per user and dedupe key), each
/// with the user's next `seq`, and returns those stored as clients see them.
/// Users' counters are locked in sorted order so plugins committing at once
/// cannot deadlock.
pub(crate) async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    notifications: Vec<NewNotification>,
) -> Result<Vec<Value>, sqlx::Error> {
    let mut seen = HashSet::new();
    let mut fresh: Vec<NewNotification> = notifications
        .into_iter()
        .filter(|n| seen.insert((n.intent.recipient.clone(), n.intent.dedupe_key.clone())))
        .collect();
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<&str> = fresh.iter().map(|n| n.intent.recipient.as_str()).collect();
    let keys: Vec<&str> = fresh.iter().map(|n| n.intent.dedupe_key.as_str()).collect();
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.user_id, n.dedupe_key FROM notifications n
         JOIN UNNEST($1::text[], $2::text[]) AS c(u, k) ON n.user_id = c.u AND n.dedupe_key = c.k",
    )
    .bind(&users)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?;
    let stored: HashSet<(String, String)> = stored.into_iter().collect();
    fresh.retain(|n| !stored.contains(&(n.intent.recipient.clone(), n.intent.dedupe_key.clone())));
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let mut per_user: BTreeMap<String, i64> = BTreeMap::new();
    for n in &fresh {
        *per_user.entry(n.intent.recipient.clone()).or_default() += 1;
    }
    let (users, counts): (Vec<&String>, Vec<i64>) = per_user.iter().map(|(u, c)| (u, *c)).unzip();
    let last: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO notification_seqs (user_id, last_seq) SELECT * FROM UNNEST($1::text[], $2::bigint[])
         ON CONFLICT (user_id) DO UPDATE SET last_seq = notification_seqs.last_seq + EXCLUDED.last_seq
         RETURNING user_id, last_seq",
    )
    .bind(&users)
    .bind(&counts)
    .fetch_all(&mut **tx)
    .await?;
    // Each user's next seq: the first of the block just reserved.
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    for (user, last) in last {
        let count = per_user.get(&user).copied().unwrap_or(0);
        next.insert(user, last - count + 1);
    }
    let mut ids = Vec::new();
    let mut user_ids = Vec::new();
    let mut seqs = Vec::new();
    let mut event_ids = Vec::new();
    let mut patient_ids = Vec::new();
    let mut kinds = Vec::new();
    let mut priorities = Vec::new();
    let mut acks = Vec::new();
    let mut dedupe = Vec::new();
    let mut bodies = Vec::new();
    let mut event_ats = Vec::new();
    for n in fresh {
        let seq = next.get_mut(&n.intent.recipient).map(|s| {
            *s += 1;
            *s - 1
        });
        let Some(seq) = seq else { continue };
        ids.push(Uuid::new_v4());
        seqs.push(seq);
        event_ids.push(n.event_id);
        patient_ids.push(n.patient_id);
        kinds.push(n.intent.kind.clone());
        priorities.push(n.intent.priority.as_str());
        acks.push(n.intent.requires_ack);
        dedupe.push(n.intent.dedupe_key.clone());
        bodies.push(body(&n.intent));
        event_ats.push(n.at);
        user_ids.push(n.intent.recipient);
    }
    sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO notifications
            (notification_id, user_id, seq, event_id, patient_id, kind, priority, requires_ack, dedupe_key, body, event_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::bool[], $9::text[], $10::jsonb[], $11::timestamptz[])
         ON CONFLICT DO NOTHING
         RETURNING {NOTIFICATION_JSON}"
    )))
    .bind(ids)
    .bind(user_ids)
    .bind(seqs)
    .bind(event_ids)
    .bind(patient_ids)
    .bind(kinds)
    .bind(priorities)
    .bind(acks)
    .bind(dedupe)
    .bind(bodies)
    .bind(event_ats)
    .fetch_all(&mut **tx)
    .await
}

/// The notification as clients receive it (SPEC's seed shapes), less the
/// fields the table holds as columns (id, seq, eventId, createdAt).
fn body(n: &Notification) -> Value {
    let mut body = json!({
        "type": n.kind,
        "priority": n.priority.as_str(),
        "title": n.title,
        "message": n.message,
    });
    if let (Some(body), Some(data)) = (body.as_object_mut(), n.data.as_object()) {
        for (k, v) in data {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if n.requires_ack {
            body.insert("requiresAcknowledgment".into(), Value::Bool(true));
        }
    }
    body
}

/// A recipient's notifications after `seq`, oldest first: what a device
/// that reconnects with `lastSeq` missed.
pub async fn since(
    pool: &PgPool,
    recipient: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT {NOTIFICATION_JSON} FROM notifications
         WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    )))
    .bind(recipient)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The notifications of these recipients still waiting for an
/// acknowledgement, oldest first: resent on connect and on every interval.
pub async fn unacknowledged(
    pool: &PgPool,
    recipients: &[String],
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT {NOTIFICATION_JSON} FROM notifications
         WHERE user_id = ANY($1) AND requires_ack AND acknowledged_at IS NULL
         ORDER BY created_at, seq"
    )))
    .bind(recipients)
    .fetch_all(pool)
    .await
}

/// A patient's urgent notifications (critical alerts), newest event first,
/// with their acknowledgement state.
pub async fn alerts(pool: &PgPool, patient_id: &str) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT {NOTIFICATION_JSON} FROM notifications
         WHERE patient_id = $1 AND priority = 'urgent' ORDER BY event_at DESC, seq DESC"
    )))
    .bind(patient_id)
    .fetch_all(pool)
    .await
}

/// Who acknowledges, from where.
#[derive(Debug, Clone)]
pub struct Acknowledger<'a> {
    /// The user (JWT `sub`).
    pub user_id: &'a str,
    /// The recipients whose notifications this user may acknowledge: their
    /// own and their role's.
    pub recipients: &'a [String],
    /// The device (client-chosen id, or the connection's).
    pub device: &'a str,
    /// The client's address, for the audit log.
    pub address: Option<&'a str>,
}

/// What an acknowledgement found.
#[derive(Debug)]
pub enum Acknowledged {
    /// Acknowledged now; the notification as it stands.
    Now(Value),
    /// Acknowledged before (by this or another device or user).
    Before(Value),
    /// No such notification for this user.
    NotFound,
}

/// Acknowledges a notification once, recording who, when and from which
/// device, and writes the audit entry in the same transaction.
pub async fn acknowledge(
    pool: &PgPool,
    notification_id: Uuid,
    by: &Acknowledger<'_>,
) -> Result<Acknowledged, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let updated: Option<(Value, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE notifications SET acknowledged_at = now(), acknowledged_by = $2, acknowledged_device = $3
         WHERE notification_id = $1 AND user_id = ANY($4) AND acknowledged_at IS NULL
         RETURNING {NOTIFICATION_JSON}, patient_id"
    )))
    .bind(notification_id)
    .bind(by.user_id)
    .bind(by.device)
    .bind(by.recipients)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((notification, patient_id)) = updated else {
        let before: Option<Value> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT {NOTIFICATION_JSON} FROM notifications WHERE notification_id = $1 AND user_id = ANY($2)"
        )))
        .bind(notification_id)
        .bind(by.recipients)
        .fetch_optional(&mut *tx)
        .await?;
        return Ok(before.map_or(Acknowledged::NotFound, Acknowledged::Before));
    };
    sqlx::query(
        "INSERT INTO audit_log (user_id, action, resource_type, resource_id, patient_id, ip_address)
         VALUES ($1, 'acknowledge_notification', 'notification', $2, $3, $4)",
    )
    .bind(by.user_id)
    .bind(notification_id.to_string())
    .bind(patient_id)
    .bind(by.address)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Acknowledged::Now(notification))
}

/// The user id the escalations are audited under.
const SYSTEM_USER: &str = "system";

/// Escalates every urgent notification unacknowledged for longer than
/// `after` to `role` as a new urgent notification, once, audited. Hosts
/// running this at once each take different rows (`SKIP LOCKED`). Returns
/// the new notifications, to push.
pub async fn escalate_due(
    pool: &PgPool,
    after: Duration,
    role: &str,
) -> Result<Vec<Value>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<(Value, String, String, DateTime<Utc>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {NOTIFICATION_JSON}, event_id, patient_id, event_at FROM notifications
         WHERE requires_ack AND acknowledged_at IS NULL AND escalated_at IS NULL
           AND user_id NOT LIKE 'role:%' AND created_at <= now() - $1::interval
         ORDER BY created_at LIMIT 500
         FOR UPDATE SKIP LOCKED"
    )))
    .bind(after)
    .fetch_all(&mut *tx)
    .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let recipient = role_recipient(role);
    let mut escalations = Vec::new();
    let mut audits = Vec::new();
    for (original, event_id, patient_id, at) in due {
        let id = original["notificationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        audits.push(NewAudit {
            user_id: SYSTEM_USER.into(),
            action: "escalate_notification".into(),
            resource_type: "notification".into(),
            resource_id: id.clone(),
            patient_id: patient_id.clone(),
            at: Utc::now(),
        });
        escalations.push(NewNotification {
            event_id,
            patient_id,
            at,
            intent: escalation(&original, &recipient, after, &id),
        });
    }
    let created = insert(&mut tx, escalations).await?;
    let (originals, escalated): (Vec<Uuid>, Vec<Uuid>) = created
        .iter()
        .filter_map(|n| {
            let original: Uuid = n["escalatedFrom"]["notificationId"]
                .as_str()?
                .parse()
                .ok()?;
            let new: Uuid = n["notificationId"].as_str()?.parse().ok()?;
            Some((original, new))
        })
        .unzip();
    sqlx::query(
        "UPDATE notifications n SET escalated_at = now(), escalated_to = e.new
         FROM UNNEST($1::uuid[], $2::uuid[]) AS e(original, new) WHERE n.notification_id = e.original",
    )
    .bind(originals)
    .bind(escalated)
    .execute(&mut *tx)
    .await?;
    insert_audits(&mut tx, &audits).await?;
    tx.commit().await?;
    Ok(created)
}

/// The notification that escalates `original` to the covering role: the
/// same clinical content, a title that says it was escalated, and where
/// it came from.
fn escalation(original: &Value, recipient: &str, after: Duration, id: &str) -> Notification {
    const OWN_FIELDS: [&str; 13] = [
        "type",
        "priority",
        "title",
        "message",
        "requiresAcknowledgment",
        "notificationId",
        "seq",
        "eventId",
        "userId",
        "createdAt",
        "eventAt",
        "acknowledged",
        "escalated",
    ];
    let mut data = original.as_object().cloned().unwrap_or_default();
    data.retain(|k, _| !OWN_FIELDS.contains(&k.as_str()));
    data.insert(
        "escalatedFrom".into(),
        json!({
            "notificationId": id,
            "userId": original["userId"],
            "type": original["type"],
            "createdAt": original["createdAt"],
        }),
    );
    let text = |field: &str| original[field].as_str().unwrap_or_default().to_owned();
    Notification {
        recipient: recipient.to_owned(),
        kind: "escalated_alert".into(),
        priority: Priority::Urgent,
        title: format!("ESCALATED: {}", text("title")),
        message: format!(
            "{} (not acknowledged by {} within {} s)",
            text("message"),
            text("userId"),
            after.as_secs()
        ),
        data: Value::Object(data),
        requires_ack: true,
        dedupe_key: format!("escalation:{id}"),
    }
}

/// Notifications committed but never handed to NATS (the host stopped in
/// between), older than `grace` so a push in flight is not doubled.
pub async fn unpushed(pool: &PgPool, grace: Duration) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT {NOTIFICATION_JSON} FROM notifications
         WHERE pushed_at IS NULL AND created_at <= now() - $1::interval
         ORDER BY user_id, seq LIMIT 1000"
    )))
    .bind(grace)
    .fetch_all(pool)
    .await
}

/// Records that these notifications were handed to NATS.
pub async fn mark_pushed(pool: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE notifications SET pushed_at = now() WHERE notification_id = ANY($1) AND pushed_at IS NULL")
        .bind(ids)
        .execute(pool)
        .await
        .map(drop)
}
