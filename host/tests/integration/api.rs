//! The HTTP API's contract: tokens, roles, JSON errors, the audit trail.

use crate::common::{SEED, TestEnv, signed_token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_errors_and_audit() {
    let env = TestEnv::new("api").await;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let chart = "/api/aggregate/patients/p-john-doe";

    let (status, body) = env.get(&host, chart, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let forged = signed_token("another-secret", "u", "admin", u64::MAX / 2);
    assert_eq!(env.get(&host, chart, Some(&forged)).await.0, 401);
    let expired = env.expired_token("u", "admin");
    assert_eq!(
        env.get(&host, chart, Some(&expired)).await.0,
        401,
        "no leeway on expiry"
    );

    let provider = env.token("u-dr-smith", "provider");
    assert_eq!(env.get(&host, chart, Some(&provider)).await.0, 200);
    let (status, body) = env
        .get(&host, "/api/aggregate/patients/nobody", Some(&provider))
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = env.get(&host, "/api/plugins", Some(&provider)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        env.get(&host, "/api/dead-letters", Some(&provider)).await.0,
        403
    );
    let (status, body) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/xrays",
            Some(&provider),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = env.get(&host, "/api/nothing-here", Some(&provider)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = env
        .get(&host, "/api/aggregate/patients/%FF%FE", Some(&provider))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let admin = env.token("u-admin", "admin");
    let (status, body) = env
        .get(&host, "/api/dead-letters?limit=lots", Some(&admin))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));

    // A patient reads only their own chart.
    let own = env.token("p-john-doe", "patient");
    assert_eq!(env.get(&host, chart, Some(&own)).await.0, 200);
    assert_eq!(
        env.get(&host, &format!("{chart}/labs"), Some(&own)).await.0,
        200
    );
    let other = env.token("p-someone-else", "patient");
    assert_eq!(env.get(&host, chart, Some(&other)).await.0, 403);
    assert_eq!(
        env.get(&host, &format!("{chart}/medications"), Some(&other))
            .await
            .0,
        403
    );

    // Probes need no token.
    assert_eq!(env.get(&host, "/healthz", None).await.0, 200);
    let (status, ready) = env.get(&host, "/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["postgres"], true);

    // Every request is in the audit log, refused ones too, with the
    // reason; those without a valid token as `anonymous` (issue 14).
    let pool = env.pool().await;
    /// user, action, resource id, address, status, detail
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Option<i32>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT user_id, action, resource_id, ip_address, status, detail FROM audit_log
         WHERE patient_id = 'p-john-doe' AND action LIKE 'GET %' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let seen: Vec<(&str, i32)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.4.unwrap_or(0)))
        .collect();
    assert_eq!(
        seen,
        [
            ("anonymous", 401),
            ("anonymous", 401),
            ("anonymous", 401),
            ("u-dr-smith", 200),
            ("u-dr-smith", 404),
            ("p-john-doe", 200),
            ("p-john-doe", 200),
            ("p-someone-else", 403),
            ("p-someone-else", 403)
        ]
    );
    let reasons: Vec<&str> = rows.iter().filter_map(|r| r.5.as_deref()).collect();
    assert_eq!(reasons.len(), 6, "every refusal says why: {reasons:?}");
    assert!(reasons[0].contains("missing Authorization"), "{reasons:?}");
    assert!(
        reasons[1].to_lowercase().contains("signature"),
        "{reasons:?}"
    );
    assert!(reasons[2].to_lowercase().contains("expired"), "{reasons:?}");
    assert!(reasons[4].contains("only their own chart"), "{reasons:?}");
    let read = &rows[3];
    assert_eq!(read.1, "GET /api/aggregate/patients/{patientId}");
    assert_eq!(read.2, "p-john-doe");
    assert_eq!(read.3.as_deref(), Some("127.0.0.1"));
    assert_eq!(read.5, None);

    // Issue 14: roles fail closed. Only admins, the listed clinical roles
    // and the patient themselves read a chart; any other role, however it is
    // spelled, is refused, and the refusal is audited.
    for role in ["Patient", "caregiver", ""] {
        let token = env.token("u-not-clinical", role);
        assert_eq!(
            env.get(&host, chart, Some(&token)).await.0,
            403,
            "role `{role}`"
        );
    }
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE user_id = 'u-not-clinical' AND status = 403
           AND detail LIKE '%may not read charts%'",
    )
    .fetch_one(&env.pool().await)
    .await
    .unwrap();
    assert_eq!(refused, 3);

    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_is_examined_by_patient_user_and_time() {
    let mut env = TestEnv::new("audit").await;
    env.config.max_body_bytes = 1024;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let before = chrono::Utc::now();
    let chart = "/api/aggregate/patients/p-john-doe";
    let smith = env.token("u-dr-smith", "provider");
    let nurse = env.token("u-nurse-1", "nurse");
    assert_eq!(env.get(&host, chart, Some(&smith)).await.0, 200);
    assert_eq!(
        env.get(&host, &format!("{chart}/labs"), Some(&nurse))
            .await
            .0,
        200
    );
    let admin = env.token("u-admin", "admin");

    let (status, entries) = env
        .get(&host, "/api/audit?patientId=p-john-doe", Some(&admin))
        .await;
    assert_eq!(status, 200, "{entries}");
    let reads: Vec<(&str, &str)> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["userId"].as_str()?, e["action"].as_str()?)))
        .collect();
    assert!(
        reads.contains(&("u-dr-smith", "GET /api/aggregate/patients/{patientId}")),
        "{reads:?}"
    );
    assert!(
        reads.contains(&(
            "u-nurse-1",
            "GET /api/aggregate/patients/{patientId}/{view}"
        )),
        "{reads:?}"
    );
    let first = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["userId"] == "u-dr-smith"
                && e["action"].as_str().is_some_and(|a| a.starts_with("GET"))
        })
        .unwrap();
    for field in [
        "userId",
        "action",
        "resourceType",
        "resourceId",
        "ipAddress",
        "at",
    ] {
        assert!(!first[field].is_null(), "{field} in {first}");
    }

    let (_, by_nurse) = env
        .get(&host, "/api/audit?userId=u-nurse-1", Some(&admin))
        .await;
    assert!(
        by_nurse
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["userId"] == "u-nurse-1")
    );
    assert!(!by_nurse.as_array().unwrap().is_empty());
    // Before the API reads and before the seed's own events (audited
    // domain events carry the event's time, which may be earlier than now).
    let first_event = SEED
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| {
            e["timestamp"]
                .as_str()?
                .parse::<chrono::DateTime<chrono::Utc>>()
                .ok()
        })
        .min()
        .unwrap();
    let earlier = (before.min(first_event) - chrono::Duration::minutes(10))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, none) = env
        .get(
            &host,
            &format!("/api/audit?patientId=p-john-doe&to={earlier}"),
            Some(&admin),
        )
        .await;
    assert_eq!(none, serde_json::json!([]));
    let (status, body) = env
        .get(&host, "/api/audit?from=yesterday", Some(&admin))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let (status, body) = env.get(&host, "/api/audit", Some(&smith)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));

    // A body over MAX_BODY_BYTES is refused before anything reads it.
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/dead-letters/1/retry",
            host.http_addr
        ))
        .bearer_auth(&admin)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");

    host.stop();
}

