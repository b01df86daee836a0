//! A batch's view of one plugin's read models: the committed documents it has
//! loaded, with every mutation of the batch so far folded in. `view-get`
//! reads it; the batch's commit writes its changed documents.

use std::collections::{HashMap, HashSet};

use projector_sdk::document::{self, ApplyError};
use projector_sdk::{Mutation, Value};
use sqlx::{AssertSqlSafe, PgPool};

use super::Target;

/// Why an outcome could not be folded in.
#[derive(Debug, thiserror::Error)]
pub enum ApplyFailure {
    /// The plugin's mutations are wrong: the event is dead-lettered.
    #[error("{0}")]
    Rejected(String),
    /// Loading documents failed: the batch is retried.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<ApplyError> for ApplyFailure {
    fn from(e: ApplyError) -> Self {
        Self::Rejected(e.to_string())
    }
}

#[derive(Debug)]
struct Slot {
    doc: Option<Value>,
    dirty: bool,
}

/// The documents a batch has read or changed, by (view, key).
pub struct Overlay {
    pool: PgPool,
    target: Target,
    owned: HashSet<String>,
    docs: HashMap<(String, String), Slot>,
}

/// The changed documents of one view, ready for one statement each.
#[derive(Debug, Default)]
pub struct ViewWrites {
    /// The view's table.
    pub table: String,
    /// Keys and documents to upsert.
    pub upsert_keys: Vec<String>,
    /// Documents, parallel to `upsert_keys`.
    pub upsert_docs: Vec<Value>,
    /// Keys to delete.
    pub delete_keys: Vec<String>,
}

impl Overlay {
    /// An empty overlay over the views a plugin owns, in `target`'s tables.
    pub fn new(pool: PgPool, target: Target, owned: impl IntoIterator<Item = String>) -> Self {
        Self {
            pool,
            target,
            owned: owned.into_iter().collect(),
            docs: HashMap::new(),
        }
    }

    fn check_owned(&self, view: &str) -> Result<(), ApplyFailure> {
        if self.owned.contains(view) {
            Ok(())
        } else {
            Err(ApplyFailure::Rejected(format!(
                "view `{view}` is not one this plugin declared"
            )))
        }
    }

    /// Loads, in one query, the documents of `keys` not loaded yet.
    pub async fn load(
        &mut self,
        view: &str,
        keys: impl IntoIterator<Item = String>,
    ) -> Result<(), ApplyFailure> {
        self.check_owned(view)?;
        let mut missing: Vec<String> = keys
            .into_iter()
            .filter(|k| !self.docs.contains_key(&(view.to_owned(), k.clone())))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, Value)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT key, doc FROM {} WHERE key = ANY($1)",
            self.target.table(view)
        )))
        .bind(&missing)
        .fetch_all(&self.pool)
        .await?;
        let mut found: HashMap<String, Value> = rows.into_iter().collect();
        for key in missing {
            let doc = found.remove(&key);
            self.docs
                .insert((view.to_owned(), key), Slot { doc, dirty: false });
        }
        Ok(())
    }

    /// A document as of now in the batch.
    pub async fn get(&mut self, view: &str, key: &str) -> Result<Option<Value>, ApplyFailure> {
        self.load(view, [key.to_owned()]).await?;
        Ok(self
            .docs
            .get(&(view.to_owned(), key.to_owned()))
            .and_then(|s| s.doc.clone()))
    }

    /// Folds one event's mutations in, all or nothing.
    pub async fn apply(&mut self, mutations: &[Mutation]) -> Result<(), ApplyFailure> {
        let mut wanted: HashMap<&str, Vec<String>> = HashMap::new();
        for m in mutations {
            let (view, key) = m.target();
            wanted.entry(view).or_default().push(key.to_owned());
        }
        for (view, keys) in wanted {
            self.load(view, keys).await?;
        }
        let mut scratch: HashMap<(String, String), Option<Value>> = HashMap::new();
        for m in mutations {
            let (view, key) = m.target();
            let slot_key = (view.to_owned(), key.to_owned());
            let doc = scratch
                .entry(slot_key.clone())
                .or_insert_with(|| self.docs.get(&slot_key).and_then(|s| s.doc.clone()));
            document::apply(doc, m)?;
        }
        for (slot_key, doc) in scratch {
            self.docs.insert(slot_key, Slot { doc, dirty: true });
        }
        Ok(())
    }

    /// The changed documents, grouped by view.
    pub fn into_writes(self) -> Vec<ViewWrites> {
        let mut by_view: HashMap<String, ViewWrites> = HashMap::new();
        let target = &self.target;
        for ((view, key), slot) in self.docs.into_iter().filter(|(_, s)| s.dirty) {
            let writes = by_view.entry(view.clone()).or_insert_with(|| ViewWrites {
                table: target.table(&view),
                ..ViewWrites::default()
            });
            match slot.doc {
                Some(doc) => {
                    writes.upsert_keys.push(key);
                    writes.upsert_docs.push(doc);
                }
                None => writes.delete_keys.push(key),
            }
        }
        by_view.into_values().collect()
    }
}
