//! Every enumerated field of the contract, each with the FHIR or HL7 v3 value
//! set it follows in full (README "Coded fields" lists them). Declared by
//! [`value_set!`](crate::value_set): required sets refuse other codes,
//! extensible ones keep them as `Other`.

use crate::CodeSystem;
use crate::value_set::{ValueSetInfo, info, value_set};

/// One coded field of the contract: where it is and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodedField {
    /// The event type whose payload holds it.
    pub event_type: &'static str,
    /// Its place in the payload, `[]` standing for every item of a list,
    /// e.g. `results[].interpretation`.
    pub path: &'static str,
    /// Its value set.
    pub value_set: ValueSetInfo,
}

impl CodedField {
    /// The field's JSON pointer within the payload, for the first item of
    /// a list: `results[].interpretation` is `/results/0/interpretation`.
    pub fn pointer(&self) -> String {
        format!("/{}", self.path.replace("[]", ".0").replace('.', "/"))
    }

    /// The field as a dead letter's reason names it (the first item of a
    /// list): `results[0].interpretation`.
    pub fn named(&self) -> String {
        self.path.replace("[]", "[0]")
    }
}

const fn field(
    event_type: &'static str,
    path: &'static str,
    value_set: ValueSetInfo,
) -> CodedField {
    CodedField {
        event_type,
        path,
        value_set,
    }
}

/// Every coded field of every payload, as the README lists them.
pub const FIELDS: &[CodedField] = &[
    field("patient.created", "gender", info::<Gender>()),
    field("patient.updated", "changes.gender", info::<Gender>()),
    field(
        "patient.allergy.added",
        "substance.system",
        info::<CodeSystem>(),
    ),
    field("patient.allergy.added", "severity", info::<Severity>()),
    field(
        "patient.allergy.added",
        "criticality",
        info::<Criticality>(),
    ),
    field(
        "patient.allergy.added",
        "clinicalStatus",
        info::<AllergyClinicalStatus>(),
    ),
    field("lab.order.created", "tests[].system", info::<CodeSystem>()),
    field("lab.order.created", "priority", info::<OrderPriority>()),
    field(
        "lab.result.available",
        "results[].code.system",
        info::<CodeSystem>(),
    ),
    field(
        "lab.result.available",
        "results[].interpretation",
        info::<Interpretation>(),
    ),
    field("lab.critical.alert", "code.system", info::<CodeSystem>()),
    field("radiology.order.created", "modality", info::<Modality>()),
    field(
        "radiology.order.created",
        "procedure.system",
        info::<CodeSystem>(),
    ),
    field(
        "radiology.order.created",
        "priority",
        info::<OrderPriority>(),
    ),
    field("radiology.study.complete", "modality", info::<Modality>()),
    field(
        "pharmacy.medication.prescribed",
        "medication.system",
        info::<CodeSystem>(),
    ),
    field(
        "pharmacy.medication.prescribed",
        "status",
        info::<MedicationRequestStatus>(),
    ),
    field(
        "pharmacy.interaction.alert",
        "medication.system",
        info::<CodeSystem>(),
    ),
    field(
        "pharmacy.interaction.alert",
        "interactingMedication.system",
        info::<CodeSystem>(),
    ),
    field(
        "pharmacy.interaction.alert",
        "severity",
        info::<IssueSeverity>(),
    ),
    field(
        "pharmacy.allergy.contraindication",
        "medication.system",
        info::<CodeSystem>(),
    ),
    field(
        "pharmacy.allergy.contraindication",
        "substance.system",
        info::<CodeSystem>(),
    ),
    field(
        "pharmacy.allergy.contraindication",
        "severity",
        info::<IssueSeverity>(),
    ),
    field("encounter.started", "class", info::<EncounterClass>()),
    field(
        "encounter.completed",
        "diagnoses[].system",
        info::<CodeSystem>(),
    ),
    field(
        "encounter.completed",
        "procedures[].system",
        info::<CodeSystem>(),
    ),
];

value_set! {
    /// Administrative gender (FHIR Patient.gender).
    required Gender = "FHIR AdministrativeGender (http://hl7.org/fhir/ValueSet/administrative-gender)" {
        /// Male.
        Male = "male",
        /// Female.
        Female = "female",
        /// Other.
        Other = "other",
        /// Unknown.
        Unknown = "unknown",
    }
}

value_set! {
    /// How severe a reaction was (FHIR AllergyIntolerance.reaction.severity).
    required Severity = "FHIR AllergyIntoleranceSeverity (http://hl7.org/fhir/ValueSet/reaction-event-severity)" {
        /// Mild.
        Mild = "mild",
        /// Moderate.
        Moderate = "moderate",
        /// Severe.
        Severe = "severe",
    }
}

