//! A three-node NATS cluster of a test's own: the pinned nats-server
//! (2.12, installed by `scripts/services` from PyPI) on local ports, routed
//! to each other, with JetStream on each; nodes can be killed and started
//! again on the same ports and stores.

use std::path::PathBuf;
use std::time::Duration;

use super::{eventually, free_port};

/// One node: its ports, its store and, while it runs, its process.
struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    store: PathBuf,
    process: Option<tokio::process::Child>,
}

/// The cluster; every node is killed and its store removed when dropped.
pub struct NatsCluster {
    name: String,
    nodes: Vec<Node>,
}

/// The pinned server binary.
fn binary() -> PathBuf {
    let binary =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.projector/tools/nats/bin/nats-server");
    assert!(
        binary.exists(),
        "no nats-server 2.12 at {}: run scripts/services",
        binary.display()
    );
    binary
}

impl NatsCluster {
    /// Starts three nodes and waits until JetStream can place a stream
    /// replicated on all three.
    pub async fn start(tag: &str) -> Self {
        let nodes = (1..=3)
            .map(|i| Node {
                name: format!("{tag}-n{i}"),
                port: free_port(),
                cluster_port: free_port(),
                store: std::env::temp_dir().join(format!("{tag}-nats-n{i}")),
                process: None,
            })
            .collect();
        let mut cluster = Self {
            name: tag.to_owned(),
            nodes,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.until_answers(i).await;
        }
        cluster.until_replicated_streams_can_be_made().await;
        cluster
    }

    /// Every node's client URL, separated by commas (as `NATS_URL` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `i` with SIGKILL and waits until it is gone.
    pub async fn kill(&mut self, i: usize) {
        let mut process = self.nodes[i].process.take().expect("the node runs");
        process.start_kill().expect("SIGKILL");
        process.wait().await.expect("the node exits");
    }

    /// Starts node `i` again on its ports and store, and waits until the
    /// cluster has it back.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.until_answers(i).await;
        let url = format!("nats://127.0.0.1:{}", self.nodes[i].port);
        let client = async_nats::connect(&url).await.expect("the node answers");
        let js = async_nats::jetstream::new(client);
        eventually("the restarted node serves JetStream", || async {
            js.query_account().await.ok()
        })
        .await;
    }

    fn spawn(&mut self, i: usize) {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let node = &self.nodes[i];
        let process = tokio::process::Command::new(binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &node.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&node.store)
            .args(["-n", &node.name, "--cluster_name", &self.name])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
            ])
            .args(["--routes", &routes])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.nodes[i].process = Some(process);
    }

    async fn until_answers(&self, i: usize) {
        let port = self.nodes[i].port;
        eventually("the NATS node answers", || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .await;
    }

    /// Waits for a meta leader and all three peers: a stream with three
    /// replicas can be made (and is removed again).
    async fn until_replicated_streams_can_be_made(&self) {
        let client = async_nats::connect(format!("nats://127.0.0.1:{}", self.nodes[0].port))
            .await
            .expect("the first node answers");
        let js = async_nats::jetstream::new(client);
        let probe = format!("{}_PROBE", self.name.to_uppercase());
        eventually("JetStream places a stream on three nodes", || async {
            js.create_stream(async_nats::jetstream::stream::Config {
                name: probe.clone(),
                subjects: vec![format!("{}.probe", self.name)],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .ok()
        })
        .await;
        let _ = js.delete_stream(&probe).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(process) = &mut node.process {
                let _ = process.start_kill();
            }
            let _ = std::fs::remove_dir_all(&node.store);
        }
    }
}
