//! The API's rate limits: each user's requests, and each client address's
//! refused ones (see [`crate::rate`]). Over either, 429 with `Retry-After`,
//! counted and not audited.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::auth::Claims;

/// Middleware inside [`super::auth::authenticate`]: the caller's request
/// counts against their rate, before anything else is done for it.
pub async fn limit_user(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(claims) = request.extensions().get::<Claims>() {
        state
            .shared
            .limits
            .user(&claims.sub)
            .map_err(ApiError::rate_limited)?;
    }
    Ok(next.run(request).await)
}

/// Middleware around [`super::auth::authenticate`]: a refusal (401) counts
/// against its address's rate; over it, the refusal is a 429 instead.
/// Valid callers from the same address (a hospital's NAT) are not held.
pub async fn limit_refusals(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(address) = address
        && let Err(limited) = state.shared.limits.refusal(address)
    {
        return ApiError::rate_limited(limited).into_response();
    }
    response
}
