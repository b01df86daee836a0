//! `projector bench soak`: live traffic at a fixed rate through a running
//! host for minutes or hours, as a hospital sends it, into tables that only
//! grow. Every report interval it prints each projection's lag, the batches'
//! size and commit time, the host's resident memory and the critical-alert
//! latency; at the end, the worst lag after warm-up, how long the lag took to
//! reach 0, and how the memory moved over the last third.
//!
//! The clinicians are simulated too: one Socket.IO client per provider
//! acknowledges most critical alerts within a few minutes and some never,
//! so resends and escalation run as they would on a ward.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use projector_events::Payload;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::host::{free_address, resident_kib, start_host, token};
use super::socketio_client::{Client, Received};
use crate::config::Config;
use crate::ingest;
use crate::publish::Publisher;
use crate::sim::Simulator;
use crate::store::statistics;
use crate::sync::Locked;

/// What to run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Events published per second.
    pub rate: u32,
    /// Patients the traffic returns to.
    pub patients: u64,
    /// How long traffic is published.
    pub duration: Duration,
    /// How often a line is printed (15 s in the benchmark).
    pub report_every: Duration,
    /// The `projector` executable that serves.
    pub executable: PathBuf,
    /// Turn autovacuum off for the host's tables, whatever the server's
    /// setting (the CI soak test does).
    pub autovacuum_off: bool,
}

/// The providers the simulator orders for (`u-provider-1..=40`).
const PROVIDERS: u32 = 40;
/// Lag samples before this are warm-up.
const WARM_UP: Duration = Duration::from_secs(60);
/// How long the lag may take to reach 0 after the traffic stops.
const DRAIN: Duration = Duration::from_secs(120);

/// One report interval.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since traffic began.
    pub at: Duration,
    /// Events published so far.
    pub published: u64,
    /// Lag per plugin.
    pub lags: BTreeMap<String, u64>,
    /// Events per committed batch in the interval.
    pub batch_events: f64,
    /// Mean time to project and commit a batch in the interval.
    pub batch_ms: f64,
    /// The host's resident set.
    pub rss_kib: u64,
    /// Critical alerts received in the interval, and their latency from
    /// publish to the doctor's socket (p50, p99, ms).
    pub alerts: (usize, f64, f64),
}

impl Sample {
    fn max_lag(&self) -> u64 {
        self.lags.values().copied().max().unwrap_or(0)
    }
}

/// What a soak showed.
#[derive(Debug)]
pub struct Report {
    /// Every sample, traffic and drain.
    pub samples: Vec<Sample>,
    /// Published events.
    pub published: u64,
    /// Worst lag of any projection after warm-up, while traffic ran.
    pub worst_lag: u64,
    /// From the end of traffic to every lag 0 (`None`: not within the
    /// drain limit).
    pub drained_in: Option<Duration>,
    /// Resident memory growth over the last third of the traffic, %.
    pub rss_growth_last_third: f64,
    /// Critical alerts acknowledged by the simulated clinicians, and left.
    pub acknowledged: (usize, usize),
}

/// Runs a soak on the stream, subject prefix and database of `config`,
/// printing it as it goes.
pub async fn run(config: Config, load: Load) -> anyhow::Result<Report> {
    println!(
        "# projector bench soak: {} events/s over {} patients for {:.1} min; stream {}",
        load.rate,
        load.patients,
        load.duration.as_secs_f64() / 60.0,
        config.stream_name
    );
    let js = async_nats::jetstream::new(crate::bus::connect(&config).await?);
    let stream = ingest::ensure_stream(&js, &config).await?;
    let (ws_addr, http_addr) = (free_address()?, free_address()?);
    let mut host = start_host(&load.executable, &config, ws_addr, Some(http_addr)).await?;
    let pid = host.id().context("host pid")?;
    let plugins = plugin_names(&config)?;
    let pool = PgPool::connect(&config.database_url).await?;
    if load.autovacuum_off {
        statistics::autovacuum_off(&pool).await?;
    }

    let sent: Sent = Arc::default();
    let alerts = Arc::new(Mutex::new(Alerts::default()));
    let clinicians = clinicians(&config, ws_addr, sent.clone(), alerts.clone()).await?;

    let started = Instant::now();
    let mut publishing = Some(tokio::spawn(publish(
        js.clone(),
        config.subject_prefix.clone(),
        load.clone(),
        sent,
    )));
    let mut samples = Vec::new();
    let mut scrape = Scrape::default();
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + load.report_every,
        load.report_every,
    );
    // When the traffic ended, and how much went out.
    let mut traffic_end: Option<(Duration, u64)> = None;
    loop {
        ticks.tick().await;
        if let Some(task) = publishing.take_if(|task| task.is_finished()) {
            let (published, ended) = task.await.context("publisher")??;
            traffic_end = Some((ended.duration_since(started), published));
        }
        let published = match traffic_end {
            Some((_, published)) => published,
            None => (started.elapsed().as_secs_f64() * f64::from(load.rate)) as u64,
        };
        let mut lags = BTreeMap::new();
        for name in &plugins {
            let lag = ingest::backlog(&pool, &stream, &config, name).await;
            lags.insert(name.clone(), lag.unwrap_or(0));
        }
        let (batch_events, batch_ms) = scrape.window(http_addr).await?;
        let sample = Sample {
            at: started.elapsed(),
            published,
            lags,
            batch_events,
            batch_ms,
            rss_kib: resident_kib(pid)?,
            alerts: alerts.locked().window(),
        };
        print_sample(&sample, load.rate);
        let idle = sample.max_lag() == 0;
        samples.push(sample);
        if let Some((end, _)) = traffic_end
            && (idle || started.elapsed() > end + DRAIN)
        {
            break;
        }
    }
    let (end, published) = traffic_end.unwrap_or_default();
    let report = summarise(samples, published, end, &alerts);
    print_report(&report, load.rate);
    for clinician in clinicians {
        clinician.abort();
    }
    let _ = host.kill().await;
    pool.close().await;
    js.delete_stream(&config.stream_name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(report)
}

