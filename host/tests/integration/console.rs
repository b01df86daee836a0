//! The clinician console in headless Chromium, as a clinician uses it: sign
//! in, search, open a chart; a critical alert arrives as a modal on both of
//! the user's browsers, is acknowledged in one and closes in the other, and
//! is not resent; a new lab result appears in the open chart without a
//! reload. Screenshots of the chart and of the modal go to
//! `target/screenshots/` (the README's are copies).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};

use crate::common::browser::{Driver, critical_modal_open, text_of, until_page_says};
use crate::common::{SEED, TestEnv, eventually, heavy};

/// The seed's events of one type-prefix set, as JSON lines.
fn seed_events(keep: impl Fn(&str) -> bool) -> String {
    SEED.lines()
        .filter(|line| keep(line))
        .collect::<Vec<_>>()
        .join("\n")
}

fn seed_event(event_id: &str) -> String {
    seed_events(|line| line.contains(&format!("\"eventId\":\"{event_id}\"")))
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

async fn sign_in(browser: &Client, base: &str, token: &str) {
    browser.goto(base).await.expect("the console loads");
    browser
        .wait()
        .for_element(Locator::Css("#token"))
        .await
        .expect("the sign-in form")
        .send_keys(token)
        .await
        .unwrap();
    browser
        .find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("#q"))
        .await
        .expect("signed in, the patient search");
}

#[tokio::test]
async fn a_clinician_searches_opens_a_chart_and_acknowledges_a_critical_alert_on_one_of_two_browsers()
 {
    let _heavy = heavy().await;
    let env = TestEnv::configured("console", |config| {
        config.resend_interval = Duration::from_secs(1);
    })
    .await;
    // The patient, their allergies, medications and encounter: nothing
    // that alerts yet.
    env.publish(&seed_events(|line| {
        ["patient.", "encounter.", "pharmacy.medication."]
            .iter()
            .any(|prefix| line.contains(&format!("\"eventType\":\"{prefix}")))
    }))
    .await;
    let host = env.start().await;
    env.settle(&host).await;
    let base = format!("http://{}/", host.http_addr);
    let token = env.token("u-dr-smith", "physician");

    let driver = Driver::start().await;
    let (first, second) = (driver.session().await, driver.session().await);
    sign_in(&first, &base, &token).await;
    sign_in(&second, &base, &token).await;

    // Search, open the chart.
    let search = first.find(Locator::Css("#q")).await.unwrap();
    search.send_keys("doe").await.unwrap();
    search.send_keys("\n").await.unwrap();
    first
        .wait()
        .for_element(Locator::LinkText("Doe, John"))
        .await
        .expect("the patient is found")
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&first, "#chart-title").await, "John Doe");
    until_page_says(&first, "Penicillin").await;
    assert!(text_of(&first, "#allergies").await.contains("HIGH"));
    assert!(text_of(&first, "#vitals").await.contains("Heart rate"));
    assert!(text_of(&first, "#medications").await.contains("Warfarin"));
    assert!(text_of(&first, "#labs").await.contains("None recorded"));
    // Marks the page: a reload would lose it.
    first
        .execute("window.notReloaded = true", vec![])
        .await
        .unwrap();

    // The lab result (a normal notification: a toast) and its critical
    // value (an urgent one: the modal, on both browsers).
    let published = Instant::now();
    env.publish(&[seed_event("seed-0009"), seed_event("seed-0010")].join("\n"))
        .await;
    for browser in [&first, &second] {
        eventually("the critical-alert modal opens", || async {
            critical_modal_open(browser).await.then_some(())
        })
        .await;
    }
    println!(
        "critical alert shown in both browsers {:?} after publishing",
        published.elapsed()
    );
    assert!(
        text_of(&first, "#critical-title")
            .await
            .contains("CRITICAL")
    );
    until_page_says(&first, "Lab result").await;
    screenshot(&first, "critical-alert.png").await;

    // Acknowledged on the second browser, it closes on the first.
    second
        .find(Locator::Css("#critical-ack"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("the modal closes on the other browser", || async {
        (!critical_modal_open(&first).await).then_some(())
    })
    .await;
    assert!(!critical_modal_open(&second).await);
    // Resends stop: three resend intervals later, it has not come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!critical_modal_open(&first).await);
    assert!(!critical_modal_open(&second).await);

    // The open chart shows the new result, flagged, without a reload.
    eventually("the chart shows the potassium", || async {
        let labs = first
            .find(Locator::Css("#labs"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (labs.contains("Potassium") && labs.contains("CRITICAL") && labs.contains("HH"))
            .then_some(())
    })
    .await;
    let kept = first
        .execute("return window.notReloaded === true", vec![])
        .await
        .unwrap();
    assert_eq!(
        kept,
        serde_json::Value::Bool(true),
        "the chart page was reloaded"
    );
    screenshot(&first, "chart.png").await;

    first.close().await.unwrap();
    second.close().await.unwrap();
    host.stop();
}

/// The seed's frontend snippet as a portal page on another origin: the
/// official Socket.IO client with its default transports (long-polling
/// first), the `notification` and `critical_alert` handlers, and the chart
/// read with the token; each thing that happens becomes a list item.
const PORTAL_PAGE: &str = r#"<!doctype html>
<title>portal</title>
<ul id="events"></ul>
<script src="/socket.io.min.js"></script>
<script>
  const params = new URLSearchParams(location.search);
  const log = (kind, text) => {
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = kind + " " + text;
    document.getElementById("events").append(item);
  };
  const socket = io(params.get("sockets"), { auth: { token: params.get("token") } });
  socket.on("connect", () => log("connect", ""));
  socket.on("connect_error", (e) => log("connect_error", e.message));
  socket.on("notification", (n) => log("notification", n.title));
  socket.on("critical_alert", (n) => log("critical_alert", n.title));
  fetch(params.get("api") + "/api/aggregate/patients/p-john-doe", {
    headers: { Authorization: "Bearer " + params.get("token") },
  })
    .then((r) => r.json())
    .then((chart) => log("chart", chart.mrn), (e) => log("chart_error", e.message));
</script>
"#;

/// Serves [`PORTAL_PAGE`] and the Socket.IO client on `listener`: a page
/// of the origin `http://127.0.0.1:<its port>`.
fn serve_portal(listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/socketio-client/node_modules/socket.io-client/dist/socket.io.min.js");
    let script = std::fs::read(&client).expect("the Socket.IO client is installed (scripts/test)");
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { axum::response::Html(PORTAL_PAGE) }),
        )
        .route(
            "/socket.io.min.js",
            axum::routing::get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/javascript")],
                    script,
                )
            }),
        );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

