//! One plugin's projection: its consumer, its batches, its acks.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;

use async_nats::jetstream;
use futures::StreamExt;

use super::apply::Batcher;
use super::batch::{Item, Origin};
use super::state::ProjectionState;
use super::stream::{ensure_consumer, has_pending, reposition};
use crate::cluster::Counted;
use crate::runtime::Plugin;
use crate::shared::{NotificationSink, Shared};
use crate::store::claim::{self, Claim};
use crate::store::dead_letters::{self, Stored};
use crate::store::{DocCache, StoredNotification, Target, checkpoints};

/// The first pause before a failed projection tries again; it doubles up to
/// [`MAX_RETRY_PAUSE`] while failures go on.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two tries of a failed projection.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How often a projection that another host has claimed tries to take
/// over, and how often a projecting one checks its host's share.
const STANDBY_POLL: Duration = Duration::from_secs(1);
/// Standby polls in a row that must find a claim free before a host that
/// has its share takes it anyway (a host below its share takes it at once).
const FREE_POLLS_BEFORE_TAKING: u32 = 2;

/// A claim this host holds for the projection.
struct Holding {
    claim: Claim,
    /// Counts it in the host's share (`None`: a rebuild's, which does not
    /// count).
    counted: Option<Counted>,
    /// When it was taken: a claim is not handed over before the hosts'
    /// heartbeats (`LEASE_TTL`) have had time to say who is live, so one
    /// taken from a host that just died is not passed around meanwhile.
    taken_at: std::time::Instant,
}

/// Why [`Projection::consume`] stopped without failing.
enum Stop {
    /// Told to open its consumer again (it was replaced).
    Resubscribe,
    /// The consumer's messages ended (NATS reconnected, a leader changed):
    /// deliveries may have been lost at the end of it, where no later one
    /// shows the gap, so the projection resumes after its checkpoint.
    Ended,
    /// Its host holds more projections than its share: this one may be
    /// handed over.
    OverShare,
}

