//! The EMR event contract of Projector (SPEC "Events on the wire") as typed Rust.
//!
//! Publishers, the host and plugins share these types, so an event that one of
//! them accepts the others accept too. [`Envelope::parse`] turns raw bytes into a
//! validated [`Event`]; every way bad input can fail is an [`EventError`] with a
//! reason fit for a dead letter. The JSON Schema in `schema/events.schema.json` is
//! generated from these same types (feature `schema`) and checked by a test.

pub mod coded;
mod codes;
mod envelope;
mod error;
pub mod payloads;
#[cfg(feature = "schema")]
pub mod schema;
pub mod storable;
pub mod value_set;

pub use codes::{Code, CodeSystem};
pub use envelope::{Envelope, Event, NonEmpty, PortalType};
pub use error::EventError;
pub use payloads::{Payload, UnknownCode};
pub use value_set::ValueSet;
