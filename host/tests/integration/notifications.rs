//! Clinician notifications end to end: events on the real NATS JetStream,
//! the compiled plugins, the outbox in the real PostgreSQL, and devices on
//! the official Socket.IO client and a plain WebSocket.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::clients::{PATIENCE, Received, SocketIo, WebSocket, drain, during, take};
use crate::common::{SECRET, SEED, TestEnv, eventually, signed_token};
use serde_json::{Value, json};

/// The seed flow's notifications for its ordering provider: two results
/// (normal) and four critical findings (urgent).
const PROVIDER: &str = "u-dr-smith";
const NORMAL: usize = 2;
const URGENT: usize = 4;

/// Quiet long enough that anything still coming would have come.
const QUIET: Duration = Duration::from_millis(1500);

fn ids(events: &[Received]) -> Vec<String> {
    events
        .iter()
        .filter_map(|(_, n)| n["notificationId"].as_str().map(str::to_owned))
        .collect()
}

fn seqs(events: &[Received]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|(_, n)| n["seq"].as_i64())
        .collect()
}

/// Waits until the provider has `count` notifications stored.
async fn stored(env: &TestEnv, count: i64) {
    let pool = env.pool().await;
    let pool = &pool;
    eventually(&format!("{count} notifications stored"), || async move {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE user_id = $1")
            .bind(PROVIDER)
            .fetch_one(pool)
            .await
            .ok()?;
        (n >= count).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_the_user_gets_each_notification_and_no_one_else_does() {
    let env = TestEnv::new("notify_devices").await;
    let host = env.start().await;
    let token = env.token(PROVIDER, "provider");
    let mut laptop =
        SocketIo::connect(host.ws_addr, json!({"token": token, "deviceId": "laptop"})).await;
    let mut phone = WebSocket::connect(host.ws_addr, &format!("token={token}"), None)
        .await
        .expect("WebSocket accepted");
    let other = env.token("u-dr-jones", "provider");
    let mut colleague = SocketIo::connect(host.ws_addr, json!({"token": other})).await;

    env.publish(SEED).await;
    let on_laptop = take(&mut laptop, NORMAL + URGENT).await;
    let on_phone = take(&mut phone, NORMAL + URGENT).await;
    let on_colleague = drain(&mut colleague, QUIET).await;
    let more = drain(&mut laptop, QUIET).await;
    assert!(more.is_empty(), "each once: {more:?}");

    assert_eq!(on_laptop.len(), NORMAL + URGENT, "{on_laptop:?}");
    assert_eq!(ids(&on_laptop), ids(&on_phone), "both devices, same order");
    assert!(on_colleague.is_empty(), "{on_colleague:?}");
    let mut in_order = seqs(&on_laptop);
    in_order.sort();
    assert_eq!(seqs(&on_laptop), in_order);

    // SPEC's shapes: normal ones as `notification`, urgent as `critical_alert`.
    let lab = on_laptop
        .iter()
        .find(|(_, n)| n["type"] == "lab_result_available")
        .expect("lab result notification");
    assert_eq!(lab.0, "notification");
    for field in [
        "notificationId",
        "seq",
        "eventId",
        "createdAt",
        "patientId",
        "reportId",
    ] {
        assert!(!lab.1[field].is_null(), "{field} in {}", lab.1);
    }
    assert_eq!(lab.1["priority"], "normal");
    assert_eq!(lab.1["action"]["type"], "view_lab_result");
    let critical = on_laptop
        .iter()
        .find(|(_, n)| n["type"] == "critical_lab_value")
        .expect("critical lab notification");
    assert_eq!(critical.0, "critical_alert");
    assert_eq!(critical.1["priority"], "urgent");
    assert_eq!(critical.1["requiresAcknowledgment"], true);
    assert_eq!(critical.1["patientName"], "John Doe");
    assert_eq!(critical.1["details"]["testName"], "Potassium");
    assert_eq!(critical.1["details"]["value"], 6.5);
    let urgent = on_phone
        .iter()
        .filter(|(e, _)| e == "critical_alert")
        .count();
    assert_eq!(urgent, URGENT);

    // The same through HTTP, for the caller only.
    let (status, listed) = env
        .get(&host, "/api/notifications?after=0", Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(NORMAL + URGENT));
    let (_, after_two) = env
        .get(&host, "/api/notifications?after=2", Some(&token))
        .await;
    assert_eq!(after_two[0]["seq"], 3);
    let (_, theirs) = env.get(&host, "/api/notifications", Some(&other)).await;
    assert_eq!(theirs, json!([]));
    let (status, bad) = env
        .get(&host, "/api/notifications?after=x", Some(&token))
        .await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("bad_request")));

    laptop.close().await;
    colleague.close().await;
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_token_is_refused() {
    let env = TestEnv::new("notify_refused").await;
    let host = env.start().await;
    let expired = env.expired_token(PROVIDER, "provider");
    for auth in [
        json!({}),
        json!({"token": "not-a-jwt"}),
        json!({"token": expired}),
    ] {
        let mut client = SocketIo::start(host.ws_addr, auth.clone()).await;
        let first = client.first().await;
        assert_eq!(first["type"], "connect_error", "{auth}: {first}");
        assert!(first["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let in_an_hour = chrono::Utc::now().timestamp() as u64 + 3600;
    let forged = signed_token("another-secret", PROVIDER, "provider", in_an_hour);
    assert_eq!(
        WebSocket::connect(host.ws_addr, "", None).await.err(),
        Some(401)
    );
    assert_eq!(
        WebSocket::connect(host.ws_addr, &format!("token={forged}"), None)
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        WebSocket::connect(host.ws_addr, "", Some(&expired))
            .await
            .err(),
        Some(401)
    );

    // Issue 14: each refusal is audited, with its transport and reason.
    let refusals = socket_audit(&env, "socket.refused", 6).await;
    for (user, _, detail) in &refusals {
        assert_eq!(user, "anonymous");
        assert!(detail.starts_with("transport="), "{detail}");
    }
    let transports = |t: &str| {
        refusals
            .iter()
            .filter(|(_, _, d)| d.starts_with(&format!("transport={t} ")))
            .count()
    };
    assert_eq!((transports("socket.io"), transports("websocket")), (3, 3));
    assert!(
        refusals
            .iter()
            .any(|(_, _, d)| d.to_lowercase().contains("expired")),
        "{refusals:?}"
    );
    host.stop();
}

/// Waits for `count` audit entries of a socket `action`; returns each
/// one's user, device and detail, in order.
async fn socket_audit(env: &TestEnv, action: &str, count: usize) -> Vec<(String, String, String)> {
    let pool = env.pool().await;
    let pool = &pool;
    eventually(&format!("{count} `{action}` audited"), || async move {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT user_id, resource_id, detail FROM audit_log
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_was_away_gets_what_it_missed_in_order() {
    let env = TestEnv::new("notify_missed").await;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    stored(&env, (NORMAL + URGENT) as i64).await;
    let token = env.token(PROVIDER, "provider");

    let mut laptop = SocketIo::connect(host.ws_addr, json!({"token": token, "lastSeq": 2})).await;
    let missed = take(&mut laptop, NORMAL + URGENT - 2).await;
    let expected: Vec<i64> = (3..=(NORMAL + URGENT) as i64).collect();
    assert_eq!(seqs(&missed), expected, "{missed:?}");

    // A device with everything still gets the unacknowledged urgent ones again.
    let mut phone = WebSocket::connect(
        host.ws_addr,
        &format!("lastSeq={}", NORMAL + URGENT),
        Some(&token),
    )
    .await
    .expect("accepted");
    let again = drain(&mut phone, QUIET).await;
    assert_eq!(again.len(), URGENT, "{again:?}");
    assert!(again.iter().all(|(event, _)| event == "critical_alert"));

    // Issue 14: each connection is audited with what it was replayed, and
    // its end with why.
    let connected = socket_audit(&env, "socket.connected", 2).await;
    let details: Vec<&str> = connected.iter().map(|(_, _, d)| d.as_str()).collect();
    assert_eq!(
        details,
        [
            format!(
                "transport=socket.io replayed={} unacknowledged={URGENT}",
                NORMAL + URGENT - 2
            ),
            format!("transport=websocket replayed=0 unacknowledged={URGENT}"),
        ]
    );
    assert!(connected.iter().all(|(user, _, _)| user == PROVIDER));
    laptop.close().await;
    let ended = socket_audit(&env, "socket.disconnected", 1).await;
    assert_eq!(ended[0].0, PROVIDER);
    assert_eq!(ended[0].1, connected[0].1, "the laptop's device");
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_alerts_are_resent_until_acknowledged_on_any_device() {
    let mut env = TestEnv::new("notify_resend").await;
    env.config.resend_interval = Duration::from_secs(1);
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    stored(&env, (NORMAL + URGENT) as i64).await;
    let token = env.token(PROVIDER, "provider");
    let mut laptop = SocketIo::connect(
        host.ws_addr,
        json!({"token": token, "deviceId": "laptop-7"}),
    )
    .await;
    let mut phone = WebSocket::connect(host.ws_addr, "deviceId=phone-2", Some(&token))
        .await
        .expect("accepted");

    // On connect, then on every interval.
    let on_connect = take(&mut laptop, URGENT).await;
    assert!(
        on_connect.iter().all(|(e, _)| e == "critical_alert"),
        "{on_connect:?}"
    );
    let target = on_connect[0].1["notificationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let resent = during(&mut laptop, Duration::from_millis(2500)).await;
    assert!(
        ids(&resent).contains(&target),
        "resent on the interval: {resent:?}"
    );

    let reply = laptop.acknowledge(&target).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["acknowledged"]["by"], PROVIDER);
    assert_eq!(reply["acknowledged"]["device"], "laptop-7");
    let again = phone.acknowledge(&target).await;
    assert_eq!(again["alreadyAcknowledged"], true, "{again}");
    let unknown = phone.acknowledge(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(unknown["ok"], false);

    // The phone hears of the acknowledgement; neither device gets it
    // again, while the others keep coming.
    let _ = during(&mut laptop, Duration::from_millis(200)).await;
    let phone_then = during(&mut phone, Duration::from_millis(200)).await;
    assert!(
        phone_then.iter().any(
            |(e, d)| e == "notification_acknowledged" && d["notificationId"] == target.as_str()
        ),
        "{phone_then:?}"
    );
    let laptop_later = during(&mut laptop, Duration::from_millis(2500)).await;
    let phone_later = during(&mut phone, Duration::from_millis(200)).await;
    for events in [&laptop_later, &phone_later] {
        assert!(!ids(events).contains(&target), "{events:?}");
        assert!(
            events.iter().any(|(e, _)| e == "critical_alert"),
            "{events:?}"
        );
    }
    let mut tablet = SocketIo::connect(host.ws_addr, json!({"token": token})).await;
    let on_connect = take(&mut tablet, URGENT - 1).await;
    assert_eq!(on_connect.len(), URGENT - 1);
    assert!(!ids(&on_connect).contains(&target));

    // Audited, and visible on the patient's alerts.
    let pool = env.pool().await;
    let audited: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT user_id, resource_id, ip_address FROM audit_log WHERE action = 'acknowledge_notification'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].0, PROVIDER);
    assert_eq!(audited[0].1, target);
    assert_eq!(audited[0].2.as_deref(), Some("127.0.0.1"));
    let (_, alerts) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/alerts",
            Some(&token),
        )
        .await;
    let alert = alerts
        .as_array()
        .and_then(|a| a.iter().find(|n| n["notificationId"] == target.as_str()))
        .expect("the alert");
    assert_eq!(alert["acknowledged"]["device"], "laptop-7");

    laptop.close().await;
    tablet.close().await;
    host.stop();
}

/// Issue 14: whoever can publish on core NATS cannot put an alert on a
/// clinician's screen or clear one: the instances' subject carries ids, and
/// what devices get is read from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_announcements_on_the_bus_reach_no_device() {
    let env = TestEnv::new("notify_forged").await;
    let host = env.start().await;
    let token = env.token(PROVIDER, "provider");
    let mut doctor = SocketIo::connect(host.ws_addr, json!({"token": token})).await;
    env.publish(SEED).await;
    let real = take(&mut doctor, NORMAL + URGENT).await;
    let alert = real
        .iter()
        .find(|(e, _)| e == "critical_alert")
        .and_then(|(_, n)| n["notificationId"].as_str())
        .expect("a critical alert")
        .to_owned();

    let subject = format!("{}projector.notifications", env.config.subject_prefix);
    let nats = async_nats::connect(&env.config.nats_url).await.unwrap();
    let forged = [
        // The message the issue sent: a whole notification, as the subject
        // carried them before.
        json!({"kind": "notifications", "notifications": [{
            "userId": PROVIDER, "seq": 1000, "priority": "urgent", "title": "FORGED",
            "message": "give 40 mmol KCl now", "notificationId": uuid::Uuid::new_v4(),
        }]}),
        // An id the database does not hold.
        json!({"kind": "notifications", "ids": [uuid::Uuid::new_v4()]}),
        // An acknowledgement of the real alert, which nobody acknowledged.
        json!({"kind": "acknowledged", "notificationId": alert}),
    ];
    for message in &forged {
        nats.publish(subject.clone(), message.to_string().into())
            .await
            .unwrap();
    }
    nats.flush().await.unwrap();

    let after = drain(&mut doctor, QUIET).await;
    assert!(
        after
            .iter()
            .all(|(e, n)| e != "notification_acknowledged" && n["title"] != "FORGED"),
        "{after:?}"
    );
    let (_, alerts) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/alerts",
            Some(&token),
        )
        .await;
    let still = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["notificationId"] == alert.as_str())
        .expect("the alert is listed");
    assert!(still["acknowledged"].is_null(), "{still}");

    doctor.close().await;
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_alert_is_escalated_to_the_covering_role() {
    let mut env = TestEnv::new("notify_escalate").await;
    env.config.escalate_after = Duration::from_secs(2);
    env.config.escalation_role = "charge_nurse".into();
    let host = env.start().await;
    let token = env.token(PROVIDER, "provider");
    let mut doctor = SocketIo::connect(host.ws_addr, json!({"token": token})).await;
    let nurse_token = env.token("u-nurse-9", "charge_nurse");
    let mut nurse = SocketIo::connect(host.ws_addr, json!({"token": nurse_token})).await;

    env.publish(SEED).await;
    let first = take(&mut doctor, NORMAL + URGENT).await;
    let urgent: Vec<&Received> = first
        .iter()
        .filter(|(e, _)| e == "critical_alert")
        .collect();
    assert_eq!(urgent.len(), URGENT, "{first:?}");
    // One is acknowledged in time; the others are not.
    let acknowledged = urgent[0].1["notificationId"].as_str().unwrap().to_owned();
    assert_eq!(doctor.acknowledge(&acknowledged).await["ok"], true);

    let mut escalations = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while escalations.len() < URGENT - 1 && std::time::Instant::now() < deadline {
        if let Some((event, data)) = nurse.next_event(Duration::from_secs(1)).await
            && data["type"] == "escalated_alert"
        {
            assert_eq!(event, "critical_alert");
            escalations.push(data);
        }
    }
    assert_eq!(escalations.len(), URGENT - 1, "{escalations:?}");
    let from: BTreeSet<&str> = escalations
        .iter()
        .filter_map(|e| e["escalatedFrom"]["notificationId"].as_str())
        .collect();
    assert_eq!(from.len(), URGENT - 1);
    assert!(!from.contains(acknowledged.as_str()));
    assert!(
        escalations
            .iter()
            .all(|e| e["patientId"] == "p-john-doe" && e["requiresAcknowledgment"] == true)
    );

    // The nurse acknowledges an escalation; it is audited like any other.
    let escalation_id = escalations[0]["notificationId"].as_str().unwrap();
    assert_eq!(nurse.acknowledge(escalation_id).await["ok"], true);
    let pool = env.pool().await;
    let escalated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'escalate_notification' AND user_id = 'system'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(escalated, (URGENT - 1) as i64);
    let (_, alerts) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/alerts",
            Some(&token),
        )
        .await;
    let originals: Vec<&Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["userId"] == PROVIDER && !a["escalated"].is_null())
        .collect();
    assert_eq!(originals.len(), URGENT - 1);
    // Issue 15: the escalations are copies, not alerts of their own; the
    // originals are escalated until someone acknowledges one of the chain.
    let states: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] != "high_criticality_allergy")
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), URGENT, "{alerts}");
    assert_eq!(
        (
            states.iter().filter(|s| **s == "escalated").count(),
            states.iter().filter(|s| **s == "acknowledged").count()
        ),
        (URGENT - 2, 2)
    );

    // Issue 15: acknowledging the escalation settles the original too: it
    // shows who acknowledged it and when, and the doctor's devices are told
    // (so resends to them stop).
    let original_id = escalations[0]["escalatedFrom"]["notificationId"]
        .as_str()
        .unwrap();
    let original = originals
        .iter()
        .find(|a| a["notificationId"] == original_id)
        .expect("the escalated original is listed");
    assert_eq!(original["acknowledged"]["by"], "u-nurse-9", "{original}");
    let told = during(&mut doctor, QUIET).await;
    assert!(
        told.iter()
            .any(|(e, n)| e == "notification_acknowledged" && n["notificationId"] == original_id),
        "{told:?}"
    );

    // Issue 15: the role's notifications are the nurse's too: listed over
    // HTTP after `roleAfter`, and replayed to a device that gives
    // `roleLastSeq`, acknowledged ones included.
    let role_seqs = |listed: &Value| -> Vec<i64> {
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["userId"] == "role:charge_nurse")
            .map(|n| n["seq"].as_i64().unwrap())
            .collect()
    };
    let (status, listed) = env
        .get(&host, "/api/notifications", Some(&nurse_token))
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(role_seqs(&listed), [1, 2, 3], "{listed}");
    let (_, later) = env
        .get(&host, "/api/notifications?roleAfter=1", Some(&nurse_token))
        .await;
    assert_eq!(role_seqs(&later), [2, 3], "{later}");
    let (_, theirs) = env.get(&host, "/api/notifications", Some(&token)).await;
    assert!(role_seqs(&theirs).is_empty(), "{theirs}");
    let (status, refused) = env
        .get(&host, "/api/notifications?roleAfter=-1", Some(&nurse_token))
        .await;
    assert_eq!(status, 400, "{refused}");

    let replayed = |listed: Vec<Received>| -> Vec<String> {
        let mut ids = ids(&listed);
        ids.sort();
        ids.dedup();
        ids
    };
    let mut all: Vec<String> = escalations
        .iter()
        .map(|e| e["notificationId"].as_str().unwrap().to_owned())
        .collect();
    all.sort();
    let mut again = SocketIo::connect(
        host.ws_addr,
        json!({"token": nurse_token, "lastSeq": 0, "roleLastSeq": 0}),
    )
    .await;
    assert_eq!(replayed(drain(&mut again, QUIET).await), all);
    again.close().await;
    // Without `roleLastSeq` only the unacknowledged ones come again.
    let mut live_only =
        SocketIo::connect(host.ws_addr, json!({"token": nurse_token, "lastSeq": 0})).await;
    let unacknowledged: Vec<String> = all
        .iter()
        .filter(|id| id.as_str() != escalation_id)
        .cloned()
        .collect();
    assert_eq!(replayed(drain(&mut live_only, QUIET).await), unacknowledged);
    live_only.close().await;

    doctor.close().await;
    nurse.close().await;
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_again_notify_no_one_twice() {
    let env = TestEnv::new("notify_redelivered").await;
    let host = env.start().await;
    let token = env.token(PROVIDER, "provider");
    let mut laptop = SocketIo::connect(host.ws_addr, json!({"token": token})).await;
    env.publish(SEED).await;
    let first = take(&mut laptop, NORMAL + URGENT).await;
    assert_eq!(first.len(), NORMAL + URGENT);

    env.publish(SEED).await;
    env.settle(&host).await;
    let second = drain(&mut laptop, QUIET).await;
    assert!(second.is_empty(), "{second:?}");
    let pool = env.pool().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, (NORMAL + URGENT) as i64);

    laptop.close().await;
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_another_instance_gets_the_notification() {
    let env = TestEnv::new("notify_instances").await;
    let projecting = env.start().await;
    // A second instance that projects nothing and only serves devices.
    let empty = tempfile_dir(&env.tag);
    let mut config = env.config.clone();
    config.plugins_dir = empty.clone();
    let serving = projector::serve::Host::start(config)
        .await
        .expect("second host");
    assert!(serving.registry.names().is_empty());

    let token = env.token(PROVIDER, "provider");
    let mut laptop = SocketIo::connect(serving.ws_addr, json!({"token": token})).await;
    let mut phone = WebSocket::connect(serving.ws_addr, "", Some(&token))
        .await
        .expect("accepted");
    env.publish(SEED).await;
    let on_laptop = take(&mut laptop, NORMAL + URGENT).await;
    let on_phone = take(&mut phone, NORMAL + URGENT).await;
    assert_eq!(on_laptop.len(), NORMAL + URGENT, "{on_laptop:?}");
    assert_eq!(ids(&on_laptop), ids(&on_phone));

    // An acknowledgement on one instance reaches devices on the other.
    let mut desk = SocketIo::connect(projecting.ws_addr, json!({"token": token})).await;
    let _ = drain(&mut desk, Duration::from_millis(500)).await;
    let target = on_laptop
        .iter()
        .find(|(e, _)| e == "critical_alert")
        .and_then(|(_, n)| n["notificationId"].as_str())
        .unwrap()
        .to_owned();
    assert_eq!(desk.acknowledge(&target).await["ok"], true);
    let (event, data) = phone
        .next_event(PATIENCE)
        .await
        .expect("acknowledgement announced");
    assert_eq!(event, "notification_acknowledged");
    assert_eq!(data["notificationId"], target.as_str());

    laptop.close().await;
    desk.close().await;
    serving.stop();
    projecting.stop();
    let _ = std::fs::remove_dir_all(empty);
}

