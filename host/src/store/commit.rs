//! One batch, one transaction: the changed documents, the events now applied,
//! dead letters, the notification outbox, audit entries and the checkpoint
//! commit together or not at all. Each kind is one statement (UNNEST arrays),
//! so round trips grow with the tables touched, not the events.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use super::ahead::Ahead;
use super::audit::{self, NewAudit};
use super::checkpoints::{self, Advance, Moved};
use super::dead_letters::{self, NewDeadLetter, NewParked};
use super::notifications::{self, NewNotification, StoredNotification};
use super::overlay::{Finished, Overlay, ViewWrites};
use super::{Target, processed, views};

/// The largest document a view holds, serialised, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
/// The most document bytes one batch writes; a larger batch is split.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// Why a batch did not commit; each kind calls for its own remedy.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// What the batch holds cannot be stored: PostgreSQL refused it for its
    /// content (SQLSTATE classes 22, data exceptions, and 54, limits), or a
    /// document is over its size. One of its events is at fault; the same
    /// batch would fail again.
    #[error("the batch's content cannot be stored: {0}")]
    Refused(String),
    /// A partition the batch moves is no longer held (see
    /// [`super::claim`]): another host may be projecting it; this one must
    /// claim it again first.
    #[error("the projection's claim on its partitions is lost")]
    Unclaimed,
    /// The live views were rebuilt by another version since this
    /// projection's started (another host switched them): it must not
    /// write them with what it runs.
    #[error(
        "the live views are at generation {recorded}, rebuilt since this projection's {running}: it must run the version they were rebuilt with"
    )]
    Superseded {
        /// The live views' generation.
        recorded: i32,
        /// The projection's.
        running: i32,
    },
    /// A document the batch writes changed since the batch read it (another
    /// host wrote it: a document that is not one patient's, as a count over
    /// all patients, is written by the owners of every partition): the
    /// batch is projected again from what is there now.
    #[error("a document of view `{view}` changed since the batch read it")]
    Changed {
        /// The view.
        view: String,
    },
    /// A partition's checkpoint is already at or past the batch's first
    /// event of it: another commit got there first, and the projection must
    /// resume after it rather than apply events out of order.
    #[error(
        "partition {partition}'s checkpoint is at {checkpoint}, at or past the batch's first event of it {first}"
    )]
    Behind {
        /// The partition.
        partition: u32,
        /// Its committed checkpoint.
        checkpoint: u64,
        /// The batch's first stream sequence.
        first: u64,
    },
    /// The database failed (connection, serialization, a timeout): the
    /// same batch can succeed later.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for CommitError {
    fn from(e: sqlx::Error) -> Self {
        let refused = matches!(&e, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("54")));
        if refused {
            Self::Refused(e.to_string())
        } else {
            Self::Database(e)
        }
    }
}

/// Everything one batch of one plugin commits.
pub struct Batch {
    /// Where it lands: the name its bookkeeping rows go by, and the
    /// generation of its processed events.
    pub target: Target,
    /// The batch's documents.
    pub views: Option<Overlay>,
    /// eventIds applied.
    pub processed: Vec<String>,
    /// Events refused.
    pub dead_letters: Vec<NewDeadLetter>,
    /// Dead letters re-driven successfully.
    pub resolved: Vec<i64>,
    /// Events parked behind a poisoned patient's dead letter.
    pub parked: Vec<NewParked>,
    /// Parked events (by stream sequence) applied or dead-lettered now.
    pub released: Vec<u64>,
    /// Notification outbox entries.
    pub notifications: Vec<NewNotification>,
    /// Audit-log entries.
    pub audits: Vec<NewAudit>,
    /// Highest stream sequence covered by the batch: the partitions it
    /// moves have been handled up to here.
    pub checkpoint: u64,
    /// What the batch did in each partition of its events.
    pub partitions: BTreeMap<u32, Moved>,
    /// The partitions the projection holds, checked in the transaction and
    /// all moved to [`Batch::checkpoint`]; for live views, the generation
    /// is checked too (`None`: unclaimed use, as a replay's).
    pub fence: Option<Fence>,
}

/// The partitions a projection holds, and the backend holding their locks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fence {
    /// The backend holding the locks (see [`super::claim::Lease`]).
    pub pid: i32,
    /// The partitions.
    pub partitions: Vec<u32>,
}

