//! The lab plugin owns `LabResultView` (`lab_results`: results, critical values,
//! who viewed the report and when) and `lab_orders`, and notifies the ordering
//! provider of new results (normal) and critical values (urgent).

use projector_sdk::events::Payload;
use projector_sdk::events::payloads::{Interpretation, LabResult, ResultValue};
use projector_sdk::{
    Event, Notification, Outcome, Plugin, PluginInfo, ViewDef, Views, json, patient_key,
};

/// The LabResultView, keyed by report id.
pub const RESULTS: &str = "lab_results";
/// Lab orders, keyed by order id.
pub const ORDERS: &str = "lab_orders";
/// The audit action of a report viewed, under its `viewedBy`.
const VIEWED: &str = "lab_result.viewed";

/// The lab plugin.
pub struct LabPlugin;

/// A result is critical when its publisher says so or its interpretation is
/// a critical flag (`HH`, `LL`, `AA`). A code the value set does not list
/// adds nothing: the publisher's own flag decides.
fn is_critical(result: &LabResult) -> bool {
    result.critical
        || result
            .interpretation
            .as_ref()
            .is_some_and(Interpretation::is_critical)
}

impl Plugin for LabPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "lab",
            env!("CARGO_PKG_VERSION"),
            &["lab.>"],
            vec![
                ViewDef::new(RESULTS, "patientId/payload.reportId", &["patientId"]),
                ViewDef::new(ORDERS, "patientId/payload.orderId", &["patientId"]),
            ],
        )
        .audits(&[VIEWED])
    }

    fn handle(event: &Event, _views: &dyn Views) -> Result<Outcome, String> {
        let mut out = Outcome::default();
        let pid = event.patient_id.as_str();
        let key = |id: &str| patient_key(pid, id);
        match &event.payload {
            Payload::LabOrderCreated(p) => {
                out.merge(ORDERS, &key(&p.order_id), json!({
                    "orderId": p.order_id, "patientId": pid, "orderingProviderId": p.ordering_provider_id,
                    "tests": p.tests, "priority": p.priority, "orderedAt": event.timestamp.as_str(),
                }));
            }
            Payload::LabResultAvailable(p) => {
                out.merge(RESULTS, &key(&p.report_id), json!({
                    "reportId": p.report_id, "patientId": pid, "orderId": p.order_id,
                    "orderingProviderId": p.ordering_provider_id, "issuedAt": p.issued_at.as_str(),
                    "results": p.results, "status": "final",
                }));
                if p.results.iter().any(is_critical) {
                    out.merge(RESULTS, &key(&p.report_id), json!({ "critical": true }));
                }
                out.merge(
                    ORDERS,
                    &key(&p.order_id),
                    json!({ "status": "resulted", "reportId": p.report_id }),
                );
                out.notify(Notification::normal(
                    &p.ordering_provider_id,
                    "lab_result_available",
                    "Lab Results Available",
                    "New lab results are ready for review",
                    json!({
                        "patientId": pid, "reportId": p.report_id,
                        "action": { "type": "view_lab_result", "url": format!("/patients/{pid}/labs/{}", p.report_id) },
                    }),
                    &format!("lab_result_available:{}", p.report_id),
                ));
            }
            Payload::LabCriticalAlert(p) => {
                let value = match &p.value {
                    ResultValue::Number(n) => json!(n),
                    ResultValue::Text(t) => json!(t),
                };
                out.merge(
                    RESULTS,
                    &key(&p.report_id),
                    json!({ "reportId": p.report_id, "patientId": pid, "critical": true }),
                );
                out.append(
                    RESULTS,
                    &key(&p.report_id),
                    "criticalValues",
                    json!({
                        "testName": p.test_name, "code": p.code, "value": value, "unit": p.unit,
                        "criticalReason": p.critical_reason, "alertedAt": event.timestamp.as_str(),
                    }),
                    Some("code"),
                );
                let shown = match &p.value {
                    ResultValue::Number(n) => n.to_string(),
                    ResultValue::Text(t) => t.clone(),
                };
                out.notify(Notification::urgent(
                    &p.ordering_provider_id,
                    "critical_lab_value",
                    "🚨 CRITICAL LAB VALUE",
                    format!("CRITICAL: {} = {} {}", p.test_name, shown, p.unit).trim_end(),
                    json!({
                        "patientId": pid, "reportId": p.report_id, "patientName": p.patient_name,
                        "details": { "testName": p.test_name, "value": value, "criticalReason": p.critical_reason },
                        "action": { "type": "view_lab_result", "url": format!("/patients/{pid}/labs/{}", p.report_id) },
                    }),
                    &format!("critical_lab_value:{}:{}", p.report_id, p.code.code),
                ));
            }
            Payload::LabResultViewed(p) => {
                out.merge(
                    RESULTS,
                    &key(&p.report_id),
                    json!({ "reportId": p.report_id, "patientId": pid }),
                );
                out.append(
                    RESULTS,
                    &key(&p.report_id),
                    "viewedBy",
                    json!({
                        "userId": p.viewed_by, "viewedAt": event.timestamp.as_str(),
                    }),
                    None,
                );
                out.audit_as(&p.viewed_by, VIEWED, "DiagnosticReport", &p.report_id);
            }
            _ => {}
        }
        Ok(out)
    }
}

