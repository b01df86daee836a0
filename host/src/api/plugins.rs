//! The running plugins with their progress, and their lifecycle: deploy a
//! version, roll back, pause, resume (role `admin`).

use axum::body::Bytes;
use axum::extract::{Extension, State};

use super::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::auth::Claims;
use crate::error::{CommonErrors, ErrorBody};
use crate::ingest;
use crate::lifecycle::{DeployError, Deployed, RebuildStatus};
use crate::runtime::Plugin;
use crate::store::checkpoints;

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
#[derive(Serialize, ToSchema)]
struct Version {
    version: String,
    hash: String,
}

impl Version {
    fn of(plugin: &Plugin) -> Self {
        Self {
            version: plugin.info.version.clone(),
            hash: plugin.hash.clone(),
        }
    }
}

/// A running plugin: its version, what it reads and writes, and how its
/// projection fares.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PluginStatus {
    name: String,
    #[serde(flatten)]
    version: Version,
    subjects: Vec<String>,
    views: Vec<String>,
    /// `running`, `paused`, `standby` (other hosts project it; with
    /// `error` when this host's version is out of step with views another
    /// host rebuilt) or `retrying` (with `error`).
    state: &'static str,
    error: Option<String>,
    checkpoint: i64,
    lag: Option<u64>,
    applied: i64,
    dead_lettered: i64,
    logs: LogCounts,
    previous: Option<Version>,
    last_batch_at: Option<DateTime<Utc>>,
    rebuild: Option<RebuildProgress>,
}

/// How many log lines a plugin wrote, and how many were dropped over its rate.
#[derive(Serialize, ToSchema)]
struct LogCounts {
    written: u64,
    suppressed: u64,
}

/// Name, version, hash, subjects, views, state, checkpoint, lag, counts,
/// log counts and the version kept for rollback.
#[utoipa::path(get, path = "/api/plugins", operation_id = "listPlugins", tag = "plugins",
    responses((status = 200, description = "The running plugins", body = [PluginStatus]), CommonErrors))]
async fn list(State(state): State<AppState>) -> Result<Json<Vec<PluginStatus>>, ApiError> {
    let checkpoints = checkpoints::all(&state.shared.api_pool).await?;
    let mut out = Vec::new();
    for projection in state.registry.projections() {
        let plugin = projection.plugin();
        let info = &plugin.info;
        let checkpoint = checkpoints.get(&info.name).cloned().unwrap_or_default();
        let (projection_state, error) = projection.describe();
        let (written, suppressed) = plugin.log_counts();
        let rebuild = match state.deployer.rebuild_status(&info.name) {
            Some(rebuild) => Some(rebuild_progress(&state, &rebuild).await),
            None => None,
        };
        out.push(PluginStatus {
            name: info.name.clone(),
            version: Version::of(&plugin),
            subjects: info.subjects.clone(),
            views: info.views.iter().map(|v| v.name.clone()).collect(),
            state: projection_state,
            error,
            checkpoint: checkpoint.seq,
            lag: ingest::partitions_behind(
                &state.shared.api_pool,
                &state.shared.stream,
                &state.shared.config,
                &info.name,
                &info.subjects,
            )
            .await
            .ok()
            .map(|behind| ingest::slowest(&behind)),
            applied: checkpoint.applied,
            dead_lettered: checkpoint.dead_lettered,
            logs: LogCounts {
                written,
                suppressed,
            },
            previous: projection.version.previous().as_ref().map(Version::of),
            last_batch_at: projection.progress.last_batch(),
            rebuild,
        });
    }
    Ok(Json(out))
}

/// `PUT /api/plugins/:name` with the component's bytes: validated, then
/// started (a new plugin) or swapped in at the next batch; a bad upload is
/// refused with the reason and the running version stays. The bytes are
/// also written to the plugins folder, so a restart runs this version.
#[utoipa::path(put, path = "/api/plugins/{name}", operation_id = "deployPlugin", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name", example = "lab")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The plugin's .wasm component"),
    responses(
        (status = 200, description = "The version runs from the next batch", body = Deployment),
        (status = 202, description = "The version runs once its rebuild has switched in", body = Deployment),
        (status = 409, description = "Another deploy or rebuild is under way", body = ErrorBody),
        (status = 413, description = "Over the upload limit", body = ErrorBody),
        (status = 422, description = "Not a valid plugin; the running version stays", body = ErrorBody),
        CommonErrors))]
async fn deploy(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Deployment>), ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the body must be the plugin's .wasm component",
        ));
    }
    let (plugin, deployed) = state.deployer.upload(&body, &name, &claims.sub).await?;
    Ok(deployment(&name, &plugin, deployed))
}

