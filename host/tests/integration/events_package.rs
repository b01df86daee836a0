//! The TypeScript package `@emr-hms/events` (clients/ts/events) against the
//! real NATS and a running host: node's own test runner runs its tests with
//! this test's stream, prefix and host, so an event published from
//! TypeScript must reach the chart, and an invalid one must never reach the
//! stream.

use std::path::PathBuf;

use crate::common::TestEnv;

#[tokio::test]
async fn events_published_from_typescript_reach_the_chart_and_invalid_ones_are_refused() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/ts/events");
    assert!(
        dir.join("dist/test/events.test.js").exists(),
        "the TypeScript package is not built: run scripts/test (npm ci and npm run build in {})",
        dir.display()
    );
    let env = TestEnv::new("ts_events").await;
    let host = env.start().await;
    let output = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "dist/test/"])
        .current_dir(&dir)
        .env("NATS_URL", &env.config.nats_url)
        .env("STREAM_NAME", &env.config.stream_name)
        .env("SUBJECT_PREFIX", &env.config.subject_prefix)
        .env("HOST_URL", format!("http://{}", host.http_addr))
        .env("TOKEN", env.token("u-dr-ts", "physician"))
        .output()
        .await
        .expect("node runs");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the package's tests failed");
    // Every test ran: none was skipped for want of the live services.
    assert!(report.contains("ℹ skipped 0"), "{report}");
    assert!(report.contains("ℹ pass 6"), "{report}");
}
