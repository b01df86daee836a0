//! Committing a batch whatever it holds: projected in one transaction, or,
//! when the database refuses its content, split until the event at fault
//! stands alone and is dead-lettered while the rest commits.

use futures::FutureExt;
use futures::future::BoxFuture;
use projector_events::UnknownCode;
use sqlx::PgPool;

use super::batch::{self, Earlier, Item};
use crate::runtime::Plugin;
use crate::store::{
    Batch, CommitError, DocCache, Done, Fence, Prepared, StoredNotification, Target,
};

/// What a batch committed, for the metrics and the push.
#[derive(Debug, Default)]
pub struct Committed {
    /// Events applied, dead-lettered, parked.
    pub counts: [usize; 3],
    /// The notifications stored, to push.
    pub notifications: Vec<StoredNotification>,
    /// Codes outside their extensible value set in the events applied.
    pub unknown_codes: Vec<UnknownCode>,
    /// Times it was projected again because a document it read changed
    /// before it committed.
    pub conflicts: usize,
}

impl Committed {
    fn add(&mut self, other: Committed) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.notifications.extend(other.notifications);
        self.unknown_codes.extend(other.unknown_codes);
        self.conflicts += other.conflicts;
    }
}

/// Everything a batch of one plugin is made with: the version that runs
/// it, where it lands, the database, the documents kept between batches,
/// and how often a trapping call is tried.
pub struct Batcher<'a> {
    /// The plugin version that runs the whole batch.
    pub plugin: &'a Plugin,
    /// Its live views or a rebuild's.
    pub target: &'a Target,
    /// The database.
    pub pool: &'a PgPool,
    /// Documents committed by earlier batches.
    pub cache: &'a DocCache,
    /// Tries of an event whose call traps.
    pub max_attempts: u32,
    /// The partitions the projection holds, which every commit checks and
    /// moves (`None`: no claim, as in a replay).
    pub fence: Option<Fence>,
}

/// A batch projected and ready for its transaction, which may run while
/// the next batch projects from what this one leaves (see [`Earlier`]).
pub struct Staged {
    /// The transaction to run; an error when the documents cannot be
    /// stored (one over its size).
    prepared: Result<Prepared, CommitError>,
    /// Events applied, dead-lettered, parked.
    counts: [usize; 3],
    /// Codes outside their extensible value set in the events applied.
    unknown_codes: Vec<UnknownCode>,
    /// What it leaves for the next batch.
    earlier: Earlier,
}

impl Staged {
    /// The batch it was staged behind committed at `version`: what it took
    /// from that one's documents was that version.
    pub fn resolve(&mut self, version: &str) {
        if let Ok(prepared) = &mut self.prepared {
            prepared.resolve(version);
        }
    }

    /// Sets its transaction going; `Err` with why its documents cannot be
    /// stored, when they cannot ([`Batcher::recover`] commits it then).
    pub fn launch(self, pool: &PgPool) -> Result<Flight, CommitError> {
        let prepared = self.prepared?;
        let pool = pool.clone();
        Ok(Flight {
            commit: async move { prepared.commit(&pool).await }.boxed(),
            earlier: self.earlier,
            counts: self.counts,
            unknown_codes: self.unknown_codes,
        })
    }
}

/// A staged batch whose transaction is running, while the next batch
/// projects from what it leaves.
pub struct Flight {
    /// Its transaction.
    commit: BoxFuture<'static, Result<Done, CommitError>>,
    /// What it leaves for the next batch.
    earlier: Earlier,
    /// Events applied, dead-lettered, parked, as staged.
    counts: [usize; 3],
    /// Codes outside their extensible value set, as staged.
    unknown_codes: Vec<UnknownCode>,
}

impl Flight {
    /// Its transaction, to wait for, and what it leaves, to project the
    /// next batch from meanwhile.
    pub fn committing(&mut self) -> (&mut BoxFuture<'static, Result<Done, CommitError>>, &Earlier) {
        (&mut self.commit, &self.earlier)
    }
}

