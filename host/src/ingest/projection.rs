//! One plugin's projection: the partitions it holds, its consumer, its
//! batches, its acks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use async_nats::jetstream;
use futures::StreamExt;
use tokio::sync::watch;

use super::apply::Batcher;
use super::batch::{Item, Origin};
use super::claims::{Claims, Plan};
use super::state::ProjectionState;
use super::stream::{consumer_name, ensure_consumer, has_pending, reposition};
use crate::cluster::partition;
use crate::runtime::Plugin;
use crate::shared::{NotificationSink, Shared};
use crate::store::dead_letters::{self, Held, Stored};
use crate::store::{self, DocCache, Fence, StoredNotification, Target, checkpoints};
use crate::sync::Locked;

/// The first pause before a failed projection tries again; it doubles up to
/// [`MAX_RETRY_PAUSE`] while failures go on.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two tries of a failed projection.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How often a projection looks at who holds its partitions: to take free
/// ones, and to give some up while its host is above its share.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// Why [`Projection::consume`] stopped without failing.
enum Stop {
    /// Told to open its consumer again (it was replaced).
    Resubscribe,
    /// The consumer's messages ended (NATS reconnected, a leader changed):
    /// deliveries may have been lost at the end of it, where no later one
    /// shows the gap, so the projection resumes after its checkpoints.
    Ended,
    /// There are partitions to take: it starts again after the
    /// checkpoints of all it will hold.
    Rebalance(Plan),
    /// It gave up every partition.
    Idle,
}

/// The partitions held and how far each was committed, as this projection
/// last read or wrote them: a stream event of a held partition at or below
/// its checkpoint was handled already; one of another partition is another
/// host's.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// The backend holding the partitions' locks.
    pid: i32,
    /// Each partition held, with its checkpoint.
    committed: BTreeMap<u32, u64>,
}

impl Scope {
    /// The partitions held, as a commit checks them.
    fn fence(&self) -> Fence {
        Fence {
            pid: self.pid,
            partitions: self.committed.keys().copied().collect(),
        }
    }
}

/// Runs one plugin over the stream, into its live views or a rebuild's.
pub struct Projection {
    target: Target,
    shared: Shared,
    state: Arc<ProjectionState>,
    /// Where committed notifications go (`None`: a rebuild's, which has none).
    notifications: Option<NotificationSink>,
    cache: DocCache,
    scope: std::sync::Mutex<Scope>,
    /// This host's consumer of the projection.
    consumer: String,
}

impl Projection {
    /// A projection of the plugin in `state` into `target`; `state` also
    /// carries its controls and reports how it fares; the notifications each
    /// batch commits go to `notifications`.
    pub fn new(
        target: Target,
        shared: &Shared,
        state: Arc<ProjectionState>,
        notifications: Option<NotificationSink>,
    ) -> Self {
        Self {
            cache: DocCache::new(shared.config.doc_cache),
            consumer: consumer_name(&target.key, shared.member),
            target,
            shared: shared.clone(),
            state,
            notifications,
            scope: std::sync::Mutex::default(),
        }
    }

