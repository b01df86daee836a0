//! The shipped JSON Schema and the typed parser must agree on what is an event.

mod common;

use common::{LATER, SEED, validator};
use projector_events::{Envelope, payloads::EVENT_TYPES};
use serde_json::Value;

/// The seed flow and the later event types' examples.
fn seed() -> Vec<Value> {
    SEED.lines()
        .chain(LATER.lines())
        .map(|l| serde_json::from_str(l).expect("seed line is JSON"))
        .collect()
}

#[test]
fn the_fixtures_cover_every_event_type() {
    let seen: std::collections::BTreeSet<String> = seed()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or_default().to_owned())
        .collect();
    for (event_type, _) in EVENT_TYPES {
        assert!(seen.contains(*event_type), "seed has no {event_type}");
    }
}

#[test]
fn schema_and_parser_accept_every_seed_event() {
    let validator = validator();
    for event in seed() {
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", event["eventType"]);
        let parsed = Envelope::parse(event.to_string().as_bytes()).expect("parser accepts");
        assert_eq!(
            parsed.envelope.fhir_resource_type.as_deref(),
            Some(parsed.payload.fhir_resource_type()),
        );
    }
}

#[test]
fn schema_and_parser_reject_the_same_broken_events() {
    let validator = validator();
    /// What is broken, and how.
    type Breakage = (&'static str, fn(&mut Value));
    let breakages: Vec<Breakage> = vec![
        ("no userId", |e| {
            e.as_object_mut().map(|o| o.remove("userId"));
        }),
        ("unknown type", |e| {
            e["eventType"] = "lab.result.lost".into()
        }),
        ("bad portal", |e| e["portalType"] = "fax".into()),
        ("bad timestamp", |e| e["timestamp"] = "noon".into()),
        ("payload id wrong type", |e| {
            let payload = e["payload"].as_object_mut().expect("object payload");
            let field = payload
                .iter()
                .find(|(_, v)| !v.is_boolean())
                .map(|(k, _)| k.clone())
                .expect("payload has a non-boolean field");
            payload.insert(field, Value::Bool(true));
        }),
        ("payload missing", |e| {
            e.as_object_mut().map(|o| o.remove("payload"));
        }),
    ];
    for event in seed() {
        for (what, breaks) in &breakages {
            let mut broken = event.clone();
            breaks(&mut broken);
            assert!(
                !validator.is_valid(&broken),
                "schema accepted {what} in {}",
                event["eventType"]
            );
            assert!(
                Envelope::parse(broken.to_string().as_bytes()).is_err(),
                "parser accepted {what} in {}",
                event["eventType"]
            );
        }
    }
}
