//! Configuration from the environment, each variable with a local default.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// The HS256 key of development, when `JWT_SECRET` is not set: known to
/// everyone, so `serve` refuses it unless `--dev`.
pub const DEV_SECRET: &str = "dev-only-secret-change-me";

/// Everything the host is configured with; see the README's table.
#[derive(Debug, Clone)]
pub struct Config {
    /// `NATS_URL` (`tls://…` for TLS): one server, or a cluster's nodes
    /// separated by commas.
    pub nats_url: String,
    /// `NATS_CREDS`: a `.creds` file (JWT and nkey seed) to connect with.
    pub nats_creds: Option<PathBuf>,
    /// `NATS_USER`, with `NATS_PASSWORD`.
    pub nats_user: Option<String>,
    /// `NATS_PASSWORD`.
    pub nats_password: Option<String>,
    /// `NATS_TLS_CA`: the CA certificate (PEM) the server's is checked
    /// against; TLS is then required.
    pub nats_tls_ca: Option<PathBuf>,
    /// `NATS_TLS_CERT`: the host's client certificate (PEM), with
    /// `NATS_TLS_KEY`.
    pub nats_tls_cert: Option<PathBuf>,
    /// `NATS_TLS_KEY`: the client certificate's key (PEM).
    pub nats_tls_key: Option<PathBuf>,
    /// `NATS_INBOX_PREFIX`: where replies (JetStream's publish acks) come
    /// back; a producing system's user may read only its own
    /// (`_INBOX_<system>` in the compose stack), not `_INBOX.>`, which
    /// carries what the host reads.
    pub nats_inbox_prefix: Option<String>,
    /// `STREAM_REPLICAS`: how many NATS servers of a cluster keep each
    /// message of the stream when the host creates it (1 to 5; an existing
    /// stream is taken as it is).
    pub stream_replicas: usize,
    /// `DATABASE_URL`
    pub database_url: String,
    /// `DB_CONNECTIONS`: the pool of the projections and the host's own
    /// work (pushes, resends, sweeps, deploys).
    pub db_connections: u32,
    /// `LEASE_TTL`: how long a host may stop answering (frozen, stopped,
    /// cut off) before its claims on projections lapse and another host
    /// takes them over; it also ends a transaction left idle that long.
    pub lease_ttl: Duration,
    /// `PARTITIONS`: how many partitions patients are spread over (1 to
    /// 1024, default 32); each plugin's partitions are owned one by one
    /// across the hosts. Changing it is a planned stop of every host (see
    /// [`crate::store::layout`]).
    pub partitions: u32,
    /// `API_DB_CONNECTIONS`: the pool of clients' requests (the HTTP API,
    /// sockets' replays, acknowledgements and audit entries), kept apart so
    /// clients cannot take the projections' connections.
    pub api_db_connections: u32,
    /// `API_STATEMENT_TIMEOUT`: how long one statement of a client's
    /// request may run, and how long a request waits for a free connection
    /// of its pool (e.g. `5s`).
    pub api_statement_timeout: Duration,
    /// `API_RATE_PER_SECOND`: API requests each user may make per second
    /// on average; also the refused requests (401) each client address may
    /// make.
    pub api_rate_per_second: NonZeroU32,
    /// `API_RATE_BURST`: how many requests beyond the average rate a user
    /// (or an address, of refused ones) may make at once.
    pub api_rate_burst: NonZeroU32,
    /// `REPLAY_LIMIT`: the most missed notifications a connecting device is
    /// sent (the newest); it is told where they start and fetches older
    /// ones over HTTP.
    pub replay_limit: i64,
    /// `MAX_DEVICES_PER_USER`: connections one user may have to one host;
    /// another one closes the user's oldest.
    pub max_devices_per_user: usize,
    /// `PUSH_QUEUE`: committed batches of notifications waiting to be
    /// pushed; when full, more wait in the outbox for the sweep.
    pub push_queue: usize,
    /// `JWT_SECRET`: the HS256 key of the host's own tokens (`projector
    /// token`); see [`Config::hs256_secret`] for when it may be unset.
    pub jwt_secret: Option<String>,
    /// `JWT_JWKS_URL`: where the hospital's identity provider publishes the
    /// keys its RS256/ES256 tokens are signed with.
    pub jwt_jwks_url: Option<String>,
    /// `JWT_PUBLIC_KEY_FILE`: the identity provider's one public key (PEM,
    /// RSA or P-256), for a provider that publishes no JWKS.
    pub jwt_public_key_file: Option<PathBuf>,
    /// `JWT_ISSUER`: the `iss` identity provider tokens must carry.
    pub jwt_issuer: Option<String>,
    /// `JWT_AUDIENCE`: the `aud` identity provider tokens must carry (the
    /// host's client id at the provider).
    pub jwt_audience: Option<String>,
    /// `JWT_ROLE_CLAIM`: where identity provider tokens carry the role, a
    /// dot path such as `realm_access.roles` (default `role`).
    pub jwt_role_claim: String,
    /// `JWT_JWKS_MIN_INTERVAL`: the least time between two fetches of the
    /// JWKS (default `10s`), so tokens naming unknown keys cannot make the
    /// host hammer the identity provider.
    pub jwt_jwks_min_interval: Duration,
    /// `HTTP_ADDR`
    pub http_addr: SocketAddr,
    /// `WS_ADDR`: Socket.IO and `/ws` notifications.
    pub ws_addr: SocketAddr,
    /// `RESEND_INTERVAL`: how often an unacknowledged urgent notification
    /// is sent again (e.g. `30s`).
    pub resend_interval: Duration,
    /// `ESCALATE_AFTER`: how long an urgent notification may stay
    /// unacknowledged before it goes to the covering role (e.g. `5m`).
    pub escalate_after: Duration,
    /// `PROCESSED_RETENTION`: how long the host remembers that an event was
    /// applied (e.g. `30days`); the same event published again later is
    /// applied again.
    pub processed_retention: Duration,
    /// `NOTIFICATION_RETENTION`: how long a notification is kept once it
    /// was pushed and, if it needed one, acknowledged (e.g. `30days`); one
    /// still waiting for an acknowledgement is kept however old. The
    /// audit log is never swept.
    pub notification_retention: Duration,
    /// `DEAD_LETTER_RAW_RETENTION`: how long the raw bytes of a dead letter
    /// an operator discarded, or that was applied on a re-drive, are kept
    /// (e.g. `30days`); the letter itself (reason, ids, status) stays.
    pub dead_letter_raw_retention: Duration,
    /// `ANALYZE_EVERY`: how often the host looks for its tables whose
    /// planner statistics went stale and analyses them (`off`: never, when
    /// autovacuum is trusted to do it).
    pub analyze_every: Option<Duration>,
    /// `CLINICAL_ROLES`: the roles that read any patient's chart (comma
    /// separated); `admin` does too, `patient` only its own, others none.
    pub clinical_roles: Vec<String>,
    /// `ESCALATION_ROLE`: the covering role escalations go to, when there
    /// is no `ESCALATION_CHAIN`.
    pub escalation_role: String,
    /// `ESCALATION_CHAIN`: the levels an unacknowledged urgent notification
    /// goes through, e.g. `charge_nurse@5m,attending@10m,rapid_response@15m`
    /// (each time counted from when it was raised); without it, one level:
    /// `ESCALATION_ROLE` after `ESCALATE_AFTER`.
    pub escalation_chain: Option<Vec<EscalationLevel>>,
    /// `CORS_ORIGINS`: the browser origins besides the host's own that may
    /// call the API and open notification sockets, comma-separated;
    /// none by default.
    pub cors_origins: crate::cors::AllowedOrigins,
    /// `S3_ENDPOINT`: S3 or MinIO, addressed path-style.
    pub s3_endpoint: String,
    /// `S3_PUBLIC_ENDPOINT`: where clients reach the same storage, for the
    /// presigned URLs the API hands out (default: `S3_ENDPOINT`).
    pub s3_public_endpoint: String,
    /// `S3_REGION`
    pub s3_region: String,
    /// `S3_ACCESS_KEY`
    pub s3_access_key: String,
    /// `S3_SECRET_KEY`
    pub s3_secret_key: String,
    /// `PRESIGN_TTL`: how long a presigned object URL is valid (e.g. `5m`).
    pub presign_ttl: Duration,
    /// `PROJECTOR_FAULT=crash-after-commit`, for tests only: the process
    /// aborts after its first commit, before acking, as a host killed at
    /// the worst moment would. Read once at start, not on every batch.
    pub crash_after_commit: bool,
    /// `PLUGINS_DIR`: where the `.wasm` plugins are loaded from.
    pub plugins_dir: PathBuf,
    /// `COMPILE_CACHE_DIR`: where compiled plugins are kept by content, so
    /// a restart, or a version loaded before, is not compiled again
    /// (default: the host user's cache directory, outside `PLUGINS_DIR`,
    /// whose writers must not also write native code; empty: no cache).
    pub compile_cache: Option<PathBuf>,
    /// `STREAM_NAME`: the JetStream stream (default `EMR_EVENTS`).
    pub stream_name: String,
    /// `SUBJECT_PREFIX`: prepended to every event subject (default empty);
    /// lets several deployments, or tests, share one NATS account.
    pub subject_prefix: String,
    /// `BATCH_SIZE`: the most events applied in one transaction.
    pub batch_size: usize,
    /// `DOC_CACHE_DOCS`: how many committed documents each projection keeps
    /// in memory between batches (checked against the row's version before
    /// use; 0 turns it off).
    pub doc_cache: usize,
    /// `BATCH_LINGER_MS`: how long a batch waits for more events after its
    /// first (0: it takes what arrived while the one before was applied).
    pub batch_linger: Duration,
    /// `ACK_WAIT_SECS`: how long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// `PLUGIN_CALL_TIMEOUT_MS`: the deadline of one `handle` call.
    pub call_timeout: Duration,
    /// `PLUGIN_MEMORY_MB`: linear memory a plugin instance may grow to.
    pub plugin_memory_bytes: usize,
    /// `MAX_BODY_BYTES`: the largest HTTP request body accepted (64 KiB:
    /// the API's requests are small), but for plugin uploads.
    pub max_body_bytes: usize,
    /// `MAX_PLUGIN_BYTES`: the largest plugin component `PUT
    /// /api/plugins/:name` accepts.
    pub max_plugin_bytes: usize,
    /// `MAX_ATTEMPTS`: how often a trapping event is tried before it is dead-lettered.
    pub max_attempts: u32,
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let plugins_dir = PathBuf::from(var("PLUGINS_DIR", "./plugins-dist"));
        let compile_cache = match std::env::var("COMPILE_CACHE_DIR") {
            Ok(dir) if dir.is_empty() => None,
            Ok(dir) => Some(PathBuf::from(dir)),
            Err(_) => default_compile_cache(),
        };
        // The cache wants an absolute path.
        let compile_cache = compile_cache
            .map(std::path::absolute)
            .transpose()
            .context("COMPILE_CACHE_DIR")?;
        Ok(Self {
            nats_url: var("NATS_URL", "nats://127.0.0.1:4222"),
            nats_creds: optional("NATS_CREDS").map(PathBuf::from),
            nats_user: optional("NATS_USER"),
            nats_password: optional("NATS_PASSWORD"),
            nats_tls_ca: optional("NATS_TLS_CA").map(PathBuf::from),
            nats_tls_cert: optional("NATS_TLS_CERT").map(PathBuf::from),
            nats_tls_key: optional("NATS_TLS_KEY").map(PathBuf::from),
            nats_inbox_prefix: optional("NATS_INBOX_PREFIX"),
            stream_replicas: stream_replicas()?,
            database_url: var(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/projector",
            ),
            db_connections: positive("DB_CONNECTIONS", "16")?,
            lease_ttl: lease_ttl()?,
            partitions: partitions()?,
            api_db_connections: positive("API_DB_CONNECTIONS", "8")?,
            api_statement_timeout: duration("API_STATEMENT_TIMEOUT", "5s")?,
            api_rate_per_second: parse("API_RATE_PER_SECOND", "20")?,
            api_rate_burst: parse("API_RATE_BURST", "100")?,
            replay_limit: positive("REPLAY_LIMIT", "1000")?,
            max_devices_per_user: positive("MAX_DEVICES_PER_USER", "20")?,
            push_queue: positive("PUSH_QUEUE", "1024")?,
            jwt_secret: optional("JWT_SECRET"),
            jwt_jwks_url: optional("JWT_JWKS_URL"),
            jwt_public_key_file: optional("JWT_PUBLIC_KEY_FILE").map(PathBuf::from),
            jwt_issuer: optional("JWT_ISSUER"),
            jwt_audience: optional("JWT_AUDIENCE"),
            jwt_role_claim: optional("JWT_ROLE_CLAIM").unwrap_or_else(|| "role".into()),
            jwt_jwks_min_interval: duration("JWT_JWKS_MIN_INTERVAL", "10s")?,
            http_addr: parse("HTTP_ADDR", "0.0.0.0:3020")?,
            ws_addr: parse("WS_ADDR", "0.0.0.0:3021")?,
            resend_interval: duration("RESEND_INTERVAL", "30s")?,
            escalate_after: duration("ESCALATE_AFTER", "5m")?,
            processed_retention: duration("PROCESSED_RETENTION", "30days")?,
            notification_retention: duration("NOTIFICATION_RETENTION", "30days")?,
            dead_letter_raw_retention: duration("DEAD_LETTER_RAW_RETENTION", "30days")?,
            analyze_every: match var("ANALYZE_EVERY", "5s").as_str() {
                "off" => None,
                _ => Some(duration("ANALYZE_EVERY", "5s")?),
            },
            clinical_roles: var(
                "CLINICAL_ROLES",
                "provider,nurse,charge_nurse,physician,pharmacist,radiologist",
            )
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
            escalation_role: var("ESCALATION_ROLE", "charge_nurse"),
            escalation_chain: optional("ESCALATION_CHAIN")
                .map(|chain| EscalationLevel::parse_chain(&chain))
                .transpose()?,
            cors_origins: crate::cors::AllowedOrigins::parse(&var("CORS_ORIGINS", ""))?,
            s3_endpoint: var("S3_ENDPOINT", "http://127.0.0.1:9000"),
            s3_public_endpoint: std::env::var("S3_PUBLIC_ENDPOINT")
                .unwrap_or_else(|_| var("S3_ENDPOINT", "http://127.0.0.1:9000")),
            s3_region: var("S3_REGION", "us-east-1"),
            s3_access_key: var("S3_ACCESS_KEY", "minioadmin"),
            s3_secret_key: var("S3_SECRET_KEY", "minioadmin"),
            presign_ttl: duration("PRESIGN_TTL", "5m")?,
            plugins_dir,
            compile_cache,
            stream_name: var("STREAM_NAME", "EMR_EVENTS"),
            subject_prefix: var("SUBJECT_PREFIX", ""),
            batch_size: parse("BATCH_SIZE", "1000")?,
            doc_cache: parse("DOC_CACHE_DOCS", "10000")?,
            batch_linger: Duration::from_millis(parse("BATCH_LINGER_MS", "0")?),
            ack_wait: Duration::from_secs(parse("ACK_WAIT_SECS", "30")?),
            call_timeout: Duration::from_millis(parse("PLUGIN_CALL_TIMEOUT_MS", "1000")?),
            plugin_memory_bytes: parse::<usize>("PLUGIN_MEMORY_MB", "64")? << 20,
            max_attempts: parse("MAX_ATTEMPTS", "3")?,
            max_body_bytes: parse("MAX_BODY_BYTES", "65536")?,
            max_plugin_bytes: parse("MAX_PLUGIN_BYTES", "33554432")?,
            crash_after_commit: var("PROJECTOR_FAULT", "") == "crash-after-commit",
        })
    }
}

