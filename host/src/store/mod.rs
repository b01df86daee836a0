//! PostgreSQL, and all the SQL the host runs: the host's schema, a module
//! per table (audit, checkpoints, dead letters, notifications, processed
//! events, the views plugins declare and their documents), and applying a
//! batch to them in one transaction.

mod ahead;
pub mod audit;
mod cache;
pub mod checkpoints;
pub mod claim;
mod commit;
pub mod dead_letters;
pub mod deployments;
pub mod documents;
pub mod layout;
pub mod members;
pub mod notifications;
mod overlay;
pub mod processed;
pub mod rebuild;
pub mod retention;
pub mod statistics;
mod target;
mod views;

pub use ahead::Ahead;
pub use audit::NewAudit;
pub use cache::DocCache;
pub use commit::{Batch, CommitError, Done, Fence, MAX_BATCH_BYTES, MAX_DOCUMENT_BYTES, Prepared};
pub use dead_letters::{NewDeadLetter, NewParked};
pub use notifications::{NewNotification, StoredNotification};
pub use overlay::{ApplyFailure, Overlay};
pub use target::Target;
pub use views::{
    Recorded, ViewError, definition, ensure_views, record_definition, recorded, table_name,
};

/// Binds one array parameter per column of `rows`, in order: the arguments
/// of `INSERT … SELECT * FROM UNNEST($1::type[], …)` (or a join on such an
/// `UNNEST`), which takes any number of rows with one statement text, so
/// one prepared plan, instead of a parallel vector per column written out.
macro_rules! bind_columns {
    ($query:expr, $rows:expr, $($column:expr),+ $(,)?) => {{
        let rows = $rows;
        let query = $query;
        $(let query = query.bind(rows.iter().map($column).collect::<Vec<_>>());)+
        query
    }};
}
pub(crate) use bind_columns;

/// The host's tables that hold a projection's bookkeeping rows, by
/// `plugin` (a [`Target`]'s key); processed events go by plugin and
/// generation instead.
const TARGET_ROWS: [&str; 3] = ["dead_letters", "parked_events", "checkpoints"];

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Connects with a pool of `connections`, creating the database if it does
/// not exist, and migrates the host's own tables: an empty database is a
/// valid start.
pub async fn connect(database_url: &str, connections: u32) -> anyhow::Result<PgPool> {
    connect_with(database_url, connections, None).await
}

/// The host's pool: as [`connect`], and PostgreSQL ends a transaction left
/// idle for `lease_ttl` (its host stopped mid-batch), so that the host
/// taking over its claims is not held up by its row locks.
pub async fn connect_host(
    database_url: &str,
    connections: u32,
    lease_ttl: Duration,
) -> anyhow::Result<PgPool> {
    connect_with(database_url, connections, Some(lease_ttl)).await
}

async fn connect_with(
    database_url: &str,
    connections: u32,
    idle_transactions_end: Option<Duration>,
) -> anyhow::Result<PgPool> {
    use sqlx::migrate::MigrateDatabase;
    if !sqlx::Postgres::database_exists(database_url)
        .await
        .unwrap_or(false)
    {
        sqlx::Postgres::create_database(database_url)
            .await
            .or_else(|e| match &e {
                // Another process created it between the check and here.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P04") => Ok(()),
                _ => Err(e),
            })
            .context("creating the database")?;
    }
    let mut options: PgConnectOptions = database_url
        .parse()
        .context("DATABASE_URL is not a PostgreSQL URL")?;
    if let Some(limit) = idle_transactions_end {
        options = options.options([(
            "idle_in_transaction_session_timeout",
            format!("{}ms", limit.as_millis()),
        )]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("migrating the schema")?;
    Ok(pool)
}

/// A read-only transaction that sees one snapshot for all its reads, for
/// answers made of several tables that must agree (a chart and its
/// alerts).
pub async fn snapshot(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The pool of clients' requests (the API's, and what sockets ask for),
/// apart from the projections' (see [`connect`], which must have run
/// first): `connections` of its own, each statement cancelled by PostgreSQL
/// after `timeout`, and a request that finds every connection busy for as
/// long gives up. One slow query or one busy client can then hold at most
/// these connections, for at most that long.
pub async fn connect_api(
    database_url: &str,
    connections: u32,
    timeout: Duration,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = database_url
        .parse()
        .context("DATABASE_URL is not a PostgreSQL URL")?;
    let options = options.options([("statement_timeout", format!("{}ms", timeout.as_millis()))]);
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .context("connecting the API's pool to PostgreSQL")
}

/// Whether the database answers (readiness).
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}
