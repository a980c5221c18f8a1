//! The catalogue: every [`Scenario`], what it starts from, and one function per fault.
//!
//! A new scenario is a variant here (its name in [`Scenario::name`], its place in
//! [`PROCESS`] or [`NETWORK`]), and a function taking the scenario's [`Ctx`] that injects
//! the fault during its operation and returns what the cluster must converge to
//! ([`Injected`]). A fault that cannot be injected (no victim, nothing to kill) is an
//! error: a planned fault that does not happen fails its scenario, never passes it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etcd_operator::proto::{ClusterStatus, ConditionStatus, ConditionType};
use nix::sys::signal::Signal;

use super::{
    CONVERGE, ChaosOptions,
    actions::{
        FILL_QUOTA, backup_cli, check_backups_whole, fill_until_disk_full, fill_until_nospace,
        kill_during_backup, list_backups, member_id, pick, replace_wiped_follower, sidecar_pid,
        sidecar_pid_recorded, signal, staying_member, wait_gone,
    },
    network,
};
use crate::{
    cluster_view::ClusterView,
    local_cluster::{LocalCoordinator, condition, condition_is, is_running},
    process::etcd_pid,
    rng::SeededRng,
};

/// One fault, paired with the operation it strikes during.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// A member's etcd killed; its sidecar starts it again.
    KillEtcd,
    /// A member's sidecar killed; the member comes back on its data.
    KillSidecar,
    /// The leader's etcd paused past the election timeout.
    PauseLeaderEtcd,
    /// A sidecar frozen past dead-after while its etcd serves.
    PartitionSidecar,
    /// The coordinator killed while it scales 3 to 5.
    KillCoordinatorDuringScaleUp,
    /// A staying member's sidecar killed while the cluster scales 5 to 3.
    KillSidecarDuringScaleDown,
    /// A follower's data wiped while it is down.
    WipeDataWhileDown,
    /// An old-version member's etcd killed during a rolling upgrade.
    KillEtcdDuringUpgrade,
    /// A member's etcd killed while a wiped member is replaced.
    KillEtcdDuringReplacement,
    /// Two of three members killed at once, data intact.
    KillMajority,
    /// Every member killed at once, data intact.
    KillAll,
    /// Two of three members' data wiped: Manual, then ForceNewCluster (loses data on
    /// purpose).
    WipeMajority,
    /// The streaming member's sidecar killed during a backup.
    KillSidecarDuringBackup,
    /// The streaming member's etcd killed during a backup.
    KillEtcdDuringBackup,
    /// Every backend filled to its quota (NOSPACE).
    FillQuota,
    /// A member's own volume kept full (DISKFULL).
    FillVolume,
    /// A member's own volume kept full during a rolling upgrade.
    FillVolumeDuringUpgrade,
    /// The leader cut off from every other member.
    PartitionLeader,
    /// A follower cut off from every other member.
    PartitionFollower,
    /// Five members split two from three.
    Split2x3,
    /// One direction of one link dropped.
    OneWayLoss,
    /// A member's link lossy and slow.
    LossySlowLink,
    /// The coordinator cut off from every sidecar, etcd untouched.
    CoordinatorCutOff,
    /// A member cut off while the cluster scales 3 to 5.
    PartitionDuringScaleUp,
    /// A staying member cut off while the cluster scales 5 to 3.
    PartitionDuringScaleDown,
    /// A member cut off while a wiped member is replaced.
    PartitionDuringReplacement,
    /// A follower cut off during a rolling upgrade.
    PartitionDuringUpgrade,
    /// The streaming member cut off during a backup.
    PartitionDuringBackup,
    /// The leader cut off in a scheduled defragmentation round.
    PartitionDuringDefrag,
    /// The coordinator killed at a failpoint the seed chooses, during the operation that
    /// reaches it (scale, replacement, upgrade, backup, restore).
    CrashCoordinatorAtFailpoint,
}

