//! A projection's batches overlap: while one batch's transaction runs in
//! PostgreSQL, the next batch is read and projected (the plugin calls,
//! folding, the documents as text) from what the committing one leaves
//! ([`Earlier`]: its documents, the events it applied, the patients it
//! poisoned). Once that transaction is done the next one starts, and its
//! messages are acked.
//!
//! The next batch counts on the one before committing exactly as it was
//! projected. Whenever that commit fails, is split (the database refused
//! an event) or is projected again (a document changed under it), the
//! next batch is thrown away and projected again from what is committed;
//! so is it when a swap or a rebuild's switch went first at the batch
//! boundary. A failure of either makes the projection resume after its
//! checkpoints, as before. So batches still commit one after another, in
//! stream order, each over the state the one before left.

use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream;
use tokio::sync::OwnedMutexGuard;

use super::{Projection, Scope, contiguous};
use crate::ingest::apply::{Committed, Flight, Staged};
use crate::ingest::batch::{Earlier, Item};
use crate::runtime::Plugin;
use crate::store::{CommitError, Done, Target};

/// A batch whose transaction is running, with what finishing it takes.
pub(super) struct InFlight {
    /// Its transaction and what it leaves.
    flight: Flight,
    /// What it was made from.
    read: Read,
    /// Holds the projection at this batch boundary (see
    /// [`crate::ingest::state::Controls::hold`]) until it is done.
    _gate: OwnedMutexGuard<()>,
}

/// A batch as read from the consumer: its messages, the items among them
/// this projection applies, and what it was projected with.
struct Read {
    messages: Vec<jetstream::Message>,
    items: Vec<Item>,
    /// How far the partitions held move (see [`super::Batcher::commit`]).
    through: u64,
    /// The highest stream sequence among the messages.
    seq: u64,
    scope: Scope,
    plugin: Plugin,
    target: Target,
    started: Instant,
}

/// How reading on goes after a batch.
pub(super) enum Next {
    /// The batch is in flight or done.
    Going,
    /// The batch was read with another version's subjects and dropped.
    Stale,
}

/// Waits for the transaction in flight; never ready while none is.
pub(super) async fn committed(in_flight: &mut Option<InFlight>) -> Result<Done, CommitError> {
    match in_flight {
        Some(batch) => batch.flight.committing().0.as_mut().await,
        None => std::future::pending().await,
    }
}

