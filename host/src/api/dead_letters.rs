//! Inspect and re-drive dead letters (role `admin`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, params};
use crate::store::dead_letters::{self, DeadLetter, Settled, Status};

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
    Query(filter): Query<Filter>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    let limit = params::limit(filter.limit.as_deref())?;
    let status = filter
        .status
        .as_deref()
        .map(str::parse::<Status>)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request("status must be dead, retrying, resolved or discarded")
        })?;
    let rows = dead_letters::list(
        &state.shared.api_pool,
        filter.plugin.as_deref(),
        status,
        limit,
    )
    .await?;
    Ok(Json(rows))
}

/// A dead letter an operator moved on.
#[derive(Serialize)]
struct SettledLetter {
    id: i64,
    status: Status,
    plugin: String,
}

/// Queues a dead letter for its plugin to apply again; 202 until it has.
/// Its patient's parked events follow once it is resolved.
async fn retry(
    state: State<AppState>,
    id: Path<String>,
) -> Result<(StatusCode, Json<SettledLetter>), ApiError> {
    settle(state, id, Status::Retrying).await
}

/// Gives up on a dead letter: it stays on record, and its patient's parked
/// events are released (202 until they are applied).
async fn discard(
    state: State<AppState>,
    id: Path<String>,
) -> Result<(StatusCode, Json<SettledLetter>), ApiError> {
    settle(state, id, Status::Discarded).await
}

async fn settle(
    State(state): State<AppState>,
    Path(id): Path<String>,
    to: Status,
) -> Result<(StatusCode, Json<SettledLetter>), ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("dead-letter id must be a number"))?;
    match dead_letters::settle(&state.shared.api_pool, id, to).await? {
        Settled::Now { plugin } => {
            state.registry.wake_redrive(&plugin);
            Ok((
                StatusCode::ACCEPTED,
                Json(SettledLetter {
                    id,
                    status: to,
                    plugin,
                }),
            ))
        }
        Settled::NotFound => Err(ApiError::not_found(format!("no dead letter {id}"))),
        Settled::NotDead(status) => Err(ApiError::conflict(format!(
            "dead letter {id} is {}, not dead",
            status.as_str()
        ))),
    }
}
