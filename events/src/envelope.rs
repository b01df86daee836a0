//! The envelope every event travels in, and parsing raw bytes into a checked [`Event`].

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::payloads::Timestamp;
use crate::{EventError, Payload};

/// Who caused an event: the kind of portal or system that published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum PortalType {
    /// A clinician's portal.
    Provider,
    /// The patient's own portal.
    Patient,
    /// The laboratory information system.
    Lab,
    /// The radiology information system.
    Radiology,
    /// The pharmacy system.
    Pharmacy,
    /// An administrator.
    Admin,
    /// An automated process.
    System,
}

impl PortalType {
    /// The wire name, e.g. `lab`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Patient => "patient",
            Self::Lab => "lab",
            Self::Radiology => "radiology",
            Self::Pharmacy => "pharmacy",
            Self::Admin => "admin",
            Self::System => "system",
        }
    }
}

/// The JSON object every event is, as published: metadata plus a payload whose
/// shape depends on `eventType`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Unique id of the event; also the `Nats-Msg-Id` publishers set.
    pub event_id: NonEmpty,
    /// The event's type and NATS subject, e.g. `lab.result.available`.
    pub event_type: String,
    /// Version of the payload shape.
    #[serde(default = "first_version")]
    pub event_version: u32,
    /// When it happened (RFC 3339).
    pub timestamp: Timestamp,
    /// The patient the event is about.
    pub patient_id: NonEmpty,
    /// Who caused it (HIPAA).
    pub user_id: NonEmpty,
    /// What kind of system published it.
    pub portal_type: PortalType,
    /// Ties the events of one workflow together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The FHIR resource the payload corresponds to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_resource_type: Option<String>,
    /// The event-specific fields; see [`Payload`].
    #[cfg_attr(feature = "schema", schemars(with = "Value"))]
    pub payload: PayloadText,
}

/// A payload's JSON text exactly as published. The host reads the typed
/// payload from this text and hands a plugin the same text, which the
/// plugin kit reads the same way: host and plugin cannot see two
/// different payloads in one event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PayloadText(Box<RawValue>);

impl PayloadText {
    /// The text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The text of a payload built as a value (publishers, the simulator).
    pub fn from_value(value: &Value) -> Self {
        Self(serde_json::value::to_raw_value(value).expect("a JSON value always serialises"))
    }

    /// The top-level fields `names`, each when it is a string (the first,
    /// should the payload name it twice: the typed payload refuses that for
    /// its own fields), in the order of `names`; read in one pass without
    /// building the rest of the payload.
    pub fn fields(&self, names: &[&str]) -> Vec<Option<String>> {
        let mut reader = serde_json::Deserializer::from_str(self.as_str());
        reader
            .deserialize_any(StringFields { names })
            .unwrap_or_else(|_| vec![None; names.len()])
    }
}

impl PartialEq for PayloadText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// Finds top-level string fields of a JSON object, skipping the rest.
struct StringFields<'n> {
    names: &'n [&'n str],
}

impl<'de> Visitor<'de> for StringFields<'_> {
    type Value = Vec<Option<String>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: Vec<Option<Option<String>>> = vec![None; self.names.len()];
        while let Some(which) = map.next_key_seed(KeyAmong(self.names))? {
            match which.filter(|i| found[*i].is_none()) {
                Some(i) => found[i] = Some(map.next_value::<Value>()?.as_str().map(str::to_owned)),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // A name asked for twice is found under its first place only, and
        // copied only then.
        let mut out: Vec<Option<String>> = Vec::with_capacity(found.len());
        for (i, name) in self.names.iter().enumerate() {
            let value = match self.names[..i].iter().position(|n| n == name) {
                Some(first) => out[first].clone(),
                None => found[i].take().flatten(),
            };
            out.push(value);
        }
        Ok(out)
    }
}

