//! A monitor that samples etcd's member list and the coordinator's status while a test
//! runs, for the invariants about membership changes.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::bail;
use etcd_client::Client;
use etcd_operator::proto::{ClusterPhase, ClusterStatus, MemberPhase};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::{LocalCoordinator, describe, fetch_status, member_phase};
use crate::{
    clients::tls_only,
    watcher::{MembershipHistory, MembershipWatcher},
};

/// What the monitor saw while a test ran.
#[derive(Clone, Debug, Default)]
pub struct MonitorLog {
    /// Status samples taken.
    pub status_samples: usize,
    /// etcd member lists read.
    pub etcd_samples: usize,
    /// Most learners in one etcd member list.
    pub max_learners: usize,
    /// Most membership changes between two consecutive member lists (an add, a promote
    /// and a remove each count one; a replacement on the same peer URL, one grant, counts
    /// one).
    pub max_step: usize,
    /// Every pair of consecutive member lists that differed by more than one change, when
    /// the coordinator had not given a grant for each change after the first between them
    /// (each change holds its own grant; changes that follow each other faster than the
    /// lists are read are serial, changes under one grant or none are not).
    pub step_violations: Vec<String>,
    /// Pairs of consecutive member lists more than one change apart that were explained by
    /// that many grants.
    pub serial_steps: usize,
    /// Most members in one status that were joining or leaving (a learner, not yet in
    /// etcd, or in phase Joining, Bootstrapping or Leaving).
    pub max_in_transition: usize,
    /// Every status with more than one member joining or leaving.
    pub transition_violations: Vec<String>,
    /// Most members the status listed at once.
    pub max_status_members: usize,
    /// Every member name the status listed.
    pub names_seen: BTreeSet<String>,
    /// The leader according to the status (member names), consecutive repeats dropped.
    pub status_leaders: Vec<String>,
    /// The leader according to etcd (member ids), consecutive repeats dropped.
    pub etcd_leaders: Vec<u64>,
    /// The changes in flight the status named, in order, consecutive repeats dropped.
    pub changes_in_flight: Vec<String>,
    /// Members that left the status, each with whether it led when last seen running.
    pub departures: Vec<(String, bool)>,
    /// The phases the status showed, consecutive repeats dropped.
    pub phases: Vec<ClusterPhase>,
}

impl MonitorLog {
    /// How often the leader changed, as etcd saw it.
    pub fn etcd_leader_changes(&self) -> usize {
        self.etcd_leaders.len().saturating_sub(1)
    }

    /// How often the leader changed, as the status showed it.
    pub fn status_leader_changes(&self) -> usize {
        self.status_leaders.len().saturating_sub(1)
    }
}

/// Samples the coordinator's status and etcd's member list and leader every 50 ms, and
/// runs a [`MembershipWatcher`] beside them.
pub struct ClusterMonitor {
    log: Arc<Mutex<MonitorLog>>,
    watcher: MembershipWatcher,
    task: JoinHandle<()>,
}

impl ClusterMonitor {
    /// Starts monitoring `coordinator`'s cluster.
    pub fn start(coordinator: &LocalCoordinator) -> Self {
        let endpoints = coordinator.live_endpoints();
        let tls = coordinator.etcd_tls();
        let watcher = MembershipWatcher::start_tls(endpoints.clone(), tls.clone());
        let log = Arc::new(Mutex::new(MonitorLog::default()));
        let task = tokio::spawn(monitor_loop(
            coordinator.channel(),
            coordinator.cluster().to_string(),
            Arc::new(endpoints),
            tls,
            Arc::clone(&log),
        ));
        Self { log, watcher, task }
    }

    /// What was seen so far.
    pub fn log(&self) -> MonitorLog {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the membership watcher saw so far.
    pub fn membership(&self) -> MembershipHistory {
        self.watcher.history()
    }

    /// Fails unless at most one membership change was ever in flight: never more than one
    /// learner (in etcd, and by the watcher), never two changes between consecutive
    /// member lists, never two members joining or leaving at once in the status.
    pub fn assert_one_change_at_a_time(&self) -> anyhow::Result<MonitorLog> {
        let log = self.log();
        let watched = self.membership();
        if log.etcd_samples < 10 || log.status_samples < 10 || watched.samples < 10 {
            bail!(
                "too few samples to judge: {} member lists, {} statuses, {} watcher samples",
                log.etcd_samples,
                log.status_samples,
                watched.samples
            );
        }
        if log.max_learners > 1 || watched.max_learners > 1 {
            bail!(
                "more than one learner at once: {} (monitor), {} (watcher)",
                log.max_learners,
                watched.max_learners
            );
        }
        if !log.step_violations.is_empty() {
            bail!(
                "member lists changed by more than one step between samples: {:?}",
                log.step_violations
            );
        }
        if !log.transition_violations.is_empty() {
            bail!(
                "more than one member joining or leaving at once: {:?}",
                log.transition_violations
            );
        }
        Ok(log)
    }
}

impl Drop for ClusterMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One entry of etcd's member list, as consecutive lists are compared.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MemberKey {
    id: u64,
    learner: bool,
    peer_urls: Vec<String>,
}

