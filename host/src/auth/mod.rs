//! Who a caller is and what they may do: bearer JWTs, either the host's own
//! (HS256 with `JWT_SECRET`, the claims `sub`, `name`, `role` and `exp`) or
//! the hospital's identity provider's (RS256/ES256, see [`TokenVerifier`]),
//! the roles they carry, and the recipients a notification goes to.
//!
//! The HTTP API and the notification sockets both check tokens here, so the
//! two cannot disagree about who someone is.

mod keys;
mod roles;
mod verifier;

pub use verifier::TokenVerifier;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The role that deploys plugins, re-drives dead letters and reads the audit
/// trail.
const ADMIN: &str = "admin";
/// The role that may read only its own chart.
const PATIENT: &str = "patient";
/// How a role recipient is stored in the outbox's `user_id` column.
const ROLE_PREFIX: &str = "role:";

/// What a verified token says about its bearer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// `admin`, a clinical role (`provider`, `nurse`, …) or `patient`.
    pub role: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

impl Claims {
    /// Whether this is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == ADMIN
    }

    /// Admins and the clinical roles read any chart, a patient only their
    /// own; every other role, however it is spelled, none.
    pub fn may_read_chart(&self, patient_id: &str, clinical_roles: &[String]) -> bool {
        match self.role.as_str() {
            ADMIN => true,
            PATIENT => self.sub == patient_id,
            role => clinical_roles.iter().any(|r| r == role),
        }
    }

    /// The recipients whose notifications this user gets and may
    /// acknowledge: their own and their role's.
    pub fn recipients(&self) -> [Recipient; 2] {
        [
            Recipient::User(self.sub.clone()),
            Recipient::Role(self.role.clone()),
        ]
    }
}

/// The shortest `JWT_SECRET` the host accepts outside development: HS256
/// keys shorter than the hash output are easier to guess.
pub const MIN_SECRET_BYTES: usize = 32;

/// Secrets anyone could know: the development default, and the usual
/// placeholders.
const KNOWN_SECRETS: [&str; 5] = [
    crate::config::DEV_SECRET,
    "secret",
    "changeme",
    "change-me",
    "your-256-bit-secret",
];

/// Why a signing secret is refused.
#[derive(Debug, thiserror::Error)]
pub enum WeakSecret {
    /// Not set at all.
    #[error("JWT_SECRET is not set")]
    Missing,
    /// A value anyone could know.
    #[error("JWT_SECRET is a published default")]
    Known,
    /// Too short.
    #[error("JWT_SECRET is {0} bytes; it must be at least {MIN_SECRET_BYTES}")]
    Short(usize),
}

/// Refuses a secret anyone could guess or mint tokens with. Unset is
/// refused too, unless the identity provider's tokens are accepted
/// (`identity_provider`): the host then takes no HS256 token at all.
pub fn check_secret(secret: Option<&str>, identity_provider: bool) -> Result<(), WeakSecret> {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return if identity_provider {
            Ok(())
        } else {
            Err(WeakSecret::Missing)
        };
    };
    if KNOWN_SECRETS.contains(&secret) {
        return Err(WeakSecret::Known);
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(WeakSecret::Short(secret.len()));
    }
    Ok(())
}

/// Why a token was refused; the message goes back to the caller, so it
/// names what is wrong without echoing what the token holds.
#[derive(Debug, thiserror::Error)]
pub enum InvalidToken {
    /// Unreadable, badly signed, expired, or for another issuer or audience.
    #[error("invalid token: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// Signed with an algorithm this host takes no tokens of.
    #[error("invalid token: {0:?} tokens are not accepted here")]
    Algorithm(Algorithm),
    /// An identity provider token without a `kid` to find its key by.
    #[error("invalid token: it names no key (`kid`)")]
    NoKeyId,
    /// Its `kid` is not among the identity provider's keys.
    #[error("invalid token: its key (`kid`) is not one the identity provider publishes")]
    UnknownKey,
    /// Its `alg` is not the one its key is for.
    #[error("invalid token: its `alg` does not match its key")]
    KeyMismatch,
    /// Validly signed, but without a user or role this host understands.
    #[error("invalid token: {0}")]
    Claims(String),
}

/// Signs a token (the CLI, benchmarks and tests use this).
pub fn issue_token(secret: &str, claims: &Claims) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Who a notification is for: one user (every device of theirs) or everyone
/// with a role (escalations).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// A user, by id.
    User(String),
    /// Every user with this role.
    Role(String),
}

impl Recipient {
    /// Reads the outbox's `user_id` column: `role:<role>` or a user id.
    pub fn from_column(column: &str) -> Self {
        match column.strip_prefix(ROLE_PREFIX) {
            Some(role) => Recipient::Role(role.to_owned()),
            None => Recipient::User(column.to_owned()),
        }
    }

    /// The outbox's `user_id` column for this recipient.
    pub fn column(&self) -> String {
        match self {
            Recipient::User(id) => id.clone(),
            Recipient::Role(role) => format!("{ROLE_PREFIX}{role}"),
        }
    }

    /// A user id that would read as a role: refused at sign-in, or one user
    /// would get a whole role's notifications.
    pub fn is_ambiguous_user_id(id: &str) -> bool {
        id.starts_with(ROLE_PREFIX)
    }

    /// The SQL `LIKE` pattern that matches every role recipient's column.
    pub const ROLE_COLUMN_PATTERN: &'static str = "role:%";
}

impl From<String> for Recipient {
    fn from(column: String) -> Self {
        Recipient::from_column(&column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets_are_refused() {
        for identity_provider in [false, true] {
            assert!(matches!(
                check_secret(Some("dev-only-secret-change-me"), identity_provider),
                Err(WeakSecret::Known)
            ));
            assert!(matches!(
                check_secret(Some("123456789"), identity_provider),
                Err(WeakSecret::Short(9))
            ));
            let strong = "k".repeat(MIN_SECRET_BYTES);
            assert!(check_secret(Some(&strong), identity_provider).is_ok());
        }
        assert!(matches!(
            check_secret(None, false),
            Err(WeakSecret::Missing)
        ));
        assert!(matches!(
            check_secret(Some(""), false),
            Err(WeakSecret::Missing)
        ));
        // With the identity provider's tokens, no secret means no HS256.
        assert!(check_secret(None, true).is_ok());
        assert!(check_secret(Some(""), true).is_ok());
    }

    #[test]
    fn recipients_round_trip_through_their_column() {
        for recipient in [
            Recipient::User("dr-1".into()),
            Recipient::Role("charge_nurse".into()),
        ] {
            assert_eq!(Recipient::from_column(&recipient.column()), recipient);
        }
        assert_eq!(Recipient::Role("x".into()).column(), "role:x");
        assert!(Recipient::is_ambiguous_user_id("role:nurse"));
    }

    #[test]
    fn roles_read_charts_only_when_listed() {
        let claims = |role: &str| Claims {
            sub: "p1".into(),
            name: String::new(),
            role: role.into(),
            exp: 0,
        };
        let clinical = ["provider".to_owned(), "nurse".to_owned()];
        assert!(claims("patient").may_read_chart("p1", &clinical));
        assert!(!claims("patient").may_read_chart("p2", &clinical));
        assert!(claims("provider").may_read_chart("p2", &clinical));
        assert!(claims("admin").may_read_chart("p2", &clinical));
        for other in ["Patient", "caregiver", "", "PROVIDER"] {
            assert!(!claims(other).may_read_chart("p1", &clinical), "{other}");
        }
        assert!(claims("admin").is_admin());
        assert!(!claims("provider").is_admin());
    }
}
