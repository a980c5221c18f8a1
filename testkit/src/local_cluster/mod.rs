//! End-to-end harness for the coordinator's local mode: the real `etcd-coordinator local`
//! binary as a child process over a manifest in a temporary directory, client traffic that
//! records every acknowledged write, and a monitor that samples etcd's member list and the
//! coordinator's status while a test runs.
//!
//! Everything a test starts is killed when its guard drops, also when the test fails: the
//! coordinator is started in its own process group, its sidecars inherit that group, and
//! each sidecar's etcd dies with its sidecar (PDEATHSIG). A coordinator started again after
//! a crash gets a new group; every group ever used is killed on drop.
//!
//! Rooms: this module is the process harness ([`LocalCoordinator`], started from
//! [`CoordinatorOptions`], and the manifests it runs); `status` reads and describes what the
//! coordinator serves; `monitor` samples the cluster while a test runs ([`ClusterMonitor`]).
//! Clients of etcd are in [`crate::clients`], client traffic (the checked mix, and the
//! steady [`crate::traffic::Writer`]) in [`crate::traffic`].

mod monitor;
mod status;

use std::{
    fs::File,
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use etcd_operator::{
    local_record::{CLUSTER_RECORD_FILE, ClusterRecord},
    proto::ClusterStatus,
};
use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::{clients::tls_options, free_port};

pub use etcd_operator::local_record::MemberRecord;
pub use monitor::{ClusterMonitor, MonitorLog};
pub use status::{
    client_url, condition, condition_is, describe, fetch_status, is_running, member_phase,
};

/// How long one status call may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Set to keep a test's directory (manifest, state, logs) even when the test passes.
pub const KEEP_ENV: &str = "ETCDOP_TEST_KEEP";

/// True when `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    !stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
}

