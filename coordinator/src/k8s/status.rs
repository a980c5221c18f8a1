//! Converting what the controller computed into the `EtcdCluster` status subresource, and
//! reading a member's liveness from its Pod. Both pure.

use etcd_operator::{
    proto::ClusterStatus,
    resource::{ClusterCondition, EtcdClusterStatus, MemberState},
};
use k8s_openapi::api::core::v1::Pod;

use super::{ETCD_CONTAINER, build::selector_string};
use crate::conditions::{member_phase_word, phase_word, status_word, type_word};

/// The status subresource of cluster `name` from the controller's `ClusterStatus`.
///
/// `size` is the number of members that exist (the scale subresource's status replicas,
/// as a Deployment counts its Pods); `readyMembers` the healthy voters.
pub fn resource_status(name: &str, status: &ClusterStatus) -> EtcdClusterStatus {
    EtcdClusterStatus {
        phase: phase_word(status.phase()).into(),
        size: status.members.len() as i32,
        ready_members: status.ready as i32,
        members: status
            .members
            .iter()
            .map(|m| MemberState {
                name: m.name.clone(),
                id: m.id.clone(),
                version: m.version.clone(),
                healthy: m.healthy,
                leader: m.leader,
                learner: m.learner,
                phase: member_phase_word(m.phase()).into(),
                restarts: m.restarts,
                last_exit: m.last_exit.clone(),
                alarms: m.alarms.clone(),
                db_size: m.db_size,
                db_size_in_use: m.db_size_in_use,
            })
            .collect(),
        current_version: status.current_version.clone(),
        target_version: status.target_version.clone(),
        conditions: status
            .conditions
            .iter()
            .map(|c| ClusterCondition {
                type_: type_word(c.r#type()).into(),
                status: status_word(c.status()).into(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
            .collect(),
        observed_generation: (status.observed_generation > 0).then_some(status.observed_generation),
        selector: selector_string(name),
        backup: status
            .backup
            .as_ref()
            .map(|b| etcd_operator::resource::BackupStatus {
                last_successful: b.last_successful.clone(),
                last_successful_time: b.last_successful_time.clone(),
                last_verified: b.last_verified.clone(),
                last_failure: b.last_failure.clone(),
                last_failure_time: b.last_failure_time.clone(),
                next: b.next.clone(),
            }),
    }
}

/// What a member's Pod says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodLiveness {
    /// The etcd container runs.
    Running,
    /// Not running yet, with no evidence of failure: scheduled or not, pulling the image
    /// (not failing to), initializing, restarting its container after an image change.
    /// Never judged dead.
    Starting,
    /// Evidence the member is down: the Pod is being deleted, has failed or finished, its
    /// container crashes, or its image cannot be pulled.
    Down,
}

/// The etcd container's restarts, as kubelet counts them, and how it last ended.
pub fn pod_restarts(pod: &Pod) -> crate::runtime::RestartHistory {
    let etcd = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == ETCD_CONTAINER));
    let last_exit = etcd
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| match t.reason.as_deref() {
            Some(reason) => format!("{reason} (exit code {})", t.exit_code),
            None => format!("exit code {}", t.exit_code),
        })
        .unwrap_or_default();
    // A container that cannot start for its image: said in the kubelet's words.
    let last_exit = match image_failure(pod) {
        Some(failure) => failure,
        None => last_exit,
    };
    crate::runtime::RestartHistory {
        count: etcd.map_or(0, |c| u32::try_from(c.restart_count).unwrap_or(0)),
        failing_since: None,
        last_exit,
    }
}

/// Container waiting reasons that mean the container crashed (not that it is on its way).
const CRASH_REASONS: &[&str] = &["CrashLoopBackOff", "RunContainerError", "Error"];

/// Container waiting reasons that mean its image cannot be had: a start that failed, not
/// one on its way (the kubelet retries, and fails again, until the image changes).
const IMAGE_REASONS: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// Why a container of `pod` (the sidecar's installer or etcd) cannot start for its image,
/// as "ImagePullBackOff: <the kubelet's message>"; `None` when none is waiting on its image.
pub fn image_failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| {
            w.reason
                .as_deref()
                .is_some_and(|r| IMAGE_REASONS.contains(&r))
        })
        .map(|w| match &w.message {
            Some(message) => format!("{}: {message}", w.reason.as_deref().unwrap_or_default()),
            None => w.reason.clone().unwrap_or_default(),
        })
}

