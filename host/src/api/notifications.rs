//! The caller's own notifications, and their role's, for a client that
//! polls or catches up without a socket.

use axum::extract::{Extension, State};

use super::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, AppState, params};
use crate::auth::{Claims, Recipient};
use crate::error::CommonErrors;
use crate::store::notifications::{self, StoredNotification};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/notifications", get(list))
}

/// `after`: the last seq of the caller's own the client has; `roleAfter`:
/// the last seq of their role's (escalations); both 0 when absent.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct Filter {
    /// The last seq of the caller's own the client has (0).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// The last seq of the caller's role's the client has (0).
    #[param(value_type = Option<i64>, minimum = 0)]
    role_after: Option<String>,
    /// At most this many, 1 to 1000 (100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// `GET /api/notifications?after=SEQ&roleAfter=SEQ`: the caller's
/// notifications after `after` and their role's after `roleAfter`, in the
/// order they were stored, with their acknowledgement state. Each says
/// whose it is (`userId`: the user's id, or `role:<role>`), so the client
/// moves each cursor on to the last seq it got of that recipient.
#[utoipa::path(get, path = "/api/notifications", operation_id = "listNotifications", tag = "notifications", params(Filter),
    responses((status = 200, description = "Notifications in the order they were stored", body = [StoredNotification]), CommonErrors))]
async fn list(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Query(filter): Query<Filter>,
) -> Result<Json<Vec<StoredNotification>>, ApiError> {
    let after = params::seq("after", filter.after.as_deref())?;
    let role_after = params::seq("roleAfter", filter.role_after.as_deref())?;
    let limit = params::limit(filter.limit.as_deref())?;
    let pool = &state.shared.api_pool;
    let mut lists = Vec::new();
    for (recipient, after) in [
        (Recipient::User(claims.sub.clone()), after),
        (Recipient::Role(claims.role.clone()), role_after),
    ] {
        lists.push(notifications::since(pool, &recipient, after, limit).await?);
    }
    let mut listed = notifications::merged(lists);
    listed.truncate(limit as usize);
    Ok(Json(listed))
}
