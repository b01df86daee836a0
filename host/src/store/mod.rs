//! PostgreSQL: the host's schema, read-model tables created from the views
//! plugins declare, and applying a batch in one transaction.

mod cache;
pub mod claim;
mod commit;
pub mod outbox;
mod overlay;
pub mod queries;
pub mod rebuild;
pub mod retention;
pub mod statistics;
mod target;
mod views;

pub use cache::DocCache;
pub use commit::{
    Batch, CommitError, MAX_BATCH_BYTES, MAX_DOCUMENT_BYTES, NewAudit, NewDeadLetter, NewParked,
};
pub use outbox::NewNotification;
pub use overlay::{ApplyFailure, Overlay};
pub use target::Target;
pub use views::{
    Recorded, ViewError, definition, ensure_views, record_definition, recorded, table_name,
};

/// The host's tables that hold a projection's bookkeeping rows, by
/// `plugin` (a [`Target`]'s key); processed events go by plugin and
/// generation instead.
const TARGET_ROWS: [&str; 3] = ["dead_letters", "parked_events", "checkpoints"];

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Connects, creating the database if it does not exist, and migrates the
/// host's own tables: an empty database is a valid start.
pub async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
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
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect(database_url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("migrating the schema")?;
    Ok(pool)
}
