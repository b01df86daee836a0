//! Patients map to a fixed number of partitions (`PARTITIONS`), and each
//! plugin's partitions are owned one by one across the hosts: every event
//! of a patient is applied by the one owner of its partition, in stream
//! order, while other hosts apply other patients' events.
//!
//! A patient's partition is the first four bytes of the MD5 of its id, as a
//! big-endian number, modulo the count. PostgreSQL computes the same with
//! its built-in `md5` (the `projector_partition` function of the
//! migrations), so the store can pick a partition's dead letters and
//! parked events without the host reading them all; a publisher can
//! compute it too. An event without a readable patient belongs to the
//! partition of the empty id, so exactly one owner dead-letters it.

use std::borrow::Cow;

use md5::{Digest, Md5};
use serde::Deserialize;

/// The partition of patient `patient_id` among `partitions`.
pub fn of(patient_id: &str, partitions: u32) -> u32 {
    let digest = Md5::digest(patient_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % partitions.max(1)
}

/// The partition of an event as published: its `patientId`'s, read
/// without the rest of the envelope; the empty id's when there is none
/// to read.
pub fn of_event(raw: &[u8], partitions: u32) -> u32 {
    /// The one field of an envelope a partition needs.
    #[derive(Deserialize)]
    struct Patient<'a> {
        #[serde(rename = "patientId", borrow, default)]
        patient_id: Option<Cow<'a, str>>,
    }
    let patient = serde_json::from_slice::<Patient>(raw)
        .ok()
        .and_then(|p| p.patient_id);
    of(patient.as_deref().unwrap_or(""), partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patient_always_lands_in_the_same_partition_and_patients_spread() {
        // The values PostgreSQL's `md5` gives (see the migration's function).
        assert_eq!(of("abc", 32), 24);
        assert_eq!(of("patient-1", 1 << 31), 4_219_155_262 % (1 << 31));
        let mut seen = [0usize; 8];
        for p in 0..800 {
            seen[of(&format!("patient-{p}"), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (60..=140).contains(n)), "{seen:?}");
    }

    #[test]
    fn an_event_is_in_its_patients_partition_and_an_unreadable_one_in_the_empty_ids() {
        let event = br#"{"eventId":"e1","patientId":"abc","payload":{"patientId":"x"}}"#;
        assert_eq!(of_event(event, 32), of("abc", 32));
        assert_eq!(of_event(b"not json", 32), of("", 32));
        assert_eq!(of_event(br#"{"patientId":7}"#, 32), of("", 32));
        assert_eq!(of_event(br#"{"eventId":"e1"}"#, 32), of("", 32));
    }
}
