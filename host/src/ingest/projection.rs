//! One plugin's projection: its consumer, its batches, its acks.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use super::apply::Batcher;
use super::batch::{Item, Origin};
use super::stream::{ensure_consumer, has_pending, reposition};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::runtime::Plugin;
use crate::store::claim::Claim;
use crate::store::{DocCache, Target, queries};

/// The first pause before a failed projection tries again; it doubles up to
/// [`MAX_RETRY_PAUSE`] while failures go on.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two tries of a failed projection.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How often a projection that another host has claimed tries to take over.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// Environment variable for fault injection in tests: when `crash-after-commit`,
/// the process aborts after its first commit, before acking, as a host killed
/// at the worst moment would.
const FAULT_ENV: &str = "PROJECTOR_FAULT";

/// A projection's control block, shared by the projection and the
/// registry: the plugin version it runs (swapped at a batch boundary), the
/// one before it (for rollback), pause, re-drive, how it fares, and the
/// metrics it moves.
pub struct ProjectionState {
    plugin: RwLock<Plugin>,
    previous: RwLock<Option<Plugin>>,
    paused: watch::Sender<bool>,
    gate: Arc<tokio::sync::Mutex<()>>,
    resubscribe: Notify,
    redrive: Notify,
    failure: Mutex<Option<String>>,
    last_batch: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    batch_started: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    generation: AtomicI32,
    standby: AtomicBool,
    metrics: Arc<Metrics>,
}

impl ProjectionState {
    /// A running projection of `plugin` whose processed events are of
    /// `generation`, recording into `metrics`.
    pub fn new(plugin: Plugin, generation: i32, metrics: Arc<Metrics>) -> Self {
        Self {
            plugin: RwLock::new(plugin),
            previous: RwLock::default(),
            paused: watch::Sender::new(false),
            gate: Arc::default(),
            resubscribe: Notify::new(),
            redrive: Notify::new(),
            failure: Mutex::default(),
            last_batch: Mutex::default(),
            batch_started: Mutex::default(),
            generation: AtomicI32::new(generation),
            standby: AtomicBool::new(false),
            metrics,
        }
    }

