//! The reference model of a chart (issue 15): what a clinician should see
//! after a patient's events, computed in plain Rust from the clinical rules
//! (README "How it behaves"), independently of the plugins.
//!
//! Events of one patient are applied in the order they were published;
//! where a clinical time says which is newer (a vital sign's `recordedAt`,
//! an encounter's `startedAt` and `endedAt`, a dispense's `dispensedAt`),
//! that time decides, and on a tie the first applied stays.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// One clinical event, as the generator makes it: ids are small numbers so
/// that orders, results, views and repeats meet.
#[derive(Debug, Clone, PartialEq)]
pub enum Clinical {
    /// `lab.order.created`
    LabOrder { order: u8 },
    /// `lab.result.available` for an order.
    LabResult { order: u8, report: u8 },
    /// `lab.result.viewed`
    LabViewed { report: u8 },
    /// `radiology.order.created`
    ImagingOrder { order: u8 },
    /// `radiology.study.complete` for an order.
    StudyComplete { order: u8, study: u8 },
    /// `radiology.report.finalized` for a study.
    ReportFinalized { report: u8, study: u8 },
    /// `radiology.report.viewed`
    ImagingViewed { report: u8 },
    /// `encounter.vitals.recorded`: minutes into the day, heart rate and SpO2.
    Vitals {
        encounter: u8,
        at: u16,
        heart_rate: Option<u16>,
        spo2: Option<u16>,
    },
    /// `encounter.started`
    EncounterStarted { encounter: u8, at: u16 },
    /// `encounter.completed` with diagnoses: (system 0 SNOMED / 1 ICD-10, code).
    EncounterCompleted {
        encounter: u8,
        at: u16,
        diagnoses: Vec<(u8, u8)>,
    },
    /// `patient.allergy.added`: high criticality or not; status 0 absent,
    /// 1 active, 2 resolved.
    AllergyAdded { allergy: u8, high: bool, status: u8 },
    /// `patient.allergy.removed`
    AllergyRemoved { allergy: u8 },
    /// `pharmacy.medication.prescribed`
    Prescribed { rx: u8 },
    /// `pharmacy.medication.dispensed` at minutes into the day.
    Dispensed { rx: u8, at: u16 },
}

/// The patient every generated event is about.
pub const PATIENT: &str = "p-model";

/// A clinical time: minutes into 2026-11-26, as RFC 3339.
pub fn time(minutes: u16) -> String {
    format!(
        "2026-11-26T{:02}:{:02}:00Z",
        (minutes / 60).min(23),
        minutes % 60
    )
}

const SYSTEMS: [&str; 2] = [
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/icd-10-cm",
];

/// A diagnosis's system and code.
fn diagnosis(system: u8, code: u8) -> (&'static str, String) {
    (SYSTEMS[usize::from(system % 2)], format!("{}", 100 + code))
}

