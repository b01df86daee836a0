//! What crosses host instances on the NATS core subject every instance
//! listens to: notifications to push and acknowledgements to announce, so a
//! device connected to any instance gets them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
        /// As the outbox returns them.
        notifications: Vec<Value>,
    },
    /// A notification was acknowledged: its recipient's devices stop
    /// showing it.
    Acknowledged {
        /// The notification as it stands, acknowledgement included.
        notification: Value,
    },
}

/// How many notifications one message carries at most (NATS's default
/// payload limit is 1 MiB; notifications are well under 2 KiB).
pub const CHUNK: usize = 200;
