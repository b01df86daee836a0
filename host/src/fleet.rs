//! Fleet deploys: a version that starts running on one host (uploaded,
//! dropped into its folder, rolled back to, or switched in by a rebuild) is
//! stored in the `projector-plugins` bucket and announced on the NATS core
//! subject `<prefix>projector.plugins`; every other host of the deployment
//! fetches it, checks its hash, validates it and deploys it as an upload,
//! if it is the newest version the shared database records for the plugin
//! (`store::deployments`): a forged or replayed announcement deploys nothing.
//! A host that was down meanwhile runs what its own folder holds.

use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::lifecycle::Deployer;
use crate::objects::ObjectStore;
use crate::runtime::Plugin;

/// The subject, under the deployment's subject prefix.
pub fn subject(prefix: &str) -> String {
    format!("{prefix}projector.plugins")
}

/// A version that runs now on the host that sent it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Announcement {
    plugin: String,
    version: String,
    /// SHA-256 of the bytes: the object's name, and checked after fetching.
    hash: String,
    /// The sending host, which ignores its own announcements.
    from: String,
}

/// This host's side of the fleet.
pub struct Fleet {
    objects: ObjectStore,
    nats: async_nats::Client,
    subject: String,
    instance: String,
}

impl Fleet {
    /// The fleet of the deployment `prefix` names, reached through `objects`
    /// and `nats`.
    pub fn new(objects: ObjectStore, nats: async_nats::Client, prefix: &str) -> Self {
        Self {
            objects,
            nats,
            subject: subject(prefix),
            instance: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Announces, in order, each version the deployer says started running
    /// here.
    pub fn announce_each(
        self: Arc<Self>,
        mut versions: mpsc::UnboundedReceiver<Plugin>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(plugin) = versions.recv().await {
                self.announce(&plugin).await;
            }
        })
    }

    /// Stores a version and tells the other hosts it runs here. A failure
    /// is logged: the version runs here all the same.
    async fn announce(&self, plugin: &Plugin) {
        let announcement = Announcement {
            plugin: plugin.name().to_owned(),
            version: plugin.info.version.clone(),
            hash: plugin.hash.clone(),
            from: self.instance.clone(),
        };
        let sent = async {
            self.objects
                .put_plugin(plugin.name(), &plugin.hash, &plugin.bytes)
                .await?;
            let payload = serde_json::to_vec(&announcement)?;
            self.nats
                .publish(self.subject.clone(), payload.into())
                .await?;
            anyhow::Ok(())
        };
        match sent.await {
            Ok(()) => {
                tracing::info!(plugin = plugin.name(), hash = %plugin.hash, "version announced to the fleet")
            }
            Err(e) => tracing::error!(
                plugin = plugin.name(),
                error = format!("{e:#}"),
                "version not announced to the fleet"
            ),
        }
    }

    /// Follows the other hosts' announcements: each new version is fetched,
    /// checked against its hash and deployed here. Subscribed before this
    /// returns.
    pub async fn follow(
        self: Arc<Self>,
        deployer: Arc<Deployer>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let mut announcements = self.nats.subscribe(self.subject.clone()).await?;
        Ok(tokio::spawn(async move {
            while let Some(message) = announcements.next().await {
                match serde_json::from_slice::<Announcement>(&message.payload) {
                    Ok(a) if a.from == self.instance => {}
                    Ok(a) => self.take(&deployer, a).await,
                    Err(e) => tracing::warn!(error = %e, "unreadable fleet announcement ignored"),
                }
            }
        }))
    }

    async fn take(&self, deployer: &Arc<Deployer>, announcement: Announcement) {
        let Announcement { plugin, hash, .. } = announcement;
        if deployer.runs(&plugin, &hash) {
            return;
        }
        let fetched = async {
            let bytes = self.objects.get_plugin(&plugin, &hash).await?;
            let actual = hex::encode(Sha256::digest(&bytes));
            anyhow::ensure!(actual == hash, "the stored bytes hash to {actual}");
            Ok(bytes)
        };
        let bytes = match fetched.await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(
                    plugin,
                    hash,
                    error = format!("{e:#}"),
                    "fleet version not fetched"
                );
                return;
            }
        };
        match deployer.deploy_from_fleet(&bytes, &plugin, &hash).await {
            Ok((_, deployed)) => tracing::info!(
                plugin,
                hash,
                deployed = deployed.as_str(),
                "fleet version deployed"
            ),
            Err(e) => tracing::error!(plugin, hash, error = %e, "fleet version refused"),
        }
    }
}
