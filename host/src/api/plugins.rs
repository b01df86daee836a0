//! The running plugins with their progress, and their lifecycle: deploy a
//! version, roll back, pause, resume (role `admin`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, AppState, Claims};
use crate::ingest;
use crate::lifecycle::{DeployError, Deployed, RebuildStatus};
use crate::runtime::Plugin;
use crate::store::queries;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/plugins", get(list))
        .route("/api/plugins/{name}", put(deploy))
        .route("/api/plugins/{name}/rollback", post(rollback))
        .route("/api/plugins/{name}/rebuild", post(rebuild))
        .route("/api/plugins/{name}/pause", post(pause))
        .route("/api/plugins/{name}/resume", post(resume))
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Invalid(reason) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin", reason)
            }
            DeployError::Conflict(reason) => ApiError::conflict(reason),
            DeployError::Unknown(_) => ApiError::not_found(e.to_string()),
            DeployError::Database(e) => ApiError::from(e),
        }
    }
}

/// A version as the API shows it.
fn version(plugin: &Plugin) -> Value {
    json!({ "version": plugin.info.version, "hash": plugin.hash })
}

/// Name, version, hash, subjects, views, state, checkpoint, lag, counts,
/// log counts and the version kept for rollback.
async fn list(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
) -> Result<Json<Vec<Value>>, ApiError> {
    claims.require_admin()?;
    let checkpoints: HashMap<String, (i64, i64, i64)> = queries::checkpoints(&state.pool)
        .await?
        .into_iter()
        .map(|(plugin, seq, applied, dead)| (plugin, (seq, applied, dead)))
        .collect();
    let mut out = Vec::new();
    for projection in state.registry.projections() {
        let plugin = projection.plugin();
        let info = &plugin.info;
        let (checkpoint, applied, dead_lettered) =
            checkpoints.get(&info.name).copied().unwrap_or_default();
        let lag = ingest::lag(&state.stream, &info.name).await.ok();
        let (projection_state, error) = projection.describe();
        let (logs_written, logs_suppressed) = plugin.log_counts();
        out.push(json!({
            "name": info.name, "version": info.version, "hash": plugin.hash,
            "subjects": info.subjects, "views": info.views.iter().map(|v| &v.name).collect::<Vec<_>>(),
            "state": projection_state, "error": error, "checkpoint": checkpoint, "lag": lag,
            "applied": applied, "deadLettered": dead_lettered,
            "logs": { "written": logs_written, "suppressed": logs_suppressed },
            "previous": projection.previous().as_ref().map(version),
            "lastBatchAt": projection.last_batch(),
            "rebuild": match state.deployer.rebuild_status(&info.name) {
                Some(rebuild) => Some(rebuild_progress(&state, &rebuild).await),
                None => None,
            },
        }));
    }
    Ok(Json(out))
}

/// `PUT /api/plugins/:name` with the component's bytes: validated, then
/// started (a new plugin) or swapped in at the next batch; a bad upload is
/// refused with the reason and the running version stays. The bytes are
/// also written to the plugins folder, so a restart runs this version.
async fn deploy(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    claims.require_admin()?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the body must be the plugin's .wasm component",
        ));
    }
    let (plugin, deployed) = state.deployer.upload(&body, &name).await?;
    Ok(deployment(&name, &plugin, deployed))
}

/// What a deploy or rollback did: 202 while a rebuild is under way, since
/// the version runs only once it has switched in.
fn deployment(name: &str, plugin: &Plugin, deployed: Deployed) -> (StatusCode, Json<Value>) {
    let mut answer = version(plugin);
    answer["name"] = json!(name);
    answer["deployed"] = json!(deployed.as_str());
    let status = match deployed {
        Deployed::Rebuilding => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    (status, Json(answer))
}

/// A rebuild as the API shows it: the version, when it started, how far
/// it is behind the stream, and any error that holds it up.
async fn rebuild_progress(state: &AppState, rebuild: &RebuildStatus) -> Value {
    let key = crate::store::Target::rebuild(rebuild.version.name()).key;
    let (_, error) = rebuild.projection.describe();
    let mut progress = version(&rebuild.version);
    progress["startedAt"] = json!(rebuild.started_at);
    progress["lag"] = json!(ingest::lag(&state.stream, &key).await.ok());
    progress["lastBatchAt"] = json!(rebuild.projection.last_batch());
    progress["error"] = json!(error);
    progress
}

/// `POST /api/plugins/:name/rebuild`: rebuilds the views with the version
/// running, blue/green; 202 with the rebuild's progress.
async fn rebuild(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    claims.require_admin()?;
    let rebuild = state.deployer.rebuild(&name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(rebuild_progress(&state, &rebuild).await),
    ))
}

/// `POST /api/plugins/:name/rollback`: the previous version runs from the
/// next batch (or, when its views mean something else, after a rebuild).
async fn rollback(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    claims.require_admin()?;
    let (plugin, deployed) = state.deployer.rollback(&name).await?;
    Ok(deployment(&name, &plugin, deployed))
}

async fn pause(
    state: State<AppState>,
    claims: Extension<Claims>,
    name: Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(state, claims, name, true).await
}

async fn resume(
    state: State<AppState>,
    claims: Extension<Claims>,
    name: Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(state, claims, name, false).await
}

/// Pauses or resumes a plugin's projection from its next batch.
async fn set_paused(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(name): Path<String>,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    claims.require_admin()?;
    state.deployer.set_paused(&name, paused)?;
    Ok(Json(
        json!({ "name": name, "state": if paused { "paused" } else { "running" } }),
    ))
}
