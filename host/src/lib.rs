//! Projector: streams EMR domain events from NATS JetStream through sandboxed
//! WebAssembly handler plugins into PostgreSQL read models, and serves them.
//!
//! The data flows `ingest` (JetStream consumers, batches, dead letters) →
//! `runtime` (wasmtime components) → `store` (one Postgres transaction per
//! batch); `api` reads the store over HTTP; `notify` pushes the
//! notifications each batch stores to clinicians' devices.

pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod fhir;
pub mod fleet;
pub mod ingest;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod objects;
pub mod publish;
pub mod replay;
pub mod runtime;
pub mod scaffold;
pub mod serve;
pub mod sim;
pub mod store;
pub mod watch;
