//! Prometheus metrics (`GET /metrics`, text format): what operators watch.
//! Counters and histograms move as work happens; gauges that describe the
//! state of the world (lag, sockets, pending acknowledgements) are read
//! when scraped.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use projector_events::UnknownCode;

use crate::sync::Locked;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A plugin's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

/// A plugin's partition's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    plugin: String,
    partition: u32,
}

/// An HTTP request's labels: the route pattern, never the path (which
/// holds patient ids).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    method: String,
    route: String,
    status: u16,
}

/// A code outside its extensible value set: the plugin that applied it,
/// where in the payload, and the code (codes are not patient data).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnknownCodeLabel {
    plugin: String,
    field: String,
    code: String,
}

/// How many distinct unknown codes get their own series; later ones are
/// counted under [`OTHER_CODES`], so a feed of ever-new codes cannot grow
/// the metrics without bound.
const MAX_CODE_SERIES: usize = 200;
/// The `code` label of codes past [`MAX_CODE_SERIES`].
const OTHER_CODES: &str = "(others)";
/// Codes longer than this are counted under [`OTHER_CODES`] too.
const MAX_CODE_LABEL: usize = 64;

/// Which limit refused a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// The state a scrape reads as it is now, rather than as work recorded it.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Each plugin's lag: how far its slowest partition is behind.
    pub lags: Vec<(String, u64)>,
    /// Each plugin's partitions, each with how far behind it is.
    pub partition_lags: Vec<(String, Vec<(u32, u64)>)>,
    /// Notification devices connected to this host.
    pub sockets: usize,
    /// Notifications awaiting an acknowledgement (-1: unknown).
    pub pending_ack: i64,
    /// Of those, the ones waiting longer than `ESCALATE_AFTER` (-1: unknown).
    pub overdue_ack: i64,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 1 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Acknowledgement buckets from 1 s to about 4.5 h.
