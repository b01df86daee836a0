//! Run a plugin natively against in-memory views, with the host's semantics:
//! events deduplicated by id, mutations applied by [`crate::document::apply`],
//! mutations only to the plugin's own views, `view-get` seeing earlier events.

use std::collections::{BTreeMap, HashSet};
use std::marker::PhantomData;

use projector_events::Envelope;
use serde_json::Value;

use crate::{AuditEntry, Event, Notification, Plugin, PluginInfo, Views, document};

/// In-memory views that a plugin's handler reads and the harness writes.
#[derive(Debug, Default)]
struct Memory(BTreeMap<(String, String), Value>);

impl Views for Memory {
    fn get(&self, view: &str, key: &str) -> Option<Value> {
        self.0.get(&(view.to_owned(), key.to_owned())).cloned()
    }
}

/// A plugin under test with its views, notifications and audit entries so far.
///
/// ```
/// use projector_sdk::events::Payload;
/// use projector_sdk::testing::Harness;
/// use projector_sdk::{Event, Outcome, Plugin, PluginInfo, ViewDef, Views, json};
///
/// struct Mrns;
/// impl Plugin for Mrns {
///     fn describe() -> PluginInfo {
///         PluginInfo::new("mrns", "1", &["patient.created"], vec![ViewDef::new("mrns", "patientId", &[])])
///     }
///     fn handle(event: &Event, _: &dyn Views) -> Result<Outcome, String> {
///         let mut out = Outcome::default();
///         if let Payload::PatientCreated(p) = &event.payload {
///             out.upsert("mrns", &event.patient_id, json!({ "mrn": p.mrn }));
///         }
///         Ok(out)
///     }
/// }
///
/// let mut harness = Harness::<Mrns>::new();
/// harness.feed_jsonl(r#"{"eventId":"e-1","eventType":"patient.created","eventVersion":1,
///     "timestamp":"2026-11-26T08:00:00Z","patientId":"p-1","userId":"u-1","portalType":"admin",
///     "fhirResourceType":"Patient","payload":{"mrn":"MRN-1","name":{"given":"Ada","family":"L"},
///     "birthDate":"1815-12-10","gender":"female"}}"#.replace('\n', "").as_str())?;
/// assert_eq!(harness.view("mrns", "p-1"), Some(json!({ "mrn": "MRN-1" })));
/// # Ok::<(), String>(())
/// ```
pub struct Harness<P: Plugin> {
    info: PluginInfo,
    views: Memory,
    seen: HashSet<String>,
    sequence: u64,
    /// Every notification stored so far (deduplicated like the host's outbox).
    pub notifications: Vec<Notification>,
    /// Every audit entry written so far.
    pub audits: Vec<AuditEntry>,
    plugin: PhantomData<P>,
}

impl<P: Plugin> Default for Harness<P> {
    fn default() -> Self {
        Self {
            info: P::describe(),
            views: Memory::default(),
            seen: HashSet::new(),
            sequence: 0,
            notifications: Vec::new(),
            audits: Vec::new(),
            plugin: PhantomData,
        }
    }
}

impl<P: Plugin> Harness<P> {
    /// A plugin with empty views.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one event as the host would: skipped when its id was seen or its
    /// type is not subscribed; otherwise handled and its outcome applied.
    pub fn feed(&mut self, event: &projector_events::Event) -> Result<(), String> {
        self.sequence += 1;
        let event = Event::from_wire(event, self.sequence);
        if !self.info.subscribes_to(event.event_type()) || !self.seen.insert(event.id.clone()) {
            return Ok(());
        }
        let outcome = P::handle(&event, &self.views)?;
        self.info.check_audits(&outcome)?;
        // All of an event's mutations or none, as the host applies them.
        let mut changed: BTreeMap<(String, String), Option<Value>> = BTreeMap::new();
        for mutation in &outcome.mutations {
            let (view, key) = mutation.target();
            if !self.info.owns_view(view) {
                return Err(format!(
                    "mutation of view `{view}`, which the plugin did not declare"
                ));
            }
            let slot = (view.to_owned(), key.to_owned());
            let doc = changed
                .entry(slot)
                .or_insert_with_key(|slot| self.views.0.get(slot).cloned());
            document::apply(doc, mutation).map_err(|e| e.to_string())?;
        }
        for (slot, doc) in changed {
            match doc {
                Some(doc) => self.views.0.insert(slot, doc),
                None => self.views.0.remove(&slot),
            };
        }
        for notification in outcome.notifications {
            let duplicate = self.notifications.iter().any(|n| {
                n.recipient == notification.recipient && n.dedupe_key == notification.dedupe_key
            });
            if !duplicate {
                self.notifications.push(notification);
            }
        }
        self.audits.extend(outcome.audits);
        Ok(())
    }

    /// Feeds every line of a JSON-lines text (events in the wire format).
    pub fn feed_jsonl(&mut self, text: &str) -> Result<(), String> {
        for (number, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let event = Envelope::parse(line.as_bytes())
                .map_err(|e| format!("line {}: {e}", number + 1))?;
            self.feed(&event)?;
        }
        Ok(())
    }

    /// A document of one of the plugin's views.
    pub fn view(&self, view: &str, key: &str) -> Option<Value> {
        self.views.get(view, key)
    }

    /// Every document of one of the plugin's views, by key: what the host's
    /// table for the view should hold after the same events.
    ///
    /// ```
    /// use projector_sdk::testing::Harness;
    /// # use projector_sdk::{Event, Outcome, Plugin, PluginInfo, ViewDef, Views};
    /// # struct Nothing;
    /// # impl Plugin for Nothing {
    /// #     fn describe() -> PluginInfo { PluginInfo::new("nothing", "1", &[">"], vec![ViewDef::new("v", "patientId", &[])]) }
    /// #     fn handle(_: &Event, _: &dyn Views) -> Result<Outcome, String> { Ok(Outcome::default()) }
    /// # }
    /// assert!(Harness::<Nothing>::new().documents("v").is_empty());
    /// ```
    pub fn documents(&self, view: &str) -> BTreeMap<String, Value> {
        self.views
            .0
            .iter()
            .filter(|((v, _), _)| v == view)
            .map(|((_, key), doc)| (key.clone(), doc.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Outcome, ViewDef, json};

    /// Merges into its view, then increments a field that is not a number.
    struct HalfWay;

    impl Plugin for HalfWay {
        fn describe() -> PluginInfo {
            PluginInfo::new(
                "half-way",
                "1",
                &["patient.created"],
                vec![ViewDef::new("v", "patientId", &[])],
            )
        }
        fn handle(event: &Event, _: &dyn Views) -> Result<Outcome, String> {
            let mut out = Outcome::default();
            out.merge("v", &event.patient_id, json!({ "n": "text" }));
            out.increment("v", &event.patient_id, "n", 1);
            Ok(out)
        }
    }

    #[test]
    fn an_event_whose_outcome_fails_half_way_changes_nothing() {
        let mut harness = Harness::<HalfWay>::new();
        let line = r#"{"eventId":"e-1","eventType":"patient.created","eventVersion":1,"timestamp":"2026-11-26T08:00:00Z","patientId":"p-1","userId":"u-1","portalType":"admin","fhirResourceType":"Patient","payload":{"mrn":"M","name":{"given":"A","family":"B"},"birthDate":"1970-01-01","gender":"male"}}"#;
        assert!(harness.feed_jsonl(line).is_err());
        assert_eq!(harness.view("v", "p-1"), None);
    }
}
