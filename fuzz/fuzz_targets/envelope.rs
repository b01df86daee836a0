//! Any bytes as a message on the stream: parsing and validating the envelope
//! and payload never panics, and an accepted event survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use projector_events::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = Envelope::parse(data) {
        let again = Envelope::parse(&event.to_json_bytes()).expect("an accepted event re-parses");
        assert_eq!(again.envelope.event_id, event.envelope.event_id);
        assert_eq!(again.envelope.event_type, event.envelope.event_type);
    }
});