/// The value of a metric line in Prometheus text, if present.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic() {
    let env = TestEnv::new("metrics").await;
    let host = env.start().await;
    let scrape = || async {
        let response = reqwest::get(format!("http://{}/metrics", host.http_addr))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.unwrap()
    };
    let before = scrape().await;
    assert_eq!(
        metric(&before, "projector_events_applied_total{plugin=\"lab\"}"),
        None
    );
    assert_eq!(metric(&before, "projector_sockets_connected"), Some(0.0));

    env.publish(SEED).await;
    env.settle(&host).await;
    let token = env.token("u-dr-smith", "provider");
    let _phone = crate::common::clients::WebSocket::connect(host.ws_addr, "", Some(&token))
        .await
        .expect("accepted");
    assert_eq!(
        env.get(&host, "/api/aggregate/patients/p-john-doe", Some(&token))
            .await
            .0,
        200
    );
    let after = scrape().await;
    let lab_events = SEED
        .lines()
        .filter(|l| l.contains("\"eventType\":\"lab."))
        .count() as f64;
    assert_eq!(
        metric(&after, "projector_events_applied_total{plugin=\"lab\"}"),
        Some(lab_events),
        "{after}"
    );
    assert_eq!(
        metric(&after, "projector_events_applied_total{plugin=\"patient\"}"),
        Some(25.0)
    );
    assert_eq!(
        metric(&after, "projector_consumer_lag{plugin=\"patient\"}"),
        Some(0.0)
    );
    assert!(
        metric(
            &after,
            "projector_batch_duration_seconds_count{plugin=\"patient\"}"
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(metric(&after, "projector_sockets_connected"), Some(1.0));
    assert_eq!(
        metric(&after, "projector_notifications_pending_acknowledgement"),
        Some(4.0)
    );
    assert!(after.contains(
        "projector_http_request_duration_seconds_count{method=\"GET\",route=\"/api/aggregate/patients/{patientId}\",status=\"200\"} 1"
    ), "{after}");
    assert!(!after.contains("p-john-doe"), "no patient ids in metrics");
    host.stop();
}

/// Issue 14: `projector serve` will not sign tokens with a secret anyone
/// could know: missing, the published default, or short, it exits at once
/// and says what to set.
#[tokio::test]
async fn serve_refuses_a_secret_anyone_could_know() {
    for secret in [None, Some("dev-only-secret-change-me"), Some("123456789")] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"));
        command
            .arg("serve")
            .env_remove("JWT_SECRET")
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("WS_ADDR", "127.0.0.1:0")
            // Were the secret accepted, the host would fail here instead,
            // with another message.
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")
            .kill_on_drop(true);
        if let Some(secret) = secret {
            command.env("JWT_SECRET", secret);
        }
        let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
            .await
            .expect("serve exits")
            .expect("serve runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{secret:?}: {stderr}");
        assert!(
            stderr.contains("set JWT_SECRET to at least 32 random bytes")
                && stderr.contains("--dev"),
            "{secret:?}: {stderr}"
        );
    }
}

