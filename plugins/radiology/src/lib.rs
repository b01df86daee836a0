//! The radiology plugin owns `ImagingStudyView` (`imaging_studies`: the study,
//! its object keys, the report's findings and impression, the critical flag)
//! and `imaging_orders`, and notifies the ordering provider of finalized reports
//! (normal) and critical findings (urgent). `imaging_reports` finds a report's
//! study for `radiology.report.viewed` (which names only the report) and keeps
//! its viewers, whichever of the two events comes first.

use projector_sdk::events::Payload;
use projector_sdk::{
    Event, Notification, Outcome, Plugin, PluginInfo, ViewDef, Views, json, patient_key,
};

/// The ImagingStudyView, keyed by study id.
pub const STUDIES: &str = "imaging_studies";
/// Imaging orders, keyed by order id.
pub const ORDERS: &str = "imaging_orders";
/// Reports: their study and who viewed them, keyed by report id.
pub const REPORTS: &str = "imaging_reports";
/// The audit action of a report viewed, under its `viewedBy`.
const VIEWED: &str = "radiology_report.viewed";

/// The radiology plugin.
pub struct RadiologyPlugin;

impl Plugin for RadiologyPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "radiology",
            env!("CARGO_PKG_VERSION"),
            &["radiology.>"],
            vec![
                ViewDef::new(STUDIES, "patientId/payload.studyId", &["patientId"]),
                ViewDef::new(ORDERS, "patientId/payload.orderId", &["patientId"]),
                ViewDef::new(REPORTS, "patientId/payload.reportId", &[]),
            ],
        )
        .audits(&[VIEWED])
    }

    fn handle(event: &Event, views: &dyn Views) -> Result<Outcome, String> {
        let mut out = Outcome::default();
        let pid = event.patient_id.as_str();
        let key = |id: &str| patient_key(pid, id);
        let at = event.timestamp.as_str();
        match &event.payload {
            Payload::RadiologyOrderCreated(p) => {
                out.merge(ORDERS, &key(&p.order_id), json!({
                    "orderId": p.order_id, "patientId": pid, "orderingProviderId": p.ordering_provider_id,
                    "modality": p.modality, "procedure": p.procedure, "priority": p.priority, "orderedAt": at,
                }));
            }
            Payload::RadiologyStudyComplete(p) => {
                out.merge(STUDIES, &key(&p.study_id), json!({
                    "studyId": p.study_id, "patientId": pid, "orderId": p.order_id, "modality": p.modality,
                    "description": p.description, "imageCount": p.image_count, "bucket": p.bucket,
                    "objectKeys": p.object_keys, "status": "complete", "completedAt": at,
                }));
                out.merge(
                    ORDERS,
                    &key(&p.order_id),
                    json!({ "status": "complete", "studyId": p.study_id }),
                );
            }
            Payload::RadiologyImageUploaded(p) => {
                out.merge(
                    STUDIES,
                    &key(&p.study_id),
                    json!({ "studyId": p.study_id, "patientId": pid }),
                );
                out.append(
                    STUDIES,
                    &key(&p.study_id),
                    "images",
                    json!({
                        "imageId": p.image_id, "bucket": p.bucket, "key": p.key,
                        "contentType": p.content_type, "uploadedAt": at,
                    }),
                    Some("imageId"),
                );
            }
            Payload::RadiologyReportFinalized(p) => {
                // Views recorded before the report arrived come with it.
                let viewed_by = views
                    .get_at(REPORTS, &key(&p.report_id), "viewedBy")
                    .unwrap_or_else(|| json!([]));
                out.merge(
                    REPORTS,
                    &key(&p.report_id),
                    json!({ "reportId": p.report_id, "patientId": pid, "studyId": p.study_id }),
                );
                out.merge(
                    STUDIES,
                    &key(&p.study_id),
                    json!({
                        "studyId": p.study_id, "patientId": pid,
                        "report": {
                            "reportId": p.report_id, "radiologistId": p.radiologist_id,
                            "orderingProviderId": p.ordering_provider_id, "findings": p.findings,
                            "impression": p.impression, "finalizedAt": at, "viewedBy": viewed_by,
                        },
                    }),
                );
                if p.critical {
                    out.merge(STUDIES, &key(&p.study_id), json!({ "critical": true }));
                }
                out.notify(Notification::normal(
                    &p.ordering_provider_id,
                    "imaging_report_available",
                    "Imaging Report Available",
                    "A new imaging report is ready for review",
                    json!({
                        "patientId": pid, "reportId": p.report_id, "studyId": p.study_id,
                        "action": { "type": "view_imaging_report", "url": format!("/patients/{pid}/imaging/{}", p.study_id) },
                    }),
                    &format!("imaging_report_available:{}", p.report_id),
                ));
            }
            Payload::RadiologyCriticalAlert(p) => {
                out.merge(STUDIES, &key(&p.study_id), json!({
                    "studyId": p.study_id, "patientId": pid, "critical": true,
                    "criticalFinding": { "reportId": p.report_id, "finding": p.finding, "criticalReason": p.critical_reason, "alertedAt": at },
                }));
                out.notify(Notification::urgent(
                    &p.ordering_provider_id,
                    "critical_imaging_finding",
                    "🚨 CRITICAL IMAGING FINDING",
                    &format!("CRITICAL: {}", p.finding),
                    json!({
                        "patientId": pid, "reportId": p.report_id, "studyId": p.study_id, "patientName": p.patient_name,
                        "details": { "finding": p.finding, "criticalReason": p.critical_reason },
                        "action": { "type": "view_imaging_report", "url": format!("/patients/{pid}/imaging/{}", p.study_id) },
                    }),
                    &format!("critical_imaging_finding:{}", p.report_id),
                ));
            }
            Payload::RadiologyReportViewed(p) => {
                let view = json!({ "userId": p.viewed_by, "viewedAt": at });
                let report = key(&p.report_id);
                out.merge(
                    REPORTS,
                    &report,
                    json!({ "reportId": p.report_id, "patientId": pid }),
                );
                out.append(REPORTS, &report, "viewedBy", view.clone(), None);
                if let Some(study) = views.get_at(REPORTS, &report, "studyId")
                    && let Some(study) = study.as_str()
                {
                    out.append(STUDIES, &key(study), "report.viewedBy", view, None);
                }
                out.audit_as(&p.viewed_by, VIEWED, "DiagnosticReport", &p.report_id);
            }
            _ => {}
        }
        Ok(out)
    }
}