impl Config {
    /// Whether tokens of the hospital's identity provider are accepted (a
    /// JWKS or a public key is configured).
    pub fn uses_identity_provider(&self) -> bool {
        self.jwt_jwks_url.is_some() || self.jwt_public_key_file.is_some()
    }

    /// The key the host's own HS256 tokens are signed and checked with:
    /// `JWT_SECRET`, or, when no identity provider is configured, the
    /// development default (which `serve` accepts only with `--dev`). With
    /// an identity provider and no `JWT_SECRET`, none: HS256 tokens are
    /// refused.
    pub fn hs256_secret(&self) -> Option<&str> {
        match &self.jwt_secret {
            Some(secret) => Some(secret),
            None if self.uses_identity_provider() => None,
            None => Some(DEV_SECRET),
        }
    }

    /// The same PostgreSQL server with another database (benchmarks and tests
    /// get one each).
    pub fn database_url_named(&self, database: &str) -> String {
        let url = &self.database_url;
        let (base, query) = url
            .split_once('?')
            .map_or((url.as_str(), ""), |(b, q)| (b, q));
        let server = match base.rsplit_once('/') {
            Some((server, _)) if server.contains("://") && !server.ends_with('/') => server,
            _ => base,
        };
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{server}/{database}{query}")
    }
}

