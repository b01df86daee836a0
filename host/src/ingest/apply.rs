//! Committing a batch whatever it holds: projected in one transaction, or,
//! when the database refuses its content, split until the event at fault
//! stands alone and is dead-lettered while the rest commits.

use futures::future::BoxFuture;
use projector_events::UnknownCode;
use serde_json::Value;
use sqlx::PgPool;

use super::batch::{self, Item};
use crate::runtime::Plugin;
use crate::store::{CommitError, DocCache, Target};

/// What a batch committed, for the metrics and the push.
#[derive(Debug, Default)]
pub struct Committed {
    /// Events applied, dead-lettered, parked.
    pub counts: [usize; 3],
    /// The notifications stored, to push.
    pub notifications: Vec<Value>,
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
    /// The backend holding the projection's claim, which every commit
    /// checks (`None`: no claim, as in a replay).
    pub claimed_by: Option<i32>,
}

impl Batcher<'_> {
    /// Projects `items` and commits them in one transaction. When the
    /// database refuses the batch for its content, the batch is split in
    /// halves, each committed in turn, until the event at fault stands
    /// alone: that one becomes a dead letter (its patient's later events
    /// park behind it) and every other event commits. Any other failure
    /// is returned: the caller retries the same events.
    pub fn commit(&self, items: Vec<Item>) -> BoxFuture<'_, anyhow::Result<Committed>> {
        Box::pin(async move {
            if items.is_empty() {
                return Ok(Committed::default());
            }
            let batch::Projected {
                mut batch,
                unknown_codes,
            } = batch::project(
                self.plugin,
                self.target,
                self.pool,
                self.cache,
                self.max_attempts,
                items.clone(),
            )
            .await?;
            batch.claimed_by = self.claimed_by;
            let counts = [
                batch.processed.len(),
                batch.dead_letters.len(),
                batch.parked.len(),
            ];
            let reason = match batch.commit(self.pool).await {
                Ok(notifications) => {
                    return Ok(Committed {
                        counts,
                        notifications,
                        unknown_codes,
                    });
                }
                Err(CommitError::Refused(reason)) => reason,
                Err(e) => return Err(e.into()),
            };
            let mut second = items;
            if let [item] = second.as_slice() {
                // The reason can quote payload values: it goes to the database, not the log.
                tracing::warn!(plugin = %self.target.key, seq = item.seq, "the database refused an event's effects; dead-lettered");
                let mut letter = batch::refused(self.target, item.clone(), reason);
                letter.claimed_by = self.claimed_by;
                return Ok(Committed {
                    counts: [0, 1, 0],
                    notifications: letter.commit(self.pool).await?,
                    unknown_codes: Vec::new(),
                });
            }
            let first: Vec<Item> = second.drain(..second.len() / 2).collect();
            let mut done = self.commit(first).await?;
            done.add(self.commit(second).await?);
            Ok(done)
        })
    }
}
