//! `projector plugins replay FILE --plugin X.wasm`: a JSON-lines file of
//! events through one plugin, by the host's own code path (the same
//! sandbox, batches, mutations and transaction) against a real PostgreSQL
//! database of its own; prints the resulting views. For plugin authors
//! checking a handler on real data before deploying it.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use crate::config::Config;
use crate::ingest::{self, Item};
use crate::runtime::{Plugin, Runtime};
use crate::store;

/// Replays `events` through the plugin in `wasm` into a fresh database
/// named after the time; returns every document of the plugin's views and
/// the notifications and dead letters it produced. `progress` is told the
/// number of events before the first batch and after each.
pub async fn replay(
    config: &Config,
    wasm: &Path,
    events: &Path,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Value> {
    let runtime = Runtime::from_config(config)?;
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let plugin = Plugin::load(&runtime, &bytes).await?;
    let items = read_items(events)?;
    let database = format!("replay_{}", chrono::Utc::now().format("%Y%m%d%H%M%S%f"));
    let pool = store::connect(&config.database_url_named(&database), config.db_connections).await?;
    let target = store::Target::live(plugin.name());
    store::ensure_views(&pool, &target, &plugin.info).await?;
    let cache = store::DocCache::new(config.doc_cache);
    let batcher = ingest::Batcher {
        plugin: &plugin,
        target: &target,
        pool: &pool,
        cache: &cache,
        max_attempts: config.max_attempts,
        fence: None,
    };
    progress(Progress::Total(items.len() as u64));
    for chunk in items.chunks(config.batch_size.max(1)) {
        batcher.commit(chunk.to_vec(), 0).await?;
        progress(Progress::Done(chunk.len() as u64));
    }
    let mut views = serde_json::Map::new();
    for view in &plugin.info.views {
        let docs = store::documents::all(&pool, &view.name).await?;
        views.insert(
            view.name.clone(),
            docs.into_iter()
                .map(|(k, d)| json!({"key": k, "doc": d}))
                .collect(),
        );
    }
    let notifications: Vec<Value> = store::notifications::all(&pool)
        .await?
        .into_iter()
        .map(|n| {
            let mut body = n.body;
            if let Some(fields) = body.as_object_mut() {
                fields.insert("userId".into(), n.recipient.column().into());
            }
            body
        })
        .collect();
    let dead_letters = store::dead_letters::reasons(&pool).await?;
    pool.close().await;
    println!("# replayed into database {database}");
    Ok(json!({
        "plugin": plugin.name(),
        "events": items.len(),
        "views": views,
        "notifications": notifications,
        "deadLetters": dead_letters.into_iter().map(|(line, reason)| json!({"line": line, "reason": reason})).collect::<Vec<_>>(),
    }))
}

/// How far a replay is, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// How many events there are.
    Total(u64),
    /// This many more were committed.
    Done(u64),
}

/// The events file's lines as stream items, numbered from 1.
fn read_items(events: &Path) -> anyhow::Result<Vec<Item>> {
    let text =
        std::fs::read_to_string(events).with_context(|| format!("reading {}", events.display()))?;
    Ok(text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        // One partition: a replay projects every event itself.
        .map(|(n, line)| {
            Item::from_stream(n as u64 + 1, event_type(line), line.as_bytes().to_vec(), 0)
        })
        .collect())
}

/// The line's `eventType`, as its subject would be (empty if unreadable:
/// the line then becomes a dead letter with the parser's reason).
fn event_type(line: &str) -> String {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v.get("eventType")?.as_str().map(str::to_owned))
        .unwrap_or_default()
}
