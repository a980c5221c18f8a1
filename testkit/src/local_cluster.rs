//! End-to-end harness for the coordinator's local mode: the real `etcd-coordinator local`
//! binary as a child process over a manifest in a temporary directory, client traffic that
//! records every acknowledged write, and a monitor that samples etcd's member list and the
//! coordinator's status while a test runs.
//!
//! Everything a test starts is killed when its guard drops, also when the test fails: the
//! coordinator is started in its own process group, its sidecars inherit that group, and
//! each sidecar's etcd dies with its sidecar (PDEATHSIG). A coordinator started again after
//! a crash gets a new group; every group ever used is killed on drop.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::File,
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use etcd_client::{Client, GetOptions};
use etcd_operator::proto::{
    ClusterStatus, GetClusterRequest, coordinator_client::CoordinatorClient,
};
use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use serde::Deserialize;
use tokio::{task::JoinHandle, time::Instant};
use tonic::transport::{Channel, Endpoint};

use crate::{
    free_port,
    watcher::{MembershipHistory, MembershipWatcher},
};

/// How long one status call may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one write may take, all endpoints tried included.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Set to keep a test's directory (manifest, state, logs) even when the test passes.
pub const KEEP_ENV: &str = "ETCDOP_TEST_KEEP";

/// The key prefix the writer uses.
pub const WRITE_PREFIX: &str = "w/";

/// One member as the local runtime records it in `<state>/<cluster>/cluster.json`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct MemberRecord {
    /// `<cluster>-<NNNN>`.
    pub name: String,
    /// The `NNNN`.
    pub ordinal: u32,
    /// etcd client port.
    pub client_port: u16,
    /// etcd peer port.
    pub peer_port: u16,
    /// The sidecar's gRPC port.
    pub grpc_port: u16,
    /// The etcd version the member runs with.
    pub version: String,
    /// Created as the seed.
    pub seed: bool,
    /// The sidecar's process id, once started.
    pub pid: Option<u32>,
    /// etcd serves clients and peers over TLS.
    #[serde(default)]
    pub tls: bool,
}

impl MemberRecord {
    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// The member's etcd client URL.
    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    /// The member's etcd peer URL.
    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.peer_port)
    }

    /// The sidecar's URL (mutual TLS).
    pub fn sidecar_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    /// True when the recorded sidecar process runs (exists and is not a zombie).
    pub fn is_running(&self) -> bool {
        self.pid.is_some_and(pid_alive)
    }
}

#[derive(Deserialize)]
struct ClusterRecord {
    #[serde(default)]
    members: Vec<MemberRecord>,
}

/// True when `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    !stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
}

/// Reads the members recorded in `cluster_json` (empty when the file is missing).
pub fn read_members(cluster_json: &Path) -> Vec<MemberRecord> {
    std::fs::read(cluster_json)
        .ok()
        .and_then(|b| serde_json::from_slice::<ClusterRecord>(&b).ok())
        .map(|r| r.members)
        .unwrap_or_default()
}

/// The last `n` lines of the file at `path`.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, then a
/// rename, so a reader never sees half a file.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// An `EtcdCluster` manifest for local mode.
pub fn manifest(name: &str, size: i32, version: &str) -> String {
    manifest_with_tls(name, size, version, false)
}

/// An `EtcdCluster` manifest for local mode, with `spec.tls.enabled` when `tls`.
pub fn manifest_with_tls(name: &str, size: i32, version: &str, tls: bool) -> String {
    let mut text = format!(
        "apiVersion: \"etcd.operator.rs/v1alpha1\"\nkind: \"EtcdCluster\"\nmetadata:\n  name: \"{name}\"\nspec:\n  size: {size}\n  version: \"{version}\"\n"
    );
    if tls {
        text.push_str("  tls:\n    enabled: true\n");
    }
    text
}

/// How to start a local coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorOptions {
    /// The `etcd-coordinator` binary.
    pub binary: PathBuf,
    /// A manifest to start from; copied into the test's directory, which the test edits.
    pub manifest: PathBuf,
    /// `--dead-after-secs`, when not the default.
    pub dead_after_secs: Option<u64>,
    /// The etcd version to start with instead of the manifest's.
    pub version: Option<String>,
    /// Turn `spec.tls.enabled` on.
    pub tls: bool,
    /// More flags of `etcd-coordinator local`.
    pub extra_args: Vec<String>,
    /// Environment of the coordinator (and so of its sidecars).
    pub env: Vec<(String, String)>,
}

