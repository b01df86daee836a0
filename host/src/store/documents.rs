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

/// Charts whose patient id is above `after`, by patient id, at most
/// `limit`, where every term begins the given name, the family name, the
/// MRN or the patient id (case-insensitive): a clinician's patient search.
pub async fn search_charts(
    pool: &PgPool,
    view: &str,
    terms: &[String],
    after: &str,
    limit: i64,
) -> Result<Vec<(String, Value)>, sqlx::Error> {
    let patterns: Vec<String> = terms
        .iter()
        .map(|term| format!("{}%", like_escaped(term)))
        .collect();
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT key, doc FROM {} WHERE key > $1
           AND NOT EXISTS (
             SELECT 1 FROM unnest($2::text[]) AS t(pattern)
             WHERE NOT (coalesce(doc->'name'->>'given', '') ILIKE t.pattern
                     OR coalesce(doc->'name'->>'family', '') ILIKE t.pattern
                     OR coalesce(doc->>'mrn', '') ILIKE t.pattern
                     OR key ILIKE t.pattern))
         ORDER BY key LIMIT $3",
        table_name(view)
    )))
    .bind(after)
    .bind(patterns)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// `text` matched literally by `LIKE`: its `%`, `_` and backslashes
/// escaped.
fn like_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