/// `$XDG_CACHE_HOME/projector/compile-cache`, or under `$HOME/.cache`:
/// the host user's own, never the plugins folder (whoever may drop a plugin
/// there must not be able to plant the native code the host runs).
fn default_compile_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("projector").join("compile-cache"))
}

/// A variable that is set and not empty.
fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn parse<T: std::str::FromStr>(name: &str, default: &str) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    var(name, default)
        .parse()
        .with_context(|| format!("environment variable {name}"))
}

/// A count that must be at least one (a pool, a queue, a limit).
fn positive<T>(name: &str, default: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let value: T = parse(name, default)?;
    anyhow::ensure!(
        value >= T::from(1),
        "environment variable {name} must be 1 or more"
    );
    Ok(value)
}

/// One level of the escalation chain: the role an unacknowledged urgent
/// notification goes to, and how long after it was raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationLevel {
    /// The covering role.
    pub role: String,
    /// How long after the notification was raised.
    pub after: Duration,
}

impl EscalationLevel {
    /// Reads `role@duration,…`: roles named, times rising.
    pub fn parse_chain(text: &str) -> anyhow::Result<Vec<Self>> {
        let mut levels: Vec<Self> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (role, after) = part.split_once('@').with_context(|| {
                format!("ESCALATION_CHAIN: `{part}` is not `role@duration`, like charge_nurse@5m")
            })?;
            let after = humantime::parse_duration(after.trim()).with_context(|| {
                format!("ESCALATION_CHAIN: `{after}` is not a duration like 5m")
            })?;
            let role = role.trim();
            anyhow::ensure!(!role.is_empty(), "ESCALATION_CHAIN: `{part}` names no role");
            if let Some(before) = levels.last() {
                anyhow::ensure!(
                    after > before.after,
                    "ESCALATION_CHAIN: each level must come later than the one before (`{part}`)"
                );
            }
            levels.push(Self {
                role: role.to_owned(),
                after,
            });
        }
        anyhow::ensure!(!levels.is_empty(), "ESCALATION_CHAIN names no level");
        Ok(levels)
    }
}

