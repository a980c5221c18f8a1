//! The coordinator's brain: one pure step of the control loop.
//!
//! For every cluster the coordinator runs `observe -> plan -> act -> status`. Observing
//! (the runtime's members, etcd's member list, the sidecars' health reports, the grant in
//! flight) and acting (creating and deleting members, calling sidecars, `MemberRemove`) talk
//! to the world; this module sits between them and does not. [`plan`] takes an [`Observed`]
//! snapshot and returns a [`Plan`]: at most one [`Action`], the [`Phase`] to show and the
//! warnings. No clock (the time is [`Observed::now`]), no I/O, no async: every rule below is
//! a table test.
//!
//! # Rules, in priority order (the first that applies decides)
//!
//! 1. Invalid spec: [`Action::RefuseSpec`], phase Invalid. Nothing is touched.
//! 2. The version step from any member's running version to the spec's is refused
//!    ([`check_version_step`]): [`Action::RefuseSpec`], phase Invalid.
//! 3. No runtime member and no etcd cluster: [`Action::CreateSeed`].
//! 4. A member down with its data is started again on it ([`Action::RestartMember`]: same
//!    member id, no membership change), at once after its first exit, then with a backoff
//!    (1 s, 2 s, 4 s, ... 30 s) while it keeps exiting. Not a membership change, so neither
//!    a grant in flight nor a lost quorum holds it back (a lost quorum whose members kept
//!    their data comes back this way). Only a member past `dead_after_ms` of failures that
//!    is about to be replaced (rule 8) is not restarted.
//! 5. A grant in flight: wait ([`WaitReason::ChangeInFlight`]).
//! 6. etcd's member list unreadable while runtime members exist: wait. Never a second seed
//!    and never a deletion: a cluster whose every member is down still holds the data.
//! 7. Healthy voters below quorum: change no membership. While enough voters keep their
//!    data to make a quorum again, wait ([`WaitReason::QuorumLost`]; rule 4 brings them
//!    back). When the data of too many is gone, quorum cannot come back by itself
//!    ([`WaitReason::QuorumLostForGood`]): with `spec.recovery.quorumLoss: ForceNewCluster`,
//!    and once every survivor reports its raft index, [`Action::ForceNewCluster`] from the
//!    survivor with the highest raft index (then revision); otherwise nothing is touched.
//! 8. Dead members first: remove a dead member etcd lists (only if quorum is kept), delete a
//!    dead runtime member etcd does not list; wait while a listed member is down, not yet dead.
//! 9. Delete the runtime member of a member that left etcd's member list.
//! 10. Wait while a member joins (a learner, or a runtime member etcd does not list yet).
//! 11. Wait while a voter is unhealthy or its report is stale.
//! 12. Scale up one learner at a time; 13. scale down the highest ordinal, the leader last.
//! 14. Upgrade one member at a time, followers first, the leader last.
//! 15. Otherwise steady.
//!
//! # Definitions
//!
//! - A runtime member is *in etcd* when etcd lists an entry with the member id its report
//!   carries; failing that, an entry with its name (a member re-added under its name, whose
//!   report still carries its old id, has not left).
//! - *Voters* are etcd's non-learner entries. A voter is *healthy* when its runtime member
//!   runs and its report is fresh and healthy.
//! - A runtime member is *dead* when it is not running and either its data is gone (known
//!   gone for good: replaced at once) or it has been failing for `dead_after_ms` (down since
//!   its first exit, restarts included). An etcd
//!   entry no runtime member claims is an *orphan*, dead at once (its pod or process is gone),
//!   except an unnamed entry (added, never started) while a live member still has to join:
//!   that member's add may have gone through before it could report its id.
//! - A stale report is never death: a sidecar cut off from the coordinator only blocks
//!   further changes (DESIGN.md: a partition of the control path is not a dead member).
//!
//! # Phases
//!
//! The planner cannot see history, so the phase is read from the present:
//! - Creating: no cluster yet, or growing while the cluster has at most one voter (the seed
//!   alone). Growing from two or more voters reads as Scaling; a caller that remembers it was
//!   Creating may keep showing Creating until Running.
//! - Scaling: adding or removing members toward `size` (including deleting the runtime member
//!   of one that left on request).
//! - Recovering: removing dead members or cleaning up after them; a Replace grant in flight.
//! - Degraded: waiting on a member that is down (not yet dead) or unhealthy.
//! - Upgrading: upgrading members, or waiting on a member in the middle of its handoff.
//! - Failed: quorum lost, or every member down. Invalid: the spec is refused. Running: steady.

use std::{cmp::Reverse, fmt};

use etcd_operator::{
    ClusterKey, EtcdVersion,
    grant::{MembershipGrant, UnixMillis, kind_name},
    naming::{member_id_hex, member_name, member_ordinal},
    proto::{self, ChangeKind},
    resource::QuorumLossPolicy,
    validate::{SpecErrors, ValidSpec},
    version::check_version_step,
};

/// What the coordinator knows about one cluster at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The cluster.
    pub cluster: ClusterKey,
    /// The spec after validation (validation already done by the caller with `validate_cluster`).
    pub spec: Result<ValidSpec, SpecErrors>,
    /// Members the runtime has (processes in local mode, Pods on Kubernetes), any order.
    pub members: Vec<RuntimeMember>,
    /// etcd's member list as last read from the cluster; `None` when no member answered
    /// (no cluster yet, or every member unreachable).
    pub etcd_members: Option<Vec<EtcdMember>>,
    /// The membership-change grant in flight, if any (already expiry-checked by the caller).
    pub grant: Option<MembershipGrant>,
    /// The next unused ordinal (ordinals are never reused: the replacement of -0004 is -0005).
    pub next_ordinal: u32,
    /// Members an operator asked to delete with their data (`etcd-coordinator
    /// delete-member`, as `kubectl delete pod` does to a member without a claim).
    pub delete_requested: Vec<String>,
    /// A backup is due (its schedule came, or one was asked for) and none is under way.
    pub backup_due: bool,
    /// For a cluster to be created from a backup: the backup found and checked, or why it
    /// cannot be restored (`None` when the spec asks for no restore, or the cluster exists).
    pub restore: Option<Result<String, String>>,
    /// With `spec.recovery.quorumLoss: Restore`, once a member's data is gone: the latest
    /// verified backup of the cluster, or why there is none to use (`None`: not looked up).
    pub recovery_backup: Option<Result<String, String>>,
    /// Now, ms since the epoch.
    pub now: UnixMillis,
    /// Tunables.
    pub policy: Policy,
}

/// Tunables of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A member whose runtime process/pod has not been running for this long is dead
    /// (default 15 000 ms).
    pub dead_after_ms: i64,
    /// A health report older than this is stale: its member's health is unknown
    /// (default 10 000 ms).
    pub report_stale_after_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            dead_after_ms: 15_000,
            report_stale_after_ms: 10_000,
        }
    }
}

/// One member as the runtime has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeMember {
    /// `<cluster>-<NNNN>`.
    pub name: String,
    /// The `NNNN` of the name.
    pub ordinal: u32,
    /// The runtime says the member's process/pod is running.
    pub running: bool,
    /// Since when it has not been running (`None` while running). A runtime that cannot
    /// tell leaves it `None` and the member is never judged dead: death needs evidence.
    pub down_since: Option<UnixMillis>,
    /// The etcd version the runtime runs (or will run) this member with.
    pub version: EtcdVersion,
    /// The latest health report from its sidecar, if any.
    pub report: Option<MemberReport>,
    /// Whether its data survives (judged by the runtime).
    pub data: MemberData,
    /// The runtime starts this member again only when the planner says so
    /// ([`Action::RestartMember`]): a local process that exited, a Pod gone whose claim
    /// stays. False where something restarts it by itself (kubelet restarts the containers
    /// of a Pod that exists).
    pub restart_on_request: bool,
    /// Restarts since the member last ran steadily (the backoff grows with them).
    pub restarts: u32,
    /// When the current run of failures began: its first exit since it last ran steadily
    /// (`None` when the runtime cannot tell; `down_since` stands in then).
    pub failing_since: Option<UnixMillis>,
}

/// Whether a member's data survives while the member is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum MemberData {
    /// Its data is there: a usable etcd data directory, or a claim that outlives its Pod.
    #[default]
    Intact,
    /// Its data is gone or unusable (wiped, never written, its Pod's emptyDir deleted): it
    /// can only be replaced.
    Gone,
}

/// How long after its last exit a member with `restarts` restarts behind it is started
/// again: at once the first time, then 1 s, 2 s, 4 s, ... up to 30 s, as kubelet backs off.
pub fn restart_backoff_ms(restarts: u32) -> i64 {
    match restarts {
        0 => 0,
        n => (1000_i64 << (n - 1).min(5)).min(30_000),
    }
}

/// The subset of a sidecar `HealthReport` the planner needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReport {
    /// The etcd member id, 0 until joined.
    pub member_id: u64,
    /// etcd answers, knows a leader and has no alarm.
    pub healthy: bool,
    /// The member is the leader.
    pub leader: bool,
    /// The member is a learner.
    pub learner: bool,
    /// What etcd reports, "3.6.15" (may be empty).
    pub etcd_version: String,
    /// Where the member is in its lifecycle.
    pub phase: ReportedPhase,
    /// When the sidecar made the observation.
    pub observed_at: UnixMillis,
    /// The member's raft index (0 when unknown).
    pub raft_index: u64,
    /// The revision of its key-value store (0 when unknown).
    pub revision: i64,
}

impl From<&proto::HealthReport> for MemberReport {
    fn from(report: &proto::HealthReport) -> Self {
        Self {
            raft_index: report.raft_index,
            revision: report.revision,
            member_id: report.member_id,
            healthy: report.healthy,
            leader: report.leader,
            learner: report.learner,
            etcd_version: report.etcd_version.clone(),
            phase: report.phase().into(),
            observed_at: report.observed_at_unix_ms,
        }
    }
}

/// A member's lifecycle phase as its sidecar reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportedPhase {
    /// Deciding what to do (reading data, asking the coordinator).
    Starting,
    /// Bootstrapping a new one-member cluster.
    Bootstrapping,
    /// Joining as a learner.
    Joining,
    /// A member of the cluster.
    Running,
    /// Leaving on the coordinator's request.
    Leaving,
    /// Removed; data wiped; will not rejoin.
    Removed,
    /// etcd stopped for an upgrade handoff, waiting for the runtime to restart it.
    HandedOff,
    /// etcd exited and the sidecar is restarting it.
    Restarting,
}

impl ReportedPhase {
    /// The member has not joined yet (so a member id it reports that etcd does not list
    /// means "about to join", not "left").
    fn is_before_join(self) -> bool {
        matches!(self, Self::Starting | Self::Bootstrapping | Self::Joining)
    }
}

impl From<proto::MemberPhase> for ReportedPhase {
    fn from(phase: proto::MemberPhase) -> Self {
        match phase {
            // A sidecar that has not said anything yet is still deciding.
            proto::MemberPhase::Unspecified | proto::MemberPhase::Starting => Self::Starting,
            proto::MemberPhase::Bootstrapping => Self::Bootstrapping,
            proto::MemberPhase::Joining => Self::Joining,
            proto::MemberPhase::Running => Self::Running,
            proto::MemberPhase::Leaving => Self::Leaving,
            proto::MemberPhase::Removed => Self::Removed,
            proto::MemberPhase::HandedOff => Self::HandedOff,
            proto::MemberPhase::Restarting => Self::Restarting,
        }
    }
}

/// One entry of etcd's member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    /// The member id.
    pub id: u64,
    /// Empty for a member added but never started.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (empty for a member never started).
    pub client_urls: Vec<String>,
    /// A learner, not yet a voter.
    pub is_learner: bool,
}

/// The one next step for a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The spec (or the version step it asks for) is refused; change nothing. `message` is
    /// shown in status.
    RefuseSpec {
        /// Why, for people.
        message: String,
    },
    /// No cluster exists: create member `name` as the seed that bootstraps a 1-member cluster.
    CreateSeed {
        /// The seed's name.
        name: String,
        /// The version to run.
        version: EtcdVersion,
    },
    /// Create member `name`; its sidecar joins as a learner under its own grant and promotes
    /// itself.
    CreateMember {
        /// The new member's name (always a never-used ordinal).
        name: String,
        /// The version to run.
        version: EtcdVersion,
    },
    /// Remove a dead member from etcd's member list (the coordinator does `MemberRemove`
    /// under a grant), then delete its runtime member if any.
    RemoveDeadMember {
        /// The member's name; for an entry etcd lists without a name (added, never
        /// started), its id in hex, which names no runtime member.
        name: String,
        /// The etcd member id to remove.
        member_id: u64,
        /// Why it is judged dead, for events and logs.
        reason: String,
    },
    /// Delete a runtime member that is not (or no longer) in etcd's member list and will not
    /// join: it left, or it was removed.
    DeleteRuntimeMember {
        /// The runtime member's name.
        name: String,
        /// Why, for events and logs.
        reason: String,
    },
    /// Scale down: ask `name` to leave (its sidecar moves leadership if leader, removes
    /// itself, wipes).
    AskToLeave {
        /// The member that leaves.
        name: String,
    },
    /// Start member `name` again on its data (same member id, no membership change): its
    /// process or Pod is gone, its data is not.
    RestartMember {
        /// The member.
        name: String,
        /// Why, for events and logs.
        reason: String,
    },
    /// Quorum is lost for good and the spec allows it: restart the survivor `name` once with
    /// `--force-new-cluster` on its data, a one-member cluster with every other member
    /// removed; the cluster then grows back by learners. Writes acknowledged only by the
    /// lost members may be gone.
    ForceNewCluster {
        /// The survivor with the highest raft index (then revision).
        name: String,
        /// Its raft index when chosen.
        raft_index: u64,
        /// Its revision when chosen: what the cluster resumes at.
        revision: i64,
        /// The voters whose data is gone.
        lost: Vec<String>,
    },
    /// Quorum is lost for good and the spec says `Restore`: delete every member (`discard`)
    /// and create the cluster again from `backup` with the seed `seed`; it then grows back
    /// by learners. Writes after the backup are gone.
    RestoreCluster {
        /// The backup restored (the latest verified one).
        backup: String,
        /// The new seed, which restores it.
        seed: String,
        /// Its version.
        version: EtcdVersion,
        /// Every runtime member, deleted first.
        discard: Vec<String>,
        /// The voters whose data is gone.
        lost: Vec<String>,
    },
    /// Ask `name`'s sidecar for a backup (a healthy follower when there is one, sparing the
    /// leader). Not a membership change; one per cluster at a time.
    TakeBackup {
        /// The member streaming the snapshot.
        name: String,
    },
    /// Upgrade `name` to `to` through the sidecar handoff, then restart it on the same data
    /// with `to`.
    UpgradeMember {
        /// The member to upgrade.
        name: String,
        /// The version to restart it with.
        to: EtcdVersion,
    },
    /// Do nothing now, for the reason given.
    Wait {
        /// Why.
        reason: WaitReason,
    },
    /// Everything matches the spec.
    Steady,
}

impl Action {
    /// A stable word for the `action` log field, metric labels and events.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RefuseSpec { .. } => "refuse_spec",
            Self::CreateSeed { .. } => "create_seed",
            Self::CreateMember { .. } => "create_member",
            Self::RemoveDeadMember { .. } => "remove_dead_member",
            Self::DeleteRuntimeMember { .. } => "delete_runtime_member",
            Self::AskToLeave { .. } => "ask_to_leave",
            Self::UpgradeMember { .. } => "upgrade_member",
            Self::RestartMember { .. } => "restart_member",
            Self::TakeBackup { .. } => "take_backup",
            Self::ForceNewCluster { .. } => "force_new_cluster",
            Self::RestoreCluster { .. } => "restore_cluster",
            Self::Wait { .. } => "wait",
            Self::Steady => "steady",
        }
    }

    /// True when acting on it changes the cluster or the runtime (false for refuse, wait
    /// and steady, which only update status).
    pub fn changes_something(&self) -> bool {
        !matches!(
            self,
            Self::RefuseSpec { .. } | Self::Wait { .. } | Self::Steady
        )
    }

    /// True when acting on it changes etcd's membership (or may: a created member joins),
    /// which a lost quorum forbids; a restart on the same data does not.
    pub fn changes_membership(&self) -> bool {
        self.changes_something()
            && !matches!(self, Self::RestartMember { .. } | Self::TakeBackup { .. })
    }

    /// The member the action is about, for the `member` log field.
    pub fn member(&self) -> Option<&str> {
        match self {
            Self::CreateSeed { name, .. }
            | Self::CreateMember { name, .. }
            | Self::RemoveDeadMember { name, .. }
            | Self::DeleteRuntimeMember { name, .. }
            | Self::AskToLeave { name }
            | Self::RestartMember { name, .. }
            | Self::TakeBackup { name }
            | Self::ForceNewCluster { name, .. }
            | Self::RestoreCluster { seed: name, .. }
            | Self::UpgradeMember { name, .. } => Some(name),
            Self::RefuseSpec { .. } | Self::Wait { .. } | Self::Steady => None,
        }
    }
}

