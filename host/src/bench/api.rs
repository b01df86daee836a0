//! `projector bench api`: chart reads per second, and their latency, at a
//! given number of concurrent clients while the pipeline projects
//! background traffic (the seed's Phase 3 "load test aggregation API").

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use rand::{Rng, SeedableRng};

use super::host::{free_address, start_host, token};
use super::notifications::background;
use crate::config::Config;
use crate::ingest;
use crate::publish::Publisher;
use crate::sim::Simulator;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Load {
    /// Patients whose charts exist before the reads start.
    pub patients: usize,
    /// Background events per second while the reads run.
    pub rate: u32,
    /// The numbers of concurrent clients, one run each.
    pub clients: Vec<usize>,
    /// How long each run reads.
    pub seconds: u64,
}

/// Runs the benchmark against a host started from this executable.
pub async fn run(mut config: Config, load: Load) -> anyhow::Result<()> {
    super::own_names(&mut config, "benchapi");
    println!(
        "# projector bench api: {} patients, {} background events/s, clients {:?}, {} s each; stream {}",
        load.patients, load.rate, load.clients, load.seconds, config.stream_name
    );
    let js = async_nats::jetstream::new(crate::bus::connect(&config).await?);
    let stream = ingest::ensure_stream(&js, &config).await?;

    // The charts: the patients' journeys, projected before the reads.
    let traffic = Simulator::new(11, chrono::Utc::now()).traffic(load.patients);
    let mut patients: Vec<String> = traffic
        .iter()
        .map(|e| e.envelope.patient_id.to_string())
        .collect();
    patients.sort();
    patients.dedup();
    let mut publisher = Publisher::new(js.clone(), &config.subject_prefix);
    for event in &traffic {
        publisher.publish(event).await?;
    }
    publisher.flush().await?;
    let http = free_address()?;
    // One user per client, and no per-user rate in the way of the measure.
    let unlimited = std::num::NonZeroU32::new(1_000_000).context("a rate")?;
    config.api_rate_per_second = unlimited;
    config.api_rate_burst = unlimited;
    let mut host = start_host(
        &std::env::current_exe()?,
        &config,
        free_address()?,
        Some(http),
    )
    .await?;
    let started = Instant::now();
    let pool = sqlx::PgPool::connect(&config.database_url).await?;
    let patient = ["patient".to_owned()];
    while super::backlog(&pool, &stream, &config, &patient).await > 0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the backlog was not projected in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "projected {} events for {} patients in {:.1} s",
        traffic.len(),
        patients.len(),
        started.elapsed().as_secs_f64()
    );

    for &clients in &load.clients {
        let run_for = Duration::from_secs(load.seconds);
        let traffic = tokio::spawn(background(
            js.clone(),
            config.subject_prefix.clone(),
            load.rate,
            run_for + Duration::from_secs(1),
        ));
        let measured = reads(&config, http, &patients, clients, run_for).await?;
        let published = traffic.await.context("background publisher")??;
        let lag = super::backlog(&pool, &stream, &config, &patient).await;
        measured.print(clients, run_for, published, lag);
    }
    let _ = host.kill().await;
    js.delete_stream(&config.stream_name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "# reproduce: scripts/build-plugins && cargo build --release && target/release/projector bench api --patients {} --rate {} --clients {} --seconds {}",
        load.patients,
        load.rate,
        load.clients
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        load.seconds
    );
    Ok(())
}

/// What one run's clients saw.
#[derive(Default)]
struct Reads {
    latencies: Vec<Duration>,
    failed: usize,
}

impl Reads {
    fn print(mut self, clients: usize, run_for: Duration, published: usize, lag: u64) {
        self.latencies.sort();
        let at = |q: f64| super::quantile_ms(&self.latencies, q);
        println!(
            "{clients} clients: {:.0} chart reads/s ({} in {} s, {} failed); p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; background {} events, patient plugin lag at the end {}",
            self.latencies.len() as f64 / run_for.as_secs_f64(),
            self.latencies.len(),
            run_for.as_secs(),
            self.failed,
            at(0.5),
            at(0.99),
            at(1.0),
            published,
            lag
        );
    }
}

/// `clients` clients, each its own user, reading random charts one after
/// another for `run_for`.
async fn reads(
    config: &Config,
    http: std::net::SocketAddr,
    patients: &[String],
    clients: usize,
    run_for: Duration,
) -> anyhow::Result<Reads> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let until = Instant::now() + run_for;
    let runs = futures::stream::iter(0..clients)
        .map(|i| {
            let (client, token) = (client.clone(), token(config, &format!("u-bench-api-{i}")));
            async move {
                let mut random = rand::rngs::StdRng::seed_from_u64(i as u64);
                let mut seen = Reads::default();
                while Instant::now() < until {
                    let patient = &patients[random.random_range(0..patients.len())];
                    let url = format!("http://{http}/api/aggregate/patients/{patient}");
                    let sent = Instant::now();
                    let ok = match client.get(&url).bearer_auth(&token).send().await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            ok && response.bytes().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    if ok {
                        seen.latencies.push(sent.elapsed());
                    } else {
                        seen.failed += 1;
                    }
                }
                seen
            }
        })
        .buffer_unordered(clients)
        .collect::<Vec<Reads>>()
        .await;
    let mut all = Reads::default();
    for run in runs {
        all.latencies.extend(run.latencies);
        all.failed += run.failed;
    }
    Ok(all)
}
