//! A plugin author's first handler, end to end with the real tools:
//! `projector plugins new`, the generated test, a `wasm32-wasip2` build,
//! `projector plugins deploy` to a running host, and its view filled, with no
//! host rebuild or restart.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{SEED, TestEnv, view_document};

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

fn cargo(crate_dir: &Path, target_dir: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(crate_dir)
        // Its own target folder: the outer cargo holds the workspace's.
        .env("CARGO_TARGET_DIR", target_dir);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_plugin_is_built_tested_and_deployed_to_a_running_host() {
    let _heavy = crate::common::heavy().await;
    let mut env = TestEnv::new("scaffold").await;
    let work = std::env::temp_dir().join(format!("{}-work", env.tag));
    let plugins = work.join("plugins-dir");
    std::fs::create_dir_all(&plugins).unwrap();
    let projector = env!("CARGO_BIN_EXE_projector");
    run(Command::new(projector)
        .args(["plugins", "new", "first-rule", "--dir"])
        .arg(&work));
    let crate_dir = work.join("first-rule");
    for file in ["Cargo.toml", "src/lib.rs", "README.md"] {
        assert!(crate_dir.join(file).exists(), "{file}");
    }
    // Reused between runs; never the workspace's own target folder.
    let target: PathBuf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold");
    let tested = run(cargo(&crate_dir, &target).arg("test"));
    assert!(tested.contains("test result: ok. 1 passed"), "{tested}");
    run(cargo(&crate_dir, &target).args(["build", "--release", "--target", "wasm32-wasip2"]));
    let wasm = target.join("wasm32-wasip2/release/first_rule.wasm");
    assert!(wasm.exists());

    env.config.plugins_dir = plugins;
    env.publish(SEED).await;
    let host = env.start().await;
    let token = env.token("u-admin", "admin");
    let deployed = tokio::process::Command::new(projector)
        .args(["plugins", "deploy"])
        .arg(&wasm)
        .args([
            "--url",
            &format!("http://{}", host.http_addr),
            "--token",
            &token,
        ])
        .output()
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&deployed.stdout);
    assert!(
        deployed.status.success(),
        "{answer}{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert!(answer.trim_end().ends_with(": started"), "{answer}");

    let pool = env.pool().await;
    let doc = view_document(&pool, "first_rule_patients", "p-john-doe").await;
    assert_eq!(doc["mrn"], "MRN-100234");

    host.stop();
    let _ = std::fs::remove_dir_all(work);
}
