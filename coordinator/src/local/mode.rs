//! `etcd-coordinator local`: the coordinator with the local runtime, driven by manifest
//! files re-read when they change.
//!
//! Pipeline per cluster, when something changes (the spec, a report that matters, a report
//! going stale, a grant, a request), soon while the planner acts or waits, and at a resync
//! (10 s) when settled: read manifests (no client) -> reconcile (observe, plan, act,
//! status) -> print progress for people.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use etcd_operator::{
    ClusterKey, etcd_bin::EtcdBinaries, manifest::read_manifests_by_file, resource::EtcdCluster,
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info, warn};

use super::{LocalPki, LocalRuntime, MemberNetns, SidecarCommand};
use crate::{
    controller::ClusterController,
    plan::{Phase, Policy},
    registry::{Registry, now_ms},
    security::ControlPlane,
    server,
};

/// Options of the local mode.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// A manifest file or a directory of them.
    pub manifests: PathBuf,
    /// Where clusters keep their state.
    pub state_dir: PathBuf,
    /// The coordinator's status address (plaintext, read-only).
    pub grpc_addr: SocketAddr,
    /// The coordinator's control address (mutual TLS, for the sidecars). Keep it the same
    /// across restarts: running sidecars that are adopted keep calling it.
    pub control_addr: SocketAddr,
    /// How long the members' certificates (and the coordinator's) are valid; renewed with a
    /// third of it left.
    pub cert_validity: Duration,
    /// How long the applications' client certificate is valid.
    pub client_cert_validity: Duration,
    /// How sidecars are started.
    pub sidecar: SidecarCommand,
    /// Planner tunables.
    pub policy: Policy,
    /// How often a cluster is reconciled when nothing wakes it while the planner acts or
    /// waits.
    pub interval: Duration,
    /// How often a settled cluster is reconciled when nothing it acts on changes (checked
    /// every [`REPORT_CHECK`], in memory): the resync.
    pub resync: Duration,
    /// Print progress lines on standard output.
    pub progress: bool,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (none when not set).
    pub metrics_addr: Option<SocketAddr>,
    /// New members run in network namespaces of their own (none: on 127.0.0.1).
    pub member_netns: Option<MemberNetns>,
}

struct ClusterTask {
    spec: watch::Sender<EtcdCluster>,
    task: JoinHandle<()>,
}

