//! Issue 14: the audit trail is append-only and tamper-evident. The
//! database refuses to change or remove a row; a row changed or removed
//! behind the triggers' back is found by `projector audit verify`.

use crate::common::TestEnv;
use projector::store::audit::{self, Chain, NewAudit};
use sqlx::PgPool;

/// `projector audit verify` against the test's database: exit status,
/// stdout, stderr.
async fn verify_command(env: &TestEnv, expect_head: Option<&str>) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"));
    command
        .args(["audit", "verify"])
        .env("DATABASE_URL", &env.config.database_url)
        .kill_on_drop(true);
    if let Some(head) = expect_head {
        command.args(["--expect-head", head]);
    }
    let output = command.output().await.expect("projector runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `sql` as someone who can switch the triggers off (a superuser
/// restoring a backup, or an attacker with the database's password).
async fn behind_the_triggers_back(pool: &PgPool, sql: &str) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_is_append_only_and_verify_finds_what_was_changed() {
    let env = TestEnv::new("audit_chain").await;
    let pool = projector::store::connect(&env.config.database_url, env.config.db_connections)
        .await
        .expect("database");

    // Writers at once, one row or many per statement, as the API, the
    // projections and the notifications write them.
    let writers = (0..8).map(|w| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..25 {
                let entries: Vec<NewAudit> = (0..1 + i % 3)
                    .map(|j| NewAudit {
                        patient_id: Some(format!("p-{w}")),
                        status: Some(200),
                        detail: (j == 1).then(|| "a detail".to_owned()),
                        ..NewAudit::now(format!("u-{w}"), "GET /x", "Patient", format!("{i}"))
                    })
                    .collect();
                audit::insert(&pool, &entries).await.unwrap();
            }
        })
    });
    for writer in writers {
        writer.await.unwrap();
    }
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    // Each writer: 9 statements of one row, 8 of two, 8 of three.
    assert_eq!(written, 8 * 49);
    let Chain::Intact { rows, head } = audit::verify(&pool).await.unwrap() else {
        panic!("a trail written by concurrent writers is intact");
    };
    assert_eq!(rows, written);

    let (ok, stdout, stderr) = verify_command(&env, None).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("intact: {written} rows, head {head}")),
        "{stdout}"
    );

    // The database refuses to change or remove rows.
    for change in [
        "UPDATE audit_log SET user_id = 'someone-else' WHERE id = 7",
        "DELETE FROM audit_log WHERE id = 7",
        "TRUNCATE audit_log",
    ] {
        let refused = sqlx::query(change)
            .execute(&pool)
            .await
            .expect_err(change)
            .to_string();
        assert!(refused.contains("append-only"), "{change}: {refused}");
    }

    // A row changed behind the triggers' back is found, by its id.
    behind_the_triggers_back(
        &pool,
        "UPDATE audit_log SET patient_id = 'p-other' WHERE id = 7",
    )
    .await;
    let (ok, _, stderr) = verify_command(&env, None).await;
    assert!(!ok, "a changed row fails the check");
    assert!(
        stderr.contains("broken at row 7") && stderr.contains("changed"),
        "{stderr}"
    );
    let original: String = sqlx::query_scalar("SELECT user_id FROM audit_log WHERE id = 7")
        .fetch_one(&pool)
        .await
        .unwrap();
    behind_the_triggers_back(
        &pool,
        &format!(
            "UPDATE audit_log SET patient_id = 'p-{}' WHERE id = 7",
            original.trim_start_matches("u-")
        ),
    )
    .await;
    assert_eq!(
        audit::verify(&pool).await.unwrap(),
        Chain::Intact {
            rows: written,
            head: head.clone()
        },
        "put back as it was, the row fits again: the hash is of the contents"
    );

    // A row removed is found too, and so is a chain rewritten from some
    // point on, by the head recorded earlier.
    behind_the_triggers_back(&pool, "DELETE FROM audit_log WHERE id = 3").await;
    assert!(matches!(
        audit::verify(&pool).await.unwrap(),
        Chain::Broken { id: 4, reason } if reason.contains("removed")
    ));
    behind_the_triggers_back(&pool, "DELETE FROM audit_log WHERE id >= 3").await;
    let (ok, stdout, stderr) = verify_command(&env, Some(&head)).await;
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("rewritten"), "{stderr}");
    let (ok, stdout, _) = verify_command(&env, None).await;
    assert!(ok && stdout.contains("intact: 2 rows"), "{stdout}");
}
