//! The local runtime: members are `etcd-sidecar` processes on 127.0.0.1 ports, with their
//! data under a state directory.
//!
//! Layout: `<state>/<cluster>/cluster.json` records every member (ordinal, ports, version,
//! pid) and the next ordinal; `<state>/<cluster>/<member>/` is the member directory and
//! `<state>/<cluster>/<member>.log` the sidecar's output. The record is written whole and
//! durably before a process starts, so a coordinator that dies at any moment finds every
//! member it made; a record that cannot be read stops its cluster (every call about it
//! fails, saying which file and why) until it reads again, and is never taken for an empty
//! one.
//!
//! A member whose process exits is not restarted here on its own: the runtime reports it
//! down, whether its data survives (a usable etcd data directory under its member
//! directory) and how it ended, and the planner decides: start it again on its data
//! ([`Runtime::start_member`], with a backoff while it keeps exiting), or replace it when
//! its data is gone or it never comes back healthy. A coordinator that starts again adopts
//! the sidecars still running; the ones stopped with it are down with their data, and the
//! planner starts them again.
//!
//! Every member's certificates (control path, and etcd's with `spec.tls`) are issued under
//! `<state>/pki/` before its sidecar starts ([`LocalPki`]), passed to it by path, and renewed
//! in place when due ([`Runtime::renew_certificates`]).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use etcd_operator::{
    ClusterKey, EtcdVersion,
    etcd_bin::EtcdBinaries,
    grant::UnixMillis,
    naming::member_ordinal,
    pki::{Authority, MemberCertSpec, MemberFile, member_hosts},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    process::{Child, Command},
    sync::Mutex,
};
use tracing::{info, warn};

use super::{
    netns::MemberNetns,
    pki::{LocalPki, LocalPkiError},
};
use crate::{
    k8s::install::SIDECAR_FILE,
    registry::now_ms,
    runtime::{MemberData, MemberInfo, RestartHistory, Runtime, RuntimeError},
    security::ControlPlane,
};

/// How the sidecar is started: a program and the arguments before `run`'s flags.
#[derive(Clone, Debug)]
pub struct SidecarCommand {
    /// The program.
    pub program: PathBuf,
    /// Leading arguments (`["sidecar", "run"]` for the coordinator's own binary).
    pub args: Vec<String>,
}

impl SidecarCommand {
    /// The `etcd-sidecar` binary `program`, which takes `run` first.
    pub fn binary(program: PathBuf) -> Self {
        Self {
            program,
            args: vec!["run".into()],
        }
    }

    /// The coordinator's binary `coordinator`, which embeds the sidecar as `sidecar run`.
    pub fn embedded(coordinator: PathBuf) -> Self {
        Self {
            program: coordinator,
            args: vec!["sidecar".into(), "run".into()],
        }
    }

    /// The default for local mode: the `etcd-sidecar` binary beside the coordinator's own
    /// executable, which carries none of the coordinator's dependencies and so costs a member
    /// less memory, when it is of the same build as the sidecar the coordinator embeds
    /// ([`etcd_sidecar::VERSION`]); else the embedded sidecar, with the reason for one
    /// warning.
    pub fn beside_current_exe() -> std::io::Result<(Self, Option<String>)> {
        Ok(Self::beside(std::env::current_exe()?))
    }

    /// [`Self::beside_current_exe`] for the coordinator executable `coordinator`.
    pub fn beside(coordinator: PathBuf) -> (Self, Option<String>) {
        let candidate = coordinator.with_file_name(SIDECAR_FILE);
        let expected = format!("{SIDECAR_FILE} {}", etcd_sidecar::VERSION);
        let problem = match std::process::Command::new(&candidate)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == expected => {
                return (Self::binary(candidate), None);
            }
            Ok(_) => "is of another build",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "is not there",
            Err(_) => "does not run",
        };
        let warning = format!(
            "{} {problem}: members run the sidecar embedded in the coordinator, which takes more memory; `cargo build` (or `cargo build --bin {SIDECAR_FILE}`) builds the small one, or pass --sidecar-binary",
            candidate.display()
        );
        (Self::embedded(coordinator), Some(warning))
    }
}

use etcd_operator::local_record::{CLUSTER_RECORD_FILE, read_record, write_record};
/// The record of `<state>/<cluster>/cluster.json`, shared with the test harness.
pub use etcd_operator::local_record::{ClusterRecord, MemberRecord};

#[derive(Default)]
struct LocalCluster {
    record: ClusterRecord,
    children: HashMap<String, Child>,
    down_since: HashMap<String, UnixMillis>,
    /// Restarts since each member last ran steadily.
    restarts: HashMap<String, RestartHistory>,
    /// When each member's process was last started (or adopted).
    started_at: HashMap<String, UnixMillis>,
    /// etcd's flags from `spec.maintenance` as last read, given to every sidecar started.
    etcd_flags: Vec<String>,
}

/// How a child process ended, for people.
fn exit_reason(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(signal) => format!("killed by {}", signal.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => "ended".to_string(),
    }
}

/// The file in a cluster's state directory that holds the identity its backups are bound to.
pub const BACKUP_IDENTITY_FILE: &str = "backup-identity";

/// Members as local processes.
pub struct LocalRuntime {
    state_dir: PathBuf,
    sidecar: SidecarCommand,
    coordinator_url: String,
    binaries: EtcdBinaries,
    clusters: Mutex<HashMap<ClusterKey, LocalCluster>>,
    pki: Arc<LocalPki>,
    control: Arc<ControlPlane>,
    client_validity: Duration,
    /// Members in network namespaces of their own, when set.
    netns: Option<MemberNetns>,
}

