//! Synthetic hospital traffic for `projector simulate` and the benchmark: each
//! patient's journey through registration, an encounter with vitals, labs
//! (LOINC, occasionally critical), imaging, prescriptions (RxNorm, sometimes
//! with an interaction) and discharge with SNOMED diagnoses. Deterministic for
//! a seed; every patient's events stay in order.

use chrono::{DateTime, Duration, Utc};
use projector_events::payloads::*;
use projector_events::{Code, CodeSystem, Event, Payload, PortalType};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

const GIVEN: &[&str] = &[
    "John", "Maria", "Wei", "Aisha", "Lars", "Priya", "Carlos", "Fatima", "Kenji", "Olga",
];
const FAMILY: &[&str] = &[
    "Doe", "Garcia", "Chen", "Okafor", "Nilsson", "Patel", "Silva", "Haddad", "Sato", "Ivanova",
];

/// LOINC tests: code, name, unit, normal low, normal high, critical low, critical high.
const LABS: &[(&str, &str, &str, f64, f64, f64, f64)] = &[
    ("2823-3", "Potassium", "mmol/L", 3.5, 5.1, 2.5, 6.2),
    ("2951-2", "Sodium", "mmol/L", 136.0, 145.0, 120.0, 160.0),
    ("2345-7", "Glucose", "mg/dL", 70.0, 99.0, 40.0, 450.0),
    ("2160-0", "Creatinine", "mg/dL", 0.7, 1.3, 0.0, 7.0),
    ("6690-2", "Leukocytes", "10*3/uL", 4.0, 11.0, 1.0, 30.0),
    ("718-7", "Hemoglobin", "g/dL", 13.0, 17.0, 7.0, 20.0),
    ("2524-7", "Lactate", "mmol/L", 0.5, 2.0, 0.0, 4.0),
];

const MEDICATIONS: &[(&str, &str)] = &[
    ("855332", "Warfarin Sodium 5 MG Oral Tablet"),
    ("308182", "Amoxicillin 250 MG Oral Capsule"),
    ("197361", "Amlodipine 5 MG Oral Tablet"),
    ("860975", "Metformin 500 MG Oral Tablet"),
    ("314076", "Lisinopril 10 MG Oral Tablet"),
];

const DIAGNOSES: &[(&str, &str)] = &[
    ("38341003", "Hypertensive disorder"),
    ("44054006", "Type 2 diabetes mellitus"),
    ("233604007", "Pneumonia"),
    ("14140009", "Hyperkalemia"),
    ("195967001", "Asthma"),
];

const SUBSTANCES: &[(&str, &str)] = &[
    ("764146007", "Penicillin"),
    ("256349002", "Peanut"),
    ("387458008", "Aspirin"),
];

/// The high half of a returning patient's id.
const POPULATION: u64 = 0x5052_4f4a_4543_544f;

/// Generates journeys from a seed.
pub struct Simulator {
    rng: SmallRng,
    start: DateTime<Utc>,
    /// Patients drawn from a fixed population of this size (returning
    /// patients), or each journey a new patient (`None`).
    population: Option<u64>,
}

/// One patient's journey as it is being written.
struct Journey<'a> {
    rng: &'a mut SmallRng,
    patient_id: String,
    at: DateTime<Utc>,
    events: Vec<Event>,
}

impl Simulator {
    /// A simulator whose events start at `start`.
    pub fn new(seed: u64, start: DateTime<Utc>) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            start,
            population: None,
        }
    }

    /// Draws each journey's patient from `patients` patients, so a long run
    /// keeps returning to the same charts as a hospital's traffic does.
    pub fn with_population(mut self, patients: u64) -> Self {
        self.population = Some(patients.max(1));
        self
    }

    /// The journeys of `patients` patients, interleaved: each patient's events
    /// in order, patients taking turns, as traffic from a busy hospital.
    pub fn traffic(&mut self, patients: usize) -> Vec<Event> {
        let journeys: Vec<Vec<Event>> = (0..patients).map(|_| self.journey()).collect();
        let longest = journeys.iter().map(Vec::len).max().unwrap_or(0);
        let mut columns: Vec<std::vec::IntoIter<Event>> =
            journeys.into_iter().map(Vec::into_iter).collect();
        let mut out = Vec::with_capacity(patients * longest);
        for _ in 0..longest {
            out.extend(columns.iter_mut().filter_map(Iterator::next));
        }
        out
    }

    /// One patient's journey, about twenty events.
    pub fn journey(&mut self) -> Vec<Event> {
        let patient_id = match self.population {
            Some(patients) => {
                uuid::Uuid::from_u64_pair(POPULATION, self.rng.random_range(0..patients))
                    .to_string()
            }
            None => self.uuid(),
        };
        let offset = Duration::minutes(self.rng.random_range(0..60 * 24));
        let mut journey = Journey {
            rng: &mut self.rng,
            patient_id,
            at: self.start + offset,
            events: Vec::new(),
        };
        journey.write();
        journey.events
    }

    fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }
}

