//! Rule 15: the etcd CA rotates with an overlap. A rotation due begins; members are
//! restarted one at a time (followers first, the leader last, never below quorum) to trust
//! both CAs, leaves are issued again, members restart again to drop the old CA, and the
//! rotation ends. Anything more urgent goes first.

use super::*;

fn rotating(mut s: Situation, phase: CaPhase, pending: &[u32]) -> Situation {
    s.0.ca.rotation = Some(CaRotation {
        phase,
        pending: pending.iter().map(|o| name(*o)).collect(),
    });
    s
}

fn due(mut s: Situation) -> Situation {
    s.0.ca.due = Some("the etcd CA has less than a third of its life left".into());
    s
}

fn restart(ordinal: u32, reason: RestartReason) -> Action {
    Action::RollingRestart {
        name: name(ordinal),
        reason,
    }
}

fn step(step: CaRotationStep) -> Action {
    Action::RotateCa { step }
}

#[test]
fn a_ca_rotation_moves_one_step_at_a_time_followers_first_the_leader_last() {
    let begin = step(CaRotationStep::Begin {
        reason: "the etcd CA has less than a third of its life left".into(),
    });
    assert_cases(vec![
        (
            "nothing due, no rotation: steady",
            Situation::healthy(3),
            Action::Steady,
            Phase::Running,
        ),
        (
            "a rotation due: it begins",
            due(Situation::healthy(3)),
            begin.clone(),
            Phase::Running,
        ),
        (
            "Trust, every member pending, member 0 leads: a follower first, the lowest ordinal",
            rotating(Situation::healthy(3), CaPhase::Trust, &[0, 1, 2]),
            restart(1, RestartReason::CaTrustNew),
            Phase::Upgrading,
        ),
        (
            "Trust, the leader and a follower pending: the follower",
            rotating(Situation::healthy(3), CaPhase::Trust, &[0, 2]),
            restart(2, RestartReason::CaTrustNew),
            Phase::Upgrading,
        ),
        (
            "Trust, only the leader pending: the leader, last",
            rotating(Situation::healthy(3), CaPhase::Trust, &[0]),
            restart(0, RestartReason::CaTrustNew),
            Phase::Upgrading,
        ),
        (
            "Trust, nobody pending: leaves are issued again",
            rotating(Situation::healthy(3), CaPhase::Trust, &[]),
            step(CaRotationStep::Reissue),
            Phase::Running,
        ),
        (
            "Trust, the only member pending is gone (deleted since): leaves are issued again",
            rotating(Situation::healthy(3), CaPhase::Trust, &[7]),
            step(CaRotationStep::Reissue),
            Phase::Running,
        ),
        (
            "Reissue (a coordinator stopped inside it): issued again, checked again",
            rotating(Situation::healthy(3), CaPhase::Reissue, &[]),
            step(CaRotationStep::Reissue),
            Phase::Running,
        ),
        (
            "Drop, members pending: restarted to drop the old CA",
            rotating(Situation::healthy(3), CaPhase::Drop, &[0, 1]),
            restart(1, RestartReason::CaDropOld),
            Phase::Upgrading,
        ),
        (
            "Drop, nobody pending: the rotation ends",
            rotating(Situation::healthy(3), CaPhase::Drop, &[]),
            step(CaRotationStep::Finish),
            Phase::Running,
        ),
        (
            "a rotation under way with another one due: the one under way goes on",
            due(rotating(Situation::healthy(3), CaPhase::Drop, &[])),
            step(CaRotationStep::Finish),
            Phase::Running,
        ),
        (
            "a single member restarts alone (the pause cannot be avoided)",
            rotating(Situation::healthy(1), CaPhase::Trust, &[0]),
            restart(0, RestartReason::CaTrustNew),
            Phase::Upgrading,
        ),
    ]);
}

#[test]
fn a_ca_rotation_never_restarts_a_member_below_quorum_or_before_more_urgent_work() {
    let two = rotating(Situation::healthy(2), CaPhase::Trust, &[0, 1]);
    assert!(
        matches!(two.action(), Action::Wait { reason: WaitReason::Other(m) } if m.contains("below quorum")),
        "two members: a restart would stall writes: {:?}",
        two.action()
    );
    // A voter unhealthy: wait for it, restart nobody.
    let unhealthy = rotating(Situation::healthy(3), CaPhase::Trust, &[1, 2]).unhealthy(2);
    assert!(
        !matches!(unhealthy.action(), Action::RollingRestart { .. }),
        "{:?}",
        unhealthy.action()
    );
    // A grant in flight: wait.
    let granted =
        rotating(Situation::healthy(3), CaPhase::Drop, &[1]).grant(&name(1), ChangeKind::Upgrade);
    assert!(
        matches!(
            granted.action(),
            Action::Wait {
                reason: WaitReason::ChangeInFlight(_)
            }
        ),
        "{:?}",
        granted.action()
    );
    // The member restarted last is not back healthy yet: its step is waited on.
    let mut back = rotating(Situation::healthy(3), CaPhase::Trust, &[0, 2]);
    back.0.members[1].upgrade = Some(UpgradeStep {
        at: NOW - 1000,
        to: V36,
        last_healthy: Some(V36),
        rollback: false,
    });
    back = back.unhealthy(1);
    assert!(
        matches!(back.action(), Action::Wait { .. }),
        "{:?}",
        back.action()
    );
    // A member short of the spec's size: scaled up first, the rotation after.
    let short = due(Situation::healthy(3).size(4));
    assert!(
        matches!(short.action(), Action::CreateMember { .. }),
        "{:?}",
        short.action()
    );
    // An upgrade goes first: the rotation restarts members on the spec's version.
    let mut upgrading = due(Situation::healthy(3));
    upgrading.spec_mut().version = EtcdVersion::new(3, 6, 16);
    assert!(
        matches!(upgrading.action(), Action::UpgradeMember { .. }),
        "{:?}",
        upgrading.action()
    );
}
