//! What the coordinator serves of a cluster, read and described for tests.

use etcd_operator::proto::{
    ClusterStatus, GetClusterRequest, MemberPhase, MemberStatus,
    coordinator_client::CoordinatorClient,
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
    s.phase == "Running"
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
                m.phase,
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
        .map(|c| format!("{}={} ({}: {})", c.r#type, c.status, c.reason, c.message))
        .collect();
    format!(
        "phase {} ready {}/{} version {:?} in-flight {:?} members [{}] conditions [{}]",
        s.phase,
        s.ready,
        s.size,
        s.current_version,
        s.change_in_flight,
        members.join(" "),
        conditions.join("; ")
    )
}

/// The condition of `type_` in a status.
pub fn condition<'a>(
    s: &'a ClusterStatus,
    type_: &str,
) -> Option<&'a etcd_operator::proto::Condition> {
    s.conditions.iter().find(|c| c.r#type == type_)
}

/// A member's phase as the status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShownPhase {
    /// The phase its sidecar reports.
    Reported(MemberPhase),
    /// Its process does not run (the runtime's word; no sidecar reports it).
    Down,
    /// A word the contract does not define.
    Unknown,
}

/// The phase of `member` as the contract's enum: the status names a reported phase by its
/// variant (`Running`, `HandedOff`), whose proto name is `MEMBER_PHASE_RUNNING`,
/// `MEMBER_PHASE_HANDED_OFF`.
pub fn member_phase(member: &MemberStatus) -> ShownPhase {
    if member.phase == "Down" {
        return ShownPhase::Down;
    }
    let mut name = String::from("MEMBER_PHASE");
    for c in member.phase.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    MemberPhase::from_str_name(&name).map_or(ShownPhase::Unknown, ShownPhase::Reported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reported_phase_reads_back_as_the_enum() {
        let shown = |phase: &str| {
            member_phase(&MemberStatus {
                phase: phase.into(),
                ..Default::default()
            })
        };
        for phase in (0..=8).filter_map(|i| MemberPhase::try_from(i).ok()) {
            // The coordinator shows a reported phase by its variant name.
            assert_eq!(shown(&format!("{phase:?}")), ShownPhase::Reported(phase));
        }
        assert_eq!(
            shown("HandedOff"),
            ShownPhase::Reported(MemberPhase::HandedOff)
        );
        assert_eq!(shown("Down"), ShownPhase::Down);
        assert_eq!(shown("running"), ShownPhase::Unknown);
        assert_eq!(shown(""), ShownPhase::Unknown);
    }
}