/// The process and disk faults.
pub const PROCESS: &[Scenario] = &[
    Scenario::KillEtcd,
    Scenario::KillSidecar,
    Scenario::PauseLeaderEtcd,
    Scenario::PartitionSidecar,
    Scenario::KillCoordinatorDuringScaleUp,
    Scenario::KillSidecarDuringScaleDown,
    Scenario::WipeDataWhileDown,
    Scenario::KillEtcdDuringUpgrade,
    Scenario::KillEtcdDuringReplacement,
    Scenario::KillMajority,
    Scenario::KillAll,
    Scenario::WipeMajority,
    Scenario::KillSidecarDuringBackup,
    Scenario::KillEtcdDuringBackup,
    Scenario::FillQuota,
    Scenario::FillVolume,
    Scenario::FillVolumeDuringUpgrade,
    Scenario::CrashCoordinatorAtFailpoint,
];

/// The faults of the network between members, in namespaces of their own
/// ([`crate::netns`]): they run inside a hub, and no member may be removed for them.
pub const NETWORK: &[Scenario] = &[
    Scenario::PartitionLeader,
    Scenario::PartitionFollower,
    Scenario::Split2x3,
    Scenario::OneWayLoss,
    Scenario::LossySlowLink,
    Scenario::CoordinatorCutOff,
    Scenario::PartitionDuringScaleUp,
    Scenario::PartitionDuringScaleDown,
    Scenario::PartitionDuringReplacement,
    Scenario::PartitionDuringUpgrade,
    Scenario::PartitionDuringBackup,
    Scenario::PartitionDuringDefrag,
];

/// Every scenario's name: [`PROCESS`], then [`NETWORK`].
pub fn scenarios() -> impl Iterator<Item = &'static str> {
    PROCESS.iter().chain(NETWORK).map(|s| s.name())
}

