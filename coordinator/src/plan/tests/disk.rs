//! Alarms and disk maintenance: a member with NOSPACE is healthy but alarmed, never
//! replaced; with `spec.maintenance` the space comes back by compaction, defragmentation one
//! member at a time (followers first, the leader last) and a disarm; scheduled
//! defragmentation takes the members past the threshold.

use super::*;

fn defrag(ordinal: u32, reason: &str) -> Action {
    Action::Defragment {
        name: name(ordinal),
        reason: reason.to_string(),
    }
}

const NOSPACE_ALL: &str =
    "NOSPACE on demo-0000, demo-0001, demo-0002: freeing the space compacted at revision 50";

/// All three members over the quota (the quota reached on every member).
fn full() -> Situation {
    Situation::healthy(3)
        .alarm(0, MemberAlarm::NoSpace)
        .alarm(1, MemberAlarm::NoSpace)
        .alarm(2, MemberAlarm::NoSpace)
}

#[test]
fn an_alarm_is_not_ill_health_and_never_replaces_a_member() {
    let manual = |members: &[u32]| {
        waiting(WaitReason::Alarmed {
            alarm: MemberAlarm::NoSpace,
            members: members.iter().map(|o| name(*o)).collect(),
        })
    };
    assert_cases(vec![
        (
            "NOSPACE on one member, no spec.maintenance: wait, saying what to do by hand",
            Situation::healthy(3).alarm(1, MemberAlarm::NoSpace),
            manual(&[1]),
            Phase::Degraded,
        ),
        (
            "NOSPACE on every member (quota reached everywhere): still a quorum, nothing removed",
            full(),
            manual(&[0, 1, 2]),
            Phase::Degraded,
        ),
        (
            "NOSPACE for an hour: alarmed members run, so they are never dead",
            {
                let mut s = full();
                s.0.now += 3_600_000;
                for o in 0..3 {
                    s.report(o).observed_at = s.0.now - 500;
                }
                s
            },
            manual(&[0, 1, 2]),
            Phase::Degraded,
        ),
        (
            "CORRUPT waits for people even with spec.maintenance",
            Situation::healthy(3)
                .alarm(2, MemberAlarm::Corrupt)
                .maintenance(None),
            waiting(WaitReason::Alarmed {
                alarm: MemberAlarm::Corrupt,
                members: vec![name(2)],
            }),
            Phase::Degraded,
        ),
        (
            "NOSPACE on a member that also died: the dead one is handled, the alarm is not why",
            Situation::healthy(3)
                .alarm(0, MemberAlarm::NoSpace)
                .alarm(1, MemberAlarm::NoSpace)
                .wiped(2),
            Action::RemoveDeadMember {
                name: name(2),
                member_id: id(2),
                reason: "its process is gone and so is its data".into(),
            },
            Phase::Recovering,
        ),
    ]);
    // Whatever else is true, no alarm leads to a removal or a deletion of a running member.
    for s in [
        full(),
        full().maintenance(None),
        full().maintenance(None).compacted(50, 10_000),
        full().size(5),
        full().spec_version("3.6.16"),
    ] {
        let action = s.action();
        assert!(
            !matches!(
                action,
                Action::RemoveDeadMember { .. }
                    | Action::DeleteRuntimeMember { .. }
                    | Action::AskToLeave { .. }
            ),
            "{action:?}"
        );
    }
    // Alarmed members count as healthy for quorum and status.
    let h = health(&full().0);
    assert_eq!((h.healthy_voters, h.voters), (3, 3));
}

