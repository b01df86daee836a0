//! Benchmarks: programs that print figures and the command that reproduces
//! them (BENCHMARKS.md records them). Each makes its own stream, subject
//! prefix and database.

pub mod api;
pub mod cluster;
mod host;
pub mod lifecycle;
pub mod notifications;
pub mod projection;
pub mod soak;
mod socketio_client;

use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use sqlx::PgPool;

use crate::config::Config;
use crate::ingest;

/// How far behind the plugins `names` are, summed (see
/// [`ingest::backlog`]): 0 once each has handled every event it reads. A
/// plugin whose lag cannot be read yet counts as 1.
async fn backlog(pool: &PgPool, stream: &Stream, config: &Config, names: &[String]) -> u64 {
    let mut total = 0;
    for name in names {
        total += ingest::backlog(pool, stream, config, name)
            .await
            .unwrap_or(1);
    }
    total
}

/// Points `config` at a stream, subject prefix and database of the
/// benchmark's own, named `<kind><time>`; returns that name.
pub fn own_names(config: &mut Config, kind: &str) -> String {
    let tag = format!("{kind}{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    config.stream_name = tag.to_uppercase();
    config.subject_prefix = format!("{tag}.");
    config.database_url = config.database_url_named(&tag);
    tag
}

/// `events` events of simulated traffic (journeys of 500 patients at a
/// time, interleaved), the same for every run.
fn traffic(events: usize) -> Vec<projector_events::Event> {
    let mut simulator = crate::sim::Simulator::new(42, chrono::Utc::now());
    let mut traffic = Vec::with_capacity(events);
    while traffic.len() < events {
        traffic.extend(simulator.traffic(500));
    }
    traffic.truncate(events);
    traffic
}

/// The `q` quantile (0 to 1, nearest rank) of sorted durations, in
/// milliseconds; NaN when there are none.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}
