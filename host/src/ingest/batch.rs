//! Turning a batch of raw messages into one committed [`Batch`]: checks,
//! deduplication, prefetch, the plugin calls, retries and dead letters.

use std::collections::HashSet;
use std::time::Duration;

use projector_events::{Envelope, Event, UnknownCode};
use sqlx::PgPool;

use crate::runtime::{CallError, Plugin, PluginInstance};
use crate::store::dead_letters::{self, Poisoned};
use crate::store::{
    Ahead, ApplyFailure, Batch, DocCache, NewAudit, NewDeadLetter, NewNotification, NewParked,
    Overlay, Target, processed,
};

/// One message to apply.
#[derive(Debug, Clone)]
pub struct Item {
    /// Stream sequence.
    pub seq: u64,
    /// The subject without the deployment's prefix: the event type.
    pub subject: String,
    /// The bytes as published.
    pub raw: Vec<u8>,
    /// Where it comes from.
    pub origin: Origin,
    /// Its patient's partition (see [`crate::cluster::partition`]).
    pub partition: u32,
}

impl Item {
    /// A message of the stream, of `partition` (the one its `patientId`
    /// names: [`crate::cluster::partition::of_event`]).
    pub fn from_stream(seq: u64, subject: String, raw: Vec<u8>, partition: u32) -> Self {
        Self {
            seq,
            partition,
            subject,
            raw,
            origin: Origin::Stream,
        }
    }
}

/// Where an item comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The stream, now.
    Stream,
    /// A dead letter (this id) an operator re-drives.
    DeadLetter(i64),
    /// A parked event released now that its patient is clear.
    Parked,
}

/// What a batch that is still committing leaves for the next one to start
/// from, which the database does not show yet: the documents it wrote,
/// the events it applied, the patients it poisoned.
#[derive(Default)]
pub struct Earlier {
    /// The documents it wrote.
    pub ahead: Ahead,
    /// The eventIds it applied.
    processed: HashSet<String>,
    /// The patients it dead-lettered an event of (`blocked`) or parked one
    /// of (`waiting`).
    poisoned: Poisoned,
}

impl Earlier {
    /// What `batch` leaves besides its documents, which go into `ahead`
    /// once they are known.
    pub fn of(batch: &Batch) -> Self {
        let mut poisoned = Poisoned::default();
        for letter in batch.dead_letters.iter().filter(|l| l.poisons) {
            poisoned.blocked.extend(letter.patient_id.clone());
        }
        for parked in &batch.parked {
            poisoned.waiting.insert(parked.patient_id.clone());
        }
        Self {
            ahead: Ahead::default(),
            processed: batch.processed.iter().cloned().collect(),
            poisoned,
        }
    }
}

/// A batch ready to commit, with what it applied that is worth counting.
pub struct Projected {
    /// What the batch commits.
    pub batch: Batch,
    /// Codes outside their extensible value set in the events applied.
    pub unknown_codes: Vec<UnknownCode>,
}

