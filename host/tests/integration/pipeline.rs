//! The projection pipeline end to end: events on the real NATS JetStream,
//! the compiled plugins, read models in the real PostgreSQL, the HTTP API.

use std::time::Duration;

use crate::common::{LATER, SEED, TestEnv, assert_seed_chart, snapshot};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_produces_the_chart_and_every_view() {
    let env = TestEnv::new("seed").await;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let token = env.token("u-dr-smith", "provider");
    let token = Some(token.as_str());

    let (status, chart) = env
        .get(&host, "/api/aggregate/patients/p-john-doe", token)
        .await;
    assert_eq!(status, 200, "{chart}");
    assert_seed_chart(&chart);

    let (_, labs) = env
        .get(&host, "/api/aggregate/patients/p-john-doe/labs", token)
        .await;
    assert_eq!(labs[0]["reportId"], "rep-lab-1");
    assert_eq!(labs[0]["critical"], true);
    assert_eq!(labs[0]["viewedBy"].as_array().map(Vec::len), Some(2));
    let (_, imaging) = env
        .get(&host, "/api/aggregate/patients/p-john-doe/imaging", token)
        .await;
    assert_eq!(
        imaging[0]["report"]["impression"],
        "Acute pulmonary embolism."
    );
    assert_eq!(imaging[0]["objectKeys"].as_array().map(Vec::len), Some(2));
    let (_, meds) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/medications",
            token,
        )
        .await;
    assert_eq!(meds.as_array().map(Vec::len), Some(2));
    let (_, encounters) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/encounters",
            token,
        )
        .await;
    assert_eq!(encounters[0]["status"], "finished");
    assert_eq!(encounters[0]["orders"].as_array().map(Vec::len), Some(2));

    // The four critical events notified the ordering provider; with the
    // high-criticality allergy they are the patient's alerts, newest first,
    // all active, as many as `criticalAlerts` counts.
    let (_, alerts) = env
        .get(&host, "/api/aggregate/patients/p-john-doe/alerts", token)
        .await;
    let kinds: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "allergy_contraindication",
            "drug_interaction",
            "critical_imaging_finding",
            "critical_lab_value",
            "high_criticality_allergy"
        ]
    );
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "active")
    );
    assert_eq!(alerts[4]["allergy"]["substance"]["display"], "Penicillin");
    assert_eq!(chart["criticalAlerts"], 5);
    let potassium = &alerts[3];
    assert_eq!(potassium["title"], "🚨 CRITICAL LAB VALUE");
    assert_eq!(potassium["message"], "CRITICAL: Potassium = 6.5 mmol/L");
    assert_eq!(potassium["requiresAcknowledgment"], true);
    assert_eq!(potassium["acknowledged"], Value::Null);

    // lab.result.viewed wrote the audit log, as the patient's user.
    let pool = env.pool().await;
    let viewed: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'lab_result.viewed' AND user_id = 'u-dr-smith'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(viewed, 2);

    let (status, plugins) = env
        .get(&host, "/api/plugins", Some(&env.token("u-admin", "admin")))
        .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["encounter", "lab", "patient", "pharmacy", "radiology"]
    );
    for plugin in plugins.as_array().unwrap() {
        assert_eq!(plugin["lag"], 0, "{plugin}");
        assert_eq!(plugin["hash"].as_str().map(str::len), Some(64));
        assert!(plugin["checkpoint"].as_i64().unwrap() >= 1, "{plugin}");
    }

    // Issue 15: the imaging report is read by `radiology.report.viewed`,
    // recorded on its study and audited under who viewed it.
    assert_eq!(
        chart["unreadResultsByKind"],
        serde_json::json!({"lab": 0, "imaging": 1})
    );
    env.publish(LATER).await;
    env.settle(&host).await;
    let (_, chart) = env
        .get(&host, "/api/aggregate/patients/p-john-doe", token)
        .await;
    assert_eq!(chart["unreadResults"], 0);
    assert_eq!(
        chart["unreadResultsByKind"],
        serde_json::json!({"lab": 0, "imaging": 0})
    );
    let (_, studies) = env
        .get(&host, "/api/aggregate/patients/p-john-doe/imaging", token)
        .await;
    assert_eq!(studies[0]["report"]["viewedBy"][0]["userId"], "u-dr-smith");
    let viewed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'radiology_report.viewed'
           AND user_id = 'u-dr-smith' AND resource_id = 'rep-rad-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(viewed, 1);
    host.stop();
}

