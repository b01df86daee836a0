//! A batch's view of one plugin's read models: the committed documents it has
//! loaded, with every mutation of the batch so far folded in. `view-get`
//! reads it; the batch's commit writes its changed documents.

use std::collections::HashMap;

use projector_contract::Mutation;
use projector_contract::document::{self, ApplyError};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgPool};

use super::Target;
use super::ahead::{AHEAD_VERSION, Ahead};
use super::cache::DocCache;

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
    /// The row version it was loaded as; `None` when absent.
    version: Option<String>,
    dirty: bool,
    /// The patient the document belonged to when loaded, or was first
    /// given in the batch: deleting and writing it again does not move it.
    owner: Option<String>,
}

/// The documents a batch has read or changed: by view, then key.
pub struct Overlay {
    pool: PgPool,
    target: Target,
    cache: DocCache,
    /// The documents the batch before leaves, while it commits.
    ahead: Option<Ahead>,
    views: HashMap<String, HashMap<String, Slot>>,
}

/// The changed documents of one view, ready for one statement each.
#[derive(Debug, Default)]
pub struct ViewWrites {
    /// The view.
    pub view: String,
    /// The view's table.
    pub table: String,
    /// Keys and documents to upsert.
    pub upsert_keys: Vec<String>,
    /// Documents, parallel to `upsert_keys`.
    pub upsert_docs: Vec<Value>,
    /// Keys to delete.
    pub delete_keys: Vec<String>,
    /// The row version each written or deleted document that existed was
    /// read as, by key: the write checks the row is still that version, so
    /// a document another host changed meanwhile (one that is not one
    /// patient's, as a count over all patients) is not overwritten.
    pub read_versions: serde_json::Map<String, Value>,
}

/// What a batch hands its commit: the writes, the documents it read and
/// left as they were (to keep), and the cache to keep them in.
pub struct Finished {
    /// The changed documents, by view.
    pub writes: Vec<ViewWrites>,
    /// Unchanged documents: `(view, key, version, doc)`.
    pub unchanged: Vec<(String, String, String, Value)>,
    /// Where the projection keeps committed documents.
    pub cache: DocCache,
}

impl Finished {
    /// The batch before committed at `version`: documents read from its
    /// [`Ahead`] were that version.
    pub fn resolve_ahead(&mut self, version: &str) {
        let ahead = Value::String(AHEAD_VERSION.to_owned());
        for w in &mut self.writes {
            for read in w.read_versions.values_mut() {
                if *read == ahead {
                    *read = Value::String(version.to_owned());
                }
            }
        }
        for (_, _, read, _) in &mut self.unchanged {
            if read == AHEAD_VERSION {
                version.clone_into(read);
            }
        }
    }
}

/// How to undo one step of an outcome that turns out invalid; names are
/// borrowed from the outcome's mutations.
enum Undo<'m> {
    /// The whole document before (absent: `None`) and its dirty flag.
    Document {
        view: &'m str,
        key: &'m str,
        doc: Option<Value>,
        dirty: bool,
    },
    /// Only the dirty flag before; the fields are undone one by one.
    Dirty {
        view: &'m str,
        key: &'m str,
        dirty: bool,
    },
    /// A top-level field before (absent: `None`).
    Field {
        view: &'m str,
        key: &'m str,
        field: &'m str,
        value: Option<Value>,
    },
}

impl Overlay {
    /// An empty overlay over the views a plugin owns, in `target`'s tables;
    /// documents kept in `cache` are used when still current, and those
    /// `ahead` holds (the batch before wrote them and is committing) as
    /// that batch leaves them.
    pub fn new(
        pool: PgPool,
        target: Target,
        owned: impl IntoIterator<Item = String>,
        cache: DocCache,
        ahead: Option<Ahead>,
    ) -> Self {
        Self {
            pool,
            target,
            cache,
            ahead,
            views: owned.into_iter().map(|v| (v, HashMap::new())).collect(),
        }
    }

    fn slots(&mut self, view: &str) -> Result<&mut HashMap<String, Slot>, ApplyFailure> {
        self.views.get_mut(view).ok_or_else(|| {
            ApplyFailure::Rejected(format!("view `{view}` is not one this plugin declared"))
        })
    }

