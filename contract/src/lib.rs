//! The contract between the Projector host and its plugins, as Rust types:
//! what a plugin says about itself ([`PluginInfo`], [`ViewDef`], the
//! [plugin-name rule](validate_plugin_name)), what handling an event
//! produces ([`Outcome`]: [`Mutation`]s, [`Notification`] intents,
//! [`AuditEntry`]s), how a mutation changes a document ([`document::apply`]),
//! and how document keys are built and event types matched ([`doc_key`],
//! [`subject_matches`]).
//!
//! Both sides must agree on these exactly: a plugin's tests apply its
//! mutations with the same code the host stores them with, and the host
//! accepts a plugin by the same rules plugin authors read. The WIT world
//! (`wit/projector.wit`) is the wire form of the same contract.
//!
//! It is a crate of its own, apart from the plugin authors' SDK
//! (`projector-sdk`), so that the host depends on the contract alone and not
//! on what only plugins need: the `Plugin` trait, the wasm guest glue, the
//! test harness. The SDK re-exports all of it at the paths plugin authors
//! already use (`projector_sdk::Mutation`, `projector_sdk::document`, …).
//!
//! ```
//! use projector_contract::{Outcome, document};
//! use serde_json::json;
//!
//! let mut out = Outcome::default();
//! out.merge("patient_chart", "p-1", json!({ "patientId": "p-1" }))
//!     .increment("patient_chart", "p-1", "pendingOrders.lab", 1);
//! let mut doc = None;
//! for mutation in &out.mutations {
//!     document::apply(&mut doc, mutation).unwrap();
//! }
//! assert_eq!(doc, Some(json!({ "patientId": "p-1", "pendingOrders": { "lab": 1 } })));
//! ```

#![warn(missing_docs)]

pub mod document;
mod outcome;
mod plugin;

pub use outcome::{AuditEntry, Mutation, Notification, Outcome, Priority};
pub use plugin::{
    PluginInfo, PluginNameError, ViewDef, doc_key, patient_key, subject_matches,
    validate_plugin_name,
};
