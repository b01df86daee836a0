//! Inspect and re-drive dead letters (role `admin`).

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Claims, params};
use crate::store::queries;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dead-letters", get(list))
        .route("/api/dead-letters/{id}/retry", post(retry))
}

/// Filters of the listing; all optional.
#[derive(Deserialize)]
struct Filter {
    plugin: Option<String>,
    status: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Query(filter): Query<Filter>,
) -> Result<Json<Vec<Value>>, ApiError> {
    claims.require_admin()?;
    let limit = params::limit(filter.limit.as_deref())?;
    if let Some(status) = filter.status.as_deref()
        && !["dead", "retrying", "resolved"].contains(&status)
    {
        return Err(ApiError::bad_request(
            "status must be dead, retrying or resolved",
        ));
    }
    let rows = queries::dead_letters(
        &state.pool,
        filter.plugin.as_deref(),
        filter.status.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(rows))
}

/// Queues a dead letter for its plugin to apply again; 202 until it has.
async fn retry(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    claims.require_admin()?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("dead-letter id must be a number"))?;
    match queries::request_retry(&state.pool, id).await? {
        Ok(plugin) => {
            state.registry.wake_redrive(&plugin);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "id": id, "status": "retrying", "plugin": plugin })),
            ))
        }
        Err(None) => Err(ApiError::not_found(format!("no dead letter {id}"))),
        Err(Some(status)) => Err(ApiError::conflict(format!(
            "dead letter {id} is {status}, not dead"
        ))),
    }
}
