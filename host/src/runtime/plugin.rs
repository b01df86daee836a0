//! A plugin version: validated, compiled once, ready to instantiate.

use std::sync::Arc;

use projector_contract::PluginInfo;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::Runtime;
use super::bindings::ProjectionPre;
use super::convert;
use super::instance::{HostState, PluginInstance};
use super::logs::LogLimiter;
use crate::store::Overlay;

/// Why a `.wasm` file cannot be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a WebAssembly component wasmtime can compile.
    #[error("not a valid WebAssembly component: {0}")]
    NotAComponent(String),
    /// A component, but not of the `emr:projector/projection` world.
    #[error("component does not implement the projection world: {0}")]
    WrongWorld(String),
    /// `describe` trapped or returned something unusable.
    #[error("describe failed: {0}")]
    Describe(String),
}

/// One loaded plugin version. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    /// What the plugin said about itself.
    pub info: Arc<PluginInfo>,
    /// SHA-256 of the `.wasm` bytes, hex.
    pub hash: String,
    /// The `.wasm` bytes, to write back to the plugins folder on rollback.
    pub bytes: Arc<[u8]>,
    pre: ProjectionPre<HostState>,
    runtime: Runtime,
    logs: Arc<LogLimiter>,
}

impl Plugin {
    /// Compiles, links and describes a component, and checks its description.
    pub async fn load(runtime: &Runtime, bytes: &[u8]) -> Result<Self, LoadError> {
        let hash = hex::encode(Sha256::digest(bytes));
        // Compiling takes a core for hundreds of milliseconds: off the async
        // workers, so projections keep running meanwhile.
        let (engine, owned) = (runtime.engine.clone(), bytes.to_vec());
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &owned))
            .await
            .map_err(|e| LoadError::NotAComponent(format!("compilation stopped: {e}")))?
            .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        let instance_pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = ProjectionPre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let mut plugin = Self {
            info: Arc::new(PluginInfo::new("", "", &[], Vec::new())),
            hash,
            bytes: bytes.into(),
            pre,
            runtime: runtime.clone(),
            logs: Arc::default(),
        };
        let mut instance = plugin
            .instantiate(None)
            .await
            .map_err(|e| LoadError::Describe(format!("{e:#}")))?;
        let info = instance
            .describe()
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        convert::check_info(&info).map_err(LoadError::Describe)?;
        plugin.info = Arc::new(info);
        Ok(plugin)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// A fresh sandboxed instance whose `view-get` reads `views`.
    pub async fn instantiate(&self, views: Option<Overlay>) -> anyhow::Result<PluginInstance> {
        PluginInstance::new(
            &self.runtime,
            &self.pre,
            self.info.name.clone(),
            self.logs.clone(),
            views,
        )
        .await
    }

    /// Log lines the plugin wrote and had suppressed by the rate limit.
    pub fn log_counts(&self) -> (u64, u64) {
        self.logs.counts()
    }
}