#[test]
fn nospace_is_recovered_step_by_step_when_maintenance_allows() {
    let s = || full().maintenance(None);
    assert_cases(vec![
        (
            "first, compact to the current revision (through the leader)",
            s(),
            Action::Compact {
                name: name(0),
                revision: 50,
            },
            Phase::Recovering,
        ),
        (
            "compacted before, but writes came since: compact again",
            s().compacted(40, 60_000),
            Action::Compact {
                name: name(0),
                revision: 50,
            },
            Phase::Recovering,
        ),
        (
            "compacted: defragment a follower first, lowest ordinal",
            s().compacted(50, 5_000),
            defrag(1, NOSPACE_ALL),
            Phase::Recovering,
        ),
        (
            "a member defragmented before the compaction counts as not done",
            s().compacted(50, 5_000).defragmented(1, 60_000),
            defrag(1, NOSPACE_ALL),
            Phase::Recovering,
        ),
        (
            "one follower done: the other follower",
            s().compacted(50, 5_000).defragmented(1, 3_000),
            defrag(2, NOSPACE_ALL),
            Phase::Recovering,
        ),
        (
            "followers done: the leader last",
            s().compacted(50, 5_000)
                .defragmented(1, 3_000)
                .defragmented(2, 2_000),
            defrag(0, NOSPACE_ALL),
            Phase::Recovering,
        ),
        (
            "every member defragmented: disarm",
            s().compacted(50, 5_000)
                .defragmented(0, 1_000)
                .defragmented(1, 3_000)
                .defragmented(2, 2_000),
            Action::DisarmAlarms { name: name(0) },
            Phase::Recovering,
        ),
        (
            "disarmed and raised again with nothing to compact: the data is too big, wait",
            s().compacted(50, 5_000)
                .defragmented(0, 1_000)
                .defragmented(1, 3_000)
                .defragmented(2, 2_000)
                .disarmed(800),
            waiting(WaitReason::NoSpaceAfterRecovery(vec![
                name(0),
                name(1),
                name(2),
            ])),
            Phase::Degraded,
        ),
    ]);
}

#[test]
fn a_defragmentation_waits_for_everything_else() {
    let s = || full().maintenance(None).compacted(50, 5_000);
    assert_cases(vec![
        (
            "a member defragmented has not reported since: no next step",
            s().defragmented(1, 100),
            waiting(WaitReason::Defragmenting(name(1))),
            Phase::Running,
        ),
        (
            "a membership change in flight: wait for it",
            s().grant(&name(3), ChangeKind::Add),
            waiting(WaitReason::ChangeInFlight(format!(
                "add of {} (grant demo-7)",
                name(3)
            ))),
            Phase::Scaling,
        ),
        (
            "a voter unhealthy: wait for it, never defragment another",
            s().unhealthy(2),
            waiting(WaitReason::Unhealthy(name(2))),
            Phase::Degraded,
        ),
        (
            "a member joining: wait for it",
            s().learner(3),
            waiting(WaitReason::MemberJoining(name(3))),
            Phase::Scaling,
        ),
        (
            "a backup due goes first (a snapshot is read-only)",
            s().backup_due(),
            Action::TakeBackup { name: name(1) },
            Phase::Recovering,
        ),
    ]);
}

#[test]
fn scheduled_defragmentation_takes_fragmented_members_one_at_a_time() {
    let frag = "scheduled: 60% of its backend is free pages (threshold 50%)";
    let s = || {
        Situation::healthy(3)
            .maintenance(Some(50))
            .backend(0, 100 << 20, 40 << 20)
            .backend(1, 100 << 20, 40 << 20)
            .backend(2, 100 << 20, 90 << 20)
    };
    assert_cases(vec![
        (
            "outside a round: steady",
            s(),
            Action::Steady,
            Phase::Running,
        ),
        (
            "in a round: the fragmented follower first",
            s().defrag_round(60_000),
            defrag(1, frag),
            Phase::Running,
        ),
        (
            "follower done in this round: the fragmented leader last; member 2 is below the threshold",
            s().defrag_round(60_000).defragmented(1, 30_000),
            defrag(0, frag),
            Phase::Running,
        ),
        (
            "everyone past the threshold done: steady",
            s().defrag_round(60_000)
                .defragmented(1, 30_000)
                .defragmented(0, 20_000),
            Action::Steady,
            Phase::Running,
        ),
        (
            "without a threshold (no defragment schedule) a round does nothing",
            {
                let mut x = s().defrag_round(60_000);
                x.spec_mut().maintenance.defrag_percent = None;
                x
            },
            Action::Steady,
            Phase::Running,
        ),
        (
            "scaling first: a round waits behind a change of size",
            s().defrag_round(60_000).size(5),
            Action::CreateMember {
                name: name(3),
                version: V36,
            },
            Phase::Scaling,
        ),
    ]);
}

