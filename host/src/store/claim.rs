//! One consumer per projection across every host of a deployment. Hosts
//! that read one durable consumer would each get part of the stream and
//! commit over each other; so a projection first claims its plugin with a
//! PostgreSQL advisory lock, held on a connection of its own for as long
//! as it runs, and every commit checks, in its transaction, that the claim
//! is still held (a claim whose connection died is gone, and another host
//! may have taken it). A host without the claim stands by.

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

/// The first key of the host's advisory locks (`PRJ`): the second is the
/// projection's name, hashed.
const LOCK_CLASS: i32 = 0x0050_524a;

/// A held claim: its connection, which holds the lock, and that
/// connection's backend, by which commits check it.
pub struct Claim {
    connection: PoolConnection<Postgres>,
    /// The backend process holding the lock.
    pub pid: i32,
}

impl Claim {
    /// Takes the claim on projection `key` if no one holds it.
    pub async fn try_take(pool: &PgPool, key: &str) -> Result<Option<Self>, sqlx::Error> {
        let mut connection = pool.acquire().await?;
        let (taken, pid): (bool, i32) =
            sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2)), pg_backend_pid()")
                .bind(LOCK_CLASS)
                .bind(key)
                .fetch_one(&mut *connection)
                .await?;
        Ok(taken.then_some(Self { connection, pid }))
    }

    /// Whether its connection is still there (and so the lock held).
    pub async fn alive(&mut self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&mut *self.connection)
            .await
            .is_ok()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // The lock belongs to the session: the connection must not go back
        // to the pool holding it.
        self.connection.close_on_drop();
    }
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