/// Runs until `shutdown` resolves; then stops every member cleanly.
pub async fn run_local(
    opts: LocalOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.state_dir)?;
    // Validate the manifests before anything starts: a typo must not start a cluster.
    let initial = read_manifests_by_file(&opts.manifests)?;
    // Each start's term is newer than every earlier one's: counted in the state directory.
    let epoch = crate::epoch::next_local_epoch(&opts.state_dir)?;
    let registry = Registry::always(epoch);
    // The control path's CA is made on first start and kept under <state>/pki/.
    let (pki, ca) = LocalPki::open(&opts.state_dir)?;
    let listener = tokio::net::TcpListener::bind(opts.grpc_addr).await?;
    let addr = listener.local_addr()?;
    let control_listener = tokio::net::TcpListener::bind(opts.control_addr)
        .await
        .map_err(|e| anyhow::anyhow!("--control-addr {}: {e}", opts.control_addr))?;
    let control_addr = control_listener.local_addr()?;
    let mut hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    if !control_addr.ip().is_unspecified() {
        hosts.push(control_addr.ip().to_string());
    }
    let control = ControlPlane::new(ca, hosts, opts.cert_validity);
    let control_host = if control_addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        control_addr.ip().to_string()
    };
    let runtime = Arc::new(
        LocalRuntime::new(
            opts.state_dir.clone(),
            opts.sidecar.clone(),
            format!("https://{control_host}:{}", control_addr.port()),
            EtcdBinaries::from_env(),
            Arc::new(pki),
            Arc::clone(&control),
            opts.client_cert_validity,
        )
        .with_member_netns(opts.member_netns.clone()),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve_status(
        listener,
        registry.clone(),
        None,
        stop_rx.clone(),
    ));
    let control_server = tokio::spawn(server::serve_control(
        control_listener,
        registry.clone(),
        control.control_server(),
        stop_rx,
    ));
    let renewer = tokio::spawn(crate::runtime::renew_certificates_forever(
        Arc::clone(&runtime),
        registry.clone(),
        Duration::from_secs(1),
    ));
    info!(%addr, %control_addr, state_dir = %opts.state_dir.display(), "coordinator serving etcdop.v1.Coordinator");
    let http = opts.metrics_addr.map(|metrics_addr| {
        let metrics = std::sync::Arc::clone(registry.metrics());
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve_http(metrics_addr, metrics).await {
                error!(%metrics_addr, error = %e, "metrics endpoint failed");
            }
        })
    });
    registry.metrics().set_ready(true);
    if opts.progress {
        println!(
            "coordinator: status on {addr} (grpcurl -plaintext {addr} list), control (mutual TLS) on {control_addr}, state in {}",
            opts.state_dir.display()
        );
    }

    let mut tasks: BTreeMap<ClusterKey, ClusterTask> = BTreeMap::new();
    let mut generations: BTreeMap<ClusterKey, (EtcdCluster, i64)> = BTreeMap::new();
    let mut last_error = String::new();
    // The file each cluster was last read from, to show a refusal on its clusters.
    let mut sources: BTreeMap<ClusterKey, std::path::PathBuf> = BTreeMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut pending = Some(initial);
    loop {
        let loaded = match pending.take() {
            Some(list) => Ok(list),
            None => read_manifests_by_file(&opts.manifests),
        };
        match loaded {
            Ok(list) => {
                last_error.clear();
                registry.set_refused_manifests(Vec::new());
                let mut seen = Vec::new();
                for (file, mut cluster) in list {
                    let key = ClusterKey::local(cluster.metadata.name.clone().unwrap_or_default());
                    sources.insert(key.clone(), file);
                    registry.with(&key, |entry, _| entry.manifest_error = None);
                    // Local mode has no API server: the generation counts spec changes.
                    let generation = match generations.get(&key) {
                        Some((old, g)) if old.spec == cluster.spec => *g,
                        Some((_, g)) => g + 1,
                        None => 1,
                    };
                    generations.insert(key.clone(), (cluster.clone(), generation));
                    cluster.metadata.generation = Some(generation);
                    seen.push(key.clone());
                    match tasks.get(&key) {
                        Some(t) => {
                            t.spec.send_if_modified(|old| {
                                if *old != cluster {
                                    *old = cluster.clone();
                                    true
                                } else {
                                    false
                                }
                            });
                        }
                        None => {
                            let (tx, rx) = watch::channel(cluster);
                            let task = tokio::spawn(cluster_loop(
                                key.clone(),
                                Arc::clone(&runtime),
                                registry.clone(),
                                opts.clone(),
                                rx,
                            ));
                            tasks.insert(key, ClusterTask { spec: tx, task });
                        }
                    }
                }
                let gone: Vec<ClusterKey> = tasks
                    .keys()
                    .filter(|k| !seen.contains(k))
                    .cloned()
                    .collect();
                for key in gone {
                    warn!(cluster = %key, "no longer declared: stopping its members (data kept)");
                    if let Some(t) = tasks.remove(&key) {
                        t.task.abort();
                    }
                    runtime.stop_cluster(&key).await;
                    registry.remove(&key);
                    generations.remove(&key);
                    sources.remove(&key);
                }
            }
            Err(e) => {
                let message = e.to_string();
                // Shown where users look: SpecValid False on the clusters the file declares;
                // a file that declares none known (its names cannot be read) is listed by
                // ListClusters and `etcd-coordinator status` on its own.
                let mut shown = false;
                for (key, file) in &sources {
                    if file == e.path() {
                        shown |= registry
                            .with_existing(key, |entry, _| {
                                entry.manifest_error = Some(message.clone());
                            })
                            .is_some();
                    }
                }
                registry.set_refused_manifests(if shown {
                    Vec::new()
                } else {
                    vec![(e.path().display().to_string(), message.clone())]
                });
                if message != last_error {
                    error!(error = %message, "manifests refused; running clusters are left as they are");
                    if opts.progress {
                        println!("error: {message} (nothing changed)");
                    }
                    last_error = message;
                }
            }
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => break,
        }
    }
    info!("stopping every member");
    if opts.progress {
        println!(
            "stopping: every member is stopped cleanly; data stays in {}",
            opts.state_dir.display()
        );
    }
    for t in tasks.values() {
        t.task.abort();
    }
    runtime.stop_all().await;
    renewer.abort();
    if let Some(http) = http {
        http.abort();
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), control_server).await;
    Ok(())
}

