//! The `notifications` table, the outbox: notifications are stored in the
//! batch's transaction (none lost, none doubled), then pushed, replayed,
//! resent, acknowledged and escalated from here.

mod acknowledge;
mod escalate;
mod insert;

pub use acknowledge::{Acknowledged, Acknowledger, acknowledge};
pub use escalate::escalate_due;
pub(crate) use insert::insert;

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use projector_contract::Notification;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use crate::auth::Recipient;

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

/// The columns every query of a [`StoredNotification`] selects or returns.
const COLUMNS: &str = "notification_id, user_id, seq, event_id, patient_id,
    priority = 'urgent' AS urgent, dedupe_key, body, event_at, created_at,
    acknowledged_at, acknowledged_by, acknowledged_device, escalated_at, escalated_to,
    escalation_of";

/// A stored notification, as its row holds it. Clients see it as JSON (its
/// [`Serialize`]): the body the plugin asked for with the row's id, seq,
/// recipient, times, acknowledgement and escalation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredNotification {
    /// Its id.
    pub notification_id: Uuid,
    /// Who it is for.
    #[sqlx(rename = "user_id", try_from = "String")]
    pub recipient: Recipient,
    /// Its place among its recipient's notifications.
    pub seq: i64,
    /// The event that caused it.
    pub event_id: String,
    /// That event's patient.
    pub patient_id: String,
    /// Urgent notifications are critical alerts: resent until acknowledged.
    pub urgent: bool,
    /// What tells it apart among its recipient's notifications.
    pub dedupe_key: String,
    /// What the plugin asked for: type, priority, title, message and data.
    pub body: Value,
    /// When the event happened.
    pub event_at: DateTime<Utc>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When it was acknowledged, if it was.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// By whom.
    pub acknowledged_by: Option<String>,
    /// From which device.
    pub acknowledged_device: Option<String>,
    /// When it was escalated to a role, if it was.
    pub escalated_at: Option<DateTime<Utc>>,
    /// The notification it was escalated as (its newest level's).
    pub escalated_to: Option<Uuid>,
    /// On an escalation, the original it is a copy of.
    pub escalation_of: Option<Uuid>,
}

/// Who acknowledged a notification, when, from which device.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Acknowledgement {
    /// When.
    pub at: DateTime<Utc>,
    /// The user.
    pub by: Option<String>,
    /// The device.
    pub device: Option<String>,
}

/// Where a notification was escalated to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Escalation {
    /// When.
    pub at: DateTime<Utc>,
    /// The notification it was escalated as.
    pub notification_id: Option<Uuid>,
}

/// The row's own fields as clients see them, over the plugin's body.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RowFields<'a> {
    notification_id: Uuid,
    seq: i64,
    event_id: &'a str,
    user_id: String,
    created_at: DateTime<Utc>,
    event_at: DateTime<Utc>,
    acknowledged: Option<Acknowledgement>,
    escalated: Option<Escalation>,
}

impl StoredNotification {
    /// Its acknowledgement, if it has one.
    pub fn acknowledgement(&self) -> Option<Acknowledgement> {
        Some(Acknowledgement {
            at: self.acknowledged_at?,
            by: self.acknowledged_by.clone(),
            device: self.acknowledged_device.clone(),
        })
    }

    /// How long it waited from being stored to being acknowledged.
    pub fn waited(&self) -> Option<Duration> {
        (self.acknowledged_at? - self.created_at).to_std().ok()
    }

    /// A text field of the plugin's body (`title`, `message`, `type`).
    pub fn text(&self, field: &str) -> &str {
        self.body[field].as_str().unwrap_or_default()
    }

    /// The notification as clients receive it (SPEC's seed shapes).
    pub fn to_json(&self) -> Value {
        let mut json = self.body.as_object().cloned().unwrap_or_default();
        let fields = RowFields {
            notification_id: self.notification_id,
            seq: self.seq,
            event_id: &self.event_id,
            user_id: self.recipient.column(),
            created_at: self.created_at,
            event_at: self.event_at,
            acknowledged: self.acknowledgement(),
            escalated: self.escalated_at.map(|at| Escalation {
                at,
                notification_id: self.escalated_to,
            }),
        };
        if let Ok(Value::Object(fields)) = serde_json::to_value(fields) {
            json.extend(fields);
        }
        Value::Object(json)
    }
}