impl CoordinatorOptions {
    /// The coordinator `binary` over a copy of `manifest`.
    pub fn new(binary: impl Into<PathBuf>, manifest: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            manifest: manifest.into(),
            dead_after_secs: None,
            version: None,
            tls: false,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Sets an environment variable of the coordinator and its sidecars.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Turns `spec.tls.enabled` on.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Adds a flag of `etcd-coordinator local`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Starts the cluster on `version` instead of the manifest's.
    pub fn version(mut self, version: &str) -> Self {
        self.version = Some(version.to_string());
        self
    }

    /// Members down this long are replaced.
    pub fn dead_after_secs(mut self, secs: u64) -> Self {
        self.dead_after_secs = Some(secs);
        self
    }
}

/// `etcd-coordinator local` running as a child process; everything it started is killed
/// when this guard drops.
pub struct LocalCoordinator {
    binary: PathBuf,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    manifest: PathBuf,
    state_dir: PathBuf,
    addr: SocketAddr,
    control_addr: SocketAddr,
    cluster: String,
    tls: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    groups: Vec<i32>,
    starts: u32,
    channel: Channel,
}

impl LocalCoordinator {
    /// Copies the manifest into a fresh temporary directory and starts the coordinator on a
    /// free port; returns once its gRPC server answers.
    pub async fn start(opts: CoordinatorOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("etcdop-local-")
            .tempdir()
            .context("creating the test directory")?;
        let root = dir.path().to_path_buf();
        let text = std::fs::read_to_string(&opts.manifest)
            .with_context(|| format!("reading {}", opts.manifest.display()))?;
        let manifest_path = root.join("cluster.yaml");
        let clusters = etcd_operator::manifest::parse_manifests(&manifest_path, &text)?;
        let [cluster] = clusters.as_slice() else {
            bail!(
                "{} declares {} clusters; the harness runs one",
                opts.manifest.display(),
                clusters.len()
            );
        };
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let tls = opts.tls || cluster.spec.etcd_tls();
        let version = opts
            .version
            .clone()
            .unwrap_or_else(|| cluster.spec.version.clone());
        if opts.version.is_some() || tls != cluster.spec.etcd_tls() {
            write_atomically(
                &manifest_path,
                &manifest_with_tls(&name, cluster.spec.size, &version, tls),
            )?
        } else {
            write_atomically(&manifest_path, &text)?
        }
        let cluster = name;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let control_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut args = vec![
            "local".to_string(),
            manifest_path.display().to_string(),
            format!("--state-dir={}", root.join("state").display()),
            format!("--grpc-addr={addr}"),
            format!("--control-addr={control_addr}"),
        ];
        if let Some(secs) = opts.dead_after_secs {
            args.push(format!("--dead-after-secs={secs}"));
        }
        args.extend(opts.extra_args.iter().cloned());
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(STATUS_TIMEOUT)
            .connect_lazy();
        let mut coordinator = Self {
            binary: opts.binary,
            dir: Some(dir),
            state_dir: root.join("state"),
            root,
            manifest: manifest_path,
            addr,
            control_addr,
            cluster,
            tls,
            args,
            env: opts.env,
            child: None,
            groups: Vec::new(),
            starts: 0,
            channel,
        };
        coordinator.restart().await?;
        Ok(coordinator)
    }

