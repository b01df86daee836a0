//! The identity provider's public keys: one from a PEM file, or the JWKS it
//! publishes, fetched and cached. Keys rotate at the provider, so the cache
//! is fetched again when a token names a key it does not hold (at most once
//! per `JWT_JWKS_MIN_INTERVAL`, however many such tokens arrive) and when
//! it is older than [`MAX_AGE`], so a key the provider withdrew stops being
//! taken.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::InvalidToken;

/// How long fetched keys are trusted without asking the provider again.
const MAX_AGE: Duration = Duration::from_secs(300);
/// How long one fetch of the JWKS may take; tokens naming an unknown key
/// wait for it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS read: a provider's holds a handful of keys.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// A public key and the one algorithm tokens signed with it may use, so an
/// RSA key never checks an HS256 token, nor an EC key an RS256 one.
#[derive(Debug)]
pub(super) struct VerifyingKey {
    /// The key.
    pub(super) key: DecodingKey,
    /// RS256 for RSA keys, ES256 for P-256 ones.
    pub(super) algorithm: Algorithm,
}

impl VerifyingKey {
    /// A public key in PEM: RSA (RS256) or EC P-256 (ES256).
    pub(super) fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self {
                key,
                algorithm: Algorithm::RS256,
            });
        }
        let key =
            DecodingKey::from_ec_pem(pem).context("neither an RSA nor an EC public key in PEM")?;
        Ok(Self {
            key,
            algorithm: Algorithm::ES256,
        })
    }

    /// A JWKS entry, if it is a signing key this host verifies with: RSA
    /// or EC P-256, not marked for encryption, and, if it names its
    /// algorithm, named RS256 or ES256 to match.
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|usage| *usage != PublicKeyUse::Signature)
        {
            return None;
        }
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => return None,
        };
        if jwk
            .common
            .key_algorithm
            .is_some_and(|named| named != KeyAlgorithm::from(algorithm))
        {
            return None;
        }
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self { key, algorithm })
    }
}

/// The provider's JWKS, fetched from `JWT_JWKS_URL` and cached by `kid`.
pub(super) struct Jwks {
    url: String,
    client: reqwest::Client,
    /// `JWT_JWKS_MIN_INTERVAL`.
    min_interval: Duration,
    keyring: RwLock<Keyring>,
    /// When the last fetch was tried, successful or not; held while one is
    /// under way, so concurrent tokens wait for it rather than fetch again.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

/// The keys of the last successful fetch.
#[derive(Default)]
struct Keyring {
    keys: HashMap<String, Arc<VerifyingKey>>,
    fetched: Option<Instant>,
}

/// A JWKS as published: its entries are read one by one, so one of a kind
/// this host does not know does not hide the others.
#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    /// The JWKS at `url`, not fetched yet.
    pub(super) fn new(url: &str, min_interval: Duration) -> anyhow::Result<Self> {
        reqwest::Url::parse(url).with_context(|| format!("JWT_JWKS_URL `{url}` is not a URL"))?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .context("building the HTTP client that fetches the JWKS")?;
        Ok(Self {
            url: url.to_owned(),
            client,
            min_interval,
            keyring: RwLock::default(),
            last_attempt: tokio::sync::Mutex::new(None),
        })
    }

    /// The key `kid`: from the cache while it is fresh, else after fetching
    /// the JWKS again if the last try was long enough ago; a key held from
    /// before still serves while the provider cannot be reached.
    pub(super) async fn key(&self, kid: &str) -> Result<Arc<VerifyingKey>, InvalidToken> {
        if let Some(key) = self.cached(kid, true) {
            return Ok(key);
        }
        self.refresh_unless_recent().await;
        self.cached(kid, false).ok_or(InvalidToken::UnknownKey)
    }

    fn cached(&self, kid: &str, fresh_only: bool) -> Option<Arc<VerifyingKey>> {
        let keyring = self.keyring.read().unwrap_or_else(PoisonError::into_inner);
        let fresh = keyring.fetched.is_some_and(|at| at.elapsed() < MAX_AGE);
        if fresh_only && !fresh {
            return None;
        }
        keyring.keys.get(kid).cloned()
    }