fn acknowledgement() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// Every metric of one host.
pub struct Metrics {
    registry: Registry,
    applied: Family<PluginLabel, Counter>,
    dead_lettered: Family<PluginLabel, Counter>,
    parked: Family<PluginLabel, Counter>,
    conflicts: Family<PluginLabel, Counter>,
    unknown_codes: Family<UnknownCodeLabel, Counter>,
    /// The unknown codes that have a series of their own.
    code_series: Mutex<HashSet<UnknownCodeLabel>>,
    batch_seconds: Histograms<PluginLabel>,
    lag: Family<PluginLabel, Gauge>,
    partition_lag: Family<PartitionLabel, Gauge>,
    cached: Family<PluginLabel, Gauge>,
    http_seconds: Histograms<RequestLabel>,
    sockets: Gauge,
    pending_ack: Gauge,
    overdue_ack: Gauge,
    members_live: Gauge,
    owned: Family<PluginLabel, Gauge>,
    ack_seconds: Histogram,
    push_deferred: Counter,
    rate_limited: Family<LimitLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("projector");
        let applied = Family::default();
        registry.register("events_applied", "Events a plugin applied", applied.clone());
        let dead_lettered = Family::default();
        registry.register(
            "events_dead_lettered",
            "Events a plugin could not apply, stored as dead letters",
            dead_lettered.clone(),
        );
        let conflicts = Family::default();
        registry.register(
            "batch_conflicts",
            "Batches projected again because a document they read changed before they committed",
            conflicts.clone(),
        );
        let parked = Family::default();
        registry.register(
            "events_parked",
            "Events held back behind a poisoned patient's dead letter",
            parked.clone(),
        );
        let unknown_codes = Family::default();
        registry.register(
            "unknown_codes",
            "Codes outside their extensible value set in events applied, kept as sent",
            unknown_codes.clone(),
        );
        let batch_seconds: Histograms<PluginLabel> = Family::new_with_constructor(latency);
        registry.register(
            "batch_duration_seconds",
            "Time to project and commit one batch",
            batch_seconds.clone(),
        );
        let lag = Family::default();
        registry.register(
            "consumer_lag",
            "Stream positions a plugin's slowest partition is behind the newest event it reads",
            lag.clone(),
        );
        let partition_lag = Family::default();
        registry.register(
            "partition_lag",
            "Stream positions a plugin's partition is behind the newest event the plugin reads",
            partition_lag.clone(),
        );
        let cached = Family::default();
        registry.register(
            "document_cache_documents",
            "Documents a projection keeps in memory between batches (bounded by DOC_CACHE_DOCS)",
            cached.clone(),
        );
        let http_seconds: Histograms<RequestLabel> = Family::new_with_constructor(latency);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            http_seconds.clone(),
        );
        let sockets = Gauge::default();
        registry.register(
            "sockets_connected",
            "Notification devices connected to this host",
            sockets.clone(),
        );
        let pending_ack = Gauge::default();
        registry.register(
            "notifications_pending_acknowledgement",
            "Notifications that require an acknowledgement and have none",
            pending_ack.clone(),
        );
        let overdue_ack = Gauge::default();
        registry.register(
            "notifications_overdue_acknowledgement",
            "Notifications that require an acknowledgement and have had none for longer than ESCALATE_AFTER",
            overdue_ack.clone(),
        );
        let members_live = Gauge::default();
        registry.register(
            "cluster_members_live",
            "Hosts of the deployment heard of within LEASE_TTL, as this host last counted them",
            members_live.clone(),
        );
        let owned = Family::default();
        registry.register(
            "projection_owned",
            "Partitions of the plugin this host holds (0 while it stands by)",
            owned.clone(),
        );
        let ack_seconds = acknowledgement();
        registry.register(
            "notification_acknowledgement_seconds",
            "Time from a notification being stored to its first acknowledgement",
            ack_seconds.clone(),
        );
        let push_deferred = Counter::default();
        registry.register(
            "notifications_push_deferred",
            "Notifications not queued for pushing because the queue was full; the sweep pushes them from the outbox",
            push_deferred.clone(),
        );
        let rate_limited = Family::default();
        registry.register(
            "rate_limited",
            "Requests and handshakes refused with 429 for their rate (limit: user or refused_address), not audited one by one",
            rate_limited.clone(),
        );
        Self {
            registry,
            applied,
            dead_lettered,
            parked,
            conflicts,
            unknown_codes,
            code_series: Mutex::default(),
            batch_seconds,
            lag,
            partition_lag,
            cached,
            http_seconds,
            sockets,
            pending_ack,
            overdue_ack,
            members_live,
            owned,
            ack_seconds,
            push_deferred,
            rate_limited,
        }
    }
}

impl Metrics {
    /// Records a committed batch of a plugin: events applied,
    /// dead-lettered and parked, and how long it took.
    pub fn batch(&self, plugin: &str, counts: [usize; 3], took: Duration) {
        let [applied, dead_lettered, parked] = counts;
        let label = PluginLabel {
            plugin: plugin.to_owned(),
        };
        self.applied.get_or_create(&label).inc_by(applied as u64);
        self.dead_lettered
            .get_or_create(&label)
            .inc_by(dead_lettered as u64);
        self.parked.get_or_create(&label).inc_by(parked as u64);
        self.batch_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// Records batches of a plugin projected again because a document
    /// they read changed before they committed (another host wrote it).
    pub fn conflicts(&self, plugin: &str, batches: usize) {
        let label = PluginLabel {
            plugin: plugin.to_owned(),
        };
        self.conflicts.get_or_create(&label).inc_by(batches as u64);
    }

    /// Records how many documents a projection keeps in memory.
    pub fn cached(&self, plugin: &str, documents: usize) {
        let label = PluginLabel {
            plugin: plugin.to_owned(),
        };
        self.cached
            .get_or_create(&label)
            .set(i64::try_from(documents).unwrap_or(i64::MAX));
    }

    /// Counts codes a plugin applied that their extensible value set does not
    /// list, and logs each the first time this host sees it.
    pub fn unknown_codes(&self, plugin: &str, codes: &[UnknownCode]) {
        for unknown in codes {
            let mut label = UnknownCodeLabel {
                plugin: plugin.to_owned(),
                field: unknown.field.to_owned(),
                code: unknown.code.clone(),
            };
            let mut series = self.code_series.locked();
            if !series.contains(&label) {
                if series.len() < MAX_CODE_SERIES && label.code.len() <= MAX_CODE_LABEL {
                    tracing::warn!(plugin, field = unknown.field, code = %unknown.code, value_set = unknown.value_set, "a code outside its extensible value set was kept as sent");
                    series.insert(label.clone());
                } else {
                    label.code = OTHER_CODES.to_owned();
                }
            }
            drop(series);
            self.unknown_codes.get_or_create(&label).inc();
        }
    }

    /// Records an answered HTTP request.
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let label = RequestLabel {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        self.http_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// Records a first acknowledgement, `waited` after the notification was stored.
    pub fn acknowledged(&self, waited: Duration) {
        self.ack_seconds.observe(waited.as_secs_f64());
    }

    /// Counts notifications left in the outbox for the sweep because the
    /// push queue was full.
    pub fn push_deferred(&self, notifications: usize) {
        self.push_deferred.inc_by(notifications as u64);
    }

    /// Counts a request refused for its rate by `limit` (`user` or
    /// `refused_address`).
    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabel { limit }).inc();
    }

