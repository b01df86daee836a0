//! How the hosts of a deployment share the projections: each host holds at
//! most its fair share of them, so a host that joins gets work within a few
//! seconds and a host that goes leaves its projections to the others.
//!
//! Which host projects what is decided by the claims themselves (see
//! [`crate::store::claim`]): a claim nobody holds goes to the first host
//! that tries. This module only tells a host when to try and when to give
//! one up: a host below its share takes free claims; a host above it gives
//! one up between two batches; a claim left free longer than one standby
//! poll is taken by whoever sees it, share or not, so nothing stays
//! unprojected while membership is being learnt.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::members;

/// One host's count of what it projects, and of the hosts sharing the work;
/// shared by its projections.
#[derive(Debug, Default)]
pub struct Ownership {
    /// Live projections on this host that take part in sharing (a plugin's
    /// live views; rebuilds do not count).
    units: AtomicUsize,
    /// Of those, how many this host holds the claim of.
    held: AtomicUsize,
    /// Hosts heard of within `LEASE_TTL`, this one included (0: not yet
    /// known).
    live: AtomicUsize,
}

impl Ownership {
    /// A projection that shares in the work has started on this host; the
    /// guard counts it until the projection ends.
    pub fn join(self: &Arc<Self>) -> Unit {
        self.units.fetch_add(1, Ordering::AcqRel);
        Unit(self.clone())
    }

    /// This host now holds a claim; the guard counts it in the share until
    /// dropped with the claim.
    pub fn hold(self: &Arc<Self>) -> Counted {
        self.held.fetch_add(1, Ordering::AcqRel);
        Counted {
            ownership: self.clone(),
            counted: true,
        }
    }

    /// Records how many hosts are live now.
    pub fn set_live(&self, hosts: usize) {
        self.live.store(hosts, Ordering::Release);
    }

    /// Hosts live now, as last heard (at least this one).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire).max(1)
    }

    /// How many projections each host should hold: the projections divided
    /// by the live hosts, rounded up.
    pub fn share(&self) -> usize {
        self.units.load(Ordering::Acquire).div_ceil(self.live())
    }

    /// Whether this host may take one more free claim now.
    pub fn below_share(&self) -> bool {
        self.held.load(Ordering::Acquire) < self.share()
    }

    /// Whether this host holds more than its share now.
    pub fn over_share(&self) -> bool {
        self.held.load(Ordering::Acquire) > self.share()
    }

    /// Counts off the claim of `held` if the host holds more than its
    /// share: `Ok` for as many callers as the host holds above it (the
    /// caller must then give its claim up), `Err` with the guard back
    /// otherwise.
    pub fn try_yield(&self, mut held: Counted) -> Result<(), Counted> {
        let share = self.share();
        let yielded = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held > share).then(|| held - 1)
            })
            .is_ok();
        if yielded {
            // Counted off above; the guard must not count it off again.
            held.counted = false;
            Ok(())
        } else {
            Err(held)
        }
    }
}

/// A projection that shares in the work, counted while it lives.
pub struct Unit(Arc<Ownership>);

impl Drop for Unit {
    fn drop(&mut self) {
        self.0.units.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A claim this host holds, counted in its share while it is held.
pub struct Counted {
    ownership: Arc<Ownership>,
    /// Whether dropping it still counts it off.
    counted: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.counted {
            self.ownership.held.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Writes this host's heartbeat every `ttl`/3, for ever, and learns from
/// the same table (as `GET /api/cluster` shows it) how many hosts are live,
/// heard of within `ttl`; a failed round is logged and tried again next
/// time.
pub async fn heartbeat(
    pool: PgPool,
    member: Uuid,
    address: String,
    ownership: Arc<Ownership>,
    metrics: Arc<Metrics>,
    ttl: Duration,
) {
    let started_at = chrono::Utc::now();
    loop {
        let beat = async {
            members::beat(&pool, member, &address, started_at).await?;
            members::list(&pool, ttl).await
        };
        match beat.await {
            Ok(members) => {
                let live = members.iter().filter(|m| m.live).count();
                ownership.set_live(live);
                metrics.members_live(live);
            }
            Err(e) => tracing::warn!(error = %e, "cluster heartbeat not written"),
        }
        tokio::time::sleep(ttl / 3).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_the_projections_over_the_live_hosts_rounded_up() {
        let ownership = Arc::new(Ownership::default());
        let _units: Vec<Unit> = (0..5).map(|_| ownership.join()).collect();
        assert_eq!(ownership.share(), 5, "alone until others are heard of");
        ownership.set_live(2);
        assert_eq!(ownership.share(), 3);
        ownership.set_live(4);
        assert_eq!(ownership.share(), 2);
    }

    #[test]
    fn a_host_gives_up_exactly_what_it_holds_above_its_share() {
        let ownership = Arc::new(Ownership::default());
        let _units: Vec<Unit> = (0..5).map(|_| ownership.join()).collect();
        let held: Vec<Counted> = (0..5).map(|_| ownership.hold()).collect();
        assert!(!ownership.below_share());
        ownership.set_live(2);
        let (given_up, kept): (Vec<_>, Vec<_>) = held
            .into_iter()
            .map(|h| ownership.try_yield(h))
            .partition(Result::is_ok);
        assert_eq!((given_up.len(), kept.len()), (2, 3));
        assert!(!ownership.below_share());
        drop(kept);
        assert!(ownership.below_share(), "a claim lost counts off");
    }
}
