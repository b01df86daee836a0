//! The HTTP API against its own OpenAPI document: the document is valid
//! OpenAPI 3.1 (openapi-spec-validator), and schemathesis, a property-based
//! API tester, sends generated requests to every operation as an admin, a
//! clinician, a patient (their own chart only) and a role with no clinical
//! access, on a host with the seed's chart and a dead letter: no response
//! may be a 5xx, and every response must match the document (status,
//! content type, body, headers). Both tools come from PyPI into
//! `.projector/tools/venv` (scripts/test).

use std::path::PathBuf;

use crate::common::{SEED, TestEnv, heavy};

fn tool(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.projector/tools/venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is not installed: run scripts/test",
        path.display()
    );
    path
}

#[tokio::test]
async fn every_operation_answers_as_its_openapi_document_says_for_every_role() {
    let _heavy = heavy().await;
    let env = TestEnv::configured("api_fuzz", |config| {
        // The fuzz run is one user sending thousands of requests: the rate
        // limit would answer most of them 429 and test nothing else.
        config.api_rate_per_second = 100_000.try_into().unwrap();
        config.api_rate_burst = 100_000.try_into().unwrap();
    })
    .await;
    let host = env.start().await;
    env.publish(SEED).await;
    env.publish_bytes("lab.result.available", b"this is not json")
        .await;
    env.settle(&host).await;

    let base = format!("http://{}", host.http_addr);
    let document = reqwest::get(format!("{base}/api/openapi.json"))
        .await
        .expect("the document is served")
        .text()
        .await
        .unwrap();
    let file = std::env::temp_dir().join(format!("{}-openapi.json", env.tag));
    std::fs::write(&file, &document).unwrap();
    let validated = tokio::process::Command::new(tool("openapi-spec-validator"))
        .arg(&file)
        .output()
        .await
        .expect("openapi-spec-validator runs");
    std::fs::remove_file(&file).ok();
    let said = String::from_utf8_lossy(&validated.stdout);
    println!("{said}{}", String::from_utf8_lossy(&validated.stderr));
    assert!(validated.status.success() && said.contains("OK"), "{said}");
    let parsed: serde_json::Value = serde_json::from_str(&document).unwrap();
    assert_eq!(parsed["openapi"], "3.1.0");

    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api-fuzz/schemathesis.toml");
    for (user, role) in [
        ("u-admin-1", "admin"),
        ("u-dr-smith", "physician"),
        ("p-john-doe", "patient"),
        ("u-billing-1", "billing"),
    ] {
        let run = tokio::process::Command::new(tool("schemathesis"))
            .arg("--config-file")
            .arg(&config)
            .args(["run", &format!("{base}/api/openapi.json")])
            .args(["--checks", "all", "--max-examples", "25", "--no-color"])
            .args([
                "-H",
                &format!("Authorization: Bearer {}", env.token(user, role)),
            ])
            .output()
            .await
            .expect("schemathesis runs");
        let report = String::from_utf8_lossy(&run.stdout);
        let cases = report
            .lines()
            .skip_while(|line| !line.starts_with("Test cases:"))
            .nth(1)
            .unwrap_or_default()
            .trim();
        let summary = report
            .lines()
            .rev()
            .find(|line| line.starts_with('='))
            .unwrap_or_default()
            .trim_matches(|c| c == '=' || c == ' ');
        println!("schemathesis as {role}: {cases}; {summary}");
        assert!(
            run.status.success(),
            "as {role}:\n{report}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        // Every operation was tested.
        assert!(report.contains("Tested: 19"), "as {role}:\n{report}");
    }
}
