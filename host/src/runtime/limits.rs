//! The bounds a plugin's outcome must keep before the host applies any of
//! it. A plugin's output is untrusted input: a path of a hundred thousand
//! segments or a million mutations would otherwise be cloned, folded and
//! serialised by the host, and a string PostgreSQL cannot hold would fail
//! the whole batch. Over a limit, the event is a dead letter whose reason
//! names the limit.

use projector_contract::{Mutation, Outcome};
use serde_json::Value;

/// Most mutations one event's outcome may carry.
pub const MAX_MUTATIONS: usize = 1_000;
/// Most notifications one event's outcome may carry.
pub const MAX_NOTIFICATIONS: usize = 100;
/// Most audit entries one event's outcome may carry.
pub const MAX_AUDITS: usize = 100;
/// Most segments of a mutation's dotted path.
pub const MAX_PATH_SEGMENTS: usize = 16;
/// Longest mutation path, in bytes.
pub const MAX_PATH_BYTES: usize = 256;
/// Longest document key, in bytes (a btree entry must fit a page).
pub const MAX_KEY_BYTES: usize = 512;
/// Most JSON one event's outcome may carry (its documents, list items and
/// notification data together), in bytes: checked before any is parsed,
/// so what one event adds is refused by that event, whatever batch it is in.
pub const MAX_OUTCOME_BYTES: usize = 1 << 20;

/// Checks the JSON an outcome carries, in bytes, before it is parsed.
pub fn check_bytes(bytes: usize) -> Result<(), String> {
    if bytes > MAX_OUTCOME_BYTES {
        return Err(format!(
            "outcome carries {bytes} bytes of JSON, over the limit of {MAX_OUTCOME_BYTES} per event"
        ));
    }
    Ok(())
}

/// Checks an outcome against every limit; the error names the limit broken.
pub fn check(outcome: &Outcome) -> Result<(), String> {
    count("mutations", outcome.mutations.len(), MAX_MUTATIONS)?;
    count(
        "notifications",
        outcome.notifications.len(),
        MAX_NOTIFICATIONS,
    )?;
    count("audit entries", outcome.audits.len(), MAX_AUDITS)?;
    for m in &outcome.mutations {
        mutation(m)?;
    }
    for n in &outcome.notifications {
        for text in [&n.recipient, &n.kind, &n.title, &n.message, &n.dedupe_key] {
            no_nul("a notification", text)?;
        }
        json("notification data", &n.data)?;
    }
    for a in &outcome.audits {
        for text in [&a.action, &a.resource_type, &a.resource_id]
            .into_iter()
            .chain(&a.user_id)
        {
            no_nul("an audit entry", text)?;
        }
    }
    Ok(())
}

fn count(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!(
            "outcome has {n} {what}, over the limit of {max} per event"
        ));
    }
    Ok(())
}

fn mutation(m: &Mutation) -> Result<(), String> {
    let (view, key) = m.target();
    no_nul("a view name", view)?;
    no_nul("a document key", key)?;
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "document key in `{view}` is {} bytes, over the limit of {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    match m {
        Mutation::Upsert { doc, .. } | Mutation::Merge { doc, .. } => json("a document", doc),
        Mutation::Append {
            path,
            item,
            match_field,
            ..
        }
        | Mutation::Remove {
            path,
            item,
            match_field,
            ..
        } => {
            self::path(path)?;
            if let Some(field) = match_field {
                no_nul("a match field", field)?;
            }
            json("a list item", item)
        }
        Mutation::Increment { path, .. } => self::path(path),
        Mutation::Delete { .. } => Ok(()),
    }
}

fn path(path: &str) -> Result<(), String> {
    no_nul("a path", path)?;
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "path is {} bytes, over the limit of {MAX_PATH_BYTES}",
            path.len()
        ));
    }
    let segments = path.split('.').count();
    if segments > MAX_PATH_SEGMENTS {
        return Err(format!(
            "path has {segments} segments, over the limit of {MAX_PATH_SEGMENTS}"
        ));
    }
    Ok(())
}

fn no_nul(what: &str, text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err(format!(
            "{what} holds U+0000, which PostgreSQL cannot store"
        ));
    }
    Ok(())
}

fn json(what: &str, value: &Value) -> Result<(), String> {
    projector_events::storable::check_strings(value).map_err(|at| format!("{what}: {at}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_limit_is_named_when_broken() {
        let mut deep = Outcome::default();
        deep.increment("v", "k", &vec!["a"; 100_000].join("."), 1);
        assert!(check(&deep).unwrap_err().contains("path is 199999 bytes"));

        let mut segments = Outcome::default();
        segments.increment("v", "k", &vec!["a"; MAX_PATH_SEGMENTS + 1].join("."), 1);
        assert!(check(&segments).unwrap_err().contains("segments"));

        let mut many = Outcome::default();
        for i in 0..=MAX_MUTATIONS {
            many.increment("v", &i.to_string(), "n", 1);
        }
        assert!(check(&many).unwrap_err().contains("1001 mutations"));

        let mut nul = Outcome::default();
        nul.merge("v", "k", json!({ "name": "a\u{0}" }));
        assert!(check(&nul).unwrap_err().contains("U+0000"));

        assert!(check_bytes(MAX_OUTCOME_BYTES).is_ok());
        assert!(
            check_bytes(MAX_OUTCOME_BYTES + 1)
                .unwrap_err()
                .contains("1048577 bytes")
        );

        let mut key = Outcome::default();
        key.delete("v", &"k".repeat(MAX_KEY_BYTES + 1));
        assert!(check(&key).unwrap_err().contains("document key"));
    }

    #[test]
    fn an_ordinary_outcome_passes() {
        let mut out = Outcome::default();
        out.merge("v", "k", json!({ "a": { "b": [1, 2, "x"] } }))
            .append("v", "k", "a.list", json!({ "id": 1 }), Some("id"))
            .increment("v", "k", "a.n", 1);
        assert_eq!(check(&out), Ok(()));
    }
}
