//! Every coded field follows its value set in full: each listed code is
//! accepted, a code outside an extensible set is kept and reported, a code
//! outside a required set is refused with the field and the set named; the
//! JSON Schema agrees, and the README lists every field.

mod common;

use common::{SEED, validator};
use projector_events::coded::{CodedField, FIELDS};
use projector_events::{Envelope, EventError};
use serde_json::Value;

const README: &str = include_str!("../../README.md");

/// A seed event of the field's type with `code` at the field (the first
/// item of a list).
fn event_with(field: &CodedField, code: &str) -> Value {
    let mut event: Value = SEED
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("seed line is JSON"))
        .find(|e| e["eventType"] == field.event_type)
        .unwrap_or_else(|| panic!("the seed has no {}", field.event_type));
    let pointer = pointer(field);
    let (parent, name) = pointer.rsplit_once('/').expect("a pointer has a parent");
    let parent = event
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("seed {} has no {parent}", field.event_type));
    parent.insert(name.to_owned(), code.into());
    event
}

/// The field's JSON pointer in the event (the first item of a list).
fn pointer(field: &CodedField) -> String {
    format!("/payload{}", field.pointer())
}

/// The field's value after parsing and writing the payload again.
fn round_trip(field: &CodedField, parsed: &projector_events::Event) -> Value {
    let payload = serde_json::json!({ "payload": parsed.payload.to_json() });
    payload
        .pointer(&pointer(field))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn every_listed_code_is_accepted_by_parser_and_schema() {
    let validator = validator();
    for field in FIELDS {
        for code in field.value_set.codes {
            let event = event_with(field, code);
            let parsed = Envelope::parse(event.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{} {} = {code}: {e}", field.event_type, field.path));
            assert!(
                parsed.payload.unknown_codes().is_empty(),
                "{} {} = {code} counted as unknown",
                field.event_type,
                field.path
            );
            assert_eq!(
                round_trip(field, &parsed),
                Value::from(*code),
                "{} {} = {code} does not round-trip",
                field.event_type,
                field.path
            );
            assert!(
                validator.is_valid(&event),
                "schema refused {} {} = {code}",
                field.event_type,
                field.path
            );
        }
    }
}

#[test]
fn an_unknown_code_in_an_extensible_set_is_kept_and_reported() {
    let validator = validator();
    for field in FIELDS.iter().filter(|f| f.value_set.extensible) {
        let code = if field.path.ends_with("system") {
            "urn:oid:2.16.840.1.113883.19.5"
        } else {
            "LOCAL-42"
        };
        let event = event_with(field, code);
        let parsed = Envelope::parse(event.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{} {} = {code}: {e}", field.event_type, field.path));
        assert_eq!(
            round_trip(field, &parsed),
            Value::from(code),
            "{} {} kept verbatim",
            field.event_type,
            field.path
        );
        let unknown = parsed.payload.unknown_codes();
        assert!(
            unknown
                .iter()
                .any(|u| u.field == field.path && u.code == code),
            "{} {} = {code} not reported: {unknown:?}",
            field.event_type,
            field.path
        );
        assert!(
            validator.is_valid(&event),
            "schema refused {} {} = {code}",
            field.event_type,
            field.path
        );
    }
}

#[test]
fn a_code_outside_a_required_set_is_refused_naming_field_and_set() {
    let validator = validator();
    for field in FIELDS.iter().filter(|f| !f.value_set.extensible) {
        let event = event_with(field, "not-a-code");
        let err = Envelope::parse(event.to_string().as_bytes()).expect_err("refused");
        let EventError::InvalidPayload { reason, .. } = &err else {
            panic!("{} {}: {err}", field.event_type, field.path);
        };
        assert!(
            reason.starts_with(&format!("{}: ", field.named())),
            "{} {}: the reason does not name the field: {reason}",
            field.event_type,
            field.path
        );
        assert!(reason.contains(field.value_set.source), "{reason}");
        for code in field.value_set.codes {
            assert!(
                reason.contains(&format!("`{code}`")),
                "{reason} lacks {code}"
            );
        }
        assert!(
            !validator.is_valid(&event),
            "schema accepted {} {} = not-a-code",
            field.event_type,
            field.path
        );
    }
}

#[test]
fn a_code_system_that_is_not_a_uri_is_refused() {
    let validator = validator();
    for field in FIELDS.iter().filter(|f| f.path.ends_with("system")) {
        for bad in ["LOINC", "", "http://loinc.org extra"] {
            let event = event_with(field, bad);
            let err = Envelope::parse(event.to_string().as_bytes()).expect_err("refused");
            assert!(
                err.to_string().contains(&field.named()),
                "{} {} = {bad:?}: {err}",
                field.event_type,
                field.path
            );
            assert!(
                !validator.is_valid(&event),
                "schema accepted {} {} = {bad:?}",
                field.event_type,
                field.path
            );
        }
    }
}

#[test]
fn the_readme_lists_every_coded_field_with_its_source() {
    let section = README
        .split("### Coded fields")
        .nth(1)
        .expect("README has a \"Coded fields\" section");
    for field in FIELDS {
        let row = section
            .lines()
            .find(|l| {
                l.contains(&format!("`{}`", field.event_type))
                    && l.contains(&format!("`{}`", field.path))
            })
            .unwrap_or_else(|| panic!("README lists no {} {}", field.event_type, field.path));
        let name = field
            .value_set
            .source
            .split(" (")
            .next()
            .unwrap_or_default();
        assert!(
            row.contains(name),
            "README row for {} {} does not name {name}: {row}",
            field.event_type,
            field.path
        );
        let strength = if field.value_set.extensible {
            "extensible"
        } else {
            "required"
        };
        assert!(
            row.contains(strength),
            "README row for {} {} does not say {strength}",
            field.event_type,
            field.path
        );
    }
}
