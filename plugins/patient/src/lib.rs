//! The patient plugin owns the chart: `PatientAggregateView`, the patient's
//! complete record in one document. Since every view has one writer, it
//! subscribes to every domain whose events change the chart.
//!
//! Bookkeeping views make once-only effects safe however events repeat:
//! `patient_orders` (an order lowers `pendingOrders` once, when first resulted),
//! `patient_encounters` (an encounter counts once however often it starts)
//! and `patient_reports` (a report raises `unreadResults`, and its kind's count in
//! `unreadResultsByKind`, once, and its first view lowers them once).
//!
//! `criticalAlerts` is not stored: acknowledgements happen in the host, not
//! on the stream, so the host counts the open alerts when it serves the
//! chart (`host/src/alerts.rs`), from the same read as `/alerts`.

use projector_sdk::events::Payload;
use projector_sdk::events::payloads::{AllergyClinicalStatus, Vitals, VitalsRecorded};
use projector_sdk::{Event, Outcome, Plugin, PluginInfo, Value, ViewDef, Views, doc_key, json};

/// The chart view.
pub const CHART: &str = "patient_chart";
const ORDERS: &str = "patient_orders";
const REPORTS: &str = "patient_reports";
const ENCOUNTERS: &str = "patient_encounters";

/// The patient-chart plugin.
pub struct PatientPlugin;

impl Plugin for PatientPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "patient",
            env!("CARGO_PKG_VERSION"),
            &[
                "patient.>",
                "lab.>",
                "radiology.>",
                "pharmacy.>",
                "encounter.>",
            ],
            vec![
                ViewDef::new(CHART, "patientId", &[]),
                ViewDef::new(ORDERS, "patientId/domain/payload.orderId", &[]),
                ViewDef::new(REPORTS, "patientId/domain/payload.reportId", &[]),
                ViewDef::new(ENCOUNTERS, "patientId/payload.encounterId", &[]),
            ],
        )
    }

    fn handle(event: &Event, views: &dyn Views) -> Result<Outcome, String> {
        if matches!(event.payload, Payload::RadiologyImageUploaded(_)) {
            return Ok(Outcome::default());
        }
        let mut chart = Chart::open(event, views);
        chart.apply(&event.payload)?;
        Ok(chart.out)
    }
}

projector_sdk::export_plugin!(PatientPlugin);

/// The chart being changed by one event. It reads only the parts of the
/// chart a rule needs (`Views::get_at`), never the whole chart: that grows
/// with the patient's history, and every event changes it.
/// A source system whose orders and reports the chart counts: its name
/// (the event type's first segment, as in the views' key hint) and the
/// kind its orders and reports count as in `pendingOrders` and
/// `unreadResultsByKind`.
#[derive(Clone, Copy)]
struct Domain {
    name: &'static str,
    kind: &'static str,
}

const LAB: Domain = Domain {
    name: "lab",
    kind: "lab",
};
const RADIOLOGY: Domain = Domain {
    name: "radiology",
    kind: "imaging",
};

struct Chart<'a> {
    pid: &'a str,
    /// The event's time.
    at: &'a str,
    views: &'a dyn Views,
    out: Outcome,
}

impl<'a> Chart<'a> {
    /// Creates the chart with every field at its empty value when this is
    /// the first event for the patient, and stamps the event on it.
    fn open(event: &'a Event, views: &'a dyn Views) -> Self {
        let pid = event.patient_id.as_str();
        let mut out = Outcome::default();
        if views.get_at(CHART, pid, "patientId").is_none() {
            out.upsert(CHART, pid, empty_chart(pid));
        }
        out.merge(
            CHART,
            pid,
            json!({ "updatedAt": event.timestamp.as_str(), "lastEventId": event.id }),
        );
        Self {
            pid,
            at: event.timestamp.as_str(),
            views,
            out,
        }
    }