    /// Starts the coordinator (again) on the same manifest, state directory and address;
    /// returns once its gRPC server answers. The previous process must be gone.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the coordinator still runs: crash() or terminate() it first");
        }
        self.starts += 1;
        let marker = format!("=== harness: coordinator start {} ===\n", self.starts);
        let mut streams = Vec::new();
        for path in [self.stdout_path(), self.stderr_path()] {
            let mut f = File::options().create(true).append(true).open(&path)?;
            std::io::Write::write_all(&mut f, marker.as_bytes())?;
            streams.push(f);
        }
        let stderr = streams.pop().expect("two streams");
        let stdout = streams.pop().expect("two streams");
        let child = Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own group, inherited by its sidecars: one killpg ends them all.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.groups.push(child.id() as i32);
        self.child = Some(child);
        let addr = self.addr;
        let answered = crate::wait_for(
            &format!("the coordinator's gRPC server on {addr}"),
            Duration::from_secs(30),
            || async { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await;
        if let Err(e) = answered {
            bail!("{e}\n{}", self.logs(40));
        }
        Ok(())
    }

    /// SIGKILLs the coordinator alone (a crash); its sidecars keep running.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the coordinator (a clean stop: it stops its members) and waits for it to
    /// exit; returns its exit status.
    pub async fn terminate(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the coordinator is not running");
        };
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the coordinator did not exit within {within:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The coordinator's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The cluster the manifest declares.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `<cluster>-<NNNN>`.
    pub fn member_name(&self, ordinal: u32) -> String {
        etcd_operator::naming::member_name(&self.cluster, ordinal)
    }

    /// The status address (plaintext, read-only).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The control address (mutual TLS).
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// `<state>/pki`: the control path's CA and every member's certificates.
    pub fn pki_dir(&self) -> PathBuf {
        self.state_dir.join("pki")
    }

    /// The applications' client bundle (`ca.crt`, `tls.crt`, `tls.key`) of a TLS cluster.
    pub fn client_bundle(&self) -> PathBuf {
        self.state_dir.join(&self.cluster).join("client")
    }

    /// etcd client TLS with the applications' bundle, when the cluster uses TLS and the
    /// bundle is there.
    pub fn etcd_tls(&self) -> Option<etcd_client::TlsOptions> {
        if !self.tls {
            return None;
        }
        tls_options(&self.client_bundle()).ok()
    }

    /// `--cacert --cert --key` for etcdctl, with the applications' bundle.
    pub fn etcdctl_tls_args(&self) -> Vec<String> {
        let dir = self.client_bundle();
        vec![
            format!("--cacert={}", dir.join("ca.crt").display()),
            format!("--cert={}", dir.join("tls.crt").display()),
            format!("--key={}", dir.join("tls.key").display()),
        ]
    }

    /// The manifest file the coordinator reads.
    pub fn manifest_path(&self) -> &Path {
        &self.manifest
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A channel to the coordinator's gRPC server (reconnects after a restart).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Rewrites the manifest with `size` and `version` (atomically, as an editor would);
    /// `spec.tls` stays as it was.
    pub fn set_spec(&self, size: i32, version: &str) -> std::io::Result<()> {
        write_atomically(
            &self.manifest,
            &manifest_with_tls(&self.cluster, size, version, self.tls),
        )
    }

    /// Replaces the manifest with `text` (atomically), malformed or not.
    pub fn write_manifest(&self, text: &str) -> std::io::Result<()> {
        write_atomically(&self.manifest, text)
    }

    /// The cluster's status as the coordinator serves it; None when it does not answer.
    pub async fn status(&self) -> Option<ClusterStatus> {
        fetch_status(self.channel.clone(), &self.cluster).await
    }

    /// Waits until the status satisfies `ready`; on timeout the error says what was awaited
    /// and shows the last status and the logs.
    pub async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        mut ready: impl FnMut(&ClusterStatus) -> bool,
    ) -> anyhow::Result<ClusterStatus> {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            if let Some(status) = self.status().await {
                if ready(&status) {
                    return Ok(status);
                }
                last = Some(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {within:?} waiting for {what}\nlast status: {}\n{}",
                    last.as_ref().map(describe).unwrap_or_else(|| "none".into()),
                    self.logs(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the cluster runs `size` healthy voters at `version`, nothing in flight.
    pub async fn wait_running(
        &self,
        size: usize,
        version: &str,
        within: Duration,
    ) -> anyhow::Result<ClusterStatus> {
        self.wait_until(
            &format!("phase Running with {size} healthy voters on {version}"),
            within,
            |s| is_running(s, size, version),
        )
        .await
    }

    /// `<state>/<cluster>/cluster.json`.
    pub fn cluster_json(&self) -> PathBuf {
        self.state_dir.join(&self.cluster).join("cluster.json")
    }

    /// The members the local runtime records.
    pub fn members(&self) -> Vec<MemberRecord> {
        read_members(&self.cluster_json())
    }

    /// One recorded member.
    pub fn member(&self, name: &str) -> Option<MemberRecord> {
        self.members().into_iter().find(|m| m.name == name)
    }

    /// A function returning the client URLs of recorded members whose sidecar runs (read
    /// from `cluster.json` at each call), for traffic and monitors.
    pub fn live_endpoints(&self) -> impl Fn() -> Vec<String> + Send + Sync + Clone + 'static {
        let path = self.cluster_json();
        move || {
            read_members(&path)
                .iter()
                .filter(|m| m.is_running())
                .map(MemberRecord::client_url)
                .collect()
        }
    }

    /// SIGKILLs member `name`'s sidecar (its etcd dies with it); returns the pid killed.
    pub fn kill_member(&self, name: &str) -> anyhow::Result<u32> {
        let record = self
            .member(name)
            .with_context(|| format!("no member {name} in {}", self.cluster_json().display()))?;
        let pid = record
            .pid
            .with_context(|| format!("member {name} has no pid recorded"))?;
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
            .with_context(|| format!("killing {name} (pid {pid})"))?;
        Ok(pid)
    }

    /// As [`Self::kill_member`], then waits until its sidecar is gone and its etcd no
    /// longer listens.
    pub async fn kill_member_and_wait(&self, name: &str) -> anyhow::Result<u32> {
        let record = self
            .member(name)
            .with_context(|| format!("no member {name} recorded"))?;
        let pid = self.kill_member(name)?;
        crate::wait_for(
            &format!("{name}'s sidecar to be gone"),
            Duration::from_secs(10),
            || async { (!pid_alive(pid)).then_some(()) },
        )
        .await?;
        let addr = record
            .client_url()
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        crate::wait_for(
            &format!("{name}'s etcd to stop listening"),
            Duration::from_secs(10),
            || {
                let addr = addr.clone();
                async move {
                    tokio::net::TcpStream::connect(addr)
                        .await
                        .is_err()
                        .then_some(())
                }
            },
        )
        .await?;
        Ok(pid)
    }

    /// The `etcd-coordinator` binary it runs.
    pub fn coordinator_bin(&self) -> &Path {
        &self.binary
    }

    /// Member `name`'s etcd data directory.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.state_dir()
            .join(self.cluster())
            .join(name)
            .join("etcd")
    }

    /// The coordinator's standard output so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    fn stdout_path(&self) -> PathBuf {
        self.root.join("coordinator.stdout.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.root.join("coordinator.stderr.log")
    }

    /// The last `n` lines of the coordinator's output and of every member's log.
    pub fn logs(&self, n: usize) -> String {
        let mut out = format!(
            "--- coordinator stdout ---\n{}\n--- coordinator stderr ---\n{}\n",
            tail(&self.stdout_path(), n),
            tail(&self.stderr_path(), n)
        );
        let dir = self.state_dir.join(&self.cluster);
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        for log in logs {
            out.push_str(&format!(
                "--- {} ---\n{}\n",
                log.file_name().unwrap_or_default().to_string_lossy(),
                tail(&log, n)
            ));
        }
        out
    }
}

impl Drop for LocalCoordinator {
    fn drop(&mut self) {
        for group in &self.groups {
            let _ = killpg(Pid::from_raw(*group), Signal::SIGKILL);
        }
        // Members adopted across a restart are in an earlier group; the record has them all.
        for m in self.members() {
            if let Some(pid) = m.pid.filter(|p| pid_alive(*p)) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        let keep = std::thread::panicking() || std::env::var_os(KEEP_ENV).is_some();
        if keep && let Some(mut dir) = self.dir.take() {
            dir.disable_cleanup(true);
            eprintln!(
                "the local coordinator's files are kept in {}",
                self.root.display()
            );
        }
    }
}

/// GetCluster over `channel`; None when the coordinator does not answer.
pub async fn fetch_status(channel: Channel, cluster: &str) -> Option<ClusterStatus> {
    let mut client = CoordinatorClient::new(channel);
    let call = client.get_cluster(GetClusterRequest {
        name: cluster.to_string(),
        namespace: String::new(),
    });
    match tokio::time::timeout(STATUS_TIMEOUT, call).await {
        Ok(Ok(response)) => Some(response.into_inner()),
        _ => None,
    }
}

/// True when the status shows phase Running, `size` healthy voters at `version`, no
/// learner and no change in flight.
pub fn is_running(s: &ClusterStatus, size: usize, version: &str) -> bool {
    s.phase == "Running"
        && s.ready as usize == size
        && s.members.len() == size
        && s.change_in_flight.is_empty()
        && s.members
            .iter()
            .all(|m| m.healthy && !m.learner && !m.id.is_empty() && m.version == version)
}

/// A status in one line, for failure messages.
pub fn describe(s: &ClusterStatus) -> String {
    let members: Vec<String> = s
        .members
        .iter()
        .map(|m| {
            format!(
                "{}[{} {} {}{}{}{}]",
                m.name,
                if m.id.is_empty() { "-" } else { &m.id },
                m.phase,
                m.version,
                if m.healthy { " healthy" } else { "" },
                if m.leader { " leader" } else { "" },
                if m.learner { " learner" } else { "" }
            )
        })
        .collect();
    let conditions: Vec<String> = s
        .conditions
        .iter()
        .map(|c| format!("{}={} ({}: {})", c.r#type, c.status, c.reason, c.message))
        .collect();
    format!(
        "phase {} ready {}/{} version {:?} in-flight {:?} members [{}] conditions [{}]",
        s.phase,
        s.ready,
        s.size,
        s.current_version,
        s.change_in_flight,
        members.join(" "),
        conditions.join("; ")
    )
}

/// The condition of `type_` in a status.
pub fn condition<'a>(
    s: &'a ClusterStatus,
    type_: &str,
) -> Option<&'a etcd_operator::proto::Condition> {
    s.conditions.iter().find(|c| c.r#type == type_)
}

/// Connects an etcd client to `endpoints` with short timeouts.
pub async fn etcd_client(endpoints: &[String]) -> anyhow::Result<Client> {
    etcd_client_tls(endpoints, None).await
}

/// Connects an etcd client to `endpoints` with short timeouts, over TLS when given.
pub async fn etcd_client_tls(
    endpoints: &[String],
    tls: Option<&etcd_client::TlsOptions>,
) -> anyhow::Result<Client> {
    Ok(Client::connect(endpoints, Some(connect_options(tls))).await?)
}

fn connect_options(tls: Option<&etcd_client::TlsOptions>) -> etcd_client::ConnectOptions {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3));
    match tls {
        Some(tls) => options.with_tls(tls.clone()),
        None => options,
    }
}

/// etcd client TLS from a bundle directory (`ca.crt`, `tls.crt`, `tls.key`).
pub fn tls_options(dir: &Path) -> anyhow::Result<etcd_client::TlsOptions> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).with_context(|| format!("{}/{name}", dir.display()))
    };
    Ok(etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read("ca.crt")?))
        .identity(etcd_client::Identity::from_pem(
            read("tls.crt")?,
            read("tls.key")?,
        )))
}

