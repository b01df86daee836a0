//! How the hosts of a deployment share the work: every plugin's patients
//! are split into partitions ([`partition`]), and each host owns at most
//! its fair share of each plugin's partitions, so a host that joins gets
//! work within a few seconds and a host that goes leaves its partitions to
//! the others. The share is per plugin, not over all of them: the plugins'
//! loads differ by an order of magnitude (the patient plugin reads every
//! event), and a host holding the patient partitions while another held
//! the rest would do most of the work alone.
//!
//! Which host owns what is decided by the claims themselves (see
//! [`crate::store::claim`]): a partition nobody holds goes to the first
//! host that tries. This module only tells a host when to try and when to
//! give one up: a projection below its share takes free partitions; one
//! above it gives some up between two batches; a partition left free
//! longer than one standby poll is taken by whoever sees it, share or not,
//! so nothing stays unprojected while membership is being learnt.

pub mod partition;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::members;

/// How many hosts share the work, as this host last heard; shared by its
/// projections.
#[derive(Debug, Default)]
pub struct Membership {
    /// Hosts heard of within `LEASE_TTL`, this one included (0: not yet
    /// known).
    live: AtomicUsize,
}

impl Membership {
    /// Records how many hosts are live now.
    pub fn set_live(&self, hosts: usize) {
        self.live.store(hosts, Ordering::Release);
    }

    /// Hosts live now, as last heard (at least this one).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire).max(1)
    }

    /// How many of a plugin's `partitions` each host should hold: all of
    /// them divided by the live hosts, rounded up.
    pub fn share(&self, partitions: usize) -> usize {
        partitions.div_ceil(self.live())
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
    membership: Arc<Membership>,
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
                membership.set_live(live);
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
    fn the_share_is_a_plugins_partitions_over_the_live_hosts_rounded_up() {
        let membership = Membership::default();
        assert_eq!(membership.share(32), 32, "alone until others are heard of");
        membership.set_live(3);
        assert_eq!(membership.share(32), 11);
        membership.set_live(4);
        assert_eq!(membership.share(32), 8);
    }
}
