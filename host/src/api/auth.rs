//! The API's side of authentication: a valid bearer token on every route
//! but the probes, the admin role on the admin routes, and chart access.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};
use crate::auth::{Claims, InvalidToken};

impl From<InvalidToken> for ApiError {
    fn from(e: InvalidToken) -> Self {
        ApiError::unauthorized(e.to_string())
    }
}

/// Middleware: a valid bearer token, or 401. Puts the claims in the request,
/// and in the response for the audit log around it.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
    let claims = state.shared.tokens.verify(token.trim()).await?;
    request.extensions_mut().insert(claims.clone());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(claims);
    Ok(response)
}

/// Middleware of the admin routes: the claims [`authenticate`] put in the
/// request must carry the admin role, or 403.
pub async fn require_admin(request: Request, next: Next) -> Result<Response, ApiError> {
    match request.extensions().get::<Claims>() {
        Some(claims) if claims.is_admin() => Ok(next.run(request).await),
        _ => Err(ApiError::forbidden("this endpoint needs the admin role")),
    }
}

/// Refuses a caller who may not read this patient's chart.
pub fn check_chart_access(
    claims: &Claims,
    patient_id: &str,
    clinical_roles: &[String],
) -> Result<(), ApiError> {
    if claims.may_read_chart(patient_id, clinical_roles) {
        Ok(())
    } else if claims.role == "patient" {
        Err(ApiError::forbidden(
            "a patient may read only their own chart",
        ))
    } else {
        Err(ApiError::forbidden(format!(
            "the role `{}` may not read charts",
            claims.role
        )))
    }
}