#[test]
fn fragmentation_is_read_from_size_and_use() {
    let mut r = Situation::healthy_report(0, false);
    assert_eq!(r.fragmentation_percent(), 0);
    r.db_size = 100;
    r.db_size_in_use = 25;
    assert_eq!(r.fragmentation_percent(), 75);
    r.db_size_in_use = 100;
    assert_eq!(r.fragmentation_percent(), 0);
}

#[test]
fn reports_carry_alarms_and_backend_use() {
    let report = proto::HealthReport {
        alarms: vec![
            proto::Alarm::Nospace as i32,
            proto::Alarm::Corrupt as i32,
            proto::Alarm::Nospace as i32,
        ],
        db_size: 1000,
        db_size_in_use: 400,
        healthy: true,
        ..Default::default()
    };
    let r = MemberReport::from(&report);
    assert_eq!(r.alarms, [MemberAlarm::NoSpace, MemberAlarm::Corrupt]);
    assert_eq!((r.db_size, r.db_size_in_use), (1000, 400));
    assert!(r.healthy);
}

#[test]
fn a_full_data_volume_waits_and_an_etcd_that_cannot_start_on_its_data_is_replaced() {
    let disk_full = |members: &[u32]| {
        waiting(WaitReason::Alarmed {
            alarm: MemberAlarm::DiskFull,
            members: members.iter().map(|o| name(*o)).collect(),
        })
    };
    let replaced = |ordinal: u32, secs: i64| Action::RemoveDeadMember {
        name: name(ordinal),
        member_id: id(ordinal),
        reason: format!(
            "its etcd keeps exiting on its data, {secs}s since its first exit (dead after 15s): {BAD_WAL_EXIT}"
        ),
    };
    assert_cases(vec![
        (
            "etcd exits for a full volume: wait, saying so; not ill enough to touch",
            Situation::healthy(3).disk_full(2, 2_000),
            disk_full(&[2]),
            Phase::Degraded,
        ),
        (
            "a full volume for an hour: still not replaced (its data is whole, a replacement would use the same volume)",
            Situation::healthy(3).disk_full(2, 3_600_000),
            disk_full(&[2]),
            Phase::Degraded,
        ),
        (
            "the leader's volume full: the same",
            Situation::healthy(3).disk_full(0, 3_600_000),
            disk_full(&[0]),
            Phase::Degraded,
        ),
        (
            "etcd keeps exiting on its data, not yet for dead-after: wait",
            Situation::healthy(3).etcd_exiting(1, 5_000, BAD_WAL_EXIT),
            waiting(WaitReason::Unhealthy(name(1))),
            Phase::Degraded,
        ),
        (
            "etcd keeps exiting on its data past dead-after: removed, saying why",
            Situation::healthy(3).etcd_exiting(1, 20_000, BAD_WAL_EXIT),
            replaced(1, 20),
            Phase::Recovering,
        ),
        (
            "the space freed, then etcd fails on its data: dead-after counts from its first exit",
            Situation::healthy(3).etcd_exiting(2, 60_000, BAD_WAL_EXIT),
            replaced(2, 60),
            Phase::Recovering,
        ),
        (
            "the same, but its report is stale: a stale report is never death",
            Situation::healthy(3)
                .etcd_exiting(1, 60_000, BAD_WAL_EXIT)
                .stale(1),
            waiting(WaitReason::Unhealthy(name(1))),
            Phase::Degraded,
        ),
        (
            "two of three keep exiting: removing one would break quorum",
            Situation::healthy(3)
                .etcd_exiting(1, 60_000, BAD_WAL_EXIT)
                .etcd_exiting(2, 60_000, BAD_WAL_EXIT),
            waiting(WaitReason::QuorumLost {
                healthy: 1,
                voters: 3,
            }),
            Phase::Failed,
        ),
        (
            "removed from etcd, its sidecar still runs: deleted with its data",
            {
                let mut s = Situation::healthy(3).etcd_exiting(1, 60_000, BAD_WAL_EXIT);
                s.0.etcd_members.as_mut().unwrap().retain(|e| e.id != id(1));
                s.report(1).member_id = 0;
                s
            },
            Action::DeleteRuntimeMember {
                name: name(1),
                reason: format!(
                    "its etcd keeps exiting on its data, 60s since its first exit (dead after 15s): {BAD_WAL_EXIT} and not in etcd's member list"
                ),
                hand_over: false,
            },
            Phase::Recovering,
        ),
    ]);
}
