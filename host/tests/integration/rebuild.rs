//! Blue/green rebuilds: a plugin's views are rebuilt from the start of the
//! stream into shadow tables while the live ones serve, then switched in
//! one transaction. Reads never see a partial chart, the result is what the
//! events imply, and nothing is notified or audited twice. A version whose
//! views or subjects changed rebuilds on deploy, on rollback and on a
//! restart that finds it in the plugins folder.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{
    SEED, TestEnv, as_sent, assert_same_documents, eventually, own_plugins, plugins_dir,
    put_plugin, seed_tally, view_documents,
};
use lab::LabPlugin;
use patient::PatientPlugin;
use projector::serve::Host;
use projector::sim::Simulator;
use projector_sdk::Plugin;
use projector_sdk::testing::Harness;
use serde_json::Value;
use sqlx::PgPool;

/// The table a view's name resolves to now: a switch replaces it.
async fn table_oid(pool: &PgPool, view: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT to_regclass('view_' || $1)::oid::bigint")
        .bind(view)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A plugin as `GET /api/plugins` shows it.
async fn plugin(env: &TestEnv, host: &Host, name: &str) -> Value {
    let admin = env.token("u-admin", "admin");
    let (_, plugins) = env.get(host, "/api/plugins", Some(&admin)).await;
    plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap()
}

/// Waits until a plugin runs `version` with no rebuild under way.
async fn switched(env: &TestEnv, host: &Host, name: &str, version: &str) -> Value {
    eventually(&format!("{name} {version} switched in"), || async {
        let p = plugin(env, host, name).await;
        (p["rebuild"].is_null() && p["version"] == version).then_some(p)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_load_serves_whole_charts_and_ends_as_the_events_imply() {
    let mut env = TestEnv::new("rebuild").await;
    // The reader below reads as fast as it can, as one clinician: far over
    // a clinician's fair-use rate, which is not what this test is about.
    env.config.api_rate_per_second = std::num::NonZeroU32::new(1_000_000).unwrap();
    env.config.api_rate_burst = std::num::NonZeroU32::new(1_000_000).unwrap();
    let dir = own_plugins(&env.tag, &["patient", "lab"]);
    env.config.plugins_dir = dir.clone();
    let mut sim = Simulator::new(11, chrono::Utc::now() - chrono::Duration::days(2));
    let before = sim.traffic(200);
    let mut publisher = env.publisher();
    for event in &before {
        publisher.publish(event).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let host = env.start().await;
    env.settle(&host).await;
    let admin = env.token("u-admin", "admin");
    let pool = env.pool().await;
    let table_before = table_oid(&pool, "patient_chart").await;

    // Patients whose events are all in: every read of their charts during
    // the rebuild must give exactly what it gives now.
    let clinician = env.token("u-dr-smith", "provider");
    let mut watched = Vec::new();
    for event in before.iter().take(10) {
        let path = format!("/api/aggregate/patients/{}", event.envelope.patient_id);
        let (status, chart) = env.get(&host, &path, Some(&clinician)).await;
        assert_eq!(status, 200);
        watched.push((path, chart));
    }

    // Load: new patients' events keep arriving through the rebuild.
    let during = sim.traffic(200);
    let load = {
        let mut publisher = env.publisher();
        let events = during.clone();
        tokio::spawn(async move {
            for chunk in events.chunks(100) {
                for event in chunk {
                    publisher.publish(event).await.unwrap();
                }
                publisher.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, base) = (stop.clone(), format!("http://{}", host.http_addr));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                for (path, expected) in &watched {
                    let response = client
                        .get(format!("{base}{path}"))
                        .bearer_auth(&clinician)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status().as_u16(), 200);
                    let chart: Value = response.json().await.unwrap();
                    assert_eq!(&chart, expected, "a read during the rebuild");
                    reads += 1;
                }
            }
            reads
        })
    };

    let (status, rebuild) = env
        .post(&host, "/api/plugins/patient/rebuild", &admin)
        .await;
    assert_eq!(status, 202, "{rebuild}");
    assert!(rebuild["startedAt"].is_string(), "{rebuild}");
    let (status, _) = env
        .post(&host, "/api/plugins/patient/rebuild", &admin)
        .await;
    assert_eq!(status, 409, "one rebuild at a time");
    switched(&env, &host, "patient", env!("CARGO_PKG_VERSION")).await;
    assert_ne!(
        table_oid(&pool, "patient_chart").await,
        table_before,
        "the rebuilt table replaced the live one"
    );
    stop.store(true, Ordering::Relaxed);
    let reads = reader.await.expect("every read gave a whole chart");
    assert!(reads > 0);
    load.await.unwrap();
    env.settle(&host).await;
    // The processed events switched with the tables: one generation, the
    // rebuild's, holding every event once.
    let generations: Vec<(String, i64)> = sqlx::query_as(
        "SELECT plugin, count(*) FROM processed_events WHERE plugin LIKE 'patient%' GROUP BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        generations,
        [("patient#1".to_owned(), (before.len() + during.len()) as i64)]
    );

    // What the events imply, each applied once: the native harness.
    let mut native = Harness::<PatientPlugin>::new();
    for event in before.iter().chain(&during) {
        native.feed(&as_sent(event)).unwrap();
    }
    for view in PatientPlugin::describe().views {
        let stored = view_documents(&pool, &view.name).await;
        assert_same_documents(&view.name, &stored, &native.documents(&view.name));
    }

    // A rebuild of a plugin that notifies and audits does neither again.
    let counts = || async {
        let notifications: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&pool)
            .await
            .unwrap();
        let audits: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log WHERE resource_type = 'DiagnosticReport'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (notifications, audits)
    };
    let mut native = Harness::<LabPlugin>::new();
    for event in before.iter().chain(&during) {
        native.feed(&as_sent(event)).unwrap();
    }
    let counted = counts().await;
    assert!(counted.0 > 0, "the traffic has critical values");
    assert_eq!(counted.1, native.audits.len() as i64);
    let (status, _) = env.post(&host, "/api/plugins/lab/rebuild", &admin).await;
    assert_eq!(status, 202);
    switched(&env, &host, "lab", env!("CARGO_PKG_VERSION")).await;
    assert_eq!(counts().await, counted);
    for view in LabPlugin::describe().views {
        let stored = view_documents(&pool, &view.name).await;
        assert_same_documents(&view.name, &stored, &native.documents(&view.name));
    }

    host.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_views_changed_rebuilds_on_deploy_rollback_and_restart() {
    let mut env = TestEnv::new("rebuild_views").await;
    let dir = own_plugins(&env.tag, &["testing/tally"]);
    env.config.plugins_dir = dir.clone();
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let pool = env.pool().await;
    let admin = env.token("u-admin", "admin");
    let tally = || async { view_documents(&pool, "tallies").await["p-john-doe"].clone() };
    assert_eq!(tally().await, seed_tally(&["lab."], &[]));

    // Version 2 reads radiology too and declares `tally_kinds`: deployed,
    // it rebuilds, then runs.
    let v2 = std::fs::read(plugins_dir().join("testing/tally-v2.wasm")).unwrap();
    let base = format!("http://{}", host.http_addr);
    let (status, deployed) = put_plugin(&base, "tally", &admin, v2.clone()).await;
    assert_eq!(
        (status, deployed["deployed"].as_str()),
        (202, Some("rebuilding"))
    );
    let running = switched(&env, &host, "tally", "2.0.0").await;
    assert_eq!(running["previous"]["version"], "1.0.0");
    assert_eq!(tally().await, seed_tally(&["lab.", "radiology."], &[]));
    let kinds = view_documents(&pool, "tally_kinds").await;
    assert_eq!(kinds["radiology_study_complete"]["count"], 1, "{kinds:?}");
    assert_eq!(
        std::fs::read(dir.join("tally.wasm")).unwrap(),
        v2,
        "the folder holds the version that runs"
    );

    // It now receives radiology events as they come.
    let mut later: Value = SEED
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["eventType"] == "radiology.study.complete")
        .unwrap();
    later["eventId"] = "e-later-study".into();
    env.publish(&later.to_string()).await;
    let with_later = seed_tally(&["lab.", "radiology."], &["radiology.study.complete"]);
    eventually("the later study counted", || async {
        (tally().await == with_later).then_some(())
    })
    .await;

    // Rolled back, version 1 rebuilds its own views: `tally_kinds` is gone.
    let (status, back) = env.post(&host, "/api/plugins/tally/rollback", &admin).await;
    assert_eq!(
        (status, back["deployed"].as_str()),
        (202, Some("rebuilding")),
        "{back}"
    );
    switched(&env, &host, "tally", "1.0.0").await;
    assert_eq!(tally().await, seed_tally(&["lab."], &[]));
    assert_eq!(table_oid(&pool, "tally_kinds").await, None);
    host.stop();

    // Version 2 dropped into the folder while the host was down: at start
    // the live views (version 1's) stay untouched until rebuilt.
    std::fs::write(dir.join("tally.wasm"), &v2).unwrap();
    let host = env.start().await;
    switched(&env, &host, "tally", "2.0.0").await;
    assert_eq!(tally().await, with_later);
    env.settle(&host).await;
    assert_eq!(tally().await, with_later, "nothing applied twice");

    host.stop();
    let _ = std::fs::remove_dir_all(dir);
}
