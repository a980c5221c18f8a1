//! The safety invariants of DESIGN.md, judged from the observation alone (without the
//! planner's own helpers), and every generated situation (one to five voters in every state,
//! with or without something else going on) held to them.

use super::*;

fn runtime_of<'a>(observed: &'a Observed, entry: &EtcdMember) -> Option<&'a RuntimeMember> {
    observed.members.iter().find(|m| {
        m.report.as_ref().is_some_and(|r| r.member_id == entry.id)
            || (!entry.name.is_empty() && m.name == entry.name)
    })
}

/// Dead by the runtime's word alone (or, for a running sidecar, by its fresh report of an
/// etcd that keeps exiting, not for a full disk), judged without the planner's own helpers.
fn oracle_dead(observed: &Observed, member: &RuntimeMember) -> bool {
    let (now, policy) = (observed.now, &observed.policy);
    // A sidecar that reported the member healthy since the runtime saw it go down, and not
    // long ago, speaks for a member that serves.
    let healthy_since_down = member.report.as_ref().is_some_and(|r| {
        r.healthy
            && r.observed_at >= now - policy.report_stale_after_ms
            && member.down_since.is_none_or(|down| r.observed_at > down)
    });
    if healthy_since_down {
        return false;
    }
    // A failed upgrade is rolled back, never replaced, until its deadline.
    if member.data == MemberData::Intact
        && member.upgrade.is_some_and(|s| {
            s.at > now - policy.upgrade_deadline_ms || (s.rollback && member.version != s.to)
        })
    {
        return false;
    }
    if member.running {
        return member.report.as_ref().is_some_and(|r| {
            r.observed_at >= now - policy.report_stale_after_ms
                && !r.alarms.contains(&MemberAlarm::DiskFull)
                && r.etcd_down
                    .as_ref()
                    .is_some_and(|d| d.since <= now - policy.dead_after_ms)
        });
    }
    member.data == MemberData::Gone
        || member
            .failing_since
            .or(member.down_since)
            .is_some_and(|since| since <= now - policy.dead_after_ms)
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
pub(super) fn check_invariants(observed: &Observed, plan: &Plan) {
    let action = &plan.action;
    let context = || format!("{action:?} for {observed:#?}");
    if observed.spec.is_err() || plan.refused.is_some() {
        // A refusal freezes changes, never healing: nothing but a restart on data or the
        // rollback of a failed upgrade (held to their own rules below), and a member down
        // with its data whose backoff has passed is started again.
        assert!(
            plan.refused.is_some()
                && matches!(
                    action,
                    Action::RefuseSpec { .. }
                        | Action::RestartMember { .. }
                        | Action::RollBackMember { .. }
                        | Action::Wait { .. }
                ),
            "refused spec: {}",
            context()
        );
        let due = observed.members.iter().any(|m| {
            !m.running
                && m.data == MemberData::Intact
                && m.restart_on_request
                && observed.now - m.down_since.unwrap_or(observed.now)
                    >= restart_backoff_ms(m.restarts)
                && !m
                    .report
                    .as_ref()
                    .is_some_and(|r| r.phase == ReportedPhase::Removed)
        });
        assert!(
            !due || matches!(
                action,
                Action::RestartMember { .. } | Action::RollBackMember { .. }
            ),
            "a member down with its data is left down while the spec is refused: {}",
            context()
        );
    }
    let list = observed.etcd_members.as_deref().unwrap_or_default();
    let (healthy, voters) = voter_counts(observed, None);
    // A lost quorum changes no membership; the ways out of it are a forced new cluster
    // and a restore from a backup, only when the spec asks for one (checked below).
    let recovery = matches!(
        action,
        Action::ForceNewCluster { .. } | Action::RestoreCluster { .. }
    );
    if recovery {
        // Never while a member's sidecar, freshly and since it went down, sees a leader.
        let seen = observed.members.iter().any(|m| {
            m.report.as_ref().is_some_and(|r| {
                r.healthy
                    && !r.learner
                    && r.observed_at >= observed.now - observed.policy.report_stale_after_ms
                    && (m.running || m.down_since.is_none_or(|d| r.observed_at > d))
            })
        });
        assert!(!seen, "a recovery while a quorum is seen: {}", context());
    }
    // An upgrade step recorded after its handoff and carried on: it starts a member that
    // does not serve (handed off, or down) on its new version, which only brings a voter
    // back.
    let carried_on = match action {
        Action::UpgradeMember { name: upgraded, to } => observed.members.iter().any(|m| {
            &m.name == upgraded
                && m.upgrade.is_some_and(|s| s.to == *to && !s.rollback)
                && m.version != *to
                && !m.report.as_ref().is_some_and(|r| r.healthy)
        }),
        _ => false,
    };
    let recovery = recovery || carried_on;
    if observed.etcd_members.is_some() && healthy < quorum(voters) {
        assert!(
            !action.changes_membership() || recovery,
            "quorum lost: {}",
            context()
        );
    }
    if observed.etcd_members.is_none() && !observed.members.is_empty() {
        // With etcd unreadable: a restore, an abandon, or a force decided before (its
        // survivor chosen then) only.
        let decided_force = matches!(action, Action::ForceNewCluster { name, .. }
            if observed.pending_force.as_ref().is_some_and(|p| &p.name == name));
        assert!(
            !action.changes_membership()
                || decided_force
                || matches!(
                    action,
                    Action::RestoreCluster { .. } | Action::AbandonBootstrap { .. }
                ),
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
        } if observed
            .pending_force
            .as_ref()
            .is_some_and(|p| &p.name == survivor && p.raft_index == *raft_index) =>
        {
            // A force decided earlier, carried through from the survivor chosen then.
            let spec = observed.spec.as_ref().unwrap();
            assert_eq!(
                spec.quorum_loss,
                QuorumLossPolicy::ForceNewCluster,
                "{}",
                context()
            );
            assert!(observed.grant.is_none(), "{}", context());
            let chosen = observed
                .members
                .iter()
                .find(|m| &m.name == survivor)
                .unwrap();
            assert!(chosen.running, "{}", context());
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
            keep,
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
            let mut accounted: Vec<&String> = discard.iter().chain(keep).collect();
            all.sort();
            accounted.sort();
            assert_eq!(
                all,
                accounted,
                "a member left running beside the restored cluster: {}",
                context()
            );
            // Data that survives is kept (until the restored cluster runs), never deleted
            // for the restore.
            for m in &observed.members {
                assert_eq!(
                    keep.contains(&m.name),
                    m.data == MemberData::Intact,
                    "{} {:?}: {}",
                    m.name,
                    m.data,
                    context()
                );
            }
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
            // A cluster the record says was created gets a seed only to go on with the
            // restore it decided: never a second, empty one.
            assert!(
                !observed.created || matches!(observed.restore, Some(Ok(_))),
                "a new seed for a cluster that was created: {}",
                context()
            );
            let ordinal = member_ordinal(CLUSTER, seed).unwrap();
            assert!(ordinal >= observed.next_ordinal, "{}", context());
        }
        Action::CreateInitial { names, .. } => {
            assert!(
                observed.members.is_empty() && observed.etcd_members.is_none(),
                "initial members beside a cluster: {}",
                context()
            );
            assert!(observed.restore.is_none(), "{}", context());
            assert!(
                !observed.created,
                "an empty bootstrap of a cluster that had members: {}",
                context()
            );
            let spec = observed.spec.as_ref().unwrap();
            assert_eq!(names.len(), spec.size as usize, "{}", context());
            assert!(names.len() > 1, "{}", context());
            for name in names {
                let ordinal = member_ordinal(CLUSTER, name).unwrap();
                assert!(ordinal >= observed.next_ordinal, "{}", context());
            }
        }
        Action::EndBootstrap => {
            assert!(observed.bootstrap.is_some(), "{}", context());
        }
        Action::AbandonBootstrap { names, .. } if !observed.abandoning.is_empty() => {
            assert_eq!(names, &observed.abandoning, "{}", context());
        }
        Action::AbandonBootstrap { names, .. } => {
            let bootstrap = observed.bootstrap.as_ref().expect("a bootstrap under way");
            assert_eq!(names, &bootstrap.names, "{}", context());
            // Never the data of a cluster that may have formed (and acknowledged writes).
            for m in observed.members.iter().filter(|m| names.contains(&m.name)) {
                match &m.report {
                    Some(r) => {
                        assert!(r.member_id == 0 && !r.healthy, "{}", context());
                        assert!(
                            !m.running
                                || observed.now - r.observed_at
                                    <= observed.policy.report_stale_after_ms,
                            "abandoned on a stale report: {}",
                            context()
                        );
                    }
                    None => assert!(!m.running, "abandoned unheard: {}", context()),
                }
            }
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
                // Or a scale-down whose leave its unreachable sidecar cannot make.
                let size = observed.spec.as_ref().map_or(0, |s| s.size as usize);
                let leave_made_for_it = !entry.is_learner
                    && voters > size
                    && observed
                        .leave_unreachable
                        .get(&m.name)
                        .is_some_and(|since| observed.now - since >= observed.policy.dead_after_ms);
                assert!(
                    oracle_dead(observed, m) || leave_made_for_it,
                    "removed a member that is not dead: {}",
                    context()
                );
            }
        }
        Action::FinishJoin { name: joiner } => {
            assert!(
                observed.grant.is_none(),
                "promotion during a change: {}",
                context()
            );
            let m = observed.members.iter().find(|m| &m.name == joiner).unwrap();
            let entry = list
                .iter()
                .find(|e| runtime_of(observed, e) == Some(m))
                .unwrap();
            assert!(
                entry.is_learner,
                "finishing the join of a voter: {}",
                context()
            );
            assert!(
                m.report
                    .as_ref()
                    .is_some_and(|r| r.phase == ReportedPhase::Running && r.learner),
                "finishing a join its sidecar is still making: {}",
                context()
            );
            let (healthy, voters) = voter_counts(observed, None);
            assert!(
                healthy + 1 >= quorum(voters + 1),
                "promotion below quorum: {}",
                context()
            );
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
        Action::DeleteRuntimeMember {
            name: gone,
            hand_over,
            ..
        } if observed.delete_requested.contains(gone) => {
            assert!(observed.grant.is_none(), "{}", context());
            let m = observed.members.iter().find(|m| &m.name == gone).unwrap();
            // A leader stops gracefully (etcd hands leadership over); anyone else at once.
            let leads = m.report.as_ref().is_some_and(|r| r.leader)
                && list.iter().any(|e| runtime_of(observed, e) == Some(m));
            assert_eq!(*hand_over, leads, "hand-over: {}", context());
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
        Action::DeleteRuntimeMember {
            name: gone,
            hand_over,
            ..
        } => {
            assert!(observed.grant.is_none(), "{}", context());
            assert!(!hand_over, "{}", context());
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
        Action::UpgradeMember { name: upgraded, .. }
            if observed.members.iter().any(|m| {
                &m.name == upgraded
                    && m.report.as_ref().is_some_and(|r| {
                        r.phase == ReportedPhase::HandedOff
                            && r.observed_at >= observed.now - observed.policy.report_stale_after_ms
                    })
            }) =>
        {
            // A member handed off already (its etcd stopped): restarting it on the new
            // version stops nothing more.
            assert!(observed.grant.is_none(), "{}", context());
        }
        Action::UpgradeMember { name: upgraded, to }
            if observed.members.iter().any(|m| {
                &m.name == upgraded
                    && m.upgrade.is_some_and(|s| s.to == *to && !s.rollback)
                    && m.version != *to
            }) =>
        {
            // An upgrade step recorded (after its handoff) whose restart never reached the
            // runtime: carried on, its member not serving (handed off, or down).
            assert!(observed.grant.is_none(), "{}", context());
            let m = observed
                .members
                .iter()
                .find(|m| &m.name == upgraded)
                .unwrap();
            assert!(
                !m.report.as_ref().is_some_and(|r| r.healthy),
                "an upgrade step carried on over a member that serves: {}",
                context()
            );
        }
        Action::RollingRestart {
            name: restarted, ..
        } => {
            assert!(observed.grant.is_none(), "{}", context());
            assert!(
                observed
                    .ca
                    .rotation
                    .as_ref()
                    .is_some_and(|r| r.pending.contains(restarted)),
                "a rolling restart of a member no rotation waits on: {}",
                context()
            );
            assert!(
                healthy == voters,
                "rolling restart with an unhealthy voter: {}",
                context()
            );
            assert!(
                voters == 1 || healthy > quorum(voters),
                "rolling restart below quorum: {}",
                context()
            );
        }
        Action::RotateCa { step } => {
            assert!(observed.grant.is_none(), "{}", context());
            assert!(healthy >= quorum(voters), "{}", context());
            let phase = observed.ca.rotation.as_ref().map(|r| r.phase);
            let fits = match step {
                CaRotationStep::Begin { .. } => phase.is_none() && observed.ca.due.is_some(),
                CaRotationStep::Reissue => {
                    matches!(phase, Some(CaPhase::Trust | CaPhase::Reissue))
                }
                CaRotationStep::Finish => phase == Some(CaPhase::Drop),
            };
            assert!(fits, "a CA step out of its phase: {}", context());
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
        Action::RollBackMember {
            name: back,
            to,
            from,
            failure,
        } => {
            assert!(observed.grant.is_none(), "{}", context());
            let m = observed.members.iter().find(|m| &m.name == back).unwrap();
            let step = m.upgrade.expect("a rollback without a step under way");
            assert_eq!(m.data, MemberData::Intact, "{}", context());
            assert!(
                !fresh_healthy(observed, m)
                    || !m
                        .report
                        .as_ref()
                        .is_some_and(|r| { upgraded(r, step.at, step.to) }),
                "rolled back a member healthy on its new version: {}",
                context()
            );
            assert_ne!(to, from, "{}", context());
            if step.rollback {
                // A rollback carried on (its restart never reached the runtime).
                assert_eq!(*to, step.to, "{}", context());
                assert!(failure.is_none(), "{}", context());
            } else {
                assert_eq!(
                    Some(*to),
                    step.last_healthy,
                    "rolled back to another version than it last ran: {}",
                    context()
                );
                assert_eq!(*from, step.to, "{}", context());
            }
            let expired = observed.now - step.at >= observed.policy.upgrade_deadline_ms;
            let wanted = observed.spec.as_ref().ok().map(|s| s.version);
            if failure.is_some() {
                assert!(
                    expired && m.version == step.to && wanted.is_none_or(|v| v == step.to),
                    "an upgrade said failed before its deadline, or one the spec gave up: {}",
                    context()
                );
            }
            let eager = wanted.is_some_and(|v| v != step.to) && plan.refused.is_none();
            assert!(
                expired || eager || m.version != step.to,
                "rolled back before the deadline: {}",
                context()
            );
        }
        Action::Compact { name: by, .. } | Action::DisarmAlarms { name: by } => {
            assert!(
                observed.grant.is_none() && healthy >= quorum(voters),
                "maintenance without quorum or with a change in flight: {}",
                context()
            );
            let m = observed.members.iter().find(|m| &m.name == by).unwrap();
            assert!(fresh_healthy(observed, m), "{}", context());
        }
        Action::Defragment { name: target, .. } => {
            assert!(
                observed.grant.is_none(),
                "defragment with a change in flight: {}",
                context()
            );
            assert!(
                healthy == voters,
                "defragment with an unhealthy voter: {}",
                context()
            );
            let m = observed.members.iter().find(|m| &m.name == target).unwrap();
            assert!(fresh_healthy(observed, m), "{}", context());
        }
        Action::DeleteKept { names } => {
            assert_eq!(names, &observed.kept, "{}", context());
            assert!(
                observed.grant.is_none() && healthy >= quorum(voters) && voters > 0,
                "survivors deleted before the restored cluster runs: {}",
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
    /// Its sidecar runs; its etcd keeps exiting on its data, past dead-after.
    EtcdExiting,
    /// Its sidecar runs; its etcd exits for a full data volume, for long past dead-after.
    DiskFull,
    /// Restarted on a new version a minute ago, its etcd exiting since (within the
    /// upgrade's deadline, past dead-after).
    UpgradeFailing,
    /// The same, past the upgrade's deadline.
    UpgradeFailed,
}

const STATES: [VoterState; 13] = [
    VoterState::Healthy,
    VoterState::Stale,
    VoterState::Orphan,
    VoterState::Crashed,
    VoterState::Wiped,
    VoterState::Leaderless,
    VoterState::Down,
    VoterState::Dead,
    VoterState::CrashLooping,
    VoterState::EtcdExiting,
    VoterState::DiskFull,
    VoterState::UpgradeFailing,
    VoterState::UpgradeFailed,
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
    /// The highest voter's sidecar has not been reachable to leave for a minute.
    LeaveUnreachable,
}

#[test]
fn invariants_hold_in_every_generated_situation() {
    let mut plans = 0usize;
    let mut kinds = std::collections::BTreeSet::new();
    for voters in 1..=5u32 {
        // Five voters in every state of the first nine would be 59,049 combinations: there,
        // the states of a Pod kubelet restarts (down or dead) and of a crash loop stay out.
        // Four voters leave out the two states of a running sidecar whose etcd exits.
        let states_here: &[VoterState] = match voters {
            ..4 => &STATES,
            4 => &STATES[..9],
            _ => &STATES[..6],
        };
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
                        Extra::LeaveUnreachable,
                    ] {
                        let mut s = Situation::healthy(voters)
                            .size(size)
                            .leader(leader)
                            .quorum_loss(quorum_loss)
                            .created();
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
                                VoterState::EtcdExiting => {
                                    s.etcd_exiting(ordinal, 60_000, BAD_WAL_EXIT)
                                }
                                VoterState::DiskFull => s.disk_full(ordinal, 3_600_000),
                                VoterState::UpgradeFailing => s.failing_upgrade(ordinal, 60_000),
                                VoterState::UpgradeFailed => s.failing_upgrade(ordinal, 130_000),
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
                            // Every other one is a join interrupted between the add
                            // and the promotion (its sidecar is past its join).
                            Extra::Learner if combo % 2 == 1 => s.stuck_learner(voters),
                            Extra::Learner => s.learner(voters),
                            Extra::Joiner => s.joiner(voters),
                            Extra::DeadJoiner => s.joiner(voters).dead(voters),
                            Extra::LeftOnRequest => s.voter(voters).removed(voters),
                            Extra::UpgradeAsked => s.all_run("3.5.34"),
                            Extra::DeleteAsked => s.delete_asked(0),
                            Extra::LeaveUnreachable => {
                                s.0.leave_unreachable.insert(name(voters - 1), NOW - 60_000);
                                s
                            }
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
                            // Refused, by the spec or by the version step it asks for.
                            s.clone().spec_version("3.4.45").plan();
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
            "finish_join",
            "force_new_cluster",
            "remove_dead_member",
            "restart_member",
            "restore_cluster",
            "roll_back_member",
            "steady",
            "take_backup",
            "upgrade_member",
            "wait",
        ]
    );
}

/// What a coordinator started afresh finds of a cluster after a crash at any step: the
/// durable record (created or not, a restore decided and not done, survivors kept, an
/// abandon decided) and whatever members are left. However the two combine, its plan never
/// contradicts what was decided before: no second seed, no empty bootstrap of a cluster
/// that had members, no restore without the backup it found, no survivor deleted before
/// the restored cluster runs.
#[test]
fn a_pass_from_the_durable_record_alone_never_contradicts_an_earlier_decision() {
    let backup = "demo-20261201T100000Z-r70";
    let mut plans = 0usize;
    let mut kinds = std::collections::BTreeSet::new();
    for size in [1u32, 3, 5] {
        for policy in [
            QuorumLossPolicy::Manual,
            QuorumLossPolicy::ForceNewCluster,
            QuorumLossPolicy::Restore,
        ] {
            // What is left of the members: none; every one gone with its data; one seed
            // gone; the first members running healthy; a survivor down with its data.
            for left in 0..5u32 {
                for created in [false, true] {
                    for restore in [None, Some(Ok(backup)), Some(Err("no such backup"))] {
                        for recovery in [None, Some(Ok(backup)), Some(Err("storage down"))] {
                            for kept in [false, true] {
                                let mut s =
                                    Situation::empty(size).next_ordinal(7).quorum_loss(policy);
                                if created {
                                    s = s.created();
                                }
                                s = match left {
                                    0 => s,
                                    1 => {
                                        s.0.etcd_members = None;
                                        (0..size)
                                            .fold(s, |s, o| s.voter(o).wiped(o))
                                            .etcd_unreadable()
                                    }
                                    2 => s.voter(7).wiped(7).etcd_unreadable(),
                                    3 => Situation::healthy(size).quorum_loss(policy),
                                    _ => Situation::healthy(size).quorum_loss(policy).crashed(0),
                                };
                                if created {
                                    s = s.created();
                                }
                                if let Some(found) = restore {
                                    s = s.restore(found);
                                }
                                if let Some(found) = recovery
                                    && policy == QuorumLossPolicy::Restore
                                {
                                    s = s.recovery_backup(found);
                                }
                                if kept {
                                    s.0.kept = vec![name(20)];
                                }
                                let plan = s.plan();
                                plans += 1;
                                kinds.insert(plan.action.kind());
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(plans > 1_000, "{plans}");
    for kind in [
        "create_seed",
        "create_initial",
        "restore_cluster",
        "delete_kept",
        "wait",
        "refuse_spec",
    ] {
        assert!(kinds.contains(kind), "{kind} never planned: {kinds:?}");
    }
}