impl Batch {
    /// An empty batch for `target`.
    pub fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            views: None,
            processed: Vec::new(),
            dead_letters: Vec::new(),
            resolved: Vec::new(),
            parked: Vec::new(),
            released: Vec::new(),
            notifications: Vec::new(),
            audits: Vec::new(),
            checkpoint: 0,
            partitions: BTreeMap::new(),
            fence: None,
        }
    }

    /// What the batch did in `partition`, to count in.
    pub fn partition(&mut self, partition: u32) -> &mut Moved {
        self.partitions.entry(partition).or_insert_with(|| Moved {
            partition,
            ..Moved::default()
        })
    }

    /// Commits the batch in one transaction; returns the notifications it
    /// stored, to push once committed.
    pub async fn commit(self, pool: &PgPool) -> Result<Vec<StoredNotification>, CommitError> {
        Ok(self.prepare()?.commit(pool).await?.notifications)
    }

    /// Ends the batch's documents and writes the changed ones out as text,
    /// each checked for size: what is left to do is the transaction.
    pub fn prepare(mut self) -> Result<Prepared, CommitError> {
        let finished = self.views.take().map(Overlay::finish);
        let serialised = match &finished {
            Some(f) => serialise(&f.writes)?,
            None => Vec::new(),
        };
        Ok(Prepared {
            batch: self,
            finished,
            serialised,
        })
    }
}

/// A batch ready for its transaction (see [`Batch::prepare`]).
pub struct Prepared {
    /// The batch, its documents taken out.
    batch: Batch,
    /// Its documents: those to write and those it left as they were.
    finished: Option<Finished>,
    /// The documents to write as text, parallel to `finished`'s writes.
    serialised: Vec<Vec<String>>,
}

/// What a transaction committed.
#[derive(Debug)]
pub struct Done {
    /// The row version every document it wrote is committed as (its
    /// transaction's id).
    pub version: String,
    /// The notifications it stored, to push.
    pub notifications: Vec<StoredNotification>,
}

impl Prepared {
    /// Hands the documents the batch writes to the batch after it, which
    /// projects while this one commits (see [`Ahead`]); what that one does
    /// not take goes to the cache through [`Ahead::rest`] once this commit
    /// is done.
    pub fn ahead(&mut self) -> Ahead {
        let mut docs = std::collections::HashMap::new();
        for w in self.finished.iter_mut().flat_map(|f| &mut f.writes) {
            let upserts = std::mem::take(&mut w.upsert_docs);
            for (key, doc) in w.upsert_keys.iter().zip(upserts) {
                docs.insert((w.view.clone(), key.clone()), Some(doc));
            }
            for key in &w.delete_keys {
                docs.insert((w.view.clone(), key.clone()), None);
            }
        }
        Ahead::new(docs)
    }

    /// The batch before this one committed at `version`: the documents
    /// this one took from its [`Ahead`] were that version.
    pub fn resolve(&mut self, version: &str) {
        if let Some(finished) = &mut self.finished {
            finished.resolve_ahead(version);
        }
    }

    /// Keeps the documents the batch read and left as they were: they are
    /// as committed whatever becomes of this batch.
    fn keep_unchanged(&mut self) {
        if let Some(finished) = &mut self.finished {
            finished.cache.keep(std::mem::take(&mut finished.unchanged));
        }
    }