impl Scenario {
    /// Its name, as `etcd-chaos --only` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::KillEtcd => "kill-etcd",
            Self::KillSidecar => "kill-sidecar",
            Self::PauseLeaderEtcd => "pause-leader-etcd",
            Self::PartitionSidecar => "partition-sidecar",
            Self::KillCoordinatorDuringScaleUp => "kill-coordinator-during-scale-up",
            Self::KillSidecarDuringScaleDown => "kill-sidecar-during-scale-down",
            Self::WipeDataWhileDown => "wipe-data-while-down",
            Self::KillEtcdDuringUpgrade => "kill-etcd-during-upgrade",
            Self::KillEtcdDuringReplacement => "kill-etcd-during-replacement",
            Self::KillMajority => "kill-majority",
            Self::KillAll => "kill-all",
            Self::WipeMajority => "wipe-majority",
            Self::KillSidecarDuringBackup => "kill-sidecar-during-backup",
            Self::KillEtcdDuringBackup => "kill-etcd-during-backup",
            Self::FillQuota => "fill-quota",
            Self::FillVolume => "fill-volume",
            Self::FillVolumeDuringUpgrade => "fill-volume-during-upgrade",
            Self::PartitionLeader => "partition-leader",
            Self::PartitionFollower => "partition-follower",
            Self::Split2x3 => "split-2-3",
            Self::OneWayLoss => "one-way-loss",
            Self::LossySlowLink => "lossy-slow-link",
            Self::CoordinatorCutOff => "coordinator-cut-off",
            Self::PartitionDuringScaleUp => "partition-during-scale-up",
            Self::PartitionDuringScaleDown => "partition-during-scale-down",
            Self::PartitionDuringReplacement => "partition-during-replacement",
            Self::PartitionDuringUpgrade => "partition-during-upgrade",
            Self::PartitionDuringBackup => "partition-during-backup",
            Self::PartitionDuringDefrag => "partition-during-defrag",
            Self::CrashCoordinatorAtFailpoint => "crash-coordinator-at-failpoint",
        }
    }

    /// The scenario named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        PROCESS
            .iter()
            .chain(NETWORK)
            .copied()
            .find(|s| s.name() == name)
    }

    /// True for a fault of the network between members.
    pub fn is_network(self) -> bool {
        NETWORK.contains(&self)
    }

    /// True when it destroys data on purpose: its lost writes and checker verdict are
    /// reported, not failed.
    pub fn loses_data_on_purpose(self) -> bool {
        self == Self::WipeMajority
    }

    /// What the clients may lose to it. Every fault is unplanned, so failed requests and
    /// elections are reported, not judged; the watcher never misses nor repeats an event
    /// (except where data is destroyed on purpose); and where a quorum keeps serving with
    /// its leader reachable, a lease with a 5 s TTL never expires.
    pub fn budget(self) -> FaultBudget {
        use Scenario::*;
        FaultBudget {
            watch: !self.loses_data_on_purpose(),
            lease: matches!(
                self,
                KillSidecar
                    | PartitionSidecar
                    | KillCoordinatorDuringScaleUp
                    | KillSidecarDuringScaleDown
                    | WipeDataWhileDown
                    | KillEtcdDuringReplacement
                    | KillSidecarDuringBackup
                    | KillEtcdDuringBackup
                    | PartitionFollower
                    | CoordinatorCutOff
            ),
        }
    }

    /// The members the cluster starts with.
    pub fn start_size(self) -> i32 {
        match self {
            Self::KillSidecarDuringScaleDown | Self::PartitionDuringScaleDown | Self::Split2x3 => 5,
            _ => 3,
        }
    }

    /// The manifest's extra lines for it (after `spec:`'s size and version).
    pub fn spec_extra(self) -> String {
        match self {
            Self::FillQuota => format!("  maintenance:\n    quotaBackendBytes: {FILL_QUOTA}\n"),
            _ => String::new(),
        }
    }

    /// Injects the fault during its operation.
    pub(super) async fn inject(self, x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
        match self {
            Self::KillEtcd => kill_etcd(x).await,
            Self::KillSidecar => kill_sidecar(x).await,
            Self::PauseLeaderEtcd => pause_leader_etcd(x).await,
            Self::PartitionSidecar => partition_sidecar(x).await,
            Self::KillCoordinatorDuringScaleUp => kill_coordinator_during_scale_up(x).await,
            Self::KillSidecarDuringScaleDown => kill_sidecar_during_scale_down(x).await,
            Self::WipeDataWhileDown => wipe_data_while_down(x).await,
            Self::KillEtcdDuringUpgrade => kill_etcd_during_upgrade(x).await,
            Self::KillEtcdDuringReplacement => kill_etcd_during_replacement(x).await,
            Self::KillMajority | Self::KillAll => kill_many(x, self == Self::KillAll).await,
            Self::WipeMajority => wipe_majority(x).await,
            Self::KillSidecarDuringBackup | Self::KillEtcdDuringBackup => {
                kill_during_a_backup(x, self == Self::KillSidecarDuringBackup).await
            }
            Self::FillQuota => fill_quota(x).await,
            Self::FillVolume | Self::FillVolumeDuringUpgrade => {
                fill_volume(x, self == Self::FillVolumeDuringUpgrade).await
            }
            Self::CrashCoordinatorAtFailpoint => {
                let (armed, markers) =
                    x.failpoint.clone().context("the failpoint this run arms")?;
                let (_, operation) = super::failpoint::CHOICES
                    .iter()
                    .find(|(n, _)| *n == armed)
                    .copied()
                    .context("a failpoint of the scenario's choices")?;
                super::failpoint::crash_at_failpoint(x, &armed, &markers, operation).await
            }
            network => network::inject(network, x).await,
        }
    }
}

