//! Bad input never stops the pipeline and is never dropped: it becomes a dead
//! letter with its reason and raw bytes, and the events after it are applied.

use crate::common::{SEED, TestEnv, assert_seed_chart, eventually};
use projector::serve::Host;
use serde_json::Value;

fn seed_line(event_id: &str) -> String {
    SEED.lines()
        .find(|l| l.contains(&format!("\"eventId\":\"{event_id}\"")))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_become_dead_letters_and_later_events_apply() {
    let env = TestEnv::new("poison").await;
    let viewed = seed_line("seed-0011");
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "lab.result.viewed",
            b"this is not json".to_vec(),
            "not a JSON object",
        ),
        (
            "lab.result.viewed",
            viewed.replace(r#""userId":"u-dr-smith","#, "").into_bytes(),
            "missing field `userId`",
        ),
        (
            "lab.result.shredded",
            viewed
                .replace("lab.result.viewed", "lab.result.shredded")
                .into_bytes(),
            "unknown eventType",
        ),
        (
            "lab.result.viewed",
            viewed
                .replace(r#""reportId":"rep-lab-1""#, r#""reportId":["rep-lab-1"]"#)
                .into_bytes(),
            "invalid payload",
        ),
        (
            "lab.result.viewed",
            [b"{\"eventId\":\"x\xff\xfe\"}".as_slice()].concat(),
            "not valid UTF-8",
        ),
        (
            "lab.order.created",
            viewed.clone().into_bytes(),
            "does not match subject",
        ),
    ];
    let mut publisher = env.publisher();
    for (i, (subject, bytes, _)) in bad.iter().enumerate() {
        publisher
            .publish_raw(subject, Some(&format!("bad-{i}")), bytes.clone())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    env.publish(SEED).await;

    let host = env.start().await;
    env.settle(&host).await;
    let provider = env.token("u-dr-smith", "provider");
    let (_, chart) = env
        .get(&host, "/api/aggregate/patients/p-john-doe", Some(&provider))
        .await;
    assert_seed_chart(&chart);

    let admin = env.token("u-admin", "admin");
    let (status, letters) = env
        .get(&host, "/api/dead-letters?plugin=lab", Some(&admin))
        .await;
    assert_eq!(status, 200, "{letters}");
    let letters = letters.as_array().unwrap().clone();
    assert_eq!(letters.len(), bad.len(), "{letters:#?}");
    // Newest first: the listing is the reverse of publishing order.
    for (letter, (subject, raw, reason)) in letters.iter().rev().zip(&bad) {
        assert_eq!(letter["subject"], *subject);
        assert!(
            letter["reason"].as_str().unwrap().contains(reason),
            "{} lacks {reason}",
            letter["reason"]
        );
        assert_eq!(letter["rawHex"], hex::encode(raw));
        assert_eq!(letter["status"], "dead");
        assert!(letter["streamSeq"].as_i64().unwrap() >= 1);
    }
    // The patient plugin (which also takes lab.>) kept its own dead letters.
    let (_, patient_letters) = env
        .get(&host, "/api/dead-letters?plugin=patient", Some(&admin))
        .await;
    assert_eq!(patient_letters.as_array().map(Vec::len), Some(bad.len()));

    // Re-driving a letter that is still bad leaves it dead, with one more attempt.
    let id = letters.last().unwrap()["id"].as_i64().unwrap();
    let (status, body) = env
        .post(&host, &format!("/api/dead-letters/{id}/retry"), &admin)
        .await;
    assert_eq!(status, 202, "{body}");
    let letter = wait_for_status(&env, &host, &admin, id, "dead").await;
    assert_eq!(letter["attempts"], 2);

    let (status, body) = env
        .post(&host, "/api/dead-letters/999999/retry", &admin)
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, _) = env.post(&host, "/api/dead-letters/abc/retry", &admin).await;
    assert_eq!(status, 400);
    let (status, _) = env
        .post(&host, &format!("/api/dead-letters/{id}/retry"), &provider)
        .await;
    assert_eq!(status, 403);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_dead_letter_that_now_applies_is_resolved() {
    let env = TestEnv::new("redrive").await;
    env.publish(&SEED.lines().take(8).collect::<Vec<_>>().join("\n"))
        .await;
    let host = env.start().await;
    env.settle(&host).await;
    // A valid event that failed earlier for a passing reason (as after a trap
    // under memory pressure) sits in the dead letters of the patient plugin.
    let pool = env.pool().await;
    let raw = seed_line("seed-0009");
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dead_letters (plugin, stream_seq, subject, event_id, patient_id, reason, raw, attempts)
         VALUES ('patient', 9999, 'lab.result.available', 'seed-0009', 'p-john-doe', 'plugin trapped 3 times', $1, 3)
         RETURNING id",
    )
    .bind(raw.as_bytes())
    .fetch_one(&pool)
    .await
    .unwrap();
    let admin = env.token("u-admin", "admin");
    let nurse = env.token("u-nurse", "nurse");
    assert_eq!(pending_and_unread(&env, &host, &nurse).await, (1, 0));

    let (status, _) = env
        .post(&host, &format!("/api/dead-letters/{id}/retry"), &admin)
        .await;
    assert_eq!(status, 202);
    wait_for_status(&env, &host, &admin, id, "resolved").await;
    assert_eq!(pending_and_unread(&env, &host, &nurse).await, (0, 1));
    // Resolved letters cannot be re-driven again.
    let (status, body) = env
        .post(&host, &format!("/api/dead-letters/{id}/retry"), &admin)
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")));
    host.stop();
}

/// The chart's pending lab orders and unread results.
async fn pending_and_unread(env: &TestEnv, host: &Host, token: &str) -> (i64, i64) {
    let (_, chart) = env
        .get(host, "/api/aggregate/patients/p-john-doe", Some(token))
        .await;
    let count = |v: &Value| v.as_i64().unwrap_or(-1);
    (
        count(&chart["pendingOrders"]["lab"]),
        count(&chart["unreadResults"]),
    )
}

async fn wait_for_status(env: &TestEnv, host: &Host, admin: &str, id: i64, want: &str) -> Value {
    eventually(&format!("dead letter {id} {want}"), || async {
        let (_, letters) = env
            .get(host, "/api/dead-letters?limit=1000", Some(admin))
            .await;
        letters
            .as_array()?
            .iter()
            .find(|l| l["id"] == id && l["status"] == want)
            .cloned()
    })
    .await
}
