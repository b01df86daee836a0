//! The command line's client for a running host's HTTP API: what
//! `projector plugins …` and `projector dead-letters …` call. It is the
//! tools' side of the API, which the host itself never calls, so it is kept
//! apart from both the API and the scaffold.

pub mod commands;
pub mod progress;
mod tables;

pub use tables::{dead_letters_table, plugins_table};

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Why a command against a host failed, each with its own exit code so
/// scripts can tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Nothing answered at the URL (exit 3).
    #[error("cannot reach the host at {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What the connection said.
        reason: String,
    },
    /// The host refused the token, or its role (exit 4).
    #[error("the host refused the token ({status}): {message}")]
    Token {
        /// 401 or 403.
        status: StatusCode,
        /// The host's reason.
        message: String,
    },
    /// The host refused the request, or failed it (exit 1).
    #[error("the host answered {status}: {message}")]
    Refused {
        /// The status.
        status: StatusCode,
        /// The host's reason.
        message: String,
    },
    /// Something on this side: a file to read, an answer not understood
    /// (exit 1).
    #[error("{0}")]
    Local(String),
}

impl RemoteError {
    /// The process's exit code for it: 1 refused, 3 unreachable, 4 token
    /// (2 is the command line's own usage error).
    pub fn exit_code(&self) -> i32 {
        match self {
            RemoteError::Refused { .. } | RemoteError::Local(_) => 1,
            RemoteError::Unreachable { .. } => 3,
            RemoteError::Token { .. } => 4,
        }
    }
}

/// A running host's API, with the token every call carries.
pub struct Remote {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Remote {
    /// The host at `url` (`http://host:port`), called with `token`.
    pub fn new(url: &str, token: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// `GET path?query`: the host's JSON answer.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, RemoteError> {
        self.call(Method::GET, path, query, None).await
    }

    /// `POST path` without a body: the host's JSON answer.
    pub async fn post(&self, path: &str) -> Result<Value, RemoteError> {
        self.call(Method::POST, path, &[], None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Value, RemoteError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .query(query)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(|e| RemoteError::Unreachable {
            url: self.base.clone(),
            reason: std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), ToString::to_string),
        })?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(answer);
        }
        let message = answer["error"]
            .as_str()
            .map_or_else(|| answer.to_string(), str::to_owned);
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                RemoteError::Token { status, message }
            }
            _ => RemoteError::Refused { status, message },
        })
    }

    /// Uploads a built plugin (`PUT /api/plugins/:name`); returns the
    /// host's answer. The name defaults to the file's (cargo writes
    /// `my_rule.wasm` for the crate `my-rule`), so a plugin whose name holds
    /// `_` is deployed with its `name`.
    pub async fn deploy(&self, file: &Path, name: Option<&str>) -> Result<Value, RemoteError> {
        let bytes = std::fs::read(file)
            .map_err(|e| RemoteError::Local(format!("reading {}: {e}", file.display())))?;
        let name = match name {
            Some(name) => name.to_owned(),
            None => file
                .file_stem()
                .and_then(|s| s.to_str())
                .map(|s| s.replace('_', "-"))
                .ok_or_else(|| RemoteError::Local("the file has no name; pass --name".into()))?,
        };
        self.call(
            Method::PUT,
            &format!("/api/plugins/{name}"),
            &[],
            Some(bytes),
        )
        .await
    }
}
