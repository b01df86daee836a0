//! Writing to the host's log. Lines are tagged with the plugin's name and
//! rate-limited by the host; never log patient data beyond ids.

/// How serious a log line is; see [`write`] for its use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine-grained tracing.
    Trace = 0,
    /// Diagnostics.
    Debug = 1,
    /// Normal operation.
    Info = 2,
    /// Something odd that did not stop the event.
    Warn = 3,
    /// Something failed.
    Error = 4,
}

/// Writes one line to the host's log (natively, to stderr).
///
/// ```
/// projector_sdk::log::write(projector_sdk::log::Level::Info, "order o-1 has no tests");
/// ```
pub fn write(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::guest::log(level as u8, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}
