//! The documents a batch leaves while it is still committing, for the next
//! batch of its projection to start from.
//!
//! A projection projects its next batch while the one before commits (see
//! [`crate::ingest`]): the next batch must see the documents as that commit
//! leaves them, not as the database still has them. Those it changed are
//! taken from here rather than loaded; their row version is not known until
//! that commit is done, so they carry [`AHEAD_VERSION`], which the next
//! batch replaces with the commit's version before it commits in turn
//! ([`super::Prepared::resolve`]). Should that commit fail, the next batch
//! is thrown away with what it took from here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::sync::Locked;

/// The row version a document taken from an [`Ahead`] is read as until the
/// commit that writes it is done: never a real one (those are transaction
/// ids, digits).
pub const AHEAD_VERSION: &str = "ahead";

/// Documents by (view, key); `None`: deleted.
type Docs = HashMap<(String, String), Option<Value>>;

/// The documents a committing batch wrote (`None`: deleted), by (view,
/// key); shared by the batch after it, which takes what it reads, and the
/// projection, which keeps what is left once the commit is done.
#[derive(Clone, Default)]
pub struct Ahead {
    docs: Arc<Mutex<Docs>>,
}

impl Ahead {
    /// The documents a batch writes.
    pub fn new(docs: Docs) -> Self {
        Self {
            docs: Arc::new(Mutex::new(docs)),
        }
    }

    /// Takes the documents of `keys` in `view` that the committing batch
    /// wrote: the taker owns them now.
    pub fn take(&self, view: &str, keys: &[String]) -> HashMap<String, Option<Value>> {
        let mut docs = self.docs.locked();
        keys.iter()
            .filter_map(|key| {
                let doc = docs.remove(&(view.to_owned(), key.clone()))?;
                Some((key.clone(), doc))
            })
            .collect()
    }

    /// What no later batch took, as committed at `version`: `(view, key,
    /// version, doc)`, to keep in the cache. Deleted documents are left out.
    pub fn rest(&self, version: &str) -> Vec<(String, String, String, Value)> {
        std::mem::take(&mut *self.docs.locked())
            .into_iter()
            .filter_map(|((view, key), doc)| Some((view, key, version.to_owned(), doc?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_document_is_taken_once_and_the_rest_is_kept_at_the_commits_version() {
        let ahead = Ahead::new(HashMap::from([
            (("v".into(), "a".into()), Some(json!({ "n": 1 }))),
            (("v".into(), "b".into()), None),
            (("v".into(), "c".into()), Some(json!({ "n": 3 }))),
        ]));
        let taken = ahead.take("v", &["a".into(), "b".into(), "x".into()]);
        assert_eq!(taken.len(), 2);
        assert_eq!(taken["a"], Some(json!({ "n": 1 })));
        assert_eq!(taken["b"], None, "deleted, and known to be");
        assert!(ahead.take("v", &["a".into()]).is_empty(), "taken once");
        assert!(ahead.take("w", &["c".into()]).is_empty(), "views apart");
        assert_eq!(
            ahead.rest("42"),
            [("v".into(), "c".into(), "42".into(), json!({ "n": 3 }))]
        );
        assert!(ahead.rest("43").is_empty());
    }
}
