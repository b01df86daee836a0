//! The commands that call a running host: `projector plugins
//! deploy|list|rollback|rebuild|pause|resume` and `projector dead-letters
//! list|retry|discard`. Each prints a table or a one-line summary, or the
//! host's JSON with `--json`, and fails with a [`RemoteError`] whose exit
//! code a script can rely on.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{Remote, RemoteError, dead_letters_table, plugins_table, progress};

/// Which running host a command calls, as whom, and how it answers.
/// Exit codes: 0 done, 1 the host refused or failed it, 2 usage, 3 the
/// host could not be reached, 4 the token was refused.
#[derive(clap::Args)]
pub struct HostArgs {
    /// The host's HTTP API.
    #[arg(long, env = "PROJECTOR_URL", default_value = "http://127.0.0.1:3020")]
    url: String,
    /// An admin token (`projector token --sub me --role admin`).
    #[arg(long, env = "PROJECTOR_TOKEN")]
    token: String,
    /// Print the host's JSON answer instead of a table or a summary.
    #[arg(long)]
    json: bool,
}

impl HostArgs {
    fn remote(&self) -> Remote {
        Remote::new(&self.url, &self.token)
    }

    /// Prints the host's answer as JSON with `--json`, else the summary.
    fn print(&self, answer: &Value, summary: String) {
        if self.json {
            println!("{answer:#}");
        } else {
            println!("{summary}");
        }
    }

    /// Prints a listing as JSON with `--json`, else as `table` renders it.
    fn print_listing(
        &self,
        answer: Value,
        table: fn(Value) -> Result<String, RemoteError>,
    ) -> Result<(), RemoteError> {
        if self.json {
            println!("{answer:#}");
        } else {
            println!("{}", table(answer)?);
        }
        Ok(())
    }
}

/// `projector dead-letters …`.
#[derive(clap::Subcommand)]
pub enum DeadLetters {
    /// List dead letters, newest first.
    List {
        /// Only this plugin's.
        #[arg(long)]
        plugin: Option<String>,
        /// Only those with this status: dead, retrying, resolved, discarded.
        #[arg(long)]
        status: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Have its plugin apply a dead letter again.
    Retry {
        /// The dead letter's id.
        id: i64,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Give up on a dead letter; its patient's parked events go on.
    Discard {
        /// The dead letter's id.
        id: i64,
        #[command(flatten)]
        host: HostArgs,
    },
}

/// `projector plugins deploy FILE [--name N]`.
pub async fn deploy(file: &Path, name: Option<&str>, host: &HostArgs) -> Result<(), RemoteError> {
    let answer = host.remote().deploy(file, name).await?;
    host.print(&answer, deployment(&answer));
    Ok(())
}

/// `projector plugins list`.
pub async fn list_plugins(host: &HostArgs) -> Result<(), RemoteError> {
    let answer = host.remote().get("/api/plugins", &[]).await?;
    host.print_listing(answer, plugins_table)
}

/// `projector plugins rollback NAME`.
pub async fn rollback(name: &str, host: &HostArgs) -> Result<(), RemoteError> {
    let answer = host
        .remote()
        .post(&format!("/api/plugins/{name}/rollback"))
        .await?;
    host.print(&answer, deployment(&answer));
    Ok(())
}

/// `projector plugins rebuild NAME [--follow]`.
pub async fn rebuild(name: &str, follow: bool, host: &HostArgs) -> Result<(), RemoteError> {
    let answer = host
        .remote()
        .post(&format!("/api/plugins/{name}/rebuild"))
        .await?;
    let summary = format!(
        "{name}: rebuilding its views with {} ({}); `projector plugins list` shows its lag",
        answer["version"].as_str().unwrap_or("?"),
        short_hash(&answer)
    );
    host.print(&answer, summary);
    if follow {
        follow_rebuild(name, host).await?;
        println!("{name}: the rebuilt views are switched in");
    }
    Ok(())
}

/// Polls the host until the plugin's rebuild is over, the bar showing how
/// much of the stream the rebuild has caught up with.
async fn follow_rebuild(name: &str, host: &HostArgs) -> Result<(), RemoteError> {
    let remote = host.remote();
    let bar = progress::bar(0, "events rebuilt");
    loop {
        let listing = remote.get("/api/plugins", &[]).await?;
        let rebuild = listing
            .as_array()
            .and_then(|plugins| plugins.iter().find(|p| p["name"] == name))
            .map(|p| p["rebuild"].clone())
            .ok_or_else(|| RemoteError::Local(format!("the host lists no plugin `{name}`")))?;
        if rebuild.is_null() {
            bar.finish_and_clear();
            return Ok(());
        }
        if let Some(lag) = rebuild["lag"].as_u64() {
            let total = bar.length().unwrap_or(0).max(lag);
            bar.set_length(total);
            bar.set_position(total - lag);
        }
        bar.set_message(rebuild["error"].as_str().unwrap_or_default().to_owned());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `projector plugins pause|resume NAME`.
pub async fn set_paused(name: &str, paused: bool, host: &HostArgs) -> Result<(), RemoteError> {
    let action = if paused { "pause" } else { "resume" };
    let answer = host
        .remote()
        .post(&format!("/api/plugins/{name}/{action}"))
        .await?;
    let summary = format!("{name}: {}", answer["state"].as_str().unwrap_or("?"));
    host.print(&answer, summary);
    Ok(())
}

/// `projector dead-letters …`.
pub async fn dead_letters(command: DeadLetters) -> Result<(), RemoteError> {
    match command {
        DeadLetters::List {
            plugin,
            status,
            limit,
            host,
        } => {
            let limit = limit.to_string();
            let mut query = vec![("limit", limit.as_str())];
            query.extend(plugin.as_deref().map(|p| ("plugin", p)));
            query.extend(status.as_deref().map(|s| ("status", s)));
            let answer = host.remote().get("/api/dead-letters", &query).await?;
            host.print_listing(answer, dead_letters_table)?;
        }
        DeadLetters::Retry { id, host } => settle(id, &host, "retry").await?,
        DeadLetters::Discard { id, host } => settle(id, &host, "discard").await?,
    }
    Ok(())
}

/// `projector dead-letters retry|discard ID`.
async fn settle(id: i64, host: &HostArgs, action: &str) -> Result<(), RemoteError> {
    let answer = host
        .remote()
        .post(&format!("/api/dead-letters/{id}/{action}"))
        .await?;
    let summary = format!(
        "dead letter {id} ({}): {}",
        answer["plugin"].as_str().unwrap_or("?"),
        answer["status"].as_str().unwrap_or("?")
    );
    host.print(&answer, summary);
    Ok(())
}

/// What a deploy or a rollback did, in a line.
fn deployment(answer: &Value) -> String {
    format!(
        "{} {} ({}): {}",
        answer["name"].as_str().unwrap_or("?"),
        answer["version"].as_str().unwrap_or("?"),
        short_hash(answer),
        answer["deployed"].as_str().unwrap_or("?")
    )
}

fn short_hash(answer: &Value) -> String {
    answer["hash"]
        .as_str()
        .unwrap_or("?")
        .chars()
        .take(12)
        .collect()
}
