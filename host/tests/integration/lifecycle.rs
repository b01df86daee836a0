//! Plugins change while the host runs: deploy over HTTP (validated, swapped
//! at a batch boundary), refuse bad uploads, roll back, pause and resume,
//! and start a new plugin that projects from the start of the stream.

use std::time::Duration;

use crate::common::{
    SEED, TestEnv, assert_seed_chart, eventually, own_plugins, plugins_dir, put_plugin as put,
    view_document,
};
use projector::bench::lifecycle::rebuilt;
use serde_json::Value;

/// The report ids of the seed patient's lab results.
async fn report_ids(env: &TestEnv, host: &projector::serve::Host, token: &str) -> Vec<String> {
    let (_, labs) = env
        .get(host, "/api/aggregate/patients/p-john-doe/labs", Some(token))
        .await;
    labs.as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["reportId"].as_str().map(str::to_owned))
        .collect()
}

async fn lab(env: &TestEnv, host: &projector::serve::Host, admin: &str) -> Value {
    let (_, plugins) = env.get(host, "/api/plugins", Some(admin)).await;
    plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lab")
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_deployed_refused_rolled_back_paused_and_started_while_running() {
    let mut env = TestEnv::new("lifecycle").await;
    let dir = own_plugins(
        &env.tag,
        &["patient", "lab", "radiology", "pharmacy", "encounter"],
    );
    env.config.plugins_dir = dir.clone();
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let admin = env.token("u-admin", "admin");
    let base = format!("http://{}", host.http_addr);
    let original = lab(&env, &host, &admin).await;

    // A new version is swapped in; the old one is kept.
    let lab_wasm = std::fs::read(plugins_dir().join("lab.wasm")).unwrap();
    let (status, deployed) = put(&base, "lab", &admin, rebuilt(&lab_wasm, "v2")).await;
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(deployed["deployed"], "swapped");
    let now = lab(&env, &host, &admin).await;
    assert_eq!(now["hash"], deployed["hash"]);
    assert_ne!(now["hash"], original["hash"]);
    assert_eq!(now["previous"]["hash"], original["hash"]);
    let on_disk = std::fs::read(dir.join("lab.wasm")).unwrap();
    assert_eq!(
        on_disk,
        rebuilt(&lab_wasm, "v2"),
        "a restart runs the deployed version"
    );
    let (_, again) = put(&base, "lab", &admin, rebuilt(&lab_wasm, "v2")).await;
    assert_eq!(again["deployed"], "unchanged");

    // Bad uploads are refused with the reason; the running version stays.
    let (status, refused) = put(&base, "lab", &admin, b"not wasm at all".to_vec()).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (422, Some("invalid_plugin")),
        "{refused}"
    );
    let patient_wasm = std::fs::read(plugins_dir().join("patient.wasm")).unwrap();
    let (status, refused) = put(&base, "lab", &admin, patient_wasm).await;
    assert_eq!(status, 422);
    assert!(
        refused["error"].as_str().unwrap().contains("`patient`"),
        "{refused}"
    );
    let (status, _) = put(
        &base,
        "lab",
        &env.token("u-dr-smith", "provider"),
        lab_wasm.clone(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(lab(&env, &host, &admin).await["hash"], deployed["hash"]);

    // Rollback returns to the previous version.
    let (status, back) = env.post(&host, "/api/plugins/lab/rollback", &admin).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["hash"], original["hash"]);
    let on_disk = std::fs::read(dir.join("lab.wasm")).unwrap();
    assert_eq!(on_disk, lab_wasm, "the folder holds the version that runs");
    assert_eq!(
        lab(&env, &host, &admin).await["previous"]["hash"],
        deployed["hash"]
    );
    assert_eq!(
        env.post(&host, "/api/plugins/nothing/rollback", &admin)
            .await
            .0,
        404
    );

    // Paused, the plugin applies nothing; resumed, it catches up.
    let (status, paused) = env.post(&host, "/api/plugins/lab/pause", &admin).await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")));
    let mut later: Value = serde_json::from_str(SEED.lines().nth(8).unwrap()).unwrap();
    assert_eq!(later["eventType"], "lab.result.available");
    later["eventId"] = "e-later-result".into();
    later["payload"]["reportId"] = "rep-later".into();
    env.publish(&later.to_string()).await;
    let token = env.token("u-dr-smith", "provider");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !report_ids(&env, &host, &token)
            .await
            .contains(&"rep-later".to_owned())
    );
    assert_eq!(lab(&env, &host, &admin).await["state"], "paused");
    env.post(&host, "/api/plugins/lab/resume", &admin).await;
    env.settle(&host).await;
    assert!(
        report_ids(&env, &host, &token)
            .await
            .contains(&"rep-later".to_owned())
    );

    // A file dropped into the folder is deployed; one caught half-written is
    // refused until the rest of it arrives.
    let v3 = rebuilt(&lab_wasm, "v3");
    let v3_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&v3));
    std::fs::write(dir.join("lab.wasm"), &v3[..v3.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lab(&env, &host, &admin).await["hash"], original["hash"]);
    let partial = dir.join(".lab.wasm.copying");
    std::fs::write(&partial, &v3).unwrap();
    std::fs::rename(&partial, dir.join("lab.wasm")).unwrap();
    eventually("the dropped file deployed", || async {
        (lab(&env, &host, &admin).await["hash"] == v3_hash.as_str()).then_some(())
    })
    .await;

    // A new plugin starts, with its own view, from the start of the stream.
    let hostile = std::fs::read(plugins_dir().join("testing/hostile.wasm")).unwrap();
    let (status, started) = put(&base, "hostile", &admin, hostile).await;
    assert_eq!(
        (status, started["deployed"].as_str()),
        (200, Some("started")),
        "{started}"
    );
    let pool = env.pool().await;
    let seen = view_document(&pool, "hostile_seen", "p-john-doe").await;
    assert_eq!(seen["mrn"], "MRN-100234", "projected from the start");

    // Through all of it, every event applied once.
    let (_, chart) = env
        .get(&host, "/api/aggregate/patients/p-john-doe", Some(&token))
        .await;
    assert_eq!(chart["unreadResults"], 2, "the later result, once");
    let mut expected = chart.clone();
    expected["unreadResults"] = 1.into();
    expected["lastEventId"] = "seed-0025".into();
    assert_seed_chart(&expected);

    host.stop();
    let _ = std::fs::remove_dir_all(dir);
}
