//! Write a Projector handler plugin in plain Rust.
//!
//! A plugin is a type implementing [`Plugin`]: it describes itself (name,
//! subjects, views) and turns one typed [`Event`] into an [`Outcome`] of
//! declarative mutations, notifications and audit entries. [`export_plugin!`]
//! wires it to the WIT world (`wit/projector.wit`) when built for
//! `wasm32-wasip2`; natively, [`testing::Harness`] runs it against in-memory
//! views with the same mutation semantics as the host ([`document`]).
//!
//! The types a plugin shares with the host (its description, outcomes,
//! documents) come from the `projector-contract` crate and are re-exported
//! here.
//!
//! ```
//! use projector_sdk::{Event, Outcome, Plugin, PluginInfo, ViewDef, Views};
//! use projector_sdk::events::Payload;
//!
//! struct Counter;
//! impl Plugin for Counter {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("counter", "1.0.0", &["lab.>"], vec![ViewDef::new("lab_counts", "patientId", &[])])
//!     }
//!     fn handle(event: &Event, _views: &dyn Views) -> Result<Outcome, String> {
//!         let mut out = Outcome::default();
//!         if let Payload::LabResultAvailable(_) = &event.payload {
//!             out.increment("lab_counts", &event.patient_id, "results", 1);
//!         }
//!         Ok(out)
//!     }
//! }
//! projector_sdk::export_plugin!(Counter);
//! ```

mod event;
pub mod log;
mod plugin;
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

pub use event::Event;
pub use plugin::{Plugin, Views};
// The contract the host holds plugins to, at the paths plugins have always
// used; the host depends on `projector-contract` alone.
pub use projector_contract::{
    AuditEntry, Mutation, Notification, Outcome, PluginInfo, Priority, ViewDef, doc_key, document,
    patient_key, subject_matches,
};
pub use projector_events as events;
pub use serde_json::{Value, json};

/// Exports a [`Plugin`] as the component's `describe` and `handle`. Does nothing
/// when not building for wasm32, so the same crate also runs its tests natively.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Glue;
            impl $crate::guest::Guest for Glue {
                fn describe() -> $crate::guest::WitPluginInfo {
                    $crate::guest::describe::<$plugin>()
                }
                fn handle(event: $crate::guest::WitEvent) -> $crate::guest::WitHandled {
                    $crate::guest::handle::<$plugin>(event)
                }
            }
    $crate::guest::export_projection!(Glue with_types_in $crate::guest);
        };
    };
}
