//! Benchmarks: programs that print figures and the command that reproduces
//! them (BENCHMARKS.md records them). Each makes its own stream, subject
//! prefix and database.

pub mod lifecycle;
pub mod notify;
pub mod projection;
mod socketio_client;