projector_sdk::export_plugin!(LabPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use projector_sdk::{Priority, testing::Harness};

    const SEED: &str = include_str!("../../../fixtures/seed-flow.jsonl");

    #[test]
    fn seed_flow_builds_the_lab_result_view() {
        let mut harness = Harness::<LabPlugin>::new();
        harness.feed_jsonl(SEED).unwrap();
        let report = harness
            .view(RESULTS, &patient_key("p-john-doe", "rep-lab-1"))
            .expect("report");
        assert_eq!(report["patientId"], "p-john-doe");
        assert_eq!(report["critical"], true);
        assert_eq!(report["results"].as_array().unwrap().len(), 2);
        assert_eq!(
            report["criticalValues"][0]["criticalReason"],
            "Severe hyperkalemia"
        );
        assert_eq!(report["viewedBy"].as_array().unwrap().len(), 2);
        assert_eq!(
            harness
                .view(ORDERS, &patient_key("p-john-doe", "ord-lab-1"))
                .unwrap()["status"],
            "resulted"
        );
        assert_eq!(harness.audits.len(), 2);
    }

    #[test]
    fn a_view_is_audited_under_who_viewed_it_not_who_sent_it() {
        let event = json!({
            "eventId": "e-1", "eventType": "lab.result.viewed", "timestamp": "2026-11-26T09:40:00Z",
            "patientId": "p-1", "userId": "u-portal-gateway", "portalType": "provider",
            "payload": { "reportId": "r-1", "viewedBy": "u-dr-jones" },
        });
        let mut harness = Harness::<LabPlugin>::new();
        harness.feed_jsonl(&event.to_string()).unwrap();
        assert_eq!(harness.audits.len(), 1);
        assert_eq!(harness.audits[0].user_id.as_deref(), Some("u-dr-jones"));
        assert_eq!(harness.audits[0].action, VIEWED);
    }

    #[test]
    fn a_critical_interpretation_marks_the_report_and_an_unknown_one_is_kept() {
        for (flag, critical) in [
            ("HH", true),
            ("LL", true),
            ("AA", true),
            ("H", false),
            ("HU", false),
            ("LOCAL-X", false),
        ] {
            let event = json!({
                "eventId": "e-1", "eventType": "lab.result.available", "timestamp": "2026-11-26T09:40:00Z",
                "patientId": "p-1", "userId": "u-lab", "portalType": "lab",
                "payload": { "reportId": "r-1", "orderId": "o-1", "orderingProviderId": "u-dr",
                    "issuedAt": "2026-11-26T09:40:00Z",
                    "results": [{ "code": { "system": "http://loinc.org", "code": "2823-3", "display": "Potassium" },
                                  "value": 6.9, "unit": "mmol/L", "interpretation": flag, "critical": false }] },
            });
            let mut harness = Harness::<LabPlugin>::new();
            harness.feed_jsonl(&event.to_string()).unwrap();
            let report = harness.view(RESULTS, &patient_key("p-1", "r-1")).unwrap();
            assert_eq!(report["critical"] == true, critical, "{flag}: {report}");
            assert_eq!(report["results"][0]["interpretation"], flag);
        }
    }

    #[test]
    fn notifies_the_ordering_provider_as_the_seed_does() {
        let mut harness = Harness::<LabPlugin>::new();
        harness.feed_jsonl(SEED).unwrap();
        let [normal, urgent] = &harness.notifications[..] else {
            panic!("{:?}", harness.notifications)
        };
        assert_eq!(normal.recipient, "u-dr-smith");
        assert_eq!(normal.kind, "lab_result_available");
        assert_eq!(normal.priority, Priority::Normal);
        assert_eq!(
            normal.data["action"]["url"],
            "/patients/p-john-doe/labs/rep-lab-1"
        );
        assert_eq!(urgent.kind, "critical_lab_value");
        assert_eq!(urgent.message, "CRITICAL: Potassium = 6.5 mmol/L");
        assert!(urgent.requires_ack);
        assert_eq!(urgent.data["patientName"], "John Doe");
        assert_eq!(urgent.data["details"]["value"], 6.5);
    }
}
