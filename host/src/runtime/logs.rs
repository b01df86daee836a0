//! A plugin's log lines (the `log` import, and what the guest writes to
//! stdout and stderr, a panic's message included) go to tracing tagged with
//! the plugin, at most `BURST` at once and `PER_SECOND` after that: a plugin
//! that floods its log cannot flood the host's. What is dropped is counted
//! and reported.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::sync::Locked;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Lines a plugin may write at once.
const BURST: f64 = 100.0;
/// Lines per second a plugin may write over time.
const PER_SECOND: f64 = 50.0;

/// One plugin's log budget, shared by all its instances.
#[derive(Debug)]
pub struct LogLimiter {
    bucket: Mutex<Bucket>,
    written: AtomicU64,
    suppressed: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Dropped since the last line written.
    dropped: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                refilled: Instant::now(),
                dropped: 0,
            }),
            written: AtomicU64::default(),
            suppressed: AtomicU64::default(),
        }
    }
}

impl LogLimiter {
    /// Whether a line may be written now; `Some(n)` says yes and that `n`
    /// lines were dropped before it.
    pub fn admit(&self) -> Option<u64> {
        let mut bucket = self.bucket.locked();
        let now = Instant::now();
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * PER_SECOND;
        bucket.tokens = (bucket.tokens + earned).min(BURST);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            self.written.fetch_add(1, Ordering::Relaxed);
            Some(std::mem::take(&mut bucket.dropped))
        } else {
            bucket.dropped += 1;
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Lines written and suppressed so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.suppressed.load(Ordering::Relaxed),
        )
    }
}

/// The longest line written; the rest is cut.
const LINE: usize = 2000;

/// Writes one line of a plugin's to tracing, if the budget allows.
pub fn write(plugin: &str, logs: &LogLimiter, level: u8, source: &'static str, message: &str) {
    let Some(dropped) = logs.admit() else {
        return;
    };
    if dropped > 0 {
        tracing::warn!(plugin, dropped, "plugin log lines suppressed (rate limit)");
    }
    let message: String = message.chars().take(LINE).collect();
    match level {
        0 => tracing::trace!(plugin, source, "{message}"),
        1 => tracing::debug!(plugin, source, "{message}"),
        2 => tracing::info!(plugin, source, "{message}"),
        3 => tracing::warn!(plugin, source, "{message}"),
        _ => tracing::error!(plugin, source, "{message}"),
    }
}

/// A guest's stdout or stderr: each line becomes a log line of the plugin
/// (stdout at info, stderr at warn).
#[derive(Clone)]
pub struct GuestOutput {
    plugin: String,
    logs: Arc<LogLimiter>,
    source: &'static str,
}

impl GuestOutput {
    /// The guest's stdout.
    pub fn stdout(plugin: &str, logs: Arc<LogLimiter>) -> Self {
        Self {
            plugin: plugin.to_owned(),
            logs,
            source: "stdout",
        }
    }

    /// The guest's stderr.
    pub fn stderr(plugin: &str, logs: Arc<LogLimiter>) -> Self {
        Self {
            source: "stderr",
            ..Self::stdout(plugin, logs)
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            output: self.clone(),
            pending: Vec::new(),
        })
    }
}

/// Gathers bytes into lines.
struct LineWriter {
    output: GuestOutput,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, upto: usize) {
        let line: Vec<u8> = self.pending.drain(..upto).collect();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if !text.is_empty() {
            let level = if self.output.source == "stderr" { 3 } else { 2 };
            write(
                &self.output.plugin,
                &self.output.logs,
                level,
                self.output.source,
                text,
            );
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            self.emit(end + 1);
        }
        if self.pending.len() > LINE {
            let all = self.pending.len();
            self.emit(all);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let all = self.pending.len();
        self.emit(all);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn guest_output_becomes_counted_lines() {
        let logs = Arc::new(LogLimiter::default());
        let mut stderr = Pin::from(GuestOutput::stderr("p", logs.clone()).async_stream());
        stderr
            .write_all(b"panicked at src/lib.rs:1:1:\nboom\npartial")
            .await
            .unwrap();
        assert_eq!(logs.counts(), (2, 0));
        stderr.shutdown().await.unwrap();
        assert_eq!(logs.counts(), (3, 0));
    }

    #[test]
    fn a_flood_is_cut_to_the_burst() {
        let limiter = LogLimiter::default();
        let written = (0..10_000).filter(|_| limiter.admit().is_some()).count() as u64;
        let (counted, suppressed) = limiter.counts();
        assert_eq!(written, counted);
        assert!(
            (BURST as u64..BURST as u64 + 10).contains(&written),
            "{written}"
        );
        assert_eq!(written + suppressed, 10_000);
    }
}
