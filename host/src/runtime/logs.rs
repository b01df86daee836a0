//! A plugin's log lines go to tracing tagged with the plugin, at most
//! `BURST` at once and `PER_SECOND` after that: a plugin that floods its
//! log cannot flood the host's. What is dropped is counted and reported.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
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

#[cfg(test)]
mod tests {
    use super::*;

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
