//! Issue 16: scale-out. Three host processes share the five plugins on a
//! three-node NATS cluster (nats-server 2.12, the stream replicated three
//! times) while 21,000 events of 1,600 patients arrive; one host is killed
//! with SIGKILL, one NATS node is killed and started again, and a fourth
//! host joins. Afterwards every view equals the plugins' reference
//! projection, each event was applied once, every notification was stored
//! and pushed once to its recipient's device, nothing is left to apply, and
//! every live host projects a share; a plugin of several subjects reads
//! only those.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::clients::WebSocket;
use crate::common::nats_cluster::NatsCluster;
use crate::common::{
    HostProcess, TestEnv, as_sent, assert_same_documents, eventually, free_port, heavy,
    own_plugins, view_documents,
};
use encounter::EncounterPlugin;
use lab::LabPlugin;
use patient::PatientPlugin;
use pharmacy::PharmacyPlugin;
use projector::publish::Publisher;
use projector::sim::Simulator;
use projector_events::Event;
use projector_sdk::Plugin;
use projector_sdk::testing::Harness;
use radiology::RadiologyPlugin;
use sqlx::PgPool;

const PLUGINS: [&str; 5] = ["patient", "lab", "radiology", "pharmacy", "encounter"];
/// Patients (about thirteen events each).
const PATIENTS: usize = 1_600;
/// Events published per burst, a burst every 100 ms.
const BURST: usize = 250;

/// One plugin run natively over the events: what its views must hold.
fn reference<P: Plugin>(events: &[Event]) -> Harness<P> {
    let mut harness = Harness::<P>::new();
    for event in events {
        harness.feed(event).expect("the simulator's events apply");
    }
    harness
}

/// Checks a plugin's views against its reference.
async fn assert_views<P: Plugin>(pool: &PgPool, harness: &Harness<P>) {
    for view in &P::describe().views {
        assert_same_documents(
            &view.name,
            &view_documents(pool, &view.name).await,
            &harness.documents(&view.name),
        );
    }
}

