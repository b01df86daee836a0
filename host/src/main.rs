//! The `projector` command: the host and its tools.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use projector::client::commands::{self, DeadLetters, HostArgs};
use projector::client::progress;
use projector::config::Config;
use projector::publish::Publisher;
use projector::serve::Host;
use projector::sim::Simulator;
use utoipa::OpenApi;

/// The projection allocates and frees many small JSON values per event;
/// glibc's allocator spent about a fifth of the host's time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "projector",
    version,
    about = "EMR events from NATS JetStream through WebAssembly plugins into PostgreSQL read models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: projections and the HTTP API.
    Serve {
        /// Development only: accept a missing, default or short
        /// `JWT_SECRET` (anyone who knows it can mint an admin token).
        #[arg(long)]
        dev: bool,
    },
    /// Publish the events of a JSON-lines file (one envelope per line).
    Publish {
        /// The file.
        file: PathBuf,
    },
    /// Print the events of FHIR R4 bundles (one patient each, as Synthea
    /// writes them), one JSON line per event, for `publish`.
    Fhir {
        /// Bundle files, or folders of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Publish synthetic hospital traffic.
    Simulate {
        /// How many patients' journeys (about twenty events each).
        #[arg(long, default_value_t = 100)]
        patients: usize,
        /// Events per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Random seed; the same seed gives the same traffic.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Benchmarks (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(Bench),
    /// Write, and ship, plugins.
    #[command(subcommand)]
    Plugins(Plugins),
    /// Inspect and re-drive a running host's dead letters.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Print the JSON Schema of the events.
    Schema,
    /// Print the HTTP API's OpenAPI document (what `/api/openapi.json` serves).
    Openapi,
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(Audit),
    /// Print a signed API token (development and scripts).
    Token {
        /// User id.
        #[arg(long)]
        sub: String,
        /// Role: admin, provider, nurse, patient, ….
        #[arg(long)]
        role: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

#[derive(Subcommand)]
enum Plugins {
    /// Scaffold a plugin crate: one handler, a test, a README.
    New {
        /// The plugin's name: 1 to 40 lowercase letters, digits, `-` and
        /// `_` (the rule for every plugin); it also names the plugin's view,
        /// so here it starts with a letter and has at most 21 characters.
        name: String,
        /// Where to create its folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The projector-sdk crate to depend on.
        #[arg(long, default_value = projector::scaffold::DEFAULT_SDK)]
        sdk: PathBuf,
    },
    /// Replay a JSON-lines file of events through one plugin, by the host's
    /// code path, into a fresh PostgreSQL database; print its views.
    Replay {
        /// The events.
        file: PathBuf,
        /// The plugin's `.wasm` component.
        #[arg(long)]
        plugin: PathBuf,
    },
    /// Upload a built plugin to a running host (it is validated, then
    /// started or swapped in).
    Deploy {
        /// The `.wasm` component.
        file: PathBuf,
        /// The plugin's name, if not the file's.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        host: HostArgs,
    },
    /// List a running host's plugins: version, hash, state, lag, counts.
    List {
        #[command(flatten)]
        host: HostArgs,
    },
    /// Run a plugin's previous version again.
    Rollback {
        /// The plugin.
        name: String,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Rebuild a plugin's views from the stream, blue/green.
    Rebuild {
        /// The plugin.
        name: String,
        /// Wait until the rebuilt views are switched in, showing how far
        /// behind the stream the rebuild is.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Pause a plugin's projection from its next batch.
    Pause {
        /// The plugin.
        name: String,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Resume a paused projection.
    Resume {
        /// The plugin.
        name: String,
        #[command(flatten)]
        host: HostArgs,
    },
}

#[derive(Subcommand)]
enum Audit {
    /// Walk the audit trail's hash chain in `DATABASE_URL`: exits 0 and
    /// prints the row count and the head hash when intact, exits 1 naming
    /// the first row that was changed or removed.
    Verify {
        /// The head hash an earlier `verify` printed: the chain must still
        /// pass through it, or rows were rewritten from some point on.
        #[arg(long)]
        expect_head: Option<String>,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// End-to-end projection throughput and the cost of a plugin call.
    Projection {
        /// How many events of backlog to project.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Percent of the events published as poison instead (U+0000 in
        /// their eventId: each a dead letter of every plugin that reads it).
        #[arg(long, default_value_t = 0.0)]
        poison_percent: f64,
    },
    /// Hosts sharing the plugins: events per second end to end and each
    /// host's share, for a backlog published once they have split them.
    Cluster {
        /// Host processes.
        #[arg(long, default_value_t = 2)]
        hosts: usize,
        /// How many events of backlog to project.
        #[arg(long, default_value_t = 50_000)]
        events: usize,
    },
    /// Load-to-ready time of each plugin, how long a plugin's pipeline
    /// stands still when a new version is swapped in under load, and how
    /// fast every plugin's views are rebuilt.
    Lifecycle {
        /// Events of backlog projected during the swaps.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Swaps of the lab plugin (one every 300 ms).
        #[arg(long, default_value_t = 20)]
        swaps: usize,
    },
    /// Memory per connected Socket.IO client, and critical-alert latency
    /// from publish to socket under background load.
    Notify {
        /// Connected clients.
        #[arg(long, default_value_t = 5_000)]
        clients: usize,
        /// Background events per second while alerts are timed.
        #[arg(long, default_value_t = 2_000)]
        rate: u32,
        /// Critical alerts timed (one every 50 ms).
        #[arg(long, default_value_t = 200)]
        alerts: usize,
    },
    /// Chart reads per second and their latency at each number of
    /// concurrent clients, while background traffic is projected.
    Api {
        /// Patients whose charts are read (about twenty events each,
        /// projected first).
        #[arg(long, default_value_t = 2_000)]
        patients: usize,
        /// Background events per second during the reads.
        #[arg(long, default_value_t = 2_000)]
        rate: u32,
        /// Concurrent clients, one run per number.
        #[arg(long, value_delimiter = ',', default_value = "8,64")]
        clients: Vec<usize>,
        /// Seconds each run reads.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Live traffic at a fixed rate through a running host for minutes or
    /// hours: lag, batches, memory and alert latency every 15 s, and at
    /// the end the worst lag, the drain time and the memory slope.
    Soak {
        /// Events per second.
        #[arg(long, default_value_t = 1_500)]
        rate: u32,
        /// Patients the traffic returns to.
        #[arg(long, default_value_t = 16_000)]
        patients: u64,
        /// Minutes of traffic.
        #[arg(long, default_value_t = 5.0)]
        minutes: f64,
    },
}

fn main() -> anyhow::Result<()> {
    // Before the runtime and the allocator take their first memory: with
    // transparent huge pages on ("always", as on many distributions),
    // each first touch of fresh heap or plugin memory cleared a whole
    // 2 MiB page, a tenth of the host's CPU (BENCHMARKS.md).
    let small_pages = rustix::thread::disable_transparent_huge_pages(true);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(small_pages))
}

async fn run(small_pages: rustix::io::Result<()>) -> anyhow::Result<()> {
    init_tracing();
    if let Err(e) = small_pages {
        tracing::warn!(error = %e, "transparent huge pages stay on: the host spends more CPU on fresh memory");
    }
    let cli = Cli::parse();
    let config = Config::from_env()?;
    match cli.command {
        Command::Serve { dev } => serve(config, dev).await,
        Command::Publish { file } => publish(&config, &file).await,
        Command::Fhir { paths } => fhir(&paths),
        Command::Simulate {
            patients,
            rate,
            seed,
        } => simulate(&config, patients, rate, seed).await,
        Command::Bench(bench) => run_bench(config, bench).await,
        Command::Plugins(plugins) => run_plugins(&config, plugins).await,
        Command::DeadLetters(command) => exit_on_refusal(commands::dead_letters(command).await),
        Command::Audit(Audit::Verify { expect_head }) => {
            verify_audit(&config, expect_head.as_deref()).await
        }
        Command::Schema => {
            println!("{:#}", projector_events::schema::document());
            Ok(())
        }
        Command::Openapi => {
            println!("{}", projector::api::ApiDoc::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Token {
            sub,
            role,
            name,
            ttl,
        } => {
            let exp = chrono::Utc::now().timestamp().max(0) as u64 + ttl;
            let claims = projector::auth::Claims {
                sub,
                name,
                role,
                exp,
            };
            let secret = config.hs256_secret().context(
                "JWT_SECRET is not set: with an identity provider, the host signs no tokens of its own",
            )?;
            println!("{}", projector::auth::issue_token(secret, &claims)?);
            Ok(())
        }
    }
}

/// `projector serve`: runs until ctrl-c or SIGTERM, then leaves the
/// cluster gracefully. Refuses a signing secret anyone
/// could guess, unless `dev`; with an identity provider, no secret is
/// needed (HS256 tokens are then refused).
async fn serve(config: Config, dev: bool) -> anyhow::Result<()> {
    match projector::auth::check_secret(
        config.jwt_secret.as_deref(),
        config.uses_identity_provider(),
    ) {
        Ok(()) => {}
        Err(weak) if dev => {
            tracing::warn!(reason = %weak, "development mode: tokens are signed with a secret anyone may know")
        }
        Err(weak) => anyhow::bail!(
            "{weak}: set JWT_SECRET to at least {} random bytes (for example `openssl rand -hex 32`), or run `projector serve --dev` for development",
            projector::auth::MIN_SECRET_BYTES
        ),
    }
    let host = Host::start(config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("waiting for SIGTERM")?;
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped.context("waiting for ctrl-c")?,
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: handing this host's projections over");
    host.leave().await;
    Ok(())
}

/// `projector audit verify`.
async fn verify_audit(config: &Config, expect_head: Option<&str>) -> anyhow::Result<()> {
    use projector::store::audit::{self, Chain};
    let pool = projector::store::connect(&config.database_url, config.db_connections).await?;
    match audit::verify(&pool)
        .await
        .context("reading the audit trail")?
    {
        Chain::Broken { id, reason } => {
            eprintln!("audit trail broken at row {id}: {reason}");
            std::process::exit(1);
        }
        Chain::Intact { rows, head } => {
            if let Some(expected) = expect_head
                && !audit::passes_through(&pool, expected).await?
            {
                eprintln!(
                    "audit trail intact over {rows} rows, but no row has the expected head {expected}: rows were rewritten"
                );
                std::process::exit(1);
            }
            println!("audit trail intact: {rows} rows, head {head}");
            Ok(())
        }
    }
}

/// `projector publish FILE`: one event per line, each checked before any
/// is sent; a progress bar on a terminal.
async fn publish(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let events = projector::publish::parse_jsonl(&text)?;
    let mut publisher = publisher(config).await?;
    let bar = progress::bar(events.len() as u64, "published");
    for event in &events {
        publisher.publish(event).await?;
        bar.inc(1);
    }
    publisher.flush().await?;
    bar.finish_and_clear();
    println!("published {} events from {}", events.len(), file.display());
    Ok(())
}

/// `projector fhir BUNDLES…`: the bundles' events, one per line, to stdout.
fn fhir(paths: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for event in projector::fhir::read_bundles(paths)? {
        out.write_all(&event.to_json_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// `projector simulate`: realistic traffic at a steady rate.
async fn simulate(config: &Config, patients: usize, rate: f64, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let traffic = Simulator::new(seed, chrono::Utc::now()).traffic(patients);
    let mut publisher = publisher(config).await?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for event in &traffic {
        ticker.tick().await;
        publisher.publish(event).await?;
    }
    publisher.flush().await?;
    println!("published {} events for {patients} patients", traffic.len());
    Ok(())
}

/// `projector bench …`.
async fn run_bench(config: Config, bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Projection {
            events,
            poison_percent,
        } => projector::bench::projection::run(config, events, poison_percent).await,
        Bench::Cluster { hosts, events } => {
            projector::bench::cluster::run(config, hosts, events).await
        }
        Bench::Lifecycle { events, swaps } => {
            projector::bench::lifecycle::run(config, events, swaps).await
        }
        Bench::Api {
            patients,
            rate,
            clients,
            seconds,
        } => {
            let load = projector::bench::api::Load {
                patients,
                rate,
                clients,
                seconds,
            };
            projector::bench::api::run(config, load).await
        }
        Bench::Notify {
            clients,
            rate,
            alerts,
        } => {
            let load = projector::bench::notifications::Load {
                clients,
                rate,
                alerts,
            };
            projector::bench::notifications::run(config, load).await
        }
        Bench::Soak {
            rate,
            patients,
            minutes,
        } => soak(config, rate, patients, minutes).await,
    }
}

/// `projector bench soak`.
async fn soak(mut config: Config, rate: u32, patients: u64, minutes: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        minutes > 0.0 && rate > 0,
        "--minutes and --rate must be positive"
    );
    projector::bench::own_names(&mut config, "benchsoak");
    let load = projector::bench::soak::Load {
        rate,
        patients,
        duration: Duration::from_secs_f64(minutes * 60.0),
        report_every: Duration::from_secs(15),
        executable: std::env::current_exe()?,
        autovacuum_off: false,
    };
    projector::bench::soak::run(config, load).await?;
    println!(
        "# reproduce: scripts/build-plugins && cargo build --release && target/release/projector bench soak --rate {rate} --patients {patients} --minutes {minutes}"
    );
    Ok(())
}

/// `projector plugins …`.
async fn run_plugins(config: &Config, plugins: Plugins) -> anyhow::Result<()> {
    match plugins {
        Plugins::New { name, dir, sdk } => {
            let root = projector::scaffold::new_plugin(&name, &dir, &sdk)?;
            println!(
                "created {}: cd there, then `cargo test` and `cargo build --release --target wasm32-wasip2`",
                root.display()
            );
        }
        Plugins::Replay { file, plugin } => {
            use projector::replay::Progress;
            let bar = progress::bar(0, "events replayed");
            let progress = |step| match step {
                Progress::Total(total) => bar.set_length(total),
                Progress::Done(done) => bar.inc(done),
            };
            let result = projector::replay::replay(config, &plugin, &file, &progress).await?;
            bar.finish_and_clear();
            println!("{result:#}");
        }
        Plugins::Deploy { file, name, host } => {
            exit_on_refusal(commands::deploy(&file, name.as_deref(), &host).await)?;
        }
        Plugins::List { host } => exit_on_refusal(commands::list_plugins(&host).await)?,
        Plugins::Rollback { name, host } => {
            exit_on_refusal(commands::rollback(&name, &host).await)?;
        }
        Plugins::Rebuild { name, follow, host } => {
            exit_on_refusal(commands::rebuild(&name, follow, &host).await)?;
        }
        Plugins::Pause { name, host } => {
            exit_on_refusal(commands::set_paused(&name, true, &host).await)?;
        }
        Plugins::Resume { name, host } => {
            exit_on_refusal(commands::set_paused(&name, false, &host).await)?;
        }
    }
    Ok(())
}

/// A publisher on the configured NATS. It makes the stream if it can; a
/// producing system's user may not (only the host's manages streams), and
/// publishes all the same: JetStream's ack says whether a stream took each
/// event.
async fn publisher(config: &Config) -> anyhow::Result<Publisher> {
    let client = projector::bus::connect(config).await?;
    let js = async_nats::jetstream::new(client);
    if let Err(e) = projector::ingest::ensure_stream(&js, config).await {
        tracing::warn!(
            error = format!("{e:#}"),
            "the stream was not checked; publishing to it as it is"
        );
    }
    Ok(Publisher::new(js, &config.subject_prefix))
}

/// Logs to stderr; `LOG_FORMAT=json` for JSON lines, `RUST_LOG` to filter.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Ends the process with the failure's own exit code (after saying why),
/// so scripts can tell an unreachable host from a refused token.
fn exit_on_refusal<T>(result: Result<T, projector::client::RemoteError>) -> anyhow::Result<T> {
    result.map_err(|e| {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code())
    })
}
