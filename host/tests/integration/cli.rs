//! Issue 18: the operator's command line against a running host:
//! `projector plugins list|pause|resume|rebuild|rollback` and
//! `projector dead-letters list|retry|discard`, tables by default, `--json`
//! for scripts, and exit codes a script can rely on (1 refused, 3
//! unreachable, 4 token refused).

use std::process::Output;

use serde_json::Value;

use crate::common::{SEED, TestEnv, free_port};

/// Runs `projector ARGS --url URL --token TOKEN`.
async fn projector(args: &[&str], url: &str, token: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(args)
        .args(["--url", url, "--token", token])
        .env("RUST_LOG", "error")
        .output()
        .await
        .expect("the command runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_manages_plugins_and_dead_letters_from_the_command_line() {
    let env = TestEnv::new("cli").await;
    let mut publisher = env.publisher();
    publisher
        .publish_raw(
            "lab.order.created",
            Some("bad-0"),
            b"{\"eventId\":".to_vec(),
        )
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let url = format!("http://{}", host.http_addr);
    let admin = env.token("u-admin", "admin");

    // A table a person reads, JSON a script reads.
    let listed = projector(&["plugins", "list"], &url, &admin).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let table = stdout(&listed);
    let header = table.lines().next().unwrap();
    for column in ["NAME", "VERSION", "HASH", "STATE", "LAG"] {
        assert!(header.contains(column), "{table}");
    }
    for plugin in ["encounter", "lab", "patient", "pharmacy", "radiology"] {
        assert!(
            table
                .lines()
                .any(|l| l.trim_start().starts_with(plugin) && l.contains("running")),
            "{plugin} in\n{table}"
        );
    }
    let json = |output: &Output| -> Value {
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
    };
    let state_of = |listing: &Value, name: &str| -> String {
        listing
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["state"].as_str().unwrap().to_owned())
            .unwrap()
    };

    // Pause and resume, seen in the listing.
    let paused = projector(&["plugins", "pause", "lab"], &url, &admin).await;
    assert_eq!(stdout(&paused).trim(), "lab: paused", "{}", stderr(&paused));
    let listing = json(&projector(&["plugins", "list", "--json"], &url, &admin).await);
    assert_eq!(state_of(&listing, "lab"), "paused");
    let resumed = projector(&["plugins", "resume", "lab", "--json"], &url, &admin).await;
    assert_eq!(json(&resumed)["state"], "running");

    // A rebuild starts; a rollback with nothing to roll back to is refused
    // with the host's reason and exit code 1.
    let rebuilt = projector(&["plugins", "rebuild", "pharmacy"], &url, &admin).await;
    assert!(rebuilt.status.success(), "{}", stderr(&rebuilt));
    assert!(
        stdout(&rebuilt).starts_with("pharmacy: rebuilding"),
        "{}",
        stdout(&rebuilt)
    );
    let refused = projector(&["plugins", "rollback", "lab"], &url, &admin).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("the host answered 4"),
        "{}",
        stderr(&refused)
    );
    let unknown = projector(&["plugins", "pause", "no-such-plugin"], &url, &admin).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("404"), "{}", stderr(&unknown));

    // The malformed event is a dead letter; it is discarded from the command line.
    let letters = projector(&["dead-letters", "list", "--plugin", "lab"], &url, &admin).await;
    let table = stdout(&letters);
    assert!(table.lines().next().unwrap().contains("REASON"), "{table}");
    assert_eq!(table.lines().count(), 2, "{table}");
    let letters = json(
        &projector(
            &["dead-letters", "list", "--plugin", "lab", "--json"],
            &url,
            &admin,
        )
        .await,
    );
    let id = letters[0]["id"].as_i64().unwrap().to_string();
    let discarded = projector(&["dead-letters", "discard", &id], &url, &admin).await;
    assert_eq!(
        stdout(&discarded).trim(),
        format!("dead letter {id} (lab): discarded")
    );
    let bad_status = projector(&["dead-letters", "list", "--status", "gone"], &url, &admin).await;
    assert_eq!(bad_status.status.code(), Some(1));
    assert!(
        stderr(&bad_status).contains("status must be"),
        "{}",
        stderr(&bad_status)
    );

    // A wrong token, a role without the right, and no host at all: each
    // says so, each with its own exit code.
    let wrong = projector(&["plugins", "list"], &url, "not-a-token").await;
    assert_eq!(wrong.status.code(), Some(4));
    assert!(
        stderr(&wrong).contains("refused the token (401"),
        "{}",
        stderr(&wrong)
    );
    let nurse = env.token("u-nurse", "nurse");
    let forbidden = projector(&["dead-letters", "list"], &url, &nurse).await;
    assert_eq!(forbidden.status.code(), Some(4));
    assert!(stderr(&forbidden).contains("403"), "{}", stderr(&forbidden));
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let unreachable = projector(&["plugins", "list"], &nowhere, &admin).await;
    assert_eq!(unreachable.status.code(), Some(3));
    assert!(
        stderr(&unreachable).contains("cannot reach the host at"),
        "{}",
        stderr(&unreachable)
    );

    // A rebuild followed to its end.
    let followed = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        projector(&["plugins", "rebuild", "lab", "--follow"], &url, &admin),
    )
    .await
    .expect("the rebuild ends");
    assert!(followed.status.success(), "{}", stderr(&followed));
    assert!(
        stdout(&followed).ends_with("lab: the rebuilt views are switched in\n"),
        "{}",
        stdout(&followed)
    );
    let listing = json(&projector(&["plugins", "list", "--json"], &url, &admin).await);
    let lab = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lab")
        .unwrap();
    assert!(lab["rebuild"].is_null(), "{lab}");
    host.stop();
}