/// Why the planner waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// A membership change holds the cluster's grant (described for people).
    ChangeInFlight(String),
    /// The named member is joining (a learner, or created and about to join).
    MemberJoining(String),
    /// The named voter runs but is unhealthy or its report is stale.
    Unhealthy(String),
    /// Fewer healthy voters than quorum: nothing may change.
    QuorumLost {
        /// Healthy voters.
        healthy: usize,
        /// All voters.
        voters: usize,
    },
    /// The named member is down but not yet dead.
    MemberDown(String),
    /// Quorum is lost and cannot come back by itself: the data of too many voters is gone.
    QuorumLostForGood {
        /// The voters whose data is gone.
        lost: Vec<String>,
        /// The voters whose data survives, with what they last reported.
        survivors: Vec<Survivor>,
        /// What the spec allows.
        policy: QuorumLossPolicy,
        /// With `Restore`: why no backup can be restored.
        no_backup: Option<String>,
    },
    /// Anything else, said in full.
    Other(String),
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChangeInFlight(change) => {
                write!(f, "a membership change is in flight: {change}")
            }
            Self::MemberJoining(name) => write!(f, "{name} is joining the cluster"),
            Self::Unhealthy(name) => write!(
                f,
                "{name} is unhealthy or its health report is stale; no other change until it is healthy"
            ),
            Self::QuorumLost { healthy, voters } => write!(
                f,
                "quorum lost: {healthy} of {voters} voting members healthy, {} needed; changing nothing until quorum is back",
                quorum(*voters)
            ),
            Self::MemberDown(name) => write!(
                f,
                "{name} is down; waiting for it to come back or to be judged dead"
            ),
            Self::QuorumLostForGood {
                lost,
                survivors,
                policy,
                no_backup,
            } => {
                write!(
                    f,
                    "quorum lost for good: the data of {} is gone ({} of {} voting members); ",
                    lost.join(", "),
                    lost.len(),
                    lost.len() + survivors.len()
                )?;
                if *policy == QuorumLossPolicy::Restore {
                    return match no_backup {
                        Some(why) => write!(
                            f,
                            "spec.recovery.quorumLoss is Restore, but no backup can be restored: {why}. Nothing is changed"
                        ),
                        None => f.write_str(
                            "spec.recovery.quorumLoss is Restore: restoring the latest verified backup",
                        ),
                    };
                }
                if survivors.is_empty() {
                    return f.write_str(
                        "no member survives to recover from: create a new cluster from a backup (or set spec.recovery.quorumLoss: Restore)",
                    );
                }
                let listed: Vec<String> = survivors.iter().map(Survivor::to_string).collect();
                write!(f, "surviving: {}. ", listed.join(", "))?;
                match policy {
                    QuorumLossPolicy::Manual => f.write_str(
                        "Nothing is changed on its own. To recover from the survivor with the highest raft index, set spec.recovery.quorumLoss: ForceNewCluster (writes acknowledged only by the lost members may be lost); to recover from the latest verified backup, set it to Restore (writes after the backup are lost)",
                    ),
                    QuorumLossPolicy::ForceNewCluster => f.write_str(
                        "spec.recovery.quorumLoss is ForceNewCluster: forcing a new cluster once every survivor runs and reports its raft index",
                    ),
                    QuorumLossPolicy::Restore => Ok(()),
                }
            }
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// A voter whose data survived a lost quorum, as it last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    /// The member.
    pub name: String,
    /// Its raft index, when it reported one.
    pub raft_index: Option<u64>,
    /// Its revision, when it reported one.
    pub revision: Option<i64>,
}

impl fmt::Display for Survivor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.raft_index, self.revision) {
            (Some(index), Some(revision)) => {
                write!(f, "{} (raft index {index}, revision {revision})", self.name)
            }
            _ => write!(f, "{} (not reporting)", self.name),
        }
    }
}

/// The phase shown in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// No cluster yet, or the seed still alone while growing.
    Creating,
    /// Everything matches the spec.
    Running,
    /// Adding or removing members toward the spec's size.
    Scaling,
    /// Moving members to the spec's version.
    Upgrading,
    /// Removing dead members or cleaning up after them.
    Recovering,
    /// A member is down or unhealthy; no change until it is back or dead.
    Degraded,
    /// Quorum lost or every member down; nothing changes.
    Failed,
    /// The spec is refused.
    Invalid,
}

impl Phase {
    /// The word written to status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::Running => "Running",
            Self::Scaling => "Scaling",
            Self::Upgrading => "Upgrading",
            Self::Recovering => "Recovering",
            Self::Degraded => "Degraded",
            Self::Failed => "Failed",
            Self::Invalid => "Invalid",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The one next step.
    pub action: Action,
    /// The phase to show.
    pub phase: Phase,
    /// Warnings to show (the even-size warning from [`ValidSpec`]).
    pub warnings: Vec<String>,
}

impl Plan {
    /// True when nothing is under way and nothing is awaited: the cluster matches its spec
    /// (or the spec is refused), so the next step can only come from a change (of the
    /// spec, a member, a report), not from time passing. Otherwise (an action taken, a
    /// wait for a report, a member, a grant; any phase but Running or Invalid) the
    /// cluster is looked at again soon.
    pub fn settled(&self) -> bool {
        matches!(self.action, Action::Steady | Action::RefuseSpec { .. })
            && matches!(self.phase, Phase::Running | Phase::Invalid)
    }
}

pub use etcd_operator::quorum;

/// The lowest version any runtime member runs: what etcd's cluster version follows, and
/// what the next version step is checked from.
pub fn cluster_version(observed: &Observed) -> Option<EtcdVersion> {
    observed.members.iter().map(running_version).min()
}

/// Decides the next step for one cluster. See the module doc for the rules.
pub fn plan(observed: &Observed) -> Plan {
    let spec = match &observed.spec {
        Ok(spec) => spec,
        Err(errors) => {
            return Plan {
                action: Action::RefuseSpec {
                    message: errors.to_string(),
                },
                phase: Phase::Invalid,
                warnings: Vec::new(),
            };
        }
    };
    let (action, phase) = match check_version_steps(observed, spec) {
        Err(message) => (Action::RefuseSpec { message }, Phase::Invalid),
        Ok(()) => View::new(observed, spec).decide(),
    };
    Plan {
        action,
        phase,
        warnings: spec.warnings.clone(),
    }
}

/// The version a member runs: what etcd says when it says something usable, else what the
/// runtime runs it with.
fn running_version(member: &RuntimeMember) -> EtcdVersion {
    member
        .report
        .as_ref()
        .and_then(|r| r.etcd_version.parse().ok())
        .unwrap_or(member.version)
}

/// Checks the step from every running version, not only the lowest: in the middle of an
/// upgrade, a spec set back to the old version would otherwise pass from the lowest member
/// and downgrade the upgraded ones across a minor version.
fn check_version_steps(observed: &Observed, spec: &ValidSpec) -> Result<(), String> {
    let mut versions: Vec<EtcdVersion> = observed.members.iter().map(running_version).collect();
    versions.sort();
    versions.dedup();
    for from in versions {
        check_version_step(from, spec.version, spec.allow_downgrade).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn is_fresh(report: &MemberReport, now: UnixMillis, policy: &Policy) -> bool {
    now.saturating_sub(report.observed_at) <= policy.report_stale_after_ms
}

fn is_dead(member: &RuntimeMember, now: UnixMillis, policy: &Policy) -> bool {
    if member.running {
        return false;
    }
    if member.data == MemberData::Gone {
        return true;
    }
    member
        .failing_since
        .or(member.down_since)
        .is_some_and(|since| now.saturating_sub(since) >= policy.dead_after_ms)
}

/// The etcd entry a runtime member is, if etcd lists it.
fn entry_of<'a>(member: &RuntimeMember, etcd: &'a [EtcdMember]) -> Option<&'a EtcdMember> {
    let id = member.report.as_ref().map_or(0, |r| r.member_id);
    if id != 0
        && let Some(entry) = etcd.iter().find(|e| e.id == id)
    {
        return Some(entry);
    }
    etcd.iter()
        .find(|e| !e.name.is_empty() && e.name == member.name)
}

/// Whether a member etcd does not list has left for good: its sidecar says it was removed,
/// or it ran under an id etcd no longer lists and is not on its way in.
fn has_left(member: &RuntimeMember) -> bool {
    member.report.as_ref().is_some_and(|r| {
        r.phase == ReportedPhase::Removed || (r.member_id != 0 && !r.phase.is_before_join())
    })
}

/// Why a dead member is dead, for people.
fn dead_reason(member: &RuntimeMember, now: UnixMillis, dead_after: i64) -> String {
    if member.data == MemberData::Gone {
        return "its process is gone and so is its data".to_string();
    }
    let failing = member
        .failing_since
        .or(member.down_since)
        .map_or(0, |since| now.saturating_sub(since));
    match member.restarts {
        0 => format!(
            "not running for {}s (dead after {}s)",
            seconds(failing),
            seconds(dead_after)
        ),
        n => format!(
            "not back healthy {}s after its first exit, {n} restart{} (dead after {}s)",
            seconds(failing),
            if n == 1 { "" } else { "s" },
            seconds(dead_after)
        ),
    }
}

fn entry_name(entry: &EtcdMember) -> String {
    if entry.name.is_empty() {
        member_id_hex(entry.id)
    } else {
        entry.name.clone()
    }
}

fn seconds(ms: i64) -> i64 {
    ms / 1000
}

type Step = (Action, Phase);

fn wait(reason: WaitReason, phase: Phase) -> Step {
    (Action::Wait { reason }, phase)
}

/// A runtime member joined with what etcd and its report say about it.
struct MemberView<'a> {
    runtime: &'a RuntimeMember,
    entry: Option<&'a EtcdMember>,
    dead: bool,
    /// Running with a fresh, healthy report.
    healthy: bool,
    /// Not in etcd and will not join (only judged when etcd's list is known).
    left: bool,
}

impl MemberView<'_> {
    fn name(&self) -> &str {
        &self.runtime.name
    }

    fn is_voter(&self) -> bool {
        self.entry.is_some_and(|e| !e.is_learner)
    }

    fn is_learner(&self) -> bool {
        self.entry.is_some_and(|e| e.is_learner)
    }

    fn is_leader(&self) -> bool {
        self.runtime.report.as_ref().is_some_and(|r| r.leader)
    }

    fn reported_phase(&self) -> Option<ReportedPhase> {
        self.runtime.report.as_ref().map(|r| r.phase)
    }

    /// Down or unhealthy because of an upgrade: mid-handoff, or the runtime is moving it to
    /// another version than the one it last reported running.
    fn in_upgrade(&self) -> bool {
        self.reported_phase() == Some(ReportedPhase::HandedOff)
            || self
                .runtime
                .report
                .as_ref()
                .and_then(|r| r.etcd_version.parse::<EtcdVersion>().ok())
                .is_some_and(|reported| reported != self.runtime.version)
    }

    /// Down with its data, waiting for the planner to start it again.
    fn restartable(&self) -> bool {
        !self.runtime.running
            && self.runtime.data == MemberData::Intact
            && self.runtime.restart_on_request
            && !self.left
    }

    fn trouble_phase(&self) -> Phase {
        if self.in_upgrade() {
            Phase::Upgrading
        } else {
            Phase::Degraded
        }
    }
}

/// A dead member etcd lists: an orphan entry or a dead runtime member's entry.
struct DeadEntry<'a> {
    name: String,
    entry: &'a EtcdMember,
    healthy: bool,
    ordinal: u32,
    reason: String,
}

/// Everything the rules look at, computed once.
struct View<'a> {
    observed: &'a Observed,
    spec: &'a ValidSpec,
    /// By ordinal.
    members: Vec<MemberView<'a>>,
    /// etcd entries no runtime member is.
    orphans: Vec<&'a EtcdMember>,
    voters: usize,
    healthy_voters: usize,
}

impl<'a> View<'a> {
    fn new(observed: &'a Observed, spec: &'a ValidSpec) -> Self {
        let etcd: &[EtcdMember] = observed.etcd_members.as_deref().unwrap_or_default();
        let (now, policy) = (observed.now, &observed.policy);
        let mut members: Vec<MemberView<'a>> = observed
            .members
            .iter()
            .map(|runtime| {
                let entry = entry_of(runtime, etcd);
                MemberView {
                    runtime,
                    entry,
                    dead: is_dead(runtime, now, policy),
                    healthy: runtime.running
                        && runtime
                            .report
                            .as_ref()
                            .is_some_and(|r| r.healthy && is_fresh(r, now, policy)),
                    left: observed.etcd_members.is_some() && entry.is_none() && has_left(runtime),
                }
            })
            .collect();
        members.sort_by(|a, b| {
            (a.runtime.ordinal, &a.runtime.name).cmp(&(b.runtime.ordinal, &b.runtime.name))
        });

        let claimed = |entry: &EtcdMember| {
            members
                .iter()
                .any(|m| m.entry.is_some_and(|e| e.id == entry.id))
        };
        let someone_to_join = members
            .iter()
            .any(|m| m.entry.is_none() && !m.dead && !m.left);
        let orphans = etcd
            .iter()
            .filter(|e| !claimed(e))
            .filter(|e| !(e.name.is_empty() && someone_to_join))
            .collect();
        let voters = etcd.iter().filter(|e| !e.is_learner).count();
        // Counted per entry, so that two runtime members claiming one entry count once.
        let healthy_voters = etcd
            .iter()
            .filter(|e| !e.is_learner)
            .filter(|e| {
                members
                    .iter()
                    .any(|m| m.healthy && m.entry.is_some_and(|x| x.id == e.id))
            })
            .count();
        Self {
            observed,
            spec,
            members,
            orphans,
            voters,
            healthy_voters,
        }
    }

    fn decide(&self) -> Step {
        let observed = self.observed;
        if observed.members.is_empty() && observed.etcd_members.is_none() {
            if let Some(Err(message)) = &observed.restore {
                return (
                    Action::RefuseSpec {
                        message: message.clone(),
                    },
                    Phase::Invalid,
                );
            }
            // A cluster that had members (ordinals were handed out) and has none left, under
            // `Restore`: never an empty seed; it comes back from its latest verified backup
            // (a restore interrupted between deleting the members and creating the seed).
            if observed.next_ordinal > 0
                && observed.restore.is_none()
                && let Some(step) = self.restore_from_backup(Vec::new(), Vec::new())
            {
                return step;
            }
            return (
                Action::CreateSeed {
                    name: self.new_member_name(),
                    version: self.spec.version,
                },
                Phase::Creating,
            );
        }
        if let Some(step) = self.restart_down() {
            return step;
        }
        if let Some(grant) = &observed.grant {
            return wait(
                WaitReason::ChangeInFlight(format!(
                    "{} of {} (grant {})",
                    kind_name(grant.kind),
                    grant.member,
                    grant.id
                )),
                self.grant_phase(grant),
            );
        }
        if observed.etcd_members.is_none() {
            return self.unformed();
        }
        if self.healthy_voters < quorum(self.voters) {
            // Still no action either way; only what people are told differs. A voter that
            // just joined or bootstrapped (its sidecar says so, or has not reported yet)
            // is settling, not lost.
            if let Some(settling) = self.settling_voter() {
                return match settling.reported_phase() {
                    // The coordinator itself just started: it knows nothing yet.
                    None => wait(
                        WaitReason::Other(format!(
                            "waiting for the first health report of {}",
                            settling.name()
                        )),
                        Phase::Degraded,
                    ),
                    Some(_) => wait(
                        WaitReason::MemberJoining(settling.name().to_string()),
                        self.growth_phase(),
                    ),
                };
            }
            return self.quorum_lost();
        }
        let step = self
            .delete_on_request()
            .or_else(|| self.handle_dead())
            .or_else(|| self.delete_left())
            .or_else(|| self.wait_for_joiner())
            .or_else(|| self.wait_for_unhealthy())
            .or_else(|| self.scale())
            .or_else(|| self.upgrade())
            .unwrap_or((Action::Steady, Phase::Running));
        // A backup that is due goes first (backups matter most when something is wrong),
        // with the phase the rest of the rules show.
        match self.backup_member() {
            Some(name) => (Action::TakeBackup { name }, step.1),
            None => step,
        }
    }