    /// Loads the documents of `keys` not loaded yet: those the batch before
    /// wrote as it leaves them, those the cache kept at their current
    /// version from there, the rest in one query.
    pub async fn load(
        &mut self,
        view: &str,
        keys: impl IntoIterator<Item = String>,
    ) -> Result<(), ApplyFailure> {
        let slots = self.slots(view)?;
        let mut missing: Vec<String> = keys
            .into_iter()
            .filter(|k| !slots.contains_key(k))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if let Some(ahead) = &self.ahead {
            let taken = ahead.take(view, &missing);
            if !taken.is_empty() {
                missing.retain(|k| !taken.contains_key(k));
                let slots = self.slots(view)?;
                for (key, doc) in taken {
                    // Deleted by the batch before: no row once it commits.
                    let version = doc.is_some().then(|| AHEAD_VERSION.to_owned());
                    slots.insert(key, clean(doc, version));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut kept = self.cache.take(view, &missing);
        // Kept documents still at their version come back without the
        // document: one round trip either way.
        let versions: serde_json::Map<String, Value> = kept
            .iter()
            .map(|(key, k)| (key.clone(), Value::String(k.version.clone())))
            .collect();
        let rows: Vec<(String, String, Option<Value>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT key, xmin::text, CASE WHEN $2::jsonb ->> key = xmin::text THEN NULL ELSE doc END
             FROM {} WHERE key = ANY($1)",
            self.target.table(view)
        )))
        .bind(&missing)
        .bind(Value::Object(versions))
        .fetch_all(&self.pool)
        .await?;
        let mut found: HashMap<String, Slot> = HashMap::with_capacity(rows.len());
        for (key, version, doc) in rows {
            let doc = doc.or_else(|| kept.remove(&key).map(|k| k.doc));
            found.insert(key, clean(doc, Some(version)));
        }
        let slots = self.slots(view)?;
        for key in missing {
            let slot = found.remove(&key).unwrap_or_else(|| clean(None, None));
            slots.insert(key, slot);
        }
        Ok(())
    }

    /// A document as of now in the batch, or the value at a dotted `path`
    /// in it, as JSON text.
    pub async fn get_text_at(
        &mut self,
        view: &str,
        key: &str,
        path: Option<&str>,
    ) -> Result<Option<String>, ApplyFailure> {
        self.load(view, [key.to_owned()]).await?;
        let doc = self.slots(view)?.get(key).and_then(|s| s.doc.as_ref());
        Ok(match path {
            None => doc.map(document::text),
            Some(path) => doc
                .and_then(|d| document::value_at(d, path))
                .map(document::text),
        })
    }

    /// Folds one event's mutations in, all or nothing: what a failing
    /// mutation leaves is undone, field by field, rather than copying each
    /// document first.
    pub async fn apply(&mut self, mutations: &[Mutation]) -> Result<(), ApplyFailure> {
        let mut wanted: HashMap<&str, Vec<String>> = HashMap::new();
        for m in mutations {
            let (view, key) = m.target();
            wanted.entry(view).or_default().push(key.to_owned());
        }
        for (view, keys) in wanted {
            self.load(view, keys).await?;
        }
        let mut undo = Vec::new();
        for m in mutations {
            if let Err(e) = self.apply_one(m, &mut undo) {
                self.roll_back(undo);
                return Err(e);
            }
        }
        // The outcome stands: documents it gave a patient keep that one.
        for m in mutations {
            let (view, key) = m.target();
            if let Some(slot) = self.views.get_mut(view).and_then(|s| s.get_mut(key))
                && slot.owner.is_none()
            {
                slot.owner = patient_of(slot.doc.as_ref()).map(str::to_owned);
            }
        }
        Ok(())
    }

    fn apply_one<'m>(
        &mut self,
        m: &'m Mutation,
        undo: &mut Vec<Undo<'m>>,
    ) -> Result<(), ApplyFailure> {
        let (view, key) = m.target();
        let Some(slot) = self.views.get_mut(view).and_then(|s| s.get_mut(key)) else {
            // Loaded just before: a view it does not own was refused there.
            return Ok(());
        };
        let dirty = slot.dirty;
        let owner = slot
            .owner
            .clone()
            .or_else(|| patient_of(slot.doc.as_ref()).map(str::to_owned));
        match &slot.doc {
            Some(Value::Object(fields))
                if !matches!(m, Mutation::Upsert { .. } | Mutation::Delete { .. }) =>
            {
                for field in touched_fields(m) {
                    undo.push(Undo::Field {
                        view,
                        key,
                        field,
                        value: fields.get(field).cloned(),
                    });
                }
                undo.push(Undo::Dirty { view, key, dirty });
            }
            // Replaced, deleted, created or (never written so) not an
            // object: the document before is kept whole, without a copy
            // where the mutation replaces it anyway.
            _ => {
                let doc = match m {
                    Mutation::Upsert { .. } | Mutation::Delete { .. } => slot.doc.take(),
                    _ => slot.doc.clone(),
                };
                undo.push(Undo::Document {
                    view,
                    key,
                    doc,
                    dirty,
                });
            }
        }
        slot.dirty = true;
        document::apply(&mut slot.doc, m)?;
        // A patient's document stays that patient's: no mutation moves it
        // to another (deleting it is allowed).
        match (owner, slot.doc.as_ref()) {
            (Some(owner), Some(doc)) if patient_of(Some(doc)) != Some(owner.as_str()) => {
                Err(ApplyFailure::Rejected(format!(
                    "mutation would move document `{key}` of view `{view}` from patient `{owner}` to {}",
                    patient_of(Some(doc)).map_or("none".to_owned(), |p| format!("`{p}`"))
                )))
            }
            _ => Ok(()),
        }
    }