/// What a fault acts on.
pub(super) struct Ctx<'a> {
    pub(super) c: &'a mut LocalCoordinator,
    /// The cluster as it ran before the fault.
    pub(super) initial: &'a ClusterStatus,
    pub(super) rng: &'a mut SeededRng,
    pub(super) options: &'a ChaosOptions,
    /// The cluster as a network fault began (no member of it may be removed for the
    /// fault), and when the fault healed.
    pub(super) faulted: &'a mut Option<(ClusterStatus, Instant)>,
    /// A member's volume of its own (`fill-volume`), unmounted after the coordinator and
    /// everything it started have stopped.
    pub(super) volume: &'a mut Option<crate::volume::Tmpfs>,
    /// The failpoint the coordinator was started with armed, and its markers' directory
    /// (`crash-coordinator-at-failpoint`).
    pub(super) failpoint: Option<(String, std::path::PathBuf)>,
}

impl Ctx<'_> {
    /// The version the cluster started on.
    pub(super) fn version(&self) -> String {
        self.options.version.clone()
    }
}

/// What a fault did, and what the cluster must converge to.
pub(super) struct Injected {
    /// The operation and the fault, for the report.
    pub(super) operation: String,
    /// The members the cluster must end with.
    pub(super) size: usize,
    /// The version they must run.
    pub(super) version: String,
}

impl Injected {
    pub(super) fn new(
        operation: impl Into<String>,
        size: usize,
        version: impl Into<String>,
    ) -> Self {
        Self {
            operation: operation.into(),
            size,
            version: version.into(),
        }
    }
}

async fn kill_etcd(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    let victim = pick(x.rng, x.initial, None)?;
    let sidecar = sidecar_pid(x.c, victim)?;
    let old = etcd_pid(sidecar)?;
    signal(old, Signal::SIGKILL)?;
    // Converged means: the sidecar restarted etcd, and the cluster is whole again.
    crate::wait_for("the sidecar to start its etcd again", CONVERGE, || async {
        etcd_pid(sidecar).ok().filter(|p| *p != old)
    })
    .await?;
    Ok(Injected::new(
        format!("steady writes; {victim}'s etcd killed"),
        3,
        x.version(),
    ))
}

async fn kill_sidecar(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    // Data intact: the member comes back on it, under the same id.
    let victim = pick(x.rng, x.initial, None)?.to_string();
    let id = member_id(x.initial, &victim)?;
    x.c.kill_member(&victim)?;
    x.c.wait_until("the victim back on its data", CONVERGE, |s| {
        s.members
            .iter()
            .any(|m| m.name == victim && m.id == id && m.healthy && m.restarts >= 1)
    })
    .await?;
    Ok(Injected::new("restart on data", 3, x.version()))
}

/// The leader's etcd paused 3 s (election timeout 1 s): etcd must show that the fault bit,
/// a new term (an election) or another leader, read from etcd itself.
async fn pause_leader_etcd(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    let endpoints = (x.c.live_endpoints())();
    let before = ClusterView::read(&endpoints).await?;
    let leader = before
        .leader()
        .and_then(|id| before.members.iter().find(|m| m.id == id))
        .context("etcd shows no leader every member agrees on")?;
    let name = leader.name.clone();
    let term = before.term();
    let pid = etcd_pid(sidecar_pid(x.c, &name)?)?;
    signal(pid, Signal::SIGSTOP)?;
    // The fault itself: held past the election timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(pid, Signal::SIGCONT)?;
    let leader_id = leader.id;
    let after = crate::wait_for(
        "etcd to show a new term or another leader",
        Duration::from_secs(20),
        || {
            let endpoints = endpoints.clone();
            async move {
                let view = ClusterView::read(&endpoints).await.ok()?;
                (view.term() > term || view.leader().is_some_and(|l| l != leader_id))
                    .then_some(view)
            }
        },
    )
    .await?;
    Ok(Injected::new(
        format!(
            "leader {name} paused 3 s (election timeout 1 s): term {term} to {}",
            after.term()
        ),
        3,
        x.version(),
    ))
}

