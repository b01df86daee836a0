//! Escalating urgent notifications nobody acknowledged in time, level by
//! level of the escalation chain (`ESCALATION_CHAIN`): each level once, to
//! its role, as a copy that knows its original and its level.

use std::collections::HashMap;
use std::time::Duration;

use projector_contract::{Notification, Priority};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{COLUMNS, NewNotification, StoredNotification, insert};
use crate::auth::Recipient;
use crate::config::EscalationLevel;
use crate::store::audit::{self, NewAudit};

/// The user id the escalations are audited under.
const SYSTEM_USER: &str = "system";

/// Escalates every urgent notification that waited unacknowledged past a
/// level of `chain` without reaching it: a new urgent notification to that
/// level's role, once per level, audited. A notification overdue for
/// several levels (the hosts were down) reaches each. Hosts running this at
/// once each take different rows (`SKIP LOCKED`). Returns the new
/// notifications, to push.
pub async fn escalate_due(
    pool: &PgPool,
    chain: &[EscalationLevel],
) -> Result<Vec<StoredNotification>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut created = Vec::new();
    for (index, level) in chain.iter().enumerate() {
        let number = i16::try_from(index + 1).unwrap_or(i16::MAX);
        created.extend(escalate_level(&mut tx, number, level).await?);
    }
    tx.commit().await?;
    Ok(created)
}

/// One level: the originals that waited past it and have not reached it.
async fn escalate_level(
    tx: &mut Transaction<'static, Postgres>,
    number: i16,
    level: &EscalationLevel,
) -> Result<Vec<StoredNotification>, sqlx::Error> {
    let due: Vec<StoredNotification> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE requires_ack AND acknowledged_at IS NULL AND escalation_of IS NULL
           AND escalation_level < $2 AND created_at <= now() - $1::interval
         ORDER BY created_at LIMIT 500
         FOR UPDATE SKIP LOCKED"
    )))
    .bind(level.after)
    .bind(number)
    .fetch_all(&mut **tx)
    .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let recipient = Recipient::Role(level.role.clone());
    let audits: Vec<NewAudit> = due.iter().map(|n| audit_entry(n, level)).collect();
    let escalations: Vec<NewNotification> = due
        .iter()
        .map(|original| NewNotification {
            event_id: original.event_id.clone(),
            patient_id: original.patient_id.clone(),
            at: original.event_at,
            intent: escalation(original, &recipient, number, level.after),
        })
        .collect();
    let originals: HashMap<String, Uuid> = escalations
        .iter()
        .zip(&due)
        .map(|(e, original)| (e.intent.dedupe_key.clone(), original.notification_id))
        .collect();
    let created = insert(tx, escalations).await?;
    let pairs: Vec<(Uuid, Uuid)> = created
        .iter()
        .filter_map(|n| Some((*originals.get(&n.dedupe_key)?, n.notification_id)))
        .collect();
    // The copy knows its original and level; the original, the level it
    // reached and its newest copy. An original whose copy for this level
    // existed already (a host stopped in between) reaches the level too.
    let copies = sqlx::query(
        "UPDATE notifications c SET escalation_of = e.original, escalation_level = $3
         FROM UNNEST($1::uuid[], $2::uuid[]) AS e(original, new) WHERE c.notification_id = e.new",
    );
    crate::store::bind_columns!(copies, &pairs, |p| p.0, |p| p.1)
        .bind(number)
        .execute(&mut **tx)
        .await?;
    let reached: Vec<Uuid> = due.iter().map(|n| n.notification_id).collect();
    sqlx::query(
        "UPDATE notifications n SET escalation_level = $2, escalated_at = coalesce(n.escalated_at, now()),
                escalated_to = coalesce(
                    (SELECT c.notification_id FROM notifications c
                     WHERE c.escalation_of = n.notification_id AND c.escalation_level = $2),
                    n.escalated_to)
         WHERE n.notification_id = ANY($1)",
    )
    .bind(&reached)
    .bind(number)
    .execute(&mut **tx)
    .await?;
    audit::insert(&mut **tx, &audits).await?;
    Ok(created)
}

/// The audit entry of escalating `original` to a level.
fn audit_entry(original: &StoredNotification, level: &EscalationLevel) -> NewAudit {
    NewAudit {
        patient_id: Some(original.patient_id.clone()),
        detail: Some(format!("to role {}", level.role)),
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
    level: i16,
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
    data.insert("escalationLevel".into(), json!(level));
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
        dedupe_key: format!("escalation:{}:{level}", original.notification_id),
    }
}
