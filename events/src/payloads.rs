//! The payload of every event type in SPEC, and [`Payload`], which ties each to
//! its `eventType` and FHIR resource.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::coded::{
    AllergyClinicalStatus, Criticality, EncounterClass, Gender, Interpretation, IssueSeverity,
    MedicationRequestStatus, Modality, OrderPriority, Severity,
};
use crate::value_set::ValueSet;
use crate::{Code, EventError};

/// An RFC 3339 instant, kept as the text that was sent and checked on the way in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Timestamp(
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))] String,
);

impl Timestamp {
    /// Checks and wraps RFC 3339 text.
    pub fn parse(text: &str) -> Result<Self, String> {
        chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("`{text}` is not an RFC 3339 timestamp: {e}"))?;
        Ok(Self(text.to_owned()))
    }

    /// Wraps an instant in its RFC 3339 form (UTC, `Z`).
    pub fn from_datetime(at: chrono::DateTime<chrono::Utc>) -> Self {
        Self(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    /// The instant, for comparing timestamps written with different offsets.
    pub fn instant(&self) -> chrono::DateTime<chrono::FixedOffset> {
        // Every Timestamp was checked when it was made.
        chrono::DateTime::parse_from_rfc3339(&self.0).unwrap_or_default()
    }

    /// The text as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A person's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HumanName {
    /// Given name(s).
    pub given: String,
    /// Family name.
    pub family: String,
}

/// A postal address; every part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// Street lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub line: Vec<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// State or province.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// `patient.created`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PatientCreated {
    /// Medical record number.
    pub mrn: String,
    /// The patient's name.
    pub name: HumanName,
    /// Date of birth, `YYYY-MM-DD`.
    pub birth_date: String,
    /// Administrative gender.
    pub gender: Gender,
}

/// The demographics a `patient.updated` may change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PatientChanges {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<HumanName>,
    /// New date of birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    /// New gender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<Gender>,
    /// New phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// New address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
}

/// `patient.updated`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PatientUpdated {
    /// What changed.
    pub changes: PatientChanges,
}

/// `patient.allergy.added`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AllergyAdded {
    /// Id of the allergy record.
    pub allergy_id: String,
    /// The substance (SNOMED or RxNorm).
    pub substance: Code,
    /// The reaction seen.
    #[serde(default)]
    pub reaction: String,
    /// Reaction severity, when the reaction was graded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Criticality, when it was assessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<Criticality>,
    /// Whether the allergy is current; absent means active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinical_status: Option<AllergyClinicalStatus>,
}

/// `patient.allergy.removed`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AllergyRemoved {
    /// Id of the allergy record.
    pub allergy_id: String,
    /// Why it was removed.
    #[serde(default)]
    pub reason: String,
}

/// `lab.order.created`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LabOrderCreated {
    /// Id of the order.
    pub order_id: String,
    /// Who ordered it.
    pub ordering_provider_id: String,
    /// The tests ordered (LOINC).
    pub tests: Vec<Code>,
    /// Priority.
    pub priority: OrderPriority,
}

/// A measured value: a number, or text for qualitative results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum ResultValue {
    /// A quantity.
    Number(f64),
    /// A qualitative result, e.g. `positive`.
    Text(String),
}

/// One result line of a lab report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LabResult {
    /// The test (LOINC).
    pub code: Code,
    /// The value; absent when none was recorded (FHIR Observation.value is
    /// optional, e.g. a question left unanswered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ResultValue>,
    /// Unit of the value (UCUM).
    #[serde(default)]
    pub unit: String,
    /// Reference range, as text.
    #[serde(default)]
    pub reference_range: String,
    /// Interpretation flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpretation: Option<Interpretation>,
    /// Whether the value is critical.
    #[serde(default)]
    pub critical: bool,
}