fn pki_error(e: LocalPkiError) -> RuntimeError {
    RuntimeError::Certificates(e.to_string())
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

/// The lowest port the kernel hands out for outgoing connections and for port 0
/// (`net.ipv4.ip_local_port_range`).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Where member ports are looked for: below the ephemeral range. A port the kernel may
/// hand out is taken, sooner or later, by one of the many outgoing connections of a busy
/// machine (a coordinator of 200 clusters holds hundreds), and a member whose port is
/// taken cannot start again until that connection ends.
fn member_port_range(ephemeral_low: u16) -> std::ops::Range<u16> {
    const FIRST: u16 = 20000;
    FIRST..ephemeral_low.max(FIRST)
}

/// The first port of `range` after `start` (wrapping) that is not in `taken` and that
/// `bindable` accepts.
fn pick_port(
    range: std::ops::Range<u16>,
    start: u64,
    taken: &std::collections::HashSet<u16>,
    mut bindable: impl FnMut(u16) -> bool,
) -> Option<u16> {
    let len = range.len() as u64;
    (0..len)
        .map(|i| range.start + ((start + i) % len) as u16)
        .find(|p| !taken.contains(p) && bindable(*p))
}

/// A free TCP port on 127.0.0.1 for a member: below the ephemeral range and not recorded
/// for any other member (one that is stopped holds no socket, yet its port is its own).
/// Falls back to one the kernel picks when that range is empty or full.
fn free_port(taken: &std::collections::HashSet<u16>) -> Result<u16, RuntimeError> {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ u64::from(std::process::id()))
        .unwrap_or(0);
    if let Some(port) = pick_port(member_port_range(ephemeral_low()), start, taken, |p| {
        std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
    }) {
        return Ok(port);
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("finding a free port"))
}

/// True when `pid` is a live sidecar of member `name` (not a zombie, not a reused pid).
fn pid_is_member(pid: u32, name: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    if stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .any(|arg| arg == format!("--name={name}").as_bytes())
        })
        .unwrap_or(false)
}

impl LocalRuntime {
    /// A runtime keeping state under `state_dir`, starting sidecars with `sidecar`, which
    /// report to the coordinator's control port at `coordinator_url` (https) with the
    /// certificates `pki` issues from `control`'s CA. The applications' client bundles are
    /// valid for `client_validity`.
    pub fn new(
        state_dir: impl Into<PathBuf>,
        sidecar: SidecarCommand,
        coordinator_url: impl Into<String>,
        binaries: EtcdBinaries,
        pki: Arc<LocalPki>,
        control: Arc<ControlPlane>,
        client_validity: Duration,
    ) -> Self {
        Self {
            state_dir: state_dir.into(),
            sidecar,
            coordinator_url: coordinator_url.into(),
            binaries,
            clusters: Mutex::new(HashMap::new()),
            pki,
            control,
            client_validity,
            netns: None,
        }
    }

    /// Runs every new member in a network namespace of its own ([`MemberNetns`]).
    pub fn with_member_netns(mut self, netns: Option<MemberNetns>) -> Self {
        self.netns = netns;
        self
    }

    /// Every member of every cluster under the state directory: of the clusters in memory,
    /// and of those only on disk.
    fn recorded_members(&self, clusters: &HashMap<ClusterKey, LocalCluster>) -> Vec<MemberRecord> {
        let mut members: Vec<MemberRecord> = clusters
            .values()
            .flat_map(|c| c.record.members.iter().cloned())
            .collect();
        for key in clusters_in(&self.state_dir) {
            if !clusters.contains_key(&key) {
                match self.load(&key) {
                    Ok(record) => members.extend(record.members),
                    // Its members' ports and addresses are unknown: a running member's
                    // cannot be taken (they do not bind), a stopped one's may.
                    Err(e) => {
                        warn!(cluster = %key, error = %e, "ports and addresses of this cluster's members are unknown")
                    }
                }
            }
        }
        members
    }

