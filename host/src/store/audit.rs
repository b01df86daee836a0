//! The `audit_log` table (HIPAA 164.312(b)): who did what to which resource,
//! whose data, from where, when, and how it ended. Every writer (API
//! requests, acknowledgements, escalations, plugins' audited events,
//! sockets, deploys) goes through [`insert`].
//!
//! The table is append-only and hash-chained (migration 0008): the database
//! gives each row its id and hash, refuses UPDATE, DELETE and TRUNCATE, and
//! [`verify`] walks the chain to find a row changed behind its back.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use super::bind_columns;

/// Who a refusal without a valid token is recorded under.
pub const ANONYMOUS: &str = "anonymous";

/// An entry: written by [`insert`], read back by [`entries`].
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewAudit {
    /// Who.
    pub user_id: String,
    /// Did what.
    pub action: String,
    /// To which kind of resource.
    pub resource_type: String,
    /// Which one.
    pub resource_id: String,
    /// Whose data, if a patient's.
    pub patient_id: Option<String>,
    /// From which address, for requests from a client.
    pub ip_address: Option<String>,
    /// The HTTP status an API request ended with.
    pub status: Option<i32>,
    /// Why it was refused, what a socket was replayed, where a deploy came
    /// from.
    pub detail: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

impl NewAudit {
    /// An entry of `user_id` doing `action` to a resource now; add the
    /// patient, address and status as they apply.
    pub fn now(
        user_id: impl Into<String>,
        action: impl Into<String>,
        resource_type: impl Into<String>,
        resource_id: impl Into<String>,
    ) -> Self {
        Self {
            user_id: user_id.into(),
            action: action.into(),
            resource_type: resource_type.into(),
            resource_id: resource_id.into(),
            patient_id: None,
            ip_address: None,
            status: None,
            detail: None,
            at: Utc::now(),
        }
    }
}

/// Writes entries, all in one statement.
pub async fn insert<'e>(
    executor: impl PgExecutor<'e>,
    audits: &[NewAudit],
) -> Result<(), sqlx::Error> {
    if audits.is_empty() {
        return Ok(());
    }
    let query = sqlx::query(
        "INSERT INTO audit_log (user_id, action, resource_type, resource_id, patient_id, ip_address, status, detail, at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                              $7::integer[], $8::text[], $9::timestamptz[])",
    );
    bind_columns!(
        query,
        audits,
        |a| storable(&a.user_id),
        |a| storable(&a.action),
        |a| storable(&a.resource_type),
        |a| storable(&a.resource_id),
        |a| a.patient_id.as_deref().map(storable),
        |a| a.ip_address.as_deref(),
        |a| a.status,
        |a| a.detail.as_deref().map(storable),
        |a| a.at,
    )
    .execute(executor)
    .await
    .map(drop)
}

/// Text as PostgreSQL can hold it: a NUL character, which it cannot, is
/// written as U+FFFD, so a request that carries one is still recorded.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// What to select from the audit trail.
#[derive(Debug, Default)]
pub struct AuditFilter {
    /// Whose data.
    pub patient_id: Option<String>,
    /// Who.
    pub user_id: Option<String>,
    /// From this time on.
    pub from: Option<DateTime<Utc>>,
    /// Up to this time.
    pub to: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: i64,
}

/// An entry as the audit trail shows it: its id, in the order entries were
/// written, and the entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Its id.
    pub id: i64,
    /// What was written.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub entry: NewAudit,
}

/// Entries that match, newest first.
pub async fn entries(pool: &PgPool, filter: &AuditFilter) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, action, resource_type, resource_id, patient_id, ip_address, status, detail, at
         FROM audit_log
         WHERE ($1::text IS NULL OR patient_id = $1) AND ($2::text IS NULL OR user_id = $2)
           AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at <= $4)
         ORDER BY at DESC, id DESC LIMIT $5",
    )
    .bind(&filter.patient_id)
    .bind(&filter.user_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// Every row links to the one before and hashes to what it carries.
    Intact {
        /// How many rows.
        rows: i64,
        /// The last row's hash, hex: record it elsewhere, and a later
        /// `verify` that ends on another hash means rows were cut off or
        /// rewritten from some point on.
        head: String,
    },
    /// The first row that does not fit, and how.
    Broken {
        /// Its id.
        id: i64,
        /// What does not fit.
        reason: String,
    },
}

/// Walks the whole chain in id order, hashing each row's canonical form
/// (the database's `audit_log_canonical`) again here, so a row edited, or
/// removed, with the triggers disabled is found.
pub async fn verify(pool: &PgPool) -> Result<Chain, sqlx::Error> {
    use futures::TryStreamExt;
    use sha2::{Digest, Sha256};

    let mut rows = sqlx::query_as::<_, (i64, Vec<u8>, Vec<u8>, String)>(
        "SELECT id, prev_hash, hash, audit_log_canonical(a) FROM audit_log a ORDER BY id",
    )
    .fetch(pool);
    let mut expected_id = 1;
    let mut previous: Vec<u8> = Vec::new();
    while let Some((id, prev_hash, hash, canonical)) = rows.try_next().await? {
        let broken = |reason: String| Ok(Chain::Broken { id, reason });
        if id != expected_id {
            return broken(format!(
                "expected row {expected_id} next: rows were removed"
            ));
        }
        if prev_hash != previous {
            return broken("does not link to the row before it".into());
        }
        let recomputed = Sha256::new()
            .chain_update(&prev_hash)
            .chain_update(canonical.as_bytes())
            .finalize();
        if recomputed[..] != hash[..] {
            return broken("its contents do not match its hash: it was changed".into());
        }
        previous = hash;
        expected_id += 1;
    }
    Ok(Chain::Intact {
        rows: expected_id - 1,
        head: hex::encode(previous),
    })
}

/// Whether a row carries `head` (hex) as its hash: a head recorded earlier
/// must still be in the chain.
pub async fn passes_through(pool: &PgPool, head: &str) -> Result<bool, sqlx::Error> {
    let Ok(hash) = hex::decode(head.trim()) else {
        return Ok(false);
    };
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM audit_log WHERE hash = $1)")
        .bind(hash)
        .fetch_one(pool)
        .await
}
