//! What the list commands print for a person: the host's JSON read into
//! the fields an operator scans, as aligned columns.

use comfy_table::{Table, presets};
use serde::Deserialize;
use serde_json::Value;

use super::RemoteError;

/// A plugin as `GET /api/plugins` lists it, the columns shown.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PluginRow {
    name: String,
    version: String,
    hash: String,
    state: String,
    lag: Option<u64>,
    applied: i64,
    dead_lettered: i64,
}

/// A dead letter as `GET /api/dead-letters` lists it, the columns shown.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterRow {
    id: i64,
    plugin: String,
    stream_seq: i64,
    event_id: Option<String>,
    status: String,
    attempts: i32,
    reason: String,
}

/// How much of a reason a table shows.
const REASON_CHARS: usize = 60;

/// The plugins as a table: name, version, hash (short), state, lag,
/// applied, dead letters.
pub fn plugins_table(answer: Value) -> Result<String, RemoteError> {
    let rows: Vec<PluginRow> = read(answer)?;
    let mut table = table(&["NAME", "VERSION", "HASH", "STATE", "LAG", "APPLIED", "DEAD"]);
    for p in rows {
        table.add_row([
            p.name,
            p.version,
            p.hash.chars().take(12).collect(),
            p.state,
            p.lag.map_or_else(|| "?".into(), |lag| lag.to_string()),
            p.applied.to_string(),
            p.dead_lettered.to_string(),
        ]);
    }
    Ok(table.to_string())
}

/// The dead letters as a table: id, plugin, stream sequence, eventId,
/// status, attempts, the start of the reason.
pub fn dead_letters_table(answer: Value) -> Result<String, RemoteError> {
    let rows: Vec<DeadLetterRow> = read(answer)?;
    let mut table = table(&["ID", "PLUGIN", "SEQ", "EVENT", "STATUS", "TRIES", "REASON"]);
    for d in rows {
        let mut reason: String = d.reason.chars().take(REASON_CHARS).collect();
        if d.reason.chars().count() > REASON_CHARS {
            reason.push('…');
        }
        table.add_row([
            d.id.to_string(),
            d.plugin,
            d.stream_seq.to_string(),
            d.event_id.unwrap_or_else(|| "-".into()),
            d.status,
            d.attempts.to_string(),
            reason,
        ]);
    }
    Ok(table.to_string())
}

fn read<T: serde::de::DeserializeOwned>(answer: Value) -> Result<T, RemoteError> {
    serde_json::from_value(answer)
        .map_err(|e| RemoteError::Local(format!("the host's answer was not understood: {e}")))
}

/// A table with no borders, as `kubectl get` prints.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header);
    table
}
