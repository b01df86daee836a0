//! Read-model tables: one per declared view, owned by exactly one plugin.

use projector_contract::PluginInfo;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use super::Target;

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
/// and indexes in `target`'s schema if missing.
pub async fn ensure_views(
    pool: &PgPool,
    target: &Target,
    plugin: &PluginInfo,
) -> Result<(), ViewError> {
    let mut tx = pool.begin().await?;
    if let Some(schema) = target.schema() {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&mut *tx)
        .await?;
    }
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
        let table = target.table(&view.name);
        let bare = table_name(&view.name);
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
                "CREATE INDEX IF NOT EXISTS {bare}_{field} ON {table} ((doc->>'{field}'))"
            )))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// What a plugin's live views were built from: its subjects and declared
/// views. A version with another definition must rebuild them first.
pub fn definition(plugin: &PluginInfo) -> Value {
    let views: Vec<Value> = plugin
        .views
        .iter()
        .map(|v| json!({ "name": v.name, "key": v.key, "indexes": v.indexes }))
        .collect();
    json!({ "subjects": plugin.subjects, "views": views })
}

/// What a plugin's live views were last built from, and the generation of
/// processed events they go with.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Subjects and declared views, as [`definition`] gives them.
    pub definition: Value,
    /// The subjects in it.
    pub subjects: Vec<String>,
    /// The names of the views in it.
    pub views: Vec<String>,
    /// The processed events' generation.
    pub generation: i32,
}

impl Recorded {
    fn new(definition: Value, generation: i32) -> Self {
        let parts = Parts::deserialize(&definition).unwrap_or_default();
        Self {
            subjects: parts.subjects,
            views: parts.views.into_iter().map(|v| v.name).collect(),
            definition,
            generation,
        }
    }

    /// Whether the views were built from `plugin`'s definition: a version
    /// that differs must not write them or read the stream for them until
    /// they are rebuilt for it.
    pub fn built_for(&self, plugin: &PluginInfo) -> bool {
        self.definition == definition(plugin)
    }
}

/// The parts of a recorded definition the host reads back.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Parts {
    subjects: Vec<String>,
    views: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

/// What a plugin's live views were built from, if recorded.
pub async fn recorded(pool: &PgPool, plugin: &str) -> Result<Option<Recorded>, sqlx::Error> {
    let row: Option<(Value, i32)> =
        sqlx::query_as("SELECT definition, generation FROM plugin_definitions WHERE plugin = $1")
            .bind(plugin)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(definition, generation)| Recorded::new(definition, generation)))
}

/// The generation of a plugin's live views, read in a commit's transaction
/// and share-locked until it ends: a switch that rebuilt the views (and so
/// moved the generation) waits for the commit, and a commit after the switch
/// sees the new generation. `None`: nothing recorded yet.
pub async fn live_generation(
    tx: &mut Transaction<'_, Postgres>,
    plugin: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar("SELECT generation FROM plugin_definitions WHERE plugin = $1 FOR SHARE")
        .bind(plugin)
        .fetch_optional(&mut **tx)
        .await
}

/// Records what a plugin's live views are built from, with the generation
/// of processed events they go with.
pub async fn record_definition(
    tx: &mut Transaction<'_, Postgres>,
    plugin: &PluginInfo,
    generation: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO plugin_definitions (plugin, definition, generation) VALUES ($1, $2, $3)
         ON CONFLICT (plugin) DO UPDATE SET
            definition = EXCLUDED.definition, generation = EXCLUDED.generation, updated_at = now()",
    )
    .bind(&plugin.name)
    .bind(definition(plugin))
    .bind(generation)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use projector_contract::ViewDef;

    #[test]
    fn a_recorded_definition_gives_back_its_subjects_and_views() {
        let info = PluginInfo::new(
            "p",
            "1",
            &["lab.>", "encounter.started"],
            vec![
                ViewDef::new("a", "patientId", &[]),
                ViewDef::new("b", "eventId", &["x"]),
            ],
        );
        let recorded = Recorded::new(definition(&info), 3);
        assert_eq!(recorded.subjects, ["lab.>", "encounter.started"]);
        assert_eq!(recorded.views, ["a", "b"]);
        assert_eq!(recorded.generation, 3);
    }
}
