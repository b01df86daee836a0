//! What crosses host instances on the NATS core subject every instance
//! listens to: notifications to push and acknowledgements to announce, so a
//! device connected to any instance gets them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::notifications::Acknowledgement;

/// The subject, under the deployment's subject prefix.
pub fn subject(prefix: &str) -> String {
    format!("{prefix}projector.notifications")
}

/// One message on the subject. It carries ids only: what a device is sent
/// is read from the database, so whoever can publish on the subject cannot
/// put words on a clinician's screen or clear an alert.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Wire {
    /// Notifications just committed, in commit order, for their
    /// recipients' devices.
    Notifications {
        /// Their ids.
        ids: Vec<Uuid>,
        /// The instance that committed them: it delivered them to its own
        /// devices already, as it stored them, and skips its own
        /// announcement (a forged one naming it delivers nothing, as any
        /// announcement of rows that do not exist).
        #[serde(default)]
        from: Option<Uuid>,
    },
    /// A notification was acknowledged: its recipient's devices stop
    /// showing it.
    Acknowledged {
        /// Its id.
        notification_id: Uuid,
    },
}

/// What a device is sent when one of its user's devices acknowledged.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AcknowledgedNotice {
    /// The notification.
    pub notification_id: Uuid,
    /// Who acknowledged it, when, from which device.
    pub acknowledged: Option<Acknowledgement>,
}

/// How long after its push an announcement is honoured: a replay of it
/// later delivers nothing.
pub const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// How many ids one message carries at most (NATS's default payload limit
/// is 1 MiB).
pub const CHUNK: usize = 1000;
