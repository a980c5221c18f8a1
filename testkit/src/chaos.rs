//! Fault injection under traffic over the local runtime, with every history checked
//! afterwards (`etcd-chaos`, and a short seeded run in the test suite).
//!
//! Each scenario starts a fresh local cluster through the real `etcd-coordinator` binary,
//! runs recorded client traffic ([`crate::traffic`]), injects one fault during one
//! operation, waits for the cluster to converge, and checks: linearizability and lost
//! writes ([`crate::checker`]), HashKV equal on every member, at most one membership change
//! in flight ([`crate::local_cluster::ClusterMonitor`]), and no removal that left fewer
//! healthy voters than quorum. A seed picks the scenario order and the victims, so a failing
//! seed replays the same faults in the same order.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use etcd_operator::proto::{ClusterStatus, ConditionStatus, ConditionType, MemberPhase};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    checker::{CheckOptions, Verdict, check},
    local_cluster::{
        ClusterMonitor, CoordinatorOptions, LocalCoordinator, condition, condition_is, is_running,
        member_phase, member_running,
    },
    rng::SeededRng,
    traffic::{Traffic, TrafficConfig, final_read, hash_kv_all},
};

/// The process and disk faults, each paired with the operation it strikes during.
pub const PROCESS: &[&str] = &[
    "kill-etcd",
    "kill-sidecar",
    "pause-leader-etcd",
    "partition-sidecar",
    "kill-coordinator-during-scale-up",
    "kill-sidecar-during-scale-down",
    "wipe-data-while-down",
    "kill-etcd-during-upgrade",
    "kill-etcd-during-replacement",
    "kill-majority",
    "kill-all",
    "wipe-majority",
    "kill-sidecar-during-backup",
    "kill-etcd-during-backup",
    "fill-quota",
    "fill-volume",
    "fill-volume-during-upgrade",
];

/// The backend quota of the `fill-quota` scenario, bytes.
const FILL_QUOTA: i64 = 16 << 20;

/// Scenarios that fault the network between members, in namespaces of their own
/// ([`crate::netns`]): they run inside a hub, and no member may be removed for them.
pub const NETWORK: &[&str] = &[
    "partition-leader",
    "partition-follower",
    "split-2-3",
    "one-way-loss",
    "lossy-slow-link",
    "coordinator-cut-off",
    "partition-during-scale-up",
    "partition-during-scale-down",
    "partition-during-replacement",
    "partition-during-upgrade",
    "partition-during-backup",
    "partition-during-defrag",
];

/// Every scenario: [`PROCESS`], then [`NETWORK`].
pub fn scenarios() -> impl Iterator<Item = &'static str> {
    PROCESS.iter().chain(NETWORK).copied()
}

/// How long a network fault holds: longer than the dead-after time the scenarios run with
/// (5 s), so that a coordinator that took a partition for a death would act on it.
const NETWORK_HOLD: Duration = Duration::from_secs(12);

/// Scenarios that lose data on purpose (a majority's data wiped, then a new cluster forced
/// from the survivor): their lost writes and checker verdict are reported, not failed.
const LOSSY: &[&str] = &["wipe-majority"];

/// How a run goes.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The `etcd-coordinator` binary.
    pub coordinator: PathBuf,
    /// Picks the order and the victims.
    pub seed: u64,
    /// Stop starting scenarios after this long (at least one runs, and every one named in
    /// `only`).
    pub duration: Duration,
    /// Only these scenarios (all when empty).
    pub only: Vec<String>,
    /// The version clusters start on; the upgrade scenario goes to `upgrade_to`.
    pub version: String,
    /// Target of the upgrade scenario.
    pub upgrade_to: String,
}

/// One scenario's line.
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    /// The fault.
    pub fault: String,
    /// The operation it struck during.
    pub operation: String,
    /// Operations recorded.
    pub operations: usize,
    /// Acknowledged writes lost.
    pub lost: usize,
    /// The checker's verdict; `None` when the scenario ended before the checker ran.
    pub verdict: Option<Verdict>,
    /// Most membership changes in flight at once.
    pub max_in_flight: usize,
    /// Consecutive member lists that differed by more than one change (each one a
    /// violation of one change at a time).
    pub step_violations: Vec<String>,
    /// Removals that left fewer healthy voters than quorum.
    pub quorum_broken: usize,
    /// From the fault (a network fault: from when it healed) to the cluster converged and
    /// the operation done.
    pub converge: Duration,
    /// Members whose HashKV disagreed.
    pub hash_mismatches: usize,
    /// What failed, when something did.
    pub error: Option<String>,
    /// The fault destroys data on purpose: lost writes are counted, not failed.
    pub loss_expected: bool,
    /// Members of the cluster before a network fault that were gone (or had a new id)
    /// once it converged: removed for a partition alone.
    pub partition_removals: usize,
}

impl ScenarioResult {
    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.broken_invariants().is_empty()
    }

    /// The invariants that did not hold (beside an error, which ends a scenario).
    pub fn broken_invariants(&self) -> Vec<String> {
        let mut broken = Vec::new();
        if !self.loss_expected {
            if self.lost > 0 {
                broken.push(format!("{} acknowledged writes lost", self.lost));
            }
            if self.verdict != Some(Verdict::Pass) {
                broken.push(format!(
                    "checker verdict {}",
                    self.verdict.map_or("none", Verdict::as_str)
                ));
            }
        }
        if self.max_in_flight > 1 {
            broken.push(format!("{} changes in flight at once", self.max_in_flight));
        }
        if !self.step_violations.is_empty() {
            broken.push(format!(
                "member lists changed by more than one step between samples: {:?}",
                self.step_violations
            ));
        }
        if self.quorum_broken > 0 {
            broken.push(format!("{} removals broke quorum", self.quorum_broken));
        }
        if self.hash_mismatches > 0 {
            broken.push(format!(
                "{} members' HashKV disagreed",
                self.hash_mismatches
            ));
        }
        if self.partition_removals > 0 {
            broken.push(format!(
                "{} members removed for a network fault alone",
                self.partition_removals
            ));
        }
        broken
    }
}

/// Every scenario's line, and the summary.
#[derive(Clone, Debug, Default)]
pub struct ChaosReport {
    /// One per scenario run.
    pub results: Vec<ScenarioResult>,
}

impl ChaosReport {
    /// Scenarios that failed.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed()).count()
    }

    /// Acknowledged writes lost, over all scenarios that must lose none.
    pub fn lost(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !r.loss_expected)
            .map(|r| r.lost)
            .sum()
    }

    /// Scenarios that must lose nothing whose histories were not linearizable.
    pub fn violations(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !r.loss_expected && r.verdict == Some(Verdict::Fail))
            .count()
    }

    /// The table and the summary line.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "| fault | operation | ops | lost | linearizable | in flight max | quorum broken | removed for a partition | converge | result |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.results {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} |\n",
                r.fault,
                r.operation,
                r.operations,
                r.lost,
                r.verdict.map_or("-", Verdict::as_str),
                r.max_in_flight,
                r.quorum_broken,
                if NETWORK.contains(&r.fault.as_str()) {
                    r.partition_removals.to_string()
                } else {
                    "-".to_string()
                },
                r.converge.as_secs_f64(),
                match &r.error {
                    None if r.passed() && r.loss_expected => {
                        format!("ok (data destroyed on purpose: {} writes lost)", r.lost)
                    }
                    None if r.passed() => "ok".to_string(),
                    None => format!("FAILED: {}", r.broken_invariants().join("; ")),
                    Some(e) => format!("FAILED: {e}"),
                }
            ));
        }
        out.push_str(&format!(
            "summary: scenarios {}, failed {}, acknowledged writes lost {}, linearizability violations {}\n",
            self.results.len(),
            self.failed(),
            self.lost(),
            self.violations()
        ));
        out
    }
}

