//! A projection's control block, shared by the projection and the registry,
//! in three parts: the version slot (what runs), the controls (what the
//! operator and the deployer ask of it) and the progress (how it fares).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, OwnedMutexGuard, watch};

use crate::metrics::Metrics;
use crate::runtime::Plugin;
use crate::sync::{Locked, ReadWrite};

/// Why a host holds none of a plugin's partitions while its version is out
/// of step with the live views: said in its log and in `GET /api/plugins`.
pub const OUT_OF_STEP: &str = "the live views were rebuilt with another version of the plugin (by another host): this host projects none of their partitions until it runs that version";

/// The plugin version a projection's next batch runs, and the one before it
/// (for rollback); swapped at a batch boundary.
pub struct VersionSlot {
    current: RwLock<Plugin>,
    previous: RwLock<Option<Plugin>>,
}

impl VersionSlot {
    /// The version the next batch runs.
    pub fn current(&self) -> Plugin {
        self.current.reading().clone()
    }

    /// The version before it, if any.
    pub fn previous(&self) -> Option<Plugin> {
        self.previous.reading().clone()
    }

    /// Runs `next` from the next batch on; the current version is kept
    /// for rollback.
    pub fn swap(&self, next: Plugin) {
        let mut current = self.current.writing();
        let old = std::mem::replace(&mut *current, next);
        *self.previous.writing() = Some(old);
    }

    /// Returns to the previous version (which the current one then
    /// becomes); `None` if there is none.
    pub fn rollback(&self) -> Option<Plugin> {
        let mut current = self.current.writing();
        let mut previous = self.previous.writing();
        let back = previous.take()?;
        *previous = Some(std::mem::replace(&mut *current, back));
        Some(current.clone())
    }
}

/// What the operator and the deployer ask of a projection: pause, hold at a
/// batch boundary, open its consumer again, re-drive dead letters, move to
/// another generation of processed events.
pub struct Controls {
    paused: watch::Sender<bool>,
    gate: Arc<tokio::sync::Mutex<()>>,
    pub(super) resubscribe: Notify,
    pub(super) redrive: Notify,
    generation: AtomicI32,
    pinned: AtomicBool,
}

impl Controls {
    /// Stops (or restarts) taking new batches; the batch in hand finishes.
    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Whether it is paused.
    pub fn paused(&self) -> bool {
        *self.paused.borrow()
    }

    pub(super) async fn wait_while_paused(&self) {
        let mut paused = self.paused.subscribe();
        let _ = paused.wait_for(|p| !*p).await;
    }

    /// The generation of processed events its batches read and write.
    pub fn generation(&self) -> i32 {
        self.generation.load(Ordering::Acquire)
    }

    /// Moves to another generation of processed events, from the next
    /// batch: a rebuild's switch, under [`Controls::hold`].
    pub fn set_generation(&self, generation: i32) {
        self.generation.store(generation, Ordering::Release);
    }

    /// Holds the projection at a batch boundary until the guard is dropped:
    /// the batch in hand commits first. A rebuild holds it while it
    /// switches tables under the live projection.
    pub async fn hold(&self) -> OwnedMutexGuard<()> {
        self.gate.clone().lock_owned().await
    }

    /// Makes the projection open its consumer again, after the consumer was
    /// replaced (a version that reads other subjects).
    pub fn resubscribe(&self) {
        self.resubscribe.notify_one();
    }

    /// Wakes the projection to re-drive dead letters marked for retry.
    pub fn wake_redrive(&self) {
        self.redrive.notify_one();
    }

    /// Keeps the projection's claim on this host whatever its share (a
    /// rebuild is under way here: its switch needs this host to be the one
    /// projecting), or lets it be shared again.
    pub fn set_pinned(&self, pinned: bool) {
        self.pinned.store(pinned, Ordering::Release);
    }

    /// Whether the claim is kept on this host whatever its share.
    pub fn pinned(&self) -> bool {
        self.pinned.load(Ordering::Acquire)
    }
}

