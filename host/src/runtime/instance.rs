//! One sandboxed instance of a plugin, serving a whole batch.

use std::sync::Arc;
use std::time::Instant;

use projector_contract::{Outcome, PluginInfo};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Runtime;
use super::bindings::emr::projector::types::Event as WitEvent;
use super::bindings::{Projection, ProjectionImports, ProjectionPre};
use super::convert;
use super::logs::{self, GuestOutput, LogLimiter};
use crate::store::Overlay;

/// Epoch ticks a call runs before it yields to the async runtime.
const YIELD_TICKS: u64 = 5;
/// Core instances a plugin's store may create (a component is a handful).
const MAX_INSTANCES: usize = 64;
/// Linear memories a plugin's store may create.
const MAX_MEMORIES: usize = 8;
/// Tables a plugin's store may create.
const MAX_TABLES: usize = 64;
/// Elements any one table may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Why one `handle` call produced no outcome.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin returned an error for the event.
    #[error("plugin refused the event: {0}")]
    Refused(String),
    /// The plugin returned an outcome the host cannot apply.
    #[error("plugin returned an invalid outcome: {0}")]
    Invalid(String),
    /// The call trapped, ran out of time or memory; the instance is spent.
    #[error("plugin trapped: {0}")]
    Trap(String),
}

/// What a plugin instance's store holds: WASI with nothing granted, the
/// memory limit, and the batch's views for `view-get`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    plugin: String,
    logs: Arc<LogLimiter>,
    views: Option<Overlay>,
    /// When the call under way must have ended: past it, the next epoch
    /// check traps the call.
    deadline: Instant,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl super::bindings::emr::projector::types::Host for HostState {}

impl ProjectionImports for HostState {
    async fn log(&mut self, level: u8, message: String) -> wasmtime::Result<()> {
        logs::write(&self.plugin, &self.logs, level, "log", &message);
        Ok(())
    }

    async fn view_get(&mut self, view: String, key: String) -> wasmtime::Result<Option<String>> {
        self.read_view("view-get", &view, &key, None).await
    }

    async fn view_get_at(
        &mut self,
        view: String,
        key: String,
        path: String,
    ) -> wasmtime::Result<Option<String>> {
        self.read_view("view-get-at", &view, &key, Some(&path))
            .await
    }
}

impl HostState {
    /// What `view-get` (no path) and `view-get-at` answer; `None` without
    /// views (`describe`, the benchmark's bare calls).
    async fn read_view(
        &mut self,
        import: &str,
        view: &str,
        key: &str,
        path: Option<&str>,
    ) -> wasmtime::Result<Option<String>> {
        let Some(views) = self.views.as_mut() else {
            return Ok(None);
        };
        views
            .get_text_at(view, key, path)
            .await
            .map_err(|e| wasmtime::Error::msg(format!("{import} {view}: {e:#}")))
    }
}

/// A live instance and its store.
pub struct PluginInstance {
    store: Store<HostState>,
    bindings: Projection,
    runtime: Runtime,
}

impl PluginInstance {
    pub(super) async fn new(
        runtime: &Runtime,
        pre: &ProjectionPre<HostState>,
        plugin: String,
        logs: Arc<LogLimiter>,
        views: Option<Overlay>,
    ) -> anyhow::Result<Self> {
        let state = HostState {
            wasi: WasiCtx::builder()
                .stdout(GuestOutput::stdout(&plugin, logs.clone()))
                .stderr(GuestOutput::stderr(&plugin, logs.clone()))
                .build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(runtime.limits.memory_bytes)
                .instances(MAX_INSTANCES)
                .memories(MAX_MEMORIES)
                .tables(MAX_TABLES)
                .table_elements(MAX_TABLE_ELEMENTS)
                .trap_on_grow_failure(true)
                .build(),
            plugin,
            logs,
            views,
            deadline: Instant::now() + runtime.limits.call_timeout,
        };
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        // Every few ticks a running call hands its thread back to tokio, so
        // a slow plugin never holds up the other projections; past its
        // deadline it traps.
        store.epoch_deadline_callback(|store| {
            Ok(if Instant::now() >= store.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::YieldCustom(YIELD_TICKS, Box::pin(tokio::task::yield_now()))
            })
        });
        store.set_epoch_deadline(YIELD_TICKS);
        let bindings = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(Self {
            store,
            bindings,
            runtime: runtime.clone(),
        })
    }

    /// Calls `describe`.
    pub(super) async fn describe(&mut self) -> Result<PluginInfo, CallError> {
        self.start_call();
        let call = self.bindings.call_describe(&mut self.store);
        let info = tokio::time::timeout(self.runtime.limits.call_timeout * 2, call)
            .await
            .map_err(|_| CallError::Trap("describe timed out".into()))?
            .map_err(|e| CallError::Trap(format!("{e:?}")))?;
        Ok(convert::plugin_info(info))
    }

    /// Calls `handle` for one event under the call deadline.
    pub async fn handle(
        &mut self,
        event: &projector_events::Event,
        sequence: u64,
    ) -> Result<Outcome, CallError> {
        let wit_event = WitEvent {
            id: event.envelope.event_id.to_string(),
            event_type: event.envelope.event_type.clone(),
            patient_id: event.envelope.patient_id.to_string(),
            timestamp: event.envelope.timestamp.as_str().to_owned(),
            user_id: event.envelope.user_id.to_string(),
            portal_type: event.envelope.portal_type.as_str().to_owned(),
            sequence,
            payload: event.envelope.payload.as_str().to_owned(),
        };
        self.start_call();
        let call = self.bindings.call_handle(&mut self.store, &wit_event);
        let result = tokio::time::timeout(self.runtime.limits.call_timeout * 2, call)
            .await
            .map_err(|_| CallError::Trap("call timed out".into()))?
            .map_err(|e| CallError::Trap(format!("{e:?}")))?;
        let outcome = result.map_err(CallError::Refused)?;
        let outcome = convert::outcome(outcome).map_err(CallError::Invalid)?;
        super::limits::check(&outcome).map_err(CallError::Invalid)?;
        Ok(outcome)
    }

    /// Sets the deadline of the call about to start.
    fn start_call(&mut self) {
        self.store.data_mut().deadline = Instant::now() + self.runtime.limits.call_timeout;
        self.store.set_epoch_deadline(YIELD_TICKS);
    }

    /// Ends the instance and hands back the batch's views.
    pub fn into_views(self) -> Option<Overlay> {
        self.store.into_data().views
    }
}

impl PluginInstance {
    /// The batch's views, to fold each outcome in before the next call.
    pub fn views(&mut self) -> Option<&mut Overlay> {
        self.store.data_mut().views.as_mut()
    }
}