/// The plugins the host loads: the components in its folder.
fn plugin_names(config: &Config) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(&config.plugins_dir)
        .with_context(|| format!("reading {}", config.plugins_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    anyhow::ensure!(
        !names.is_empty(),
        "no plugins in {}: run scripts/build-plugins",
        config.plugins_dir.display()
    );
    Ok(names)
}

/// When each critical alert was published, by report id.
type Sent = Arc<Mutex<HashMap<String, Instant>>>;

/// Publishes simulated traffic at `load.rate` for `load.duration`; returns
/// how many events went out, and when the last was acknowledged.
async fn publish(
    js: async_nats::jetstream::Context,
    prefix: String,
    load: Load,
    sent: Sent,
) -> anyhow::Result<(u64, Instant)> {
    let mut simulator = Simulator::new(11, chrono::Utc::now()).with_population(load.patients);
    let mut publisher = Publisher::new(js, &prefix);
    let mut queue = Vec::new();
    let mut published = 0u64;
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    while started.elapsed() < load.duration {
        ticks.tick().await;
        let due = (started.elapsed().as_secs_f64() * f64::from(load.rate)) as u64;
        while published < due {
            if queue.is_empty() {
                // A thousand journeys at a time, interleaved.
                queue = simulator.traffic(1000);
                queue.reverse();
            }
            let Some(event) = queue.pop() else { break };
            if let Payload::LabCriticalAlert(alert) = &event.payload {
                sent.locked()
                    .insert(alert.report_id.clone(), Instant::now());
            }
            publisher.publish(&event).await?;
            published += 1;
        }
    }
    publisher.flush().await?;
    Ok((published, Instant::now()))
}

/// Critical alerts as the clinicians saw and answered them.
#[derive(Default)]
struct Alerts {
    /// Latencies of the current interval.
    window: Vec<Duration>,
    /// Every latency.
    all: Vec<Duration>,
    /// Notification ids seen.
    seen: HashSet<String>,
    /// Acknowledged, and never to be.
    acknowledged: usize,
    ignored: usize,
}

impl Alerts {
    /// The interval's count, p50 and p99 (ms); starts the next.
    fn window(&mut self) -> (usize, f64, f64) {
        let mut window = std::mem::take(&mut self.window);
        window.sort();
        let at = |q: f64| super::quantile_ms(&window, q);
        (window.len(), at(0.5), at(0.99))
    }
}

/// One Socket.IO client per provider; every critical alert is timed from its
/// publication and acknowledged as a clinician would: four in five within
/// 20 s to 3 min, three in twenty within 3 to 10 min, one in twenty never.
async fn clinicians(
    config: &Config,
    ws_addr: std::net::SocketAddr,
    sent: Sent,
    alerts: Arc<Mutex<Alerts>>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for provider in 1..=PROVIDERS {
        let auth = json!({ "token": token(config, &format!("u-provider-{provider}")) });
        let client = Client::connect(ws_addr, &auth)
            .await
            .with_context(|| format!("provider {provider} connecting"))?;
        let (events_tx, mut events) = mpsc::unbounded_channel::<Received>();
        let (acks, acks_rx) = mpsc::unbounded_channel::<String>();
        tasks.push(tokio::spawn(client.listen(Some(events_tx), Some(acks_rx))));
        let (sent, alerts) = (sent.clone(), alerts.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(u64::from(provider));
            while let Some((arrived, name, data)) = events.recv().await {
                if name != crate::push::CRITICAL_EVENT {
                    continue;
                }
                let id = data["notificationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let report = data["data"]["reportId"]
                    .as_str()
                    .or(data["reportId"].as_str())
                    .unwrap_or_default();
                let mut alerts = alerts.locked();
                if let Some(published) = sent.locked().remove(report) {
                    let latency = arrived.saturating_duration_since(published);
                    alerts.window.push(latency);
                    alerts.all.push(latency);
                }
                if id.is_empty() || !alerts.seen.insert(id.clone()) {
                    continue;
                }
                let answer = rng.random_range(0..20);
                let delay = match answer {
                    0..16 => Duration::from_secs(rng.random_range(20..180)),
                    16..19 => Duration::from_secs(rng.random_range(180..600)),
                    _ => {
                        alerts.ignored += 1;
                        continue;
                    }
                };
                alerts.acknowledged += 1;
                let acks = acks.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = acks.send(id);
                });
            }
        }));
    }
    Ok(tasks)
}