type Endpoints = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// What the writer did.
#[derive(Clone, Debug, Default)]
pub struct WriterLog {
    /// Keys whose put was acknowledged, in order.
    pub acked: Vec<String>,
    /// Writes that no endpoint acknowledged in time: when (since the writer started), the
    /// key and the last error.
    pub failures: Vec<(Duration, String, String)>,
    /// The longest time between two acknowledged writes.
    pub longest_gap: Duration,
    /// Acknowledged writes per endpoint.
    pub acked_by: BTreeMap<String, usize>,
}

/// Steady client traffic: a unique key `w/<n>` every ~20 ms, each put tried on the live
/// endpoints in turn within [`WRITE_TIMEOUT`]; records what was acknowledged.
pub struct Writer {
    log: Arc<Mutex<WriterLog>>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Starts writing to the endpoints `endpoints()` returns at each write.
    pub fn start(endpoints: impl Fn() -> Vec<String> + Send + Sync + 'static) -> Self {
        Self::start_tls(endpoints, None)
    }

    /// As [`Writer::start`], over TLS when `tls` is given.
    pub fn start_tls(
        endpoints: impl Fn() -> Vec<String> + Send + Sync + 'static,
        tls: Option<etcd_client::TlsOptions>,
    ) -> Self {
        let endpoints: Endpoints = Arc::new(endpoints);
        let log = Arc::new(Mutex::new(WriterLog::default()));
        let task = tokio::spawn(write_loop(endpoints, tls, Arc::clone(&log)));
        Self { log, task }
    }