/// Publishes a burst until JetStream has stored all of it: a publish that
/// fails while a node is down is sent again (deduplicated by eventId).
async fn publish_burst(publisher: &mut Publisher, burst: &[Event]) {
    for _ in 0..60 {
        let sent = async {
            for event in burst {
                publisher.publish(event).await?;
            }
            publisher.flush().await
        }
        .await;
        if sent.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("a burst could not be published in 30 s");
}

/// A host process of this test: a lease of 2 s, no resends during the
/// test, its socket port known.
async fn spawn_host(env: &TestEnv) -> (HostProcess, u16) {
    let ws_port = free_port();
    let ws_addr = format!("127.0.0.1:{ws_port}");
    let host = env
        .spawn_host_with(&[
            ("LEASE_TTL", "2s"),
            ("RESEND_INTERVAL", "1h"),
            ("WS_ADDR", &ws_addr),
        ])
        .await;
    (host, ws_port)
}

/// Waits until, in the cluster view, every partition of every plugin is
/// owned and each of `hosts` owns some.
async fn each_projects_a_share(hosts: &[&HostProcess], admin: &str) {
    eventually("each host owns a share of the partitions", || async {
        let view = hosts[0].get_json("/api/cluster", admin).await?;
        let mut owned: BTreeMap<String, usize> = BTreeMap::new();
        for plugin in view["plugins"].as_array()? {
            for partition in plugin["partitions"].as_array()? {
                let owner = partition["owner"].as_str().unwrap_or("none");
                *owned.entry(owner.to_owned()).or_default() += 1;
            }
        }
        let partitions = view["partitions"].as_u64()? as usize;
        (!owned.contains_key("none")
            && owned.len() == hosts.len()
            && owned.values().sum::<usize>() == PLUGINS.len() * partitions)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_on_a_nats_cluster_lose_nothing_through_a_host_kill_a_node_restart_and_a_join() {
    let _heavy = heavy().await;
    let mut nats = NatsCluster::start(&format!(
        "cluster-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
    .await;
    let urls = nats.urls();
    let mut env = TestEnv::configured("cluster", |config| {
        config.nats_url = urls;
        config.stream_replicas = 3;
    })
    .await;
    env.config.plugins_dir = own_plugins(&env.tag, &PLUGINS);
    let admin = env.token("u-admin", "admin");
    let events =
        Simulator::new(16, chrono::Utc::now() - chrono::Duration::days(1)).traffic(PATIENTS);
    let patients: BTreeSet<&str> = events
        .iter()
        .map(|e| e.envelope.patient_id.as_str())
        .collect();
    assert!(
        events.len() >= 20_000 && patients.len() >= 500,
        "{} events, {} patients",
        events.len(),
        patients.len()
    );
    let as_sent: Vec<Event> = events.iter().map(as_sent).collect();
    let patient = reference::<PatientPlugin>(&as_sent);
    let lab = reference::<LabPlugin>(&as_sent);
    let radiology = reference::<RadiologyPlugin>(&as_sent);
    let pharmacy = reference::<PharmacyPlugin>(&as_sent);
    let encounter = reference::<EncounterPlugin>(&as_sent);
    let expected: BTreeSet<(String, String)> = [
        &patient.notifications,
        &lab.notifications,
        &radiology.notifications,
        &pharmacy.notifications,
        &encounter.notifications,
    ]
    .into_iter()
    .flatten()
    .map(|n| (n.recipient.clone(), n.dedupe_key.clone()))
    .collect();
    assert!(!expected.is_empty());

    let (a, _) = spawn_host(&env).await;
    let (b, _) = spawn_host(&env).await;
    let (c, c_ws) = spawn_host(&env).await;
    each_projects_a_share(&[&a, &b, &c], &admin).await;

    // Every recipient's device, on the host that stays: what it hears.
    let heard: Arc<Mutex<Vec<String>>> = Arc::default();
    let recipients: BTreeSet<&String> = expected.iter().map(|(user, _)| user).collect();
    let mut devices = Vec::new();
    for user in recipients {
        let token = env.token(user, "provider");
        let mut device = WebSocket::connect(
            format!("127.0.0.1:{c_ws}").parse().unwrap(),
            "",
            Some(&token),
        )
        .await
        .expect("accepted");
        let heard = heard.clone();
        devices.push(tokio::spawn(async move {
            while let Some((event, data)) = device.next_event(Duration::from_secs(3600)).await {
                if event == "notification" || event == "critical_alert" {
                    heard
                        .lock()
                        .unwrap()
                        .push(data["notificationId"].as_str().unwrap().to_owned());
                }
            }
        }));
    }

    // The load, with a host killed at a quarter, a NATS node killed at a
    // half and started again at three quarters, when a fourth host joins.
    let mut publisher = env.publisher();
    let started = Instant::now();
    let bursts: Vec<&[Event]> = events.chunks(BURST).collect();
    let mut a = Some(a);
    let mut d = None;
    for (i, burst) in bursts.iter().enumerate() {
        let at = i * 4 / bursts.len();
        if i > 0 && at != (i - 1) * 4 / bursts.len() {
            match at {
                1 => a.take().unwrap().kill().await,
                2 => nats.kill(2).await,
                3 => {
                    nats.restart(2).await;
                    d = Some(spawn_host(&env).await.0);
                }
                _ => {}
            }
        }
        publish_burst(&mut publisher, burst).await;
        let due = Duration::from_millis(100 * (i as u64 + 1));
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
    }
    let d = d.expect("the fourth host joined");
    println!(
        "load: {} events in {:.1} s",
        events.len(),
        started.elapsed().as_secs_f64()
    );

    // Caught up: each plugin has handled each of its events once, and its
    // consumer has nothing left.
    let subscribed: BTreeMap<String, i64> = PLUGINS
        .iter()
        .map(|name| {
            let info = match *name {
                "patient" => PatientPlugin::describe(),
                "lab" => LabPlugin::describe(),
                "radiology" => RadiologyPlugin::describe(),
                "pharmacy" => PharmacyPlugin::describe(),
                _ => EncounterPlugin::describe(),
            };
            let count = as_sent
                .iter()
                .filter(|e| info.subscribes_to(&e.envelope.event_type))
                .count();
            (name.to_string(), count as i64)
        })
        .collect();
    let pool = env.pool().await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let handled: BTreeMap<String, i64> = sqlx::query_as(
            "SELECT plugin, sum(applied + dead_lettered)::bigint FROM checkpoints GROUP BY plugin",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        if handled == subscribed {
            break;
        }
        let over = handled
            .iter()
            .any(|(name, n)| subscribed.get(name).is_some_and(|s| n > s));
        if over || Instant::now() >= deadline {
            // What a short count is made of: dead letters (and the events
            // parked behind them) or events nobody handled.
            let letters: Vec<(String, String)> =
                sqlx::query_as("SELECT plugin, reason FROM dead_letters ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            let parked: Vec<(String, i64)> = sqlx::query_as(
                "SELECT plugin, count(*) FROM parked_events GROUP BY plugin ORDER BY plugin",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            panic!(
                "each event applied exactly once: {handled:?} of {subscribed:?}; dead letters {letters:?}; parked {parked:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stream = env.js.get_stream(&env.config.stream_name).await.unwrap();
    for name in PLUGINS {
        eventually(
            &format!("every partition of {name} is caught up"),
            || async { (env.backlog(&pool, &stream, name).await == 0).then_some(()) },
        )
        .await;
    }
    println!(
        "caught up {:.1} s after the load began",
        started.elapsed().as_secs_f64()
    );

    // Every view is the reference projection.
    assert_views(&pool, &patient).await;
    assert_views(&pool, &lab).await;
    assert_views(&pool, &radiology).await;
    assert_views(&pool, &pharmacy).await;
    assert_views(&pool, &encounter).await;

    // Every notification stored once and pushed once to its device.
    let stored: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT notification_id::text, user_id, dedupe_key, pushed_at IS NOT NULL FROM notifications",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let stored_keys: BTreeSet<(String, String)> = stored
        .iter()
        .map(|(_, user, key, _)| (user.clone(), key.clone()))
        .collect();
    assert_eq!(stored_keys, expected, "every notification stored");
    assert!(
        stored.iter().all(|(_, _, _, pushed)| *pushed),
        "every notification pushed"
    );
    let ids: Vec<String> = stored.iter().map(|(id, ..)| id.clone()).collect();
    eventually("every device heard its notifications", || async {
        (heard.lock().unwrap().len() >= ids.len()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut heard = heard.lock().unwrap().clone();
    heard.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(heard, ids, "each notification pushed once");

    // Every live host projects a share.
    each_projects_a_share(&[&b, &c, &d], &admin).await;

    // On nats-server 2.12 a plugin of several subjects reads only those:
    // the encounter plugin's consumers are filtered to its three.
    let prefix = &env.config.subject_prefix;
    let encounter = env.consumers(&stream, "encounter").await;
    assert!(!encounter.is_empty(), "hosts read encounter on consumers");
    for name in encounter {
        let info = stream.consumer_info(&name).await.expect("the consumer");
        assert_eq!(
            info.config.filter_subjects,
            EncounterPlugin::describe()
                .subjects
                .iter()
                .map(|s| format!("{prefix}{s}"))
                .collect::<Vec<_>>()
        );
    }
    for device in devices {
        device.abort();
    }
}
