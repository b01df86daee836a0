//! The event a plugin handles.

use projector_events::{Payload, PortalType, payloads::Timestamp};

/// One event as a plugin sees it: the envelope's metadata and the typed payload.
///
/// ```
/// use projector_sdk::Event;
/// use projector_sdk::events::{Envelope, Payload};
///
/// let wire = Envelope::parse(br#"{"eventId":"e-1","eventType":"lab.result.viewed","eventVersion":1,
///     "timestamp":"2026-11-26T09:45:00Z","patientId":"p-1","userId":"u-dr-1","portalType":"provider",
///     "fhirResourceType":"AuditEvent","payload":{"reportId":"rep-1","viewedBy":"u-dr-1"}}"#).unwrap();
/// let event = Event::from_wire(&wire, 7);
/// assert_eq!(event.event_type(), "lab.result.viewed");
/// assert!(matches!(event.payload, Payload::LabResultViewed(_)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The envelope's `eventId`.
    pub id: String,
    /// The patient it is about.
    pub patient_id: String,
    /// When it happened.
    pub timestamp: Timestamp,
    /// Who caused it.
    pub user_id: String,
    /// What kind of system published it.
    pub portal_type: PortalType,
    /// JetStream stream sequence.
    pub sequence: u64,
    /// The payload; its variant is the event type.
    pub payload: Payload,
}

impl Event {
    /// The plugin's view of a parsed wire event (tests and the native harness).
    pub fn from_wire(event: &projector_events::Event, sequence: u64) -> Self {
        let envelope = &event.envelope;
        Self {
            id: envelope.event_id.to_string(),
            patient_id: envelope.patient_id.to_string(),
            timestamp: envelope.timestamp.clone(),
            user_id: envelope.user_id.to_string(),
            portal_type: envelope.portal_type,
            sequence,
            payload: event.payload.clone(),
        }
    }

    /// The event type, e.g. `lab.result.available`.
    pub fn event_type(&self) -> &'static str {
        self.payload.event_type()
    }
}
