//! Any sequence of mutations a plugin could return, applied to one
//! document: the shared mutation semantics never panic, and a document that
//! exists is always a JSON object. (A refused mutation may leave the
//! document half-changed: the host applies each event's mutations to a
//! scratch copy and keeps it only if all succeed.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use projector_contract::Mutation;
use projector_contract::document::apply;
use serde_json::Value;

/// Reads `[{"op": "merge", "path": "a.b", "doc": …, "delta": 1, "match": "id"}, …]`.
fn mutations(input: &Value) -> Vec<Mutation> {
    let (view, key) = (String::from("v"), String::from("k"));
    let ops = input.as_array().cloned().unwrap_or_default();
    ops.iter()
        .map(|op| {
            let path = op["path"].as_str().unwrap_or_default().to_owned();
            let item = op["doc"].clone();
            let match_field = op["match"].as_str().map(str::to_owned);
            match op["op"].as_str().unwrap_or_default() {
                "upsert" => Mutation::Upsert { view: view.clone(), key: key.clone(), doc: item },
                "merge" => Mutation::Merge { view: view.clone(), key: key.clone(), doc: item },
                "append" => Mutation::Append { view: view.clone(), key: key.clone(), path, item, match_field },
                "remove" => Mutation::Remove { view: view.clone(), key: key.clone(), path, item, match_field },
                "increment" => Mutation::Increment {
                    view: view.clone(),
                    key: key.clone(),
                    path,
                    delta: op["delta"].as_i64().unwrap_or(1),
                },
                _ => Mutation::Delete { view: view.clone(), key: key.clone() },
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Value>(data) else { return };
    let mut doc = None;
    for mutation in mutations(&input) {
        let _ = apply(&mut doc, &mutation);
        assert!(doc.as_ref().is_none_or(Value::is_object), "{doc:?}");
    }
});
