//! Issue 14: the hospital's identity provider's tokens. The test serves the
//! provider's JWKS itself; a host pointed at it, with an issuer, an audience
//! and Keycloak's role claim, takes the provider's RS256 and ES256 tokens
//! and refuses what it should, over real HTTP and a real socket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::clients::SocketIo;
use crate::common::{SEED, TestEnv};

const ISSUER: &str = "https://idp.test/realms/hospital";
const AUDIENCE: &str = "projector";
const CHART: &str = "/api/aggregate/patients/p-john-doe";
/// The host's `JWT_JWKS_MIN_INTERVAL` in this test.
const MIN_INTERVAL: Duration = Duration::from_secs(2);

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/jwt")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One of the provider's signing keys.
struct Key {
    private: EncodingKey,
    alg: Algorithm,
    kid: &'static str,
}

impl Key {
    /// The private key in `fixtures/jwt/<file>`, published as `kid`.
    fn load(file: &str, alg: Algorithm, kid: &'static str) -> Self {
        let pem = fixture(file);
        let private = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .expect("a private key");
        Self { private, alg, kid }
    }

    /// Its public half as a JWKS entry.
    fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.private, self.alg).expect("a JWK");
        jwk.common.key_id = Some(self.kid.to_owned());
        serde_json::to_value(jwk).expect("JSON")
    }

    /// A token with these claims, naming this key.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.private).expect("signed")
    }
}

/// The provider's JWKS endpoint: serves the keys it holds now, and counts
/// how often it is asked.
struct Provider {
    url: String,
    jwks: Arc<Jwks>,
}

/// What the provider publishes, and how often it was fetched.
#[derive(Default)]
struct Jwks {
    keys: Mutex<Vec<Value>>,
    fetches: AtomicUsize,
}

