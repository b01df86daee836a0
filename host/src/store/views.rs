//! Read-model tables: one per declared view, owned by exactly one plugin.

use projector_sdk::PluginInfo;
use sqlx::{AssertSqlSafe, PgPool};

/// Why a plugin's views cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Another plugin already writes a view of that name.
    #[error("view `{view}` belongs to plugin `{owner}`")]
    Owned {
        /// The view.
        view: String,
        /// Its writer.
        owner: String,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The table of a view. Every dynamic SQL statement (`AssertSqlSafe`) builds
/// only on view names and index fields, which were checked to be plain
/// identifiers when their plugin was loaded (`runtime::convert::check_info`);
/// the overlay refuses views its plugin did not declare.
pub fn table_name(view: &str) -> String {
    format!("view_{view}")
}

/// Registers the plugin as the writer of its views and creates their tables
/// and indexes if missing.
pub async fn ensure_views(pool: &PgPool, plugin: &PluginInfo) -> Result<(), ViewError> {
    let mut tx = pool.begin().await?;
    for view in &plugin.views {
        sqlx::query(
            "INSERT INTO views (name, plugin) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&view.name)
        .bind(&plugin.name)
        .execute(&mut *tx)
        .await?;
        let owner: String = sqlx::query_scalar("SELECT plugin FROM views WHERE name = $1")
            .bind(&view.name)
            .fetch_one(&mut *tx)
            .await?;
        if owner != plugin.name {
            return Err(ViewError::Owned {
                view: view.name.clone(),
                owner,
            });
        }
        let table = table_name(&view.name);
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                key text PRIMARY KEY,
                doc jsonb NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now())"
        )))
        .execute(&mut *tx)
        .await?;
        for field in &view.indexes {
            sqlx::query(AssertSqlSafe(format!(
                "CREATE INDEX IF NOT EXISTS {table}_{field} ON {table} ((doc->>'{field}'))"
            )))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
