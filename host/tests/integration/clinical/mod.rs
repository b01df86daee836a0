//! Issue 15: the chart the real patient plugin builds equals the reference
//! model's (`model.rs`, the clinical rules in plain Rust) for random
//! clinical sequences: orders before and after their results, reports
//! viewed before they arrive, the same event delivered twice, events
//! published again under new ids, clinical times out of order, allergies
//! removed, prescriptions dispensed before they arrive. The plugin runs
//! natively in the SDK's harness, which applies outcomes as the host does
//! (so a thousand cases take seconds); `the_host_builds_the_model_chart`
//! runs a few through the host and the compiled plugin.

mod model;

use model::{Clinical, Expected, PATIENT};
use patient::{CHART, PatientPlugin};
use projector_sdk::testing::Harness;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;

/// The fewest cases CI runs (`PROPTEST_CASES` may ask for more).
const CASES: u32 = 1_000;

fn clinical() -> impl Strategy<Value = Clinical> {
    let id = || 0..4u8;
    let minutes = || 480..560u16;
    prop_oneof![
        id().prop_map(|order| Clinical::LabOrder { order }),
        (id(), id()).prop_map(|(order, report)| Clinical::LabResult { order, report }),
        id().prop_map(|report| Clinical::LabViewed { report }),
        id().prop_map(|order| Clinical::ImagingOrder { order }),
        (id(), id()).prop_map(|(order, study)| Clinical::StudyComplete { order, study }),
        (id(), id()).prop_map(|(report, study)| Clinical::ReportFinalized { report, study }),
        id().prop_map(|report| Clinical::ImagingViewed { report }),
        (
            id(),
            minutes(),
            proptest::option::of(40..180u16),
            proptest::option::of(80..100u16)
        )
            .prop_map(|(encounter, at, heart_rate, spo2)| Clinical::Vitals {
                encounter,
                at,
                heart_rate,
                spo2
            }),
        (id(), minutes()).prop_map(|(encounter, at)| Clinical::EncounterStarted { encounter, at }),
        (
            id(),
            minutes(),
            proptest::collection::vec((0..2u8, 0..3u8), 0..3)
        )
            .prop_map(|(encounter, at, diagnoses)| Clinical::EncounterCompleted {
                encounter,
                at,
                diagnoses
            }),
        (id(), any::<bool>(), 0..3u8).prop_map(|(allergy, high, status)| {
            Clinical::AllergyAdded {
                allergy,
                high,
                status,
            }
        }),
        id().prop_map(|allergy| Clinical::AllergyRemoved { allergy }),
        id().prop_map(|rx| Clinical::Prescribed { rx }),
        (id(), minutes()).prop_map(|(rx, at)| Clinical::Dispensed { rx, at }),
    ]
}

/// One delivery: an event under an id.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    event: Clinical,
}

/// A patient's events as they arrive: each once, then some again, under
/// the same id (a redelivery) or a new one (published again), later on.
fn deliveries() -> impl Strategy<Value = Vec<Delivery>> {
    (
        proptest::collection::vec(clinical(), 1..40),
        proptest::collection::vec((any::<usize>(), any::<bool>(), any::<usize>()), 0..8),
    )
        .prop_map(|(events, repeats)| {
            let mut arriving: Vec<Delivery> = events
                .iter()
                .enumerate()
                .map(|(i, event)| Delivery {
                    id: format!("e-{i}"),
                    event: event.clone(),
                })
                .collect();
            for (k, (which, same_id, at)) in repeats.into_iter().enumerate() {
                let original = which % events.len();
                let copy = Delivery {
                    id: if same_id {
                        format!("e-{original}")
                    } else {
                        format!("e-{original}-again-{k}")
                    },
                    event: events[original].clone(),
                };
                // Later than the first delivery of the same event.
                let first = arriving
                    .iter()
                    .position(|d| d.id == format!("e-{original}"))
                    .unwrap_or(0);
                let place = first + 1 + at % (arriving.len() - first);
                arriving.insert(place, copy);
            }
            arriving
        })
}

/// The model's fields after the deliveries: each id applied once.
fn expected(arriving: &[Delivery]) -> Value {
    let mut seen = std::collections::HashSet::new();
    let applied: Vec<Clinical> = arriving
        .iter()
        .filter(|d| seen.insert(d.id.clone()))
        .map(|d| d.event.clone())
        .collect();
    Expected::of(&applied).fields()
}

fn lines(arriving: &[Delivery]) -> String {
    arriving
        .iter()
        .map(|d| d.event.envelope(&d.id).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_patient_plugin_builds_the_chart_the_model_expects() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .map_or(CASES, |n: u32| n.max(CASES));
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&deliveries(), |arriving| {
        let mut harness = Harness::<PatientPlugin>::new();
        harness
            .feed_jsonl(&lines(&arriving))
            .map_err(|e| TestCaseError::fail(format!("the plugin refused an event: {e}")))?;
        let chart = harness.view(CHART, PATIENT).expect("a chart");
        prop_assert_eq!(model::observed(&chart), expected(&arriving));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A few sequences through the host: the compiled plugin, batches, the
/// database and the API, checked against the same model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_builds_the_model_chart() {
    use proptest::strategy::ValueTree;
    let env = crate::common::TestEnv::new("clinical_model").await;
    let mut runner = TestRunner::deterministic();
    let cases: Vec<Vec<Delivery>> = (0..3)
        .map(|_| deliveries().new_tree(&mut runner).unwrap().current())
        .collect();
    // One patient per case.
    let mut published = String::new();
    for (n, arriving) in cases.iter().enumerate() {
        for line in lines(arriving).lines() {
            let line = line
                .replace(PATIENT, &format!("{PATIENT}-{n}"))
                .replace("\"eventId\":\"e-", &format!("\"eventId\":\"c{n}-e-"));
            published.push_str(&line);
            published.push('\n');
        }
    }
    env.publish(&published).await;
    let host = env.start().await;
    env.settle(&host).await;
    let token = env.token("u-dr", "provider");
    for (n, arriving) in cases.iter().enumerate() {
        let (status, chart) = env
            .get(
                &host,
                &format!("/api/aggregate/patients/{PATIENT}-{n}"),
                Some(&token),
            )
            .await;
        assert_eq!(status, 200, "{chart}");
        assert_eq!(model::observed(&chart), expected(arriving), "case {n}");
    }
    host.stop();
}