impl Config {
    /// The escalation chain: `ESCALATION_CHAIN`, or its one level from
    /// `ESCALATION_ROLE` and `ESCALATE_AFTER`.
    pub fn escalation_levels(&self) -> Vec<EscalationLevel> {
        self.escalation_chain.clone().unwrap_or_else(|| {
            vec![EscalationLevel {
                role: self.escalation_role.clone(),
                after: self.escalate_after,
            }]
        })
    }
}

/// `LEASE_TTL`: 1 s to 10 s (10 s): long enough for a busy host to renew
/// its claims three times over, short enough for a takeover within 10 s.
fn lease_ttl() -> anyhow::Result<Duration> {
    let ttl = duration("LEASE_TTL", "10s")?;
    anyhow::ensure!(
        (Duration::from_secs(1)..=Duration::from_secs(10)).contains(&ttl),
        "LEASE_TTL must be from 1s to 10s, not {ttl:?}"
    );
    Ok(ttl)
}

/// `PARTITIONS`: 1 to 1024 (32): enough for many hosts to share each
/// plugin, few enough that a host's checkpoints stay a handful of rows.
fn partitions() -> anyhow::Result<u32> {
    let partitions: u32 = parse("PARTITIONS", "32")?;
    anyhow::ensure!(
        (1..=1024).contains(&partitions),
        "PARTITIONS must be from 1 to 1024, not {partitions}"
    );
    Ok(partitions)
}