    /// Rule 7b: the member to take a due backup from: a healthy voter, a follower when
    /// there is one (sparing the leader), lowest ordinal first. Only with quorum: a snapshot
    /// of a member that cannot reach a quorum may be behind.
    fn backup_member(&self) -> Option<String> {
        if !self.observed.backup_due {
            return None;
        }
        self.members
            .iter()
            .filter(|m| m.is_voter() && m.healthy)
            .min_by_key(|m| (m.is_leader(), m.runtime.ordinal))
            .map(|m| m.name().to_string())
    }

    /// A never-used name: the caller's counter, but never below an ordinal already visible,
    /// so that a counter lost or lagging cannot hand out a name twice.
    fn new_member_name(&self) -> String {
        let cluster = &self.observed.cluster.name;
        let seen = self
            .observed
            .members
            .iter()
            .map(|m| m.ordinal)
            .chain(
                self.observed
                    .etcd_members
                    .iter()
                    .flatten()
                    .filter_map(|e| member_ordinal(cluster, &e.name)),
            )
            .max();
        let ordinal = match seen {
            Some(highest) => self.observed.next_ordinal.max(highest.saturating_add(1)),
            None => self.observed.next_ordinal,
        };
        member_name(cluster, ordinal)
    }

    fn growth_phase(&self) -> Phase {
        if self.voters <= 1 && self.spec.size > 1 {
            Phase::Creating
        } else {
            Phase::Scaling
        }
    }

    fn grant_phase(&self, grant: &MembershipGrant) -> Phase {
        if self.observed.etcd_members.is_some()
            && self.healthy_voters < quorum(self.voters)
            && self.settling_voter().is_none()
        {
            return Phase::Failed;
        }
        let gone = !self
            .members
            .iter()
            .any(|m| m.name() == grant.member && !m.dead);
        match grant.kind {
            ChangeKind::Bootstrap => Phase::Creating,
            ChangeKind::Add => self.growth_phase(),
            ChangeKind::Replace | ChangeKind::ForceNewCluster => Phase::Recovering,
            ChangeKind::Upgrade => Phase::Upgrading,
            ChangeKind::Remove if gone => Phase::Recovering,
            ChangeKind::Remove | ChangeKind::Unspecified => Phase::Scaling,
        }
    }

    /// When every voter short of healthy is running and has either not reported yet or
    /// reports that it is still starting, bootstrapping or joining: one of them.
    fn settling_voter(&self) -> Option<&MemberView<'a>> {
        let unhealthy: Vec<&MemberView<'a>> = self
            .members
            .iter()
            .filter(|m| m.is_voter() && !m.healthy)
            .collect();
        let settling = |m: &&MemberView| {
            m.runtime.running
                && matches!(
                    m.reported_phase(),
                    None | Some(
                        ReportedPhase::Starting
                            | ReportedPhase::Bootstrapping
                            | ReportedPhase::Joining
                    )
                )
        };
        let voters_seen = self.members.iter().filter(|m| m.is_voter()).count();
        if unhealthy.is_empty() || voters_seen < self.voters || !unhealthy.iter().all(settling) {
            return None;
        }
        unhealthy.first().copied()
    }

    /// Rule 4: the first member down with its data whose backoff has passed.
    fn restart_down(&self) -> Option<Step> {
        let now = self.observed.now;
        let due = |m: &&MemberView<'_>| {
            let since = m.runtime.down_since.unwrap_or(now);
            now.saturating_sub(since) >= restart_backoff_ms(m.runtime.restarts)
        };
        let m = self
            .members
            .iter()
            .filter(|m| m.restartable() && !self.replaced_instead(m))
            .find(due)?;
        let reason = match m.runtime.restarts {
            0 => "its process is gone and its data is intact".to_string(),
            n => format!(
                "it exited again after {n} restart{}; its data is intact",
                if n == 1 { "" } else { "s" }
            ),
        };
        let phase =
            if self.observed.etcd_members.is_none() || self.healthy_voters < quorum(self.voters) {
                Phase::Recovering
            } else {
                m.trouble_phase()
            };
        Some((
            Action::RestartMember {
                name: m.name().to_string(),
                reason,
            },
            phase,
        ))
    }

    /// A dead member that rule 8 replaces now, so it is not restarted again.
    fn replaced_instead(&self, m: &MemberView<'_>) -> bool {
        m.dead
            && self.observed.grant.is_none()
            && self.observed.etcd_members.is_some()
            && self.healthy_voters >= quorum(self.voters)
            && m.entry
                .is_none_or(|e| self.removal_keeps_quorum(e, m.healthy))
    }

    fn quorum_lost(&self) -> Step {
        self.quorum_lost_for_good().unwrap_or_else(|| {
            wait(
                WaitReason::QuorumLost {
                    healthy: self.healthy_voters,
                    voters: self.voters,
                },
                Phase::Failed,
            )
        })
    }

    /// Rule 7, when too few voters keep their data to make a quorum again: wait, or force a
    /// new cluster from the most up-to-date survivor when the spec allows it.
    fn quorum_lost_for_good(&self) -> Option<Step> {
        let etcd = self.observed.etcd_members.as_deref()?;
        let (now, policy) = (self.observed.now, &self.observed.policy);
        let mut lost = Vec::new();
        let mut survivors: Vec<&MemberView<'a>> = Vec::new();
        for entry in etcd.iter().filter(|e| !e.is_learner) {
            let keeper = self.members.iter().find(|m| {
                m.entry.is_some_and(|x| x.id == entry.id)
                    && !m.left
                    && (m.runtime.running || m.runtime.data == MemberData::Intact)
            });
            match keeper {
                Some(m) => survivors.push(m),
                None => lost.push(entry_name(entry)),
            }
        }
        if survivors.len() >= quorum(lost.len() + survivors.len()) {
            return None;
        }
        lost.sort_by_key(|name| {
            (
                member_ordinal(&self.observed.cluster.name, name).unwrap_or(u32::MAX),
                name.clone(),
            )
        });
        let described: Vec<Survivor> = survivors
            .iter()
            .map(|m| {
                let report =
                    m.runtime.report.as_ref().filter(|r| {
                        m.runtime.running && is_fresh(r, now, policy) && r.raft_index > 0
                    });
                Survivor {
                    name: m.name().to_string(),
                    raft_index: report.map(|r| r.raft_index),
                    revision: report.map(|r| r.revision),
                }
            })
            .collect();
        let quorum_loss = self.spec.quorum_loss;
        if let Some(step) = self.restore_from_backup(lost.clone(), described.clone()) {
            return Some(step);
        }
        let ready = quorum_loss == QuorumLossPolicy::ForceNewCluster
            && !described.is_empty()
            && described.iter().all(|s| s.raft_index.is_some());
        let best = described
            .iter()
            .zip(&survivors)
            .max_by_key(|(s, m)| (s.raft_index, s.revision, Reverse(m.runtime.ordinal)))
            .map(|(s, _)| s);
        match best {
            Some(best) if ready => Some((
                Action::ForceNewCluster {
                    name: best.name.clone(),
                    raft_index: best.raft_index.unwrap_or_default(),
                    revision: best.revision.unwrap_or_default(),
                    lost,
                },
                Phase::Recovering,
            )),
            _ => Some(wait(
                WaitReason::QuorumLostForGood {
                    lost,
                    survivors: described,
                    policy: quorum_loss,
                    no_backup: None,
                },
                Phase::Failed,
            )),
        }
    }

    /// With `spec.recovery.quorumLoss: Restore`, the way back once quorum is lost for good:
    /// the cluster created again from the latest verified backup, or a wait saying why not.
    fn restore_from_backup(&self, lost: Vec<String>, survivors: Vec<Survivor>) -> Option<Step> {
        if self.spec.quorum_loss != QuorumLossPolicy::Restore {
            return None;
        }
        Some(match &self.observed.recovery_backup {
            Some(Ok(backup)) => (
                Action::RestoreCluster {
                    backup: backup.clone(),
                    seed: self.new_member_name(),
                    version: self.spec.version,
                    discard: self
                        .observed
                        .members
                        .iter()
                        .map(|m| m.name.clone())
                        .collect(),
                    lost,
                },
                Phase::Recovering,
            ),
            other => wait(
                WaitReason::QuorumLostForGood {
                    lost,
                    survivors,
                    policy: QuorumLossPolicy::Restore,
                    no_backup: Some(match other {
                        Some(Err(why)) => why.clone(),
                        _ => "the backup storage has not been read yet".into(),
                    }),
                },
                Phase::Failed,
            ),
        })
    }

    /// Rule 5: runtime members exist but no member answered etcd's member-list read.
    /// Runtime members stand in for voters, since etcd cannot say who votes.
    fn unformed(&self) -> Step {
        let formed = self
            .members
            .iter()
            .any(|m| m.runtime.report.as_ref().is_some_and(|r| r.member_id != 0));
        let mut running = self.members.iter().filter(|m| m.runtime.running).peekable();
        if running.peek().is_none() {
            // Every member down and every one's data gone: nothing to come back on.
            if self.spec.quorum_loss == QuorumLossPolicy::Restore
                && self
                    .members
                    .iter()
                    .all(|m| m.runtime.data == MemberData::Gone)
            {
                let lost = self.members.iter().map(|m| m.name().to_string()).collect();
                if let Some(step) = self.restore_from_backup(lost, Vec::new()) {
                    return step;
                }
            }
            if self.members.iter().any(|m| m.dead) {
                return wait(
                    WaitReason::QuorumLost {
                        healthy: 0,
                        voters: self.members.len(),
                    },
                    Phase::Failed,
                );
            }
            // Every member is down, none long enough to be dead: a seed still being scheduled
            // when no member ever reported an id, otherwise a cluster that went down.
            let name = self.members.first().map(|m| m.name().to_string());
            let phase = if formed {
                Phase::Failed
            } else {
                Phase::Creating
            };
            return wait(WaitReason::MemberDown(name.unwrap_or_default()), phase);
        }
        let mut running: Vec<&MemberView<'_>> = running.collect();
        if let Some(starting) = running
            .iter()
            .find(|m| m.reported_phase().is_none_or(ReportedPhase::is_before_join))
        {
            let phase = if formed {
                Phase::Recovering
            } else {
                Phase::Creating
            };
            return wait(
                WaitReason::MemberJoining(starting.name().to_string()),
                phase,
            );
        }
        running.retain(|m| m.healthy && !m.runtime.report.as_ref().is_some_and(|r| r.learner));
        let (healthy, voters) = (running.len(), self.members.len());
        if healthy >= quorum(voters) {
            wait(
                WaitReason::Other(format!(
                    "no member answered the member-list read, though {healthy} of {voters} members report healthy"
                )),
                Phase::Degraded,
            )
        } else {
            wait(WaitReason::QuorumLost { healthy, voters }, Phase::Failed)
        }
    }

    /// Rule 8, first part: a member an operator deleted goes with its data, as a Pod
    /// deleted by `kubectl delete pod` does; it is then replaced like any member whose data
    /// is gone. Never below quorum: the deletion waits until the others are healthy.
    fn delete_on_request(&self) -> Option<Step> {
        let m = self.members.iter().find(|m| {
            self.observed
                .delete_requested
                .iter()
                .any(|name| name == m.name())
        })?;
        let keeps_quorum = m
            .entry
            .is_none_or(|e| self.removal_keeps_quorum(e, m.healthy));
        Some(if keeps_quorum {
            (
                Action::DeleteRuntimeMember {
                    name: m.name().to_string(),
                    reason: "deleted with its data on an operator's request".to_string(),
                },
                Phase::Recovering,
            )
        } else {
            wait(
                WaitReason::Other(format!(
                    "deleting {} as asked would leave fewer than quorum healthy voters: waiting until the others are healthy",
                    m.name()
                )),
                Phase::Degraded,
            )
        })
    }

    /// Rule 8: the dead first, then the down.
    fn handle_dead(&self) -> Option<Step> {
        let now = self.observed.now;
        let dead_after = self.observed.policy.dead_after_ms;
        let mut candidates: Vec<DeadEntry<'_>> = self
            .orphans
            .iter()
            .map(|entry| DeadEntry {
                name: entry_name(entry),
                entry,
                healthy: false,
                ordinal: member_ordinal(&self.observed.cluster.name, &entry.name)
                    .unwrap_or(u32::MAX),
                reason:
                    "etcd lists it but the runtime has no such member (its pod or process is gone)"
                        .to_string(),
            })
            .collect();
        candidates.extend(self.members.iter().filter(|m| m.dead).filter_map(|m| {
            Some(DeadEntry {
                name: m.name().to_string(),
                entry: m.entry?,
                healthy: m.healthy,
                ordinal: m.runtime.ordinal,
                reason: dead_reason(m.runtime, now, dead_after),
            })
        }));
        // Voters first: they are what quorum and fault tolerance depend on.
        candidates.sort_by_key(|c| (c.entry.is_learner, c.ordinal, c.entry.id));
        if !candidates.is_empty() {
            let removable = candidates
                .into_iter()
                .find(|c| self.removal_keeps_quorum(c.entry, c.healthy));
            return Some(match removable {
                Some(c) => (
                    Action::RemoveDeadMember {
                        name: c.name,
                        member_id: c.entry.id,
                        reason: c.reason,
                    },
                    Phase::Recovering,
                ),
                None => self.quorum_lost(),
            });
        }
        if let Some(m) = self.members.iter().find(|m| m.dead && m.entry.is_none()) {
            return Some((
                Action::DeleteRuntimeMember {
                    name: m.name().to_string(),
                    reason: format!(
                        "{} and not in etcd's member list",
                        dead_reason(m.runtime, now, dead_after)
                    ),
                },
                Phase::Recovering,
            ));
        }
        // A listed member that is down but not dead may come back on its data: changing
        // anything else now would only shrink the margin if it does not.
        self.members
            .iter()
            .find(|m| !m.runtime.running && !m.dead && m.entry.is_some())
            .map(|m| {
                wait(
                    WaitReason::MemberDown(m.name().to_string()),
                    m.trouble_phase(),
                )
            })
    }

    /// Whether removing `entry` leaves at least quorum of the remaining voters healthy.
    /// A learner does not vote, so its removal never affects quorum.
    fn removal_keeps_quorum(&self, entry: &EtcdMember, healthy: bool) -> bool {
        if entry.is_learner {
            return true;
        }
        let voters_after = self.voters.saturating_sub(1);
        let healthy_after = self.healthy_voters.saturating_sub(usize::from(healthy));
        healthy_after >= quorum(voters_after)
    }

    /// Rule 8: a member that left keeps nothing worth having (its data is wiped).
    fn delete_left(&self) -> Option<Step> {
        let m = self.members.iter().find(|m| m.left)?;
        let report = m.runtime.report.as_ref()?;
        Some(if report.phase == ReportedPhase::Removed {
            (
                Action::DeleteRuntimeMember {
                    name: m.name().to_string(),
                    reason: "it left the cluster (its sidecar reports it removed)".to_string(),
                },
                Phase::Scaling,
            )
        } else {
            (
                Action::DeleteRuntimeMember {
                    name: m.name().to_string(),
                    reason: format!(
                        "its member id {} is no longer in etcd's member list",
                        member_id_hex(report.member_id)
                    ),
                },
                Phase::Recovering,
            )
        })
    }

    /// Rule 9: one member joins at a time (etcd holds one learner by default), so nothing
    /// else starts while one does. A member the runtime has but etcd does not list yet
    /// counts, even while its pod is still starting: it has never been a member, so it is
    /// joining, not down.
    fn wait_for_joiner(&self) -> Option<Step> {
        let joiner = self.members.iter().find(|m| m.is_learner()).or_else(|| {
            self.members
                .iter()
                .find(|m| m.entry.is_none() && !m.dead && !m.left)
        })?;
        Some(wait(
            WaitReason::MemberJoining(joiner.name().to_string()),
            self.growth_phase(),
        ))
    }

    /// Rule 10: a running voter whose health is bad or unknown blocks every change; it is
    /// never removed for it.
    fn wait_for_unhealthy(&self) -> Option<Step> {
        let m = self.members.iter().find(|m| m.is_voter() && !m.healthy)?;
        Some(wait(
            WaitReason::Unhealthy(m.name().to_string()),
            m.trouble_phase(),
        ))
    }

    /// Rules 11 and 12. By now every voter is a healthy runtime member.
    fn scale(&self) -> Option<Step> {
        let size = usize::try_from(self.spec.size).unwrap_or(usize::MAX);
        if self.voters < size {
            return Some((
                Action::CreateMember {
                    name: self.new_member_name(),
                    version: self.spec.version,
                },
                self.growth_phase(),
            ));
        }
        if self.voters == size {
            return None;
        }
        // A member already leaving is asked again (the request is idempotent and its answer
        // may have been lost); otherwise the newest non-leader, so that leadership moves only
        // when nothing else can go.
        let leaving = self
            .members
            .iter()
            .filter(|m| m.is_voter())
            .min_by_key(|m| {
                (
                    m.reported_phase() != Some(ReportedPhase::Leaving),
                    m.is_leader(),
                    Reverse(m.runtime.ordinal),
                )
            });
        Some(match leaving {
            Some(m)
                if m.entry
                    .is_some_and(|e| self.removal_keeps_quorum(e, m.healthy)) =>
            {
                (
                    Action::AskToLeave {
                        name: m.name().to_string(),
                    },
                    Phase::Scaling,
                )
            }
            _ => wait(
                WaitReason::Other(format!(
                    "scaling down from {} to {size} voters would leave fewer than quorum healthy",
                    self.voters
                )),
                Phase::Degraded,
            ),
        })
    }

    /// Rule 13: followers first, the leader last (its sidecar moves leadership to an
    /// up-to-date voter during the handoff).
    fn upgrade(&self) -> Option<Step> {
        let to = self.spec.version;
        let m = self
            .members
            .iter()
            .filter(|m| m.is_voter() && running_version(m.runtime) != to)
            .min_by_key(|m| (m.is_leader(), m.runtime.ordinal))?;
        // A handoff stops one voter; the others must still make a quorum. A single member
        // cannot avoid the pause, two members would stall writes, so two wait.
        let healthy_during = self.healthy_voters.saturating_sub(1);
        if self.healthy_voters < self.voters
            || (self.voters >= 2 && healthy_during < quorum(self.voters))
        {
            return Some(wait(
                WaitReason::Other(format!(
                    "upgrading {} would leave {healthy_during} of {} voters running, below quorum ({}): scale to at least 3 members first",
                    m.name(),
                    self.voters,
                    quorum(self.voters)
                )),
                Phase::Upgrading,
            ));
        }
        Some((
            Action::UpgradeMember {
                name: m.name().to_string(),
                to,
            },
            Phase::Upgrading,
        ))
    }
}