impl Clinical {
    /// The event as a publisher would send it, with this id, published at
    /// `at` (the envelope's time; clinical times are in the payload).
    pub fn envelope(&self, id: &str) -> Value {
        let (event_type, payload) = match self {
            Clinical::LabOrder { order } => (
                "lab.order.created",
                json!({ "orderId": format!("o{order}"), "orderingProviderId": "u-dr",
                        "tests": [{ "system": "http://loinc.org", "code": "2823-3", "display": "Potassium" }],
                        "priority": "routine" }),
            ),
            Clinical::LabResult { order, report } => (
                "lab.result.available",
                json!({ "reportId": format!("r{report}"), "orderId": format!("o{order}"),
                        "orderingProviderId": "u-dr", "issuedAt": time(600),
                        "results": [{ "code": { "system": "http://loinc.org", "code": "2823-3", "display": "Potassium" },
                                      "value": 4.1, "unit": "mmol/L" }] }),
            ),
            Clinical::LabViewed { report } => (
                "lab.result.viewed",
                json!({ "reportId": format!("r{report}"), "viewedBy": "u-dr" }),
            ),
            Clinical::ImagingOrder { order } => (
                "radiology.order.created",
                json!({ "orderId": format!("o{order}"), "orderingProviderId": "u-dr", "modality": "CT",
                        "procedure": { "system": "http://snomed.info/sct", "code": "169069000", "display": "CT of chest" },
                        "priority": "routine" }),
            ),
            Clinical::StudyComplete { order, study } => (
                "radiology.study.complete",
                json!({ "studyId": format!("s{study}"), "orderId": format!("o{order}"), "modality": "CT",
                        "imageCount": 1, "bucket": "radiology-images" }),
            ),
            Clinical::ReportFinalized { report, study } => (
                "radiology.report.finalized",
                json!({ "reportId": format!("r{report}"), "studyId": format!("s{study}"),
                        "orderingProviderId": "u-dr", "radiologistId": "u-rad",
                        "findings": "none", "impression": "normal" }),
            ),
            Clinical::ImagingViewed { report } => (
                "radiology.report.viewed",
                json!({ "reportId": format!("r{report}"), "viewedBy": "u-dr" }),
            ),
            Clinical::Vitals {
                encounter,
                at,
                heart_rate,
                spo2,
            } => (
                "encounter.vitals.recorded",
                json!({ "encounterId": format!("enc{encounter}"), "recordedAt": time(*at),
                        "vitals": { "heartRate": heart_rate, "spo2": spo2 } }),
            ),
            Clinical::EncounterStarted { encounter, at } => (
                "encounter.started",
                json!({ "encounterId": format!("enc{encounter}"), "providerId": "u-dr",
                        "class": "AMB", "startedAt": time(*at) }),
            ),
            Clinical::EncounterCompleted {
                encounter,
                at,
                diagnoses,
            } => (
                "encounter.completed",
                json!({ "encounterId": format!("enc{encounter}"), "endedAt": time(*at),
                        "diagnoses": diagnoses.iter().map(|(s, c)| {
                            let (system, code) = diagnosis(*s, *c);
                            json!({ "system": system, "code": code, "display": "d" })
                        }).collect::<Vec<_>>() }),
            ),
            Clinical::AllergyAdded {
                allergy,
                high,
                status,
            } => {
                let mut payload = json!({ "allergyId": format!("a{allergy}"),
                    "substance": { "system": "http://snomed.info/sct", "code": "764146007", "display": "Penicillin" },
                    "criticality": if *high { "high" } else { "low" } });
                match status {
                    1 => payload["clinicalStatus"] = json!("active"),
                    2 => payload["clinicalStatus"] = json!("resolved"),
                    _ => {}
                }
                ("patient.allergy.added", payload)
            }
            Clinical::AllergyRemoved { allergy } => (
                "patient.allergy.removed",
                json!({ "allergyId": format!("a{allergy}") }),
            ),
            Clinical::Prescribed { rx } => (
                "pharmacy.medication.prescribed",
                json!({ "prescriptionId": format!("rx{rx}"), "prescriberId": "u-dr",
                        "medication": { "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "855332", "display": "Warfarin" } }),
            ),
            Clinical::Dispensed { rx, at } => (
                "pharmacy.medication.dispensed",
                json!({ "prescriptionId": format!("rx{rx}"), "pharmacistId": "u-ph",
                        "dispensedAt": time(*at), "quantity": 30, "daysSupply": 30 }),
            ),
        };
        json!({
            "eventId": id, "eventType": event_type, "eventVersion": 1, "timestamp": time(720),
            "patientId": PATIENT, "userId": "u-source", "portalType": "provider", "payload": payload,
        })
    }
}

/// The newest value of something timed: a clinical time decides, the first
/// applied stays on a tie.
#[derive(Debug, Clone, PartialEq)]
struct Newest<T> {
    at: u16,
    value: T,
}

impl<T> Newest<T> {
    fn offer(slot: &mut Option<Self>, at: u16, value: T) {
        if slot.as_ref().is_none_or(|n| at > n.at) {
            *slot = Some(Newest { at, value });
        }
    }
}

/// The chart the events imply, field by field.
#[derive(Debug, Default)]
pub struct Expected {
    lab_orders: BTreeSet<u8>,
    imaging_orders: BTreeSet<u8>,
    lab_resulted: BTreeSet<u8>,
    imaging_resulted: BTreeSet<u8>,
    lab_reports: BTreeSet<u8>,
    imaging_reports: BTreeSet<u8>,
    lab_viewed: BTreeSet<u8>,
    imaging_viewed: BTreeSet<u8>,
    heart_rate: Option<Newest<u16>>,
    spo2: Option<Newest<u16>>,
    vitals_at: Option<u16>,
    encounters: BTreeSet<u8>,
    last_encounter: Option<u16>,
    diagnoses: BTreeMap<(u8, String), Option<Newest<u8>>>,
    allergies: BTreeMap<u8, (bool, u8)>,
    prescriptions: BTreeMap<u8, Option<Newest<()>>>,
}

impl Expected {
    /// The chart after `events`, each applied once however often it was
    /// delivered (the caller passes each distinct event once).
    pub fn of(events: &[Clinical]) -> Self {
        let mut chart = Self::default();
        for event in events {
            chart.apply(event);
        }
        chart
    }

    fn apply(&mut self, event: &Clinical) {
        match event {
            Clinical::LabOrder { order } => {
                self.lab_orders.insert(*order);
            }
            Clinical::LabResult { order, report } => {
                self.lab_resulted.insert(*order);
                self.lab_reports.insert(*report);
            }
            Clinical::LabViewed { report } => {
                self.lab_viewed.insert(*report);
            }
            Clinical::ImagingOrder { order } => {
                self.imaging_orders.insert(*order);
            }
            Clinical::StudyComplete { order, .. } => {
                self.imaging_resulted.insert(*order);
            }
            Clinical::ReportFinalized { report, .. } => {
                self.imaging_reports.insert(*report);
            }
            Clinical::ImagingViewed { report } => {
                self.imaging_viewed.insert(*report);
            }
            Clinical::Vitals {
                at,
                heart_rate,
                spo2,
                ..
            } => {
                if let Some(value) = heart_rate {
                    Newest::offer(&mut self.heart_rate, *at, *value);
                }
                if let Some(value) = spo2 {
                    Newest::offer(&mut self.spo2, *at, *value);
                }
                self.vitals_at = Some(self.vitals_at.map_or(*at, |v| v.max(*at)));
            }
            Clinical::EncounterStarted { encounter, at } => {
                self.encounters.insert(*encounter);
                self.last_encounter = Some(self.last_encounter.map_or(*at, |l| l.max(*at)));
            }
            Clinical::EncounterCompleted {
                encounter,
                at,
                diagnoses,
            } => {
                for (system, code) in diagnoses {
                    let (system, code) = diagnosis(*system, *code);
                    let key = (u8::from(system == SYSTEMS[1]), code);
                    Newest::offer(self.diagnoses.entry(key).or_default(), *at, *encounter);
                }
            }
            Clinical::AllergyAdded {
                allergy,
                high,
                status,
            } => {
                self.allergies.insert(*allergy, (*high, *status));
            }
            Clinical::AllergyRemoved { allergy } => {
                self.allergies.remove(allergy);
            }
            Clinical::Prescribed { rx } => {
                self.prescriptions.entry(*rx).or_default();
            }
            Clinical::Dispensed { rx, at } => {
                Newest::offer(self.prescriptions.entry(*rx).or_default(), *at, ());
            }
        }
    }

    /// Each diagnosis with its newest encounter, by key.
    fn diagnoses(&self) -> Vec<Value> {
        let mut listed: Vec<(String, Value)> = self
            .diagnoses
            .iter()
            .filter_map(|((system, code), newest)| {
                let newest = newest.as_ref()?;
                let key = format!("{}|{code}", SYSTEMS[usize::from(*system)]);
                let item = json!({ "key": key, "encounterId": format!("enc{}", newest.value),
                                   "recordedAt": time(newest.at) });
                Some((key, item))
            })
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        listed.into_iter().map(|(_, item)| item).collect()
    }

    /// What the chart shows of these fields, in the chart's own shape.
    pub fn fields(&self) -> Value {
        let unread_lab = self.lab_reports.difference(&self.lab_viewed).count();
        let unread_imaging = self
            .imaging_reports
            .difference(&self.imaging_viewed)
            .count();
        let measure = |n: &Option<Newest<u16>>| {
            n.as_ref()
                .map(|n| json!({ "value": f64::from(n.value), "recordedAt": time(n.at) }))
        };
        let vitals = self.vitals_at.map(|at| {
            let mut vitals = json!({ "recordedAt": time(at) });
            if let Some(m) = measure(&self.heart_rate) {
                vitals["heartRate"] = m;
            }
            if let Some(m) = measure(&self.spo2) {
                vitals["spo2"] = m;
            }
            vitals
        });
        json!({
            "pendingOrders": {
                "lab": self.lab_orders.difference(&self.lab_resulted).count(),
                "imaging": self.imaging_orders.difference(&self.imaging_resulted).count(),
            },
            "unreadResults": unread_lab + unread_imaging,
            "unreadResultsByKind": { "lab": unread_lab, "imaging": unread_imaging },
            "latestVitals": vitals,
            "encounterSummary": {
                "count": self.encounters.len(),
                "lastEncounterAt": self.last_encounter.map(time),
            },
            "activeDiagnoses": self.diagnoses(),
            "allergies": self.allergies.iter().map(|(id, (high, status))| json!({
                "allergyId": format!("a{id}"),
                "criticality": if *high { "high" } else { "low" },
                "clinicalStatus": if *status == 2 { "resolved" } else { "active" },
            })).collect::<Vec<_>>(),
            "medications": self.prescriptions.iter().map(|(rx, dispensed)| json!({
                "prescriptionId": format!("rx{rx}"),
                "status": if dispensed.is_some() { "dispensed" } else { "prescribed" },
                "lastDispensedAt": dispensed.as_ref().map(|d| time(d.at)),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The same fields of a chart the plugin wrote, lists sorted by their id so
/// that the order items were added in does not count.
pub fn observed(chart: &Value) -> Value {
    let pick = |list: &str, fields: &[&str], by: &str| {
        let mut items: Vec<Value> = chart[list]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                fields
                    .iter()
                    .map(|f| ((*f).to_owned(), item[*f].clone()))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            })
            .collect();
        items.sort_by_key(|i: &Value| i[by].as_str().unwrap_or_default().to_owned());
        Value::Array(items)
    };
    let vitals = match &chart["latestVitals"] {
        Value::Null => Value::Null,
        v => {
            let mut shown = json!({ "recordedAt": v["recordedAt"] });
            for m in ["heartRate", "spo2"] {
                if !v[m].is_null() {
                    shown[m] = json!({ "value": v[m]["value"], "recordedAt": v[m]["recordedAt"] });
                }
            }
            shown
        }
    };
    json!({
        "pendingOrders": chart["pendingOrders"],
        "unreadResults": chart["unreadResults"],
        "unreadResultsByKind": chart["unreadResultsByKind"],
        "latestVitals": vitals,
        "encounterSummary": chart["encounterSummary"],
        "activeDiagnoses": pick("activeDiagnoses", &["key", "encounterId", "recordedAt"], "key"),
        "allergies": pick("allergies", &["allergyId", "criticality", "clinicalStatus"], "allergyId"),
        "medications": pick("medications", &["prescriptionId", "status", "lastDispensedAt"], "prescriptionId"),
    })
}
