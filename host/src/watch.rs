//! Hot-loading from the plugins folder: a `.wasm` that appears or changes
//! there (copied in, written by a deploy, or renamed into place) is deployed
//! once it has been quiet for a moment. A file caught half-written fails
//! validation and the running version stays; the rest of the write brings
//! another event, and the whole file is deployed then.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::lifecycle::Deployer;

/// How long a file must be quiet before it is deployed.
const QUIET: Duration = Duration::from_millis(300);

/// A `.wasm` file a deploy could come from: not hidden (deploys write
/// `.name.wasm.partial` first).
fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'))
}

/// Starts watching `dir` now (a file that changes from here on is seen)
/// and returns the task that deploys what changes, until it is aborted.
pub fn watch(dir: PathBuf, deployer: Arc<Deployer>) -> anyhow::Result<JoinHandle<()>> {
    let (changed, mut changes) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            for path in event.paths.into_iter().filter(|p| is_plugin_file(p)) {
                let _ = changed.send(path);
            }
        }
    })
    .context("starting the plugins folder watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "watching the plugins folder");
    Ok(tokio::spawn(async move {
        // The watcher stops when dropped: the task keeps it.
        let _watcher = watcher;
        while let Some(first) = changes.recv().await {
            let mut paths = BTreeSet::from([first]);
            while let Ok(Some(path)) = tokio::time::timeout(QUIET, changes.recv()).await {
                paths.insert(path);
            }
            for path in paths.into_iter().filter(|p| p.exists()) {
                deployer.deploy_file(&path, true).await;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_wasm_files_are_deployed() {
        assert!(is_plugin_file(Path::new("/p/lab.wasm")));
        assert!(!is_plugin_file(Path::new("/p/.lab.wasm.partial")));
        assert!(!is_plugin_file(Path::new("/p/.lab.wasm")));
        assert!(!is_plugin_file(Path::new("/p/README.md")));
    }
}
