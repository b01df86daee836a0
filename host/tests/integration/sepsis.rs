//! The sepsis-screen rule, written only with the plugin kit, dropped into a
//! running host: its table is created, it projects from the start of the
//! stream, and the compiled `.wasm` gives what the native harness gives.

use std::path::PathBuf;

use crate::common::{SEED, TestEnv, eventually, plugins_dir};
use projector_sdk::testing::Harness;
use sepsis_screen::{SCREEN, SepsisScreen};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sepsis_screen_hot_loaded_matches_the_native_run() {
    let mut env = TestEnv::new("sepsis").await;
    let dir: PathBuf = std::env::temp_dir().join(format!("{}-plugins", env.tag));
    std::fs::create_dir_all(&dir).unwrap();
    env.config.plugins_dir = dir.clone();
    env.publish(SEED).await;
    let host = env.start().await;
    assert!(host.registry.names().is_empty());

    // Dropped into the plugins folder of the running host.
    let partial = dir.join(".sepsis-screen.wasm.copying");
    std::fs::copy(plugins_dir().join("rules/sepsis-screen.wasm"), &partial).unwrap();
    std::fs::rename(&partial, dir.join("sepsis-screen.wasm")).unwrap();
    eventually("the rule loaded", || async {
        (host.registry.names() == ["sepsis-screen"]).then_some(())
    })
    .await;
    env.settle(&host).await;

    let mut native = Harness::<SepsisScreen>::new();
    native.feed_jsonl(SEED).unwrap();
    let pool = env.pool().await;
    let screen: Value =
        sqlx::query_scalar("SELECT doc FROM view_sepsis_screen WHERE key = 'enc-1'")
            .fetch_one(&pool)
            .await
            .expect("the encounter was screened");
    assert_eq!(Some(&screen), native.view(SCREEN, "enc-1").as_ref());
    assert_eq!(screen["notifiedAt"], "2026-11-26T09:05:00Z", "{screen}");
    assert_eq!(
        screen["positive"], false,
        "the later vitals are normal: {screen}"
    );

    // One urgent notification to the encounter's provider, as natively.
    let alerts: Vec<(String, Value)> = sqlx::query_as(
        "SELECT user_id, body FROM notifications WHERE kind = 'sepsis_screen_positive'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(native.notifications.len(), 1);
    assert_eq!(alerts[0].0, native.notifications[0].recipient);
    assert_eq!(alerts[0].1["encounterId"], "enc-1");
    assert_eq!(alerts[0].1["priority"], "urgent");

    host.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_seed_through_the_rule_prints_its_views() {
    let env = TestEnv::new("replay").await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .args([
            "plugins",
            "replay",
            "../fixtures/seed-flow.jsonl",
            "--plugin",
        ])
        .arg(plugins_dir().join("rules/sepsis-screen.wasm"))
        .env("COMPILE_CACHE_DIR", plugins_dir().join(".compile-cache"))
        .env("DATABASE_URL", &env.config.database_url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (first, json) = stdout.split_once('\n').unwrap();
    let database = first
        .strip_prefix("# replayed into database ")
        .expect("names its database");
    let result: Value = serde_json::from_str(json).expect("JSON");
    assert_eq!(result["events"], 25);
    let mut native = Harness::<SepsisScreen>::new();
    native.feed_jsonl(SEED).unwrap();
    let screens = result["views"][SCREEN].as_array().unwrap();
    assert_eq!(screens.len(), 1);
    assert_eq!(screens[0]["key"], "enc-1");
    assert_eq!(
        Some(&screens[0]["doc"]),
        native.view(SCREEN, "enc-1").as_ref()
    );
    assert_eq!(result["notifications"].as_array().map(Vec::len), Some(1));
    assert_eq!(result["deadLetters"], serde_json::json!([]));

    let admin = sqlx::PgPool::connect(&env.config.database_url_named("postgres"))
        .await
        .unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}