    /// The value at `path` in the chart (absent on a chart created now).
    fn read(&self, path: &str) -> Option<Value> {
        self.views.get_at(CHART, self.pid, path)
    }

    fn merge(&mut self, doc: Value) {
        self.out.merge(CHART, self.pid, doc);
    }

    fn count(&mut self, path: &str, delta: i64) {
        self.out.increment(CHART, self.pid, path, delta);
    }

    fn apply(&mut self, payload: &Payload) -> Result<(), String> {
        match payload {
            Payload::PatientCreated(p) => self.merge(json!({
                "mrn": p.mrn, "name": p.name, "birthDate": p.birth_date, "gender": p.gender,
            })),
            Payload::PatientUpdated(p) => {
                self.merge(serde_json::to_value(&p.changes).map_err(|e| e.to_string())?)
            }
            Payload::AllergyAdded(p) => {
                // A high-criticality one is an alert while active; the host
                // lists it, with its time, beside the plugins' critical alerts.
                let item = json!({
                    "allergyId": p.allergy_id, "substance": p.substance, "reaction": p.reaction,
                    "severity": p.severity, "criticality": p.criticality,
                    "clinicalStatus": p.clinical_status.unwrap_or(AllergyClinicalStatus::Active),
                    "recordedAt": self.at,
                });
                self.out
                    .append(CHART, self.pid, "allergies", item, Some("allergyId"));
            }
            Payload::AllergyRemoved(p) => {
                self.out.remove(
                    CHART,
                    self.pid,
                    "allergies",
                    "allergyId",
                    json!(p.allergy_id),
                );
            }
            Payload::LabOrderCreated(p) => self.order_placed(LAB, &p.order_id),
            Payload::RadiologyOrderCreated(p) => self.order_placed(RADIOLOGY, &p.order_id),
            Payload::LabResultAvailable(p) => {
                self.order_resulted(LAB, &p.order_id);
                self.report_issued(LAB, &p.report_id);
            }
            Payload::RadiologyStudyComplete(p) => self.order_resulted(RADIOLOGY, &p.order_id),
            Payload::RadiologyReportFinalized(p) => self.report_issued(RADIOLOGY, &p.report_id),
            Payload::LabResultViewed(p) => self.report_viewed(LAB, &p.report_id),
            Payload::RadiologyReportViewed(p) => self.report_viewed(RADIOLOGY, &p.report_id),
            // Critical alerts are the host's: the notifications the domain
            // plugins raise, with their acknowledgements (see `criticalAlerts`).
            Payload::LabCriticalAlert(_)
            | Payload::RadiologyCriticalAlert(_)
            | Payload::InteractionAlert(_)
            | Payload::AllergyContraindication(_) => {}
            Payload::MedicationPrescribed(p) => {
                // A dispense that arrived first keeps its mark.
                let known = self.list_item("medications", "prescriptionId", &p.prescription_id);
                let dispensed = known.as_ref().filter(|m| m["status"] == "dispensed");
                let item = json!({
                    "prescriptionId": p.prescription_id, "medication": p.medication, "dose": p.dose,
                    "route": p.route, "frequency": p.frequency,
                    "status": if dispensed.is_some() { "dispensed" } else { "prescribed" },
                    "requestStatus": p.status,
                    "lastDispensedAt": dispensed.map_or(Value::Null, |m| m["lastDispensedAt"].clone()),
                });
                self.out
                    .append(CHART, self.pid, "medications", item, Some("prescriptionId"));
            }
            Payload::MedicationDispensed(p) => {
                let mut item = self
                    .list_item("medications", "prescriptionId", &p.prescription_id)
                    .unwrap_or_else(|| json!({ "prescriptionId": p.prescription_id }));
                // The newest dispense is the last, whatever order they came in.
                let at = p.dispensed_at.as_str();
                if is_newer(at, item["lastDispensedAt"].as_str()) {
                    item["lastDispensedAt"] = json!(at);
                }
                item["status"] = json!("dispensed");
                self.out
                    .append(CHART, self.pid, "medications", item, Some("prescriptionId"));
            }
            Payload::EncounterStarted(p) => {
                // An encounter counts once, however often its start is sent.
                let key = doc_key(&[self.pid, &p.encounter_id]);
                if self.views.get(ENCOUNTERS, &key).is_none() {
                    self.out.upsert(
                        ENCOUNTERS,
                        &key,
                        json!({ "encounterId": p.encounter_id, "patientId": self.pid }),
                    );
                    self.count("encounterSummary.count", 1);
                }
                let last = self.read("encounterSummary.lastEncounterAt");
                if is_newer(p.started_at.as_str(), last.as_ref().and_then(Value::as_str)) {
                    self.merge(
                        json!({ "encounterSummary": { "lastEncounterAt": p.started_at.as_str() } }),
                    );
                }
            }
            Payload::EncounterCompleted(p) => {
                // A diagnosis is its system and code (SNOMED 123 is not
                // ICD-10 123), shown with the newest encounter that made it.
                let at = p.ended_at.as_str();
                for diagnosis in &p.diagnoses {
                    let mut item = serde_json::to_value(diagnosis).map_err(|e| e.to_string())?;
                    let key = format!(
                        "{}|{}",
                        item["system"].as_str().unwrap_or_default(),
                        diagnosis.code
                    );
                    let known = self.list_item("activeDiagnoses", "key", &key);
                    let newest = known.as_ref().and_then(|d| d["recordedAt"].as_str());
                    if known.is_some() && !is_newer(at, newest) {
                        continue;
                    }
                    item["key"] = json!(key);
                    item["encounterId"] = json!(p.encounter_id);
                    item["recordedAt"] = json!(at);
                    self.out
                        .append(CHART, self.pid, "activeDiagnoses", item, Some("key"));
                }
            }
            Payload::VitalsRecorded(p) => self.vitals_recorded(p),
            Payload::RadiologyImageUploaded(_) => {}
        }
        Ok(())
    }