    /// Runs the batch's transaction: the lease and generation checks, the
    /// documents, the bookkeeping rows, the checkpoints.
    pub async fn commit(mut self, pool: &PgPool) -> Result<Done, CommitError> {
        self.keep_unchanged();
        let batch = self.batch;
        let key = &batch.target.key;
        let mut tx = pool.begin().await?;
        if let Some(fence) = &batch.fence {
            let partitions: Vec<i32> = fence.partitions.iter().map(|p| *p as i32).collect();
            if !super::claim::held(&mut tx, key, fence.pid, &partitions).await? {
                return Err(CommitError::Unclaimed);
            }
            if batch.target.is_live() {
                let running = batch.target.generation;
                let recorded = views::live_generation(&mut tx, &batch.target.plugin).await?;
                if let Some(recorded) = recorded.filter(|g| *g != running) {
                    return Err(CommitError::Superseded { recorded, running });
                }
            }
        }
        for (writes, docs) in self
            .finished
            .iter()
            .flat_map(|f| &f.writes)
            .zip(&self.serialised)
        {
            write_view(&mut tx, writes, docs).await?;
        }
        processed::insert(&mut tx, &batch.target.processed_key(), &batch.processed).await?;
        dead_letters::insert(&mut tx, key, &batch.dead_letters).await?;
        dead_letters::resolve(&mut tx, &batch.resolved).await?;
        dead_letters::park(&mut tx, key, &batch.parked).await?;
        dead_letters::release(&mut tx, key, &batch.released).await?;
        let notifications = notifications::insert(&mut tx, batch.notifications).await?;
        audit::insert(&mut *tx, &batch.audits).await?;
        // No event is applied out of stream order, whatever redelivered it;
        // every partition held has been read up to the batch's end.
        let mut partitions = batch.partitions;
        for held in batch.fence.iter().flat_map(|f| &f.partitions) {
            partitions.entry(*held).or_insert_with(|| Moved {
                partition: *held,
                ..Moved::default()
            });
        }
        let advance = Advance {
            key,
            to: batch.checkpoint,
            partitions: partitions.into_values().collect(),
        };
        let version = match checkpoints::advance(&mut tx, &advance).await? {
            Ok(version) => version,
            Err(behind) => {
                return Err(CommitError::Behind {
                    partition: behind.partition,
                    checkpoint: behind.checkpoint,
                    first: behind.first,
                });
            }
        };
        tx.commit().await?;
        // Documents handed to the next batch ([`Prepared::ahead`]) are no
        // longer here: they reach the cache through it.
        if let Some(finished) = self.finished {
            let written = finished.writes.into_iter().flat_map(|w| {
                let view = w.view;
                let version = &version;
                w.upsert_keys
                    .into_iter()
                    .zip(w.upsert_docs)
                    .map(move |(key, doc)| (view.clone(), key, version.clone(), doc))
            });
            finished.cache.keep(written);
        }
        Ok(Done {
            version,
            notifications,
        })
    }
}

/// The changed documents of each view as JSON text, each within
/// [`MAX_DOCUMENT_BYTES`] and all within [`MAX_BATCH_BYTES`].
fn serialise(writes: &[ViewWrites]) -> Result<Vec<Vec<String>>, CommitError> {
    let mut total = 0;
    writes
        .iter()
        .map(|w| {
            w.upsert_docs
                .iter()
                .map(|doc| {
                    let text = projector_contract::document::text(doc);
                    if text.len() > MAX_DOCUMENT_BYTES {
                        return Err(CommitError::Refused(format!(
                            "a document of view `{}` would be {} bytes, over the limit of {MAX_DOCUMENT_BYTES}",
                            w.view,
                            text.len()
                        )));
                    }
                    total += text.len();
                    if total > MAX_BATCH_BYTES {
                        return Err(CommitError::Refused(format!(
                            "the batch's documents are over {MAX_BATCH_BYTES} bytes"
                        )));
                    }
                    Ok(text)
                })
                .collect()
        })
        .collect()
}

/// Writes one view's changed documents, each only over the row version
/// the batch read it as (or where there was none): a document another
/// writer changed meanwhile makes it fail with [`CommitError::Changed`].
async fn write_view(
    tx: &mut Transaction<'_, Postgres>,
    writes: &ViewWrites,
    docs: &[String],
) -> Result<(), CommitError> {
    let table = &writes.table;
    let read = Value::Object(writes.read_versions.clone());
    let changed = || CommitError::Changed {
        view: writes.view.clone(),
    };
    if !writes.upsert_keys.is_empty() {
        // A row that is not at its read version (or is there when there
        // was none) is left alone, and the count comes out short.
        let written = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} AS t (key, doc, updated_at)
             SELECT k, d::jsonb, now() FROM UNNEST($1::text[], $2::text[]) AS u(k, d)
             ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, updated_at = now()
             WHERE t.xmin::text = ($3::jsonb ->> t.key)"
        )))
        .bind(&writes.upsert_keys)
        .bind(docs)
        .bind(&read)
        .execute(&mut **tx)
        .await?;
        if written.rows_affected() != writes.upsert_keys.len() as u64 {
            return Err(changed());
        }
    }
    if !writes.delete_keys.is_empty() {
        let deleted: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE key = ANY($1) RETURNING key, xmin::text"
        )))
        .bind(&writes.delete_keys)
        .fetch_all(&mut **tx)
        .await?;
        let as_read = writes
            .delete_keys
            .iter()
            .filter(|k| writes.read_versions.contains_key(*k))
            .count();
        let same = deleted.len() == as_read
            && deleted.iter().all(|(key, version)| {
                writes.read_versions.get(key).and_then(Value::as_str) == Some(version)
            });
        if !same {
            return Err(changed());
        }
    }
    Ok(())
}
