//! What handling an event produces: mutations, notifications, audit entries.

use serde_json::Value;

/// A change to one document of a view; see `wit/projector.wit` for the
/// semantics, which [`crate::document::apply`] implements. Plugins declare
/// changes rather than write the database, so the host can check them
/// (only the plugin's own views), apply a batch's in one transaction and
/// replay them the same way in a rebuild. Usually built with [`Outcome`]'s
/// methods.
///
/// ```
/// use projector_contract::{Mutation, Outcome};
///
/// let mut out = Outcome::default();
/// out.delete("open_encounters", "enc-1");
/// assert_eq!(out.mutations[0], Mutation::Delete { view: "open_encounters".into(), key: "enc-1".into() });
/// assert_eq!(out.mutations[0].target(), ("open_encounters", "enc-1"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Replace the document.
    Upsert {
        /// The view, one the plugin declared.
        view: String,
        /// The document's key.
        key: String,
        /// The new document, a JSON object.
        doc: Value,
    },
    /// Deep-merge an object into the document.
    Merge {
        /// The view, one the plugin declared.
        view: String,
        /// The document's key.
        key: String,
        /// The object merged in.
        doc: Value,
    },
    /// Append `item` to the list at `path`; with `match_field`, replace the item
    /// that has the same value of that field instead.
    Append {
        /// The view, one the plugin declared.
        view: String,
        /// The document's key.
        key: String,
        /// Dotted path of the list, created if missing.
        path: String,
        /// The item appended.
        item: Value,
        /// The field that identifies an item, if items are replaced by it.
        match_field: Option<String>,
    },
    /// Remove from the list at `path` the items matching `item` on
    /// `match_field` (or equal to `item` without one).
    Remove {
        /// The view, one the plugin declared.
        view: String,
        /// The document's key.
        key: String,
        /// Dotted path of the list.
        path: String,
        /// What the removed items match.
        item: Value,
        /// The field compared, or none to compare whole items.
        match_field: Option<String>,
    },
    /// Add `delta` to the number at `path`.
    Increment {
        /// The view, one the plugin declared.
        view: String,
        /// The document's key.
        key: String,
        /// Dotted path of the number, 0 if missing.
        path: String,
        /// What is added (negative to count down).
        delta: i64,
    },
    /// Delete the document.
    Delete {
        /// The view, one the plugin declared.
        view: String,
        /// The document's key.
        key: String,
    },
}

impl Mutation {
    /// The view and key of the document it changes: what the host checks
    /// ownership by and groups a batch's changes by.
    pub fn target(&self) -> (&str, &str) {
        match self {
            Self::Upsert { view, key, .. }
            | Self::Merge { view, key, .. }
            | Self::Append { view, key, .. }
            | Self::Remove { view, key, .. }
            | Self::Increment { view, key, .. }
            | Self::Delete { view, key } => (view, key),
        }
    }
}

/// How urgent a notification is, which decides how the host delivers it.
///
/// ```
/// assert_eq!(projector_contract::Priority::Urgent.as_str(), "urgent");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Delivered once to every device.
    Normal,
    /// Resent until acknowledged, escalated when not.
    Urgent,
}

impl Priority {
    /// The name clients see in a notification's `priority` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Urgent => "urgent",
        }
    }
}

/// A notification intent for one clinician: plugins say who should be told
/// what, and the host stores it once (see `dedupe_key`) and delivers it to
/// the clinician's devices. Built with [`Notification::normal`] or
/// [`Notification::urgent`], which show its use.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// User id of the recipient.
    pub recipient: String,
    /// The notification's `type`, e.g. `lab_result_available`.
    pub kind: String,
    /// Normal or urgent.
    pub priority: Priority,
    /// Title shown to the clinician.
    pub title: String,
    /// Message shown to the clinician.
    pub message: String,
    /// Further fields (patientId, reportId, action, details, …), a JSON object.
    pub data: Value,
    /// Whether the clinician must acknowledge it.
    pub requires_ack: bool,
    /// At most one notification per (recipient, dedupe key) is stored.
    pub dedupe_key: String,
}

/// An audit-log entry, attributed to the event's user unless it names
/// another: plugins know which events are accesses to a record (a report
/// viewed, a chart opened), and the host keeps the audit log. A plugin
/// writes only the actions it declared ([`crate::PluginInfo::audits`]).
///
/// ```
/// let mut out = projector_contract::Outcome::default();
/// out.audit("lab_result.viewed", "DiagnosticReport", "rep-1");
/// assert_eq!(out.audits[0].resource_id, "rep-1");
/// out.audit_as("u-dr-jones", "lab_result.viewed", "DiagnosticReport", "rep-2");
/// assert_eq!(out.audits[1].user_id.as_deref(), Some("u-dr-jones"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// What was done, e.g. `lab_result.viewed`.
    pub action: String,
    /// FHIR resource type of what it was done to.
    pub resource_type: String,
    /// Id of that resource.
    pub resource_id: String,
    /// Who did it, when not the event's user (the `viewedBy` of a view
    /// event, whose sender is the system that saw it).
    pub user_id: Option<String>,
}

