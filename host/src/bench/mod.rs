//! Benchmarks: programs that print figures and the command that reproduces
//! them (BENCHMARKS.md records them). Each makes its own stream, subject
//! prefix and database.

pub mod api;
mod host;
pub mod lifecycle;
pub mod notifications;
pub mod projection;
pub mod soak;
mod socketio_client;

use crate::config::Config;

/// Points `config` at a stream, subject prefix and database of the
/// benchmark's own, named `<kind><time>`; returns that name.
pub fn own_names(config: &mut Config, kind: &str) -> String {
    let tag = format!("{kind}{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    config.stream_name = tag.to_uppercase();
    config.subject_prefix = format!("{tag}.");
    config.database_url = config.database_url_named(&tag);
    tag
}
