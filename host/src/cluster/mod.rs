//! How the hosts of a deployment share the work: every plugin's patients
//! are split into partitions ([`partition`]), and each host owns at most
//! its fair share of all the (plugin, partition) pairs, so a host that
//! joins gets work within a few seconds and a host that goes leaves its
//! partitions to the others.
//!
//! Which host owns what is decided by the claims themselves (see
//! [`crate::store::claim`]): a partition nobody holds goes to the first
//! host that tries. This module only tells a host when to try and when to
//! give one up: a host below its share takes free partitions; a host above
//! it gives some up between two batches; a partition left free longer than
//! one standby poll is taken by whoever sees it, share or not, so nothing
//! stays unprojected while membership is being learnt.

pub mod partition;

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
    /// Partitions of the live projections on this host, which take part in
    /// sharing (a plugin's live views; rebuilds do not count).
    units: AtomicUsize,
    /// Of those, how many this host holds the claim of.
    held: AtomicUsize,
    /// Hosts heard of within `LEASE_TTL`, this one included (0: not yet
    /// known).
    live: AtomicUsize,
}

impl Ownership {
    /// A projection that shares in the work, with its `partitions`, has
    /// started on this host; the guard counts them until the projection
    /// ends.
    pub fn join(self: &Arc<Self>, partitions: usize) -> Unit {
        self.units.fetch_add(partitions, Ordering::AcqRel);
        Unit {
            ownership: self.clone(),
            partitions,
        }
    }

    /// This host now holds a partition's claim; the guard counts it in the share until
    /// dropped with the claim.
    pub fn hold(self: &Arc<Self>) -> Counted {
        self.held.fetch_add(1, Ordering::AcqRel);
        Counted {
            ownership: self.clone(),
            counted: true,
        }
    }

    /// Counts one more partition in this host's share if it is below its
    /// share; `None` if it has its share already.
    pub fn try_hold(self: &Arc<Self>) -> Option<Counted> {
        let share = self.share();
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < share).then_some(held + 1)
            })
            .ok()
            .map(|_| Counted {
                ownership: self.clone(),
                counted: true,
            })
    }

    /// Records how many hosts are live now.
    pub fn set_live(&self, hosts: usize) {
        self.live.store(hosts, Ordering::Release);
    }

    /// Hosts live now, as last heard (at least this one).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire).max(1)
    }

    /// How many partitions each host should hold: all of them divided by
    /// the live hosts, rounded up.
    pub fn share(&self) -> usize {
        self.units.load(Ordering::Acquire).div_ceil(self.live())
    }

    /// How many more free partitions this host may take now.
    pub fn room(&self) -> usize {
        self.share()
            .saturating_sub(self.held.load(Ordering::Acquire))
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

/// A projection's partitions that share in the work, counted while it
/// lives.
pub struct Unit {
    ownership: Arc<Ownership>,
    partitions: usize,
}

impl Drop for Unit {
    fn drop(&mut self) {
        self.ownership
            .units
            .fetch_sub(self.partitions, Ordering::AcqRel);
    }
}

/// A partition's claim this host holds, counted in its share while it is held.
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
    fn the_share_is_the_partitions_over_the_live_hosts_rounded_up() {
        let ownership = Arc::new(Ownership::default());
        let _units: Vec<Unit> = (0..5).map(|_| ownership.join(4)).collect();
        assert_eq!(ownership.share(), 20, "alone until others are heard of");
        ownership.set_live(3);
        assert_eq!(ownership.share(), 7);
        ownership.set_live(4);
        assert_eq!(ownership.share(), 5);
    }

    #[test]
    fn a_host_gives_up_exactly_what_it_holds_above_its_share() {
        let ownership = Arc::new(Ownership::default());
        let _units: Vec<Unit> = (0..5).map(|_| ownership.join(1)).collect();
        let held: Vec<Counted> = (0..5).map(|_| ownership.hold()).collect();
        assert_eq!(ownership.room(), 0);
        ownership.set_live(2);
        let (given_up, kept): (Vec<_>, Vec<_>) = held
            .into_iter()
            .map(|h| ownership.try_yield(h))
            .partition(Result::is_ok);
        assert_eq!((given_up.len(), kept.len()), (2, 3));
        assert_eq!(ownership.room(), 0);
        drop(kept);
        assert_eq!(ownership.room(), 3, "a claim lost counts off");
    }
}
