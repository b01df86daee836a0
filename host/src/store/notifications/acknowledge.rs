//! Acknowledging a notification: once, by one of its recipients, audited in
//! the same transaction.

use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use super::{COLUMNS, StoredNotification, columns};
use crate::auth::Recipient;
use crate::store::audit::{self, NewAudit};

/// Who acknowledges, from where.
#[derive(Debug, Clone)]
pub struct Acknowledger<'a> {
    /// The user (JWT `sub`).
    pub user_id: &'a str,
    /// The recipients whose notifications this user may acknowledge: their
    /// own and their role's.
    pub recipients: &'a [Recipient],
    /// The device (client-chosen id, or the connection's).
    pub device: &'a str,
    /// The client's address, for the audit log.
    pub address: Option<&'a str>,
}

/// What an acknowledgement found.
#[derive(Debug)]
pub enum Acknowledged {
    /// Acknowledged now: the notification as it stands, and the other
    /// copies of its escalation chain (the original and its escalations at
    /// every level) settled with it.
    Now(StoredNotification, Vec<StoredNotification>),
    /// Acknowledged before (by this or another device or user).
    Before(StoredNotification),
    /// No such notification for this user.
    NotFound,
}

/// Acknowledges a notification once, recording who, when and from which
/// device, settles the rest of its escalation chain the same way (a charge
/// nurse acknowledging an escalation stops the resends to the doctor, and
/// the doctor acknowledging stops the nurse's), and writes an audit entry
/// for each in the same transaction.
pub async fn acknowledge(
    pool: &PgPool,
    notification_id: Uuid,
    by: &Acknowledger<'_>,
) -> Result<Acknowledged, sqlx::Error> {
    let recipients = columns(by.recipients);
    let mut tx = pool.begin().await?;
    let updated: Option<StoredNotification> = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE notifications SET acknowledged_at = now(), acknowledged_by = $2, acknowledged_device = $3
         WHERE notification_id = $1 AND user_id = ANY($4) AND acknowledged_at IS NULL
         RETURNING {COLUMNS}"
    )))
    .bind(notification_id)
    .bind(by.user_id)
    .bind(by.device)
    .bind(&recipients)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(notification) = updated else {
        let before: Option<StoredNotification> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM notifications WHERE notification_id = $1 AND user_id = ANY($2)"
        )))
        .bind(notification_id)
        .bind(&recipients)
        .fetch_optional(&mut *tx)
        .await?;
        return Ok(before.map_or(Acknowledged::NotFound, Acknowledged::Before));
    };
    // The chain: the original and every copy of it, at every level.
    let original = notification
        .escalation_of
        .unwrap_or(notification.notification_id);
    let chain: Vec<StoredNotification> = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE notifications SET acknowledged_at = now(), acknowledged_by = $2, acknowledged_device = $3
         WHERE acknowledged_at IS NULL AND notification_id <> $1
           AND $4 IN (notification_id, escalation_of)
         RETURNING {COLUMNS}"
    )))
    .bind(notification_id)
    .bind(by.user_id)
    .bind(by.device)
    .bind(original)
    .fetch_all(&mut *tx)
    .await?;
    let entries: Vec<NewAudit> = std::iter::once(&notification)
        .chain(&chain)
        .map(|n| NewAudit {
            patient_id: Some(n.patient_id.clone()),
            ip_address: by.address.map(str::to_owned),
            ..NewAudit::now(
                by.user_id,
                "acknowledge_notification",
                "notification",
                n.notification_id.to_string(),
            )
        })
        .collect();
    audit::insert(&mut *tx, &entries).await?;
    tx.commit().await?;
    Ok(Acknowledged::Now(notification, chain))
}