    /// A free address of the members' subnet: one no member of any cluster under the state
    /// directory has.
    fn free_host(
        &self,
        netns: &MemberNetns,
        clusters: &HashMap<ClusterKey, LocalCluster>,
    ) -> Result<String, RuntimeError> {
        let used: std::collections::HashSet<String> = self
            .recorded_members(clusters)
            .into_iter()
            .filter_map(|m| m.host)
            .collect();
        (0..)
            .map_while(|n| netns.address(n))
            .map(|a| a.to_string())
            .find(|a| !used.contains(a))
            .ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "no address left in {}/{} for another member",
                    netns.gateway, netns.prefix_len
                ))
            })
    }

    /// The applications' client bundle of `cluster` (`ca.crt`, `tls.crt`, `tls.key`), once
    /// the cluster has one (it uses TLS).
    pub fn client_bundle(&self, cluster: &ClusterKey) -> Option<PathBuf> {
        let dir = self.pki.client_dir(cluster);
        dir.join(etcd_operator::pki::ClientFile::CERT)
            .is_file()
            .then_some(dir)
    }

    fn cert_spec(&self, cluster: &ClusterKey, member: &MemberRecord) -> MemberCertSpec {
        let urls = [member.client_url(), member.peer_url(), member.sidecar_url()];
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        MemberCertSpec {
            cluster: cluster.clone(),
            member: member.name.clone(),
            hosts: member_hosts(&urls, None),
            etcd_tls: member.tls,
            validity: self.control.member_validity(),
        }
    }

    fn cluster_dir(&self, cluster: &ClusterKey) -> PathBuf {
        if cluster.namespace.is_empty() {
            self.state_dir.join(&cluster.name)
        } else {
            self.state_dir.join(&cluster.namespace).join(&cluster.name)
        }
    }

    fn record_path(&self, cluster: &ClusterKey) -> PathBuf {
        self.cluster_dir(cluster).join(CLUSTER_RECORD_FILE)
    }

    /// Writes the cluster's record whole and durably (file and directory flushed around the
    /// rename): the ordinals it holds are never used again, whatever happens next.
    fn save(&self, cluster: &ClusterKey, record: &ClusterRecord) -> Result<(), RuntimeError> {
        let path = self.record_path(cluster);
        write_record(&path, record).map_err(io(format!("writing {}", path.display())))
    }

    /// The cluster's record; a new, empty one when the cluster has none. A record that
    /// cannot be read is an error, never an empty record (whose ordinals would start again
    /// at 0 over the members' data), and so is a missing record beside member directories.
    fn load(&self, cluster: &ClusterKey) -> Result<ClusterRecord, RuntimeError> {
        let path = self.record_path(cluster);
        let refused = |why: String| {
            RuntimeError::Invalid(format!(
                "{why}: nothing is created, started or deleted for {cluster} until it reads again (restore it; its members run on as they are)"
            ))
        };
        match read_record(&path) {
            Ok(Some(record)) => Ok(record),
            Ok(None) => {
                let members = member_dirs(&self.cluster_dir(cluster), &cluster.name);
                if members.is_empty() {
                    Ok(ClusterRecord::default())
                } else {
                    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
                    Err(refused(format!(
                        "{} is missing, yet the directories of members {} are there",
                        path.display(),
                        names.join(", ")
                    )))
                }
            }
            Err(e) => Err(refused(e.to_string())),
        }
    }

    /// Loads (once) the cluster's record, adopting running sidecars. Members stopped
    /// together with the previous coordinator are left down with their data, for the
    /// planner to start again.
    async fn cluster<'a>(
        &self,
        clusters: &'a mut HashMap<ClusterKey, LocalCluster>,
        key: &ClusterKey,
    ) -> Result<&'a mut LocalCluster, RuntimeError> {
        if !clusters.contains_key(key) {
            // Not kept when it fails: every pass reads the record again until it reads.
            let mut local = LocalCluster {
                record: self.load(key)?,
                ..Default::default()
            };
            let now = now_ms();
            let mut adopted_unrecorded = false;
            let mut unrecorded: Option<HashMap<String, u32>> = None;
            for m in &mut local.record.members {
                if m.pid.is_some_and(|pid| pid_is_member(pid, &m.name)) {
                    info!(cluster = %key, member = %m.name, "adopting the running sidecar");
                    local.started_at.insert(m.name.clone(), now);
                } else if let Some(&pid) = unrecorded
                    .get_or_insert_with(|| member_processes(&self.cluster_dir(key)))
                    .get(&m.name)
                {
                    // Started by a coordinator that died before it recorded the pid.
                    info!(cluster = %key, member = %m.name, pid, "adopting the running sidecar whose pid was not recorded");
                    m.pid = Some(pid);
                    adopted_unrecorded = true;
                    local.started_at.insert(m.name.clone(), now);
                } else {
                    info!(cluster = %key, member = %m.name, "found stopped");
                    local.restarts.insert(
                        m.name.clone(),
                        RestartHistory {
                            last_exit: "stopped with the previous coordinator".into(),
                            ..Default::default()
                        },
                    );
                }
            }
            if adopted_unrecorded {
                self.save(key, &local.record)?;
            }
            self.finish_deletions(key, &local.record);
            clusters.insert(key.clone(), local);
        }
        clusters
            .get_mut(key)
            .ok_or_else(|| RuntimeError::Other("cluster vanished".into()))
    }

    /// Completes the deletions a previous coordinator recorded and did not finish (it died
    /// after the record said the member was gone and before its directory was removed):
    /// only directories of this cluster's members whose ordinal the record has used and no
    /// longer lists.
    fn finish_deletions(&self, key: &ClusterKey, record: &ClusterRecord) {
        let left: Vec<String> = member_dirs(&self.cluster_dir(key), &key.name)
            .into_iter()
            .filter(|(name, ordinal)| {
                *ordinal < record.next_ordinal && !record.members.iter().any(|m| &m.name == name)
            })
            .map(|(name, _)| name)
            .collect();
        if left.is_empty() {
            return;
        }
        let running = member_processes(&self.cluster_dir(key));
        for name in left {
            let dir = self.cluster_dir(key).join(&name);
            if running.contains_key(&name) {
                warn!(cluster = %key, member = %name, "a deleted member's sidecar still runs: its directory is kept");
                continue;
            }
            info!(cluster = %key, member = %name, "completing the member's deletion: removing its directory");
            self.pki.remove_member(key, &name);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!(member = %name, error = %e, "could not remove the member directory");
            }
            if let Some(netns) = &self.netns
                && let Err(e) = netns.remove(&netns.namespace(&name))
            {
                warn!(member = %name, error = %e, "could not remove the member's network namespace");
            }
        }
    }

    fn spawn(
        &self,
        key: &ClusterKey,
        local: &mut LocalCluster,
        name: &str,
    ) -> Result<(), RuntimeError> {
        let dir = self.cluster_dir(key);
        let member = local
            .record
            .member_mut(name)
            .ok_or_else(|| RuntimeError::NoSuchMember(name.to_string()))?;
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io(format!("opening {}", log_path.display())))?;
        let spec = self.cert_spec(key, member);
        if self
            .pki
            .ensure_member(self.control.ca(), &spec)
            .map_err(pki_error)?
        {
            info!(cluster = %key, member = %name, "certificates issued");
        }
        if member.tls {
            self.pki
                .ensure_client(key, self.client_validity)
                .map_err(pki_error)?;
        }
        let tls_dir = self.pki.member_dir(key, name);
        let mut cmd = match (&member.netns, &self.netns, &member.host) {
            (Some(namespace), Some(netns), Some(host)) => {
                let address = host.parse().map_err(|_| {
                    RuntimeError::Invalid(format!("member {name}: {host} is not an address"))
                })?;
                netns.create(namespace, address)?;
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", namespace])
                    .arg(&self.sidecar.program);
                cmd
            }
            (Some(namespace), _, _) => {
                return Err(RuntimeError::Invalid(format!(
                    "member {name} runs in network namespace {namespace}: start the coordinator with --member-netns"
                )));
            }
            _ => Command::new(&self.sidecar.program),
        };
        cmd.args(&self.sidecar.args)
            .arg(format!("--cluster={}", key.name))
            .arg(format!("--namespace={}", key.namespace))
            .arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", dir.join(name).display()))
            .arg(format!("--peer-url={}", member.peer_url()))
            .arg(format!("--client-url={}", member.client_url()))
            .arg(format!("--coordinator-url={}", self.coordinator_url))
            .arg(format!("--grpc-addr={}", member.grpc_addr()))
            .arg(format!("--etcd-version={}", member.version))
            .arg(format!(
                "--tls-cert={}",
                tls_dir.join(MemberFile::CERT).display()
            ))
            .arg(format!(
                "--tls-key={}",
                tls_dir.join(MemberFile::KEY).display()
            ))
            .arg(format!(
                "--tls-ca={}",
                tls_dir.join(MemberFile::CA).display()
            ))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if member.tls {
            cmd.arg(format!("--etcd-tls-dir={}", tls_dir.display()));
        }
        // The sidecar's flags of these names pass them on to etcd.
        cmd.args(&local.etcd_flags);
        let child = cmd
            .spawn()
            .map_err(io(format!("starting the sidecar of {name}")))?;
        member.pid = child.id();
        local.children.insert(name.to_string(), child);
        local.down_since.remove(name);
        local.started_at.insert(name.to_string(), now_ms());
        Ok(())
    }

    /// Whether member `name` has a usable etcd data directory (and has not left). Gone only
    /// when that is known: a directory that cannot be read is not said to be gone (a member
    /// whose data is gone is replaced at once, its directory deleted).
    fn data_of(&self, key: &ClusterKey, name: &str) -> MemberData {
        let dir = etcd_sidecar::identity::MemberDir::new(self.cluster_dir(key).join(name));
        if matches!(dir.has_etcd_data(), Ok(false)) || matches!(dir.is_removed(), Ok(true)) {
            MemberData::Gone
        } else {
            MemberData::Intact
        }
    }

    /// Stops every sidecar this runtime runs (SIGTERM, so each stops its etcd cleanly).
    pub async fn stop_all(&self) {
        let mut clusters = self.clusters.lock().await;
        for (key, local) in clusters.iter_mut() {
            for (name, child) in local.children.iter_mut() {
                info!(cluster = %key, member = %name, "stopping");
                terminate(child, STOP_GRACE).await;
            }
            local.children.clear();
            stop_adopted(key, local).await;
        }
    }

    /// Stops a cluster's sidecars (it is no longer declared); its data stays.
    pub async fn stop_cluster(&self, key: &ClusterKey) {
        let mut clusters = self.clusters.lock().await;
        if let Some(mut local) = clusters.remove(key) {
            for child in local.children.values_mut() {
                terminate(child, STOP_GRACE).await;
            }
            local.children.clear();
            stop_adopted(key, &local).await;
        }
    }

    /// Resumes every cluster found under the state directory: running members are
    /// adopted; those stopped with the previous coordinator are reported down with their
    /// data, and the planner starts them again.
    pub async fn resume(&self, keys: &[ClusterKey]) -> Result<(), RuntimeError> {
        let mut clusters = self.clusters.lock().await;
        for key in keys {
            self.cluster(&mut clusters, key).await?;
        }
        Ok(())
    }
}

