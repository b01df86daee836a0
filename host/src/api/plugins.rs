//! The loaded plugins with their progress (role `admin`).

use std::collections::HashMap;

use axum::extract::{Extension, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, AppState, Claims};
use crate::ingest;
use crate::store::queries;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/plugins", get(list))
}

/// Name, version, hash, subjects, views, state, checkpoint, lag and counts.
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
    for (plugin, projection) in state.registry.plugins() {
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
        }));
    }
    Ok(Json(out))
}