/// How a projection fares: the error that stopped its last batch, whether
/// another host projects it, and when its batches ran.
#[derive(Default)]
pub struct Progress {
    failure: Mutex<Option<String>>,
    standby: AtomicBool,
    /// Whether this host runs another definition than the live views were
    /// last built with (another host rebuilt them), so projects none of
    /// their partitions.
    out_of_step: AtomicBool,
    /// Partitions this host holds of the projection.
    held: AtomicUsize,
    /// Microseconds since the epoch; 0: never.
    last_batch: AtomicI64,
    /// Microseconds since the epoch; 0: never.
    batch_started: AtomicI64,
}

/// A time kept in an atomic, as microseconds since the epoch (0: none).
fn load_time(micros: &AtomicI64) -> Option<DateTime<Utc>> {
    match micros.load(Ordering::Acquire) {
        0 => None,
        at => DateTime::from_timestamp_micros(at),
    }
}

impl Progress {
    /// When the last batch of stream events committed: a plugin whose lag
    /// grows while this stands still is stuck.
    pub fn last_batch(&self) -> Option<DateTime<Utc>> {
        load_time(&self.last_batch)
    }

    /// When the latest batch of stream events started: from the commit
    /// before it to this, the projection stood still (a swap's pause).
    pub fn batch_started(&self) -> Option<DateTime<Utc>> {
        load_time(&self.batch_started)
    }

    pub(super) fn started_batch(&self) {
        self.batch_started
            .store(Utc::now().timestamp_micros(), Ordering::Release);
    }

    pub(super) fn committed_batch(&self) {
        self.last_batch
            .store(Utc::now().timestamp_micros(), Ordering::Release);
    }

    /// Whether another host projects it while this one stands by.
    pub fn standby(&self) -> bool {
        self.standby.load(Ordering::Acquire)
    }

    /// How many of the projection's partitions this host holds: all of
    /// them for a rebuild's switch.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    pub(super) fn set_held(&self, partitions: usize) {
        self.held.store(partitions, Ordering::Release);
    }

    /// Whether this host stands by because its version is out of step
    /// with the live views.
    pub fn out_of_step(&self) -> bool {
        self.out_of_step.load(Ordering::Acquire)
    }

    pub(super) fn set_out_of_step(&self, out_of_step: bool) {
        self.out_of_step.store(out_of_step, Ordering::Release);
    }

    /// Records standing by (or not); true if that changed.
    pub(super) fn set_standby(&self, standby: bool) -> bool {
        self.standby.swap(standby, Ordering::AcqRel) != standby
    }

    /// The error that stopped the last batch, if it failed.
    pub fn failure(&self) -> Option<String> {
        self.failure.locked().clone()
    }

    pub(super) fn set_failure(&self, failure: Option<String>) {
        *self.failure.locked() = failure;
    }
}

/// A projection's control block: its version slot, controls and progress,
/// and the metrics it moves.
pub struct ProjectionState {
    /// What runs.
    pub version: VersionSlot,
    /// What it is asked to do.
    pub controls: Controls,
    /// How it fares.
    pub progress: Progress,
    pub(super) metrics: Arc<Metrics>,
}

impl ProjectionState {
    /// A running projection of `plugin` whose processed events are of
    /// `generation`, recording into `metrics`.
    pub fn new(plugin: Plugin, generation: i32, metrics: Arc<Metrics>) -> Self {
        Self {
            version: VersionSlot {
                current: RwLock::new(plugin),
                previous: RwLock::default(),
            },
            controls: Controls {
                paused: watch::Sender::new(false),
                gate: Arc::default(),
                resubscribe: Notify::new(),
                redrive: Notify::new(),
                generation: AtomicI32::new(generation),
                pinned: AtomicBool::new(false),
            },
            progress: Progress::default(),
            metrics,
        }
    }

    /// The version the next batch runs.
    pub fn plugin(&self) -> Plugin {
        self.version.current()
    }

    /// `running`, `paused`, `standby` (other hosts project it; with why,
    /// when this host's version is out of step with the live views), or
    /// `retrying` with the error that stopped the last batch.
    pub fn describe(&self) -> (&'static str, Option<String>) {
        if self.controls.paused() {
            return ("paused", None);
        }
        if self.progress.standby() {
            let why = self.progress.out_of_step().then(|| OUT_OF_STEP.to_owned());
            return ("standby", why);
        }
        match self.progress.failure() {
            None => ("running", None),
            Some(error) => ("retrying", Some(error)),
        }
    }
}
