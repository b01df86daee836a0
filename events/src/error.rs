//! Why an event was refused.

/// A reason an event cannot be projected. The text is what a dead letter shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The bytes are not UTF-8 text.
    #[error("event is not valid UTF-8: {0}")]
    NotUtf8(String),
    /// The text is not a JSON object.
    #[error("event is not a JSON object: {0}")]
    NotJson(String),
    /// An envelope field is missing or has the wrong type or format.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(String),
    /// A value the read models could not store: U+0000 in a string, an
    /// over-long id, a number JSON does not carry exactly.
    #[error("event cannot be stored: {0}")]
    Unstorable(String),
    /// `eventType` names no event of the contract.
    #[error("unknown eventType `{0}`")]
    UnknownType(String),
    /// The payload does not fit its event type.
    #[error("invalid payload for {event_type}: {reason}")]
    InvalidPayload {
        /// The event type whose payload was checked.
        event_type: String,
        /// What serde found wrong.
        reason: String,
    },
}
