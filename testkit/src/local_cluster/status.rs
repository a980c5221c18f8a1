//! What the coordinator serves of a cluster, read and described for tests.

use etcd_operator::proto::{
    ClusterStatus, GetClusterRequest, coordinator_client::CoordinatorClient,
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
