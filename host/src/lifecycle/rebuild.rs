//! Blue/green rebuilds: a second projection of a plugin fills shadow tables
//! from the start of the stream while the live views keep serving; once it
//! has caught up, the live projection stands still for a moment at a batch
//! boundary and the shadow tables replace the live ones in one transaction.
//! A rebuild stores no notifications and no audit entries: those went out
//! when the events were first applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::OwnedMutexGuard;
use tokio::task::JoinHandle;

use super::{DeployError, Deployer};
use crate::ingest::{self, Projection, ProjectionState};
use crate::runtime::Plugin;
use crate::store::deployments::Source;
use crate::store::{self, Target};
use crate::sync::Locked;

/// A rebuild under way.
#[derive(Clone)]
pub struct RebuildStatus {
    /// The version it rebuilds with; it runs live from the switch on.
    pub version: Plugin,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its projection's control block: progress and errors.
    pub projection: Arc<ProjectionState>,
}

/// How often the rebuild's lag is read while it catches up.
const POLL: Duration = Duration::from_millis(100);

impl Deployer {
    /// Starts rebuilding `live`'s views with `version`. `held`, when given,
    /// holds the live projection from the start (its views were built by
    /// another definition and must not be written until the switch). The
    /// shadow tables are set up before this returns, so a view another
    /// plugin owns is refused here, and so is a rebuild on a host whose
    /// live projection is out of step with the views (another host rebuilt
    /// them with another version): it would switch in over theirs.
    pub(super) async fn rebuild_with(
        self: &Arc<Self>,
        live: Arc<ProjectionState>,
        version: Plugin,
        held: Option<OwnedMutexGuard<()>>,
    ) -> Result<RebuildStatus, DeployError> {
        let name = version.name().to_owned();
        let recorded = store::recorded(&self.shared.pool, &name).await?;
        let running = live.plugin();
        if held.is_none()
            && let Some(recorded) = &recorded
            && !recorded.built_for(&running.info)
        {
            return Err(DeployError::Conflict(format!(
                "the live views of `{name}` were rebuilt by another host with another version than this host runs ({}): deploy that version here first, or ask a host that runs it",
                running.info.version
            )));
        }
        let generation = recorded.map_or(live.controls.generation(), |r| r.generation);
        let target = Target::rebuild(&name).at_generation(generation + 1);
        ingest::delete_consumer(
            &self.shared.stream,
            &ingest::consumer_name(&target.key, self.shared.member),
        )
        .await;
        store::rebuild::prepare(&self.shared.pool, &target, &version.info).await?;
        let projection = Arc::new(ProjectionState::new(
            version.clone(),
            target.generation,
            self.shared.metrics.clone(),
        ));
        let status = RebuildStatus {
            version: version.clone(),
            started_at: Utc::now(),
            projection: projection.clone(),
        };
        self.rebuilds.locked().insert(name.clone(), status.clone());
        // Until the switch, the live projection stays on this host.
        live.controls.set_pinned(true);
        let task =
            tokio::spawn(Projection::new(target, &self.shared, projection.clone(), None).run());
        tracing::info!(plugin = %name, version = %version.info.version, hash = %version.hash, "rebuild started");
        let supervisor = Supervisor {
            deployer: self.clone(),
            live,
            rebuild: projection,
            version,
            held,
            started: Instant::now(),
        };
        let supervisor = tokio::spawn(supervisor.run(task));
        self.projections.locked().push(supervisor);
        Ok(status)
    }
}

/// Watches a rebuild catch up, then switches it in.
struct Supervisor {
    deployer: Arc<Deployer>,
    live: Arc<ProjectionState>,
    rebuild: Arc<ProjectionState>,
    version: Plugin,
    held: Option<OwnedMutexGuard<()>>,
    started: Instant,
}

