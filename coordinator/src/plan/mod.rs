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
//! 1. Invalid spec: [`Action::RefuseSpec`], phase Invalid. Nothing changes, but a refusal
//!    never stops healing: a member down with its data is still started again on it after
//!    its backoff (rule 4, dead or not: nothing replaces it meanwhile) ([`refuse`]).
//! 2. The version step from any member's running version to the spec's is refused
//!    ([`check_version_step`]): as rule 1.
//! 3. No runtime member and no etcd cluster: [`Action::CreateInitial`] of every member of
//!    the spec's size at once (etcd's static bootstrap, under one grant), or
//!    [`Action::CreateSeed`] for one member or a cluster created from a backup (it then
//!    grows by learners). While the initial members bootstrap (after rule 4, which starts
//!    one that exited again): [`Action::EndBootstrap`] once all of them are healthy (past
//!    the deadline or once one is gone, a quorum of them); past the deadline without
//!    quorum, or once one of
//!    them is gone, [`Action::AbandonBootstrap`] (delete them and their data, then begin
//!    again), but only while none was ever part of a formed cluster; else wait.
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
//! 11. Wait while a voter is unhealthy or its report is stale (saying so when its data volume
//!     is full: DISKFULL). An alarm (NOSPACE, CORRUPT) does not make a member unhealthy,
//!     and no alarm makes it dead: it is never replaced for it.
//!     Then alarms: CORRUPT waits for people. NOSPACE waits, saying what to do by hand,
//!     unless `spec.maintenance` is set (and its `noSpace` is not `Manual`); then space is
//!     freed: [`Action::Compact`] to the current
//!     revision, then [`Action::Defragment`] one member at a time (followers first, the
//!     leader last, each reporting healthy again before the next), then
//!     [`Action::DisarmAlarms`].
//! 12. Scale up one learner at a time; 13. scale down the highest ordinal, the leader last
//!     (a member whose sidecar has not been reachable to leave for `dead_after_ms` is
//!     removed from etcd directly, [`Action::RemoveDeadMember`]).
//! 14. Upgrade one member at a time, followers first, the leader last.
//! 15. A CA rotation with an overlap ([`ca_rotation`]): trust old and new
//!     ([`Action::RollingRestart`] of every member), leaves issued again, the old CA dropped
//!     (restart again), one step at a time ([`Action::RotateCa`]).
//! 16. In a scheduled defragmentation round ([`MaintenanceRecord::defrag_round`]), defragment
//!     members whose fragmentation reached the spec's threshold, one at a time, followers
//!     first, the leader last.
//! 17. Otherwise steady.
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
//!   its first exit, restarts included); or when it runs but its fresh report says its etcd
//!   has kept exiting for `dead_after_ms` since its first exit ([`EtcdDown`]), unless for a
//!   full data volume (DISKFULL: waited on, never death). An etcd
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

mod ca_rotation;
pub use ca_rotation::{CaObservation, CaPhase, CaRotation, CaRotationStep, RestartReason};

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
    /// Disk maintenance done and under way.
    pub maintenance: MaintenanceRecord,
    /// The initial members bootstrapping the cluster together, while they do
    /// ([`Action::CreateInitial`] began it; `None` otherwise).
    pub bootstrap: Option<BootstrapUnderWay>,
    /// A new cluster forced from a survivor, decided (in the durable record) and not known
    /// to be done: carried through from the same survivor, at the raft index it was chosen
    /// at, even while etcd cannot be read (a survivor started again without quorum does not
    /// serve).
    pub pending_force: Option<PendingForce>,
    /// The durable record holds the etcd cluster id a member reported: the cluster served
    /// clients (and may hold acknowledged writes), whatever its members say now.
    pub ever_served: bool,
    /// The durable record says the cluster was created (its first members were decided):
    /// with no member left it is a cluster whose members are gone, never one to bootstrap
    /// from nothing.
    pub created: bool,
    /// The initial members of a static bootstrap being abandoned (the decision is in the
    /// durable record): deleted before anything else happens.
    pub abandoning: Vec<String>,
    /// Survivors of a lost cluster kept with their data until its restore runs (not in
    /// `members`): deleted once the restored cluster runs.
    pub kept: Vec<String>,
    /// Members asked to leave (scale-down) whose sidecar could not be reached, with when
    /// that first failed: past `dead_after_ms` such a member is removed from etcd directly.
    pub leave_unreachable: std::collections::BTreeMap<String, UnixMillis>,
    /// The upgrade that stopped because a member did not come back healthy on its new
    /// version (the durable record's; the caller forgets it once the spec asks for another
    /// version).
    pub upgrade_failed: Option<UpgradeFailure>,
    /// The cluster's etcd CA: its rotation under way, or one due.
    pub ca: CaObservation,
    /// Now, ms since the epoch.
    pub now: UnixMillis,
    /// Tunables.
    pub policy: Policy,
}

/// An upgrade step under way, as the durable record has it: a member restarted on another
/// version, not yet healthy on it since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeStep {
    /// When it was restarted on `to`.
    pub at: UnixMillis,
    /// The version it was restarted on.
    pub to: EtcdVersion,
    /// The version it last ran healthy before the step (`None` when a coordinator that did
    /// not record it began the step): what it is rolled back to, and what counts as the
    /// version it runs until it is healthy on `to`.
    pub last_healthy: Option<EtcdVersion>,
    /// The step rolls a failed upgrade back (it is never rolled back in turn).
    pub rollback: bool,
}

/// An upgrade stopped: a member did not come back healthy on its new version within the
/// deadline and was rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeFailure {
    /// The member.
    pub member: String,
    /// The version it did not come back healthy on.
    pub to: EtcdVersion,
    /// The version it was rolled back to (new members are created on it while the spec
    /// still asks for `to`).
    pub back_to: EtcdVersion,
    /// What it last said: etcd's last error, or why its Pod did not start.
    pub error: String,
}

/// A static bootstrap under way: the initial members started together, under the one grant
/// the coordinator holds for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapUnderWay {
    /// The initial members.
    pub names: Vec<String>,
    /// When the first of them was given its role (`None` before: nothing started yet).
    pub began: Option<UnixMillis>,
}

/// What the coordinator remembers of the disk maintenance it did, and the scheduled
/// defragmentation round under way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceRecord {
    /// The last compaction the coordinator made: the revision, and when it was done.
    pub compacted: Option<(i64, UnixMillis)>,
    /// When NOSPACE alarms were last disarmed.
    pub disarmed_at: Option<UnixMillis>,
    /// When the scheduled defragmentation round under way began (`None` outside one).
    pub defrag_round: Option<UnixMillis>,
}

/// An alarm etcd raised on a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberAlarm {
    /// The backend quota is reached: the cluster refuses writes.
    NoSpace,
    /// Data corruption was detected.
    Corrupt,
    /// Raised by the sidecar, not etcd: etcd exited because the filesystem of its data
    /// directory is full, and has not run since. It clears once etcd runs again.
    DiskFull,
}

impl MemberAlarm {
    /// Every alarm, for what lists them (metrics).
    pub const ALL: [Self; 3] = [Self::NoSpace, Self::Corrupt, Self::DiskFull];

