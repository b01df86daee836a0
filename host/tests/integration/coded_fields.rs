//! Each coded field, end to end through the host and every plugin that reads
//! its event: a code from the full value set projects; a code an extensible
//! set does not list projects and is counted in the metrics; a code outside
//! a required set is a dead letter naming the field and the allowed codes.

use std::collections::BTreeSet;

use crate::common::{SEED, TestEnv};
use projector_events::coded::{CodedField, FIELDS};
use serde_json::Value;
use sqlx::PgPool;

/// The seed event of the field's type for its own patient and event id,
/// with `code` at the field.
fn event(field: &CodedField, id: &str, code: &str) -> String {
    let mut event: Value = SEED
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["eventType"] == field.event_type)
        .unwrap();
    event["eventId"] = id.into();
    event["patientId"] = format!("p-{id}").into();
    let pointer = field.pointer();
    let (parent, name) = pointer.rsplit_once('/').unwrap();
    event["payload"]
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("seed {} has no {parent}", field.event_type))
        .insert(name.to_owned(), code.into());
    event.to_string()
}

/// A code the field's set does not list, of the right shape for it.
fn unlisted(field: &CodedField) -> &'static str {
    if field.path.ends_with("system") {
        "urn:oid:2.16.840.1.113883.19.5"
    } else {
        "LOCAL-42"
    }
}

/// The plugins that applied `event_id`.
async fn applied_by(pool: &PgPool, event_id: &str) -> BTreeSet<String> {
    sqlx::query_scalar("SELECT plugin FROM processed_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// The dead letters of `event_id`: plugin and reason.
async fn dead_letters(pool: &PgPool, event_id: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT plugin, reason FROM dead_letters WHERE event_id = $1")
        .bind(event_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_coded_field_projects_counts_or_refuses_by_its_binding() {
    let env = TestEnv::new("coded").await;
    // Published as a hospital system would, unchecked: the host is the judge.
    let mut publisher = env.publisher();
    for (i, field) in FIELDS.iter().enumerate() {
        // The last code of the set: the seed sends the first ones already.
        let listed = field.value_set.codes.last().unwrap();
        let other = if field.value_set.extensible {
            unlisted(field)
        } else {
            "not-a-code"
        };
        for (id, code) in [
            (format!("{i}-listed"), *listed),
            (format!("{i}-other"), other),
        ] {
            let text = event(field, &id, code);
            publisher
                .publish_raw(field.event_type, Some(&id), text.into_bytes())
                .await
                .unwrap();
        }
    }
    publisher.flush().await.unwrap();
    let host = env.start().await;
    env.settle(&host).await;
    let pool = env.pool().await;
    let metrics = crate::common::metrics(&host).await;

    for (i, field) in FIELDS.iter().enumerate() {
        let what = format!("{} {}", field.event_type, field.path);
        let readers = applied_by(&pool, &format!("{i}-listed")).await;
        assert!(
            !readers.is_empty(),
            "{what}: no plugin applied a listed code"
        );
        assert_eq!(
            dead_letters(&pool, &format!("{i}-listed")).await,
            vec![],
            "{what}"
        );

        let other = format!("{i}-other");
        if field.value_set.extensible {
            assert_eq!(
                applied_by(&pool, &other).await,
                readers,
                "{what}: an unlisted code projects"
            );
            assert_eq!(dead_letters(&pool, &other).await, vec![], "{what}");
            for plugin in &readers {
                let series = format!(
                    "projector_unknown_codes_total{{plugin=\"{plugin}\",field=\"{}\",code=\"{}\"}} ",
                    field.path,
                    unlisted(field)
                );
                assert!(
                    metrics.contains(&series),
                    "{what}: no {series} in\n{metrics}"
                );
            }
        } else {
            assert_eq!(
                applied_by(&pool, &other).await,
                BTreeSet::new(),
                "{what}: refused"
            );
            let letters = dead_letters(&pool, &other).await;
            let lettered: BTreeSet<String> = letters.iter().map(|(p, _)| p.clone()).collect();
            assert_eq!(lettered, readers, "{what}: a dead letter for each reader");
            for (plugin, reason) in &letters {
                assert!(
                    reason.contains(&format!("{}: `not-a-code` is not a code of", field.named())),
                    "{what} in {plugin}: {reason}"
                );
                for code in field.value_set.codes {
                    assert!(
                        reason.contains(&format!("`{code}`")),
                        "{what}: {reason} lacks {code}"
                    );
                }
            }
        }
    }
    host.stop();
}