/// How long a member stopped to keep its data may take to stop (etcd's own graceful stop
/// takes one to two seconds).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// How long a leader stopped to be deleted with its data may take: long enough to hand
/// leadership over as etcd stops, after which the rest of etcd's graceful stop (about a
/// second, spent closing client connections) protects nothing that is kept, and only holds
/// up the member's replacement. The sidecar is then killed, and etcd with it. Any other
/// member deleted is killed at once.
const DELETE_GRACE: Duration = Duration::from_millis(300);

async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Stops the sidecars adopted from a previous coordinator: they are not our children, so
/// `children` misses them and only their recorded pid reaches them.
async fn stop_adopted(key: &ClusterKey, local: &LocalCluster) {
    for m in &local.record.members {
        if local.children.contains_key(&m.name) {
            continue;
        }
        if let Some(pid) = m.pid
            && pid_is_member(pid, &m.name)
        {
            info!(cluster = %key, member = %m.name, pid, "stopping (adopted)");
            terminate_pid(pid, &m.name, STOP_GRACE).await;
        }
    }
}

/// Stops member `name`'s sidecar: our child, or one adopted from an earlier coordinator,
/// killing it after `grace`.
async fn stop_member_process(local: &mut LocalCluster, name: &str, grace: Duration) {
    if let Some(mut child) = local.children.remove(name) {
        terminate(&mut child, grace).await;
    } else if let Some(pid) = local
        .record
        .members
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.pid)
        && pid_is_member(pid, name)
    {
        terminate_pid(pid, name, grace).await;
    }
}

async fn terminate_pid(pid: u32, name: &str, grace: Duration) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !pid_is_member(pid, name) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

