//! `etcd-bench`: what the operator costs, next to what etcd itself needs.
//!
//! Every figure is measured in one run on this machine, beside its floor (a bare etcd's own
//! start-to-healthy and join time), so it reads as a ratio. Prints a Markdown table.
//!
//! ```sh
//! cargo build --release --bins && target/release/etcd-bench
//! ```

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use etcd_client::{Client, ConnectOptions, MemberAddOptions};
use etcd_operator::{
    etcd_bin::EtcdBinaries,
    proto::{ListClustersRequest, coordinator_client::CoordinatorClient},
    version::DEFAULT_VERSION,
};
use testkit::{
    free_port,
    local_cluster::{CoordinatorOptions, LocalCoordinator, manifest, write_atomically},
    traffic::Writer,
};

#[derive(Parser)]
#[command(
    name = "etcd-bench",
    about = "Benchmarks of the etcd operator against etcd's own floor"
)]
struct Cli {
    /// The `etcd-coordinator` binary (default: next to this one).
    #[arg(long)]
    coordinator: Option<PathBuf>,
    /// Repetitions of each timed measure (the median is shown).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Cluster counts for the coordinator memory measure.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    clusters: Vec<usize>,
    /// Skip the rolling upgrade (needs etcd 3.5.34: scripts/fetch-etcd.sh 3.5.34).
    #[arg(long)]
    skip_upgrade: bool,
    /// Only these sections: floors, create, scale, restart, replace, upgrade, backup,
    /// memory (default: all). The floors are always measured.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The database size for the backup and restore rows, MiB.
    #[arg(long, default_value_t = 100)]
    backup_mib: usize,
}

