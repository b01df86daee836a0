//! Events that are bad in themselves, and outcomes a plugin should never
//! return: each becomes a dead letter with a reason that names what is
//! wrong, its neighbours in the batch are applied, and no projection stalls.

use crate::common::{TestEnv, eventually, own_plugins, plugins_dir, view_documents};
use projector::serve::Host;
use serde_json::{Value, json};

/// A `patient.created` for `patient` with `family` as family name and `mrn`,
/// published under `event_id`.
fn patient_created(event_id: &str, patient: &str, family: &str, mrn: &str) -> String {
    json!({
        "eventId": event_id, "eventType": "patient.created", "timestamp": "2026-11-26T08:00:00Z",
        "patientId": patient, "userId": "u-admin", "portalType": "admin",
        "payload": { "mrn": mrn, "name": { "given": "Test", "family": family },
                     "birthDate": "1970-01-01", "gender": "female" },
    })
    .to_string()
}

/// Publishes JSON texts on `patient.created` in order.
async fn publish_patients(env: &TestEnv, texts: &[String]) {
    let mut publisher = env.publisher();
    for (i, text) in texts.iter().enumerate() {
        publisher
            .publish_raw(
                "patient.created",
                Some(&format!("msg-{i}")),
                text.clone().into_bytes(),
            )
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
}

/// A plugin's dead letters, oldest first.
async fn dead_letters(env: &TestEnv, host: &Host, plugin: &str) -> Vec<Value> {
    let admin = env.token("u-admin", "admin");
    let (status, letters) = env
        .get(
            host,
            &format!("/api/dead-letters?plugin={plugin}"),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{letters}");
    let mut letters = letters.as_array().unwrap().clone();
    letters.reverse();
    letters
}

fn reasons(letters: &[Value]) -> Vec<&str> {
    letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_database_cannot_store_is_a_dead_letter_and_its_batch_applies() {
    let mut env = TestEnv::new("unstorable").await;
    env.config.plugins_dir = own_plugins(&env.tag, &["patient"]);
    let mut texts: Vec<String> = (0..20)
        .map(|i| patient_created(&format!("e-{i}"), &format!("p-{i}"), "Valid", "MRN"))
        .collect();
    // Valid JSON all three; PostgreSQL could store none of them.
    texts.push(r#"{"eventId":"e-nul-name","eventType":"patient.created","timestamp":"2026-11-26T08:00:00Z","patientId":"p-nul-name","userId":"u-admin","portalType":"admin","payload":{"mrn":"M","name":{"given":"A","family":"Do\u0000e"},"birthDate":"1970-01-01","gender":"male"}}"#.to_owned());
    texts.push(r#"{"eventId":"e-nul\u0000id","eventType":"patient.created","timestamp":"2026-11-26T08:00:00Z","patientId":"p-nul-id","userId":"u-admin","portalType":"admin","payload":{"mrn":"M","name":{"given":"A","family":"B"},"birthDate":"1970-01-01","gender":"male"}}"#.to_owned());
    texts.push(patient_created("e-long", &"p".repeat(200), "Long", "MRN"));
    texts.push(patient_created("e-last", "p-last", "Last", "MRN"));
    publish_patients(&env, &texts).await;

    let host = env.start().await;
    env.settle(&host).await;
    let pool = env.pool().await;
    let charts = view_documents(&pool, "patient_chart").await;
    let mut expected: Vec<String> = (0..20).map(|i| format!("p-{i}")).collect();
    expected.push("p-last".into());
    expected.sort();
    assert_eq!(charts.keys().cloned().collect::<Vec<_>>(), expected);
    assert_eq!(charts["p-last"]["name"]["family"], "Last");

    let letters = dead_letters(&env, &host, "patient").await;
    assert_eq!(
        reasons(&letters),
        [
            "event cannot be stored: $.payload.name.family holds U+0000",
            "event cannot be stored: $.eventId holds U+0000",
            "event cannot be stored: patientId is 200 bytes, over the limit of 128",
        ]
    );
    let raw = hex::decode(letters[1]["rawHex"].as_str().unwrap()).unwrap();
    assert_eq!(raw, texts[21].as_bytes(), "the raw bytes are kept exactly");
    assert_eq!(
        host.registry.get("patient").unwrap().describe().0,
        "running"
    );
    host.stop();
}

/// JSON lets a field be named twice, and readers disagree on it: the
/// partition read refused a second `patientId` (so the event went to the
/// empty id's partition) while the envelope took the last, so one host
/// could apply a patient's event while another applied the rest of that
/// patient's. Neither is a guess worth making with a chart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_names_a_field_twice_is_a_dead_letter_not_a_guess() {
    let mut env = TestEnv::new("twice").await;
    env.config.plugins_dir = own_plugins(&env.tag, &["patient"]);
    let two_patients = patient_created("e-two-patients", "p-first", "Two", "MRN").replace(
        r#""userId":"u-admin""#,
        r#""userId":"u-admin","patientId":"p-second""#,
    );
    let two_mrns = patient_created("e-two-mrns", "p-mrns", "Mrns", "MRN-1")
        .replace(r#""mrn":"MRN-1""#, r#""mrn":"MRN-1","mrn":"MRN-2""#);
    let texts = [
        patient_created("e-before", "p-before", "Before", "MRN"),
        two_patients,
        two_mrns,
        patient_created("e-after", "p-after", "After", "MRN"),
    ];
    publish_patients(&env, &texts).await;

    let host = env.start().await;
    env.settle(&host).await;
    let charts = view_documents(&env.pool().await, "patient_chart").await;
    assert_eq!(
        charts.keys().map(String::as_str).collect::<Vec<_>>(),
        ["p-after", "p-before"],
        "no chart for a patient named in an ambiguous event"
    );
    let letters = dead_letters(&env, &host, "patient").await;
    let reasons = reasons(&letters);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("invalid envelope: duplicate field `patientId`"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("invalid payload for patient.created: duplicate field `mrn`"),
        "{reasons:?}"
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_over_a_limit_is_a_dead_letter_that_names_the_limit() {
    let mut env = TestEnv::new("limits").await;
    let dir = own_plugins(&env.tag, &[]);
    std::fs::copy(
        plugins_dir().join("testing/hostile.wasm"),
        dir.join("hostile.wasm"),
    )
    .unwrap();
    env.config.plugins_dir = dir;
    let attacks = [
        ("deep-path", "path is 199999 bytes, over the limit of 256"),
        (
            "many-mutations",
            "outcome has 5001 mutations, over the limit of 1000",
        ),
        ("nul", "a document: $.name holds U+0000"),
        ("huge", "bytes of JSON, over the limit of 1048576 per event"),
        ("move:p-victim", "from patient `p-victim` to `p-move`"),
        // The fifth of five: each adds 900 KiB to the same document, and the
        // database's limit of 4 MiB is found by splitting the batch.
        ("grow", "would be 4608"),
    ];
    let mut texts = vec![patient_created("e-victim", "p-victim", "Victim", "MRN-V")];
    for (i, (mrn, _)) in attacks.iter().enumerate() {
        let patient = format!("p-{}", mrn.split(':').next().unwrap());
        if *mrn == "grow" {
            for g in 0..4 {
                texts.push(patient_created(&format!("e-grow-{g}"), &patient, "X", mrn));
            }
        }
        texts.push(patient_created(
            &format!("e-attack-{i}"),
            &patient,
            "X",
            mrn,
        ));
        texts.push(patient_created(
            &format!("e-after-{i}"),
            &format!("p-after-{i}"),
            "Y",
            "MRN",
        ));
    }
    publish_patients(&env, &texts).await;

    let host = env.start().await;
    env.settle(&host).await;
    let letters = dead_letters(&env, &host, "hostile").await;
    assert_eq!(letters.len(), attacks.len(), "{:?}", reasons(&letters));
    for (letter, (mrn, reason)) in letters.iter().zip(&attacks) {
        let got = letter["reason"].as_str().unwrap();
        assert!(got.contains(reason), "{mrn}: `{got}` lacks `{reason}`");
    }
    let pool = env.pool().await;
    let seen = view_documents(&pool, "hostile_seen").await;
    for i in 0..attacks.len() {
        assert!(
            seen.contains_key(&format!("p-after-{i}")),
            "p-after-{i} missing"
        );
    }
    assert_eq!(
        seen["p-victim"],
        json!({ "patientId": "p-victim", "mrn": "MRN-V" })
    );
    // The victim, those after each attack, and the one that grew in time.
    assert_eq!(seen.len(), attacks.len() + 2, "{:?}", seen.keys());
    assert_eq!(seen["p-grow"]["padding"].as_array().map(Vec::len), Some(4));
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_systems_identical_numbers_for_two_patients_never_meet() {
    let env = TestEnv::new("collide").await;
    let event = |id: &str, kind: &str, patient: &str, payload: Value| {
        json!({
            "eventId": id, "eventType": kind, "timestamp": "2026-11-26T09:00:00Z",
            "patientId": patient, "userId": "u-dr", "portalType": "provider", "payload": payload,
        })
        .to_string()
    };
    let potassium =
        json!({ "system": "http://loinc.org", "code": "2823-3", "display": "Potassium" });
    let lines = [
        event(
            "c1",
            "lab.order.created",
            "p-x",
            json!({
            "orderId": "ord-1", "orderingProviderId": "u-dr", "tests": [potassium], "priority": "routine" }),
        ),
        event(
            "c2",
            "radiology.order.created",
            "p-y",
            json!({
            "orderId": "ord-1", "orderingProviderId": "u-dr", "modality": "CT", "priority": "routine",
            "procedure": { "system": "http://snomed.info/sct", "code": "169069000", "display": "CT of chest" } }),
        ),
        event(
            "c3",
            "lab.result.available",
            "p-x",
            json!({
            "reportId": "rep-1", "orderId": "ord-1", "orderingProviderId": "u-dr",
            "issuedAt": "2026-11-26T09:30:00Z",
            "results": [{ "code": potassium, "value": 4.1, "unit": "mmol/L", "referenceRange": "3.5-5.1",
                          "interpretation": "N", "critical": false }] }),
        ),
        // Published under p-y, naming p-x's report.
        event(
            "c4",
            "lab.result.viewed",
            "p-y",
            json!({ "reportId": "rep-1", "viewedBy": "u-dr" }),
        ),
    ];
    env.publish(&lines.join("\n")).await;
    let host = env.start().await;
    env.settle(&host).await;

    let nurse = env.token("u-nurse", "nurse");
    let chart = |patient: &'static str| {
        let (env, host, nurse) = (&env, &host, &nurse);
        async move {
            let (status, chart) = env
                .get(
                    host,
                    &format!("/api/aggregate/patients/{patient}"),
                    Some(nurse),
                )
                .await;
            assert_eq!(status, 200, "{chart}");
            chart
        }
    };
    let (x, y) = (chart("p-x").await, chart("p-y").await);
    assert_eq!(x["pendingOrders"]["lab"], 0, "x's order was resulted");
    assert_eq!(
        y["pendingOrders"]["imaging"], 1,
        "y's order is still pending"
    );
    assert_eq!(
        x["unreadResults"], 1,
        "y viewing a report of that number is not x reading hers"
    );

    let (_, x_labs) = env
        .get(&host, "/api/aggregate/patients/p-x/labs", Some(&nurse))
        .await;
    let x_labs = x_labs.as_array().cloned().unwrap_or_default();
    assert_eq!(x_labs.len(), 1, "{x_labs:?}");
    assert_eq!(x_labs[0]["patientId"], "p-x");
    assert_eq!(x_labs[0]["results"][0]["value"], 4.1);
    let (_, y_labs) = env
        .get(&host, "/api/aggregate/patients/p-y/labs", Some(&nurse))
        .await;
    assert!(
        y_labs
            .as_array()
            .is_none_or(|labs| labs.iter().all(|l| l["results"].is_null())),
        "none of x's results shows in y's labs: {y_labs}"
    );
    let (_, y_imaging) = env
        .get(&host, "/api/aggregate/patients/p-y/imaging", Some(&nurse))
        .await;
    assert!(y_imaging.is_array(), "{y_imaging}");
    eventually("no dead letters", || async {
        let admin = env.token("u-admin", "admin");
        let (_, letters) = env.get(&host, "/api/dead-letters", Some(&admin)).await;
        letters.as_array()?.is_empty().then_some(())
    })
    .await;
    host.stop();
}