impl ChaosReport {
    /// One row per scenario over all its runs, for a soak: runs, operations, lost writes,
    /// runs linearizable, most changes in flight, removals for a partition (network
    /// scenarios), converge time (median, the lower of the middle two for an even count, and
    /// slowest) over the runs that converged, and failed runs.
    pub fn per_scenario(&self) -> String {
        let mut out = String::from(
            "| scenario | runs | ops | lost | linearizable | in flight max | removed for a partition | converge median | converge max | failed |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let mut names: Vec<&str> = Vec::new();
        for r in &self.results {
            if !names.contains(&r.fault.as_str()) {
                names.push(&r.fault);
            }
        }
        names.sort_by_key(|n| scenarios().position(|s| s == *n).unwrap_or(usize::MAX));
        for name in names {
            let runs: Vec<&ScenarioResult> =
                self.results.iter().filter(|r| r.fault == name).collect();
            let mut converge: Vec<Duration> = runs
                .iter()
                .filter(|r| r.error.is_none())
                .map(|r| r.converge)
                .collect();
            converge.sort();
            let secs = |d: Option<&Duration>| {
                d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
            };
            let lost: usize = runs.iter().map(|r| r.lost).sum();
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} |\n",
                runs.len(),
                runs.iter().map(|r| r.operations).sum::<usize>(),
                if runs.iter().any(|r| r.loss_expected) {
                    format!("{lost} (on purpose)")
                } else {
                    lost.to_string()
                },
                runs.iter()
                    .filter(|r| r.verdict == Some(Verdict::Pass))
                    .count(),
                runs.len(),
                runs.iter().map(|r| r.max_in_flight).max().unwrap_or(0),
                if NETWORK.contains(&name) {
                    runs.iter()
                        .map(|r| r.partition_removals)
                        .sum::<usize>()
                        .to_string()
                } else {
                    "-".to_string()
                },
                secs(converge.get(converge.len().saturating_sub(1) / 2)),
                secs(converge.last()),
                runs.iter().filter(|r| !r.passed()).count(),
            ));
        }
        out
    }
}

/// Runs scenarios until `duration` has passed.
pub async fn run(options: &ChaosOptions) -> ChaosReport {
    let mut rng = SeededRng::new(options.seed);
    // Network scenarios need a hub; a run outside one (not root) leaves them out unless named.
    let in_hub = crate::netns::Hub::current().is_some();
    let mut pool: Vec<&str> = scenarios()
        .filter(|s| in_hub || !options.only.is_empty() || !NETWORK.contains(s))
        .filter(|s| options.only.is_empty() || options.only.iter().any(|o| o == s))
        .collect();
    // A seeded shuffle: the same seed runs the same scenarios in the same order.
    for i in (1..pool.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        pool.swap(i, j);
    }
    let started = Instant::now();
    let mut report = ChaosReport::default();
    let mut i = 0;
    // Scenarios named with `only` run at least once each; otherwise at least one runs.
    let at_least = if options.only.is_empty() {
        1
    } else {
        pool.len()
    };
    while !pool.is_empty() && (i < at_least || started.elapsed() < options.duration) {
        let name = pool[i % pool.len()];
        let scenario_seed = rng.next_u64();
        let result = run_one(options, name, scenario_seed).await;
        eprintln!(
            "{} {} during {}: {}",
            if result.passed() { "ok    " } else { "FAILED" },
            result.fault,
            result.operation,
            result.error.clone().unwrap_or_default()
        );
        report.results.push(result);
        i += 1;
    }
    report
}

/// Samples the coordinator's status to catch a removal that left fewer healthy voters than
/// quorum (faults make members unhealthy on their own; only a removal is the operator's).
struct QuorumWatch {
    broken: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl QuorumWatch {
    fn start(c: &LocalCoordinator) -> Self {
        let channel = c.channel();
        let cluster = c.cluster().to_string();
        let broken = Arc::new(Mutex::new(0));
        let b = Arc::clone(&broken);
        let task = tokio::spawn(async move {
            let mut previous: Option<ClusterStatus> = None;
            loop {
                if let Some(s) = crate::local_cluster::fetch_status(channel.clone(), &cluster).await
                {
                    if let Some(p) = &previous
                        && removal_broke_quorum(p, &s)
                    {
                        *b.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    }
                    previous = Some(s);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { broken, task }
    }

    fn broken(&self) -> usize {
        *self.broken.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// True when a voter of `before` is gone in `after` and the voters that remain did not have
/// a quorum of healthy members in `before`, while `before` itself had one: the removal, not
/// a fault, cost the quorum. Health is judged in `before`, as the planner saw it when it
/// chose the removal: a member killed between two samples is the fault's doing.
fn removal_broke_quorum(before: &ClusterStatus, after: &ClusterStatus) -> bool {
    let voter = |m: &&etcd_operator::proto::MemberStatus| !m.learner && !m.id.is_empty();
    let removed = before
        .members
        .iter()
        .filter(voter)
        .any(|m| !after.members.iter().any(|n| n.name == m.name));
    let voters_before: Vec<_> = before.members.iter().filter(voter).collect();
    let healthy_before = voters_before.iter().filter(|m| m.healthy).count();
    let remaining: Vec<_> = after.members.iter().filter(voter).collect();
    let remaining_healthy_before = remaining
        .iter()
        .filter(|n| voters_before.iter().any(|m| m.name == n.name && m.healthy))
        .count();
    removed
        && !remaining.is_empty()
        && healthy_before >= quorum(voters_before.len())
        && remaining_healthy_before < quorum(remaining.len())
}

impl Drop for QuorumWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

use etcd_operator::quorum;

/// Fills the cluster with about 32 MiB (so that a snapshot takes a while to stream), asks
/// for a backup, and kills the streaming member's sidecar (`sidecar`) or its etcd the moment
/// its snapshot starts arriving. Returns the member and whether the call succeeded anyway.
async fn kill_during_backup(c: &LocalCoordinator, sidecar: bool) -> anyhow::Result<(String, bool)> {
    let (victim, call) = backup_streaming(c).await?;
    if sidecar {
        c.kill_member(&victim)?;
    } else {
        let pid = sidecar_pid(c, &victim)?;
        signal(etcd_pid(pid)?, Signal::SIGKILL)?;
    }
    let (ok, _) = call.await??;
    Ok((victim, ok))
}

/// The backup call [`backup_streaming`] started: whether it succeeded, and its output.
type BackupCall = tokio::task::JoinHandle<anyhow::Result<(bool, String)>>;

/// Fills the cluster with about 32 MiB (so that a snapshot takes a while to stream), asks
/// for a backup, and returns once a member's snapshot starts arriving: that member, and the
/// call.
async fn backup_streaming(c: &LocalCoordinator) -> anyhow::Result<(String, BackupCall)> {
    let endpoints = (c.live_endpoints())();
    let value = vec![b'b'; 64 * 1024];
    let mut client = etcd_client::Client::connect(&endpoints, None).await?;
    for k in 0..512 {
        client
            .put(format!("backup-fill/{k:04}"), value.clone(), None)
            .await?;
    }
    let members: Vec<String> = c.members().into_iter().map(|m| m.name).collect();
    let scratch = |m: &str| {
        c.state_dir()
            .join(c.cluster())
            .join(m)
            .join("backup-scratch")
            .join("snapshot.db")
    };
    for m in &members {
        let _ = std::fs::remove_file(scratch(m));
    }
    let call = tokio::spawn(backup_cli_owned(
        c.coordinator_bin().to_path_buf(),
        c.cluster().to_string(),
        c.state_dir().to_path_buf(),
        c.control_addr().to_string(),
    ));
    let victim = crate::wait_for(
        "a snapshot to start streaming",
        Duration::from_secs(60),
        || {
            let found = members.iter().find(|m| scratch(m).exists()).cloned();
            async move { found }
        },
    )
    .await?;
    Ok((victim, call))
}

/// `etcd-coordinator backup` of `c`'s cluster: success, and what it printed.
async fn backup_cli(c: &LocalCoordinator) -> anyhow::Result<(bool, String)> {
    backup_cli_owned(
        c.coordinator_bin().to_path_buf(),
        c.cluster().to_string(),
        c.state_dir().to_path_buf(),
        c.control_addr().to_string(),
    )
    .await
}

async fn backup_cli_owned(
    bin: PathBuf,
    cluster: String,
    state_dir: PathBuf,
    control_addr: String,
) -> anyhow::Result<(bool, String)> {
    let out = tokio::process::Command::new(bin)
        .arg("backup")
        .arg(cluster)
        .arg(format!("--state-dir={}", state_dir.display()))
        .arg(format!("--control-addr={control_addr}"))
        .output()
        .await?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// The backups listed, as `etcd-coordinator backups -o json` gives them.
async fn list_backups(c: &LocalCoordinator) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = tokio::process::Command::new(c.coordinator_bin())
        .arg("backups")
        .arg(c.cluster())
        .arg(format!("--grpc-addr={}", c.addr()))
        .args(["-o", "json"])
        .output()
        .await?;
    if !out.status.success() {
        bail!("backups: {}", String::from_utf8_lossy(&out.stderr));
    }
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(parsed["backups"].as_array().cloned().unwrap_or_default())
}

/// Every listed backup is whole: its snapshot is in the (local, default) storage, under
/// `local/<cluster>/`, with the size and SHA-256 its metadata gives.
async fn check_backups_whole(c: &LocalCoordinator) -> anyhow::Result<()> {
    let dir = c
        .state_dir()
        .join("backups")
        .join("local")
        .join(c.cluster());
    for b in list_backups(c).await? {
        let name = b["name"].as_str().context("a backup name")?;
        let path = dir.join(format!("{name}.db"));
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "backup {name} is listed but {} is not there",
                path.display()
            )
        })?;
        let size: u64 = match &b["sizeBytes"] {
            serde_json::Value::String(s) => s.parse()?,
            v => v.as_u64().context("sizeBytes")?,
        };
        let sha: String = ring::digest::digest(&ring::digest::SHA256, &bytes)
            .as_ref()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        if bytes.len() as u64 != size || b["sha256"].as_str() != Some(sha.as_str()) {
            bail!(
                "backup {name} is listed half-written: {} bytes, sha256 {sha}; its metadata says {size} bytes, {}",
                bytes.len(),
                b["sha256"]
            );
        }
    }
    Ok(())
}

fn signal(pid: u32, sig: Signal) -> anyhow::Result<()> {
    kill(Pid::from_raw(pid as i32), sig).with_context(|| format!("{sig} to {pid}"))
}

/// The etcd child of a sidecar (spawned from any of its threads, so every thread's
/// children are read).
pub fn etcd_pid(sidecar: u32) -> anyhow::Result<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{sidecar}/task"))
        .with_context(|| format!("sidecar {sidecar} is not running"))?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return Ok(pid);
        }
    }
    bail!("sidecar {sidecar} has no etcd child")
}

fn sidecar_pid(c: &LocalCoordinator, name: &str) -> anyhow::Result<u32> {
    c.member(name)
        .and_then(|m| m.pid)
        .with_context(|| format!("no pid for {name}"))
}

fn member_id(s: &ClusterStatus, name: &str) -> anyhow::Result<String> {
    s.members
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.id.clone())
        .with_context(|| format!("{name} is not in the status"))
}

