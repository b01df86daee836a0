//! Sepsis screening per encounter, from vital signs and lab results.
//!
//! The criteria (each from the newest measurement of its kind):
//! - SIRS: temperature > 38 °C or < 36 °C; heart rate > 90/min; respiratory
//!   rate > 20/min; white cell count (LOINC 6690-2) > 12 or < 4 ×10⁹/L.
//! - qSOFA (the two criteria the events carry): respiratory rate ≥ 22/min;
//!   systolic pressure ≤ 100 mmHg.
//! - Lactate (LOINC 2524-7) ≥ 2 mmol/L.
//!
//! An encounter screens positive when two or more SIRS criteria are met, or
//! both qSOFA criteria, or lactate is raised. The first time it does, its
//! provider gets an urgent `sepsis_screen_positive` notification; later
//! positive readings change the screen, not the notification count. Lab
//! results count towards the patient's open encounter; a result with no open
//! encounter is not screened. Results are read by their LOINC code (a local
//! code with the same number is not read); neither the encounter's class nor
//! a result's interpretation flag matters, so an encounter of any class,
//! listed or not, is screened.

use projector_sdk::events::Payload;
use projector_sdk::events::payloads::{ResultValue, Vitals};
use projector_sdk::{
    Event, Notification, Outcome, Plugin, PluginInfo, Value, ViewDef, Views, json,
};

/// The screen of each encounter, keyed by encounter id.
pub const SCREEN: &str = "sepsis_screen";
/// Each patient's open encounter (id and provider), keyed by patient id.
pub const OPEN: &str = "sepsis_open_encounters";

/// LOINC of the white cell count.
pub const WHITE_CELLS: &str = "6690-2";
/// LOINC of lactate.
pub const LACTATE: &str = "2524-7";

/// The sepsis-screen plugin.
pub struct SepsisScreen;

impl Plugin for SepsisScreen {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "sepsis-screen",
            env!("CARGO_PKG_VERSION"),
            &["encounter.>", "lab.result.available"],
            vec![
                ViewDef::new(SCREEN, "payload.encounterId", &["patientId"]),
                ViewDef::new(OPEN, "patientId", &[]),
            ],
        )
    }

    fn handle(event: &Event, views: &dyn Views) -> Result<Outcome, String> {
        let mut out = Outcome::default();
        let patient = event.patient_id.as_str();
        match &event.payload {
            Payload::EncounterStarted(p) => {
                out.upsert(
                    OPEN,
                    patient,
                    json!({ "encounterId": p.encounter_id, "providerId": p.provider_id }),
                );
                let mut screen = screen(views, &p.encounter_id, patient);
                screen["providerId"] = json!(p.provider_id);
                screen["status"] = json!("open");
                conclude(&mut out, &p.encounter_id, screen);
            }
            Payload::EncounterCompleted(p) => {
                let open = views.get(OPEN, patient);
                if open.is_some_and(|o| o["encounterId"] == p.encounter_id.as_str()) {
                    out.delete(OPEN, patient);
                }
                let mut screen = screen(views, &p.encounter_id, patient);
                screen["status"] = json!("finished");
                conclude(&mut out, &p.encounter_id, screen);
            }
            Payload::VitalsRecorded(p) => {
                let mut screen = screen(views, &p.encounter_id, patient);
                let at = p.recorded_at.as_str();
                for (name, value) in vital_signs(&p.vitals) {
                    record(&mut screen, name, value, at);
                }
                conclude(&mut out, &p.encounter_id, screen);
            }
            Payload::LabResultAvailable(p) => {
                let Some(open) = views.get(OPEN, patient) else {
                    return Ok(out);
                };
                let Some(encounter) = open["encounterId"].as_str() else {
                    return Ok(out);
                };
                let mut screen = screen(views, encounter, patient);
                for result in &p.results {
                    let name = if result.code.is_loinc(WHITE_CELLS) {
                        "whiteCellCount"
                    } else if result.code.is_loinc(LACTATE) {
                        "lactate"
                    } else {
                        continue;
                    };
                    if let Some(ResultValue::Number(value)) = result.value {
                        record(&mut screen, name, value, p.issued_at.as_str());
                    }
                }
                conclude(&mut out, encounter, screen);
            }
            _ => {}
        }
        Ok(out)
    }
}