    /// The word etcd and `etcdctl alarm list` use (`DISKFULL` is the sidecar's own).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSpace => "NOSPACE",
            Self::Corrupt => "CORRUPT",
            Self::DiskFull => "DISKFULL",
        }
    }
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
    /// A static bootstrap that has not reached quorum this long after its first member
    /// was given its role is abandoned and begun again (default 60 000 ms).
    pub bootstrap_deadline_ms: i64,
    /// A member restarted on a new version that has not reported healthy on it this long
    /// after is rolled back to the version it last ran (default 120 000 ms). Until then it
    /// is never judged dead: a failed upgrade is rolled back, not replaced.
    pub upgrade_deadline_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            dead_after_ms: 15_000,
            report_stale_after_ms: 10_000,
            bootstrap_deadline_ms: 60_000,
            upgrade_deadline_ms: 120_000,
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
    /// The upgrade (or rollback) step under way, while it has not yet reported healthy on
    /// the step's version since (`None` otherwise): waited for here, as a state of the plan,
    /// not inside the act.
    pub upgrade: Option<UpgradeStep>,
    /// How the runtime last saw it end or fail to start ("ImagePullBackOff: ...", "exit
    /// status 1"); empty when it cannot tell.
    pub last_exit: String,
    /// When the coordinator last defragmented it (`None`: not since it started).
    pub defragmented_at: Option<UnixMillis>,
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
    /// etcd answers and knows a leader (an alarm does not make it unhealthy).
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
    /// Alarms etcd raised on it.
    pub alarms: Vec<MemberAlarm>,
    /// Its backend's size, bytes (0 when unknown).
    pub db_size: i64,
    /// Of it, bytes in use.
    pub db_size_in_use: i64,
    /// While the sidecar runs but its etcd keeps exiting: since when, and how it last ended.
    pub etcd_down: Option<EtcdDown>,
    /// The last error its sidecar saw (empty when none).
    pub last_error: String,
}

/// An etcd that its sidecar means to run and that is not running: it exited on its own,
/// and every restart since has ended again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdDown {
    /// When it first exited in this run of failures.
    pub since: UnixMillis,
    /// How its last run ended, etcd's fatal line included.
    pub exit: String,
}

impl MemberReport {
    /// The share of its backend that is free pages, percent (0 when unknown).
    pub fn fragmentation_percent(&self) -> u32 {
        if self.db_size <= 0 || self.db_size_in_use <= 0 || self.db_size_in_use >= self.db_size {
            return 0;
        }
        ((self.db_size - self.db_size_in_use) * 100 / self.db_size) as u32
    }
}

impl From<&proto::HealthReport> for MemberReport {
    fn from(report: &proto::HealthReport) -> Self {
        let mut alarms: Vec<MemberAlarm> = report
            .alarms()
            .filter_map(|a| match a {
                proto::Alarm::Nospace => Some(MemberAlarm::NoSpace),
                proto::Alarm::Corrupt => Some(MemberAlarm::Corrupt),
                proto::Alarm::DiskFull => Some(MemberAlarm::DiskFull),
                proto::Alarm::None => None,
            })
            .collect();
        alarms.sort();
        alarms.dedup();
        Self {
            alarms,
            db_size: report.db_size,
            db_size_in_use: report.db_size_in_use,
            raft_index: report.raft_index,
            revision: report.revision,
            member_id: report.member_id,
            healthy: report.healthy,
            leader: report.leader,
            learner: report.learner,
            etcd_version: report.etcd_version.clone(),
            phase: report.phase().into(),
            observed_at: report.observed_at_unix_ms,
            etcd_down: (report.etcd_failing_since_unix_ms > 0).then(|| EtcdDown {
                since: report.etcd_failing_since_unix_ms,
                exit: report.last_error.clone(),
            }),
            last_error: report.last_error.clone(),
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
    /// The word written to a member's status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "Starting",
            Self::Bootstrapping => "Bootstrapping",
            Self::Joining => "Joining",
            Self::Running => "Running",
            Self::Leaving => "Leaving",
            Self::Removed => "Removed",
            Self::HandedOff => "HandedOff",
            Self::Restarting => "Restarting",
        }
    }

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
            // Only the coordinator shows it; a sidecar that sent it said nothing usable.
            proto::MemberPhase::Down => Self::Starting,
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
    /// No cluster exists and the spec asks for more than one member: create the initial
    /// members `names` together. They bootstrap one etcd cluster statically (every one of
    /// them in `--initial-cluster`, one new token) under one grant the coordinator takes
    /// for the whole bootstrap and holds until [`Action::EndBootstrap`] or
    /// [`Action::AbandonBootstrap`].
    CreateInitial {
        /// The initial members (never-used ordinals, in order).
        names: Vec<String>,
        /// The version to run.
        version: EtcdVersion,
    },
    /// Every initial member reports healthy (or, past the bootstrap deadline, a quorum of
    /// them does): the bootstrap is over; give its grant back. A member still missing is
    /// then handled as any other member is.
    EndBootstrap,
    /// The static bootstrap did not reach quorum within the deadline (or one of its
    /// members is gone), and no initial member ever was part of a formed cluster: delete
    /// the initial members with their data (nothing was ever acknowledged) and give the
    /// grant back; the next step creates the cluster again, with new members and a new
    /// token.
    AbandonBootstrap {
        /// The initial members to delete.
        names: Vec<String>,
        /// Why, for events and logs.
        reason: String,
    },
    /// Create member `name`; its sidecar joins as a learner under its own grant and promotes
    /// itself.
    CreateMember {
        /// The new member's name (always a never-used ordinal).
        name: String,
        /// The version to run.
        version: EtcdVersion,
    },
    /// Remove a member from etcd's member list directly (the coordinator does
    /// `MemberRemove` under a grant), then delete its runtime member if any: a dead member,
    /// or one that scale-down asked to leave and whose sidecar has not been reachable for
    /// `dead_after_ms` (a leave that cannot be asked for is made for it).
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
        /// It leads: stopped gracefully, so that etcd hands leadership over as it stops.
        /// Any other member (a follower, a learner, one etcd no longer lists) is stopped at
        /// once: its data goes with it and nothing waits on it.
        hand_over: bool,
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
    /// Quorum is lost for good and the spec says `Restore`: once the backup is read and
    /// checked, delete the members whose data is gone (`discard`), stop the survivors
    /// (`keep`, deleted with their data only once the restored cluster runs), and create the
    /// cluster again from `backup` with the seed `seed`; it then grows back by learners.
    /// Writes after the backup are gone.
    RestoreCluster {
        /// The backup restored (the latest verified one).
        backup: String,
        /// The new seed, which restores it.
        seed: String,
        /// Its version.
        version: EtcdVersion,
        /// The runtime members whose data is gone, deleted first.
        discard: Vec<String>,
        /// The runtime members whose data survives: stopped, kept until the restored
        /// cluster runs.
        keep: Vec<String>,
        /// The voters whose data is gone.
        lost: Vec<String>,
    },
    /// The cluster restored after a lost quorum runs: delete the survivors of the lost one,
    /// kept with their data until now.
    DeleteKept {
        /// The survivors.
        names: Vec<String>,
    },
    /// Ask `name`'s sidecar for a backup (a healthy follower when there is one, sparing the
    /// leader). Not a membership change; one per cluster at a time.
    TakeBackup {
        /// The member streaming the snapshot.
        name: String,
    },
    /// Upgrade `name` to `to` through the sidecar handoff, then restart it on the same data
    /// with `to`.
    /// A member the cluster lists as a learner although its sidecar is past its join (the
    /// sidecar stopped between the add and the promotion): ask its sidecar to promote it,
    /// under a grant it takes.
    FinishJoin {
        /// The member.
        name: String,
    },
    UpgradeMember {
        /// The member to upgrade.
        name: String,
        /// The version to restart it with.
        to: EtcdVersion,
    },
    /// An upgrade step that did not come back healthy within the deadline (or that the
    /// spec no longer asks for): restart `name` on its own data with `to`, the version it
    /// last ran healthy. Not a membership change and no handoff: its etcd does not serve
    /// on the new version. etcd's older minor reads the data, since a member that never
    /// ran healthy on the newer version wrote nothing in its format (etcd moves its
    /// storage to a new version only once the whole cluster runs it).
    RollBackMember {
        /// The member.
        name: String,
        /// The version it last ran healthy, restarted on now.
        to: EtcdVersion,
        /// The version it did not come back healthy on.
        from: EtcdVersion,
        /// Why the upgrade failed (what the member last said), recorded as the upgrade's
        /// failure; `None` when the spec no longer asks for `from` (nothing failed).
        failure: Option<String>,
    },
    /// Restart `name` on its data with the version it runs, through the sidecar handoff (as
    /// an upgrade step: leadership moved away first, the member waited for until it is
    /// healthy again), so that its etcd reads what it reads only at start.
    RollingRestart {
        /// The member.
        name: String,
        /// Why.
        reason: RestartReason,
    },
    /// A step of a CA rotation that restarts nothing ([`ca_rotation`]).
    RotateCa {
        /// The step.
        step: CaRotationStep,
    },
    /// Compact the cluster's history up to `revision` through `name`'s sidecar, the first
    /// step out of NOSPACE (cluster-wide; no member stalls).
    Compact {
        /// The member whose sidecar compacts.
        name: String,
        /// The revision to compact to: the current one.
        revision: i64,
    },
    /// Defragment `name`'s backend (the member stalls while it runs), under a grant, so
    /// that nothing else changes meanwhile.
    Defragment {
        /// The member.
        name: String,
        /// Why, for events and logs.
        reason: String,
    },
    /// Disarm the cluster's NOSPACE alarms through `name`'s sidecar, once space is freed.
    DisarmAlarms {
        /// The member whose sidecar disarms.
        name: String,
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
            Self::CreateInitial { .. } => "create_initial",
            Self::EndBootstrap => "end_bootstrap",
            Self::AbandonBootstrap { .. } => "abandon_bootstrap",
            Self::CreateMember { .. } => "create_member",
            Self::RemoveDeadMember { .. } => "remove_dead_member",
            Self::DeleteRuntimeMember { .. } => "delete_runtime_member",
            Self::AskToLeave { .. } => "ask_to_leave",
            Self::UpgradeMember { .. } => "upgrade_member",
            Self::RollBackMember { .. } => "roll_back_member",
            Self::RollingRestart { .. } => "rolling_restart",
            Self::RotateCa { .. } => "rotate_ca",
            Self::FinishJoin { .. } => "finish_join",
            Self::RestartMember { .. } => "restart_member",
            Self::TakeBackup { .. } => "take_backup",
            Self::ForceNewCluster { .. } => "force_new_cluster",
            Self::RestoreCluster { .. } => "restore_cluster",
            Self::DeleteKept { .. } => "delete_kept",
            Self::Compact { .. } => "compact",
            Self::Defragment { .. } => "defragment",
            Self::DisarmAlarms { .. } => "disarm_alarms",
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
            && !matches!(
                self,
                Self::RestartMember { .. }
                    | Self::RollBackMember { .. }
                    | Self::EndBootstrap
                    | Self::DeleteKept { .. }
                    | Self::TakeBackup { .. }
                    | Self::Compact { .. }
                    | Self::Defragment { .. }
                    | Self::DisarmAlarms { .. }
                    | Self::RotateCa { .. }
            )
    }

