//! Each batch projects while the one before it commits. Whatever becomes of
//! the batch before, the views end as if the batches had run one after the
//! other.

use std::collections::HashSet;

use crate::common::{
    TestEnv, as_sent, assert_same_documents, big_allergy, own_plugins, view_documents,
};
use patient::PatientPlugin;
use projector::sim::Simulator;
use projector_sdk::Plugin as _;
use projector_sdk::testing::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_cannot_be_stored_is_split_while_batches_overlap() {
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
    let mut events = Vec::new();
    let mut bigs = 0;
    for (i, event) in traffic.iter().enumerate() {
        events.push(as_sent(event));
        if i % 7 == 6 && bigs < 5 {
            bigs += 1;
            events.push(big_allergy(&heavy, bigs));
        }
    }
    let mut publisher = env.publisher();
    for event in &events {
        publisher.publish(event).await.unwrap();
    }
    publisher.flush().await.unwrap();

    // What running them one at a time gives: the fifth is a dead letter,
    // and its patient's later events park behind it.
    let mut reference = Harness::<PatientPlugin>::new();
    let mut parked = 0;
    let mut poisoned = HashSet::new();
    for event in &events {
        let patient = event.envelope.patient_id.as_str();
        if poisoned.contains(patient) {
            parked += 1;
        } else if event.envelope.event_id.as_str() == "big-5" {
            poisoned.insert(patient.to_owned());
        } else {
            reference.feed(event).unwrap();
        }
    }
    assert!(parked > 0, "the heavy patient has events after the fifth");

    let host = env.start().await;
    env.settle(&host).await;
    let pool = env.pool().await;
    for view in PatientPlugin::describe().views {
        let stored = view_documents(&pool, &view.name).await;
        assert_same_documents(&view.name, &stored, &reference.documents(&view.name));
    }
    let letters: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, reason FROM dead_letters ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, "big-5");
    assert!(letters[0].1.contains("over the limit"), "{}", letters[0].1);
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(waiting, parked);
    host.stop();
}