async fn partition_sidecar(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    // The sidecar stops talking to the coordinator (it is frozen) while its etcd serves:
    // longer than the dead-after time, and it must not be removed.
    let victim = pick(x.rng, x.initial, None)?.to_string();
    let id = x
        .initial
        .members
        .iter()
        .find(|m| m.name == victim)
        .map(|m| m.id.clone());
    let pid = sidecar_pid(x.c, &victim)?;
    signal(pid, Signal::SIGSTOP)?;
    // The fault itself: held past dead-after.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let during = x.c.status().await;
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
    Ok(Injected::new(
        "sidecar cut off from the coordinator 12 s (dead-after 5 s)",
        3,
        x.version(),
    ))
}

async fn kill_coordinator_during_scale_up(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    let v = x.version();
    x.c.set_spec(5, &v)?;
    let c = &*x.c;
    crate::wait_for("a fourth member created", CONVERGE, || async {
        (c.members().len() >= 4).then_some(())
    })
    .await?;
    x.c.crash();
    x.c.restart().await?;
    Ok(Injected::new("scale up 3 to 5", 5, v))
}

async fn kill_sidecar_during_scale_down(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    let v = x.version();
    x.c.set_spec(3, &v)?;
    x.c.wait_until("a first member gone", CONVERGE, |s| s.members.len() < 5)
        .await?;
    let victim = staying_member(x.c, x.rng, Some(false)).await?;
    x.c.kill_member(&victim)?;
    Ok(Injected::new("scale down 5 to 3", 3, v))
}

async fn wipe_data_while_down(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    let victim = pick(x.rng, x.initial, Some(false))?.to_string();
    x.c.crash();
    x.c.kill_member(&victim)?;
    let dir =
        x.c.state_dir()
            .join(x.c.cluster())
            .join(&victim)
            .join("etcd");
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    x.c.restart().await?;
    Ok(Injected::new(
        "member restarted on an empty data dir",
        3,
        x.version(),
    ))
}

async fn kill_etcd_during_upgrade(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    let to = x.options.upgrade_to.clone();
    x.c.set_spec(3, &to)?;
    let status =
        x.c.wait_until("a first member upgraded", CONVERGE, |s| {
            s.members.iter().any(|m| m.version == to)
        })
        .await?;
    let old: Vec<String> = status
        .members
        .iter()
        .filter(|m| m.version != to)
        .map(|m| m.name.clone())
        .collect();
    let victim = old
        .first()
        .context("no member left on the old version to kill: the fault could not be injected")?;
    signal(etcd_pid(sidecar_pid(x.c, victim)?)?, Signal::SIGKILL)?;
    Ok(Injected::new(
        format!(
            "rolling upgrade {} to {to}; {victim}'s etcd killed",
            x.options.version
        ),
        3,
        to,
    ))
}

async fn kill_etcd_during_replacement(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    // A member whose data is gone is replaced; once the replacement is created, another
    // member's etcd is killed.
    let victim = replace_wiped_follower(x.c, x.rng, x.initial).await?;
    let status = x.c.status().await.context("status")?;
    let other = status
        .members
        .iter()
        .find(|m| m.healthy && !m.leader && m.name != victim)
        .map(|m| m.name.clone())
        .context(
            "no healthy follower besides the replaced one to kill: the fault could not be injected",
        )?;
    signal(etcd_pid(sidecar_pid(x.c, &other)?)?, Signal::SIGKILL)?;
    Ok(Injected::new(
        format!("replacement of {victim}; {other}'s etcd killed"),
        3,
        x.version(),
    ))
}