    /// Consumes for ever: opens its consumer again when told to, and after
    /// any failure. After a failure the consumer is repositioned after the
    /// committed checkpoints, so the next event applied is the next one in
    /// stream order whatever the failed pull had out; at start it is too
    /// when a host before it was killed holding messages (JetStream would
    /// otherwise hold them for the ack wait and deliver later events first).
    ///
    /// It applies only the events of the partitions it holds; other hosts
    /// apply the rest. A live projection shares its partitions with them
    /// (see [`crate::cluster`]): it takes free ones while its host is below
    /// its share, and gives some up, between two batches, while its host is
    /// above it. A rebuild takes them all.
    pub async fn run(self) {
        let _unit = self.target.is_live().then(|| {
            self.shared
                .ownership
                .join(self.shared.config.partitions as usize)
        });
        let mut claims = Claims::new(&self.target, &self.shared);
        let mut pending: Option<Plan> = None;
        let mut failed = false;
        let mut pause = FIRST_RETRY_PAUSE;
        // The lease (by its backend), partitions and subjects the consumer
        // was last positioned for.
        let mut positioned: Option<(Fence, Vec<String>)> = None;
        loop {
            if claims.lapsed() {
                tracing::warn!(plugin = %self.target.key, "the lease on this projection's partitions lapsed; claiming again");
            }
            let took = match self.rebalance(&mut claims, pending.take()).await {
                Ok(took) => took,
                Err(e) => {
                    claims.drop_all();
                    self.state
                        .progress
                        .set_failure(Some(format!("claiming partitions: {e}")));
                    0
                }
            };
            self.report(&claims);
            let Some(fence) = claims.fence() else {
                tokio::time::sleep(STANDBY_POLL).await;
                continue;
            };
            // A partition just taken starts a fresh consumer after the
            // checkpoints: its events before this host's position are still
            // to apply, and a host that held it before and froze may still
            // have pulls waiting on the old consumer, which would take the
            // next messages and never ack them. So does a version swapped
            // in with other subjects: the consumer's filter is set when it
            // is made. A partition taken back that this projection gave up
            // a moment ago counts as taken too: its consumer acked the
            // partition's events meanwhile, as another host's.
            let subjects = self.state.plugin().info.subjects.clone();
            let taken = took > 0
                || positioned.as_ref().is_none_or(|(before, read)| {
                    before.pid != fence.pid
                        || !fence
                            .partitions
                            .iter()
                            .all(|p| before.partitions.contains(p))
                        || *read != subjects
                });
            positioned = Some((fence.clone(), subjects));
            let lost = claims.lost_signal();
            // Consumes until it fails, is told to start over, or has
            // partitions to take, or until the lease is found lost: then it
            // stops at once.
            let result = match self.resume(fence, failed || taken).await {
                Ok(()) => self.consume(&mut claims, lost).await,
                Err(e) => Err(e),
            };
            // After a failure or an ended stream the consumer is
            // repositioned after the checkpoints.
            failed = matches!(result, Err(_) | Ok(Stop::Ended));
            match result {
                Ok(Stop::Rebalance(plan)) => pending = Some(plan),
                Ok(Stop::Idle) => {}
                Ok(stop @ (Stop::Ended | Stop::Resubscribe)) => {
                    if matches!(stop, Stop::Ended) {
                        tracing::warn!(plugin = %self.target.key, "the consumer's messages ended; resuming after its checkpoints");
                    }
                    pause = FIRST_RETRY_PAUSE;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => {
                    self.state.progress.set_failure(Some(format!("{e:#}")));
                    tracing::error!(
                        plugin = %self.target.key,
                        error = format!("{e:#}"),
                        retry_in = ?pause,
                        "projection failed; resuming after its checkpoints"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
    }

    /// Carries out `plan`, or the plan of a fresh look at who holds what;
    /// returns how many partitions it took.
    async fn rebalance(&self, claims: &mut Claims, plan: Option<Plan>) -> anyhow::Result<usize> {
        let plan = match plan {
            Some(plan) => plan,
            None => self.look(claims).await?,
        };
        claims.give(&plan).await?;
        Ok(claims.take(&plan).await?)
    }

    /// Looks at who holds what and plans what to take and give up.
    async fn look(&self, claims: &mut Claims) -> Result<Plan, sqlx::Error> {
        claims
            .plan(self.state.controls.pinned(), self.in_step())
            .await
    }

    /// Whether this host runs the definition the live views were last
    /// built with (a rebuild's projection always does). Another host may
    /// have rebuilt them with another version: until this one runs it,
    /// it must not write them, nor read the stream with the old version's
    /// subjects. One that runs the same definition takes the generation
    /// they were rebuilt at.
    async fn in_step(&self) -> Result<bool, sqlx::Error> {
        if !self.target.is_live() {
            return Ok(true);
        }
        let Some(recorded) = store::recorded(&self.shared.pool, &self.target.plugin).await? else {
            return Ok(true);
        };
        if !recorded.built_for(&self.state.plugin().info) {
            return Ok(false);
        }
        if recorded.generation != self.state.controls.generation() {
            tracing::info!(plugin = %self.target.key, generation = recorded.generation, "the live views were rebuilt by another host with this definition: moving to their generation");
            self.state.controls.set_generation(recorded.generation);
        }
        Ok(true)
    }

    /// Reports how many partitions this host holds, in the metrics and the
    /// projection's state, and why it holds none when out of step.
    fn report(&self, claims: &Claims) {
        self.state.progress.set_out_of_step(claims.out_of_step());
        let held = claims.held();
        self.state.progress.set_held(held);
        if self.target.is_live() {
            self.state.metrics.owned(&self.target.key, held);
        }
        if self.state.progress.set_standby(held == 0) {
            tracing::info!(plugin = %self.target.key, partitions = held, "partitions held changed from none or to none");
        }
    }

    /// Reads the committed checkpoints of the partitions of `fence` and
    /// repositions the consumer after the lowest when `anew` (after a
    /// failure, or a partition just taken), or when messages are out that
    /// nobody will ack (a host before it was killed, or a pull this host
    /// dropped).
    async fn resume(&self, fence: Fence, anew: bool) -> anyhow::Result<()> {
        let stored = checkpoints::by_partition(&self.shared.pool, &self.target.key).await?;
        let committed: BTreeMap<u32, u64> = fence
            .partitions
            .iter()
            .map(|p| (*p, stored.get(p).copied().unwrap_or(0)))
            .collect();
        let after = committed.values().min().copied().unwrap_or(0);
        *self.scope.locked() = Scope {
            pid: fence.pid,
            committed,
        };
        if anew || has_pending(&self.shared.stream, &self.consumer).await {
            let subjects = self.state.plugin().info.subjects.clone();
            reposition(
                &self.shared.stream,
                &self.shared.config,
                &self.consumer,
                &subjects,
                after,
            )
            .await?;
        }
        Ok(())
    }

    /// Consumes until the stream ends or the consumer is replaced, or,
    /// between two batches, until there are partitions to take; gives
    /// partitions up there while its host is above its share. Fails as soon
    /// as `lost` says the lease is.
    async fn consume(
        &self,
        claims: &mut Claims,
        lost: Option<watch::Receiver<bool>>,
    ) -> anyhow::Result<Stop> {
        let Some(mut lost) = lost else {
            return Ok(Stop::Idle);
        };
        let subjects = self.state.plugin().info.subjects.clone();
        let consumer = ensure_consumer(
            &self.shared.stream,
            &self.shared.config,
            &self.consumer,
            &subjects,
        )
        .await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.shared.config.batch_size)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.redrive_dead_letters().await?;
        let mut last_delivery = None;
        let mut poll =
            tokio::time::interval_at(tokio::time::Instant::now() + STANDBY_POLL, STANDBY_POLL);
        loop {
            tokio::select! {
                first = messages.next() => {
                    let Some(first) = first else { return Ok(Stop::Ended) };
                    self.state.controls.wait_while_paused().await;
                    let batch = self.gather(first, &mut messages).await?;
                    contiguous(&batch, &mut last_delivery)?;
                    self.apply_messages(batch).await?;
                    self.state.progress.set_failure(None);
                }
                () = self.state.controls.redrive.notified() => self.redrive_dead_letters().await?,
                () = self.state.controls.resubscribe.notified() => return Ok(Stop::Resubscribe),
                () = lapsed(&mut lost) => {
                    anyhow::bail!("the lease on this projection's partitions lapsed (LEASE_TTL)");
                }
                _ = poll.tick() => {
                    let plan = self.look(claims).await?;
                    claims.give(&plan).await?;
                    self.report(claims);
                    let Some(fence) = claims.fence() else { return Ok(Stop::Idle) };
                    self.narrow(fence);
                    if claims.would_take(&plan) {
                        return Ok(Stop::Rebalance(plan));
                    }
                }
            }
        }
    }

    /// Forgets the partitions given up: their later events are the new
    /// owners'.
    fn narrow(&self, fence: Fence) {
        let mut scope = self.scope.locked();
        scope.committed.retain(|p, _| fence.partitions.contains(p));
        scope.pid = fence.pid;
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
        let deadline = tokio::time::Instant::now() + self.shared.config.batch_linger;
        let mut batch = vec![first.map_err(|e| anyhow::anyhow!("{e}"))?];
        while batch.len() < self.shared.config.batch_size {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(message)) => batch.push(message.map_err(|e| anyhow::anyhow!("{e}"))?),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Applies a batch of stream messages, then acks them. Nothing is
    /// acked before its commit; if the batch fails, the error makes the
    /// projection resume after its checkpoints. Messages at or below their
    /// partition's checkpoint (a redelivery) were handled before, and
    /// messages of partitions other hosts hold are theirs: both are only
    /// acked.
    async fn apply_messages(&self, messages: Vec<jetstream::Message>) -> anyhow::Result<()> {
        let _batch = self.state.controls.hold().await;
        self.state.progress.started_batch();
        let (items, scope) = self.fresh_items(&messages);
        let read = messages
            .iter()
            .filter_map(|m| m.info().ok())
            .map(|info| info.stream_sequence)
            .max()
            .unwrap_or(0);
        // Read up to `read`: the partitions held move there, unless every
        // one is there already.
        let through = if scope.committed.values().all(|c| *c >= read) {
            0
        } else {
            read
        };
        let started = std::time::Instant::now();
        // The version in place now runs the whole batch; a swap takes
        // effect at the next one.
        let plugin = self.state.plugin();
        let target = self
            .target
            .clone()
            .at_generation(self.state.controls.generation());
        let applied_any = !items.is_empty();
        let done = self
            .batch(&plugin, &target, &scope)
            .commit(items, through)
            .await
            .context("applying a batch")?;
        self.committed_through(read);
        if applied_any {
            let metrics = &self.state.metrics;
            metrics.batch(&self.target.key, done.counts, started.elapsed());
            metrics.cached(&self.target.key, self.cache.len());
            metrics.unknown_codes(&self.target.key, &done.unknown_codes);
            self.state.progress.committed_batch();
        }
        tracing::debug!(plugin = %self.target.key, messages = messages.len(), took = ?started.elapsed(), "batch committed");
        if self.shared.config.crash_after_commit {
            tracing::error!(
                plugin = %self.target.key,
                "fault injection: aborting between commit and ack"
            );
            std::process::abort();
        }
        self.hand_over(done.notifications);
        // One ack for the batch: the consumer acknowledges every delivery
        // up to the last (`AckPolicy::All`), and the batch is in delivery
        // order.
        if let Some(last) = messages.last() {
            last.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok(())
    }

    /// Records a commit through stream sequence `read` in every partition
    /// held.
    fn committed_through(&self, read: u64) {
        for committed in self.scope.locked().committed.values_mut() {
            *committed = (*committed).max(read);
        }
    }

    /// Hands committed notifications on to be pushed; never waits.
    fn hand_over(&self, notifications: Vec<StoredNotification>) {
        if let Some(sink) = &self.notifications {
            // Refused ones stay in the outbox, for the sweep.
            let _ = sink.offer(notifications);
        }
    }

    /// The messages of the partitions held above their committed
    /// checkpoints as items, in stream order, each once; with the scope
    /// they were picked by.
    fn fresh_items(&self, messages: &[jetstream::Message]) -> (Vec<Item>, Scope) {
        let prefix = self.shared.config.subject_prefix.as_str();
        let partitions = self.shared.config.partitions;
        let scope = self.scope.locked().clone();
        let mut items: Vec<Item> = messages
            .iter()
            .filter_map(|m| {
                let seq = m.info().ok()?.stream_sequence;
                let partition = partition::of_event(&m.payload, partitions);
                // Only this host's events, not yet applied, are copied.
                if scope.committed.get(&partition).is_none_or(|c| seq <= *c) {
                    return None;
                }
                let subject = m.subject.strip_prefix(prefix).unwrap_or(&m.subject);
                Some(Item::from_stream(
                    seq,
                    subject.to_owned(),
                    m.payload.to_vec(),
                    partition,
                ))
            })
            .collect();
        items.sort_by_key(|i| i.seq);
        items.dedup_by_key(|i| i.seq);
        (items, scope)
    }

    /// Re-applies the dead letters an operator asked to retry, then
    /// releases, in stream order, the parked events of patients who are
    /// clear again (their dead letters resolved or discarded); those of
    /// the partitions held.
    async fn redrive_dead_letters(&self) -> anyhow::Result<()> {
        self.retry_dead_letters().await?;
        loop {
            let limit = self.shared.config.batch_size as i64;
            let scope = self.scope.locked().clone();
            let fence = scope.fence();
            let parked = dead_letters::releasable(
                &self.shared.pool,
                &self.target.key,
                self.held(&fence),
                limit,
            )
            .await?;
            if parked.is_empty() {
                return Ok(());
            }
            self.apply_items(parked.into_iter().map(stored_item).collect(), &scope)
                .await?;
        }
    }

    /// The partitions of `fence`, whose dead letters and parked events
    /// this host applies again.
    fn held<'f>(&self, fence: &'f Fence) -> Held<'f> {
        Held {
            partitions: self.shared.config.partitions,
            held: &fence.partitions,
        }
    }

    /// How this projection's batches of `plugin` into `target` are made,
    /// fenced by the partitions of `scope`.
    fn batch<'a>(&'a self, plugin: &'a Plugin, target: &'a Target, scope: &Scope) -> Batcher<'a> {
        Batcher {
            plugin,
            target,
            pool: &self.shared.pool,
            cache: &self.cache,
            max_attempts: self.shared.config.max_attempts,
            fence: Some(scope.fence()),
        }
    }

    /// Projects and commits items that are not fresh from the stream.
    async fn apply_items(&self, items: Vec<Item>, scope: &Scope) -> anyhow::Result<()> {
        let _batch = self.state.controls.hold().await;
        let target = self
            .target
            .clone()
            .at_generation(self.state.controls.generation());
        let done = self
            .batch(&self.state.plugin(), &target, scope)
            .commit(items, 0)
            .await?;
        self.state
            .metrics
            .unknown_codes(&self.target.key, &done.unknown_codes);
        self.hand_over(done.notifications);
        Ok(())
    }

    /// Re-applies the dead letters an operator asked to retry.
    async fn retry_dead_letters(&self) -> anyhow::Result<()> {
        let scope = self.scope.locked().clone();
        let fence = scope.fence();
        let letters =
            dead_letters::retrying(&self.shared.pool, &self.target.key, self.held(&fence)).await?;
        if letters.is_empty() {
            return Ok(());
        }
        self.apply_items(letters.into_iter().map(stored_item).collect(), &scope)
            .await
    }
}

/// Returns once `lost` says the lease is lost (or it is gone).
async fn lapsed(lost: &mut watch::Receiver<bool>) {
    let _ = lost.wait_for(|lost| *lost).await;
}

/// A dead letter being retried (with its id) or a released parked event
/// (without), as an item to apply again.
fn stored_item(stored: Stored) -> Item {
    Item {
        seq: stored.stream_seq as u64,
        subject: stored.subject,
        raw: stored.raw,
        origin: stored.id.map_or(Origin::Parked, Origin::DeadLetter),
        partition: stored.partition.max(0) as u32,
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
