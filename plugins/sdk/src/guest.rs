//! The WIT glue, for wasm32 builds only: converts between the world's records
//! and the SDK's types. Plugin authors use [`crate::export_plugin!`] instead.

// The generated export glue takes a record's fields as arguments.
#![allow(clippy::too_many_arguments)]

use projector_events::{Payload, PortalType, payloads::Timestamp};
use serde_json::Value;

use crate::{Mutation, Plugin, Priority, Views};

wit_bindgen::generate!({
    world: "projection",
    path: "../../wit",
    pub_export_macro: true,
    export_macro_name: "export_projection",
    default_bindings_module: "projector_sdk::guest",
});

use emr::projector::types as wit;

/// The world's plugin description (for [`crate::export_plugin!`]).
pub type WitPluginInfo = wit::PluginInfo;
/// The world's event (for [`crate::export_plugin!`]).
pub type WitEvent = wit::Event;
/// What the world's `handle` returns (for [`crate::export_plugin!`]).
pub type WitHandled = Result<wit::Outcome, String>;

/// Reads views through the host's `view-get` and `view-get-at` imports.
struct HostViews;

impl Views for HostViews {
    fn get(&self, view: &str, key: &str) -> Option<Value> {
        view_get(view, key).and_then(|text| serde_json::from_str(&text).ok())
    }

    fn get_at(&self, view: &str, key: &str, path: &str) -> Option<Value> {
        view_get_at(view, key, path).and_then(|text| serde_json::from_str(&text).ok())
    }
}

/// `describe` for a plugin type.
pub fn describe<P: Plugin>() -> wit::PluginInfo {
    let info = P::describe();
    wit::PluginInfo {
        name: info.name,
        version: info.version,
        subjects: info.subjects,
        views: info
            .views
            .into_iter()
            .map(|v| wit::ViewDef {
                name: v.name,
                key: v.key,
                indexes: v.indexes,
            })
            .collect(),
        audit_actions: info.audit_actions,
    }
}

/// `handle` for a plugin type: typed event in, WIT outcome out.
pub fn handle<P: Plugin>(e: wit::Event) -> WitHandled {
    let event = crate::Event {
        payload: Payload::from_json_str(&e.event_type, &e.payload)
            .map_err(|err| err.to_string())?,
        timestamp: Timestamp::parse(&e.timestamp)?,
        portal_type: serde_json::from_value::<PortalType>(Value::String(e.portal_type))
            .map_err(|err| format!("portal type: {err}"))?,
        id: e.id,
        patient_id: e.patient_id,
        user_id: e.user_id,
        sequence: e.sequence,
    };
    let outcome = P::handle(&event, &HostViews)?;
    Ok(wit::Outcome {
        mutations: outcome.mutations.into_iter().map(to_wit).collect(),
        notifications: outcome
            .notifications
            .into_iter()
            .map(|n| wit::NotificationIntent {
                recipient: n.recipient,
                kind: n.kind,
                priority: match n.priority {
                    Priority::Normal => wit::Priority::Normal,
                    Priority::Urgent => wit::Priority::Urgent,
                },
                title: n.title,
                message: n.message,
                data: n.data.to_string(),
                requires_ack: n.requires_ack,
                dedupe_key: n.dedupe_key,
            })
            .collect(),
        audits: outcome
            .audits
            .into_iter()
            .map(|a| wit::AuditEntry {
                action: a.action,
                resource_type: a.resource_type,
                resource_id: a.resource_id,
                user_id: a.user_id,
            })
            .collect(),
    })
}

fn to_wit(mutation: Mutation) -> wit::Mutation {
    match mutation {
        Mutation::Upsert { view, key, doc } => wit::Mutation::Upsert(wit::DocOp {
            view,
            key,
            doc: doc.to_string(),
        }),
        Mutation::Merge { view, key, doc } => wit::Mutation::Merge(wit::DocOp {
            view,
            key,
            doc: doc.to_string(),
        }),
        Mutation::Append {
            view,
            key,
            path,
            item,
            match_field,
        } => wit::Mutation::Append(wit::ListOp {
            view,
            key,
            path,
            item: item.to_string(),
            match_field,
        }),
        Mutation::Remove {
            view,
            key,
            path,
            item,
            match_field,
        } => wit::Mutation::Remove(wit::ListOp {
            view,
            key,
            path,
            item: item.to_string(),
            match_field,
        }),
        Mutation::Increment {
            view,
            key,
            path,
            delta,
        } => wit::Mutation::Increment(wit::CounterOp {
            view,
            key,
            path,
            delta,
        }),
        Mutation::Delete { view, key } => wit::Mutation::Delete(wit::KeyRef { view, key }),
    }
}