/// True when the member's recorded sidecar process runs (exists and is not a zombie).
pub fn member_running(member: &MemberRecord) -> bool {
    member.pid.is_some_and(pid_alive)
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
    /// The coordinator reads a directory of manifests (the one manifest in it) rather
    /// than the one file, so that a test can add others.
    pub manifests_dir: bool,
    /// More files of the manifests directory (name, text), there from the first start.
    pub extra_manifests: Vec<(String, String)>,
    /// A coordinator that ends before it answers (it crashed at a failpoint) is no failure
    /// of a start: the test starts it again ([`LocalCoordinator::restart_if_exited`]).
    pub may_die_early: bool,
    /// Members in network namespaces of their own, joined to this hub's bridge; the
    /// coordinator's control port on the bridge's address.
    pub member_netns: Option<String>,
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
            manifests_dir: false,
            extra_manifests: Vec::new(),
            member_netns: None,
            may_die_early: false,
        }
    }

    /// A coordinator that ends before it answers is started again by the test, not a failed
    /// start (it is expected to crash, at failpoints).
    pub fn may_die_early(mut self) -> Self {
        self.may_die_early = true;
        self
    }

    /// Every member in a network namespace of its own, joined to `hub`'s bridge (the
    /// harness must run inside `hub`: [`crate::netns::Hub::run_inside`]).
    pub fn member_netns(mut self, hub: &crate::netns::Hub) -> Self {
        self.member_netns = Some(hub.member_netns_flag());
        self
    }

    /// The coordinator reads a directory holding the manifest ([`LocalCoordinator::manifest_path`]'s).
    pub fn manifests_dir(mut self) -> Self {
        self.manifests_dir = true;
        self
    }

    /// A directory of manifests ([`Self::manifests_dir`]) that also holds the file `name`
    /// with `text` (valid or not) from the first start.
    pub fn extra_manifest(mut self, name: &str, text: &str) -> Self {
        self.manifests_dir = true;
        self.extra_manifests
            .push((name.to_string(), text.to_string()));
        self
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

/// How often [`LocalCoordinator::wait_until`] reads the status.
const STATUS_POLL: Duration = Duration::from_millis(50);

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
    may_die_early: bool,
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
        let manifests = if opts.manifests_dir {
            let dir = root.join("manifests");
            std::fs::create_dir_all(&dir).context("creating the manifests directory")?;
            dir
        } else {
            root.join("cluster.yaml")
        };
        let manifest_path = if opts.manifests_dir {
            manifests.join("cluster.yaml")
        } else {
            manifests.clone()
        };
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
        for (file, text) in &opts.extra_manifests {
            write_atomically(&manifests.join(file), text)?;
        }
        let cluster = name;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        // Members in namespaces of their own reach the coordinator on the bridge's address.
        let control_host = match opts.member_netns {
            Some(_) => crate::netns::GATEWAY.to_string(),
            None => "127.0.0.1".to_string(),
        };
        let control_addr: SocketAddr = format!("{control_host}:{}", free_port()).parse()?;
        let mut args = vec![
            "local".to_string(),
            manifests.display().to_string(),
            format!("--state-dir={}", root.join("state").display()),
            format!("--grpc-addr={addr}"),
            format!("--control-addr={control_addr}"),
        ];
        if let Some(secs) = opts.dead_after_secs {
            args.push(format!("--dead-after-secs={secs}"));
        }
        if let Some(flag) = &opts.member_netns {
            args.push(format!("--member-netns={flag}"));
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
            may_die_early: opts.may_die_early,
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            let ended = match self.child.as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if ended && self.may_die_early {
                return Ok(());
            }
            if ended || tokio::time::Instant::now() >= deadline {
                let why = if ended {
                    "the coordinator ended"
                } else {
                    "not within 30 s"
                };
                bail!(
                    "the coordinator's gRPC server on {addr} did not answer: {why}\n{}",
                    self.logs(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the coordinator again when its process has ended (it crashed, at a failpoint
    /// say); true when it did.
    pub async fn restart_if_exited(&mut self) -> anyhow::Result<bool> {
        let ended = match self.child.as_mut() {
            Some(child) => child.try_wait()?.is_some(),
            None => true,
        };
        if !ended {
            return Ok(false);
        }
        self.child = None;
        self.restart().await?;
        Ok(true)
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
        match crate::process::terminate(child.id(), within, || child.try_wait()).await? {
            Some(status) => Ok(status),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the coordinator did not exit within {within:?} of SIGTERM");
            }
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
            // Fine enough for etcd-bench to time sub-second steps by it.
            tokio::time::sleep(STATUS_POLL).await;
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
        self.state_dir.join(&self.cluster).join(CLUSTER_RECORD_FILE)
    }

    /// The members the local runtime records.
    pub fn members(&self) -> Vec<MemberRecord> {
        read_members(&self.cluster_json())
    }

    /// The ordinal the next member created gets (ordinals are never reused).
    pub fn next_ordinal(&self) -> u32 {
        std::fs::read(self.cluster_json())
            .ok()
            .and_then(|b| serde_json::from_slice::<ClusterRecord>(&b).ok())
            .map_or(0, |r| r.next_ordinal)
    }

    /// `etcd-coordinator delete-member`: member `name` deleted with its data, as an operator
    /// does; returns once the coordinator has done it.
    pub fn delete_member(&self, name: &str) -> anyhow::Result<()> {
        let out = std::process::Command::new(&self.binary)
            .arg("delete-member")
            .arg(&self.cluster)
            .arg(name)
            .arg(format!("--state-dir={}", self.state_dir.display()))
            .arg(format!("--control-addr={}", self.control_addr))
            .output()
            .context("running etcd-coordinator delete-member")?;
        if !out.status.success() {
            bail!(
                "delete-member {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Asks the coordinator to rotate the cluster's etcd CA (`etcd-coordinator rotate-ca`);
    /// returns what it answered.
    pub fn rotate_ca(&self) -> anyhow::Result<String> {
        let out = std::process::Command::new(&self.binary)
            .arg("rotate-ca")
            .arg(&self.cluster)
            .arg(format!("--state-dir={}", self.state_dir.display()))
            .arg(format!("--control-addr={}", self.control_addr))
            .output()
            .context("running etcd-coordinator rotate-ca")?;
        if !out.status.success() {
            bail!("rotate-ca: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
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
                .filter(|m| member_running(m))
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

    /// As [`Self::kill_member`], then waits until its sidecar and that sidecar's etcd are
    /// gone. (The coordinator may already have started the member again: its new etcd
    /// listens on the same address, so the address is not what is waited on.)
    pub async fn kill_member_and_wait(&self, name: &str) -> anyhow::Result<u32> {
        let record = self
            .member(name)
            .with_context(|| format!("no member {name} recorded"))?;
        let etcd = record
            .pid
            .and_then(|pid| crate::process::etcd_pid(pid).ok());
        let pid = self.kill_member(name)?;
        crate::wait_for(
            &format!("{name}'s sidecar to be gone"),
            Duration::from_secs(10),
            || async { (!pid_alive(pid)).then_some(()) },
        )
        .await?;
        if let Some(etcd) = etcd {
            crate::wait_for(
                &format!("{name}'s etcd (pid {etcd}) to end with its sidecar"),
                Duration::from_secs(10),
                || async move { (!pid_alive(etcd)).then_some(()) },
            )
            .await?;
        }
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

    /// Where the coordinator's stderr (its log) goes.
    pub fn stderr_path(&self) -> PathBuf {
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

#[cfg(test)]
mod tests {
    use super::*;

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