async fn kill_many(x: &mut Ctx<'_>, all: bool) -> anyhow::Result<Injected> {
    // A host crash: quorum lost, every byte of data still there.
    let v = x.version();
    let count = if all { 3 } else { 2 };
    let mut victims: Vec<String> = x.initial.members.iter().map(|m| m.name.clone()).collect();
    while victims.len() > count {
        victims.remove(x.rng.below(victims.len() as u64) as usize);
    }
    for victim in &victims {
        x.c.kill_member(victim)?;
    }
    let ids: Vec<(String, String)> = x
        .initial
        .members
        .iter()
        .map(|m| (m.name.clone(), m.id.clone()))
        .collect();
    // Back means restarted (a restart counted for every victim), not a status from
    // before the kill.
    x.c.wait_until("every member back on its data, same ids", CONVERGE, |s| {
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
    Ok(Injected::new(
        format!("{count} of 3 killed at once, data intact"),
        3,
        v,
    ))
}

async fn wipe_majority(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    // Two of three killed with their data wiped: under Manual nothing is touched; then
    // ForceNewCluster brings the survivor back as a one-member cluster that grows to 3.
    // Writes acknowledged only by the wiped members may be lost.
    let v = x.version();
    let survivor = pick(x.rng, x.initial, None)?.to_string();
    x.c.crash();
    for m in x.initial.members.iter().filter(|m| m.name != survivor) {
        x.c.kill_member(&m.name)?;
        let dir =
            x.c.state_dir()
                .join(x.c.cluster())
                .join(&m.name)
                .join("etcd");
        wait_gone(sidecar_pid_recorded(x.c, &m.name)).await?;
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    x.c.restart().await?;
    x.c.wait_until("QuorumLost: data lost", CONVERGE, |s| {
        condition(s, ConditionType::QuorumLost)
            .is_some_and(|k| k.status() == ConditionStatus::True && k.reason == "DataLost")
    })
    .await?;
    // Nothing changes under Manual for a while: each status of the window is checked.
    let names: Vec<String> = x.initial.members.iter().map(|m| m.name.clone()).collect();
    let window = Instant::now() + Duration::from_secs(5);
    while Instant::now() < window {
        if let Some(s) = x.c.status().await
            && s.members.iter().map(|m| &m.name).ne(names.iter())
        {
            bail!("members changed under Manual: {:?}", s.members);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    x.c.write_manifest(&format!(
        "{}  recovery:\n    quorumLoss: ForceNewCluster\n",
        crate::local_cluster::manifest(x.c.cluster(), 3, &v)
    ))?;
    Ok(Injected::new(
        "2 of 3 wiped: Manual, then ForceNewCluster",
        3,
        v,
    ))
}

async fn kill_during_a_backup(x: &mut Ctx<'_>, sidecar: bool) -> anyhow::Result<Injected> {
    let v = x.version();
    let (victim, cli_ok) = kill_during_backup(x.c, sidecar).await?;
    // Whatever the kill interrupted is never listed half-written.
    check_backups_whole(x.c).await?;
    x.c.wait_running(3, &v, CONVERGE).await?;
    // And the next backup succeeds, proven restorable.
    let (ok, out) = backup_cli(x.c).await?;
    if !ok {
        bail!("the next backup failed: {out}");
    }
    check_backups_whole(x.c).await?;
    let listed = list_backups(x.c).await?;
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
    Ok(Injected::new(
        format!(
            "backup streaming from {victim} (the interrupted call {})",
            if cli_ok { "had finished" } else { "failed" }
        ),
        3,
        v,
    ))
}

async fn fill_quota(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    // Every member's backend reaches its quota while the recorded traffic runs: etcd
    // raises NOSPACE and refuses writes. The operator shows the alarm, replaces no member
    // for it, and (spec.maintenance set, noSpace not Manual) compacts, defragments one
    // member at a time and disarms; writes are accepted again.
    let ids: Vec<(String, String)> = x
        .initial
        .members
        .iter()
        .map(|m| (m.name.clone(), m.id.clone()))
        .collect();
    let writes = fill_until_nospace(x.c).await?;
    x.c.wait_until("the NOSPACE alarm shown", CONVERGE, |s| {
        condition(s, ConditionType::Alarm)
            .is_some_and(|k| k.status() == ConditionStatus::True && k.reason == "NoSpace")
    })
    .await?;
    let cleared =
        x.c.wait_until("the alarm cleared", CONVERGE, |s| {
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
    Ok(Injected::new(
        format!(
            "backend quota ({} MiB) reached after {writes} writes of 96 KiB: NOSPACE, then compacted, defragmented and disarmed",
            FILL_QUOTA >> 20
        ),
        3,
        x.version(),
    ))
}

async fn fill_volume(x: &mut Ctx<'_>, upgrade: bool) -> anyhow::Result<Injected> {
    // A follower is replaced by a member whose data directory is on a 640 MiB volume of
    // its own; then something else fills that volume for twice the dead-after (in a
    // rolling upgrade, once its first member is upgraded). Its etcd exits, DISKFULL shows,
    // and it is not replaced while the volume is full; the other two take the traffic, and
    // an upgrade takes no further step (one under way may finish). Once space is back the
    // member runs again on its data, or is replaced if etcd cannot start on what it half
    // wrote.
    let v = x.version();
    let small = x.c.member_name(x.c.next_ordinal());
    let tmpfs = x
        .volume
        .insert(crate::volume::Tmpfs::mount(&x.c.data_dir(&small), "640m")?);
    let follower = pick(x.rng, x.initial, Some(false))?.to_string();
    x.c.delete_member(&follower)?;
    let placed =
        x.c.wait_until(&format!("{small} in place of {follower}"), CONVERGE, |s| {
            is_running(s, 3, &v) && s.members.iter().any(|m| m.name == small)
        })
        .await?;
    let id = member_id(&placed, &small)?;
    let to = x.options.upgrade_to.clone();
    let upgraded = |s: &ClusterStatus| s.members.iter().filter(|m| m.version == to).count();
    if upgrade {
        x.c.set_spec(3, &to)?;
        x.c.wait_until("a first member upgraded", CONVERGE, |s| upgraded(s) >= 1)
            .await?;
    }
    let filler = tmpfs.keep_full()?;
    let seen = fill_until_disk_full(x.c, &small).await?;
    let upgraded_when_full = upgraded(&x.c.status().await.context("status")?);
    // Not replaced while full: each status of the window is checked.
    let held_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < held_until {
        if let Some(s) = x.c.status().await
            && !s.members.iter().any(|m| m.name == small && m.id == id)
        {
            bail!(
                "{small} was replaced while its volume was full: {:?}",
                s.members
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let upgraded_held = upgraded(&x.c.status().await.context("status")?);
    if upgraded_held > upgraded_when_full + 1 {
        bail!(
            "the upgrade went on from {upgraded_when_full} to {upgraded_held} members while one was down"
        );
    }
    drop(filler);
    let version = if upgrade { to.clone() } else { v.clone() };
    let back =
        x.c.wait_until("the member back, or replaced", CONVERGE, |s| {
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
            x.options.version
        )
    } else {
        String::new()
    };
    Ok(Injected::new(
        format!(
            "{during}a member's 640 MiB volume kept full 10 s (DISKFULL after {seen} write{} of 1 MiB), then freed: it {outcome}",
            if seen == 1 { "" } else { "s" }
        ),
        3,
        version,
    ))
}

/// What a fault may not cost the clients ([`Scenario::budget`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultBudget {
    /// The watcher never misses nor repeats an acknowledged write.
    pub watch: bool,
    /// A lease with a 5 s TTL, kept alive, never expires.
    pub lease: bool,
}

impl FaultBudget {
    /// How `seen` broke this budget (empty when it held).
    pub fn judge(&self, seen: &crate::availability::Availability) -> Vec<String> {
        let mut out = Vec::new();
        if self.lease && seen.lease_expired {
            out.push(format!(
                "the lease with a {} s TTL expired",
                crate::availability::LEASE_TTL_SECS
            ));
        }
        if self.watch && seen.watch_missed > 0 {
            out.push(format!(
                "the watcher missed {} acknowledged writes",
                seen.watch_missed
            ));
        }
        if self.watch && seen.watch_repeated > 0 {
            out.push(format!(
                "the watcher saw {} events twice",
                seen.watch_repeated
            ));
        }
        out
    }
}
