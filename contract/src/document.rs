//! How mutations change a JSON document. The host and the native test harness
//! both use this, so a plugin's tests see exactly what the host will store.

use serde_json::{Map, Value};

use crate::Mutation;

/// Why a mutation could not be applied to the document it targets. The
/// host dead-letters the event, and none of its mutations are kept.
///
/// ```
/// use projector_contract::document::{ApplyError, apply};
/// use projector_contract::Outcome;
/// use serde_json::json;
///
/// let mut out = Outcome::default();
/// out.increment("v", "k", "name", 1);
/// let mut doc = Some(json!({ "name": "Ada" }));
/// assert_eq!(apply(&mut doc, &out.mutations[0]), Err(ApplyError::NotANumber("name".into())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Merge and upsert take JSON objects.
    #[error("{0} needs a JSON object")]
    NotAnObject(String),
    /// Something on the path is not an object.
    #[error("`{0}` is not an object")]
    PathBlocked(String),
    /// Append and remove need a list at the path.
    #[error("`{0}` is not a list")]
    NotAList(String),
    /// Increment needs a number at the path.
    #[error("`{0}` is not an integer")]
    NotANumber(String),
}

/// Applies one mutation to a document (`None` when absent). Every mutation but
/// `Delete` creates a missing document as `{}` first.
///
/// ```
/// use projector_contract::document::apply;
/// use projector_contract::Outcome;
/// use serde_json::json;
///
/// let mut out = Outcome::default();
/// out.increment("v", "k", "counts.lab", 2);
/// let mut doc = None;
/// apply(&mut doc, &out.mutations[0]).unwrap();
/// assert_eq!(doc, Some(json!({ "counts": { "lab": 2 } })));
/// ```
pub fn apply(doc: &mut Option<Value>, mutation: &Mutation) -> Result<(), ApplyError> {
    match mutation {
        Mutation::Delete { .. } => {
            *doc = None;
            return Ok(());
        }
        Mutation::Upsert { doc: new, .. } => {
            if !new.is_object() {
                return Err(ApplyError::NotAnObject("upsert".into()));
            }
            *doc = Some(new.clone());
            return Ok(());
        }
        _ => {}
    }
    let root = doc.get_or_insert_with(|| Value::Object(Map::new()));
    match mutation {
        Mutation::Merge { doc: patch, .. } => {
            if !patch.is_object() {
                return Err(ApplyError::NotAnObject("merge".into()));
            }
            merge(root, patch);
        }
        Mutation::Append {
            path,
            item,
            match_field,
            ..
        } => {
            let list = list_at(root, path)?;
            let same = match_field
                .as_deref()
                .and_then(|field| item.get(field).map(|v| (field, v)))
                .and_then(|(field, v)| list.iter().position(|x| x.get(field) == Some(v)));
            match same {
                Some(i) => list[i] = item.clone(),
                None => list.push(item.clone()),
            }
        }
        Mutation::Remove {
            path,
            item,
            match_field,
            ..
        } => {
            let list = list_at(root, path)?;
            match match_field.as_deref() {
                Some(field) => {
                    let wanted = item.get(field);
                    list.retain(|x| x.get(field) != wanted);
                }
                None => list.retain(|x| x != item),
            }
        }
        Mutation::Increment { path, delta, .. } => {
            let slot = slot_at(root, path)?;
            let current = match &*slot {
                Value::Null => 0,
                other => other
                    .as_i64()
                    .ok_or_else(|| ApplyError::NotANumber(path.clone()))?,
            };
            *slot = Value::from(current.saturating_add(*delta));
        }
        Mutation::Upsert { .. } | Mutation::Delete { .. } => {}
    }
    Ok(())
}

/// The value at a dotted path of a document, if every step is there.
///
/// ```
/// use projector_contract::document::value_at;
/// use serde_json::json;
///
/// let doc = json!({ "a": { "b": [1] }, "n": null });
/// assert_eq!(value_at(&doc, "a.b"), Some(&json!([1])));
/// assert_eq!(value_at(&doc, "n.x"), None);
/// ```
pub fn value_at<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |here, part| here.get(part))
}

