//! Request bodies larger than `MAX_BODY_BYTES` (`MAX_PLUGIN_BYTES` for a
//! plugin upload) are refused with a JSON 413 before any handler reads
//! them, and only after the token was checked: nobody unauthenticated gets
//! the host to read a body.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};

/// The route whose bodies are plugin components.
const PLUGIN_UPLOAD: &str = "/api/plugins/{name}";

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request bodies are limited to {max} bytes"),
    )
}

/// Middleware: refuses a body over the limit by its `Content-Length`, or
/// while reading one sent without it.
pub async fn limit_body(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = &state.shared.config;
    let upload = request.method() == Method::PUT
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| p.as_str() == PLUGIN_UPLOAD);
    let max = if upload {
        config.max_plugin_bytes
    } else {
        config.max_body_bytes
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large(max));
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, max)
        .await
        .map_err(|_| too_large(max))?;
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}
