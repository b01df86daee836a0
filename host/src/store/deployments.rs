//! The `deployments` table: every version that started running on a host
//! of the deployment, by whom and from where. The fleet takes only the
//! newest recorded version of a plugin: what crosses NATS is a hint to look
//! here, never an order. Every deployment is audited in the transaction
//! that records it; a version taken from the fleet is audited on each host
//! that takes it.

use sqlx::PgPool;

use super::audit::{self, NewAudit};

/// How a version came to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Uploaded over the HTTP API by an admin.
    Upload,
    /// Dropped into the plugins folder while the host ran.
    Folder,
    /// Rolled back to over the HTTP API by an admin.
    Rollback,
    /// Switched in by a rebuild.
    Rebuild,
    /// Taken from another host of the fleet, which recorded it (audited
    /// here, never recorded again).
    Fleet,
}

impl Source {
    /// As the table spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upload => "upload",
            Source::Folder => "folder",
            Source::Rollback => "rollback",
            Source::Rebuild => "rebuild",
            Source::Fleet => "fleet",
        }
    }

    /// The audit log's action for a version that came to run this way.
    fn action(self) -> &'static str {
        match self {
            Source::Upload | Source::Folder | Source::Fleet => "plugin.deployed",
            Source::Rollback => "plugin.rolled_back",
            Source::Rebuild => "plugin.rebuilt",
        }
    }
}

/// A version that started running.
#[derive(Debug, Clone)]
pub struct Deployment<'a> {
    /// The plugin.
    pub plugin: &'a str,
    /// The SHA-256 of its bytes.
    pub hash: &'a str,
    /// Its declared version.
    pub version: &'a str,
    /// How it came to run.
    pub source: Source,
    /// Who deployed it (an admin's user id, or the host's for the folder and
    /// rebuilds).
    pub by: &'a str,
}

impl Deployment<'_> {
    /// Its entry in the audit log: what, by whom, from where.
    fn audit_entry(&self) -> NewAudit {
        NewAudit {
            detail: Some(format!(
                "source={} version={} sha256={}",
                self.source.as_str(),
                self.version,
                self.hash
            )),
            ..NewAudit::now(self.by, self.source.action(), "Plugin", self.plugin)
        }
    }
}

/// Records a deployment and audits it, in one transaction.
pub async fn record(pool: &PgPool, deployment: &Deployment<'_>) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO deployments (plugin, hash, version, source, deployed_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(deployment.plugin)
    .bind(deployment.hash)
    .bind(deployment.version)
    .bind(deployment.source.as_str())
    .bind(deployment.by)
    .execute(&mut *tx)
    .await?;
    audit::insert(&mut *tx, &[deployment.audit_entry()]).await?;
    tx.commit().await
}

/// Audits a version taken from the fleet (its own host recorded it).
pub async fn audit_taken(pool: &PgPool, deployment: &Deployment<'_>) -> Result<(), sqlx::Error> {
    audit::insert(pool, &[deployment.audit_entry()]).await
}

/// The newest recorded version of a plugin: its hash, and who deployed it.
pub async fn latest(pool: &PgPool, plugin: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT hash, deployed_by FROM deployments WHERE plugin = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(plugin)
    .fetch_optional(pool)
    .await
}