/// Builds and fills the batch for `items` into `target`, calling the plugin
/// once per event; documents `cache` kept from earlier batches are used
/// where still current, and what the batch before leaves (`earlier`, while
/// it commits) counts as committed. Errors are database failures: the
/// caller retries the whole batch.
pub async fn project(
    plugin: &Plugin,
    target: &Target,
    pool: &PgPool,
    cache: &DocCache,
    max_attempts: u32,
    items: Vec<Item>,
    earlier: Option<&Earlier>,
) -> anyhow::Result<Projected> {
    let mut batch = Batch::new(target);
    for item in items.iter().filter(|i| i.origin == Origin::Stream) {
        batch.checkpoint = batch.checkpoint.max(item.seq);
        let first = &mut batch.partition(item.partition).first;
        *first = Some(first.map_or(item.seq, |f| f.min(item.seq)));
    }
    let events = checked_events(plugin, items, &mut batch);
    let events = not_yet_applied(target, pool, events, earlier, &mut batch).await?;
    let ahead = earlier.map(|e| e.ahead.clone());
    let overlay = prefetch(plugin, target, pool, cache, ahead, &events).await?;
    let patients: HashSet<&str> = events
        .iter()
        .map(|(_, e)| e.envelope.patient_id.as_str())
        .collect();
    let patients: Vec<&str> = patients.into_iter().collect();
    let mut poisoned = dead_letters::poisoned(pool, &target.key, &patients).await?;
    if let Some(earlier) = earlier {
        poisoned
            .blocked
            .extend(earlier.poisoned.blocked.iter().cloned());
        poisoned
            .waiting
            .extend(earlier.poisoned.waiting.iter().cloned());
    }
    let mut run = Run {
        plugin,
        effects: target.effects,
        max_attempts,
        instance: Some(plugin.instantiate(Some(overlay)).await?),
        poisoned,
        batch,
        unknown_codes: Vec::new(),
    };
    for (item, event) in events {
        // A plugin call never waits, so a batch would hold its worker
        // thread for its whole length: let other projections and the
        // notification push run between events.
        tokio::task::yield_now().await;
        run.event(item, event).await?;
    }
    let mut batch = run.batch;
    batch.views = run.instance.and_then(PluginInstance::into_views);
    Ok(Projected {
        batch,
        unknown_codes: run.unknown_codes,
    })
}

/// The views of `plugin` with the documents the events name loaded, so
/// the plugin's reads do not go to the database one by one.
async fn prefetch(
    plugin: &Plugin,
    target: &Target,
    pool: &PgPool,
    cache: &DocCache,
    ahead: Option<Ahead>,
    events: &[(Item, Event)],
) -> anyhow::Result<Overlay> {
    let mut overlay = Overlay::new(
        pool.clone(),
        target.clone(),
        plugin.info.views.iter().map(|v| v.name.clone()),
        cache.clone(),
        ahead,
    );
    let hints = KeyHints::new(plugin.info.views.iter().map(|v| v.key.as_str()));
    let mut keys = vec![Vec::new(); plugin.info.views.len()];
    for (_, event) in events {
        for (view_keys, key) in keys.iter_mut().zip(hints.keys(event)) {
            view_keys.extend(key);
        }
    }
    for (view, keys) in plugin.info.views.iter().zip(keys) {
        overlay.load(&view.name, keys).await?;
    }
    Ok(overlay)
}

/// One batch's run of the plugin over its events.
struct Run<'a> {
    plugin: &'a Plugin,
    effects: bool,
    max_attempts: u32,
    /// `None` only while a trapped instance is replaced.
    instance: Option<PluginInstance>,
    poisoned: Poisoned,
    batch: Batch,
    unknown_codes: Vec<UnknownCode>,
}

/// How one call of the plugin went.
enum Tried {
    /// Applied to the batch's views.
    Applied,
    /// Refused for good, with the reason for the dead letter.
    Failed(String),
    /// Trapped: worth another try on a fresh instance.
    Trapped(String),
}