/// A document's JSON text, for the database or a plugin. Written straight
/// into bytes: `Value`'s `Display` (`to_string`) passes every fragment
/// through a formatter and takes about twice as long for a chart
/// (BENCHMARKS.md, session 18), and documents are written out every batch.
///
/// ```
/// use projector_contract::document::text;
/// use serde_json::json;
///
/// assert_eq!(text(&json!({ "a": ["\"x\""] })), r#"{"a":["\"x\""]}"#);
/// ```
pub fn text(doc: &Value) -> String {
    serde_json::to_string(doc).expect("a JSON value always serialises")
}

/// Deep merge: objects merge key by key, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// The value at a dotted path (null if absent), creating missing objects on the way.
fn slot_at<'a>(root: &'a mut Value, path: &str) -> Result<&'a mut Value, ApplyError> {
    let mut here = root;
    for part in path.split('.') {
        if here.is_null() {
            *here = Value::Object(Map::new());
        }
        let object = here
            .as_object_mut()
            .ok_or_else(|| ApplyError::PathBlocked(path.to_owned()))?;
        here = object.entry(part.to_owned()).or_insert(Value::Null);
    }
    Ok(here)
}

fn list_at<'a>(root: &'a mut Value, path: &str) -> Result<&'a mut Vec<Value>, ApplyError> {
    let slot = slot_at(root, path)?;
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut()
        .ok_or_else(|| ApplyError::NotAList(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;
    use serde_json::json;

    fn run(start: Option<Value>, out: &Outcome) -> Result<Option<Value>, ApplyError> {
        let mut doc = start;
        for m in &out.mutations {
            apply(&mut doc, m)?;
        }
        Ok(doc)
    }

    #[test]
    fn operations_create_missing_documents_and_paths() {
        let mut out = Outcome::default();
        out.increment("v", "k", "pending.lab", 2)
            .increment("v", "k", "pending.lab", -1)
            .append("v", "k", "items", json!({"id": "a", "n": 1}), Some("id"))
            .append("v", "k", "items", json!({"id": "b"}), Some("id"))
            .append("v", "k", "items", json!({"id": "a", "n": 2}), Some("id"))
            .merge("v", "k", json!({"name": {"given": "J"}, "x": 1}))
            .merge("v", "k", json!({"name": {"family": "D"}}));
        let doc = run(None, &out).unwrap().unwrap();
        assert_eq!(
            doc,
            json!({"pending": {"lab": 1}, "items": [{"id": "a", "n": 2}, {"id": "b"}],
                   "name": {"given": "J", "family": "D"}, "x": 1})
        );
    }

    #[test]
    fn remove_and_delete() {
        let mut out = Outcome::default();
        out.append("v", "k", "items", json!({"id": "a"}), Some("id"))
            .append("v", "k", "items", json!({"id": "b"}), Some("id"))
            .remove("v", "k", "items", "id", json!("a"));
        assert_eq!(
            run(None, &out).unwrap().unwrap(),
            json!({"items": [{"id": "b"}]})
        );
        out.delete("v", "k");
        assert_eq!(run(None, &out).unwrap(), None);
    }

    #[test]
    fn type_conflicts_are_errors_not_panics() {
        let mut out = Outcome::default();
        out.increment("v", "k", "name", 1);
        assert_eq!(
            run(Some(json!({"name": "x"})), &out),
            Err(ApplyError::NotANumber("name".into()))
        );
        let mut out = Outcome::default();
        out.append("v", "k", "name.first", json!(1), None);
        assert_eq!(
            run(Some(json!({"name": "x"})), &out),
            Err(ApplyError::PathBlocked("name.first".into()))
        );
        let mut out = Outcome::default();
        out.upsert("v", "k", json!([1]));
        assert!(run(None, &out).is_err());
    }
}
