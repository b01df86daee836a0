//! From the WIT records a plugin returns to the contract's types, checking
//! everything a plugin could get wrong: its output is untrusted input.

use projector_contract::{
    AuditEntry, Mutation, Notification, Outcome, PluginInfo, Priority, ViewDef,
    validate_plugin_name,
};
use serde_json::Value;

use super::bindings::emr::projector::types as wit;

/// A plugin's description as the contract's type.
pub fn plugin_info(info: wit::PluginInfo) -> PluginInfo {
    PluginInfo {
        name: info.name,
        version: info.version,
        subjects: info.subjects,
        views: info
            .views
            .into_iter()
            .map(|v| ViewDef {
                name: v.name,
                key: v.key,
                indexes: v.indexes,
            })
            .collect(),
        audit_actions: info.audit_actions,
    }
}

/// Whether a name is safe to build a table or index name from.
pub fn is_identifier(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= max
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks a view name: the host builds table and index names from it
/// (`view_<name>_<index>`), which must fit Postgres's 63-byte identifiers.
pub fn check_view_name(name: &str) -> Result<(), String> {
    if is_identifier(name, 30) {
        Ok(())
    } else {
        Err(format!(
            "view name `{name}` must match [a-z][a-z0-9_]{{0,29}}"
        ))
    }
}

/// Checks a description: the plugin's name follows the plugin-name rule,
/// names the host builds SQL identifiers from must be plain identifiers, and
/// a plugin must subscribe to something.
pub fn check_info(info: &PluginInfo) -> Result<(), String> {
    validate_plugin_name(&info.name).map_err(|e| e.to_string())?;
    if info.subjects.is_empty() {
        return Err("plugin subscribes to no subjects".into());
    }
    for view in &info.views {
        check_view_name(&view.name)?;
        for index in &view.indexes {
            if !index.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || index.is_empty()
                || index.len() > 26
            {
                return Err(format!(
                    "index field `{index}` of view `{}` must be 1-26 of [A-Za-z0-9_]",
                    view.name
                ));
            }
        }
    }
    Ok(())
}

fn json(what: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}"))
}

/// A plugin's outcome as the contract's type; JSON texts parsed, once their size
/// is within [`super::limits::MAX_OUTCOME_BYTES`].
pub fn outcome(outcome: wit::Outcome) -> Result<Outcome, String> {
    let mutation_bytes = outcome.mutations.iter().map(|m| match m {
        wit::Mutation::Upsert(op) | wit::Mutation::Merge(op) => op.doc.len(),
        wit::Mutation::Append(op) | wit::Mutation::Remove(op) => op.item.len(),
        wit::Mutation::Increment(_) | wit::Mutation::Delete(_) => 0,
    });
    let data_bytes = outcome.notifications.iter().map(|n| n.data.len());
    super::limits::check_bytes(mutation_bytes.chain(data_bytes).sum())?;
    let mutations = outcome
        .mutations
        .into_iter()
        .map(|m| {
            Ok(match m {
                wit::Mutation::Upsert(op) => Mutation::Upsert {
                    doc: json("upsert doc", &op.doc)?,
                    view: op.view,
                    key: op.key,
                },
                wit::Mutation::Merge(op) => Mutation::Merge {
                    doc: json("merge doc", &op.doc)?,
                    view: op.view,
                    key: op.key,
                },
                wit::Mutation::Append(op) => Mutation::Append {
                    item: json("append item", &op.item)?,
                    view: op.view,
                    key: op.key,
                    path: op.path,
                    match_field: op.match_field,
                },
                wit::Mutation::Remove(op) => Mutation::Remove {
                    item: json("remove item", &op.item)?,
                    view: op.view,
                    key: op.key,
                    path: op.path,
                    match_field: op.match_field,
                },
                wit::Mutation::Increment(op) => Mutation::Increment {
                    view: op.view,
                    key: op.key,
                    path: op.path,
                    delta: op.delta,
                },
                wit::Mutation::Delete(op) => Mutation::Delete {
                    view: op.view,
                    key: op.key,
                },
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let notifications = outcome
        .notifications
        .into_iter()
        .map(|n| {
            let data = json("notification data", &n.data)?;
            if !data.is_object() {
                return Err("notification data must be a JSON object".to_owned());
            }
            if n.recipient.is_empty() || n.dedupe_key.is_empty() {
                return Err("notification needs a recipient and a dedupe key".to_owned());
            }
            Ok(Notification {
                recipient: n.recipient,
                kind: n.kind,
                priority: match n.priority {
                    wit::Priority::Normal => Priority::Normal,
                    wit::Priority::Urgent => Priority::Urgent,
                },
                title: n.title,
                message: n.message,
                data,
                requires_ack: n.requires_ack,
                dedupe_key: n.dedupe_key,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let audits = outcome
        .audits
        .into_iter()
        .map(|a| AuditEntry {
            action: a.action,
            resource_type: a.resource_type,
            resource_id: a.resource_id,
            user_id: a.user_id,
        })
        .collect();
    Ok(Outcome {
        mutations,
        notifications,
        audits,
    })
}
