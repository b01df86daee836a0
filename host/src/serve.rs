//! `projector serve`: connect, migrate, create the stream, load every plugin,
//! run a projection per plugin and the HTTP API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::ingest::{self, Projection, ProjectionState};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::objects::ObjectStore;
use crate::runtime::{Limits, Plugin, Runtime};
use crate::{api, store};

/// A loaded plugin, the handle that wakes its projection to re-drive, and
/// how its projection fares.
struct Entry {
    plugin: Plugin,
    redrive: Arc<Notify>,
    state: Arc<ProjectionState>,
}

/// The plugins this host runs.
#[derive(Default)]
pub struct Registry {
    entries: RwLock<BTreeMap<String, Entry>>,
}

impl Registry {
    fn insert(&self, plugin: Plugin, redrive: Arc<Notify>, state: Arc<ProjectionState>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            plugin.name().to_owned(),
            Entry {
                plugin,
                redrive,
                state,
            },
        );
    }

    /// The loaded plugins, by name, with their projections' state.
    pub fn plugins(&self) -> Vec<(Plugin, Arc<ProjectionState>)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .map(|e| (e.plugin.clone(), e.state.clone()))
            .collect()
    }

    /// Names of the loaded plugins.
    pub fn names(&self) -> Vec<String> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.keys().cloned().collect()
    }

    /// Tells a plugin's projection that dead letters await re-drive.
    pub fn wake_redrive(&self, plugin: &str) {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get(plugin) {
            entry.redrive.notify_one();
        }
    }
}

/// A running host: its projections and its API.
pub struct Host {
    /// Where the HTTP API listens (useful with port 0).
    pub http_addr: SocketAddr,
    /// Where Socket.IO and `/ws` listen.
    pub ws_addr: SocketAddr,
    /// The notification devices connected here.
    pub notifier: Notifier,
    /// The database pool.
    pub pool: PgPool,
    /// The plugins loaded.
    pub registry: Arc<Registry>,
    tasks: Vec<JoinHandle<()>>,
}

impl Host {
    /// Starts everything; an empty database and an empty JetStream are a valid start.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let pool = store::connect(&config.database_url).await?;
        let nats = async_nats::connect(&config.nats_url)
            .await
            .with_context(|| format!("connecting to NATS at {}", config.nats_url))?;
        let js = async_nats::jetstream::new(nats.clone());
        let stream = ingest::ensure_stream(&js, &config).await?;
        let runtime = Runtime::new(Limits {
            call_timeout: config.call_timeout,
            memory_bytes: config.plugin_memory_bytes,
        })?;
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(Metrics::default());
        let objects = ObjectStore::new(&config);
        let (notifier, mut tasks) =
            Notifier::start(pool.clone(), nats.clone(), config.clone(), metrics.clone()).await?;
        tasks.push(tokio::spawn(objects.clone().ensure_buckets_until_done()));
        for plugin in load_plugins(&runtime, &pool, &config.plugins_dir).await? {
            let redrive = Arc::new(Notify::new());
            let state = Arc::new(ProjectionState::new(metrics.clone()));
            registry.insert(plugin.clone(), redrive.clone(), state.clone());
            let projection = Projection::new(
                plugin,
                pool.clone(),
                stream.clone(),
                config.clone(),
                redrive,
                state,
                notifier.clone(),
            );
            tasks.push(tokio::spawn(projection.run()));
        }
        let app = api::router(api::AppState {
            pool: pool.clone(),
            config: config.clone(),
            registry: registry.clone(),
            nats,
            stream,
            notifier: notifier.clone(),
            metrics,
            objects,
        });
        let (http_addr, http) = serve(config.http_addr, app).await?;
        let (ws_addr, ws) = serve(config.ws_addr, notifier.router()).await?;
        tasks.extend([http, ws]);
        tracing::info!(%http_addr, %ws_addr, plugins = ?registry.names(), "projector host started");
        Ok(Self {
            http_addr,
            ws_addr,
            notifier,
            pool,
            registry,
            tasks,
        })
    }

    /// Stops every task at once, as a crash would: nothing is flushed or acked.
    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Serves a router on an address (port 0 picks one); returns where.
async fn serve(
    address: SocketAddr,
    app: axum::Router,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!(error = %e, address = %bound, "server stopped");
        }
    });
    Ok((bound, task))
}

/// Loads every `.wasm` in the folder, in name order. A file that fails to
/// load is reported and skipped; the others still run.
async fn load_plugins(runtime: &Runtime, pool: &PgPool, dir: &Path) -> anyhow::Result<Vec<Plugin>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading plugins folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    paths.sort();
    let mut plugins: Vec<Plugin> = Vec::new();
    for path in paths {
        let loaded = async {
            let bytes = tokio::fs::read(&path).await?;
            let plugin = Plugin::load(runtime, &bytes).await?;
            if plugins.iter().any(|p| p.name() == plugin.name()) {
                anyhow::bail!("a plugin named `{}` is already loaded", plugin.name());
            }
            store::ensure_views(pool, &plugin.info).await?;
            anyhow::Ok(plugin)
        };
        match loaded.await {
            Ok(plugin) => {
                tracing::info!(plugin = plugin.name(), version = %plugin.info.version, hash = %plugin.hash, "plugin loaded");
                plugins.push(plugin);
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = format!("{e:#}"), "plugin not loaded")
            }
        }
    }
    Ok(plugins)
}