value_set! {
    /// The potential for a serious reaction (FHIR AllergyIntolerance.criticality).
    required Criticality = "FHIR AllergyIntoleranceCriticality (http://hl7.org/fhir/ValueSet/allergy-intolerance-criticality)" {
        /// Low.
        Low = "low",
        /// High: counts as a critical alert on the chart while the allergy is active.
        High = "high",
        /// Unable to assess.
        UnableToAssess = "unable-to-assess",
    }
}

value_set! {
    /// Whether an allergy is current (FHIR AllergyIntolerance.clinicalStatus).
    required AllergyClinicalStatus = "FHIR AllergyIntoleranceClinicalStatusCodes (http://hl7.org/fhir/ValueSet/allergyintolerance-clinical)" {
        /// Active.
        Active = "active",
        /// Inactive.
        Inactive = "inactive",
        /// Resolved.
        Resolved = "resolved",
    }
}

value_set! {
    /// How urgent a request is (FHIR ServiceRequest.priority).
    required OrderPriority = "FHIR RequestPriority (http://hl7.org/fhir/ValueSet/request-priority)" {
        /// Routine.
        Routine = "routine",
        /// Sooner than routine.
        Urgent = "urgent",
        /// As soon as possible, before urgent.
        Asap = "asap",
        /// Immediately, the highest priority.
        Stat = "stat",
    }
}

value_set! {
    /// The state of a prescription (FHIR MedicationRequest.status).
    required MedicationRequestStatus = "FHIR medicationrequest Status (http://hl7.org/fhir/ValueSet/medicationrequest-status)" {
        /// Active.
        Active = "active",
        /// On hold.
        OnHold = "on-hold",
        /// Cancelled before any was taken.
        Cancelled = "cancelled",
        /// Completed.
        Completed = "completed",
        /// Entered in error.
        EnteredInError = "entered-in-error",
        /// Stopped.
        Stopped = "stopped",
        /// Draft.
        Draft = "draft",
        /// Unknown.
        Unknown = "unknown",
    }
}

value_set! {
    /// How severe a detected issue is (FHIR DetectedIssue.severity).
    required IssueSeverity = "FHIR DetectedIssueSeverity (http://hl7.org/fhir/ValueSet/detectedissue-severity)" {
        /// High.
        High = "high",
        /// Moderate.
        Moderate = "moderate",
        /// Low.
        Low = "low",
    }
}

value_set! {
    /// How a result compares with what is expected (FHIR
    /// Observation.interpretation).
    extensible Interpretation = "HL7 v3 ObservationInterpretation (http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation)" {
        /// Carrier.
        Carrier = "CAR",
        /// Carrier (older code).
        CarrierOld = "Carrier",
        /// Better.
        Better = "B",
        /// Significant change down.
        ChangeDown = "D",
        /// Significant change up.
        ChangeUp = "U",
        /// Worse.
        Worse = "W",
        /// Off scale low.
        OffScaleLow = "<",
        /// Off scale high.
        OffScaleHigh = ">",
        /// Anti-complementary substances present.
        AntiComplementary = "AC",
        /// Insufficient evidence.
        InsufficientEvidence = "IE",
        /// Quality control failure.
        QualityControlFailure = "QCF",
        /// Cytotoxic substance present.
        Cytotoxic = "TOX",
        /// Abnormal.
        Abnormal = "A",
        /// Critical abnormal: a critical value.
        CriticalAbnormal = "AA",
        /// Critical high: a critical value.
        CriticalHigh = "HH",
        /// Critical low: a critical value.
        CriticalLow = "LL",
        /// High.
        High = "H",
        /// Significantly high (older code).
        SignificantlyHighOld = "H>",
        /// Significantly high.
        SignificantlyHigh = "HU",
        /// Low.
        Low = "L",
        /// Significantly low (older code).
        SignificantlyLowOld = "L<",
        /// Significantly low.
        SignificantlyLow = "LU",
        /// Normal.
        Normal = "N",
        /// Intermediate.
        Intermediate = "I",
        /// Moderately susceptible.
        ModeratelySusceptible = "MS",
        /// No CLSI defined breakpoint.
        NoBreakpoint = "NCL",
        /// Non-susceptible.
        NonSusceptible = "NS",
        /// Resistant.
        Resistant = "R",
        /// Synergy, resistant.
        SynergyResistant = "SYN-R",
        /// Susceptible.
        Susceptible = "S",
        /// Susceptible, dose dependent.
        SusceptibleDoseDependent = "SDD",
        /// Synergy, susceptible.
        SynergySusceptible = "SYN-S",
        /// Very susceptible.
        VerySusceptible = "VS",
        /// Outside threshold.
        OutsideThreshold = "EX",
        /// Above high threshold.
        AboveThreshold = "HX",
        /// Below low threshold.
        BelowThreshold = "LX",
        /// Hold for medical review.
        HoldForReview = "HM",
        /// Indeterminate.
        Indeterminate = "IND",
        /// Equivocal.
        Equivocal = "E",
        /// Negative.
        Negative = "NEG",
        /// Not detected.
        NotDetected = "ND",
        /// Positive.
        Positive = "POS",
        /// Detected.
        Detected = "DET",
        /// Expected.
        Expected = "EXP",
        /// Unexpected.
        Unexpected = "UNE",
        /// Non-reactive.
        NonReactive = "NR",
        /// Reactive.
        Reactive = "RR",
        /// Weakly reactive.
        WeaklyReactive = "WR",
        /// Interpretation qualifiers in separate OBX segments.
        SeparateSegments = "OBX",
    }
}