    /// Each measure keeps its newest value, with when and at which
    /// encounter it was taken: a reading of some measures leaves the others
    /// as they were, and an older reading replaces nothing newer.
    fn vitals_recorded(&mut self, p: &VitalsRecorded) {
        let at = p.recorded_at.as_str();
        let mut newer = serde_json::Map::new();
        for (name, value) in measures(&p.vitals) {
            let Some(value) = value else { continue };
            let last = self.read(&format!("latestVitals.{name}.recordedAt"));
            if is_newer(at, last.as_ref().and_then(Value::as_str)) {
                newer.insert(
                    name.to_owned(),
                    json!({ "value": value, "recordedAt": at, "encounterId": p.encounter_id }),
                );
            }
        }
        let last = self.read("latestVitals.recordedAt");
        if is_newer(at, last.as_ref().and_then(Value::as_str)) {
            newer.insert("recordedAt".to_owned(), json!(at));
        }
        if !newer.is_empty() {
            self.merge(json!({ "latestVitals": newer }));
        }
    }

    fn list_item(&self, list: &str, field: &str, id: &str) -> Option<Value> {
        let Value::Array(items) = self.read(list)? else {
            return None;
        };
        items
            .into_iter()
            .find(|item| item[field].as_str() == Some(id))
    }

    /// The key of an order or report of this patient from one source
    /// system (`domain`): the lab and radiology systems number theirs
    /// independently, and other patients' numbers may be the same.
    fn key(&self, domain: Domain, id: &str) -> String {
        doc_key(&[self.pid, domain.name, id])
    }

    /// An order raises `pendingOrders` the first time it is seen.
    fn order_placed(&mut self, domain: Domain, order_id: &str) {
        let key = self.key(domain, order_id);
        if self.views.get(ORDERS, &key).is_none() {
            self.out.upsert(
                ORDERS,
                &key,
                json!({ "orderId": order_id, "patientId": self.pid, "kind": domain.kind, "status": "pending" }),
            );
            self.count(&format!("pendingOrders.{}", domain.kind), 1);
        }
    }

