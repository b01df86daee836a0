//! Coded concepts: LOINC tests, SNOMED findings, RxNorm medications.

use serde::{Deserialize, Serialize};

/// A coded concept, `{ "system", "code", "display" }`, as FHIR's Coding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Code {
    /// The terminology the code belongs to.
    pub system: CodeSystem,
    /// The code within that terminology, e.g. `2823-3`.
    pub code: String,
    /// Human-readable text for the code, e.g. `Potassium`.
    pub display: String,
}

/// The terminologies SPEC allows in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum CodeSystem {
    /// Laboratory tests and observations.
    #[serde(rename = "http://loinc.org")]
    Loinc,
    /// Clinical findings, diagnoses, procedures, substances.
    #[serde(rename = "http://snomed.info/sct")]
    Snomed,
    /// Medications.
    #[serde(rename = "http://www.nlm.nih.gov/research/umls/rxnorm")]
    RxNorm,
}

impl Code {
    /// Builds a code; used by the simulator, fixtures and tests.
    pub fn new(system: CodeSystem, code: &str, display: &str) -> Self {
        Self {
            system,
            code: code.to_owned(),
            display: display.to_owned(),
        }
    }
}