impl Serialize for StoredNotification {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// For the API document: the row's fields over the plugin's body, whose
/// `type`, `priority`, `title` and `message` are always there and whose
/// other fields are the plugin's `data`.
impl utoipa::PartialSchema for StoredNotification {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let body = ObjectBuilder::new()
            .property("type", text())
            .property("priority", text().enum_values(Some(["normal", "urgent"])))
            .property("title", text())
            .property("message", text())
            .required("type")
            .required("priority")
            .required("title")
            .required("message");
        AllOfBuilder::new()
            .item(RowFields::schema())
            .item(body)
            .into()
    }
}

impl utoipa::ToSchema for StoredNotification {
    fn name() -> std::borrow::Cow<'static, str> {
        "Notification".into()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <RowFields as utoipa::ToSchema>::schemas(schemas);
    }
}

/// The body stored for an intent: the notification as clients receive it,
/// less the fields the table holds as columns.
fn body(n: &Notification) -> Value {
    let mut body = Map::new();
    body.insert("type".into(), n.kind.clone().into());
    body.insert("priority".into(), n.priority.as_str().into());
    body.insert("title".into(), n.title.clone().into());
    body.insert("message".into(), n.message.clone().into());
    if let Some(data) = n.data.as_object() {
        for (k, v) in data {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if n.requires_ack {
            body.insert("requiresAcknowledgment".into(), Value::Bool(true));
        }
    }
    Value::Object(body)
}

/// A recipient's notifications after `seq`, oldest first: what a client
/// pages through over HTTP.
pub async fn since(
    pool: &PgPool,
    recipient: &Recipient,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredNotification>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    )))
    .bind(recipient.column())
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Several recipients' notifications as one list in the order they were
/// stored, each list given in seq order: each recipient's keep their seq
/// order, so a client's cursor per recipient (the last seq it has of
/// theirs) stays exact when the list is cut.
pub fn merged(lists: Vec<Vec<StoredNotification>>) -> Vec<StoredNotification> {
    let total = lists.iter().map(Vec::len).sum();
    let mut lists: Vec<VecDeque<StoredNotification>> =
        lists.into_iter().map(VecDeque::from).collect();
    let mut merged = Vec::with_capacity(total);
    while let Some(next) = lists
        .iter_mut()
        .filter_map(|list| list.front().map(|n| n.created_at).zip(Some(list)))
        .min_by_key(|(at, _)| *at)
        .and_then(|(_, list)| list.pop_front())
    {
        merged.push(next);
    }
    merged
}

/// A recipient's newest `limit` notifications after `seq`, oldest first:
/// what a device that reconnects with `lastSeq` is replayed, however long
/// it was away.
pub async fn newest_since(
    pool: &PgPool,
    recipient: &Recipient,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredNotification>, sqlx::Error> {
    let mut newest: Vec<StoredNotification> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE user_id = $1 AND seq > $2 ORDER BY seq DESC LIMIT $3"
    )))
    .bind(recipient.column())
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    newest.reverse();
    Ok(newest)
}

/// The notifications of these recipients still waiting for an
/// acknowledgement, oldest first: resent on connect and on every interval.
pub async fn unacknowledged(
    pool: &PgPool,
    recipients: &[Recipient],
) -> Result<Vec<StoredNotification>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE user_id = ANY($1) AND requires_ack AND acknowledged_at IS NULL
         ORDER BY created_at, seq"
    )))
    .bind(columns(recipients))
    .fetch_all(pool)
    .await
}

/// A patient's critical alerts: the urgent notifications plugins raised
/// (not the copies escalations made of them), newest event first, with
/// their acknowledgement and escalation.
pub async fn alerts<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    patient_id: &str,
) -> Result<Vec<StoredNotification>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE patient_id = $1 AND priority = 'urgent' AND escalation_of IS NULL
         ORDER BY event_at DESC, seq DESC"
    )))
    .bind(patient_id)
    .fetch_all(executor)
    .await
}