impl Supervisor {
    async fn run(mut self, projection: JoinHandle<()>) {
        let name = self.version.name().to_owned();
        loop {
            match self.switch_when_caught_up(&projection).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(plugin = %name, error = format!("{e:#}"), "rebuild switch failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // A live projection held from its start goes on now, and may be
        // shared again.
        self.held.take();
        self.live.controls.set_pinned(false);
        let deployer = &self.deployer;
        let consumer = ingest::consumer_name(&Target::rebuild(&name).key, deployer.shared.member);
        ingest::delete_consumer(&deployer.shared.stream, &consumer).await;
        let dropped = store::rebuild::drop_other_generations(
            &deployer.shared.pool,
            &name,
            self.live.controls.generation(),
        );
        if let Err(e) = dropped.await {
            // Dropped by the next rebuild or start instead.
            tracing::warn!(plugin = %name, error = %e, "old processed events not dropped");
        }
        deployer.rebuilds.locked().remove(&name);
        tracing::info!(plugin = %name, version = %self.version.info.version, took = ?self.started.elapsed(), "rebuild switched in");
    }

    /// Waits until the rebuild is within a batch of the stream's end.
    async fn wait_until_near(&self, target: &Target) {
        let shared = &self.deployer.shared;
        loop {
            let lag = ingest::lag(
                &shared.stream,
                &ingest::consumer_name(&target.key, shared.member),
            )
            .await
            .unwrap_or(u64::MAX);
            if lag < shared.config.batch_size as u64 {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Holds the rebuild's projection once it has applied everything the
    /// (held) live one has.
    async fn hold_when_level(&self, target: &Target) -> anyhow::Result<OwnedMutexGuard<()>> {
        let shared = &self.deployer.shared;
        loop {
            let applied = store::checkpoints::furthest(&shared.pool, self.version.name()).await?;
            let rebuild = self.rebuild.controls.hold().await;
            let consumer = ingest::consumer_name(&target.key, shared.member);
            if ingest::acknowledged_through(&shared.stream, &consumer, applied).await? {
                return Ok(rebuild);
            }
            drop(rebuild);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the rebuild is within a batch of the stream's end, holds
    /// the live projection, lets the rebuild apply everything the live one
    /// has, then switches. The live projection stands still only for that
    /// last stretch and the switch. The rebuild's projection is stopped
    /// while still held, so it writes nothing after the switch.
    async fn switch_when_caught_up(&self, projection: &JoinHandle<()>) -> anyhow::Result<()> {
        let deployer = &self.deployer;
        let name = self.version.name();
        let target = Target::rebuild(name).at_generation(self.rebuild.controls.generation());
        self.wait_until_near(&target).await;
        // Deploys, rollbacks and the switch change the same things.
        let _one_at_a_time = deployer.deploying.lock().await;
        let held_at = Instant::now();
        let _live = match self.held {
            Some(_) => None,
            None => Some(self.live.controls.hold().await),
        };
        // Held here, the live projection commits nothing more; it must also
        // hold every partition, or another host would go on projecting.
        let partitions = deployer.shared.config.partitions as usize;
        anyhow::ensure!(
            self.live.progress.held() == partitions,
            "this host holds {} of `{name}`'s {partitions} partitions; the switch waits until it holds them all",
            self.live.progress.held()
        );
        let recorded = store::recorded(&deployer.shared.pool, name).await?;
        let _rebuild = self.hold_when_level(&target).await?;
        let (old_views, old_subjects) = match &recorded {
            Some(r) => (r.views.clone(), Some(r.subjects.clone())),
            None => (Vec::new(), None),
        };
        let switch_at = Instant::now();
        store::rebuild::switch(
            &deployer.shared.pool,
            &target,
            &old_views,
            &self.version.info,
        )
        .await?;
        tracing::info!(plugin = name, caught_up = ?switch_at - held_at, switch = ?switch_at.elapsed(), "rebuild switching: the live projection stood still meanwhile");
        projection.abort();
        self.live.controls.set_generation(target.generation);
        if self.live.plugin().hash != self.version.hash {
            self.live.version.swap(self.version.clone());
        }
        if old_subjects.is_some_and(|s| s != self.version.info.subjects) {
            ingest::replace_consumer(
                &deployer.shared.stream,
                &deployer.shared.config,
                &ingest::consumer_name(name, deployer.shared.member),
                &self.version.info.subjects,
            )
            .await?;
            self.live.controls.resubscribe();
        }
        deployer.keep(&self.version).await;
        let switched = (self.version.clone(), super::Deployed::Swapped);
        deployer
            .announce(&switched, Source::Rebuild, super::REBUILD)
            .await;
        self.live.controls.wake_redrive();
        Ok(())
    }
}
