//! Headless Chromium from the distribution's packages (`chromium` and
//! `chromium-driver`, installed by scripts/test), driven over WebDriver
//! with fantoccini: each test starts its own chromedriver and as many
//! browser sessions as it needs.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use super::{eventually, free_port};

/// A chromedriver process of the test's own, stopped when dropped.
pub struct Driver {
    _process: tokio::process::Child,
    url: String,
}

impl Driver {
    /// Starts chromedriver on a free port; returns once it answers.
    pub async fn start() -> Self {
        let port = free_port();
        let process = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (scripts/test installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        eventually("chromedriver answers", || async {
            reqwest::get(&status)
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        })
        .await;
        Self {
            _process: process,
            url,
        }
    }

    /// A new headless Chromium session (a window of its own, like a second
    /// device of the same user).
    pub async fn session(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100"],
            }),
        );
        // chromedriver is on loopback over plain HTTP: no TLS stack needed.
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session starts")
    }
}

/// The text of the element `css`, once there is one.
pub async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
        .text()
        .await
        .expect("its text")
}

/// Waits until the page's text contains `text`.
pub async fn until_page_says(browser: &Client, text: &str) {
    let wanted = text.to_owned();
    eventually(&format!("the page says {text:?}"), || {
        let wanted = wanted.clone();
        async move {
            let body = browser
                .find(Locator::Css("body"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            body.contains(&wanted).then_some(())
        }
    })
    .await;
}

/// Whether the critical-alert modal is open.
pub async fn critical_modal_open(browser: &Client) -> bool {
    browser
        .execute("return document.getElementById('critical').open", vec![])
        .await
        .ok()
        .and_then(|open| open.as_bool())
        .unwrap_or(false)
}