/// Takes the notifications committed but never handed to NATS (the host
/// stopped in between), older than `grace` so a push in flight is not
/// doubled. Taking one marks it swept, in the same statement, so the hosts
/// sweeping at once each take different ones rather than all pushing each;
/// one swept and still unpushed after `grace` (its sweeper stopped too) is
/// taken again. Delivery stays at least once: a push that waited longer
/// than `grace` in its host's queue can meet a sweep's. By recipient and
/// seq.
pub async fn sweep_unpushed(
    pool: &PgPool,
    grace: Duration,
) -> Result<Vec<StoredNotification>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "WITH taken AS (
             UPDATE notifications SET swept_at = now()
             WHERE notification_id IN (
                 SELECT notification_id FROM notifications
                 WHERE pushed_at IS NULL AND created_at <= now() - $1::interval
                   AND (swept_at IS NULL OR swept_at <= now() - $1::interval)
                 ORDER BY user_id, seq LIMIT 1000
                 FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS})
         SELECT * FROM taken ORDER BY user_id, seq"
    )))
    .bind(grace)
    .fetch_all(pool)
    .await
}

/// Gives swept notifications back to the next sweep (the push could not
/// take them).
pub async fn unsweep(pool: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE notifications SET swept_at = NULL WHERE notification_id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await
        .map(drop)
}

/// The notifications an instance announced on the bus, by id, for their
/// recipients' devices: only rows that exist, and only while the
/// announcement is fresh (not yet marked pushed, or pushed within
/// `fresh_for`), so nothing forged or replayed later reaches a device.
/// By recipient and seq.
pub async fn announced(
    pool: &PgPool,
    ids: &[Uuid],
    fresh_for: Duration,
) -> Result<Vec<StoredNotification>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE notification_id = ANY($1)
           AND (pushed_at IS NULL OR pushed_at >= now() - $2::interval)
         ORDER BY user_id, seq"
    )))
    .bind(ids)
    .bind(fresh_for)
    .fetch_all(pool)
    .await
}

/// One notification, by id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<StoredNotification>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications WHERE notification_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
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

/// The `user_id` column values of recipients.
fn columns(recipients: &[Recipient]) -> Vec<String> {
    recipients.iter().map(Recipient::column).collect()
}

/// How many notifications wait for an acknowledgement, and how many of
/// those have waited longer than `overdue_after` (metrics).
pub async fn awaiting_acknowledgement(
    pool: &PgPool,
    overdue_after: Duration,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE created_at < now() - make_interval(secs => $1))
         FROM notifications WHERE requires_ack AND acknowledged_at IS NULL",
    )
    .bind(overdue_after.as_secs_f64())
    .fetch_one(pool)
    .await
}

/// Every notification, by recipient and seq (a replay's report).
pub async fn all(pool: &PgPool) -> Result<Vec<StoredNotification>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications ORDER BY user_id, seq"
    )))
    .fetch_all(pool)
    .await
}

#[cfg(test)]
impl StoredNotification {
    /// A normal notification of `recipient` at `seq`, stored at
    /// `created_at`, for unit tests.
    pub(crate) fn sample(recipient: Recipient, seq: i64, created_at: DateTime<Utc>) -> Self {
        StoredNotification {
            notification_id: Uuid::new_v4(),
            recipient,
            seq,
            event_id: format!("e-{seq}"),
            patient_id: "p-1".into(),
            urgent: false,
            dedupe_key: format!("k-{seq}"),
            body: Value::Object(Map::new()),
            event_at: created_at,
            created_at,
            acknowledged_at: None,
            acknowledged_by: None,
            acknowledged_device: None,
            escalated_at: None,
            escalated_to: None,
            escalation_of: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(recipient: &str, seq: i64, at_ms: i64) -> StoredNotification {
        let at = DateTime::UNIX_EPOCH + chrono::TimeDelta::milliseconds(at_ms);
        StoredNotification::sample(Recipient::from_column(recipient), seq, at)
    }

    /// Stored times need not rise with seq (a transaction that started
    /// first can take its seq last); each recipient's order is kept.
    #[test]
    fn merging_keeps_each_recipients_seq_order_and_interleaves_by_time() {
        let user = vec![stored("dr", 1, 10), stored("dr", 2, 5), stored("dr", 3, 30)];
        let role = vec![stored("role:nurse", 1, 7), stored("role:nurse", 2, 20)];
        let merged: Vec<(String, i64)> = merged(vec![user, role])
            .iter()
            .map(|n| (n.recipient.column(), n.seq))
            .collect();
        let pairs = |list: &[(&str, i64)]| -> Vec<(String, i64)> {
            list.iter().map(|(r, s)| ((*r).to_owned(), *s)).collect()
        };
        assert_eq!(
            merged,
            pairs(&[
                ("role:nurse", 1),
                ("dr", 1),
                ("dr", 2),
                ("role:nurse", 2),
                ("dr", 3)
            ])
        );
    }
}