impl Run<'_> {
    /// Applies one event, parks it behind its patient's dead letter, or
    /// dead-letters it.
    async fn event(&mut self, item: Item, event: Event) -> anyhow::Result<()> {
        // A poisoned patient's events wait, in order, behind the one that failed.
        let patient = event.envelope.patient_id.as_str();
        let Poisoned { blocked, waiting } = &mut self.poisoned;
        let parks = match item.origin {
            Origin::Stream => blocked.contains(patient) || waiting.contains(patient),
            Origin::Parked => blocked.contains(patient),
            Origin::DeadLetter(_) => false,
        };
        if parks {
            if item.origin == Origin::Stream {
                self.batch.parked.push(park(&item, patient));
                waiting.insert(patient.to_owned());
            }
            return Ok(());
        }
        let mut attempts = 0;
        let reason = loop {
            attempts += 1;
            match self.try_once(&item, &event).await? {
                Tried::Applied => return Ok(()),
                Tried::Failed(reason) => break reason,
                Tried::Trapped(trap) if attempts >= self.max_attempts => {
                    break format!("plugin trapped {attempts} times: {trap}");
                }
                Tried::Trapped(_) => {
                    tracing::warn!(
                        plugin = self.plugin.name(),
                        seq = item.seq,
                        attempts,
                        "plugin trapped; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(10 << attempts.min(6))).await;
                }
            }
        };
        // The reason can quote payload values: it goes to the database, not the log.
        tracing::warn!(plugin = self.plugin.name(), seq = item.seq, event_id = %event.envelope.event_id, "dead-lettered; the patient's later events are parked");
        let letter = dead_letter(&item, Some(&event.envelope), reason, attempts as i32);
        bury(&mut self.batch, &item, letter, true);
        self.poisoned.blocked.insert(patient.to_owned());
        Ok(())
    }

    /// Calls the plugin once and applies what it returns to the batch's
    /// views; errors are database failures.
    async fn try_once(&mut self, item: &Item, event: &Event) -> anyhow::Result<Tried> {
        let instance = self
            .instance
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no plugin instance"))?;
        match instance.handle(event, item.seq).await {
            Ok(outcome) => {
                if let Err(reason) = self.plugin.info.check_audits(&outcome) {
                    return Ok(Tried::Failed(format!(
                        "plugin returned an invalid outcome: {reason}"
                    )));
                }
                let views = instance
                    .views()
                    .ok_or_else(|| anyhow::anyhow!("instance lost its views"))?;
                match views.apply(&outcome.mutations).await {
                    Ok(()) => {
                        self.unknown_codes.extend(event.payload.unknown_codes());
                        record(&mut self.batch, item, event, outcome, self.effects);
                        Ok(Tried::Applied)
                    }
                    Err(ApplyFailure::Rejected(reason)) => Ok(Tried::Failed(format!(
                        "plugin returned an invalid outcome: {reason}"
                    ))),
                    Err(ApplyFailure::Database(e)) => Err(e.into()),
                }
            }
            Err(e @ (CallError::Refused(_) | CallError::Invalid(_))) => {
                Ok(Tried::Failed(e.to_string()))
            }
            Err(CallError::Trap(trap)) => {
                // The instance is spent; carry the batch's views to a fresh one.
                let views = self.instance.take().and_then(PluginInstance::into_views);
                self.instance = Some(self.plugin.instantiate(views).await?);
                Ok(Tried::Trapped(trap.to_string()))
            }
        }
    }
}

/// The batch for one item whose effects the database refused for their
/// content: a dead letter with the database's reason, behind which its
/// patient's later events park, as after any failed event.
pub fn refused(target: &Target, item: Item, reason: String) -> Batch {
    let mut batch = Batch::new(target);
    if item.origin == Origin::Stream {
        batch.checkpoint = item.seq;
        batch.partition(item.partition).first = Some(item.seq);
    }
    let event = Envelope::parse(&item.raw).ok();
    let letter = dead_letter(&item, event.as_ref().map(|e| &e.envelope), reason, 1);
    bury(&mut batch, &item, letter, event.is_some());
    batch
}

/// Parses each item the plugin subscribes to; the rest are dead letters
/// (malformed) or skipped (not its subject).
fn checked_events(plugin: &Plugin, items: Vec<Item>, batch: &mut Batch) -> Vec<(Item, Event)> {
    let mut events = Vec::with_capacity(items.len());
    for item in items {
        if !plugin.info.subscribes_to(&item.subject) {
            // A version that no longer reads this subject has nothing to do
            // with a parked or re-driven event of it.
            settle_origin(batch, &item);
            continue;
        }
        let envelope = match Envelope::read(&item.raw) {
            Ok(envelope) => envelope,
            Err(e) => {
                let letter = dead_letter(&item, None, e.to_string(), 1);
                bury(batch, &item, letter, false);
                continue;
            }
        };
        // From here the dead letter names the event and its patient, so an
        // operator can find it.
        let reason = match envelope.typed_payload() {
            Ok(payload) if envelope.event_type == item.subject => {
                events.push((item, Event { envelope, payload }));
                continue;
            }
            Ok(_) => format!(
                "eventType `{}` does not match subject `{}`",
                envelope.event_type, item.subject
            ),
            Err(e) => e.to_string(),
        };
        let letter = dead_letter(&item, Some(&envelope), reason, 1);
        bury(batch, &item, letter, false);
    }
    events
}