    /// The action in a few words, for progress lines and events: "create initial
    /// demo-0000, demo-0001, demo-0002", "remove dead member demo-0004", "end bootstrap".
    pub fn describe(&self) -> String {
        let kind = self.kind().replace('_', " ");
        match self {
            Self::CreateInitial { names, .. }
            | Self::AbandonBootstrap { names, .. }
            | Self::DeleteKept { names } => {
                format!("{kind} {}", names.join(", "))
            }
            _ => match self.member() {
                Some(member) => format!("{kind} {member}"),
                None => kind,
            },
        }
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
            | Self::UpgradeMember { name, .. }
            | Self::RollBackMember { name, .. }
            | Self::RollingRestart { name, .. }
            | Self::FinishJoin { name }
            | Self::Compact { name, .. }
            | Self::Defragment { name, .. }
            | Self::DisarmAlarms { name } => Some(name),
            Self::CreateInitial { names, .. }
            | Self::AbandonBootstrap { names, .. }
            | Self::DeleteKept { names } => names.first().map(String::as_str),
            Self::EndBootstrap
            | Self::RotateCa { .. }
            | Self::RefuseSpec { .. }
            | Self::Wait { .. }
            | Self::Steady => None,
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
    /// A member restarted on another version by an upgrade step has not reported healthy
    /// on it yet.
    Upgrading {
        /// The member.
        member: String,
        /// The version it was restarted on.
        to: EtcdVersion,
    },
    /// The upgrade to `to` stopped: `member` did not come back healthy on it and was rolled
    /// back. No other member is upgraded while the spec asks for `to`.
    UpgradeFailed(UpgradeFailure),
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
    /// etcd raised an alarm the operator does not clear on its own: CORRUPT, or NOSPACE
    /// without `spec.maintenance`.
    Alarmed {
        /// The alarm.
        alarm: MemberAlarm,
        /// The members that raised it.
        members: Vec<String>,
    },
    /// A member defragmented has not reported since.
    Defragmenting(String),
    /// NOSPACE is still raised after compaction, defragmentation and a disarm.
    NoSpaceAfterRecovery(Vec<String>),
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
            Self::Upgrading { member, to } => write!(
                f,
                "{member} was restarted on {to}; no other step until it reports healthy on it"
            ),
            Self::UpgradeFailed(failure) => write!(
                f,
                "the upgrade to {} stopped: {} did not come back healthy on it and was rolled back to {}, on its data ({}). No other member is upgraded. Set spec.version back to {} (accepted: the members that never ran {} count at the version they last ran), or fix the cause and set it to {} then to {} again to retry",
                failure.to,
                failure.member,
                failure.back_to,
                failure.error,
                failure.back_to,
                failure.to,
                failure.back_to,
                failure.to
            ),
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
                if lost.is_empty() {
                    f.write_str(
                        "quorum lost for good: every member of the cluster is gone with its data; ",
                    )?;
                } else {
                    write!(
                        f,
                        "quorum lost for good: the data of {} is gone ({} of {} voting members); ",
                        lost.join(", "),
                        lost.len(),
                        lost.len() + survivors.len()
                    )?;
                }
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
            Self::Alarmed {
                alarm: MemberAlarm::NoSpace,
                members,
            } => write!(
                f,
                "etcd raised NOSPACE on {}: the cluster refuses writes. No member is replaced for it and nothing is changed on its own. To free space by hand: compact to the current revision (etcdctl compact REV), defragment each member, followers first (etcdctl defrag --endpoints=URL), then etcdctl alarm disarm; or let the operator do it (spec.maintenance set, without noSpace: Manual) (and raise spec.maintenance.quotaBackendBytes if the data itself is too large)",
                members.join(", ")
            ),
            Self::Alarmed {
                alarm: MemberAlarm::Corrupt,
                members,
            } => write!(
                f,
                "etcd raised CORRUPT on {}: its data differs from the cluster's. Nothing is changed on its own: check the members' hashes (etcdctl endpoint hashkv), replace the corrupt member by hand (etcd-coordinator delete-member), then etcdctl alarm disarm",
                members.join(", ")
            ),
            Self::Alarmed {
                alarm: MemberAlarm::DiskFull,
                members,
            } => write!(
                f,
                "the data volume of {} is full: its etcd exited (no space left on device) and cannot run again until there is room. It is not replaced for it: its data is whole and comes back with the space. Free space on that volume or grow it: the sidecar starts etcd again on its data by itself (if etcd then cannot start on what it wrote as the volume filled, the member is replaced after dead-after)",
                members.join(", ")
            ),
            Self::Defragmenting(name) => write!(
                f,
                "{name} was defragmented; no other step until it reports healthy again"
            ),
            Self::NoSpaceAfterRecovery(members) => write!(
                f,
                "NOSPACE is raised again on {} after compaction, defragmentation and a disarm: the data itself exceeds the quota. Delete keys, or raise spec.maintenance.quotaBackendBytes (applied as members restart)",
                members.join(", ")
            ),
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// A forced new cluster decided and not yet known to be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingForce {
    /// The survivor chosen.
    pub name: String,
    /// Its raft index when chosen.
    pub raft_index: u64,
    /// Its revision when chosen.
    pub revision: i64,
    /// The voters whose data was gone.
    pub lost: Vec<String>,
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
    /// The coordinator could not observe the cluster (the runtime did not answer): nothing
    /// is known, nothing changes. Never planned: the controller shows it when it cannot
    /// plan.
    Unknown,
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
            Self::Unknown => "Unknown",
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
    /// Why the spec (or the version step it asks for) is refused, while it is. The action
    /// is then [`Action::RefuseSpec`], or a restart on data that a refusal never holds back.
    pub refused: Option<String>,
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
        Err(errors) => return refuse(observed, errors.to_string(), Vec::new()),
    };
    if let Err(message) = check_version_steps(observed, spec) {
        return refuse(observed, message, spec.warnings.clone());
    }
    let (action, phase) = View::new(observed, spec).decide();
    let refused = match &action {
        Action::RefuseSpec { message } => Some(message.clone()),
        _ => None,
    };
    Plan {
        action,
        phase,
        warnings: spec.warnings.clone(),
        refused,
    }
}

