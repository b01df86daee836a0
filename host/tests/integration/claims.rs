//! Hosts on one database and stream: each partition of each plugin has
//! one owner, and when the owner goes away another host takes over where
//! it stopped; the hosts share the partitions fairly, a joining host taking
//! its share and a leaving one handing its partitions over; a rebuild
//! gathers a plugin's partitions on its host until it switches, and a host
//! whose version is out of step with the views it switched in projects
//! none of them until it runs that version. A host whose lease was lost
//! cannot commit.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{
    HostProcess, SEED, TestEnv, assert_seed_chart, eventually, own_plugins, plugins_dir,
    put_plugin, seed_tally, view_documents,
};
use projector::serve::Host;
use projector::store::claim::{self, Lease};
use projector::store::members;
use serde_json::Value;

/// The lease of the claims these tests take themselves.
const LEASE: Duration = Duration::from_secs(1);

/// How many partitions a host holds, over its plugins.
fn held(host: &Host) -> usize {
    host.registry
        .projections()
        .iter()
        .map(|p| p.progress.held())
        .sum()
}

/// The seed's events again for another patient, with their own ids.
fn for_jane(events: &str) -> String {
    events
        .replace("seed-", "jane-")
        .replace("p-john-doe", "p-jane-roe")
}

/// Checks on `host` the charts of the seed's patient and of Jane's copy
/// of it (her events reuse his report ids, so her alerts count as his and
/// are not checked).
async fn assert_both_charts(env: &TestEnv, host: &Host) {
    let provider = env.token("u-dr", "provider");
    for patient in ["p-john-doe", "p-jane-roe"] {
        let path = format!("/api/aggregate/patients/{patient}");
        let (_, chart) = env.get(host, &path, Some(&provider)).await;
        let as_john = chart
            .to_string()
            .replace(patient, "p-john-doe")
            .replace("jane-", "seed-");
        assert_seed_chart(&serde_json::from_str(&as_john).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_host_takes_its_share_and_a_leaving_one_hands_its_partitions_over() {
    let mut env = TestEnv::new("claims").await;
    env.config.plugins_dir = own_plugins(&env.tag, &["patient", "lab"]);
    env.config.partitions = 4;
    // Long enough that a hand-over seen before it lapses was not a lapse.
    env.config.lease_ttl = Duration::from_secs(10);
    let (seed_first, seed_rest) = SEED.split_at(SEED.find("\n{\"eventId\":\"seed-0009\"").unwrap());
    let a = env.start().await;
    eventually("host a claims every partition of both plugins", || async {
        (held(&a) == 8).then_some(())
    })
    .await;
    let b = env.start().await;
    eventually("host b takes its share: four partitions each", || async {
        (held(&a) == 4 && held(&b) == 4).then_some(())
    })
    .await;
    env.publish(seed_first).await;
    env.publish(&for_jane(seed_first)).await;
    env.settle(&a).await;
    env.settle(&b).await;
    // The cluster view, from either host: both live, every partition
    // owned, four each, none behind.
    let admin = env.token("u-admin-1", "admin");
    let (status, view) = env.get(&b, "/api/cluster", Some(&admin)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        members(&view),
        [(a.member.to_string(), true), (b.member.to_string(), true)]
    );
    assert_eq!(
        owned(&view),
        BTreeMap::from([(a.member.to_string(), 4), (b.member.to_string(), 4)]),
        "{view}"
    );
    assert!(lags(&view).iter().all(|lag| *lag == Some(0)), "{view}");

    // A rebuild on a: the other host gives the plugin's partitions up to
    // the pin, the switch happens with all of them here, and then they are
    // shared again.
    let (status, started) = env.post(&a, "/api/plugins/patient/rebuild", &admin).await;
    assert!((200..300).contains(&status), "{started}");
    eventually("the rebuild switches in", || async {
        a.deployer.rebuild_status("patient").is_none().then_some(())
    })
    .await;
    let patient = a.registry.get("patient").unwrap();
    assert_eq!(patient.controls.generation(), 1, "switched to the rebuild");

    // A graceful stop: a leaves the members and its partitions go to b at
    // once, long before a's lease could have lapsed.
    let left = std::time::Instant::now();
    a.leave().await;
    eventually("host b takes over", || async {
        (held(&b) == 8).then_some(())
    })
    .await;
    assert!(
        left.elapsed() < env.config.lease_ttl,
        "handed over in {:?}, not at once",
        left.elapsed()
    );
    eventually("the view shows b owning everything and a gone", || async {
        let (_, view) = env.get(&b, "/api/cluster", Some(&admin)).await;
        (owned(&view) == BTreeMap::from([(b.member.to_string(), 8)])
            && members(&view) == [(b.member.to_string(), true)])
        .then_some(())
    })
    .await;
    env.publish(seed_rest.trim_start()).await;
    env.publish(&for_jane(seed_rest.trim_start())).await;
    env.settle(&b).await;
    assert_both_charts(&env, &b).await;
    // The alerts of the plugins loaded here: lab's critical potassium and
    // the penicillin allergy (radiology and pharmacy raise the others).
    let provider = env.token("u-dr", "provider");
    let (_, chart) = env
        .get(&b, "/api/aggregate/patients/p-john-doe", Some(&provider))
        .await;
    assert_eq!(chart["criticalAlerts"], 2);
    let applied: i64 =
        sqlx::query_scalar("SELECT sum(applied)::bigint FROM checkpoints WHERE plugin = 'patient'")
            .fetch_one(&env.pool().await)
            .await
            .unwrap();
    assert_eq!(
        applied as usize,
        2 * SEED.lines().count(),
        "each event applied once"
    );
    b.stop();
}

/// A projection gives partitions up while its host counts another as live
/// (a host just killed is counted for up to `LEASE_TTL`), and takes them
/// back before any other host does. Meanwhile its consumer passed their
/// events over as another host's; taking them back must start again after
/// their checkpoints, or those events are never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_given_up_and_taken_back_lose_none_of_their_events() {
    let mut env = TestEnv::new("retake").await;
    env.config.plugins_dir = own_plugins(&env.tag, &["patient"]);
    env.config.partitions = 4;
    env.config.lease_ttl = Duration::from_secs(2);
    let a = env.start().await;
    eventually("host a claims every partition", || async {
        (held(&a) == 4).then_some(())
    })
    .await;
    // Another member, live while this beats for it: a's share is two.
    let pool = env.pool().await;
    let ghost = uuid::Uuid::new_v4();
    let beating = tokio::spawn({
        let pool = pool.clone();
        async move {
            loop {
                let _ = members::beat(&pool, ghost, "127.0.0.1:1", chrono::Utc::now()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    eventually("host a gives up the two above its share", || async {
        (held(&a) == 2).then_some(())
    })
    .await;
    let patients: Vec<String> = (0..24).map(|i| format!("p-retake-{i}")).collect();
    let events: Vec<String> = patients
        .iter()
        .map(|patient| {
            serde_json::json!({
                "eventId": format!("e-{patient}"), "eventType": "patient.created",
                "timestamp": "2026-11-26T08:00:00Z", "patientId": patient,
                "userId": "u-admin", "portalType": "admin",
                "payload": { "mrn": "MRN", "name": { "given": "Re", "family": "Take" },
                             "birthDate": "1970-01-01", "gender": "female" },
            })
            .to_string()
        })
        .collect();
    env.publish(&events.join("\n")).await;
    eventually(
        "nobody else takes them, so host a takes them back",
        || async { (held(&a) == 4).then_some(()) },
    )
    .await;
    beating.abort();
    env.settle(&a).await;
    let charts = view_documents(&pool, "patient_chart").await;
    let missing: Vec<&String> = patients
        .iter()
        .filter(|p| !charts.contains_key(*p))
        .collect();
    assert!(missing.is_empty(), "events never applied for {missing:?}");
    a.stop();
}

/// Patient `i`'s copy of `events` (the seed's), with ids of its own.
fn for_patient(events: &str, i: usize) -> String {
    events
        .replace("seed-", &format!("s{i}-"))
        .replace("p-john-doe", &format!("p-{i}"))
}

/// The state and error `GET /api/plugins` on `host` gives `plugin`.
async fn plugin_state(env: &TestEnv, host: &Host, plugin: &str) -> (String, Option<String>) {
    let admin = env.token("u-admin", "admin");
    let (_, plugins) = env.get(host, "/api/plugins", Some(&admin)).await;
    let plugin = plugins
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == plugin))
        .cloned()
        .unwrap_or_default();
    (
        plugin["state"].as_str().unwrap_or_default().to_owned(),
        plugin["error"].as_str().map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_out_of_step_with_rebuilt_views_projects_none_of_them_until_it_runs_their_version() {
    let mut env = TestEnv::new("claims_step").await;
    env.config.partitions = 4;
    env.config.lease_ttl = Duration::from_secs(2);
    // A folder per host and no object store: a version uploaded to one
    // host does not reach the other.
    let (a, dir_a) = env.start_with_own_plugins("a", &["testing/tally"]).await;
    let (b, dir_b) = env.start_with_own_plugins("b", &["testing/tally"]).await;
    eventually("the hosts share the partitions", || async {
        (held(&a) == 2 && held(&b) == 2).then_some(())
    })
    .await;
    let patients = 16;
    let everyone = |events: &str| {
        (0..patients)
            .map(|i| for_patient(events, i))
            .collect::<Vec<_>>()
            .join("\n")
    };
    env.publish(&everyone(SEED)).await;
    env.settle(&a).await;
    env.settle(&b).await;

    // Version 2 counts radiology events too: uploaded to a, it rebuilds
    // the views there and switches them in.
    let admin = env.token("u-admin", "admin");
    let v2 = std::fs::read(plugins_dir().join("testing/tally-v2.wasm")).unwrap();
    let (status, _) = put_plugin(
        &format!("http://{}", a.http_addr),
        "tally",
        &admin,
        v2.clone(),
    )
    .await;
    assert_eq!(status, 202);
    eventually("the rebuild switches in on a", || async {
        a.deployer.rebuild_status("tally").is_none().then_some(())
    })
    .await;

    // b still runs version 1, which reads no radiology events. Once it
    // has taken partitions back, or said why it will not, every patient's
    // later study must be counted, whichever partition the patient is in.
    let out_of_step = || async {
        let (state, error) = plugin_state(&env, &b, "tally").await;
        state == "standby" && error.is_some_and(|e| e.contains("rebuilt"))
    };
    eventually(
        "b takes partitions back or says why it does not",
        || async { (held(&b) > 0 || out_of_step().await).then_some(()) },
    )
    .await;
    let study = SEED
        .lines()
        .find(|l| l.contains("radiology.study.complete"))
        .unwrap();
    env.publish(&everyone(&study.replace("seed-0015", "seed-later")))
        .await;
    let pool = env.pool().await;
    let all_counted = |later: usize| {
        let expected = seed_tally(
            &["lab.", "radiology."],
            &vec!["radiology.study.complete"; later],
        );
        let pool = pool.clone();
        async move {
            let tallies = view_documents(&pool, "tallies").await;
            (0..patients)
                .all(|i| tallies.get(&format!("p-{i}")) == Some(&expected))
                .then_some(())
        }
    };
    eventually("every patient's later study counted", || all_counted(1)).await;
    assert_eq!(held(&b), 0, "b projects nothing with version 1");
    assert!(out_of_step().await, "b says why");

    // Given version 2, b takes its share again, on the rebuilt views'
    // generation, and reads radiology events for its partitions.
    let (status, deployed) =
        put_plugin(&format!("http://{}", b.http_addr), "tally", &admin, v2).await;
    assert_eq!(
        (status, deployed["deployed"].as_str()),
        (200, Some("swapped")),
        "{deployed}"
    );
    eventually("the hosts share the partitions again", || async {
        (held(&a) == 2 && held(&b) == 2).then_some(())
    })
    .await;
    let generation = |host: &Host| host.registry.get("tally").unwrap().controls.generation();
    assert_eq!(generation(&b), generation(&a));
    assert_eq!(
        plugin_state(&env, &b, "tally").await,
        ("running".to_owned(), None)
    );
    env.publish(&everyone(&study.replace("seed-0015", "seed-again")))
        .await;
    eventually("every patient's second later study counted once", || {
        all_counted(2)
    })
    .await;
    let kinds = view_documents(&pool, "tally_kinds").await;
    assert_eq!(
        kinds["radiology_study_complete"]["count"],
        3 * patients,
        "each study counted once (the count is over all patients: both hosts write it)"
    );
    a.stop();
    b.stop();
    for dir in [dir_a, dir_b] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_connection_died_no_longer_fences_in() {
    let env = TestEnv::new("fence").await;
    let pool = projector::store::connect(&env.config.database_url, env.config.db_connections)
        .await
        .unwrap();
    let lease = Lease::open(&pool, "lab", LEASE, uuid::Uuid::new_v4())
        .await
        .unwrap();
    assert!(lease.try_take(0).await.unwrap(), "free");
    assert!(lease.try_take(1).await.unwrap(), "free");
    let other = Lease::open(&pool, "lab", LEASE, uuid::Uuid::new_v4())
        .await
        .unwrap();
    assert!(!other.try_take(1).await.unwrap(), "one holder");
    assert!(other.try_take(2).await.unwrap(), "another partition");
    assert!(lease.alive());
    let mut tx = pool.begin().await.unwrap();
    assert!(
        claim::held(&mut tx, "lab", lease.pid, &[0, 1])
            .await
            .unwrap()
    );
    assert!(
        !claim::held(&mut tx, "lab", lease.pid, &[0, 2])
            .await
            .unwrap()
    );
    assert!(
        !claim::held(&mut tx, "patient", lease.pid, &[0])
            .await
            .unwrap()
    );
    drop(tx);
    lease.give_up(1).await.unwrap();
    assert!(other.try_take(1).await.unwrap(), "given up, taken");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(lease.pid)
        .execute(&pool)
        .await
        .unwrap();
    eventually("the lock is gone with its connection", || async {
        let mut tx = pool.begin().await.unwrap();
        (!claim::held(&mut tx, "lab", lease.pid, &[0]).await.unwrap()).then_some(())
    })
    .await;
    eventually("the lease's next renewal finds it lost", || async {
        (!lease.alive()).then_some(())
    })
    .await;
    assert!(other.try_take(0).await.unwrap(), "free again");
    // A lease is a pool connection held for good: closing waits for it.
    drop((lease, other));
    pool.close().await;
}

/// The cluster view's members: id and whether live, oldest first.
fn members(view: &Value) -> Vec<(String, bool)> {
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["live"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// How many partitions each member owns in the cluster view, over its
/// plugins; `none` counts those nobody owns.
fn owned(view: &Value) -> BTreeMap<String, usize> {
    let mut owned = BTreeMap::new();
    for plugin in view["plugins"].as_array().unwrap() {
        for partition in plugin["partitions"].as_array().unwrap() {
            let owner = partition["owner"].as_str().unwrap_or("none").to_owned();
            *owned.entry(owner).or_default() += 1;
        }
    }
    owned
}

/// Every partition's lag in the cluster view.
fn lags(view: &Value) -> Vec<Option<u64>> {
    view["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["partitions"].as_array().unwrap())
        .map(|p| p["lag"].as_u64())
        .collect()
}

/// Each plugin's state on a host process, by name.
async fn process_states(env: &TestEnv, host: &HostProcess) -> Vec<(String, String)> {
    host.plugin_states(&env.token("u-admin-1", "admin")).await
}

/// The batches a host process has committed, summed over its plugins.
async fn batches_committed(host: &HostProcess) -> f64 {
    let text = reqwest::get(format!("{}/metrics", host.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("projector_batch_duration_seconds_count"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn all_in(states: &[(String, String)], state: &str) -> bool {
    !states.is_empty() && states.iter().all(|(_, s)| s == state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_stopped_past_its_lease_loses_its_claims_and_commits_nothing_when_it_wakes() {
    let mut env = TestEnv::new("lease").await;
    // One plugin in one partition, so that its one host has its share and
    // keeps it when the other wakes (with more, the woken host would rightly
    // get some back).
    env.config.plugins_dir = own_plugins(&env.tag, &["patient"]);
    let (seed_first, seed_rest) = SEED.split_at(SEED.find("\n{\"eventId\":\"seed-0009\"").unwrap());
    let lease = [("LEASE_TTL", "2s"), ("PARTITIONS", "1")];
    let a = env.spawn_host_with(&lease).await;
    eventually("host a claims the plugin", || async {
        all_in(&process_states(&env, &a).await, "running").then_some(())
    })
    .await;
    let b = env.spawn_host_with(&lease).await;
    eventually("host b stands by", || async {
        all_in(&process_states(&env, &b).await, "standby").then_some(())
    })
    .await;
    env.publish(seed_first).await;
    let pool = env.pool().await;
    let applied = |plugin: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT sum(applied)::bigint FROM checkpoints WHERE plugin = $1",
            )
            .bind(plugin)
            .fetch_one(&pool)
            .await
            .unwrap()
            .unwrap_or(0)
        }
    };
    let first_count = seed_first.lines().count() as i64;
    eventually("host a applies the first events", || async {
        (applied("patient").await == first_count).then_some(())
    })
    .await;
    let committed_by_a = batches_committed(&a).await;
    assert!(committed_by_a > 0.0);

    // Frozen past its lease: PostgreSQL ends its claims' sessions, and b
    // takes over and applies the rest.
    a.signal("STOP");
    eventually("host b takes over from the stopped host", || async {
        all_in(&process_states(&env, &b).await, "running").then_some(())
    })
    .await;
    env.publish(seed_rest.trim_start()).await;
    let total = SEED.lines().count() as i64;
    eventually("host b applies the rest", || async {
        (applied("patient").await == total).then_some(())
    })
    .await;

    // Woken, a finds its claims gone: it commits nothing and stands by.
    a.signal("CONT");
    eventually("host a stands by", || async {
        all_in(&process_states(&env, &a).await, "standby").then_some(())
    })
    .await;
    env.publish(
        &SEED
            .replace("seed-", "again-")
            .replace("p-john-doe", "p-jane-roe"),
    )
    .await;
    eventually("host b applies what came after", || async {
        (applied("patient").await == 2 * total).then_some(())
    })
    .await;
    assert_eq!(
        batches_committed(&a).await,
        committed_by_a,
        "host a committed after it woke"
    );
    assert!(all_in(&process_states(&env, &b).await, "running"));
    assert_eq!(
        applied("patient").await,
        2 * total,
        "each event applied once"
    );
    let chart: Value = reqwest::Client::new()
        .get(format!("{}/api/aggregate/patients/p-john-doe", b.base))
        .bearer_auth(env.token("u-dr", "provider"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_seed_chart(&chart);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_change_only_while_no_other_host_is_live_and_nothing_is_applied_twice() {
    let mut env = TestEnv::new("layout").await;
    env.config.plugins_dir = own_plugins(&env.tag, &["patient"]);
    env.config.partitions = 4;
    let a = env.start().await;
    env.publish(SEED).await;
    env.settle(&a).await;
    let pool = env.pool().await;
    let rows = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT count(*), min(seq), sum(applied)::bigint FROM checkpoints WHERE plugin = 'patient'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let (partitions, slowest, applied) = rows().await;
    assert_eq!((partitions, applied as usize), (4, SEED.lines().count()));

    // A host with another count refuses to start while a is live.
    let mut eight = env.config.clone();
    eight.partitions = 8;
    let refused = Host::start(eight.clone())
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .expect("a host with another PARTITIONS refuses to start");
    assert!(refused.contains("PARTITIONS is 8 here but 4"), "{refused}");
    assert_eq!(rows().await, (4, slowest, applied), "nothing moved");

    // Alone, it moves the checkpoints to eight partitions at the slowest of
    // the four, and reads again from there without applying anything twice.
    a.leave().await;
    let b = Host::start(eight).await.expect("alone, the host starts");
    assert_eq!(rows().await, (8, slowest, applied));
    env.publish(&for_jane(SEED)).await;
    env.settle(&b).await;
    eventually("b holds all eight partitions", || async {
        (held(&b) == 8).then_some(())
    })
    .await;
    assert_both_charts(&env, &b).await;
    let (_, _, applied) = rows().await;
    assert_eq!(
        applied as usize,
        2 * SEED.lines().count(),
        "each event applied once"
    );
    b.stop();
}
