//! Each batch projects while the one before it commits. Whatever becomes of
//! the batch before, the views end as if the batches had run one after the
//! other.

use std::collections::HashSet;

use crate::common::{
    TestEnv, as_sent, assert_same_documents, big_allergy, event_json, own_plugins, view_documents,
};
use patient::PatientPlugin;
use projector::sim::Simulator;
use projector_events::{Envelope, Event};
use projector_sdk::Plugin as _;
use projector_sdk::testing::Harness;
use serde_json::json;

/// An event of `patient` of type `kind` with `payload`, under `id`.
fn event(id: &str, kind: &str, patient: &str, payload: serde_json::Value) -> Event {
    Envelope::parse(event_json(id, kind, patient, payload).as_bytes()).unwrap()
}

/// `patient.created` for a test patient named `family`.
fn created(id: &str, patient: &str, mrn: &str, family: &str) -> Event {
    let payload = json!({
        "mrn": mrn, "name": { "given": "Test", "family": family },
        "birthDate": "1970-01-01", "gender": "female" });
    event(id, "patient.created", patient, payload)
}

/// A mild aspirin allergy of `patient`.
fn allergy(id: &str, patient: &str, allergy_id: &str) -> Event {
    let payload = json!({
        "allergyId": allergy_id, "reaction": "Rash", "severity": "mild", "criticality": "low",
        "substance": { "system": "http://snomed.info/sct", "code": "387458008", "display": "Aspirin" } });
    event(id, "patient.allergy.added", patient, payload)
}

/// Makes PostgreSQL refuse, for its content (SQLSTATE 22000), any chart of
/// a patient whose family name is `Refused`: a refusal only the database
/// raises, inside a running transaction.
const REFUSE_MARKED_CHARTS: [&str; 2] = [
    "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF NEW.doc -> 'name' ->> 'family' = 'Refused' THEN
         RAISE EXCEPTION 'a chart this test refuses' USING ERRCODE = '22000';
       END IF;
       RETURN NEW;
     END $$",
    "CREATE TRIGGER refuse_marked BEFORE INSERT OR UPDATE ON view_patient_chart
     FOR EACH ROW EXECUTE FUNCTION refuse_marked()",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_the_database_refuses_are_split_while_the_next_ones_overlap() {
    let mut env = TestEnv::new("overlap").await;
    env.config.plugins_dir = own_plugins(&env.tag, &["patient"]);
    env.config.batch_size = 20;
    let traffic = Simulator::new(23, chrono::Utc::now() - chrono::Duration::days(1)).traffic(60);
    // One patient's allergies of 900 KiB each, spread over the first
    // batches next to other patients' events: the fifth takes its chart over
    // the size a document may hold, so the batch that holds it, projected
    // while the one before committed, is split until the fifth stands alone
    // as a dead letter, and the batches after it start from what it really
    // committed.
    let heavy = traffic[0].envelope.patient_id.to_string();
    // And halfway, a patient whose chart the database itself refuses,
    // inside the running transaction of a batch the next one is (under
    // this backlog, most likely) being projected behind; an allergy of
    // theirs after it parks. Whether the next batch is projected again or
    // its stale documents are caught by the row versions, the views must
    // end the same.
    let marked = [
        created("refused", "p-refused", "MRN-R", "Refused"),
        allergy("refused-later", "p-refused", "a-r"),
    ];
    let straddle = |n: usize| allergy(&format!("straddle-{n}"), "p-straddle", &format!("s-{n}"));
    let mut events = Vec::new();
    let mut bigs = 0;
    for (i, sent) in traffic.iter().enumerate() {
        events.push(as_sent(sent));
        if i % 7 == 6 && bigs < 5 {
            bigs += 1;
            events.push(big_allergy(&heavy, bigs));
        }
        if i == traffic.len() / 2 {
            // Amid a patient's run of events longer than a batch, so the
            // batch after the refused one reads a chart that one wrote.
            events.push(created("straddle-0", "p-straddle", "MRN-S", "Straddle"));
            events.extend((1..=25).map(straddle));
            events.push(marked[0].clone());
            events.extend((26..=50).map(straddle));
        }
        if i == traffic.len() * 3 / 4 {
            events.push(marked[1].clone());
        }
    }
    // The whole backlog waits until the refusal is in place.
    let host = env.start().await;
    let projection = host.registry.get("patient").unwrap();
    projection.controls.set_paused(true);
    let pool = env.pool().await;
    for sql in REFUSE_MARKED_CHARTS {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let mut publisher = env.publisher();
    for event in &events {
        publisher.publish(event).await.unwrap();
    }
    publisher.flush().await.unwrap();

    // What running them one at a time gives: the fifth big allergy and the
    // refused chart are dead letters, and their patients' later events park
    // behind them.
    let mut reference = Harness::<PatientPlugin>::new();
    let mut parked = 0;
    let mut poisoned = HashSet::new();
    for event in &events {
        let patient = event.envelope.patient_id.as_str();
        if poisoned.contains(patient) {
            parked += 1;
        } else if ["big-5", "refused"].contains(&event.envelope.event_id.as_str()) {
            poisoned.insert(patient.to_owned());
        } else {
            reference.feed(event).unwrap();
        }
    }
    assert!(
        parked > 1,
        "both patients have events after their refused one"
    );

    projection.controls.set_paused(false);
    env.settle(&host).await;
    for view in PatientPlugin::describe().views {
        let stored = view_documents(&pool, &view.name).await;
        assert_same_documents(&view.name, &stored, &reference.documents(&view.name));
    }
    let letters: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, reason FROM dead_letters ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let reason = |id: &str| &letters.iter().find(|(e, _)| e == id).unwrap().1;
    assert!(reason("big-5").contains("over the limit"), "{letters:?}");
    assert!(
        reason("refused").contains("a chart this test refuses"),
        "{letters:?}"
    );
    // One host, one writer: no batch met a document changed under it. One
    // projected over a stale document (a batch before that did not commit
    // as it was projected) would have, and been projected again.
    let conflicts = crate::common::metrics(&host).await;
    let conflicts = conflicts
        .lines()
        .find(|l| l.starts_with("projector_batch_conflicts_total{plugin=\"patient\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .expect("the patient plugin's conflicts are counted");
    assert_eq!(
        conflicts, "0",
        "batches projected again for a changed document"
    );
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(waiting, parked);
    host.stop();
}
