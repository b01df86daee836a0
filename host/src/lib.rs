//! Projector: streams EMR domain events from NATS JetStream through sandboxed
//! WebAssembly handler plugins into PostgreSQL read models, and serves them.
//!
//! The data flows `ingest` (JetStream consumers, batches, dead letters) →
//! `runtime` (wasmtime components) → `store` (one Postgres transaction per
//! batch); `api` reads the store over HTTP; `push` pushes the
//! notifications each batch stores to clinicians' devices.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod bench;
pub mod bus;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod cors;
pub mod error;
pub mod fhir;
pub mod fleet;
pub mod ingest;
pub mod lifecycle;
pub mod metrics;
pub mod objects;
pub mod publish;
pub mod push;
pub mod rate;
pub mod replay;
pub mod runtime;
pub mod scaffold;
pub mod serve;
pub mod shared;
pub mod sim;
pub mod store;
pub mod sync;
pub mod watch;