impl Interpretation {
    /// Whether the flag itself marks a critical value (`HH`, `LL`, `AA`). A
    /// code the set does not list never does: the result keeps the
    /// publisher's own `critical` flag.
    pub fn is_critical(&self) -> bool {
        matches!(
            self,
            Self::CriticalHigh | Self::CriticalLow | Self::CriticalAbnormal
        )
    }
}

value_set! {
    /// The class of an encounter (FHIR Encounter.class).
    extensible EncounterClass = "HL7 v3 ActEncounterCode (http://terminology.hl7.org/ValueSet/v3-ActEncounterCode)" {
        /// Ambulatory.
        Ambulatory = "AMB",
        /// Emergency.
        Emergency = "EMER",
        /// Field.
        Field = "FLD",
        /// Home health.
        HomeHealth = "HH",
        /// Inpatient encounter.
        Inpatient = "IMP",
        /// Inpatient acute.
        InpatientAcute = "ACUTE",
        /// Inpatient non-acute.
        InpatientNonAcute = "NONAC",
        /// Observation encounter.
        Observation = "OBSENC",
        /// Pre-admission.
        PreAdmission = "PRENC",
        /// Short stay.
        ShortStay = "SS",
        /// Virtual.
        Virtual = "VR",
    }
}

value_set! {
    /// The kind of equipment that acquired images (FHIR
    /// ImagingStudy.series.modality).
    extensible Modality = "DICOM CID 29 AcquisitionModality (http://dicom.nema.org/medical/dicom/current/output/chtml/part16/sect_CID_29.html)" {
        /// Autorefraction.
        Autorefraction = "AR",
        /// Ultrasound bone densitometry.
        UltrasoundBoneDensitometry = "BDUS",
        /// Bone mineral densitometry.
        BoneDensitometry = "BMD",
        /// Computed radiography.
        ComputedRadiography = "CR",
        /// Computed tomography.
        ComputedTomography = "CT",
        /// Digital radiography.
        DigitalRadiography = "DX",
        /// Electrocardiography.
        Electrocardiography = "ECG",
        /// Cardiac electrophysiology.
        Electrophysiology = "EPS",
        /// Endoscopy.
        Endoscopy = "ES",
        /// General microscopy.
        GeneralMicroscopy = "GM",
        /// Hemodynamic waveform.
        Hemodynamic = "HD",
        /// Intra-oral radiography.
        IntraOral = "IO",
        /// Intravascular optical coherence tomography.
        IntravascularOct = "IVOCT",
        /// Intravascular ultrasound.
        IntravascularUltrasound = "IVUS",
        /// Keratometry.
        Keratometry = "KER",
        /// Lensometry.
        Lensometry = "LEN",
        /// Mammography.
        Mammography = "MG",
        /// Magnetic resonance.
        MagneticResonance = "MR",
        /// Nuclear medicine.
        NuclearMedicine = "NM",
        /// Ophthalmic axial measurements.
        OphthalmicAxial = "OAM",
        /// Optical coherence tomography.
        OpticalCoherence = "OCT",
        /// Ophthalmic photography.
        OphthalmicPhotography = "OP",
        /// Ophthalmic mapping.
        OphthalmicMapping = "OPM",
        /// Ophthalmic tomography.
        OphthalmicTomography = "OPT",
        /// Ophthalmic visual field.
        VisualField = "OPV",
        /// Optical surface scan.
        OpticalSurfaceScan = "OSS",
        /// Positron emission tomography.
        Pet = "PT",
        /// Panoramic X-ray.
        Panoramic = "PX",
        /// Radio fluoroscopy.
        Fluoroscopy = "RF",
        /// Radiographic imaging.
        Radiographic = "RG",
        /// Slide microscopy.
        SlideMicroscopy = "SM",
        /// Subjective refraction.
        SubjectiveRefraction = "SRF",
        /// Ultrasound.
        Ultrasound = "US",
        /// Visual acuity.
        VisualAcuity = "VA",
        /// X-ray angiography.
        Angiography = "XA",
        /// External-camera photography.
        Photography = "XC",
    }
}
