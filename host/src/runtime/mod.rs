//! The wasmtime side: one engine with an epoch ticker, plugins compiled once
//! into an `InstancePre`, and a fresh sandboxed instance per batch.

mod bindings;
mod convert;
mod instance;
pub mod limits;
mod logs;
mod plugin;

pub use convert::check_view_name;
pub use instance::{CallError, PluginInstance};
pub use plugin::{LoadError, Plugin};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::Linker;
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use bindings::Projection;
use instance::HostState;

/// How often the engine's epoch advances; call deadlines are counted in it.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Limits every plugin instance runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock deadline of one `handle` or `describe` call.
    pub call_timeout: Duration,
    /// Linear memory an instance may grow to.
    pub memory_bytes: usize,
}

/// The engine and linker all plugins share. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    limits: Limits,
}

impl Runtime {
    /// The runtime a host's configuration asks for.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Self> {
        let limits = Limits {
            call_timeout: config.call_timeout,
            memory_bytes: config.plugin_memory_bytes,
        };
        Self::new(limits, config.compile_cache.as_deref())
    }

    /// Builds the engine (component model, async, epoch interruption, pooling
    /// allocator, compiled code cached in `cache` when given) and starts its
    /// epoch ticker. A plugin compiles on one core: a deploy to a busy host
    /// leaves the other cores to the projections.
    pub fn new(limits: Limits, cache: Option<&Path>) -> anyhow::Result<Self> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(256)
            .total_core_instances(256)
            .total_memories(256)
            .total_tables(256)
            .max_memory_size(limits.memory_bytes)
            .async_stack_keep_resident(1 << 20)
            .linear_memory_keep_resident(1 << 20);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
            .parallel_compilation(false);
        match cache.map(|dir| private_cache_dir(dir).map(|()| dir)) {
            Some(Ok(dir)) => {
                let mut cache = CacheConfig::new();
                cache.with_directory(dir);
                config.cache(Some(Cache::new(cache)?));
            }
            Some(Err(e)) => tracing::error!(
                error = format!("{e:#}"),
                "compile cache not used: plugins are compiled at every load"
            ),
            None => {}
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Projection::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            limits,
        })
    }
}

/// Makes sure the compile cache, which holds native code the host runs, is
/// the host's alone: created owner-only (0700) when missing, and refused
/// when other users may write to it (they could plant code).
fn private_cache_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o022 == 0,
        "{} may be written by other users (mode {mode:o}): `chmod go-w` it",
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod cache_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::private_cache_dir;

    #[test]
    fn the_compile_cache_is_private_and_a_shared_one_is_refused() {
        let root = std::env::temp_dir().join(format!("projector-cache-{}", uuid::Uuid::new_v4()));
        let fresh = root.join("a/b");
        private_cache_dir(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = private_cache_dir(&fresh).unwrap_err().to_string();
        assert!(refused.contains("written by other users"), "{refused}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
