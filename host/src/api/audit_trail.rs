//! `GET /api/audit` (admin): examine the audit trail (HIPAA 164.312(b)) by
//! patient, user and time.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{ApiError, AppState, params};
use crate::store::audit::{self, AuditEntry, AuditFilter};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/audit", get(list))
}

/// Every filter is optional; `from` and `to` are RFC 3339 times.
#[derive(Deserialize)]
struct Filter {
    #[serde(rename = "patientId")]
    patient_id: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

/// The entries that match, newest first.
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
