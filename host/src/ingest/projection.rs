//! One plugin's projection: its consumer, its batches, its acks.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, stream};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use super::batch::{self, Carried, Item, Origin};
use super::stream::{ensure_consumer, reclaim_pending};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::runtime::Plugin;
use crate::store::{DocCache, Target, queries};

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
    gate: Arc<tokio::sync::RwLock<()>>,
    resubscribe: Notify,
    redrive: Notify,
    failure: Mutex<Option<String>>,
    last_batch: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    batch_started: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    generation: AtomicI32,
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
    /// the batches in hand (one projecting, one committing) commit first. A
    /// rebuild holds it while it switches tables under the live projection.
    pub async fn hold(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.gate.clone().write_owned().await
    }

    /// What each batch holds from its start to the end of its commit.
    async fn batch_gate(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.gate.clone().read_owned().await
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

    /// `running`, `paused`, or `retrying` with the error that stopped the
    /// last batch.
    pub fn describe(&self) -> (&'static str, Option<String>) {
        if *self.paused.borrow() {
            return ("paused", None);
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

/// A projected batch, and the gate it holds until its commit ends.
struct Projected {
    batch: crate::store::Batch,
    held: tokio::sync::OwnedRwLockReadGuard<()>,
    started: std::time::Instant,
}

/// A batch whose transaction runs while the next batch is projected.
struct Committing {
    messages: Vec<jetstream::Message>,
    /// Applied, dead-lettered and parked events, for the metrics.
    counts: [usize; 3],
    started: std::time::Instant,
    carried: Carried,
    commit: tokio::task::JoinHandle<Result<Vec<projector_sdk::Value>, sqlx::Error>>,
}

/// The most batches one chain of overlapping batches runs before the
/// projection looks at its other work (dead letters to re-drive, a
/// consumer to open again) between two batches.
const CHAIN_BATCHES: usize = 8;

/// Asks for messages to come again in a second.
async fn nak(messages: &[jetstream::Message]) {
    for m in messages {
        let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
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
        }
    }

    /// Consumes for ever: opens its consumer again when told to, and after
    /// NATS errors. First, messages a host before it took and never
    /// acknowledged (it was killed) are made to come again at once and in
    /// order; JetStream would otherwise hold them for the ack wait and
    /// deliver later events first.
    pub async fn run(self) {
        let subjects = self.state.plugin().info.subjects.clone();
        if let Err(e) =
            reclaim_pending(&self.stream, &self.config, &self.target.key, &subjects).await
        {
            tracing::warn!(plugin = %self.target.key, error = format!("{e:#}"), "could not reclaim unacknowledged messages");
        }
        loop {
            let pause = match self.consume().await {
                Ok(()) => Duration::from_millis(10),
                Err(e) => {
                    self.state.set(Some(format!("{e:#}")));
                    tracing::error!(
                        plugin = %self.target.key,
                        error = format!("{e:#}"),
                        "projection failed; restarting"
                    );
                    Duration::from_secs(1)
                }
            };
            tokio::time::sleep(pause).await;
        }
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
        loop {
            tokio::select! {
                first = messages.next() => {
                    let Some(first) = first else { return Ok(()) };
                    self.state.wait_while_paused().await;
                    self.apply_while_busy(first, &mut messages).await?;
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

    /// Applies batches for as long as messages keep coming (up to
    /// [`CHAIN_BATCHES`]), each batch projected while the one before
    /// commits (it sees what that one changed), and commits in order. Returns once everything taken is
    /// committed and acknowledged. Nothing is acked before its commit; a
    /// batch whose commit or projection fails is nak'ed, and so is the one
    /// projected on top of it.
    async fn apply_while_busy<S, E>(
        &self,
        first: Result<jetstream::Message, E>,
        messages: &mut S,
    ) -> anyhow::Result<()>
    where
        S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut committing = None;
        let chained = self.chain(first, messages, &mut committing).await;
        let settled = match committing {
            Some(last) => self.settle(last).await,
            None => Ok(()),
        };
        chained.and(settled)
    }

    async fn chain<S, E>(
        &self,
        first: Result<jetstream::Message, E>,
        messages: &mut S,
        committing: &mut Option<Committing>,
    ) -> anyhow::Result<()>
    where
        S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut next = Some(first);
        let mut batches = 0;
        while let Some(first) = next.take() {
            batches += 1;
            if *self.state.paused.borrow() {
                // The batch in hand finishes; nothing new is taken.
                if let Some(previous) = committing.take() {
                    self.settle(previous).await?;
                }
                self.state.wait_while_paused().await;
            }
            let batch = self.gather(first, messages).await?;
            let carried = committing.as_ref().map(|c| &c.carried);
            let projected = self.project_messages(&batch, carried).await;
            if let Some(previous) = committing.take()
                && let Err(e) = self.settle(previous).await
            {
                nak(&batch).await;
                return Err(e);
            }
            match projected {
                Ok(projected) => *committing = Some(self.start_commit(batch, projected)),
                Err(e) => {
                    nak(&batch).await;
                    return Err(e.context("projecting a batch"));
                }
            }
            if batches < CHAIN_BATCHES {
                next = tokio::time::timeout(self.config.batch_linger, messages.next())
                    .await
                    .ok()
                    .flatten();
            }
        }
        Ok(())
    }

    /// Projects a batch of stream messages on top of what `carried` (the
    /// batch before, still committing) changed. Holds the projection's
    /// gate from here until its commit ends.
    async fn project_messages(
        &self,
        messages: &[jetstream::Message],
        carried: Option<&Carried>,
    ) -> anyhow::Result<Projected> {
        let held = self.state.batch_gate().await;
        *self
            .state
            .batch_started
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(chrono::Utc::now());
        let started = std::time::Instant::now();
        let prefix = &self.config.subject_prefix;
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
            .collect();
        items.sort_by_key(|i| i.seq);
        items.dedup_by_key(|i| i.seq);
        // The version in place now runs the whole batch; a swap takes
        // effect at the next one.
        let plugin = self.state.plugin();
        let target = self.target.clone().at_generation(self.state.generation());
        let nothing = Carried::default();
        let batch = batch::project(
            &plugin,
            &target,
            &self.pool,
            (&self.cache, carried.unwrap_or(&nothing)),
            self.config.max_attempts,
            items,
        )
        .await?;
        Ok(Projected {
            batch,
            held,
            started,
        })
    }

    /// Starts a projected batch's transaction; the projection goes on.
    fn start_commit(&self, messages: Vec<jetstream::Message>, projected: Projected) -> Committing {
        let Projected {
            batch,
            held,
            started,
        } = projected;
        let counts = [
            batch.processed.len(),
            batch.dead_letters.len(),
            batch.parked.len(),
        ];
        let carried = Carried::of(&batch);
        let pool = self.pool.clone();
        let commit = tokio::spawn(async move {
            let result = batch.commit(&pool).await;
            drop(held);
            result
        });
        Committing {
            messages,
            counts,
            started,
            carried,
            commit,
        }
    }

    /// Waits for a batch's commit; then pushes its notifications and acks
    /// its messages, or naks them if it failed.
    async fn settle(&self, committing: Committing) -> anyhow::Result<()> {
        let result = match committing.commit.await {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::anyhow!("the commit task ended: {e}")),
        };
        let took = committing.started.elapsed();
        tracing::debug!(plugin = %self.target.key, messages = committing.messages.len(), total = ?took, "batch committed");
        let notifications = match result {
            Ok(notifications) => notifications,
            Err(e) => {
                nak(&committing.messages).await;
                return Err(e.context("applying a batch"));
            }
        };
        self.state
            .metrics
            .batch(&self.target.key, committing.counts, took);
        *self
            .state
            .last_batch
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(chrono::Utc::now());
        if std::env::var(FAULT_ENV).as_deref() == Ok("crash-after-commit") {
            tracing::error!(
                plugin = %self.target.key,
                "fault injection: aborting between commit and ack"
            );
            std::process::abort();
        }
        self.notifier.push(notifications);
        for m in &committing.messages {
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

    /// Projects and commits items that are not fresh from the stream.
    async fn apply_items(&self, items: Vec<Item>) -> anyhow::Result<()> {
        let _batch = self.state.batch_gate().await;
        let target = self.target.clone().at_generation(self.state.generation());
        let batch = batch::project(
            &self.state.plugin(),
            &target,
            &self.pool,
            (&self.cache, &Carried::default()),
            self.config.max_attempts,
            items,
        )
        .await?;
        self.notifier.push(batch.commit(&self.pool).await?);
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
