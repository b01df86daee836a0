//! Hosts on one database and stream: one projects each plugin, the others
//! stand by, and when the one projecting goes away another takes over
//! where it stopped. A host whose claim was lost cannot commit.

use crate::common::{SEED, TestEnv, assert_seed_chart, eventually, own_plugins};
use projector::serve::Host;
use projector::store::claim::{self, Claim};

fn states(host: &Host) -> Vec<&'static str> {
    host.registry
        .names()
        .iter()
        .map(|name| host.registry.get(name).unwrap().describe().0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_projects_and_another_takes_over_when_it_goes() {
    let mut env = TestEnv::new("claims").await;
    env.config.plugins_dir = own_plugins(&env.tag, &["patient", "lab"]);
    let (seed_first, seed_rest) = SEED.split_at(SEED.find("\n{\"eventId\":\"seed-0009\"").unwrap());
    let a = env.start().await;
    eventually("host a claims both plugins", || async {
        (states(&a) == ["running", "running"]).then_some(())
    })
    .await;
    let b = env.start().await;
    eventually("host b stands by", || async {
        (states(&b) == ["standby", "standby"]).then_some(())
    })
    .await;
    env.publish(seed_first).await;
    env.settle(&a).await;

    a.stop();
    eventually("host b takes over", || async {
        (states(&b) == ["running", "running"]).then_some(())
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
    let held = Claim::try_take(&pool, "lab").await.unwrap().expect("free");
    assert!(
        Claim::try_take(&pool, "lab").await.unwrap().is_none(),
        "one holder"
    );
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
    let again = Claim::try_take(&pool, "lab").await.unwrap();
    assert!(again.is_some(), "free again");
    // A claim is a pool connection held for good: closing waits for it.
    drop((held, again));
    pool.close().await;
}