impl Batcher<'_> {
    /// Projects `items` (after what `earlier` leaves, while it commits) and
    /// prepares their transaction, moving the partitions held up to
    /// `through` as [`Batcher::commit`] does; `None` when there is nothing
    /// to commit.
    pub async fn stage(
        &self,
        items: Vec<Item>,
        through: u64,
        earlier: Option<&Earlier>,
    ) -> anyhow::Result<Option<Staged>> {
        let (mut batch, unknown_codes) = if items.is_empty() {
            if through == 0 || self.fence.is_none() {
                return Ok(None);
            }
            // Only other hosts' events: the checkpoints move alone.
            (Batch::new(self.target), Vec::new())
        } else {
            let projected = batch::project(
                self.plugin,
                self.target,
                self.pool,
                self.cache,
                self.max_attempts,
                items,
                earlier,
            )
            .await?;
            (projected.batch, projected.unknown_codes)
        };
        let counts = self.seal(&mut batch, through);
        let mut earlier = Earlier::of(&batch);
        let prepared = batch.prepare().map(|mut prepared| {
            earlier.ahead = prepared.ahead();
            prepared
        });
        Ok(Some(Staged {
            prepared,
            counts,
            unknown_codes,
            earlier,
        }))
    }

    /// Finishes `flight` once its transaction ended with `done`. Committed
    /// as staged, what it wrote goes to the cache and its version comes
    /// back: the one a batch staged behind it counted on. Otherwise `items`
    /// and `through`, what it was staged from, commit the careful way (see
    /// [`Batcher::recover`]) and no version comes back: a batch staged
    /// behind it must be staged again.
    pub async fn land(
        &self,
        flight: Flight,
        done: Result<Done, CommitError>,
        items: &[Item],
        through: u64,
    ) -> anyhow::Result<(Committed, Option<String>)> {
        match done {
            Ok(done) => {
                self.cache.keep(flight.earlier.ahead.rest(&done.version));
                let committed = Committed {
                    counts: flight.counts,
                    notifications: done.notifications,
                    unknown_codes: flight.unknown_codes,
                    conflicts: 0,
                };
                Ok((committed, Some(done.version)))
            }
            Err(e) => {
                let conflict = usize::from(matches!(e, CommitError::Changed { .. }));
                let mut committed = self.recover(items, through, e).await?;
                committed.conflicts += conflict;
                Ok((committed, None))
            }
        }
    }

    /// Makes a projected batch move the partitions held up to `through`
    /// and checks them; returns what it applied, dead-lettered and parked.
    fn seal(&self, batch: &mut Batch, through: u64) -> [usize; 3] {
        batch.checkpoint = batch.checkpoint.max(through);
        batch.fence = self.fence.clone();
        [
            batch.processed.len(),
            batch.dead_letters.len(),
            batch.parked.len(),
        ]
    }

    /// Commits `items` the careful way after their staged transaction
    /// failed with `error`: refused for their content (split until the
    /// event at fault stands alone) or a document changed under them
    /// (projected again); any other failure is returned.
    pub async fn recover(
        &self,
        items: &[Item],
        through: u64,
        error: CommitError,
    ) -> anyhow::Result<Committed> {
        match error {
            CommitError::Refused(_) | CommitError::Changed { .. } => {
                self.commit(items.to_vec(), through).await
            }
            e => Err(e.into()),
        }
    }

    /// Projects `items` and commits them in one transaction. When the
    /// database refuses the batch for its content, the batch is split in
    /// halves, each committed in turn, until the event at fault stands
    /// alone: that one becomes a dead letter (its patient's later events
    /// park behind it) and every other event commits. Any other failure
    /// is returned: the caller retries the same events.
    ///
    /// `through`: the last stream sequence read for the batch, which may lie
    /// beyond its items (messages of partitions other hosts own): the
    /// partitions held are moved up to it too.
    pub fn commit(
        &self,
        items: Vec<Item>,
        through: u64,
    ) -> BoxFuture<'_, anyhow::Result<Committed>> {
        Box::pin(async move {
            if items.is_empty() {
                if through > 0 && self.fence.is_some() {
                    // Only other hosts' events: the checkpoints move alone.
                    let mut batch = Batch::new(self.target);
                    batch.checkpoint = through;
                    batch.fence = self.fence.clone();
                    batch.commit(self.pool).await?;
                }
                return Ok(Committed::default());
            }
            let reason = match self.project_and_commit(&items, through).await? {
                Ok(committed) => return Ok(committed),
                Err(reason) => reason,
            };
            let mut second = items;
            if let [item] = second.as_slice() {
                // The reason can quote payload values: it goes to the database, not the log.
                tracing::warn!(plugin = %self.target.key, seq = item.seq, "the database refused an event's effects; dead-lettered");
                let mut letter = batch::refused(self.target, item.clone(), reason);
                letter.checkpoint = letter.checkpoint.max(through);
                letter.fence = self.fence.clone();
                return Ok(Committed {
                    counts: [0, 1, 0],
                    notifications: letter.commit(self.pool).await?,
                    ..Committed::default()
                });
            }
            // The first half moves the checkpoints only as far as its own
            // events, or the second would find them past its first.
            let first: Vec<Item> = second.drain(..second.len() / 2).collect();
            let mut done = self.commit(first, 0).await?;
            done.add(self.commit(second, through).await?);
            Ok(done)
        })
    }

    /// Projects `items` and commits them, projecting them again from what
    /// is there now while another writer changes a document under the
    /// batch (a few times; then the projection resumes after its
    /// checkpoints). `Ok(Err(reason))`: the database refused the content.
    async fn project_and_commit(
        &self,
        items: &[Item],
        through: u64,
    ) -> anyhow::Result<Result<Committed, String>> {
        let mut tries = 1;
        loop {
            let started = std::time::Instant::now();
            let batch::Projected {
                mut batch,
                unknown_codes,
            } = batch::project(
                self.plugin,
                self.target,
                self.pool,
                self.cache,
                self.max_attempts,
                items.to_vec(),
                None,
            )
            .await?;
            let counts = self.seal(&mut batch, through);
            let projected_in = started.elapsed();
            let committed = batch.commit(self.pool).await;
            // Where a batch's time goes: the plugin calls and folding, or
            // the transaction.
            tracing::debug!(plugin = %self.target.key, events = items.len(), ?projected_in, committed_in = ?started.elapsed() - projected_in, "batch projected and committed");
            match committed {
                Ok(notifications) => {
                    return Ok(Ok(Committed {
                        counts,
                        notifications,
                        unknown_codes,
                        conflicts: tries as usize - 1,
                    }));
                }
                Err(CommitError::Refused(reason)) => return Ok(Err(reason)),
                Err(CommitError::Changed { view }) if tries < CHANGED_TRIES => {
                    tracing::debug!(plugin = %self.target.key, view, tries, "a document changed under the batch; projecting it again");
                    tries += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// How many times a batch is projected while documents change under it
/// before the projection resumes after its checkpoints instead.
const CHANGED_TRIES: u32 = 5;