/// An empty plugins folder of the test's own.
fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{tag}-plugins"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_committed_by_a_host_that_died_before_pushing_it_is_pushed() {
    let env = TestEnv::new("notify_sweep").await;
    let host = env.start().await;
    let token = env.token(PROVIDER, "provider");
    let mut laptop = SocketIo::connect(host.ws_addr, json!({"token": token})).await;
    // As a batch commit leaves it: stored, never handed to NATS.
    let pool = env.pool().await;
    crate::common::left_unpushed(&pool, PROVIDER, 1..=1).await;
    let swept = take(&mut laptop, 1).await;
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].0, "notification");
    assert_eq!(swept[0].1["eventId"], "e-1");
    // Recorded as pushed, so the sweep (every second) does not push it again.
    assert!(
        drain(&mut laptop, Duration::from_secs(3)).await.is_empty(),
        "pushed once"
    );
    let pushed: bool = sqlx::query_scalar("SELECT pushed_at IS NOT NULL FROM notifications")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(pushed);
    laptop.close().await;
    host.stop();
}

/// Issue 16: every host sweeps the outbox every second. A notification a
/// dead host left unpushed is taken by one sweep: announced to the fleet
/// once, not once per host or once per second while the database is slow
/// to record it pushed, and heard once on a device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_sweeping_together_push_a_left_behind_notification_once() {
    let env = TestEnv::new("notify_sweep_fleet").await;
    let serving = env.start().await;
    let empty = tempfile_dir(&env.tag);
    let mut config = env.config.clone();
    config.plugins_dir = empty.clone();
    let others = [
        projector::serve::Host::start(config.clone())
            .await
            .expect("second host"),
        projector::serve::Host::start(config)
            .await
            .expect("third host"),
    ];
    let token = env.token(PROVIDER, "provider");
    let mut phone = WebSocket::connect(serving.ws_addr, "", Some(&token))
        .await
        .expect("accepted");
    let bus = projector::bus::connect(&env.config).await.unwrap();
    let mut announcements = bus
        .subscribe(format!(
            "{}projector.notifications",
            env.config.subject_prefix
        ))
        .await
        .unwrap();
    let pool = env.pool().await;
    crate::common::left_unpushed(&pool, PROVIDER, 1..=20).await;
    // A slow database: the rows stay locked for a while (as a commit
    // under load would hold them), so marking them pushed waits; sweeps
    // meanwhile must not each take them.
    let mut slow = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM notifications FOR UPDATE")
        .execute(&mut *slow)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    slow.commit().await.unwrap();
    let mut heard = take(&mut phone, 20).await;
    heard.extend(drain(&mut phone, Duration::from_secs(3)).await);
    assert_eq!(
        seqs(&heard),
        (1..=20).collect::<Vec<i64>>(),
        "each notification once, in order"
    );
    let mut announced = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(
        Duration::from_millis(500),
        futures::StreamExt::next(&mut announcements),
    )
    .await
    {
        let wire: Value = serde_json::from_slice(&message.payload).unwrap();
        if wire["kind"] == "notifications" {
            announced.extend(wire["ids"].as_array().unwrap().iter().cloned());
        }
    }
    let mut stored: Vec<Value> =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT notification_id FROM notifications")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|id| Value::String(id.to_string()))
            .collect();
    stored.sort_by_key(Value::to_string);
    announced.sort_by_key(Value::to_string);
    assert_eq!(announced, stored, "each announced to the fleet once");
    drop(phone);
    for host in others {
        host.stop();
    }
    serving.stop();
    let _ = std::fs::remove_dir_all(empty);
}

