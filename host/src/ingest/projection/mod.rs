//! One plugin's projection: the partitions it holds, its consumer, its
//! batches, its acks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use tokio::sync::watch;

use self::in_flight::{InFlight, Next};
use super::apply::Batcher;
use super::batch::{Item, Origin};
use super::claims::{Claims, Plan};
use super::state::ProjectionState;
use super::stream::{consumer_name, ensure_consumer, reposition};
use crate::cluster::partition;
use crate::runtime::Plugin;
use crate::shared::{NotificationSink, Shared};
use crate::store::dead_letters::{self, Held, Stored};
use crate::store::{self, DocCache, Fence, StoredNotification, Target, checkpoints};
use crate::sync::Locked;

mod in_flight;

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
    /// any failure. Each time it starts consuming (at start, after a
    /// failure, after taking or giving up partitions, after a swap) it
    /// repositions its consumer after the committed checkpoints of the
    /// partitions it holds, so the next event applied is the next one in
    /// stream order: whatever an earlier pull had out (a failed batch's, a
    /// dropped pull's, a killed host's) can neither arrive after later
    /// events nor be acknowledged with them unapplied, and the first
    /// delivery of the fresh consumer is known (see [`contiguous`]).
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
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            if claims.lapsed() {
                tracing::warn!(plugin = %self.target.key, "the lease on this projection's partitions lapsed; claiming again");
            }
            if let Err(e) = self.rebalance(&mut claims, pending.take()).await {
                claims.drop_all();
                self.state
                    .progress
                    .set_failure(Some(format!("claiming partitions: {e}")));
            }
            self.report(&claims);
            let Some(fence) = claims.fence() else {
                tokio::time::sleep(STANDBY_POLL).await;
                continue;
            };
            let lost = claims.lost_signal();
            // Consumes until it fails, is told to start over, or has
            // partitions to take, or until the lease is found lost: then it
            // stops at once.
            let result = match self.resume(fence).await {
                Ok(()) => self.consume(&mut claims, lost).await,
                Err(e) => Err(e),
            };
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

    /// Carries out `plan`, or the plan of a fresh look at who holds what.
    async fn rebalance(&self, claims: &mut Claims, plan: Option<Plan>) -> anyhow::Result<()> {
        let plan = match plan {
            Some(plan) => plan,
            None => self.look(claims).await?,
        };
        claims.give(&plan).await?;
        claims.take(&plan).await?;
        Ok(())
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
    /// makes the consumer afresh after the lowest.
    async fn resume(&self, fence: Fence) -> anyhow::Result<()> {
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
        let subjects = self.state.plugin().info.subjects.clone();
        reposition(
            &self.shared.stream,
            &self.shared.config,
            &self.consumer,
            &subjects,
            after,
        )
        .await?;
        tracing::info!(plugin = %self.target.key, partitions = fence.partitions.len(), after, "consuming after the checkpoints of the partitions held");
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
        let mut in_flight = None;
        let stopped = self
            .consume_messages(claims, &mut lost, &mut messages, &subjects, &mut in_flight)
            .await;
        // No transaction outlives the consuming: the projection resumes
        // after the checkpoints as they are.
        let settled = self.settle(&mut in_flight).await;
        match stopped {
            Err(e) => Err(e),
            Ok(stop) => settled.map(|()| stop),
        }
    }

    /// The loop of [`Projection::consume`]: each batch projects while the
    /// one before it commits (`in_flight`, see [`in_flight`]); anything else
    /// waits until that one is done. The consumer reads `subjects`.
    async fn consume_messages<S, E>(
        &self,
        claims: &mut Claims,
        lost: &mut watch::Receiver<bool>,
        messages: &mut S,
        subjects: &[String],
        in_flight: &mut Option<InFlight>,
    ) -> anyhow::Result<Stop>
    where
        S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        // The consumer was made afresh (see `resume`): its first delivery
        // is its first.
        let mut last_delivery = 0;
        let mut poll =
            tokio::time::interval_at(tokio::time::Instant::now() + STANDBY_POLL, STANDBY_POLL);
        // After a long batch, one look, not one per tick missed.
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The rarer arms first, so a backlog cannot starve them; then a
            // message before the batch in flight, so the next batch projects
            // while that one commits.
            tokio::select! {
                biased;
                () = self.state.controls.redrive.notified() => {
                    self.settle(in_flight).await?;
                    self.redrive_dead_letters().await?;
                }
                () = self.state.controls.resubscribe.notified() => return Ok(Stop::Resubscribe),
                () = lapsed(lost) => {
                    anyhow::bail!("the lease on this projection's partitions lapsed (LEASE_TTL)");
                }
                _ = poll.tick() => {
                    // Partitions change hands between batches only.
                    self.settle(in_flight).await?;
                    let plan = self.look(claims).await?;
                    claims.give(&plan).await?;
                    self.report(claims);
                    let Some(fence) = claims.fence() else { return Ok(Stop::Idle) };
                    self.narrow(fence);
                    if claims.would_take(&plan) {
                        return Ok(Stop::Rebalance(plan));
                    }
                }
                first = messages.next() => {
                    let Some(first) = first else { return Ok(Stop::Ended) };
                    if self.state.controls.paused() {
                        self.settle(in_flight).await?;
                        self.state.controls.wait_while_paused().await;
                    }
                    let next = self
                        .next_batch(first, messages, subjects, &mut last_delivery, in_flight)
                        .await?;
                    if let Next::Stale = next {
                        return Ok(Stop::Resubscribe);
                    }
                    self.state.progress.set_failure(None);
                }
                done = in_flight::committed(in_flight) => {
                    let batch = in_flight.take().expect("a batch was in flight");
                    self.complete(batch, done).await?;
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

    /// The projection's target at the generation running now.
    fn target_now(&self) -> Target {
        self.target
            .clone()
            .at_generation(self.state.controls.generation())
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
        let target = self.target_now();
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
/// gap (`last`: the delivery sequence seen last, 0 before the first). A gap
/// means messages were lost on the way (a reconnect, a NATS node that died
/// with them out, even before the first arrived): the consumer would
/// deliver them again only after the ack wait, behind later events, or
/// never once a later ack covers them, so the projection resumes after its
/// checkpoints instead.
fn contiguous(deliveries: impl IntoIterator<Item = u64>, last: &mut u64) -> anyhow::Result<()> {
    for delivery in deliveries {
        if delivery != *last + 1 {
            anyhow::bail!(
                "deliveries {} to {} of the consumer never arrived",
                *last + 1,
                delivery.saturating_sub(1)
            );
        }
        *last = delivery;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::contiguous;

    #[test]
    fn deliveries_in_a_row_pass_from_the_first() {
        let mut last = 0;
        contiguous([1, 2, 3], &mut last).unwrap();
        contiguous([4], &mut last).unwrap();
        assert_eq!(last, 4);
    }

    #[test]
    fn deliveries_lost_before_the_first_that_arrives_are_a_gap() {
        let mut last = 0;
        let gap = contiguous([101, 102], &mut last).unwrap_err();
        assert_eq!(
            gap.to_string(),
            "deliveries 1 to 100 of the consumer never arrived"
        );
    }

    #[test]
    fn deliveries_lost_between_two_batches_are_a_gap() {
        let mut last = 0;
        contiguous([1, 2], &mut last).unwrap();
        assert!(contiguous([5], &mut last).is_err());
    }
}
