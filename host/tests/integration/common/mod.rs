//! Shared set-up of the integration tests: each test gets its own stream,
//! subject prefix and database on the machine's real NATS and PostgreSQL.

pub mod browser;
pub mod clients;
pub mod faults;
pub mod nats_cluster;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use projector::auth::{Claims, issue_token};
use projector::config::Config;
use projector::ingest;
use projector::publish::Publisher;
use projector::serve::Host;
use projector_events::{Envelope, Event};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

/// The HS256 key of every test's host.
pub const SECRET: &str = "test-secret-of-the-integration-tests-only";

/// The seed's event flow: one patient through every event type.
pub const SEED: &str = include_str!("../../../../fixtures/seed-flow.jsonl");
/// The same patient's events of the types SPEC added since the seed.
pub const LATER: &str = include_str!("../../../../fixtures/later-events.jsonl");

/// One test's private slice of NATS and PostgreSQL, deleted when dropped.
pub struct TestEnv {
    pub config: Config,
    pub tag: String,
    pub js: async_nats::jetstream::Context,
}

impl TestEnv {
    /// A fresh stream, prefix and database for the test `name`.
    pub async fn new(name: &str) -> Self {
        Self::on_nats(name, None).await
    }

    /// The same on the NATS server at `nats_url` (`None`: the machine's).
    pub async fn on_nats(name: &str, nats_url: Option<&str>) -> Self {
        Self::configured(name, |config| {
            if let Some(url) = nats_url {
                config.nats_url = url.to_owned();
            }
        })
        .await
    }