/// Issue 14: a connection lives as long as its token. Before it expires the
/// device is told why (`session_expired`) and disconnected, on Socket.IO and
/// `/ws` alike, unless it sent a fresh token of the same user in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ends_with_its_token_unless_renewed() {
    let env = TestEnv::new("notify_expiry").await;
    let host = env.start().await;
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let short = signed_token(SECRET, PROVIDER, "provider", now + 3);
    let mut expiring = WebSocket::connect(host.ws_addr, "deviceId=a", Some(&short))
        .await
        .expect("accepted");
    let mut renewed = WebSocket::connect(host.ws_addr, "deviceId=b", Some(&short))
        .await
        .expect("accepted");
    let mut socket = SocketIo::connect(host.ws_addr, json!({"token": short})).await;

    let reply = renewed
        .reauthenticate(&env.token(PROVIDER, "provider"))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let someone_else = renewed
        .reauthenticate(&env.token("u-someone-else", "provider"))
        .await;
    assert_eq!(someone_else["ok"], false, "{someone_else}");

    let ended = during(&mut expiring, Duration::from_secs(6)).await;
    assert!(
        ended.iter().any(|(e, _)| e == "session_expired"),
        "{ended:?}"
    );
    assert!(
        expiring.next_event(Duration::from_secs(1)).await.is_none(),
        "the connection is closed"
    );
    let ended = during(&mut socket, Duration::from_secs(1)).await;
    assert!(
        ended.iter().any(|(e, _)| e == "session_expired"),
        "{ended:?}"
    );
    let still = during(&mut renewed, Duration::from_secs(1)).await;
    assert!(
        still.iter().all(|(e, _)| e != "session_expired"),
        "{still:?}"
    );
    let ended = socket_audit(&env, "socket.disconnected", 2).await;
    let expired: Vec<&str> = ended
        .iter()
        .filter(|(_, _, detail)| detail == "reason=the token expired")
        .map(|(_, device, _)| device.as_str())
        .collect();
    assert_eq!(expired.len(), 2, "{ended:?}");
    assert!(expired.contains(&"a"), "{ended:?}");

    socket.close().await;
    host.stop();
}

