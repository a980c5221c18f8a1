//! The floors: bare etcd processes doing by hand what the operator does, measured in the
//! same run so each operator figure reads as a ratio.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions, MemberAddOptions};
use etcd_operator::{etcd_bin::EtcdBinaries, version::DEFAULT_VERSION};

use crate::free_port;

/// How long a member restarted on its data may take to be healthy (a large backend loads
/// for a while).
const RESTART_WITHIN: Duration = Duration::from_secs(600);

/// A bare etcd process, killed on drop.
pub struct BareEtcd {
    pub child: Child,
    pub client_url: String,
    pub peer_url: String,
}

impl Drop for BareEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bare_etcd(
    dir: &Path,
    name: &str,
    initial_cluster: &str,
    state: &str,
) -> anyhow::Result<BareEtcd> {
    let bin = EtcdBinaries::from_env().resolve(DEFAULT_VERSION)?;
    let client_url = format!("http://127.0.0.1:{}", free_port());
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let initial = if initial_cluster.is_empty() {
        format!("{name}={peer_url}")
    } else {
        format!("{initial_cluster},{name}={peer_url}")
    };
    let child = Command::new(bin)
        .args([
            format!("--name={name}"),
            format!("--data-dir={}", dir.join(name).display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster={initial}"),
            format!("--initial-cluster-state={state}"),
            "--log-level=error".into(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting etcd")?;
    Ok(BareEtcd {
        child,
        client_url,
        peer_url,
    })
}

pub async fn connect(url: &str) -> anyhow::Result<Client> {
    Ok(Client::connect(
        [url],
        Some(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_secs(2)),
        ),
    )
    .await?)
}

/// Polls until `url` answers Status with a leader.
pub async fn wait_healthy(url: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(mut c) = connect(url).await
            && let Ok(s) = c.status().await
            && s.leader() != 0
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("etcd at {url} did not become healthy within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Floor 1: a bare etcd from process start to a healthy one-member cluster.
pub async fn floor_start() -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let etcd = bare_etcd(dir.path(), "floor", "", "new")?;
    wait_healthy(&etcd.client_url, Duration::from_secs(30)).await?;
    Ok(started.elapsed())
}

/// Adds `peer_url` as a learner, asking again every 20 ms while etcd refuses (its strict
/// reconfiguration check), for at most `within`.
pub async fn add_learner(c: &mut Client, peer_url: &str, within: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        match c
            .member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()))
            .await
        {
            Ok(r) => return Ok(r.member().map(|m| m.id()).unwrap_or(0)),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Promotes learner `id`, asking again every 20 ms until it is in sync, for at most `within`.
pub async fn promote(c: &mut Client, id: u64, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        match c.member_promote(id).await {
            Ok(_) => return Ok(()),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Floor 2: adding a member to a bare one-member etcd by hand: learner add (retried while
/// etcd refuses), start, promote once in sync.
pub async fn floor_join() -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let seed = bare_etcd(dir.path(), "seed", "", "new")?;
    wait_healthy(&seed.client_url, Duration::from_secs(30)).await?;
    let mut c = connect(&seed.client_url).await?;
    let peer_port = free_port();
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let started = Instant::now();
    let id = add_learner(&mut c, &peer_url, Duration::from_secs(30)).await?;
    let bin = EtcdBinaries::from_env().resolve(DEFAULT_VERSION)?;
    let client_url = format!("http://127.0.0.1:{}", free_port());
    let mut joiner = BareEtcd {
        child: Command::new(bin)
            .args([
                "--name=joiner".to_string(),
                format!("--data-dir={}", dir.path().join("joiner").display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=seed={},joiner={peer_url}", seed.peer_url),
                "--initial-cluster-state=existing".into(),
                "--log-level=error".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        client_url: client_url.clone(),
        peer_url,
    };
    promote(&mut c, id, Duration::from_secs(60)).await?;
    wait_healthy(&joiner.client_url, Duration::from_secs(30)).await?;
    let elapsed = started.elapsed();
    let _ = joiner.child.kill();
    Ok(elapsed)
}

/// A bare static cluster of `n` members (all in `--initial-cluster`), each restartable on
/// its data dir.
pub struct BareCluster {
    pub dir: tempfile::TempDir,
    pub version: etcd_operator::EtcdVersion,
    pub names: Vec<String>,
    pub initial: String,
    pub urls: Vec<(String, String)>,
    pub members: Vec<Option<Child>>,
}

impl BareCluster {
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_on(n, DEFAULT_VERSION).await
    }

    /// A static cluster of `n` members of etcd `version`.
    pub async fn start_on(n: usize, version: etcd_operator::EtcdVersion) -> anyhow::Result<Self> {
        let mut c = Self::unstarted(&std::env::temp_dir(), n, version)?;
        for i in 0..n {
            let child = c.spawn(i)?;
            c.members.push(Some(child));
        }
        for (client, _) in &c.urls {
            wait_healthy(client, Duration::from_secs(60)).await?;
        }
        Ok(c)
    }

    /// Names, ports and a directory under `parent` for `n` members, none started.
    pub fn unstarted(
        parent: &Path,
        n: usize,
        version: etcd_operator::EtcdVersion,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(parent)?;
        let dir = tempfile::tempdir_in(parent)?;
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let urls: Vec<(String, String)> = (0..n)
            .map(|_| {
                (
                    format!("http://127.0.0.1:{}", free_port()),
                    format!("http://127.0.0.1:{}", free_port()),
                )
            })
            .collect();
        let initial = names
            .iter()
            .zip(&urls)
            .map(|(name, (_, peer))| format!("{name}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Self {
            dir,
            version,
            names,
            initial,
            urls,
            members: Vec::new(),
        })
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(&self.names[i])
    }

    pub fn spawn(&self, i: usize) -> anyhow::Result<Child> {
        let bin = EtcdBinaries::from_env().resolve(self.version)?;
        let (client, peer) = &self.urls[i];
        Ok(Command::new(bin)
            .args([
                format!("--name={}", self.names[i]),
                format!("--data-dir={}", self.data_dir(i).display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster={}", self.initial),
                "--initial-cluster-state=new".into(),
                "--log-level=error".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    /// Floor of a restart on data: SIGKILL members `victims`, start them again on their
    /// data dirs, until every member is healthy.
    pub async fn kill_and_restart(&mut self, victims: &[usize]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        for &i in victims {
            if let Some(mut child) = self.members[i].take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for &i in victims {
            self.members[i] = Some(self.spawn(i)?);
        }
        for (client, _) in &self.urls {
            wait_healthy(client, RESTART_WITHIN).await?;
        }
        Ok(started.elapsed())
    }

    /// Floor of a rolling upgrade: each member in turn (the leader last) stopped and started
    /// on `version` on its data until every member is healthy, with one move of the
    /// leadership before the leader's turn.
    pub async fn upgrade_to(
        &mut self,
        version: etcd_operator::EtcdVersion,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut order: Vec<usize> = Vec::new();
        let leader = self.leader().await?;
        order.extend((0..self.names.len()).filter(|&i| i != leader));
        self.version = version;
        for &i in &order {
            self.restart(i).await?;
        }
        // Hand the leadership to an upgraded member, then restart the old leader.
        let mut c = connect(&self.urls[leader].0).await?;
        let to = c
            .member_list()
            .await?
            .members()
            .iter()
            .find(|m| m.name() == self.names[order[0]])
            .map(|m| m.id())
            .context("the upgraded member's id")?;
        c.move_leader(to).await?;
        self.restart(leader).await?;
        Ok(started.elapsed())
    }

    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.members[i].take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        self.members[i] = Some(self.spawn(i)?);
        for (client, _) in &self.urls {
            wait_healthy(client, RESTART_WITHIN).await?;
        }
        Ok(())
    }

    pub async fn leader(&self) -> anyhow::Result<usize> {
        let mut c = connect(&self.urls[0].0).await?;
        let leader = c.status().await?.leader();
        let list = c.member_list().await?;
        let name = list
            .members()
            .iter()
            .find(|m| m.id() == leader)
            .map(|m| m.name().to_string())
            .context("the leader in the member list")?;
        self.names
            .iter()
            .position(|n| *n == name)
            .context("the leader's index")
    }
}

/// Floor of creation: `n` bare etcd started together as one static cluster
/// (`--initial-cluster` of all, `--initial-cluster-state=new`) until all are healthy.
pub async fn floor_static(n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let c = BareCluster::start(n).await?;
    let elapsed = started.elapsed();
    drop(c);
    Ok(elapsed)
}

/// Floor of growth: a bare static 3-member cluster grown to 5 by learners as fast as etcd
/// accepts them (MemberAdd retried while etcd's strict reconfiguration check refuses it,
/// start, promote retried until in sync), per added member.
pub async fn floor_grow() -> anyhow::Result<Duration> {
    let c = BareCluster::start(3).await?;
    let bin = EtcdBinaries::from_env().resolve(DEFAULT_VERSION)?;
    let mut client = connect(&c.urls[0].0).await?;
    let mut joined: Vec<BareEtcd> = Vec::new();
    let mut initial = c.initial.clone();
    let started = Instant::now();
    for i in 3..5 {
        let name = format!("m{i}");
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let id = add_learner(&mut client, &peer_url, Duration::from_secs(60)).await?;
        initial = format!("{initial},{name}={peer_url}");
        let child = Command::new(&bin)
            .args([
                format!("--name={name}"),
                format!("--data-dir={}", c.dir.path().join(&name).display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={initial}"),
                "--initial-cluster-state=existing".into(),
                "--log-level=error".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        joined.push(BareEtcd {
            child,
            client_url: client_url.clone(),
            peer_url,
        });
        promote(&mut client, id, Duration::from_secs(90)).await?;
        wait_healthy(&client_url, Duration::from_secs(30)).await?;
    }
    let elapsed = started.elapsed();
    drop(joined);
    drop(c);
    Ok(elapsed / 2)
}

/// Floor of a rolling upgrade of 3 members from `from` to `DEFAULT_VERSION`.
pub async fn floor_upgrade(from: etcd_operator::EtcdVersion) -> anyhow::Result<Duration> {
    let mut c = BareCluster::start_on(3, from).await?;
    c.upgrade_to(DEFAULT_VERSION).await
}

impl Drop for BareCluster {
    fn drop(&mut self) {
        for child in self.members.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