#[cfg(test)]
mod tests {
    use etcd_operator::validate::SpecError;

    use super::*;

    const CLUSTER: &str = "demo";
    const NOW: UnixMillis = 1_000_000;
    const V34: EtcdVersion = EtcdVersion::new(3, 4, 45);
    const V35: EtcdVersion = EtcdVersion::new(3, 5, 34);
    const V36: EtcdVersion = EtcdVersion::new(3, 6, 15);

    fn name(ordinal: u32) -> String {
        member_name(CLUSTER, ordinal)
    }

    fn id(ordinal: u32) -> u64 {
        0x1000 + u64::from(ordinal)
    }

    fn v(text: &str) -> EtcdVersion {
        text.parse().unwrap()
    }

    fn waiting(reason: WaitReason) -> Action {
        Action::Wait { reason }
    }

    /// Builds an [`Observed`] one fact at a time.
    #[derive(Clone)]
    struct Situation(Observed);

    impl Situation {
        /// No member, no cluster, spec `size` at 3.6.15.
        fn empty(size: u32) -> Self {
            Self(Observed {
                cluster: ClusterKey::local(CLUSTER),
                spec: Ok(ValidSpec {
                    size,
                    version: V36,
                    allow_downgrade: false,
                    quorum_loss: QuorumLossPolicy::Manual,
                    warnings: Vec::new(),
                }),
                members: Vec::new(),
                etcd_members: None,
                grant: None,
                next_ordinal: 0,
                delete_requested: Vec::new(),
                backup_due: false,
                restore: None,
                recovery_backup: None,
                now: NOW,
                policy: Policy::default(),
            })
        }

        /// `n` healthy voters with ordinals `0..n`, member 0 leading, spec size `n`.
        fn healthy(n: u32) -> Self {
            let mut s = Self::empty(n);
            s.0.etcd_members = Some(Vec::new());
            for ordinal in 0..n {
                s = s.voter(ordinal);
            }
            s.leader(0)
        }

        fn add(&mut self, ordinal: u32, report: Option<MemberReport>) {
            self.0.members.push(RuntimeMember {
                name: name(ordinal),
                ordinal,
                running: true,
                down_since: None,
                version: V36,
                report,
                data: MemberData::Intact,
                restart_on_request: false,
                restarts: 0,
                failing_since: None,
            });
            self.0.next_ordinal = self.0.next_ordinal.max(ordinal + 1);
        }