impl Cli {
    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

/// One row of the table.
struct Row {
    measure: String,
    value: String,
    floor: String,
    ratio: String,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn row(measure: &str, value: Duration, floor: Option<Duration>) -> Row {
    Row {
        measure: measure.into(),
        value: secs(value),
        floor: floor.map(secs).unwrap_or_else(|| "-".into()),
        ratio: floor
            .map(|f| format!("{:.1}x", value.as_secs_f64() / f.as_secs_f64()))
            .unwrap_or_else(|| "-".into()),
    }
}

/// A bare etcd process, killed on drop.
struct BareEtcd {
    child: Child,
    client_url: String,
    peer_url: String,
}

impl Drop for BareEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bare_etcd(
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

async fn connect(url: &str) -> anyhow::Result<Client> {
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
async fn wait_healthy(url: &str, within: Duration) -> anyhow::Result<()> {
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
async fn floor_start() -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let etcd = bare_etcd(dir.path(), "floor", "", "new")?;
    wait_healthy(&etcd.client_url, Duration::from_secs(30)).await?;
    Ok(started.elapsed())
}

/// Adds `peer_url` as a learner, asking again every 20 ms while etcd refuses (its strict
/// reconfiguration check), for at most `within`.
async fn add_learner(c: &mut Client, peer_url: &str, within: Duration) -> anyhow::Result<u64> {
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
async fn promote(c: &mut Client, id: u64, within: Duration) -> anyhow::Result<()> {
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
async fn floor_join() -> anyhow::Result<Duration> {
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
struct BareCluster {
    dir: tempfile::TempDir,
    version: etcd_operator::EtcdVersion,
    names: Vec<String>,
    initial: String,
    urls: Vec<(String, String)>,
    members: Vec<Option<Child>>,
}

impl BareCluster {
    async fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_on(n, DEFAULT_VERSION).await
    }

    /// A static cluster of `n` members of etcd `version`.
    async fn start_on(n: usize, version: etcd_operator::EtcdVersion) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
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
        let mut c = Self {
            dir,
            version,
            names,
            initial,
            urls,
            members: Vec::new(),
        };
        for i in 0..n {
            let child = c.spawn(i)?;
            c.members.push(Some(child));
        }
        for (client, _) in &c.urls {
            wait_healthy(client, Duration::from_secs(60)).await?;
        }
        Ok(c)
    }

    fn spawn(&self, i: usize) -> anyhow::Result<Child> {
        let bin = EtcdBinaries::from_env().resolve(self.version)?;
        let (client, peer) = &self.urls[i];
        Ok(Command::new(bin)
            .args([
                format!("--name={}", self.names[i]),
                format!(
                    "--data-dir={}",
                    self.dir.path().join(&self.names[i]).display()
                ),
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
    async fn kill_and_restart(&mut self, victims: &[usize]) -> anyhow::Result<Duration> {
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
            wait_healthy(client, Duration::from_secs(60)).await?;
        }
        Ok(started.elapsed())
    }

    /// Floor of a rolling upgrade: each member in turn (the leader last) stopped and started
    /// on `version` on its data until every member is healthy, with one move of the
    /// leadership before the leader's turn.
    async fn upgrade_to(
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

    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.members[i].take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        self.members[i] = Some(self.spawn(i)?);
        for (client, _) in &self.urls {
            wait_healthy(client, Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    async fn leader(&self) -> anyhow::Result<usize> {
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
async fn floor_static(n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let c = BareCluster::start(n).await?;
    let elapsed = started.elapsed();
    drop(c);
    Ok(elapsed)
}

/// Floor of growth: a bare static 3-member cluster grown to 5 by learners as fast as etcd
/// accepts them (MemberAdd retried while etcd's strict reconfiguration check refuses it,
/// start, promote retried until in sync), per added member.
async fn floor_grow() -> anyhow::Result<Duration> {
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
async fn floor_upgrade(from: etcd_operator::EtcdVersion) -> anyhow::Result<Duration> {
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

fn example_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/example-etcd-cluster.yaml")
}

/// Time from the coordinator's start to `size` healthy members.
async fn create(coordinator: &Path, size: i32) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("c.yaml");
    write_atomically(
        &path,
        &manifest("bench", size, &DEFAULT_VERSION.to_string()),
    )?;
    let started = Instant::now();
    let c = LocalCoordinator::start(CoordinatorOptions::new(coordinator, &path)).await?;
    c.wait_running(
        size as usize,
        &DEFAULT_VERSION.to_string(),
        Duration::from_secs(180),
    )
    .await?;
    Ok(started.elapsed())
}

/// Per added member when scaling 3 to 5.
async fn scale_up(coordinator: &Path) -> anyhow::Result<Duration> {
    let v = DEFAULT_VERSION.to_string();
    let c =
        LocalCoordinator::start(CoordinatorOptions::new(coordinator, example_manifest())).await?;
    c.wait_running(3, &v, Duration::from_secs(120)).await?;
    let started = Instant::now();
    c.set_spec(5, &v)?;
    c.wait_running(5, &v, Duration::from_secs(180)).await?;
    Ok(started.elapsed() / 2)
}

/// Kill -9 of `count` members' sidecars (followers first), data intact, to every member
/// healthy again on its data (same names).
async fn restart_on_data(coordinator: &Path, count: usize) -> anyhow::Result<Duration> {
    let v = DEFAULT_VERSION.to_string();
    let c =
        LocalCoordinator::start(CoordinatorOptions::new(coordinator, example_manifest())).await?;
    let status = c.wait_running(3, &v, Duration::from_secs(120)).await?;
    let mut members: Vec<(bool, String)> = status
        .members
        .iter()
        .map(|m| (m.leader, m.name.clone()))
        .collect();
    members.sort();
    let victims: Vec<String> = members.into_iter().take(count).map(|(_, n)| n).collect();
    let started = Instant::now();
    for victim in &victims {
        c.kill_member(victim)?;
    }
    c.wait_until("the killed members back", Duration::from_secs(120), |s| {
        testkit::local_cluster::is_running(s, 3, &v)
            && victims.iter().all(|n| {
                s.members
                    .iter()
                    .any(|m| &m.name == n && m.healthy && m.restarts >= 1)
            })
    })
    .await?;
    Ok(started.elapsed())
}

/// `etcd-coordinator delete-member` of a follower (its data goes with it) to a healthy
/// replacement under a new ordinal.
async fn replacement(coordinator: &Path) -> anyhow::Result<Duration> {
    let v = DEFAULT_VERSION.to_string();
    let c =
        LocalCoordinator::start(CoordinatorOptions::new(coordinator, example_manifest())).await?;
    let status = c.wait_running(3, &v, Duration::from_secs(120)).await?;
    let victim = status
        .members
        .iter()
        .find(|m| !m.leader)
        .map(|m| m.name.clone())
        .context("a follower")?;
    // etcd refuses a MemberAdd until every voter has been connected to the leader for 5 s
    // (its strict reconfiguration check), which a cluster Running for less than that has
    // not: measured on a cluster past it, as the floor's join is, and as a replacement in a
    // cluster that has run for a while is.
    tokio::time::sleep(SETTLED_AFTER).await;
    let started = Instant::now();
    let out = Command::new(coordinator)
        .arg("delete-member")
        .arg(c.cluster())
        .arg(&victim)
        .arg(format!("--state-dir={}", c.state_dir().display()))
        .arg(format!("--control-addr={}", c.control_addr()))
        .output()?;
    if !out.status.success() {
        bail!(
            "delete-member failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    c.wait_until("a replacement", Duration::from_secs(120), |s| {
        testkit::local_cluster::is_running(s, 3, &v) && s.members.iter().all(|m| m.name != victim)
    })
    .await?;
    Ok(started.elapsed())
}

/// How long a new cluster runs before a replacement is measured on it: etcd's 5 s window
/// of connected voters before it accepts a MemberAdd, and a little more.
const SETTLED_AFTER: Duration = Duration::from_millis(5_500);

/// Rolling upgrade 3.5.34 -> 3.6.15 of 3 members under a writer: duration, longest stall,
/// failed writes.
async fn upgrade(coordinator: &Path) -> anyhow::Result<(Duration, Duration, usize, usize)> {
    let c = LocalCoordinator::start(
        CoordinatorOptions::new(coordinator, example_manifest()).version("3.5.34"),
    )
    .await?;
    c.wait_running(3, "3.5.34", Duration::from_secs(120))
        .await?;
    let writer = Writer::start(c.live_endpoints());
    writer.wait_acked(50, Duration::from_secs(30)).await?;
    let started = Instant::now();
    c.set_spec(3, "3.6.15")?;
    c.wait_running(3, "3.6.15", Duration::from_secs(300))
        .await?;
    let elapsed = started.elapsed();
    let log = writer.stop().await;
    Ok((
        elapsed,
        log.longest_gap,
        log.failures.len(),
        log.acked.len(),
    ))
}

/// What the backup and restore rows measure, beside their floors.
struct BackupFigures {
    db_bytes: u64,
    ours_backup: Duration,
    floor_save: Duration,
    ours_restore: Duration,
    floor_restore: Duration,
}

/// Fills a 3-member cluster with about `mib` MiB, then: `etcd-coordinator backup` (stream,
/// check, store, prove restorable) beside `etcdctl snapshot save` of the same database; a
/// new 3-member cluster restored from it to Running beside `etcdutl snapshot restore` plus
/// a bare etcd start on the restored data.
async fn backup_restore(coordinator: &Path, mib: usize) -> anyhow::Result<BackupFigures> {
    let v = DEFAULT_VERSION.to_string();
    let c =
        LocalCoordinator::start(CoordinatorOptions::new(coordinator, example_manifest())).await?;
    let status = c.wait_running(3, &v, Duration::from_secs(120)).await?;
    let endpoints: Vec<String> = status.endpoints.split(',').map(str::to_string).collect();
    // 64 KiB values, four writers.
    let value = vec![b'x'; 64 * 1024];
    let keys = mib * 16;
    let mut writers = Vec::new();
    for w in 0..4 {
        let endpoints = endpoints.clone();
        let value = value.clone();
        writers.push(tokio::spawn(async move {
            let mut client = Client::connect(&endpoints, None).await?;
            for k in (w..keys).step_by(4) {
                client
                    .put(format!("bench/{k:06}"), value.clone(), None)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let dir = tempfile::tempdir()?;
    let snap = dir.path().join("floor.db");
    let started = Instant::now();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints[0]))
        .args(["snapshot", "save"])
        .arg(&snap)
        .output()
        .context("etcdctl (scripts/setup.sh installs Debian's etcd-client)")?;
    let floor_save = started.elapsed();
    if !out.status.success() {
        bail!(
            "etcdctl snapshot save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let db_bytes = std::fs::metadata(&snap)?.len();

    let started = Instant::now();
    let out = Command::new(coordinator)
        .arg("backup")
        .arg(c.cluster())
        .arg(format!("--state-dir={}", c.state_dir().display()))
        .arg(format!("--control-addr={}", c.control_addr()))
        .output()?;
    let ours_backup = started.elapsed();
    if !out.status.success() {
        bail!(
            "etcd-coordinator backup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let name = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .context("the backup's name")?
        .to_string();

    // Floor: etcdutl restore, then a bare start on the restored data.
    let etcd = EtcdBinaries::from_env().resolve(DEFAULT_VERSION)?;
    let etcdutl = EtcdBinaries::from_env()
        .etcdutl(&etcd)
        .context("an official etcdutl (scripts/setup.sh caches it)")?;
    let peer = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = Command::new(&etcdutl)
        .args(["snapshot", "restore"])
        .arg(&snap)
        .arg(format!("--data-dir={}", dir.path().join("floor").display()))
        .args(["--name=floor", &format!("--initial-cluster=floor={peer}")])
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .output()?;
    if !out.status.success() {
        bail!(
            "etcdutl snapshot restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bare = bare_etcd(dir.path(), "floor", "", "new")?;
    wait_healthy(&bare.client_url, Duration::from_secs(60)).await?;
    let floor_restore = started.elapsed();
    drop(bare);

    let started = Instant::now();
    c.write_manifest(&format!(
        "{}---\n{}  restore:\n    backup: \"{name}\"\n    cluster: {}\n",
        manifest(c.cluster(), 3, &v),
        manifest("restored", 3, &v),
        c.cluster()
    ))?;
    let channel = c.channel();
    testkit::wait_for(
        "the restored cluster running",
        Duration::from_secs(300),
        || {
            let channel = channel.clone();
            let v = v.clone();
            async move {
                testkit::local_cluster::fetch_status(channel, "restored")
                    .await
                    .filter(|s| testkit::local_cluster::is_running(s, 3, &v))
            }
        },
    )
    .await?;
    let ours_restore = started.elapsed();
    Ok(BackupFigures {
        db_bytes,
        ours_backup,
        floor_save,
        ours_restore,
        floor_restore,
    })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `field` of `/proc/<pid>/smaps_rollup` (`Anonymous`, `Rss`, ...), in KiB.
fn smaps_kib(pid: u32, field: &str) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A process's resident memory split as (anonymous: its own heap and stacks, file: pages
/// of its binary and libraries, shared with every process that maps them).
fn rss_split_kib(pid: u32) -> Option<(u64, u64)> {
    let rss = smaps_kib(pid, "Rss")?;
    let anon = smaps_kib(pid, "Anonymous")?;
    Some((anon, rss.saturating_sub(anon)))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The coordinator's reconcile duration histogram, as scraped from `/metrics`: the
/// cumulative bucket counts (upper bound, count), the sum and the count.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// What was observed between `earlier` and this one.
    fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0, |(_, n)| *n);
                    (*le, n.saturating_sub(before))
                })
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The smallest bucket bound that holds at least `q` of the observations.
    fn quantile_bound(&self, q: f64) -> f64 {
        let want = (self.count as f64 * q).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= want)
            .map_or(f64::INFINITY, |(le, _)| *le)
    }

    fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Scrapes `etcd_operator_reconcile_duration_seconds` from the coordinator's `/metrics`.
fn reconcile_histogram(addr: &str) -> anyhow::Result<Histogram> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    conn.read_to_string(&mut body)?;
    let mut h = Histogram::default();
    let name = "etcd_operator_reconcile_duration_seconds";
    for line in body.lines() {
        let Some((metric, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if let Some(le) = metric
            .strip_prefix(&format!("{name}_bucket{{le=\""))
            .and_then(|r| r.strip_suffix("\"}"))
        {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            h.buckets.push((le, value.parse()?));
        } else if metric == format!("{name}_sum") {
            h.sum = value.parse()?;
        } else if metric == format!("{name}_count") {
            h.count = value.parse()?;
        }
    }
    if h.buckets.is_empty() {
        bail!("{name} not found at http://{addr}/metrics");
    }
    Ok(h)
}

/// What a fleet of one-member clusters costs.
struct Fleet {
    coordinator_rss: u64,
    coordinator_split: Option<(u64, u64)>,
    sidecar_rss: u64,
    sidecar_split: Option<(u64, u64)>,
    etcd_rss: u64,
    /// The file name of the sidecar's binary.
    sidecar_binary: String,
    /// The reconciles of a 10 s window of the steady fleet.
    reconciles: Histogram,
}

/// Resident memory of the coordinator managing `n` one-member clusters, and of one sidecar
/// and one etcd there (the binary local mode runs, named); the reconciles of its steady
/// state.
async fn memory(coordinator: &Path, n: usize) -> anyhow::Result<Fleet> {
    let dir = tempfile::tempdir()?;
    let manifests = dir.path().join("clusters");
    std::fs::create_dir_all(&manifests)?;
    let v = DEFAULT_VERSION.to_string();
    for i in 0..n {
        write_atomically(
            &manifests.join(format!("c{i:02}.yaml")),
            &manifest(&format!("c{i:02}"), 1, &v),
        )?;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let state = dir.path().join("state");
    let mut child = Command::new(coordinator)
        .args([
            "local".to_string(),
            manifests.display().to_string(),
            format!("--state-dir={}", state.display()),
            format!("--grpc-addr={addr}"),
            format!("--control-addr=127.0.0.1:{}", free_port()),
            format!("--metrics-addr={metrics_addr}"),
            "--quiet".into(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("coordinator.log"))?)
        .spawn()?;
    let pid = child.id();
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(60 + 12 * n as u64);
        let mut behind = String::from("no answer from the coordinator");
        loop {
            if let Ok(mut client) = CoordinatorClient::connect(format!("http://{addr}")).await
                && let Ok(list) = client.list_clusters(ListClustersRequest::default()).await
            {
                let list = list.into_inner().clusters;
                let not_running: Vec<String> = list
                    .iter()
                    .filter(|c| {
                        c.phase() != etcd_operator::proto::ClusterPhase::Running || c.ready != 1
                    })
                    .map(|c| format!("{} {:?} {}/{}", c.name, c.phase(), c.ready, c.size))
                    .collect();
                if list.len() == n && not_running.is_empty() {
                    break;
                }
                behind = format!(
                    "{} listed, not Running: {}",
                    list.len(),
                    not_running
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "the coordinator's last log lines:\n{}",
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
                bail!("{n} clusters did not all become Running ({behind})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Let the steady state settle (reports flowing, resyncs), then measure the
        // reconciles of a 10 s window of it.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = reconcile_histogram(&metrics_addr)?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = reconcile_histogram(&metrics_addr)?;
        let window = after.since(&before);
        let coordinator_rss = rss_kib(pid).context("coordinator RSS")?;
        let coordinator_split = rss_split_kib(pid);
        let members = testkit::local_cluster::read_members(&state.join("c00").join("cluster.json"));
        let sidecar = members
            .first()
            .and_then(|m| m.pid)
            .context("a sidecar pid")?;
        let sidecar_rss = rss_kib(sidecar).context("sidecar RSS")?;
        let sidecar_split = rss_split_kib(sidecar);
        let sidecar_binary = std::fs::read_link(format!("/proc/{sidecar}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .context("the sidecar's binary")?;
        let etcd_pid = testkit::process::etcd_pid(sidecar)?;
        let etcd_rss = rss_kib(etcd_pid).context("etcd RSS")?;
        Ok(Fleet {
            coordinator_rss,
            coordinator_split,
            sidecar_rss,
            sidecar_split,
            etcd_rss,
            sidecar_binary,
            reconciles: window,
        })
    }
    .await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    result
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let coordinator = match cli.coordinator.clone() {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("this binary's directory")?
            .join("etcd-coordinator"),
    };
    if !coordinator.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release --bins)",
            coordinator.display()
        );
    }
    let runs = cli.runs.max(1);
    let _serial = testkit::serial_guard();
    // Rows are printed as they are measured, so a measure that fails costs only its row.
    println!("| measure | value | floor | ratio |");
    println!("|---|---|---|---|");
    let mut rows = Rows;

    let mut starts = Vec::new();
    let mut joins = Vec::new();
    for _ in 0..runs {
        starts.push(floor_start().await?);
        joins.push(floor_join().await?);
    }
    let floor_start = median(starts);
    let floor_join = median(joins);
    rows.push(row(
        "floor: bare etcd start to healthy (1 member)",
        floor_start,
        None,
    ));
    rows.push(row(
        "floor: bare etcd learner join + promote",
        floor_join,
        None,
    ));
    eprintln!("floors done");

    for size in [1, 3, 5].into_iter().filter(|_| cli.wants("create")) {
        let mut v = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..runs {
            floors.push(if size == 1 {
                floor_start
            } else {
                floor_static(size as usize).await?
            });
            v.push(create(&coordinator, size).await?);
        }
        let floor = median(floors);
        rows.push(row(
            &format!("create {size} member(s): coordinator start to Running"),
            median(v),
            Some(floor),
        ));
        eprintln!("create {size} done");
    }

    if cli.wants("scale") {
        let mut v = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..runs {
            floors.push(floor_grow().await?);
            v.push(scale_up(&coordinator).await?);
        }
        rows.push(row(
            "per added member (3 to 5)",
            median(v),
            Some(median(floors)),
        ));
        eprintln!("scale done");
    }

    for (count, what) in [
        (1, "kill -9 of one member, healthy again on its data"),
        (
            2,
            "kill -9 of two of three (quorum lost), 3 ready again on their data",
        ),
    ]
    .into_iter()
    .filter(|_| cli.wants("restart"))
    {
        let mut ours = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..runs {
            let mut bare = BareCluster::start(3).await?;
            let victims: Vec<usize> = (1..=count).collect();
            floors.push(bare.kill_and_restart(&victims).await?);
            drop(bare);
            ours.push(restart_on_data(&coordinator, count).await?);
        }
        rows.push(row(what, median(ours), Some(median(floors))));
        eprintln!("restart {count} done");
    }

    if cli.wants("replace") {
        let mut v = Vec::new();
        for _ in 0..runs {
            v.push(replacement(&coordinator).await?);
        }
        rows.push(row(
            "member deleted with its data (delete-member), replacement healthy",
            median(v),
            Some(floor_join),
        ));
        eprintln!("replacement done");
    }

    if cli.wants("backup") {
        let f = backup_restore(&coordinator, cli.backup_mib).await?;
        let mb = f.db_bytes as f64 / 1e6;
        let rate = |d: Duration| format!("{:.1} MB/s", mb / d.as_secs_f64());
        rows.push(Row {
            measure: format!(
                "backup of a {mb:.0} MB database (stream, SHA-256 check, store, restore-verify)"
            ),
            value: format!("{} ({})", secs(f.ours_backup), rate(f.ours_backup)),
            floor: format!(
                "etcdctl snapshot save {} ({})",
                secs(f.floor_save),
                rate(f.floor_save)
            ),
            ratio: format!(
                "{:.1}x",
                f.ours_backup.as_secs_f64() / f.floor_save.as_secs_f64()
            ),
        });
        rows.push(Row {
            measure: "restore of it into a new cluster, 3 members Running".to_string(),
            value: secs(f.ours_restore),
            floor: format!(
                "etcdutl snapshot restore + bare start {}",
                secs(f.floor_restore)
            ),
            ratio: format!(
                "{:.1}x",
                f.ours_restore.as_secs_f64() / f.floor_restore.as_secs_f64()
            ),
        });
        eprintln!("backup done");
    }

    if !cli.skip_upgrade && cli.wants("upgrade") {
        let floor = floor_upgrade("3.5.34".parse()?).await?;
        let (d, stall, failed, acked) = upgrade(&coordinator).await?;
        rows.push(row(
            "rolling upgrade 3.5.34 to 3.6.15, 3 members",
            d,
            Some(floor),
        ));
        rows.push(row("  longest write stall during it", stall, None));
        rows.push(Row {
            measure: "  writes failed / acknowledged during it".into(),
            value: format!("{failed} / {acked}"),
            floor: "-".into(),
            ratio: "-".into(),
        });
        eprintln!("upgrade done");
    }

    let mut sidecar = 0;
    let mut sidecar_split = None;
    let mut etcd = 0;
    let mut sidecar_binary = String::new();
    for n in cli.clusters.iter().filter(|_| cli.wants("memory")) {
        let mut split = None;
        let (value, floor, reconciles) = match memory(&coordinator, *n).await {
            Ok(f) => {
                sidecar = f.sidecar_rss;
                sidecar_split = f.sidecar_split;
                etcd = f.etcd_rss;
                sidecar_binary = f.sidecar_binary;
                split = f.coordinator_split;
                (mib(f.coordinator_rss), "-".to_string(), Some(f.reconciles))
            }
            Err(e) => ("-".to_string(), format!("failed: {e}"), None),
        };
        rows.push(Row {
            measure: format!("coordinator RSS, {n} local cluster(s) of 1 member"),
            value,
            floor,
            ratio: "-".into(),
        });
        if let Some(split) = split {
            rows.push(split_row(split));
        }
        if let Some(h) = reconciles {
            rows.push(Row {
                measure: format!(
                    "  reconcile, steady {n} cluster(s): mean / 99% under / per second"
                ),
                value: format!(
                    "{:.1} ms / {} ms / {:.1}",
                    h.mean() * 1e3,
                    h.quantile_bound(0.99) * 1e3,
                    h.count as f64 / 10.0
                ),
                floor: "-".into(),
                ratio: "-".into(),
            });
        }
        eprintln!("memory {n} done");
    }
    if !cli.wants("memory") {
        return Ok(());
    }
    // Local mode runs `etcd-sidecar` when it is built beside the coordinator, else the
    // sidecar embedded in `etcd-coordinator`, which the value then says.
    let embedded = match sidecar_binary.as_str() {
        "etcd-sidecar" | "" => String::new(),
        other => format!(" ({other} sidecar run)"),
    };
    rows.push(Row {
        measure: "sidecar RSS (one member)".into(),
        value: format!("{}{embedded}", mib(sidecar)),
        floor: format!("etcd {}", mib(etcd)),
        ratio: format!("{:.2}x", sidecar as f64 / etcd.max(1) as f64),
    });
    if let Some(split) = sidecar_split {
        rows.push(split_row(split));
    }

    Ok(())
}

/// The row under an RSS row: how much of it is the process's own, and how much the pages
/// of binaries it shares.
fn split_row((anon, file): (u64, u64)) -> Row {
    Row {
        measure: "  of it: anonymous (its own) / file pages (binaries, shared)".into(),
        value: format!("{} / {}", mib(anon), mib(file)),
        floor: "-".into(),
        ratio: "-".into(),
    }
}

/// Prints each row as it is pushed.
struct Rows;

impl Rows {
    fn push(&mut self, r: Row) {
        println!(
            "| {} | {} | {} | {} |",
            r.measure, r.value, r.floor, r.ratio
        );
    }
}