/// The projection keeps the documents it committed in memory between
/// batches; a document some other writer changed meanwhile must be read
/// again, not served from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_changed_by_another_writer_is_read_again() {
    let env = TestEnv::new("cachecheck").await;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let pool = env.pool().await;
    sqlx::query(
        "UPDATE view_patient_chart SET doc = jsonb_set(doc, '{mrn}', '\"MRN-ELSEWHERE\"')
         WHERE key = 'p-john-doe'",
    )
    .execute(&pool)
    .await
    .unwrap();

    let seed_allergy = SEED
        .lines()
        .find(|line| line.contains("\"patient.allergy.added\""))
        .unwrap();
    let another = seed_allergy
        .replace("seed-0003", "cache-check-1")
        .replace("alg-1", "alg-cache-check");
    env.publish(&another).await;
    env.settle(&host).await;

    let chart = crate::common::view_document(&pool, "patient_chart", "p-john-doe").await;
    assert_eq!(chart["lastEventId"], "cache-check-1", "{chart}");
    assert_eq!(
        chart["mrn"], "MRN-ELSEWHERE",
        "the other writer's change is kept"
    );
    let allergies = chart["allergies"].as_array().unwrap();
    assert!(
        allergies
            .iter()
            .any(|a| a["allergyId"] == "alg-cache-check")
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republishing_under_new_message_ids_changes_nothing() {
    let env = TestEnv::new("republish").await;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let pool = env.pool().await;
    let before = snapshot(&pool).await;
    let notifications: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(notifications, 6);

    let mut publisher = env.publisher();
    for line in SEED.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let event_type = event["eventType"].as_str().unwrap();
        let new_id = format!("{}-again", event["eventId"].as_str().unwrap());
        publisher
            .publish_raw(event_type, Some(&new_id), line.as_bytes().to_vec())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let stream_len = env
        .js
        .get_stream(&env.config.stream_name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(
        stream_len, 50,
        "JetStream must hold both copies: the dedupe is ours"
    );
    env.settle(&host).await;

    assert_eq!(snapshot(&pool).await, before);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, notifications);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_between_commit_and_ack_applies_nothing_twice() {
    let env = TestEnv::new("crash").await;
    env.publish(SEED).await;

    // A real host process that aborts right after its first commit, before acking.
    let status = env
        .host_command(crate::common::free_port())
        .env("PROJECTOR_FAULT", "crash-after-commit")
        .status();
    let status = tokio::time::timeout(Duration::from_secs(120), status)
        .await
        .expect("host aborts")
        .unwrap();
    assert!(!status.success(), "the faulty host must have died");
    let pool = env.pool().await;
    let committed: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(applied), 0)::bigint FROM checkpoints")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        committed > 0,
        "the dead host committed a batch before dying"
    );

    // Restarted, the host gets the unacked messages again and skips what was committed.
    let host = env.start().await;
    env.settle(&host).await;
    let (_, chart) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe",
            Some(&env.token("u-1", "nurse")),
        )
        .await;
    assert_seed_chart(&chart);
    let per_plugin: Vec<(String, i64)> = sqlx::query_as(
        "SELECT plugin, sum(applied)::bigint FROM checkpoints GROUP BY plugin ORDER BY plugin",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let subscribed = |prefixes: &[&str]| {
        SEED.lines()
            .filter(|l| {
                prefixes
                    .iter()
                    .any(|p| l.contains(&format!("\"eventType\":\"{p}")))
            })
            .count() as i64
    };
    assert_eq!(
        per_plugin,
        [
            (
                "encounter".to_owned(),
                subscribed(&["encounter.", "lab.order.created", "radiology.order.created"])
            ),
            ("lab".to_owned(), subscribed(&["lab."])),
            ("patient".to_owned(), 25),
            ("pharmacy".to_owned(), subscribed(&["pharmacy."])),
            ("radiology".to_owned(), subscribed(&["radiology."])),
        ],
        "each event applied exactly once per plugin"
    );
    let notifications: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(notifications, 6);
    host.stop();
}
