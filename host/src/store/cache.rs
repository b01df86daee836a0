//! Documents a projection committed, kept in memory between its batches so
//! the next batch need not fetch and parse them again.
//!
//! Every entry carries the row version it was read or written as (its
//! `xmin`, the id of the transaction that wrote it). A batch still asks the
//! database for the versions of the documents it touches, and uses a kept
//! document only when the version matches; anything else (another writer, a
//! rebuild that replaced the table, a commit that failed) is fetched again.
//! So the cache can only save work, never serve a stale document.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::sync::Locked;
use serde_json::Value;

/// A document as committed, with the row version it was committed as.
#[derive(Debug)]
pub struct Kept {
    /// The row's `xmin`, as text.
    pub version: String,
    /// The document.
    pub doc: Value,
}

/// A projection's kept documents, by (view, key); shared by its batches.
/// Bounded: when the newer half is full it becomes the older half and the
/// older half is dropped, so what was used recently stays.
#[derive(Clone, Default)]
pub struct DocCache {
    inner: Arc<Mutex<Halves>>,
}

#[derive(Default)]
struct Halves {
    half: usize,
    newer: HashMap<(String, String), Kept>,
    older: HashMap<(String, String), Kept>,
}

impl DocCache {
    /// A cache that keeps at most `capacity` documents (0: keeps none).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Halves {
                half: capacity / 2,
                ..Halves::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Halves> {
        self.inner.locked()
    }

    /// How many documents are kept now, for the metrics.
    pub fn len(&self) -> usize {
        let halves = self.lock();
        halves.newer.len() + halves.older.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the kept documents of `keys` in `view` out of the cache: the
    /// batch owns them now, and gives them back when it commits.
    pub fn take(&self, view: &str, keys: &[String]) -> HashMap<String, Kept> {
        let mut halves = self.lock();
        let mut found = HashMap::new();
        for key in keys {
            let id = (view.to_owned(), key.clone());
            if let Some(kept) = halves
                .newer
                .remove(&id)
                .or_else(|| halves.older.remove(&id))
            {
                found.insert(key.clone(), kept);
            }
        }
        found
    }

    /// Keeps committed documents: `(view, key, version, doc)`.
    pub fn keep(&self, docs: impl IntoIterator<Item = (String, String, String, Value)>) {
        let mut halves = self.lock();
        if halves.half == 0 {
            return;
        }
        for (view, key, version, doc) in docs {
            if halves.newer.len() >= halves.half {
                halves.older = std::mem::take(&mut halves.newer);
            }
            let id = (view, key);
            halves.older.remove(&id);
            halves.newer.insert(id, Kept { version, doc });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(key: &str, n: i64) -> (String, String, String, Value) {
        ("v".into(), key.into(), n.to_string(), json!({ "n": n }))
    }

    #[test]
    fn a_taken_document_is_the_batchs_until_kept_again() {
        let cache = DocCache::new(10);
        cache.keep([entry("a", 1), entry("b", 2)]);
        let taken = cache.take("v", &["a".into(), "c".into()]);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken["a"].version, "1");
        assert_eq!(taken["a"].doc, json!({ "n": 1 }));
        assert!(cache.take("v", &["a".into()]).is_empty(), "taken once");
        assert!(cache.take("w", &["b".into()]).is_empty(), "views apart");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn it_keeps_at_most_its_capacity_and_the_latest_documents() {
        let cache = DocCache::new(4);
        cache.keep((0..10).map(|n| entry(&format!("k{n}"), n)));
        assert!(cache.len() <= 4, "{} kept", cache.len());
        assert_eq!(cache.take("v", &["k9".into()])["k9"].version, "9");
        assert!(cache.take("v", &["k0".into()]).is_empty());
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = DocCache::new(0);
        cache.keep([entry("a", 1)]);
        assert_eq!(cache.len(), 0);
    }
}
