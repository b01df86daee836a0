//! [`TokenVerifier`]: the one place a bearer token becomes [`Claims`], for
//! the HTTP API and the notification sockets alike.

use std::sync::Arc;

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::Value;

use super::keys::{Jwks, VerifyingKey};
use super::roles::RoleClaim;
use super::{Claims, InvalidToken};
use crate::config::Config;

/// Checks bearer tokens against the sources the configuration names: the
/// host's own HS256 secret and the hospital's identity provider (RS256 or
/// ES256, by JWKS or public key file). Built once at start and shared, so
/// the JWKS cache is one for the whole host.
///
/// A token is checked only with a key of its own `alg`: HS256 with the
/// secret, RS256/ES256 with a provider key made for that algorithm. So an
/// HS256 token "signed" with the provider's public key is never checked
/// against that key (algorithm confusion), and is refused outright when
/// the host has no secret. Expiry is checked with no leeway.
pub struct TokenVerifier {
    /// HS256: `JWT_SECRET` (see [`Config::hs256_secret`]); none refuses
    /// HS256 tokens.
    own: Option<DecodingKey>,
    /// RS256/ES256: the identity provider, if one is configured.
    provider: Option<IdentityProvider>,
}

/// The identity provider's keys and what its tokens must say.
struct IdentityProvider {
    keys: Keys,
    /// `iss`, `aud`, `exp` and `sub` required, no leeway; the algorithm
    /// is set per token, to its key's.
    validation: Validation,
    roles: RoleClaim,
    clinical_roles: Vec<String>,
}

/// Where the identity provider's keys come from.
enum Keys {
    /// `JWT_PUBLIC_KEY_FILE`: one key, whatever `kid` a token names.
    File(Arc<VerifyingKey>),
    /// `JWT_JWKS_URL`: the key a token's `kid` names.
    Jwks(Jwks),
}

impl TokenVerifier {
    /// The verifier `config` asks for. An identity provider needs
    /// `JWT_ISSUER` and `JWT_AUDIENCE`, and one key source, not both; its
    /// JWKS is fetched once here, and a provider that does not answer yet
    /// is logged, not fatal (its keys are fetched again when a token needs
    /// them).
    pub async fn from_config(config: &Config) -> anyhow::Result<Self> {
        let provider = match IdentityProvider::from_config(config)? {
            Some(provider) => {
                if let Keys::Jwks(jwks) = &provider.keys {
                    jwks.refresh_unless_recent().await;
                }
                Some(provider)
            }
            None => None,
        };
        Ok(Self {
            own: config
                .hs256_secret()
                .map(|secret| DecodingKey::from_secret(secret.as_bytes())),
            provider,
        })
    }

    /// Who the token's bearer is, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        let header = jsonwebtoken::decode_header(token)?;
        match (header.alg, &self.provider) {
            (Algorithm::HS256, _) => self.verify_own(token),
            (Algorithm::RS256 | Algorithm::ES256, Some(provider)) => {
                provider.verify(&header, token).await
            }
            (alg, _) => Err(InvalidToken::Algorithm(alg)),
        }
    }

    /// The host's own token: HS256 with `JWT_SECRET`, the claims as
    /// [`Claims`] spells them.
    fn verify_own(&self, token: &str) -> Result<Claims, InvalidToken> {
        let key = self
            .own
            .as_ref()
            .ok_or(InvalidToken::Algorithm(Algorithm::HS256))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(jsonwebtoken::decode::<Claims>(token, key, &validation)?.claims)
    }
}

