//! The command line's client for a running host's HTTP API: what
//! `projector plugins deploy` uploads a build with. It is the tools' side of
//! the API, which the host itself never calls, so it is kept apart from both
//! the API and the scaffold.

use std::path::Path;

use anyhow::Context;

/// Uploads a built plugin to a running host (`PUT /api/plugins/:name`);
/// returns the host's answer. The name defaults to the file's (cargo
/// writes `my_rule.wasm` for the crate `my-rule`), so a plugin whose name
/// holds `_` is deployed with its `name`.
pub async fn deploy(
    file: &Path,
    name: Option<&str>,
    url: &str,
    token: &str,
) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = match name {
        Some(name) => name.to_owned(),
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.replace('_', "-"))
            .context("the file has no name; pass --name")?,
    };
    let response = reqwest::Client::new()
        .put(format!("{}/api/plugins/{name}", url.trim_end_matches('/')))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("uploading to {url}"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "the host refused it ({status}): {answer}"
    );
    Ok(answer)
}
