//! `GET /api/openapi.json`: the API's OpenAPI 3.1 document, generated from
//! the handlers' annotations and the types they answer with, so that
//! clients can be generated from it and the API tested against it.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    AppState, audit_trail, cluster, dead_letters, health, notifications, patients, plugins,
};

/// The document's one route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(document))
}

/// The document, without a token: it holds no data.
async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Every endpoint; all but the probes take a bearer token.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Projector",
        description = "Patient charts, notifications and the plugins that project them. \
            Errors are JSON `{\"error\": ..., \"code\": ...}`.",
    ),
    paths(
        patients::search,
        patients::chart,
        patients::list_alerts,
        patients::records,
        notifications::list,
        plugins::list,
        plugins::deploy,
        plugins::rollback,
        plugins::rebuild,
        plugins::pause,
        plugins::resume,
        dead_letters::list,
        dead_letters::retry,
        dead_letters::discard,
        audit_trail::list,
        cluster::cluster,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerToken),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// The `bearer` scheme: a JWT in `Authorization: Bearer`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console's API types are generated from `console/openapi.json`
    /// (`npm run generate-api`), which must be this document.
    #[test]
    fn the_consoles_copy_of_the_document_is_current() {
        const SHIPPED: &str = include_str!("../../../console/openapi.json");
        let current = ApiDoc::openapi().to_pretty_json().unwrap();
        assert!(
            SHIPPED.trim_end() == current,
            "console/openapi.json is stale: run `cargo run -p projector -- openapi > console/openapi.json` and `npm run generate-api` in console"
        );
    }
}