/// `STREAM_REPLICAS`: 1 to 5 (1), the most JetStream replicates a stream.
fn stream_replicas() -> anyhow::Result<usize> {
    let replicas: usize = parse("STREAM_REPLICAS", "1")?;
    anyhow::ensure!(
        (1..=5).contains(&replicas),
        "STREAM_REPLICAS must be from 1 to 5, not {replicas}"
    );
    Ok(replicas)
}

/// A variable holding a duration such as `500ms`, `30s` or `5m`.
fn duration(name: &str, default: &str) -> anyhow::Result<Duration> {
    let value = var(name, default);
    let duration = humantime::parse_duration(&value).with_context(|| {
        format!("environment variable {name}: `{value}` is not a duration like 30s or 5m")
    })?;
    anyhow::ensure!(
        !duration.is_zero(),
        "environment variable {name} must be more than zero"
    );
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escalation_chain_is_roles_at_rising_times() {
        let chain =
            EscalationLevel::parse_chain("charge_nurse@5m, attending@10m,rapid_response@15m")
                .unwrap();
        let read: Vec<(&str, u64)> = chain
            .iter()
            .map(|l| (l.role.as_str(), l.after.as_secs()))
            .collect();
        assert_eq!(
            read,
            [
                ("charge_nurse", 300),
                ("attending", 600),
                ("rapid_response", 900)
            ]
        );
        for bad in [
            "",
            "charge_nurse",
            "@5m",
            "nurse@soon",
            "a@10m,b@5m",
            "a@5m,b@5m",
        ] {
            assert!(EscalationLevel::parse_chain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_url_named_keeps_server_and_options() {
        let mut config = Config::from_env().unwrap();
        config.database_url = "postgres://u@db:5432/projector?sslmode=disable".into();
        assert_eq!(
            config.database_url_named("t1"),
            "postgres://u@db:5432/t1?sslmode=disable"
        );
        config.database_url = "postgres://u@db:5432".into();
        assert_eq!(config.database_url_named("t1"), "postgres://u@db:5432/t1");
    }
}