    /// A result lowers `pendingOrders` once, and only for an order that was pending.
    fn order_resulted(&mut self, domain: Domain, order_id: &str) {
        let key = self.key(domain, order_id);
        match self.views.get(ORDERS, &key) {
            Some(order) if order["status"] == "pending" => {
                self.out
                    .merge(ORDERS, &key, json!({ "status": "resulted" }));
                self.count(&format!("pendingOrders.{}", domain.kind), -1);
            }
            Some(_) => {}
            // A result for an order never seen: remember it, so a late order
            // event does not count as pending.
            None => {
                self.out.upsert(
                    ORDERS,
                    &key,
                    json!({ "orderId": order_id, "patientId": self.pid, "status": "resulted" }),
                );
            }
        }
    }

    /// A new report raises `unreadResults` once.
    fn report_issued(&mut self, domain: Domain, report_id: &str) {
        let key = self.key(domain, report_id);
        if self.views.get(REPORTS, &key).is_none() {
            self.out.upsert(
                REPORTS,
                &key,
                json!({ "reportId": report_id, "patientId": self.pid, "unread": true }),
            );
            self.count_unread(domain, 1);
        }
    }

    /// `unreadResults` and its kind's count beside it move together.
    fn count_unread(&mut self, domain: Domain, delta: i64) {
        self.count("unreadResults", delta);
        self.count(&format!("unreadResultsByKind.{}", domain.kind), delta);
    }

    /// The first view of an unread report lowers `unreadResults`; later views
    /// change nothing. A view before the report arrives marks it read ahead.
    fn report_viewed(&mut self, domain: Domain, report_id: &str) {
        let key = self.key(domain, report_id);
        match self.views.get(REPORTS, &key) {
            Some(report) if report["unread"] == true => {
                self.out.merge(REPORTS, &key, json!({ "unread": false }));
                self.count_unread(domain, -1);
            }
            Some(_) => {}
            None => {
                self.out.upsert(
                    REPORTS,
                    &key,
                    json!({ "reportId": report_id, "patientId": self.pid, "unread": false }),
                );
            }
        }
    }
}

/// A chart with every field present, before any demographics are known.
fn empty_chart(pid: &str) -> Value {
    json!({
        "patientId": pid, "mrn": null, "name": null, "birthDate": null, "gender": null,
        "allergies": [], "medications": [], "latestVitals": null, "activeDiagnoses": [],
        "encounterSummary": { "lastEncounterAt": null, "count": 0 },
        "pendingOrders": { "lab": 0, "imaging": 0 },
        "unreadResults": 0, "unreadResultsByKind": { "lab": 0, "imaging": 0 },
        "updatedAt": null, "lastEventId": null,
    })
}

/// Each vital sign the chart keeps, by its name there.
fn measures(v: &Vitals) -> [(&'static str, Option<f64>); 8] {
    [
        ("heartRate", v.heart_rate),
        ("systolic", v.systolic),
        ("diastolic", v.diastolic),
        ("respiratoryRate", v.respiratory_rate),
        ("temperatureC", v.temperature_c),
        ("spo2", v.spo2),
        ("weightKg", v.weight_kg),
        ("heightCm", v.height_cm),
    ]
}

/// Whether `candidate` is later than `current` (absent counts as earliest).
fn is_newer(candidate: &str, current: Option<&str>) -> bool {
    current.is_none_or(|current| instant(candidate) > instant(current))
}

/// An RFC 3339 timestamp as milliseconds, so different offsets compare right.
fn instant(text: &str) -> i64 {
    projector_sdk::events::payloads::Timestamp::parse(text)
        .map(|t| t.instant().timestamp_millis())
        .unwrap_or(i64::MIN)
}

#[cfg(test)]
mod tests;