/// Which of the names sought a field name is, without allocating it.
struct KeyAmong<'n>(&'n [&'n str]);

impl<'de> DeserializeSeed<'de> for KeyAmong<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyAmong<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

fn first_version() -> u32 {
    1
}

/// A string that must not be empty (ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct NonEmpty(#[cfg_attr(feature = "schema", schemars(length(min = 1)))] String);

impl NonEmpty {
    /// Wraps a string, refusing an empty one.
    pub fn new(value: impl Into<String>) -> Result<Self, String> {
        let value = value.into();
        if value.trim().is_empty() {
            Err("must not be empty".to_owned())
        } else {
            Ok(Self(value))
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for NonEmpty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event that passed every check: its envelope and its typed payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The envelope as received (its `payload` is the raw JSON payload).
    pub envelope: Envelope,
    /// The payload, typed by `eventType`.
    pub payload: Payload,
}

impl Envelope {
    /// Parses and checks raw bytes from the wire: UTF-8, a JSON object that
    /// the read models can store ([`crate::storable`]), every required
    /// envelope field once, a known `eventType` and a payload of its shape.
    pub fn parse(bytes: &[u8]) -> Result<Event, EventError> {
        let envelope = Self::read(bytes)?;
        let payload = envelope.typed_payload()?;
        Ok(Event { envelope, payload })
    }

    /// The first half of [`Envelope::parse`]: UTF-8, a storable JSON object,
    /// every required envelope field, none named twice (which of two
    /// `patientId`s would be the patient?); the payload is not read yet.
    pub fn read(bytes: &[u8]) -> Result<Envelope, EventError> {
        let text = std::str::from_utf8(bytes).map_err(|e| EventError::NotUtf8(e.to_string()))?;
        // One pass that builds nothing; only an event that fails it is read
        // again, as a value, to say what is wrong and where.
        if !crate::storable::fits(text) {
            let value: Value =
                serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
            if !value.is_object() {
                return Err(EventError::NotJson("top level is not an object".to_owned()));
            }
            crate::storable::check(&value).map_err(EventError::Unstorable)?;
        }
        let envelope: Envelope =
            serde_json::from_str(text).map_err(|e| EventError::InvalidEnvelope(e.to_string()))?;
        for (field, id) in [
            ("eventId", &envelope.event_id),
            ("patientId", &envelope.patient_id),
            ("userId", &envelope.user_id),
        ] {
            crate::storable::check_id(field, id.as_str()).map_err(EventError::Unstorable)?;
        }
        Ok(envelope)
    }

    /// The second half: a known `eventType` and a payload of its shape, read
    /// from the payload's text as a plugin reads it. A caller that keeps the
    /// envelope when this fails can still name the event and its patient.
    pub fn typed_payload(&self) -> Result<Payload, EventError> {
        Payload::from_json_str(&self.event_type, self.payload.as_str())
    }
}

impl Event {
    /// Builds an event around a payload, filling `eventType`, `fhirResourceType`
    /// and the raw payload from it; publishers and the simulator use this.
    pub fn new(
        event_id: &str,
        timestamp: Timestamp,
        patient_id: &str,
        user_id: &str,
        portal_type: PortalType,
        payload: Payload,
    ) -> Result<Self, String> {
        let envelope = Envelope {
            event_id: NonEmpty::new(event_id)?,
            event_type: payload.event_type().to_owned(),
            event_version: first_version(),
            timestamp,
            patient_id: NonEmpty::new(patient_id)?,
            user_id: NonEmpty::new(user_id)?,
            portal_type,
            correlation_id: None,
            fhir_resource_type: Some(payload.fhir_resource_type().to_owned()),
            payload: PayloadText::from_value(&payload.to_json()),
        };
        Ok(Self { envelope, payload })
    }

    /// The wire form: one JSON object.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.envelope).expect("an envelope of JSON values always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"eventId":"e1","eventType":"lab.result.viewed","timestamp":"2026-11-26T09:30:00Z",
        "patientId":"p1","userId":"u1","portalType":"provider","payload":{"reportId":"r1","viewedBy":"u1"}}"#;

    #[test]
    fn parses_a_valid_event() {
        let event = Envelope::parse(GOOD.as_bytes()).expect("valid");
        assert_eq!(event.envelope.event_id.as_str(), "e1");
        assert_eq!(event.payload.event_type(), "lab.result.viewed");
    }

    #[test]
    fn refuses_each_kind_of_bad_input_with_its_reason() {
        assert!(matches!(
            Envelope::parse(b"\xff\xfe"),
            Err(EventError::NotUtf8(_))
        ));
        assert!(matches!(
            Envelope::parse(b"not json"),
            Err(EventError::NotJson(_))
        ));
        assert!(matches!(
            Envelope::parse(b"[1,2]"),
            Err(EventError::NotJson(_))
        ));
        let missing = GOOD.replace(r#""userId":"u1","#, "");
        let err = Envelope::parse(missing.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("userId"), "{err}");
        let unknown = GOOD.replace("lab.result.viewed", "lab.result.shredded");
        assert_eq!(
            Envelope::parse(unknown.as_bytes()),
            Err(EventError::UnknownType("lab.result.shredded".into()))
        );
        let wrong_type = GOOD.replace(r#""reportId":"r1""#, r#""reportId":42"#);
        assert!(matches!(
            Envelope::parse(wrong_type.as_bytes()),
            Err(EventError::InvalidPayload { .. })
        ));
        let bad_time = GOOD.replace("2026-11-26T09:30:00Z", "yesterday");
        assert!(matches!(
            Envelope::parse(bad_time.as_bytes()),
            Err(EventError::InvalidEnvelope(_))
        ));
        let empty_id = GOOD.replace(r#""eventId":"e1""#, r#""eventId":"""#);
        assert!(matches!(
            Envelope::parse(empty_id.as_bytes()),
            Err(EventError::InvalidEnvelope(_))
        ));
    }

    #[test]
    fn a_field_named_twice_is_refused_rather_than_guessed() {
        let two_patients = GOOD.replace(r#""userId":"u1","#, r#""userId":"u1","patientId":"p2","#);
        let err = Envelope::parse(two_patients.as_bytes()).unwrap_err();
        assert!(matches!(err, EventError::InvalidEnvelope(_)), "{err}");
        assert!(
            err.to_string().contains("duplicate field `patientId`"),
            "{err}"
        );
        let two_reports = GOOD.replace(r#""reportId":"r1""#, r#""reportId":"r1","reportId":"r2""#);
        let err = Envelope::parse(two_reports.as_bytes()).unwrap_err();
        assert!(matches!(err, EventError::InvalidPayload { .. }), "{err}");
        assert!(
            err.to_string().contains("duplicate field `reportId`"),
            "{err}"
        );
    }

    #[test]
    fn the_payload_is_kept_as_published_and_its_fields_read_from_it() {
        let published = r#"{ "viewedBy" : "u1", "reportId":"r\u0031", "n": 7 }"#;
        let text = GOOD.replace(r#"{"reportId":"r1","viewedBy":"u1"}"#, published);
        let event = Envelope::parse(text.as_bytes()).expect("valid");
        assert_eq!(event.envelope.payload.as_str(), published);
        let fields = event
            .envelope
            .payload
            .fields(&["reportId", "viewedBy", "n", "missing", "reportId"]);
        let fields: Vec<Option<&str>> = fields.iter().map(Option::as_deref).collect();
        assert_eq!(
            fields,
            [Some("r1"), Some("u1"), None, None, Some("r1")],
            "strings by name, in the order asked; a number or a missing field is none"
        );
    }

    #[test]
    fn a_field_named_twice_in_the_payload_is_read_as_its_first() {
        let payload = PayloadText(
            serde_json::value::RawValue::from_string(
                r#"{"orderId":"o1","n":1,"orderId":"o2"}"#.to_owned(),
            )
            .unwrap(),
        );
        assert_eq!(payload.fields(&["orderId"]), [Some("o1".to_owned())]);
    }
}