async fn cluster_loop(
    key: ClusterKey,
    runtime: Arc<LocalRuntime>,
    registry: Registry,
    opts: LocalOptions,
    mut spec: watch::Receiver<EtcdCluster>,
) {
    let controller = ClusterController::new(
        key.clone(),
        Arc::clone(&runtime),
        registry.clone(),
        opts.policy,
    );
    let mut last_line = String::new();
    let mut announced = false;
    let wake = registry.cluster_wake(&key);
    loop {
        let resource = spec.borrow_and_update().clone();
        let outcome = controller.reconcile(&resource).await;
        if opts.progress {
            let s = &outcome.status;
            let mut line = format!(
                "{key}: {} {}/{} ready, version {}",
                outcome.plan.phase,
                s.ready,
                s.size,
                if s.current_version.is_empty() {
                    "-"
                } else {
                    &s.current_version
                }
            );
            match &outcome.plan.action {
                crate::plan::Action::Steady => {}
                crate::plan::Action::Wait { reason } => {
                    line.push_str(&format!(" (waiting: {reason})"))
                }
                crate::plan::Action::RefuseSpec { message } => {
                    line.push_str(&format!(" (spec refused: {message})"))
                }
                a => line.push_str(&format!(" ({})", a.describe())),
            }
            if let Some(e) = &outcome.error {
                line.push_str(&format!(" [error: {e}]"));
            }
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
            let ready = outcome.plan.phase == Phase::Running && s.ready == s.size;
            if ready && !announced {
                let certs = runtime
                    .client_bundle(&key)
                    .map(|dir| {
                        format!(
                            " --cacert={} --cert={} --key={}",
                            dir.join("ca.crt").display(),
                            dir.join("tls.crt").display(),
                            dir.join("tls.key").display()
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{key} is ready. Try:\n  ETCDCTL_API=3 etcdctl --endpoints={}{certs} put foo bar\n  ETCDCTL_API=3 etcdctl --endpoints={}{certs} get foo",
                    s.endpoints, s.endpoints
                );
            }
            announced = ready;
        }
        // Event-driven: a report that matters, a grant released, an operator's request
        // or a spec change reconciles at once. Right after an action the next look comes
        // at once (what it started shows in the reports; a step that needs no report, as a
        // removal before the replacement's creation, is not held up). A settled cluster is
        // looked at again when what it acts on changes (a report going stale included),
        // else at the resync or its next scheduled backup.
        let next_backup = registry
            .with_existing(&key, |entry, _| entry.backups.next_due)
            .flatten();
        let look = next_look(&outcome, opts.interval, opts.resync, next_backup, now_ms());
        drop(outcome);
        match look {
            NextLook::After(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = spec.changed() => {}
                    _ = wake.notified() => {}
                }
            }
            NextLook::WhenChanged { resync } => {
                let stale_after = opts.policy.report_stale_after_ms;
                let seen = registry.fingerprint(&key, now_ms(), stale_after);
                let until = tokio::time::Instant::now() + resync;
                loop {
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(left.min(REPORT_CHECK)) => {}
                        _ = spec.changed() => break,
                        _ = wake.notified() => break,
                    }
                    if registry.fingerprint(&key, now_ms(), stale_after) != seen {
                        break;
                    }
                }
            }
        }
    }
}

/// How often a settled cluster's loop compares what it acts on with what it last saw.
pub const REPORT_CHECK: Duration = Duration::from_secs(1);

/// When a cluster's loop looks again if nothing wakes it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextLook {
    /// A pass after this long.
    After(Duration),
    /// Settled: a pass once what the reconciler acts on changes, or after `resync`.
    WhenChanged { resync: Duration },
}