fn sidecar_pid_recorded(c: &LocalCoordinator, name: &str) -> Option<u32> {
    c.member(name).and_then(|m| m.pid)
}

/// Waits until process `pid` is gone (a killed sidecar, so its data may be touched).
async fn wait_gone(pid: Option<u32>) -> anyhow::Result<()> {
    let Some(pid) = pid else { return Ok(()) };
    crate::wait_for(
        "a killed sidecar to be gone",
        Duration::from_secs(10),
        || async { (!crate::local_cluster::pid_alive(pid)).then_some(()) },
    )
    .await
}

fn pick<'a>(
    rng: &mut SeededRng,
    s: &'a ClusterStatus,
    leader: Option<bool>,
) -> anyhow::Result<&'a str> {
    let candidates: Vec<&str> = s
        .members
        .iter()
        .filter(|m| leader.is_none_or(|l| m.leader == l))
        .map(|m| m.name.as_str())
        .collect();
    if candidates.is_empty() {
        bail!("no member to pick");
    }
    Ok(candidates[rng.below(candidates.len() as u64) as usize])
}

const CONVERGE: Duration = Duration::from_secs(180);

/// How long a scheduled defragmentation round may take to reach a member: the schedule
/// fires once a minute.
const DEFRAG_WAIT: Duration = Duration::from_secs(150);

/// Wipes a follower's data while it is down and waits until its replacement is created;
/// returns the wiped member. The coordinator is stopped while the data goes, so that
/// nothing restarts the member on it first.
async fn replace_wiped_follower(
    c: &mut LocalCoordinator,
    rng: &mut SeededRng,
    initial: &ClusterStatus,
) -> anyhow::Result<String> {
    let victim = pick(rng, initial, Some(false))?.to_string();
    c.crash();
    c.kill_member(&victim)?;
    wait_gone(sidecar_pid_recorded(c, &victim)).await?;
    let dir = c.state_dir().join(c.cluster()).join(&victim).join("etcd");
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    c.restart().await?;
    let size = initial.members.len();
    c.wait_until("the replacement created", CONVERGE, |s| {
        s.members.len() == size && s.members.iter().all(|m| m.name != victim)
    })
    .await?;
    Ok(victim)
}

/// A member picked among those not themselves leaving (still recorded, healthy, running).
async fn staying_member(
    c: &LocalCoordinator,
    rng: &mut SeededRng,
    leader: Option<bool>,
) -> anyhow::Result<String> {
    let mut status = c.status().await.context("status")?;
    status.members.retain(|m| {
        m.healthy
            && member_phase(m) == MemberPhase::Running
            && c.member(&m.name).is_some_and(|r| member_running(&r))
    });
    Ok(pick(rng, &status, leader)?.to_string())
}

