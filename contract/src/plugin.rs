//! What a plugin says about itself: its name, the event types it handles,
//! the views it writes and how their documents are keyed. The host reads
//! this to route events and create tables; the rules here are the ones it
//! checks a plugin against when loading it.

/// The key of a document that belongs to one patient: `<patient>/<id>`.
/// Source systems number orders, reports and encounters independently, so
/// an id alone can name two patients' documents; with the patient in the
/// key they never meet. Declare such a view's key hint as
/// `patientId/payload.<field>`.
///
/// ```
/// use projector_contract::patient_key;
///
/// assert_eq!(patient_key("p-1", "ord-7"), "p-1/ord-7");
/// // Ids may hold `/`: two patients' keys still never meet.
/// assert_ne!(patient_key("x/y", "z"), patient_key("x", "y/z"));
/// ```
pub fn patient_key(patient: &str, id: &str) -> String {
    doc_key(&[patient, id])
}

/// A document key made of parts: each part with `%` and `/` escaped
/// (`%25`, `%2F`), joined by `/`, so different parts never make the same
/// key. The host builds the keys of composite key hints the same way.
///
/// ```
/// assert_eq!(projector_contract::doc_key(&["p-1", "lab", "a/b%"]), "p-1/lab/a%2Fb%25");
/// ```
pub fn doc_key(parts: &[&str]) -> String {
    let escaped: Vec<String> = parts
        .iter()
        .map(|part| part.replace('%', "%25").replace('/', "%2F"))
        .collect();
    escaped.join("/")
}

/// A read model a plugin owns: the host creates its table and indexes, and
/// lets no other plugin write it.
///
/// ```
/// use projector_contract::ViewDef;
///
/// // Documents keyed by the report id; the host indexes `patientId` for the
/// // patient's `/labs` listing.
/// let view = ViewDef::new("lab_results", "payload.reportId", &["patientId"]);
/// assert_eq!(view.indexes, ["patientId"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewDef {
    /// Table-safe name (`[a-z][a-z0-9_]*`).
    pub name: String,
    /// Where the key of a touched document usually is in an event: parts
    /// joined by `/`, each `patientId`, `eventId`, `domain` (the event
    /// type's first segment) or `payload.<field>`, such as
    /// `patientId/payload.orderId` for [`patient_key`]s. The host
    /// prefetches those documents per batch.
    pub key: String,
    /// Top-level fields to index, e.g. `patientId`.
    pub indexes: Vec<String>,
}

impl ViewDef {
    /// Declares a view.
    pub fn new(name: &str, key: &str, indexes: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            key: key.to_owned(),
            indexes: indexes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// A plugin's description of itself, what its `describe` returns: the host
/// routes events to it and creates its views' tables by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Unique plugin name, by the rule of [`validate_plugin_name`].
    pub name: String,
    /// Its version, shown by `GET /api/plugins`.
    pub version: String,
    /// NATS subject patterns of the event types it handles.
    pub subjects: Vec<String>,
    /// The views it writes.
    pub views: Vec<ViewDef>,
    /// The audit actions it writes (`lab_result.viewed`); an outcome with
    /// any other is refused.
    pub audit_actions: Vec<String>,
}

impl PluginInfo {
    /// Describes a plugin: its name, version, the event types it handles
    /// (NATS subject patterns) and the views it writes, each with the event
    /// field its documents are usually keyed by.
    ///
    /// ```
    /// use projector_contract::{PluginInfo, ViewDef};
    ///
    /// let info = PluginInfo::new("lab", "1.0.0", &["lab.>"],
    ///     vec![ViewDef::new("lab_results", "payload.reportId", &["patientId"])]);
    /// assert!(info.subscribes_to("lab.result.available"));
    /// assert!(!info.subscribes_to("patient.created"));
    /// assert!(info.owns_view("lab_results"));
    /// ```
    pub fn new(name: &str, version: &str, subjects: &[&str], views: Vec<ViewDef>) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            views,
            audit_actions: Vec::new(),
        }
    }

    /// Declares the audit actions the plugin writes.
    ///
    /// ```
    /// use projector_contract::{Outcome, PluginInfo};
    ///
    /// let info = PluginInfo::new("lab", "1.0.0", &["lab.>"], vec![])
    ///     .audits(&["lab_result.viewed"]);
    /// let mut out = Outcome::default();
    /// out.audit("lab_result.viewed", "DiagnosticReport", "rep-1");
    /// assert!(info.check_audits(&out).is_ok());
    /// out.audit("chart.deleted", "Patient", "p1");
    /// assert!(info.check_audits(&out).is_err());
    /// ```
    pub fn audits(mut self, actions: &[&str]) -> Self {
        self.audit_actions = actions.iter().map(|a| (*a).to_owned()).collect();
        self
    }
}

