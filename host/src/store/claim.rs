//! One owner per (projection, partition) across every host of a
//! deployment. Hosts that applied the same patient's events at once would
//! commit over each other; so a projection first claims each partition it
//! works on with a PostgreSQL advisory lock (keyed by the projection's name,
//! hashed, and the partition), held on a connection of its own, its
//! [`Lease`], for as long as it owns it; and every commit checks, in its
//! transaction, that the partitions it moves are still held (a lease whose
//! connection died is gone, and another host may have taken them).
//!
//! A lease lasts `LEASE_TTL`: its connection asks PostgreSQL to end it
//! after that long idle (`idle_session_timeout`), and a keeper task renews
//! it three times as often. A host that stops answering (SIGSTOP, a frozen
//! VM, a cut network) stops renewing, PostgreSQL ends the session, the
//! locks go with it, and other hosts take them over; when the stopped host
//! wakes, its commits find the partitions gone and change nothing.
//!
//! The same lease can hold a projection's *pin* ([`PIN`]): a host
//! rebuilding a plugin pins its live projection, and the other hosts give
//! that plugin's partitions up until the pin goes, so the switch happens
//! where every partition is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, PgPool, Postgres};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The pseudo-partition a lease holds to pin a projection to its host.
pub const PIN: i32 = -1;

/// A connection holding some partitions' locks of one projection: the
/// backend, by which commits check them, and the task keeping it alive.
pub struct Lease {
    /// The backend process holding the locks.
    pub pid: i32,
    key: String,
    connection: Arc<Mutex<PoolConnection<Postgres>>>,
    /// Turns true once a renewal failed: the session, and the locks, are
    /// gone.
    lost: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl Lease {
    /// Opens a lease for projection `key` of host `member`, holding nothing
    /// yet, lasting `ttl` unrenewed.
    pub async fn open(
        pool: &PgPool,
        key: &str,
        ttl: Duration,
        member: Uuid,
    ) -> Result<Self, sqlx::Error> {
        let mut connection = pool.acquire().await?;
        // The locks belong to the session: the connection must never go
        // back to the pool holding them.
        connection.close_on_drop();
        // The session names its host, so the cluster view can tell who
        // holds each partition from the locks themselves.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "SET idle_session_timeout = {}; SET application_name = 'projector-{member}'",
            ttl.as_millis()
        )))
        .execute(&mut *connection)
        .await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *connection)
            .await?;
        let connection = Arc::new(Mutex::new(connection));
        let (report, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep(connection.clone(), ttl / 3, report));
        Ok(Self {
            pid,
            key: key.to_owned(),
            connection,
            lost,
            keeper,
        })
    }

    /// Takes `partition` if no one holds it; whether it is held now.
    pub async fn try_take(&self, partition: i32) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1), $2)")
            .bind(&self.key)
            .bind(partition)
            .fetch_one(&mut **self.connection.lock().await)
            .await
    }

    /// Gives `partition` up, for another host to take.
    pub async fn give_up(&self, partition: i32) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_unlock(hashtext($1), $2)")
            .bind(&self.key)
            .bind(partition)
            .execute(&mut **self.connection.lock().await)
            .await?;
        Ok(())
    }

    /// Whether the lease is still held, as far as its last renewal knows
    /// (commits check for certain).
    pub fn alive(&self) -> bool {
        !*self.lost.borrow()
    }

    /// Turns true once a renewal finds the lease lost (or the lease is
    /// dropped), so the projection stops at once rather than at its next
    /// commit.
    pub fn lost_signal(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }
}

impl Drop for Lease {
    /// Gives everything up: the keeper ends, and the connection closes
    /// once nothing else uses it.
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Renews the lease every `every` until a renewal fails (the session was
/// ended: the locks are gone), then marks it lost.
async fn keep(
    connection: Arc<Mutex<PoolConnection<Postgres>>>,
    every: Duration,
    lost: watch::Sender<bool>,
) {
    loop {
        tokio::time::sleep(every).await;
        let renewed = sqlx::query("SELECT 1")
            .execute(&mut **connection.lock().await)
            .await;
        if renewed.is_err() {
            let _ = lost.send(true);
            return;
        }
    }
}

/// Who holds what of each projection of `keys`: partition (or [`PIN`]) →
/// the host, by the id it claimed with. A partition nobody holds is absent.
pub async fn holders(
    pool: &PgPool,
    keys: &[String],
) -> Result<HashMap<String, HashMap<i32, Uuid>>, sqlx::Error> {
    let rows: Vec<(String, i32, Option<String>)> = sqlx::query_as(
        "SELECT k.key,
            (l.objid::int8 - CASE WHEN l.objid::int8 > 2147483647 THEN 4294967296 ELSE 0 END)::int4,
            a.application_name FROM unnest($1::text[]) AS k(key)
         JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted
              AND l.classid = hashtext(k.key)::oid AND l.objsubid = 2
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         JOIN pg_stat_activity a ON a.pid = l.pid",
    )
    .bind(keys)
    .fetch_all(pool)
    .await?;
    let mut held: HashMap<String, HashMap<i32, Uuid>> = HashMap::new();
    for (key, partition, name) in rows {
        let member = name
            .as_deref()
            .and_then(|n| n.strip_prefix("projector-"))
            .and_then(|id| id.parse().ok());
        if let Some(member) = member {
            held.entry(key).or_default().insert(partition, member);
        }
    }
    Ok(held)
}

/// Whether backend `pid` holds every one of `partitions` of projection
/// `key`: run inside a commit's transaction, it fences off a host whose
/// lease was lost.
pub async fn held(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    key: &str,
    pid: i32,
    partitions: &[i32],
) -> Result<bool, sqlx::Error> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND pid = $1
           AND classid = hashtext($2)::oid AND objsubid = 2
           AND objid = ANY(ARRAY(SELECT p::oid FROM unnest($3::int4[]) AS p))",
    )
    .bind(pid)
    .bind(key)
    .bind(partitions)
    .fetch_one(&mut **tx)
    .await?;
    Ok(count == partitions.len() as i64)
}
