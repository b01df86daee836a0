//! What a projection holds on this host: its lease, the partitions it owns
//! through it and its pin; and, at each poll, which partitions it takes
//! and gives up (see [`crate::cluster`] for the rules).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::cluster::{Counted, Ownership};
use crate::shared::Shared;
use crate::store::claim::{self, Lease, PIN};
use crate::store::{Fence, Target};

use super::state::OUT_OF_STEP;

/// How many `LEASE_TTL`s a projection keeps partitions above its share
/// after ones it gave up came back unclaimed.
const UNWANTED_PAUSE_TTLS: u32 = 3;

/// A partition this host holds.
struct Held {
    /// Counts it in the host's share (`None`: a rebuild's, which does not
    /// count).
    counted: Option<Counted>,
    /// When it was taken: a partition is not handed over before the hosts'
    /// heartbeats (`LEASE_TTL`) have had time to say who is live, so one
    /// taken from a host that just died is not passed around meanwhile.
    taken_at: Instant,
}

/// The lease and what it holds.
struct Holding {
    lease: Lease,
    partitions: BTreeMap<u32, Held>,
    /// Whether the lease holds the projection's pin.
    pinned: bool,
}

/// What to change after one look at who holds what.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Free partitions to take, in order.
    take: Vec<u32>,
    /// Of those, the ones taken whatever this host's share: free for two
    /// polls in a row, or wanted by a pinned projection or a rebuild.
    forced: BTreeSet<u32>,
    /// Partitions held to give up, in order.
    give: Vec<u32>,
    /// Give them up whatever the share (another host pinned the plugin).
    give_all: bool,
    /// Whether the projection's pin should be held.
    pin: bool,
}

/// A projection's claims on this host.
pub(super) struct Claims {
    key: String,
    /// A live projection shares its partitions with other hosts; a
    /// rebuild takes them all.
    live: bool,
    partitions: u32,
    member: Uuid,
    ttl: Duration,
    pool: PgPool,
    ownership: Arc<Ownership>,
    holding: Option<Holding>,
    /// The partitions found free at the last look.
    free_seen: BTreeSet<u32>,
    /// Partitions given up for the share that no other host has taken yet.
    handed: BTreeSet<u32>,
    /// Until when no partition is given up for the share: some came back
    /// unclaimed (the other hosts run a version out of step with the
    /// views, see [`Claims::plan`]), and would otherwise go round
    /// unprojected every `LEASE_TTL`.
    unwanted_until: Option<Instant>,
    /// Whether the last look found this host's version out of step with
    /// the live views.
    out_of_step: bool,
}

impl Claims {
    /// No claims yet, for projection `target`.
    pub fn new(target: &Target, shared: &Shared) -> Self {
        Self {
            key: target.key.clone(),
            live: target.is_live(),
            partitions: shared.config.partitions,
            member: shared.member,
            ttl: shared.config.lease_ttl,
            pool: shared.pool.clone(),
            ownership: shared.ownership.clone(),
            holding: None,
            free_seen: BTreeSet::new(),
            handed: BTreeSet::new(),
            unwanted_until: None,
            out_of_step: false,
        }
    }

    /// The partitions held and the backend holding them; `None` while
    /// none are.
    pub fn fence(&self) -> Option<Fence> {
        let holding = self.holding.as_ref()?;
        (!holding.partitions.is_empty()).then(|| Fence {
            pid: holding.lease.pid,
            partitions: holding.partitions.keys().copied().collect(),
        })
    }

    /// How many partitions are held.
    pub fn held(&self) -> usize {
        self.holding.as_ref().map_or(0, |h| h.partitions.len())
    }

    /// Turns true when the lease is lost (`None`: no lease).
    pub fn lost_signal(&self) -> Option<watch::Receiver<bool>> {
        self.holding.as_ref().map(|h| h.lease.lost_signal())
    }

    /// Drops everything if the lease was lost; true if it was.
    pub fn lapsed(&mut self) -> bool {
        let lapsed = self.holding.as_ref().is_some_and(|h| !h.lease.alive());
        if lapsed {
            self.holding = None;
        }
        lapsed
    }

    /// Lets every partition and the pin go at once (the lease's
    /// connection closes), after an error left their state unknown.
    pub fn drop_all(&mut self) {
        self.holding = None;
    }

    /// Whether the last look found this host's version out of step with
    /// the live views.
    pub fn out_of_step(&self) -> bool {
        self.out_of_step
    }

