//! The membership-grant lifecycle, in one place: when a sidecar may be given a grant, how
//! grants given before a (re)start are adopted, and when an adopted grant ends. The table
//! itself (at most one grant in flight per cluster, ids, expiry) is
//! `etcd_operator::grant::GrantTable`; the gRPC service and the controller only call these.
//!
//! Grants the coordinator takes for itself (removal of a dead member, an upgrade, a forced
//! new cluster) go through the same table (`ClusterController::with_grant`).

use etcd_operator::{
    ClusterKey,
    grant::{GrantRefusal, GrantTable, UnixMillis, kind_name},
    proto::{ChangeKind, HealthReport},
};
use tracing::{info, warn};

use crate::{plan::EtcdMember, registry::ClusterEntry, runtime::MemberInfo};

/// Why a sidecar's request is not even put to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotGiven {
    /// Not now: ask again after `retry_after`.
    Refused(GrantRefusal),
    /// This kind is never requested by a sidecar (the coordinator starts it itself).
    NotRequestable(String),
}

impl std::fmt::Display for NotGiven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(r) => f.write_str(&r.reason),
            Self::NotRequestable(why) => f.write_str(why),
        }
    }
}

fn refused(reason: &str, ms: u64) -> NotGiven {
    NotGiven::Refused(GrantRefusal {
        reason: reason.into(),
        retry_after: std::time::Duration::from_millis(ms),
    })
}

/// Whether the coordinator knows enough of the cluster to give any grant, its own
/// included: it has read the cluster's state once since it started (and its decision
/// record, which names the grant in flight), and every live sidecar has had time to report
/// the grant it holds (`settle_until`, for grants given by a coordinator that kept no
/// record).
pub fn settled(entry: &ClusterEntry, now: UnixMillis) -> Result<(), NotGiven> {
    if !entry.recovered || now < entry.settle_until {
        return Err(refused(
            "the coordinator is still reading the cluster's state",
            500,
        ));
    }
    Ok(())
}

/// Whether `member` may bootstrap a cluster of its own: only while the durable record says
/// no member ever served (no etcd cluster id recorded), or as the seed of a restore the
/// record decided. A failed read of the member list is no proof that the cluster is gone.
pub fn may_seed(entry: &ClusterEntry, member: &str) -> bool {
    match &entry.record {
        // While a restore is under way only its seed may bootstrap (the cluster id is
        // cleared for the restored cluster, so it proves nothing then).
        Some(record) => match record.restore.as_ref().filter(|r| !r.done) {
            Some(restore) => restore.seed == member,
            None => record.etcd_cluster_id.is_empty(),
        },
        None => false,
    }
}

/// Whether `member` of the cluster in `entry` may be given a grant of `kind` now (the table
/// then decides whether another is in flight).
pub fn may_request(
    entry: &ClusterEntry,
    member: &str,
    kind: ChangeKind,
    now: UnixMillis,
) -> Result<(), NotGiven> {
    settled(entry, now)?;
    match kind {
        ChangeKind::Bootstrap
            if entry.seed.as_deref() != Some(member)
                || entry.cluster_exists
                || !may_seed(entry, member) =>
        {
            Err(refused(
                "only the designated seed may bootstrap, and only before the cluster exists",
                5_000,
            ))
        }
        ChangeKind::Upgrade | ChangeKind::ForceNewCluster | ChangeKind::Defragment => {
            Err(NotGiven::NotRequestable(format!(
                "{} is started by the coordinator, not requested",
                kind_name(kind)
            )))
        }
        _ => Ok(()),
    }
}

/// A grant a sidecar reports holding that this coordinator did not give (it was given
/// before a restart, or under an earlier term) is in flight all the same: adopted. (A grant
/// this coordinator gave and no longer has in flight was released or lapsed: a report sent
/// before the release must not revive it.)
pub fn adopt_reported(
    grants: &mut GrantTable,
    key: &ClusterKey,
    report: &HealthReport,
    now: UnixMillis,
) {
    if report.held_grant_id.is_empty() || grants.is_own_id(key, &report.held_grant_id) {
        return;
    }
    match grants.in_flight(key, now) {
        None => {
            let kind = report.held_grant_kind();
            let adopted = grants.adopt(key, &report.member_name, kind, now);
            info!(cluster = %key, member = %report.member_name, held = %report.held_grant_id, grant = %adopted.id, "adopted a grant given before a restart");
        }
        Some(g) if g.member != report.member_name => {
            warn!(cluster = %key, member = %report.member_name, held = %report.held_grant_id, in_flight = %g.id, "a sidecar holds a grant while another is in flight");
        }
        Some(_) => {}
    }
}

