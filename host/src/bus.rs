//! Connecting to NATS as the deployment configures it: credentials (a
//! `.creds` file, or user and password) and TLS (a CA to trust, a client
//! certificate, or a `tls://` URL), so the host can run against a server
//! whose subjects are not open to anyone who reaches the port; and the
//! inbox prefix a producing system's user may read (`projector publish`).

use anyhow::Context;
use async_nats::ConnectOptions;

use crate::config::Config;

/// A client of the configured NATS server.
pub async fn connect(config: &Config) -> anyhow::Result<async_nats::Client> {
    let mut options = match &config.nats_creds {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .with_context(|| format!("reading NATS_CREDS {}", path.display()))?,
        None => ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&config.nats_user, &config.nats_password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &config.nats_tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.nats_tls_cert, &config.nats_tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    if let Some(prefix) = &config.nats_inbox_prefix {
        options = options.custom_inbox_prefix(prefix.clone());
    }
    options
        .connect(servers(&config.nats_url)?)
        .await
        .with_context(|| format!("connecting to NATS at {}", config.nats_url))
}

/// The servers of `NATS_URL`: one URL, or several separated by commas (the
/// nodes of a cluster; the client tries each, and learns the others from
/// whichever answers).
fn servers(urls: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse()
                .with_context(|| format!("NATS_URL: `{url}` is not a NATS server URL"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_url_names_one_server_or_a_cluster() {
        assert_eq!(servers("nats://127.0.0.1:4222").unwrap().len(), 1);
        let cluster = servers("nats://n1:4222, nats://n2:4222,nats://n3:4222").unwrap();
        assert_eq!(cluster.len(), 3);
        assert_eq!(cluster[1].host(), "n2");
        assert!(servers("nats://n1:4222,nats://n2:notaport").is_err());
    }
}