/// Issue 15: `criticalAlerts` is the number of open alerts `/alerts` lists,
/// at every read: it falls when an alert is acknowledged and when a
/// high-criticality allergy stops being active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_counts_the_alerts_it_lists() {
    let env = TestEnv::new("notify_alert_count").await;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    stored(&env, (NORMAL + URGENT) as i64).await;
    let token = env.token(PROVIDER, "provider");
    let read = || async {
        let chart = "/api/aggregate/patients/p-john-doe";
        let (_, chart_doc) = env.get(&host, chart, Some(&token)).await;
        let (_, alerts) = env
            .get(&host, &format!("{chart}/alerts"), Some(&token))
            .await;
        let alerts = alerts.as_array().cloned().unwrap_or_default();
        let open = alerts
            .iter()
            .filter(|a| a["state"] == "active" || a["state"] == "escalated")
            .count();
        assert_eq!(chart_doc["criticalAlerts"], open, "{alerts:?}");
        (open, alerts)
    };
    let (open, alerts) = read().await;
    assert_eq!(open, URGENT + 1, "four critical findings and the allergy");

    let potassium = alerts
        .iter()
        .find(|a| a["type"] == "critical_lab_value")
        .and_then(|a| a["notificationId"].as_str())
        .expect("the potassium alert")
        .to_owned();
    let mut phone = WebSocket::connect(host.ws_addr, "deviceId=phone-1", Some(&token))
        .await
        .expect("accepted");
    assert_eq!(phone.acknowledge(&potassium).await["ok"], true);
    let (open, alerts) = read().await;
    assert_eq!(open, URGENT, "acknowledging one lowers the count");
    let acknowledged = alerts
        .iter()
        .find(|a| a["notificationId"] == potassium.as_str())
        .unwrap();
    assert_eq!(acknowledged["state"], "acknowledged");
    assert_eq!(acknowledged["acknowledged"]["by"], PROVIDER);

    // The penicillin allergy is recorded again as resolved.
    let seed_allergy: Value = serde_json::from_str(SEED.lines().nth(2).unwrap()).unwrap();
    let mut resolved = seed_allergy.clone();
    resolved["eventId"] = "e-allergy-resolved".into();
    resolved["timestamp"] = "2026-11-27T08:00:00Z".into();
    resolved["payload"]["clinicalStatus"] = "resolved".into();
    env.publish(&resolved.to_string()).await;
    env.settle(&host).await;
    let (open, alerts) = read().await;
    assert_eq!(open, URGENT - 1);
    let allergy = alerts
        .iter()
        .find(|a| a["type"] == "high_criticality_allergy")
        .unwrap();
    assert_eq!(allergy["state"], "resolved", "{allergy}");
    host.stop();
}