    /// What was done so far.
    pub fn log(&self) -> WriterLog {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acked
            .len()
    }

    /// Waits until `more` writes beyond the current count are acknowledged.
    pub async fn wait_acked(&self, more: usize, within: Duration) -> anyhow::Result<()> {
        let target = self.acked() + more;
        crate::wait_for(
            &format!("{more} more acknowledged writes"),
            within,
            || async { (self.acked() >= target).then_some(()) },
        )
        .await
    }

    /// Stops writing (a write under way is abandoned and not counted) and returns the log.
    pub async fn stop(mut self) -> WriterLog {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.log()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn write_loop(
    endpoints: Endpoints,
    tls: Option<etcd_client::TlsOptions>,
    log: Arc<Mutex<WriterLog>>,
) {
    let started = Instant::now();
    let mut clients: HashMap<String, Client> = HashMap::new();
    // Endpoints whose last write succeeded are tried first; the others are probed now and
    // then, so a member that joins gets traffic too.
    let mut good: BTreeSet<String> = BTreeSet::new();
    let mut last_ack = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        ticker.tick().await;
        let key = format!("{WRITE_PREFIX}{n:08}");
        let value = format!("v{n}");
        let all = endpoints();
        let (mut preferred, mut others): (Vec<String>, Vec<String>) =
            all.into_iter().partition(|e| good.contains(e));
        rotate(&mut preferred, n as usize);
        rotate(&mut others, n as usize);
        let probe = n % 10 == 0 && !others.is_empty();
        let order: Vec<String> = if probe {
            others
                .iter()
                .take(1)
                .chain(&preferred)
                .chain(others.iter().skip(1))
                .cloned()
                .collect()
        } else {
            preferred.iter().chain(&others).cloned().collect()
        };
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut last_error = String::from("no live endpoint");
        let mut acked_on = None;
        for (i, endpoint) in order.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let left = deadline - now;
            // The last candidate gets whatever time is left; the others a share of it.
            let budget = if i + 1 == order.len() {
                left
            } else if good.contains(endpoint) {
                left.min(Duration::from_millis(1200))
            } else {
                left.min(Duration::from_millis(400))
            };
            let client = match clients.get(endpoint) {
                Some(c) => c.clone(),
                None => match Client::connect([endpoint.as_str()], tls_only(&tls)).await {
                    Ok(c) => {
                        clients.insert(endpoint.clone(), c.clone());
                        c
                    }
                    Err(e) => {
                        last_error = format!("{endpoint}: {e}");
                        continue;
                    }
                },
            };
            let mut kv = client.kv_client();
            match tokio::time::timeout(budget, kv.put(key.as_str(), value.as_str(), None)).await {
                Ok(Ok(_)) => {
                    acked_on = Some(endpoint.clone());
                    break;
                }
                Ok(Err(e)) => last_error = format!("{endpoint}: {e}"),
                Err(_) => last_error = format!("{endpoint}: no answer within {budget:?}"),
            }
            good.remove(endpoint);
        }
        let mut g = log.lock().unwrap_or_else(|e| e.into_inner());
        match acked_on {
            Some(endpoint) => {
                let now = Instant::now();
                g.longest_gap = g.longest_gap.max(now - last_ack);
                last_ack = now;
                g.acked.push(key);
                *g.acked_by.entry(endpoint.clone()).or_default() += 1;
                good.insert(endpoint);
            }
            None => g.failures.push((started.elapsed(), key, last_error)),
        }
    }
}