    fn roll_back(&mut self, undo: Vec<Undo<'_>>) {
        for step in undo.into_iter().rev() {
            let (view, key) = match step {
                Undo::Document { view, key, .. }
                | Undo::Dirty { view, key, .. }
                | Undo::Field { view, key, .. } => (view, key),
            };
            let Some(slot) = self.views.get_mut(view).and_then(|s| s.get_mut(key)) else {
                continue;
            };
            match step {
                Undo::Document { doc, dirty, .. } => {
                    slot.doc = doc;
                    slot.dirty = dirty;
                }
                Undo::Dirty { dirty, .. } => slot.dirty = dirty,
                Undo::Field { field, value, .. } => {
                    if let Some(Value::Object(fields)) = slot.doc.as_mut() {
                        match value {
                            Some(value) => fields.insert(field.to_owned(), value),
                            None => fields.remove(field),
                        };
                    }
                }
            }
        }
    }

    /// Ends the batch: the changed documents, grouped by view, and the
    /// unchanged ones with the cache to keep them in. Views and keys come
    /// in order, so two hosts writing the same documents lock their rows
    /// in the same order and one waits for the other rather than deadlock.
    pub fn finish(self) -> Finished {
        let mut writes = Vec::new();
        let mut unchanged = Vec::new();
        let mut views: Vec<_> = self.views.into_iter().collect();
        views.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (view, slots) in views {
            let mut slots: Vec<_> = slots.into_iter().collect();
            slots.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut w = ViewWrites {
                table: self.target.table(&view),
                view: view.clone(),
                ..ViewWrites::default()
            };
            for (key, slot) in slots {
                match slot {
                    Slot {
                        dirty: false,
                        doc: Some(doc),
                        version: Some(version),
                        ..
                    } => unchanged.push((view.clone(), key, version, doc)),
                    Slot { dirty: false, .. } => {}
                    Slot { doc, version, .. } => {
                        if let Some(version) = version {
                            w.read_versions.insert(key.clone(), Value::String(version));
                        }
                        match doc {
                            Some(doc) => {
                                w.upsert_keys.push(key);
                                w.upsert_docs.push(doc);
                            }
                            None => w.delete_keys.push(key),
                        }
                    }
                }
            }
            if !w.upsert_keys.is_empty() || !w.delete_keys.is_empty() {
                writes.push(w);
            }
        }
        Finished {
            writes,
            unchanged,
            cache: self.cache,
        }
    }
}

/// The patient a document belongs to: its `patientId`.
fn patient_of(doc: Option<&Value>) -> Option<&str> {
    doc?.get("patientId")?.as_str()
}

fn clean(doc: Option<Value>, version: Option<String>) -> Slot {
    Slot {
        owner: patient_of(doc.as_ref()).map(str::to_owned),
        doc,
        version,
        dirty: false,
    }
}

