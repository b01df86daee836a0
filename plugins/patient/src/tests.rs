use projector_sdk::testing::Harness;
use projector_sdk::{Value, json};

use super::{CHART, PatientPlugin};

const SEED: &str = include_str!("../../../fixtures/seed-flow.jsonl");

fn seeded() -> Harness<PatientPlugin> {
    let mut harness = Harness::new();
    harness.feed_jsonl(SEED).expect("seed flow projects");
    harness
}

fn chart(harness: &Harness<PatientPlugin>) -> Value {
    harness.view(CHART, "p-john-doe").expect("chart exists")
}

#[test]
fn seed_flow_builds_the_chart() {
    let chart = chart(&seeded());
    assert_eq!(chart["mrn"], "MRN-100234");
    assert_eq!(chart["name"], json!({"given": "John", "family": "Doe"}));
    assert_eq!(chart["phone"], "+1-555-0100");
    // Peanut was removed; penicillin stays.
    let allergies = chart["allergies"].as_array().unwrap();
    assert_eq!(allergies.len(), 1);
    assert_eq!(allergies[0]["allergyId"], "alg-1");
    // The host counts critical alerts when it serves the chart.
    assert!(chart.get("criticalAlerts").is_none());
    assert_eq!(chart["pendingOrders"], json!({"lab": 0, "imaging": 0}));
    // Lab report viewed (twice: lowered once); radiology report still unread.
    assert_eq!(chart["unreadResults"], 1);
    let meds = chart["medications"].as_array().unwrap();
    assert_eq!(meds.len(), 2);
    assert_eq!(meds[0]["status"], "dispensed");
    assert_eq!(meds[0]["lastDispensedAt"], "2026-11-26T11:30:00Z");
    assert_eq!(meds[1]["status"], "prescribed");
    // The 08:30 reading arrived last but is older: it does not replace 11:35.
    assert_eq!(chart["latestVitals"]["recordedAt"], "2026-11-26T11:35:00Z");
    assert_eq!(chart["latestVitals"]["heartRate"]["value"], 88.0);
    assert_eq!(
        chart["latestVitals"]["heartRate"]["recordedAt"],
        "2026-11-26T11:35:00Z"
    );
    assert_eq!(
        chart["encounterSummary"],
        json!({"lastEncounterAt": "2026-11-26T09:00:00Z", "count": 1})
    );
    let diagnoses: Vec<&str> = chart["activeDiagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(diagnoses, ["14140009", "59282003"]);
    assert_eq!(chart["lastEventId"], "seed-0025");
}

#[test]
fn pending_orders_rise_and_fall_once() {
    let mut harness = Harness::<PatientPlugin>::new();
    let lines: Vec<&str> = SEED.lines().collect();
    harness.feed_jsonl(lines[0]).unwrap();
    harness.feed_jsonl(lines[7]).unwrap(); // lab order
    harness.feed_jsonl(lines[12]).unwrap(); // radiology order
    assert_eq!(
        chart(&harness)["pendingOrders"],
        json!({"lab": 1, "imaging": 1})
    );
    harness.feed_jsonl(lines[8]).unwrap(); // lab result
    harness.feed_jsonl(lines[14]).unwrap(); // study complete
    assert_eq!(
        chart(&harness)["pendingOrders"],
        json!({"lab": 0, "imaging": 0})
    );
    // A second result for the same order (a corrected report) lowers nothing.
    let corrected = lines[8].replace("seed-0009", "seed-0009b");
    harness.feed_jsonl(&corrected).unwrap();
    assert_eq!(
        chart(&harness)["pendingOrders"],
        json!({"lab": 0, "imaging": 0})
    );
    assert_eq!(chart(&harness)["unreadResults"], 1);
}

#[test]
fn a_view_before_the_report_leaves_it_read() {
    let mut harness = Harness::<PatientPlugin>::new();
    let lines: Vec<&str> = SEED.lines().collect();
    harness.feed_jsonl(lines[10]).unwrap(); // viewed
    harness.feed_jsonl(lines[8]).unwrap(); // then available
    assert_eq!(chart(&harness)["unreadResults"], 0);
}

#[test]
fn events_before_patient_created_keep_their_effects() {
    let mut harness = Harness::<PatientPlugin>::new();
    let lines: Vec<&str> = SEED.lines().collect();
    harness.feed_jsonl(lines[7]).unwrap(); // lab order first
    harness.feed_jsonl(lines[0]).unwrap(); // then created
    let chart = chart(&harness);
    assert_eq!(chart["pendingOrders"]["lab"], 1);
    assert_eq!(chart["mrn"], "MRN-100234");
}

#[test]
fn replaying_the_flow_changes_nothing() {
    let mut harness = seeded();
    let before = chart(&harness);
    harness.feed_jsonl(SEED).unwrap();
    assert_eq!(chart(&harness), before);
}

/// A chart after `patient.allergy.added` with these payload fields.
fn with_allergy(fields: Value) -> Value {
    let mut payload = json!({
        "allergyId": "a-1", "reaction": "",
        "substance": { "system": "http://snomed.info/sct", "code": "91936005", "display": "Penicillin" },
    });
    payload
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let event = json!({
        "eventId": "e-1", "eventType": "patient.allergy.added", "timestamp": "2026-11-26T08:00:00Z",
        "patientId": "p-1", "userId": "u-1", "portalType": "provider", "payload": payload,
    });
    let mut harness = Harness::<PatientPlugin>::new();
    harness.feed_jsonl(&event.to_string()).unwrap();
    harness.view(CHART, "p-1").unwrap()
}

/// What the host needs to list an allergy as an alert (`host/src/alerts.rs`
/// decides: high criticality, active): its criticality, status and time.
#[test]
fn an_allergy_keeps_its_criticality_status_and_time() {
    let chart = with_allergy(json!({ "criticality": "high" }));
    let allergy = &chart["allergies"][0];
    assert_eq!(allergy["criticality"], "high");
    assert_eq!(allergy["clinicalStatus"], "active", "active unless said");
    assert_eq!(allergy["recordedAt"], "2026-11-26T08:00:00Z");
    let chart = with_allergy(json!({ "criticality": "high", "clinicalStatus": "resolved" }));
    assert_eq!(chart["allergies"][0]["clinicalStatus"], "resolved");
    assert!(with_allergy(json!({}))["allergies"][0]["criticality"].is_null());
}

#[test]
fn an_encounter_of_any_class_counts() {
    let mut harness = Harness::<PatientPlugin>::new();
    for (i, class) in ["AMB", "HH", "VR", "OBSENC", "LOCAL-WARD"]
        .iter()
        .enumerate()
    {
        let event = json!({
            "eventId": format!("e-{i}"), "eventType": "encounter.started", "timestamp": "2026-11-26T08:00:00Z",
            "patientId": "p-1", "userId": "u-1", "portalType": "provider",
            "payload": { "encounterId": format!("enc-{i}"), "providerId": "u-1", "class": class,
                         "startedAt": format!("2026-11-2{i}T08:00:00Z") },
        });
        harness.feed_jsonl(&event.to_string()).unwrap();
    }
    let chart = harness.view(CHART, "p-1").unwrap();
    assert_eq!(chart["encounterSummary"]["count"], 5);
}

/// A vitals reading for p-1 at encounter `encounter`, taken at `at`.
fn vitals(n: u32, encounter: &str, at: &str, vitals: Value) -> String {
    json!({
        "eventId": format!("v-{n}"), "eventType": "encounter.vitals.recorded", "timestamp": at,
        "patientId": "p-1", "userId": "u-nurse", "portalType": "provider",
        "payload": { "encounterId": encounter, "recordedAt": at, "vitals": vitals },
    })
    .to_string()
}

#[test]
fn each_vital_sign_keeps_its_newest_value_and_when_and_where_it_was_taken() {
    let mut harness = Harness::<PatientPlugin>::new();
    let full = json!({ "heartRate": 112, "systolic": 95, "diastolic": 60, "respiratoryRate": 24,
                       "temperatureC": 38.9, "spo2": 93 });
    harness
        .feed_jsonl(&vitals(1, "enc-1", "2026-11-26T09:00:00Z", full))
        .unwrap();
    // A heart rate alone, later: the rest stay as they were.
    harness
        .feed_jsonl(&vitals(
            2,
            "enc-2",
            "2026-11-26T10:00:00Z",
            json!({ "heartRate": 88 }),
        ))
        .unwrap();
    // An older reading, arriving last: it replaces nothing newer, and fills
    // in what had never been measured.
    harness
        .feed_jsonl(&vitals(
            3,
            "enc-0",
            "2026-11-26T08:00:00Z",
            json!({ "heartRate": 70, "systolic": 120, "weightKg": 81.5 }),
        ))
        .unwrap();
    let latest = &harness.view(CHART, "p-1").unwrap()["latestVitals"];
    assert_eq!(latest["recordedAt"], "2026-11-26T10:00:00Z");
    assert_eq!(
        latest["heartRate"],
        json!({ "value": 88.0, "recordedAt": "2026-11-26T10:00:00Z", "encounterId": "enc-2" })
    );
    assert_eq!(
        latest["systolic"],
        json!({ "value": 95.0, "recordedAt": "2026-11-26T09:00:00Z", "encounterId": "enc-1" })
    );
    for kept in ["diastolic", "respiratoryRate", "temperatureC", "spo2"] {
        assert_eq!(latest[kept]["encounterId"], "enc-1", "{kept} kept");
    }
    assert_eq!(
        latest["weightKg"],
        json!({ "value": 81.5, "recordedAt": "2026-11-26T08:00:00Z", "encounterId": "enc-0" })
    );
    assert!(latest.get("heightCm").is_none(), "never measured");
}

/// Issue 15: unread results per kind beside the total; the imaging report
/// is read by `radiology.report.viewed`, once however often it is viewed.
#[test]
fn unread_results_are_counted_per_kind_and_an_imaging_view_reads_one() {
    let mut harness = seeded();
    assert_eq!(chart(&harness)["unreadResults"], 1);
    assert_eq!(
        chart(&harness)["unreadResultsByKind"],
        json!({"lab": 0, "imaging": 1})
    );
    for id in ["v-1", "v-2"] {
        let viewed = json!({
            "eventId": id, "eventType": "radiology.report.viewed", "timestamp": "2026-11-27T08:00:00Z",
            "patientId": "p-john-doe", "userId": "u-portal", "portalType": "provider",
            "payload": { "reportId": "rep-rad-1", "viewedBy": "u-dr-smith" },
        });
        harness.feed_jsonl(&viewed.to_string()).unwrap();
        assert_eq!(chart(&harness)["unreadResults"], 0);
        assert_eq!(
            chart(&harness)["unreadResultsByKind"],
            json!({"lab": 0, "imaging": 0})
        );
    }
}

/// Issue 15: diagnoses are told apart by system and code, and each shows
/// the newest encounter that made it; an older encounter changes nothing.
#[test]
fn diagnoses_are_keyed_by_system_and_code_with_their_encounter() {
    let completed = |id: &str, encounter: &str, ended: &str, diagnoses: Value| {
        json!({
            "eventId": id, "eventType": "encounter.completed", "timestamp": ended,
            "patientId": "p-1", "userId": "u-1", "portalType": "provider",
            "payload": { "encounterId": encounter, "endedAt": ended, "diagnoses": diagnoses },
        })
        .to_string()
    };
    let snomed = json!({ "system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension" });
    let icd = json!({ "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "38341003", "display": "Not the same" });
    let mut harness = Harness::<PatientPlugin>::new();
    for line in [
        completed("e-1", "enc-2", "2026-11-27T10:00:00Z", json!([snomed, icd])),
        completed("e-2", "enc-1", "2026-11-20T10:00:00Z", json!([snomed])),
    ] {
        harness.feed_jsonl(&line).unwrap();
    }
    let diagnoses = harness.view(CHART, "p-1").unwrap()["activeDiagnoses"].clone();
    let listed: Vec<(&str, &str, &str)> = diagnoses
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["system"].as_str().unwrap(),
                d["code"].as_str().unwrap(),
                d["encounterId"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("http://snomed.info/sct", "38341003", "enc-2"),
            ("http://hl7.org/fhir/sid/icd-10-cm", "38341003", "enc-2"),
        ]
    );
}
