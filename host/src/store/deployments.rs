//! The `deployments` table: every version that started running on a host
//! of the deployment, by whom and from where. The fleet takes only the
//! newest recorded version of a plugin: what crosses NATS is a hint to look
//! here, never an order.

use sqlx::PgPool;

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
}

impl Source {
    /// As the table spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upload => "upload",
            Source::Folder => "folder",
            Source::Rollback => "rollback",
            Source::Rebuild => "rebuild",
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

/// Records a deployment.
pub async fn record(pool: &PgPool, deployment: &Deployment<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deployments (plugin, hash, version, source, deployed_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(deployment.plugin)
    .bind(deployment.hash)
    .bind(deployment.version)
    .bind(deployment.source.as_str())
    .bind(deployment.by)
    .execute(pool)
    .await
    .map(drop)
}

/// The hash of the newest recorded version of a plugin.
pub async fn latest(pool: &PgPool, plugin: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT hash FROM deployments WHERE plugin = $1 ORDER BY id DESC LIMIT 1")
        .bind(plugin)
        .fetch_optional(pool)
        .await
}
