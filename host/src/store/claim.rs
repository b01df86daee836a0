//! One consumer per projection across every host of a deployment. Hosts
//! that read one durable consumer would each get part of the stream and
//! commit over each other; so a projection first claims its plugin with a
//! PostgreSQL advisory lock, held on a connection of its own for as long
//! as it runs, and every commit checks, in its transaction, that the claim
//! is still held (a claim whose connection died is gone, and another host
//! may have taken it). A host without the claim stands by.
//!
//! A claim is a lease of `LEASE_TTL`: its connection asks PostgreSQL to end
//! it after that long idle (`idle_session_timeout`), and a keeper task
//! renews it three times as often. A host that stops answering (SIGSTOP, a
//! frozen VM, a cut network) stops renewing, PostgreSQL ends the session,
//! the lock goes with it, and another host takes over; when the stopped host
//! wakes, its commits find the claim gone and change nothing.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, PgPool, Postgres};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The first key of the host's advisory locks (`PRJ`): the second is the
/// projection's name, hashed.
const LOCK_CLASS: i32 = 0x0050_524a;

/// A held claim: the backend holding its lock, by which commits check it,
/// and the task keeping its connection alive.
pub struct Claim {
    /// The backend process holding the lock.
    pub pid: i32,
    /// Turns true once a renewal failed: the session, and the lock, are
    /// gone.
    lost: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl Claim {
    /// Takes the claim on projection `key` for host `member` if no one
    /// holds it, as a lease of `ttl`.
    pub async fn try_take(
        pool: &PgPool,
        key: &str,
        ttl: Duration,
        member: Uuid,
    ) -> Result<Option<Self>, sqlx::Error> {
        let mut connection = pool.acquire().await?;
        // The lock belongs to the session: the connection must never go
        // back to the pool holding it.
        connection.close_on_drop();
        let (taken, pid): (bool, i32) =
            sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2)), pg_backend_pid()")
                .bind(LOCK_CLASS)
                .bind(key)
                .fetch_one(&mut *connection)
                .await?;
        if !taken {
            return Ok(None);
        }
        // The session names its host, so the cluster view can tell who
        // holds each claim from the locks themselves.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "SET idle_session_timeout = {}; SET application_name = 'projector-{member}'",
            ttl.as_millis()
        )))
        .execute(&mut *connection)
        .await?;
        let (report, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep(connection, ttl / 3, report));
        Ok(Some(Self { pid, lost, keeper }))
    }

    /// Whether the claim is still held, as far as its last renewal knows
    /// (commits check for certain).
    pub fn alive(&self) -> bool {
        !*self.lost.borrow()
    }

    /// Returns once a renewal finds the claim lost, so the projection stops
    /// at once rather than at its next commit.
    pub async fn lost(&self) {
        let _ = self.lost.clone().wait_for(|lost| *lost).await;
    }
}

impl Drop for Claim {
    /// Gives the claim up: the keeper ends, closing the connection.
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Renews the lease every `every` until a renewal fails (the session was
/// ended: the lock is gone), then marks it lost and closes the connection.
async fn keep(
    mut connection: PoolConnection<Postgres>,
    every: Duration,
    lost: watch::Sender<bool>,
) {
    loop {
        tokio::time::sleep(every).await;
        if sqlx::query("SELECT 1")
            .execute(&mut *connection)
            .await
            .is_err()
        {
            let _ = lost.send(true);
            return;
        }
    }
}

/// The host holding each projection's claim of `keys`, by the id it
/// claimed with (`None`: nobody holds it).
pub async fn holders(
    pool: &PgPool,
    keys: &[String],
) -> Result<Vec<(String, Option<Uuid>)>, sqlx::Error> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT k.key, a.application_name FROM unnest($2::text[]) AS k(key)
         LEFT JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted
              AND l.classid = $1::int4::oid AND l.objid = hashtext(k.key)::oid AND l.objsubid = 2
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         LEFT JOIN pg_stat_activity a ON a.pid = l.pid
         ORDER BY k.key",
    )
    .bind(LOCK_CLASS)
    .bind(keys)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, name)| {
            let member = name
                .as_deref()
                .and_then(|n| n.strip_prefix("projector-"))
                .and_then(|id| id.parse().ok());
            (key, member)
        })
        .collect())
}

/// Whether backend `pid` holds the claim on projection `key`: run inside a
/// commit's transaction, it fences off a host whose claim was lost.
pub async fn held(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    key: &str,
    pid: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND pid = $1
           AND classid = $2::int4::oid AND objid = hashtext($3)::oid AND objsubid = 2)",
    )
    .bind(pid)
    .bind(LOCK_CLASS)
    .bind(key)
    .fetch_one(&mut **tx)
    .await
}
