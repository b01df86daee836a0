//! The encounter plugin owns `EncounterView` (`encounters`: the visit, its
//! diagnoses, procedures, vitals and the orders placed during it) and
//! `open_encounters` (a patient's encounter in progress, to attach orders to).

use projector_sdk::events::Payload;
use projector_sdk::{Event, Outcome, Plugin, PluginInfo, ViewDef, Views, json, patient_key};

/// The EncounterView, keyed by encounter id.
pub const ENCOUNTERS: &str = "encounters";
/// Each patient's encounter in progress, keyed by patient id.
pub const OPEN: &str = "open_encounters";

/// The encounter plugin.
pub struct EncounterPlugin;

impl Plugin for EncounterPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "encounter",
            env!("CARGO_PKG_VERSION"),
            &[
                "encounter.>",
                "lab.order.created",
                "radiology.order.created",
            ],
            vec![
                ViewDef::new(ENCOUNTERS, "patientId/payload.encounterId", &["patientId"]),
                ViewDef::new(OPEN, "patientId", &[]),
            ],
        )
    }

    fn handle(event: &Event, views: &dyn Views) -> Result<Outcome, String> {
        let mut out = Outcome::default();
        let pid = event.patient_id.as_str();
        let key = |id: &str| patient_key(pid, id);
        match &event.payload {
            Payload::EncounterStarted(p) => {
                out.merge(ENCOUNTERS, &key(&p.encounter_id), json!({
                    "encounterId": p.encounter_id, "patientId": pid, "providerId": p.provider_id,
                    "class": p.class, "reason": p.reason, "startedAt": p.started_at.as_str(),
                    "location": p.location, "status": "in-progress",
                }));
                out.upsert(
                    OPEN,
                    pid,
                    json!({ "patientId": pid, "encounterId": p.encounter_id }),
                );
            }
            Payload::EncounterCompleted(p) => {
                out.merge(ENCOUNTERS, &key(&p.encounter_id), json!({
                    "encounterId": p.encounter_id, "patientId": pid, "endedAt": p.ended_at.as_str(),
                    "diagnoses": p.diagnoses, "procedures": p.procedures,
                    "disposition": p.disposition, "status": "finished",
                }));
                let open = views.get(OPEN, pid);
                if open.is_some_and(|o| o["encounterId"] == p.encounter_id.as_str()) {
                    out.delete(OPEN, pid);
                }
            }
            Payload::VitalsRecorded(p) => {
                let mut reading = serde_json::to_value(&p.vitals).map_err(|e| e.to_string())?;
                reading["recordedAt"] = json!(p.recorded_at.as_str());
                out.merge(
                    ENCOUNTERS,
                    &key(&p.encounter_id),
                    json!({ "encounterId": p.encounter_id, "patientId": pid }),
                );
                out.append(
                    ENCOUNTERS,
                    &key(&p.encounter_id),
                    "vitals",
                    reading,
                    Some("recordedAt"),
                );
            }
            Payload::LabOrderCreated(p) => {
                attach_order(
                    &mut out,
                    views,
                    pid,
                    json!({
                        "orderId": p.order_id, "kind": "lab", "priority": p.priority,
                        "tests": p.tests, "orderedAt": event.timestamp.as_str(),
                    }),
                );
            }
            Payload::RadiologyOrderCreated(p) => {
                attach_order(
                    &mut out,
                    views,
                    pid,
                    json!({
                        "orderId": p.order_id, "kind": "imaging", "priority": p.priority,
                        "procedure": p.procedure, "orderedAt": event.timestamp.as_str(),
                    }),
                );
            }
            _ => {}
        }
        Ok(out)
    }
}

projector_sdk::export_plugin!(EncounterPlugin);

/// Records an order on the patient's encounter in progress, if there is one.
fn attach_order(out: &mut Outcome, views: &dyn Views, pid: &str, order: projector_sdk::Value) {
    if let Some(open) = views.get(OPEN, pid)
        && let Some(encounter_id) = open["encounterId"].as_str()
    {
        out.append(
            ENCOUNTERS,
            &patient_key(pid, encounter_id),
            "orders",
            order,
            Some("orderId"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use projector_sdk::testing::Harness;

    #[test]
    fn seed_flow_builds_the_encounter_view() {
        let mut harness = Harness::<EncounterPlugin>::new();
        harness
            .feed_jsonl(include_str!("../../../fixtures/seed-flow.jsonl"))
            .unwrap();
        let visit = harness
            .view(ENCOUNTERS, &patient_key("p-john-doe", "enc-1"))
            .expect("encounter");
        assert_eq!(visit["status"], "finished");
        assert_eq!(visit["class"], "EMER");
        assert_eq!(visit["diagnoses"].as_array().unwrap().len(), 2);
        assert_eq!(visit["vitals"].as_array().unwrap().len(), 3);
        let orders: Vec<&str> = visit["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["orderId"].as_str().unwrap())
            .collect();
        assert_eq!(orders, ["ord-lab-1", "ord-rad-1"]);
        assert!(
            harness.view(OPEN, "p-john-doe").is_none(),
            "completed encounter is no longer open"
        );
    }
}
