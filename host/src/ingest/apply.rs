//! Committing a batch whatever it holds: projected in one transaction, or,
//! when the database refuses its content, split until the event at fault
//! stands alone and is dead-lettered while the rest commits.

use futures::future::BoxFuture;
use projector_events::UnknownCode;
use sqlx::PgPool;

use super::batch::{self, Item};
use crate::runtime::Plugin;
use crate::store::{Batch, CommitError, DocCache, Fence, StoredNotification, Target};

/// What a batch committed, for the metrics and the push.
#[derive(Debug, Default)]
pub struct Committed {
    /// Events applied, dead-lettered, parked.
    pub counts: [usize; 3],
    /// The notifications stored, to push.
    pub notifications: Vec<StoredNotification>,
    /// Codes outside their extensible value set in the events applied.
    pub unknown_codes: Vec<UnknownCode>,
}

impl Committed {
    fn add(&mut self, other: Committed) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.notifications.extend(other.notifications);
        self.unknown_codes.extend(other.unknown_codes);
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

impl Batcher<'_> {
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
                    unknown_codes: Vec::new(),
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
            )
            .await?;
            batch.checkpoint = batch.checkpoint.max(through);
            batch.fence = self.fence.clone();
            let counts = [
                batch.processed.len(),
                batch.dead_letters.len(),
                batch.parked.len(),
            ];
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
