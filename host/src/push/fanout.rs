//! What crosses host instances on the NATS core subject every instance
//! listens to: notifications to push and acknowledgements to announce, so a
//! device connected to any instance gets them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::hub::Delivery;
use crate::auth::Recipient;
use crate::store::notifications::Acknowledgement;

/// The subject, under the deployment's subject prefix.
pub fn subject(prefix: &str) -> String {
    format!("{prefix}projector.notifications")
}

/// One message on the subject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Wire {
    /// Stored notifications, in commit order, for their recipients' devices.
    Notifications {
        /// Each with its recipient and what its devices are sent.
        notifications: Vec<Delivery>,
    },
    /// A notification was acknowledged: its recipient's devices stop
    /// showing it.
    Acknowledged(Acknowledged),
}

/// An acknowledgement on its way to the recipient's devices.
#[derive(Debug, Serialize, Deserialize)]
pub struct Acknowledged {
    /// Whose devices.
    pub recipient: Recipient,
    /// What they are sent.
    pub notice: AcknowledgedNotice,
}

/// What a device is sent when one of its user's devices acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcknowledgedNotice {
    /// The notification.
    pub notification_id: Uuid,
    /// Who acknowledged it, when, from which device.
    pub acknowledged: Option<Acknowledgement>,
}

/// How many notifications one message carries at most (NATS's default
/// payload limit is 1 MiB; notifications are well under 2 KiB).
pub const CHUNK: usize = 200;
