//! The planner and the registry alone, over many simulated clusters: no process, no
//! network. One pass does for every cluster what a reconcile does between its I/O: read
//! the cluster's reports and grant from the registry, assemble what was observed, validate
//! the spec, plan, and store the status. This bounds what one coordinator can keep up
//! with: the time of a pass is the least a reconcile of every cluster costs.
//!
//! `cargo bench -p etcd-coordinator --bench planner [-- CLUSTERS]` (default 10000).

use std::time::{Duration, Instant};

use etcd_coordinator::{
    plan::{self, EtcdMember, Observed, Policy, RuntimeMember},
    registry::{ReceivedReport, Registry, now_ms},
};
use etcd_operator::{
    ClusterKey, EtcdVersion,
    naming::member_name,
    proto::{ClusterStatus, HealthReport, MemberPhase},
    resource::{EtcdCluster, EtcdClusterSpec},
    validate::validate_cluster,
};

/// What a simulated cluster is doing.
#[derive(Clone, Copy)]
enum Kind {
    /// 3 healthy members, spec met.
    Steady,
    /// 3 members, spec asks for 5.
    Growing,
    /// 3 members, one of whose reports is stale.
    Stale,
    /// 3 members on 3.5.34, spec asks for 3.6.15.
    Upgrading,
}

fn kind(i: usize) -> Kind {
    match i % 10 {
        0 => Kind::Growing,
        1 => Kind::Stale,
        2 => Kind::Upgrading,
        _ => Kind::Steady,
    }
}

struct Simulated {
    key: ClusterKey,
    resource: EtcdCluster,
    kind: Kind,
    version: EtcdVersion,
}

fn simulated(n: usize) -> Vec<Simulated> {
    (0..n)
        .map(|i| {
            let kind = kind(i);
            let name = format!("c{i:05}");
            let (size, spec_version) = match kind {
                Kind::Growing => (5, "3.6.15"),
                Kind::Upgrading => (3, "3.6.15"),
                _ => (3, "3.6.15"),
            };
            let version: EtcdVersion = match kind {
                Kind::Upgrading => "3.5.34".parse().unwrap(),
                _ => "3.6.15".parse().unwrap(),
            };
            let resource = EtcdCluster::new(
                &name,
                EtcdClusterSpec {
                    size,
                    version: spec_version.into(),
                    ..Default::default()
                },
            );
            Simulated {
                key: ClusterKey::local(&name),
                resource,
                kind,
                version,
            }
        })
        .collect()
}

/// Fills the registry as the sidecars' reports would: 3 members per cluster.
fn fill(registry: &Registry, clusters: &[Simulated], now: i64) {
    for c in clusters {
        registry.with(&c.key, |entry, _| {
            entry.recovered = true;
            entry.cluster_exists = true;
            for ordinal in 0..3u32 {
                let member = member_name(&c.key.name, ordinal);
                let stale = matches!(c.kind, Kind::Stale) && ordinal == 2;
                entry.runtime_members.push(member.clone());
                entry.reports.insert(
                    member.clone(),
                    ReceivedReport::received_ago(
                        HealthReport {
                            member_name: member,
                            member_id: u64::from(ordinal) + 1,
                            healthy: true,
                            leader: ordinal == 0,
                            etcd_version: c.version.to_string(),
                            phase: MemberPhase::Running as i32,
                            raft_index: 100,
                            revision: 50,
                            observed_at_unix_ms: now,
                            ..Default::default()
                        },
                        now,
                        Duration::from_millis(if stale { 60_000 } else { 0 }),
                    ),
                );
            }
        });
    }
}

/// One pass over every cluster; returns how many asked for a change.
fn pass(registry: &Registry, clusters: &[Simulated], now: i64) -> usize {
    let mut changes = 0;
    for c in clusters {
        let (reports, grant) = registry.with(&c.key, |entry, grants| {
            (
                entry.reports.clone(),
                grants.in_flight(&c.key, now).cloned(),
            )
        });
        let members = (0..3u32)
            .map(|ordinal| {
                let name = member_name(&c.key.name, ordinal);
                RuntimeMember {
                    report: reports.get(&name).map(|r| r.planner_report(now)),
                    name,
                    ordinal,
                    running: true,
                    down_since: None,
                    version: c.version,
                    data: plan::MemberData::Intact,
                    restart_on_request: true,
                    restarts: 0,
                    failing_since: None,
                    upgrade: None,
                    last_exit: String::new(),
                    defragmented_at: None,
                }
            })
            .collect::<Vec<_>>();
        let etcd_members = (0..3u32)
            .map(|ordinal| EtcdMember {
                id: u64::from(ordinal) + 1,
                name: member_name(&c.key.name, ordinal),
                peer_urls: vec![format!("http://127.0.0.1:{}", 20000 + ordinal)],
                client_urls: vec![format!("http://127.0.0.1:{}", 30000 + ordinal)],
                is_learner: false,
            })
            .collect();
        let observed = Observed {
            cluster: c.key.clone(),
            spec: validate_cluster(&c.resource),
            members,
            etcd_members: Some(etcd_members),
            grant,
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
        let plan = plan::plan(&observed);
        if plan.action.changes_something() {
            changes += 1;
        }
        let status = ClusterStatus {
            name: c.key.name.clone(),
            phase: etcd_operator::proto::ClusterPhase::from(plan.phase).into(),
            size: 3,
            ..Default::default()
        };
        registry.with(&c.key, |entry, _| entry.status = Some(status));
    }
    changes
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let clusters = simulated(n);
    let registry = Registry::new();
    let now = now_ms();
    fill(&registry, &clusters, now);
    let mut times: Vec<Duration> = Vec::new();
    let mut changes = 0;
    for _ in 0..7 {
        let started = Instant::now();
        changes = pass(&registry, &clusters, now);
        times.push(started.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    // Growing and upgrading clusters ask for a change; steady ones and the one with a
    // stale report do not.
    let expected = clusters
        .iter()
        .filter(|c| matches!(c.kind, Kind::Growing | Kind::Upgrading))
        .count();
    assert_eq!(
        changes, expected,
        "the simulated clusters planned as expected"
    );
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| planner and registry, one pass over {n} simulated clusters (median of 7) | {:.1} ms ({:.1} µs per cluster) | at most 100 ms |",
        median.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e6 / n as f64
    );
}