impl Runtime for LocalRuntime {
    async fn members(&self, cluster: &ClusterKey) -> Result<Vec<MemberInfo>, RuntimeError> {
        let mut clusters = self.clusters.lock().await;
        let local = self.cluster(&mut clusters, cluster).await?;
        let now = now_ms();
        let mut out = Vec::new();
        for m in &local.record.members {
            let (running, exit) = match local.children.get_mut(&m.name) {
                Some(child) => match child.try_wait() {
                    Ok(None) => (true, None),
                    Ok(Some(status)) => (false, Some(exit_reason(status))),
                    Err(e) => (false, Some(format!("unknown ({e})"))),
                },
                None if m.pid.is_some_and(|pid| pid_is_member(pid, &m.name)) => (true, None),
                None => (false, None),
            };
            let history = local.restarts.entry(m.name.clone()).or_default();
            let down_since = if running {
                local.down_since.remove(&m.name);
                let steady = local
                    .started_at
                    .get(&m.name)
                    .is_some_and(|at| now - at >= crate::runtime::STEADY_AFTER_MS);
                if steady {
                    history.count = 0;
                    history.failing_since = None;
                }
                None
            } else {
                let since = *local.down_since.entry(m.name.clone()).or_insert(now);
                if history.failing_since.is_none() {
                    history.failing_since = Some(since);
                }
                if let Some(exit) = exit
                    && local.children.remove(&m.name).is_some()
                {
                    warn!(cluster = %cluster, member = %m.name, %exit, "the member's sidecar ended");
                    history.last_exit = exit;
                } else if history.last_exit.is_empty() {
                    history.last_exit = "process gone".into();
                }
                Some(since)
            };
            let restarts = history.clone();
            let version = m
                .version
                .parse()
                .map_err(|e| RuntimeError::Other(format!("member {}: {e}", m.name)))?;
            out.push(MemberInfo {
                name: m.name.clone(),
                ordinal: m.ordinal,
                running,
                down_since,
                version,
                seed: m.seed,
                client_url: m.client_url(),
                peer_url: m.peer_url(),
                sidecar_url: m.sidecar_url(),
                etcd_tls: m.tls,
                data: if running {
                    MemberData::Intact
                } else {
                    self.data_of(cluster, &m.name)
                },
                restart_on_request: true,
                restarts,
            });
        }
        Ok(out)
    }

    async fn next_ordinal(&self, cluster: &ClusterKey) -> Result<u32, RuntimeError> {
        let mut clusters = self.clusters.lock().await;
        Ok(self
            .cluster(&mut clusters, cluster)
            .await?
            .record
            .next_ordinal)
    }

    fn default_backup_storage(&self) -> Option<etcd_operator::proto::BackupStorage> {
        Some(etcd_operator::proto::BackupStorage {
            local_path: self.state_dir.join("backups").display().to_string(),
            ..Default::default()
        })
    }

    /// `<state>/<cluster>/backup-identity`, created once: two state directories whose
    /// clusters share a name and a backup path never take each other's backups.
    async fn backup_identity(
        &self,
        cluster: &ClusterKey,
        _resource: &etcd_operator::resource::EtcdCluster,
    ) -> Result<String, RuntimeError> {
        let path = self.cluster_dir(cluster).join(BACKUP_IDENTITY_FILE);
        tokio::task::spawn_blocking(move || {
            etcd_operator::durable::read_or_create_id(&path)
                .map_err(io(format!("reading or creating {}", path.display())))
        })
        .await
        .map_err(|e| RuntimeError::Other(e.to_string()))?
    }

    /// Local mode reads the variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN` and `AZURE_STORAGE_ACCOUNT_KEY` of the coordinator's own
    /// environment (which its sidecars inherit), and nothing else: no profile, no instance
    /// metadata. `credentialsSecret` names nothing here.
    async fn storage_credentials(
        &self,
        _cluster: &ClusterKey,
        _storage: &etcd_operator::proto::BackupStorage,
    ) -> Result<etcd_sidecar::backup::Credentials, String> {
        Ok(etcd_sidecar::backup::Credentials::from_environment())
    }

    fn check_version(&self, version: EtcdVersion) -> Result<(), RuntimeError> {
        self.binaries
            .resolve(version)
            .map(|_| ())
            .map_err(|e| RuntimeError::VersionUnavailable(e.to_string()))
    }

    async fn create_member(
        &self,
        cluster: &ClusterKey,
        name: &str,
        version: EtcdVersion,
        seed: bool,
        etcd_tls: bool,
    ) -> Result<(), RuntimeError> {
        let ordinal = member_ordinal(&cluster.name, name).ok_or_else(|| {
            RuntimeError::Invalid(format!("{name} is not a member name of {cluster}"))
        })?;
        let next = crate::runtime::ordinal_after(ordinal, name, cluster)?;
        let mut clusters = self.clusters.lock().await;
        let local = self.cluster(&mut clusters, cluster).await?;
        if local.record.members.iter().any(|m| m.name == name) {
            return Err(RuntimeError::Invalid(format!(
                "member {name} exists already"
            )));
        }
        // In a namespace of its own a member has etcd's usual ports on its own address.
        let (host, netns, client_port, peer_port, grpc_port) = match &self.netns {
            Some(netns) => {
                let host = self.free_host(netns, &clusters)?;
                (Some(host), Some(netns.namespace(name)), 2379, 2380, 7401)
            }
            None => {
                let mut taken: std::collections::HashSet<u16> = self
                    .recorded_members(&clusters)
                    .iter()
                    .flat_map(|m| [m.client_port, m.peer_port, m.grpc_port])
                    .collect();
                let mut ports = [0u16; 3];
                for port in &mut ports {
                    *port = free_port(&taken)?;
                    taken.insert(*port);
                }
                (None, None, ports[0], ports[1], ports[2])
            }
        };
        let local = self.cluster(&mut clusters, cluster).await?;
        local.record.members.push(MemberRecord {
            name: name.to_string(),
            ordinal,
            client_port,
            peer_port,
            grpc_port,
            version: version.to_string(),
            seed,
            pid: None,
            tls: etcd_tls,
            host,
            netns,
        });
        local.record.next_ordinal = local.record.next_ordinal.max(next);
        // Recorded before the process starts: a coordinator that dies now still knows it,
        // and never gives its ordinal to another member.
        etcd_operator::failpoint!("coordinator.local.before-record-save");
        self.save(cluster, &local.record)?;
        etcd_operator::failpoint!("coordinator.local.after-record-save");
        self.spawn(cluster, local, name)?;
        // A coordinator that dies now finds the process by its arguments and adopts it.
        etcd_operator::failpoint!("coordinator.local.create-after-spawn");
        self.save(cluster, &local.record)?;
        info!(cluster = %cluster, member = %name, %version, seed, "member created");
        Ok(())
    }

