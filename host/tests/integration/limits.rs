//! Issue 14, fair use: one client, one device or one slow query cannot
//! starve the projections or other clinicians, and a push outage cannot
//! grow the host's memory. Each over real PostgreSQL, NATS and clients.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::clients::{PATIENCE, SocketIo, WebSocket, drain, take};
use crate::common::{PrivateNats, SEED, TestEnv, eventually, view_document};

const PROVIDER: &str = "u-dr-smith";

/// Reads a view while another transaction holds it locked: the API's reads
/// end with a 503 at its statement timeout, however many there are, and
/// the projections keep their own connections meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_view_times_out_its_readers_and_leaves_the_projections_their_connections() {
    let mut env = TestEnv::new("limits_pools").await;
    env.config.api_db_connections = 2;
    env.config.api_statement_timeout = Duration::from_secs(2);
    let host = env.start().await;
    let pool = env.pool().await;
    let token = env.token(PROVIDER, "provider");

    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE view_lab_results IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // More readers than the projections' pool (16) has connections, so
    // with one pool for all they would hold every one of them.
    let client = reqwest::Client::new();
    let labs = format!(
        "http://{}/api/aggregate/patients/p-john-doe/labs",
        host.http_addr
    );
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let request = client.get(&labs).bearer_auth(&token).send();
            tokio::spawn(async move {
                let response = request.await.expect("an answer");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap_or_default())
            })
        })
        .collect();

    // Meanwhile, another plugin's events are applied.
    env.publish(SEED.lines().next().unwrap()).await;
    let chart = view_document(&pool, "patient_chart", "p-john-doe").await;
    assert_eq!(chart["mrn"], "MRN-100234");

    let answers = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(readers))
        .await
        .expect("the blocked reads end rather than hang");
    for answer in answers {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(
            ["query_timeout", "database_busy"].contains(&body["code"].as_str().unwrap_or("")),
            "{body}"
        );
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("try again")),
            "{body}"
        );
    }

    lock.rollback().await.unwrap();
    let (status, records) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/labs",
            Some(&token),
        )
        .await;
    assert_eq!((status, records), (200, json!([])));
    host.stop();
}
