//! Liveness and readiness probes and Prometheus metrics (no token: they
//! carry no patient data).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::ingest;
use crate::metrics::Scrape;
use crate::store::{self, notifications};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Prometheus text: the counters and histograms, and the lag, sockets
/// and pending acknowledgements as they are now.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    let (mut lags, mut partition_lags) = (Vec::new(), Vec::new());
    let shared = &state.shared;
    for projection in state.registry.projections() {
        let plugin = projection.plugin();
        let (name, subjects) = (plugin.name(), &plugin.info.subjects);
        let behind = ingest::partitions_behind(
            &shared.api_pool,
            &shared.stream,
            &shared.config,
            name,
            subjects,
        );
        if let Ok(behind) = behind.await {
            lags.push((name.to_owned(), ingest::slowest(&behind)));
            partition_lags.push((name.to_owned(), behind));
        }
    }
    let (pending_ack, overdue_ack) = notifications::awaiting_acknowledgement(
        &state.shared.api_pool,
        state.shared.config.escalate_after,
    )
    .await
    .unwrap_or((-1, -1));
    let text = state.shared.metrics.render(&Scrape {
        lags,
        partition_lags,
        sockets: state.notifier.hub().connections(),
        pending_ack,
        overdue_ack,
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Middleware: records every request's latency by route pattern.
pub async fn time_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // A client may send any method string: only the standard ones get a
    // label of their own, or every made-up one would be a new series.
    let method = match *request.method() {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::HEAD
        | Method::OPTIONS => request.method().as_str().to_owned(),
        _ => "OTHER".to_owned(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.shared.metrics.request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// What `/healthz` and `/readyz` answer.
#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok` (alive), `ready`, `degraded` or `unavailable`.
    status: &'static str,
    /// What answered, for readiness.
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Checks>,
    /// How many plugins run, for readiness.
    #[serde(skip_serializing_if = "Option::is_none")]
    plugins: Option<usize>,
}

/// The dependencies readiness checks.
#[derive(Serialize, ToSchema)]
struct Checks {
    postgres: bool,
    nats: bool,
    s3: bool,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health", security(()),
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        checks: None,
        plugins: None,
    })
}

/// Ready when NATS and PostgreSQL answer; 503 with what is down otherwise.
/// Object storage down degrades (images and reports cannot be fetched) but
/// projection goes on, so the host stays ready and says so.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "Ready, or degraded (object storage down)", body = Health),
        (status = 503, description = "PostgreSQL or NATS is down", body = Health)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    // Whether the database answers the host, not whether clients have
    // left a connection of their pool free.
    let (postgres, s3) = tokio::join!(
        store::ping(&state.shared.pool),
        state.shared.objects.ready()
    );
    let nats = state.shared.nats.connection_state() == async_nats::connection::State::Connected;
    let plugins = state.registry.names().len();
    let ready = postgres && nats;
    let (status, word) = match (ready, s3) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, false) => (StatusCode::OK, "degraded"),
        (true, true) => (StatusCode::OK, "ready"),
    };
    (
        status,
        Json(Health {
            status: word,
            checks: Some(Checks { postgres, nats, s3 }),
            plugins: Some(plugins),
        }),
    )
}