async fn monitor_loop(
    channel: Channel,
    cluster: String,
    endpoints: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    tls: Option<etcd_client::TlsOptions>,
    log: Arc<Mutex<MonitorLog>>,
) {
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut sticky: Option<String> = None;
    let mut previous_list: Option<BTreeSet<MemberKey>> = None;
    let mut previous_status: Option<ClusterStatus> = None;
    // Grants given as of the status read before the previous member list, and the steps of
    // more than one change that wait for the next status read to be judged.
    let mut given_before_previous_list: Option<u64> = None;
    let mut last_given: Option<u64> = None;
    let mut pending: Vec<PendingStep> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // etcd's view, from one member as long as it answers (members can lag each other).
        let live = endpoints();
        if sticky.as_ref().is_some_and(|s| !live.contains(s)) {
            sticky = None;
        }
        let order: Vec<String> = sticky
            .iter()
            .cloned()
            .chain(live.iter().filter(|e| Some(*e) != sticky.as_ref()).cloned())
            .collect();
        for endpoint in order {
            let client = match clients.get(&endpoint) {
                Some(c) => c.clone(),
                None => match Client::connect([endpoint.as_str()], tls_only(&tls)).await {
                    Ok(c) => {
                        clients.insert(endpoint.clone(), c.clone());
                        c
                    }
                    Err(_) => continue,
                },
            };
            let read = async {
                let mut cluster_client = client.cluster_client();
                let list = cluster_client.member_list().await.ok()?;
                let mut maintenance = client.maintenance_client();
                let status = maintenance.status().await.ok()?;
                Some((list, status))
            };
            let Ok(Some((list, status))) =
                tokio::time::timeout(Duration::from_millis(500), read).await
            else {
                continue;
            };
            sticky = Some(endpoint);
            let members: BTreeSet<MemberKey> = list
                .members()
                .iter()
                .map(|m| MemberKey {
                    id: m.id(),
                    learner: m.is_learner(),
                    peer_urls: m.peer_urls().to_vec(),
                })
                .collect();
            let mut g = log.lock().unwrap_or_else(|e| e.into_inner());
            g.etcd_samples += 1;
            let learners = members.iter().filter(|m| m.learner).count();
            g.max_learners = g.max_learners.max(learners);
            if let Some(before) = &previous_list {
                let step = changes_between(before, &members);
                g.max_step = g.max_step.max(step);
                if step > 1 {
                    pending.push(PendingStep {
                        what: format!("{before:x?} -> {members:x?} ({step} changes)"),
                        step,
                        given_before: given_before_previous_list,
                    });
                }
            }
            previous_list = Some(members);
            given_before_previous_list = last_given;
            let leader = status.leader();
            if leader != 0 && g.etcd_leaders.last() != Some(&leader) {
                g.etcd_leaders.push(leader);
            }
            break;
        }
        // The coordinator's view.
        if let Some(status) = fetch_status(channel.clone(), &cluster).await {
            let mut g = log.lock().unwrap_or_else(|e| e.into_inner());
            g.status_samples += 1;
            for p in pending.drain(..) {
                if p.serial(status.grants_given) {
                    g.serial_steps += 1;
                } else {
                    g.step_violations.push(format!(
                        "{}, grants given {:?} -> {}",
                        p.what, p.given_before, status.grants_given
                    ));
                }
            }
            last_given = Some(status.grants_given);
            g.max_status_members = g.max_status_members.max(status.members.len());
            let moving: Vec<&str> = status
                .members
                .iter()
                .filter(|m| {
                    let phase = member_phase(m);
                    phase != MemberPhase::Down
                        && (m.learner
                            || m.id.is_empty()
                            || matches!(
                                phase,
                                MemberPhase::Joining
                                    | MemberPhase::Bootstrapping
                                    | MemberPhase::Leaving
                            ))
                })
                .map(|m| m.name.as_str())
                .collect();
            g.max_in_transition = g.max_in_transition.max(moving.len());
            if moving.len() > 1 {
                g.transition_violations.push(describe(&status));
            }
            for m in &status.members {
                g.names_seen.insert(m.name.clone());
            }
            if let Some(leader) = status.members.iter().find(|m| m.leader)
                && g.status_leaders.last() != Some(&leader.name)
            {
                g.status_leaders.push(leader.name.clone());
            }
            if !status.change_in_flight.is_empty()
                && g.changes_in_flight.last() != Some(&status.change_in_flight)
            {
                g.changes_in_flight.push(status.change_in_flight.clone());
            }
            if g.phases.last() != Some(&status.phase()) {
                g.phases.push(status.phase());
            }
            if let Some(before) = &previous_status {
                for m in &before.members {
                    let leaving =
                        status
                            .members
                            .iter()
                            .find(|n| n.name == m.name)
                            .is_none_or(|n| {
                                matches!(
                                    member_phase(n),
                                    MemberPhase::Leaving | MemberPhase::Removed
                                )
                            });
                    let already = g.departures.iter().any(|(name, _)| name == &m.name);
                    let was_leaving = member_phase(m) == MemberPhase::Leaving;
                    if leaving && !already && !was_leaving {
                        g.departures.push((m.name.clone(), m.leader));
                    }
                }
            }
            previous_status = Some(status);
        }
    }
}

