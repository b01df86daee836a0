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
        for mutation in &outcome.mutations {
            let (view, key) = mutation.target();
            if !self.info.owns_view(view) {
                return Err(format!(
                    "mutation of view `{view}`, which the plugin did not declare"
                ));
            }
            let slot = (view.to_owned(), key.to_owned());
            let mut doc = self.views.0.remove(&slot);
            document::apply(&mut doc, mutation).map_err(|e| e.to_string())?;
            if let Some(doc) = doc {
                self.views.0.insert(slot, doc);
            }
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
}
