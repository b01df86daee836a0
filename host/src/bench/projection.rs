//! `projector bench projection`: publishes a backlog of simulated traffic to a stream and
//! database of its own, starts the host, and prints events per second until
//! every plugin's lag is 0; then the cost of one plugin call alone.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::ingest;
use crate::publish::Publisher;
use crate::runtime::{Plugin, Runtime};
use crate::serve::Host;
use crate::store::checkpoints;

/// Runs the benchmark with the host's configuration, on a fresh stream,
/// subject prefix and database named after the current time;
/// `poison_percent` of the events go out as poison instead.
pub async fn run(mut config: Config, events: usize, poison_percent: f64) -> anyhow::Result<()> {
    let tag = super::own_names(&mut config, "bench");
    config.http_addr = "127.0.0.1:0".parse()?;

    println!(
        "# projector bench: {events} events ({poison_percent}% poison), stream {}, database {tag}",
        config.stream_name
    );
    let traffic = super::traffic(events);

    let client = crate::bus::connect(&config).await?;
    let js = async_nats::jetstream::new(client);
    let stream = ingest::ensure_stream(&js, &config).await?;
    let mut publisher = Publisher::new(js.clone(), &config.subject_prefix);
    // Every n-th event goes out as poison, spread evenly.
    let every = (poison_percent > 0.0).then(|| (100.0 / poison_percent).round().max(1.0) as usize);
    let started = Instant::now();
    for (i, event) in traffic.iter().enumerate() {
        match every {
            Some(n) if i % n == n - 1 => {
                let (kind, id, bytes) = poison(event);
                publisher.publish_raw(&kind, Some(&id), bytes).await?;
            }
            _ => publisher.publish(event).await?,
        }
    }
    publisher.flush().await?;
    let publish_secs = started.elapsed().as_secs_f64();
    println!(
        "published {events} events in {publish_secs:.2} s ({:.0} events/s)",
        events as f64 / publish_secs
    );

    let started = Instant::now();
    let cpu_before = cpu_time();
    let host = Host::start(config.clone()).await?;
    let plugins = host.registry.names();
    anyhow::ensure!(
        !plugins.is_empty(),
        "no plugins in {}: run scripts/build-plugins",
        config.plugins_dir.display()
    );
    let mut last_print = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let total_lag = super::backlog(&host.pool, &stream, &config, &plugins).await;
        if total_lag == 0 {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            println!(
                "  {:>6.1} s: {total_lag} messages still to apply across {} plugins",
                started.elapsed().as_secs_f64(),
                plugins.len()
            );
            last_print = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "projected {events} events through {} plugins in {secs:.2} s: {:.0} events/s end to end ({:.0} plugin deliveries/s)",
        plugins.len(),
        events as f64 / secs,
        checkpoints::handled(&host.pool, &plugins).await? as f64 / secs,
    );
    let cpu = (cpu_time() - cpu_before).as_secs_f64();
    println!(
        "host CPU for it: {cpu:.1} s, {:.0} µs per event (varies less than the rate on a shared machine)",
        cpu * 1e6 / events as f64
    );
    host.stop();

    wasm_call_cost(&config, &traffic).await?;
    js.delete_stream(&config.stream_name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "# reproduce: scripts/build-plugins && cargo run --release -- bench projection --events {events} --poison-percent {poison_percent}"
    );
    Ok(())
}

/// The CPU time this process has used so far (every thread): what a
/// build costs per event, which varies less than the wall-clock rate on a
/// machine shared with others.
fn cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(now.tv_sec.unsigned_abs(), now.tv_nsec.unsigned_abs() as u32)
}

/// The event with U+0000 in its eventId: its subject, message id and bytes.
fn poison(event: &projector_events::Event) -> (String, String, Vec<u8>) {
    let mut envelope = event.envelope.clone();
    let message_id = format!("{}-poison", envelope.event_id);
    let id = format!("{}\u{0}", envelope.event_id);
    envelope.event_id = projector_events::NonEmpty::new(id).expect("not empty");
    let bytes = serde_json::to_vec(&envelope).expect("an envelope always serialises");
    (envelope.event_type, message_id, bytes)
}

/// Time of `handle` alone (JSON in and out included) for each plugin, on the
/// plugin's own events, with `view-get` answering "absent".
async fn wasm_call_cost(
    config: &Config,
    traffic: &[projector_events::Event],
) -> anyhow::Result<()> {
    let runtime = Runtime::from_config(config)?;
    let mut paths: Vec<_> = std::fs::read_dir(&config.plugins_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    paths.sort();
    for path in paths {
        let plugin = Plugin::load(&runtime, &std::fs::read(&path)?).await?;
        let mine: Vec<_> = traffic
            .iter()
            .filter(|e| plugin.info.subscribes_to(&e.envelope.event_type))
            .take(20_000)
            .collect();
        let mut instance = plugin.instantiate(None).await?;
        let started = Instant::now();
        for (seq, event) in mine.iter().enumerate() {
            instance
                .handle(event, seq as u64)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let per_call = started.elapsed().as_secs_f64() / mine.len().max(1) as f64;
        println!(
            "wasm call {:<10} {:>6.2} µs per event ({} events, one core)",
            plugin.name(),
            per_call * 1e6,
            mine.len()
        );
    }
    Ok(())
}
