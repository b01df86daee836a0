//! The caller's own notifications, for a client that polls or catches up
//! without a socket.

use axum::extract::{Extension, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, AppState, params};
use crate::auth::{Claims, Recipient};
use crate::store::notifications::{self, StoredNotification};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/notifications", get(list))
}

/// `after`: the last seq the client has (0 when absent); `limit`.
#[derive(Deserialize)]
struct Filter {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/notifications?after=SEQ`: the caller's notifications after
/// `SEQ`, oldest first, with their acknowledgement state.
async fn list(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Query(filter): Query<Filter>,
) -> Result<Json<Vec<StoredNotification>>, ApiError> {
    let after = match filter.after.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request("after must be a seq, 0 or more"))?,
    };
    let limit = params::limit(filter.limit.as_deref())?;
    Ok(Json(
        notifications::since(
            &state.shared.api_pool,
            &Recipient::User(claims.sub),
            after,
            limit,
        )
        .await?,
    ))
}
