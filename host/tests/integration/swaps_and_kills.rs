//! The lifecycle under load: while events arrive at 5,000 a second, the lab
//! plugin is swapped 20 times (alternately uploaded and dropped into the
//! plugins folder) and rolled back once, and the host process is killed
//! with SIGKILL three times and restarted. Afterwards every chart and every
//! lab view is what the events imply, each event applied once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{
    HostProcess, TestEnv, as_sent, assert_same_documents, eventually, own_plugins, plugins_dir,
    put_plugin, view_documents,
};
use lab::LabPlugin;
use patient::PatientPlugin;
use projector::bench::lifecycle::rebuilt;
use projector::sim::Simulator;
use projector_events::Event;
use projector_sdk::Plugin;
use projector_sdk::testing::Harness;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The load: events a second (aiming above 5,000), in bursts every 100 ms.
const RATE: usize = 5_500;
const BURST: usize = RATE / 10;

/// The lab plugin's running hash, as `GET /api/plugins` shows it.
async fn lab_hash(host: &HostProcess, admin: &str) -> Option<String> {
    let plugins = host.get_json("/api/plugins", admin).await?;
    plugins.as_array()?.iter().find(|p| p["name"] == "lab")?["hash"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_a_rollback_and_three_kills_under_load_lose_nothing_and_apply_nothing_twice() {
    let _heavy = crate::common::heavy().await;
    let mut env = TestEnv::new("chaos").await;
    let dir = own_plugins(
        &env.tag,
        &["patient", "lab", "radiology", "pharmacy", "encounter"],
    );
    env.config.plugins_dir = dir.clone();
    let admin = env.token("u-admin", "admin");
    let events =
        Arc::new(Simulator::new(23, chrono::Utc::now() - chrono::Duration::days(2)).traffic(4_000));

    let mut host = env.spawn_host().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (mut publisher, events, stop) = (env.publisher(), events.clone(), stop.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0;
            for burst in events.chunks(BURST) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for event in burst {
                    publisher.publish(event).await.unwrap();
                }
                publisher.flush().await.unwrap();
                sent += burst.len();
                let due = Duration::from_secs_f64(sent as f64 / RATE as f64);
                tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
            }
            (sent, started.elapsed())
        })
    };

    let lab_wasm = std::fs::read(plugins_dir().join("lab.wasm")).unwrap();
    let mut kills = 0;
    for k in 0..20 {
        let version = rebuilt(&lab_wasm, &format!("v{k}"));
        let hash = hex::encode(Sha256::digest(&version));
        if k % 2 == 0 {
            let (status, answer) = put_plugin(&host.base, "lab", &admin, version).await;
            assert_eq!(status, 200, "upload {k}: {answer}");
        } else {
            let partial = dir.join(".lab.wasm.copying");
            std::fs::write(&partial, &version).unwrap();
            std::fs::rename(&partial, dir.join("lab.wasm")).unwrap();
        }
        eventually(&format!("swap {k} in place"), || async {
            (lab_hash(&host, &admin).await.as_deref() == Some(hash.as_str())).then_some(())
        })
        .await;
        if k % 6 == 5 {
            host.kill().await;
            kills += 1;
            host = env.spawn_host().await;
        }
    }
    assert_eq!(kills, 3);
    let (status, back) = {
        let response = reqwest::Client::new()
            .post(format!("{}/api/plugins/lab/rollback", host.base))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 200, "{back}");
    let v18 = hex::encode(Sha256::digest(rebuilt(&lab_wasm, "v18")));
    assert_eq!(back["hash"], v18.as_str());
    stop.store(true, Ordering::Relaxed);
    let (sent, took) = load.await.unwrap();
    println!(
        "load: {sent} events in {:.1} s ({:.0} events/s)",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64()
    );

    // Caught up, every view is what the events imply.
    let stream = env.js.get_stream(&env.config.stream_name).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let pool = env.pool().await;
    for name in ["patient", "lab", "radiology", "pharmacy", "encounter"] {
        while env.backlog(&pool, &stream, name).await > 0 {
            assert!(Instant::now() < deadline, "{name} did not catch up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let as_sent: Vec<Event> = events[..sent].iter().map(as_sent).collect();
    let mut patient = Harness::<PatientPlugin>::new();
    let mut lab = Harness::<LabPlugin>::new();
    for event in &as_sent {
        patient.feed(event).unwrap();
        lab.feed(event).unwrap();
    }
    for view in PatientPlugin::describe().views {
        assert_same_documents(
            &view.name,
            &view_documents(&pool, &view.name).await,
            &patient.documents(&view.name),
        );
    }
    for view in LabPlugin::describe().views {
        assert_same_documents(
            &view.name,
            &view_documents(&pool, &view.name).await,
            &lab.documents(&view.name),
        );
    }
    let applied: Vec<(String, i64)> =
        sqlx::query_as("SELECT plugin, sum(applied)::bigint FROM checkpoints WHERE plugin IN ('patient', 'lab') GROUP BY plugin ORDER BY plugin")
            .fetch_all(&pool)
            .await
            .unwrap();
    let labs = as_sent
        .iter()
        .filter(|e| e.envelope.event_type.starts_with("lab."))
        .count() as i64;
    assert_eq!(
        applied,
        [
            ("lab".to_owned(), labs),
            ("patient".to_owned(), sent as i64)
        ],
        "each event applied exactly once"
    );
    // Every critical-value notification is stored (once: the outbox keeps
    // one per user and dedupe key).
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, dedupe_key FROM notifications")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(!lab.notifications.is_empty());
    for n in &lab.notifications {
        assert!(
            stored.contains(&(n.recipient.clone(), n.dedupe_key.clone())),
            "notification {} to {} lost",
            n.dedupe_key,
            n.recipient
        );
    }
    assert_eq!(
        std::fs::read(dir.join("lab.wasm")).unwrap(),
        rebuilt(&lab_wasm, "v18"),
        "the folder holds the version rolled back to"
    );

    host.kill().await;
    let _ = std::fs::remove_dir_all(dir);
}
