//! Issue 14, fair use: one client, one device or one slow query cannot
//! starve the projections or other clinicians, and a push outage cannot
//! grow the host's memory. Each over real PostgreSQL, NATS and clients.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::clients::{PATIENCE, SocketIo, WebSocket, drain, take};
use crate::common::{PrivateNats, SEED, TestEnv, eventually, view_document};

const PROVIDER: &str = "u-dr-smith";

/// The audit entries of a socket `action`, once there are `count`: each
/// one's device and detail, in order.
async fn socket_audit(pool: &PgPool, action: &str, count: usize) -> Vec<(String, String)> {
    eventually(&format!("{count} `{action}` audited"), || async move {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT resource_id, detail FROM audit_log
             WHERE resource_type = 'Socket' AND action = $1 ORDER BY id",
        )
        .bind(action)
        .fetch_all(pool)
        .await
        .ok()?;
        (rows.len() >= count).then_some(rows)
    })
    .await
}

/// Stores notifications `1..=count` of `user` as a projection would have,
/// already pushed (they are history); the first is an urgent one nobody
/// acknowledged.
async fn history(pool: &PgPool, user: &str, count: i64) {
    sqlx::query(
        "INSERT INTO notifications (notification_id, user_id, seq, event_id, patient_id, kind,
                                    priority, requires_ack, dedupe_key, body, event_at, created_at, pushed_at)
         SELECT gen_random_uuid(), $1, s, 'e-' || s, 'p-1', k.kind, k.priority, s = 1, 'k-' || s,
                jsonb_build_object('type', k.kind, 'priority', k.priority), now(), now(), now()
         FROM generate_series(1, $2::bigint) AS s,
              LATERAL (SELECT CASE WHEN s = 1 THEN 'critical_lab_value' ELSE 'lab_result_available' END AS kind,
                              CASE WHEN s = 1 THEN 'urgent' ELSE 'normal' END AS priority) AS k",
    )
    .bind(user)
    .bind(count)
    .execute(pool)
    .await
    .expect("notifications stored");
}

fn seqs(events: &[(String, Value)]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|(_, n)| n["seq"].as_i64())
        .collect()
}

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

/// A device away for long gets the newest `REPLAY_LIMIT` it missed, is
/// told which it did not get, and still gets every unacknowledged urgent
/// one; the rest are there over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_away_for_long_gets_the_newest_and_is_told_what_it_missed() {
    let mut env = TestEnv::new("limits_replay").await;
    env.config.replay_limit = 5;
    let host = env.start().await;
    let pool = env.pool().await;
    history(&pool, PROVIDER, 12).await;
    let token = env.token(PROVIDER, "provider");

    let mut phone = WebSocket::connect(host.ws_addr, "lastSeq=0", Some(&token))
        .await
        .expect("accepted");
    let events = take(&mut phone, 7).await;
    assert_eq!(events[0].0, "replay_truncated", "{events:?}");
    assert_eq!(
        events[0].1,
        json!({"userId": PROVIDER, "lastSeq": 0, "firstSeq": 8, "limit": 5}),
        "{events:?}"
    );
    assert_eq!(seqs(&events[1..6]), [8, 9, 10, 11, 12], "{events:?}");
    assert_eq!(
        events[6].0, "critical_alert",
        "the unacknowledged urgent one"
    );
    assert_eq!(events[6].1["seq"], 1);
    assert!(drain(&mut phone, Duration::from_secs(1)).await.is_empty());

    let (status, older) = env
        .get(&host, "/api/notifications?after=0&limit=7", Some(&token))
        .await;
    assert_eq!(status, 200);
    let older: Vec<i64> = older
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["seq"].as_i64())
        .collect();
    assert_eq!(older, [1, 2, 3, 4, 5, 6, 7]);

    let connected = socket_audit(&pool, "socket.connected", 1).await;
    assert_eq!(
        connected[0].1,
        "transport=websocket replayed=5 unacknowledged=1 truncated_before_seq=8"
    );
    host.stop();
}