        fn add_entry(&mut self, ordinal: u32, named: bool, is_learner: bool) {
            self.0
                .etcd_members
                .get_or_insert_with(Vec::new)
                .push(EtcdMember {
                    id: id(ordinal),
                    name: if named { name(ordinal) } else { String::new() },
                    peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + ordinal)],
                    client_urls: Vec::new(),
                    is_learner,
                });
        }

        fn healthy_report(ordinal: u32, learner: bool) -> MemberReport {
            MemberReport {
                member_id: id(ordinal),
                healthy: true,
                leader: false,
                learner,
                etcd_version: V36.to_string(),
                phase: if learner {
                    ReportedPhase::Joining
                } else {
                    ReportedPhase::Running
                },
                observed_at: NOW - 500,
                raft_index: 100 + u64::from(ordinal),
                revision: 50,
            }
        }

        /// A healthy voter.
        fn voter(mut self, ordinal: u32) -> Self {
            self.add(ordinal, Some(Self::healthy_report(ordinal, false)));
            self.add_entry(ordinal, true, false);
            self
        }

        /// A member added as a learner and running.
        fn learner(mut self, ordinal: u32) -> Self {
            self.add(ordinal, Some(Self::healthy_report(ordinal, true)));
            self.add_entry(ordinal, true, true);
            self
        }

        /// A member the runtime created whose sidecar has not joined yet.
        fn joiner(mut self, ordinal: u32) -> Self {
            self.add(
                ordinal,
                Some(MemberReport {
                    member_id: 0,
                    healthy: false,
                    leader: false,
                    learner: false,
                    etcd_version: String::new(),
                    phase: ReportedPhase::Starting,
                    observed_at: NOW - 500,
                    raft_index: 0,
                    revision: 0,
                }),
            );
            self
        }

        /// An entry etcd lists without a name: added, never started.
        fn unnamed_learner(mut self, ordinal: u32) -> Self {
            self.add_entry(ordinal, false, true);
            self
        }

        fn member(&mut self, ordinal: u32) -> &mut RuntimeMember {
            self.0
                .members
                .iter_mut()
                .find(|m| m.ordinal == ordinal)
                .unwrap()
        }

        fn report(&mut self, ordinal: u32) -> &mut MemberReport {
            self.member(ordinal).report.as_mut().unwrap()
        }

        fn leader(mut self, ordinal: u32) -> Self {
            for m in &mut self.0.members {
                if let Some(r) = m.report.as_mut() {
                    r.leader = m.ordinal == ordinal;
                }
            }
            self
        }

        fn size(mut self, size: u32) -> Self {
            self.spec_mut().size = size;
            self
        }

        fn spec_version(mut self, version: &str) -> Self {
            self.spec_mut().version = v(version);
            self
        }

        fn spec_mut(&mut self) -> &mut ValidSpec {
            self.0.spec.as_mut().unwrap()
        }

        /// Every member runs `version`.
        fn all_run(mut self, version: &str) -> Self {
            let ordinals: Vec<u32> = self.0.members.iter().map(|m| m.ordinal).collect();
            for ordinal in ordinals {
                self = self.runs(ordinal, version);
            }
            self
        }

        fn runs(mut self, ordinal: u32, version: &str) -> Self {
            let m = self.member(ordinal);
            m.version = v(version);
            if let Some(r) = m.report.as_mut() {
                r.etcd_version = version.to_string();
            }
            self
        }

        /// Not running for a minute (dead), its last report as old.
        fn dead(self, ordinal: u32) -> Self {
            self.down_for(ordinal, 60_000)
        }

        /// Not running for two seconds (down, not dead).
        fn down(self, ordinal: u32) -> Self {
            self.down_for(ordinal, 2_000)
        }

        fn down_for(mut self, ordinal: u32, ms: i64) -> Self {
            let m = self.member(ordinal);
            m.running = false;
            m.down_since = Some(NOW - ms);
            if let Some(r) = m.report.as_mut() {
                r.observed_at = NOW - ms;
            }
            self
        }

        /// Its process exited `ms` ago with its data intact; the runtime waits for the planner
        /// to start it again (local mode, or a Pod gone whose claim stays).
        fn crashed_for(mut self, ordinal: u32, ms: i64) -> Self {
            self = self.down_for(ordinal, ms);
            let m = self.member(ordinal);
            m.restart_on_request = true;
            m.failing_since = m.down_since;
            self
        }

        /// Exited just now with its data intact.
        fn crashed(self, ordinal: u32) -> Self {
            self.crashed_for(ordinal, 0)
        }

        /// Crashed, and its data is gone too (wiped, or never written).
        fn wiped(mut self, ordinal: u32) -> Self {
            self = self.crashed(ordinal);
            self.member(ordinal).data = MemberData::Gone;
            self
        }

        /// Restarted `restarts` times since it first failed `failing_ms` ago; down again
        /// for `down_ms`.
        fn crash_looping(
            mut self,
            ordinal: u32,
            restarts: u32,
            failing_ms: i64,
            down_ms: i64,
        ) -> Self {
            self = self.crashed_for(ordinal, down_ms);
            let m = self.member(ordinal);
            m.restarts = restarts;
            m.failing_since = Some(NOW - failing_ms);
            self
        }

        fn raft(mut self, ordinal: u32, raft_index: u64, revision: i64) -> Self {
            let r = self.report(ordinal);
            r.raft_index = raft_index;
            r.revision = revision;
            self
        }

        /// Running, no leader (quorum is gone), still reporting its raft index.
        fn leaderless(mut self, ordinal: u32) -> Self {
            let r = self.report(ordinal);
            r.healthy = false;
            r.leader = false;
            self
        }

        fn backup_due(mut self) -> Self {
            self.0.backup_due = true;
            self
        }

        fn restore(mut self, found: Result<&str, &str>) -> Self {
            self.0.restore = Some(found.map(str::to_string).map_err(str::to_string));
            self
        }

        fn recovery_backup(mut self, found: Result<&str, &str>) -> Self {
            self.0.recovery_backup = Some(found.map(str::to_string).map_err(str::to_string));
            self
        }

        fn delete_asked(mut self, ordinal: u32) -> Self {
            self.0.delete_requested.push(name(ordinal));
            self
        }

        fn quorum_loss(mut self, policy: QuorumLossPolicy) -> Self {
            self.spec_mut().quorum_loss = policy;
            self
        }

        /// Running, but its last report is a minute old (a control-path partition).
        fn stale(mut self, ordinal: u32) -> Self {
            self.report(ordinal).observed_at = NOW - 60_000;
            self
        }

        fn unreported(mut self, ordinal: u32) -> Self {
            let m = self
                .0
                .members
                .iter_mut()
                .find(|m| m.ordinal == ordinal)
                .expect("member exists");
            m.report = None;
            self
        }

        fn unhealthy(mut self, ordinal: u32) -> Self {
            self.report(ordinal).healthy = false;
            self
        }

        fn reported_phase(mut self, ordinal: u32, phase: ReportedPhase) -> Self {
            self.report(ordinal).phase = phase;
            self
        }

        /// etcd lists it; the runtime has no such member.
        fn orphan(mut self, ordinal: u32) -> Self {
            self.0.members.retain(|m| m.ordinal != ordinal);
            self
        }

        /// Gone from etcd's member list.
        fn unlisted(mut self, ordinal: u32) -> Self {
            if let Some(list) = self.0.etcd_members.as_mut() {
                list.retain(|e| e.id != id(ordinal));
            }
            self
        }

        /// Left on request: unlisted, its sidecar reports Removed.
        fn removed(self, ordinal: u32) -> Self {
            self.unlisted(ordinal)
                .reported_phase(ordinal, ReportedPhase::Removed)
        }

        /// Entirely gone (runtime and etcd), ordinal retired.
        fn retired(self, ordinal: u32) -> Self {
            self.unlisted(ordinal).orphan(ordinal)
        }

        fn grant(mut self, member: &str, kind: ChangeKind) -> Self {
            self.0.grant = Some(MembershipGrant {
                id: format!("{CLUSTER}-7"),
                member: member.to_string(),
                kind,
                issued_at: NOW - 1_000,
                expires_at: NOW + 100_000,
                adopted: false,
            });
            self
        }

        fn etcd_unreadable(mut self) -> Self {
            self.0.etcd_members = None;
            self
        }

        fn invalid(mut self) -> Self {
            self.0.spec = Err(SpecErrors(vec![SpecError::SizeTooSmall(0)]));
            self
        }

        fn next_ordinal(mut self, next: u32) -> Self {
            self.0.next_ordinal = next;
            self
        }

        fn plan(&self) -> Plan {
            let plan = plan(&self.0);
            check_invariants(&self.0, &plan);
            plan
        }

        fn action(&self) -> Action {
            self.plan().action
        }
    }

    /// One case of a table: a situation, the exact action, the phase.
    fn assert_cases(cases: Vec<(&str, Situation, Action, Phase)>) {
        for (what, situation, action, phase) in cases {
            let plan = situation.plan();
            assert_eq!(plan.action, action, "{what}");
            assert_eq!(plan.phase, phase, "{what}: {:?}", plan.action);
        }
    }

    #[test]
    fn creating_a_cluster_from_nothing() {
        assert_cases(vec![
            (
                "no member, no cluster: the seed",
                Situation::empty(3),
                Action::CreateSeed {
                    name: name(0),
                    version: V36,
                },
                Phase::Creating,
            ),
            (
                "the seed is up, size 3: the next member",
                Situation::healthy(1).size(3),
                Action::CreateMember {
                    name: name(1),
                    version: V36,
                },
                Phase::Creating,
            ),
            (
                "the seed is bootstrapping: wait, never a second seed",
                Situation::empty(3)
                    .joiner(0)
                    .reported_phase(0, ReportedPhase::Bootstrapping),
                waiting(WaitReason::MemberJoining(name(0))),
                Phase::Creating,
            ),
            (
                "the seed's process started, no report yet",
                {
                    let mut s = Situation::empty(3);
                    s.add(0, None);
                    s
                },
                waiting(WaitReason::MemberJoining(name(0))),
                Phase::Creating,
            ),
            (
                "the seed's pod is not running yet",
                Situation::empty(3).joiner(0).down(0),
                waiting(WaitReason::MemberDown(name(0))),
                Phase::Creating,
            ),
            (
                "bootstrap grant in flight",
                Situation::empty(3)
                    .joiner(0)
                    .grant(&name(0), ChangeKind::Bootstrap),
                waiting(WaitReason::ChangeInFlight(format!(
                    "bootstrap of {} (grant {CLUSTER}-7)",
                    name(0)
                ))),
                Phase::Creating,
            ),
            (
                "size 1 reached",
                Situation::healthy(1),
                Action::Steady,
                Phase::Running,
            ),
        ]);
    }

    #[test]
    fn one_member_joins_at_a_time() {
        assert_cases(vec![
            (
                "a learner in etcd",
                Situation::healthy(1).size(3).learner(1),
                waiting(WaitReason::MemberJoining(name(1))),
                Phase::Creating,
            ),
            (
                "created, not yet in etcd",
                Situation::healthy(3).size(5).joiner(3),
                waiting(WaitReason::MemberJoining(name(3))),
                Phase::Scaling,
            ),
            (
                "created, pod not running yet: joining, not down",
                Situation::healthy(3).size(5).joiner(3).down(3),
                waiting(WaitReason::MemberJoining(name(3))),
                Phase::Scaling,
            ),
            (
                "added but not started: the unnamed entry belongs to the joiner",
                Situation::healthy(3).size(5).joiner(3).unnamed_learner(3),
                waiting(WaitReason::MemberJoining(name(3))),
                Phase::Scaling,
            ),
            (
                "the joiner reported the id of its unnamed entry",
                {
                    let mut s = Situation::healthy(3).size(5).joiner(3).unnamed_learner(3);
                    s.report(3).member_id = id(3);
                    s.report(3).phase = ReportedPhase::Joining;
                    s
                },
                waiting(WaitReason::MemberJoining(name(3))),
                Phase::Scaling,
            ),
            (
                "add grant in flight",
                Situation::healthy(3)
                    .size(5)
                    .joiner(3)
                    .grant(&name(3), ChangeKind::Add),
                waiting(WaitReason::ChangeInFlight(format!(
                    "add of {} (grant {CLUSTER}-7)",
                    name(3)
                ))),
                Phase::Scaling,
            ),
            (
                "a grant in flight blocks even a dead member's removal",
                Situation::healthy(3)
                    .dead(2)
                    .grant(&name(1), ChangeKind::Replace),
                waiting(WaitReason::ChangeInFlight(format!(
                    "replace of {} (grant {CLUSTER}-7)",
                    name(1)
                ))),
                Phase::Recovering,
            ),
        ]);
    }

    #[test]
    fn scales_3_to_5_one_member_at_a_time() {
        let steps = [
            Situation::healthy(3).size(5),
            Situation::healthy(3).size(5).joiner(3),
            Situation::healthy(3).size(5).learner(3),
            Situation::healthy(4).size(5),
            Situation::healthy(4).size(5).joiner(4),
            Situation::healthy(4).size(5).learner(4),
            Situation::healthy(5),
        ];
        let actions: Vec<Action> = steps.iter().map(Situation::action).collect();
        assert_eq!(
            actions,
            vec![
                Action::CreateMember {
                    name: name(3),
                    version: V36
                },
                waiting(WaitReason::MemberJoining(name(3))),
                waiting(WaitReason::MemberJoining(name(3))),
                Action::CreateMember {
                    name: name(4),
                    version: V36
                },
                waiting(WaitReason::MemberJoining(name(4))),
                waiting(WaitReason::MemberJoining(name(4))),
                Action::Steady,
            ]
        );
        assert_eq!(steps[0].plan().phase, Phase::Scaling);
    }

    #[test]
    fn scales_down_highest_ordinal_first_and_the_leader_last() {
        assert_cases(vec![
            (
                "5 to 3: the highest ordinal",
                Situation::healthy(5).size(3),
                Action::AskToLeave { name: name(4) },
                Phase::Scaling,
            ),
            (
                "5 to 3 with the highest ordinal leading: the next one",
                Situation::healthy(5).size(3).leader(4),
                Action::AskToLeave { name: name(3) },
                Phase::Scaling,
            ),
            (
                "2 to 1: the non-leader, even with the lower ordinal",
                Situation::healthy(2).size(1).leader(1),
                Action::AskToLeave { name: name(0) },
                Phase::Scaling,
            ),
            (
                "two members claim leadership (an election just happened): the highest ordinal",
                {
                    let mut s = Situation::healthy(2).size(1);
                    s.report(1).leader = true;
                    s
                },
                Action::AskToLeave { name: name(1) },
                Phase::Scaling,
            ),
            (
                "a member already leaving is asked again, not another one",
                Situation::healthy(5)
                    .size(3)
                    .reported_phase(2, ReportedPhase::Leaving),
                Action::AskToLeave { name: name(2) },
                Phase::Scaling,
            ),
            (
                "it left: its runtime member goes",
                Situation::healthy(4).size(3).removed(3),
                Action::DeleteRuntimeMember {
                    name: name(3),
                    reason: "it left the cluster (its sidecar reports it removed)".into(),
                },
                Phase::Scaling,
            ),
            (
                "reports removed, but etcd still lists it: wait for the list to catch up",
                Situation::healthy(4)
                    .size(3)
                    .reported_phase(3, ReportedPhase::Removed)
                    .unhealthy(3),
                waiting(WaitReason::Unhealthy(name(3))),
                Phase::Degraded,
            ),
            (
                "its id is gone from etcd's list while it ran",
                Situation::healthy(4).size(3).unlisted(3).unhealthy(3),
                Action::DeleteRuntimeMember {
                    name: name(3),
                    reason: format!(
                        "its member id {} is no longer in etcd's member list",
                        member_id_hex(id(3))
                    ),
                },
                Phase::Recovering,
            ),
            (
                "remove grant in flight for a scale down",
                Situation::healthy(4)
                    .size(3)
                    .grant(&name(3), ChangeKind::Remove),
                waiting(WaitReason::ChangeInFlight(format!(
                    "remove of {} (grant {CLUSTER}-7)",
                    name(3)
                ))),
                Phase::Scaling,
            ),
        ]);
    }

    #[test]
    fn dead_members_are_replaced_only_when_quorum_allows() {
        let dead_reason = "not running for 60s (dead after 15s)".to_string();
        let orphan_reason =
            "etcd lists it but the runtime has no such member (its pod or process is gone)"
                .to_string();
        assert_cases(vec![
            (
                "one of three dead: removed",
                Situation::healthy(3).dead(2),
                Action::RemoveDeadMember {
                    name: name(2),
                    member_id: id(2),
                    reason: dead_reason.clone(),
                },
                Phase::Recovering,
            ),
            (
                "the dead leader too (its report is stale)",
                Situation::healthy(3).dead(0),
                Action::RemoveDeadMember {
                    name: name(0),
                    member_id: id(0),
                    reason: dead_reason.clone(),
                },
                Phase::Recovering,
            ),
            (
                "two of three dead: removal would break quorum",
                Situation::healthy(3).dead(1).dead(2),
                waiting(WaitReason::QuorumLost {
                    healthy: 1,
                    voters: 3,
                }),
                Phase::Failed,
            ),
            (
                "one of two dead: no removal",
                Situation::healthy(2).dead(1),
                waiting(WaitReason::QuorumLost {
                    healthy: 1,
                    voters: 2,
                }),
                Phase::Failed,
            ),
            (
                "a seed that just bootstrapped and has not reported healthy yet is settling",
                Situation::healthy(1)
                    .size(3)
                    .unhealthy(0)
                    .reported_phase(0, ReportedPhase::Bootstrapping),
                waiting(WaitReason::MemberJoining(name(0))),
                Phase::Creating,
            ),
            (
                "a coordinator that just started has no reports yet: it waits, and says so",
                Situation::healthy(3)
                    .unreported(0)
                    .unreported(1)
                    .unreported(2),
                waiting(WaitReason::Other(format!(
                    "waiting for the first health report of {}",
                    name(0)
                ))),
                Phase::Degraded,
            ),
            (
                "a running voter that reports unhealthy is not settling",
                Situation::healthy(1).size(3).unhealthy(0),
                waiting(WaitReason::QuorumLost {
                    healthy: 0,
                    voters: 1,
                }),
                Phase::Failed,
            ),
            (
                "the only member dead: never removed",
                Situation::healthy(1).dead(0),
                waiting(WaitReason::QuorumLost {
                    healthy: 0,
                    voters: 1,
                }),
                Phase::Failed,
            ),
            (
                "an orphan etcd entry: dead at once",
                Situation::healthy(3).orphan(2),
                Action::RemoveDeadMember {
                    name: name(2),
                    member_id: id(2),
                    reason: orphan_reason.clone(),
                },
                Phase::Recovering,
            ),
            (
                "an unnamed entry nobody will start: removed by id",
                Situation::healthy(3).unnamed_learner(3),
                Action::RemoveDeadMember {
                    name: member_id_hex(id(3)),
                    member_id: id(3),
                    reason: orphan_reason,
                },
                Phase::Recovering,
            ),
            (
                "a dead learner: its removal never touches quorum",
                Situation::healthy(3).size(4).learner(3).dead(3),
                Action::RemoveDeadMember {
                    name: name(3),
                    member_id: id(3),
                    reason: dead_reason.clone(),
                },
                Phase::Recovering,
            ),
            (
                "voters before learners",
                Situation::healthy(3).learner(3).dead(3).dead(1),
                Action::RemoveDeadMember {
                    name: name(1),
                    member_id: id(1),
                    reason: dead_reason,
                },
                Phase::Recovering,
            ),
            (
                "a created member that died before joining: deleted",
                Situation::healthy(3).size(4).joiner(3).dead(3),
                Action::DeleteRuntimeMember {
                    name: name(3),
                    reason: "not running for 60s (dead after 15s) and not in etcd's member list"
                        .into(),
                },
                Phase::Recovering,
            ),
            (
                "down, not yet dead: wait",
                Situation::healthy(3).down(2),
                waiting(WaitReason::MemberDown(name(2))),
                Phase::Degraded,
            ),
            (
                "down, not yet dead, while the size asks for more: still wait",
                Situation::healthy(3).size(5).down(2),
                waiting(WaitReason::MemberDown(name(2))),
                Phase::Degraded,
            ),
            (
                "dead past the threshold by one millisecond short: down",
                Situation::healthy(3).down_for(2, 14_999),
                waiting(WaitReason::MemberDown(name(2))),
                Phase::Degraded,
            ),
            (
                "dead at exactly the threshold",
                Situation::healthy(3).down_for(2, 15_000),
                Action::RemoveDeadMember {
                    name: name(2),
                    member_id: id(2),
                    reason: "not running for 15s (dead after 15s)".into(),
                },
                Phase::Recovering,
            ),
            (
                "down with no known start of the outage: never judged dead",
                {
                    let mut s = Situation::healthy(3).dead(2);
                    s.member(2).down_since = None;
                    s
                },
                waiting(WaitReason::MemberDown(name(2))),
                Phase::Degraded,
            ),
            (
                "remove grant in flight for a dead member",
                Situation::healthy(3)
                    .dead(2)
                    .grant(&name(2), ChangeKind::Remove),
                waiting(WaitReason::ChangeInFlight(format!(
                    "remove of {} (grant {CLUSTER}-7)",
                    name(2)
                ))),
                Phase::Recovering,
            ),
        ]);
    }

    #[test]
    fn a_stale_report_is_never_death() {
        assert_cases(vec![
            (
                "running, report a minute old",
                Situation::healthy(3).stale(2),
                waiting(WaitReason::Unhealthy(name(2))),
                Phase::Degraded,
            ),
            (
                "running, report a day old, size asks for more",
                {
                    let mut s = Situation::healthy(3).size(5);
                    s.report(2).observed_at = NOW - 86_400_000;
                    s
                },
                waiting(WaitReason::Unhealthy(name(2))),
                Phase::Degraded,
            ),
            (
                "running, never reported",
                {
                    let mut s = Situation::healthy(3);
                    s.member(2).report = None;
                    s
                },
                waiting(WaitReason::Unhealthy(name(2))),
                Phase::Degraded,
            ),
            (
                "reports unhealthy",
                Situation::healthy(3).unhealthy(1),
                waiting(WaitReason::Unhealthy(name(1))),
                Phase::Degraded,
            ),
        ]);
    }

    #[test]
    fn with_quorum_lost_nothing_changes() {
        assert_cases(vec![
            (
                "two stale of three, size asks for more",
                Situation::healthy(3).size(5).stale(1).stale(2),
                waiting(WaitReason::QuorumLost {
                    healthy: 1,
                    voters: 3,
                }),
                Phase::Failed,
            ),
            (
                "two of three unhealthy, size asks for fewer",
                Situation::healthy(3).size(1).unhealthy(0).unhealthy(1),
                waiting(WaitReason::QuorumLost {
                    healthy: 1,
                    voters: 3,
                }),
                Phase::Failed,
            ),
            (
                "a dead and a down member of three",
                Situation::healthy(3).dead(1).down(2),
                waiting(WaitReason::QuorumLost {
                    healthy: 1,
                    voters: 3,
                }),
                Phase::Failed,
            ),
            (
                "two orphans of five, one stale: 2 of 5",
                Situation::healthy(5).orphan(3).orphan(4).stale(0),
                waiting(WaitReason::QuorumLost {
                    healthy: 2,
                    voters: 5,
                }),
                Phase::Failed,
            ),
            (
                "a grant in flight while quorum is lost",
                Situation::healthy(3)
                    .dead(1)
                    .dead(2)
                    .grant(&name(2), ChangeKind::Remove),
                waiting(WaitReason::ChangeInFlight(format!(
                    "remove of {} (grant {CLUSTER}-7)",
                    name(2)
                ))),
                Phase::Failed,
            ),
        ]);
    }

    #[test]
    fn when_etcd_cannot_be_read_nothing_is_created_or_deleted() {
        assert_cases(vec![
            (
                "every member dead",
                Situation::healthy(3)
                    .dead(0)
                    .dead(1)
                    .dead(2)
                    .etcd_unreadable(),
                waiting(WaitReason::QuorumLost {
                    healthy: 0,
                    voters: 3,
                }),
                Phase::Failed,
            ),
            (
                "every member down, not dead",
                Situation::healthy(3)
                    .down(0)
                    .down(1)
                    .down(2)
                    .etcd_unreadable(),
                waiting(WaitReason::MemberDown(name(0))),
                Phase::Failed,
            ),
            (
                "members restarting after a full outage",
                Situation::healthy(3)
                    .reported_phase(1, ReportedPhase::Starting)
                    .etcd_unreadable(),
                waiting(WaitReason::MemberJoining(name(1))),
                Phase::Recovering,
            ),
            (
                "members report healthy but none answered the coordinator",
                Situation::healthy(3).etcd_unreadable(),
                waiting(WaitReason::Other(
                    "no member answered the member-list read, though 3 of 3 members report healthy"
                        .into(),
                )),
                Phase::Degraded,
            ),
            (
                "one member of three healthy",
                Situation::healthy(3)
                    .unhealthy(0)
                    .unhealthy(1)
                    .etcd_unreadable(),
                waiting(WaitReason::QuorumLost {
                    healthy: 1,
                    voters: 3,
                }),
                Phase::Failed,
            ),
            (
                "an etcd list read but no runtime member: no seed",
                Situation::healthy(3).orphan(0).orphan(1).orphan(2),
                waiting(WaitReason::QuorumLostForGood {
                    lost: vec![name(0), name(1), name(2)],
                    survivors: Vec::new(),
                    policy: QuorumLossPolicy::Manual,
                    no_backup: None,
                }),
                Phase::Failed,
            ),
        ]);
    }

    #[test]
    fn a_refused_spec_touches_nothing() {
        let errors = SpecErrors(vec![SpecError::SizeTooSmall(0)]);
        for situation in [
            Situation::empty(3),
            Situation::healthy(3),
            Situation::healthy(3).dead(2),
            Situation::healthy(3).orphan(1),
            Situation::healthy(3).removed(2),
            Situation::healthy(5).dead(1).dead(2).dead(3),
        ] {
            let plan = situation.invalid().plan();
            assert_eq!(
                plan.action,
                Action::RefuseSpec {
                    message: errors.to_string()
                }
            );
            assert_eq!(plan.phase, Phase::Invalid);
        }
    }

    #[test]
    fn refused_version_steps_touch_nothing() {
        let refusal = |from: EtcdVersion, to: &str, allow: bool| Action::RefuseSpec {
            message: check_version_step(from, v(to), allow)
                .unwrap_err()
                .to_string(),
        };
        let mut downgrade_allowed = Situation::healthy(3).spec_version("3.6.1");
        downgrade_allowed.spec_mut().allow_downgrade = true;
        assert_cases(vec![
            (
                "patch downgrade without opt-in",
                Situation::healthy(3).spec_version("3.6.1"),
                refusal(V36, "3.6.1", false),
                Phase::Invalid,
            ),
            (
                "minor downgrade",
                Situation::healthy(3).spec_version("3.5.34"),
                refusal(V36, "3.5.34", false),
                Phase::Invalid,
            ),
            (
                "skipped minor, even with a member dead",
                Situation::healthy(3).all_run("3.4.45").dead(2),
                refusal(V34, "3.6.15", false),
                Phase::Invalid,
            ),
            (
                "3.5 too old for 3.6",
                Situation::healthy(3).all_run("3.5.20"),
                refusal(v("3.5.20"), "3.6.15", false),
                Phase::Invalid,
            ),
            (
                "set back to 3.5 in the middle of an upgrade to 3.6",
                Situation::healthy(3)
                    .all_run("3.5.34")
                    .runs(1, "3.6.15")
                    .spec_version("3.5.34"),
                refusal(V36, "3.5.34", false),
                Phase::Invalid,
            ),
            (
                "patch downgrade with opt-in: followers first",
                downgrade_allowed,
                Action::UpgradeMember {
                    name: name(1),
                    to: v("3.6.1"),
                },
                Phase::Upgrading,
            ),
        ]);
    }

    #[test]
    fn upgrades_followers_first_and_the_leader_last() {
        let from_35 = || Situation::healthy(3).all_run("3.5.34").leader(1);
        let steps = [
            from_35(),
            from_35().runs(0, "3.6.15"),
            from_35().runs(0, "3.6.15").runs(2, "3.6.15"),
            from_35()
                .runs(0, "3.6.15")
                .runs(2, "3.6.15")
                .runs(1, "3.6.15"),
        ];
        let actions: Vec<Action> = steps.iter().map(Situation::action).collect();
        assert_eq!(
            actions,
            vec![
                Action::UpgradeMember {
                    name: name(0),
                    to: V36
                },
                Action::UpgradeMember {
                    name: name(2),
                    to: V36
                },
                Action::UpgradeMember {
                    name: name(1),
                    to: V36
                },
                Action::Steady,
            ]
        );
        let mut handed_off = from_35()
            .reported_phase(0, ReportedPhase::HandedOff)
            .unhealthy(0);
        handed_off.member(0).version = V36;
        let mut restarting = from_35().down(0);
        restarting.member(0).version = V36;
        assert_cases(vec![
            (
                "the first follower mid-handoff: wait",
                handed_off,
                waiting(WaitReason::Unhealthy(name(0))),
                Phase::Upgrading,
            ),
            (
                "the first follower restarting on the new version: wait",
                restarting,
                waiting(WaitReason::MemberDown(name(0))),
                Phase::Upgrading,
            ),
            (
                "another member unhealthy: wait",
                from_35().unhealthy(2),
                waiting(WaitReason::Unhealthy(name(2))),
                Phase::Degraded,
            ),
            (
                "a single member upgrades (it cannot avoid the pause)",
                Situation::healthy(1).all_run("3.5.34"),
                Action::UpgradeMember {
                    name: name(0),
                    to: V36,
                },
                Phase::Upgrading,
            ),
            (
                "two members would lose quorum during the handoff",
                Situation::healthy(2).all_run("3.5.34"),
                waiting(WaitReason::Other(format!(
                    "upgrading {} would leave 1 of 2 voters running, below quorum (2): scale to at least 3 members first",
                    name(1)
                ))),
                Phase::Upgrading,
            ),
            (
                "scale first, then upgrade: the new member gets the spec's version",
                Situation::healthy(3).all_run("3.5.34").size(4),
                Action::CreateMember {
                    name: name(3),
                    version: V36,
                },
                Phase::Scaling,
            ),
            (
                "etcd's own version wins over the runtime's",
                {
                    let mut s = Situation::healthy(3);
                    s.report(2).etcd_version = "3.5.34".into();
                    s.report(2).leader = false;
                    s
                },
                Action::UpgradeMember {
                    name: name(2),
                    to: V36,
                },
                Phase::Upgrading,
            ),
        ]);
    }

    #[test]
    fn ordinals_are_never_reused() {
        assert_cases(vec![
            (
                "the replacement of a removed dead member",
                Situation::healthy(3).retired(1),
                Action::CreateMember {
                    name: name(3),
                    version: V36,
                },
                Phase::Scaling,
            ),
            (
                "after a scale down to 3 and back up",
                Situation::healthy(3).size(4).next_ordinal(5),
                Action::CreateMember {
                    name: name(5),
                    version: V36,
                },
                Phase::Scaling,
            ),
            (
                "a lagging counter never hands out a visible ordinal",
                Situation::healthy(3).retired(1).next_ordinal(1),
                Action::CreateMember {
                    name: name(3),
                    version: V36,
                },
                Phase::Scaling,
            ),
            (
                "a new seed after the cluster was deleted",
                Situation::empty(3).next_ordinal(9),
                Action::CreateSeed {
                    name: name(9),
                    version: V36,
                },
                Phase::Creating,
            ),
        ]);
    }

    #[test]
    fn warnings_carry_through_and_helpers_agree() {
        let mut s = Situation::healthy(4);
        s.spec_mut().warnings = vec!["spec.size 4 is even".into()];
        let plan = s.plan();
        assert_eq!(plan.action, Action::Steady);
        assert_eq!(plan.warnings, vec!["spec.size 4 is even".to_string()]);

        assert_eq!(
            (1..=7).map(quorum).collect::<Vec<_>>(),
            vec![1, 2, 2, 3, 3, 4, 4]
        );
        assert_eq!(cluster_version(&Situation::empty(3).0), None);
        let mixed = Situation::healthy(3).all_run("3.5.34").runs(2, "3.6.15");
        assert_eq!(cluster_version(&mixed.0), Some(V35));
        let mut unparseable = Situation::healthy(1).all_run("3.5.34");
        unparseable.report(0).etcd_version = String::new();
        unparseable.member(0).version = V36;
        assert_eq!(cluster_version(&unparseable.0), Some(V36));

        assert_eq!(Phase::Recovering.as_str(), "Recovering");
        assert_eq!(Phase::Failed.to_string(), "Failed");
        assert_eq!(
            WaitReason::QuorumLost {
                healthy: 1,
                voters: 3
            }
            .to_string(),
            "quorum lost: 1 of 3 voting members healthy, 2 needed; changing nothing until quorum is back"
        );
        let create = Action::CreateMember {
            name: name(3),
            version: V36,
        };
        assert_eq!(
            (create.kind(), create.member(), create.changes_something()),
            ("create_member", Some(name(3).as_str()), true)
        );
        assert!(!Action::Steady.changes_something());
        assert_eq!(Policy::default().dead_after_ms, 15_000);
    }

    #[test]
    fn reads_a_sidecar_health_report() {
        let report = proto::HealthReport {
            member_id: 42,
            healthy: true,
            leader: true,
            etcd_version: "3.6.15".into(),
            phase: proto::MemberPhase::HandedOff as i32,
            observed_at_unix_ms: 7,
            raft_index: 91,
            revision: 33,
            ..Default::default()
        };
        assert_eq!(
            MemberReport::from(&report),
            MemberReport {
                member_id: 42,
                healthy: true,
                leader: true,
                learner: false,
                etcd_version: "3.6.15".into(),
                phase: ReportedPhase::HandedOff,
                observed_at: 7,
                raft_index: 91,
                revision: 33,
            }
        );
        let unset = proto::HealthReport::default();
        assert_eq!(MemberReport::from(&unset).phase, ReportedPhase::Starting);
    }

    // ---- invariants, checked on every plan made in these tests ----

    fn fresh_healthy(observed: &Observed, member: &RuntimeMember) -> bool {
        member.running
            && member.report.as_ref().is_some_and(|r| {
                r.healthy && observed.now - r.observed_at <= observed.policy.report_stale_after_ms
            })
    }

    fn restart(ordinal: u32, reason: &str) -> Action {
        Action::RestartMember {
            name: name(ordinal),
            reason: reason.into(),
        }
    }

    const FIRST_EXIT: &str = "its process is gone and its data is intact";

    #[test]
    fn restart_backoff_doubles_up_to_thirty_seconds() {
        let backoffs: Vec<i64> = (0..8).map(restart_backoff_ms).collect();
        assert_eq!(
            backoffs,
            [0, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
        );
        assert_eq!(restart_backoff_ms(u32::MAX), 30_000);
    }

    #[test]
    fn a_crash_is_not_a_deletion() {
        assert_cases(vec![
            (
                "a follower's process exited, its data intact: started again at once",
                Situation::healthy(3).crashed(1),
                restart(1, FIRST_EXIT),
                Phase::Degraded,
            ),
            (
                "the leader's process exited: the same",
                Situation::healthy(3).crashed(0),
                restart(0, FIRST_EXIT),
                Phase::Degraded,
            ),
            (
                "a restart is no membership change: a grant in flight does not hold it back",
                Situation::healthy(3)
                    .crashed(2)
                    .grant(&name(3), ChangeKind::Add),
                restart(2, FIRST_EXIT),
                Phase::Degraded,
            ),
            (
                "it keeps exiting: 3 restarts behind it, down 2 s of its 4 s backoff",
                Situation::healthy(3).crash_looping(1, 3, 8_000, 2_000),
                waiting(WaitReason::MemberDown(name(1))),
                Phase::Degraded,
            ),
            (
                "its backoff has passed",
                Situation::healthy(3).crash_looping(1, 3, 9_000, 4_000),
                restart(1, "it exited again after 3 restarts; its data is intact"),
                Phase::Degraded,
            ),
            (
                "a Pod kubelet restarts by itself is not restarted by the planner",
                Situation::healthy(3).down(1),
                waiting(WaitReason::MemberDown(name(1))),
                Phase::Degraded,
            ),
            (
                "a member mid-upgrade that went down is started again on its data",
                {
                    let mut s = Situation::healthy(3).crashed(1);
                    s.report(1).etcd_version = "3.5.34".into();
                    s
                },
                restart(1, FIRST_EXIT),
                Phase::Upgrading,
            ),
        ]);
    }

    #[test]
    fn a_member_that_cannot_come_back_is_replaced() {
        assert_cases(vec![
            (
                "its data is gone: replaced at once, no dead-after wait",
                Situation::healthy(3).wiped(1),
                Action::RemoveDeadMember {
                    name: name(1),
                    member_id: id(1),
                    reason: "its process is gone and so is its data".into(),
                },
                Phase::Recovering,
            ),
            (
                "failing past dead-after through its restarts: replaced",
                Situation::healthy(3).crash_looping(1, 4, 20_000, 9_000),
                Action::RemoveDeadMember {
                    name: name(1),
                    member_id: id(1),
                    reason:
                        "not back healthy 20s after its first exit, 4 restarts (dead after 15s)"
                            .into(),
                },
                Phase::Recovering,
            ),
            (
                "its id left etcd's list while it was away: deleted, not restarted",
                Situation::healthy(3).crashed(1).unlisted(1),
                Action::DeleteRuntimeMember {
                    name: name(1),
                    reason: format!(
                        "its member id {} is no longer in etcd's member list",
                        member_id_hex(id(1))
                    ),
                },
                Phase::Recovering,
            ),
            (
                "a joiner that died before it wrote any data: deleted at once",
                Situation::healthy(3).joiner(3).wiped(3),
                Action::DeleteRuntimeMember {
                    name: name(3),
                    reason: "its process is gone and so is its data and not in etcd's member list"
                        .into(),
                },
                Phase::Recovering,
            ),
            (
                "failing past dead-after but its removal would break quorum: restarted instead",
                Situation::healthy(3)
                    .crash_looping(1, 4, 20_000, 9_000)
                    .crashed(2),
                restart(1, "it exited again after 4 restarts; its data is intact"),
                Phase::Recovering,
            ),
        ]);
    }

    #[test]
    fn a_lost_quorum_whose_data_survives_comes_back_without_a_membership_change() {
        let two_down = Situation::healthy(3).crashed(1).crashed(2).leaderless(0);
        assert_cases(vec![
            (
                "two of three crashed: both started again, one per step",
                two_down.clone(),
                restart(1, FIRST_EXIT),
                Phase::Recovering,
            ),
            (
                "the first is back, the second still down",
                two_down.clone().crash_looping(1, 1, 500, 0).unreported(1),
                restart(2, FIRST_EXIT),
                Phase::Recovering,
            ),
            (
                "all three down, etcd unreadable: the first started",
                Situation::healthy(3)
                    .crashed(0)
                    .crashed(1)
                    .crashed(2)
                    .etcd_unreadable(),
                restart(0, FIRST_EXIT),
                Phase::Recovering,
            ),
            (
                "nothing left to restart: wait, change no membership",
                Situation::healthy(3)
                    .leaderless(0)
                    .leaderless(1)
                    .leaderless(2),
                waiting(WaitReason::QuorumLost {
                    healthy: 0,
                    voters: 3,
                }),
                Phase::Failed,
            ),
            (
                "with ForceNewCluster allowed, a quorum that can come back is not forced",
                two_down
                    .clone()
                    .quorum_loss(QuorumLossPolicy::ForceNewCluster)
                    .crash_looping(1, 1, 3_000, 500)
                    .crash_looping(2, 1, 3_000, 500),
                waiting(WaitReason::QuorumLost {
                    healthy: 0,
                    voters: 3,
                }),
                Phase::Failed,
            ),
        ]);
    }

    #[test]
    fn a_member_deleted_on_request_goes_with_its_data_and_is_replaced() {
        assert_cases(vec![
            (
                "deleted on request: the runtime member goes",
                Situation::healthy(3).delete_asked(1),
                Action::DeleteRuntimeMember {
                    name: name(1),
                    reason: "deleted with its data on an operator's request".into(),
                },
                Phase::Recovering,
            ),
            (
                "then etcd's entry is an orphan: removed at once",
                Situation::healthy(3).orphan(1),
                Action::RemoveDeadMember {
                    name: name(1),
                    member_id: id(1),
                    reason:
                        "etcd lists it but the runtime has no such member (its pod or process is gone)"
                            .into(),
                },
                Phase::Recovering,
            ),
            (
                "never below quorum: another voter is down",
                Situation::healthy(3).delete_asked(1).down(2),
                waiting(WaitReason::Other(format!(
                    "deleting {} as asked would leave fewer than quorum healthy voters: waiting until the others are healthy",
                    name(1)
                ))),
                Phase::Degraded,
            ),
            (
                "not during a membership change",
                Situation::healthy(3)
                    .delete_asked(1)
                    .grant(&name(3), ChangeKind::Add),
                waiting(WaitReason::ChangeInFlight(format!(
                    "add of {} (grant {CLUSTER}-7)",
                    name(3)
                ))),
                Phase::Scaling,
            ),
        ]);
    }

    #[test]
    fn backups_come_from_a_healthy_follower_and_never_without_quorum() {
        let take = |ordinal| Action::TakeBackup {
            name: name(ordinal),
        };
        assert_cases(vec![
            (
                "due: the lowest healthy follower",
                Situation::healthy(3).backup_due(),
                take(1),
                Phase::Running,
            ),
            (
                "the follower down: the other follower",
                Situation::healthy(3).backup_due().down(1),
                take(2),
                Phase::Degraded,
            ),
            (
                "a single member: the leader itself",
                Situation::healthy(1).backup_due(),
                take(0),
                Phase::Running,
            ),
            (
                "during a membership change: it waits",
                Situation::healthy(3)
                    .backup_due()
                    .grant(&name(3), ChangeKind::Add),
                waiting(WaitReason::ChangeInFlight(format!(
                    "add of {} (grant {CLUSTER}-7)",
                    name(3)
                ))),
                Phase::Scaling,
            ),
            (
                "quorum lost: no backup of a member that may be behind",
                Situation::healthy(3)
                    .backup_due()
                    .leaderless(0)
                    .leaderless(1)
                    .leaderless(2),
                waiting(WaitReason::QuorumLost {
                    healthy: 0,
                    voters: 3,
                }),
                Phase::Failed,
            ),
            (
                "not due: nothing",
                Situation::healthy(3),
                Action::Steady,
                Phase::Running,
            ),
        ]);
    }

    #[test]
    fn a_restore_starts_only_from_a_backup_that_checks_out() {
        assert_cases(vec![
            (
                "found and checked: the seed is created (and restores it)",
                Situation::empty(3).restore(Ok("c-20261201T100000Z-r9")),
                Action::CreateSeed {
                    name: name(0),
                    version: V36,
                },
                Phase::Creating,
            ),
            (
                "missing or refused: nothing starts",
                Situation::empty(3).restore(Err("no verified backup in the storage")),
                Action::RefuseSpec {
                    message: "no verified backup in the storage".into(),
                },
                Phase::Invalid,
            ),
        ]);
    }

    fn survivor(ordinal: u32, raft_index: u64, revision: i64) -> Survivor {
        Survivor {
            name: name(ordinal),
            raft_index: Some(raft_index),
            revision: Some(revision),
        }
    }

    #[test]
    fn a_lost_quorum_whose_data_is_gone_is_forced_only_when_the_spec_says_so() {
        let two_wiped = Situation::healthy(3)
            .wiped(1)
            .wiped(2)
            .leaderless(0)
            .raft(0, 900, 400);
        assert_cases(vec![
            (
                "Manual: nothing touched, the status says what was lost and what to do",
                two_wiped.clone(),
                waiting(WaitReason::QuorumLostForGood {
                    lost: vec![name(1), name(2)],
                    survivors: vec![survivor(0, 900, 400)],
                    policy: QuorumLossPolicy::Manual,
                    no_backup: None,
                }),
                Phase::Failed,
            ),
            (
                "ForceNewCluster: from the survivor",
                two_wiped
                    .clone()
                    .quorum_loss(QuorumLossPolicy::ForceNewCluster),
                Action::ForceNewCluster {
                    name: name(0),
                    raft_index: 900,
                    revision: 400,
                    lost: vec![name(1), name(2)],
                },
                Phase::Recovering,
            ),
            (
                "ForceNewCluster, but a grant is in flight: it lapses first",
                two_wiped
                    .clone()
                    .quorum_loss(QuorumLossPolicy::ForceNewCluster)
                    .grant(&name(3), ChangeKind::Add),
                waiting(WaitReason::ChangeInFlight(format!(
                    "add of {} (grant {CLUSTER}-7)",
                    name(3)
                ))),
                Phase::Failed,
            ),
            (
                "ForceNewCluster with an orphaned entry and a wiped member",
                Situation::healthy(3)
                    .orphan(1)
                    .wiped(2)
                    .leaderless(0)
                    .raft(0, 900, 400)
                    .quorum_loss(QuorumLossPolicy::ForceNewCluster),
                Action::ForceNewCluster {
                    name: name(0),
                    raft_index: 900,
                    revision: 400,
                    lost: vec![name(1), name(2)],
                },
                Phase::Recovering,
            ),
        ]);
        let five = Situation::healthy(5)
            .wiped(0)
            .wiped(3)
            .wiped(4)
            .leaderless(1)
            .leaderless(2)
            .raft(1, 700, 300)
            .raft(2, 710, 300)
            .quorum_loss(QuorumLossPolicy::ForceNewCluster);
        assert_cases(vec![
            (
                "two survivors of five: the one with the higher raft index",
                five.clone(),
                Action::ForceNewCluster {
                    name: name(2),
                    raft_index: 710,
                    revision: 300,
                    lost: vec![name(0), name(3), name(4)],
                },
                Phase::Recovering,
            ),
            (
                "a survivor not reporting: wait for it, never force from the other blindly",
                five.clone().stale(2),
                waiting(WaitReason::QuorumLostForGood {
                    lost: vec![name(0), name(3), name(4)],
                    survivors: vec![
                        survivor(1, 700, 300),
                        Survivor {
                            name: name(2),
                            raft_index: None,
                            revision: None,
                        },
                    ],
                    policy: QuorumLossPolicy::ForceNewCluster,
                    no_backup: None,
                }),
                Phase::Failed,
            ),
            (
                "a survivor down with its data: started again first",
                five.clone().crashed(2),
                restart(2, FIRST_EXIT),
                Phase::Recovering,
            ),
        ]);
        let message = WaitReason::QuorumLostForGood {
            lost: vec![name(1), name(2)],
            survivors: vec![survivor(0, 900, 400)],
            policy: QuorumLossPolicy::Manual,
            no_backup: None,
        }
        .to_string();
        for part in [
            "the data of demo-0001, demo-0002 is gone (2 of 3 voting members)",
            "demo-0000 (raft index 900, revision 400)",
            "set spec.recovery.quorumLoss: ForceNewCluster",
        ] {
            assert!(message.contains(part), "{message}");
        }
    }

    #[test]
    fn a_lost_quorum_whose_data_is_gone_is_restored_from_the_latest_backup_when_the_spec_says_so() {
        let backup = "demo-20261201T100000Z-r400";
        let two_wiped = Situation::healthy(3)
            .wiped(1)
            .wiped(2)
            .leaderless(0)
            .raft(0, 900, 400)
            .quorum_loss(QuorumLossPolicy::Restore);
        let restore = |lost: Vec<String>, seed: u32| Action::RestoreCluster {
            backup: backup.into(),
            seed: name(seed),
            version: V36,
            discard: (0..3).map(name).collect(),
            lost,
        };
        assert_cases(vec![
            (
                "Restore with a verified backup: every member goes, a new seed restores it",
                two_wiped.clone().recovery_backup(Ok(backup)),
                restore(vec![name(1), name(2)], 3),
                Phase::Recovering,
            ),
            (
                "Restore without a usable backup: nothing touched, the reason shown",
                two_wiped
                    .clone()
                    .recovery_backup(Err("no verified backup of demo in local /b")),
                waiting(WaitReason::QuorumLostForGood {
                    lost: vec![name(1), name(2)],
                    survivors: vec![survivor(0, 900, 400)],
                    policy: QuorumLossPolicy::Restore,
                    no_backup: Some("no verified backup of demo in local /b".into()),
                }),
                Phase::Failed,
            ),
            (
                "Restore, storage not read yet: wait",
                two_wiped.clone(),
                waiting(WaitReason::QuorumLostForGood {
                    lost: vec![name(1), name(2)],
                    survivors: vec![survivor(0, 900, 400)],
                    policy: QuorumLossPolicy::Restore,
                    no_backup: Some("the backup storage has not been read yet".into()),
                }),
                Phase::Failed,
            ),
            (
                "Restore, but a grant is in flight: it lapses first",
                two_wiped
                    .clone()
                    .recovery_backup(Ok(backup))
                    .grant(&name(3), ChangeKind::Add),
                waiting(WaitReason::ChangeInFlight(format!(
                    "add of {} (grant {CLUSTER}-7)",
                    name(3)
                ))),
                Phase::Failed,
            ),
            (
                "Restore, one member wiped of three: the quorum heals, nothing is restored",
                Situation::healthy(3)
                    .wiped(2)
                    .quorum_loss(QuorumLossPolicy::Restore)
                    .recovery_backup(Ok(backup)),
                Action::RemoveDeadMember {
                    name: name(2),
                    member_id: 4098,
                    reason: "its process is gone and so is its data".into(),
                },
                Phase::Recovering,
            ),
            (
                "Restore, a survivor down with its data: started again first",
                two_wiped.clone().recovery_backup(Ok(backup)).crashed(0),
                restart(0, FIRST_EXIT),
                Phase::Recovering,
            ),
            (
                "Restore, every member wiped: restored all the same",
                Situation::healthy(3)
                    .wiped(0)
                    .wiped(1)
                    .wiped(2)
                    .etcd_unreadable()
                    .quorum_loss(QuorumLossPolicy::Restore)
                    .recovery_backup(Ok(backup)),
                restore(vec![name(0), name(1), name(2)], 3),
                Phase::Recovering,
            ),
            (
                "Restore, a restore interrupted after every member was deleted: restored, never an empty seed",
                Situation::empty(3)
                    .next_ordinal(3)
                    .quorum_loss(QuorumLossPolicy::Restore)
                    .recovery_backup(Ok(backup)),
                Action::RestoreCluster {
                    backup: backup.into(),
                    seed: name(3),
                    version: V36,
                    discard: Vec::new(),
                    lost: Vec::new(),
                },
                Phase::Recovering,
            ),
            (
                "Restore, interrupted, and no backup to be found: wait, never an empty seed",
                Situation::empty(3)
                    .next_ordinal(3)
                    .quorum_loss(QuorumLossPolicy::Restore)
                    .recovery_backup(Err("storage unreachable")),
                waiting(WaitReason::QuorumLostForGood {
                    lost: Vec::new(),
                    survivors: Vec::new(),
                    policy: QuorumLossPolicy::Restore,
                    no_backup: Some("storage unreachable".into()),
                }),
                Phase::Failed,
            ),
            (
                "Restore, a new cluster (no ordinal handed out yet): an ordinary seed",
                Situation::empty(3).quorum_loss(QuorumLossPolicy::Restore),
                Action::CreateSeed {
                    name: name(0),
                    version: V36,
                },
                Phase::Creating,
            ),
            (
                "Manual, every member wiped: nothing touched",
                Situation::healthy(3)
                    .wiped(0)
                    .wiped(1)
                    .wiped(2)
                    .etcd_unreadable(),
                waiting(WaitReason::QuorumLost {
                    healthy: 0,
                    voters: 3,
                }),
                Phase::Failed,
            ),
        ]);
        let message = WaitReason::QuorumLostForGood {
            lost: vec![name(1), name(2)],
            survivors: vec![survivor(0, 900, 400)],
            policy: QuorumLossPolicy::Restore,
            no_backup: Some("no verified backup of demo".into()),
        }
        .to_string();
        assert!(
            message.contains("no backup can be restored: no verified backup of demo"),
            "{message}"
        );
    }

    fn runtime_of<'a>(observed: &'a Observed, entry: &EtcdMember) -> Option<&'a RuntimeMember> {
        observed.members.iter().find(|m| {
            m.report.as_ref().is_some_and(|r| r.member_id == entry.id)
                || (!entry.name.is_empty() && m.name == entry.name)
        })
    }

    /// Dead by the runtime's word alone, judged without the planner's own helpers.
    fn oracle_dead(observed: &Observed, member: &RuntimeMember) -> bool {
        !member.running
            && (member.data == MemberData::Gone
                || member
                    .failing_since
                    .or(member.down_since)
                    .is_some_and(|since| since <= observed.now - observed.policy.dead_after_ms))
    }

    /// Healthy voters, all voters, after taking away the entry `gone` (if any).
    fn voter_counts(observed: &Observed, gone: Option<u64>) -> (usize, usize) {
        let list = observed.etcd_members.as_deref().unwrap_or_default();
        let voters: Vec<&EtcdMember> = list
            .iter()
            .filter(|e| !e.is_learner && Some(e.id) != gone)
            .collect();
        let healthy = voters
            .iter()
            .filter(|e| runtime_of(observed, e).is_some_and(|m| fresh_healthy(observed, m)))
            .count();
        (healthy, voters.len())
    }

    /// The safety invariants of DESIGN.md, judged from the observation alone.
    fn check_invariants(observed: &Observed, plan: &Plan) {
        let action = &plan.action;
        let context = || format!("{action:?} for {observed:#?}");
        if observed.spec.is_err() {
            assert!(
                matches!(action, Action::RefuseSpec { .. }),
                "invalid spec: {}",
                context()
            );
            return;
        }
        let list = observed.etcd_members.as_deref().unwrap_or_default();
        let (healthy, voters) = voter_counts(observed, None);
        // A lost quorum changes no membership; the ways out of it are a forced new cluster
        // and a restore from a backup, only when the spec asks for one (checked below).
        let recovery = matches!(
            action,
            Action::ForceNewCluster { .. } | Action::RestoreCluster { .. }
        );
        if observed.etcd_members.is_some() && healthy < quorum(voters) {
            assert!(
                !action.changes_membership() || recovery,
                "quorum lost: {}",
                context()
            );
        }
        if observed.etcd_members.is_none() && !observed.members.is_empty() {
            assert!(
                !action.changes_membership() || matches!(action, Action::RestoreCluster { .. }),
                "etcd unreadable: {}",
                context()
            );
        }
        match action {
            Action::TakeBackup { name: from } => {
                assert!(observed.backup_due, "{}", context());
                assert!(
                    observed.etcd_members.is_some() && healthy >= quorum(voters),
                    "backup without quorum: {}",
                    context()
                );
                let m = observed.members.iter().find(|m| &m.name == from).unwrap();
                assert!(fresh_healthy(observed, m), "{}", context());
            }
            Action::RestartMember {
                name: restarted, ..
            } => {
                let m = observed
                    .members
                    .iter()
                    .find(|m| &m.name == restarted)
                    .unwrap();
                assert!(
                    !m.running && m.data == MemberData::Intact && m.restart_on_request,
                    "restarted a member that runs, lost its data or restarts by itself: {}",
                    context()
                );
                let since = m.down_since.unwrap_or(observed.now);
                assert!(
                    observed.now - since >= restart_backoff_ms(m.restarts),
                    "restarted before its backoff: {}",
                    context()
                );
            }
            Action::ForceNewCluster {
                name: survivor,
                raft_index,
                ..
            } => {
                let spec = observed.spec.as_ref().unwrap();
                assert_eq!(
                    spec.quorum_loss,
                    QuorumLossPolicy::ForceNewCluster,
                    "forced a new cluster the spec did not ask for: {}",
                    context()
                );
                assert!(healthy < quorum(voters), "{}", context());
                assert!(observed.grant.is_none(), "{}", context());
                let chosen = observed
                    .members
                    .iter()
                    .find(|m| &m.name == survivor)
                    .unwrap();
                assert!(chosen.running, "{}", context());
                assert_eq!(
                    chosen.report.as_ref().map(|r| r.raft_index),
                    Some(*raft_index)
                );
                // Never a survivor behind another survivor.
                for e in list.iter().filter(|e| !e.is_learner) {
                    if let Some(other) = runtime_of(observed, e)
                        && let Some(r) = other.report.as_ref()
                        && (other.running || other.data == MemberData::Intact)
                    {
                        assert!(
                            r.raft_index <= *raft_index,
                            "forced from {survivor} at raft index {raft_index} while {} has {}: {}",
                            other.name,
                            r.raft_index,
                            context()
                        );
                    }
                }
                // Only when the voters whose data survives cannot make a quorum again.
                let keepers = list
                    .iter()
                    .filter(|e| !e.is_learner)
                    .filter(|e| {
                        runtime_of(observed, e)
                            .is_some_and(|m| m.running || m.data == MemberData::Intact)
                    })
                    .count();
                assert!(keepers < quorum(voters), "{}", context());
            }
            Action::RestoreCluster {
                backup,
                seed,
                discard,
                ..
            } => {
                let spec = observed.spec.as_ref().unwrap();
                assert_eq!(
                    spec.quorum_loss,
                    QuorumLossPolicy::Restore,
                    "restored a cluster the spec did not ask for: {}",
                    context()
                );
                assert_eq!(
                    observed.recovery_backup.as_ref(),
                    Some(&Ok(backup.clone())),
                    "{}",
                    context()
                );
                assert!(observed.grant.is_none(), "{}", context());
                assert!(healthy < quorum(voters), "{}", context());
                // Only when the voters whose data survives cannot make a quorum again.
                let keepers = list
                    .iter()
                    .filter(|e| !e.is_learner)
                    .filter(|e| {
                        runtime_of(observed, e)
                            .is_some_and(|m| m.running || m.data == MemberData::Intact)
                    })
                    .count();
                assert!(keepers < quorum(voters), "{}", context());
                let mut all: Vec<&String> = observed.members.iter().map(|m| &m.name).collect();
                let mut discarded: Vec<&String> = discard.iter().collect();
                all.sort();
                discarded.sort();
                assert_eq!(
                    all,
                    discarded,
                    "a member kept beside the restored cluster: {}",
                    context()
                );
                let ordinal = member_ordinal(CLUSTER, seed).unwrap();
                assert!(
                    ordinal >= observed.next_ordinal
                        && !observed.members.iter().any(|m| m.ordinal >= ordinal)
                        && !list.iter().any(|e| {
                            member_ordinal(CLUSTER, &e.name).is_some_and(|o| o >= ordinal)
                        }),
                    "ordinal reused: {}",
                    context()
                );
            }
            Action::CreateSeed { name: seed, .. } => {
                assert!(
                    observed.members.is_empty() && observed.etcd_members.is_none(),
                    "seed beside a cluster: {}",
                    context()
                );
                let ordinal = member_ordinal(CLUSTER, seed).unwrap();
                assert!(ordinal >= observed.next_ordinal, "{}", context());
            }
            Action::CreateMember { name: new, .. } => {
                assert!(
                    observed.grant.is_none(),
                    "create during a change: {}",
                    context()
                );
                assert!(
                    !list.iter().any(|e| e.is_learner),
                    "create beside a learner: {}",
                    context()
                );
                let ordinal = member_ordinal(CLUSTER, new).unwrap();
                assert!(ordinal >= observed.next_ordinal, "{}", context());
                assert!(
                    !observed.members.iter().any(|m| m.ordinal >= ordinal)
                        && !list.iter().any(|e| {
                            member_ordinal(CLUSTER, &e.name).is_some_and(|o| o >= ordinal)
                        }),
                    "ordinal reused: {}",
                    context()
                );
            }
            Action::RemoveDeadMember { member_id, .. } => {
                assert!(observed.grant.is_none(), "{}", context());
                let entry = list.iter().find(|e| e.id == *member_id).unwrap();
                if !entry.is_learner {
                    let (healthy_after, voters_after) = voter_counts(observed, Some(entry.id));
                    assert!(
                        healthy_after >= quorum(voters_after),
                        "removal below quorum: {}",
                        context()
                    );
                }
                if let Some(m) = runtime_of(observed, entry) {
                    assert!(
                        oracle_dead(observed, m),
                        "removed a member that is not dead: {}",
                        context()
                    );
                }
            }
            Action::AskToLeave { name: leaving } => {
                assert!(observed.grant.is_none(), "{}", context());
                let entry = list.iter().find(|e| &e.name == leaving).unwrap();
                assert!(!entry.is_learner, "{}", context());
                let (healthy_after, voters_after) = voter_counts(observed, Some(entry.id));
                assert!(
                    healthy_after >= quorum(voters_after),
                    "leave below quorum: {}",
                    context()
                );
                let size = observed.spec.as_ref().map_or(0, |s| s.size as usize);
                assert!(voters > size, "{}", context());
            }
            Action::DeleteRuntimeMember { name: gone, .. }
                if observed.delete_requested.contains(gone) =>
            {
                assert!(observed.grant.is_none(), "{}", context());
                let m = observed.members.iter().find(|m| &m.name == gone).unwrap();
                if let Some(entry) = list.iter().find(|e| runtime_of(observed, e) == Some(m))
                    && !entry.is_learner
                {
                    let (healthy_after, voters_after) = voter_counts(observed, Some(entry.id));
                    assert!(
                        healthy_after >= quorum(voters_after),
                        "deletion on request below quorum: {}",
                        context()
                    );
                }
            }
            Action::DeleteRuntimeMember { name: gone, .. } => {
                assert!(observed.grant.is_none(), "{}", context());
                let m = observed.members.iter().find(|m| &m.name == gone).unwrap();
                assert!(
                    !list.iter().any(|e| runtime_of(observed, e) == Some(m)),
                    "deleted a member etcd lists: {}",
                    context()
                );
                let left = m
                    .report
                    .as_ref()
                    .is_some_and(|r| r.phase == ReportedPhase::Removed || r.member_id != 0);
                assert!(
                    left || oracle_dead(observed, m),
                    "deleted a member that may still join: {}",
                    context()
                );
            }
            Action::UpgradeMember { .. } => {
                assert!(
                    healthy == voters,
                    "upgrade with an unhealthy voter: {}",
                    context()
                );
                assert!(
                    voters == 1 || healthy > quorum(voters),
                    "upgrade below quorum: {}",
                    context()
                );
            }
            Action::RefuseSpec { .. } | Action::Wait { .. } | Action::Steady => {}
        }
    }

    /// How a generated voter is doing. (A stale report and an unhealthy one are the same
    /// to the planner, both "running, not healthy"; one stands for both.)
    #[derive(Clone, Copy, Debug)]
    enum VoterState {
        Healthy,
        Stale,
        /// Down, restarted by the runtime itself (a Pod's container), not yet dead.
        Down,
        /// Down past dead-after, restarted by the runtime itself.
        Dead,
        /// Etcd lists it; the runtime has no such member.
        Orphan,
        /// Its process exited a moment ago, its data intact.
        Crashed,
        /// Keeps exiting, failing past dead-after, its data intact.
        CrashLooping,
        /// Its process and its data are gone.
        Wiped,
        /// Running without a leader, reporting a raft index of its own.
        Leaderless,
    }

    const STATES: [VoterState; 9] = [
        VoterState::Healthy,
        VoterState::Stale,
        VoterState::Orphan,
        VoterState::Crashed,
        VoterState::Wiped,
        VoterState::Leaderless,
        VoterState::Down,
        VoterState::Dead,
        VoterState::CrashLooping,
    ];

    /// Something else going on besides the voters' states.
    #[derive(Clone, Copy, Debug)]
    enum Extra {
        Nothing,
        GrantInFlight,
        Learner,
        Joiner,
        DeadJoiner,
        LeftOnRequest,
        UpgradeAsked,
        /// An operator asked to delete member 0.
        DeleteAsked,
    }

    #[test]
    fn invariants_hold_in_every_generated_situation() {
        let mut plans = 0usize;
        let mut kinds = std::collections::BTreeSet::new();
        for voters in 1..=5u32 {
            // Five voters in every state would be 59,049 combinations: there, the last three
            // states (a Pod kubelet restarts, down or dead; a crash loop) stay out.
            let states_here: &[VoterState] = if voters < 5 { &STATES } else { &STATES[..6] };
            let n = states_here.len();
            for combo in 0..n.pow(voters) {
                let states: Vec<VoterState> = (0..voters)
                    .map(|i| states_here[combo / n.pow(i) % n])
                    .collect();
                let mut sizes = vec![voters.saturating_sub(1).max(1), voters, voters + 1];
                sizes.dedup();
                for size in sizes {
                    // A third of the situations let the planner force a new cluster, a
                    // third let it restore the latest backup (found, or not).
                    let quorum_loss = match (combo + size as usize) % 3 {
                        0 => QuorumLossPolicy::Manual,
                        1 => QuorumLossPolicy::ForceNewCluster,
                        _ => QuorumLossPolicy::Restore,
                    };
                    let mut leaders = vec![0, voters - 1];
                    leaders.dedup();
                    for &leader in &leaders {
                        for extra in [
                            Extra::Nothing,
                            Extra::GrantInFlight,
                            Extra::Learner,
                            Extra::Joiner,
                            Extra::DeadJoiner,
                            Extra::LeftOnRequest,
                            Extra::UpgradeAsked,
                            Extra::DeleteAsked,
                        ] {
                            let mut s = Situation::healthy(voters)
                                .size(size)
                                .leader(leader)
                                .quorum_loss(quorum_loss);
                            for (ordinal, state) in (0..voters).zip(&states) {
                                s = match state {
                                    VoterState::Healthy => s,
                                    VoterState::Stale => s.stale(ordinal),
                                    VoterState::Down => s.down(ordinal),
                                    VoterState::Dead => s.dead(ordinal),
                                    VoterState::Orphan => s.orphan(ordinal),
                                    VoterState::Crashed => s.crashed(ordinal),
                                    VoterState::CrashLooping => {
                                        s.crash_looping(ordinal, 4, 60_000, 10_000)
                                    }
                                    VoterState::Wiped => s.wiped(ordinal),
                                    VoterState::Leaderless => s.leaderless(ordinal).raft(
                                        ordinal,
                                        200 + u64::from(combo as u32 % 7),
                                        70,
                                    ),
                                };
                            }
                            s = match extra {
                                Extra::Nothing => s,
                                Extra::GrantInFlight => s.grant(&name(voters), ChangeKind::Add),
                                Extra::Learner => s.learner(voters),
                                Extra::Joiner => s.joiner(voters),
                                Extra::DeadJoiner => s.joiner(voters).dead(voters),
                                Extra::LeftOnRequest => s.voter(voters).removed(voters),
                                Extra::UpgradeAsked => s.all_run("3.5.34"),
                                Extra::DeleteAsked => s.delete_asked(0),
                            };
                            // With the second leader, a backup is due too.
                            if leader != 0 {
                                s = s.backup_due();
                            }
                            if quorum_loss == QuorumLossPolicy::Restore {
                                s = s.recovery_backup(if combo % 5 == 0 {
                                    Err("no verified backup")
                                } else {
                                    Ok("demo-20261201T100000Z-r70")
                                });
                            }
                            let plan = s.plan();
                            plans += 1;
                            kinds.insert(plan.action.kind());
                            if matches!(extra, Extra::Nothing) && leader == 0 {
                                s.invalid().plan();
                            }
                        }
                    }
                }
            }
        }
        // The generator must reach the interesting part of the space, not only waits.
        assert!(plans > 100_000, "{plans}");
        let kinds: Vec<&str> = kinds.into_iter().collect();
        assert_eq!(
            kinds,
            vec![
                "ask_to_leave",
                "create_member",
                "delete_runtime_member",
                "force_new_cluster",
                "remove_dead_member",
                "restart_member",
                "restore_cluster",
                "steady",
                "take_backup",
                "upgrade_member",
                "wait",
            ]
        );
    }

    /// A tiny model of the world: applies each action the way the runtime and sidecars
    /// would, one step at a time, so that a sequence of plans can be checked end to end.
    struct World {
        s: Situation,
        log: Vec<Action>,
    }

    impl World {
        fn new(size: u32, version: &str) -> Self {
            Self {
                s: Situation::empty(size).spec_version(version),
                log: Vec::new(),
            }
        }

        fn ordinal(text: &str) -> u32 {
            member_ordinal(CLUSTER, text).unwrap()
        }

        fn leader(&self) -> Option<u32> {
            self.s
                .0
                .members
                .iter()
                .find(|m| m.report.as_ref().is_some_and(|r| r.leader))
                .map(|m| m.ordinal)
        }

        /// Moves leadership off `ordinal` if it leads, as the sidecar does before it goes.
        fn move_leader_off(&mut self, ordinal: u32) {
            if self.leader() == Some(ordinal)
                && let Some(other) = self
                    .s
                    .0
                    .members
                    .iter()
                    .map(|m| m.ordinal)
                    .find(|&o| o != ordinal)
            {
                self.s = self.s.clone().leader(other);
            }
        }

        /// Plans and applies until steady; returns the actions taken.
        fn settle(&mut self) -> Vec<Action> {
            let mut taken = Vec::new();
            for _ in 0..100 {
                let plan = self.s.plan();
                taken.push(plan.action.clone());
                self.log.push(plan.action.clone());
                match plan.action {
                    Action::Steady => return taken,
                    Action::CreateSeed { name, version } => {
                        let ordinal = Self::ordinal(&name);
                        self.s = self
                            .s
                            .clone()
                            .voter(ordinal)
                            .runs(ordinal, &version.to_string());
                        self.s = self.s.clone().leader(ordinal);
                    }
                    Action::CreateMember { name, version } => {
                        let ordinal = Self::ordinal(&name);
                        self.s = self.s.clone().joiner(ordinal);
                        self.s.member(ordinal).version = version;
                    }
                    Action::Wait {
                        reason: WaitReason::MemberJoining(name),
                    } => {
                        let ordinal = Self::ordinal(&name);
                        let list = self.s.0.etcd_members.get_or_insert_with(Vec::new);
                        let promoted = match list.iter_mut().find(|e| e.id == id(ordinal)) {
                            Some(entry) => {
                                entry.is_learner = false;
                                true
                            }
                            None => false,
                        };
                        if !promoted {
                            self.s.add_entry(ordinal, true, true);
                        }
                        let version = self.s.member(ordinal).version.to_string();
                        let report = self
                            .s
                            .member(ordinal)
                            .report
                            .insert(Situation::healthy_report(ordinal, !promoted));
                        report.etcd_version = version;
                    }
                    Action::AskToLeave { name } => {
                        let ordinal = Self::ordinal(&name);
                        self.move_leader_off(ordinal);
                        self.s = self.s.clone().removed(ordinal);
                    }
                    Action::DeleteRuntimeMember { name, .. } => {
                        let ordinal = Self::ordinal(&name);
                        self.s = self.s.clone().orphan(ordinal);
                    }
                    Action::RemoveDeadMember { member_id, .. } => {
                        let ordinal = u32::try_from(member_id - 0x1000).unwrap();
                        self.s = self.s.clone().retired(ordinal);
                    }
                    Action::UpgradeMember { name, to } => {
                        let ordinal = Self::ordinal(&name);
                        let others_behind = self
                            .s
                            .0
                            .members
                            .iter()
                            .any(|m| m.ordinal != ordinal && running_version(m) != to);
                        assert!(
                            !(self.leader() == Some(ordinal) && others_behind),
                            "the leader was upgraded before its followers: {:?}",
                            self.log
                        );
                        self.move_leader_off(ordinal);
                        self.s = self.s.clone().runs(ordinal, &to.to_string());
                    }
                    other => panic!("unexpected {other:?} after {:?}", self.log),
                }
            }
            panic!("no steady state after 100 steps: {:?}", self.log);
        }

        fn voter_names(&self) -> Vec<String> {
            let mut names: Vec<String> = self
                .s
                .0
                .etcd_members
                .iter()
                .flatten()
                .filter(|e| !e.is_learner)
                .map(|e| e.name.clone())
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn a_cluster_lives_through_create_scale_upgrade_loss_and_shrink() {
        let mut world = World::new(3, "3.5.34");
        let created = world.settle();
        assert_eq!(created.iter().filter(|a| a.changes_something()).count(), 3);
        assert_eq!(world.voter_names(), vec![name(0), name(1), name(2)]);

        world.s = world.s.clone().size(5);
        world.settle();
        assert_eq!(world.voter_names(), (0..5).map(name).collect::<Vec<_>>());

        world.s = world.s.clone().spec_version("3.6.15");
        let upgraded = world.settle();
        let upgrades: Vec<&Action> = upgraded
            .iter()
            .filter(|a| matches!(a, Action::UpgradeMember { .. }))
            .collect();
        assert_eq!(upgrades.len(), 5, "{upgraded:?}");
        assert_eq!(cluster_version(&world.s.0), Some(V36));

        world.s = world.s.clone().dead(2);
        let recovered = world.settle();
        assert_eq!(
            recovered.first(),
            Some(&Action::RemoveDeadMember {
                name: name(2),
                member_id: id(2),
                reason: "not running for 60s (dead after 15s)".into(),
            })
        );
        assert_eq!(
            world.voter_names(),
            vec![name(0), name(1), name(3), name(4), name(5)]
        );

        world.s = world.s.clone().size(3);
        world.settle();
        assert_eq!(world.voter_names().len(), 3);
        assert!(world.voter_names().contains(&name(world.leader().unwrap())));
    }
}
