//! The host a benchmark measures: `projector serve` in a process of its own,
//! so its resident memory is its own, and what a benchmark needs to talk to it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::auth::{Claims, issue_token};
use crate::config::{Config, DEV_SECRET};

/// The HS256 key of the measured host: it runs with `--dev`, so the
/// development one will do when none is configured.
fn secret(config: &Config) -> &str {
    config.hs256_secret().unwrap_or(DEV_SECRET)
}

/// A provider's token for the host of `config`, valid for a day.
pub fn token(config: &Config, sub: &str) -> String {
    let claims = Claims {
        sub: sub.into(),
        name: String::new(),
        role: "provider".into(),
        exp: chrono::Utc::now().timestamp().max(0) as u64 + 86_400,
    };
    issue_token(secret(config), &claims).unwrap_or_default()
}

/// A loopback address with a port nobody holds now.
pub fn free_address() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// `executable serve` on the stream and database of `config`, its
/// notifications on `ws_addr` and its HTTP API on `http_addr` (none: any
/// port); returns once its notifications port accepts connections.
pub async fn start_host(
    executable: &Path,
    config: &Config,
    ws_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
) -> anyhow::Result<tokio::process::Child> {
    let http = http_addr.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
    let host = tokio::process::Command::new(executable)
        .arg("serve")
        .arg("--dev")
        .env("NATS_URL", &config.nats_url)
        .env("DATABASE_URL", &config.database_url)
        .env("STREAM_NAME", &config.stream_name)
        .env("SUBJECT_PREFIX", &config.subject_prefix)
        .env("PLUGINS_DIR", &config.plugins_dir)
        .env("JWT_SECRET", secret(config))
        .env("HTTP_ADDR", http)
        .env("WS_ADDR", ws_addr.to_string())
        .env(
            "RESEND_INTERVAL",
            format!("{}s", config.resend_interval.as_secs().max(1)),
        )
        .env(
            "ESCALATE_AFTER",
            format!("{}s", config.escalate_after.as_secs().max(1)),
        )
        .env(
            "API_RATE_PER_SECOND",
            config.api_rate_per_second.to_string(),
        )
        .env("API_RATE_BURST", config.api_rate_burst.to_string())
        // Benchmarks run without object storage: its retries are not news.
        .env("RUST_LOG", "warn,projector::objects=error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the host")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while tokio::net::TcpStream::connect(ws_addr).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the host did not start listening on {ws_addr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(host)
}

/// A process's resident set size (Linux `/proc`).
pub fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc/<pid>/status")
}
