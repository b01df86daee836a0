//! The clinician console (console/, built by build.rs and embedded in the
//! binary): its page at `/`, its assets, and the one setting it needs, the
//! socket port. None of it holds data, so none of it takes a token; the
//! console calls the API with the user's.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rust_embed::Embed;
use serde::Serialize;

use crate::error::ApiError;

/// The console's built files.
#[derive(Embed)]
#[folder = "$PROJECTOR_CONSOLE_DIR"]
struct Files;

/// What the console reads at start.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    /// The port of Socket.IO and `/ws` (`WS_ADDR`), on the page's host name.
    socket_port: u16,
}

/// The console's routes; `socket_port` is where its notifications connect.
pub fn router<S: Clone + Send + Sync + 'static>(socket_port: u16) -> Router<S> {
    let settings = Settings { socket_port };
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route(
            "/assets/{*file}",
            get(|Path(name): Path<String>| async move { file(&format!("assets/{name}")) }),
        )
        .route(
            "/console/settings.json",
            get(move || async move { Json(settings) }),
        )
}

/// One built file with its content type; asset names carry a hash of
/// their content, so browsers may keep them.
fn file(name: &str) -> Response {
    let Some(found) = Files::get(name) else {
        return ApiError::not_found("no such file of the console").into_response();
    };
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let content_type = HeaderValue::from_str(found.metadata.mimetype())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        found.data,
    )
        .into_response()
}