/// Connect options carrying only `tls` (none without it), as the plain clients here use.
fn tls_only(tls: &Option<etcd_client::TlsOptions>) -> Option<etcd_client::ConnectOptions> {
    tls.as_ref()
        .map(|t| etcd_client::ConnectOptions::new().with_tls(t.clone()))
}

fn rotate(list: &mut [String], by: usize) {
    if !list.is_empty() {
        let by = by % list.len();
        list.rotate_left(by);
    }
}

/// Checks that every acknowledged key is readable, with a linearizable prefix read, from
/// each of `endpoints` (so every member has them); returns how many keys each holds.
pub async fn verify_acked(endpoints: &[String], acked: &[String]) -> anyhow::Result<usize> {
    verify_acked_tls(endpoints, acked, None).await
}

/// As [`verify_acked`], over TLS when given.
pub async fn verify_acked_tls(
    endpoints: &[String],
    acked: &[String],
    tls: Option<&etcd_client::TlsOptions>,
) -> anyhow::Result<usize> {
    read_acked(endpoints, acked, tls, false)
        .await
        .map(|(held, _)| held)
}

/// How many of the `acked` writes are missing on the cluster at `endpoints` (read from
/// each, the most any of them misses): for a recovery that may lose writes and must say
/// how many.
pub async fn count_missing_acked(endpoints: &[String], acked: &[String]) -> anyhow::Result<usize> {
    read_acked(endpoints, acked, None, true)
        .await
        .map(|(_, missing)| missing)
}

async fn read_acked(
    endpoints: &[String],
    acked: &[String],
    tls: Option<&etcd_client::TlsOptions>,
    tolerate_missing: bool,
) -> anyhow::Result<(usize, usize)> {
    let mut most_missing = 0;
    if endpoints.is_empty() {
        bail!("no endpoint to verify the writes on");
    }
    let mut held = 0;
    for endpoint in endpoints {
        let keys = crate::wait_for(
            &format!("a linearizable read of {WRITE_PREFIX}* on {endpoint}"),
            Duration::from_secs(20),
            || async {
                let mut c = etcd_client_tls(std::slice::from_ref(endpoint), tls)
                    .await
                    .ok()?;
                let resp = tokio::time::timeout(
                    Duration::from_secs(5),
                    c.get(
                        WRITE_PREFIX,
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    ),
                )
                .await
                .ok()?
                .ok()?;
                Some(
                    resp.kvs()
                        .iter()
                        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                        .collect::<BTreeSet<String>>(),
                )
            },
        )
        .await?;
        let missing: Vec<&String> = acked.iter().filter(|k| !keys.contains(*k)).collect();
        if !missing.is_empty() && !tolerate_missing {
            bail!(
                "{} of {} acknowledged writes are missing on {endpoint}: {:?}{}",
                missing.len(),
                acked.len(),
                &missing[..missing.len().min(10)],
                if missing.len() > 10 { " ..." } else { "" }
            );
        }
        most_missing = most_missing.max(missing.len());
        held = keys.len();
    }
    Ok((held, most_missing))
}

/// What the monitor saw while a test ran.
#[derive(Clone, Debug, Default)]
pub struct MonitorLog {
    /// Status samples taken.
    pub status_samples: usize,
    /// etcd member lists read.
    pub etcd_samples: usize,
    /// Most learners in one etcd member list.
    pub max_learners: usize,
    /// Most membership changes between two consecutive member lists (an add, a promote
    /// and a remove each count one).
    pub max_step: usize,
    /// Every pair of consecutive member lists that differed by more than one change.
    pub step_violations: Vec<String>,
    /// Most members in one status that were joining or leaving (a learner, not yet in
    /// etcd, or in phase Joining, Bootstrapping or Leaving).
    pub max_in_transition: usize,
    /// Every status with more than one member joining or leaving.
    pub transition_violations: Vec<String>,
    /// Most members the status listed at once.
    pub max_status_members: usize,
    /// Every member name the status listed.
    pub names_seen: BTreeSet<String>,
    /// The leader according to the status (member names), consecutive repeats dropped.
    pub status_leaders: Vec<String>,
    /// The leader according to etcd (member ids), consecutive repeats dropped.
    pub etcd_leaders: Vec<u64>,
    /// The changes in flight the status named, in order, consecutive repeats dropped.
    pub changes_in_flight: Vec<String>,
    /// Members that left the status, each with whether it led when last seen running.
    pub departures: Vec<(String, bool)>,
    /// The phases the status showed, consecutive repeats dropped.
    pub phases: Vec<String>,
}

