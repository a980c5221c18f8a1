//! A static etcd cluster of plain processes on 127.0.0.1, without the operator: for the
//! tests of the traffic and the checker themselves, and the positive control
//! ([`crate::control`]). Every process is killed when the cluster is dropped.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use etcd_operator::{etcd_bin::EtcdBinaries, version::DEFAULT_VERSION};

use crate::{free_port, wait_for};

/// One etcd process of the cluster.
struct Member {
    name: String,
    child: Option<Child>,
    client_url: String,
    peer_url: String,
}

/// A static etcd cluster of `n` members (each killed when dropped); can be killed and
/// started again on the same data and ports.
pub struct StaticCluster {
    dir: PathBuf,
    members: Vec<Member>,
}

impl StaticCluster {
    /// Starts `n` members with their data and logs under `dir`.
    pub fn start(dir: &Path, n: usize) -> anyhow::Result<Self> {
        let members = (0..n)
            .map(|i| Member {
                name: format!("t{i}"),
                child: None,
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
            })
            .collect();
        let mut cluster = Self {
            dir: dir.to_path_buf(),
            members,
        };
        cluster.restart()?;
        Ok(cluster)
    }

    /// Starts every member's process (again), appending to the same logs.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let binary = EtcdBinaries::from_env()
            .resolve(DEFAULT_VERSION)
            .context("the bundled etcd binary")?;
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..self.members.len() {
            let out = File::options()
                .create(true)
                .append(true)
                .open(self.log(i))
                .context("opening the etcd log")?;
            let data_dir = self.data_dir(i);
            let m = &self.members[i];
            let (client_url, peer_url) = (&m.client_url, &m.peer_url);
            let child = Command::new(&binary)
                .arg(format!("--name={}", m.name))
                .arg(format!("--data-dir={}", data_dir.display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={initial_cluster}"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().context("cloning the log handle")?)
                .stderr(out)
                .spawn()
                .context("starting etcd")?;
            self.members[i].child = Some(child);
        }
        Ok(())
    }

    /// SIGKILLs every process and reaps it.
    pub fn kill(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Every member's client URL.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&self.members[i].name).join("data")
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True for a cluster of no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn log(&self, member: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.members[member].name))
    }

    /// The last lines of every member's log, for failure messages.
    pub fn log_tail(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                format!(
                    "--- {} ---\n{}",
                    self.members[i].name,
                    crate::local_cluster::tail(&self.log(i), 30)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until every member answers a linearizable read.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        for endpoint in self.client_urls() {
            wait_for("etcd to answer a read", Duration::from_secs(30), || {
                let endpoints = vec![endpoint.clone()];
                async move {
                    let mut client = etcd_client::Client::connect(&endpoints, None).await.ok()?;
                    client.get("ready", None).await.ok().map(|_| ())
                }
            })
            .await
            .with_context(|| self.log_tail())?;
        }
        Ok(())
    }
}

impl Drop for StaticCluster {
    fn drop(&mut self) {
        self.kill();
    }
}