projector_sdk::export_plugin!(RadiologyPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use projector_sdk::{Priority, testing::Harness};

    /// A view, before or after its report arrives, is on the study's
    /// report and audited under who viewed it.
    #[test]
    fn a_report_viewed_is_recorded_on_its_study_whichever_comes_first() {
        let seed = include_str!("../../../fixtures/seed-flow.jsonl");
        let viewed = |id: &str, at: &str, by: &str| {
            json!({
                "eventId": id, "eventType": "radiology.report.viewed", "timestamp": at,
                "patientId": "p-john-doe", "userId": "u-portal", "portalType": "provider",
                "payload": { "reportId": "rep-rad-1", "viewedBy": by },
            })
            .to_string()
        };
        for early in [false, true] {
            let mut harness = Harness::<RadiologyPlugin>::new();
            if early {
                harness
                    .feed_jsonl(&viewed("v-0", "2026-11-26T08:00:00Z", "u-dr-early"))
                    .unwrap();
            }
            harness.feed_jsonl(seed).unwrap();
            harness
                .feed_jsonl(&viewed("v-1", "2026-11-27T08:00:00Z", "u-dr-jones"))
                .unwrap();
            let study = harness
                .view(STUDIES, &patient_key("p-john-doe", "study-1"))
                .unwrap();
            let viewers: Vec<&str> = study["report"]["viewedBy"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["userId"].as_str().unwrap())
                .collect();
            let expected: &[&str] = if early {
                &["u-dr-early", "u-dr-jones"]
            } else {
                &["u-dr-jones"]
            };
            assert_eq!(viewers, expected);
            let audited: Vec<(&str, Option<&str>)> = harness
                .audits
                .iter()
                .map(|a| (a.action.as_str(), a.user_id.as_deref()))
                .collect();
            assert_eq!(audited.last(), Some(&(VIEWED, Some("u-dr-jones"))));
        }
    }

    #[test]
    fn seed_flow_builds_the_imaging_study_view() {
        let mut harness = Harness::<RadiologyPlugin>::new();
        harness
            .feed_jsonl(include_str!("../../../fixtures/seed-flow.jsonl"))
            .unwrap();
        let study = harness
            .view(STUDIES, &patient_key("p-john-doe", "study-1"))
            .expect("study");
        assert_eq!(study["patientId"], "p-john-doe");
        assert_eq!(study["objectKeys"].as_array().unwrap().len(), 2);
        assert_eq!(study["images"][0]["imageId"], "img-1");
        assert_eq!(study["report"]["impression"], "Acute pulmonary embolism.");
        assert_eq!(study["critical"], true);
        assert_eq!(
            harness
                .view(ORDERS, &patient_key("p-john-doe", "ord-rad-1"))
                .unwrap()["status"],
            "complete"
        );
        let kinds: Vec<(&str, Priority)> = harness
            .notifications
            .iter()
            .map(|n| (n.kind.as_str(), n.priority))
            .collect();
        assert_eq!(
            kinds,
            [
                ("imaging_report_available", Priority::Normal),
                ("critical_imaging_finding", Priority::Urgent)
            ]
        );
    }
}
