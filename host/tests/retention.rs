//! Processed events are kept for `PROCESSED_RETENTION`: the sweep deletes
//! the rows of days before it and keeps the rest, and an event published
//! again after its row is gone is applied again, while one within the
//! horizon is still recognised.

mod common;

use std::time::Duration;

use common::{SEED, TestEnv};
use projector::store::retention::sweep_processed;
use sqlx::PgPool;

async fn applied(pool: &PgPool, plugin: &str) -> i64 {
    sqlx::query_scalar("SELECT applied FROM checkpoints WHERE plugin = $1")
        .bind(plugin)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_past_the_horizon_are_swept_and_the_rest_kept() {
    let env = TestEnv::new("retention").await;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let pool = env.pool().await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    // The lab plugin's rows were applied 40 days ago, one of the patient
    // plugin's 30 days ago: only the lab's are past a 30-day horizon.
    let old =
        sqlx::query("UPDATE processed_events SET day = current_date - 40 WHERE plugin = 'lab'")
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
    assert!(old > 0);
    sqlx::query(
        "UPDATE processed_events SET day = current_date - 30
         WHERE plugin = 'patient' AND event_id = 'seed-0011'",
    )
    .execute(&pool)
    .await
    .unwrap();

    let swept = sweep_processed(&pool, Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(swept, old);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, total - old as i64);
    assert_eq!(
        sweep_processed(&pool, Duration::from_secs(30 * 86_400))
            .await
            .unwrap(),
        0
    );

    // The same event again, under a new message id: past the horizon for
    // the lab plugin (applied again), within it for the patient plugin.
    let (lab, patient) = (applied(&pool, "lab").await, applied(&pool, "patient").await);
    let viewed = SEED.lines().find(|l| l.contains("\"seed-0011\"")).unwrap();
    env.publisher()
        .publish_raw(
            "lab.result.viewed",
            Some("again"),
            viewed.as_bytes().to_vec(),
        )
        .await
        .unwrap();
    env.settle(&host).await;
    assert_eq!(
        applied(&pool, "lab").await,
        lab + 1,
        "past the horizon: applied again"
    );
    assert_eq!(
        applied(&pool, "patient").await,
        patient,
        "within it: recognised"
    );
    host.stop();
    env.cleanup().await;
}