/// The plan while the spec is refused for `message` (by the planner's rules, or by the
/// caller: a TLS setting that cannot change, a version the runtime cannot run). A refusal
/// freezes changes, never healing: a member down with its data is still started again on
/// it ([`Action::RestartMember`]); otherwise [`Action::RefuseSpec`].
pub fn refuse(observed: &Observed, message: String, warnings: Vec<String>) -> Plan {
    let (action, phase) = Members::new(observed).refused(message.clone());
    Plan {
        action,
        phase,
        warnings,
        refused: Some(message),
    }
}

/// The one definition of a healthy member, for the planner and the status alike: it runs,
/// and its sidecar's report is fresh and healthy, and (after an upgrade step) says it runs
/// the version the runtime now runs it with.
pub fn is_healthy(member: &RuntimeMember, now: UnixMillis, policy: &Policy) -> bool {
    member.running
        && member.report.as_ref().is_some_and(|r| {
            r.healthy
                && is_fresh(r, now, policy)
                && member
                    .upgrade
                    .is_none_or(|step| upgraded(r, step.at, step.to))
        })
}

/// The cluster's health as the planner judges it, for the status to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Voting members etcd lists (0 when its list could not be read).
    pub voters: usize,
    /// Of them, those a healthy runtime member is (each entry counted once).
    pub healthy_voters: usize,
    /// The runtime members judged healthy, by name.
    pub healthy: std::collections::BTreeSet<String>,
}

/// The health the planner's rules see in `observed` ([`is_healthy`], voters counted per
/// etcd entry).
pub fn health(observed: &Observed) -> Health {
    let etcd: &[EtcdMember] = observed.etcd_members.as_deref().unwrap_or_default();
    let healthy: std::collections::BTreeSet<String> = observed
        .members
        .iter()
        .filter(|m| is_healthy(m, observed.now, &observed.policy))
        .map(|m| m.name.clone())
        .collect();
    let voters = etcd.iter().filter(|e| !e.is_learner).count();
    let healthy_voters = etcd
        .iter()
        .filter(|e| !e.is_learner)
        .filter(|e| {
            observed.members.iter().any(|m| {
                healthy.contains(&m.name) && entry_of(m, etcd).is_some_and(|x| x.id == e.id)
            })
        })
        .count();
    Health {
        voters,
        healthy_voters,
        healthy,
    }
}

/// True when `report`, received after the member was restarted on `version` at `at`,
/// shows it running that version: the upgrade step is done.
pub fn upgraded(report: &MemberReport, at: UnixMillis, version: EtcdVersion) -> bool {
    report.observed_at >= at
        && report
            .etcd_version
            .parse::<EtcdVersion>()
            .is_ok_and(|v| v == version)
}

/// The version a member runs, for the version rules: in the middle of an upgrade (or
/// rollback) step, until it reports healthy on the step's version, the version it last ran
/// healthy (a member that never ran the new version has written nothing in its format);
/// otherwise what etcd says when it says something usable, else what the runtime runs it
/// with.
fn running_version(member: &RuntimeMember) -> EtcdVersion {
    if let Some(step) = member.upgrade
        && let Some(last) = step.last_healthy
        && !member
            .report
            .as_ref()
            .is_some_and(|r| r.healthy && upgraded(r, step.at, step.to))
    {
        return last;
    }
    member
        .report
        .as_ref()
        .and_then(|r| r.etcd_version.parse().ok())
        .unwrap_or(member.version)
}

/// An upgrade (or rollback) step under way that has not reached its deadline: its member
/// is not judged dead meanwhile (a failed upgrade is rolled back, not replaced).
fn in_upgrade_window(member: &RuntimeMember, now: UnixMillis, policy: &Policy) -> bool {
    member.data == MemberData::Intact
        && member.upgrade.is_some_and(|step| {
            now.saturating_sub(step.at) < policy.upgrade_deadline_ms
                // A rollback not made yet: carried on, never replaced meanwhile.
                || (step.rollback && member.version != step.to)
        })
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
    if in_upgrade_window(member, now, policy) {
        return false;
    }
    // A sidecar that reports its member healthy, freshly and since the runtime last saw it
    // go down, speaks for a member that serves: whatever the runtime says of its Pod (a
    // node cut off from the API server has its Pods marked Terminating while they run on),
    // it is not dead.
    if member.report.as_ref().is_some_and(|r| {
        r.healthy
            && is_fresh(r, now, policy)
            && member.down_since.is_none_or(|down| r.observed_at > down)
    }) {
        return false;
    }
    if member.running {
        // The sidecar runs but its etcd keeps exiting on its data: dead after as long as a
        // member whose process is down. A full disk is not death (the data is whole and
        // comes back with the space), and neither is a stale report.
        return etcd_failing_for(member, now, policy)
            .is_some_and(|failing| failing >= policy.dead_after_ms);
    }
    if member.data == MemberData::Gone {
        return true;
    }
    member
        .failing_since
        .or(member.down_since)
        .is_some_and(|since| now.saturating_sub(since) >= policy.dead_after_ms)
}

