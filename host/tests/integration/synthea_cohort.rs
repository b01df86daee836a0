//! A Synthea cohort (fixtures/synthea: 20 patients, FHIR R4 bundles from a
//! pinned generator and seed) through `projector fhir`'s conversion and every
//! plugin: each chart shows as many encounters, allergies, medications,
//! results and diagnoses as the bundles hold, and nothing is dead-lettered.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::common::TestEnv;
use serde_json::Value;

/// What one patient's bundle holds, counted from the FHIR resources
/// themselves (not from the converted events).
#[derive(Debug, Default, PartialEq)]
struct Counts {
    encounters: usize,
    allergies: usize,
    medications: usize,
    lab_reports: usize,
    results: usize,
    diagnoses: usize,
}

fn bundles() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/synthea/bundles")
}

/// Counts per patient id, from the bundles.
fn expected() -> BTreeMap<String, Counts> {
    let mut all = BTreeMap::new();
    for file in std::fs::read_dir(bundles()).unwrap() {
        let bundle: Value =
            serde_json::from_str(&std::fs::read_to_string(file.unwrap().path()).unwrap()).unwrap();
        let resources: Vec<&Value> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .collect();
        let of = |kind: &'static str| resources.iter().filter(move |r| r["resourceType"] == kind);
        let patient = of("Patient").next().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let lab_reports: Vec<&&Value> = of("DiagnosticReport")
            .filter(|r| r["category"][0]["coding"][0]["code"] == "LAB")
            .collect();
        // The chart lists a diagnosis once, however often it was recorded.
        let diagnoses: BTreeSet<&str> = of("Condition")
            .map(|c| c["code"]["coding"][0]["code"].as_str().unwrap())
            .collect();
        let counts = Counts {
            encounters: of("Encounter").count(),
            allergies: of("AllergyIntolerance").count(),
            medications: of("MedicationRequest").count(),
            lab_reports: lab_reports.len(),
            results: lab_reports
                .iter()
                .map(|r| r["result"].as_array().unwrap().len())
                .sum(),
            diagnoses: diagnoses.len(),
        };
        all.insert(patient, counts);
    }
    all
}

fn length(value: &Value) -> usize {
    value.as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chart_holds_what_its_bundle_holds() {
    let expected = expected();
    assert_eq!(expected.len(), 20, "the cohort's patients");
    let classes: BTreeSet<String> = std::fs::read_dir(bundles())
        .unwrap()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            let bundle: Value = serde_json::from_str(&text).unwrap();
            bundle["entry"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["resource"]["resourceType"] == "Encounter")
                .map(|e| e["resource"]["class"]["code"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        classes.contains("HH"),
        "the cohort has the home-health visit that was lost: {classes:?}"
    );

    let env = TestEnv::new("synthea").await;
    let events = projector::fhir::read_bundles(&[bundles()]).unwrap();
    let mut publisher = env.publisher();
    for event in &events {
        publisher.publish(event).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let host = env.start().await;
    env.settle(&host).await;

    let pool = env.pool().await;
    let letters: Vec<(String, String)> = sqlx::query_as("SELECT plugin, reason FROM dead_letters")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(letters, vec![], "no dead letters");

    let token = env.token("u-dr-cohort", "provider");
    for (patient, want) in &expected {
        let get = |path: String| {
            let (env, host, token) = (&env, &host, &token);
            async move {
                let (status, body) = env.get(host, &path, Some(token)).await;
                assert_eq!(status, 200, "{path}: {body}");
                body
            }
        };
        let base = format!("/api/aggregate/patients/{patient}");
        let chart = get(base.clone()).await;
        let labs = get(format!("{base}/labs")).await;
        let encounters = get(format!("{base}/encounters")).await;
        let medications = get(format!("{base}/medications")).await;
        let shown = Counts {
            encounters: chart["encounterSummary"]["count"].as_u64().unwrap() as usize,
            allergies: length(&chart["allergies"]),
            medications: length(&chart["medications"]),
            lab_reports: length(&labs),
            results: labs
                .as_array()
                .unwrap()
                .iter()
                .map(|r| length(&r["results"]))
                .sum(),
            diagnoses: length(&chart["activeDiagnoses"]),
        };
        assert_eq!(&shown, want, "patient {patient}'s chart");
        assert_eq!(
            length(&encounters),
            want.encounters,
            "patient {patient}'s encounters"
        );
        assert_eq!(
            length(&medications),
            want.medications,
            "patient {patient}'s medications"
        );
    }
    host.stop();
}
