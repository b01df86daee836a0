//! Benchmarks: programs that print figures and the command that reproduces
//! them (BENCHMARKS.md records them). Each makes its own stream, subject
//! prefix and database.

mod host;
pub mod lifecycle;
pub mod notify;
pub mod projection;
pub mod soak;
mod socketio_client;