/// The host's batch counters as last read, to report per interval.
#[derive(Default)]
struct Scrape {
    applied: f64,
    batches: f64,
    seconds: f64,
}

impl Scrape {
    /// Events per batch and mean batch time (ms) since the last call.
    async fn window(&mut self, http: std::net::SocketAddr) -> anyhow::Result<(f64, f64)> {
        let text = reqwest::get(format!("http://{http}/metrics"))
            .await?
            .text()
            .await?;
        let total = |metric: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(metric))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let now = Scrape {
            applied: total("projector_events_applied_total{"),
            batches: total("projector_batch_duration_seconds_count{"),
            seconds: total("projector_batch_duration_seconds_sum{"),
        };
        let batches = now.batches - self.batches;
        let window = if batches > 0.0 {
            (
                (now.applied - self.applied) / batches,
                (now.seconds - self.seconds) / batches * 1e3,
            )
        } else {
            (0.0, 0.0)
        };
        *self = now;
        Ok(window)
    }
}

fn print_sample(sample: &Sample, rate: u32) {
    let lags: Vec<String> = sample
        .lags
        .iter()
        .map(|(name, lag)| format!("{name} {lag}"))
        .collect();
    let (alerts, p50, p99) = sample.alerts;
    println!(
        "t={:>5.0}s published {:>8} | lag {} (max {:.1} s of traffic) | batch {:.0} events, {:.1} ms | rss {:.1} MiB | alerts {alerts} p50 {p50:.0} ms p99 {p99:.0} ms",
        sample.at.as_secs_f64(),
        sample.published,
        lags.join(", "),
        sample.max_lag() as f64 / f64::from(rate.max(1)),
        sample.batch_events,
        sample.batch_ms,
        sample.rss_kib as f64 / 1024.0,
    );
}

fn summarise(
    samples: Vec<Sample>,
    published: u64,
    end: Duration,
    alerts: &Mutex<Alerts>,
) -> Report {
    let during: Vec<&Sample> = samples.iter().filter(|s| s.at <= end).collect();
    let worst_lag = during
        .iter()
        .filter(|s| s.at >= WARM_UP)
        .map(|s| s.max_lag())
        .max()
        .unwrap_or(0);
    let drained_in = samples
        .iter()
        .find(|s| s.at > end && s.max_lag() == 0)
        .map(|s| s.at - end);
    let third = end.mul_f64(2.0 / 3.0);
    let from = during.iter().find(|s| s.at >= third).map(|s| s.rss_kib);
    let to = during.last().map(|s| s.rss_kib);
    let rss_growth_last_third = match (from, to) {
        (Some(from), Some(to)) if from > 0 => (to as f64 - from as f64) / from as f64 * 100.0,
        _ => 0.0,
    };
    let alerts = alerts.locked();
    Report {
        samples,
        published,
        worst_lag,
        drained_in,
        rss_growth_last_third,
        acknowledged: (alerts.acknowledged, alerts.ignored),
    }
}

fn print_report(report: &Report, rate: u32) {
    println!(
        "published {} events; worst lag after the first minute {} events ({:.1} s of traffic); lag 0 {} after the end; RSS {:+.1}% over the last third; clinicians acknowledge {} alerts and leave {}",
        report.published,
        report.worst_lag,
        report.worst_lag as f64 / f64::from(rate.max(1)),
        report
            .drained_in
            .map_or("not within 120 s".to_owned(), |d| format!(
                "{:.0} s",
                d.as_secs_f64()
            )),
        report.rss_growth_last_third,
        report.acknowledged.0,
        report.acknowledged.1,
    );
}