/// `lab.result.available`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LabResultAvailable {
    /// Id of the report.
    pub report_id: String,
    /// The order it answers.
    pub order_id: String,
    /// Who ordered it.
    pub ordering_provider_id: String,
    /// When the report was issued.
    pub issued_at: Timestamp,
    /// The results.
    pub results: Vec<LabResult>,
}

/// `lab.critical.alert`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LabCriticalAlert {
    /// The report holding the value.
    pub report_id: String,
    /// Who ordered it.
    pub ordering_provider_id: String,
    /// The patient's name, for the alert.
    pub patient_name: String,
    /// The test's name.
    pub test_name: String,
    /// The test (LOINC).
    pub code: Code,
    /// The critical value.
    pub value: ResultValue,
    /// Unit of the value.
    #[serde(default)]
    pub unit: String,
    /// Why the value is critical.
    pub critical_reason: String,
}

/// `lab.result.viewed`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LabResultViewed {
    /// The report viewed.
    pub report_id: String,
    /// Who viewed it.
    pub viewed_by: String,
}

/// `radiology.report.viewed`: symmetrical with `lab.result.viewed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RadiologyReportViewed {
    /// The report viewed.
    pub report_id: String,
    /// Who viewed it.
    pub viewed_by: String,
}

/// `radiology.order.created`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RadiologyOrderCreated {
    /// Id of the order.
    pub order_id: String,
    /// Who ordered it.
    pub ordering_provider_id: String,
    /// DICOM modality, e.g. `CT`.
    pub modality: Modality,
    /// The procedure (SNOMED or LOINC).
    pub procedure: Code,
    /// Priority.
    pub priority: OrderPriority,
}

/// `radiology.study.complete`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RadiologyStudyComplete {
    /// Id of the study.
    pub study_id: String,
    /// The order it fulfils.
    pub order_id: String,
    /// DICOM modality.
    pub modality: Modality,
    /// What was imaged.
    #[serde(default)]
    pub description: String,
    /// How many images.
    pub image_count: u32,
    /// Object-store bucket of the images.
    pub bucket: String,
    /// Object keys of the images.
    #[serde(default)]
    pub object_keys: Vec<String>,
}

/// `radiology.image.uploaded`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RadiologyImageUploaded {
    /// The study it belongs to.
    pub study_id: String,
    /// Id of the image.
    pub image_id: String,
    /// Object-store bucket.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// MIME type, e.g. `application/dicom`.
    pub content_type: String,
}

/// `radiology.report.finalized`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RadiologyReportFinalized {
    /// Id of the report.
    pub report_id: String,
    /// The study reported on.
    pub study_id: String,
    /// Who ordered the study.
    pub ordering_provider_id: String,
    /// The reading radiologist.
    pub radiologist_id: String,
    /// Findings.
    pub findings: String,
    /// Impression.
    pub impression: String,
    /// Whether the findings are critical.
    #[serde(default)]
    pub critical: bool,
}

/// `radiology.critical.alert`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RadiologyCriticalAlert {
    /// The report.
    pub report_id: String,
    /// The study.
    pub study_id: String,
    /// Who ordered the study.
    pub ordering_provider_id: String,
    /// The patient's name, for the alert.
    pub patient_name: String,
    /// The critical finding.
    pub finding: String,
    /// Why it is critical.
    pub critical_reason: String,
}

/// `pharmacy.medication.prescribed`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct MedicationPrescribed {
    /// Id of the prescription.
    pub prescription_id: String,
    /// Who prescribed it.
    pub prescriber_id: String,
    /// The medication (RxNorm).
    pub medication: Code,
    /// Dose, e.g. `500 mg`; empty when the prescription gives none.
    #[serde(default)]
    pub dose: String,
    /// Route, e.g. `oral`; empty when not given.
    #[serde(default)]
    pub route: String,
    /// Frequency, e.g. `BID`; empty when not given.
    #[serde(default)]
    pub frequency: String,
    /// Quantity to dispense, when the prescription sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<f64>,
    /// Refills allowed.
    #[serde(default)]
    pub refills: u32,
    /// The prescription's state, when the prescriber's system sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MedicationRequestStatus>,
}

