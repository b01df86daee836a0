//! `projector bench lifecycle`: how long a plugin takes from bytes to ready
//! (compile, instantiate, `describe`), and how long the lab plugin's
//! pipeline stands still when a new version is swapped in while it
//! projects a backlog, and how fast every plugin's views are rebuilt.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::ingest;
use crate::publish::Publisher;
use crate::runtime::{Plugin, Runtime};
use crate::serve::Host;
use crate::sim::Simulator;

/// The same component with a custom section appended: the same behaviour
/// under a new content hash, as a rebuild gives.
pub fn rebuilt(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"projector-rebuild";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // a custom section
    out.push(section.len() as u8);
    out.extend(section);
    out
}

/// Time between swaps.
const SWAP_EVERY: Duration = Duration::from_millis(300);

/// Runs the benchmark on a fresh stream and database, with a copy of the
/// plugins folder (deploys write into it).
pub async fn run(mut config: Config, events: usize, swaps: usize) -> anyhow::Result<()> {
    let tag = super::own_names(&mut config, "benchlife");
    config.http_addr = "127.0.0.1:0".parse()?;
    config.ws_addr = "127.0.0.1:0".parse()?;
    let source = config.plugins_dir.clone();
    let dir = std::env::temp_dir().join(format!("{tag}-plugins"));
    std::fs::create_dir_all(&dir)?;
    for name in ["patient", "lab", "radiology", "pharmacy", "encounter"] {
        std::fs::copy(
            source.join(format!("{name}.wasm")),
            dir.join(format!("{name}.wasm")),
        )
        .with_context(|| {
            format!(
                "{name}.wasm in {}: run scripts/build-plugins",
                source.display()
            )
        })?;
    }
    config.plugins_dir = dir.clone();
    println!(
        "# projector bench lifecycle: {events} events of backlog, {swaps} swaps of the lab plugin"
    );

    // Load to ready without a compile cache, then with one: the first load
    // compiles and stores, the second (a restart, or a version seen before)
    // reads the compiled code back.
    let cache = dir.join(".compile-cache");
    config.compile_cache = None;
    let uncached = Runtime::from_config(&config)?;
    config.compile_cache = Some(cache.clone());
    let cached = Runtime::from_config(&config)?;
    for name in ["patient", "lab", "radiology", "pharmacy", "encounter"] {
        let bytes = std::fs::read(dir.join(format!("{name}.wasm")))?;
        let mut took = Vec::new();
        for runtime in [&uncached, &cached, &cached] {
            let started = Instant::now();
            Plugin::load(runtime, &bytes).await?;
            took.push(started.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "load to ready {name:<10} compiled {:>6.1} ms, compiled and cached {:>6.1} ms, from the cache {:>5.1} ms ({} KiB)",
            took[0],
            took[1],
            took[2],
            bytes.len() / 1024
        );
    }

    let js = async_nats::jetstream::new(crate::bus::connect(&config).await?);
    ingest::ensure_stream(&js, &config).await?;
    let mut publisher = Publisher::new(js.clone(), &config.subject_prefix);
    let mut simulator = Simulator::new(11, Utc::now());
    let mut published = 0;
    while published < events {
        for event in simulator.traffic(200) {
            publisher.publish(&event).await?;
            published += 1;
        }
    }
    publisher.flush().await?;

    let host = Host::start(config.clone()).await?;
    let lab = host.registry.get("lab").context("the lab plugin runs")?;
    // Every start and commit of a lab batch, as its projection records them.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = {
        let lab = lab.clone();
        tokio::spawn(async move {
            let (mut starts, mut commits): (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) =
                Default::default();
            let mut stopped = stopped;
            loop {
                for (seen, at) in [
                    (&mut starts, lab.progress.batch_started()),
                    (&mut commits, lab.progress.last_batch()),
                ] {
                    if let Some(at) = at
                        && seen.last() != Some(&at)
                    {
                        seen.push(at);
                    }
                }
                tokio::select! {
                    _ = &mut stopped => return (starts, commits),
                    () = tokio::time::sleep(Duration::from_micros(500)) => {}
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lab_bytes = std::fs::read(dir.join("lab.wasm"))?;
    let mut windows = Vec::new();
    let mut deploys = Vec::new();
    for k in 0..swaps {
        let started = Instant::now();
        let from = Utc::now();
        host.deployer
            .upload(&rebuilt(&lab_bytes, &format!("{k}")), "lab", "bench")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        deploys.push(started.elapsed());
        windows.push((from, Utc::now()));
        tokio::time::sleep(SWAP_EVERY).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(());
    let (starts, commits) = sampler.await.context("the sampler")?;
    report(&starts, &commits, &windows, &mut deploys);
    rebuild_all(&host, &js, &config, published).await?;
    host.stop();
    let _ = std::fs::remove_dir_all(&dir);
    js.delete_stream(&config.stream_name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "# reproduce: scripts/build-plugins && cargo build --release && target/release/projector bench lifecycle --events {events} --swaps {swaps}"
    );
    Ok(())
}

/// Once every plugin has caught up, rebuilds all of them at once from the
/// start of the stream and prints the rate, comparable with the live rate
/// of `bench projection` (every plugin, the whole backlog).
async fn rebuild_all(
    host: &Host,
    js: &async_nats::jetstream::Context,
    config: &Config,
    events: usize,
) -> anyhow::Result<()> {
    let stream = js
        .get_stream(&config.stream_name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let names = host.registry.names();
    loop {
        if super::backlog(&host.pool, &stream, config, &names).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    for name in &names {
        host.deployer
            .rebuild(name)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    while names
        .iter()
        .any(|n| host.deployer.rebuild_status(n).is_some())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "rebuild of all {} plugins from the start of the stream: {events} events in {took:.1} s: {:.0} events/s",
        names.len(),
        events as f64 / took
    );
    Ok(())
}

/// Prints how long deploys took; how long the pipeline stood still at each
/// swap (from the last commit on the old version to the start of the first
/// batch on the new one); the same gap between batches away from swaps; and,
/// as the earlier, coarser figure, commit-to-commit gaps across swaps.
fn report(
    starts: &[DateTime<Utc>],
    commits: &[DateTime<Utc>],
    windows: &[(DateTime<Utc>, DateTime<Utc>)],
    deploys: &mut [Duration],
) {
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1e3;
    let last_commit_before = |at: &DateTime<Utc>| commits.iter().rev().find(|c| *c <= at);
    // A commit during a deploy, or the first after one, is near a swap.
    let near_swap = |at: &DateTime<Utc>| {
        windows.iter().any(|(from, to)| {
            (at > from && at <= to) || commits.iter().find(|c| *c > to) == Some(at)
        })
    };
    // The first batch started after a deploy returned runs the new version.
    let first_start_after = |at: &DateTime<Utc>| starts.iter().find(|s| *s > at);
    let mut pauses: Vec<f64> = windows
        .iter()
        .filter_map(|(_, to)| {
            let start = first_start_after(to)?;
            Some(ms(*start - *last_commit_before(start)?))
        })
        .collect();
    let mut idle: Vec<f64> = starts
        .iter()
        .filter(|s| {
            !windows
                .iter()
                .any(|(_, to)| first_start_after(to) == Some(*s))
        })
        .filter_map(|s| Some(ms(*s - *last_commit_before(s)?)))
        .collect();
    let mut across: Vec<f64> = windows
        .iter()
        .filter_map(|(_, to)| {
            let after = commits.iter().position(|c| c > to)?;
            Some(ms(commits[after] - *commits[..after].last()?))
        })
        .collect();
    let mut gaps: Vec<f64> = commits
        .windows(2)
        .filter(|pair| !near_swap(&pair[1]))
        .map(|pair| ms(pair[1] - pair[0]))
        .collect();
    let mut deploy_ms: Vec<f64> = deploys.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    println!(
        "deploy (validate, compile, swap) of the lab plugin: {}",
        percentiles(&mut deploy_ms)
    );
    println!(
        "swap pause (last commit on the old version to the first batch start on the new): {} over {} swaps",
        percentiles(&mut pauses),
        pauses.len()
    );
    println!(
        "the same, commit to next batch start, away from swaps: {} over {} batches",
        percentiles(&mut idle),
        idle.len()
    );
    println!(
        "commit-to-commit gap across a swap: {} over {} swaps",
        percentiles(&mut across),
        across.len()
    );
    println!(
        "commit-to-commit gap away from swaps: {} over {} gaps",
        percentiles(&mut gaps),
        gaps.len()
    );
}

/// p50, p99 and max of some milliseconds.
fn percentiles(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        values
            .get(((values.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}