impl Journey<'_> {
    fn id(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    fn code(system: CodeSystem, (code, display): (&str, &str)) -> Code {
        Code::new(system, code, display)
    }

    /// Adds an event `minutes` after the previous one.
    fn push(&mut self, minutes: i64, user: &str, portal: PortalType, payload: Payload) {
        self.at += Duration::minutes(minutes);
        let id = self.id();
        let timestamp = Timestamp::from_datetime(self.at);
        if let Ok(event) = Event::new(&id, timestamp, &self.patient_id, user, portal, payload) {
            self.events.push(event);
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_datetime(self.at)
    }

    fn write(&mut self) {
        let provider = format!("u-provider-{}", self.rng.random_range(1..=40));
        let given = GIVEN.choose(self.rng).copied().unwrap_or("John");
        let family = FAMILY.choose(self.rng).copied().unwrap_or("Doe");
        let patient_name = format!("{given} {family}");
        let mrn = format!("MRN-{:06}", self.rng.random_range(0..1_000_000));
        let birth = format!(
            "{}-{:02}-{:02}",
            self.rng.random_range(1930..2020),
            self.rng.random_range(1..=12),
            self.rng.random_range(1..=28)
        );
        let gender = if self.rng.random_bool(0.5) {
            Gender::Female
        } else {
            Gender::Male
        };
        self.push(
            0,
            "u-registrar",
            PortalType::Admin,
            Payload::PatientCreated(PatientCreated {
                mrn,
                name: HumanName {
                    given: given.into(),
                    family: family.into(),
                },
                birth_date: birth,
                gender,
            }),
        );
        for _ in 0..self.rng.random_range(0..=2) {
            let substance = Self::code(
                CodeSystem::Snomed,
                *SUBSTANCES.choose(self.rng).unwrap_or(&SUBSTANCES[0]),
            );
            let high = self.rng.random_bool(0.2);
            let allergy_id = self.id();
            self.push(
                2,
                &provider,
                PortalType::Provider,
                Payload::AllergyAdded(AllergyAdded {
                    allergy_id,
                    substance,
                    reaction: "Rash".into(),
                    severity: Some(if high {
                        Severity::Severe
                    } else {
                        Severity::Mild
                    }),
                    criticality: Some(if high {
                        Criticality::High
                    } else {
                        Criticality::Low
                    }),
                    clinical_status: Some(AllergyClinicalStatus::Active),
                }),
            );
        }
        let encounter_id = self.id();
        let class = [
            EncounterClass::Ambulatory,
            EncounterClass::Emergency,
            EncounterClass::Inpatient,
        ]
        .choose(self.rng)
        .cloned()
        .unwrap_or(EncounterClass::Ambulatory);
        let started_at = self.now();
        let location = format!("Room {}", self.rng.random_range(1..300));
        self.push(
            5,
            &provider,
            PortalType::Provider,
            Payload::EncounterStarted(EncounterStarted {
                encounter_id: encounter_id.clone(),
                provider_id: provider.clone(),
                class,
                reason: "Evaluation".into(),
                started_at,
                location,
            }),
        );
        for _ in 0..2 {
            self.vitals(&encounter_id);
        }
        self.labs(&provider, &patient_name);
        if self.rng.random_bool(0.4) {
            self.imaging(&provider, &patient_name);
        }
        self.prescription(&provider);
        let diagnosis = Self::code(
            CodeSystem::Snomed,
            *DIAGNOSES.choose(self.rng).unwrap_or(&DIAGNOSES[0]),
        );
        self.push(
            60,
            &provider,
            PortalType::Provider,
            Payload::EncounterCompleted(EncounterCompleted {
                encounter_id,
                ended_at: Timestamp::from_datetime(self.at + Duration::minutes(60)),
                diagnoses: vec![diagnosis],
                procedures: Vec::new(),
                disposition: "home".into(),
            }),
        );
    }

    fn vitals(&mut self, encounter_id: &str) {
        let vitals = Vitals {
            heart_rate: Some(self.rng.random_range(55.0..125.0_f64).round()),
            systolic: Some(self.rng.random_range(90.0..170.0_f64).round()),
            diastolic: Some(self.rng.random_range(55.0..100.0_f64).round()),
            respiratory_rate: Some(self.rng.random_range(12.0..26.0_f64).round()),
            temperature_c: Some((self.rng.random_range(36.0..39.5_f64) * 10.0).round() / 10.0),
            spo2: Some(self.rng.random_range(90.0..100.0_f64).round()),
            ..Vitals::default()
        };
        let recorded_at = Timestamp::from_datetime(self.at + Duration::minutes(10));
        self.push(
            10,
            "u-nurse",
            PortalType::Provider,
            Payload::VitalsRecorded(VitalsRecorded {
                encounter_id: encounter_id.into(),
                recorded_at,
                vitals,
            }),
        );
    }

    fn labs(&mut self, provider: &str, patient_name: &str) {
        let order_id = self.id();
        let report_id = self.id();
        let panel: Vec<_> = LABS.choose_multiple(self.rng, 3).copied().collect();
        self.push(
            5,
            provider,
            PortalType::Provider,
            Payload::LabOrderCreated(LabOrderCreated {
                order_id: order_id.clone(),
                ordering_provider_id: provider.into(),
                tests: panel
                    .iter()
                    .map(|t| Self::code(CodeSystem::Loinc, (t.0, t.1)))
                    .collect(),
                priority: OrderPriority::Routine,
            }),
        );
        let critical_index = self
            .rng
            .random_bool(0.05)
            .then(|| self.rng.random_range(0..panel.len()));
        let results: Vec<LabResult> = panel
            .iter()
            .enumerate()
            .map(|(i, &(code, name, unit, low, high, _, critical_high))| {
                let critical = critical_index == Some(i);
                let value = if critical {
                    critical_high * 1.05
                } else {
                    ((self.rng.random_range(low..high)) * 10.0).round() / 10.0
                };
                LabResult {
                    code: Self::code(CodeSystem::Loinc, (code, name)),
                    value: Some(ResultValue::Number(value)),
                    unit: unit.into(),
                    reference_range: format!("{low}-{high}"),
                    interpretation: Some(if critical {
                        Interpretation::CriticalHigh
                    } else {
                        Interpretation::Normal
                    }),
                    critical,
                }
            })
            .collect();
        let issued_at = Timestamp::from_datetime(self.at + Duration::minutes(45));
        self.push(
            45,
            "u-lab",
            PortalType::Lab,
            Payload::LabResultAvailable(LabResultAvailable {
                report_id: report_id.clone(),
                order_id,
                ordering_provider_id: provider.into(),
                issued_at,
                results: results.clone(),
            }),
        );
        if let Some(critical) = results.iter().find(|r| r.critical)
            && let Some(value) = critical.value.clone()
        {
            self.push(
                1,
                "u-lab",
                PortalType::Lab,
                Payload::LabCriticalAlert(LabCriticalAlert {
                    report_id: report_id.clone(),
                    ordering_provider_id: provider.into(),
                    patient_name: patient_name.into(),
                    test_name: critical.code.display.clone(),
                    code: critical.code.clone(),
                    value,
                    unit: critical.unit.clone(),
                    critical_reason: format!(
                        "Critically high {}",
                        critical.code.display.to_lowercase()
                    ),
                }),
            );
        }
        self.push(
            10,
            provider,
            PortalType::Provider,
            Payload::LabResultViewed(LabResultViewed {
                report_id,
                viewed_by: provider.into(),
            }),
        );
    }

    fn imaging(&mut self, provider: &str, patient_name: &str) {
        let order_id = self.id();
        let study_id = self.id();
        let report_id = self.id();
        self.push(
            5,
            provider,
            PortalType::Provider,
            Payload::RadiologyOrderCreated(RadiologyOrderCreated {
                order_id: order_id.clone(),
                ordering_provider_id: provider.into(),
                modality: Modality::ComputedTomography,
                procedure: Code::new(CodeSystem::Snomed, "169069000", "CT of chest"),
                priority: OrderPriority::Stat,
            }),
        );
        let keys: Vec<String> = (1..=2)
            .map(|i| format!("{}/{study_id}/img-{i}.dcm", self.patient_id))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            self.push(
                20,
                "u-rad-tech",
                PortalType::Radiology,
                Payload::RadiologyImageUploaded(RadiologyImageUploaded {
                    study_id: study_id.clone(),
                    image_id: format!("img-{}", i + 1),
                    bucket: "radiology-images".into(),
                    key: key.clone(),
                    content_type: "application/dicom".into(),
                }),
            );
        }
        self.push(
            5,
            "u-rad-tech",
            PortalType::Radiology,
            Payload::RadiologyStudyComplete(RadiologyStudyComplete {
                study_id: study_id.clone(),
                order_id,
                modality: Modality::ComputedTomography,
                description: "CT chest".into(),
                image_count: keys.len() as u32,
                bucket: "radiology-images".into(),
                object_keys: keys,
            }),
        );
        let critical = self.rng.random_bool(0.05);
        self.push(
            30,
            "u-radiologist",
            PortalType::Radiology,
            Payload::RadiologyReportFinalized(RadiologyReportFinalized {
                report_id: report_id.clone(),
                study_id: study_id.clone(),
                ordering_provider_id: provider.into(),
                radiologist_id: "u-radiologist".into(),
                findings: if critical {
                    "Filling defect in a pulmonary artery."
                } else {
                    "No acute findings."
                }
                .into(),
                impression: if critical {
                    "Pulmonary embolism."
                } else {
                    "Normal study."
                }
                .into(),
                critical,
            }),
        );
        if critical {
            self.push(
                1,
                "u-radiologist",
                PortalType::Radiology,
                Payload::RadiologyCriticalAlert(RadiologyCriticalAlert {
                    report_id,
                    study_id,
                    ordering_provider_id: provider.into(),
                    patient_name: patient_name.into(),
                    finding: "Pulmonary embolism".into(),
                    critical_reason: "Life-threatening finding".into(),
                }),
            );
        }
    }

    fn prescription(&mut self, provider: &str) {
        let prescription_id = self.id();
        let medication = Self::code(
            CodeSystem::RxNorm,
            *MEDICATIONS.choose(self.rng).unwrap_or(&MEDICATIONS[0]),
        );
        self.push(
            15,
            provider,
            PortalType::Provider,
            Payload::MedicationPrescribed(MedicationPrescribed {
                prescription_id: prescription_id.clone(),
                prescriber_id: provider.into(),
                medication: medication.clone(),
                dose: "1 tablet".into(),
                route: "oral".into(),
                frequency: "daily".into(),
                quantity: Some(30.0),
                refills: 1,
                status: Some(MedicationRequestStatus::Active),
            }),
        );
        if self.rng.random_bool(0.1) {
            self.push(
                1,
                "u-pharmacist",
                PortalType::Pharmacy,
                Payload::InteractionAlert(InteractionAlert {
                    prescription_id: prescription_id.clone(),
                    prescriber_id: provider.into(),
                    medication,
                    interacting_medication: Code::new(CodeSystem::RxNorm, "1191", "Aspirin"),
                    severity: IssueSeverity::High,
                    description: "Increased bleeding risk".into(),
                }),
            );
        }
        let dispensed_at = Timestamp::from_datetime(self.at + Duration::minutes(30));
        self.push(
            30,
            "u-pharmacist",
            PortalType::Pharmacy,
            Payload::MedicationDispensed(MedicationDispensed {
                prescription_id,
                pharmacist_id: "u-pharmacist".into(),
                dispensed_at,
                quantity: 30.0,
                days_supply: 30,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use projector_events::Envelope;

    #[test]
    fn traffic_is_valid_deterministic_and_keeps_each_patients_order() {
        let start = DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
            .unwrap()
            .to_utc();
        let traffic = Simulator::new(7, start).traffic(50);
        assert_eq!(traffic, Simulator::new(7, start).traffic(50));
        assert!(traffic.len() > 50 * 12, "{} events", traffic.len());
        let mut last_seen = std::collections::HashMap::new();
        for event in &traffic {
            let reparsed =
                Envelope::parse(&event.to_json_bytes()).expect("simulated events are valid");
            assert_eq!(&reparsed, event);
            let at = event.envelope.timestamp.instant();
            let previous = last_seen.insert(event.envelope.patient_id.to_string(), at);
            assert!(
                previous.is_none_or(|p| p <= at),
                "patient's events out of order"
            );
        }
        let types: std::collections::BTreeSet<&str> =
            traffic.iter().map(|e| e.payload.event_type()).collect();
        assert!(types.len() >= 15, "{types:?}");
    }
}
