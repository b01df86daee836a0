//! `projector bench cluster --hosts N`: N host processes on one stream and
//! database share the plugins' partitions (one host per partition at a
//! time, each host its fair share); once they have split them, a backlog of
//! simulated
//! traffic is published and projected. Prints events per second end to end
//! and each host's share of the plugin deliveries.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::host::{free_address, start_host};
use crate::config::Config;
use crate::ingest;
use crate::publish::Publisher;
use crate::store::{self, checkpoints};

/// The plugins the hosts load: the `.wasm` files of `PLUGINS_DIR`.
fn plugin_names(config: &Config) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(&config.plugins_dir)
        .with_context(|| format!("reading {}", config.plugins_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|path| path.file_stem()?.to_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    anyhow::ensure!(
        !names.is_empty(),
        "no plugins in {}: run scripts/build-plugins",
        config.plugins_dir.display()
    );
    Ok(names)
}

/// A host's Prometheus text.
async fn metrics(http: SocketAddr) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://{http}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// The sum of the samples of `metric` (every label set) in a host's text.
fn sum_of(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs the benchmark with `hosts` hosts and `events` events of backlog.
pub async fn run(mut config: Config, hosts: usize, events: usize) -> anyhow::Result<()> {
    anyhow::ensure!(hosts >= 1, "--hosts must be at least 1");
    let tag = super::own_names(&mut config, "benchcluster");
    let plugins = plugin_names(&config)?;
    println!(
        "# projector bench cluster: {hosts} hosts, {events} events, {} plugins, stream {}, database {tag}",
        plugins.len(),
        config.stream_name
    );
    let traffic = super::traffic(events);
    let client = crate::bus::connect(&config).await?;
    let js = async_nats::jetstream::new(client);
    let stream = ingest::ensure_stream(&js, &config).await?;

    // One after the other, so each migrates a database that is there.
    let executable = std::env::current_exe().context("finding this program")?;
    let mut processes = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..hosts {
        let http = free_address()?;
        processes.push(start_host(&executable, &config, free_address()?, Some(http)).await?);
        addresses.push(http);
    }
    // The hosts split the plugins' partitions before the load: every one
    // is owned and no host holds more than its share (a host above it would
    // still be handing partitions over during the load, and apply most of
    // it first).
    let units = plugins.len() * config.partitions as usize;
    let share = units.div_ceil(hosts);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = Vec::new();
        for &http in &addresses {
            owned.push(sum_of(&metrics(http).await?, "projector_projection_owned") as usize);
        }
        let shared = owned.iter().all(|n| *n <= share);
        if shared && owned.iter().sum::<usize>() == units {
            println!("partitions per host: {owned:?}");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the hosts did not share the partitions within 60 s: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let started = Instant::now();
    let mut publisher = Publisher::new(js.clone(), &config.subject_prefix);
    for event in &traffic {
        publisher.publish(event).await?;
    }
    publisher.flush().await?;
    let published = started.elapsed().as_secs_f64();
    println!(
        "published {events} events in {published:.2} s ({:.0} events/s)",
        events as f64 / published
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    let pool = sqlx::PgPool::connect(&config.database_url).await?;
    loop {
        let lag = super::backlog(&pool, &stream, &config, &plugins).await;
        if lag == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{lag} messages still to apply after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let pool = store::connect(&config.database_url, 2).await?;
    let deliveries = checkpoints::handled(&pool, &plugins).await?;
    println!(
        "projected {events} events through {} plugins on {hosts} hosts in {secs:.2} s: {:.0} events/s end to end ({:.0} plugin deliveries/s)",
        plugins.len(),
        events as f64 / secs,
        deliveries as f64 / secs,
    );
    for (i, &http) in addresses.iter().enumerate() {
        let text = metrics(http).await?;
        let applied = sum_of(&text, "projector_events_applied_total");
        println!(
            "  host {}: {} partitions, {applied:.0} deliveries ({:.0}%)",
            i + 1,
            sum_of(&text, "projector_projection_owned"),
            100.0 * applied / deliveries.max(1) as f64
        );
    }
    drop(processes);
    js.delete_stream(&config.stream_name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "# reproduce: scripts/build-plugins && cargo build --release && target/release/projector bench cluster --hosts {hosts} --events {events}"
    );
    Ok(())
}
