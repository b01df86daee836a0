//! Coded concepts: a code from a terminology (LOINC tests, SNOMED findings,
//! RxNorm medications, and any other the sending system uses).

use serde::{Deserialize, Serialize};

use crate::value_set::value_set;

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

value_set! {
    /// The terminology of a code (FHIR Coding.system, a URI). The ones the
    /// plugins read are named; another (a hospital's local code set, say) is
    /// kept as sent, provided it is an absolute URI.
    extensible CodeSystem = "FHIR Coding.system (an absolute URI; these terminologies are named)" where other: absolute_uri, r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$" {
        /// Laboratory tests and observations.
        Loinc = "http://loinc.org",
        /// Clinical findings, diagnoses, procedures, substances.
        Snomed = "http://snomed.info/sct",
        /// Medications.
        RxNorm = "http://www.nlm.nih.gov/research/umls/rxnorm",
        /// Diagnoses, US clinical modification.
        Icd10Cm = "http://hl7.org/fhir/sid/icd-10-cm",
        /// Diagnoses, WHO edition.
        Icd10 = "http://hl7.org/fhir/sid/icd-10",
        /// Vaccines administered.
        Cvx = "http://hl7.org/fhir/sid/cvx",
        /// US national drug codes.
        Ndc = "http://hl7.org/fhir/sid/ndc",
    }
}

/// Refuses a system that is not an absolute URI (`scheme:rest`, no blanks),
/// as the schema's pattern does.
fn absolute_uri(uri: &str) -> Result<(), String> {
    let scheme_ok = uri.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if scheme_ok && !uri.chars().any(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!(
            "`{uri}` is not a code system: FHIR Coding.system is an absolute URI, e.g. `http://loinc.org`"
        ))
    }
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

    /// Whether this is the LOINC code `code`: rules that read a test by its
    /// number check the terminology too, as a local code may share it.
    pub fn is_loinc(&self, code: &str) -> bool {
        self.system == CodeSystem::Loinc && self.code == code
    }
}
