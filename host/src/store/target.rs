//! Where a projection's batches land: a plugin's live views, or the shadow
//! tables a blue/green rebuild fills while the live ones keep serving.

use super::views::table_name;

/// The tables and bookkeeping rows one projection writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The plugin whose views these are.
    pub plugin: String,
    /// The name its bookkeeping rows (processed events, dead letters, parked
    /// events, checkpoint) and its consumer are kept under: the plugin's own
    /// name live, `<plugin>@rebuild` for a rebuild.
    pub key: String,
    /// The schema of its view tables: `None` is the live `public` one.
    schema: Option<String>,
    /// Whether its batches store notifications and audit entries: a rebuild
    /// re-applies events whose notifications went out long ago.
    pub effects: bool,
    /// The generation of the processed-event rows it reads and writes: the
    /// live views' recorded one, or the next for a rebuild, so that a
    /// rebuild's switch moves a number instead of every row.
    pub generation: i32,
}

impl Target {
    /// A plugin's live views.
    pub fn live(plugin: &str) -> Self {
        Self {
            plugin: plugin.to_owned(),
            key: plugin.to_owned(),
            schema: None,
            effects: true,
            generation: 0,
        }
    }

    /// Whether these are the plugin's live views (not a rebuild's).
    pub fn is_live(&self) -> bool {
        self.schema.is_none()
    }

    /// The shadow tables of a plugin's rebuild, in a schema of their own.
    pub fn rebuild(plugin: &str) -> Self {
        Self {
            plugin: plugin.to_owned(),
            key: format!("{plugin}@rebuild"),
            // Quoted: plugin names may hold `-`; they are checked to be
            // [a-z0-9_-] when loaded (`validate_plugin_name`).
            schema: Some(format!("\"rebuild_{plugin}\"")),
            effects: false,
            generation: 0,
        }
    }

    /// The name its processed events are kept under: the plugin's own for
    /// generation 0, `<plugin>#<generation>` after (plugin names hold no
    /// `#`).
    pub fn processed_key(&self) -> String {
        processed_key(&self.plugin, self.generation)
    }

    /// The same target with processed events of `generation`.
    pub fn at_generation(mut self, generation: i32) -> Self {
        self.generation = generation;
        self
    }

    /// The schema of the tables, quoted, for DDL; `None` when live.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The table of one of its views, schema-qualified when not live.
    pub fn table(&self, view: &str) -> String {
        match &self.schema {
            None => table_name(view),
            Some(schema) => format!("{schema}.{}", table_name(view)),
        }
    }
}

/// The name a plugin's processed events of `generation` are kept under.
pub fn processed_key(plugin: &str, generation: i32) -> String {
    match generation {
        0 => plugin.to_owned(),
        _ => format!("{plugin}#{generation}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_tables_are_public_and_rebuild_tables_are_shadowed() {
        let live = Target::live("sepsis-screen");
        assert_eq!(live.table("sepsis_screen"), "view_sepsis_screen");
        assert!(live.effects);
        let rebuild = Target::rebuild("sepsis-screen");
        assert_eq!(
            rebuild.table("sepsis_screen"),
            "\"rebuild_sepsis-screen\".view_sepsis_screen"
        );
        assert_eq!(rebuild.key, "sepsis-screen@rebuild");
        assert!(!rebuild.effects);
        assert_eq!(live.processed_key(), "sepsis-screen");
        assert_eq!(rebuild.at_generation(2).processed_key(), "sepsis-screen#2");
    }
}
