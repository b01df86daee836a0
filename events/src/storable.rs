//! What the read models can hold: the limits an event must meet before any
//! plugin sees it. PostgreSQL refuses U+0000 in `text` and `jsonb`, a btree
//! entry has a size limit, and JSON numbers beyond ±(2^53 − 1) do not
//! survive every reader (I-JSON, RFC 7493). An event outside these limits
//! could never be stored, so it is refused at the door rather than failing
//! a whole batch later.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The longest `eventId`, `patientId` and `userId`, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// The largest integer magnitude every JSON reader carries exactly: 2^53 − 1.
pub const MAX_EXACT_NUMBER: f64 = 9_007_199_254_740_991.0;

/// Checks every string (keys too) and number of an event, and the length of
/// its ids. The error names where the problem is, never the value.
pub fn check(value: &Value) -> Result<(), String> {
    walk(value, true).map_err(Fault::message)?;
    for id in ["eventId", "patientId", "userId"] {
        if let Some(text) = value.get(id).and_then(Value::as_str) {
            check_id(id, text)?;
        }
    }
    Ok(())
}

/// Checks the length of id `field`.
pub fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "{field} is {} bytes, over the limit of {MAX_ID_BYTES}",
            id.len()
        ));
    }
    Ok(())
}

/// Whether JSON text is an object whose strings (keys too) and numbers all
/// pass [`check`], read in one pass that builds nothing: false also for
/// text that is not JSON. Ids are not looked at ([`check_id`]).
pub fn fits(text: &str) -> bool {
    let mut reader = serde_json::Deserializer::from_str(text);
    matches!(Fits.deserialize(&mut reader), Ok(Shape::Object)) && reader.end().is_ok()
}

/// What a JSON value that fits is; only an object can be an event.
#[derive(PartialEq)]
enum Shape {
    Object,
    Other,
}

/// Visits a JSON value, failing at the first string or number that does not
/// fit.
struct Fits;

impl<'de> DeserializeSeed<'de> for Fits {
    type Value = Shape;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fits {
    type Value = Shape;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON the read models can store")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Shape, E> {
        exact(n as f64)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Shape, E> {
        exact(n as f64)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Shape, E> {
        exact(n)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Shape, E> {
        if s.contains('\0') {
            Err(E::custom("U+0000"))
        } else {
            Ok(Shape::Other)
        }
    }

    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Shape, A::Error> {
        while items.next_element_seed(Fits)?.is_some() {}
        Ok(Shape::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Shape, A::Error> {
        while fields.next_key_seed(Fits)?.is_some() {
            fields.next_value_seed(Fits)?;
        }
        Ok(Shape::Object)
    }
}

fn exact<E: de::Error>(n: f64) -> Result<Shape, E> {
    if n.abs() > MAX_EXACT_NUMBER {
        Err(E::custom("beyond 2^53 - 1"))
    } else {
        Ok(Shape::Other)
    }
}

/// Checks only that no string or field name holds U+0000: what PostgreSQL
/// needs of any JSON it stores (a plugin's documents, for one).
pub fn check_strings(value: &Value) -> Result<(), String> {
    walk(value, false).map_err(Fault::message)
}

/// What [`walk`] found wrong, with the steps to it from the root, innermost
/// first: the path is built only once something fails, so a value that
/// passes (every plugin outcome, on the hot path) costs no allocation.
struct Fault {
    steps: Vec<String>,
    wrong: Wrong,
}

enum Wrong {
    Nul,
    NulName,
    Inexact,
}

impl Fault {
    fn new(wrong: Wrong) -> Self {
        Self {
            steps: Vec::new(),
            wrong,
        }
    }

    fn under(mut self, step: String) -> Self {
        self.steps.push(step);
        self
    }

    fn message(self) -> String {
        let at: String = std::iter::once("$".to_owned())
            .chain(self.steps.into_iter().rev())
            .collect();
        match self.wrong {
            Wrong::Nul => format!("{at} holds U+0000"),
            Wrong::NulName => format!("a field name in {at} holds U+0000"),
            Wrong::Inexact => {
                format!("{at} is a number beyond ±(2^53 − 1), which JSON does not carry exactly")
            }
        }
    }
}

fn walk(value: &Value, numbers: bool) -> Result<(), Fault> {
    match value {
        Value::String(s) if s.contains('\0') => Err(Fault::new(Wrong::Nul)),
        Value::Number(n) if numbers && n.as_f64().is_some_and(|f| f.abs() > MAX_EXACT_NUMBER) => {
            Err(Fault::new(Wrong::Inexact))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| walk(item, numbers).map_err(|f| f.under(format!("[{i}]")))),
        Value::Object(fields) => fields.iter().try_for_each(|(name, item)| {
            if name.contains('\0') {
                return Err(Fault::new(Wrong::NulName));
            }
            walk(item, numbers).map_err(|f| f.under(format!(".{name}")))
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
        let err = check(&json!({ "payload": { "a\u{0}": 1 } })).unwrap_err();
        assert_eq!(err, "a field name in $.payload holds U+0000");
        let err = check_strings(&json!([{ "x": [[], ["", "\u{0}"]] }])).unwrap_err();
        assert_eq!(err, "$[0].x[1][1] holds U+0000", "the path of a deep find");
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
        assert_eq!(
            check(&json!({ "o": { "v": -1.0e300 } })).unwrap_err(),
            "$.o.v is a number beyond ±(2^53 − 1), which JSON does not carry exactly"
        );
        assert!(check(&json!({ "v": 5.4 })).is_ok());
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_value_check() {
        let texts = [
            r#"{"payload":{"name":{"family":"a\u0000b"}}}"#,
            r#"{"payload":{"list":["ok","\u0000"]}}"#,
            r#"{"payload":{"a\u0000":1}}"#,
            r#"{"v":9007199254740991}"#,
            r#"{"v":9007199254740993}"#,
            r#"{"v":-1.0e300}"#,
            r#"{"v":-9007199254740993}"#,
            r#"{"v":[5.4,null,true,{"w":"\u00e9"}]}"#,
            r#"{"patientId":"p1","payload":{}}"#,
        ];
        for text in texts {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(fits(text), check(&value).is_ok(), "{text}");
        }
        for not_an_event in ["[1,2]", "\"text\"", "{\"a\":", "{} {}", "not json", ""] {
            assert!(!fits(not_an_event), "{not_an_event}");
        }
    }
}
