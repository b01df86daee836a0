//! Reading the documents of the views plugins declare. View names here are
//! the API's constants or a plugin's declared views, never request input.

use serde_json::Value;
use sqlx::{AssertSqlSafe, PgExecutor, PgPool};

use super::views::table_name;

/// One document of a view.
pub async fn get<'e>(
    executor: impl PgExecutor<'e>,
    view: &str,
    key: &str,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT doc FROM {} WHERE key = $1",
        table_name(view)
    )))
    .bind(key)
    .fetch_optional(executor)
    .await
}

/// A patient's documents in a view (by its `patientId` index), newest first.
pub async fn by_patient(
    pool: &PgPool,
    view: &str,
    patient_id: &str,
    order_field: &str,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT doc FROM {} WHERE doc->>'patientId' = $1 ORDER BY doc->>$2 DESC NULLS LAST, key",
        table_name(view)
    )))
    .bind(patient_id)
    .bind(order_field)
    .fetch_all(pool)
    .await
}

/// Every document of a view with its key, by key (a replay's report).
pub async fn all(pool: &PgPool, view: &str) -> Result<Vec<(String, Value)>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT key, doc FROM {} ORDER BY key",
        table_name(view)
    )))
    .fetch_all(pool)
    .await
}
