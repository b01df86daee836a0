//! The part of FHIR R4 the converter reads: the resources a clinical system
//! exports about one patient, with only the elements events carry. Every
//! other resource type reads as [`Resource::Other`] and every other element
//! is ignored.

use serde::Deserialize;

/// A bundle of resources (`Bundle.entry[].resource`).
#[derive(Debug, Deserialize)]
pub struct Bundle {
    /// Its entries.
    #[serde(default)]
    pub entry: Vec<Entry>,
}

/// One entry of a bundle.
#[derive(Debug, Deserialize)]
pub struct Entry {
    /// The resource it holds.
    pub resource: Resource,
}

/// A resource, by `resourceType`.
#[derive(Debug, Deserialize)]
#[serde(tag = "resourceType")]
pub enum Resource {
    /// The patient.
    Patient(Patient),
    /// An allergy or intolerance.
    AllergyIntolerance(AllergyIntolerance),
    /// A visit.
    Encounter(Encounter),
    /// A diagnosis.
    Condition(AtEncounter),
    /// A procedure done.
    Procedure(AtEncounter),
    /// A measurement or finding.
    Observation(Observation),
    /// A report grouping results.
    DiagnosticReport(DiagnosticReport),
    /// A prescription.
    MedicationRequest(MedicationRequest),
    /// Any other resource type: not carried by events.
    #[serde(other)]
    Other,
}

/// A code with its system and display.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Coding {
    /// The terminology's URI.
    pub system: Option<String>,
    /// The code.
    pub code: Option<String>,
    /// Its text.
    pub display: Option<String>,
}

/// Codings of one concept, and text.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CodeableConcept {
    /// The codings.
    #[serde(default)]
    pub coding: Vec<Coding>,
    /// Free text.
    pub text: Option<String>,
}

impl CodeableConcept {
    /// The first coding's code.
    pub fn code(&self) -> Option<&str> {
        self.coding.first().and_then(|c| c.code.as_deref())
    }

    /// What a person reads: the first coding's display, else the text.
    pub fn label(&self) -> Option<&str> {
        self.coding
            .first()
            .and_then(|c| c.display.as_deref())
            .or(self.text.as_deref())
    }
}

/// A reference to another resource.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Reference {
    /// `urn:uuid:…`, `Practitioner/…`, `Practitioner?identifier=…|…`.
    pub reference: Option<String>,
    /// Its text.
    pub display: Option<String>,
}

impl Reference {
    /// The referenced resource's id: the reference's last part, whichever
    /// form it takes.
    pub fn id(&self) -> Option<&str> {
        let reference = self.reference.as_deref()?;
        reference
            .rsplit(['/', ':', '|', '='])
            .next()
            .filter(|id| !id.is_empty())
    }
}

/// A start and an end.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Period {
    /// When it began.
    pub start: Option<String>,
    /// When it ended.
    pub end: Option<String>,
}

/// A measured amount.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Quantity {
    /// The number.
    pub value: Option<f64>,
    /// Its unit.
    pub unit: Option<String>,
}

/// `Patient`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    /// Its id.
    pub id: String,
    /// Its identifiers (the medical record number has type `MR`).
    #[serde(default)]
    pub identifier: Vec<Identifier>,
    /// Its names.
    #[serde(default)]
    pub name: Vec<HumanName>,
    /// Administrative gender.
    pub gender: Option<String>,
    /// Date of birth.
    pub birth_date: Option<String>,
}

/// An identifier of a patient.
#[derive(Debug, Deserialize)]
pub struct Identifier {
    /// What kind of identifier.
    #[serde(rename = "type")]
    pub kind: Option<CodeableConcept>,
    /// The identifier.
    pub value: Option<String>,
}

/// A name.
#[derive(Debug, Deserialize)]
pub struct HumanName {
    /// `official`, `usual`, `maiden`, ….
    #[serde(rename = "use")]
    pub usage: Option<String>,
    /// Family name.
    pub family: Option<String>,
    /// Given names.
    #[serde(default)]
    pub given: Vec<String>,
}

/// `AllergyIntolerance`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllergyIntolerance {
    /// Its id.
    pub id: String,
    /// active, inactive, resolved.
    pub clinical_status: Option<CodeableConcept>,
    /// low, high, unable-to-assess.
    pub criticality: Option<String>,
    /// The substance.
    #[serde(default)]
    pub code: CodeableConcept,
    /// When it was recorded.
    pub recorded_date: Option<String>,
    /// When it began.
    pub onset_date_time: Option<String>,
    /// Reactions seen.
    #[serde(default)]
    pub reaction: Vec<Reaction>,
}

/// A reaction to a substance.
#[derive(Debug, Deserialize)]
pub struct Reaction {
    /// What was seen.
    #[serde(default)]
    pub manifestation: Vec<CodeableConcept>,
    /// mild, moderate, severe.
    pub severity: Option<String>,
}

/// `Encounter`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encounter {
    /// Its id.
    pub id: String,
    /// Its class (v3 ActEncounterCode).
    #[serde(default)]
    pub class: Coding,
    /// Its kind of visit.
    #[serde(rename = "type", default)]
    pub kind: Vec<CodeableConcept>,
    /// Why.
    #[serde(default)]
    pub reason_code: Vec<CodeableConcept>,
    /// When.
    #[serde(default)]
    pub period: Period,
    /// Who took part.
    #[serde(default)]
    pub participant: Vec<Participant>,
    /// Where.
    #[serde(default)]
    pub location: Vec<EncounterLocation>,
    /// Admission and discharge.
    pub hospitalization: Option<Hospitalization>,
}

