//! Every request to the API goes to the audit log (HIPAA 164.312(b)): who,
//! what, which resource, from where, when, and how it ended; a refusal with
//! its reason, an unauthenticated one under [`ANONYMOUS`]. Requests refused
//! for their rate (429) are counted in metrics instead.

use std::net::SocketAddr;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::auth::Claims;
use crate::error::{ErrorMessage, RateLimited};
use crate::store::audit::{self, ANONYMOUS, NewAudit};

/// What a handler adds to its request's audit entry (a search's terms
/// and how many it found), as a response extension.
#[derive(Debug, Clone)]
pub struct AuditDetail(pub String);

/// The kind of resource a route serves, for the audit log.
fn resource_type(route: &str) -> &'static str {
    if route.starts_with("/api/aggregate/patients") {
        "Patient"
    } else if route.starts_with("/api/plugins") {
        "Plugin"
    } else if route.starts_with("/api/dead-letters") {
        "DeadLetter"
    } else if route.starts_with("/api/audit") {
        "AuditLog"
    } else if route.starts_with("/api/notifications") {
        "Notification"
    } else {
        "Api"
    }
}

/// Middleware: records the request after it is handled. If the record cannot
/// be written, the response is withheld (503): no unaudited reads.
pub async fn audit_request(
    State(state): State<AppState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let action = format!("{} {}", request.method(), route);
    // A path that cannot be decoded (invalid UTF-8) is refused here, as JSON.
    let (resource_id, patient_id, response) = match params {
        Ok(params) => (
            params
                .iter()
                .last()
                .map(|(_, v)| v.to_owned())
                .unwrap_or_default(),
            params
                .iter()
                .find(|(k, _)| *k == "patientId")
                .map(|(_, v)| v.to_owned()),
            next.run(request).await,
        ),
        Err(e) => (
            String::new(),
            None,
            ApiError::bad_request(format!("invalid path: {}", e.body_text())).into_response(),
        ),
    };
    // Over a rate, the refusal is counted instead: recording each would
    // let whoever is over it write as fast as they send.
    if response.extensions().get::<RateLimited>().is_some() {
        return response;
    }
    // `authenticate` leaves the caller in the response; a refusal, its
    // reason.
    let user = response
        .extensions()
        .get::<Claims>()
        .map_or(ANONYMOUS, |claims| claims.sub.as_str());
    let entry = NewAudit {
        patient_id,
        ip_address: ip,
        status: Some(i32::from(response.status().as_u16())),
        detail: response
            .extensions()
            .get::<ErrorMessage>()
            .map(|message| message.0.clone())
            .or_else(|| {
                response
                    .extensions()
                    .get::<AuditDetail>()
                    .map(|detail| detail.0.clone())
            }),
        ..NewAudit::now(user, action, resource_type(&route), resource_id)
    };
    let written = audit::insert(&state.shared.api_pool, &[entry]).await;
    match written {
        Ok(_) => response,
        Err(e) => {
            tracing::error!(error = %e, "audit log write failed; withholding response");
            ApiError::from(e).into_response()
        }
    }
}
