//! The pharmacy plugin owns `MedicationView` (`medications`: the prescription,
//! its dispenses, interaction and allergy warnings) and alerts the prescriber
//! of interactions and allergy contraindications (urgent).

use projector_sdk::events::Payload;
use projector_sdk::{
    Event, Notification, Outcome, Plugin, PluginInfo, Value, ViewDef, Views, json, patient_key,
};

/// The MedicationView, keyed by prescription id.
pub const MEDICATIONS: &str = "medications";

/// The pharmacy plugin.
pub struct PharmacyPlugin;

impl Plugin for PharmacyPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "pharmacy",
            env!("CARGO_PKG_VERSION"),
            &["pharmacy.>"],
            vec![ViewDef::new(
                MEDICATIONS,
                "patientId/payload.prescriptionId",
                &["patientId"],
            )],
        )
    }

    fn handle(event: &Event, _views: &dyn Views) -> Result<Outcome, String> {
        let mut out = Outcome::default();
        let pid = event.patient_id.as_str();
        let key = |id: &str| patient_key(pid, id);
        let at = event.timestamp.as_str();
        match &event.payload {
            Payload::MedicationPrescribed(p) => {
                out.merge(MEDICATIONS, &key(&p.prescription_id), json!({
                    "prescriptionId": p.prescription_id, "patientId": pid, "prescriberId": p.prescriber_id,
                    "medication": p.medication, "dose": p.dose, "route": p.route, "frequency": p.frequency,
                    "quantity": p.quantity, "refills": p.refills, "prescribedAt": at, "status": "prescribed",
                }));
            }
            Payload::MedicationDispensed(p) => {
                out.merge(
                    MEDICATIONS,
                    &key(&p.prescription_id),
                    json!({
                        "prescriptionId": p.prescription_id, "patientId": pid,
                        "status": "dispensed", "lastDispensedAt": p.dispensed_at.as_str(),
                    }),
                );
                out.append(
                    MEDICATIONS,
                    &key(&p.prescription_id),
                    "dispenses",
                    json!({
                        "pharmacistId": p.pharmacist_id, "dispensedAt": p.dispensed_at.as_str(),
                        "quantity": p.quantity, "daysSupply": p.days_supply,
                    }),
                    None,
                );
            }
            Payload::InteractionAlert(p) => {
                let warning = json!({
                    "type": "interaction", "interactingMedication": p.interacting_medication,
                    "severity": p.severity, "description": p.description, "raisedAt": at,
                });
                warn(&mut out, event, &p.prescription_id, warning);
                out.notify(Notification::urgent(
                    &p.prescriber_id,
                    "drug_interaction",
                    "⚠️ DRUG INTERACTION",
                    &format!("{} interacts with {}: {}", p.medication.display, p.interacting_medication.display, p.description),
                    alert_data(pid, &p.prescription_id, json!({
                        "medication": p.medication.display, "interactingMedication": p.interacting_medication.display,
                        "severity": p.severity, "description": p.description,
                    })),
                    &format!("drug_interaction:{}:{}", p.prescription_id, p.interacting_medication.code),
                ));
            }
            Payload::AllergyContraindication(p) => {
                let warning = json!({
                    "type": "allergy", "allergyId": p.allergy_id, "substance": p.substance,
                    "severity": p.severity, "description": p.description, "raisedAt": at,
                });
                warn(&mut out, event, &p.prescription_id, warning);
                out.notify(Notification::urgent(
                    &p.prescriber_id,
                    "allergy_contraindication",
                    "⚠️ ALLERGY CONTRAINDICATION",
                    &format!(
                        "{} is contraindicated: allergy to {}",
                        p.medication.display, p.substance.display
                    ),
                    alert_data(
                        pid,
                        &p.prescription_id,
                        json!({
                            "medication": p.medication.display, "substance": p.substance.display,
                            "severity": p.severity, "description": p.description,
                        }),
                    ),
                    &format!(
                        "allergy_contraindication:{}:{}",
                        p.prescription_id, p.allergy_id
                    ),
                ));
            }
            _ => {}
        }
        Ok(out)
    }
}

projector_sdk::export_plugin!(PharmacyPlugin);

/// Adds a warning to the prescription (identified by the event that raised it).
fn warn(out: &mut Outcome, event: &Event, prescription_id: &str, mut warning: Value) {
    warning["eventId"] = json!(event.id);
    let key = patient_key(&event.patient_id, prescription_id);
    out.merge(
        MEDICATIONS,
        &key,
        json!({ "prescriptionId": prescription_id, "patientId": event.patient_id }),
    );
    out.append(MEDICATIONS, &key, "warnings", warning, Some("eventId"));
}

fn alert_data(pid: &str, prescription_id: &str, details: Value) -> Value {
    json!({
        "patientId": pid, "prescriptionId": prescription_id, "details": details,
        "action": { "type": "view_medication", "url": format!("/patients/{pid}/medications/{prescription_id}") },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use projector_sdk::testing::Harness;

    #[test]
    fn seed_flow_builds_the_medication_view() {
        let mut harness = Harness::<PharmacyPlugin>::new();
        harness
            .feed_jsonl(include_str!("../../../fixtures/seed-flow.jsonl"))
            .unwrap();
        let warfarin = harness
            .view(MEDICATIONS, &patient_key("p-john-doe", "rx-1"))
            .expect("rx-1");
        assert_eq!(warfarin["status"], "dispensed");
        assert_eq!(warfarin["dispenses"][0]["daysSupply"], 30);
        assert_eq!(warfarin["warnings"][0]["type"], "interaction");
        let amoxicillin = harness
            .view(MEDICATIONS, &patient_key("p-john-doe", "rx-2"))
            .expect("rx-2");
        assert_eq!(amoxicillin["status"], "prescribed");
        assert_eq!(amoxicillin["warnings"][0]["type"], "allergy");
        let kinds: Vec<&str> = harness
            .notifications
            .iter()
            .map(|n| n.kind.as_str())
            .collect();
        assert_eq!(kinds, ["drug_interaction", "allergy_contraindication"]);
        assert!(
            harness
                .notifications
                .iter()
                .all(|n| n.recipient == "u-dr-smith" && n.requires_ack)
        );
    }
}
