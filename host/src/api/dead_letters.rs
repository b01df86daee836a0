//! Inspect and re-drive dead letters (role `admin`).

use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState, params};
use crate::error::{CommonErrors, ErrorBody};
use crate::store::dead_letters::{self, DeadLetter, Settled, Status};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dead-letters", get(list))
        .route("/api/dead-letters/{id}/retry", post(retry))
        .route("/api/dead-letters/{id}/discard", post(discard))
}

/// Filters of the listing; all optional.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Filter {
    /// Only this plugin's.
    plugin: Option<String>,
    /// Only those that stand here.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// At most this many, 1 to 1000 (100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// `GET /api/dead-letters`: the dead letters, newest first.
#[utoipa::path(get, path = "/api/dead-letters", operation_id = "listDeadLetters", tag = "dead letters", params(Filter),
    responses((status = 200, description = "Dead letters", body = [DeadLetter]), CommonErrors))]
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
#[derive(Serialize, ToSchema)]
struct SettledLetter {
    id: i64,
    status: Status,
    plugin: String,
}

/// Queues a dead letter for its plugin to apply again; 202 until it has.
/// Its patient's parked events follow once it is resolved.
#[utoipa::path(post, path = "/api/dead-letters/{id}/retry", operation_id = "retryDeadLetter", tag = "dead letters",
    params(("id" = i64, Path, description = "The dead letter's id", example = 1)),
    responses(
        (status = 202, description = "Queued to be applied again", body = SettledLetter),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 409, description = "The dead letter is not dead", body = ErrorBody),
        CommonErrors))]
async fn retry(
    state: State<AppState>,
    id: Path<String>,
) -> Result<(StatusCode, Json<SettledLetter>), ApiError> {
    settle(state, id, Status::Retrying).await
}

/// Gives up on a dead letter: it stays on record, and its patient's parked
/// events are released (202 until they are applied).
#[utoipa::path(post, path = "/api/dead-letters/{id}/discard", operation_id = "discardDeadLetter", tag = "dead letters",
    params(("id" = i64, Path, description = "The dead letter's id", example = 1)),
    responses(
        (status = 202, description = "Discarded; its patient's parked events are released", body = SettledLetter),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 409, description = "The dead letter is not dead", body = ErrorBody),
        CommonErrors))]
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