/// `pharmacy.interaction.alert`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct InteractionAlert {
    /// The prescription that raised it.
    pub prescription_id: String,
    /// Its prescriber.
    pub prescriber_id: String,
    /// The medication prescribed (RxNorm).
    pub medication: Code,
    /// The medication it interacts with (RxNorm).
    pub interacting_medication: Code,
    /// How severe the issue is.
    pub severity: IssueSeverity,
    /// What the interaction is.
    pub description: String,
}

/// `pharmacy.allergy.contraindication`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AllergyContraindication {
    /// The prescription that raised it.
    pub prescription_id: String,
    /// Its prescriber.
    pub prescriber_id: String,
    /// The medication prescribed (RxNorm).
    pub medication: Code,
    /// The patient's allergy record.
    pub allergy_id: String,
    /// The allergen.
    pub substance: Code,
    /// How severe the issue is.
    pub severity: IssueSeverity,
    /// What the contraindication is.
    pub description: String,
}

/// `pharmacy.medication.dispensed`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct MedicationDispensed {
    /// The prescription dispensed.
    pub prescription_id: String,
    /// The pharmacist.
    pub pharmacist_id: String,
    /// When.
    pub dispensed_at: Timestamp,
    /// Quantity handed out.
    pub quantity: f64,
    /// Days the supply lasts.
    pub days_supply: u32,
}

/// `encounter.started`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EncounterStarted {
    /// Id of the encounter.
    pub encounter_id: String,
    /// The attending provider.
    pub provider_id: String,
    /// Its class.
    pub class: EncounterClass,
    /// Reason for the visit.
    #[serde(default)]
    pub reason: String,
    /// When it began.
    pub started_at: Timestamp,
    /// Where.
    #[serde(default)]
    pub location: String,
}

/// `encounter.completed`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EncounterCompleted {
    /// Id of the encounter.
    pub encounter_id: String,
    /// When it ended.
    pub ended_at: Timestamp,
    /// Diagnoses made (SNOMED).
    #[serde(default)]
    pub diagnoses: Vec<Code>,
    /// Procedures done (SNOMED).
    #[serde(default)]
    pub procedures: Vec<Code>,
    /// Where the patient went, e.g. `home`.
    #[serde(default)]
    pub disposition: String,
}

/// Vital signs; any subset may be present.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Vitals {
    /// Beats per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heart_rate: Option<f64>,
    /// Systolic blood pressure, mmHg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systolic: Option<f64>,
    /// Diastolic blood pressure, mmHg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diastolic: Option<f64>,
    /// Breaths per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respiratory_rate: Option<f64>,
    /// Body temperature, °C.
    #[serde(
        default,
        rename = "temperatureC",
        skip_serializing_if = "Option::is_none"
    )]
    pub temperature_c: Option<f64>,
    /// Oxygen saturation, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spo2: Option<f64>,
    /// Weight, kg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_kg: Option<f64>,
    /// Height, cm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height_cm: Option<f64>,
}

/// `encounter.vitals.recorded`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VitalsRecorded {
    /// The encounter.
    pub encounter_id: String,
    /// When they were measured.
    pub recorded_at: Timestamp,
    /// The measurements.
    pub vitals: Vitals,
}