/// Issue 14, fair use: a body is read only once its sender is
/// authenticated, and then only up to 64 KiB (a plugin upload may be
/// larger); a made-up HTTP method does not become a metrics label of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_wait_for_a_token_and_methods_share_a_label() {
    let env = TestEnv::new("fair_use").await;
    let host = env.start().await;
    let client = reqwest::Client::new();
    // The body is announced but never sent: a host that read it before
    // checking the token would wait for it; this one answers at once.
    let status = announce_body(host.http_addr, None, 1 << 20).await;
    assert_eq!(status, 401);
    // With a token, a body announced over the default 64 KiB is refused
    // as too large, again without waiting for it.
    let admin = env.token("u-admin", "admin");
    let status = announce_body(host.http_addr, Some(&admin), 65 * 1024).await;
    assert_eq!(status, 413);
    // A plugin upload over 64 KiB is read (and here refused as no plugin).
    let response = client
        .put(format!("http://{}/api/plugins/lab", host.http_addr))
        .bearer_auth(&admin)
        .body(vec![0u8; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);

    for method in ["BREW", "PROPFIND", "X-ANYTHING"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method, format!("http://{}/api/plugins", host.http_addr))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405);
    }
    let metrics = crate::common::metrics(&host).await;
    assert!(metrics.contains("method=\"OTHER\""), "{metrics}");
    for made_up in ["BREW", "PROPFIND", "X-ANYTHING"] {
        assert!(!metrics.contains(made_up), "{made_up} in {metrics}");
    }
    host.stop();
}

/// Sends `POST /api/dead-letters/1/retry` announcing a body of `length`
/// bytes but sending none, and returns the status the host answers with
/// within a few seconds (it must not wait for the body).
async fn announce_body(address: std::net::SocketAddr, token: Option<&str>, length: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST /api/dead-letters/1/retry HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("the host answers without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..read]);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {text}"))
}

/// Who calls, in the role matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Admin,
    Clinical,
    /// The chart's own patient.
    OwnPatient,
    /// Another patient.
    OtherPatient,
    /// A role the host does not know.
    Unknown,
    /// No token.
    Nobody,
}

