//! A batch PostgreSQL refuses: its events, and everything the pull had
//! taken beyond it, come again in order once the database takes writes
//! again. Nothing is lost and no patient's events are applied out of order.

use std::time::Duration;

use crate::common::{
    TestEnv, as_sent, assert_same_documents, eventually, own_plugins, view_documents,
};
use patient::PatientPlugin;
use projector::sim::Simulator;
use projector_sdk::Plugin;
use projector_sdk::testing::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_loses_nothing_and_keeps_each_patients_order() {
    let mut env = TestEnv::new("refused").await;
    env.config.plugins_dir = own_plugins(&env.tag, &["patient"]);
    env.config.batch_size = 50;
    let events = Simulator::new(31, chrono::Utc::now() - chrono::Duration::days(1)).traffic(150);
    let (before, after) = events.split_at(events.len() / 3);
    let host = env.start().await;
    let pool = env.pool().await;
    let mut publisher = env.publisher();
    for event in before {
        publisher.publish(event).await.unwrap();
    }
    publisher.flush().await.unwrap();
    env.settle(&host).await;

    // The chart's table is away: every batch fails until it is back.
    sqlx::query("ALTER TABLE view_patient_chart RENAME TO view_patient_chart_away")
        .execute(&pool)
        .await
        .unwrap();
    for event in after {
        publisher.publish(event).await.unwrap();
    }
    publisher.flush().await.unwrap();
    eventually("the patient projection failing", || async {
        (host.registry.get("patient")?.describe().0 == "retrying").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::query("ALTER TABLE view_patient_chart_away RENAME TO view_patient_chart")
        .execute(&pool)
        .await
        .unwrap();

    env.settle(&host).await;
    let mut expected = Harness::<PatientPlugin>::new();
    for event in &events {
        expected.feed(&as_sent(event)).unwrap();
    }
    for view in PatientPlugin::describe().views {
        assert_same_documents(
            &view.name,
            &view_documents(&pool, &view.name).await,
            &expected.documents(&view.name),
        );
    }
    host.stop();
}