impl MonitorLog {
    /// How often the leader changed, as etcd saw it.
    pub fn etcd_leader_changes(&self) -> usize {
        self.etcd_leaders.len().saturating_sub(1)
    }

    /// How often the leader changed, as the status showed it.
    pub fn status_leader_changes(&self) -> usize {
        self.status_leaders.len().saturating_sub(1)
    }
}

/// Samples the coordinator's status and etcd's member list and leader every 100 ms, and
/// runs a [`MembershipWatcher`] beside them.
pub struct ClusterMonitor {
    log: Arc<Mutex<MonitorLog>>,
    watcher: MembershipWatcher,
    task: JoinHandle<()>,
}

impl ClusterMonitor {
    /// Starts monitoring `coordinator`'s cluster.
    pub fn start(coordinator: &LocalCoordinator) -> Self {
        let endpoints = coordinator.live_endpoints();
        let tls = coordinator.etcd_tls();
        let watcher = MembershipWatcher::start_tls(endpoints.clone(), tls.clone());
        let log = Arc::new(Mutex::new(MonitorLog::default()));
        let task = tokio::spawn(monitor_loop(
            coordinator.channel(),
            coordinator.cluster().to_string(),
            Arc::new(endpoints),
            tls,
            Arc::clone(&log),
        ));
        Self { log, watcher, task }
    }

    /// What was seen so far.
    pub fn log(&self) -> MonitorLog {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the membership watcher saw so far.
    pub fn membership(&self) -> MembershipHistory {
        self.watcher.history()
    }

    /// Fails unless at most one membership change was ever in flight: never more than one
    /// learner (in etcd, and by the watcher), never two changes between consecutive
    /// member lists, never two members joining or leaving at once in the status.
    pub fn assert_one_change_at_a_time(&self) -> anyhow::Result<MonitorLog> {
        let log = self.log();
        let watched = self.membership();
        if log.etcd_samples < 10 || log.status_samples < 10 || watched.samples < 10 {
            bail!(
                "too few samples to judge: {} member lists, {} statuses, {} watcher samples",
                log.etcd_samples,
                log.status_samples,
                watched.samples
            );
        }
        if log.max_learners > 1 || watched.max_learners > 1 {
            bail!(
                "more than one learner at once: {} (monitor), {} (watcher)",
                log.max_learners,
                watched.max_learners
            );
        }
        if !log.step_violations.is_empty() {
            bail!(
                "member lists changed by more than one step between samples: {:?}",
                log.step_violations
            );
        }
        if !log.transition_violations.is_empty() {
            bail!(
                "more than one member joining or leaving at once: {:?}",
                log.transition_violations
            );
        }
        Ok(log)
    }
}

impl Drop for ClusterMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type MemberKey = (u64, bool);

async fn monitor_loop(
    channel: Channel,
    cluster: String,
    endpoints: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    tls: Option<etcd_client::TlsOptions>,
    log: Arc<Mutex<MonitorLog>>,
) {
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut sticky: Option<String> = None;
    let mut previous_list: Option<BTreeSet<MemberKey>> = None;
    let mut previous_status: Option<ClusterStatus> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // etcd's view, from one member as long as it answers (members can lag each other).
        let live = endpoints();
        if sticky.as_ref().is_some_and(|s| !live.contains(s)) {
            sticky = None;
        }
        let order: Vec<String> = sticky
            .iter()
            .cloned()
            .chain(live.iter().filter(|e| Some(*e) != sticky.as_ref()).cloned())
            .collect();
        for endpoint in order {
            let client = match clients.get(&endpoint) {
                Some(c) => c.clone(),
                None => match Client::connect([endpoint.as_str()], tls_only(&tls)).await {
                    Ok(c) => {
                        clients.insert(endpoint.clone(), c.clone());
                        c
                    }
                    Err(_) => continue,
                },
            };
            let read = async {
                let mut cluster_client = client.cluster_client();
                let list = cluster_client.member_list().await.ok()?;
                let mut maintenance = client.maintenance_client();
                let status = maintenance.status().await.ok()?;
                Some((list, status))
            };
            let Ok(Some((list, status))) =
                tokio::time::timeout(Duration::from_millis(500), read).await
            else {
                continue;
            };
            sticky = Some(endpoint);
            let members: BTreeSet<MemberKey> = list
                .members()
                .iter()
                .map(|m| (m.id(), m.is_learner()))
                .collect();
            let mut g = log.lock().unwrap_or_else(|e| e.into_inner());
            g.etcd_samples += 1;
            let learners = members.iter().filter(|(_, l)| *l).count();
            g.max_learners = g.max_learners.max(learners);
            if let Some(before) = &previous_list {
                let step = changes_between(before, &members);
                g.max_step = g.max_step.max(step);
                if step > 1 {
                    g.step_violations
                        .push(format!("{before:x?} -> {members:x?} ({step} changes)"));
                }
            }
            previous_list = Some(members);
            let leader = status.leader();
            if leader != 0 && g.etcd_leaders.last() != Some(&leader) {
                g.etcd_leaders.push(leader);
            }
            break;
        }
        // The coordinator's view.
        if let Some(status) = fetch_status(channel.clone(), &cluster).await {
            let mut g = log.lock().unwrap_or_else(|e| e.into_inner());
            g.status_samples += 1;
            g.max_status_members = g.max_status_members.max(status.members.len());
            let moving: Vec<&str> = status
                .members
                .iter()
                .filter(|m| {
                    m.phase != "Down"
                        && (m.learner
                            || m.id.is_empty()
                            || matches!(m.phase.as_str(), "Joining" | "Bootstrapping" | "Leaving"))
                })
                .map(|m| m.name.as_str())
                .collect();
            g.max_in_transition = g.max_in_transition.max(moving.len());
            if moving.len() > 1 {
                g.transition_violations.push(describe(&status));
            }
            for m in &status.members {
                g.names_seen.insert(m.name.clone());
            }
            if let Some(leader) = status.members.iter().find(|m| m.leader)
                && g.status_leaders.last() != Some(&leader.name)
            {
                g.status_leaders.push(leader.name.clone());
            }
            if !status.change_in_flight.is_empty()
                && g.changes_in_flight.last() != Some(&status.change_in_flight)
            {
                g.changes_in_flight.push(status.change_in_flight.clone());
            }
            if g.phases.last() != Some(&status.phase) {
                g.phases.push(status.phase.clone());
            }
            if let Some(before) = &previous_status {
                for m in &before.members {
                    let leaving = status
                        .members
                        .iter()
                        .find(|n| n.name == m.name)
                        .is_none_or(|n| matches!(n.phase.as_str(), "Leaving" | "Removed"));
                    let already = g.departures.iter().any(|(name, _)| name == &m.name);
                    if leaving && !already && m.phase != "Leaving" {
                        g.departures.push((m.name.clone(), m.leader));
                    }
                }
            }
            previous_status = Some(status);
        }
    }
}

