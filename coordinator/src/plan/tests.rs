//! The planner's table tests: each builds a [`Situation`] one fact at a time and checks the
//! one action and the phase planned. Every plan made here is also held to the safety
//! invariants ([`oracle`]); [`world`] plays a cluster's whole life step by step.

use etcd_operator::validate::SpecError;

use super::*;

mod oracle;
use oracle::check_invariants;
mod ca_rotation;
mod disk;
mod world;

const CLUSTER: &str = "demo";
const NOW: UnixMillis = 1_000_000;
const V34: EtcdVersion = EtcdVersion::new(3, 4, 45);
const V35: EtcdVersion = EtcdVersion::new(3, 5, 34);
const V36: EtcdVersion = EtcdVersion::new(3, 6, 15);
const DISK_FULL_EXIT: &str = "etcd exited (exit status: 1: failed to commit tx: write /d/member/snap/db: no space left on device); starting it again";
const BAD_WAL_EXIT: &str =
    "etcd exited (exit status: 1: failed to repair WAL: unexpected EOF); starting it again";

fn name(ordinal: u32) -> String {
    member_name(CLUSTER, ordinal)
}

fn id(ordinal: u32) -> u64 {
    0x1000 + u64::from(ordinal)
}

fn v(text: &str) -> EtcdVersion {
    text.parse().unwrap()
}