impl Projection {
    /// Reads the next batch from `first` on and projects it while the one
    /// in flight commits; once that one is done, sets this one's
    /// transaction going in its place. `Stale`: a version swapped in
    /// meanwhile reads other subjects than the consumer's (`subjects`), so
    /// the batch is dropped unacked and the consumer must start afresh.
    pub(super) async fn next_batch<S, E>(
        &self,
        first: Result<jetstream::Message, E>,
        messages: &mut S,
        subjects: &[String],
        last_delivery: &mut u64,
        in_flight: &mut Option<InFlight>,
    ) -> anyhow::Result<Next>
    where
        S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut before = in_flight.take();
        // The batch in flight holds the gate; otherwise it is taken now.
        let gate = match before {
            Some(_) => None,
            None => Some(self.state.controls.hold().await),
        };
        let (done, staged) = match before.as_mut() {
            Some(batch) => {
                let (commit, earlier) = batch.flight.committing();
                let stage = self.read_and_stage(first, messages, last_delivery, Some(earlier));
                let (done, staged) = tokio::join!(commit.as_mut(), stage);
                (Some(done), staged)
            }
            None => (
                None,
                self.read_and_stage(first, messages, last_delivery, None)
                    .await,
            ),
        };
        // The batch before is done first, whatever became of this one.
        let landed = match before.zip(done) {
            Some((before, done)) => Some(self.complete(before, done).await?),
            None => None,
        };
        let (mut read, mut staged) = staged?;
        // A swap or a rebuild's switch waiting at the batch boundary goes
        // first.
        let gate = match gate {
            Some(gate) => gate,
            None => self.state.controls.hold().await,
        };
        if self.state.plugin().info.subjects != subjects {
            // Events of the new subjects between the checkpoints and here
            // never reached this consumer.
            return Ok(Next::Stale);
        }
        match landed {
            Some(Some(version)) if self.still_current(&read) => {
                if let Some(staged) = &mut staged {
                    staged.resolve(&version);
                }
            }
            // Projected over what the batch before did not commit as it
            // was, or with what a swap replaced: again, from what is
            // committed now.
            Some(_) => {
                read.plugin = self.state.plugin();
                read.target = self.target_now();
                staged = self
                    .batch(&read.plugin, &read.target, &read.scope)
                    .stage(read.items.clone(), read.through, None)
                    .await
                    .context("applying a batch")?;
            }
            None => {}
        }
        let Some(staged) = staged else {
            // Nothing to commit: the messages were handled before.
            self.finish(Committed::default(), &read).await?;
            return Ok(Next::Going);
        };
        // The next batch is read as if this one had committed; should it
        // not, the projection resumes after its checkpoints.
        self.committed_through(read.seq);
        match staged.launch(&self.shared.pool) {
            Ok(flight) => {
                *in_flight = Some(InFlight {
                    flight,
                    read,
                    _gate: gate,
                });
                Ok(Next::Going)
            }
            // Its documents cannot be stored: the careful way, now.
            Err(refused) => {
                let committed = self
                    .batch(&read.plugin, &read.target, &read.scope)
                    .recover(&read.items, read.through, refused)
                    .await
                    .context("applying a batch")?;
                self.finish(committed, &read).await?;
                Ok(Next::Going)
            }
        }
    }

    /// Whether the version and generation a batch was projected with are
    /// still the projection's.
    fn still_current(&self, read: &Read) -> bool {
        std::sync::Arc::ptr_eq(&read.plugin.info, &self.state.plugin().info)
            && read.target.generation == self.state.controls.generation()
    }

    /// Gathers a batch from `first` on and projects it after what
    /// `earlier` leaves.
    async fn read_and_stage<S, E>(
        &self,
        first: Result<jetstream::Message, E>,
        messages: &mut S,
        last_delivery: &mut u64,
        earlier: Option<&Earlier>,
    ) -> anyhow::Result<(Read, Option<Staged>)>
    where
        S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        let messages = self.gather(first, messages).await?;
        contiguous(
            messages
                .iter()
                .filter_map(|m| Some(m.info().ok()?.consumer_sequence)),
            last_delivery,
        )?;
        self.state.progress.started_batch();
        let (items, scope) = self.fresh_items(&messages);
        let seq = messages
            .iter()
            .filter_map(|m| m.info().ok())
            .map(|info| info.stream_sequence)
            .max()
            .unwrap_or(0);
        // Read up to `seq`: the partitions held move there, unless every
        // one is there already.
        let through = if scope.committed.values().all(|c| *c >= seq) {
            0
        } else {
            seq
        };
        // The version in place now runs the whole batch; a swap takes
        // effect at the next one.
        let read = Read {
            messages,
            items,
            through,
            seq,
            scope,
            plugin: self.state.plugin(),
            target: self.target_now(),
            started: Instant::now(),
        };
        let staged = self
            .batch(&read.plugin, &read.target, &read.scope)
            .stage(read.items.clone(), read.through, earlier)
            .await
            .context("applying a batch")?;
        // Where a batch's time goes: projecting it here, committing it
        // while the next one projects.
        tracing::debug!(plugin = %self.target.key, events = read.items.len(), projected_in = ?read.started.elapsed(), "batch projected");
        Ok((read, staged))
    }

    /// Finishes a batch whose transaction is done (`done`): committed as
    /// projected, or, when it failed for its content or a changed
    /// document, the careful way. Returns the version it committed at when
    /// it committed as projected (what the next batch counted on).
    pub(super) async fn complete(
        &self,
        batch: InFlight,
        done: Result<Done, CommitError>,
    ) -> anyhow::Result<Option<String>> {
        let read = batch.read;
        let (committed, version) = self
            .batch(&read.plugin, &read.target, &read.scope)
            .land(batch.flight, done, &read.items, read.through)
            .await
            .context("applying a batch")?;
        self.finish(committed, &read).await?;
        Ok(version)
    }

    /// Waits for the batch in flight, if any, and finishes it.
    pub(super) async fn settle(&self, in_flight: &mut Option<InFlight>) -> anyhow::Result<()> {
        if let Some(mut batch) = in_flight.take() {
            let done = batch.flight.committing().0.as_mut().await;
            self.complete(batch, done).await?;
        }
        Ok(())
    }

    /// After a batch committed: counts it, hands its notifications on to
    /// be pushed, and acks its messages.
    async fn finish(&self, committed: Committed, read: &Read) -> anyhow::Result<()> {
        if !read.items.is_empty() {
            let metrics = &self.state.metrics;
            metrics.batch(&self.target.key, committed.counts, read.started.elapsed());
            metrics.cached(&self.target.key, self.cache.len());
            metrics.unknown_codes(&self.target.key, &committed.unknown_codes);
            metrics.conflicts(&self.target.key, committed.conflicts);
            self.state.progress.committed_batch();
        }
        tracing::debug!(plugin = %self.target.key, messages = read.messages.len(), took = ?read.started.elapsed(), "batch committed");
        if self.shared.config.crash_after_commit {
            tracing::error!(
                plugin = %self.target.key,
                "fault injection: aborting between commit and ack"
            );
            std::process::abort();
        }
        self.hand_over(committed.notifications);
        // One ack for the batch: the consumer acknowledges every delivery
        // up to the last (`AckPolicy::All`), and the batch is in delivery
        // order.
        if let Some(last) = read.messages.last() {
            last.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok(())
    }
}
