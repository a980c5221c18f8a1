//! Fault injection under traffic over the local runtime, with every history checked
//! afterwards (`etcd-chaos`, and a short seeded run in the test suite).
//!
//! Each scenario ([`Scenario`], one function per fault in `scenario.rs` and `network.rs`)
//! starts a fresh local cluster through the real `etcd-coordinator` binary, runs recorded
//! client traffic ([`crate::traffic`]: a client pinned to every member etcd lists, shared
//! clients, watches, leases), turns the traffic's contention phase on, injects one fault
//! during one operation, turns it off, and judges:
//! - the fault happened: a planned fault that finds no victim fails, a paused leader must
//!   show a new term or another leader in etcd, a network fault must drop packets and hold
//!   a cut-off member's raft log still;
//! - the cluster converged, as etcd itself tells it ([`crate::cluster_view`]): every member
//!   listed answers, agrees on the list and the leader, runs the expected version, reports
//!   nothing wrong (and then the coordinator's status says Running too);
//! - the history: linearizability with revisions, watches, leases and lost writes
//!   ([`crate::checker`]), with every member's own reads of the keys once settled and
//!   `HashKV` equal on every member etcd lists;
//! - the operator's invariants: at most one membership change in flight
//!   ([`crate::local_cluster::ClusterMonitor`]), no removal that left fewer healthy voters
//!   than quorum, no member removed for a network fault alone (`quorum.rs`).
//!
//! A seed picks the scenario order and the victims, so a failing seed replays the same
//! faults in the same order.

mod actions;
mod failpoint;
mod network;
mod quorum;
mod report;
mod scenario;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use etcd_operator::proto::ClusterStatus;

pub use crate::process::etcd_pid;
pub use report::{ChaosReport, Evidence, ScenarioResult};
pub use scenario::{FaultBudget, NETWORK, PROCESS, Scenario, scenarios};

use crate::{
    checker::{CheckOptions, check, compare_hashes},
    cluster_view::{settle, wait_converged},
    local_cluster::{ClusterMonitor, CoordinatorOptions, LocalCoordinator, is_running},
    rng::SeededRng,
    traffic::{Traffic, TrafficConfig, final_read},
};
use quorum::{QuorumWatch, removed_for_partition};
use scenario::Ctx;

/// How long a cluster may take to converge after a fault.
const CONVERGE: Duration = Duration::from_secs(180);

/// Operations recorded before the fault, and again after the cluster converged.
const TRAFFIC_AROUND_FAULT: usize = 200;

/// How long the members may take to reach one revision once traffic stopped.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// How a run goes.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The `etcd-coordinator` binary.
    pub coordinator: PathBuf,
    /// Picks the order and the victims.
    pub seed: u64,
    /// Stop starting scenarios after this long (at least one runs, and every one named in
    /// `only`).
    pub duration: Duration,
    /// Only these scenarios (all when empty).
    pub only: Vec<String>,
    /// The version clusters start on; the upgrade scenario goes to `upgrade_to`.
    pub version: String,
    /// Target of the upgrade scenario.
    pub upgrade_to: String,
    /// Hold an availability probe ([`crate::availability::LoadProbe`]) through each fault
    /// and fail a scenario that breaks its budget ([`Scenario::budget`]).
    pub budget: bool,
}

/// Runs scenarios until `duration` has passed.
pub async fn run(options: &ChaosOptions) -> ChaosReport {
    let mut rng = SeededRng::new(options.seed);
    // Network scenarios need a hub; a run outside one (not root) leaves them out unless named.
    let in_hub = crate::netns::Hub::current().is_some();
    let mut pool: Vec<Scenario> = PROCESS
        .iter()
        .chain(NETWORK)
        .copied()
        .filter(|s| in_hub || !options.only.is_empty() || !s.is_network())
        .filter(|s| options.only.is_empty() || options.only.iter().any(|o| o == s.name()))
        .collect();
    // A seeded shuffle: the same seed runs the same scenarios in the same order.
    for i in (1..pool.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        pool.swap(i, j);
    }
    let started = Instant::now();
    let mut report = ChaosReport::default();
    let mut i = 0;
    // Scenarios named with `only` run at least once each; otherwise at least one runs.
    let at_least = if options.only.is_empty() {
        1
    } else {
        pool.len()
    };
    while !pool.is_empty() && (i < at_least || started.elapsed() < options.duration) {
        let scenario = pool[i % pool.len()];
        let scenario_seed = rng.next_u64();
        let result = run_one(options, scenario, scenario_seed).await;
        eprintln!(
            "{} {} during {}: {}",
            if result.passed() { "ok    " } else { "FAILED" },
            result.fault,
            result.operation,
            result.error.clone().unwrap_or_default()
        );
        report.results.push(result);
        i += 1;
    }
    report
}