    /// Looks at who holds the projection's partitions and decides what to
    /// take and give up (`pinned`: a rebuild of it runs on this host;
    /// `in_step`: this host runs the definition the live views were built
    /// with, which `step` says after the holders are read, so that a
    /// partition a host gave up after switching the views is not taken by
    /// one that did not see the switch).
    pub async fn plan(
        &mut self,
        pinned: bool,
        step: impl Future<Output = Result<bool, sqlx::Error>>,
    ) -> Result<Plan, sqlx::Error> {
        let keys = [self.key.clone()];
        let holders = claim::holders(&self.pool, &keys)
            .await?
            .remove(&self.key)
            .unwrap_or_default();
        let free: BTreeSet<u32> = (0..self.partitions)
            .filter(|p| !holders.contains_key(&(*p as i32)))
            .collect();
        let seen_before = std::mem::replace(&mut self.free_seen, free.clone());
        let held: Vec<u32> = self
            .holding
            .iter()
            .flat_map(|h| h.partitions.keys().copied())
            .collect();
        let mut plan = Plan {
            pin: self.live && pinned,
            ..Plan::default()
        };
        if !self.live || pinned {
            plan.take = free.iter().copied().collect();
            plan.forced = free;
            return Ok(plan);
        }
        if holders.get(&PIN).is_some_and(|m| *m != self.member) {
            // Another host rebuilds the plugin: its switch needs them all.
            plan.give = held;
            plan.give_all = true;
            return Ok(plan);
        }
        let in_step = step.await?;
        if in_step == self.out_of_step {
            self.out_of_step = !in_step;
            if in_step {
                tracing::info!(plugin = %self.key, "this host runs the version the live views were built with again: it takes its share of their partitions");
            } else {
                tracing::warn!(plugin = %self.key, "{OUT_OF_STEP}");
            }
        }
        if !in_step {
            plan.give = held;
            plan.give_all = true;
            return Ok(plan);
        }
        plan.forced = free.intersection(&seen_before).copied().collect();
        // Partitions handed over that come back forced (nobody took them):
        // this host is not wanted to give any for a while.
        if plan.forced.intersection(&self.handed).next().is_some() {
            self.unwanted_until = Some(Instant::now() + UNWANTED_PAUSE_TTLS * self.ttl);
        }
        self.handed
            .retain(|p| free.contains(p) && !plan.forced.contains(p));
        let room = self.ownership.room();
        let mut take: BTreeSet<u32> = free.iter().copied().take(room).collect();
        take.extend(&plan.forced);
        plan.take = take.into_iter().collect();
        let wanted = self
            .unwanted_until
            .is_none_or(|until| Instant::now() >= until);
        if self.ownership.over_share() && wanted {
            let now = Instant::now();
            let holding = self.holding.as_ref();
            plan.give = held
                .into_iter()
                .rev()
                .filter(|p| {
                    holding
                        .and_then(|h| h.partitions.get(p))
                        .is_some_and(|h| now >= h.taken_at + self.ttl)
                })
                .collect();
        }
        Ok(plan)
    }

    /// Whether carrying out `plan` would take something: the projection
    /// must then stop and start again after the checkpoints of all it
    /// holds.
    pub fn would_take(&self, plan: &Plan) -> bool {
        let pinned = self.holding.as_ref().is_some_and(|h| h.pinned);
        !plan.take.is_empty() || (plan.pin && !pinned)
    }

    /// Gives up what `plan` says to, between two batches: as many as this
    /// host holds above its share (all of them with `give_all`).
    pub async fn give(&mut self, plan: &Plan) -> Result<(), sqlx::Error> {
        let Some(holding) = self.holding.as_mut() else {
            return Ok(());
        };
        for partition in &plan.give {
            let Some(mut held) = holding.partitions.remove(partition) else {
                continue;
            };
            if !plan.give_all {
                match held.counted.take().map(|c| self.ownership.try_yield(c)) {
                    Some(Ok(())) => {}
                    Some(Err(kept)) => {
                        held.counted = Some(kept);
                        holding.partitions.insert(*partition, held);
                        break;
                    }
                    None => {
                        holding.partitions.insert(*partition, held);
                        continue;
                    }
                }
            }
            holding.lease.give_up(*partition as i32).await?;
            if !plan.give_all {
                self.handed.insert(*partition);
            }
            tracing::info!(plugin = %self.key, partition, "handing this partition over");
        }
        if holding.pinned && !plan.pin {
            holding.lease.give_up(PIN).await?;
            holding.pinned = false;
        }
        if holding.partitions.is_empty() && !holding.pinned {
            self.holding = None;
        }
        Ok(())
    }

    /// Takes what `plan` says to, within this host's share but for the
    /// forced ones; returns how many partitions were taken.
    pub async fn take(&mut self, plan: &Plan) -> Result<usize, sqlx::Error> {
        if !self.would_take(plan) {
            return Ok(0);
        }
        let holding = match self.holding.as_mut() {
            Some(holding) => holding,
            None => {
                let lease = Lease::open(&self.pool, &self.key, self.ttl, self.member).await?;
                self.holding.insert(Holding {
                    lease,
                    partitions: BTreeMap::new(),
                    pinned: false,
                })
            }
        };
        if plan.pin && !holding.pinned {
            holding.pinned = holding.lease.try_take(PIN).await?;
        }
        let mut taken = 0;
        for partition in &plan.take {
            if holding.partitions.contains_key(partition) {
                continue;
            }
            let counted = if !self.live {
                None
            } else if plan.forced.contains(partition) {
                Some(self.ownership.hold())
            } else {
                match self.ownership.try_hold() {
                    Some(counted) => Some(counted),
                    None => continue,
                }
            };
            if holding.lease.try_take(*partition as i32).await? {
                holding.partitions.insert(
                    *partition,
                    Held {
                        counted,
                        taken_at: Instant::now(),
                    },
                );
                taken += 1;
            }
        }
        if taken > 0 {
            tracing::info!(plugin = %self.key, taken, held = holding.partitions.len(), "claimed partitions");
        }
        if holding.partitions.is_empty() && !holding.pinned {
            self.holding = None;
        }
        Ok(taken)
    }
}
