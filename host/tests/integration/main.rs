//! The host's integration tests, against the machine's real NATS and
//! PostgreSQL. They are modules of one test binary rather than a binary
//! each, so the host and wasmtime are linked once per build instead of once
//! per file. Each module is one area; `common` is their shared set-up.

mod common;

mod api;
mod api_fuzz;
mod audit_trail;
mod batch_properties;
mod bus;
mod claims;
mod cli;
mod clinical;
mod cluster;
mod coded_fields;
mod compose;
mod console;
mod cors;
mod dead_letters;
mod events_package;
mod failure_matrix;
mod failures;
mod fleet;
mod host_process;
mod identity;
mod lifecycle;
mod limits;
mod monitoring;
mod nats_permissions;
mod notifications;
mod objects;
mod overlap;
mod pipeline;
mod plans;
mod poison;
mod rebuild;
mod retention;
mod sandbox;
mod scaffold;
mod sepsis;
mod soak;
mod swaps_and_kills;
mod synthea_cohort;