/// Drops events this plugin applied before (a redelivery, or the same
/// eventId published again; `earlier`: applied by the batch still
/// committing) and repeats within the batch. A re-driven dead letter whose
/// event was applied meanwhile is resolved.
async fn not_yet_applied(
    target: &Target,
    pool: &PgPool,
    events: Vec<(Item, Event)>,
    earlier: Option<&Earlier>,
    batch: &mut Batch,
) -> Result<Vec<(Item, Event)>, sqlx::Error> {
    if events.is_empty() {
        return Ok(events);
    }
    let ids: Vec<&str> = events
        .iter()
        .map(|(_, e)| e.envelope.event_id.as_str())
        .collect();
    let applied = processed::applied(pool, &target.processed_key(), &ids).await?;
    let mut seen: HashSet<String> = applied.into_iter().collect();
    if let Some(earlier) = earlier {
        seen.extend(
            ids.iter()
                .filter(|id| earlier.processed.contains(**id))
                .map(|id| id.to_string()),
        );
    }
    let mut fresh = Vec::with_capacity(events.len());
    for (item, event) in events {
        if seen.insert(event.envelope.event_id.to_string()) {
            fresh.push((item, event));
        } else {
            settle_origin(batch, &item);
        }
    }
    Ok(fresh)
}

/// The views' key hints: the document key each names in an event, parts
/// joined by `/`, each `patientId`, `eventId`, `domain` (the event type's
/// first segment) or `payload.<field>`. The payload fields any hint names
/// are read from an event in one pass.
struct KeyHints<'a> {
    /// Each view's hint, split into its parts.
    views: Vec<Vec<Part>>,
    /// The payload fields the hints name, each once.
    fields: Vec<&'a str>,
}

/// One part of a key hint, read once per batch rather than per event.
#[derive(Clone, Copy)]
enum Part {
    PatientId,
    EventId,
    Domain,
    /// The payload field at this place of [`KeyHints::fields`].
    Payload(usize),
    /// Nothing an event holds: the hint names no key.
    Unknown,
}

impl<'a> KeyHints<'a> {
    fn new(hints: impl Iterator<Item = &'a str>) -> Self {
        let mut fields: Vec<&str> = Vec::new();
        let mut part = |text: &'a str| match text {
            "patientId" => Part::PatientId,
            "eventId" => Part::EventId,
            "domain" => Part::Domain,
            _ => match text.strip_prefix("payload.") {
                Some(field) => Part::Payload(match fields.iter().position(|f| *f == field) {
                    Some(at) => at,
                    None => {
                        fields.push(field);
                        fields.len() - 1
                    }
                }),
                None => Part::Unknown,
            },
        };
        let views = hints
            .map(|h| h.split('/').map(&mut part).collect())
            .collect();
        Self { views, fields }
    }

    /// Each view's key in `event`, in the order of the hints; none where
    /// the event lacks a part.
    fn keys<'e>(&'e self, event: &'e Event) -> impl Iterator<Item = Option<String>> + 'e {
        let envelope = &event.envelope;
        let values = if self.fields.is_empty() {
            Vec::new()
        } else {
            envelope.payload.fields(&self.fields)
        };
        self.views.iter().map(move |parts| {
            let parts = parts.iter().map(|part| match *part {
                Part::PatientId => Some(envelope.patient_id.as_str()),
                Part::EventId => Some(envelope.event_id.as_str()),
                Part::Domain => envelope.event_type.split('.').next(),
                Part::Payload(at) => values[at].as_deref(),
                Part::Unknown => None,
            });
            let parts = parts.collect::<Option<Vec<&str>>>()?;
            Some(projector_contract::doc_key(&parts))
        })
    }
}

