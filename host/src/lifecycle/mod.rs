//! The plugins a host runs and how they change while it runs: deploy a new
//! or changed version (validated first; swapped in at a batch boundary, or
//! rebuilt blue/green when what its views mean changed), roll back to the
//! previous one, rebuild, pause and resume.

mod rebuild;

pub use rebuild::RebuildStatus;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use tokio::task::JoinHandle;

use crate::ingest::{self, Projection, ProjectionState};
use crate::runtime::{Plugin, Runtime};
use crate::shared::{NotificationSink, Shared, VersionSink};
use crate::store::deployments::{self, Deployment, Source};
use crate::store::{self, Target, ViewError};
use crate::sync::{Locked, ReadWrite};

/// Who the deployments record for a version dropped into the folder.
const FOLDER: &str = "plugins-folder";
/// Who the deployments record for a version a rebuild switched in.
const REBUILD: &str = "rebuild";

/// The plugins this host runs, by name.
#[derive(Default)]
pub struct Registry {
    entries: RwLock<BTreeMap<String, Arc<ProjectionState>>>,
}

impl Registry {
    /// Names of the plugins running.
    pub fn names(&self) -> Vec<String> {
        let entries = self.entries.reading();
        entries.keys().cloned().collect()
    }

    /// Every plugin's projection, by name.
    pub fn projections(&self) -> Vec<Arc<ProjectionState>> {
        let entries = self.entries.reading();
        entries.values().cloned().collect()
    }

    /// One plugin's projection.
    pub fn get(&self, name: &str) -> Option<Arc<ProjectionState>> {
        let entries = self.entries.reading();
        entries.get(name).cloned()
    }

    /// Tells a plugin's projection that dead letters await re-drive.
    pub fn wake_redrive(&self, plugin: &str) {
        if let Some(state) = self.get(plugin) {
            state.controls.wake_redrive();
        }
    }

    fn insert(&self, state: Arc<ProjectionState>) {
        let name = state.plugin().name().to_owned();
        let mut entries = self.entries.writing();
        entries.insert(name, state);
    }
}

/// Why a version was not deployed; the running version stays.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Not a plugin of our world, `describe` failed, or its description is
    /// unusable.
    #[error("{0}")]
    Invalid(String),
    /// A valid plugin this host cannot take as it stands.
    #[error("{0}")]
    Conflict(String),
    /// No plugin of that name runs here.
    #[error("no plugin named `{0}` runs here")]
    Unknown(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<ViewError> for DeployError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::Owned { .. } => DeployError::Conflict(e.to_string()),
            ViewError::Database(e) => DeployError::Database(e),
        }
    }
}

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployed {
    /// A new plugin: its views were created and it projects from the start
    /// of the stream.
    Started,
    /// A new version of a running plugin, in place from the next batch.
    Swapped,
    /// The same bytes as the version running.
    Unchanged,
    /// A version whose views mean something else: it rebuilds them into
    /// shadow tables while the running version serves, and takes over when
    /// they have caught up.
    Rebuilding,
}

impl Deployed {
    /// How the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Deployed::Started => "started",
            Deployed::Swapped => "swapped",
            Deployed::Unchanged => "unchanged",
            Deployed::Rebuilding => "rebuilding",
        }
    }
}

/// Loads, validates, starts and swaps plugins.
pub struct Deployer {
    runtime: Runtime,
    shared: Shared,
    /// Where live projections hand their committed notifications.
    notifications: NotificationSink,
    /// Where versions that start running here are announced, if anywhere.
    versions: Option<VersionSink>,
    registry: Arc<Registry>,
    projections: Mutex<Vec<JoinHandle<()>>>,
    /// The rebuilds under way, by plugin.
    rebuilds: Mutex<HashMap<String, RebuildStatus>>,
    /// One deploy at a time, so two versions of a plugin cannot race.
    deploying: tokio::sync::Mutex<()>,
}

impl Deployer {
    /// A deployer for a host's runtime and shared connections, whose live
    /// projections hand their notifications to `notifications`, and which
    /// says to `versions` each version that starts running here.
    pub fn new(
        runtime: Runtime,
        shared: Shared,
        notifications: NotificationSink,
        versions: Option<VersionSink>,
    ) -> Self {
        Self {
            runtime,
            shared,
            notifications,
            versions,
            registry: Arc::default(),
            projections: Mutex::default(),
            rebuilds: Mutex::default(),
            deploying: tokio::sync::Mutex::new(()),
        }
    }

