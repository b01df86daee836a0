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
        .route("/api/dead-letters/{id}/discard", post(discard))
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
        && !["dead", "retrying", "resolved", "discarded"].contains(&status)
    {
        return Err(ApiError::bad_request(
            "status must be dead, retrying, resolved or discarded",
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
/// Its patient's parked events follow once it is resolved.
async fn retry(
    state: State<AppState>,
    claims: Extension<Claims>,
    id: Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    settle(state, claims, id, "retrying").await
}

/// Gives up on a dead letter: it stays on record, and its patient's parked
/// events are released (202 until they are applied).
async fn discard(
    state: State<AppState>,
    claims: Extension<Claims>,
    id: Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    settle(state, claims, id, "discarded").await
}

async fn settle(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    to: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    claims.require_admin()?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("dead-letter id must be a number"))?;
    match queries::settle_dead_letter(&state.pool, id, to).await? {
        Ok(plugin) => {
            state.registry.wake_redrive(&plugin);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "id": id, "status": to, "plugin": plugin })),
            ))
        }
        Err(None) => Err(ApiError::not_found(format!("no dead letter {id}"))),
        Err(Some(status)) => Err(ApiError::conflict(format!(
            "dead letter {id} is {status}, not dead"
        ))),
    }
}