/// Runs one plugin over the stream, into its live views or a rebuild's.
pub struct Projection {
    target: Target,
    shared: Shared,
    state: Arc<ProjectionState>,
    /// Where committed notifications go (`None`: a rebuild's, which has none).
    notifications: Option<NotificationSink>,
    cache: DocCache,
    /// The committed checkpoint as this projection last read or wrote it:
    /// a stream event at or below it was handled already.
    committed: AtomicU64,
    /// The backend holding this projection's claim (0: none).
    claimed_by: AtomicI32,
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
            target,
            shared: shared.clone(),
            state,
            notifications,
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
    /// stand by and take over when its claim goes. A live projection shares
    /// in the deployment's work (see [`crate::cluster`]): it takes a free
    /// claim while its host is below its share, and gives its claim up,
    /// between two batches, while its host is above it.
    pub async fn run(self) {
        let _unit = self.target.is_live().then(|| self.shared.ownership.join());
        let mut holding: Option<Holding> = None;
        let mut failed = false;
        let mut pause = FIRST_RETRY_PAUSE;
        // The claim (by its backend) the consumer was last repositioned for.
        let mut positioned_for = None;
        // Standby polls in a row that found the claim free.
        let mut free_polls = 0;
        loop {
            let Some(current) = self.hold_claim(&mut holding, &mut free_polls).await else {
                tokio::time::sleep(STANDBY_POLL).await;
                continue;
            };
            // A claim just taken starts a fresh consumer after the
            // checkpoint: a host that held it before and froze may still have
            // pulls waiting on the old one, which would take the next
            // messages and never ack them.
            let taken_over = positioned_for != Some(current.claim.pid);
            positioned_for = Some(current.claim.pid);
            let may_hand_over_from = current.taken_at + self.shared.config.lease_ttl;
            // Consumes until it fails, is told to start over or its host
            // holds more than its share, or until the claim is found lost:
            // then it stops at once.
            let result = match self.resume(failed || taken_over).await {
                Ok(()) => tokio::select! {
                    result = self.consume(may_hand_over_from) => result,
                    () = current.claim.lost() => Err(anyhow::anyhow!("the claim on this projection lapsed (LEASE_TTL)")),
                },
                Err(e) => Err(e),
            };
            // After a failure or an ended stream the consumer is
            // repositioned after the checkpoint.
            failed = matches!(result, Err(_) | Ok(Stop::Ended));
            match result {
                Ok(Stop::OverShare) => {
                    let Some(mut current) = holding.take() else {
                        continue;
                    };
                    match current
                        .counted
                        .take()
                        .map(|c| self.shared.ownership.try_yield(c))
                    {
                        Some(Ok(())) => {
                            drop(current);
                            self.owned(false);
                            free_polls = 0;
                            tracing::info!(plugin = %self.target.key, "this host holds more than its share: handing this projection over");
                            tokio::time::sleep(STANDBY_POLL).await;
                        }
                        Some(Err(kept)) => {
                            // Another projection of this host gave its
                            // claim up first. The pull was dropped: resume
                            // after the checkpoint.
                            failed = true;
                            current.counted = Some(kept);
                            holding = Some(current);
                        }
                        None => holding = Some(current),
                    }
                }
                Ok(stop @ (Stop::Ended | Stop::Resubscribe)) => {
                    if matches!(stop, Stop::Ended) {
                        tracing::warn!(plugin = %self.target.key, "the consumer's messages ended; resuming after its checkpoint");
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
                        "projection failed; resuming after its checkpoint"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
    }

    /// Keeps or takes this projection's claim; `None` while another host
    /// holds it, or while it is free and this host has its share
    /// (`free_polls`: how many polls in a row found it so; at
    /// [`FREE_POLLS_BEFORE_TAKING`] it is taken anyway).
    async fn hold_claim<'c>(
        &self,
        holding: &'c mut Option<Holding>,
        free_polls: &mut u32,
    ) -> Option<&'c Holding> {
        if holding.as_ref().is_some_and(|held| !held.claim.alive()) {
            tracing::warn!(plugin = %self.target.key, "the claim on this projection lapsed; claiming again");
            *holding = None;
            self.owned(false);
        }
        if holding.is_some() {
            return holding.as_ref();
        }
        self.claimed_by.store(0, Ordering::Release);
        if !self.may_take(free_polls).await {
            return None;
        }
        let ttl = self.shared.config.lease_ttl;
        let member = self.shared.member;
        match Claim::try_take(&self.shared.pool, &self.target.key, ttl, member).await {
            Ok(Some(taken)) => {
                tracing::info!(plugin = %self.target.key, "claimed this projection");
                *free_polls = 0;
                self.claimed_by.store(taken.pid, Ordering::Release);
                self.state.progress.set_standby(false);
                self.owned(true);
                let counted = self.target.is_live().then(|| self.shared.ownership.hold());
                Some(holding.insert(Holding {
                    claim: taken,
                    counted,
                    taken_at: std::time::Instant::now(),
                }))
            }
            Ok(None) => {
                *free_polls = 0;
                self.stand_by();
                None
            }
            Err(e) => {
                self.state
                    .progress
                    .set_failure(Some(format!("claiming the projection: {e}")));
                None
            }
        }
    }

    /// Whether to try for the claim now: always for a rebuild and for a
    /// projection pinned here (a rebuild of it runs on this host), and for
    /// a live projection while its host is below its share or once the
    /// claim has been seen free for [`FREE_POLLS_BEFORE_TAKING`] polls in a
    /// row.
    async fn may_take(&self, free_polls: &mut u32) -> bool {
        if !self.target.is_live()
            || self.state.controls.pinned()
            || self.shared.ownership.below_share()
        {
            return true;
        }
        let key = [self.target.key.clone()];
        match claim::holders(&self.shared.pool, &key).await {
            Ok(holders) if holders.iter().all(|(_, holder)| holder.is_none()) => {
                *free_polls += 1;
                *free_polls >= FREE_POLLS_BEFORE_TAKING
            }
            Ok(_) => {
                *free_polls = 0;
                self.stand_by();
                false
            }
            Err(_) => false,
        }
    }

    /// Reports standing by while another host projects this plugin.
    fn stand_by(&self) {
        self.owned(false);
        if self.state.progress.set_standby(true) {
            tracing::info!(plugin = %self.target.key, "another host projects this plugin; standing by");
        }
    }

    /// Records in the metrics whether this host projects the plugin.
    fn owned(&self, owned: bool) {
        if self.target.is_live() {
            self.state.metrics.owned(&self.target.key, owned);
        }
    }

    /// Reads the committed checkpoint and repositions the consumer after it
    /// when `anew` (after a failure, or a claim just taken), or when messages
    /// are out that nobody will ack (a host before it was killed, or a pull
    /// this host dropped).
    async fn resume(&self, anew: bool) -> anyhow::Result<()> {
        let checkpoint = checkpoints::of(&self.shared.pool, &self.target.key).await?;
        self.committed.store(checkpoint, Ordering::Release);
        if anew || has_pending(&self.shared.stream, &self.target.key).await {
            let subjects = self.state.plugin().info.subjects.clone();
            reposition(
                &self.shared.stream,
                &self.shared.config,
                &self.target.key,
                &subjects,
                checkpoint,
            )
            .await?;
        }
        Ok(())
    }

    /// Consumes until the stream ends or the consumer is replaced, or,
    /// between two batches, until its host is found above its share (from
    /// `may_hand_over_from` on, and unless the projection is pinned here).
    async fn consume(&self, may_hand_over_from: std::time::Instant) -> anyhow::Result<Stop> {
        let subjects = self.state.plugin().info.subjects.clone();
        let consumer = ensure_consumer(
            &self.shared.stream,
            &self.shared.config,
            &self.target.key,
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
        let mut share_check =
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
                _ = share_check.tick() => {
                    if self.target.is_live()
                        && !self.state.controls.pinned()
                        && std::time::Instant::now() >= may_hand_over_from
                        && self.shared.ownership.over_share()
                    {
                        return Ok(Stop::OverShare);
                    }
                }
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
    /// projection resume after its checkpoint. Messages at or below the
    /// checkpoint (a redelivery) were handled before and are only acked.
    async fn apply_messages(&self, messages: Vec<jetstream::Message>) -> anyhow::Result<()> {
        let _batch = self.state.controls.hold().await;
        self.state.progress.started_batch();
        let items = self.fresh_items(&messages);
        let started = std::time::Instant::now();
        // The version in place now runs the whole batch; a swap takes
        // effect at the next one.
        let plugin = self.state.plugin();
        let target = self
            .target
            .clone()
            .at_generation(self.state.controls.generation());
        let last = items.last().map(|i| i.seq);
        let done = self
            .batch(&plugin, &target)
            .commit(items)
            .await
            .context("applying a batch")?;
        if let Some(last) = last {
            self.committed.fetch_max(last, Ordering::AcqRel);
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
        for m in &messages {
            m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok(())
    }

    /// Hands committed notifications on to be pushed; never waits.
    fn hand_over(&self, notifications: Vec<StoredNotification>) {
        if let Some(sink) = &self.notifications {
            // Refused ones stay in the outbox, for the sweep.
            let _ = sink.offer(notifications);
        }
    }

    /// The messages above the committed checkpoint as items, in stream
    /// order, each once.
    fn fresh_items(&self, messages: &[jetstream::Message]) -> Vec<Item> {
        let prefix = self.shared.config.subject_prefix.as_str();
        let committed = self.committed.load(Ordering::Acquire);
        let mut items: Vec<Item> = messages
            .iter()
            .filter_map(|m| {
                let info = m.info().ok()?;
                Some(Item {
                    seq: info.stream_sequence,
                    subject: m
                        .subject
                        .strip_prefix(prefix)
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
        items
    }

    /// Re-applies the dead letters an operator asked to retry, then
    /// releases, in stream order, the parked events of patients who are
    /// clear again (their dead letters resolved or discarded).
    async fn redrive_dead_letters(&self) -> anyhow::Result<()> {
        self.retry_dead_letters().await?;
        loop {
            let limit = self.shared.config.batch_size as i64;
            let parked =
                dead_letters::releasable(&self.shared.pool, &self.target.key, limit).await?;
            if parked.is_empty() {
                return Ok(());
            }
            self.apply_items(parked.into_iter().map(stored_item).collect())
                .await?;
        }
    }

    /// How this projection's batches of `plugin` into `target` are made.
    fn batch<'a>(&'a self, plugin: &'a Plugin, target: &'a Target) -> Batcher<'a> {
        Batcher {
            plugin,
            target,
            pool: &self.shared.pool,
            cache: &self.cache,
            max_attempts: self.shared.config.max_attempts,
            claimed_by: Some(self.claimed_by.load(Ordering::Acquire)).filter(|pid| *pid != 0),
        }
    }

    /// Projects and commits items that are not fresh from the stream.
    async fn apply_items(&self, items: Vec<Item>) -> anyhow::Result<()> {
        let _batch = self.state.controls.hold().await;
        let target = self
            .target
            .clone()
            .at_generation(self.state.controls.generation());
        let done = self
            .batch(&self.state.plugin(), &target)
            .commit(items)
            .await?;
        self.state
            .metrics
            .unknown_codes(&self.target.key, &done.unknown_codes);
        self.hand_over(done.notifications);
        Ok(())
    }

    /// Re-applies the dead letters an operator asked to retry.
    async fn retry_dead_letters(&self) -> anyhow::Result<()> {
        let letters = dead_letters::retrying(&self.shared.pool, &self.target.key).await?;
        if letters.is_empty() {
            return Ok(());
        }
        self.apply_items(letters.into_iter().map(stored_item).collect())
            .await
    }
}

/// A dead letter being retried (with its id) or a released parked event
/// (without), as an item to apply again.
fn stored_item(stored: Stored) -> Item {
    Item {
        seq: stored.stream_seq as u64,
        subject: stored.subject,
        raw: stored.raw,
        origin: stored.id.map_or(Origin::Parked, Origin::DeadLetter),
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
