//! The patient's chart and its views.

use axum::extract::{Extension, Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::auth::check_chart_access;
use super::{ApiError, AppState, object_urls};
use crate::alerts::{self, Alert};
use crate::auth::Claims;
use crate::store::{self, documents, notifications};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/aggregate/patients/{patientId}", get(chart))
        .route(
            "/api/aggregate/patients/{patientId}/alerts",
            get(list_alerts),
        )
        .route("/api/aggregate/patients/{patientId}/{view}", get(records))
}

/// The PatientAggregateView, with `criticalAlerts` counted from the same
/// snapshot as `/alerts` lists.
async fn chart(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(patient_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_chart_access(&claims, &patient_id, &state.shared.config.clinical_roles)?;
    let (chart, alerts) = chart_and_alerts(&state, &patient_id).await?;
    let mut chart =
        chart.ok_or_else(|| ApiError::not_found(format!("no chart for patient {patient_id}")))?;
    chart["criticalAlerts"] = alerts::open_count(&alerts).into();
    Ok(Json(chart))
}

/// The patient's alerts, newest first, each with its state.
async fn list_alerts(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(patient_id): Path<String>,
) -> Result<Json<Vec<Alert>>, ApiError> {
    check_chart_access(&claims, &patient_id, &state.shared.config.clinical_roles)?;
    Ok(Json(chart_and_alerts(&state, &patient_id).await?.1))
}

/// The chart and its alerts, read in one snapshot so they agree.
async fn chart_and_alerts(
    state: &AppState,
    patient_id: &str,
) -> Result<(Option<Value>, Vec<Alert>), ApiError> {
    let mut snapshot = store::snapshot(&state.shared.api_pool).await?;
    let chart = documents::get(&mut *snapshot, "patient_chart", patient_id).await?;
    let raised = notifications::alerts(&mut *snapshot, patient_id).await?;
    snapshot.commit().await?;
    let alerts = alerts::of_patient(patient_id, chart.as_ref(), raised);
    Ok((chart, alerts))
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
        documents::by_patient(&state.shared.api_pool, view, &patient_id, order_field).await?;
    match segment.as_str() {
        "imaging" => object_urls::sign_studies(&state.shared.objects, &mut records).await,
        "labs" => object_urls::sign_lab_reports(&state.shared.objects, &mut records).await,
        _ => {}
    }
    Ok(Json(records))
}