    /// Fetches the JWKS unless a fetch was tried within the minimum
    /// interval. A failure is logged and keeps the keys held.
    pub(super) async fn refresh_unless_recent(&self) {
        let mut last_attempt = self.last_attempt.lock().await;
        if last_attempt.is_some_and(|at| at.elapsed() < self.min_interval) {
            return;
        }
        *last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "identity provider keys fetched");
                *self.keyring.write().unwrap_or_else(PoisonError::into_inner) = Keyring {
                    keys,
                    fetched: Some(Instant::now()),
                };
            }
            Err(e) => tracing::warn!(
                url = %self.url,
                error = format!("{e:#}"),
                "identity provider keys not fetched; tokens are checked with the keys held, if any"
            ),
        }
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, Arc<VerifyingKey>>> {
        let mut response = self
            .client
            .get(&self.url)
            .send()
            .await
            .context("requesting the JWKS")?
            .error_for_status()
            .context("the identity provider refused the JWKS request")?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.context("reading the JWKS")? {
            anyhow::ensure!(
                body.len() + chunk.len() <= MAX_JWKS_BYTES,
                "the JWKS is larger than {MAX_JWKS_BYTES} bytes"
            );
            body.extend_from_slice(&chunk);
        }
        parse(&body)
    }
}

/// The signing keys of a JWKS by `kid`; entries without a `kid`, or of a
/// kind this host does not verify with, are left out. A set with none left
/// is an error, so a broken answer does not replace good keys.
fn parse(body: &[u8]) -> anyhow::Result<HashMap<String, Arc<VerifyingKey>>> {
    let set: KeySet = serde_json::from_slice(body).context("the JWKS is not a JSON key set")?;
    let published = set.keys.len();
    let keys: HashMap<_, _> = set
        .keys
        .into_iter()
        .filter_map(|entry| serde_json::from_value::<Jwk>(entry).ok())
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            Some((kid, Arc::new(VerifyingKey::from_jwk(&jwk)?)))
        })
        .collect();
    anyhow::ensure!(
        !keys.is_empty(),
        "none of the JWKS's {published} keys is an RS256 or ES256 signing key with a `kid`"
    );
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A real RSA modulus is not needed to test the selection: `from_jwk`
    /// takes any base64url components.
    fn rsa(kid: &str) -> serde_json::Value {
        json!({"kty": "RSA", "kid": kid, "n": "sXch", "e": "AQAB"})
    }

    fn ec(kid: &str, crv: &str) -> serde_json::Value {
        json!({"kty": "EC", "kid": kid, "crv": crv, "x": "AQ", "y": "AQ"})
    }

    #[test]
    fn only_signing_keys_of_the_accepted_algorithms_are_kept() {
        let mut enc = rsa("enc");
        enc["use"] = json!("enc");
        let mut oaep = rsa("oaep");
        oaep["alg"] = json!("RSA-OAEP");
        let mut named = rsa("named");
        named["alg"] = json!("RS256");
        named["use"] = json!("sig");
        let mut mislabelled = ec("mislabelled", "P-256");
        mislabelled["alg"] = json!("RS256");
        let body = json!({"keys": [
            rsa("rsa"), named, ec("ec", "P-256"), ec("p384", "P-384"), enc, oaep, mislabelled,
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "sXch", "e": "AQAB"},
            {"kty": "unheard-of", "kid": "odd"},
        ]});
        let keys = parse(body.to_string().as_bytes()).unwrap();
        let mut kept: Vec<_> = keys
            .iter()
            .map(|(kid, key)| (kid.as_str(), key.algorithm))
            .collect();
        kept.sort_by_key(|(kid, _)| *kid);
        assert_eq!(
            kept,
            [
                ("ec", Algorithm::ES256),
                ("named", Algorithm::RS256),
                ("rsa", Algorithm::RS256)
            ]
        );
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error() {
        for body in [
            "not json",
            r#"{"no": "keys"}"#,
            r#"{"keys": []}"#,
            r#"{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}"#,
        ] {
            assert!(parse(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn a_pem_that_is_no_public_key_is_refused() {
        assert!(VerifyingKey::from_pem(b"-----BEGIN NOTHING-----").is_err());
        assert!(VerifyingKey::from_pem(b"").is_err());
    }
}
