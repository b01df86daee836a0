//! `GET /api/cluster` (admin): the hosts of the deployment, and which of
//! them projects each plugin, from the claims' locks.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::error::CommonErrors;
use crate::ingest;
use crate::store::checkpoints;
use crate::store::claim;
use crate::store::members::{self, Member};

/// The route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/cluster", get(cluster))
}

/// The deployment as it stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Cluster {
    /// Every host heard of in the last day, oldest first.
    members: Vec<Member>,
    /// Every plugin this host runs, with the host projecting it.
    plugins: Vec<Projecting>,
}

/// A plugin and who projects it. One host projects each plugin at a time
/// (until ownership is partitioned).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Projecting {
    name: String,
    /// The member holding its claim; none between one host and the next.
    owner: Option<Uuid>,
    /// Every stream event up to here has been handled.
    checkpoint: i64,
    /// Messages its consumer has not had acknowledged yet.
    lag: Option<u64>,
}

/// `GET /api/cluster`.
#[utoipa::path(get, path = "/api/cluster", operation_id = "getCluster", tag = "cluster",
    responses((status = 200, description = "The hosts and who projects each plugin", body = Cluster), CommonErrors))]
async fn cluster(State(state): State<AppState>) -> Result<Json<Cluster>, ApiError> {
    let pool = &state.shared.api_pool;
    let members = members::list(pool, state.shared.config.lease_ttl).await?;
    let names = state.registry.names();
    let checkpoints = checkpoints::all(pool).await?;
    let mut plugins = Vec::new();
    for (name, owner) in claim::holders(pool, &names).await? {
        let checkpoint = checkpoints.get(&name).map_or(0, |c| c.seq);
        let lag = ingest::lag(&state.shared.stream, &name).await.ok();
        plugins.push(Projecting {
            name,
            owner,
            checkpoint,
            lag,
        });
    }
    Ok(Json(Cluster { members, plugins }))
}