/// On the first observation after a (re)start: a learner in etcd's list is an add in
/// flight, whoever asked for it, so its grant is held and nothing else is granted
/// meanwhile; and no grant is given before the members from before the start have had time
/// to report the grants they hold (`settle_until`; a new cluster has none).
pub fn recover(
    entry: &mut ClusterEntry,
    grants: &mut GrantTable,
    key: &ClusterKey,
    etcd_members: Option<&[EtcdMember]>,
    infos: &[MemberInfo],
    now: UnixMillis,
    settle_until: UnixMillis,
) {
    if entry.recovered {
        return;
    }
    if let Some(learner) = etcd_members.and_then(|list| list.iter().find(|m| m.is_learner)) {
        let holder = infos
            .iter()
            .find(|i| learner.peer_urls.contains(&i.peer_url))
            .map(|i| i.name.clone())
            .unwrap_or_else(|| learner.name.clone());
        info!(member = %holder, "recovered an add in flight (a learner is pending)");
        grants.adopt(key, &holder, ChangeKind::Add, now);
    }
    entry.recovered = true;
    entry.settle_until = if infos.is_empty() { 0 } else { settle_until };
}

/// An adopted grant ends once no learner is pending and its holder no longer reports
/// holding a grant (or cannot report: its learner is what counted).
pub fn end_adopted(
    entry: &ClusterEntry,
    grants: &mut GrantTable,
    key: &ClusterKey,
    etcd_members: Option<&[EtcdMember]>,
    now: UnixMillis,
) {
    if let Some(g) = grants.in_flight(key, now).cloned()
        && g.adopted
        && !etcd_members.is_some_and(|list| list.iter().any(|m| m.is_learner))
        && entry
            .reports
            .get(&g.member)
            .is_none_or(|r| r.report.held_grant_id.is_empty() && r.received_at > g.issued_at)
    {
        grants.release_by(key, &g.id, &g.member);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry() -> ClusterEntry {
        ClusterEntry {
            recovered: true,
            seed: Some("c-0000".into()),
            record: Some(crate::record::DecisionRecord::default()),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_cluster_that_never_served_or_a_decided_restore_seeds() {
        let mut e = entry();
        assert!(may_seed(&e, "c-0000"));
        // The cluster served: a failed member-list read does not make it new again.
        e.record.as_mut().unwrap().etcd_cluster_id = "abc".into();
        assert!(!may_seed(&e, "c-0000"));
        assert!(matches!(
            may_request(&e, "c-0000", ChangeKind::Bootstrap, 10),
            Err(NotGiven::Refused(_))
        ));
        // Unless a restore decided this very seed.
        e.record.as_mut().unwrap().restore = Some(crate::record::RestoreDecision {
            seed: "c-0000".into(),
            ..Default::default()
        });
        assert!(may_seed(&e, "c-0000"));
        assert!(!may_seed(&e, "c-0001"));
        // The restored cluster's id is cleared while the restore is under way: that does not
        // make another member a seed (it would bootstrap an empty cluster).
        e.record.as_mut().unwrap().etcd_cluster_id.clear();
        assert!(may_seed(&e, "c-0000"));
        assert!(!may_seed(&e, "c-0001"), "only the restore's own seed");
        // Before the record is read, nobody.
        e.record = None;
        assert!(!may_seed(&e, "c-0000"));
    }

    #[test]
    fn a_grant_is_asked_for_only_when_the_coordinator_knows_enough() {
        let mut e = entry();
        assert_eq!(may_request(&e, "c-0001", ChangeKind::Add, 10), Ok(()));
        assert_eq!(may_request(&e, "c-0000", ChangeKind::Bootstrap, 10), Ok(()));
        assert!(matches!(
            may_request(&e, "c-0001", ChangeKind::Bootstrap, 10),
            Err(NotGiven::Refused(_))
        ));
        assert!(matches!(
            may_request(&e, "c-0001", ChangeKind::Upgrade, 10),
            Err(NotGiven::NotRequestable(_))
        ));
        e.settle_until = 100;
        assert!(matches!(
            may_request(&e, "c-0001", ChangeKind::Add, 10),
            Err(NotGiven::Refused(r)) if r.retry_after == Duration::from_millis(500)
        ));
        e.recovered = false;
        assert!(may_request(&e, "c-0001", ChangeKind::Add, 200).is_err());
    }

    #[test]
    fn a_grant_held_from_before_a_restart_is_adopted_once() {
        let key = ClusterKey::local("c");
        let mut grants = GrantTable::with_epoch(Duration::from_secs(60), 2);
        let report = HealthReport {
            member_name: "c-0001".into(),
            held_grant_id: "c-1-7".into(),
            held_grant_kind: ChangeKind::Add as i32,
            ..Default::default()
        };
        adopt_reported(&mut grants, &key, &report, 10);
        let g = grants.in_flight(&key, 10).cloned().unwrap();
        assert!(g.adopted && g.member == "c-0001");
        // Another member's old grant does not replace it.
        let other = HealthReport {
            member_name: "c-0002".into(),
            ..report.clone()
        };
        adopt_reported(&mut grants, &key, &other, 11);
        assert_eq!(grants.in_flight(&key, 11).unwrap().id, g.id);
        // Its holder reports none any more, after the adoption, no learner pending: ended.
        let mut e = entry();
        e.reports.insert(
            "c-0001".into(),
            crate::registry::ReceivedReport::new(HealthReport::default(), 20),
        );
        end_adopted(&e, &mut grants, &key, Some(&[]), 21);
        assert!(grants.in_flight(&key, 21).is_none());
    }
}
