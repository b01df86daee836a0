//! What the read models can hold: the limits an event must meet before any
//! plugin sees it. PostgreSQL refuses U+0000 in `text` and `jsonb`, a btree
//! entry has a size limit, and JSON numbers beyond ±(2^53 − 1) do not
//! survive every reader (I-JSON, RFC 7493). An event outside these limits
//! could never be stored, so it is refused at the door rather than failing
//! a whole batch later.

use serde_json::Value;

/// The longest `eventId`, `patientId` and `userId`, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// The largest integer magnitude every JSON reader carries exactly: 2^53 − 1.
pub const MAX_EXACT_NUMBER: f64 = 9_007_199_254_740_991.0;

/// Checks every string (keys too) and number of an event, and the length of
/// its ids. The error names where the problem is, never the value.
pub fn check(value: &Value) -> Result<(), String> {
    walk(value, &mut String::from("$"), true)?;
    for id in ["eventId", "patientId", "userId"] {
        if let Some(text) = value.get(id).and_then(Value::as_str)
            && text.len() > MAX_ID_BYTES
        {
            return Err(format!(
                "{id} is {} bytes, over the limit of {MAX_ID_BYTES}",
                text.len()
            ));
        }
    }
    Ok(())
}

/// Checks only that no string or field name holds U+0000: what PostgreSQL
/// needs of any JSON it stores (a plugin's documents, for one).
pub fn check_strings(value: &Value) -> Result<(), String> {
    walk(value, &mut String::from("$"), false)
}

fn walk(value: &Value, at: &mut String, numbers: bool) -> Result<(), String> {
    match value {
        Value::String(s) if s.contains('\0') => Err(format!("{at} holds U+0000")),
        Value::Number(n) if numbers && n.as_f64().is_some_and(|f| f.abs() > MAX_EXACT_NUMBER) => {
            Err(format!(
                "{at} is a number beyond ±(2^53 − 1), which JSON does not carry exactly"
            ))
        }
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            let len = at.len();
            at.push_str(&format!("[{i}]"));
            let checked = walk(item, at, numbers);
            at.truncate(len);
            checked
        }),
        Value::Object(fields) => fields.iter().try_for_each(|(name, item)| {
            if name.contains('\0') {
                return Err(format!("a field name in {at} holds U+0000"));
            }
            let len = at.len();
            at.push('.');
            at.push_str(name);
            let checked = walk(item, at, numbers);
            at.truncate(len);
            checked
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_anywhere_is_refused_with_its_place() {
        let err = check(&json!({ "payload": { "name": { "family": "a\u{0}b" } } })).unwrap_err();
        assert_eq!(err, "$.payload.name.family holds U+0000");
        let err = check(&json!({ "payload": { "list": ["ok", "\u{0}"] } })).unwrap_err();
        assert_eq!(err, "$.payload.list[1] holds U+0000");
        assert!(check(&json!({ "payload": { "a\u{0}": 1 } })).is_err());
    }

    #[test]
    fn ids_have_a_length_limit() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let err = check(&json!({ "patientId": long })).unwrap_err();
        assert!(err.starts_with("patientId is 129 bytes"), "{err}");
        assert!(check(&json!({ "patientId": "x".repeat(MAX_ID_BYTES) })).is_ok());
    }

    #[test]
    fn numbers_beyond_the_exact_range_are_refused() {
        assert!(check(&json!({ "v": 9_007_199_254_740_991_u64 })).is_ok());
        assert!(check(&json!({ "v": 9_007_199_254_740_993_u64 })).is_err());
        assert!(check(&json!({ "v": -1.0e300 })).is_err());
        assert!(check(&json!({ "v": 5.4 })).is_ok());
    }
}