/// Members added, removed or promoted between two member lists.
fn changes_between(before: &BTreeSet<MemberKey>, after: &BTreeSet<MemberKey>) -> usize {
    let ids: BTreeSet<u64> = before.iter().chain(after).map(|(id, _)| *id).collect();
    ids.into_iter()
        .filter(|id| {
            let b = before.iter().find(|(i, _)| i == id);
            let a = after.iter().find(|(i, _)| i == id);
            b != a
        })
        .count()
}

/// Runs `etcdctl` (API 3) with `args` against `endpoints`; returns its standard output,
/// or an error with its standard error.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .context("running etcdctl (Debian package etcd-client)")?;
    if !out.status.success() {
        bail!(
            "etcdctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `GET /version` of an etcd client URL: `(etcdserver, etcdcluster)`.
pub async fn http_version(client_url: &str) -> anyhow::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = client_url
        .strip_prefix("http://")
        .with_context(|| format!("{client_url} is not an http URL"))?;
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        stream
            .write_all(format!("GET /version HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        anyhow::Ok(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(3), fetch).await??;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .with_context(|| format!("no HTTP body from {client_url}: {text:?}"))?;
    let json: serde_json::Value = serde_json::from_str(body)
        .with_context(|| format!("/version of {client_url}: {body:?}"))?;
    let field = |f: &str| json[f].as_str().unwrap_or_default().to_string();
    Ok((field("etcdserver"), field("etcdcluster")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_add_is_one_step_and_two_are_two() {
        let a: BTreeSet<MemberKey> = [(1, false), (2, false)].into();
        let add: BTreeSet<MemberKey> = [(1, false), (2, false), (3, true)].into();
        let promote: BTreeSet<MemberKey> = [(1, false), (2, false), (3, false)].into();
        let two: BTreeSet<MemberKey> = [(1, false), (2, false), (3, true), (4, true)].into();
        assert_eq!(changes_between(&a, &a), 0);
        assert_eq!(changes_between(&a, &add), 1);
        assert_eq!(changes_between(&add, &promote), 1);
        assert_eq!(changes_between(&a, &promote), 1);
        assert_eq!(changes_between(&a, &two), 2);
        assert_eq!(changes_between(&promote, &a), 1);
    }

    #[test]
    fn manifest_round_trips_through_the_parser() {
        let text = manifest("etcd-cluster", 5, "3.6.15");
        let parsed = etcd_operator::manifest::parse_manifests(Path::new("c.yaml"), &text).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].spec.size, 5);
        assert_eq!(parsed[0].spec.version, "3.6.15");
        assert_eq!(parsed[0].metadata.name.as_deref(), Some("etcd-cluster"));
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        write_atomically(&path, "one").unwrap();
        write_atomically(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