    /// The plugins running.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Validates a plugin (a component of our world whose `describe` works
    /// and whose views this host can give it) and runs it: a new plugin
    /// starts projecting from the start of the stream; a new version of a
    /// running one takes over at the next batch and the old one is kept for
    /// rollback; a version whose views or subjects changed rebuilds first.
    /// `name`, when given, must be the plugin's own.
    /// (The caller holds the deploy lock.)
    async fn deploy(
        self: &Arc<Self>,
        bytes: &[u8],
        name: Option<&str>,
    ) -> Result<(Plugin, Deployed), DeployError> {
        let plugin = Plugin::load(&self.runtime, bytes)
            .await
            .map_err(|e| DeployError::Invalid(e.to_string()))?;
        if let Some(name) = name.filter(|n| *n != plugin.name()) {
            return Err(DeployError::Invalid(format!(
                "the component is the plugin `{}`, not `{name}`",
                plugin.name()
            )));
        }
        let Some(running) = self.registry.get(plugin.name()) else {
            let deployed = self.start(plugin.clone()).await?;
            tracing::info!(plugin = plugin.name(), version = %plugin.info.version, hash = %plugin.hash, deployed = deployed.as_str(), "plugin started");
            return Ok((plugin, deployed));
        };
        let current = running.plugin();
        if current.hash == plugin.hash {
            return Ok((plugin, Deployed::Unchanged));
        }
        if let Some(rebuilding) = self.rebuild_status(plugin.name()) {
            if rebuilding.version.hash == plugin.hash {
                return Ok((plugin, Deployed::Rebuilding));
            }
            return Err(DeployError::Conflict(format!(
                "`{}` is rebuilding with version {}; deploy when it has switched",
                plugin.name(),
                rebuilding.version.info.version
            )));
        }
        // What the live views were built from: the running version's
        // definition, unless another host of the fleet has switched them.
        let built_for_it = match store::recorded(&self.shared.pool, plugin.name()).await? {
            Some(recorded) => recorded.built_for(&plugin.info),
            None => store::definition(&current.info) == store::definition(&plugin.info),
        };
        if !built_for_it {
            self.rebuild_with(running, plugin.clone(), None).await?;
            return Ok((plugin, Deployed::Rebuilding));
        }
        running.version.swap(plugin.clone());
        if current.info.subjects != plugin.info.subjects {
            // Views another host rebuilt for these subjects: the consumer
            // is made again with them.
            running.controls.resubscribe();
        }
        tracing::info!(plugin = plugin.name(), from = %current.hash, to = %plugin.hash, version = %plugin.info.version, "plugin swapped");
        Ok((plugin, Deployed::Swapped))
    }

    /// Deploys an upload by the admin `by`, then writes it into the plugins
    /// folder so a restart runs it too; all under the deploy lock, so the
    /// folder, the running version and the deployment record change in the
    /// same order. The fleet is told.
    pub async fn upload(
        self: &Arc<Self>,
        bytes: &[u8],
        name: &str,
        by: &str,
    ) -> Result<(Plugin, Deployed), DeployError> {
        let _one_at_a_time = self.deploying.lock().await;
        let deployed = self.deploy_and_keep(bytes, name).await?;
        self.announce(&deployed, Source::Upload, by).await;
        Ok(deployed)
    }

    /// Deploys a version another host of the fleet runs, as an upload,
    /// without announcing it again, if it is the newest version the
    /// deployment records for its plugin: an announcement nobody recorded,
    /// or an old one replayed, deploys nothing.
    pub async fn deploy_from_fleet(
        self: &Arc<Self>,
        bytes: &[u8],
        name: &str,
        hash: &str,
    ) -> Result<(Plugin, Deployed), DeployError> {
        let _one_at_a_time = self.deploying.lock().await;
        let Some((_, by)) = deployments::latest(&self.shared.pool, name)
            .await?
            .filter(|(latest, _)| latest == hash)
        else {
            return Err(DeployError::Invalid(format!(
                "`{name}` version {hash} is not the newest the deployment records"
            )));
        };
        let deployed = self.deploy_and_keep(bytes, name).await?;
        let taken = Deployment {
            plugin: deployed.0.name(),
            hash: &deployed.0.hash,
            version: &deployed.0.info.version,
            source: Source::Fleet,
            by: &by,
        };
        if let Err(e) = deployments::audit_taken(&self.shared.pool, &taken).await {
            tracing::error!(plugin = name, error = %e, "fleet deployment not audited");
        }
        Ok(deployed)
    }