/// Issue 15: `ESCALATION_CHAIN`. An unacknowledged alert reaches each level,
/// once, in turn; acknowledging any copy settles the original and every
/// copy: each shows who acknowledged it, every device at every level is
/// told, and the resends stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_climbs_the_escalation_chain_until_anyone_acknowledges_it() {
    let mut env = TestEnv::new("notify_chain").await;
    env.config.escalation_chain = Some(
        projector::config::EscalationLevel::parse_chain("charge_nurse@2s,attending@4s").unwrap(),
    );
    env.config.resend_interval = Duration::from_secs(1);
    let host = env.start().await;
    let mut doctor = SocketIo::connect(
        host.ws_addr,
        json!({"token": env.token(PROVIDER, "provider")}),
    )
    .await;
    let mut nurse = SocketIo::connect(
        host.ws_addr,
        json!({"token": env.token("u-nurse-9", "charge_nurse")}),
    )
    .await;
    let mut attending = WebSocket::connect(
        host.ws_addr,
        "deviceId=pager-1",
        Some(&env.token("u-attending-1", "attending")),
    )
    .await
    .expect("accepted");
    env.publish(SEED).await;
    // The potassium alert; with resends every second, copies of the other
    // plugins' urgent alerts may come before the lab plugin's first batch.
    let potassium = loop {
        let (_, n) = doctor
            .next_event(PATIENCE)
            .await
            .expect("the potassium alert");
        if n["type"] == "critical_lab_value" {
            break n["notificationId"].as_str().unwrap().to_owned();
        }
    };

    /// Waits for the copies of the potassium alert at one level.
    async fn copy_of(
        device: &mut impl crate::common::clients::Events,
        original: &str,
        level: i64,
    ) -> Value {
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::time::Instant::now() < deadline {
            if let Some((_, data)) = device.next_event(Duration::from_secs(1)).await
                && data["escalatedFrom"]["notificationId"] == original
            {
                assert_eq!(data["escalationLevel"], level, "{data}");
                return data;
            }
        }
        panic!("no level-{level} copy of {original}");
    }
    let to_nurse = copy_of(&mut nurse, &potassium, 1).await;
    let to_attending = copy_of(&mut attending, &potassium, 2).await;
    let copy = to_attending["notificationId"].as_str().unwrap();
    let reply = attending.acknowledge(copy).await;
    assert_eq!(reply["ok"], true, "{reply}");

    // Every copy is settled, by the attending.
    let pool = env.pool().await;
    let chain: Vec<(Option<String>, i16)> = sqlx::query_as(
        "SELECT acknowledged_by, escalation_level FROM notifications
         WHERE notification_id = $1::uuid OR escalation_of = $1::uuid ORDER BY escalation_level",
    )
    .bind(&potassium)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        chain,
        [
            (Some("u-attending-1".to_owned()), 1),
            (Some("u-attending-1".to_owned()), 2),
            (Some("u-attending-1".to_owned()), 2),
        ],
        "the level-1 copy, and the original and its level-2 copy"
    );
    // The doctor's and the nurse's devices are told, and hear no more of it.
    for (device, id) in [
        (&mut doctor, potassium.as_str()),
        (&mut nurse, to_nurse["notificationId"].as_str().unwrap()),
    ] {
        let heard = during(device, Duration::from_millis(2500)).await;
        assert!(
            heard
                .iter()
                .any(|(e, n)| e == "notification_acknowledged" && n["notificationId"] == id),
            "{heard:?}"
        );
        let after: Vec<&Received> = heard
            .iter()
            .skip_while(|(e, _)| e != "notification_acknowledged")
            .filter(|(_, n)| n["notificationId"] == id && n["type"].is_string())
            .collect();
        assert!(
            after.is_empty(),
            "resent after the acknowledgement: {after:?}"
        );
    }
    let (_, alerts) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/alerts",
            Some(&env.token(PROVIDER, "provider")),
        )
        .await;
    let shown = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["notificationId"] == potassium.as_str())
        .unwrap();
    assert_eq!(shown["state"], "acknowledged");
    assert_eq!(shown["acknowledged"]["by"], "u-attending-1");

    // Each level once: the other alerts climbed too, one copy per level.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let per_level: Vec<(i16, i64)> = sqlx::query_as(
        "SELECT escalation_level, count(*) FROM notifications
         WHERE escalation_of IS NOT NULL GROUP BY escalation_level ORDER BY escalation_level",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_level, [(1, URGENT as i64), (2, URGENT as i64)]);
    doctor.close().await;
    nurse.close().await;
    host.stop();
}
