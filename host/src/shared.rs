//! What every part of a running host shares, built once at start by
//! [`crate::serve`] and handed down: configuration, the database, NATS and
//! the event stream, metrics, object storage, the token verifier and rate
//! limits.

use std::sync::Arc;

use async_nats::jetstream::stream::Stream;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::auth::TokenVerifier;
use crate::cluster::Ownership;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::objects::ObjectStore;
use crate::rate::RateLimits;
use crate::runtime::Plugin;
use crate::store::StoredNotification;

/// The host's shared connections and settings; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    /// The host's configuration.
    pub config: Arc<Config>,
    /// The database, for the projections and the host's own work (pushes,
    /// resends, sweeps, deploys, upkeep): `DB_CONNECTIONS`.
    pub pool: PgPool,
    /// The database for clients' requests: the HTTP API's, and what
    /// notification sockets ask for (replays, acknowledgements, their audit
    /// entries). `API_DB_CONNECTIONS` of their own, each statement limited
    /// to `API_STATEMENT_TIMEOUT`, so clients and slow queries cannot take
    /// the projections' connections.
    pub api_pool: PgPool,
    /// NATS: readiness, notifications between instances, the fleet.
    pub nats: async_nats::Client,
    /// The event stream the projections consume.
    pub stream: Stream,
    /// What `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// Object storage: presigned URLs, fleet versions.
    pub objects: ObjectStore,
    /// Checks bearer tokens, for the API and the sockets alike; one for the
    /// host, so the identity provider's keys are cached once.
    pub tokens: Arc<TokenVerifier>,
    /// Each user's and each address's rate, for the API and the sockets.
    pub limits: Arc<RateLimits>,
    /// This host's id for this run: its claims and heartbeat name it, and
    /// its notification announcements carry it.
    pub member: uuid::Uuid,
    /// How many projections this host holds against its fair share of the
    /// deployment's (see [`crate::cluster`]).
    pub ownership: Arc<Ownership>,
}

/// Where projections (and escalations and the sweep) hand the notifications
/// each batch committed, in commit order, for the push to deliver. It holds
/// at most `PUSH_QUEUE` batches and is never waited on: the projection goes
/// on to ack without waiting for devices, and a batch that finds the queue
/// full (the push fell behind: NATS away) stays unpushed in the outbox,
/// which the sweep pushes from. An outage of the push then costs latency,
/// never memory without bound; `projector_notifications_push_deferred_total`
/// counts what the sweep was left.
#[derive(Clone)]
pub struct NotificationSink {
    queue: mpsc::Sender<Vec<StoredNotification>>,
    metrics: Arc<Metrics>,
}

/// Where the push reads what a [`NotificationSink`] was handed.
pub type NotificationQueue = mpsc::Receiver<Vec<StoredNotification>>;

impl NotificationSink {
    /// A sink of at most `batches` batches, and the queue it fills.
    pub fn bounded(batches: usize, metrics: Arc<Metrics>) -> (Self, NotificationQueue) {
        let (queue, receiver) = mpsc::channel(batches);
        (Self { queue, metrics }, receiver)
    }

    /// Hands committed notifications on without waiting; when the queue is
    /// full they are left to the sweep (and counted), and `false` says so.
    pub fn offer(&self, notifications: Vec<StoredNotification>) -> bool {
        if notifications.is_empty() {
            return true;
        }
        match self.queue.try_send(notifications) {
            Err(mpsc::error::TrySendError::Full(left)) => {
                self.metrics.push_deferred(left.len());
                false
            }
            _ => true,
        }
    }
}

/// Where the deployer says "this version now runs here", for the fleet to
/// tell the other hosts.
pub type VersionSink = mpsc::UnboundedSender<Plugin>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_without_waiting_and_counts_what_it_left() {
        let metrics = Arc::new(Metrics::default());
        let (sink, mut queue) = NotificationSink::bounded(1, metrics.clone());
        let notification = |seq| {
            let dr = crate::auth::Recipient::User("dr".into());
            StoredNotification::sample(dr, seq, chrono::Utc::now())
        };
        sink.offer(vec![notification(1)]);
        sink.offer(vec![notification(2), notification(3)]);
        assert_eq!(queue.try_recv().map(|b| b.len()).ok(), Some(1));
        assert!(queue.try_recv().is_err(), "the second batch was left");
        let text = metrics.render(&crate::metrics::Scrape::default());
        assert!(
            text.contains("projector_notifications_push_deferred_total 2"),
            "{text}"
        );
    }
}