impl IdentityProvider {
    fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let keys = match (&config.jwt_jwks_url, &config.jwt_public_key_file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => anyhow::bail!(
                "JWT_JWKS_URL and JWT_PUBLIC_KEY_FILE are both set: configure one source of the identity provider's keys"
            ),
            (Some(url), None) => Keys::Jwks(Jwks::new(url, config.jwt_jwks_min_interval)?),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading JWT_PUBLIC_KEY_FILE {}", path.display()))?;
                let key = VerifyingKey::from_pem(&pem)
                    .with_context(|| format!("JWT_PUBLIC_KEY_FILE {}", path.display()))?;
                Keys::File(Arc::new(key))
            }
        };
        // The provider signs tokens for every application of the hospital:
        // without both, a token it issued for another one would open charts.
        let issuer = config.jwt_issuer.as_deref().context(
            "JWT_ISSUER must be set with an identity provider: the `iss` its tokens carry",
        )?;
        let audience = config.jwt_audience.as_deref().context(
            "JWT_AUDIENCE must be set with an identity provider: the `aud` its tokens for this host carry",
        )?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        Ok(Some(Self {
            keys,
            validation,
            roles: RoleClaim::new(&config.jwt_role_claim)?,
            clinical_roles: config.clinical_roles.clone(),
        }))
    }

    async fn verify(&self, header: &Header, token: &str) -> Result<Claims, InvalidToken> {
        let key = match &self.keys {
            Keys::File(key) => key.clone(),
            Keys::Jwks(jwks) => {
                let kid = header.kid.as_deref().ok_or(InvalidToken::NoKeyId)?;
                jwks.key(kid).await?
            }
        };
        if key.algorithm != header.alg {
            return Err(InvalidToken::KeyMismatch);
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.algorithm];
        let claims = jsonwebtoken::decode::<Value>(token, &key.key, &validation)?.claims;
        self.claims(&claims).map_err(InvalidToken::Claims)
    }

    /// The host's claims from a verified token's: `sub`, the name (`name`,
    /// else `preferred_username`), the one role, `exp`.
    fn claims(&self, claims: &Value) -> Result<Claims, String> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|value| !value.is_empty())
        };
        let sub = text("sub").ok_or("its `sub` is not a user id")?;
        let name = text("name").or_else(|| text("preferred_username"));
        let exp = claims
            .get("exp")
            .and_then(|exp| {
                exp.as_u64().or_else(|| {
                    // Seconds with a fraction: the whole second.
                    exp.as_f64()
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(|s| s as u64)
                })
            })
            .ok_or("its `exp` is not a time")?;
        Ok(Claims {
            sub: sub.to_owned(),
            name: name.unwrap_or_default().to_owned(),
            role: self.roles.role(claims, &self.clinical_roles)?,
            exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://idp.test/realms/hospital";

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/jwt")
            .join(name)
    }

    /// An identity provider with one public key file, and no secret.
    fn config(key_file: &str) -> Config {
        let mut config = Config::from_env().expect("config");
        config.jwt_secret = None;
        config.jwt_jwks_url = None;
        config.jwt_public_key_file = Some(fixture(key_file));
        config.jwt_issuer = Some(ISSUER.into());
        config.jwt_audience = Some("projector".into());
        config.jwt_role_claim = "realm_access.roles".into();
        config.clinical_roles = vec!["physician".into()];
        config
    }

    fn claims() -> Value {
        json!({
            "sub": "u-1",
            "preferred_username": "dr.who",
            "iss": ISSUER,
            "aud": ["projector", "account"],
            "exp": chrono::Utc::now().timestamp() + 600,
            "realm_access": {"roles": ["offline_access", "physician"]},
        })
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).expect("signed")
    }

    fn private(name: &str, alg: Algorithm) -> EncodingKey {
        let pem = std::fs::read(fixture(name)).expect("fixture");
        match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .expect("private key")
    }

    #[tokio::test]
    async fn a_key_file_checks_its_own_algorithm_only() {
        let verifier = TokenVerifier::from_config(&config("ec.pub.pem"))
            .await
            .unwrap();
        let es256 = sign(
            Algorithm::ES256,
            &private("ec.pem", Algorithm::ES256),
            &claims(),
        );
        let user = verifier.verify(&es256).await.unwrap();
        assert_eq!(
            (user.sub.as_str(), user.name.as_str(), user.role.as_str()),
            ("u-1", "dr.who", "physician")
        );
        let rs256 = sign(
            Algorithm::RS256,
            &private("rsa.pem", Algorithm::RS256),
            &claims(),
        );
        assert!(matches!(
            verifier.verify(&rs256).await,
            Err(InvalidToken::KeyMismatch)
        ));
        let mut elsewhere = claims();
        elsewhere["iss"] = json!("https://idp.test/realms/other");
        let elsewhere = sign(
            Algorithm::ES256,
            &private("ec.pem", Algorithm::ES256),
            &elsewhere,
        );
        assert!(verifier.verify(&elsewhere).await.is_err());
    }

    /// The public key is no secret: an HS256 token keyed with it is refused
    /// without a secret, and fails the secret's check with one.
    #[tokio::test]
    async fn hs256_is_never_checked_with_the_public_key() {
        let public = std::fs::read(fixture("rsa.pub.pem")).unwrap();
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&public),
            &claims(),
        );
        let mut config = config("rsa.pub.pem");
        let verifier = TokenVerifier::from_config(&config).await.unwrap();
        assert!(matches!(
            verifier.verify(&forged).await,
            Err(InvalidToken::Algorithm(Algorithm::HS256))
        ));
        let secret = "s".repeat(crate::auth::MIN_SECRET_BYTES);
        config.jwt_secret = Some(secret.clone());
        let verifier = TokenVerifier::from_config(&config).await.unwrap();
        assert!(matches!(
            verifier.verify(&forged).await,
            Err(InvalidToken::Jwt(_))
        ));
        // The host's own tokens still pass beside the provider's.
        let own = Claims {
            sub: "u-2".into(),
            name: String::new(),
            role: "nurse".into(),
            exp: chrono::Utc::now().timestamp() as u64 + 600,
        };
        let own = crate::auth::issue_token(&secret, &own).unwrap();
        assert_eq!(verifier.verify(&own).await.unwrap().role, "nurse");
    }

    #[tokio::test]
    async fn a_provider_token_needs_a_user_and_a_role() {
        let verifier = TokenVerifier::from_config(&config("ec.pub.pem"))
            .await
            .unwrap();
        let key = private("ec.pem", Algorithm::ES256);
        let mut roleless = claims();
        roleless["realm_access"]["roles"] = json!([]);
        let mut nobody = claims();
        nobody["sub"] = json!("");
        for token in [roleless, nobody] {
            let token = sign(Algorithm::ES256, &key, &token);
            assert!(matches!(
                verifier.verify(&token).await,
                Err(InvalidToken::Claims(_))
            ));
        }
    }

    #[tokio::test]
    async fn a_provider_is_configured_whole_or_refused() {
        let mut both = config("ec.pub.pem");
        both.jwt_jwks_url = Some("http://127.0.0.1:1/jwks".into());
        let mut no_issuer = config("ec.pub.pem");
        no_issuer.jwt_issuer = None;
        let mut no_audience = config("ec.pub.pem");
        no_audience.jwt_audience = None;
        let mut bad_path = config("ec.pub.pem");
        bad_path.jwt_role_claim = "realm_access..roles".into();
        let not_a_key = config("generate");
        let missing = config("nothing-here.pem");
        let mut not_a_url = config("ec.pub.pem");
        not_a_url.jwt_public_key_file = None;
        not_a_url.jwt_jwks_url = Some("idp.test/jwks".into());
        for (what, config) in [
            ("both sources", both),
            ("no issuer", no_issuer),
            ("no audience", no_audience),
            ("bad role path", bad_path),
            ("not a key", not_a_key),
            ("missing file", missing),
            ("not a URL", not_a_url),
        ] {
            assert!(TokenVerifier::from_config(&config).await.is_err(), "{what}");
        }
    }
}
