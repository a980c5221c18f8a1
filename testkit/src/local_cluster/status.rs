//! What the coordinator serves of a cluster, read and described for tests.

use etcd_operator::proto::{
    ClusterPhase, ClusterStatus, Condition, ConditionStatus, ConditionType, GetClusterRequest,
    MemberPhase, MemberStatus, coordinator_client::CoordinatorClient,
};
use tonic::transport::Channel;

use super::STATUS_TIMEOUT;

/// GetCluster over `channel`; None when the coordinator does not answer.
pub async fn fetch_status(channel: Channel, cluster: &str) -> Option<ClusterStatus> {
    let mut client = CoordinatorClient::new(channel);
    let call = client.get_cluster(GetClusterRequest {
        name: cluster.to_string(),
        namespace: String::new(),
    });
    match tokio::time::timeout(STATUS_TIMEOUT, call).await {
        Ok(Ok(response)) => Some(response.into_inner()),
        _ => None,
    }
}

/// True when the status shows phase Running, `size` healthy voters at `version`, no
/// learner and no change in flight.
pub fn is_running(s: &ClusterStatus, size: usize, version: &str) -> bool {
    s.phase() == ClusterPhase::Running
        && s.ready as usize == size
        && s.members.len() == size
        && s.change_in_flight.is_empty()
        && s.members
            .iter()
            .all(|m| m.healthy && !m.learner && !m.id.is_empty() && m.version == version)
}

/// A status in one line, for failure messages.
pub fn describe(s: &ClusterStatus) -> String {
    let members: Vec<String> = s
        .members
        .iter()
        .map(|m| {
            format!(
                "{}[{} {} {}{}{}{}]",
                m.name,
                if m.id.is_empty() { "-" } else { &m.id },
                m.phase().as_str_name(),
                m.version,
                if m.healthy { " healthy" } else { "" },
                if m.leader { " leader" } else { "" },
                if m.learner { " learner" } else { "" }
            )
        })
        .collect();
    let conditions: Vec<String> = s
        .conditions
        .iter()
        .map(|c| {
            format!(
                "{}={} ({}: {})",
                c.r#type().as_str_name(),
                c.status().as_str_name(),
                c.reason,
                c.message
            )
        })
        .collect();
    format!(
        "phase {} ready {}/{} version {:?} in-flight {:?} members [{}] conditions [{}]",
        s.phase().as_str_name(),
        s.ready,
        s.size,
        s.current_version,
        s.change_in_flight,
        members.join(" "),
        conditions.join("; ")
    )
}

/// The condition of `type_` in a status.
pub fn condition(s: &ClusterStatus, type_: ConditionType) -> Option<&Condition> {
    s.conditions.iter().find(|c| c.r#type() == type_)
}

/// True when `s` carries the condition `type_` with `status`.
pub fn condition_is(s: &ClusterStatus, type_: ConditionType, status: ConditionStatus) -> bool {
    condition(s, type_).is_some_and(|c| c.status() == status)
}

/// The first client URL of member `name`, as the status shows it.
pub fn client_url(s: &ClusterStatus, name: &str) -> Option<String> {
    s.members
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.client_urls.first().cloned())
}

/// The phase of `member` as the status shows it (`Down` when its process does not run,
/// `Unspecified` for a value the contract does not define).
pub fn member_phase(member: &MemberStatus) -> MemberPhase {
    member.phase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undefined_phase_reads_as_unspecified() {
        let shown = |phase: i32| {
            member_phase(&MemberStatus {
                phase,
                ..Default::default()
            })
        };
        assert_eq!(shown(MemberPhase::HandedOff as i32), MemberPhase::HandedOff);
        assert_eq!(shown(MemberPhase::Down as i32), MemberPhase::Down);
        assert_eq!(shown(99), MemberPhase::Unspecified);
        let status = ClusterStatus {
            conditions: vec![Condition {
                r#type: ConditionType::SpecValid as i32,
                status: ConditionStatus::False as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(condition_is(
            &status,
            ConditionType::SpecValid,
            ConditionStatus::False
        ));
        assert!(!condition_is(
            &status,
            ConditionType::SpecValid,
            ConditionStatus::True
        ));
        assert!(condition(&status, ConditionType::Available).is_none());
    }
}
