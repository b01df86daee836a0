//! `GET /api/audit` (admin): examine the audit trail (HIPAA 164.312(b)) by
//! patient, user and time.

use axum::extract::State;

use super::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, AppState, params};
use crate::error::CommonErrors;
use crate::store::audit::{self, AuditEntry, AuditFilter};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/audit", get(list))
}

/// Every filter is optional; `from` and `to` are RFC 3339 times.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Filter {
    /// Whose data.
    #[serde(rename = "patientId")]
    #[param(rename = "patientId")]
    patient_id: Option<String>,
    /// Who.
    #[serde(rename = "userId")]
    #[param(rename = "userId")]
    user_id: Option<String>,
    /// From this time on (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    from: Option<String>,
    /// Up to this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    to: Option<String>,
    /// At most this many, 1 to 1000 (100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// The entries that match, newest first.
#[utoipa::path(get, path = "/api/audit", operation_id = "listAudit", tag = "audit", params(Filter),
    responses((status = 200, description = "Audit entries, newest first", body = [AuditEntry]), CommonErrors))]
async fn list(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let filter = AuditFilter {
        patient_id: filter.patient_id,
        user_id: filter.user_id,
        from: time("from", filter.from.as_deref())?,
        to: time("to", filter.to.as_deref())?,
        limit: params::limit(filter.limit.as_deref())?,
    };
    Ok(Json(audit::entries(&state.shared.api_pool, &filter).await?))
}

fn time(name: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "{name} must be an RFC 3339 time, e.g. 2026-11-26T08:00:00Z"
                ))
            })
    })
    .transpose()
}
