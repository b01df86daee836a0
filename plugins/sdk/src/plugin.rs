//! What a plugin implements, and what it may read. What it describes
//! itself with ([`crate::PluginInfo`]) is the contract's, shared with the
//! host.

use serde_json::Value;

use crate::{Event, Outcome, PluginInfo};

/// A handler plugin: one domain's rules from events to read models.
///
/// ```
/// use projector_sdk::{Event, Outcome, Plugin, PluginInfo, ViewDef, Views, json};
///
/// /// Counts each patient's events of every kind.
/// struct Tally;
/// impl Plugin for Tally {
///     fn describe() -> PluginInfo {
///         PluginInfo::new("tally", "1.0.0", &[">"], vec![ViewDef::new("tallies", "patientId", &[])])
///     }
///     fn handle(event: &Event, _views: &dyn Views) -> Result<Outcome, String> {
///         let mut out = Outcome::default();
///         out.increment("tallies", &event.patient_id, event.event_type(), 1);
///         Ok(out)
///     }
/// }
/// assert_eq!(Tally::describe().views[0].name, "tallies");
/// ```
pub trait Plugin {
    /// Name, version, subjects and the views this plugin writes.
    fn describe() -> PluginInfo;

    /// Handles one event. `views` reads this plugin's own views as of this
    /// event (committed state plus this batch's earlier outcomes). An `Err`
    /// dead-letters the event with its message.
    fn handle(event: &Event, views: &dyn Views) -> Result<Outcome, String>;
}

/// Reads documents of the plugin's own views.
///
/// ```
/// use projector_sdk::{Value, Views, json};
///
/// /// Whether the patient's chart already lists this allergy.
/// fn known(views: &dyn Views, patient: &str, allergy: &str) -> bool {
///     views.get("patient_chart", patient).is_some_and(|chart| {
///         chart["allergies"].as_array().is_some_and(|a| a.iter().any(|x| x["allergyId"] == allergy))
///     })
/// }
///
/// struct One(Value);
/// impl Views for One {
///     fn get(&self, _: &str, _: &str) -> Option<Value> { Some(self.0.clone()) }
/// }
/// assert!(known(&One(json!({ "allergies": [{ "allergyId": "a-1" }] })), "p-1", "a-1"));
/// ```
pub trait Views {
    /// The document of `view` at `key`, if there is one.
    fn get(&self, view: &str, key: &str) -> Option<Value>;

    /// The value at the dotted `path` inside that document, if both are
    /// there. In the sandbox this copies and parses only that value, so a
    /// plugin reading a field or a list of a large document should use it
    /// rather than [`Views::get`].
    ///
    /// ```
    /// use projector_sdk::{Value, Views, json};
    ///
    /// struct One(Value);
    /// impl Views for One {
    ///     fn get(&self, _: &str, _: &str) -> Option<Value> { Some(self.0.clone()) }
    /// }
    /// let views = One(json!({ "summary": { "count": 2 } }));
    /// assert_eq!(views.get_at("v", "k", "summary.count"), Some(json!(2)));
    /// assert_eq!(views.get_at("v", "k", "summary.last"), None);
    /// ```
    fn get_at(&self, view: &str, key: &str, path: &str) -> Option<Value> {
        let doc = self.get(view, key)?;
        crate::document::value_at(&doc, path).cloned()
    }
}
