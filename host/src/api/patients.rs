//! The patient's chart and its views.

use axum::extract::{Extension, State};

use super::extract::{Path, Query};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::audit::AuditDetail;
use super::auth::check_chart_access;
use super::{ApiError, AppState, object_urls, params};
use crate::alerts::{self, Alert};
use crate::auth::Claims;
use crate::error::{CommonErrors, ErrorBody};
use crate::store::{self, documents, notifications};

/// The patient plugin's view of whole charts.
const CHART_VIEW: &str = "patient_chart";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/aggregate/patients", get(search))
        .route("/api/aggregate/patients/{patientId}", get(chart))
        .route(
            "/api/aggregate/patients/{patientId}/alerts",
            get(list_alerts),
        )
        .route("/api/aggregate/patients/{patientId}/{view}", get(records))
}

/// `q`: words each of which begins the patient's given or family name,
/// MRN or id; `cursor`: the `nextCursor` of the page before.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    /// Words, each the start of the given or family name, MRN or id.
    q: Option<String>,
    /// The `nextCursor` of the page before.
    cursor: Option<String>,
    /// Patients per page, 1 to 1000 (100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// A patient as a search lists them.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PatientSummary {
    #[serde(default)]
    patient_id: String,
    #[serde(default)]
    mrn: Option<String>,
    #[serde(default)]
    name: Option<HumanName>,
    #[serde(default)]
    birth_date: Option<String>,
    #[serde(default)]
    gender: Option<String>,
}

/// A patient's name as the chart holds it.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[schema(as = PatientName)]
struct HumanName {
    #[serde(default)]
    given: Option<String>,
    #[serde(default)]
    family: Option<String>,
}

/// One page of a search; `nextCursor` is set while there may be more.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SearchPage {
    patients: Vec<PatientSummary>,
    next_cursor: Option<String>,
}

/// `GET /api/aggregate/patients?q=&cursor=&limit=`: patients by id whose
/// chart matches every word of `q` (all of them without one), for the
/// clinical roles; the search and how many it found are audited.
#[utoipa::path(get, path = "/api/aggregate/patients", operation_id = "searchPatients", tag = "patients", params(SearchQuery),
    responses((status = 200, description = "A page of patients", body = SearchPage), CommonErrors))]
async fn search(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Query(query): Query<SearchQuery>,
) -> Result<(Extension<AuditDetail>, Json<SearchPage>), ApiError> {
    if !state.shared.config.clinical_roles.contains(&claims.role) {
        return Err(ApiError::forbidden(format!(
            "the role `{}` may not search patients",
            claims.role
        )));
    }
    let limit = params::limit(query.limit.as_deref())?;
    let terms: Vec<String> = query
        .q
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let after = query.cursor.unwrap_or_default();
    let found =
        documents::search_charts(&state.shared.api_pool, CHART_VIEW, &terms, &after, limit).await?;
    let next_cursor = (found.len() as i64 == limit)
        .then(|| found.last().map(|(key, _)| key.clone()))
        .flatten();
    let patients: Vec<PatientSummary> = found
        .into_iter()
        .map(|(key, doc)| PatientSummary {
            patient_id: key,
            ..serde_json::from_value(doc).unwrap_or_default()
        })
        .collect();
    let detail = AuditDetail(format!("q={:?} found={}", terms.join(" "), patients.len()));
    Ok((
        Extension(detail),
        Json(SearchPage {
            patients,
            next_cursor,
        }),
    ))
}

/// The PatientAggregateView, with `criticalAlerts` counted from the same
/// snapshot as `/alerts` lists.
#[utoipa::path(get, path = "/api/aggregate/patients/{patientId}", operation_id = "getChart", tag = "patients",
    params(("patientId" = String, Path, description = "The patient's id", example = "p-john-doe")),
    responses(
        (status = 200, description = "The patient's whole chart (PatientAggregateView)", body = Object),
        (status = 404, description = "No chart for this patient", body = ErrorBody),
        CommonErrors))]
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
#[utoipa::path(get, path = "/api/aggregate/patients/{patientId}/alerts", operation_id = "listAlerts", tag = "patients",
    params(("patientId" = String, Path, description = "The patient's id", example = "p-john-doe")),
    responses((status = 200, description = "The patient's alerts", body = [Alert]), CommonErrors))]
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
    let chart = documents::get(&mut *snapshot, CHART_VIEW, patient_id).await?;
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

/// One patient's records in one view, newest first; imaging and lab
/// reports carry presigned URLs.
#[utoipa::path(get, path = "/api/aggregate/patients/{patientId}/{view}", operation_id = "listRecords", tag = "patients",
    params(
        ("patientId" = String, Path, description = "The patient's id", example = "p-john-doe"),
        ("view" = String, Path, description = "`labs`, `imaging`, `medications` or `encounters`", example = "labs")),
    responses(
        (status = 200, description = "The patient's records in the view", body = [Object]),
        (status = 404, description = "No such view", body = ErrorBody),
        CommonErrors))]
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
