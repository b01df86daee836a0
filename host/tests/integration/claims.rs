//! Hosts on one database and stream: one projects each plugin, the others
//! stand by, and when the one projecting goes away another takes over
//! where it stopped; the hosts share the plugins fairly, a joining host
//! taking its share and a leaving one handing its plugins over. A host
//! whose claim was lost cannot commit.

use std::time::Duration;

use crate::common::{HostProcess, SEED, TestEnv, assert_seed_chart, eventually, own_plugins};
use projector::serve::Host;
use projector::store::claim::{self, Claim};
use serde_json::Value;

/// The lease of the claims these tests take themselves.
const LEASE: Duration = Duration::from_secs(1);

fn states(host: &Host) -> Vec<&'static str> {
    host.registry
        .names()
        .iter()
        .map(|name| host.registry.get(name).unwrap().describe().0)
        .collect()
}

/// How many of a host's plugins are in each state: (running, standby).
fn split(host: &Host) -> (usize, usize) {
    let states = states(host);
    let running = states.iter().filter(|s| **s == "running").count();
    (running, states.len() - running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_host_takes_its_share_and_a_leaving_one_hands_its_plugins_over() {
    let mut env = TestEnv::new("claims").await;
    env.config.plugins_dir = own_plugins(&env.tag, &["patient", "lab"]);
    // Long enough that a hand-over seen before it lapses was not a lapse.
    env.config.lease_ttl = Duration::from_secs(10);
    let (seed_first, seed_rest) = SEED.split_at(SEED.find("\n{\"eventId\":\"seed-0009\"").unwrap());
    let a = env.start().await;
    eventually("host a claims both plugins", || async {
        (split(&a) == (2, 0)).then_some(())
    })
    .await;
    let b = env.start().await;
    eventually("host b takes its share: one plugin each", || async {
        (split(&a) == (1, 1) && split(&b) == (1, 1)).then_some(())
    })
    .await;
    env.publish(seed_first).await;
    env.settle(&a).await;
    env.settle(&b).await;
    // The cluster view, from either host: both live, one plugin each.
    let admin = env.token("u-admin-1", "admin");
    let (status, view) = env.get(&b, "/api/cluster", Some(&admin)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        members(&view),
        [(a.member.to_string(), true), (b.member.to_string(), true)]
    );
    let mut owners_now = owners(&view);
    owners_now.sort();
    let mut both = [a.member.to_string(), b.member.to_string()];
    both.sort();
    assert_eq!(owners_now, both);

    // A rebuild replaces the live views under the live projection: a host
    // that stands by for the plugin refuses it and says where to ask.
    let standby = a
        .registry
        .names()
        .into_iter()
        .find(|name| a.registry.get(name).unwrap().describe().0 == "standby")
        .expect("a stands by for one plugin");
    let (status, refused) = env
        .post(&a, &format!("/api/plugins/{standby}/rebuild"), &admin)
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("another host projects")),
        "{refused}"
    );

    // A graceful stop: a leaves the members and its plugin goes to b at
    // once, long before a's lease could have lapsed.
    let left = std::time::Instant::now();
    a.leave().await;
    eventually("host b takes over", || async {
        (split(&b) == (2, 0)).then_some(())
    })
    .await;
    assert!(
        left.elapsed() < env.config.lease_ttl,
        "handed over in {:?}, not at once",
        left.elapsed()
    );
    eventually("the view shows b projecting and a gone", || async {
        let (_, view) = env.get(&b, "/api/cluster", Some(&admin)).await;
        (owners(&view) == [b.member.to_string(), b.member.to_string()]
            && members(&view) == [(b.member.to_string(), true)])
        .then_some(())
    })
    .await;
    env.publish(seed_rest.trim_start()).await;
    env.settle(&b).await;
    let (_, chart) = env
        .get(
            &b,
            "/api/aggregate/patients/p-john-doe",
            Some(&env.token("u-dr", "provider")),
        )
        .await;
    assert_seed_chart(&chart);
    // The alerts of the plugins loaded here: lab's critical potassium and
    // the penicillin allergy (radiology and pharmacy raise the others).
    assert_eq!(chart["criticalAlerts"], 2);
    let applied: i64 =
        sqlx::query_scalar("SELECT applied FROM checkpoints WHERE plugin = 'patient'")
            .fetch_one(&env.pool().await)
            .await
            .unwrap();
    assert_eq!(
        applied as usize,
        SEED.lines().count(),
        "each event applied once"
    );
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_connection_died_no_longer_fences_in() {
    let env = TestEnv::new("fence").await;
    let pool = projector::store::connect(&env.config.database_url, env.config.db_connections)
        .await
        .unwrap();
    let held = Claim::try_take(&pool, "lab", LEASE, uuid::Uuid::new_v4())
        .await
        .unwrap()
        .expect("free");
    assert!(
        Claim::try_take(&pool, "lab", LEASE, uuid::Uuid::new_v4())
            .await
            .unwrap()
            .is_none(),
        "one holder"
    );
    assert!(held.alive());
    let mut tx = pool.begin().await.unwrap();
    assert!(claim::held(&mut tx, "lab", held.pid).await.unwrap());
    assert!(!claim::held(&mut tx, "patient", held.pid).await.unwrap());
    drop(tx);
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(held.pid)
        .execute(&pool)
        .await
        .unwrap();
    eventually("the lock is gone with its connection", || async {
        let mut tx = pool.begin().await.unwrap();
        (!claim::held(&mut tx, "lab", held.pid).await.unwrap()).then_some(())
    })
    .await;
    eventually("the claim's next renewal finds it lost", || async {
        (!held.alive()).then_some(())
    })
    .await;
    let again = Claim::try_take(&pool, "lab", LEASE, uuid::Uuid::new_v4())
        .await
        .unwrap();
    assert!(again.is_some(), "free again");
    // A claim is a pool connection held for good: closing waits for it.
    drop((held, again));
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

/// The cluster view's owner of each plugin, by plugin name.
fn owners(view: &Value) -> Vec<String> {
    view["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["owner"].as_str().unwrap_or("none").to_owned())
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
    // One plugin, so that its one host has its share and keeps it when the
    // other wakes (with more, the woken host would rightly get one back).
    env.config.plugins_dir = own_plugins(&env.tag, &["patient"]);
    let (seed_first, seed_rest) = SEED.split_at(SEED.find("\n{\"eventId\":\"seed-0009\"").unwrap());
    let lease = [("LEASE_TTL", "2s")];
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
            sqlx::query_scalar::<_, i64>("SELECT applied FROM checkpoints WHERE plugin = $1")
                .bind(plugin)
                .fetch_optional(&pool)
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
