//! Death and freshness are judged on the coordinator's clock alone: the times a sidecar
//! reports are its own clock's, and the coordinator's wall clock may step. A sidecar whose
//! clock is 30 s behind (or ahead) changes no verdict; a coordinator clock stepped back makes
//! no old report fresh. Pure: the reports are built as a sidecar with such a clock sends them,
//! and observed the way the controller observes them.

use std::{collections::BTreeMap, time::Duration};

use etcd_coordinator::{
    controller::planner_members,
    plan::{self, Action, EtcdMember, MemberData, Observed, Policy, WaitReason},
    record::DecisionRecord,
    registry::ReceivedReport,
    runtime::{MemberInfo, RestartHistory},
};
use etcd_operator::{
    ClusterKey, EtcdVersion,
    proto::{HealthReport, MemberPhase},
    resource::{EtcdCluster, EtcdClusterSpec},
    validate::validate_cluster,
};

const CLUSTER: &str = "etcd-cluster";
const VERSION: EtcdVersion = EtcdVersion::new(3, 6, 15);

fn name(ordinal: u32) -> String {
    etcd_operator::naming::member_name(CLUSTER, ordinal)
}

fn info(ordinal: u32) -> MemberInfo {
    MemberInfo {
        name: name(ordinal),
        ordinal,
        running: true,
        down_since: None,
        version: VERSION,
        seed: false,
        client_url: format!("http://127.0.0.1:{}", 2379 + ordinal),
        peer_url: format!("http://127.0.0.1:{}", 2380 + ordinal),
        sidecar_url: String::new(),
        etcd_tls: false,
        data: MemberData::Intact,
        restart_on_request: true,
        restarts: RestartHistory::default(),
    }
}

/// A healthy member's report, made by a sidecar whose clock reads `sidecar_now`.
fn healthy(ordinal: u32, sidecar_now: i64) -> HealthReport {
    HealthReport {
        member_name: name(ordinal),
        member_id: 100 + u64::from(ordinal),
        healthy: true,
        leader: ordinal == 0,
        phase: MemberPhase::Running as i32,
        etcd_version: VERSION.to_string(),
        observed_at_unix_ms: sidecar_now,
        ..Default::default()
    }
}

/// The report of a sidecar whose etcd has kept exiting for `failing` by its own monotonic
/// measure, made when its clock reads `sidecar_now`; `with_duration` false stands for a
/// sidecar that sends only its timestamps.
fn failing(ordinal: u32, sidecar_now: i64, failing: Duration, with_duration: bool) -> HealthReport {
    HealthReport {
        healthy: false,
        leader: false,
        phase: MemberPhase::Restarting as i32,
        etcd_version: String::new(),
        etcd_failing_since_unix_ms: sidecar_now - failing.as_millis() as i64,
        etcd_failing_for_ms: if with_duration {
            failing.as_millis() as i64
        } else {
            0
        },
        last_error: "etcd exited (exit status: 1); starting it again".into(),
        ..healthy(ordinal, sidecar_now)
    }
}

/// What the planner decides at `now` (the coordinator's wall clock) from three members
/// and their reports.
fn plan_with(reports: BTreeMap<String, ReceivedReport>, now: i64) -> plan::Plan {
    let infos: Vec<MemberInfo> = (0..3).map(info).collect();
    let record = DecisionRecord {
        members: infos.iter().map(|i| i.name.clone()).collect(),
        ..Default::default()
    };
    let members = planner_members(&infos, &reports, &record, &BTreeMap::new(), now);
    let cluster = EtcdCluster::new(
        CLUSTER,
        EtcdClusterSpec {
            size: 3,
            version: VERSION.to_string(),
            ..Default::default()
        },
    );
    let observed = Observed {
        cluster: ClusterKey::local(CLUSTER),
        spec: validate_cluster(&cluster),
        members,
        etcd_members: Some(
            (0..3)
                .map(|o| EtcdMember {
                    id: 100 + u64::from(o),
                    name: name(o),
                    peer_urls: vec![],
                    client_urls: vec![],
                    is_learner: false,
                })
                .collect(),
        ),
        grant: None,
        next_ordinal: 3,
        delete_requested: vec![],
        backup_due: false,
        restore: None,
        recovery_backup: None,
        maintenance: Default::default(),
        bootstrap: None,
        created: true,
        ever_served: true,
        pending_force: None,
        abandoning: vec![],
        kept: vec![],
        upgrade_failed: None,
        ca: Default::default(),
        leave_unreachable: Default::default(),
        now,
        policy: Policy::default(),
    };
    plan::plan(&observed)
}

fn received(reports: Vec<HealthReport>, now: i64) -> BTreeMap<String, ReceivedReport> {
    reports
        .into_iter()
        .map(|r| (r.member_name.clone(), ReceivedReport::new(r, now)))
        .collect()
}

fn removed(plan: &plan::Plan) -> Option<&str> {
    match &plan.action {
        Action::RemoveDeadMember { name, .. } => Some(name),
        _ => None,
    }
}

/// A sidecar whose clock is 30 s behind reports that its etcd has kept exiting for 2 s:
/// the member is 2 s into its failures, not 32 s: not dead (dead-after 15 s), with or
/// without the duration in the report. One whose clock is 30 s ahead and whose etcd has
/// failed for 20 s is dead, as it would be with a clock on time.
#[test]
fn a_sidecar_clock_30_s_behind_judges_no_member_dead() {
    let now = etcd_operator::now_ms();
    let behind = now - 30_000;
    let ahead = now + 30_000;
    for with_duration in [true, false] {
        let reports = received(
            vec![
                healthy(0, behind),
                healthy(1, behind),
                failing(2, behind, Duration::from_secs(2), with_duration),
            ],
            now,
        );
        let plan = plan_with(reports, now);
        assert_eq!(
            removed(&plan),
            None,
            "a sidecar clock 30 s behind made a member dead (duration sent: {with_duration}): {:?}",
            plan.action
        );
        assert_eq!(
            plan.action,
            Action::Wait {
                reason: WaitReason::Unhealthy(name(2))
            }
        );

        let reports = received(
            vec![
                healthy(0, ahead),
                healthy(1, ahead),
                failing(2, ahead, Duration::from_secs(20), with_duration),
            ],
            now,
        );
        let plan = plan_with(reports, now);
        assert_eq!(
            removed(&plan),
            Some(name(2).as_str()),
            "20 s of failures by a sidecar clock 30 s ahead (duration sent: {with_duration}): {:?}",
            plan.action
        );
    }
}

/// The coordinator's wall clock steps back five minutes after a member's last report came
/// in a minute ago (by the monotonic clock): that report is a minute old, stale, not fresh
/// because its wall time now lies in the future.
#[test]
fn a_coordinator_clock_stepped_back_makes_no_old_report_fresh() {
    let before_step = etcd_operator::now_ms();
    let mut reports = received(
        vec![healthy(0, before_step), healthy(2, before_step)],
        before_step,
    );
    reports.insert(
        name(1),
        ReceivedReport::received_ago(
            healthy(1, before_step),
            before_step,
            Duration::from_secs(60),
        ),
    );
    let stepped_back = before_step - 300_000;
    let plan = plan_with(reports, stepped_back);
    assert_eq!(
        plan.action,
        Action::Wait {
            reason: WaitReason::Unhealthy(name(1))
        },
        "a report a minute old counted fresh after the clock stepped back"
    );
}