    /// Deploys and writes the version into the plugins folder (the caller
    /// holds the deploy lock).
    async fn deploy_and_keep(
        self: &Arc<Self>,
        bytes: &[u8],
        name: &str,
    ) -> Result<(Plugin, Deployed), DeployError> {
        let deployed = self.deploy(bytes, Some(name)).await?;
        // A rebuilding version is written when it switches in: until
        // then, a restart must run the version that serves.
        if deployed.1 != Deployed::Rebuilding {
            self.keep(&deployed.0).await;
        }
        Ok(deployed)
    }

    /// Whether a plugin runs, or is rebuilding to run, the version `hash`.
    pub fn runs(&self, name: &str, hash: &str) -> bool {
        self.registry
            .get(name)
            .is_some_and(|p| p.plugin().hash == hash)
            || self
                .rebuild_status(name)
                .is_some_and(|r| r.version.hash == hash)
    }

    /// Records that a version started running here, from `source` by
    /// `by`, and says so (the fleet tells the other hosts, which deploy
    /// only what is recorded). The caller holds the deploy lock.
    async fn announce(&self, (plugin, deployed): &(Plugin, Deployed), source: Source, by: &str) {
        if !matches!(deployed, Deployed::Started | Deployed::Swapped) {
            return;
        }
        let deployment = Deployment {
            plugin: plugin.name(),
            hash: &plugin.hash,
            version: &plugin.info.version,
            source,
            by,
        };
        if let Err(e) = deployments::record(&self.shared.pool, &deployment).await {
            tracing::error!(plugin = plugin.name(), error = %e, "deployment not recorded; the fleet will not take it");
            return;
        }
        if let Some(versions) = &self.versions {
            let _ = versions.send(plugin.clone());
        }
    }

    /// Writes a version into the plugins folder as `<name>.wasm` (a hidden
    /// temporary file renamed into place, so the folder never holds half a
    /// plugin). The watcher then sees the version that runs: unchanged.
    async fn keep(&self, plugin: &Plugin) {
        let dir = &self.shared.config.plugins_dir;
        let name = plugin.name();
        let partial = dir.join(format!(".{name}.wasm.partial"));
        let written = async {
            tokio::fs::write(&partial, &plugin.bytes).await?;
            tokio::fs::rename(&partial, dir.join(format!("{name}.wasm"))).await
        };
        if let Err(e) = written.await {
            tracing::error!(plugin = name, error = %e, "running, but not written to the plugins folder");
        }
    }

    /// Deploys a file from the plugins folder; failures are logged and the
    /// running version stays. The file is read under the deploy lock: read
    /// before it, it could be older than an upload that ran meanwhile. A
    /// file dropped in while the host runs is announced to the fleet; the
    /// folder loaded at start is not (an old folder must not undo the
    /// fleet's newer versions).
    pub async fn deploy_file(self: &Arc<Self>, path: &Path, announce: bool) {
        let _one_at_a_time = self.deploying.lock().await;
        let result = match tokio::fs::read(path).await {
            Ok(bytes) => self.deploy(&bytes, None).await,
            Err(e) => Err(DeployError::Invalid(format!("reading it: {e}"))),
        };
        match result {
            Ok(deployed) if announce => self.announce(&deployed, Source::Folder, FOLDER).await,
            Ok(_) => {}
            Err(e) => tracing::error!(path = %path.display(), error = %e, "plugin not deployed"),
        }
    }

    /// Returns a plugin to its previous version, from the next batch, and
    /// writes it back into the plugins folder (or the watcher would deploy
    /// the newer file again). A previous version whose views mean something
    /// else rebuilds them first, as a deploy of it would.
    pub async fn rollback(
        self: &Arc<Self>,
        name: &str,
        by: &str,
    ) -> Result<(Plugin, Deployed), DeployError> {
        let _one_at_a_time = self.deploying.lock().await;
        let running = self.running(name)?;
        if self.rebuild_status(name).is_some() {
            return Err(DeployError::Conflict(format!(
                "`{name}` is rebuilding; roll back when it has switched"
            )));
        }
        let previous = running
            .version
            .previous()
            .ok_or_else(|| DeployError::Conflict(format!("`{name}` has no previous version")))?;
        if store::definition(&running.plugin().info) != store::definition(&previous.info) {
            self.rebuild_with(running, previous.clone(), None).await?;
            return Ok((previous, Deployed::Rebuilding));
        }
        let back = running
            .version
            .rollback()
            .ok_or_else(|| DeployError::Conflict(format!("`{name}` has no previous version")))?;
        tracing::info!(plugin = name, to = %back.hash, "plugin rolled back");
        self.keep(&back).await;
        let deployed = (back, Deployed::Swapped);
        self.announce(&deployed, Source::Rollback, by).await;
        Ok(deployed)
    }

