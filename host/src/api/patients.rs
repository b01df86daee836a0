//! The patient's chart and its views.

use axum::extract::{Extension, Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::auth::check_chart_access;
use super::{ApiError, AppState, object_urls};
use crate::auth::Claims;
use crate::store::documents;
use crate::store::notifications::{self, StoredNotification};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/aggregate/patients/{patientId}", get(chart))
        .route("/api/aggregate/patients/{patientId}/alerts", get(alerts))
        .route("/api/aggregate/patients/{patientId}/{view}", get(records))
}

/// The PatientAggregateView.
async fn chart(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(patient_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_chart_access(&claims, &patient_id, &state.shared.config.clinical_roles)?;
    documents::get(&state.shared.pool, "patient_chart", &patient_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no chart for patient {patient_id}")))
}

/// Critical alerts, newest first, with their acknowledgement state.
async fn alerts(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(patient_id): Path<String>,
) -> Result<Json<Vec<StoredNotification>>, ApiError> {
    check_chart_access(&claims, &patient_id, &state.shared.config.clinical_roles)?;
    Ok(Json(
        notifications::alerts(&state.shared.pool, &patient_id).await?,
    ))
}

/// The views behind `/labs`, `/imaging`, `/medications` and `/encounters`,
/// with the field their records are ordered by (newest first).
fn patient_view(segment: &str) -> Option<(&'static str, &'static str)> {
    Some(match segment {
        "labs" => ("lab_results", "issuedAt"),
        "imaging" => ("imaging_studies", "completedAt"),
        "medications" => ("medications", "prescribedAt"),
        "encounters" => ("encounters", "startedAt"),
        _ => return None,
    })
}

/// One patient's records in one view.
async fn records(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path((patient_id, segment)): Path<(String, String)>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let (view, order_field) = patient_view(&segment)
        .ok_or_else(|| ApiError::not_found(format!("no view `{segment}` for patients")))?;
    check_chart_access(&claims, &patient_id, &state.shared.config.clinical_roles)?;
    let mut records =
        documents::by_patient(&state.shared.pool, view, &patient_id, order_field).await?;
    match segment.as_str() {
        "imaging" => object_urls::sign_studies(&state.shared.objects, &mut records).await,
        "labs" => object_urls::sign_lab_reports(&state.shared.objects, &mut records).await,
        _ => {}
    }
    Ok(Json(records))
}