impl PluginInfo {
    /// Whether an event type matches one of the plugin's subject patterns:
    /// whether the plugin is given events of that type at all.
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        self.subjects
            .iter()
            .any(|pattern| subject_matches(pattern, event_type))
    }

    /// Whether the plugin declared (and so may write) this view: a mutation
    /// of any other view is refused.
    pub fn owns_view(&self, view: &str) -> bool {
        self.views.iter().any(|v| v.name == view)
    }

    /// Refuses an outcome that writes an audit action the plugin did not
    /// declare: a plugin cannot forge another part's entries.
    pub fn check_audits(&self, outcome: &crate::Outcome) -> Result<(), String> {
        match outcome
            .audits
            .iter()
            .find(|a| !self.audit_actions.contains(&a.action))
        {
            Some(a) => Err(format!(
                "audit action `{}`, which the plugin did not declare",
                a.action
            )),
            None => Ok(()),
        }
    }
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
/// Plugins subscribe with NATS patterns; the host and the test harness match
/// event types against them with this, as JetStream would.
///
/// ```
/// use projector_contract::subject_matches;
///
/// assert!(subject_matches("lab.*.available", "lab.result.available"));
/// assert!(subject_matches("encounter.>", "encounter.vitals.recorded"));
/// assert!(!subject_matches("lab.>", "lab"));
/// ```
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// The longest plugin name: the host builds PostgreSQL identifiers from it,
/// such as the schema `rebuild_<name>` of a rebuild, which must stay within
/// 63 bytes.
const PLUGIN_NAME_MAX: usize = 40;

/// Checks a plugin name against the one rule every plugin name follows: 1 to
/// 40 characters, each a lowercase ASCII letter, a digit, `-` or `_`. The
/// host refuses to load a plugin whose [`PluginInfo::name`] breaks it, and
/// `projector plugins new` refuses to write one. The name ends up in file
/// names (`<name>.wasm`), URL paths (`/api/plugins/<name>`), JetStream
/// consumer names and quoted SQL identifiers, which all take these
/// characters as they are, and the host joins it to other parts with
/// characters it never holds (`<name>#<generation>`, `<name>@rebuild`).
///
/// ```
/// use projector_contract::validate_plugin_name;
///
/// assert!(validate_plugin_name("sepsis-screen").is_ok());
/// let refused = validate_plugin_name("Sepsis Screen").unwrap_err();
/// assert_eq!(
///     refused.to_string(),
///     "plugin name `Sepsis Screen` must be 1 to 40 characters, each a lowercase letter, a digit, `-` or `_`"
/// );
/// ```
pub fn validate_plugin_name(name: &str) -> Result<(), PluginNameError> {
    let ok = !name.is_empty()
        && name.len() <= PLUGIN_NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(PluginNameError(name.to_owned()))
    }
}

/// A name that breaks the plugin-name rule ([`validate_plugin_name`]); its
/// message states the rule, for whoever chose the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "plugin name `{0}` must be 1 to {max} characters, each a lowercase letter, a digit, `-` or `_`",
    max = PLUGIN_NAME_MAX
)]
pub struct PluginNameError(String);

#[cfg(test)]
mod tests {
    use super::{PLUGIN_NAME_MAX, subject_matches, validate_plugin_name};

    #[test]
    fn nats_wildcards() {
        assert!(subject_matches("lab.>", "lab.result.available"));
        assert!(!subject_matches("lab.>", "lab"));
        assert!(subject_matches("lab.*.available", "lab.result.available"));
        assert!(!subject_matches("lab.*", "lab.result.available"));
        assert!(subject_matches("patient.created", "patient.created"));
        assert!(!subject_matches("patient.created", "patient.created.x"));
        assert!(!subject_matches("patient.created", "patient"));
    }

    #[test]
    fn plugin_names_are_lowercase_letters_digits_dashes_and_underscores() {
        let longest = "a".repeat(PLUGIN_NAME_MAX);
        for name in [
            "lab",
            "sepsis-screen",
            "half-way",
            "my_rule",
            "2nd",
            "-",
            &longest,
        ] {
            assert_eq!(validate_plugin_name(name), Ok(()), "{name}");
        }
        let too_long = "a".repeat(PLUGIN_NAME_MAX + 1);
        for name in [
            "", "Lab", "a b", "a.b", "a/b", "a#1", "é", "a\u{0}b", &too_long,
        ] {
            assert!(validate_plugin_name(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn a_refused_name_is_named_in_the_error() {
        let error = validate_plugin_name("lab.v2").unwrap_err();
        assert!(error.to_string().contains("`lab.v2`"), "{error}");
    }
}
