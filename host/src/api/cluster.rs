//! `GET /api/cluster` (admin): the hosts of the deployment, and for each
//! plugin which host owns each partition (from the claims' locks), how far
//! each partition has come and how far behind it is.

use std::collections::BTreeMap;

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
use crate::store::claim::{self, PIN};
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
    /// How many partitions each plugin's patients are spread over.
    partitions: u32,
    /// Every plugin this host runs, with who owns its partitions.
    plugins: Vec<Projecting>,
}

/// A plugin and who projects it: one host owns each of its partitions at a
/// time.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Projecting {
    name: String,
    /// Each host owning some of its partitions, with how many.
    owners: Vec<Owner>,
    /// The host a rebuild of the plugin runs on: every partition goes
    /// there until it switches.
    pinned_to: Option<Uuid>,
    /// Every stream event up to here has been handled, in every partition.
    checkpoint: i64,
    /// Stream positions its slowest partition is behind the newest event
    /// it reads (none if the stream could not say).
    lag: Option<u64>,
    /// Each partition: its owner, checkpoint and lag.
    partitions: Vec<Partition>,
}

/// A host owning some of a plugin's partitions.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Owner {
    member: Uuid,
    partitions: usize,
}

/// One partition of a plugin.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Partition {
    partition: u32,
    /// The host holding its claim; none between one host and the next.
    owner: Option<Uuid>,
    /// Every stream event of it up to here has been handled.
    checkpoint: u64,
    /// Stream positions it is behind the newest event the plugin reads.
    lag: Option<u64>,
}

/// `GET /api/cluster`.
#[utoipa::path(get, path = "/api/cluster", operation_id = "getCluster", tag = "cluster",
    responses((status = 200, description = "The hosts and who owns each plugin's partitions", body = Cluster), CommonErrors))]
async fn cluster(State(state): State<AppState>) -> Result<Json<Cluster>, ApiError> {
    let shared = &state.shared;
    let pool = &shared.api_pool;
    let members = members::list(pool, shared.config.lease_ttl).await?;
    let names = state.registry.names();
    let mut holders = claim::holders(pool, &names).await?;
    let totals = checkpoints::all(pool).await?;
    let mut plugins = Vec::new();
    for projection in state.registry.projections() {
        let plugin = projection.plugin();
        let name = plugin.name();
        let held = holders.remove(name).unwrap_or_default();
        let committed = checkpoints::by_partition(pool, name).await?;
        // Without an answer from JetStream the lag is unknown, not 0.
        let head = ingest::head(
            &shared.stream,
            &shared.config.subject_prefix,
            &plugin.info.subjects,
        )
        .await
        .ok();
        let partitions: Vec<Partition> = (0..shared.config.partitions)
            .map(|p| {
                let checkpoint = committed.get(&p).copied().unwrap_or(0);
                Partition {
                    partition: p,
                    owner: held.get(&(p as i32)).copied(),
                    checkpoint,
                    lag: head.map(|head| head.saturating_sub(checkpoint)),
                }
            })
            .collect();
        let mut owners: BTreeMap<Uuid, usize> = BTreeMap::new();
        for owner in partitions.iter().filter_map(|p| p.owner) {
            *owners.entry(owner).or_default() += 1;
        }
        plugins.push(Projecting {
            name: name.to_owned(),
            owners: owners
                .into_iter()
                .map(|(member, partitions)| Owner { member, partitions })
                .collect(),
            pinned_to: held.get(&PIN).copied(),
            checkpoint: totals.get(name).map_or(0, |c| c.seq),
            lag: partitions.iter().filter_map(|p| p.lag).max(),
            partitions,
        });
    }
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(Cluster {
        members,
        partitions: shared.config.partitions,
        plugins,
    }))
}
