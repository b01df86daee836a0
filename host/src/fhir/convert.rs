//! The mapping from one patient's bundle to events, resource by resource.

use std::collections::HashMap;

use projector_events::payloads::{
    AllergyAdded, EncounterCompleted, EncounterStarted, HumanName, LabResult, LabResultAvailable,
    MedicationPrescribed, PatientCreated, ResultValue, Timestamp, Vitals, VitalsRecorded,
};
use projector_events::{Code, Event, Payload, PortalType};

use super::resources::{
    AllergyIntolerance, AtEncounter, Bundle, CodeableConcept, DiagnosticReport, Encounter,
    MedicationRequest, Observation, Patient, Resource,
};

/// Why a bundle could not be turned into events.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The bundle holds no Patient.
    #[error("the bundle holds no Patient")]
    NoPatient,
    /// A resource lacks what its event needs, or holds a value the event
    /// contract refuses.
    #[error("{resource}: {reason}")]
    Resource {
        /// `Type/id`.
        resource: String,
        /// What is wrong.
        reason: String,
    },
}

/// Who published what the bundle does not attribute to a person.
const IMPORTER: &str = "fhir-import";
/// The provider of an encounter that names none.
const UNASSIGNED: &str = "unassigned";

/// The events of one patient's bundle, in the order they happened
/// (`patient.created` first).
pub fn events(bundle: &Bundle) -> Result<Vec<Event>, ConvertError> {
    let record = Record::index(bundle)?;
    let created = record.patient_created()?;
    let mut events = record.allergies(&created.envelope.timestamp)?;
    for encounter in &record.encounters {
        events.extend(record.encounter(encounter)?);
    }
    // Stable: what happened at the same instant keeps the order above.
    events.sort_by_key(|e| e.envelope.timestamp.instant());
    events.insert(0, created);
    Ok(events)
}

/// One bundle's resources, indexed the way the events need them.
struct Record<'a> {
    patient: &'a Patient,
    allergies: Vec<&'a AllergyIntolerance>,
    encounters: Vec<&'a Encounter>,
    observations: HashMap<&'a str, &'a Observation>,
    /// Per encounter id, what was recorded at it.
    at: HashMap<&'a str, Recorded<'a>>,
}

/// What was recorded at one encounter.
#[derive(Default)]
struct Recorded<'a> {
    conditions: Vec<&'a AtEncounter>,
    procedures: Vec<&'a AtEncounter>,
    vital_signs: Vec<&'a Observation>,
    lab_reports: Vec<&'a DiagnosticReport>,
    prescriptions: Vec<&'a MedicationRequest>,
}