/// An upgrade step from 3.5.34 to 3.6.15 begun at `at`.
fn step_to_36(at: UnixMillis) -> UpgradeStep {
    UpgradeStep {
        at,
        to: V36,
        last_healthy: Some(V35),
        rollback: false,
    }
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
                maintenance: etcd_operator::validate::Maintenance::default(),
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
            maintenance: MaintenanceRecord::default(),
            bootstrap: None,
            created: false,
            ever_served: false,
            pending_force: None,
            abandoning: Vec::new(),
            kept: Vec::new(),
            upgrade_failed: None,
            ca: Default::default(),
            leave_unreachable: Default::default(),
            now: NOW,
            policy: Policy::default(),
        })
    }

    /// The durable record says the cluster was created.
    fn created(mut self) -> Self {
        self.0.created = true;
        self
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
            upgrade: None,
            last_exit: String::new(),
            defragmented_at: None,
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
            alarms: Vec::new(),
            db_size: 0,
            db_size_in_use: 0,
            etcd_down: None,
            last_error: String::new(),
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

    /// A learner whose sidecar is past its join (stopped between the add and the
    /// promotion, then started again on its data).
    fn stuck_learner(mut self, ordinal: u32) -> Self {
        let mut report = Self::healthy_report(ordinal, true);
        report.phase = ReportedPhase::Running;
        self.add(ordinal, Some(report));
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
                alarms: Vec::new(),
                db_size: 0,
                db_size_in_use: 0,
                etcd_down: None,
                last_error: String::new(),
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
    fn crash_looping(mut self, ordinal: u32, restarts: u32, failing_ms: i64, down_ms: i64) -> Self {
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

    /// etcd raised `alarm` on the member.
    /// Its sidecar runs and reports (freshly) that etcd has kept exiting for `ms`, the
    /// last time as `exit` says.
    fn etcd_exiting(mut self, ordinal: u32, ms: i64, exit: &str) -> Self {
        let r = self.report(ordinal);
        r.healthy = false;
        r.leader = false;
        r.phase = ReportedPhase::Restarting;
        r.etcd_down = Some(EtcdDown {
            since: NOW - ms,
            exit: exit.to_string(),
        });
        self
    }

    /// Its etcd has kept exiting for `ms` because its data volume is full.
    fn disk_full(self, ordinal: u32, ms: i64) -> Self {
        self.etcd_exiting(ordinal, ms, DISK_FULL_EXIT)
            .alarm(ordinal, MemberAlarm::DiskFull)
    }

    fn alarm(mut self, ordinal: u32, alarm: MemberAlarm) -> Self {
        self.report(ordinal).alarms.push(alarm);
        self
    }

    /// `spec.maintenance` is set (with a defragmentation threshold when given).
    fn maintenance(mut self, defrag_percent: Option<u32>) -> Self {
        self.spec_mut().maintenance = etcd_operator::validate::Maintenance {
            recover_nospace: true,
            defrag_percent,
        };
        self
    }

    /// The coordinator compacted to `revision` `ago` ms before now.
    fn compacted(mut self, revision: i64, ago: i64) -> Self {
        self.0.maintenance.compacted = Some((revision, NOW - ago));
        self
    }

    /// The coordinator defragmented the member `ago` ms before now.
    fn defragmented(mut self, ordinal: u32, ago: i64) -> Self {
        self.member(ordinal).defragmented_at = Some(NOW - ago);
        self
    }

    fn disarmed(mut self, ago: i64) -> Self {
        self.0.maintenance.disarmed_at = Some(NOW - ago);
        self
    }

    /// The member's backend: `size` bytes, `in_use` of them in use.
    fn backend(mut self, ordinal: u32, size: i64, in_use: i64) -> Self {
        let r = self.report(ordinal);
        r.db_size = size;
        r.db_size_in_use = in_use;
        self
    }

    fn defrag_round(mut self, ago: i64) -> Self {
        self.0.maintenance.defrag_round = Some(NOW - ago);
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
            "no member, no cluster, size 3: the three initial members together",
            Situation::empty(3),
            Action::CreateInitial {
                names: (0..3).map(name).collect(),
                version: V36,
            },
            Phase::Creating,
        ),
        (
            "no member, no cluster, size 1: the seed",
            Situation::empty(1),
            Action::CreateSeed {
                name: name(0),
                version: V36,
            },
            Phase::Creating,
        ),
        (
            "no member, no cluster, a restore asked for: the seed that restores",
            Situation::empty(3).restore(Ok("b-1")),
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
            "promoted, its grant given back, its sidecar not yet past its join: the next waits",
            {
                let mut s = Situation::healthy(4).size(5);
                s.report(3).phase = ReportedPhase::Joining;
                s
            },
            waiting(WaitReason::MemberJoining(name(3))),
            Phase::Scaling,
        ),
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
                hand_over: false,
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
                hand_over: false,
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
        "etcd lists it but the runtime has no such member (its pod or process is gone)".to_string();
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
                reason: "not running for 60s (dead after 15s) and not in etcd's member list".into(),
                hand_over: false,
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
fn a_member_whose_sidecar_reports_it_healthy_since_it_went_down_is_never_dead() {
    // A Pod marked Terminating while its node is cut off from the API server counts as
    // down; its etcd serves on, and its sidecar still reports it healthy.
    let reporting = |s: Situation, ordinal: u32, ago: i64| {
        let mut s = s;
        let r = s.report(ordinal);
        r.healthy = true;
        r.observed_at = NOW - ago;
        s
    };
    assert_cases(vec![
        (
            "down past dead-after, its sidecar reporting it healthy a moment ago: not removed",
            reporting(Situation::healthy(3).dead(2), 2, 500),
            waiting(WaitReason::MemberDown(name(2))),
            Phase::Degraded,
        ),
        (
            "its data reported gone, its sidecar reporting it healthy since: not removed",
            reporting(Situation::healthy(3).wiped(2).down_for(2, 60_000), 2, 500),
            waiting(WaitReason::MemberDown(name(2))),
            Phase::Degraded,
        ),
        (
            "down past dead-after, its last report older than its going down: removed",
            Situation::healthy(3).dead(2),
            Action::RemoveDeadMember {
                name: name(2),
                member_id: 4098,
                reason: "not running for 60s (dead after 15s)".into(),
            },
            Phase::Recovering,
        ),
        (
            "down past dead-after, reported healthy since, but the report went stale: removed",
            reporting(Situation::healthy(3).dead(2), 2, 30_000),
            Action::RemoveDeadMember {
                name: name(2),
                member_id: 4098,
                reason: "not running for 60s (dead after 15s)".into(),
            },
            Phase::Recovering,
        ),
    ]);
}

#[test]
fn a_quorum_its_sidecars_still_see_is_never_restored_over_or_forced() {
    // Two nodes cut off from the API server: their Pods (no claims) marked for deletion,
    // counted down with their data going; their sidecars still report them healthy, each
    // seeing a leader, since.
    let cut_off = |policy: QuorumLossPolicy| {
        let mut s = Situation::healthy(3)
            .wiped(1)
            .wiped(2)
            .quorum_loss(policy)
            .recovery_backup(Ok("demo-20261201T100000Z-r400"));
        for o in [1, 2] {
            s.member(o).down_since = Some(NOW - 20_000);
            let r = s.report(o);
            r.healthy = true;
            r.observed_at = NOW - 500;
        }
        s
    };
    for policy in [QuorumLossPolicy::Restore, QuorumLossPolicy::ForceNewCluster] {
        let plan = cut_off(policy).plan();
        assert!(
            !matches!(
                plan.action,
                Action::RestoreCluster { .. } | Action::ForceNewCluster { .. }
            ),
            "{policy:?}: {:?}",
            plan.action
        );
    }
}

#[test]
fn a_forced_new_cluster_decided_before_is_carried_through_from_the_same_survivor() {
    // The survivor chosen, its etcd started again since without quorum: it serves nothing,
    // so etcd's member list cannot be read and it reports no raft index.
    let pending = PendingForce {
        name: name(0),
        raft_index: 900,
        revision: 400,
        lost: vec![name(1), name(2)],
    };
    let situation = |policy: QuorumLossPolicy| {
        let mut s = Situation::healthy(3)
            .wiped(1)
            .wiped(2)
            .unhealthy(0)
            .etcd_unreadable()
            .quorum_loss(policy);
        s.report(0).raft_index = 0;
        s.0.pending_force = Some(pending.clone());
        s
    };
    assert_cases(vec![
        (
            "ForceNewCluster: the force decided is carried through",
            situation(QuorumLossPolicy::ForceNewCluster),
            Action::ForceNewCluster {
                name: name(0),
                raft_index: 900,
                revision: 400,
                lost: vec![name(1), name(2)],
            },
            Phase::Recovering,
        ),
        (
            "the spec set back to Manual since: nothing is forced",
            situation(QuorumLossPolicy::Manual),
            waiting(WaitReason::QuorumLost {
                healthy: 0,
                voters: 3,
            }),
            Phase::Failed,
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
        // Gone with its data: nothing replaces it while the spec is refused.
        Situation::healthy(3).wiped(1),
    ] {
        let plan = situation.invalid().plan();
        assert_eq!(
            plan.action,
            Action::RefuseSpec {
                message: errors.to_string()
            }
        );
        assert_eq!(plan.phase, Phase::Invalid);
        assert_eq!(plan.refused, Some(errors.to_string()));
    }
}

/// A refusal freezes changes, never healing: a member whose process exited (local mode),
/// or whose Pod is gone while its claim stays (Kubernetes), is started again on its data
/// whatever the spec says. Two such exits under a refused spec would otherwise lose quorum.
#[test]
fn a_refused_spec_never_stops_a_member_coming_back_on_its_data() {
    let invalid = SpecErrors(vec![SpecError::SizeTooSmall(0)]).to_string();
    let downgrade = check_version_step(V36, V35, false).unwrap_err().to_string();
    let looping = "it exited again after 4 restarts; its data is intact";
    let cases = vec![
        (
            "an invalid spec, a follower exited: started again at once",
            Situation::healthy(3).crashed(1).invalid(),
            restart(1, FIRST_EXIT),
            &invalid,
        ),
        (
            "a downgrade refused, the leader exited: the same",
            Situation::healthy(3).crashed(0).spec_version("3.5.34"),
            restart(0, FIRST_EXIT),
            &downgrade,
        ),
        (
            "a refused spec and two of three exited (quorum lost): each comes back",
            Situation::healthy(3).crashed(1).crashed(2).invalid(),
            restart(1, FIRST_EXIT),
            &invalid,
        ),
        (
            "past dead-after it is not replaced while refused: it is still restarted",
            Situation::healthy(3)
                .crash_looping(2, 4, 60_000, 10_000)
                .invalid(),
            restart(2, looping),
            &invalid,
        ),
        (
            "a one-member cluster whose member exited under a refused downgrade",
            Situation::healthy(1).crashed(0).spec_version("3.5.34"),
            restart(0, FIRST_EXIT),
            &downgrade,
        ),
        (
            "its backoff not passed yet: a wait, looked at again soon",
            Situation::healthy(3)
                .crash_looping(1, 3, 8_000, 2_000)
                .invalid(),
            waiting(WaitReason::MemberDown(name(1))),
            &invalid,
        ),
    ];
    for (what, situation, action, refused) in cases {
        let plan = situation.plan();
        assert_eq!(plan.action, action, "{what}");
        assert_eq!(plan.phase, Phase::Invalid, "{what}");
        assert_eq!(plan.refused.as_deref(), Some(refused.as_str()), "{what}");
        assert!(
            !plan.settled(),
            "{what}: a member down must be looked at again"
        );
    }
    // Refused by the caller (a TLS setting that cannot change, a version the runtime
    // cannot run): the same.
    let s = Situation::healthy(3).crashed(2);
    let plan = refuse(&s.0, "no binary for 3.6.15".into(), Vec::new());
    check_invariants(&s.0, &plan);
    assert_eq!(plan.action, restart(2, FIRST_EXIT));
    assert_eq!(plan.refused.as_deref(), Some("no binary for 3.6.15"));
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
    // Restarted on the new version by the upgrade step; its last report, received before
    // the restart, still says healthy on the old one (and is fresh): it says nothing of the
    // member as it runs now. Neither it nor the next member is upgraded until it reports
    // healthy on the new version.
    let upgrading = || {
        let mut s = from_35();
        s.member(0).version = V36;
        s.member(0).upgrade = Some(step_to_36(NOW + 1));
        s
    };
    let came_back = {
        let mut s = upgrading();
        s.member(0).upgrade = Some(step_to_36(NOW - 2_000));
        s.report(0).etcd_version = "3.6.15".into();
        s
    };
    let waiting_for_0 = waiting(WaitReason::Upgrading {
        member: name(0),
        to: V36,
    });
    assert_cases(vec![
        (
            "the first follower restarted, its old report still fresh: wait, upgrade nothing",
            upgrading(),
            waiting_for_0.clone(),
            Phase::Upgrading,
        ),
        (
            "the first follower restarted, healthy on the new version since: the next one",
            came_back,
            Action::UpgradeMember {
                name: name(2),
                to: V36,
            },
            Phase::Upgrading,
        ),
        (
            "the first follower restarted, unhealthy on the new version: wait for it",
            {
                let mut s = upgrading().unhealthy(0);
                s.member(0).upgrade = Some(step_to_36(NOW - 2_000));
                s.report(0).etcd_version = "3.6.15".into();
                s
            },
            waiting_for_0,
            Phase::Upgrading,
        ),
        (
            "the first follower handed off, not restarted (its coordinator stopped between the two): restarted now",
            handed_off.clone(),
            Action::UpgradeMember {
                name: name(0),
                to: V36,
            },
            Phase::Upgrading,
        ),
        (
            "the first follower handed off and restarted since (its old report still fresh): wait",
            {
                let mut s = handed_off;
                s.member(0).upgrade = Some(step_to_36(NOW - 500));
                s.report(0).observed_at = NOW - 1_000;
                s
            },
            waiting(WaitReason::Upgrading {
                member: name(0),
                to: V36,
            }),
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

const BAD_BINARY_EXIT: &str =
    "etcd exited (exit status: 1: cannot execute binary: exec format error); starting it again";

impl Situation {
    /// Member `ordinal` was restarted on 3.6.15 by an upgrade step `ago` ms ago (from
    /// 3.5.34, which it ran healthy), and its etcd has kept exiting since: a binary that
    /// cannot run on its host.
    fn failing_upgrade(mut self, ordinal: u32, ago: i64) -> Self {
        self = self.etcd_exiting(ordinal, ago - 1_000, BAD_BINARY_EXIT);
        let m = self.member(ordinal);
        m.version = V36;
        m.upgrade = Some(step_to_36(NOW - ago));
        self.report(ordinal).etcd_version = String::new();
        self
    }

    /// An upgrade to 3.6.15 stopped: `ordinal` was rolled back to 3.5.34.
    fn upgrade_failed(mut self, ordinal: u32) -> Self {
        self.0.upgrade_failed = Some(UpgradeFailure {
            member: name(ordinal),
            to: V36,
            back_to: V35,
            error: BAD_BINARY_EXIT.into(),
        });
        self
    }
}

fn roll_back(ordinal: u32, failure: Option<&str>) -> Action {
    Action::RollBackMember {
        name: name(ordinal),
        to: V35,
        from: V36,
        failure: failure.map(String::from),
    }
}

/// A member restarted on a new version that does not come back healthy on it within the
/// deadline is rolled back to the version it last ran, on its own data: never judged dead
/// and replaced meanwhile. The upgrade then stops (no other member is upgraded, new
/// members run the version rolled back to), and a spec set back is accepted for members
/// that never ran the new version.
#[test]
fn a_failed_upgrade_is_rolled_back_on_its_data_and_stops() {
    let from_35 = || Situation::healthy(3).all_run("3.5.34").leader(1);
    let failure = format!("not healthy on 3.6.15 within 120 s of its restart: {BAD_BINARY_EXIT}");
    let spec_set_back = || from_35().failing_upgrade(0, 30_000).spec_version("3.5.34");
    let image_pull = |ago: i64| {
        let mut s = from_35().down_for(0, ago - 1_000);
        let m = s.member(0);
        m.version = V36;
        m.upgrade = Some(step_to_36(NOW - ago));
        m.last_exit = "ImagePullBackOff: Back-off pulling image \"etcd:v3.6.15\"".into();
        s
    };
    let rolled_back = |ago: i64| {
        let mut s = from_35().failing_upgrade(0, ago).upgrade_failed(0);
        let m = s.member(0);
        m.version = V35;
        m.upgrade = Some(UpgradeStep {
            at: NOW - ago,
            to: V35,
            last_healthy: Some(V35),
            rollback: true,
        });
        s
    };
    assert_cases(vec![
        (
            "its etcd has kept exiting past dead-after, within the upgrade's deadline: waited on, not replaced",
            from_35().failing_upgrade(0, 60_000),
            waiting(WaitReason::Upgrading {
                member: name(0),
                to: V36,
            }),
            Phase::Upgrading,
        ),
        (
            "past the deadline: rolled back to 3.5.34, saying why",
            from_35().failing_upgrade(0, 130_000),
            roll_back(0, Some(&failure)),
            Phase::Upgrading,
        ),
        (
            "a one-member cluster (no member answers etcd's list): rolled back all the same",
            Situation::healthy(1)
                .all_run("3.5.34")
                .failing_upgrade(0, 130_000)
                .etcd_unreadable(),
            roll_back(0, Some(&failure)),
            Phase::Upgrading,
        ),
        (
            "the spec set back to 3.5.34 while it fails: accepted (it never ran 3.6.15), rolled back at once, no failure",
            spec_set_back(),
            roll_back(0, None),
            Phase::Upgrading,
        ),
        (
            "Kubernetes: its image cannot be pulled, within the deadline: waited on",
            image_pull(60_000),
            waiting(WaitReason::MemberDown(name(0))),
            Phase::Upgrading,
        ),
        (
            "Kubernetes: its image cannot be pulled, past the deadline: rolled back (the Pod's image and the claim with it)",
            image_pull(130_000),
            roll_back(
                0,
                Some(
                    "not healthy on 3.6.15 within 120 s of its restart: ImagePullBackOff: Back-off pulling image \"etcd:v3.6.15\"",
                ),
            ),
            Phase::Upgrading,
        ),
        (
            "a rollback past its own deadline is not rolled back again: the member is dead and replaced",
            rolled_back(130_000),
            Action::RemoveDeadMember {
                name: name(0),
                member_id: id(0),
                reason: format!(
                    "its etcd keeps exiting on its data, 129s since its first exit (dead after 15s): {BAD_BINARY_EXIT}"
                ),
            },
            Phase::Recovering,
        ),
        (
            "rolled back and healthy on 3.5.34 again: the upgrade stops, no other member is upgraded",
            from_35().upgrade_failed(0),
            waiting(WaitReason::UpgradeFailed(UpgradeFailure {
                member: name(0),
                to: V36,
                back_to: V35,
                error: BAD_BINARY_EXIT.into(),
            })),
            Phase::Degraded,
        ),
        (
            "the upgrade stopped: a new member runs the version rolled back to",
            from_35().upgrade_failed(0).size(4),
            Action::CreateMember {
                name: name(3),
                version: V35,
            },
            Phase::Scaling,
        ),
        (
            "the spec set back to 3.5.34 after the rollback: steady",
            from_35().upgrade_failed(0).spec_version("3.5.34"),
            Action::Steady,
            Phase::Running,
        ),
        (
            "the step recorded after the handoff, the restart not made (the coordinator stopped): carried on, even without quorum",
            {
                let mut s = Situation::healthy(1)
                    .all_run("3.5.34")
                    .reported_phase(0, ReportedPhase::HandedOff)
                    .unhealthy(0);
                s.member(0).upgrade = Some(step_to_36(NOW - 5_000));
                s.report(0).etcd_version = String::new();
                s
            },
            Action::UpgradeMember {
                name: name(0),
                to: V36,
            },
            Phase::Upgrading,
        ),
        (
            "a rollback recorded long ago, the restart not made (a grant left by a crash lapsed meanwhile): carried on, never replaced",
            {
                let mut s = rolled_back(130_000);
                s.member(0).version = V36;
                s
            },
            Action::RollBackMember {
                name: name(0),
                to: V35,
                from: V36,
                failure: None,
            },
            Phase::Upgrading,
        ),
        (
            "a rollback recorded, the restart not made: carried on",
            {
                let mut s = rolled_back(5_000);
                s.member(0).version = V36;
                s
            },
            Action::RollBackMember {
                name: name(0),
                to: V35,
                from: V36,
                failure: None,
            },
            Phase::Upgrading,
        ),
    ]);
    // Set back while a member that did run 3.6.15 healthy stays on it: refused (a minor
    // downgrade of that member), as before.
    let plan = from_35()
        .runs(2, "3.6.15")
        .failing_upgrade(0, 30_000)
        .spec_version("3.5.34")
        .plan();
    assert_eq!(
        plan.refused,
        Some(check_version_step(V36, V35, false).unwrap_err().to_string())
    );
    // Refused, the deadline passed: rolled back still (healing, not a change).
    let plan = from_35().failing_upgrade(0, 130_000).invalid().plan();
    assert_eq!(plan.action, roll_back(0, Some(&failure)));
    assert_eq!(plan.phase, Phase::Invalid);
    // While it fails, it counts at the version it last ran.
    let s = spec_set_back();
    assert_eq!(cluster_version(&s.0), Some(V35));
}

/// Scale-down asks the member to leave; one whose sidecar cannot be reached (its reports
/// still arrive healthy: the control path is cut one way) is asked again until it has not
/// been reachable for dead-after, then removed from etcd directly, quorum checked as for
/// any removal.
#[test]
fn a_leave_its_sidecar_cannot_be_asked_for_is_made_for_it() {
    let shrinking = || Situation::healthy(4).size(3);
    let unreachable = |ago: i64| {
        let mut s = shrinking();
        s.0.leave_unreachable.insert(name(3), NOW - ago);
        s
    };
    assert_cases(vec![
        (
            "asked to leave",
            shrinking(),
            Action::AskToLeave { name: name(3) },
            Phase::Scaling,
        ),
        (
            "unreachable for 5 s: asked again",
            unreachable(5_000),
            Action::AskToLeave { name: name(3) },
            Phase::Scaling,
        ),
        (
            "unreachable past dead-after: removed from etcd directly",
            unreachable(20_000),
            Action::RemoveDeadMember {
                name: name(3),
                member_id: id(3),
                reason: "scale down: its sidecar has not been reachable to leave for 20s (dead after 15s); removed from etcd directly".into(),
            },
            Phase::Scaling,
        ),
        (
            "another voter unhealthy: no removal, whatever the leave",
            unreachable(20_000).unhealthy(1),
            waiting(WaitReason::Unhealthy(name(1))),
            Phase::Degraded,
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
            "new initial members after the cluster was deleted",
            Situation::empty(3).next_ordinal(9),
            Action::CreateInitial {
                names: (9..12).map(name).collect(),
                version: V36,
            },
            Phase::Creating,
        ),
    ]);
}

impl Situation {
    /// The initial members 0..n bootstrapping together since `began_ago` ms, each in
    /// phase Bootstrapping with no member id yet (etcd serves no client before quorum).
    fn bootstrapping(n: u32, began_ago: Option<i64>) -> Self {
        let mut s = Self::empty(n);
        for o in 0..n {
            s = s.joiner(o).reported_phase(o, ReportedPhase::Bootstrapping);
        }
        s.0.bootstrap = Some(BootstrapUnderWay {
            names: (0..n).map(name).collect(),
            began: began_ago.map(|ago| NOW - ago),
        });
        s.grant(&name(0), ChangeKind::Bootstrap)
    }

    /// Initial member `ordinal` formed the cluster with others: etcd serves it, it knows
    /// a leader.
    fn formed(mut self, ordinal: u32) -> Self {
        *self.report(ordinal) = Self::healthy_report(ordinal, false);
        self.add_entry(ordinal, true, false);
        self
    }
}

/// The bootstrap ended with a quorum of its members (past its deadline) while the third
/// never started: etcd lists it, unnamed, as a voter of the static bootstrap.
fn straggler() -> Situation {
    let mut s = Situation::empty(3);
    s.0.etcd_members = Some(Vec::new());
    s = s.voter(0).voter(1).leader(0);
    s = s.joiner(2).reported_phase(2, ReportedPhase::Bootstrapping);
    s.add_entry(2, false, false);
    s
}

#[test]
fn a_straggler_after_the_bootstrap_ended_joins_or_is_replaced_when_dead() {
    // Once the straggler is dead, the unnamed entry it would have been is no one's.
    let remove_unnamed = Action::RemoveDeadMember {
        name: member_id_hex(id(2)),
        member_id: id(2),
        reason: "etcd lists it but the runtime has no such member (its pod or process is gone)"
            .into(),
    };
    assert_cases(vec![
        (
            "still starting: it is joining; nothing else changes",
            straggler(),
            waiting(WaitReason::MemberJoining(name(2))),
            Phase::Scaling,
        ),
        (
            "its process down after it wrote its WAL, not yet dead: started again on it",
            straggler().crashed_for(2, 2_000),
            Action::RestartMember {
                name: name(2),
                reason: "its process is gone and its data is intact".into(),
            },
            Phase::Degraded,
        ),
        (
            "its process down before it wrote anything: dead at once, its entry removed",
            straggler().wiped(2),
            remove_unnamed.clone(),
            Phase::Recovering,
        ),
        (
            "its etcd keeps exiting past dead-after: the entry it would have been is removed first",
            straggler().etcd_exiting(2, 60_000, BAD_WAL_EXIT),
            remove_unnamed.clone(),
            Phase::Recovering,
        ),
        (
            "then the runtime member goes, and a new ordinal takes its place",
            {
                let mut s = straggler().etcd_exiting(2, 60_000, BAD_WAL_EXIT);
                s.0.etcd_members.as_mut().unwrap().retain(|e| e.id != id(2));
                s
            },
            Action::DeleteRuntimeMember {
                name: name(2),
                reason: format!(
                    "its etcd keeps exiting on its data, 60s since its first exit (dead after 15s): {BAD_WAL_EXIT} and not in etcd's member list"
                ),
                hand_over: false,
            },
            Phase::Recovering,
        ),
    ]);
}

#[test]
fn initial_members_bootstrap_together_and_a_bootstrap_that_never_formed_is_begun_again() {
    let all: Vec<String> = (0..3).map(name).collect();
    let deadline = Policy::default().bootstrap_deadline_ms;
    let abandon = |reason: &str| Action::AbandonBootstrap {
        names: all.clone(),
        reason: reason.into(),
    };
    assert_cases(vec![
        (
            "created, no member told its role yet: wait, under the bootstrap's grant",
            Situation::bootstrapping(3, None),
            waiting(WaitReason::Other(format!(
                "the 3 initial members are bootstrapping the cluster together (0 healthy; waiting for {})",
                all.join(", ")
            ))),
            Phase::Creating,
        ),
        (
            "two of three formed a quorum, before the deadline: wait for the third",
            Situation::bootstrapping(3, Some(1_000)).formed(0).formed(1),
            waiting(WaitReason::Other(format!(
                "the 3 initial members are bootstrapping the cluster together (2 healthy; waiting for {})",
                name(2)
            ))),
            Phase::Creating,
        ),
        (
            "every initial member healthy: the bootstrap ends (its grant is given back)",
            Situation::bootstrapping(3, Some(1_000))
                .formed(0)
                .formed(1)
                .formed(2),
            Action::EndBootstrap,
            Phase::Creating,
        ),
        (
            "past the deadline with a quorum healthy: the bootstrap ends; the third is an ordinary member",
            Situation::bootstrapping(3, Some(deadline))
                .formed(0)
                .formed(1),
            Action::EndBootstrap,
            Phase::Creating,
        ),
        (
            "past the deadline, no member ever served: abandoned and begun again",
            Situation::bootstrapping(3, Some(deadline)),
            abandon("the initial members did not reach quorum within 60 s (0 of 3 healthy)"),
            Phase::Creating,
        ),
        (
            "past the deadline, one member crashed before it ever served: abandoned all the same",
            Situation::bootstrapping(3, Some(deadline)).crashed(2),
            abandon("the initial members did not reach quorum within 60 s (0 of 3 healthy)"),
            Phase::Creating,
        ),
        (
            "a member gone from the runtime before the cluster formed: abandoned at once",
            {
                let mut s = Situation::bootstrapping(3, Some(1_000));
                s.0.members.retain(|m| m.ordinal != 1);
                s
            },
            abandon(&format!(
                "initial member {} is gone before the bootstrap ended",
                name(1)
            )),
            Phase::Creating,
        ),
        (
            "a member gone, the others down without reports, the record holding the cluster id a member reported: never abandoned",
            {
                let mut s = Situation::bootstrapping(3, Some(1_000)).down(0).down(2);
                s.0.members.retain(|m| m.ordinal != 1);
                s.0.ever_served = true;
                for o in [0, 2] {
                    s.member(o).report = None;
                }
                s
            },
            waiting(WaitReason::Other(format!(
                "initial member {} is gone before the bootstrap ended, but it is not abandoned: the durable record holds the cluster id a member reported",
                name(1)
            ))),
            Phase::Creating,
        ),
        (
            "members the record names and the runtime never made (a coordinator stopped between the two): abandoned at once",
            {
                let mut s = Situation::bootstrapping(3, None);
                for ordinal in [1, 2] {
                    let m = s.member(ordinal);
                    m.running = false;
                    m.data = MemberData::Gone;
                    m.report = None;
                }
                s
            },
            abandon(&format!(
                "initial member {}, {} is gone before the bootstrap ended",
                name(1),
                name(2)
            )),
            Phase::Creating,
        ),
        (
            "a member gone after the other two formed a quorum: the bootstrap ends; it is replaced as any member is",
            {
                let mut s = Situation::bootstrapping(3, Some(1_000)).formed(0).formed(1);
                s.0.members.retain(|m| m.ordinal != 2);
                s
            },
            Action::EndBootstrap,
            Phase::Creating,
        ),
        (
            "a member gone, one formed: not abandoned (it served), not ended (no quorum)",
            {
                let mut s = Situation::bootstrapping(3, Some(1_000)).formed(0);
                s.0.members.retain(|m| m.ordinal != 2);
                s
            },
            waiting(WaitReason::Other(format!(
                "initial member {} is gone before the bootstrap ended, but it is not abandoned: {} was part of the cluster",
                name(2),
                name(0)
            ))),
            Phase::Creating,
        ),
        (
            "past the deadline, but one member knows its id (it served once): never abandoned",
            {
                let mut s = Situation::bootstrapping(3, Some(deadline));
                s.report(1).member_id = id(1);
                s
            },
            waiting(WaitReason::Other(format!(
                "the initial members did not reach quorum within 60 s (0 of 3 healthy), but it is not abandoned: {} was part of the cluster",
                name(1)
            ))),
            Phase::Creating,
        ),
        (
            "past the deadline, a running member's report is stale: never abandoned on silence",
            Situation::bootstrapping(3, Some(deadline)).stale(2),
            waiting(WaitReason::Other(format!(
                "the initial members did not reach quorum within 60 s (0 of 3 healthy), but it is not abandoned: {}'s health report is stale",
                name(2)
            ))),
            Phase::Creating,
        ),
        (
            "past the deadline, a running member never reported: never abandoned on silence",
            Situation::bootstrapping(3, Some(deadline)).unreported(0),
            waiting(WaitReason::Other(format!(
                "the initial members did not reach quorum within 60 s (0 of 3 healthy), but it is not abandoned: {} has not reported yet",
                name(0)
            ))),
            Phase::Creating,
        ),
        (
            "a member exits during the bootstrap: started again first",
            Situation::bootstrapping(3, Some(1_000)).crashed(1),
            Action::RestartMember {
                name: name(1),
                reason: "its process is gone and its data is intact".into(),
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
            alarms: Vec::new(),
            db_size: 0,
            db_size_in_use: 0,
            etcd_down: None,
            last_error: String::new(),
        }
    );
    let unset = proto::HealthReport::default();
    assert_eq!(MemberReport::from(&unset).phase, ReportedPhase::Starting);
    let exiting = proto::HealthReport {
        phase: proto::MemberPhase::Restarting as i32,
        etcd_failing_since_unix_ms: 900,
        last_error: DISK_FULL_EXIT.into(),
        alarms: vec![proto::Alarm::DiskFull as i32],
        ..Default::default()
    };
    let read = MemberReport::from(&exiting);
    assert_eq!(
        read.etcd_down,
        Some(EtcdDown {
            since: 900,
            exit: DISK_FULL_EXIT.into()
        })
    );
    assert_eq!(read.alarms, vec![MemberAlarm::DiskFull]);
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
                reason: "not back healthy 20s after its first exit, 4 restarts (dead after 15s)"
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
                hand_over: false,
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
                hand_over: false,
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
            "deleted on request: the runtime member goes, a follower at once",
            Situation::healthy(3).delete_asked(1),
            Action::DeleteRuntimeMember {
                name: name(1),
                reason: "deleted with its data on an operator's request".into(),
                hand_over: false,
            },
            Phase::Recovering,
        ),
        (
            "the leader deleted on request hands leadership over as it stops",
            Situation::healthy(3).delete_asked(0),
            Action::DeleteRuntimeMember {
                name: name(0),
                reason: "deleted with its data on an operator's request".into(),
                hand_over: true,
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
    let restore = |lost: Vec<String>, keep: Vec<String>, seed: u32| Action::RestoreCluster {
        backup: backup.into(),
        seed: name(seed),
        version: V36,
        discard: lost.clone(),
        keep,
        lost,
    };
    assert_cases(vec![
        (
            "Restore with a verified backup: the wiped go, the survivor is kept with its data, a new seed restores it",
            two_wiped.clone().recovery_backup(Ok(backup)),
            restore(vec![name(1), name(2)], vec![name(0)], 3),
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
            restore(vec![name(0), name(1), name(2)], Vec::new(), 3),
            Phase::Recovering,
        ),
        (
            "Restore, a restore interrupted after every member was deleted: restored, never an empty seed",
            Situation::empty(3)
                .next_ordinal(3)
                .created()
                .quorum_loss(QuorumLossPolicy::Restore)
                .recovery_backup(Ok(backup)),
            Action::RestoreCluster {
                backup: backup.into(),
                seed: name(3),
                version: V36,
                discard: Vec::new(),
                keep: Vec::new(),
                lost: Vec::new(),
            },
            Phase::Recovering,
        ),
        (
            "Restore, interrupted, and no backup to be found: wait, never an empty seed",
            Situation::empty(3)
                .next_ordinal(3)
                .created()
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
            "Restore, a new cluster (no ordinal handed out yet): an ordinary creation",
            Situation::empty(3).quorum_loss(QuorumLossPolicy::Restore),
            Action::CreateInitial {
                names: (0..3).map(name).collect(),
                version: V36,
            },
            Phase::Creating,
        ),
        (
            "Manual, every member wiped: nothing touched, what was lost named",
            Situation::healthy(3)
                .wiped(0)
                .wiped(1)
                .wiped(2)
                .etcd_unreadable(),
            waiting(WaitReason::QuorumLostForGood {
                lost: (0..3).map(name).collect(),
                survivors: Vec::new(),
                policy: QuorumLossPolicy::Manual,
                no_backup: None,
            }),
            Phase::Failed,
        ),
        (
            "Manual, a created cluster with no member left (every one gone with its data): nothing created over it",
            Situation::empty(3).next_ordinal(3).created(),
            waiting(WaitReason::QuorumLostForGood {
                lost: Vec::new(),
                survivors: Vec::new(),
                policy: QuorumLossPolicy::Manual,
                no_backup: None,
            }),
            Phase::Failed,
        ),
        (
            "ForceNewCluster, every member gone: nothing to force from, nothing created",
            Situation::empty(1)
                .next_ordinal(1)
                .created()
                .quorum_loss(QuorumLossPolicy::ForceNewCluster),
            waiting(WaitReason::QuorumLostForGood {
                lost: Vec::new(),
                survivors: Vec::new(),
                policy: QuorumLossPolicy::ForceNewCluster,
                no_backup: None,
            }),
            Phase::Failed,
        ),
        (
            "A restore decided and not done whose seed is gone: a new seed restores the same backup",
            Situation::empty(3)
                .next_ordinal(4)
                .created()
                .restore(Ok(backup)),
            Action::CreateSeed {
                name: name(4),
                version: V36,
            },
            Phase::Creating,
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

#[test]
fn an_interrupted_join_is_finished_by_the_planner() {
    let mut stale = Situation::healthy(3).size(4).stuck_learner(3);
    stale.report(3).observed_at = NOW - 60_000;
    assert_cases(vec![
        (
            "a learner whose sidecar is past its join: finish it",
            Situation::healthy(3).size(4).stuck_learner(3),
            Action::FinishJoin { name: name(3) },
            Phase::Scaling,
        ),
        (
            "a learner whose sidecar is still joining: wait",
            Situation::healthy(3).size(4).learner(3),
            waiting(WaitReason::MemberJoining(name(3))),
            Phase::Scaling,
        ),
        (
            "past its join, but the grant of a change is in flight: wait for it",
            Situation::healthy(3)
                .size(4)
                .stuck_learner(3)
                .grant(&name(3), ChangeKind::Add),
            waiting(WaitReason::ChangeInFlight(format!(
                "{} of {} (grant {CLUSTER}-7)",
                etcd_operator::grant::kind_name(ChangeKind::Add),
                name(3)
            ))),
            Phase::Scaling,
        ),
        (
            "past its join by a stale report: nothing is known of it now, wait",
            stale,
            waiting(WaitReason::MemberJoining(name(3))),
            Phase::Scaling,
        ),
    ]);
}