/// One more device than `MAX_DEVICES_PER_USER` closes the user's oldest,
/// which is told why first; the new one and the others work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_past_the_users_limit_closes_their_oldest() {
    let mut env = TestEnv::new("limits_devices").await;
    env.config.max_devices_per_user = 2;
    let host = env.start().await;
    let pool = env.pool().await;
    let token = env.token(PROVIDER, "provider");

    let mut oldest = WebSocket::connect(host.ws_addr, "deviceId=oldest", Some(&token))
        .await
        .expect("accepted");
    socket_audit(&pool, "socket.connected", 1).await;
    let mut desk = WebSocket::connect(host.ws_addr, "deviceId=desk", Some(&token))
        .await
        .expect("accepted");
    socket_audit(&pool, "socket.connected", 2).await;
    let mut colleague = WebSocket::connect(
        host.ws_addr,
        "deviceId=colleague",
        Some(&env.token("u-nurse-1", "nurse")),
    )
    .await
    .expect("accepted");
    socket_audit(&pool, "socket.connected", 3).await;
    let mut newest =
        SocketIo::connect(host.ws_addr, json!({"token": token, "deviceId": "newest"})).await;

    let (event, notice) = oldest.next_event(PATIENCE).await.expect("told why");
    assert_eq!(event, "session_replaced");
    assert_eq!(notice["maxDevicesPerUser"], 2, "{notice}");
    assert!(oldest.ends(PATIENCE).await, "the oldest is closed");
    let ended = socket_audit(&pool, "socket.disconnected", 1).await;
    assert_eq!(
        ended[0],
        (
            "oldest".to_owned(),
            "reason=the user connected more devices than MAX_DEVICES_PER_USER".to_owned()
        )
    );

    env.publish(SEED).await;
    assert_eq!(take(&mut desk, 6).await.len(), 6);
    assert_eq!(take(&mut newest, 6).await.len(), 6);
    assert!(
        drain(&mut colleague, Duration::from_secs(1))
            .await
            .iter()
            .all(|(e, _)| e != "session_replaced")
    );
    newest.close().await;
    host.stop();
}

/// A message over 64 KiB closes the connection that sent it, on `/ws` and
/// Socket.IO alike; the user's other devices and the host go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_only_its_connection() {
    let env = TestEnv::new("limits_messages").await;
    let host = env.start().await;
    let token = env.token(PROVIDER, "provider");
    let mut sender = WebSocket::connect(host.ws_addr, "deviceId=sender", Some(&token))
        .await
        .expect("accepted");
    let mut socket = SocketIo::connect(host.ws_addr, json!({"token": token})).await;
    let mut bystander = WebSocket::connect(host.ws_addr, "deviceId=bystander", Some(&token))
        .await
        .expect("accepted");

    // Over 64 KiB, under the 100 kB Socket.IO would take by default.
    let oversized = "x".repeat(80 << 10);
    sender
        .send_text(
            json!({"event": "acknowledge", "id": 1, "data": {"notificationId": oversized}})
                .to_string(),
        )
        .await;
    assert!(sender.ends(PATIENCE).await, "the /ws sender is closed");
    socket
        .emit("acknowledge", json!({"notificationId": oversized}))
        .await;
    assert!(
        socket.disconnected(PATIENCE).await,
        "the Socket.IO sender is closed"
    );

    let reply = bystander
        .acknowledge(&uuid::Uuid::new_v4().to_string())
        .await;
    assert_eq!(reply["ok"], false, "answered: {reply}");
    env.publish(SEED).await;
    assert_eq!(take(&mut bystander, 6).await.len(), 6);
    let (status, _) = env.get(&host, "/healthz", None).await;
    assert_eq!(status, 200);
    host.stop();
}

