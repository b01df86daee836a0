//! `projector bench notify`: a host in a process of its own with thousands of
//! Socket.IO clients connected; prints the memory each costs the host, then
//! the latency from publishing a critical lab value to its `critical_alert`
//! on the doctor's socket while simulated traffic is projected behind it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use super::host::{free_address, resident_kib, start_host, token};
use super::socketio_client::Client;
use crate::config::Config;
use crate::ingest;
use crate::publish::Publisher;
use crate::sim::Simulator;
use crate::sync::Locked;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Connected Socket.IO clients (one user each).
    pub clients: usize,
    /// Background events published per second while alerts are timed.
    pub rate: u32,
    /// Critical alerts timed.
    pub alerts: usize,
}

/// Alerts go out this often.
const ALERT_EVERY: Duration = Duration::from_millis(50);
/// Clients connecting at once.
const CONNECTING: usize = 100;

/// Runs the benchmark against a host started from this executable.
pub async fn run(mut config: Config, load: Load) -> anyhow::Result<()> {
    let tag = super::own_names(&mut config, "benchnotify");
    let ws_addr = free_address()?;
    println!(
        "# projector bench notify: {} clients, {} background events/s, {} critical alerts; stream {}",
        load.clients, load.rate, load.alerts, config.stream_name
    );
    let js = async_nats::jetstream::new(crate::bus::connect(&config).await?);
    let stream = ingest::ensure_stream(&js, &config).await?;
    let mut host = start_host(&std::env::current_exe()?, &config, ws_addr, None).await?;
    let pid = host.id().context("host pid")?;

    // Memory: the host's resident set before and after the clients connect.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = resident_kib(pid)?;
    let (alerts_tx, mut alerts_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let clients = futures::stream::iter(0..load.clients)
        .map(|i| {
            let token = token(&config, &format!("u-bench-{i}"));
            async move { Client::connect(ws_addr, &json!({"token": token})).await }
        })
        .buffered(CONNECTING)
        .collect::<Vec<_>>()
        .await;
    let mut listening = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let events = (i == 0).then(|| alerts_tx.clone());
        listening.push(tokio::spawn(
            client
                .with_context(|| format!("client {i}"))?
                .listen(events, None),
        ));
    }
    println!(
        "connected {} clients in {:.1} s",
        load.clients,
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = resident_kib(pid)?;
    println!(
        "host resident memory: {before} KiB idle, {after} KiB with {} clients: {:.1} KiB per connection",
        load.clients,
        (after.saturating_sub(before)) as f64 / load.clients.max(1) as f64
    );

    // Latency: critical alerts for client 0 among background traffic.
    let timed = ALERT_EVERY * load.alerts as u32;
    let background = tokio::spawn(background(
        js.clone(),
        config.subject_prefix.clone(),
        load.rate,
        timed + Duration::from_secs(4),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut publisher = Publisher::new(js.clone(), &config.subject_prefix);
    let mut ticks = tokio::time::interval(ALERT_EVERY);
    for k in 0..load.alerts {
        ticks.tick().await;
        let report = format!("{tag}-rep-{k}");
        sent.locked().insert(report.clone(), Instant::now());
        publisher
            .publish_raw(
                "lab.critical.alert",
                Some(&report),
                critical_lab_value(&report),
            )
            .await?;
        publisher.flush().await?;
    }
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.len() < load.alerts && Instant::now() < deadline {
        let Ok(Some((arrived, event, data))) =
            tokio::time::timeout(Duration::from_secs(5), alerts_rx.recv()).await
        else {
            break;
        };
        let report = data["reportId"].as_str().unwrap_or_default();
        let published = sent.locked().remove(report);
        if let (true, Some(published)) = (event == "critical_alert", published) {
            latencies.push(arrived.saturating_duration_since(published));
        }
    }
    let projected = background.await.context("background publisher")??;
    let pool = sqlx::PgPool::connect(&config.database_url).await?;
    let lag = ingest::backlog(&pool, &stream, &config, "patient")
        .await
        .unwrap_or(0);
    println!(
        "background: {projected} events published at {} events/s; patient plugin lag at the end: {lag}",
        load.rate
    );
    print_latencies(&mut latencies, load.alerts);

    for task in listening {
        task.abort();
    }
    let _ = host.kill().await;
    js.delete_stream(&config.stream_name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "# reproduce: scripts/build-plugins && cargo build --release && target/release/projector bench notify --clients {} --rate {} --alerts {}",
        load.clients, load.rate, load.alerts
    );
    Ok(())
}

fn print_latencies(latencies: &mut [Duration], expected: usize) {
    latencies.sort();
    let at = |q: f64| super::quantile_ms(latencies, q);
    println!(
        "critical alert publish → socket: {} of {expected} received; p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

/// Publishes simulated traffic at `rate` events per second for `duration`.
pub(super) async fn background(
    js: async_nats::jetstream::Context,
    prefix: String,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<usize> {
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (rate as usize / 100).max(1);
    let mut simulator = Simulator::new(7, chrono::Utc::now());
    let mut publisher = Publisher::new(js, &prefix);
    let mut ticks = tokio::time::interval(TICK);
    let mut queue = Vec::new();
    let mut published = 0;
    let until = Instant::now() + duration;
    while Instant::now() < until {
        ticks.tick().await;
        for _ in 0..per_tick {
            if queue.is_empty() {
                queue = simulator.traffic(50);
                queue.reverse();
            }
            if let Some(event) = queue.pop() {
                publisher.publish(&event).await?;
                published += 1;
            }
        }
        if published % 1000 < per_tick {
            publisher.flush().await?;
        }
    }
    publisher.flush().await?;
    Ok(published)
}

/// A `lab.critical.alert` for client 0, as the seed's.
fn critical_lab_value(report: &str) -> Vec<u8> {
    json!({
        "eventId": report, "eventType": "lab.critical.alert", "eventVersion": 1,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "patientId": "p-bench", "userId": "u-lab-1", "portalType": "lab",
        "fhirResourceType": "Observation",
        "payload": {
            "reportId": report, "orderingProviderId": "u-bench-0", "patientName": "Bench Patient",
            "testName": "Potassium",
            "code": {"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"},
            "value": 6.5, "unit": "mmol/L", "criticalReason": "Severe hyperkalemia"
        }
    })
    .to_string()
    .into_bytes()
}