/// Declares [`Payload`] and its tables from one list, so the event type, the
/// payload struct and the FHIR resource can never disagree.
macro_rules! payloads {
    ($($variant:ident($ty:ident) = $event_type:literal, $fhir:literal;)+) => {
        /// A typed payload; the variant is the event's `eventType`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Payload {
            $(
                #[doc = concat!("`", $event_type, "` (FHIR ", $fhir, ")")]
                $variant($ty),
            )+
        }

        /// Every event type of the contract with its FHIR resource type.
        pub const EVENT_TYPES: &[(&str, &str)] = &[$(($event_type, $fhir)),+];

        impl Payload {
            /// The `eventType` (and NATS subject) of this payload.
            pub fn event_type(&self) -> &'static str {
                match self { $(Self::$variant(_) => $event_type,)+ }
            }

            /// The FHIR resource this payload corresponds to.
            pub fn fhir_resource_type(&self) -> &'static str {
                match self { $(Self::$variant(_) => $fhir,)+ }
            }

            /// Parses the payload of an event of type `event_type` from any
            /// serde deserializer (a `&Value`, or JSON text, below).
            pub fn deserialize<'de, D>(event_type: &str, payload: D) -> Result<Self, EventError>
            where
                D: serde::Deserializer<'de>,
                D::Error: std::fmt::Display,
            {
                // The reason names the field that failed, e.g. `results[0].interpretation: …`.
                let invalid = |e: serde_path_to_error::Error<D::Error>| {
                    let path = e.path().to_string();
                    let reason = if path == "." {
                        e.into_inner().to_string()
                    } else {
                        format!("{path}: {}", e.into_inner())
                    };
                    EventError::InvalidPayload { event_type: event_type.to_owned(), reason }
                };
                match event_type {
                    $($event_type => serde_path_to_error::deserialize::<_, $ty>(payload).map(Self::$variant).map_err(invalid),)+
                    other => Err(EventError::UnknownType(other.to_owned())),
                }
            }

            /// Parses a payload already read as JSON.
            pub fn from_json(event_type: &str, payload: &Value) -> Result<Self, EventError> {
                Self::deserialize(event_type, payload)
            }

            /// Parses a payload from JSON text, with no intermediate `Value`.
            pub fn from_json_str(event_type: &str, text: &str) -> Result<Self, EventError> {
                let mut reader = serde_json::Deserializer::from_str(text);
                let payload = Self::deserialize(event_type, &mut reader)?;
                reader.end().map_err(|e| EventError::InvalidPayload {
                    event_type: event_type.to_owned(),
                    reason: e.to_string(),
                })?;
                Ok(payload)
            }

            /// The payload as JSON.
            pub fn to_json(&self) -> Value {
                match self {
                    $(Self::$variant(p) => serde_json::to_value(p),)+
                }
                .expect("payload structs always serialise")
            }

            /// The JSON Schema of each payload, by event type.
            #[cfg(feature = "schema")]
            pub fn schemas(generator: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
                vec![$(($event_type, generator.subschema_for::<$ty>()),)+]
            }
        }
    };
}

payloads! {
    PatientCreated(PatientCreated) = "patient.created", "Patient";
    PatientUpdated(PatientUpdated) = "patient.updated", "Patient";
    AllergyAdded(AllergyAdded) = "patient.allergy.added", "AllergyIntolerance";
    AllergyRemoved(AllergyRemoved) = "patient.allergy.removed", "AllergyIntolerance";
    LabOrderCreated(LabOrderCreated) = "lab.order.created", "ServiceRequest";
    LabResultAvailable(LabResultAvailable) = "lab.result.available", "DiagnosticReport";
    LabCriticalAlert(LabCriticalAlert) = "lab.critical.alert", "Observation";
    LabResultViewed(LabResultViewed) = "lab.result.viewed", "AuditEvent";
    RadiologyOrderCreated(RadiologyOrderCreated) = "radiology.order.created", "ServiceRequest";
    RadiologyStudyComplete(RadiologyStudyComplete) = "radiology.study.complete", "ImagingStudy";
    RadiologyImageUploaded(RadiologyImageUploaded) = "radiology.image.uploaded", "ImagingStudy";
    RadiologyReportFinalized(RadiologyReportFinalized) = "radiology.report.finalized", "DiagnosticReport";
    RadiologyCriticalAlert(RadiologyCriticalAlert) = "radiology.critical.alert", "DiagnosticReport";
    RadiologyReportViewed(RadiologyReportViewed) = "radiology.report.viewed", "AuditEvent";
    MedicationPrescribed(MedicationPrescribed) = "pharmacy.medication.prescribed", "MedicationRequest";
    InteractionAlert(InteractionAlert) = "pharmacy.interaction.alert", "DetectedIssue";
    AllergyContraindication(AllergyContraindication) = "pharmacy.allergy.contraindication", "DetectedIssue";
    MedicationDispensed(MedicationDispensed) = "pharmacy.medication.dispensed", "MedicationDispense";
    EncounterStarted(EncounterStarted) = "encounter.started", "Encounter";
    EncounterCompleted(EncounterCompleted) = "encounter.completed", "Encounter";
    VitalsRecorded(VitalsRecorded) = "encounter.vitals.recorded", "Observation";
}