/// The items of the portal page's list of one kind.
async fn logged(browser: &Client, kind: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for item in browser
        .find_all(Locator::Css(&format!("#events li.{kind}")))
        .await
        .unwrap()
    {
        texts.push(item.text().await.unwrap());
    }
    texts
}

#[tokio::test]
async fn the_seeds_frontend_snippet_on_a_listed_origin_gets_both_events_and_an_unlisted_one_nothing()
 {
    let _heavy = heavy().await;
    let listed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let unlisted = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listed_origin = format!("http://127.0.0.1:{}", listed.local_addr().unwrap().port());
    let unlisted_origin = format!("http://127.0.0.1:{}", unlisted.local_addr().unwrap().port());
    let env = TestEnv::configured("portal", |config| {
        config.cors_origins = projector::cors::AllowedOrigins::parse(&listed_origin).unwrap();
    })
    .await;
    env.publish(&seed_events(|line| {
        line.contains("\"eventType\":\"patient.")
    }))
    .await;
    let host = env.start().await;
    env.settle(&host).await;
    let _pages = (serve_portal(listed), serve_portal(unlisted));
    let token = env.token("u-dr-smith", "physician");
    let query = format!(
        "?sockets=http://{}&api=http://{}&token={token}",
        host.ws_addr, host.http_addr
    );

    let driver = Driver::start().await;
    let portal = driver.session().await;
    portal
        .goto(&format!("{listed_origin}/{query}"))
        .await
        .unwrap();
    eventually("the listed page connects and reads the chart", || async {
        let connected = !logged(&portal, "connect").await.is_empty();
        let chart = logged(&portal, "chart").await;
        (connected && chart == ["chart MRN-100234"]).then_some(())
    })
    .await;
    env.publish(&[seed_event("seed-0009"), seed_event("seed-0010")].join("\n"))
        .await;
    eventually("both events reach the listed page", || async {
        let notification = logged(&portal, "notification").await;
        let critical = logged(&portal, "critical_alert").await;
        (!notification.is_empty() && !critical.is_empty()).then_some((notification, critical))
    })
    .await;

    let stranger = driver.session().await;
    stranger
        .goto(&format!("{unlisted_origin}/{query}"))
        .await
        .unwrap();
    eventually("the unlisted page is refused", || async {
        let refused = !logged(&stranger, "connect_error").await.is_empty();
        let chart_refused = !logged(&stranger, "chart_error").await.is_empty();
        (refused && chart_refused).then_some(())
    })
    .await;
    // Unacknowledged, the critical alert would be replayed on connect: it
    // never comes, and nothing else does either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for kind in ["connect", "notification", "critical_alert", "chart"] {
        assert!(
            logged(&stranger, kind).await.is_empty(),
            "{kind} on the unlisted page"
        );
    }

    portal.close().await.unwrap();
    stranger.close().await.unwrap();
    host.stop();
}

