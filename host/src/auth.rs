//! Who a caller is and what they may do: bearer JWTs (HS256 with
//! `JWT_SECRET`) with the claims `sub`, `name`, `role` and `exp`, the roles
//! they carry, and the recipients a notification goes to.
//!
//! The HTTP API and the notification sockets both check tokens here, so the
//! two cannot disagree about who someone is.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
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
    "dev-only-secret-change-me",
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

/// Refuses a secret anyone could guess or mint tokens with.
pub fn check_secret(secret: Option<&str>) -> Result<(), WeakSecret> {
    let secret = secret
        .filter(|s| !s.is_empty())
        .ok_or(WeakSecret::Missing)?;
    if KNOWN_SECRETS.contains(&secret) {
        return Err(WeakSecret::Known);
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(WeakSecret::Short(secret.len()));
    }
    Ok(())
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct InvalidToken(#[from] jsonwebtoken::errors::Error);

/// Signs a token (the CLI, benchmarks and tests use this).
pub fn issue_token(secret: &str, claims: &Claims) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Checks a token: signature, algorithm, expiry with no leeway.
pub fn verify_token(secret: &str, token: &str) -> Result<Claims, InvalidToken> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )?;
    Ok(data.claims)
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
        assert!(matches!(check_secret(None), Err(WeakSecret::Missing)));
        assert!(matches!(check_secret(Some("")), Err(WeakSecret::Missing)));
        assert!(matches!(
            check_secret(Some("dev-only-secret-change-me")),
            Err(WeakSecret::Known)
        ));
        assert!(matches!(
            check_secret(Some("123456789")),
            Err(WeakSecret::Short(9))
        ));
        assert!(check_secret(Some(&"k".repeat(MIN_SECRET_BYTES))).is_ok());
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