/// Everything one event produced: what a plugin's `handle` returns, and
/// what the host keeps whole or not at all. Built with the methods below.
///
/// ```
/// use projector_contract::{Notification, Outcome};
/// use serde_json::json;
///
/// let mut out = Outcome::default();
/// out.merge("patient_chart", "p-1", json!({ "patientId": "p-1" }))
///     .append("patient_chart", "p-1", "allergies", json!({ "allergyId": "a-1" }), Some("allergyId"))
///     .increment("patient_chart", "p-1", "pendingOrders.lab", 1)
///     .notify(Notification::normal("u-dr-1", "lab_result_available", "Lab Results Available",
///         "New lab results are ready for review", json!({ "patientId": "p-1" }), "lab:rep-1"))
///     .audit("lab_result.viewed", "DiagnosticReport", "rep-1");
/// assert_eq!(out.mutations.len(), 3);
/// assert_eq!(out.notifications[0].recipient, "u-dr-1");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Read-model changes, applied in order.
    pub mutations: Vec<Mutation>,
    /// Notifications to store and push.
    pub notifications: Vec<Notification>,
    /// Audit-log entries.
    pub audits: Vec<AuditEntry>,
}

impl Outcome {
    /// Replaces a whole document.
    pub fn upsert(&mut self, view: &str, key: &str, doc: Value) -> &mut Self {
        self.push(Mutation::Upsert {
            view: view.into(),
            key: key.into(),
            doc,
        })
    }

    /// Deep-merges `doc` into a document, creating it if missing.
    pub fn merge(&mut self, view: &str, key: &str, doc: Value) -> &mut Self {
        self.push(Mutation::Merge {
            view: view.into(),
            key: key.into(),
            doc,
        })
    }

    /// Appends `item` to the list at `path`, or replaces the item with the same
    /// `match_field` value.
    pub fn append(
        &mut self,
        view: &str,
        key: &str,
        path: &str,
        item: Value,
        match_field: Option<&str>,
    ) -> &mut Self {
        self.push(Mutation::Append {
            view: view.into(),
            key: key.into(),
            path: path.into(),
            item,
            match_field: match_field.map(Into::into),
        })
    }

    /// Removes the items of the list at `path` whose `match_field` is `value`.
    pub fn remove(
        &mut self,
        view: &str,
        key: &str,
        path: &str,
        match_field: &str,
        value: Value,
    ) -> &mut Self {
        let mut item = serde_json::Map::new();
        item.insert(match_field.to_owned(), value);
        self.push(Mutation::Remove {
            view: view.into(),
            key: key.into(),
            path: path.into(),
            item: Value::Object(item),
            match_field: Some(match_field.into()),
        })
    }

    /// Adds `delta` to the number at `path`.
    pub fn increment(&mut self, view: &str, key: &str, path: &str, delta: i64) -> &mut Self {
        self.push(Mutation::Increment {
            view: view.into(),
            key: key.into(),
            path: path.into(),
            delta,
        })
    }

    /// Deletes a document.
    pub fn delete(&mut self, view: &str, key: &str) -> &mut Self {
        self.push(Mutation::Delete {
            view: view.into(),
            key: key.into(),
        })
    }

    /// Adds any mutation.
    pub fn push(&mut self, mutation: Mutation) -> &mut Self {
        self.mutations.push(mutation);
        self
    }

    /// Sends a notification.
    pub fn notify(&mut self, notification: Notification) -> &mut Self {
        self.notifications.push(notification);
        self
    }

    /// Writes an audit-log entry under the event's user.
    pub fn audit(&mut self, action: &str, resource_type: &str, resource_id: &str) -> &mut Self {
        self.audits.push(AuditEntry {
            action: action.into(),
            resource_type: resource_type.into(),
            resource_id: resource_id.into(),
            user_id: None,
        });
        self
    }

    /// Writes an audit-log entry under another user than the event's.
    pub fn audit_as(
        &mut self,
        user_id: &str,
        action: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> &mut Self {
        self.audit(action, resource_type, resource_id);
        if let Some(entry) = self.audits.last_mut() {
            entry.user_id = Some(user_id.into());
        }
        self
    }
}

impl Notification {
    /// A normal-priority notification (delivered, not acknowledged). The host
    /// stores at most one per (recipient, `dedupe_key`), so a redelivered
    /// event notifies no one twice.
    ///
    /// ```
    /// use projector_contract::{Notification, Priority};
    /// use serde_json::json;
    ///
    /// let alert = Notification::urgent("u-dr-1", "critical_lab_value", "🚨 CRITICAL LAB VALUE",
    ///     "CRITICAL: Potassium = 6.5 mmol/L", json!({ "patientId": "p-1" }), "critical:rep-1:2823-3");
    /// assert_eq!(alert.priority, Priority::Urgent);
    /// assert!(alert.requires_ack);
    /// ```
    pub fn normal(
        recipient: &str,
        kind: &str,
        title: &str,
        message: &str,
        data: Value,
        dedupe_key: &str,
    ) -> Self {
        Self {
            recipient: recipient.into(),
            kind: kind.into(),
            priority: Priority::Normal,
            title: title.into(),
            message: message.into(),
            data,
            requires_ack: false,
            dedupe_key: dedupe_key.into(),
        }
    }

    /// An urgent notification that must be acknowledged (a `critical_alert`).
    pub fn urgent(
        recipient: &str,
        kind: &str,
        title: &str,
        message: &str,
        data: Value,
        dedupe_key: &str,
    ) -> Self {
        Self {
            priority: Priority::Urgent,
            requires_ack: true,
            ..Self::normal(recipient, kind, title, message, data, dedupe_key)
        }
    }
}
