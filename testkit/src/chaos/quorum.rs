//! The invariants about removals judged from the coordinator's status while a scenario
//! runs: no removal left fewer healthy voters than quorum, and no member was removed for a
//! network fault alone.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_operator::{proto::ClusterStatus, quorum};

use crate::local_cluster::LocalCoordinator;

/// Samples the coordinator's status to catch a removal that left fewer healthy voters than
/// quorum (faults make members unhealthy on their own; only a removal is the operator's).
pub(super) struct QuorumWatch {
    broken: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl QuorumWatch {
    pub(super) fn start(c: &LocalCoordinator) -> Self {
        let channel = c.channel();
        let cluster = c.cluster().to_string();
        let broken = Arc::new(Mutex::new(0));
        let b = Arc::clone(&broken);
        let task = tokio::spawn(async move {
            let mut previous: Option<ClusterStatus> = None;
            loop {
                if let Some(s) = crate::local_cluster::fetch_status(channel.clone(), &cluster).await
                {
                    if let Some(p) = &previous
                        && removal_broke_quorum(p, &s)
                    {
                        *b.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    }
                    previous = Some(s);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { broken, task }
    }

    pub(super) fn broken(&self) -> usize {
        *self.broken.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// True when a voter of `before` is gone in `after` and the voters that remain did not have
/// a quorum of healthy members in `before`, while `before` itself had one: the removal, not
/// a fault, cost the quorum. Health is judged in `before`, as the planner saw it when it
/// chose the removal: a member killed between two samples is the fault's doing.
pub(super) fn removal_broke_quorum(before: &ClusterStatus, after: &ClusterStatus) -> bool {
    let voter = |m: &&etcd_operator::proto::MemberStatus| !m.learner && !m.id.is_empty();
    let removed = before
        .members
        .iter()
        .filter(voter)
        .any(|m| !after.members.iter().any(|n| n.name == m.name));
    let voters_before: Vec<_> = before.members.iter().filter(voter).collect();
    let healthy_before = voters_before.iter().filter(|m| m.healthy).count();
    let remaining: Vec<_> = after.members.iter().filter(voter).collect();
    let remaining_healthy_before = remaining
        .iter()
        .filter(|n| voters_before.iter().any(|m| m.name == n.name && m.healthy))
        .count();
    removed
        && !remaining.is_empty()
        && healthy_before >= quorum(voters_before.len())
        && remaining_healthy_before < quorum(remaining.len())
}

impl Drop for QuorumWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Members of `before` (the cluster as a network fault began) that are gone from `after`,
/// or there under another id, beyond the removals that shrinking to `size` makes: the
/// members removed for the fault alone. A member that had no id yet (a learner not yet
/// added) is matched by name.
pub(super) fn removed_for_partition(
    before: &ClusterStatus,
    after: &ClusterStatus,
    size: usize,
) -> usize {
    let gone = before
        .members
        .iter()
        .filter(|m| {
            !after
                .members
                .iter()
                .any(|a| a.name == m.name && (m.id.is_empty() || a.id == m.id))
        })
        .count();
    gone.saturating_sub(before.members.len().saturating_sub(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status of voters `(name, healthy)`.
    fn voters(members: &[(&str, bool)]) -> ClusterStatus {
        ClusterStatus {
            members: members
                .iter()
                .map(|(name, healthy)| etcd_operator::proto::MemberStatus {
                    name: name.to_string(),
                    id: format!("id-{name}"),
                    healthy: *healthy,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_removal_breaks_quorum_only_by_what_it_removed() {
        // The dead member goes; another dies between the two samples: the fault's doing.
        let before = voters(&[("a", true), ("b", true), ("dead", false)]);
        assert!(!removal_broke_quorum(
            &before,
            &voters(&[("a", true), ("b", false)])
        ));
        // A healthy member removed while another is down leaves one healthy of two.
        assert!(removal_broke_quorum(
            &before,
            &voters(&[("b", true), ("dead", false)])
        ));
        // Nothing removed, or no quorum to begin with: not the removal's doing.
        assert!(!removal_broke_quorum(&before, &before));
        let lost = voters(&[("a", true), ("b", false), ("c", false)]);
        assert!(!removal_broke_quorum(
            &lost,
            &voters(&[("a", true), ("b", false)])
        ));
        // Five to four with one down keeps three healthy of four.
        let five = voters(&[
            ("a", true),
            ("b", true),
            ("c", true),
            ("d", false),
            ("e", true),
        ]);
        assert!(!removal_broke_quorum(
            &five,
            &voters(&[("a", true), ("b", true), ("c", true), ("d", false)])
        ));
    }

    #[test]
    fn removals_for_a_partition_are_counted_beyond_what_the_operation_removes() {
        let three = voters(&[("a", true), ("b", true), ("c", true)]);
        assert_eq!(removed_for_partition(&three, &three, 3), 0);
        // One gone, and one back under a new id (removed and added again).
        let mut replaced = voters(&[("a", true), ("b", true)]);
        replaced.members[1].id = "new".into();
        assert_eq!(removed_for_partition(&three, &replaced, 3), 2);
        // A scale-down from four to three removes one by itself; a second is the fault's.
        let four = voters(&[("a", true), ("b", true), ("c", true), ("d", true)]);
        assert_eq!(removed_for_partition(&four, &three, 3), 0);
        assert_eq!(
            removed_for_partition(&four, &voters(&[("a", true), ("b", true)]), 3),
            1
        );
        // A replacement without an id when the fault began is matched by name.
        let mut joining = three.clone();
        joining.members[2].id.clear();
        assert_eq!(removed_for_partition(&joining, &three, 3), 0);
        assert_eq!(
            removed_for_partition(
                &joining,
                &voters(&[("a", true), ("b", true), ("d", true)]),
                3
            ),
            1
        );
    }
}