/// The top-level fields of a document a (non-whole-document) mutation can
/// change: the first step of its path, or the keys of a merge.
fn touched_fields(m: &Mutation) -> Vec<&str> {
    match m {
        Mutation::Merge {
            doc: Value::Object(patch),
            ..
        } => patch.keys().map(String::as_str).collect(),
        Mutation::Append { path, .. }
        | Mutation::Remove { path, .. }
        | Mutation::Increment { path, .. } => {
            vec![path.split('.').next().unwrap_or(path)]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use projector_contract::Outcome;
    use serde_json::json;

    /// An overlay over view `v` holding `doc` at key `k` as loaded (no
    /// database is reached: every key it is asked for is loaded already).
    fn overlay_with(doc: Value) -> Overlay {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://unused@127.0.0.1:1/none")
            .expect("a lazy pool");
        let mut overlay = Overlay::new(
            pool,
            Target::live("t"),
            ["v".to_owned()],
            DocCache::new(0),
            None,
        );
        let slot = clean(Some(doc), Some("7".into()));
        overlay.slots("v").unwrap().insert("k".into(), slot);
        overlay
    }

    fn doc(overlay: &mut Overlay) -> (Option<Value>, bool) {
        let slot = &overlay.slots("v").unwrap()["k"];
        (slot.doc.clone(), slot.dirty)
    }

    #[tokio::test]
    async fn a_failing_mutation_undoes_the_whole_outcome() {
        let before = json!({ "n": 1, "list": [1], "name": "x", "nested": { "a": 1 } });
        let mut overlay = overlay_with(before.clone());
        let mut out = Outcome::default();
        out.increment("v", "k", "n", 1)
            .append("v", "k", "list", json!(2), None)
            .merge("v", "k", json!({ "nested": { "b": 2 }, "added": true }))
            .upsert("v", "k", json!({ "replaced": true }))
            .merge("v", "k", json!({ "name": { "first": "y" } }))
            .increment("v", "k", "replaced", 1);
        let failure = overlay.apply(&out.mutations).await;
        assert!(
            matches!(failure, Err(ApplyFailure::Rejected(_))),
            "{failure:?}"
        );
        assert_eq!(doc(&mut overlay), (Some(before.clone()), false));

        let mut out = Outcome::default();
        out.delete("v", "k")
            .increment("v", "k", "a.b", 1)
            .append("v", "k", "a.b", json!(1), None);
        assert!(overlay.apply(&out.mutations).await.is_err());
        assert_eq!(
            doc(&mut overlay),
            (Some(before), false),
            "deleted, recreated, undone"
        );
    }

    #[tokio::test]
    async fn a_document_never_moves_to_another_patient() {
        let before = json!({ "reportId": "r1", "patientId": "A", "unread": true });
        let mut overlay = overlay_with(before.clone());
        let mut out = Outcome::default();
        out.merge("v", "k", json!({ "patientId": "B", "unread": false }));
        let failure = overlay.apply(&out.mutations).await.unwrap_err();
        assert!(
            failure.to_string().contains("from patient `A` to `B`"),
            "{failure}"
        );
        let mut out = Outcome::default();
        out.upsert("v", "k", json!({ "reportId": "r1" }));
        assert!(
            overlay.apply(&out.mutations).await.is_err(),
            "dropping the owner moves it too"
        );
        assert_eq!(doc(&mut overlay), (Some(before), false));

        let mut out = Outcome::default();
        out.merge("v", "k", json!({ "patientId": "A", "unread": false }));
        overlay
            .apply(&out.mutations)
            .await
            .expect("the same patient may change it");
        let mut out = Outcome::default();
        out.delete("v", "k")
            .upsert("v", "k", json!({ "reportId": "r1", "patientId": "B" }));
        assert!(
            overlay.apply(&out.mutations).await.is_err(),
            "deleted, then written for another"
        );
        let mut out = Outcome::default();
        out.delete("v", "k");
        overlay
            .apply(&out.mutations)
            .await
            .expect("deleting is allowed");
        let mut out = Outcome::default();
        out.upsert("v", "k", json!({ "reportId": "r1", "patientId": "B" }));
        assert!(
            overlay.apply(&out.mutations).await.is_err(),
            "nor in a later event"
        );
        let mut out = Outcome::default();
        out.upsert(
            "v",
            "k",
            json!({ "reportId": "r1", "patientId": "A", "unread": false }),
        );
        overlay
            .apply(&out.mutations)
            .await
            .expect("the same patient may write it again");
    }

    #[tokio::test]
    async fn a_valid_outcome_changes_the_document_and_marks_it_written() {
        let mut overlay = overlay_with(json!({ "n": 1 }));
        let mut out = Outcome::default();
        out.increment("v", "k", "n", 1)
            .merge("v", "k", json!({ "m": 2 }));
        overlay.apply(&out.mutations).await.expect("applies");
        assert_eq!(doc(&mut overlay), (Some(json!({ "n": 2, "m": 2 })), true));
        let finished = overlay.finish();
        assert_eq!(finished.writes.len(), 1);
        assert_eq!(finished.writes[0].upsert_keys, ["k"]);
        assert!(finished.unchanged.is_empty());
    }

    #[tokio::test]
    async fn an_unchanged_document_is_handed_back_with_its_version() {
        let overlay = overlay_with(json!({ "n": 1 }));
        let finished = overlay.finish();
        assert!(finished.writes.is_empty());
        assert_eq!(
            finished.unchanged,
            [("v".into(), "k".into(), "7".into(), json!({ "n": 1 }))]
        );
    }
}