impl Provider {
    async fn serve(keys: Vec<Value>) -> Self {
        let jwks = Arc::new(Jwks {
            keys: Mutex::new(keys),
            fetches: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route(
                "/realms/hospital/protocol/openid-connect/certs",
                get(async |State(jwks): State<Arc<Jwks>>| {
                    jwks.fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = jwks.keys.lock().expect("keys").clone();
                    Json(json!({ "keys": keys }))
                }),
            )
            .with_state(jwks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/realms/hospital/protocol/openid-connect/certs"),
            jwks,
        }
    }

    fn publish(&self, jwk: Value) {
        self.jwks.keys.lock().expect("keys").push(jwk);
    }

    fn fetches(&self) -> usize {
        self.jwks.fetches.load(Ordering::SeqCst)
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What Keycloak puts in an access token for this host, with these realm
/// roles, valid for an hour.
fn claims(roles: &[&str]) -> Value {
    json!({
        "sub": "f3b6c1d2-7a8e-4e21-9d55-0c6a1e2b3c4d",
        "preferred_username": "dr.who",
        "iss": ISSUER,
        "aud": [AUDIENCE, "account"],
        "exp": now() + 3600,
        "realm_access": {"roles": roles},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_provider_tokens_are_checked_against_its_jwks() {
    let rsa = Key::load("rsa.pem", Algorithm::RS256, "rsa-1");
    let ec = Key::load("ec.pem", Algorithm::ES256, "ec-1");
    let rotated = Key::load("rotated.pem", Algorithm::RS256, "rsa-2");
    let provider = Provider::serve(vec![rsa.jwk(), ec.jwk()]).await;

    let mut env = TestEnv::new("identity").await;
    // No JWT_SECRET: the host takes no HS256 token at all.
    env.config.jwt_secret = None;
    env.config.jwt_jwks_url = Some(provider.url.clone());
    env.config.jwt_issuer = Some(ISSUER.into());
    env.config.jwt_audience = Some(AUDIENCE.into());
    env.config.jwt_role_claim = "realm_access.roles".into();
    env.config.jwt_jwks_min_interval = MIN_INTERVAL;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    assert_eq!(provider.fetches(), 1, "the JWKS is fetched once at start");

    // Good tokens of either algorithm read charts, with a clinical role
    // among Keycloak's others.
    let physician = claims(&["offline_access", "physician"]);
    for key in [&rsa, &ec] {
        let (status, body) = env.get(&host, CHART, Some(&key.sign(&physician))).await;
        assert_eq!(status, 200, "{:?}: {body}", key.alg);
    }
    assert_eq!(provider.fetches(), 1, "known keys come from the cache");
    let no_clinical_role = rsa.sign(&claims(&["offline_access"]));
    let (status, body) = env.get(&host, CHART, Some(&no_clinical_role)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));

    let with = |field: &str, value: Value| {
        let mut claims = physician.clone();
        claims[field] = value;
        claims
    };
    // The public key is published: as an HS256 secret it must open nothing.
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some(rsa.kid.to_owned());
    let confused = jsonwebtoken::encode(
        &confused,
        &physician,
        &EncodingKey::from_secret(&fixture("rsa.pub.pem")),
    )
    .expect("signed");
    let mut no_kid = Header::new(Algorithm::RS256);
    no_kid.kid = None;
    let no_kid = jsonwebtoken::encode(&no_kid, &physician, &rsa.private).expect("signed");
    for (what, token) in [
        (
            "wrong issuer",
            rsa.sign(&with("iss", json!("https://idp.test/realms/other"))),
        ),
        ("wrong audience", ec.sign(&with("aud", json!("pharmacy")))),
        ("expired", rsa.sign(&with("exp", json!(now() - 5)))),
        ("HS256 keyed with the public key", confused),
        ("no kid", no_kid),
        ("the host's own HS256", env.token("u-admin", "admin")),
    ] {
        let (status, body) = env.get(&host, CHART, Some(&token)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{what}: {body}"
        );
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
    }

    // A key the provider does not publish is refused; a burst of such
    // tokens fetches the JWKS once (the last fetch being an interval ago),
    // then no more than once per interval.
    tokio::time::sleep(MIN_INTERVAL).await;
    let before = provider.fetches();
    let started = Instant::now();
    for _ in 0..5 {
        let (status, body) = env.get(&host, CHART, Some(&rotated.sign(&physician))).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    }
    let intervals = started.elapsed().as_secs_f64() / MIN_INTERVAL.as_secs_f64();
    let fetched = provider.fetches() - before;
    assert!(
        (1..=1 + intervals as usize).contains(&fetched),
        "{fetched} fetches in {intervals:.2} intervals"
    );

    // The provider rotates its keys: once it publishes the new one, the
    // host's next look at the JWKS finds it.
    provider.publish(rotated.jwk());
    tokio::time::sleep(MIN_INTERVAL).await;
    let (status, body) = env.get(&host, CHART, Some(&rotated.sign(&physician))).await;
    assert_eq!(status, 200, "{body}");

    // The notification socket takes the same tokens.
    let socket = SocketIo::connect(host.ws_addr, json!({"token": ec.sign(&physician)})).await;
    socket.close().await;
    host.stop();
}

/// `serve` with an identity provider needs no `JWT_SECRET` (and then takes
/// no HS256 token), still refuses a weak one, and refuses a provider
/// without an issuer or audience.
#[tokio::test]
async fn serve_with_an_identity_provider_needs_no_secret_but_the_whole_provider() {
    let url = ("JWT_JWKS_URL", "http://127.0.0.1:1/certs");
    let issuer = ("JWT_ISSUER", ISSUER);
    let audience = ("JWT_AUDIENCE", AUDIENCE);
    // Accepted: the host goes on, and fails at the database instead.
    let stderr = serve_fails(&[url, issuer, audience]).await;
    assert!(!stderr.contains("JWT_"), "refused for its tokens: {stderr}");
    let weak = ("JWT_SECRET", "123456789");
    let stderr = serve_fails(&[url, issuer, audience, weak]).await;
    assert!(
        stderr.contains("set JWT_SECRET to at least 32 random bytes"),
        "{stderr}"
    );
    let stderr = serve_fails(&[url, audience]).await;
    assert!(stderr.contains("JWT_ISSUER must be set"), "{stderr}");
    let stderr = serve_fails(&[url, issuer]).await;
    assert!(stderr.contains("JWT_AUDIENCE must be set"), "{stderr}");
}

/// Runs `projector serve` with these token settings (and no others) and a
/// database that is not there; returns its stderr once it has failed.
async fn serve_fails(settings: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"));
    command.arg("serve");
    for name in [
        "JWT_SECRET",
        "JWT_JWKS_URL",
        "JWT_PUBLIC_KEY_FILE",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
    ] {
        command.env_remove(name);
    }
    command
        .envs(settings.iter().copied())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("WS_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("serve exits")
        .expect("serve runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{settings:?}: {stderr}");
    stderr
}
