//! The HTTP API (SPEC "HTTP API"): one router per area, JWT on everything but
//! the probes, every authenticated request audited, JSON errors.

mod audit;
mod audit_trail;
mod auth;
mod dead_letters;
mod error;
mod health;
mod limits;
mod notifications;
mod object_urls;
mod params;
mod patients;
mod plugins;

pub use auth::{Claims, issue_token, verify_token};
pub use error::ApiError;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use sqlx::PgPool;

use crate::config::Config;
use crate::lifecycle::{Deployer, Registry};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::objects::ObjectStore;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// The host's configuration.
    pub config: Arc<Config>,
    /// Loaded plugins and their projections.
    pub registry: Arc<Registry>,
    /// Deploys, rolls back, pauses and resumes plugins.
    pub deployer: Arc<Deployer>,
    /// NATS, for readiness.
    pub nats: async_nats::Client,
    /// The event stream, for consumer lag.
    pub stream: async_nats::jetstream::stream::Stream,
    /// The notification devices connected, for metrics.
    pub notifier: Notifier,
    /// What `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// Object storage, for presigned URLs and readiness.
    pub objects: ObjectStore,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let authenticated = Router::new()
        .merge(patients::router())
        .merge(plugins::router())
        .merge(dead_letters::router())
        .merge(notifications::router())
        .merge(audit_trail::router())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            audit::audit_request,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .merge(health::router())
        .merge(authenticated)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::limit_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            health::time_request,
        ))
        .with_state(state)
}
