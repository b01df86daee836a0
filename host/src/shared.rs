//! What every part of a running host shares, built once at start by
//! [`crate::serve`] and handed down: configuration, the database, NATS and
//! the event stream, metrics, object storage, the token verifier and rate
//! limits.

use std::sync::Arc;

use async_nats::jetstream::stream::Stream;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::auth::TokenVerifier;
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
}

/// Where projections hand the notifications each batch committed, in commit
/// order, for the push to deliver: the projection goes on to ack without
/// waiting for devices.
pub type NotificationSink = mpsc::UnboundedSender<Vec<StoredNotification>>;

/// Where the deployer says "this version now runs here", for the fleet to
/// tell the other hosts.
pub type VersionSink = mpsc::UnboundedSender<Plugin>;
