//! `projector serve`: connect, migrate, create the stream, load every plugin,
//! run a projection per plugin and the HTTP API.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::TokenVerifier;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::lifecycle::{Deployer, Registry};
use crate::metrics::Metrics;
use crate::objects::ObjectStore;
use crate::push::Notifier;
use crate::rate::RateLimits;
use crate::runtime::Runtime;
use crate::shared::{NotificationSink, Shared};
use crate::{api, bus, cluster, ingest, store, watch};

/// A running host: its projections and its API.
pub struct Host {
    /// This host's id in the cluster view.
    pub member: uuid::Uuid,
    /// Where the HTTP API listens (useful with port 0).
    pub http_addr: SocketAddr,
    /// Where Socket.IO and `/ws` listen.
    pub ws_addr: SocketAddr,
    /// The notification devices connected here.
    pub notifier: Notifier,
    /// The database pool.
    pub pool: PgPool,
    /// The plugins running.
    pub registry: Arc<Registry>,
    /// Deploys, rolls back, pauses and resumes plugins.
    pub deployer: Arc<Deployer>,
    tasks: Vec<JoinHandle<()>>,
}

impl Host {
    /// Starts everything; an empty database and an empty JetStream are a valid start.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let shared = connect(config).await?;
        let config = shared.config.clone();
        let (pushes, queue) = NotificationSink::bounded(config.push_queue, shared.metrics.clone());
        let (notifier, mut tasks) = Notifier::start(shared.clone(), pushes.clone(), queue).await?;
        tasks.extend(upkeep(&shared));
        let fleet = Arc::new(Fleet::new(
            shared.objects.clone(),
            shared.nats.clone(),
            &config.subject_prefix,
        ));
        let (versions, announced) = mpsc::unbounded_channel();
        tasks.push(fleet.clone().announce_each(announced));
        let runtime = Runtime::from_config(&config)?;
        let deployer = Arc::new(Deployer::new(
            runtime,
            shared.clone(),
            pushes,
            Some(versions),
        ));
        // Watch before loading, so no file dropped meanwhile goes unseen.
        match watch::watch(config.plugins_dir.clone(), deployer.clone()) {
            Ok(task) => tasks.push(task),
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "plugins folder not watched: deploy over HTTP"
            ),
        }
        for path in plugin_files(&config.plugins_dir)? {
            deployer.deploy_file(&path, false).await;
        }
        tasks.push(fleet.follow(deployer.clone()).await?);
        let registry = deployer.registry().clone();
        // Both ports are bound first: each side's routes name the other's.
        let http_listener = bind(config.http_addr).await?;
        let ws_listener = bind(config.ws_addr).await?;
        let (http_addr, ws_addr) = (http_listener.local_addr()?, ws_listener.local_addr()?);
        let app = api::router(
            api::AppState {
                shared: shared.clone(),
                registry: registry.clone(),
                deployer: deployer.clone(),
                notifier: notifier.clone(),
            },
            ws_addr.port(),
        );
        let http = serve(http_listener, app);
        tasks.push(tokio::spawn(cluster::heartbeat(
            shared.pool.clone(),
            shared.member,
            http_addr.to_string(),
            shared.ownership.clone(),
            shared.metrics.clone(),
            config.lease_ttl,
        )));
        let ws = serve(ws_listener, notifier.router(http_addr.port()));
        tasks.extend([http, ws]);
        tracing::info!(%http_addr, %ws_addr, plugins = ?registry.names(), "projector host started");
        Ok(Self {
            member: shared.member,
            http_addr,
            ws_addr,
            notifier,
            pool: shared.pool,
            registry,
            deployer,
            tasks,
        })
    }

    /// A graceful stop: stops (its claims go with their connections, and
    /// the other hosts take them over within a few seconds: at their next
    /// try once below their share, else after two tries finding them free),
    /// then leaves the cluster's members, so the others count this host out
    /// at their next heartbeat rather than after `LEASE_TTL`.
    pub async fn leave(self) {
        let (pool, member) = (self.pool.clone(), self.member);
        self.stop();
        if let Err(e) = store::members::leave(&pool, member).await {
            tracing::warn!(error = %e, "leaving the cluster's members");
        }
    }

    /// Stops every task at once, as a crash would: nothing is flushed or acked.
    pub fn stop(self) {
        self.deployer.abort();
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Sets up token checking, then connects to PostgreSQL (migrating it; a
/// pool for the projections and one for clients), NATS and the event
/// stream, once for the whole host.
async fn connect(config: Config) -> anyhow::Result<Shared> {
    let config = Arc::new(config);
    let tokens = Arc::new(TokenVerifier::from_config(&config).await?);
    let pool = store::connect_host(
        &config.database_url,
        config.db_connections,
        config.lease_ttl,
    )
    .await?;
    // Hosts that disagree on PARTITIONS must not project at once.
    let others_live = store::members::list(&pool, config.lease_ttl)
        .await?
        .iter()
        .filter(|m| m.live)
        .count();
    store::layout::ensure(&pool, config.partitions, others_live).await?;
    let api_pool = store::connect_api(
        &config.database_url,
        config.api_db_connections,
        config.api_statement_timeout,
    )
    .await?;
    let nats = bus::connect(&config).await?;
    let js = async_nats::jetstream::new(nats.clone());
    let stream = ingest::ensure_stream(&js, &config).await?;
    let metrics = Arc::new(Metrics::default());
    Ok(Shared {
        member: uuid::Uuid::new_v4(),
        ownership: Arc::default(),
        objects: ObjectStore::new(&config),
        limits: Arc::new(RateLimits::new(
            config.api_rate_per_second,
            config.api_rate_burst,
            metrics.clone(),
        )),
        metrics,
        tokens,
        config,
        pool,
        api_pool,
        nats,
        stream,
    })
}

/// The upkeep tasks: buckets created once storage answers, idle callers
/// forgotten by the rate limits, retention sweeps, and planner statistics
/// kept fresh.
fn upkeep(shared: &Shared) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![
        tokio::spawn(shared.objects.clone().ensure_buckets_until_done()),
        tokio::spawn(shared.limits.clone().forget_idle()),
        tokio::spawn(store::retention::sweep_every(
            shared.pool.clone(),
            shared.config.clone(),
            RETENTION_SWEEP,
        )),
    ];
    if let Some(every) = shared.config.analyze_every {
        tasks.push(tokio::spawn(store::statistics::analyse_every(
            shared.pool.clone(),
            every,
        )));
    }
    tasks
}

/// How often rows past their retention are swept.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// Serves a router on an address (port 0 picks one); returns where.
async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))
}

/// Serves `app` on `listener` until the task is aborted.
fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        let bound = listener.local_addr().ok();
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!(error = %e, address = ?bound, "server stopped");
        }
    })
}

/// The `.wasm` files of the plugins folder, in name order (a later file
/// with the same plugin name replaces an earlier one, which is kept for
/// rollback).
fn plugin_files(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading plugins folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    paths.sort();
    Ok(paths)
}