/// A code an extensible value set does not list, found in a payload: kept
/// and projected, and counted by the host so operators see what their feeds
/// send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCode {
    /// Where in the payload, e.g. `results[].interpretation`.
    pub field: &'static str,
    /// The value set it is not in.
    pub value_set: &'static str,
    /// The code as sent.
    pub code: String,
}

/// Collects [`UnknownCode`]s while a payload's coded fields are walked.
#[derive(Default)]
struct Unknowns(Vec<UnknownCode>);

impl Unknowns {
    fn check<V: ValueSet>(&mut self, field: &'static str, value: &V) {
        if !value.is_known() {
            self.0.push(UnknownCode {
                field,
                value_set: V::SOURCE,
                code: value.code().to_owned(),
            });
        }
    }

    fn codes<'c>(&mut self, field: &'static str, codes: impl IntoIterator<Item = &'c Code>) {
        for code in codes {
            self.check(field, &code.system);
        }
    }
}

impl Payload {
    /// Every code in this payload that its extensible value set does not list.
    pub fn unknown_codes(&self) -> Vec<UnknownCode> {
        let mut found = Unknowns::default();
        match self {
            Self::AllergyAdded(p) => found.codes("substance.system", [&p.substance]),
            Self::LabOrderCreated(p) => found.codes("tests[].system", &p.tests),
            Self::LabResultAvailable(p) => {
                for result in &p.results {
                    found.codes("results[].code.system", [&result.code]);
                    if let Some(flag) = &result.interpretation {
                        found.check("results[].interpretation", flag);
                    }
                }
            }
            Self::LabCriticalAlert(p) => found.codes("code.system", [&p.code]),
            Self::RadiologyOrderCreated(p) => {
                found.check("modality", &p.modality);
                found.codes("procedure.system", [&p.procedure]);
            }
            Self::RadiologyStudyComplete(p) => found.check("modality", &p.modality),
            Self::MedicationPrescribed(p) => found.codes("medication.system", [&p.medication]),
            Self::InteractionAlert(p) => {
                found.codes("medication.system", [&p.medication]);
                found.codes("interactingMedication.system", [&p.interacting_medication]);
            }
            Self::AllergyContraindication(p) => {
                found.codes("medication.system", [&p.medication]);
                found.codes("substance.system", [&p.substance]);
            }
            Self::EncounterStarted(p) => found.check("class", &p.class),
            Self::EncounterCompleted(p) => {
                found.codes("diagnoses[].system", &p.diagnoses);
                found.codes("procedures[].system", &p.procedures);
            }
            Self::PatientCreated(_)
            | Self::PatientUpdated(_)
            | Self::AllergyRemoved(_)
            | Self::LabResultViewed(_)
            | Self::RadiologyImageUploaded(_)
            | Self::RadiologyReportFinalized(_)
            | Self::RadiologyCriticalAlert(_)
            | Self::RadiologyReportViewed(_)
            | Self::MedicationDispensed(_)
            | Self::VitalsRecorded(_) => {}
        }
        found.0
    }
}
