//! Processed events are kept for `PROCESSED_RETENTION`: the sweep deletes
//! the rows of days before it and keeps the rest, and an event published
//! again after its row is gone is applied again, while one within the
//! horizon is still recognised. Settled notifications and the raw bytes of
//! settled dead letters go after their own horizons; what still needs
//! someone stays, and the audit log is never swept.

use std::time::Duration;

use crate::common::{SEED, TestEnv};
use projector::store::retention::{sweep_notifications, sweep_processed, sweep_settled_raw};
use sqlx::PgPool;

async fn applied(pool: &PgPool, plugin: &str) -> i64 {
    sqlx::query_scalar("SELECT sum(applied)::bigint FROM checkpoints WHERE plugin = $1")
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
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_notifications_and_settled_raw_bytes_go_the_rest_stays() {
    const MONTH: Duration = Duration::from_secs(30 * 86_400);
    let env = TestEnv::new("retention_outbox").await;
    env.publish(SEED).await;
    // A malformed message: a dead letter of the lab plugin.
    env.publisher()
        .publish_raw("lab.result.available", Some("bad"), b"{not json".to_vec())
        .await
        .unwrap();
    let host = env.start().await;
    env.settle(&host).await;
    let pool = env.pool().await;
    crate::common::eventually("every notification is pushed", || async {
        (count(
            &pool,
            "SELECT count(*) FROM notifications WHERE pushed_at IS NULL",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    let urgent = count(
        &pool,
        "SELECT count(*) FROM notifications WHERE requires_ack",
    )
    .await;
    assert!(urgent >= 2, "the seed raises critical alerts");
    let audits = count(&pool, "SELECT count(*) FROM audit_log").await;

    // Everything is 40 days old; one urgent alert was acknowledged, the
    // others still wait for someone.
    sqlx::query("UPDATE notifications SET created_at = now() - interval '40 days'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE notifications SET acknowledged_at = now() WHERE notification_id =
            (SELECT notification_id FROM notifications WHERE requires_ack ORDER BY seq LIMIT 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let total = count(&pool, "SELECT count(*) FROM notifications").await;
    let swept = sweep_notifications(&pool, MONTH).await.unwrap();
    assert_eq!(
        swept as i64,
        total - (urgent - 1),
        "all but the unacknowledged"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM notifications WHERE requires_ack AND acknowledged_at IS NULL"
        )
        .await,
        urgent - 1
    );
    assert_eq!(sweep_notifications(&pool, MONTH).await.unwrap(), 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM audit_log").await,
        audits,
        "audit untouched"
    );

    // The dead letter, discarded 40 days ago, loses its bytes, not its record;
    // a letter still dead keeps them.
    let letters = count(&pool, "SELECT count(*) FROM dead_letters").await;
    assert!(letters >= 1);
    sqlx::query(
        "UPDATE dead_letters SET status = 'discarded', updated_at = now() - interval '40 days'
         WHERE id = (SELECT min(id) FROM dead_letters)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(sweep_settled_raw(&pool, MONTH).await.unwrap(), 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM dead_letters WHERE length(raw) = 0 AND reason <> ''"
        )
        .await,
        1
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM dead_letters").await,
        letters
    );
    assert_eq!(sweep_settled_raw(&pool, MONTH).await.unwrap(), 0);
    host.stop();
}
