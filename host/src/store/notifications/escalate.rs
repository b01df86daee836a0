//! Escalating urgent notifications nobody acknowledged in time to the
//! covering role.

use std::collections::HashMap;
use std::time::Duration;

use projector_contract::{Notification, Priority};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use super::{COLUMNS, NewNotification, StoredNotification, insert};
use crate::auth::Recipient;
use crate::store::audit::{self, NewAudit};

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
) -> Result<Vec<StoredNotification>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<StoredNotification> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE requires_ack AND acknowledged_at IS NULL AND escalated_at IS NULL
           AND user_id NOT LIKE $2 AND created_at <= now() - $1::interval
         ORDER BY created_at LIMIT 500
         FOR UPDATE SKIP LOCKED"
    )))
    .bind(after)
    .bind(Recipient::ROLE_COLUMN_PATTERN)
    .fetch_all(&mut *tx)
    .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let recipient = Recipient::Role(role.to_owned());
    let audits: Vec<NewAudit> = due.iter().map(audit_entry).collect();
    let escalations: Vec<NewNotification> = due
        .iter()
        .map(|original| NewNotification {
            event_id: original.event_id.clone(),
            patient_id: original.patient_id.clone(),
            at: original.event_at,
            intent: escalation(original, &recipient, after),
        })
        .collect();
    let originals: HashMap<String, Uuid> = escalations
        .iter()
        .zip(&due)
        .map(|(e, original)| (e.intent.dedupe_key.clone(), original.notification_id))
        .collect();
    let created = insert(&mut tx, escalations).await?;
    let pairs: Vec<(Uuid, Uuid)> = created
        .iter()
        .filter_map(|n| Some((*originals.get(&n.dedupe_key)?, n.notification_id)))
        .collect();
    let query = sqlx::query(
        "UPDATE notifications n SET escalated_at = now(), escalated_to = e.new
         FROM UNNEST($1::uuid[], $2::uuid[]) AS e(original, new) WHERE n.notification_id = e.original",
    );
    crate::store::bind_columns!(query, &pairs, |p| p.0, |p| p.1)
        .execute(&mut *tx)
        .await?;
    audit::insert(&mut *tx, &audits).await?;
    tx.commit().await?;
    Ok(created)
}

/// The audit entry of escalating `original`.
fn audit_entry(original: &StoredNotification) -> NewAudit {
    NewAudit {
        patient_id: Some(original.patient_id.clone()),
        ..NewAudit::now(
            SYSTEM_USER,
            "escalate_notification",
            "notification",
            original.notification_id.to_string(),
        )
    }
}

/// The fields of a notification's body that are its own, not its clinical
/// content: an escalation sets them anew.
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

/// The notification that escalates `original` to the covering role: the
/// same clinical content, a title that says it was escalated, and where
/// it came from.
fn escalation(
    original: &StoredNotification,
    recipient: &Recipient,
    after: Duration,
) -> Notification {
    let mut data = original.body.as_object().cloned().unwrap_or_default();
    data.retain(|k, _| !OWN_FIELDS.contains(&k.as_str()));
    let from = original.recipient.column();
    data.insert(
        "escalatedFrom".into(),
        json!({
            "notificationId": original.notification_id,
            "userId": from,
            "type": original.text("type"),
            "createdAt": original.created_at,
        }),
    );
    Notification {
        recipient: recipient.column(),
        kind: "escalated_alert".into(),
        priority: Priority::Urgent,
        title: format!("ESCALATED: {}", original.text("title")),
        message: format!(
            "{} (not acknowledged by {from} within {} s)",
            original.text("message"),
            after.as_secs()
        ),
        data: Value::Object(data),
        requires_ack: true,
        dedupe_key: format!("escalation:{}", original.notification_id),
    }
}
