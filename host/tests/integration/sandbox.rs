//! The sandbox against a plugin that misbehaves on purpose
//! (plugins/testing/hostile, built from the same WIT world): each attack is
//! stopped, its event dead-lettered with the reason, and the host goes on.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{SEED, TestEnv, plugins_dir};
use serde_json::Value;

/// A `patient.created` for `patient` whose MRN tells the plugin what to do.
fn attack(patient: &str, mrn: &str) -> Vec<u8> {
    let mut event: Value = serde_json::from_str(SEED.lines().next().unwrap()).unwrap();
    event["eventId"] = format!("e-{patient}").into();
    event["patientId"] = patient.into();
    event["payload"]["mrn"] = mrn.into();
    serde_json::to_vec(&event).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_plugin_is_contained_and_the_host_goes_on() {
    let mut env = TestEnv::new("sandbox").await;
    let dir = std::env::temp_dir().join(format!("{}-plugins", env.tag));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        plugins_dir().join("testing/hostile.wasm"),
        dir.join("hostile.wasm"),
    )
    .expect("scripts/build-plugins builds the test plugins");
    env.config.plugins_dir = dir.clone();
    env.config.call_timeout = Duration::from_millis(200);
    env.config.plugin_memory_bytes = 32 << 20;
    env.config.max_attempts = 2;
    let mut publisher = env.publisher();
    for (patient, mrn) in [
        ("p-loop", "loop"),
        ("p-alloc", "alloc"),
        ("p-panic", "panic"),
        ("p-file", "file"),
        ("p-socket", "socket"),
        ("p-log", "log"),
        ("p-forge-audit", "forge-audit"),
        ("p-ok", "MRN-1"),
    ] {
        publisher
            .publish_raw(
                "patient.created",
                Some(&format!("e-{patient}")),
                attack(patient, mrn),
            )
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let host = env.start().await;
    env.settle(&host).await;

    let admin = env.token("u-admin", "admin");
    let (status, letters) = env
        .get(&host, "/api/dead-letters?plugin=hostile", Some(&admin))
        .await;
    assert_eq!(status, 200);
    let reasons: HashMap<&str, &str> = letters
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| Some((l["patientId"].as_str()?, l["reason"].as_str()?)))
        .collect();
    assert_eq!(reasons.len(), 6, "{reasons:#?}");
    // The endless loop is interrupted at the call's deadline, every attempt.
    assert!(
        reasons["p-loop"].contains("interrupt"),
        "{}",
        reasons["p-loop"]
    );
    assert!(reasons["p-loop"].contains("trapped 2 times"));
    // Allocation stops at the memory cap.
    assert!(
        reasons["p-alloc"].contains("memory"),
        "{}",
        reasons["p-alloc"]
    );
    // A panic is a trap whose guest backtrace names the plugin's function.
    assert!(
        reasons["p-panic"].contains("unreachable"),
        "{}",
        reasons["p-panic"]
    );
    assert!(
        reasons["p-panic"].contains("hostile"),
        "backtrace: {}",
        reasons["p-panic"]
    );
    // No files and no sockets.
    assert!(
        reasons["p-file"].starts_with("plugin refused"),
        "{}",
        reasons["p-file"]
    );
    assert!(reasons["p-file"].contains("opening a file failed"));
    assert!(
        reasons["p-socket"].contains("opening a socket failed"),
        "{}",
        reasons["p-socket"]
    );

    // Issue 14: only the audit actions it declared (none).
    assert!(
        reasons["p-forge-audit"].contains("audit action `chart.deleted`"),
        "{}",
        reasons["p-forge-audit"]
    );

    // The flood was cut, the good events applied, the host is healthy.
    let pool = env.pool().await;
    let forged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'chart.deleted'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(forged, 0);
    let seen: Vec<(String, Value)> =
        sqlx::query_as("SELECT key, doc FROM view_hostile_seen ORDER BY key")
            .fetch_all(&pool)
            .await
            .unwrap();
    let keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["p-log", "p-ok"]);
    let (_, plugins) = env.get(&host, "/api/plugins", Some(&admin)).await;
    let logs = &plugins[0]["logs"];
    assert!(
        logs["suppressed"].as_u64().is_some_and(|n| n > 9_000),
        "{logs}"
    );
    assert!(
        logs["written"].as_u64().is_some_and(|n| n < 1_000),
        "{logs}"
    );
    assert_eq!(env.get(&host, "/healthz", None).await.0, 200);

    host.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_patient_is_parked_and_released_in_order() {
    let mut env = TestEnv::new("parking").await;
    let dir = std::env::temp_dir().join(format!("{}-plugins", env.tag));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        plugins_dir().join("testing/hostile.wasm"),
        dir.join("hostile.wasm"),
    )
    .unwrap();
    env.config.plugins_dir = dir.clone();
    env.config.max_attempts = 1;
    let mut publisher = env.publisher();
    // p-bad's first event makes the plugin panic; its later ones must wait.
    for (event, patient, mrn) in [
        ("e-1", "p-bad", "panic"),
        ("e-2", "p-good-1", "MRN-G1"),
        ("e-3", "p-bad", "MRN-B2"),
        ("e-4", "p-good-2", "MRN-G2"),
        ("e-5", "p-bad", "MRN-B3"),
    ] {
        let mut bytes: Value = serde_json::from_slice(&attack(patient, mrn)).unwrap();
        bytes["eventId"] = event.into();
        publisher
            .publish_raw(
                "patient.created",
                Some(event),
                serde_json::to_vec(&bytes).unwrap(),
            )
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let host = env.start().await;
    env.settle(&host).await;

    let pool = env.pool().await;
    let seen = || async {
        let keys: Vec<String> =
            sqlx::query_scalar("SELECT key FROM view_hostile_seen ORDER BY key")
                .fetch_all(&pool)
                .await
                .unwrap();
        keys
    };
    assert_eq!(
        seen().await,
        ["p-good-1", "p-good-2"],
        "every other patient flows"
    );
    let parked: Vec<(i64, String)> =
        sqlx::query_as("SELECT stream_seq, patient_id FROM parked_events ORDER BY stream_seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        parked.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(),
        ["p-bad", "p-bad"]
    );

    // Giving up on the dead letter releases p-bad's events, in order.
    let admin = env.token("u-admin", "admin");
    let (_, letters) = env
        .get(&host, "/api/dead-letters?plugin=hostile", Some(&admin))
        .await;
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");
    let id = letters[0]["id"].as_i64().unwrap();
    let (status, answer) = env
        .post(&host, &format!("/api/dead-letters/{id}/discard"), &admin)
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("discarded")),
        "{answer}"
    );
    let released = crate::common::view_document(&pool, "hostile_seen", "p-bad").await;
    assert_eq!(released["mrn"], "MRN-B3", "the later event applied last");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let (status, _) = env
        .post(&host, &format!("/api/dead-letters/{id}/discard"), &admin)
        .await;
    assert_eq!(status, 409, "discarded once");

    host.stop();
    let _ = std::fs::remove_dir_all(dir);
}