/// Overwrites a few keys outside the traffic's with 96 KiB values until etcd refuses a write
/// for space (NOSPACE); returns the writes acknowledged before.
async fn fill_until_nospace(c: &LocalCoordinator) -> anyhow::Result<usize> {
    const KEYS: usize = 8;
    const VALUE: usize = 96 * 1024;
    let endpoints = (c.live_endpoints())();
    let mut client = crate::clients::etcd_client(&endpoints).await?;
    let value = "x".repeat(VALUE);
    let mut acknowledged = 0;
    for i in 0..(4 * FILL_QUOTA as usize / VALUE) {
        match client
            .put(format!("chaos-fill/{}", i % KEYS), value.as_str(), None)
            .await
        {
            Ok(_) => acknowledged += 1,
            Err(e) if e.to_string().contains("database space exceeded") => return Ok(acknowledged),
            // Another failure (a leader change under the load): the next write goes on.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    bail!("no write was refused for space after {acknowledged} writes of {VALUE} bytes")
}

/// Overwrites a few keys outside the traffic's with 1 MiB values until the status shows
/// DISKFULL on `member` (its volume is full and its etcd exited); returns the writes made.
async fn fill_until_disk_full(c: &LocalCoordinator, member: &str) -> anyhow::Result<usize> {
    const KEYS: usize = 4;
    let endpoints = (c.live_endpoints())();
    let mut client = crate::clients::etcd_client(&endpoints).await?;
    let value = "v".repeat(1 << 20);
    let deadline = Instant::now() + CONVERGE;
    let mut i = 0;
    loop {
        if let Some(s) = c.status().await
            && s.members
                .iter()
                .any(|m| m.name == member && m.alarms.iter().any(|a| a == "DISKFULL"))
        {
            if condition(&s, ConditionType::Alarm).is_none_or(|a| a.reason != "DiskFull") {
                bail!("DISKFULL on {member} but not in the Alarm condition");
            }
            return Ok(i);
        }
        if Instant::now() > deadline {
            bail!("no DISKFULL on {member} after {i} writes of 1 MiB");
        }
        // A write in flight on the member as it exits may fail: the next one goes on.
        if client
            .put(format!("chaos-volume/{}", i % KEYS), value.as_str(), None)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        i += 1;
    }
}

/// The fragmentation from which the `partition-during-defrag` round defragments a member.
const DEFRAG_PERCENT: i32 = 20;

/// Writes about 8 MiB in large values over a few keys outside the traffic's, then deletes
/// them, so that a compaction leaves most of every backend free pages: more than the
/// traffic fills again while a defragmentation round goes through the members.
async fn write_and_delete_large_values(c: &LocalCoordinator) -> anyhow::Result<()> {
    const KEYS: usize = 4;
    const VALUE: usize = 64 * 1024;
    let endpoints = (c.live_endpoints())();
    let mut client = crate::clients::etcd_client(&endpoints).await?;
    let value = "x".repeat(VALUE);
    let mut written = 0;
    let mut attempts = 0;
    while written < (8 << 20) / VALUE {
        attempts += 1;
        if attempts > 1000 {
            bail!("only {written} large writes were acknowledged");
        }
        match client
            .put(
                format!("chaos-defrag/{}", written % KEYS),
                value.as_str(),
                None,
            )
            .await
        {
            Ok(_) => written += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    for key in 0..KEYS {
        client
            .delete(format!("chaos-defrag/{key}"), None)
            .await
            .context("deleting the large values")?;
    }
    Ok(())
}

/// Compacts the cluster to its current revision, as a user would before a
/// defragmentation; returns the revision.
async fn compact_now(c: &LocalCoordinator) -> anyhow::Result<i64> {
    let endpoints = (c.live_endpoints())();
    let mut client = crate::clients::etcd_client(&endpoints).await?;
    let revision = client
        .get("chaos-compact-probe", None)
        .await
        .context("reading the revision")?
        .header()
        .context("a response header")?
        .revision();
    client
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .with_context(|| format!("compacting at {revision}"))?;
    Ok(revision)
}

/// The members the coordinator logged as defragmented, in order, once there are at least
/// `count` of them.
async fn wait_defragmented(
    c: &LocalCoordinator,
    count: usize,
    deadline: Duration,
) -> anyhow::Result<Vec<String>> {
    let log = c.stderr_path();
    crate::wait::wait_for("members defragmented", deadline, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let done = defragmented_in(&text);
        (done.len() >= count).then_some(done)
    })
    .await
}

/// The members a coordinator log says were defragmented, each once, in order.
fn defragmented_in(log: &str) -> Vec<String> {
    let mut done: Vec<String> = Vec::new();
    for line in log.lines().filter(|l| l.contains(" defragmented ")) {
        let Some(name) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("member="))
        else {
            continue;
        };
        if !done.iter().any(|d| d == name) {
            done.push(name.to_string());
        }
    }
    done
}

/// Members of `before` (the cluster as a network fault began) that are gone from `after`,
/// or there under another id, beyond the removals that shrinking to `size` makes: the
/// members removed for the fault alone. A member that had no id yet (a learner not yet
/// added) is matched by name.
fn removed_for_partition(before: &ClusterStatus, after: &ClusterStatus, size: usize) -> usize {
    let gone = before
        .members
        .iter()
        .filter(|m| {
            !after
                .members
                .iter()
                .any(|a| a.name == m.name && (m.id.is_empty() || a.id == m.id))
        })
        .count();
    gone.saturating_sub(before.members.len().saturating_sub(size))
}

async fn run_one(options: &ChaosOptions, name: &str, seed: u64) -> ScenarioResult {
    let mut result = ScenarioResult {
        fault: name.to_string(),
        operation: String::new(),
        operations: 0,
        lost: 0,
        verdict: None,
        max_in_flight: 0,
        step_violations: Vec::new(),
        quorum_broken: 0,
        converge: Duration::ZERO,
        hash_mismatches: 0,
        error: None,
        loss_expected: LOSSY.contains(&name),
        partition_removals: 0,
    };
    if let Err(e) = scenario(options, name, seed, &mut result).await {
        result.error = Some(format!("{e:#}"));
    }
    result
}

fn manifest_file(dir: &Path, size: i32, version: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("chaos.yaml");
    crate::local_cluster::write_atomically(
        &path,
        &crate::local_cluster::manifest("chaos", size, version),
    )?;
    Ok(path)
}

async fn scenario(
    options: &ChaosOptions,
    name: &str,
    seed: u64,
    result: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let mut rng = SeededRng::new(seed);
    let v = options.version.clone();
    let start_size = if [
        "kill-sidecar-during-scale-down",
        "partition-during-scale-down",
        "split-2-3",
    ]
    .contains(&name)
    {
        5
    } else {
        3
    };
    let dir = tempfile::tempdir()?;
    let manifest = manifest_file(dir.path(), start_size, &v)?;
    if name == "fill-quota" {
        crate::local_cluster::write_atomically(
            &manifest,
            &format!(
                "{}  maintenance:\n    quotaBackendBytes: {FILL_QUOTA}\n",
                crate::local_cluster::manifest("chaos", start_size, &v)
            ),
        )?;
    }
    let mut coordinator =
        CoordinatorOptions::new(&options.coordinator, manifest).dead_after_secs(5);
    if NETWORK.contains(&name) {
        let hub = crate::netns::Hub::current().context(
            "network scenarios run inside a hub of their own: etcd-chaos makes one (as root)",
        )?;
        coordinator = coordinator.member_netns(&hub);
    }
    let mut c = LocalCoordinator::start(coordinator).await?;
    // A member's volume of its own (`fill-volume`), unmounted after the coordinator and
    // everything it started have stopped.
    let mut volume: Option<crate::volume::Tmpfs> = None;
    let initial = c.wait_running(start_size as usize, &v, CONVERGE).await?;
    let endpoints: Vec<String> = (c.live_endpoints())();
    let monitor = ClusterMonitor::start(&c);
    let quorum = QuorumWatch::start(&c);
    let config = TrafficConfig {
        seed,
        op_interval: Duration::from_millis(20),
        ..TrafficConfig::default()
    };
    let keys = config.key_names();
    let traffic = Traffic::start(config, &endpoints).await?;
    // Some traffic before the fault.
    let warmup = Instant::now() + Duration::from_secs(2);
    while Instant::now() < warmup {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fault_at = Instant::now();
    // The cluster as a network fault began (no member of it may be removed for the fault),
    // and when the fault healed.
    let mut faulted: Option<(ClusterStatus, Instant)> = None;
    let (operation, expect_size, expect_version) = inject(
        &mut c,
        name,
        &initial,
        &mut rng,
        options,
        &mut faulted,
        &mut volume,
    )
    .await?;
    // A network fault is timed from when it healed.
    let since = match &faulted {
        Some((_, healed)) => *healed,
        None if NETWORK.contains(&name) => Instant::now(),
        None => fault_at,
    };
    result.operation = operation;
    c.wait_running(expect_size, &expect_version, CONVERGE)
        .await?;
    result.converge = since.elapsed();
    // Some traffic after convergence.
    let cooldown = Instant::now() + Duration::from_secs(2);
    while Instant::now() < cooldown {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = traffic.stop().await;
    let members: Vec<String> = (c.live_endpoints())();
    let final_state = final_read(&members, &keys, Duration::from_secs(30)).await?;
    let report = tokio::task::spawn_blocking(move || {
        check(&history, Some(&final_state), &CheckOptions::default())
    })
    .await?;
    result.operations = report.counts.total;
    result.lost = report.lost_writes.len();
    result.verdict = Some(report.verdict());
    let hashes = hash_kv_all(&members, None).await?;
    result.hash_mismatches = crate::checker::compare_hashes(&hashes)
        .iter()
        .map(|m| m.disagreeing.len())
        .sum();
    let log = monitor.log();
    // In flight: learners at once, and members joining or leaving at once; and never two
    // changes between consecutive member lists (a replacement that removes its stale entry
    // and adds itself on the same peer URL under one grant counts one).
    result.max_in_flight = log.max_learners.max(log.max_in_transition);
    result.step_violations = log.step_violations.clone();
    result.quorum_broken = quorum.broken();
    if NETWORK.contains(&name) {
        // Every member from before the fault is still there under its id, beyond the
        // removals the operation itself makes (a scale-down's): none was removed (and
        // replaced) for a partition alone.
        let before = faulted.as_ref().map_or(&initial, |(before, _)| before);
        let after = c.status().await.context("status after the fault")?;
        result.partition_removals = removed_for_partition(before, &after, expect_size);
    }
    if !report.is_pass() && !result.loss_expected {
        bail!("checker: {report}");
    }
    Ok(())
}

/// Injects `name`'s fault during its operation; returns the operation and what the cluster
/// must converge to.
async fn inject(
    c: &mut LocalCoordinator,
    name: &str,
    initial: &ClusterStatus,
    rng: &mut SeededRng,
    options: &ChaosOptions,
    faulted: &mut Option<(ClusterStatus, Instant)>,
    volume: &mut Option<crate::volume::Tmpfs>,
) -> anyhow::Result<(String, usize, String)> {
    let v = options.version.clone();
    Ok(match name {
        "kill-etcd" => {
            let victim = pick(rng, initial, None)?;
            let sidecar = sidecar_pid(c, victim)?;
            let old = etcd_pid(sidecar)?;
            signal(old, Signal::SIGKILL)?;
            // Converged means: the sidecar restarted etcd, and the cluster is whole again.
            let deadline = Instant::now() + CONVERGE;
            while etcd_pid(sidecar).is_ok_and(|p| p == old) || etcd_pid(sidecar).is_err() {
                if Instant::now() > deadline {
                    bail!("the sidecar did not restart its etcd");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ("steady writes".into(), 3, v)
        }
        "kill-sidecar" => {
            // Data intact: the member comes back on it, under the same id.
            let victim = pick(rng, initial, None)?.to_string();
            let id = member_id(initial, &victim)?;
            c.kill_member(&victim)?;
            c.wait_until("the victim back on its data", CONVERGE, |s| {
                s.members
                    .iter()
                    .any(|m| m.name == victim && m.id == id && m.healthy && m.restarts >= 1)
            })
            .await?;
            ("restart on data".into(), 3, v)
        }
        "kill-majority" | "kill-all" => {
            // A host crash: quorum lost, every byte of data still there.
            let count = if name == "kill-all" { 3 } else { 2 };
            let mut victims: Vec<String> = initial.members.iter().map(|m| m.name.clone()).collect();
            while victims.len() > count {
                victims.remove(rng.below(victims.len() as u64) as usize);
            }
            for victim in &victims {
                c.kill_member(victim)?;
            }
            let ids: Vec<(String, String)> = initial
                .members
                .iter()
                .map(|m| (m.name.clone(), m.id.clone()))
                .collect();
            // Back means restarted (a restart counted for every victim), not a status from
            // before the kill.
            c.wait_until("every member back on its data, same ids", CONVERGE, |s| {
                is_running(s, 3, &v)
                    && ids
                        .iter()
                        .all(|(n, id)| s.members.iter().any(|m| &m.name == n && &m.id == id))
                    && victims.iter().all(|n| {
                        s.members
                            .iter()
                            .any(|m| &m.name == n && m.healthy && m.restarts >= 1)
                    })
            })
            .await?;
            (format!("{count} of 3 killed at once, data intact"), 3, v)
        }
        "wipe-majority" => {
            // Two of three killed with their data wiped: under Manual nothing is touched;
            // then ForceNewCluster brings the survivor back as a one-member cluster that
            // grows to 3. Writes acknowledged only by the wiped members may be lost.
            let survivor = pick(rng, initial, None)?.to_string();
            c.crash();
            for m in initial.members.iter().filter(|m| m.name != survivor) {
                c.kill_member(&m.name)?;
                let dir = c.state_dir().join(c.cluster()).join(&m.name).join("etcd");
                wait_gone(sidecar_pid_recorded(c, &m.name)).await?;
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            c.restart().await?;
            c.wait_until("QuorumLost: data lost", CONVERGE, |s| {
                condition(s, ConditionType::QuorumLost)
                    .is_some_and(|k| k.status() == ConditionStatus::True && k.reason == "DataLost")
            })
            .await?;
            let names: Vec<String> = initial.members.iter().map(|m| m.name.clone()).collect();
            let window = Instant::now() + Duration::from_secs(5);
            while Instant::now() < window {
                if let Some(s) = c.status().await
                    && s.members.iter().map(|m| &m.name).ne(names.iter())
                {
                    bail!("members changed under Manual: {:?}", s.members);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            c.write_manifest(&format!(
                "{}  recovery:\n    quorumLoss: ForceNewCluster\n",
                crate::local_cluster::manifest(c.cluster(), 3, &v)
            ))?;
            ("2 of 3 wiped: Manual, then ForceNewCluster".into(), 3, v)
        }
        "kill-sidecar-during-backup" | "kill-etcd-during-backup" => {
            let (victim, cli_ok) =
                kill_during_backup(c, name == "kill-sidecar-during-backup").await?;
            // Whatever the kill interrupted is never listed half-written.
            check_backups_whole(c).await?;
            c.wait_running(3, &v, CONVERGE).await?;
            // And the next backup succeeds, proven restorable.
            let (ok, out) = backup_cli(c).await?;
            if !ok {
                bail!("the next backup failed: {out}");
            }
            check_backups_whole(c).await?;
            let listed = list_backups(c).await?;
            let name_taken = out
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            if !listed
                .iter()
                .any(|b| b["name"] == name_taken.as_str() && b["verified"] == true)
            {
                bail!("the next backup {name_taken} is not listed verified: {listed:?}");
            }
            (
                format!(
                    "backup streaming from {victim} (the interrupted call {})",
                    if cli_ok { "had finished" } else { "failed" }
                ),
                3,
                v,
            )
        }
        "fill-quota" => {
            // Every member's backend reaches its quota while the recorded traffic runs:
            // etcd raises NOSPACE and refuses writes. The operator shows the alarm, replaces
            // no member for it, and (spec.maintenance set, noSpace not Manual) compacts,
            // defragments one member at a time and disarms; writes are accepted again.
            let ids: Vec<(String, String)> = initial
                .members
                .iter()
                .map(|m| (m.name.clone(), m.id.clone()))
                .collect();
            let writes = fill_until_nospace(c).await?;
            c.wait_until("the NOSPACE alarm shown", CONVERGE, |s| {
                condition(s, ConditionType::Alarm)
                    .is_some_and(|k| k.status() == ConditionStatus::True && k.reason == "NoSpace")
            })
            .await?;
            let cleared = c
                .wait_until("the alarm cleared", CONVERGE, |s| {
                    condition_is(s, ConditionType::Alarm, ConditionStatus::False)
                })
                .await?;
            for (name, id) in &ids {
                if !cleared
                    .members
                    .iter()
                    .any(|m| &m.name == name && &m.id == id)
                {
                    bail!(
                        "{name} ({id}) was replaced for a full backend: {:?}",
                        cleared.members
                    );
                }
            }
            (
                format!(
                    "backend quota ({} MiB) reached after {writes} writes of 96 KiB: NOSPACE, then compacted, defragmented and disarmed",
                    FILL_QUOTA >> 20
                ),
                3,
                v,
            )
        }
        "fill-volume" | "fill-volume-during-upgrade" => {
            // A follower is replaced by a member whose data directory is on a 640 MiB
            // volume of its own; then something else fills that volume for twice the
            // dead-after (in a rolling upgrade, once its first member is upgraded). Its etcd
            // exits, DISKFULL shows, and it is not replaced while the volume is full; the
            // other two take the traffic, and an upgrade takes no further step (one under
            // way may finish). Once space is back the member runs again on its data, or is
            // replaced if etcd cannot start on what it half wrote.
            let upgrade = name == "fill-volume-during-upgrade";
            let small = c.member_name(c.next_ordinal());
            let tmpfs = volume.insert(crate::volume::Tmpfs::mount(&c.data_dir(&small), "640m")?);
            let follower = pick(rng, initial, Some(false))?.to_string();
            c.delete_member(&follower)?;
            let placed = c
                .wait_until(&format!("{small} in place of {follower}"), CONVERGE, |s| {
                    is_running(s, 3, &v) && s.members.iter().any(|m| m.name == small)
                })
                .await?;
            let id = member_id(&placed, &small)?;
            let to = options.upgrade_to.clone();
            let upgraded = |s: &ClusterStatus| s.members.iter().filter(|m| m.version == to).count();
            if upgrade {
                c.set_spec(3, &to)?;
                c.wait_until("a first member upgraded", CONVERGE, |s| upgraded(s) >= 1)
                    .await?;
            }
            let filler = tmpfs.keep_full()?;
            let seen = fill_until_disk_full(c, &small).await?;
            let upgraded_when_full = upgraded(&c.status().await.context("status")?);
            let held_until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < held_until {
                if let Some(s) = c.status().await
                    && !s.members.iter().any(|m| m.name == small && m.id == id)
                {
                    bail!(
                        "{small} was replaced while its volume was full: {:?}",
                        s.members
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let upgraded_held = upgraded(&c.status().await.context("status")?);
            if upgraded_held > upgraded_when_full + 1 {
                bail!(
                    "the upgrade went on from {upgraded_when_full} to {upgraded_held} members while one was down"
                );
            }
            drop(filler);
            let version = if upgrade { to.clone() } else { v.clone() };
            let back = c
                .wait_until("the member back, or replaced", CONVERGE, |s| {
                    is_running(s, 3, &version)
                })
                .await?;
            let outcome = if back.members.iter().any(|m| m.name == small && m.id == id) {
                "ran again on its data"
            } else {
                "replaced: etcd could not start on its data"
            };
            let during = if upgrade {
                format!(
                    "rolling upgrade {} to {to}: after its first member, ",
                    options.version
                )
            } else {
                String::new()
            };
            (
                format!(
                    "{during}a member's 640 MiB volume kept full 10 s (DISKFULL after {seen} write{} of 1 MiB), then freed: it {outcome}",
                    if seen == 1 { "" } else { "s" }
                ),
                3,
                version,
            )
        }
        "pause-leader-etcd" => {
            let victim = pick(rng, initial, Some(true))?;
            let pid = etcd_pid(sidecar_pid(c, victim)?)?;
            signal(pid, Signal::SIGSTOP)?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            signal(pid, Signal::SIGCONT)?;
            ("leader paused 3 s (election timeout 1 s)".into(), 3, v)
        }
        "partition-sidecar" => {
            // The sidecar stops talking to the coordinator (it is frozen) while its etcd
            // serves: longer than the dead-after time, and it must not be removed.
            let victim = pick(rng, initial, None)?.to_string();
            let id = initial
                .members
                .iter()
                .find(|m| m.name == victim)
                .map(|m| m.id.clone());
            let pid = sidecar_pid(c, &victim)?;
            signal(pid, Signal::SIGSTOP)?;
            tokio::time::sleep(Duration::from_secs(12)).await;
            let during = c.status().await;
            signal(pid, Signal::SIGCONT)?;
            if let Some(s) = during
                && s.members
                    .iter()
                    .find(|m| m.name == victim)
                    .map(|m| m.id.clone())
                    != id
            {
                bail!("{victim} was removed while only its control path was cut");
            }
            (
                "sidecar cut off from the coordinator 12 s (dead-after 5 s)".into(),
                3,
                v,
            )
        }
        "kill-coordinator-during-scale-up" => {
            c.set_spec(5, &v)?;
            let deadline = Instant::now() + CONVERGE;
            while c.members().len() < 4 {
                if Instant::now() > deadline {
                    bail!("no fourth member was created");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            c.crash();
            c.restart().await?;
            ("scale up 3 to 5".into(), 5, v)
        }
        "kill-sidecar-during-scale-down" => {
            c.set_spec(3, &v)?;
            c.wait_until("a first member gone", CONVERGE, |s| s.members.len() < 5)
                .await?;
            let victim = staying_member(c, rng, Some(false)).await?;
            c.kill_member(&victim)?;
            ("scale down 5 to 3".into(), 3, v)
        }
        "wipe-data-while-down" => {
            let victim = pick(rng, initial, Some(false))?.to_string();
            c.crash();
            c.kill_member(&victim)?;
            let dir = c.state_dir().join(c.cluster()).join(&victim).join("etcd");
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            c.restart().await?;
            ("member restarted on an empty data dir".into(), 3, v)
        }
        "kill-etcd-during-upgrade" => {
            let to = options.upgrade_to.clone();
            c.set_spec(3, &to)?;
            let to2 = to.clone();
            c.wait_until("a first member upgraded", CONVERGE, |s| {
                s.members.iter().any(|m| m.version == to2)
            })
            .await?;
            let status = c.status().await.context("status")?;
            let old: Vec<String> = status
                .members
                .iter()
                .filter(|m| m.version != to)
                .map(|m| m.name.clone())
                .collect();
            if let Some(victim) = old.first() {
                signal(etcd_pid(sidecar_pid(c, victim)?)?, Signal::SIGKILL)?;
            }
            (
                format!("rolling upgrade {} to {to}", options.version),
                3,
                to,
            )
        }
        "kill-etcd-during-replacement" => {
            // A member whose data is gone is replaced; once the replacement is created,
            // another member's etcd is killed.
            let victim = replace_wiped_follower(c, rng, initial).await?;
            let status = c.status().await.context("status")?;
            let other = status
                .members
                .iter()
                .find(|m| m.healthy && !m.leader && m.name != victim)
                .map(|m| m.name.clone());
            if let Some(other) = other {
                signal(etcd_pid(sidecar_pid(c, &other)?)?, Signal::SIGKILL)?;
            }
            ("replacement".into(), 3, v)
        }
        network if NETWORK.contains(&network) => {
            let mut victim = None;
            let (during, size, version) = match network {
                "partition-during-scale-up" => {
                    c.set_spec(5, &v)?;
                    ("scale up 3 to 5".to_string(), 5, v)
                }
                "partition-during-scale-down" => {
                    // Once the first member is gone, a member that is not itself leaving
                    // is cut off while the second removal is decided.
                    c.set_spec(3, &v)?;
                    c.wait_until("a first member gone", CONVERGE, |s| s.members.len() < 5)
                        .await?;
                    victim = Some(staying_member(c, rng, None).await?);
                    ("scale down 5 to 3".to_string(), 3, v)
                }
                "partition-during-replacement" => {
                    // A member whose data is gone is replaced (as in
                    // kill-etcd-during-replacement); once its replacement is created, one
                    // member (the replacement itself, or one whose data is whole) is cut off
                    // while the replacement joins.
                    let gone = replace_wiped_follower(c, rng, initial).await?;
                    let status = c.status().await.context("status")?;
                    victim = Some(pick(rng, &status, None)?.to_string());
                    (format!("replacement of {gone}, its data gone"), 3, v)
                }
                "partition-during-defrag" => {
                    // A scheduled defragmentation round over members whose backends are
                    // mostly free pages (large values written, then compacted away): once
                    // the first member is defragmented, the leader (still to go, last) is
                    // cut off; afterwards every member must have been defragmented.
                    write_and_delete_large_values(c).await?;
                    let revision = compact_now(c).await?;
                    c.write_manifest(&format!(
                        "{}  maintenance:\n    defragment:\n      schedule: \"* * * * *\"\n      fragmentationPercent: {DEFRAG_PERCENT}\n",
                        crate::local_cluster::manifest(c.cluster(), 3, &v)
                    ))?;
                    let first = wait_defragmented(c, 1, DEFRAG_WAIT).await?;
                    let status = c.status().await.context("status")?;
                    let fault = network_fault(c, network, None, rng, faulted).await?;
                    let all: Vec<String> = status.members.iter().map(|m| m.name.clone()).collect();
                    let done = wait_defragmented(c, all.len(), DEFRAG_WAIT).await?;
                    if let Some(missing) = all.iter().find(|n| !done.contains(n)) {
                        bail!("{missing} was never defragmented in the round: {done:?}");
                    }
                    return Ok((
                        format!(
                            "defragmentation round after compaction at {revision} ({} first); {fault}; then {}",
                            first.join(", "),
                            done.join(", ")
                        ),
                        3,
                        v,
                    ));
                }
                "partition-during-upgrade" => {
                    let to = options.upgrade_to.clone();
                    c.set_spec(3, &to)?;
                    (format!("rolling upgrade {v} to {to}"), 3, to)
                }
                "partition-during-backup" => {
                    // The member streaming the snapshot is cut off from the others.
                    let (streaming, call) = backup_streaming(c).await?;
                    let fault = network_fault(c, network, Some(&streaming), rng, faulted).await?;
                    let (ok, _) = call.await??;
                    // Whatever the partition interrupted is never listed half-written, and
                    // the next backup, asked for as the partition heals, succeeds.
                    check_backups_whole(c).await?;
                    let (next, out) = backup_cli(c).await?;
                    if !next {
                        bail!("the backup after the partition failed: {out}");
                    }
                    check_backups_whole(c).await?;
                    return Ok((
                        format!(
                            "backup streaming from {streaming} (the call {}); {fault}",
                            if ok { "succeeded" } else { "failed" }
                        ),
                        3,
                        v,
                    ));
                }
                _ => ("steady writes".to_string(), initial.members.len(), v),
            };
            let fault = network_fault(c, network, victim.as_deref(), rng, faulted).await?;
            (format!("{during}; {fault}"), size, version)
        }
        other => bail!("unknown scenario {other}"),
    })
}

/// Applies network fault `name` for [`NETWORK_HOLD`], sampling the status meanwhile, then
/// heals it; returns what it did. The faults are healed when this returns or fails.
async fn network_fault(
    c: &LocalCoordinator,
    name: &str,
    victim: Option<&str>,
    rng: &mut SeededRng,
    faulted: &mut Option<(ClusterStatus, Instant)>,
) -> anyhow::Result<String> {
    let status = c.status().await.context("status")?;
    let before = status.clone();
    let records = c.members();
    let place = |member: &str| -> anyhow::Result<(String, String)> {
        let r = records
            .iter()
            .find(|r| r.name == member)
            .with_context(|| format!("{member} is not recorded"))?;
        let ns = r
            .netns
            .clone()
            .with_context(|| format!("{member} has no network namespace of its own"))?;
        Ok((ns, r.host().to_string()))
    };
    let names: Vec<String> = status.members.iter().map(|m| m.name.clone()).collect();
    let mut faults = crate::netns::Faults::new();
    let what = match name {
        "partition-leader"
        | "partition-follower"
        | "partition-during-scale-up"
        | "partition-during-scale-down"
        | "partition-during-replacement"
        | "partition-during-upgrade"
        | "partition-during-backup"
        | "partition-during-defrag" => {
            let leader = ["partition-leader", "partition-during-defrag"].contains(&name);
            let victim = match victim {
                Some(v) => v.to_string(),
                None => pick(rng, &status, Some(leader))?.to_string(),
            };
            let (ns, _) = place(&victim)?;
            for other in names.iter().filter(|n| **n != victim) {
                faults.cut(&ns, &place(other)?.1)?;
            }
            format!(
                "{} {victim} cut off from every other member",
                match name {
                    _ if leader => "leader",
                    "partition-during-backup" | "partition-during-replacement" => "member",
                    _ => "follower",
                }
            )
        }
        "split-2-3" => {
            let mut shuffled = names.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let (two, three) = shuffled.split_at(2);
            for a in two {
                let (ns, _) = place(a)?;
                for b in three {
                    faults.cut(&ns, &place(b)?.1)?;
                }
            }
            format!("{} split from {}", two.join(" and "), three.join(", "))
        }
        "one-way-loss" => {
            let from = pick(rng, &status, None)?.to_string();
            let to = names
                .iter()
                .filter(|n| **n != from)
                .nth(rng.below(names.len() as u64 - 1) as usize)
                .context("a second member")?
                .clone();
            faults.drop_outgoing(&place(&from)?.0, &place(&to)?.1)?;
            format!("{from} to {to} dropped, {to} to {from} passes")
        }
        "lossy-slow-link" => {
            let victim = pick(rng, &status, None)?.to_string();
            let (ns, _) = place(&victim)?;
            faults.lossy(&ns, 0.3)?;
            faults.slow(&ns, 1024, 200)?;
            format!("{victim}: 30% of packets lost, 1 Mbit/s queued up to 200 ms")
        }
        "coordinator-cut-off" => {
            let gateway = crate::netns::GATEWAY.to_string();
            let control = c.control_addr().port();
            for member in &names {
                let (ns, _) = place(member)?;
                let grpc = records
                    .iter()
                    .find(|r| &r.name == member)
                    .map_or(7401, |r| r.grpc_port);
                faults.cut_to_port(&ns, &gateway, control)?;
                faults.cut_port(&ns, &gateway, grpc)?;
            }
            "the coordinator cut off from every sidecar, etcd untouched".to_string()
        }
        other => bail!("{other} is not a network scenario"),
    };
    tokio::time::sleep(NETWORK_HOLD).await;
    let dropped = faults.dropped()?;
    faults.heal()?;
    *faulted = Some((before, Instant::now()));
    if dropped == 0 {
        bail!("{what}: no packet was dropped, the fault did not bite");
    }
    Ok(format!(
        "{what} for {} s ({dropped} packets dropped)",
        NETWORK_HOLD.as_secs()
    ))
}

/// Whether `status` is converged to `size` on `version`.
pub fn converged(status: &ClusterStatus, size: usize, version: &str) -> bool {
    is_running(status, size, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status of voters `(name, healthy)`.
    fn voters(members: &[(&str, bool)]) -> ClusterStatus {
        ClusterStatus {
            members: members
                .iter()
                .map(|(name, healthy)| etcd_operator::proto::MemberStatus {
                    name: name.to_string(),
                    id: format!("id-{name}"),
                    healthy: *healthy,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_removal_breaks_quorum_only_by_what_it_removed() {
        // The dead member goes; another dies between the two samples: the fault's doing.
        let before = voters(&[("a", true), ("b", true), ("dead", false)]);
        assert!(!removal_broke_quorum(
            &before,
            &voters(&[("a", true), ("b", false)])
        ));
        // A healthy member removed while another is down leaves one healthy of two.
        assert!(removal_broke_quorum(
            &before,
            &voters(&[("b", true), ("dead", false)])
        ));
        // Nothing removed, or no quorum to begin with: not the removal's doing.
        assert!(!removal_broke_quorum(&before, &before));
        let lost = voters(&[("a", true), ("b", false), ("c", false)]);
        assert!(!removal_broke_quorum(
            &lost,
            &voters(&[("a", true), ("b", false)])
        ));
        // Five to four with one down keeps three healthy of four.
        let five = voters(&[
            ("a", true),
            ("b", true),
            ("c", true),
            ("d", false),
            ("e", true),
        ]);
        assert!(!removal_broke_quorum(
            &five,
            &voters(&[("a", true), ("b", true), ("c", true), ("d", false)])
        ));
    }

    fn clean() -> ScenarioResult {
        ScenarioResult {
            fault: "kill-etcd".into(),
            operation: "steady writes".into(),
            operations: 500,
            lost: 0,
            verdict: Some(Verdict::Pass),
            max_in_flight: 1,
            step_violations: Vec::new(),
            quorum_broken: 0,
            converge: Duration::from_secs(3),
            hash_mismatches: 0,
            error: None,
            loss_expected: false,
            partition_removals: 0,
        }
    }

    #[test]
    fn every_broken_invariant_fails_the_scenario() {
        assert!(clean().passed(), "{:?}", clean().broken_invariants());
        let broken = [
            ScenarioResult {
                step_violations: vec!["{1, 2, 3} -> {1} (2 changes)".into()],
                ..clean()
            },
            ScenarioResult {
                verdict: Some(Verdict::Undecided),
                ..clean()
            },
            ScenarioResult {
                verdict: Some(Verdict::Fail),
                ..clean()
            },
            ScenarioResult {
                verdict: None,
                ..clean()
            },
            ScenarioResult { lost: 1, ..clean() },
            ScenarioResult {
                max_in_flight: 2,
                ..clean()
            },
            ScenarioResult {
                quorum_broken: 1,
                ..clean()
            },
            ScenarioResult {
                hash_mismatches: 1,
                ..clean()
            },
            ScenarioResult {
                fault: "partition-leader".into(),
                partition_removals: 1,
                ..clean()
            },
        ];
        for r in &broken {
            assert!(!r.passed(), "{r:?}");
            assert_eq!(r.broken_invariants().len(), 1, "{r:?}");
            let report = ChaosReport {
                results: vec![r.clone()],
            };
            assert_eq!(report.failed(), 1);
            assert!(report.render().contains("FAILED: "), "{}", report.render());
        }
        // Data destroyed on purpose: lost writes and the verdict are reported, not failed;
        // the membership invariants still hold or fail.
        let lossy = ScenarioResult {
            loss_expected: true,
            lost: 4,
            verdict: Some(Verdict::Fail),
            ..clean()
        };
        assert!(lossy.passed());
        let lossy_steps = ScenarioResult {
            step_violations: vec!["two at once".into()],
            ..lossy
        };
        assert!(!lossy_steps.passed());
        let report = ChaosReport {
            results: vec![clean(), lossy_steps],
        };
        assert_eq!(report.violations(), 0);
        assert_eq!(report.failed(), 1);
    }

    #[test]
    fn removals_for_a_partition_are_counted_beyond_what_the_operation_removes() {
        let three = voters(&[("a", true), ("b", true), ("c", true)]);
        assert_eq!(removed_for_partition(&three, &three, 3), 0);
        // One gone, and one back under a new id (removed and added again).
        let mut replaced = voters(&[("a", true), ("b", true)]);
        replaced.members[1].id = "new".into();
        assert_eq!(removed_for_partition(&three, &replaced, 3), 2);
        // A scale-down from four to three removes one by itself; a second is the fault's.
        let four = voters(&[("a", true), ("b", true), ("c", true), ("d", true)]);
        assert_eq!(removed_for_partition(&four, &three, 3), 0);
        assert_eq!(
            removed_for_partition(&four, &voters(&[("a", true), ("b", true)]), 3),
            1
        );
        // A replacement without an id when the fault began is matched by name.
        let mut joining = three.clone();
        joining.members[2].id.clear();
        assert_eq!(removed_for_partition(&joining, &three, 3), 0);
        assert_eq!(
            removed_for_partition(
                &joining,
                &voters(&[("a", true), ("b", true), ("d", true)]),
                3
            ),
            1
        );
    }

    #[test]
    fn defragmented_members_are_read_from_the_log() {
        let log = "\
2026-12-03T12:00:00Z  INFO reconcile{cluster=default/chaos}: etcd_coordinator::controller: defragmenting member=chaos-0001 reason=scheduled
2026-12-03T12:00:00Z  INFO reconcile{cluster=default/chaos}: etcd_coordinator::controller: defragmented member=chaos-0001 db_size=20480 db_size_in_use=16384
2026-12-03T12:00:01Z  INFO etcd_coordinator::controller: defragmented member=chaos-0000 db_size=1 db_size_in_use=1
2026-12-03T12:00:02Z  INFO etcd_coordinator::controller: defragmented member=chaos-0001 db_size=1 db_size_in_use=1
";
        assert_eq!(defragmented_in(log), vec!["chaos-0001", "chaos-0000"]);
        assert!(defragmented_in("defragmenting member=chaos-0002").is_empty());
    }

    #[test]
    fn a_soak_has_one_row_per_scenario_over_its_runs() {
        let slow = ScenarioResult {
            converge: Duration::from_secs(9),
            ..clean()
        };
        let partitioned = ScenarioResult {
            fault: "partition-leader".into(),
            operations: 100,
            partition_removals: 1,
            ..clean()
        };
        let report = ChaosReport {
            results: vec![clean(), slow, clean(), partitioned],
        };
        let text = report.per_scenario();
        assert!(
            text.contains("| kill-etcd | 3 | 1500 | 0 | 3/3 | 1 | - | 3.0 s | 9.0 s | 0 |"),
            "{text}"
        );
        assert!(
            text.contains("| partition-leader | 1 | 100 | 0 | 1/1 | 1 | 1 | 3.0 s | 3.0 s | 1 |"),
            "{text}"
        );
    }

    #[test]
    fn network_scenarios_are_listed_and_show_their_removals() {
        for n in NETWORK {
            assert!(scenarios().any(|s| s == *n), "{n}");
            assert!(!PROCESS.contains(n), "{n}");
        }
        let report = ChaosReport {
            results: vec![
                ScenarioResult {
                    fault: "split-2-3".into(),
                    ..clean()
                },
                clean(),
            ],
        };
        let text = report.render();
        assert!(
            text.contains("| split-2-3 | steady writes | 500 | 0 | pass | 1 | 0 | 0 |"),
            "{text}"
        );
        assert!(
            text.contains("| kill-etcd | steady writes | 500 | 0 | pass | 1 | 0 | - |"),
            "{text}"
        );
    }
}
