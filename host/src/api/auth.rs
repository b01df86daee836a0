//! Bearer JWTs (HS256 with `JWT_SECRET`): claims `sub`, `name`, `role`, `exp`.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};

/// Who is calling.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// `admin`, a clinical role (`provider`, `nurse`, …) or `patient`.
    pub role: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

impl Claims {
    /// Whether this is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }

    /// Refuses anyone but an administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this endpoint needs the admin role"))
        }
    }

    /// Clinical roles and admins read any chart; a patient only their own.
    pub fn require_chart_access(&self, patient_id: &str) -> Result<(), ApiError> {
        match self.role.as_str() {
            "patient" if self.sub == patient_id => Ok(()),
            "patient" => Err(ApiError::forbidden(
                "a patient may read only their own chart",
            )),
            _ => Ok(()),
        }
    }
}

/// Signs a token (the CLI and tests use this).
pub fn issue_token(secret: &str, claims: &Claims) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Checks a token: signature, algorithm, expiry with no leeway.
pub fn verify_token(secret: &str, token: &str) -> Result<Claims, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))
}

/// Middleware: a valid bearer token, or 401. Puts the claims in the request.
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
    let claims = verify_token(&state.config.jwt_secret, token.trim())?;
    request.extensions_mut().insert(claims);
    Ok(next.run(request).await)
}
