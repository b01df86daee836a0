//! The HTTP API (SPEC "HTTP API"): one router per area, JWT on everything but
//! the probes, each user's rate limited, every request within the rates
//! audited (refusals with their reason), JSON errors.

mod audit;
mod audit_trail;
mod auth;
mod cluster;
mod dead_letters;
mod extract;
mod health;
mod limits;
mod notifications;
mod object_urls;
mod openapi;
mod params;
mod patients;
mod plugins;
mod rate;

use crate::error;
pub use crate::error::ApiError;
pub use openapi::ApiDoc;

use std::sync::Arc;

use axum::Router;
use axum::middleware;

use crate::lifecycle::{Deployer, Registry};
use crate::push::Notifier;
use crate::shared::Shared;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The host's configuration, database, NATS, stream, metrics and
    /// object storage.
    pub shared: Shared,
    /// Loaded plugins and their projections.
    pub registry: Arc<Registry>,
    /// Deploys, rolls back, pauses and resumes plugins.
    pub deployer: Arc<Deployer>,
    /// The notification devices connected, for metrics.
    pub notifier: Notifier,
}

/// The whole API, and the console, whose notifications connect to
/// `socket_port`.
pub fn router(state: AppState, socket_port: u16) -> Router {
    let admin = Router::new()
        .merge(plugins::router())
        .merge(dead_letters::router())
        .merge(audit_trail::router())
        .merge(cluster::router())
        .route_layer(middleware::from_fn(auth::require_admin));
    let authenticated = Router::new()
        .merge(patients::router())
        .merge(notifications::router())
        .merge(admin)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::limit_body,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            rate::limit_user,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            rate::limit_refusals,
        ))
        // Outermost, so refusals are recorded too.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            audit::audit_request,
        ));
    let api = Router::new()
        .merge(health::router())
        .merge(openapi::router())
        .merge(crate::console::router(socket_port))
        .merge(authenticated)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            health::time_request,
        ));
    state
        .shared
        .config
        .cors_origins
        .guard(api)
        .with_state(state)
}