/// The liveness of a member from its Pod.
pub fn pod_liveness(pod: &Pod) -> PodLiveness {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodLiveness::Down;
    }
    let Some(status) = &pod.status else {
        return PodLiveness::Starting;
    };
    // An image that cannot be pulled is a start that failed: the Pod never comes up on it
    // (an upgrade to it is rolled back once its deadline passes).
    if image_failure(pod).is_some() {
        return PodLiveness::Down;
    }
    match status.phase.as_deref() {
        Some("Failed" | "Succeeded") => return PodLiveness::Down,
        Some("Running") => {}
        _ => return PodLiveness::Starting,
    }
    let Some(etcd) = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == ETCD_CONTAINER)
    else {
        return PodLiveness::Starting;
    };
    let Some(state) = &etcd.state else {
        return PodLiveness::Starting;
    };
    if state.running.is_some() {
        return PodLiveness::Running;
    }
    if state.terminated.is_some() {
        return PodLiveness::Down;
    }
    let crashing = state
        .waiting
        .as_ref()
        .and_then(|w| w.reason.as_deref())
        .is_some_and(|r| CRASH_REASONS.contains(&r));
    if crashing && etcd.restart_count > 0 {
        PodLiveness::Down
    } else {
        PodLiveness::Starting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_operator::proto::{
        ClusterPhase, Condition, ConditionStatus, ConditionType, MemberPhase, MemberStatus,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(phase: &str, state: Option<ContainerState>, restarts: i32) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: state.map(|s| {
                    vec![ContainerStatus {
                        name: "etcd".into(),
                        state: Some(s),
                        restart_count: restarts,
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn waiting(reason: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn liveness_needs_evidence_to_be_down() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        let terminated = ContainerState {
            terminated: Some(ContainerStateTerminated::default()),
            ..Default::default()
        };
        let table = [
            (pod("Pending", None, 0), PodLiveness::Starting),
            (
                pod("Running", Some(running.clone()), 0),
                PodLiveness::Running,
            ),
            (
                pod("Running", Some(waiting("ContainerCreating")), 0),
                PodLiveness::Starting,
            ),
            // An image that cannot be pulled is a failed start, whatever the phase.
            (
                pod("Running", Some(waiting("ErrImagePull")), 2),
                PodLiveness::Down,
            ),
            (
                pod("Pending", Some(waiting("ImagePullBackOff")), 0),
                PodLiveness::Down,
            ),
            (
                pod("Pending", Some(waiting("PodInitializing")), 0),
                PodLiveness::Starting,
            ),
            (
                pod("Running", Some(waiting("CrashLoopBackOff")), 3),
                PodLiveness::Down,
            ),
            (pod("Running", Some(terminated), 1), PodLiveness::Down),
            (pod("Failed", None, 0), PodLiveness::Down),
            (pod("Succeeded", None, 0), PodLiveness::Down),
            (Pod::default(), PodLiveness::Starting),
        ];
        for (i, (p, want)) in table.into_iter().enumerate() {
            assert_eq!(pod_liveness(&p), want, "case {i}");
        }
        // The sidecar's installer cannot pull its image: the same.
        let mut init = pod("Pending", None, 0);
        init.status.as_mut().unwrap().init_container_statuses = Some(vec![ContainerStatus {
            name: "install-sidecar".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ImagePullBackOff".into()),
                    message: Some("Back-off pulling image \"op:bad\"".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        assert_eq!(pod_liveness(&init), PodLiveness::Down);
        assert_eq!(
            pod_restarts(&init).last_exit,
            "ImagePullBackOff: Back-off pulling image \"op:bad\""
        );
        let mut deleting = pod("Running", Some(running), 0);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(pod_liveness(&deleting), PodLiveness::Down);
    }

    #[test]
    fn status_is_converted_field_by_field() {
        let proto = ClusterStatus {
            name: "etcd-cluster".into(),
            size: 3,
            ready: 2,
            phase: ClusterPhase::Scaling.into(),
            current_version: "3.6.15".into(),
            target_version: "3.6.15".into(),
            observed_generation: 4,
            conditions: vec![Condition {
                r#type: ConditionType::Available.into(),
                status: ConditionStatus::True.into(),
                reason: "QuorumHealthy".into(),
                message: "2 of 2 voting members healthy".into(),
                last_transition_time: "2025-01-01T00:00:00Z".into(),
            }],
            members: vec![
                MemberStatus {
                    name: "etcd-cluster-0000".into(),
                    id: "8e9e05c52164694d".into(),
                    version: "3.6.15".into(),
                    healthy: true,
                    leader: true,
                    phase: MemberPhase::Running.into(),
                    ..Default::default()
                },
                MemberStatus {
                    name: "etcd-cluster-0001".into(),
                    learner: true,
                    phase: MemberPhase::Down.into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let s = resource_status("etcd-cluster", &proto);
        assert_eq!(s.phase, "Scaling");
        assert_eq!(s.size, 2);
        assert_eq!(s.ready_members, 2);
        assert_eq!(s.current_version, "3.6.15");
        assert_eq!(s.target_version, "3.6.15");
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.selector, "etcd.operator.rs/cluster=etcd-cluster");
        assert_eq!(
            s.members[0],
            MemberState {
                name: "etcd-cluster-0000".into(),
                id: "8e9e05c52164694d".into(),
                version: "3.6.15".into(),
                healthy: true,
                leader: true,
                learner: false,
                phase: "Running".into(),
                ..Default::default()
            }
        );
        assert!(s.members[1].learner && !s.members[1].healthy);
        assert_eq!(s.members[1].phase, "Down");
        assert_eq!(s.conditions[0].type_, "Available");
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].reason, "QuorumHealthy");
        assert_eq!(s.conditions[0].last_transition_time, "2025-01-01T00:00:00Z");
    }
}
