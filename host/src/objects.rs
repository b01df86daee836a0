//! Object storage (S3 / MinIO, path-style): the private buckets images and
//! reports live in, and short-lived presigned GET URLs so a client can fetch
//! an object without credentials of its own. S3 being down degrades the host
//! (`/readyz` says so); projection goes on.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule,
};

use crate::config::Config;

/// The buckets the host makes sure exist (SPEC), and the plugin artifacts'.
pub const BUCKETS: [&str; 5] = [
    RADIOLOGY_IMAGES,
    LAB_REPORTS,
    "patient-documents",
    "prescriptions",
    PLUGINS,
];

/// The bucket plugin versions are shared through, for fleet deploys.
pub const PLUGINS: &str = "projector-plugins";

/// The bucket of imaging studies' images.
pub const RADIOLOGY_IMAGES: &str = "radiology-images";

/// The lab-reports bucket, where a lab system may store a report's PDF.
pub const LAB_REPORTS: &str = "lab-reports";

/// The host's S3 client.
#[derive(Clone)]
pub struct ObjectStore {
    client: Client,
    /// Signs for where clients reach the storage, which may not be where
    /// the host does (`http://minio:9000` inside compose).
    signer: Client,
    presign_ttl: Duration,
}

/// A path-style client for `endpoint` with the configured credentials.
fn client(config: &Config, endpoint: &str) -> Client {
    let credentials = Credentials::new(
        &config.s3_access_key,
        &config.s3_secret_key,
        None,
        None,
        "projector-config",
    );
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(10))
        .build();
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(Region::new(config.s3_region.clone()))
        .credentials_provider(credentials)
        .force_path_style(true)
        .timeout_config(timeouts)
        .build();
    Client::from_conf(conf)
}

impl ObjectStore {
    /// A client for `S3_ENDPOINT` with the configured credentials, and one
    /// that signs URLs for `S3_PUBLIC_ENDPOINT`. Nothing is contacted yet.
    pub fn new(config: &Config) -> Self {
        Self {
            client: client(config, &config.s3_endpoint),
            signer: client(config, &config.s3_public_endpoint),
            presign_ttl: config.presign_ttl,
        }
    }

    /// The SDK client (tests and tools upload with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the missing buckets, private (S3 buckets are private unless a
    /// policy says otherwise; none is set), with default server-side
    /// encryption where the server supports it.
    pub async fn ensure_buckets(&self) -> anyhow::Result<()> {
        let existing = self.client.list_buckets().send().await.map_err(s3_error)?;
        let existing: Vec<&str> = existing.buckets().iter().filter_map(|b| b.name()).collect();
        for bucket in BUCKETS.iter().filter(|b| !existing.contains(b)) {
            self.client
                .create_bucket()
                .bucket(*bucket)
                .send()
                .await
                .map_err(s3_error)?;
            tracing::info!(bucket, "bucket created");
            if let Err(e) = self.encrypt_by_default(bucket).await {
                tracing::warn!(
                    bucket,
                    error = format!("{e:#}"),
                    "default encryption not set: the server does not support it"
                );
            }
        }
        Ok(())
    }

    async fn encrypt_by_default(&self, bucket: &str) -> anyhow::Result<()> {
        let by_default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::Aes256)
            .build()?;
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(by_default)
            .build();
        let encryption = ServerSideEncryptionConfiguration::builder()
            .rules(rule)
            .build()?;
        self.client
            .put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(encryption)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    /// Whether S3 answers within two seconds.
    pub async fn ready(&self) -> bool {
        let answer = self.client.list_buckets().send();
        matches!(
            tokio::time::timeout(Duration::from_secs(2), answer).await,
            Ok(Ok(_))
        )
    }

    /// A GET URL for an object, valid for `PRESIGN_TTL`. Signing is local:
    /// it does not check that the object exists.
    pub async fn presign_get(&self, bucket: &str, key: &str) -> Option<String> {
        let expiry = PresigningConfig::expires_in(self.presign_ttl).ok()?;
        let request = self
            .signer
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(expiry)
            .await
            .ok()?;
        Some(request.uri().to_owned())
    }

    /// Stores a plugin version as `projector-plugins/<name>/<hash>.wasm`.
    pub async fn put_plugin(&self, name: &str, hash: &str, bytes: &[u8]) -> anyhow::Result<()> {
        self.client
            .put_object()
            .bucket(PLUGINS)
            .key(plugin_key(name, hash))
            .body(bytes.to_vec().into())
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    /// Fetches a plugin version stored by [`ObjectStore::put_plugin`].
    pub async fn get_plugin(&self, name: &str, hash: &str) -> anyhow::Result<Vec<u8>> {
        let object = self
            .client
            .get_object()
            .bucket(PLUGINS)
            .key(plugin_key(name, hash))
            .send()
            .await
            .map_err(s3_error)?;
        let bytes = object.body.collect().await?;
        Ok(bytes.into_bytes().to_vec())
    }

    /// Creates the buckets at start, and keeps trying while S3 is down.
    pub async fn ensure_buckets_until_done(self) {
        loop {
            match self.ensure_buckets().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "object storage unavailable; retrying in 5 s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
}

/// Where a plugin version is stored.
pub fn plugin_key(name: &str, hash: &str) -> String {
    format!("{name}/{hash}.wasm")
}

/// An SDK error with its whole chain of causes (its `Display` alone says
/// only "service error").
fn s3_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e))
}