    async fn note_spec(
        &self,
        cluster: &ClusterKey,
        spec: &etcd_operator::resource::EtcdClusterSpec,
    ) {
        let flags = spec
            .maintenance
            .as_ref()
            .map(|m| m.etcd_flags())
            .unwrap_or_default();
        let mut clusters = self.clusters.lock().await;
        if let Ok(local) = self.cluster(&mut clusters, cluster).await {
            local.etcd_flags = flags;
        }
    }

    async fn delete_member(
        &self,
        cluster: &ClusterKey,
        name: &str,
        hand_over: bool,
    ) -> Result<(), RuntimeError> {
        let mut clusters = self.clusters.lock().await;
        let dir = self.cluster_dir(cluster);
        let local = self.cluster(&mut clusters, cluster).await?;
        let grace = if hand_over {
            DELETE_GRACE
        } else {
            Duration::ZERO
        };
        stop_member_process(local, name, grace).await;
        // Still recorded, stopped with its data: the next coordinator sees it down and the
        // planner decides again.
        etcd_operator::failpoint!("coordinator.local.delete-after-stop");
        let namespace = local
            .record
            .members
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.netns.clone());
        local.record.members.retain(|m| m.name != name);
        local.down_since.remove(name);
        local.restarts.remove(name);
        local.started_at.remove(name);
        self.save(cluster, &local.record)?;
        // Gone from the record: the next coordinator removes what is left of it
        // (`finish_deletions`).
        etcd_operator::failpoint!("coordinator.local.delete-after-record-save");
        self.pki.remove_member(cluster, name);
        let member_dir = dir.join(name);
        if member_dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&member_dir)
        {
            warn!(member = %name, error = %e, "could not remove the member directory");
        }
        if let (Some(namespace), Some(netns)) = (namespace, &self.netns)
            && let Err(e) = netns.remove(&namespace)
        {
            warn!(member = %name, error = %e, "could not remove the member's network namespace");
        }
        info!(cluster = %cluster, member = %name, "member deleted");
        Ok(())
    }

    fn control(&self) -> &ControlPlane {
        &self.control
    }

    async fn existing_etcd_ca(
        &self,
        cluster: &ClusterKey,
    ) -> Result<Option<Arc<Authority>>, RuntimeError> {
        self.pki.etcd_ca(cluster, false).map_err(pki_error)
    }

    async fn etcd_trust(&self, cluster: &ClusterKey) -> Result<Option<String>, RuntimeError> {
        self.pki.etcd_trust_extra(cluster).map_err(pki_error)
    }

    fn rotates_etcd_ca(&self) -> bool {
        true
    }

    async fn set_etcd_ca_rotation(
        &self,
        cluster: &ClusterKey,
        phase: Option<crate::plan::CaPhase>,
    ) -> Result<Option<crate::plan::CaPhase>, RuntimeError> {
        self.pki.set_rotation(cluster, phase).map_err(pki_error)
    }

    async fn etcd_leaves_elsewhere(
        &self,
        cluster: &ClusterKey,
    ) -> Result<Vec<String>, RuntimeError> {
        let record = self.load(cluster)?;
        let members: Vec<String> = record
            .members
            .iter()
            .filter(|m| m.tls)
            .map(|m| m.name.clone())
            .collect();
        self.pki
            .leaves_elsewhere(cluster, &members)
            .map_err(pki_error)
    }

    async fn renew_certificates(&self, cluster: &ClusterKey) -> Result<usize, RuntimeError> {
        // From the record on disk, not under the runtime's lock: a renewal never waits for a
        // member being stopped.
        let record = self.load(cluster)?;
        let mut changed = 0;
        for member in &record.members {
            if self
                .pki
                .renew_member(self.control.ca(), &self.cert_spec(cluster, member))
                .map_err(pki_error)?
            {
                info!(cluster = %cluster, member = %member.name, "certificates renewed");
                changed += 1;
            }
        }
        if record.members.iter().any(|m| m.tls)
            && self
                .pki
                .ensure_client(cluster, self.client_validity)
                .map_err(pki_error)?
        {
            info!(cluster = %cluster, "client certificate renewed");
            changed += 1;
        }
        Ok(changed)
    }

    async fn start_member(&self, cluster: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        let mut clusters = self.clusters.lock().await;
        let local = self.cluster(&mut clusters, cluster).await?;
        let runs = match local.children.get_mut(name) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => local
                .record
                .members
                .iter()
                .find(|m| m.name == name)
                .and_then(|m| m.pid)
                .is_some_and(|pid| pid_is_member(pid, name)),
        };
        if runs {
            return Ok(());
        }
        local.children.remove(name);
        // A sidecar started by a coordinator that died before it recorded the pid runs on:
        // adopted, never a second one on the same data and ports.
        if let Some(&pid) = member_processes(&self.cluster_dir(cluster)).get(name) {
            let member = local
                .record
                .member_mut(name)
                .ok_or_else(|| RuntimeError::NoSuchMember(name.to_string()))?;
            member.pid = Some(pid);
            self.save(cluster, &local.record)?;
            local.down_since.remove(name);
            local.started_at.insert(name.to_string(), now_ms());
            info!(cluster = %cluster, member = %name, pid, "adopted its running sidecar, whose pid was not recorded");
            return Ok(());
        }
        self.spawn(cluster, local, name)?;
        etcd_operator::failpoint!("coordinator.local.start-after-spawn");
        self.save(cluster, &local.record)?;
        let history = local.restarts.entry(name.to_string()).or_default();
        history.count = history.count.saturating_add(1);
        info!(cluster = %cluster, member = %name, restarts = history.count, "member started again on its data");
        Ok(())
    }

    async fn stop_member(&self, cluster: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        let mut clusters = self.clusters.lock().await;
        let local = self.cluster(&mut clusters, cluster).await?;
        stop_member_process(local, name, STOP_GRACE).await;
        info!(cluster = %cluster, member = %name, "member stopped; its data is kept");
        Ok(())
    }

    async fn restart_member(
        &self,
        cluster: &ClusterKey,
        name: &str,
        version: EtcdVersion,
    ) -> Result<(), RuntimeError> {
        self.check_version(version)?;
        let mut clusters = self.clusters.lock().await;
        let local = self.cluster(&mut clusters, cluster).await?;
        stop_member_process(local, name, STOP_GRACE).await;
        // Stopped on its data, the old version recorded: the next coordinator starts it
        // again as it was.
        etcd_operator::failpoint!("coordinator.local.restart-after-stop");
        let member = local
            .record
            .member_mut(name)
            .ok_or_else(|| RuntimeError::NoSuchMember(name.to_string()))?;
        member.version = version.to_string();
        self.save(cluster, &local.record)?;
        etcd_operator::failpoint!("coordinator.local.restart-after-record-save");
        self.spawn(cluster, local, name)?;
        etcd_operator::failpoint!("coordinator.local.restart-after-spawn");
        self.save(cluster, &local.record)?;
        info!(cluster = %cluster, member = %name, %version, "member restarted on a new version");
        Ok(())
    }
}

