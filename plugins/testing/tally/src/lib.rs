//! A small plugin in two versions, for the rebuild tests. Version 1 counts
//! each patient's lab events by type; version 2 (feature `v2`, built into
//! `plugins-dist/testing/tally-v2.wasm`) counts radiology events too and
//! declares one more view, the count of each event type. Deploying one
//! over the other changes what the views mean, so the host rebuilds them.

use projector_sdk::{Event, Outcome, Plugin, PluginInfo, ViewDef, Views};

/// Each patient's events, counted by type (dots made underscores).
pub const TALLIES: &str = "tallies";
/// Version 2 only: every event type's count.
pub const KINDS: &str = "tally_kinds";

/// The plugin.
pub struct Tally;

impl Plugin for Tally {
    fn describe() -> PluginInfo {
        if cfg!(feature = "v2") {
            PluginInfo::new(
                "tally",
                "2.0.0",
                &["lab.>", "radiology.>"],
                vec![
                    ViewDef::new(TALLIES, "patientId", &[]),
                    ViewDef::new(KINDS, "eventType", &[]),
                ],
            )
        } else {
            PluginInfo::new(
                "tally",
                "1.0.0",
                &["lab.>"],
                vec![ViewDef::new(TALLIES, "patientId", &[])],
            )
        }
    }

    fn handle(event: &Event, _views: &dyn Views) -> Result<Outcome, String> {
        let kind = event.event_type().replace('.', "_");
        let mut out = Outcome::default();
        out.increment(TALLIES, &event.patient_id, &kind, 1);
        if cfg!(feature = "v2") {
            out.increment(KINDS, &kind, "count", 1);
        }
        Ok(out)
    }
}

projector_sdk::export_plugin!(Tally);

#[cfg(test)]
mod tests {
    use projector_sdk::testing::Harness;

    use super::*;

    #[test]
    fn counts_each_patients_events_by_type() {
        let mut harness = Harness::<Tally>::new();
        let line = |id: &str, kind: &str, payload: &str| {
            format!(
                r#"{{"eventId":"{id}","eventType":"{kind}","eventVersion":1,"timestamp":"2026-11-26T08:00:00Z","patientId":"p-1","userId":"u-1","portalType":"provider","fhirResourceType":"DiagnosticReport","payload":{payload}}}"#
            )
        };
        let viewed = r#"{"reportId":"r-1","viewedBy":"u-1"}"#;
        harness
            .feed_jsonl(&line("e-1", "lab.result.viewed", viewed))
            .unwrap();
        harness
            .feed_jsonl(&line("e-1", "lab.result.viewed", viewed))
            .unwrap();
        harness
            .feed_jsonl(&line("e-2", "lab.result.viewed", viewed))
            .unwrap();
        let tally = harness.view(TALLIES, "p-1").unwrap();
        assert_eq!(tally["lab_result_viewed"], 2, "{tally}");
    }
}