impl<'a> Record<'a> {
    fn index(bundle: &'a Bundle) -> Result<Self, ConvertError> {
        let patient = bundle
            .entry
            .iter()
            .find_map(|e| match &e.resource {
                Resource::Patient(p) => Some(p),
                _ => None,
            })
            .ok_or(ConvertError::NoPatient)?;
        let mut record = Self {
            patient,
            allergies: Vec::new(),
            encounters: Vec::new(),
            observations: HashMap::new(),
            at: HashMap::new(),
        };
        for entry in &bundle.entry {
            let at = |encounter: &'a Option<super::resources::Reference>| {
                encounter.as_ref().and_then(|r| r.id()).unwrap_or_default()
            };
            match &entry.resource {
                Resource::AllergyIntolerance(a) => record.allergies.push(a),
                Resource::Encounter(e) => record.encounters.push(e),
                Resource::Condition(c) => record.recorded(at(&c.encounter)).conditions.push(c),
                Resource::Procedure(p) => record.recorded(at(&p.encounter)).procedures.push(p),
                Resource::Observation(o) => {
                    record.observations.insert(&o.id, o);
                    if has_category(&o.category, "vital-signs") {
                        record.recorded(at(&o.encounter)).vital_signs.push(o);
                    }
                }
                Resource::DiagnosticReport(r) if has_category(&r.category, "LAB") => {
                    record.recorded(at(&r.encounter)).lab_reports.push(r);
                }
                Resource::MedicationRequest(m) => {
                    record.recorded(at(&m.encounter)).prescriptions.push(m);
                }
                Resource::DiagnosticReport(_) | Resource::Patient(_) | Resource::Other => {}
            }
        }
        Ok(record)
    }

    fn recorded(&mut self, encounter: &'a str) -> &mut Recorded<'a> {
        self.at.entry(encounter).or_default()
    }

    fn event(
        &self,
        id: String,
        at: Timestamp,
        user: &str,
        portal: PortalType,
        payload: Payload,
    ) -> Result<Event, ConvertError> {
        Event::new(&id, at, &self.patient.id, user, portal, payload).map_err(|reason| {
            ConvertError::Resource {
                resource: id.clone(),
                reason,
            }
        })
    }

    fn patient_created(&self) -> Result<Event, ConvertError> {
        let p = self.patient;
        let fail = failing(format!("Patient/{}", p.id));
        let mrn = p
            .identifier
            .iter()
            .find(|i| i.kind.as_ref().and_then(CodeableConcept::code) == Some("MR"))
            .and_then(|i| i.value.clone())
            .unwrap_or_else(|| p.id.clone());
        let name = p
            .name
            .iter()
            .find(|n| n.usage.as_deref() == Some("official"))
            .or(p.name.first());
        let birth_date = p
            .birth_date
            .clone()
            .ok_or_else(|| fail("no birthDate".into()))?;
        let payload = PatientCreated {
            mrn,
            name: HumanName {
                given: name.map(|n| n.given.join(" ")).unwrap_or_default(),
                family: name.and_then(|n| n.family.clone()).unwrap_or_default(),
            },
            gender: coded(p.gender.as_deref().unwrap_or("unknown")).map_err(&fail)?,
            birth_date: birth_date.clone(),
        };
        let at = instant(&birth_date).map_err(fail)?;
        self.event(
            format!("Patient/{}", p.id),
            at,
            IMPORTER,
            PortalType::System,
            Payload::PatientCreated(payload),
        )
    }

    /// One event per allergy, at its recorded (else onset) time; one with
    /// neither is dated when the patient was registered.
    fn allergies(&self, registered: &Timestamp) -> Result<Vec<Event>, ConvertError> {
        let mut events = Vec::new();
        for a in &self.allergies {
            let resource = format!("AllergyIntolerance/{}", a.id);
            let fail = failing(resource.clone());
            let reaction = a.reaction.first();
            let payload = AllergyAdded {
                allergy_id: a.id.clone(),
                substance: code(&a.code).map_err(&fail)?,
                reaction: reaction
                    .and_then(|r| r.manifestation.first())
                    .and_then(CodeableConcept::label)
                    .unwrap_or_default()
                    .to_owned(),
                severity: optional(reaction.and_then(|r| r.severity.as_deref())).map_err(&fail)?,
                criticality: optional(a.criticality.as_deref()).map_err(&fail)?,
                clinical_status: optional(
                    a.clinical_status.as_ref().and_then(CodeableConcept::code),
                )
                .map_err(&fail)?,
            };
            let recorded = a.recorded_date.as_ref().or(a.onset_date_time.as_ref());
            let at = match recorded {
                Some(text) => instant(text).map_err(&fail)?,
                None => registered.clone(),
            };
            events.push(self.event(
                resource,
                at,
                IMPORTER,
                PortalType::Provider,
                Payload::AllergyAdded(payload),
            )?);
        }
        Ok(events)
    }

    /// Everything of one encounter, from its start to its end.
    fn encounter(&self, e: &Encounter) -> Result<Vec<Event>, ConvertError> {
        let resource = format!("Encounter/{}", e.id);
        let fail = failing(resource.clone());
        let provider = e
            .participant
            .iter()
            .find_map(|p| p.individual.as_ref().and_then(|r| r.id()))
            .unwrap_or(UNASSIGNED);
        let start = e
            .period
            .start
            .as_deref()
            .ok_or_else(|| fail("no period.start".into()))?;
        let started_at = instant(start).map_err(&fail)?;
        let ended_at = instant(e.period.end.as_deref().unwrap_or(start)).map_err(&fail)?;
        let recorded = self.at.get(e.id.as_str());
        let empty = Recorded::default();
        let recorded = recorded.unwrap_or(&empty);

        let started = EncounterStarted {
            encounter_id: e.id.clone(),
            provider_id: provider.to_owned(),
            class: coded(e.class.code.as_deref().unwrap_or_default()).map_err(&fail)?,
            reason: e
                .reason_code
                .first()
                .or(e.kind.first())
                .and_then(CodeableConcept::label)
                .unwrap_or_default()
                .to_owned(),
            started_at: started_at.clone(),
            location: e
                .location
                .first()
                .and_then(|l| l.location.display.clone())
                .unwrap_or_default(),
        };
        let mut events = vec![self.event(
            format!("{resource}/started"),
            started_at,
            provider,
            PortalType::Provider,
            Payload::EncounterStarted(started),
        )?];
        for (n, (at, vitals)) in vital_signs(&recorded.vital_signs)
            .map_err(&fail)?
            .into_iter()
            .enumerate()
        {
            let payload = VitalsRecorded {
                encounter_id: e.id.clone(),
                recorded_at: at.clone(),
                vitals,
            };
            events.push(self.event(
                format!("{resource}/vitals/{n}"),
                at,
                provider,
                PortalType::Provider,
                Payload::VitalsRecorded(payload),
            )?);
        }
        for report in &recorded.lab_reports {
            events.push(self.lab_report(report, provider)?);
        }
        for prescription in &recorded.prescriptions {
            events.push(self.prescription(prescription, provider)?);
        }
        let codes = |kind: &str, items: &[&AtEncounter]| -> Result<Vec<Code>, ConvertError> {
            items
                .iter()
                .map(|i| code(&i.code).map_err(failing(format!("{kind}/{}", i.id))))
                .collect()
        };
        let completed = EncounterCompleted {
            encounter_id: e.id.clone(),
            ended_at: ended_at.clone(),
            diagnoses: codes("Condition", &recorded.conditions)?,
            procedures: codes("Procedure", &recorded.procedures)?,
            disposition: e
                .hospitalization
                .as_ref()
                .and_then(|h| h.discharge_disposition.as_ref())
                .and_then(CodeableConcept::label)
                .unwrap_or_default()
                .to_owned(),
        };
        events.push(self.event(
            format!("{resource}/completed"),
            ended_at,
            provider,
            PortalType::Provider,
            Payload::EncounterCompleted(completed),
        )?);
        Ok(events)
    }

    /// A laboratory report: every result it lists, in its order.
    fn lab_report(&self, r: &DiagnosticReport, provider: &str) -> Result<Event, ConvertError> {
        let resource = format!("DiagnosticReport/{}", r.id);
        let fail = failing(resource.clone());
        let results = r
            .result
            .iter()
            .map(|reference| {
                let id = reference.id().unwrap_or_default();
                let observation = self
                    .observations
                    .get(id)
                    .ok_or_else(|| fail(format!("result {id} is not in the bundle")))?;
                lab_result(observation).map_err(failing(format!("Observation/{id}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let issued = r
            .issued
            .as_deref()
            .or(r.effective_date_time.as_deref())
            .ok_or_else(|| fail("neither issued nor effectiveDateTime".into()))?;
        let issued_at = instant(issued).map_err(&fail)?;
        let payload = LabResultAvailable {
            report_id: r.id.clone(),
            // A bundle without the ServiceRequest: the report stands for its order.
            order_id: r.id.clone(),
            ordering_provider_id: provider.to_owned(),
            issued_at: issued_at.clone(),
            results,
        };
        self.event(
            resource,
            issued_at,
            provider,
            PortalType::Lab,
            Payload::LabResultAvailable(payload),
        )
    }

    fn prescription(&self, m: &MedicationRequest, provider: &str) -> Result<Event, ConvertError> {
        let resource = format!("MedicationRequest/{}", m.id);
        let fail = failing(resource.clone());
        let medication = m.medication_codeable_concept.as_ref().ok_or_else(|| {
            fail("no medicationCodeableConcept (a medicationReference is not read)".into())
        })?;
        let prescriber = m
            .requester
            .as_ref()
            .and_then(|r| r.id())
            .unwrap_or(provider);
        let dosage = m.dosage_instruction.first();
        let dose = dosage
            .and_then(|d| d.dose_and_rate.first())
            .and_then(|d| d.dose_quantity.as_ref())
            .and_then(|q| {
                Some(format!(
                    "{} {}",
                    q.value?,
                    q.unit.as_deref().unwrap_or_default()
                ))
            })
            .or_else(|| dosage.and_then(|d| d.text.clone()))
            .unwrap_or_default();
        let repeat = dosage
            .and_then(|d| d.timing.as_ref())
            .and_then(|t| t.repeat.as_ref());
        let frequency = match repeat {
            Some(r) => match (r.frequency, r.period, r.period_unit.as_deref()) {
                (Some(f), Some(p), Some(unit)) => format!("{f} per {p} {unit}"),
                _ => String::new(),
            },
            None if dosage.and_then(|d| d.as_needed_boolean) == Some(true) => "as needed".into(),
            None => String::new(),
        };
        let authored = m
            .authored_on
            .as_deref()
            .ok_or_else(|| fail("no authoredOn".into()))?;
        let payload = MedicationPrescribed {
            prescription_id: m.id.clone(),
            prescriber_id: prescriber.to_owned(),
            medication: code(medication).map_err(&fail)?,
            dose: dose.trim().to_owned(),
            route: dosage
                .and_then(|d| d.route.as_ref())
                .and_then(CodeableConcept::label)
                .unwrap_or_default()
                .to_owned(),
            frequency,
            quantity: m
                .dispense_request
                .as_ref()
                .and_then(|d| d.quantity.as_ref())
                .and_then(|q| q.value),
            refills: m
                .dispense_request
                .as_ref()
                .and_then(|d| d.number_of_repeats_allowed)
                .unwrap_or(0),
            status: optional(m.status.as_deref()).map_err(&fail)?,
        };
        self.event(
            resource,
            instant(authored).map_err(&fail)?,
            prescriber,
            PortalType::Provider,
            Payload::MedicationPrescribed(payload),
        )
    }
}

/// Builds the error of one resource from a reason.
fn failing(resource: String) -> impl Fn(String) -> ConvertError {
    move |reason| ConvertError::Resource {
        resource: resource.clone(),
        reason,
    }
}

/// Whether any category has `code` (`vital-signs`, `LAB`, …).
fn has_category(categories: &[CodeableConcept], code: &str) -> bool {
    categories
        .iter()
        .flat_map(|c| &c.coding)
        .any(|c| c.code.as_deref() == Some(code))
}

/// A FHIR dateTime as an event timestamp; a bare date is midnight UTC.
fn instant(text: &str) -> Result<Timestamp, String> {
    if text.len() == 10 {
        Timestamp::parse(&format!("{text}T00:00:00Z"))
    } else {
        Timestamp::parse(text)
    }
}

/// A code of a value set, read as the wire reads it.
fn coded<T: std::str::FromStr<Err = String>>(code: &str) -> Result<T, String> {
    code.parse()
}

/// An optional code of a value set.
fn optional<T: std::str::FromStr<Err = String>>(code: Option<&str>) -> Result<Option<T>, String> {
    code.map(coded).transpose()
}

/// The first coding of a concept as an event's code.
fn code(concept: &CodeableConcept) -> Result<Code, String> {
    let coding = concept
        .coding
        .first()
        .ok_or_else(|| "a concept without a coding".to_owned())?;
    let value = coding.code.clone().ok_or("a coding without a code")?;
    Ok(Code {
        system: coded(
            coding
                .system
                .as_deref()
                .ok_or("a coding without a system")?,
        )?,
        display: coding
            .display
            .clone()
            .or_else(|| concept.text.clone())
            .unwrap_or_else(|| value.clone()),
        code: value,
    })
}

/// One result line from an Observation.
fn lab_result(o: &Observation) -> Result<LabResult, String> {
    let value = if let Some(q) = &o.value_quantity {
        q.value.map(ResultValue::Number)
    } else if let Some(concept) = &o.value_codeable_concept {
        concept.label().map(|l| ResultValue::Text(l.to_owned()))
    } else if let Some(text) = &o.value_string {
        Some(ResultValue::Text(text.clone()))
    } else if let Some(yes) = o.value_boolean {
        Some(ResultValue::Text(yes.to_string()))
    } else {
        o.value_integer.map(|n| ResultValue::Number(n as f64))
    };
    let range = o.reference_range.first();
    let bound = |q: Option<&super::resources::Quantity>| {
        q.and_then(|q| q.value)
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    let reference_range = match range {
        Some(r) => r
            .text
            .clone()
            .unwrap_or_else(|| format!("{}-{}", bound(r.low.as_ref()), bound(r.high.as_ref()))),
        None => String::new(),
    };
    Ok(LabResult {
        code: code(&o.code)?,
        value,
        unit: o
            .value_quantity
            .as_ref()
            .and_then(|q| q.unit.clone())
            .unwrap_or_default(),
        reference_range,
        interpretation: optional(o.interpretation.first().and_then(CodeableConcept::code))?,
        // FHIR has no such flag: HH, LL and AA mark a critical value.
        critical: false,
    })
}

/// The vital signs of an encounter, one set per time they were taken, in
/// the order first seen. Observations of other vital-sign codes (BMI, pain
/// score, head circumference) are not carried.
fn vital_signs(observations: &[&Observation]) -> Result<Vec<(Timestamp, Vitals)>, String> {
    let mut sets: Vec<(String, Vitals)> = Vec::new();
    for o in observations {
        let Some(at) = o.effective_date_time.clone() else {
            continue;
        };
        let index = match sets.iter().position(|(t, _)| *t == at) {
            Some(i) => i,
            None => {
                sets.push((at, Vitals::default()));
                sets.len() - 1
            }
        };
        let vitals = &mut sets[index].1;
        let quantity = o.value_quantity.as_ref().and_then(|q| q.value);
        set_vital(vitals, o.code.code().unwrap_or_default(), quantity);
        for part in &o.component {
            let value = part.value_quantity.as_ref().and_then(|q| q.value);
            set_vital(vitals, part.code.code().unwrap_or_default(), value);
        }
    }
    sets.into_iter()
        .filter(|(_, v)| *v != Vitals::default())
        .map(|(at, v)| Ok((instant(&at)?, v)))
        .collect()
}

/// Puts a LOINC-coded measurement in its place.
fn set_vital(vitals: &mut Vitals, loinc: &str, value: Option<f64>) {
    let slot = match loinc {
        "8867-4" => &mut vitals.heart_rate,
        "8480-6" => &mut vitals.systolic,
        "8462-4" => &mut vitals.diastolic,
        "9279-1" => &mut vitals.respiratory_rate,
        "8310-5" => &mut vitals.temperature_c,
        "2708-6" | "59408-5" => &mut vitals.spo2,
        "29463-7" => &mut vitals.weight_kg,
        "8302-2" => &mut vitals.height_cm,
        _ => return,
    };
    if value.is_some() {
        *slot = value;
    }
}