/// Soon after an action (20 ms; 200 ms when it failed); after `interval` while the planner
/// waits or a pass failed; when settled, once something changes or at the resync, or at the
/// next scheduled backup when that comes first (`now`, `next_backup`: milliseconds).
fn next_look(
    outcome: &crate::controller::Outcome,
    interval: Duration,
    resync: Duration,
    next_backup: Option<i64>,
    now: i64,
) -> NextLook {
    match (&outcome.error, outcome.plan.action.changes_something()) {
        (None, true) => return NextLook::After(Duration::from_millis(20)),
        (Some(_), true) => return NextLook::After(Duration::from_millis(200)),
        (Some(_), false) => return NextLook::After(interval),
        (None, false) => {}
    }
    if !outcome.plan.settled() {
        return NextLook::After(interval);
    }
    let resync = match next_backup {
        Some(due) => {
            let wait = Duration::from_millis(u64::try_from(due.saturating_sub(now)).unwrap_or(0));
            wait.clamp(interval.min(resync), resync)
        }
        None => resync,
    };
    NextLook::WhenChanged { resync }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::Outcome,
        plan::{Action, Plan, WaitReason},
    };

    fn outcome(action: Action, phase: Phase, error: Option<&str>) -> Outcome {
        Outcome {
            plan: Plan {
                action,
                phase,
                warnings: Vec::new(),
            },
            status: Default::default(),
            error: error.map(String::from),
        }
    }

    #[test]
    fn a_settled_cluster_waits_for_a_change_and_a_busy_one_looks_again_soon() {
        const S: Duration = Duration::from_secs(1);
        const RESYNC: Duration = Duration::from_secs(10);
        const NOW: i64 = 1_000_000;
        let compact = || Action::Compact {
            name: "m0".into(),
            revision: 9,
        };
        let waiting = || Action::Wait {
            reason: WaitReason::MemberJoining("m2".into()),
        };
        let refused = || Action::RefuseSpec {
            message: "size: must be at least 1".into(),
        };
        let cases: Vec<(&str, Outcome, Option<i64>, NextLook)> = vec![
            (
                "an action: at once",
                outcome(compact(), Phase::Running, None),
                None,
                NextLook::After(Duration::from_millis(20)),
            ),
            (
                "an action that failed: a little later",
                outcome(compact(), Phase::Running, Some("unreachable")),
                None,
                NextLook::After(Duration::from_millis(200)),
            ),
            (
                "a wait: the interval",
                outcome(waiting(), Phase::Scaling, None),
                None,
                NextLook::After(S),
            ),
            (
                "a pass that failed while steady: the interval",
                outcome(Action::Steady, Phase::Running, Some("status not written")),
                None,
                NextLook::After(S),
            ),
            (
                "steady but not Running (a phase still to settle): the interval",
                outcome(Action::Steady, Phase::Degraded, None),
                None,
                NextLook::After(S),
            ),
            (
                "steady and Running: on a change, else at the resync",
                outcome(Action::Steady, Phase::Running, None),
                None,
                NextLook::WhenChanged { resync: RESYNC },
            ),
            (
                "a refused spec: on a change too",
                outcome(refused(), Phase::Invalid, None),
                None,
                NextLook::WhenChanged { resync: RESYNC },
            ),
            (
                "a backup due before the resync: at its time",
                outcome(Action::Steady, Phase::Running, None),
                Some(NOW + 4_000),
                NextLook::WhenChanged {
                    resync: Duration::from_secs(4),
                },
            ),
            (
                "a backup due after the resync: the resync",
                outcome(Action::Steady, Phase::Running, None),
                Some(NOW + 60_000),
                NextLook::WhenChanged { resync: RESYNC },
            ),
            (
                "a backup overdue: not sooner than the interval",
                outcome(Action::Steady, Phase::Running, None),
                Some(NOW - 5_000),
                NextLook::WhenChanged { resync: S },
            ),
        ];
        for (name, o, next_backup, want) in cases {
            assert_eq!(next_look(&o, S, RESYNC, next_backup, NOW), want, "{name}");
        }
    }
}