    /// Records how many hosts are live.
    pub fn members_live(&self, hosts: usize) {
        self.members_live
            .set(i64::try_from(hosts).unwrap_or(i64::MAX));
    }

    /// Records how many of a plugin's partitions this host holds.
    pub fn owned(&self, plugin: &str, partitions: usize) {
        let label = PluginLabel {
            plugin: plugin.to_owned(),
        };
        self.owned
            .get_or_create(&label)
            .set(i64::try_from(partitions).unwrap_or(i64::MAX));
    }

    /// The state read at scrape time, then everything as Prometheus text.
    pub fn render(&self, now: &Scrape) -> String {
        for (plugin, lag) in &now.lags {
            let label = PluginLabel {
                plugin: plugin.clone(),
            };
            self.lag
                .get_or_create(&label)
                .set(i64::try_from(*lag).unwrap_or(i64::MAX));
        }
        for (plugin, partitions) in &now.partition_lags {
            for (partition, lag) in partitions {
                let label = PartitionLabel {
                    plugin: plugin.clone(),
                    partition: *partition,
                };
                self.partition_lag
                    .get_or_create(&label)
                    .set(i64::try_from(*lag).unwrap_or(i64::MAX));
            }
        }
        self.sockets
            .set(i64::try_from(now.sockets).unwrap_or(i64::MAX));
        self.pending_ack.set(now.pending_ack);
        self.overdue_ack.set(now.overdue_ack);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let metrics = Metrics::default();
        metrics.batch("lab", [3, 1, 2], Duration::from_millis(4));
        metrics.request(
            "GET",
            "/api/aggregate/patients/{patientId}",
            200,
            Duration::from_millis(2),
        );
        metrics.members_live(3);
        metrics.owned("lab", 12);
        let text = metrics.render(&Scrape {
            lags: vec![("lab".into(), 7)],
            partition_lags: vec![("lab".into(), vec![(0, 7), (1, 0)])],
            sockets: 2,
            pending_ack: 5,
            overdue_ack: 1,
        });
        assert!(
            text.contains("projector_events_applied_total{plugin=\"lab\"} 3"),
            "{text}"
        );
        assert!(text.contains("projector_events_dead_lettered_total{plugin=\"lab\"} 1"));
        assert!(text.contains("projector_events_parked_total{plugin=\"lab\"} 2"));
        assert!(text.contains("projector_consumer_lag{plugin=\"lab\"} 7"));
        assert!(text.contains("projector_sockets_connected 2"));
        assert!(text.contains("projector_notifications_pending_acknowledgement 5"));
        assert!(text.contains("projector_notifications_overdue_acknowledgement 1"));
        assert!(text.contains("projector_cluster_members_live 3"));
        assert!(text.contains("projector_projection_owned{plugin=\"lab\"} 12"));
        assert!(text.contains("projector_partition_lag{plugin=\"lab\",partition=\"0\"} 7"));
        assert!(text.contains("projector_partition_lag{plugin=\"lab\",partition=\"1\"} 0"));
        assert!(text.contains("route=\"/api/aggregate/patients/{patientId}\""));
        assert!(text.contains("projector_batch_duration_seconds_count{plugin=\"lab\"} 1"));
    }
}