/// Issue 14: every route, every kind of caller. Reads of a chart: admin,
/// each clinical role and the patient themselves; the admin routes: admin
/// only (a made-up id shows the request got past the role check: 404/400);
/// a user's own notifications: anyone signed in; without a token: 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_every_role_it_should() {
    use Caller::*;
    let env = TestEnv::new("roles").await;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let chart = "/api/aggregate/patients/p-john-doe";
    let chart_routes = [
        ("GET", chart.to_owned()),
        ("GET", format!("{chart}/alerts")),
        ("GET", format!("{chart}/labs")),
    ];
    let admin_routes = [
        ("GET", "/api/plugins", 200),
        ("GET", "/api/dead-letters", 200),
        ("GET", "/api/audit", 200),
        ("GET", "/api/cluster", 200),
        ("PUT", "/api/plugins/no-such-plugin", 400),
        ("POST", "/api/plugins/no-such-plugin/rollback", 404),
        ("POST", "/api/plugins/no-such-plugin/rebuild", 404),
        ("POST", "/api/plugins/no-such-plugin/pause", 404),
        ("POST", "/api/plugins/no-such-plugin/resume", 404),
        ("POST", "/api/dead-letters/999999/retry", 404),
        ("POST", "/api/dead-letters/999999/discard", 404),
    ];
    let mut callers: Vec<(Caller, String, Option<String>)> = vec![
        (Admin, "admin".into(), Some(env.token("u-admin", "admin"))),
        (
            OwnPatient,
            "patient".into(),
            Some(env.token("p-john-doe", "patient")),
        ),
        (
            OtherPatient,
            "patient".into(),
            Some(env.token("p-someone-else", "patient")),
        ),
        (
            Unknown,
            "caregiver".into(),
            Some(env.token("u-caregiver", "caregiver")),
        ),
        (Nobody, String::new(), None),
    ];
    for role in &env.config.clinical_roles {
        callers.push((Clinical, role.clone(), Some(env.token("u-clinician", role))));
    }
    assert_eq!(env.config.clinical_roles.len(), 6, "the default roles");

    let client = reqwest::Client::new();
    let call = |method: &str, path: &str, token: Option<&str>| {
        let mut request = client.request(
            method.parse().unwrap(),
            format!("http://{}{path}", host.http_addr),
        );
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body)
        }
    };
    let mut wrong = Vec::new();
    for (caller, role, token) in &callers {
        let token = token.as_deref();
        let mut check =
            |method: &str, path: &str, expected: u16, (status, body): (u16, serde_json::Value)| {
                let error_shaped =
                    status < 400 || body["error"].is_string() && body["code"].is_string();
                if status != expected || !error_shaped {
                    wrong.push(format!(
                        "{caller:?} `{role}` {method} {path}: {status} {body}, expected {expected}"
                    ));
                }
            };
        for (method, path) in &chart_routes {
            let expected = match caller {
                Admin | Clinical | OwnPatient => 200,
                OtherPatient | Unknown => 403,
                Nobody => 401,
            };
            check(method, path, expected, call(method, path, token).await);
        }
        for (method, path, admin_status) in admin_routes {
            let expected = match caller {
                Admin => admin_status,
                Nobody => 401,
                _ => 403,
            };
            check(method, path, expected, call(method, path, token).await);
        }
        let expected = if *caller == Nobody { 401 } else { 200 };
        check(
            "GET",
            "/api/notifications",
            expected,
            call("GET", "/api/notifications", token).await,
        );
        let search = "/api/aggregate/patients?q=doe";
        let expected = match caller {
            Clinical => 200,
            Nobody => 401,
            _ => 403,
        };
        check("GET", search, expected, call("GET", search, token).await);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Every refusal is in the audit trail with its reason.
    let refusals: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE status IN (401, 403) AND detail IS NOT NULL",
    )
    .fetch_one(&env.pool().await)
    .await
    .unwrap();
    let non_admins = callers.iter().filter(|c| c.0 != Admin).count();
    let expected = non_admins * admin_routes.len() // admin routes
        + 2 * chart_routes.len() // other patient, unknown role
        + chart_routes.len() + 1 // nobody: charts and notifications
        + 5; // search: admin, both patients, unknown role, nobody
    assert_eq!(refusals as usize, expected);
    host.stop();
}