/// What a deploy or rollback did.
#[derive(Serialize, ToSchema)]
struct Deployment {
    name: String,
    #[serde(flatten)]
    version: Version,
    /// `started`, `swapped`, `unchanged` or `rebuilding`.
    deployed: &'static str,
}

/// What a deploy or rollback did: 202 while a rebuild is under way, since
/// the version runs only once it has switched in.
fn deployment(name: &str, plugin: &Plugin, deployed: Deployed) -> (StatusCode, Json<Deployment>) {
    let status = match deployed {
        Deployed::Rebuilding => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    let answer = Deployment {
        name: name.to_owned(),
        version: Version::of(plugin),
        deployed: deployed.as_str(),
    };
    (status, Json(answer))
}

/// A rebuild as the API shows it: the version, when it started, how far
/// it is behind the stream, and any error that holds it up.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RebuildProgress {
    #[serde(flatten)]
    version: Version,
    started_at: DateTime<Utc>,
    lag: Option<u64>,
    last_batch_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

async fn rebuild_progress(state: &AppState, rebuild: &RebuildStatus) -> RebuildProgress {
    let key = crate::store::Target::rebuild(rebuild.version.name()).key;
    let (_, error) = rebuild.projection.describe();
    RebuildProgress {
        version: Version::of(&rebuild.version),
        started_at: rebuild.started_at,
        lag: ingest::lag(
            &state.shared.stream,
            &ingest::consumer_name(&key, state.shared.member),
        )
        .await
        .ok(),
        last_batch_at: rebuild.projection.progress.last_batch(),
        error,
    }
}

/// `POST /api/plugins/:name/rebuild`: rebuilds the views with the version
/// running, blue/green; 202 with the rebuild's progress.
#[utoipa::path(post, path = "/api/plugins/{name}/rebuild", operation_id = "rebuildPlugin", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name", example = "lab")),
    responses(
        (status = 202, description = "The rebuild is under way", body = RebuildProgress),
        (status = 404, description = "No such plugin", body = ErrorBody),
        (status = 409, description = "Another deploy or rebuild is under way", body = ErrorBody),
        CommonErrors))]
async fn rebuild(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RebuildProgress>), ApiError> {
    let rebuild = state.deployer.rebuild(&name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(rebuild_progress(&state, &rebuild).await),
    ))
}

/// `POST /api/plugins/:name/rollback`: the previous version runs from the
/// next batch (or, when its views mean something else, after a rebuild).
#[utoipa::path(post, path = "/api/plugins/{name}/rollback", operation_id = "rollbackPlugin", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name", example = "lab")),
    responses(
        (status = 200, description = "The previous version runs from the next batch", body = Deployment),
        (status = 202, description = "The previous version runs once its rebuild has switched in", body = Deployment),
        (status = 404, description = "No such plugin", body = ErrorBody),
        (status = 409, description = "No previous version, or a deploy is under way", body = ErrorBody),
        CommonErrors))]
async fn rollback(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Deployment>), ApiError> {
    let (plugin, deployed) = state.deployer.rollback(&name, &claims.sub).await?;
    Ok(deployment(&name, &plugin, deployed))
}

/// `POST /api/plugins/:name/pause`: the projection stops after its batch.
#[utoipa::path(post, path = "/api/plugins/{name}/pause", operation_id = "pausePlugin", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name", example = "lab")),
    responses(
        (status = 200, description = "Paused", body = Paused),
        (status = 404, description = "No such plugin", body = ErrorBody),
        CommonErrors))]
async fn pause(state: State<AppState>, name: Path<String>) -> Result<Json<Paused>, ApiError> {
    set_paused(state, name, true).await
}

/// `POST /api/plugins/:name/resume`: the projection goes on.
#[utoipa::path(post, path = "/api/plugins/{name}/resume", operation_id = "resumePlugin", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name", example = "lab")),
    responses(
        (status = 200, description = "Running", body = Paused),
        (status = 404, description = "No such plugin", body = ErrorBody),
        CommonErrors))]
async fn resume(state: State<AppState>, name: Path<String>) -> Result<Json<Paused>, ApiError> {
    set_paused(state, name, false).await
}

/// A plugin's projection paused or running again.
#[derive(Serialize, ToSchema)]
struct Paused {
    name: String,
    state: &'static str,
}

/// Pauses or resumes a plugin's projection from its next batch.
async fn set_paused(
    State(state): State<AppState>,
    Path(name): Path<String>,
    paused: bool,
) -> Result<Json<Paused>, ApiError> {
    state.deployer.set_paused(&name, paused)?;
    let state = if paused { "paused" } else { "running" };
    Ok(Json(Paused { name, state }))
}