/// The encounter's screen so far, or a new one.
fn screen(views: &dyn Views, encounter: &str, patient: &str) -> Value {
    views.get(SCREEN, encounter).unwrap_or_else(|| {
        json!({ "encounterId": encounter, "patientId": patient, "latest": {}, "positive": false })
    })
}

/// The vital signs a screen uses, by the name the screen keeps them under.
fn vital_signs(vitals: &Vitals) -> Vec<(&'static str, f64)> {
    [
        ("temperatureC", vitals.temperature_c),
        ("heartRate", vitals.heart_rate),
        ("respiratoryRate", vitals.respiratory_rate),
        ("systolic", vitals.systolic),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
    .collect()
}

/// Keeps a measurement unless a newer one of its kind is already there
/// (events may arrive out of order).
fn record(screen: &mut Value, name: &str, value: f64, at: &str) {
    let newer_known = screen["latest"][name]["at"]
        .as_str()
        .is_some_and(|known| known > at);
    if !newer_known {
        screen["latest"][name] = json!({ "value": value, "at": at });
    }
}

/// Which criteria the newest measurements meet.
#[derive(Debug, Default, PartialEq)]
pub struct Criteria {
    /// SIRS criteria met.
    pub sirs: Vec<&'static str>,
    /// qSOFA criteria met.
    pub qsofa: Vec<&'static str>,
    /// Lactate ≥ 2 mmol/L.
    pub lactate: bool,
}

impl Criteria {
    /// Evaluates the screen's newest measurements.
    pub fn of(latest: &Value) -> Self {
        let value = |name: &str| latest[name]["value"].as_f64();
        let met = |name: &str, test: fn(f64) -> bool| value(name).is_some_and(test);
        let mut sirs = Vec::new();
        if met("temperatureC", |t| !(36.0..=38.0).contains(&t)) {
            sirs.push("temperature");
        }
        if met("heartRate", |hr| hr > 90.0) {
            sirs.push("heartRate");
        }
        if met("respiratoryRate", |rr| rr > 20.0) {
            sirs.push("respiratoryRate");
        }
        if met("whiteCellCount", |wbc| !(4.0..=12.0).contains(&wbc)) {
            sirs.push("whiteCellCount");
        }
        let mut qsofa = Vec::new();
        if met("respiratoryRate", |rr| rr >= 22.0) {
            qsofa.push("respiratoryRate");
        }
        if met("systolic", |sbp| sbp <= 100.0) {
            qsofa.push("systolic");
        }
        Self {
            sirs,
            qsofa,
            lactate: met("lactate", |l| l >= 2.0),
        }
    }

    /// Whether the encounter screens positive.
    pub fn positive(&self) -> bool {
        self.sirs.len() >= 2 || self.qsofa.len() >= 2 || self.lactate
    }
}

/// Writes the screen with its criteria, and notifies the provider the first
/// time it is positive with a provider known.
fn conclude(out: &mut Outcome, encounter: &str, mut screen: Value) {
    let criteria = Criteria::of(&screen["latest"]);
    screen["criteria"] =
        json!({ "sirs": criteria.sirs, "qsofa": criteria.qsofa, "lactate": criteria.lactate });
    screen["positive"] = json!(criteria.positive());
    let provider = screen["providerId"].as_str().map(str::to_owned);
    if let (true, Some(provider), true) = (
        criteria.positive(),
        provider,
        screen["notifiedAt"].is_null(),
    ) {
        let latest_at = [
            "temperatureC",
            "heartRate",
            "respiratoryRate",
            "systolic",
            "whiteCellCount",
            "lactate",
        ]
        .iter()
        .filter_map(|name| screen["latest"][*name]["at"].as_str())
        .max()
        .unwrap_or_default()
        .to_owned();
        screen["notifiedAt"] = json!(latest_at);
        let patient = screen["patientId"].as_str().unwrap_or_default().to_owned();
        out.notify(Notification::urgent(
            &provider,
            "sepsis_screen_positive",
            "⚠️ SEPSIS SCREEN POSITIVE",
            &format!(
                "Sepsis screen positive: SIRS {}/4, qSOFA {}/2{}",
                criteria.sirs.len(),
                criteria.qsofa.len(),
                if criteria.lactate { ", lactate ≥ 2 mmol/L" } else { "" }
            ),
            json!({
                "patientId": patient, "encounterId": encounter,
                "details": { "sirs": criteria.sirs, "qsofa": criteria.qsofa, "lactate": criteria.lactate },
                "action": { "type": "view_encounter", "url": format!("/patients/{patient}/encounters/{encounter}") },
            }),
            &format!("sepsis_screen_positive:{encounter}"),
        ));
    }
    out.upsert(SCREEN, encounter, screen);
}

projector_sdk::export_plugin!(SepsisScreen);

#[cfg(test)]
mod tests {
    use super::*;
    use projector_sdk::testing::Harness;

    const ENC: &str = "enc-7";

    fn line(n: u32, event_type: &str, payload: Value) -> String {
        json!({
            "eventId": format!("e-{n}"), "eventType": event_type, "eventVersion": 1,
            "timestamp": format!("2026-11-26T10:{:02}:00Z", n % 60), "patientId": "p-7",
            "userId": "u-nurse-1", "portalType": "provider", "fhirResourceType": "Observation",
            "payload": payload,
        })
        .to_string()
    }

    fn started() -> String {
        line(
            1,
            "encounter.started",
            json!({
                "encounterId": ENC, "providerId": "u-dr-ray", "class": "EMER", "reason": "Fever",
                "startedAt": "2026-11-26T10:00:00Z", "location": "ED 1",
            }),
        )
    }

    fn vitals(n: u32, vitals: Value) -> String {
        line(
            n,
            "encounter.vitals.recorded",
            json!({
                "encounterId": ENC, "recordedAt": format!("2026-11-26T10:{n:02}:00Z"), "vitals": vitals,
            }),
        )
    }

    fn lab(n: u32, loinc: &str, value: f64) -> String {
        line(
            n,
            "lab.result.available",
            json!({
                "reportId": format!("rep-{n}"), "orderId": "o-1", "orderingProviderId": "u-dr-ray",
                "issuedAt": format!("2026-11-26T10:{n:02}:00Z"),
                "results": [{ "code": { "system": "http://loinc.org", "code": loinc, "display": "x" },
                              "value": value, "unit": "x", "referenceRange": "", "interpretation": "N", "critical": false }],
            }),
        )
    }

    /// The screen after the encounter starts and `lines` arrive.
    fn run(lines: &[String]) -> Harness<SepsisScreen> {
        let mut harness = Harness::<SepsisScreen>::new();
        harness.feed_jsonl(&started()).unwrap();
        harness.feed_jsonl(&lines.join("\n")).unwrap();
        harness
    }

    fn criteria(lines: &[String]) -> Value {
        run(lines).view(SCREEN, ENC).unwrap()["criteria"].clone()
    }

    #[test]
    fn each_sirs_criterion_at_its_boundary() {
        let sirs = |lines: &[String]| criteria(lines)["sirs"].clone();
        assert_eq!(sirs(&[vitals(2, json!({"temperatureC": 38.0}))]), json!([]));
        assert_eq!(
            sirs(&[vitals(2, json!({"temperatureC": 38.1}))]),
            json!(["temperature"])
        );
        assert_eq!(sirs(&[vitals(2, json!({"temperatureC": 36.0}))]), json!([]));
        assert_eq!(
            sirs(&[vitals(2, json!({"temperatureC": 35.9}))]),
            json!(["temperature"])
        );
        assert_eq!(sirs(&[vitals(2, json!({"heartRate": 90}))]), json!([]));
        assert_eq!(
            sirs(&[vitals(2, json!({"heartRate": 91}))]),
            json!(["heartRate"])
        );
        assert_eq!(
            sirs(&[vitals(2, json!({"respiratoryRate": 20}))]),
            json!([])
        );
        assert_eq!(
            sirs(&[vitals(2, json!({"respiratoryRate": 21}))]),
            json!(["respiratoryRate"])
        );
        assert_eq!(sirs(&[lab(2, WHITE_CELLS, 12.0)]), json!([]));
        assert_eq!(
            sirs(&[lab(2, WHITE_CELLS, 12.1)]),
            json!(["whiteCellCount"])
        );
        assert_eq!(sirs(&[lab(2, WHITE_CELLS, 4.0)]), json!([]));
        assert_eq!(sirs(&[lab(2, WHITE_CELLS, 3.9)]), json!(["whiteCellCount"]));
    }

    #[test]
    fn each_qsofa_criterion_and_lactate_at_its_boundary() {
        let qsofa = |lines: &[String]| criteria(lines)["qsofa"].clone();
        assert_eq!(
            qsofa(&[vitals(2, json!({"respiratoryRate": 21}))]),
            json!([])
        );
        assert_eq!(
            qsofa(&[vitals(2, json!({"respiratoryRate": 22}))]),
            json!(["respiratoryRate"])
        );
        assert_eq!(qsofa(&[vitals(2, json!({"systolic": 101}))]), json!([]));
        assert_eq!(
            qsofa(&[vitals(2, json!({"systolic": 100}))]),
            json!(["systolic"])
        );
        assert_eq!(criteria(&[lab(2, LACTATE, 1.9)])["lactate"], false);
        assert_eq!(criteria(&[lab(2, LACTATE, 2.0)])["lactate"], true);
    }

    #[test]
    fn reads_loinc_only_and_screens_an_encounter_of_any_class() {
        let local =
            lab(2, LACTATE, 4.0).replace("http://loinc.org", "urn:oid:2.16.840.1.113883.19.5");
        assert_eq!(
            criteria(&[local])["lactate"],
            false,
            "a local code with LOINC's number"
        );
        for class in ["HH", "VR", "OBSENC", "LOCAL-WARD"] {
            let mut harness = Harness::<SepsisScreen>::new();
            harness
                .feed_jsonl(&started().replace("\"EMER\"", &format!("\"{class}\"")))
                .unwrap();
            harness.feed_jsonl(&lab(2, LACTATE, 4.0)).unwrap();
            assert_eq!(
                harness.view(SCREEN, ENC).unwrap()["positive"],
                true,
                "{class}"
            );
        }
    }

    #[test]
    fn positive_takes_two_sirs_or_both_qsofa_or_lactate() {
        let positive = |lines: &[String]| run(lines).view(SCREEN, ENC).unwrap()["positive"].clone();
        assert_eq!(positive(&[vitals(2, json!({"heartRate": 91}))]), false);
        assert_eq!(
            positive(&[vitals(2, json!({"heartRate": 91, "temperatureC": 38.1}))]),
            true
        );
        assert_eq!(
            positive(&[
                vitals(2, json!({"systolic": 100})),
                vitals(3, json!({"respiratoryRate": 22}))
            ]),
            true
        );
        assert_eq!(positive(&[lab(2, LACTATE, 2.0)]), true);
        // Negative just below every threshold at once.
        let calm =
            json!({"heartRate": 90, "temperatureC": 38.0, "respiratoryRate": 20, "systolic": 101});
        assert_eq!(
            positive(&[
                vitals(2, calm),
                lab(3, WHITE_CELLS, 12.0),
                lab(4, LACTATE, 1.9)
            ]),
            false
        );
    }

    #[test]
    fn one_notification_per_encounter_however_many_positive_readings() {
        let septic =
            json!({"heartRate": 120, "temperatureC": 39.0, "respiratoryRate": 26, "systolic": 90});
        let harness = run(&[
            vitals(2, septic.clone()),
            vitals(3, septic.clone()),
            lab(4, LACTATE, 4.0),
            vitals(5, septic),
        ]);
        assert_eq!(harness.notifications.len(), 1);
        let alert = &harness.notifications[0];
        assert_eq!(alert.recipient, "u-dr-ray");
        assert_eq!(alert.kind, "sepsis_screen_positive");
        assert!(alert.requires_ack);
        assert_eq!(alert.data["encounterId"], ENC);
        assert_eq!(
            harness.view(SCREEN, ENC).unwrap()["notifiedAt"],
            "2026-11-26T10:02:00Z"
        );
    }

    #[test]
    fn older_readings_do_not_replace_newer_ones_and_labs_need_an_open_encounter() {
        let harness = run(&[
            vitals(5, json!({"heartRate": 80})),
            vitals(3, json!({"heartRate": 120})),
        ]);
        assert_eq!(
            harness.view(SCREEN, ENC).unwrap()["latest"]["heartRate"]["value"],
            80.0
        );
        let mut closed = Harness::<SepsisScreen>::new();
        closed.feed_jsonl(&lab(2, LACTATE, 5.0)).unwrap();
        assert!(closed.view(SCREEN, ENC).is_none());
        assert!(closed.notifications.is_empty());
    }
}
