//! Fair use of the API by rate: each user's requests, and each client
//! address's refused ones (bad or missing tokens, on the API and the
//! notification handshakes), at most `API_RATE_PER_SECOND` on average with
//! bursts of `API_RATE_BURST`. Refusals are limited by address because
//! every refusal is audited: without a limit, anyone could grow the audit
//! trail as fast as they can send.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::metrics::Metrics;

/// A request over its limit: when the caller may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// How long until the next request would be allowed.
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds to wait, at least one (the `Retry-After` header).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

/// The host's limiters, one state per user and per address; shared by the
/// API and the notification sockets. What they refuse is counted in
/// `projector_rate_limited_total{limit}`.
pub struct RateLimits {
    users: DefaultKeyedRateLimiter<String>,
    refusals: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    metrics: Arc<Metrics>,
}

/// How often the states of users and addresses that have been quiet long
/// enough to have their whole burst again are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(60);

impl RateLimits {
    /// Limiters allowing `per_second` on average and `burst` at once.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, metrics: Arc<Metrics>) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            users: RateLimiter::keyed(quota),
            refusals: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            metrics,
        }
    }

    /// Counts one request of `user`; `Err` when it is over the user's rate.
    pub fn user(&self, user: &str) -> Result<(), Limited> {
        self.check(&self.users, &user.to_owned(), "user")
    }

    /// Counts one refused request from `address`; `Err` when the address
    /// is over its rate of refusals (the refusal is then not audited).
    pub fn refusal(&self, address: IpAddr) -> Result<(), Limited> {
        self.check(&self.refusals, &address, "refused_address")
    }

    fn check<K: Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        limit: &'static str,
    ) -> Result<(), Limited> {
        limiter.check_key(key).map_err(|not_until| {
            self.metrics.rate_limited(limit);
            Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            }
        })
    }

    /// Forgets, every minute, the users and addresses whose state is as if
    /// they had never called, so the limiters hold only recent callers.
    pub async fn forget_idle(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(FORGET_EVERY);
        loop {
            ticks.tick().await;
            self.users.retain_recent();
            self.users.shrink_to_fit();
            self.refusals.retain_recent();
            self.refusals.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, burst: u32) -> RateLimits {
        RateLimits::new(
            NonZeroU32::new(per_second).unwrap(),
            NonZeroU32::new(burst).unwrap(),
            Arc::default(),
        )
    }

    #[test]
    fn a_burst_passes_then_the_next_waits_and_others_are_not_held() {
        let limits = limits(1, 3);
        for _ in 0..3 {
            assert_eq!(limits.user("dr-a"), Ok(()));
        }
        let limited = limits.user("dr-a").expect_err("over the burst");
        assert!(limited.retry_after <= Duration::from_secs(1));
        assert_eq!(limited.retry_after_secs(), 1);
        assert_eq!(limits.user("dr-b"), Ok(()));
        // Refusals count apart from requests.
        assert_eq!(limits.refusal("10.0.0.1".parse().unwrap()), Ok(()));
    }
}