    /// Rebuilds a plugin's views from the start of the stream with the
    /// version running, into shadow tables while the live ones serve; they
    /// switch in one transaction once caught up.
    pub async fn rebuild(self: &Arc<Self>, name: &str) -> Result<RebuildStatus, DeployError> {
        let _one_at_a_time = self.deploying.lock().await;
        let running = self.running(name)?;
        if self.rebuild_status(name).is_some() {
            return Err(DeployError::Conflict(format!(
                "`{name}` is already rebuilding"
            )));
        }
        // The switch replaces the live views under the live projection,
        // which then holds every partition here (the other hosts give them
        // up to the pin): two hosts rebuilding would each wait for the
        // other's.
        let keys = [name.to_owned()];
        let holders = store::claim::holders(&self.shared.pool, &keys).await?;
        if let Some(other) = holders
            .get(name)
            .and_then(|held| held.get(&store::claim::PIN))
            .filter(|member| **member != self.shared.member)
        {
            return Err(DeployError::Conflict(format!(
                "host {other} is rebuilding `{name}`: wait for its switch (GET /api/cluster names it)"
            )));
        }
        let version = running.plugin();
        self.rebuild_with(running, version, None).await
    }

    /// The rebuild under way for a plugin, if any.
    pub fn rebuild_status(&self, name: &str) -> Option<RebuildStatus> {
        let rebuilds = self.rebuilds.locked();
        rebuilds.get(name).cloned()
    }

    /// Pauses or resumes a plugin's projection at its next batch.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<(), DeployError> {
        self.running(name)?.controls.set_paused(paused);
        tracing::info!(plugin = name, paused, "plugin projection paused or resumed");
        Ok(())
    }

    fn running(&self, name: &str) -> Result<Arc<ProjectionState>, DeployError> {
        self.registry
            .get(name)
            .ok_or_else(|| DeployError::Unknown(name.to_owned()))
    }

    /// Runs a plugin that is not running yet. Its live views stay as they
    /// were built: when they were built from another definition (a restart
    /// with a changed file), it stands still while a rebuild makes them
    /// its own.
    async fn start(self: &Arc<Self>, plugin: Plugin) -> Result<Deployed, DeployError> {
        let name = plugin.name().to_owned();
        let recorded = store::recorded(&self.shared.pool, &name).await?;
        let generation = recorded.as_ref().map_or(0, |r| r.generation);
        // A rebuild a crash interrupted starts again from nothing.
        let rebuild = Target::rebuild(&name).at_generation(generation + 1);
        ingest::delete_consumer(
            &self.shared.stream,
            &ingest::consumer_name(&rebuild.key, self.shared.member),
        )
        .await;
        store::rebuild::discard(&self.shared.pool, &rebuild).await?;
        let state = Arc::new(ProjectionState::new(
            plugin.clone(),
            generation,
            self.shared.metrics.clone(),
        ));
        let deployed = match recorded {
            Some(recorded) if !recorded.built_for(&plugin.info) => {
                let held = state.controls.hold().await;
                self.registry.insert(state.clone());
                self.rebuild_with(state.clone(), plugin, Some(held)).await?;
                Deployed::Rebuilding
            }
            _ => {
                store::ensure_views(&self.shared.pool, &Target::live(&name), &plugin.info).await?;
                let mut tx = self.shared.pool.begin().await?;
                store::record_definition(&mut tx, &plugin.info, generation).await?;
                tx.commit().await?;
                self.registry.insert(state.clone());
                Deployed::Started
            }
        };
        let projection = Projection::new(
            Target::live(&name),
            &self.shared,
            state,
            Some(self.notifications.clone()),
        );
        self.spawn(projection);
        Ok(deployed)
    }

    fn spawn(&self, projection: Projection) {
        let task = tokio::spawn(projection.run());
        self.projections.locked().push(task);
    }

    /// Stops every projection at once, as a crash would.
    pub fn abort(&self) {
        for task in self.projections.locked().drain(..) {
            task.abort();
        }
    }
}