    /// The version the next batch runs.
    pub fn plugin(&self) -> Plugin {
        self.plugin
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The version before it, if any.
    pub fn previous(&self) -> Option<Plugin> {
        self.previous
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `next` from the next batch on; the current version is kept
    /// for rollback.
    pub fn swap(&self, next: Plugin) {
        let mut current = self.plugin.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut *current, next);
        *self.previous.write().unwrap_or_else(|e| e.into_inner()) = Some(old);
    }

    /// Returns to the previous version (which the current one then
    /// becomes); `None` if there is none.
    pub fn rollback(&self) -> Option<Plugin> {
        let mut current = self.plugin.write().unwrap_or_else(|e| e.into_inner());
        let mut previous = self.previous.write().unwrap_or_else(|e| e.into_inner());
        let back = previous.take()?;
        *previous = Some(std::mem::replace(&mut *current, back));
        Some(current.clone())
    }

    /// Stops (or restarts) taking new batches; the batch in hand finishes.
    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    async fn wait_while_paused(&self) {
        let mut paused = self.paused.subscribe();
        let _ = paused.wait_for(|p| !*p).await;
    }

    /// The generation of processed events its batches read and write.
    pub fn generation(&self) -> i32 {
        self.generation.load(Ordering::Acquire)
    }

    /// Moves to another generation of processed events, from the next
    /// batch: a rebuild's switch, under [`ProjectionState::hold`].
    pub fn set_generation(&self, generation: i32) {
        self.generation.store(generation, Ordering::Release);
    }

    /// Holds the projection at a batch boundary until the guard is dropped:
    /// the batch in hand commits first. A rebuild holds it while it
    /// switches tables under the live projection.
    pub async fn hold(&self) -> tokio::sync::OwnedMutexGuard<()> {
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

    /// When the last batch of stream events committed: a plugin whose lag
    /// grows while this stands still is stuck.
    pub fn last_batch(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        *self.last_batch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the latest batch of stream events started: from the commit
    /// before it to this, the projection stood still (a swap's pause).
    pub fn batch_started(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        *self.batch_started.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `running`, `paused`, `standby` (another host projects it), or
    /// `retrying` with the error that stopped the last batch.
    pub fn describe(&self) -> (&'static str, Option<String>) {
        if *self.paused.borrow() {
            return ("paused", None);
        }
        if self.standby.load(Ordering::Acquire) {
            return ("standby", None);
        }
        match self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            None => ("running", None),
            Some(error) => ("retrying", Some(error)),
        }
    }

    fn set(&self, failure: Option<String>) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
    }
}

/// Runs one plugin over the stream, into its live views or a rebuild's.
pub struct Projection {
    target: Target,
    pool: PgPool,
    stream: stream::Stream,
    config: Arc<Config>,
    state: Arc<ProjectionState>,
    notifier: Notifier,
    cache: DocCache,
    /// The committed checkpoint as this projection last read or wrote it:
    /// a stream event at or below it was handled already.
    committed: AtomicU64,
    /// The backend holding this projection's claim (0: none).
    claimed_by: AtomicI32,
}

impl Projection {
    /// A projection of the plugin in `state` into `target`; `state` also
    /// carries its controls and reports how it fares; `notifier` pushes the
    /// notifications each batch commits.
    pub fn new(
        target: Target,
        pool: PgPool,
        stream: stream::Stream,
        config: Arc<Config>,
        state: Arc<ProjectionState>,
        notifier: Notifier,
    ) -> Self {
        Self {
            cache: DocCache::new(config.doc_cache),
            target,
            pool,
            stream,
            config,
            state,
            notifier,
            committed: AtomicU64::new(0),
            claimed_by: AtomicI32::new(0),
        }
    }

    /// Consumes for ever: opens its consumer again when told to, and after
    /// any failure. After a failure the consumer is repositioned after the
    /// committed checkpoint, so the next event applied is the next one in
    /// stream order whatever the failed pull had out; at start it is too
    /// when a host before it was killed holding messages (JetStream would
    /// otherwise hold them for the ack wait and deliver later events first).
    ///
    /// Only the host that holds the projection's claim consumes; the others
    /// stand by and take over when its claim goes.
    pub async fn run(self) {
        let mut claim = None;
        let mut failed = false;
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            if !self.hold_claim(&mut claim).await {
                tokio::time::sleep(STANDBY_POLL).await;
                continue;
            }
            let result = match self.resume(failed).await {
                Ok(()) => self.consume().await,
                Err(e) => Err(e),
            };
            failed = result.is_err();
            match result {
                Ok(()) => {
                    pause = FIRST_RETRY_PAUSE;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => {
                    self.state.set(Some(format!("{e:#}")));
                    tracing::error!(
                        plugin = %self.target.key,
                        error = format!("{e:#}"),
                        retry_in = ?pause,
                        "projection failed; resuming after its checkpoint"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
    }

    /// Keeps or takes this projection's claim; `false` while another host
    /// holds it.
    async fn hold_claim(&self, claim: &mut Option<Claim>) -> bool {
        if let Some(held) = claim.as_mut() {
            if held.alive().await {
                return true;
            }
            *claim = None;
        }
        self.claimed_by.store(0, Ordering::Release);
        match Claim::try_take(&self.pool, &self.target.key).await {
            Ok(Some(taken)) => {
                self.claimed_by.store(taken.pid, Ordering::Release);
                self.state.standby.store(false, Ordering::Release);
                *claim = Some(taken);
                true
            }
            Ok(None) => {
                if !self.state.standby.swap(true, Ordering::AcqRel) {
                    tracing::info!(plugin = %self.target.key, "another host projects this plugin; standing by");
                }
                false
            }
            Err(e) => {
                self.state
                    .set(Some(format!("claiming the projection: {e}")));
                false
            }
        }
    }

    /// Reads the committed checkpoint and repositions the consumer after it
    /// after a failure, or when messages are out that nobody will ack (a
    /// host before it was killed, or a pull this host dropped).
    async fn resume(&self, failed: bool) -> anyhow::Result<()> {
        let checkpoint = queries::checkpoint(&self.pool, &self.target.key).await?;
        self.committed.store(checkpoint, Ordering::Release);
        if failed || has_pending(&self.stream, &self.target.key).await {
            let subjects = self.state.plugin().info.subjects.clone();
            reposition(
                &self.stream,
                &self.config,
                &self.target.key,
                &subjects,
                checkpoint,
            )
            .await?;
        }
        Ok(())
    }

    /// Consumes until the stream ends or the consumer is replaced.
    async fn consume(&self) -> anyhow::Result<()> {
        let subjects = self.state.plugin().info.subjects.clone();
        let consumer =
            ensure_consumer(&self.stream, &self.config, &self.target.key, &subjects).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.batch_size)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.redrive_dead_letters().await?;
        let mut last_delivery = None;
        loop {
            tokio::select! {
                first = messages.next() => {
                    let Some(first) = first else { return Ok(()) };
                    self.state.wait_while_paused().await;
                    let batch = self.gather(first, &mut messages).await?;
                    contiguous(&batch, &mut last_delivery)?;
                    self.apply_messages(batch).await?;
                    self.state.set(None);
                }
                () = self.state.redrive.notified() => self.redrive_dead_letters().await?,
                () = self.state.resubscribe.notified() => return Ok(()),
            }
        }
    }

    /// A batch: the first message, then what arrives within `BATCH_LINGER_MS`
    /// of it, up to `BATCH_SIZE`. Under a backlog batches fill at once; a
    /// lone event waits at most the linger.
    async fn gather<S, E>(
        &self,
        first: Result<jetstream::Message, E>,
        messages: &mut S,
    ) -> anyhow::Result<Vec<jetstream::Message>>
    where
        S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        let deadline = tokio::time::Instant::now() + self.config.batch_linger;
        let mut batch = vec![first.map_err(|e| anyhow::anyhow!("{e}"))?];
        while batch.len() < self.config.batch_size {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(message)) => batch.push(message.map_err(|e| anyhow::anyhow!("{e}"))?),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Applies a batch of stream messages, then acks them. Nothing is
    /// acked before its commit; if the batch fails, the error makes the
    /// projection resume after its checkpoint. Messages at or below the
    /// checkpoint (a redelivery) were handled before and are only acked.
    async fn apply_messages(&self, messages: Vec<jetstream::Message>) -> anyhow::Result<()> {
        let _batch = self.state.hold().await;
        *self
            .state
            .batch_started
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(chrono::Utc::now());
        let prefix = &self.config.subject_prefix;
        let committed = self.committed.load(Ordering::Acquire);
        let mut items: Vec<Item> = messages
            .iter()
            .filter_map(|m| {
                let info = m.info().ok()?;
                Some(Item {
                    seq: info.stream_sequence,
                    subject: m
                        .subject
                        .strip_prefix(prefix.as_str())
                        .unwrap_or(&m.subject)
                        .to_owned(),
                    raw: m.payload.to_vec(),
                    origin: Origin::Stream,
                })
            })
            .filter(|item| item.seq > committed)
            .collect();
        items.sort_by_key(|i| i.seq);
        items.dedup_by_key(|i| i.seq);
        let started = std::time::Instant::now();
        // The version in place now runs the whole batch; a swap takes
        // effect at the next one.
        let plugin = self.state.plugin();
        let target = self.target.clone().at_generation(self.state.generation());
        let last = items.last().map(|i| i.seq);
        let done = self
            .batch(&plugin, &target)
            .commit(items)
            .await
            .context("applying a batch")?;
        if let Some(last) = last {
            self.committed.fetch_max(last, Ordering::AcqRel);
            self.state
                .metrics
                .batch(&self.target.key, done.counts, started.elapsed());
            self.state
                .metrics
                .cached(&self.target.key, self.cache.len());
            self.state
                .metrics
                .unknown_codes(&self.target.key, &done.unknown_codes);
            *self
                .state
                .last_batch
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(chrono::Utc::now());
        }
        tracing::debug!(plugin = %self.target.key, messages = messages.len(), took = ?started.elapsed(), "batch committed");
        if std::env::var(FAULT_ENV).as_deref() == Ok("crash-after-commit") {
            tracing::error!(
                plugin = %self.target.key,
                "fault injection: aborting between commit and ack"
            );
            std::process::abort();
        }
        self.notifier.push(done.notifications);
        for m in &messages {
            m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok(())
    }

    /// Re-applies the dead letters an operator asked to retry, then
    /// releases, in stream order, the parked events of patients who are
    /// clear again (their dead letters resolved or discarded).
    async fn redrive_dead_letters(&self) -> anyhow::Result<()> {
        self.retry_dead_letters().await?;
        loop {
            let parked =
                queries::releasable(&self.pool, &self.target.key, self.config.batch_size as i64)
                    .await?;
            if parked.is_empty() {
                return Ok(());
            }
            let items = parked
                .into_iter()
                .map(|(seq, subject, raw)| Item {
                    seq: seq as u64,
                    subject,
                    raw,
                    origin: Origin::Parked,
                })
                .collect();
            self.apply_items(items).await?;
        }
    }

    /// How this projection's batches of `plugin` into `target` are made.
    fn batch<'a>(&'a self, plugin: &'a Plugin, target: &'a Target) -> Batcher<'a> {
        Batcher {
            plugin,
            target,
            pool: &self.pool,
            cache: &self.cache,
            max_attempts: self.config.max_attempts,
            claimed_by: Some(self.claimed_by.load(Ordering::Acquire)).filter(|pid| *pid != 0),
        }
    }

    /// Projects and commits items that are not fresh from the stream.
    async fn apply_items(&self, items: Vec<Item>) -> anyhow::Result<()> {
        let _batch = self.state.hold().await;
        let target = self.target.clone().at_generation(self.state.generation());
        let done = self
            .batch(&self.state.plugin(), &target)
            .commit(items)
            .await?;
        self.state
            .metrics
            .unknown_codes(&self.target.key, &done.unknown_codes);
        self.notifier.push(done.notifications);
        Ok(())
    }

    /// Re-applies the dead letters an operator asked to retry.
    async fn retry_dead_letters(&self) -> anyhow::Result<()> {
        let rows: Vec<(i64, i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, stream_seq, subject, raw FROM dead_letters
             WHERE plugin = $1 AND status = 'retrying' ORDER BY stream_seq",
        )
        .bind(&self.target.key)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let items = rows
            .into_iter()
            .map(|(id, seq, subject, raw)| Item {
                seq: seq as u64,
                subject,
                raw,
                origin: Origin::DeadLetter(id),
            })
            .collect();
        self.apply_items(items).await
    }
}

/// Checks that the consumer's deliveries reach this projection without a
/// gap (`last`: the delivery sequence seen last). A gap means messages were
/// lost on the way (a reconnect): JetStream would deliver them again only
/// after the ack wait, behind later events, so the projection resumes
/// after its checkpoint instead.
fn contiguous(messages: &[jetstream::Message], last: &mut Option<u64>) -> anyhow::Result<()> {
    for info in messages.iter().filter_map(|m| m.info().ok()) {
        let delivery = info.consumer_sequence;
        if let Some(before) = *last
            && delivery != before + 1
        {
            anyhow::bail!(
                "deliveries {} to {} of the consumer never arrived",
                before + 1,
                delivery.saturating_sub(1)
            );
        }
        *last = Some(delivery);
    }
    Ok(())
}
