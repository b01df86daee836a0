//! Fleet deploys against a real S3 server and NATS: a version deployed on
//! one host, or rolled back to, reaches another host of the deployment,
//! which fetches it from the `projector-plugins` bucket, checks its hash and
//! runs it; bytes that do not match the announced hash are refused, and so
//! is a version no host recorded as deployed, or an old one announced again.

use std::time::Duration;

use crate::common::{SEED, TestEnv, eventually, plugins_dir, put_plugin};
use projector::bench::lifecycle::rebuilt;
use projector::objects::{ObjectStore, PLUGINS, plugin_key};
use projector::serve::Host;
use serde_json::json;
use sha2::{Digest, Sha256};

fn lab_hash(host: &Host) -> String {
    host.registry.get("lab").unwrap().plugin().hash.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_deployed_on_one_host_reaches_the_others() {
    let mut env = TestEnv::new("fleet").await;
    let _s3 = env.with_s3().await;
    env.publish(SEED).await;
    let (a, dir_a) = env.start_with_own_plugins("a", &["lab"]).await;
    env.settle(&a).await;
    let (b, dir_b) = env.start_with_own_plugins("b", &["lab"]).await;
    let store = ObjectStore::new(&env.config);
    eventually("the plugins bucket made", || async {
        store
            .client()
            .head_bucket()
            .bucket(PLUGINS)
            .send()
            .await
            .ok()
    })
    .await;
    let original = lab_hash(&b);

    // Uploaded to one host, the version runs on the other too.
    let lab = std::fs::read(plugins_dir().join("lab.wasm")).unwrap();
    let v2 = rebuilt(&lab, "fleet-v2");
    let v2_hash = hex::encode(Sha256::digest(&v2));
    let admin = env.token("u-admin", "admin");
    let (status, _) = put_plugin(
        &format!("http://{}", a.http_addr),
        "lab",
        &admin,
        v2.clone(),
    )
    .await;
    assert_eq!(status, 200);
    eventually("host b runs the upload", || async {
        (lab_hash(&b) == v2_hash).then_some(())
    })
    .await;
    assert_eq!(std::fs::read(dir_b.join("lab.wasm")).unwrap(), v2);
    let stored = store
        .get_plugin("lab", &v2_hash)
        .await
        .expect("the artifact is in the bucket");
    assert_eq!(stored, v2);

    // A rollback on one host rolls the fleet back.
    let (status, _) = env.post(&a, "/api/plugins/lab/rollback", &admin).await;
    assert_eq!(status, 200);
    eventually("host b rolled back", || async {
        (lab_hash(&b) == original).then_some(())
    })
    .await;

    // An announcement whose stored bytes do not match its hash is refused.
    let v3 = rebuilt(&lab, "fleet-v3");
    let v3_hash = hex::encode(Sha256::digest(&v3));
    store
        .client()
        .put_object()
        .bucket(PLUGINS)
        .key(plugin_key("lab", &v3_hash))
        .body(rebuilt(&lab, "tampered").into())
        .send()
        .await
        .unwrap();
    let nats = async_nats::connect(&env.config.nats_url).await.unwrap();
    let forged = json!({ "plugin": "lab", "version": "x", "hash": v3_hash, "from": "elsewhere" });
    nats.publish(
        projector::fleet::subject(&env.config.subject_prefix),
        forged.to_string().into(),
    )
    .await
    .unwrap();
    nats.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lab_hash(&b), original, "tampered bytes are not deployed");
    assert_eq!(lab_hash(&a), original);

    // Issue 14: a version whose bytes match its hash, announced by no host
    // that recorded it, is not deployed; nor is an old announcement replayed.
    let v4 = rebuilt(&lab, "fleet-v4");
    let v4_hash = hex::encode(Sha256::digest(&v4));
    store.put_plugin("lab", &v4_hash, &v4).await.unwrap();
    for hash in [&v4_hash, &v2_hash] {
        let forged = json!({ "plugin": "lab", "version": "x", "hash": hash, "from": "elsewhere" });
        nats.publish(
            projector::fleet::subject(&env.config.subject_prefix),
            forged.to_string().into(),
        )
        .await
        .unwrap();
    }
    nats.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        lab_hash(&b),
        original,
        "unrecorded or replayed versions are not deployed"
    );
    assert_eq!(lab_hash(&a), original);

    // Every version that came to run, on either host, is audited with its
    // source and the admin behind it; the refused announcements are not.
    let audited: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT user_id, action, detail FROM audit_log
         WHERE resource_type = 'Plugin' AND resource_id = 'lab' AND action LIKE 'plugin.%'
         ORDER BY id",
    )
    .fetch_all(&env.pool().await)
    .await
    .unwrap();
    let audited: Vec<(&str, &str, &str, &str)> = audited
        .iter()
        .map(|(user, action, detail)| {
            let field = |name: &str| {
                detail
                    .split(' ')
                    .find_map(|f| f.strip_prefix(name))
                    .unwrap_or_default()
            };
            (
                user.as_str(),
                action.as_str(),
                field("source="),
                field("sha256="),
            )
        })
        .collect();
    assert_eq!(
        audited,
        [
            ("u-admin", "plugin.deployed", "upload", v2_hash.as_str()),
            ("u-admin", "plugin.deployed", "fleet", v2_hash.as_str()),
            (
                "u-admin",
                "plugin.rolled_back",
                "rollback",
                original.as_str()
            ),
            ("u-admin", "plugin.deployed", "fleet", original.as_str()),
        ]
    );

    a.stop();
    b.stop();
    let _ = std::fs::remove_dir_all(dir_a);
    let _ = std::fs::remove_dir_all(dir_b);
}