/// How long the etcd of a running sidecar has kept exiting, by a fresh report; `None`
/// while it runs, when the report is stale, or when it exits for a full disk.
fn etcd_failing_for(member: &RuntimeMember, now: UnixMillis, policy: &Policy) -> Option<i64> {
    let report = member
        .report
        .as_ref()
        .filter(|r| is_fresh(r, now, policy))?;
    if report.alarms.contains(&MemberAlarm::DiskFull) {
        return None;
    }
    let down = report.etcd_down.as_ref()?;
    Some(now.saturating_sub(down.since))
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

/// What a member last said about why it does not serve: etcd's last error by its sidecar,
/// else how the runtime saw it end or fail to start.
fn last_words(member: &RuntimeMember) -> String {
    let report = member.report.as_ref();
    report
        .and_then(|r| r.etcd_down.as_ref().map(|d| d.exit.clone()))
        .or_else(|| report.map(|r| r.last_error.clone()))
        .filter(|e| !e.is_empty())
        .or_else(|| (!member.last_exit.is_empty()).then(|| member.last_exit.clone()))
        .unwrap_or_else(|| "no error reported".to_string())
}

/// Why a dead member is dead, for people.
fn dead_reason(member: &RuntimeMember, now: UnixMillis, dead_after: i64) -> String {
    if member.data == MemberData::Gone {
        return "its process is gone and so is its data".to_string();
    }
    if member.running
        && let Some(down) = member.report.as_ref().and_then(|r| r.etcd_down.as_ref())
    {
        return format!(
            "its etcd keeps exiting on its data, {}s since its first exit (dead after {}s): {}",
            seconds(now.saturating_sub(down.since)),
            seconds(dead_after),
            down.exit
        );
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
        self.runtime.upgrade.is_some()
            || self.reported_phase() == Some(ReportedPhase::HandedOff)
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

/// What the rules look at besides the spec, computed once: the members joined with etcd's
/// list and their reports. The rules that hold whatever the spec says (a member down with
/// its data is started again on it) need nothing more, so they run even while the spec is
/// refused.
struct Members<'a> {
    observed: &'a Observed,
    /// By ordinal.
    members: Vec<MemberView<'a>>,
    /// etcd entries no runtime member is.
    orphans: Vec<&'a EtcdMember>,
    voters: usize,
    healthy_voters: usize,
}

/// Everything the rules look at: the members, and the spec they are held to.
struct View<'a> {
    cluster: Members<'a>,
    spec: &'a ValidSpec,
}

/// The rules of a valid spec read the members as their own.
impl<'a> std::ops::Deref for View<'a> {
    type Target = Members<'a>;

    fn deref(&self) -> &Members<'a> {
        &self.cluster
    }
}

impl<'a> View<'a> {
    fn new(observed: &'a Observed, spec: &'a ValidSpec) -> Self {
        Self {
            cluster: Members::new(observed),
            spec,
        }
    }
}