async fn run_one(options: &ChaosOptions, scenario: Scenario, seed: u64) -> ScenarioResult {
    let mut result = ScenarioResult {
        fault: scenario.name().to_string(),
        operation: String::new(),
        operations: 0,
        lost: 0,
        verdict: None,
        max_in_flight: 0,
        step_violations: Vec::new(),
        quorum_broken: 0,
        converge: Duration::ZERO,
        hash_mismatches: 0,
        error: None,
        loss_expected: scenario.loses_data_on_purpose(),
        partition_removals: 0,
        evidence: Evidence::default(),
        availability: None,
        budget_breaches: Vec::new(),
    };
    if let Err(e) = run_scenario(options, scenario, seed, &mut result).await {
        result.error = Some(format!("{e:#}"));
    }
    result
}

fn manifest_file(dir: &Path, scenario: Scenario, version: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("chaos.yaml");
    crate::local_cluster::write_atomically(
        &path,
        &format!(
            "{}{}",
            crate::local_cluster::manifest("chaos", scenario.start_size(), version),
            scenario.spec_extra()
        ),
    )?;
    Ok(path)
}

async fn run_scenario(
    options: &ChaosOptions,
    scenario: Scenario,
    seed: u64,
    result: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let mut rng = SeededRng::new(seed);
    let v = options.version.clone();
    let start_size = scenario.start_size();
    let dir = tempfile::tempdir()?;
    let manifest = manifest_file(dir.path(), scenario, &v)?;
    let mut coordinator =
        CoordinatorOptions::new(&options.coordinator, manifest).dead_after_secs(5);
    if scenario.is_network() {
        let hub = crate::netns::Hub::current().context(
            "network scenarios run inside a hub of their own: etcd-chaos makes one (as root)",
        )?;
        coordinator = coordinator.member_netns(&hub);
    }
    // The failpoint this run arms, chosen by the seed, and where it marks that it fired.
    let failpoint = if scenario == Scenario::CrashCoordinatorAtFailpoint {
        let (name, operation) = failpoint::choose(seed);
        let markers = failpoint::markers_dir(dir.path())?;
        for (key, value) in failpoint::arming(name, &markers) {
            coordinator = coordinator.env(&key, &value);
        }
        eprintln!("crash-coordinator-at-failpoint: {name}, during {operation:?}");
        coordinator = coordinator.may_die_early();
        Some((name.to_string(), markers))
    } else {
        None
    };
    let mut c = LocalCoordinator::start(coordinator).await?;
    // A member's volume of its own (`fill-volume`), unmounted after the coordinator and
    // everything it started have stopped.
    let mut volume: Option<crate::volume::Tmpfs> = None;
    let initial = c.wait_running(start_size as usize, &v, CONVERGE).await?;
    let endpoints: Vec<String> = (c.live_endpoints())();
    let monitor = ClusterMonitor::start(&c);
    let quorum = QuorumWatch::start(&c);
    let config = TrafficConfig {
        seed,
        op_interval: Duration::from_millis(20),
        ..TrafficConfig::default()
    };
    let keys = config.key_names();
    let traffic = Traffic::start(config, &endpoints).await?;
    let recorded_more = |n: usize| {
        let target = traffic.recorded() + n;
        let traffic = &traffic;
        async move {
            crate::wait_for(
                &format!("{n} more operations recorded"),
                Duration::from_secs(60),
                || async { (traffic.recorded() >= target).then_some(()) },
            )
            .await
        }
    };
    recorded_more(TRAFFIC_AROUND_FAULT).await?;
    let probe = if options.budget {
        Some(crate::availability::LoadProbe::start(std::sync::Arc::new(c.live_endpoints())).await?)
    } else {
        None
    };
    let fault_at = Instant::now();
    let fault_window_from = traffic.recorder().now();
    let mut faulted: Option<(ClusterStatus, Instant)> = None;
    traffic.contend(true);
    let injected = {
        let mut ctx = Ctx {
            c: &mut c,
            initial: &initial,
            rng: &mut rng,
            options,
            faulted: &mut faulted,
            volume: &mut volume,
            failpoint: failpoint.clone(),
        };
        scenario.inject(&mut ctx).await
    };
    traffic.contend(false);
    let fault_window_until = traffic.recorder().now();
    let injected = injected?;
    // A network fault is timed from when it healed.
    let since = match &faulted {
        Some((_, healed)) => *healed,
        None if scenario.is_network() => Instant::now(),
        None => fault_at,
    };
    result.operation = injected.operation;
    // Converged, as etcd tells it; then the operator must say so too.
    let seeds = {
        let live = c.live_endpoints();
        let members = traffic.members().clone();
        move || {
            let mut seeds = live();
            seeds.extend(members.endpoints());
            seeds
        }
    };
    let view = wait_converged(&seeds, injected.size, &injected.version, CONVERGE).await?;
    result.converge = since.elapsed();
    c.wait_running(injected.size, &injected.version, CONVERGE)
        .await
        .context("etcd converged, the coordinator's status did not follow")?;
    recorded_more(TRAFFIC_AROUND_FAULT).await?;
    if let Some(probe) = probe {
        let seen = probe.stop().await;
        result.budget_breaches = scenario.budget().judge(&seen);
        result.availability = Some(seen);
    }
    let history = traffic.stop().await;
    let members = view.endpoints();
    let mut final_state = final_read(&members, &keys, Duration::from_secs(30)).await?;
    let settled = settle(&view, &keys, SETTLE_WITHIN).await?;
    final_state.members = settled.reads;
    result.evidence.overlap = history.overlap();
    result.evidence.fault_overlap = history.overlap_within(fault_window_from, fault_window_until);
    let report = tokio::task::spawn_blocking(move || {
        check(&history, Some(&final_state), &CheckOptions::default())
    })
    .await?;
    result.operations = report.counts.total;
    result.lost = report.lost_writes.len();
    result.verdict = Some(report.verdict());
    result.evidence.watch_events = report.watch.events;
    result.evidence.compacted_watches = report.watch.compacted;
    result.evidence.lease_renewals = report.leases.renewals;
    result.evidence.serializable_reads = report.serializable_reads;
    result.hash_mismatches = compare_hashes(&settled.hashes)
        .iter()
        .map(|m| m.disagreeing.len())
        .sum();
    let log = monitor.log();
    // In flight: learners at once, and members joining or leaving at once; and never two
    // changes between consecutive member lists (a replacement that removes its stale entry
    // and adds itself on the same peer URL under one grant counts one).
    result.max_in_flight = log.max_learners.max(log.max_in_transition);
    result.step_violations = log.step_violations.clone();
    result.quorum_broken = quorum.broken();
    if scenario.is_network() {
        // Every member from before the fault is still there under its id, beyond the
        // removals the operation itself makes (a scale-down's): none was removed (and
        // replaced) for a partition alone.
        let before = faulted.as_ref().map_or(&initial, |(before, _)| before);
        let after = c.status().await.context("status after the fault")?;
        result.partition_removals = removed_for_partition(before, &after, injected.size);
    }
    if !report.is_pass() && !result.loss_expected {
        anyhow::bail!("checker: {report}");
    }
    Ok(())
}

/// Whether `status` is converged to `size` on `version`, as the coordinator reports it.
pub fn converged(status: &ClusterStatus, size: usize, version: &str) -> bool {
    is_running(status, size, version)
}
