//! What the events crate's tests share: the shipped schema, the seed flow,
//! and a validator that asserts formats.

#![allow(dead_code)] // each test binary uses a different part of this module

use serde_json::Value;

/// The shipped JSON Schema.
pub const SCHEMA: &str = include_str!("../../../schema/events.schema.json");
/// The seed's event flow: one patient through every event type it knew.
pub const SEED: &str = include_str!("../../../fixtures/seed-flow.jsonl");
/// The same patient's events of the types added since (SPEC's amendments):
/// with [`SEED`], every event type.
pub const LATER: &str = include_str!("../../../fixtures/later-events.jsonl");

/// A validator of the shipped schema.
pub fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(SCHEMA).expect("schema is JSON");
    // Formats (date-time) are annotations in 2020-12 unless asserted.
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}