/// The row of the table cell whose text is `first_cell`, as XPath.
fn row(first_cell: &str) -> String {
    format!("//tr[td[1][normalize-space()='{first_cell}']]")
}

#[tokio::test]
async fn an_admin_pauses_and_resumes_a_plugin_discards_a_dead_letter_and_finds_it_audited() {
    let _heavy = heavy().await;
    let env = TestEnv::new("console_admin").await;
    env.publish(&seed_events(|line| {
        line.contains("\"eventType\":\"patient.")
    }))
    .await;
    env.publish_bytes("lab.result.available", b"this is not json")
        .await;
    let host = env.start().await;
    env.settle(&host).await;
    let admin = env.token("u-admin-1", "admin");

    let driver = Driver::start().await;
    let browser = driver.session().await;
    sign_in(&browser, &format!("http://{}/", host.http_addr), &admin).await;
    browser
        .find(Locator::LinkText("Admin"))
        .await
        .expect("an admin sees the admin area")
        .click()
        .await
        .unwrap();

    // Pause the lab plugin, then resume it.
    for (button, state) in [("Pause", "paused"), ("Resume", "running")] {
        browser
            .wait()
            .for_element(Locator::XPath(&format!(
                "{}//button[text()='{button}']",
                row("lab")
            )))
            .await
            .unwrap_or_else(|e| panic!("no {button} button for lab: {e}"))
            .click()
            .await
            .unwrap();
        eventually(&format!("lab shows {state}"), || async {
            let text = browser
                .find(Locator::XPath(&row("lab")))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains(state).then_some(())
        })
        .await;
        let (_, plugins) = env.get(&host, "/api/plugins", Some(&admin)).await;
        let lab = plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "lab")
            .unwrap();
        assert_eq!(lab["state"], state);
    }

    // The dead letters (the bad event, refused by each plugin that reads
    // its subject), discarded one by one.
    let (_, dead) = env
        .get(&host, "/api/dead-letters?status=dead", Some(&admin))
        .await;
    let ids: Vec<String> = dead
        .as_array()
        .unwrap()
        .iter()
        .map(|letter| letter["id"].to_string())
        .collect();
    assert!(!ids.is_empty());
    for id in &ids {
        let letter = browser
            .wait()
            .for_element(Locator::XPath(&row(id)))
            .await
            .expect("the dead letter is listed");
        assert!(
            letter
                .text()
                .await
                .unwrap()
                .contains("lab.result.available")
        );
        letter
            .find(Locator::XPath(".//button[text()='Discard']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        eventually("the discarded letter leaves the list", || async {
            browser
                .find(Locator::XPath(&row(id)))
                .await
                .is_err()
                .then_some(())
        })
        .await;
    }
    until_page_says(&browser, "No dead letters.").await;
    let (_, letters) = env
        .get(&host, "/api/dead-letters?status=discarded", Some(&admin))
        .await;
    assert_eq!(letters.as_array().map(Vec::len), Some(ids.len()));

    // What the admin did is in the audit trail, found from the console.
    browser
        .find(Locator::Css("#audit-user"))
        .await
        .unwrap()
        .send_keys("u-admin-1\n")
        .await
        .unwrap();
    until_page_says(&browser, "POST /api/plugins/{name}/pause").await;
    until_page_says(&browser, "POST /api/dead-letters/{id}/discard").await;

    browser.close().await.unwrap();
    host.stop();
}