/// Records an applied event; with `effects`, also its notifications and
/// audit entries (a rebuild re-applies events whose effects happened).
fn record(
    batch: &mut Batch,
    item: &Item,
    event: &Event,
    outcome: projector_contract::Outcome,
    effects: bool,
) {
    let envelope = &event.envelope;
    batch.processed.push(envelope.event_id.to_string());
    batch.partition(item.partition).applied += 1;
    settle_origin(batch, item);
    if !effects {
        return;
    }
    let at = envelope.timestamp.instant().to_utc();
    batch.notifications.extend(
        outcome
            .notifications
            .into_iter()
            .map(|intent| NewNotification {
                event_id: envelope.event_id.to_string(),
                patient_id: envelope.patient_id.to_string(),
                at,
                intent,
            }),
    );
    batch
        .audits
        .extend(outcome.audits.into_iter().map(|a| NewAudit {
            patient_id: Some(envelope.patient_id.to_string()),
            at,
            ..NewAudit::now(
                a.user_id.as_deref().unwrap_or(envelope.user_id.as_str()),
                a.action,
                a.resource_type,
                a.resource_id,
            )
        }));
}

/// An item is done with (applied, or already applied before): a re-driven
/// dead letter is resolved, a released parked event leaves the park.
fn settle_origin(batch: &mut Batch, item: &Item) {
    match item.origin {
        Origin::DeadLetter(id) => batch.resolved.push(id),
        Origin::Parked => batch.released.push(item.seq),
        Origin::Stream => {}
    }
}

fn park(item: &Item, patient: &str) -> NewParked {
    NewParked {
        stream_seq: item.seq,
        subject: item.subject.clone(),
        patient_id: patient.to_owned(),
        raw: item.raw.clone(),
    }
}

/// Adds `letter` for `item` to the batch; with `poisons`, its patient's
/// later events wait behind it. A parked item leaves the park as the dead
/// letter it becomes (a re-driven one is the same letter again, by its
/// stream sequence).
fn bury(batch: &mut Batch, item: &Item, mut letter: NewDeadLetter, poisons: bool) {
    letter.poisons = poisons;
    if item.origin == Origin::Parked {
        batch.released.push(item.seq);
    }
    batch.partition(item.partition).dead_lettered += 1;
    batch.dead_letters.push(letter);
}

fn dead_letter(
    item: &Item,
    envelope: Option<&Envelope>,
    reason: String,
    attempts: i32,
) -> NewDeadLetter {
    NewDeadLetter {
        stream_seq: item.seq,
        subject: item.subject.clone(),
        event_id: envelope.map(|e| e.event_id.to_string()),
        patient_id: envelope.map(|e| e.patient_id.to_string()),
        reason,
        raw: item.raw.clone(),
        attempts,
        poisons: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hint_joins_its_parts() {
        let raw = r#"{"eventId":"e1","eventType":"lab.order.created","timestamp":"2026-11-26T09:10:00Z",
            "patientId":"p1","userId":"u1","portalType":"provider",
            "payload":{"orderId":"o7","orderingProviderId":"u1","tests":[],"priority":"routine"}}"#;
        let event = Envelope::parse(raw.as_bytes()).expect("valid");
        let hint = |h: &str| KeyHints::new([h].into_iter()).keys(&event).next().flatten();
        assert_eq!(hint("patientId").as_deref(), Some("p1"));
        assert_eq!(hint("payload.orderId").as_deref(), Some("o7"));
        assert_eq!(hint("patientId/payload.orderId").as_deref(), Some("p1/o7"));
        assert_eq!(
            hint("patientId/domain/payload.orderId").as_deref(),
            Some("p1/lab/o7")
        );
        assert_eq!(hint("patientId/payload.missing"), None);
        assert_eq!(
            hint("patientId/payload.orderId"),
            Some(projector_contract::patient_key("p1", "o7"))
        );
        // Several views at once, sharing a payload field, read in one pass.
        let hints = KeyHints::new(
            [
                "patientId",
                "payload.orderId",
                "patientId/payload.orderId",
                "payload.priority",
            ]
            .into_iter(),
        );
        assert_eq!(hints.fields, ["orderId", "priority"]);
        assert_eq!(
            hints.keys(&event).collect::<Vec<_>>(),
            [
                Some("p1".to_owned()),
                Some("o7".to_owned()),
                Some(projector_contract::patient_key("p1", "o7")),
                Some("routine".to_owned()),
            ]
        );
    }
}