/// Someone who took part in an encounter.
#[derive(Debug, Deserialize)]
pub struct Participant {
    /// The practitioner.
    pub individual: Option<Reference>,
}

/// Where an encounter took place.
#[derive(Debug, Deserialize)]
pub struct EncounterLocation {
    /// The location.
    pub location: Reference,
}

/// Admission and discharge details.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hospitalization {
    /// Where the patient went.
    pub discharge_disposition: Option<CodeableConcept>,
}

/// A `Condition` or a `Procedure`: a code recorded at an encounter.
#[derive(Debug, Deserialize)]
pub struct AtEncounter {
    /// Its id.
    pub id: String,
    /// What it is.
    #[serde(default)]
    pub code: CodeableConcept,
    /// The encounter it was recorded at.
    pub encounter: Option<Reference>,
}

/// `Observation`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// Its id.
    pub id: String,
    /// laboratory, vital-signs, survey, ….
    #[serde(default)]
    pub category: Vec<CodeableConcept>,
    /// What was observed.
    #[serde(default)]
    pub code: CodeableConcept,
    /// The encounter.
    pub encounter: Option<Reference>,
    /// When.
    pub effective_date_time: Option<String>,
    /// A quantity.
    pub value_quantity: Option<Quantity>,
    /// A coded value.
    pub value_codeable_concept: Option<CodeableConcept>,
    /// Text.
    pub value_string: Option<String>,
    /// Yes or no.
    pub value_boolean: Option<bool>,
    /// A whole number.
    pub value_integer: Option<i64>,
    /// Parts measured together (a blood pressure's two numbers).
    #[serde(default)]
    pub component: Vec<Component>,
    /// How it compares with what is expected.
    #[serde(default)]
    pub interpretation: Vec<CodeableConcept>,
    /// The expected range.
    #[serde(default)]
    pub reference_range: Vec<ReferenceRange>,
}

/// A part of an observation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    /// What was measured.
    #[serde(default)]
    pub code: CodeableConcept,
    /// The amount.
    pub value_quantity: Option<Quantity>,
}

/// An expected range.
#[derive(Debug, Deserialize)]
pub struct ReferenceRange {
    /// Lower bound.
    pub low: Option<Quantity>,
    /// Upper bound.
    pub high: Option<Quantity>,
    /// As text.
    pub text: Option<String>,
}

/// `DiagnosticReport`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticReport {
    /// Its id.
    pub id: String,
    /// LAB, RAD, ….
    #[serde(default)]
    pub category: Vec<CodeableConcept>,
    /// The encounter.
    pub encounter: Option<Reference>,
    /// When it was issued.
    pub issued: Option<String>,
    /// When the specimen was taken.
    pub effective_date_time: Option<String>,
    /// Its results (Observations).
    #[serde(default)]
    pub result: Vec<Reference>,
}

/// `MedicationRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MedicationRequest {
    /// Its id.
    pub id: String,
    /// active, stopped, ….
    pub status: Option<String>,
    /// The medication.
    pub medication_codeable_concept: Option<CodeableConcept>,
    /// When it was written.
    pub authored_on: Option<String>,
    /// The encounter.
    pub encounter: Option<Reference>,
    /// The prescriber.
    pub requester: Option<Reference>,
    /// How to take it.
    #[serde(default)]
    pub dosage_instruction: Vec<Dosage>,
    /// How much to hand out.
    pub dispense_request: Option<DispenseRequest>,
}

/// How to take a medication.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dosage {
    /// As text.
    pub text: Option<String>,
    /// How often.
    pub timing: Option<Timing>,
    /// Only when needed.
    pub as_needed_boolean: Option<bool>,
    /// The route.
    pub route: Option<CodeableConcept>,
    /// The dose.
    #[serde(default)]
    pub dose_and_rate: Vec<DoseAndRate>,
}

/// When a dose is taken.
#[derive(Debug, Deserialize)]
pub struct Timing {
    /// The repeat.
    pub repeat: Option<Repeat>,
}

/// `frequency` times per `period` `periodUnit`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repeat {
    /// Times.
    pub frequency: Option<u32>,
    /// Per how many units.
    pub period: Option<f64>,
    /// s, min, h, d, wk, mo, a.
    pub period_unit: Option<String>,
}

/// A dose.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoseAndRate {
    /// The amount of one dose.
    pub dose_quantity: Option<Quantity>,
}

/// How much to dispense.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispenseRequest {
    /// The quantity.
    pub quantity: Option<Quantity>,
    /// Refills.
    pub number_of_repeats_allowed: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_names_its_resource_in_every_form() {
        let id = |text: &str| {
            Reference {
                reference: Some(text.to_owned()),
                display: None,
            }
            .id()
            .map(str::to_owned)
        };
        assert_eq!(id("urn:uuid:8d50-2b").as_deref(), Some("8d50-2b"));
        assert_eq!(id("Practitioner/42").as_deref(), Some("42"));
        assert_eq!(
            id("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999").as_deref(),
            Some("9999")
        );
        assert_eq!(id("Practitioner/"), None);
    }
}