    /// The same with the configuration changed by `adjust` before anything
    /// connects: another NATS server, its credentials, no subject prefix…
    /// The test's own client connects as the host would (`bus::connect`).
    pub async fn configured(name: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        let tag = format!(
            "t_{name}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut config = Config::from_env().expect("config");
        config.stream_name = tag.to_uppercase();
        config.subject_prefix = format!("{tag}.");
        config.database_url = config.database_url_named(&tag);
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.ws_addr = "127.0.0.1:0".parse().unwrap();
        // No object storage unless the test starts one (`with_s3`).
        config.s3_endpoint = "http://127.0.0.1:1".into();
        config.plugins_dir = plugins_dir();
        config.compile_cache = Some(plugins_dir().join(".compile-cache"));
        config.ack_wait = Duration::from_secs(1);
        config.jwt_secret = Some(SECRET.into());
        adjust(&mut config);
        let client = projector::bus::connect(&config)
            .await
            .expect("NATS is running (scripts/services)");
        let js = async_nats::jetstream::new(client);
        ingest::ensure_stream(&js, &config).await.expect("stream");
        Self { config, tag, js }
    }

    /// Starts an S3 server of the test's own (s3s-fs, installed by
    /// scripts/test) on a free port and points the configuration at it; it
    /// stops when the returned process is dropped.
    pub async fn with_s3(&mut self) -> tokio::process::Child {
        let binary = std::env::var("S3S_FS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.projector/tools/bin/s3s-fs")
            });
        assert!(
            binary.exists(),
            "no S3 server at {}: run scripts/test",
            binary.display()
        );
        let root = std::env::temp_dir().join(format!("{}-s3", self.tag));
        std::fs::create_dir_all(&root).expect("S3 folder");
        let port = free_port();
        let server = tokio::process::Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "test-access", "--secret-key", "test-secret"])
            .arg(&root)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("s3s-fs starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "s3s-fs did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.config.s3_endpoint = format!("http://127.0.0.1:{port}");
        self.config.s3_public_endpoint = format!("http://localhost:{port}");
        self.config.s3_access_key = "test-access".into();
        self.config.s3_secret_key = "test-secret".into();
        server
    }

    /// A publisher on this test's subjects.
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.js.clone(), &self.config.subject_prefix)
    }

    /// Publishes a JSON-lines text.
    pub async fn publish(&self, text: &str) {
        self.publisher().publish_jsonl(text).await.expect("publish");
    }

    /// Publishes raw bytes on `subject` (under the test's prefix), as a
    /// broken publisher would, and waits for the stream's ack.
    pub async fn publish_bytes(&self, subject: &str, bytes: &[u8]) {
        self.js
            .publish(
                format!("{}{subject}", self.config.subject_prefix),
                bytes.to_vec().into(),
            )
            .await
            .expect("published")
            .await
            .expect("stored");
    }

    /// Starts a host in this process.
    pub async fn start(&self) -> Host {
        Host::start(self.config.clone()).await.expect("host starts")
    }

    /// Starts a host whose plugins folder (`<tag>-<name>-plugins`) is its
    /// own, with copies of `plugins`: a version put in one host's folder
    /// reaches another only through the fleet. Returns the folder too.
    pub async fn start_with_own_plugins(&self, name: &str, plugins: &[&str]) -> (Host, PathBuf) {
        let dir = own_plugins(&format!("{}-{name}", self.tag), plugins);
        let mut config = self.config.clone();
        config.plugins_dir = dir.clone();
        (Host::start(config).await.expect("host starts"), dir)
    }

    /// A `projector serve` command on this test's stream, database and
    /// plugins, its HTTP API on `http_port`, without object storage.
    pub fn host_command(&self, http_port: u16) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"));
        command
            .arg("serve")
            .env("NATS_URL", &self.config.nats_url)
            .env("DATABASE_URL", &self.config.database_url)
            .env("STREAM_NAME", &self.config.stream_name)
            .env("SUBJECT_PREFIX", &self.config.subject_prefix)
            .env("PLUGINS_DIR", &self.config.plugins_dir)
            .env(
                "COMPILE_CACHE_DIR",
                self.config.compile_cache.as_deref().unwrap_or("".as_ref()),
            )
            .env("JWT_SECRET", SECRET)
            .env("S3_ENDPOINT", &self.config.s3_endpoint)
            .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("WS_ADDR", "127.0.0.1:0")
            .env("ACK_WAIT_SECS", "1")
            .env("BATCH_SIZE", self.config.batch_size.to_string())
            .env("PARTITIONS", self.config.partitions.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Starts a host process; returns once its API answers.
    pub async fn spawn_host(&self) -> HostProcess {
        self.spawn_host_with(&[]).await
    }

    /// The same with more environment variables (`LEASE_TTL`, say).
    pub async fn spawn_host_with(&self, variables: &[(&str, &str)]) -> HostProcess {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("projector-{}-{port}.log", self.tag));
        let child = self
            .host_command(port)
            .envs(variables.iter().copied())
            .stderr(std::fs::File::create(&log).expect("the host's log file"))
            .spawn()
            .expect("projector serve starts");
        let base = format!("http://127.0.0.1:{port}");
        eventually("the host process answers", || async {
            let health = reqwest::get(format!("{base}/healthz")).await.ok()?;
            health.status().is_success().then_some(())
        })
        .await;
        HostProcess { child, base, log }
    }

    /// How far behind plugin `name` is (see [`ingest::backlog`]); 1 while
    /// that cannot be read yet.
    pub async fn backlog(
        &self,
        pool: &sqlx::PgPool,
        stream: &async_nats::jetstream::stream::Stream,
        name: &str,
    ) -> u64 {
        ingest::backlog(pool, stream, &self.config, name)
            .await
            .unwrap_or(1)
    }

    /// The consumers hosts read plugin `name` on, one per host.
    pub async fn consumers(
        &self,
        stream: &async_nats::jetstream::stream::Stream,
        name: &str,
    ) -> Vec<String> {
        use futures::TryStreamExt;
        let prefix = format!("projector-{name}-");
        let names: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
        names
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    /// Waits until every plugin of the host has nothing left to apply.
    pub async fn settle(&self, host: &Host) {
        let stream = self
            .js
            .get_stream(&self.config.stream_name)
            .await
            .expect("stream");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut lag = 0;
            for name in host.registry.names() {
                lag += self.backlog(&host.pool, &stream, &name).await;
            }
            if lag == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "projection did not catch up: lag {lag}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A token for `sub` with `role`, valid for an hour.
    pub fn token(&self, sub: &str, role: &str) -> String {
        let exp = chrono::Utc::now().timestamp() as u64 + 3600;
        signed_token(SECRET, sub, role, exp)
    }

    /// A token for `sub` with `role` that expired a few seconds ago.
    pub fn expired_token(&self, sub: &str, role: &str) -> String {
        let exp = chrono::Utc::now().timestamp() as u64 - 5;
        signed_token(SECRET, sub, role, exp)
    }

    /// GET with a token; returns the status and the JSON body.
    pub async fn get(&self, host: &Host, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(format!("http://{}{path}", host.http_addr));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POST with a token.
    pub async fn post(&self, host: &Host, path: &str, token: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{}{path}", host.http_addr))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A pool on this test's database.
    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.config.database_url)
            .await
            .expect("database")
    }
}

impl Drop for TestEnv {
    /// Deletes the stream, the database and the test's temporary files when
    /// the test ends, also when it panics, so a failing test leaves nothing
    /// behind. The test's runtime cannot be blocked on from here, so the
    /// deletion runs on a thread of its own with its own runtime and
    /// connections, and the drop waits for it.
    fn drop(&mut self) {
        let config = self.config.clone();
        let stream = self.config.stream_name.clone();
        let admin_url = self.config.database_url_named("postgres");
        let drop_database = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.tag);
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            runtime.block_on(async move {
                if let Ok(client) = projector::bus::connect(&config).await {
                    let _ = async_nats::jetstream::new(client)
                        .delete_stream(&stream)
                        .await;
                }
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(AssertSqlSafe(drop_database))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = cleanup.join();
        remove_temporary_files(&self.tag);
    }
}

/// Deletes what the test `tag` made in the temporary folder: every entry
/// named `<tag>-…` (its plugins folders, S3 root, NATS store, logs).
fn remove_temporary_files(tag: &str) {
    let prefix = format!("{tag}-");
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

/// `PUT /api/plugins/:name` on the API at `base` (`http://host:port`) with
/// a component's bytes; the status and the JSON answer.
pub async fn put_plugin(base: &str, name: &str, token: &str, bytes: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .put(format!("{base}/api/plugins/{name}"))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A NATS server with JetStream of a test's own, which the test may stop
/// and start again (its messages kept on disk); killed when dropped.
pub struct PrivateNats {
    child: tokio::process::Child,
    port: u16,
    store: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl PrivateNats {
    /// Starts one on a free port, storing under a new temporary folder.
    pub async fn start(tag: &str) -> Self {
        Self::start_with(tag, &[]).await
    }

    /// The same with more `nats-server` arguments (`--user`, `--pass`…).
    pub async fn start_with(tag: &str, args: &[&str]) -> Self {
        Self::start_with_env(tag, args, &[]).await
    }

    /// The same with environment variables set for the server process, for
    /// a configuration file (`-c`) that reads `$NAME`s from its environment.
    pub async fn start_with_env(tag: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let store = std::env::temp_dir().join(format!("{tag}-nats"));
        let port = free_port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let child = Self::spawn(port, &store, &args, &env).await;
        Self {
            child,
            port,
            store,
            args,
            env,
        }
    }

    async fn spawn(
        port: u16,
        store: &std::path::Path,
        args: &[String],
        env: &[(String, String)],
    ) -> tokio::process::Child {
        let child = tokio::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .args(args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts (scripts/services installs it)");
        eventually("the private NATS server answers", || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .await;
        child
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it as an operator would (SIGTERM) and starts it again on the
    /// same port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Stops it as an operator would (SIGTERM) and waits until it is gone.
    pub async fn stop(&mut self) {
        let pid = self.child.id().expect("running");
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(signalled.success(), "SIGTERM to nats-server");
        self.child.wait().await.expect("nats-server exits");
    }

    /// Starts it again after [`PrivateNats::stop`], on the same port and
    /// store.
    pub async fn start_again(&mut self) {
        self.child = Self::spawn(self.port, &self.store, &self.args, &self.env).await;
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Stores notifications for `user` with seqs `seqs` as a batch commit
/// leaves them when its host stops before pushing them: committed a minute
/// ago (past the sweep's grace), never pushed.
pub async fn left_unpushed(pool: &PgPool, user: &str, seqs: std::ops::RangeInclusive<i32>) {
    sqlx::query(
        "INSERT INTO notifications (notification_id, user_id, seq, event_id, patient_id, kind,
                                    priority, requires_ack, dedupe_key, body, event_at, created_at)
         SELECT gen_random_uuid(), $1, s, 'e-' || s, 'p-1', 'lab_result_available', 'normal', false,
                'k-' || s, '{\"type\": \"lab_result_available\", \"priority\": \"normal\"}',
                now(), now() - interval '1 minute'
         FROM generate_series($2, $3) AS s",
    )
    .bind(user)
    .bind(seqs.start())
    .bind(seqs.end())
    .execute(pool)
    .await
    .expect("notifications stored");
}

/// What a host's `/metrics` shows now, as text.
pub async fn metrics(host: &Host) -> String {
    reqwest::get(format!("http://{}/metrics", host.http_addr))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics is text")
}

/// A host running as a process of its own, killed when dropped.
pub struct HostProcess {
    child: tokio::process::Child,
    /// `http://127.0.0.1:<port>` of its API.
    pub base: String,
    /// Where its log goes: shown when the test fails, removed otherwise.
    log: std::path::PathBuf,
}

/// The lines of a host's log a failing test shows, from its end.
const LOG_TAIL_LINES: usize = 400;

impl Drop for HostProcess {
    /// Shows the end of the host's log when the test is failing (what the
    /// hosts did is what explains a multi-host failure), and removes it.
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(&self.log)
        {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!("--- the end of the log of the host at {} ---", self.base);
            for line in tail {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

impl HostProcess {
    /// A line of its `/proc/<pid>/status` (`THP_enabled`, say), as the
    /// kernel reports it: the value after the name.
    pub fn status(&self, name: &str) -> String {
        let pid = self.child.id().expect("the host runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {name} in the host's status"))
            .trim()
            .to_owned()
    }

    /// Kills it with SIGKILL, as a crash would, and waits until it is gone.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("the host exits");
    }

    /// What `GET path` answers with `token`; `None` while the host cannot
    /// answer it (restarting, say).
    pub async fn get_json(&self, path: &str, token: &str) -> Option<Value> {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Each plugin's state on it (`running`, `standby`…), by name, as
    /// `GET /api/plugins` tells an admin (`admin`: a token).
    pub async fn plugin_states(&self, admin: &str) -> Vec<(String, String)> {
        let plugins: Value = reqwest::Client::new()
            .get(format!("{}/api/plugins", self.base))
            .bearer_auth(admin)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map(|r| r.json())
            .expect("the plugins")
            .await
            .expect("JSON");
        plugins
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Sends it a signal by name (`STOP`, `CONT`), as `kill -STOP` would.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the host runs").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{name} {pid}");
    }
}

/// One at a time for the tests that load the whole machine (a soak with lag
/// bounds, a cargo build, property runs, hosts killed under load, a failure
/// matrix with stand-still bounds, tables grown for plans): the suite runs
/// two tests at once on two cores, and two of these together starve each
/// other's hosts. Lighter tests still run beside them.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the machine to be free of other heavy tests; hold the guard
/// for the whole test.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}

/// [`heavy`] for a test that is not async.
pub fn heavy_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.blocking_lock()
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A token for `sub` with `role` signed with `secret`, expiring at `exp`
/// (seconds since the epoch).
pub fn signed_token(secret: &str, sub: &str, role: &str, exp: u64) -> String {
    let claims = Claims {
        sub: sub.into(),
        name: sub.into(),
        role: role.into(),
        exp,
    };
    issue_token(secret, &claims).expect("token")
}

/// Calls `check` every 100 ms until it gives a value; fails with `what`
/// after 30 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A document of a view, once it is there.
pub async fn view_document(pool: &PgPool, view: &str, key: &str) -> Value {
    let sql = format!("SELECT doc FROM view_{view} WHERE key = $1");
    eventually(&format!("{view}/{key}"), || {
        let sql = sql.clone();
        async move {
            sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(key)
                .fetch_optional(pool)
                .await
                .ok()
                .flatten()
        }
    })
    .await
}

/// Where scripts/build-plugins puts the plugins.
pub fn plugins_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins-dist");
    assert!(
        dir.join("patient.wasm").exists(),
        "plugins are not built: run scripts/build-plugins"
    );
    dir
}

/// A private copy of some of the built plugins (`testing/hostile` names a
/// test plugin): deploys write into the plugins folder.
pub fn own_plugins(tag: &str, names: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{tag}-plugins"));
    std::fs::create_dir_all(&dir).unwrap();
    for name in names {
        let file = format!("{name}.wasm");
        let copy = dir.join(std::path::Path::new(&file).file_name().unwrap());
        std::fs::copy(plugins_dir().join(&file), copy).unwrap();
    }
    dir
}

/// Every document of one view, by key.
pub async fn view_documents(
    pool: &PgPool,
    view: &str,
) -> std::collections::BTreeMap<String, Value> {
    let rows: Vec<(String, Value)> =
        sqlx::query_as(AssertSqlSafe(format!("SELECT key, doc FROM view_{view}")))
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

/// An event as the host receives it: through its JSON form.
pub fn as_sent(event: &Event) -> Event {
    Envelope::parse(&event.to_json_bytes()).unwrap()
}

/// The JSON text of an event of `patient` of type `kind` with `payload`,
/// under eventId `id`.
pub fn event_json(id: &str, kind: &str, patient: &str, payload: Value) -> String {
    serde_json::json!({
        "eventId": id, "eventType": kind, "timestamp": "2026-11-29T09:00:00Z",
        "patientId": patient, "userId": "u-matrix", "portalType": "provider", "payload": payload,
    })
    .to_string()
}

/// The `n`th allergy of `patient` whose reaction is 900 KiB of text (its
/// eventId `big-<n>`): a chart holding five is over the 4 MiB a document
/// may hold, so the database is never asked to store it.
pub fn big_allergy(patient: &str, n: usize) -> Event {
    let text = serde_json::json!({
        "eventId": format!("big-{n}"), "eventType": "patient.allergy.added",
        "timestamp": "2026-11-01T12:00:00Z", "patientId": patient, "userId": "u-test",
        "portalType": "provider",
        "payload": { "allergyId": format!("big-{n}"), "reaction": "x".repeat(900 << 10),
                     "severity": "mild", "criticality": "low",
                     "substance": { "system": "http://snomed.info/sct", "code": "387458008", "display": "Aspirin" } },
    });
    Envelope::parse(text.to_string().as_bytes()).unwrap()
}

/// A view's table holds exactly the documents expected; on failure, says
/// which differ rather than printing both views.
pub fn assert_same_documents(
    view: &str,
    stored: &BTreeMap<String, Value>,
    expected: &BTreeMap<String, Value>,
) {
    let differ: Vec<&String> = stored
        .keys()
        .chain(expected.keys())
        .filter(|k| stored.get(*k) != expected.get(*k))
        .collect();
    if let Some(key) = differ.first() {
        let (got, want) = (stored.get(*key), expected.get(*key));
        let fields: Vec<String> = match (got, want) {
            (Some(Value::Object(got)), Some(Value::Object(want))) => got
                .keys()
                .chain(want.keys())
                .filter(|f| got.get(*f) != want.get(*f))
                .map(|f| format!("{f}: {:?} != {:?}", got.get(f), want.get(f)))
                .collect(),
            _ => vec![format!("{got:?} != {want:?}")],
        };
        panic!(
            "view {view}: {} of {} documents differ; in `{key}`, stored != expected: {fields:?}",
            differ.len(),
            expected.len(),
        );
    }
}

/// Every document of every view, by table, for comparing states.
pub async fn snapshot(pool: &PgPool) -> Vec<(String, String, Value)> {
    let tables: Vec<String> = sqlx::query_scalar("SELECT 'view_' || name FROM views ORDER BY name")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let rows: Vec<(String, Value)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT key, doc FROM {table} ORDER BY key"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
        out.extend(rows.into_iter().map(|(k, d)| (table.clone(), k, d)));
    }
    out
}

/// The chart SPEC implies for the seed flow.
pub fn assert_seed_chart(chart: &Value) {
    assert_eq!(chart["patientId"], "p-john-doe");
    assert_eq!(chart["mrn"], "MRN-100234");
    assert_eq!(chart["name"]["family"], "Doe");
    assert_eq!(chart["birthDate"], "1970-01-01");
    assert_eq!(chart["gender"], "male");
    assert_eq!(
        chart["allergies"].as_array().map(Vec::len),
        Some(1),
        "{chart}"
    );
    assert_eq!(chart["allergies"][0]["substance"]["display"], "Penicillin");
    assert_eq!(chart["medications"].as_array().map(Vec::len), Some(2));
    assert_eq!(chart["medications"][0]["status"], "dispensed");
    assert_eq!(chart["latestVitals"]["recordedAt"], "2026-11-26T11:35:00Z");
    assert_eq!(chart["activeDiagnoses"].as_array().map(Vec::len), Some(2));
    assert_eq!(chart["encounterSummary"]["count"], 1);
    assert_eq!(chart["pendingOrders"]["lab"], 0);
    assert_eq!(chart["pendingOrders"]["imaging"], 0);
    assert_eq!(chart["unreadResults"], 1);
    assert_eq!(chart["lastEventId"], "seed-0025");
}

/// The tally plugin's counts for the seed patient: version 1 counts lab
/// events, version 2 radiology events too.
pub fn seed_tally(prefixes: &[&str], extra: &[&str]) -> Value {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    let types = SEED
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["eventType"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .chain(extra.iter().map(|t| (*t).to_owned()));
    for kind in types.filter(|t| prefixes.iter().any(|p| t.starts_with(p))) {
        *counts.entry(kind.replace('.', "_")).or_default() += 1;
    }
    json!(counts)
}