impl<'a> Members<'a> {
    fn new(observed: &'a Observed) -> Self {
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
                    healthy: is_healthy(runtime, now, policy),
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
            members,
            orphans,
            voters,
            healthy_voters,
        }
    }

    /// Rule 4: the first member down with its data whose backoff has passed, leaving out
    /// those `replaced` says are replaced instead.
    fn restart_down(&self, replaced: impl Fn(&MemberView<'_>) -> bool) -> Option<Step> {
        let now = self.observed.now;
        let due = |m: &&MemberView<'_>| {
            let since = m.runtime.down_since.unwrap_or(now);
            now.saturating_sub(since) >= restart_backoff_ms(m.runtime.restarts)
        };
        let m = self
            .members
            .iter()
            .filter(|m| m.restartable() && !replaced(m))
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

    /// While the spec is refused nothing changes but what heals: a member down with its
    /// data is started again on it (dead or not: nothing replaces it meanwhile), and one
    /// waiting out its backoff is looked at again soon.
    fn refused(&self, message: String) -> Step {
        let wanted = self.observed.spec.as_ref().ok().map(|spec| spec.version);
        if let Some((action, _)) = self.roll_back(wanted, true) {
            return (action, Phase::Invalid);
        }
        if let Some((action, _)) = self.restart_down(|_| false) {
            return (action, Phase::Invalid);
        }
        if let Some(m) = self.members.iter().find(|m| m.restartable()) {
            return wait(WaitReason::MemberDown(m.name().to_string()), Phase::Invalid);
        }
        (Action::RefuseSpec { message }, Phase::Invalid)
    }

    /// Rule 4a: an upgrade (or rollback) step under way whose member is not healthy on the
    /// step's version. Its member is restarted on the version it last ran healthy (its own
    /// data, no handoff: its etcd does not serve) once the deadline has passed (the upgrade
    /// failed) or when `wanted`, the spec's version, is no longer the step's (unless the
    /// spec is `refused`: its version moves nothing). A step whose
    /// restart never reached the runtime (the coordinator stopped between the record and
    /// the restart) is carried on instead, while its deadline runs. No membership change,
    /// so a lost quorum (a one-member cluster) does not hold it back; a grant in flight
    /// does.
    fn roll_back(&self, wanted: Option<EtcdVersion>, refused: bool) -> Option<Step> {
        if self.observed.grant.is_some() {
            return None;
        }
        let (now, policy) = (self.observed.now, &self.observed.policy);
        self.members.iter().find_map(|m| {
            let step = m.runtime.upgrade?;
            if m.healthy || m.runtime.data == MemberData::Gone {
                return None;
            }
            let expired = now.saturating_sub(step.at) >= policy.upgrade_deadline_ms;
            let unwanted = wanted.is_some_and(|v| v != step.to);
            let moved = m.runtime.version == step.to;
            let reported_healthy = m.runtime.report.as_ref().is_some_and(|r| r.healthy);
            // A rollback whose restart never reached the runtime is carried on however long
            // ago it was decided (its deadline counts from the restart, recorded again).
            if !moved && !reported_healthy && (step.rollback || (!unwanted && !expired)) {
                // Handed off (or stopped), the restart on the new version not made.
                let action = if step.rollback {
                    Action::RollBackMember {
                        name: m.name().to_string(),
                        to: step.to,
                        from: m.runtime.version,
                        failure: None,
                    }
                } else {
                    Action::UpgradeMember {
                        name: m.name().to_string(),
                        to: step.to,
                    }
                };
                return Some((action, Phase::Upgrading));
            }
            let back_to = step.last_healthy?;
            // A refused spec's version moves nothing: only the deadline does then.
            if step.rollback || back_to == step.to || !(expired || (unwanted && !refused)) {
                return None;
            }
            // Failed only if it was restarted on the new version and the spec still asks
            // for it.
            let failure = (moved && !unwanted).then(|| {
                format!(
                    "not healthy on {} within {} s of its restart: {}",
                    step.to,
                    policy.upgrade_deadline_ms / 1000,
                    last_words(m.runtime)
                )
            });
            Some((
                Action::RollBackMember {
                    name: m.name().to_string(),
                    to: back_to,
                    from: step.to,
                    failure,
                },
                Phase::Upgrading,
            ))
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
}

impl<'a> View<'a> {
    fn decide(&self) -> Step {
        let observed = self.observed;
        // An abandon decided before a restart is carried through before anything else.
        if !observed.abandoning.is_empty() {
            return (
                Action::AbandonBootstrap {
                    names: observed.abandoning.clone(),
                    reason: "the abandon decided earlier is carried through".to_string(),
                },
                Phase::Creating,
            );
        }
        if observed.members.is_empty() && observed.etcd_members.is_none() {
            if let Some(Err(message)) = &observed.restore {
                return (
                    Action::RefuseSpec {
                        message: message.clone(),
                    },
                    Phase::Invalid,
                );
            }
            // A cluster that was created and has no member left: never an empty bootstrap
            // (whatever it acknowledged would be gone without a word). A restore decided
            // and not done goes on with a new seed; under `Restore` it comes back from its
            // latest verified backup; otherwise nothing is created over it.
            if observed.created && observed.restore.is_none() {
                return self
                    .restore_from_backup(Vec::new(), Vec::new())
                    .unwrap_or_else(|| {
                        wait(
                            WaitReason::QuorumLostForGood {
                                lost: Vec::new(),
                                survivors: Vec::new(),
                                policy: self.spec.quorum_loss,
                                no_backup: None,
                            },
                            Phase::Failed,
                        )
                    });
            }
            // Several members from nothing: together, as etcd's static bootstrap. A restore
            // has one seed that restores, then grows by learners.
            if self.spec.size > 1 && observed.restore.is_none() {
                return (
                    Action::CreateInitial {
                        names: self.new_member_names(self.spec.size as usize),
                        version: self.spec.version,
                    },
                    Phase::Creating,
                );
            }
            return (
                Action::CreateSeed {
                    name: self.new_member_name(),
                    version: self.spec.version,
                },
                Phase::Creating,
            );
        }
        // A bootstrap to abandon is not helped by starting one of its members again.
        let bootstrap = observed.bootstrap.as_ref().map(|b| self.bootstrap_step(b));
        if let Some(step @ (Action::AbandonBootstrap { .. }, _)) = bootstrap {
            return step;
        }
        if let Some(step) = self.roll_back(Some(self.spec.version), false) {
            return step;
        }
        if let Some((action, phase)) = self.restart_down(|m| self.replaced_instead(m)) {
            let phase = if bootstrap.is_some() {
                Phase::Creating
            } else {
                phase
            };
            return (action, phase);
        }
        if let Some(step) = bootstrap {
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
            .or_else(|| self.resume_handoff())
            .or_else(|| self.wait_for_unhealthy())
            .or_else(|| self.wait_for_defragmented())
            .or_else(|| self.alarms())
            .or_else(|| self.scale())
            .or_else(|| self.upgrade())
            .or_else(|| self.rotate_ca())
            .or_else(|| self.scheduled_defragment())
            .or_else(|| self.delete_kept())
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

    /// `n` never-used names in a row, from [`Self::new_member_name`] on.
    fn new_member_names(&self, n: usize) -> Vec<String> {
        let first = self.new_member_name();
        let cluster = &self.observed.cluster.name;
        let ordinal = member_ordinal(cluster, &first).unwrap_or(self.observed.next_ordinal);
        (0..n as u32)
            .map(|i| member_name(cluster, ordinal.saturating_add(i)))
            .collect()
    }

    /// While the initial members bootstrap together: end the bootstrap once every one of
    /// them reports healthy (past the deadline or once one is gone, as soon as a quorum of
    /// them does); abandon it
    /// past the deadline, or at once when one of them is gone from the runtime, but only
    /// while no initial member was ever part of a formed cluster; else wait.
    fn bootstrap_step(&self, bootstrap: &BootstrapUnderWay) -> Step {
        let observed = self.observed;
        let of_set: Vec<&MemberView<'_>> = self
            .members
            .iter()
            .filter(|m| bootstrap.names.iter().any(|n| n == m.name()))
            .collect();
        let healthy = of_set
            .iter()
            .filter(|m| m.healthy && !m.runtime.report.as_ref().is_some_and(|r| r.learner))
            .count();
        let n = bootstrap.names.len();
        let past_deadline = bootstrap.began.is_some_and(|at| {
            observed.now.saturating_sub(at) >= observed.policy.bootstrap_deadline_ms
        });
        // Gone: the runtime has no such member, or has one down whose data is gone (a
        // member the durable record names and the runtime never made, or lost).
        let missing: Vec<&str> = bootstrap
            .names
            .iter()
            .filter(|n| {
                of_set
                    .iter()
                    .find(|m| m.name() == n.as_str())
                    .is_none_or(|m| !m.runtime.running && m.runtime.data == MemberData::Gone)
            })
            .map(String::as_str)
            .collect();
        // With a quorum healthy, a member past the deadline or gone is no reason to wait:
        // the ordinary rules take it from here (join it, or replace it).
        if healthy == n || ((past_deadline || !missing.is_empty()) && healthy >= quorum(n)) {
            return (Action::EndBootstrap, Phase::Creating);
        }
        let why = if !missing.is_empty() {
            Some(format!(
                "initial member {} is gone before the bootstrap ended",
                missing.join(", ")
            ))
        } else if past_deadline {
            Some(format!(
                "the initial members did not reach quorum within {} s ({healthy} of {n} healthy)",
                observed.policy.bootstrap_deadline_ms / 1000
            ))
        } else {
            None
        };
        if let Some(reason) = why {
            match self.ever_formed(&of_set) {
                None => {
                    return (
                        Action::AbandonBootstrap {
                            names: bootstrap.names.clone(),
                            reason,
                        },
                        Phase::Creating,
                    );
                }
                Some(evidence) => {
                    return wait(
                        WaitReason::Other(format!("{reason}, but it is not abandoned: {evidence}")),
                        Phase::Creating,
                    );
                }
            }
        }
        let waiting: Vec<&str> = of_set
            .iter()
            .filter(|m| !m.healthy)
            .map(|m| m.name())
            .collect();
        wait(
            WaitReason::Other(format!(
                "the {n} initial members are bootstrapping the cluster together ({healthy} healthy; waiting for {})",
                waiting.join(", ")
            )),
            Phase::Creating,
        )
    }

    /// Why an initial member may have been part of a formed cluster, which then may hold
    /// acknowledged writes and is never deleted: a member reports a member id (a sidecar
    /// learns it only once etcd serves clients, which it does only after the cluster
    /// formed) or health, or runs with no fresh report to say otherwise.
    fn ever_formed(&self, of_set: &[&MemberView<'_>]) -> Option<String> {
        let (now, policy) = (self.observed.now, &self.observed.policy);
        if self.observed.ever_served {
            return Some("the durable record holds the cluster id a member reported".into());
        }
        for m in of_set {
            match &m.runtime.report {
                Some(r) if r.member_id != 0 || r.healthy => {
                    return Some(format!("{} was part of the cluster", m.name()));
                }
                Some(r) if m.runtime.running && !is_fresh(r, now, policy) => {
                    return Some(format!("{}'s health report is stale", m.name()));
                }
                None if m.runtime.running => {
                    return Some(format!("{} has not reported yet", m.name()));
                }
                _ => {}
            }
        }
        None
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
            ChangeKind::Defragment => Phase::Running,
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
    /// A member whose sidecar reports it healthy, freshly, sees a leader: a quorum still
    /// serves somewhere (the Pods of nodes cut off from the API server are marked for
    /// deletion while they run on), whatever the runtime says of the members.
    fn quorum_seen(&self) -> bool {
        let (now, policy) = (self.observed.now, &self.observed.policy);
        self.members.iter().any(|m| {
            m.runtime.report.as_ref().is_some_and(|r| {
                r.healthy
                    && !r.learner
                    && is_fresh(r, now, policy)
                    && (m.runtime.running
                        || m.runtime.down_since.is_none_or(|down| r.observed_at > down))
            })
        })
    }

    fn quorum_lost_for_good(&self) -> Option<Step> {
        let etcd = self.observed.etcd_members.as_deref()?;
        // Never lost for good while a member sees a leader.
        if self.quorum_seen() {
            return None;
        }
        let (now, policy) = (self.observed.now, &self.observed.policy);
        let mut lost = Vec::new();
        let mut survivors: Vec<&MemberView<'a>> = Vec::new();
        for entry in etcd.iter().filter(|e| !e.is_learner) {
            let keeper = self.members.iter().find(|m| {
                m.entry.is_some_and(|x| x.id == entry.id)
                    && !m.left
                    && (m.runtime.running || m.runtime.data == MemberData::Intact || !m.dead)
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
        if let Some(step) = self.carry_on_force() {
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

    /// Once the restored cluster runs (nothing else to do), the survivors of the lost one,
    /// kept with their data until now, are deleted.
    fn delete_kept(&self) -> Option<Step> {
        (!self.observed.kept.is_empty()).then(|| {
            (
                Action::DeleteKept {
                    names: self.observed.kept.clone(),
                },
                Phase::Recovering,
            )
        })
    }

    /// With `spec.recovery.quorumLoss: Restore`, the way back once quorum is lost for good:
    /// the cluster created again from the latest verified backup, or a wait saying why not.
    fn restore_from_backup(&self, lost: Vec<String>, survivors: Vec<Survivor>) -> Option<Step> {
        if self.spec.quorum_loss != QuorumLossPolicy::Restore || self.quorum_seen() {
            return None;
        }
        Some(match &self.observed.recovery_backup {
            Some(Ok(backup)) => {
                let (keep, discard): (Vec<&RuntimeMember>, Vec<&RuntimeMember>) = self
                    .observed
                    .members
                    .iter()
                    .partition(|m| m.data == MemberData::Intact);
                let names = |ms: Vec<&RuntimeMember>| ms.iter().map(|m| m.name.clone()).collect();
                (
                    Action::RestoreCluster {
                        backup: backup.clone(),
                        seed: self.new_member_name(),
                        version: self.spec.version,
                        discard: names(discard),
                        keep: names(keep),
                        lost,
                    },
                    Phase::Recovering,
                )
            }
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

    /// A forced new cluster decided earlier and not known to be done, its survivor running
    /// and no member seeing a leader: carried through, from the same survivor.
    fn carry_on_force(&self) -> Option<Step> {
        let pending = self.observed.pending_force.as_ref()?;
        if self.spec.quorum_loss != QuorumLossPolicy::ForceNewCluster || self.quorum_seen() {
            return None;
        }
        self.members
            .iter()
            .find(|m| m.name() == pending.name && m.runtime.running)?;
        Some((
            Action::ForceNewCluster {
                name: pending.name.clone(),
                raft_index: pending.raft_index,
                revision: pending.revision,
                lost: pending.lost.clone(),
            },
            Phase::Recovering,
        ))
    }

    /// Rule 5: runtime members exist but no member answered etcd's member-list read.
    /// Runtime members stand in for voters, since etcd cannot say who votes.
    fn unformed(&self) -> Step {
        if let Some(step) = self.carry_on_force() {
            return step;
        }
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
            // Every member's data gone: quorum cannot come back; nothing is created over
            // the cluster (unless the spec says how to recover, above).
            if self
                .members
                .iter()
                .all(|m| m.runtime.data == MemberData::Gone)
            {
                return wait(
                    WaitReason::QuorumLostForGood {
                        lost: self.members.iter().map(|m| m.name().to_string()).collect(),
                        survivors: Vec::new(),
                        policy: self.spec.quorum_loss,
                        no_backup: None,
                    },
                    Phase::Failed,
                );
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
                    hand_over: m.entry.is_some() && m.is_leader(),
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
                    hand_over: false,
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

    /// Rule 8: a member that left keeps nothing worth having (its data is wiped).
    fn delete_left(&self) -> Option<Step> {
        let m = self.members.iter().find(|m| m.left)?;
        let report = m.runtime.report.as_ref()?;
        Some(if report.phase == ReportedPhase::Removed {
            (
                Action::DeleteRuntimeMember {
                    name: m.name().to_string(),
                    reason: "it left the cluster (its sidecar reports it removed)".to_string(),
                    hand_over: false,
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
                    hand_over: false,
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
        let joiner = self
            .members
            .iter()
            .find(|m| m.is_learner())
            .or_else(|| {
                self.members
                    .iter()
                    .find(|m| m.entry.is_none() && !m.dead && !m.left)
            })
            .or_else(|| {
                // A voter whose sidecar still says it joins: promoted, its grant given back,
                // its own end of the join not seen yet. The next change waits for it.
                self.members.iter().find(|m| {
                    m.is_voter()
                        && m.runtime.running
                        && m.reported_phase() == Some(ReportedPhase::Joining)
                })
            })?;
        // A learner in the cluster's list whose sidecar reports (freshly) that it is past
        // its join: its join was interrupted between the add and the promotion. No grant
        // is in flight (checked before), so nobody is promoting it: finish it.
        let (now, policy) = (self.observed.now, &self.observed.policy);
        if joiner.is_learner()
            && joiner.runtime.running
            && joiner.runtime.report.as_ref().is_some_and(|r| {
                r.phase == ReportedPhase::Running && r.learner && is_fresh(r, now, policy)
            })
        {
            return Some((
                Action::FinishJoin {
                    name: joiner.name().to_string(),
                },
                self.growth_phase(),
            ));
        }
        Some(wait(
            WaitReason::MemberJoining(joiner.name().to_string()),
            self.growth_phase(),
        ))
    }

    /// A member whose sidecar says it handed off (its etcd stopped for an upgrade) after
    /// the last restart of its upgrade step, if any: the coordinator that asked stopped
    /// before restarting it. It is restarted on the spec's version now, its handoff not
    /// asked again. Not a membership change, and the member is down already: no quorum is
    /// at stake.
    fn resume_handoff(&self) -> Option<Step> {
        let (now, policy) = (self.observed.now, &self.observed.policy);
        let m = self.members.iter().find(|m| {
            m.runtime.running
                && m.runtime.report.as_ref().is_some_and(|r| {
                    r.phase == ReportedPhase::HandedOff
                        && is_fresh(r, now, policy)
                        && m.runtime.upgrade.is_none_or(|step| r.observed_at > step.at)
                })
        })?;
        Some((
            Action::UpgradeMember {
                name: m.name().to_string(),
                to: self.spec.version,
            },
            Phase::Upgrading,
        ))
    }

    /// Rule 10: a running voter whose health is bad or unknown blocks every change; it is
    /// never removed for it.
    fn wait_for_unhealthy(&self) -> Option<Step> {
        let m = self.members.iter().find(|m| m.is_voter() && !m.healthy)?;
        // Restarted on another version by an upgrade step: no other step until it reports
        // healthy on it.
        let disk_full = m
            .runtime
            .report
            .as_ref()
            .is_some_and(|r| r.alarms.contains(&MemberAlarm::DiskFull));
        let reason = match m.runtime.upgrade {
            Some(step) => WaitReason::Upgrading {
                member: m.name().to_string(),
                to: step.to,
            },
            None if disk_full => WaitReason::Alarmed {
                alarm: MemberAlarm::DiskFull,
                members: vec![m.name().to_string()],
            },
            None => WaitReason::Unhealthy(m.name().to_string()),
        };
        Some(wait(reason, m.trouble_phase()))
    }

    /// Rule 11b, first part: a member just defragmented must report healthy again (a report
    /// made after the defragmentation) before any other step.
    fn wait_for_defragmented(&self) -> Option<Step> {
        let m = self.members.iter().find(|m| {
            m.runtime.defragmented_at.is_some_and(|at| {
                m.runtime
                    .report
                    .as_ref()
                    .is_none_or(|r| r.observed_at < at || !r.healthy)
            })
        })?;
        Some(wait(
            WaitReason::Defragmenting(m.name().to_string()),
            Phase::Running,
        ))
    }

    /// The members whose fresh report carries `alarm`.
    fn alarmed(&self, alarm: MemberAlarm) -> Vec<&MemberView<'a>> {
        let (now, policy) = (self.observed.now, &self.observed.policy);
        self.members
            .iter()
            .filter(|m| {
                m.runtime.running
                    && m.runtime
                        .report
                        .as_ref()
                        .is_some_and(|r| is_fresh(r, now, policy) && r.alarms.contains(&alarm))
            })
            .collect()
    }

    /// Rule 11b. By now every voter is healthy (an alarm is not ill health).
    fn alarms(&self) -> Option<Step> {
        let names = |ms: &[&MemberView<'_>]| -> Vec<String> {
            ms.iter().map(|m| m.name().to_string()).collect()
        };
        let corrupt = self.alarmed(MemberAlarm::Corrupt);
        if !corrupt.is_empty() {
            return Some(wait(
                WaitReason::Alarmed {
                    alarm: MemberAlarm::Corrupt,
                    members: names(&corrupt),
                },
                Phase::Degraded,
            ));
        }
        let nospace = self.alarmed(MemberAlarm::NoSpace);
        if nospace.is_empty() {
            return None;
        }
        if !self.spec.maintenance.recover_nospace {
            return Some(wait(
                WaitReason::Alarmed {
                    alarm: MemberAlarm::NoSpace,
                    members: names(&nospace),
                },
                Phase::Degraded,
            ));
        }
        let voters: Vec<&MemberView<'a>> = self.members.iter().filter(|m| m.is_voter()).collect();
        let revision = voters
            .iter()
            .filter_map(|m| m.runtime.report.as_ref().map(|r| r.revision))
            .max()
            .unwrap_or(0);
        // Leader first for the cluster-wide steps: it is the one certain to be current.
        let any = voters
            .iter()
            .min_by_key(|m| (!m.is_leader(), m.runtime.ordinal))
            .map(|m| m.name().to_string())?;
        let record = &self.observed.maintenance;
        let compacted_at = match record.compacted {
            Some((compacted, at)) if compacted >= revision => at,
            _ => {
                return Some((
                    Action::Compact {
                        name: any,
                        revision,
                    },
                    Phase::Recovering,
                ));
            }
        };
        if let Some(m) = self
            .next_to_defragment(|m| m.runtime.defragmented_at.is_none_or(|at| at < compacted_at))
        {
            return Some((
                Action::Defragment {
                    name: m.name().to_string(),
                    reason: format!(
                        "NOSPACE on {}: freeing the space compacted at revision {revision}",
                        names(&nospace).join(", ")
                    ),
                },
                Phase::Recovering,
            ));
        }
        if record.disarmed_at.is_none_or(|at| at < compacted_at) {
            return Some((Action::DisarmAlarms { name: any }, Phase::Recovering));
        }
        Some(wait(
            WaitReason::NoSpaceAfterRecovery(names(&nospace)),
            Phase::Degraded,
        ))
    }

    /// The next member to defragment among those `pending`: voters, followers first by
    /// ordinal, the leader last; learners are left alone.
    fn next_to_defragment(
        &self,
        pending: impl Fn(&MemberView<'a>) -> bool,
    ) -> Option<&MemberView<'a>> {
        self.members
            .iter()
            .filter(|m| m.is_voter() && m.healthy && pending(m))
            .min_by_key(|m| (m.is_leader(), m.runtime.ordinal))
    }

    /// Rule 15: a scheduled round defragments the members at or above the threshold that
    /// were not defragmented since the round began.
    fn scheduled_defragment(&self) -> Option<Step> {
        let round = self.observed.maintenance.defrag_round?;
        let threshold = self.spec.maintenance.defrag_percent?;
        let m = self.next_to_defragment(|m| {
            m.runtime.defragmented_at.is_none_or(|at| at < round)
                && m.runtime
                    .report
                    .as_ref()
                    .is_some_and(|r| r.fragmentation_percent() >= threshold)
        })?;
        let percent = m
            .runtime
            .report
            .as_ref()
            .map_or(0, MemberReport::fragmentation_percent);
        Some((
            Action::Defragment {
                name: m.name().to_string(),
                reason: format!(
                    "scheduled: {percent}% of its backend is free pages (threshold {threshold}%)"
                ),
            },
            Phase::Running,
        ))
    }

    /// Rules 11 and 12. By now every voter is a healthy runtime member.
    fn scale(&self) -> Option<Step> {
        let size = usize::try_from(self.spec.size).unwrap_or(usize::MAX);
        if self.voters < size {
            return Some((
                Action::CreateMember {
                    name: self.new_member_name(),
                    version: self.member_version(),
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
        let (now, dead_after) = (self.observed.now, self.observed.policy.dead_after_ms);
        Some(match leaving {
            Some(m)
                if m.entry
                    .is_some_and(|e| self.removal_keeps_quorum(e, m.healthy)) =>
            {
                match (self.observed.leave_unreachable.get(m.name()), m.entry) {
                    // Its sidecar cannot be asked: the coordinator removes it from etcd
                    // itself, as it would a dead member (quorum checked all the same).
                    (Some(since), Some(entry)) if now.saturating_sub(*since) >= dead_after => (
                        Action::RemoveDeadMember {
                            name: m.name().to_string(),
                            member_id: entry.id,
                            reason: format!(
                                "scale down: its sidecar has not been reachable to leave for {}s (dead after {}s); removed from etcd directly",
                                seconds(now.saturating_sub(*since)),
                                seconds(dead_after)
                            ),
                        },
                        Phase::Scaling,
                    ),
                    _ => (
                        Action::AskToLeave {
                            name: m.name().to_string(),
                        },
                        Phase::Scaling,
                    ),
                }
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

    /// The upgrade to the spec's version that stopped, while the spec still asks for it.
    fn failed_upgrade(&self) -> Option<&UpgradeFailure> {
        self.observed
            .upgrade_failed
            .as_ref()
            .filter(|f| f.to == self.spec.version)
    }

    /// The version a new member runs: the spec's, except while an upgrade to it stopped
    /// (a replacement on a version that did not come back healthy would fail the same
    /// way): then the version the failed member was rolled back to.
    fn member_version(&self) -> EtcdVersion {
        self.failed_upgrade()
            .map_or(self.spec.version, |failure| failure.back_to)
    }

    /// Rule 13: followers first, the leader last (its sidecar moves leadership to an
    /// up-to-date voter during the handoff). Not while an upgrade to the spec's version
    /// stopped.
    fn upgrade(&self) -> Option<Step> {
        let to = self.spec.version;
        let m = self
            .members
            .iter()
            .filter(|m| m.is_voter() && running_version(m.runtime) != to)
            .min_by_key(|m| (m.is_leader(), m.runtime.ordinal))?;
        if let Some(failure) = self.failed_upgrade() {
            return Some(wait(
                WaitReason::UpgradeFailed(failure.clone()),
                Phase::Degraded,
            ));
        }
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
mod tests;