/// A step of more than one change between two member lists, judged at the next status.
struct PendingStep {
    what: String,
    step: usize,
    /// Grants given as of a status read before the first of the two lists.
    given_before: Option<u64>,
}

impl PendingStep {
    /// True when the coordinator gave a grant for every change after the first between a
    /// status read before the first list and `given_after`, read after the second: the
    /// changes came one after another. A count that went down (a new coordinator term) or
    /// was never read explains nothing.
    fn serial(&self, given_after: u64) -> bool {
        self.given_before
            .and_then(|before| given_after.checked_sub(before))
            .is_some_and(|new| new >= (self.step - 1) as u64)
    }
}

/// Members added, removed or promoted between two member lists. A member removed and one
/// added on the same peer URL are one change: the replacement of a member that lost its
/// data, which removes the stale entry and adds itself under one grant.
fn changes_between(before: &BTreeSet<MemberKey>, after: &BTreeSet<MemberKey>) -> usize {
    let ids: BTreeSet<u64> = before.iter().chain(after).map(|m| m.id).collect();
    let changed = ids
        .into_iter()
        .filter(|id| {
            let b = before.iter().find(|m| m.id == *id);
            let a = after.iter().find(|m| m.id == *id);
            b.map(|m| m.learner) != a.map(|m| m.learner)
        })
        .count();
    let mut removed: Vec<&MemberKey> = before
        .iter()
        .filter(|b| !after.iter().any(|a| a.id == b.id))
        .collect();
    let mut replacements = 0;
    for added in after
        .iter()
        .filter(|a| !before.iter().any(|b| b.id == a.id))
    {
        if let Some(i) = removed
            .iter()
            .position(|r| r.peer_urls.iter().any(|u| added.peer_urls.contains(u)))
        {
            removed.swap_remove(i);
            replacements += 1;
        }
    }
    changed - replacements
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(u64, bool, &str)]) -> BTreeSet<MemberKey> {
        entries
            .iter()
            .map(|(id, learner, url)| MemberKey {
                id: *id,
                learner: *learner,
                peer_urls: vec![format!("http://127.0.0.1:{url}")],
            })
            .collect()
    }

    #[test]
    fn two_changes_are_serial_only_with_a_grant_given_between() {
        let step = |step, given_before| PendingStep {
            what: String::new(),
            step,
            given_before,
        };
        // A promotion ends one grant and the next add takes a new one.
        assert!(step(2, Some(4)).serial(5));
        assert!(step(3, Some(4)).serial(6));
        // Two changes under one grant, or with no grant between them.
        assert!(!step(2, Some(4)).serial(4));
        assert!(!step(3, Some(4)).serial(5));
        // A coordinator that restarted counts from 0; nothing read before: unexplained.
        assert!(!step(2, Some(4)).serial(1));
        assert!(!step(2, None).serial(9));
    }

    #[test]
    fn one_add_is_one_step_and_two_are_two() {
        let a = list(&[(1, false, "1"), (2, false, "2")]);
        let add = list(&[(1, false, "1"), (2, false, "2"), (3, true, "3")]);
        let promote = list(&[(1, false, "1"), (2, false, "2"), (3, false, "3")]);
        let two = list(&[
            (1, false, "1"),
            (2, false, "2"),
            (3, true, "3"),
            (4, true, "4"),
        ]);
        assert_eq!(changes_between(&a, &a), 0);
        assert_eq!(changes_between(&a, &add), 1);
        assert_eq!(changes_between(&add, &promote), 1);
        assert_eq!(changes_between(&a, &promote), 1);
        assert_eq!(changes_between(&a, &two), 2);
        assert_eq!(changes_between(&promote, &a), 1);
    }

    #[test]
    fn a_replacement_on_the_same_peer_url_is_one_step_and_two_members_are_not() {
        let before = list(&[(1, false, "1"), (2, false, "2"), (3, false, "3")]);
        // 3 lost its data: its stale entry removed, a learner added on its URL.
        let replaced = list(&[(1, false, "1"), (2, false, "2"), (9, true, "3")]);
        assert_eq!(changes_between(&before, &replaced), 1);
        // A removal and an add on another URL are two changes (two grants).
        let other = list(&[(1, false, "1"), (2, false, "2"), (9, true, "9")]);
        assert_eq!(changes_between(&before, &other), 2);
        // Two members removed, one re-added on a URL of theirs: still two.
        let two = list(&[(1, false, "1"), (9, true, "3")]);
        assert_eq!(changes_between(&before, &two), 2);
    }
}
