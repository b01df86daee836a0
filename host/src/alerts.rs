//! A patient's alerts: one notion behind both the chart's `criticalAlerts`
//! and `GET …/alerts` (issue 15), so the count and the list cannot
//! disagree. An alert is either a critical alert a plugin raised (an urgent
//! notification: a critical lab or imaging value, a drug interaction, an
//! allergy contraindication; not the copies escalations make of it) or a
//! high-criticality allergy on the chart. Each has a state, and
//! `criticalAlerts` counts the open ones (active or escalated) of the same
//! read.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::store::notifications::StoredNotification;

/// The `type` of an alert that is a high-criticality allergy.
pub const ALLERGY_ALERT: &str = "high_criticality_allergy";

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Raised, nobody has acknowledged it yet.
    Active,
    /// Not acknowledged in time, and escalated to a covering role.
    Escalated,
    /// Someone acknowledged it (the original or an escalation of it).
    Acknowledged,
    /// The condition ended (an allergy no longer active).
    Resolved,
}

impl AlertState {
    /// Whether it still asks a clinician to act: what `criticalAlerts`
    /// counts.
    pub fn is_open(self) -> bool {
        matches!(self, AlertState::Active | AlertState::Escalated)
    }
}

/// One alert as `/alerts` lists it: its state and what it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// Where it stands.
    pub state: AlertState,
    /// What raised it.
    #[serde(flatten)]
    pub source: Source,
    /// When, for the order of the list (newest first).
    #[serde(skip)]
    #[schema(ignore)]
    at: Option<DateTime<Utc>>,
}

/// What raised an alert.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Source {
    /// A plugin's urgent notification, as clients see notifications.
    Notification(Box<StoredNotification>),
    /// A high-criticality allergy on the chart.
    Allergy(AllergyAlert),
}

/// A high-criticality allergy as an alert.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllergyAlert {
    /// Always [`ALLERGY_ALERT`].
    #[serde(rename = "type")]
    kind: &'static str,
    /// Whose.
    patient_id: String,
    /// The chart's allergy entry.
    #[schema(value_type = Object)]
    allergy: Value,
}

impl Alert {
    fn raised(notification: StoredNotification) -> Self {
        let state = if notification.acknowledged_at.is_some() {
            AlertState::Acknowledged
        } else if notification.escalated_at.is_some() {
            AlertState::Escalated
        } else {
            AlertState::Active
        };
        Self {
            state,
            at: Some(notification.event_at),
            source: Source::Notification(Box::new(notification)),
        }
    }

    fn allergy(patient_id: &str, allergy: &Value) -> Option<Self> {
        if allergy["criticality"] != "high" {
            return None;
        }
        let state = match allergy["clinicalStatus"].as_str() {
            None | Some("active") => AlertState::Active,
            Some(_) => AlertState::Resolved,
        };
        Some(Self {
            state,
            at: allergy["recordedAt"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.to_utc()),
            source: Source::Allergy(AllergyAlert {
                kind: ALLERGY_ALERT,
                patient_id: patient_id.to_owned(),
                allergy: allergy.clone(),
            }),
        })
    }
}

/// A patient's alerts, newest first (an allergy recorded before times were
/// kept goes last): the plugins' critical alerts and the chart's
/// high-criticality allergies, read in one snapshot by the caller.
pub fn of_patient(
    patient_id: &str,
    chart: Option<&Value>,
    raised: Vec<StoredNotification>,
) -> Vec<Alert> {
    let allergies = chart
        .and_then(|c| c["allergies"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|a| Alert::allergy(patient_id, a));
    let mut alerts: Vec<Alert> = raised
        .into_iter()
        .map(Alert::raised)
        .chain(allergies)
        .collect();
    // Stable: notifications keep their seq order within one event time.
    alerts.sort_by_key(|a| std::cmp::Reverse(a.at));
    alerts
}

/// How many of them ask a clinician to act: the chart's `criticalAlerts`.
pub fn open_count(alerts: &[Alert]) -> usize {
    alerts.iter().filter(|a| a.state.is_open()).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allergies_alert_while_active_and_high() {
        let chart = json!({ "allergies": [
            { "allergyId": "a1", "criticality": "high", "clinicalStatus": "active", "recordedAt": "2026-11-26T08:00:00Z" },
            { "allergyId": "a2", "criticality": "high", "clinicalStatus": "resolved", "recordedAt": "2026-11-26T09:00:00Z" },
            { "allergyId": "a3", "criticality": "low", "clinicalStatus": "active" },
            { "allergyId": "a4", "criticality": "high" },
        ]});
        let alerts = of_patient("p1", Some(&chart), Vec::new());
        let listed: Vec<(&str, AlertState)> = alerts
            .iter()
            .map(|a| match &a.source {
                Source::Allergy(x) => (x.allergy["allergyId"].as_str().unwrap(), a.state),
                Source::Notification(_) => unreachable!(),
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("a2", AlertState::Resolved),
                ("a1", AlertState::Active),
                ("a4", AlertState::Active)
            ]
        );
        assert_eq!(open_count(&alerts), 2);
        let shown = serde_json::to_value(&alerts[0]).unwrap();
        assert_eq!(shown["type"], ALLERGY_ALERT);
        assert_eq!(shown["state"], "resolved");
        assert_eq!(shown["patientId"], "p1");
    }
}