/// Over `API_RATE_BURST`, a user gets 429s with `Retry-After` while
/// another is served; refusals (bad tokens, on the API and `/ws`) are
/// limited by address. What is refused for its rate is not audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_the_rate_gets_429_and_others_are_served() {
    let mut env = TestEnv::new("limits_rate").await;
    env.config.api_rate_per_second = 1.try_into().unwrap();
    env.config.api_rate_burst = 5.try_into().unwrap();
    let host = env.start().await;
    let pool = env.pool().await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/notifications", host.http_addr);

    let burst = |token: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let started = Instant::now();
            let mut answers = Vec::new();
            for _ in 0..30 {
                let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                answers.push((status, retry_after, body));
            }
            (answers, started.elapsed())
        }
    };
    // Within the burst and the average rate over the time it took, no more.
    let allowed_within = |took: Duration| 5 + took.as_secs() as usize + 1;

    let (answers, took) = burst(env.token(PROVIDER, "provider")).await;
    let served = answers.iter().filter(|a| a.0 == 200).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(served + limited.len(), answers.len(), "{answers:?}");
    assert!(
        served >= 5 && served <= allowed_within(took),
        "{served} in {took:?}"
    );
    let (_, retry_after, body) = limited.first().expect("429s");
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert!(body["error"].is_string());
    let (status, _) = env
        .get(
            &host,
            "/api/notifications",
            Some(&env.token("u-nurse-1", "nurse")),
        )
        .await;
    assert_eq!(status, 200, "another user is served");

    let (refusals, took) = burst("not-a-token".into()).await;
    let refused = refusals.iter().filter(|a| a.0 == 401).count();
    let limited = refusals.iter().filter(|a| a.0 == 429).count();
    assert_eq!(refused + limited, refusals.len(), "{refusals:?}");
    assert!(
        refused >= 5 && refused <= allowed_within(took),
        "{refused} in {took:?}"
    );
    let mut ws_limited = 0;
    for _ in 0..20 {
        if WebSocket::connect(host.ws_addr, "token=not-a-token", None)
            .await
            .err()
            == Some(429)
        {
            ws_limited += 1;
        }
    }
    assert!(
        ws_limited > 0,
        "the /ws handshakes share the address's rate of refusals"
    );

    // Only what was within the rates is in the audit trail.
    let audited: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_id, count(*) FROM audit_log WHERE action = 'GET /api/notifications'
         GROUP BY user_id ORDER BY user_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            ("anonymous".to_owned(), refused as i64),
            ("u-dr-smith".to_owned(), served as i64),
            ("u-nurse-1".to_owned(), 1),
        ]
    );
    let (_, metrics) = {
        let response = client
            .get(format!("http://{}/metrics", host.http_addr))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert!(
        metrics.contains("projector_rate_limited_total{limit=\"user\"}"),
        "{metrics}"
    );
    host.stop();
}

/// While NATS is away the push cannot publish: the sweep takes what it
/// finds unpushed, and the push queue, full, refuses the rest, which stay in
/// the outbox (counted) for the next sweep rather than in memory. Once NATS
/// is back, each of them is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_push_queue_loses_nothing() {
    let mut nats = PrivateNats::start(&format!("limits-{}", uuid::Uuid::new_v4().simple())).await;
    let mut env = TestEnv::on_nats("limits_queue", Some(&nats.url())).await;
    env.config.push_queue = 1;
    let host = env.start().await;
    let pool = env.pool().await;
    let token = env.token(PROVIDER, "provider");
    let mut phone = WebSocket::connect(host.ws_addr, "", Some(&token))
        .await
        .expect("accepted");

    nats.stop().await;
    // Committed a minute ago and never pushed: the sweep's, every second.
    // Three lots, a sweep apart: one the push holds, waiting for NATS, one
    // in the queue, and one the full queue refuses, left in the outbox.
    for lot in 0..3 {
        crate::common::left_unpushed(&pool, PROVIDER, lot * 5 + 1..=lot * 5 + 5).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.start_again().await;

    let delivered = take(&mut phone, 15).await;
    assert_eq!(
        seqs(&delivered),
        (1..=15).collect::<Vec<i64>>(),
        "{delivered:?}"
    );
    assert!(
        drain(&mut phone, Duration::from_secs(2)).await.is_empty(),
        "each once"
    );
    eventually("every notification recorded as pushed", || async {
        let unpushed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM notifications WHERE pushed_at IS NULL")
                .fetch_one(&pool)
                .await
                .ok()?;
        (unpushed == 0).then_some(())
    })
    .await;
    let metrics = crate::common::metrics(&host).await;
    let deferred: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("projector_notifications_push_deferred_total "))
        .and_then(|n| n.parse().ok())
        .expect("the deferred pushes are counted");
    assert!(deferred >= 5, "{deferred}");
    host.stop();
}