/// The directories under `cluster_dir` named as members of cluster `cluster`, with their
/// ordinals.
fn member_dirs(cluster_dir: &Path, cluster: &str) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(cluster_dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<(String, u32)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let ordinal = member_ordinal(cluster, &name)?;
            Some((name, ordinal))
        })
        .collect();
    dirs.sort();
    dirs
}

/// The live sidecars of members whose directories are under `cluster_dir`, by member name,
/// whatever their pid (their arguments name the member and its directory): found so that a
/// sidecar started by a coordinator that died before it recorded the pid is adopted, never
/// doubled by a second one on the same data and ports.
fn member_processes(cluster_dir: &Path) -> HashMap<String, u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    let mut found = HashMap::new();
    for pid in entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let arg = |flag: &str| {
            cmdline
                .split(|b| *b == 0)
                .find_map(|a| a.strip_prefix(flag.as_bytes()))
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        let (Some(name), Some(data_dir)) = (arg("--name="), arg("--data-dir=")) else {
            continue;
        };
        if Path::new(data_dir) == cluster_dir.join(name) && pid_is_member(pid, name) {
            found.insert(name.to_string(), pid);
        }
    }
    found
}

/// The clusters that have state under `state_dir` (local mode, no namespace).
pub fn clusters_in(state_dir: &Path) -> Vec<ClusterKey> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut keys: Vec<ClusterKey> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(CLUSTER_RECORD_FILE).is_file())
        .filter_map(|e| e.file_name().to_str().map(ClusterKey::local))
        .collect();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn member_ports_stay_below_the_ephemeral_range_and_off_recorded_ones() {
        assert_eq!(member_port_range(32768), 20000..32768);
        // A machine whose ephemeral range starts low leaves no range: the kernel picks.
        assert!(member_port_range(10000).is_empty());
        let range = 20000..20005;
        let taken: std::collections::HashSet<u16> = [20001, 20003].into();
        // From the start, skipping what is recorded and what does not bind, wrapping.
        assert_eq!(pick_port(range.clone(), 1, &taken, |_| true), Some(20002));
        assert_eq!(
            pick_port(range.clone(), 3, &taken, |p| p != 20004),
            Some(20000)
        );
        assert_eq!(pick_port(range.clone(), 0, &taken, |_| false), None);
        assert_eq!(pick_port(20000..20000, 0, &taken, |_| true), None);
        let port = free_port(&taken).unwrap();
        assert!(!taken.contains(&port));
        assert!(port < ephemeral_low() || member_port_range(ephemeral_low()).is_empty());
    }

    fn runtime(state_dir: &Path) -> LocalRuntime {
        let (pki, ca) = LocalPki::open(state_dir).unwrap();
        let control = ControlPlane::new(ca, vec!["127.0.0.1".into()], Duration::from_secs(3600));
        LocalRuntime::new(
            state_dir,
            SidecarCommand::binary("/nonexistent/etcd-sidecar".into()),
            "https://127.0.0.1:9",
            EtcdBinaries::from_env(),
            Arc::new(pki),
            control,
            Duration::from_secs(3600),
        )
    }

    fn member(name: &str, ordinal: u32) -> MemberRecord {
        MemberRecord {
            name: name.into(),
            ordinal,
            client_port: 1,
            peer_port: 2,
            grpc_port: 3,
            version: etcd_operator::version::DEFAULT_VERSION.to_string(),
            seed: ordinal == 0,
            pid: None,
            tls: false,
            host: None,
            netns: None,
        }
    }

    #[tokio::test]
    async fn a_record_that_cannot_be_read_stops_its_cluster_until_it_reads_again() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        // No record and no member: a new cluster.
        let new = ClusterKey::local("n");
        assert!(rt.members(&new).await.unwrap().is_empty());
        assert_eq!(rt.next_ordinal(&new).await.unwrap(), 0);

        let key = ClusterKey::local("t");
        let path = dir.path().join("t").join(CLUSTER_RECORD_FILE);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
        let e = rt.members(&key).await.unwrap_err().to_string();
        assert!(e.contains("t/cluster.json is not a cluster record"), "{e}");
        assert!(e.contains("nothing is created, started or deleted"), "{e}");
        assert!(rt.next_ordinal(&key).await.is_err());
        assert!(rt.start_member(&key, "t-0000").await.is_err());
        assert!(rt.renew_certificates(&key).await.is_err());
        let created = rt
            .create_member(
                &key,
                "t-0000",
                etcd_operator::version::DEFAULT_VERSION,
                true,
                false,
            )
            .await;
        assert!(created.is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"",
            "the record was not written"
        );
        // Read again at every pass: once restored, the cluster is back.
        write_record(
            &path,
            &ClusterRecord {
                next_ordinal: 2,
                members: vec![member("t-0001", 1)],
            },
        )
        .unwrap();
        assert_eq!(rt.next_ordinal(&key).await.unwrap(), 2);
        assert_eq!(rt.members(&key).await.unwrap()[0].name, "t-0001");

        // No record beside member directories: not a new cluster either.
        let lost = ClusterKey::local("m");
        std::fs::create_dir_all(dir.path().join("m").join("m-0003")).unwrap();
        let e = rt.members(&lost).await.unwrap_err().to_string();
        assert!(e.contains("m/cluster.json is missing"), "{e}");
        assert!(e.contains("members m-0003"), "{e}");
    }

    #[tokio::test]
    async fn a_deletion_recorded_and_not_finished_is_finished_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let key = ClusterKey::local("c");
        let cluster_dir = dir.path().join("c");
        for d in ["c-0000", "c-0002", "c-0005", "notes"] {
            std::fs::create_dir_all(cluster_dir.join(d)).unwrap();
        }
        write_record(
            &cluster_dir.join(CLUSTER_RECORD_FILE),
            &ClusterRecord {
                next_ordinal: 3,
                members: vec![member("c-0002", 2)],
            },
        )
        .unwrap();
        rt.members(&key).await.unwrap();
        // c-0000: used and no longer recorded, removed; c-0002 recorded; c-0005 not an
        // ordinal the record used; notes not a member.
        let left: Vec<String> = member_dirs(&cluster_dir, "c")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(left, ["c-0002", "c-0005"]);
        assert!(cluster_dir.join("notes").is_dir());
    }

    #[tokio::test]
    async fn a_sidecar_whose_pid_was_not_recorded_is_adopted_not_doubled() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let key = ClusterKey::local("c");
        let cluster_dir = dir.path().join("c");
        // A stand-in for a sidecar started by a coordinator that died before it recorded
        // the pid: a process whose arguments name the member and its directory.
        let mut stand_in = std::process::Command::new("sh")
            .args(["-c", "sleep 60; :", "sh", "--name=c-0000"])
            .arg(format!(
                "--data-dir={}",
                cluster_dir.join("c-0000").display()
            ))
            .spawn()
            .unwrap();
        let mut elsewhere = std::process::Command::new("sh")
            .args([
                "-c",
                "sleep 60; :",
                "sh",
                "--name=c-0001",
                "--data-dir=/elsewhere/c-0001",
            ])
            .spawn()
            .unwrap();
        // Its arguments are readable once the program runs (on a loaded machine, a moment
        // after `spawn` returns).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let found = loop {
            let found = member_processes(&cluster_dir);
            if found.contains_key("c-0000") || std::time::Instant::now() > deadline {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(found.get("c-0000"), Some(&stand_in.id()), "{found:?}");
        assert!(!found.contains_key("c-0001"), "{found:?}");
        write_record(
            &cluster_dir.join(CLUSTER_RECORD_FILE),
            &ClusterRecord {
                next_ordinal: 2,
                members: vec![member("c-0000", 0), member("c-0001", 1)],
            },
        )
        .unwrap();
        let members = rt.members(&key).await.unwrap();
        let running: Vec<(&str, bool)> = members
            .iter()
            .map(|m| (m.name.as_str(), m.running))
            .collect();
        assert_eq!(running, [("c-0000", true), ("c-0001", false)]);
        let record = read_record(&cluster_dir.join(CLUSTER_RECORD_FILE))
            .unwrap()
            .unwrap();
        assert_eq!(
            record.members[0].pid,
            Some(stand_in.id()),
            "recorded once found"
        );
        let _ = stand_in.kill();
        let _ = stand_in.wait();
        let _ = elsewhere.kill();
        let _ = elsewhere.wait();
    }

    /// An `etcd-sidecar` beside `coordinator` that prints `version` for `--version`.
    fn fake_sidecar(coordinator: &Path, version: &str) {
        let path = coordinator.with_file_name(SIDECAR_FILE);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{SIDECAR_FILE} {version}'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn local_mode_runs_the_sidecar_binary_beside_it_only_when_of_the_same_build() {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = dir.path().join("etcd-coordinator");
        let embedded = |sidecar: &SidecarCommand| {
            sidecar.program == coordinator && sidecar.args == ["sidecar", "run"]
        };

        let (sidecar, warning) = SidecarCommand::beside(coordinator.clone());
        assert!(embedded(&sidecar), "{sidecar:?}");
        let warning = warning.expect("a warning when there is no etcd-sidecar");
        assert!(warning.contains("is not there"), "{warning}");
        assert!(warning.contains("cargo build"), "{warning}");

        fake_sidecar(&coordinator, "0.0.1 (build 0000000000000000)");
        let (sidecar, warning) = SidecarCommand::beside(coordinator.clone());
        assert!(embedded(&sidecar), "{sidecar:?}");
        let warning = warning.expect("a warning when etcd-sidecar is of another build");
        assert!(warning.contains("another build"), "{warning}");

        fake_sidecar(&coordinator, etcd_sidecar::VERSION);
        let (sidecar, warning) = SidecarCommand::beside(coordinator.clone());
        assert_eq!(warning, None);
        assert_eq!(sidecar.program, dir.path().join(SIDECAR_FILE));
        assert_eq!(sidecar.args, ["run"]);
    }
}