/// Issue 17: a clinician finds a patient by name, MRN or id, page by page;
/// each search is audited with its terms and how many it found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinicians_search_patients_by_name_mrn_or_id_page_by_page() {
    let env = TestEnv::new("search").await;
    let created = SEED
        .lines()
        .find(|l| l.contains("\"eventType\":\"patient.created\""))
        .unwrap();
    let mut events = vec![created.to_owned()];
    for (i, (given, family)) in [("Jane", "Doe"), ("Johan", "Smith"), ("Ann", "Dolan")]
        .iter()
        .enumerate()
    {
        events.push(
            created
                .replace("seed-0001", &format!("search-{i}"))
                .replace("p-john-doe", &format!("p-search-{i}"))
                .replace("MRN-100234", &format!("MRN-20{i}"))
                .replace("\"given\":\"John\"", &format!("\"given\":\"{given}\""))
                .replace("\"family\":\"Doe\"", &format!("\"family\":\"{family}\"")),
        );
    }
    env.publish(&events.join("\n")).await;
    let host = env.start().await;
    env.settle(&host).await;
    let nurse = env.token("u-nurse-1", "nurse");
    let found = |q: &str| {
        let (env, host, nurse) = (&env, &host, &nurse);
        let path = format!("/api/aggregate/patients?{q}");
        async move {
            let (status, page) = env.get(host, &path, Some(nurse)).await;
            assert_eq!(status, 200, "{path}: {page}");
            let ids: Vec<String> = page["patients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["patientId"].as_str().unwrap().to_owned())
                .collect();
            (ids, page)
        }
    };
    let (ids, page) = found("q=doe").await;
    assert_eq!(ids, ["p-john-doe", "p-search-0"]);
    assert_eq!(page["patients"][0]["mrn"], "MRN-100234");
    assert_eq!(page["patients"][0]["name"]["given"], "John");
    assert!(page["nextCursor"].is_null());
    assert_eq!(found("q=JO").await.0, ["p-john-doe", "p-search-1"]);
    assert_eq!(found("q=jo%20doe").await.0, ["p-john-doe"]);
    assert_eq!(found("q=mrn-201").await.0, ["p-search-1"]);
    assert_eq!(found("q=p-search-2").await.0, ["p-search-2"]);
    assert!(
        found("q=%25").await.0.is_empty(),
        "% is a character, not a wildcard"
    );
    // Page by page, without a term: everyone, each once.
    let (first, page) = found("limit=3").await;
    assert_eq!(first, ["p-john-doe", "p-search-0", "p-search-1"]);
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let (second, page) = found(&format!("limit=3&cursor={cursor}")).await;
    assert_eq!(second, ["p-search-2"]);
    assert!(page["nextCursor"].is_null());
    let (status, _) = env
        .get(&host, "/api/aggregate/patients?limit=0", Some(&nurse))
        .await;
    assert_eq!(status, 400);
    // A NUL character, which PostgreSQL text cannot hold, is the request's
    // fault: a JSON 400, and the request is still audited (found by the
    // API fuzz run, which got a 503).
    for path in [
        "/api/aggregate/patients?cursor=a%00b",
        "/api/aggregate/patients?q=do%00e",
        "/api/aggregate/patients/p-%00",
    ] {
        let (status, body) = env.get(&host, path, Some(&nurse)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{path}: {body}"
        );
    }
    let refused: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, resource_id FROM audit_log WHERE status = 400 AND patient_id IS NOT NULL",
    )
    .fetch_all(&env.pool().await)
    .await
    .unwrap();
    assert_eq!(
        refused,
        [(
            "GET /api/aggregate/patients/{patientId}".to_owned(),
            "p-\u{FFFD}".to_owned()
        )]
    );

    let audited: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT user_id, detail FROM audit_log WHERE action = 'GET /api/aggregate/patients'
         AND status = 200 ORDER BY id LIMIT 1",
    )
    .fetch_all(&env.pool().await)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [("u-nurse-1".to_owned(), Some("q=\"doe\" found=2".to_owned()))]
    );
    host.stop();
}
