//! `etcd-coordinator local`: the coordinator with the local runtime, driven by manifest
//! files re-read when they change.
//!
//! Every second: read the manifests, each file on its own, and choose the spec each
//! cluster runs on (no client, [`super::manifests`]); record each new valid spec in the
//! state directory, then hand it to the cluster's loop. Pipeline per cluster, when something
//! changes (the spec, a report that matters, a report going stale, a grant, a request), soon
//! while the planner acts or waits, and at a resync (10 s) when settled: reconcile (observe,
//! plan, act, status) -> print progress for people.
//!
//! One coordinator holds a state directory at a time (`<state>/coordinator.lock`): the
//! records in it assume one writer.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use etcd_operator::{
    ClusterKey, etcd_bin::EtcdBinaries, manifest::read_manifest_set, resource::EtcdCluster,
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info, warn};

use super::{
    LocalPki, LocalRuntime, MemberNetns, SidecarCommand,
    manifests::{
        Declared, LastSpec, choose, load_last_specs, remove_last_spec, to_record, write_last_spec,
    },
};
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
    /// How long a new etcd CA is valid (rotated with a third of it left).
    pub ca_validity: Duration,
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

/// The name of the lock file in the state directory.
pub const LOCK_FILE: &str = "coordinator.lock";

/// The state directory held by this coordinator (an exclusive lock on
/// `<state>/coordinator.lock`, released when the process ends, however it ends): the
/// records in it assume one writer.
pub struct StateDirLock {
    _file: std::fs::File,
}

impl StateDirLock {
    /// Takes the lock, or says which coordinator holds it.
    pub fn acquire(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(LOCK_FILE);
        let mut file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                anyhow::bail!(
                    "the state directory {} is in use by another coordinator ({}): one coordinator per state directory",
                    state_dir.display(),
                    holder.trim()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                anyhow::bail!("locking {}: {e}", path.display())
            }
        }
        file.set_len(0)?;
        write!(file, "pid {}", std::process::id())?;
        Ok(Self { _file: file })
    }
}

/// Runs until `shutdown` resolves; then stops every member cleanly.
pub async fn run_local(
    opts: LocalOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.state_dir)?;
    let _lock = StateDirLock::acquire(&opts.state_dir)?;
    // The same path whatever spelling it was given, so that the files recorded with each
    // cluster's last spec are found again after a restart.
    let manifests = std::fs::canonicalize(&opts.manifests)
        .map_err(|e| anyhow::anyhow!("{}: {e}", opts.manifests.display()))?;
    // Only a path that cannot be read stops the start; a file that does not parse is
    // refused on its own, and the clusters it declared run on as last read.
    let initial = read_manifest_set(&manifests)?;
    let (mut last, unreadable) = load_last_specs(&opts.state_dir);
    for e in unreadable {
        error!(error = %e, "the last spec recorded of a cluster cannot be read: the cluster runs only once its manifest parses");
    }
    // Each start's term is newer than every earlier one's: counted in the state directory.
    let epoch = crate::epoch::next_local_epoch(&opts.state_dir)?;
    let registry = Registry::always(epoch);
    // The clusters' decision records are kept in the state directory.
    registry.set_store(Arc::new(crate::record::LocalRecords::new(&opts.state_dir)));
    // The control path's CA is made on first start and kept under <state>/pki/.
    let (pki, ca) = LocalPki::open(&opts.state_dir)?;
    let pki = pki.with_ca_validity(opts.ca_validity);
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
    // The refusals last logged, to log each once.
    let mut logged: BTreeSet<String> = BTreeSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut pending = Some(initial);
    loop {
        let read = match pending.take() {
            Some(set) => Ok(set),
            None => read_manifest_set(&manifests),
        };
        let mut refusals: Vec<String> = Vec::new();
        match read {
            Ok(set) => {
                let mut declared = choose(&set, &last);
                // Recorded before it is applied: a restart with the file refused runs on
                // this spec, never an older one.
                for (key, spec) in to_record(&declared, &last) {
                    match write_last_spec(&opts.state_dir, &key, &spec) {
                        Ok(()) => {
                            last.insert(key, spec);
                        }
                        Err(e) => {
                            let current = tasks.get(&key).map(|t| t.spec.borrow().clone());
                            not_recorded(&mut declared, &last, current, &key, &spec, &e)
                        }
                    }
                }
                let mut listed = Vec::new();
                for (file, message) in &declared.unattributed {
                    listed.push((file.display().to_string(), message.clone()));
                    refusals.push(format!("{message} (nothing in it is applied)"));
                }
                registry.set_refused_manifests(listed);
                let declared_keys: BTreeSet<ClusterKey> =
                    declared.clusters.keys().cloned().collect();
                for (key, chosen) in declared.clusters {
                    if let Some(why) = &chosen.refused {
                        refusals.push(format!("{why} ({key} runs on as last read)"));
                    }
                    registry.with(&key, |entry, _| entry.manifest_error = chosen.refused);
                    let mut cluster = chosen.cluster;
                    // Local mode has no API server: the generation counts spec changes.
                    let generation = match generations.get(&key) {
                        Some((old, g)) if old.spec == cluster.spec => *g,
                        Some((_, g)) => g + 1,
                        None => 1,
                    };
                    generations.insert(key.clone(), (cluster.clone(), generation));
                    cluster.metadata.generation = Some(generation);
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
                // No longer declared (its file removed, or parsing without it): its last
                // spec is forgotten first, so that no restart runs it again, then its
                // members are stopped, their data kept.
                let gone: BTreeSet<ClusterKey> = tasks
                    .keys()
                    .chain(last.keys())
                    .filter(|k| !declared_keys.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    // Only a spec recorded (under a valid name) is removed.
                    if last.contains_key(&key) {
                        match remove_last_spec(&opts.state_dir, &key) {
                            Ok(()) => {
                                last.remove(&key);
                            }
                            Err(e) => {
                                error!(cluster = %key, error = %e, "cannot forget the last spec of a cluster no longer declared");
                            }
                        }
                    }
                    if let Some(t) = tasks.remove(&key) {
                        etcd_operator::failpoint!("coordinator.local.undeclared-after-spec-remove");
                        warn!(cluster = %key, "no longer declared: stopping its members (data kept)");
                        t.task.abort();
                        runtime.stop_cluster(&key).await;
                        registry.remove(&key);
                    }
                    generations.remove(&key);
                }
            }
            Err(e) => {
                // The path itself cannot be read: nothing changes.
                let message = e.to_string();
                registry
                    .set_refused_manifests(vec![(e.path().display().to_string(), message.clone())]);
                refusals.push(format!("{message} (nothing changed)"));
            }
        }
        let now: BTreeSet<String> = refusals.into_iter().collect();
        for message in now.difference(&logged) {
            error!(error = %message, "manifest refused; every other file is applied");
            if opts.progress {
                println!("error: {message}");
            }
        }
        logged = now;
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

/// A new spec of `key` that could not be recorded is not applied (a restart with its file
/// refused would run an older one): the cluster runs on the spec recorded before (or, with
/// none recorded, the one it runs on now, `current`), or, new, is not created; the refusal
/// says why.
fn not_recorded(
    declared: &mut Declared,
    last: &BTreeMap<ClusterKey, LastSpec>,
    current: Option<EtcdCluster>,
    key: &ClusterKey,
    spec: &LastSpec,
    error: &std::io::Error,
) {
    let why = format!(
        "{}: the spec of {key} read from it cannot be recorded in the state directory ({error}); it is applied once it is",
        spec.file.display()
    );
    error!(cluster = %key, error = %error, "cannot record the spec read");
    let previous = last
        .get(key)
        .map(|recorded| recorded.cluster.clone())
        .or(current);
    match previous {
        Some(previous) => {
            if let Some(chosen) = declared.clusters.get_mut(key) {
                chosen.cluster = previous;
                chosen.refused = Some(why);
            }
        }
        None => {
            declared.clusters.remove(key);
            declared.unattributed.push((spec.file.clone(), why));
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
                refused: None,
            },
            status: Default::default(),
            error: error.map(String::from),
        }
    }

    #[tokio::test]
    async fn a_state_directory_is_held_by_one_coordinator_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = StateDirLock::acquire(dir.path()).unwrap();
        let e = StateDirLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(e.contains("in use by another coordinator"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        // A second coordinator on the same directory stops before it starts anything.
        let manifest = dir.path().join("c.yaml");
        std::fs::write(&manifest, "").unwrap();
        let opts = LocalOptions {
            manifests: manifest,
            state_dir: dir.path().to_path_buf(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            control_addr: "127.0.0.1:0".parse().unwrap(),
            cert_validity: Duration::from_secs(3600),
            client_cert_validity: Duration::from_secs(3600),
            ca_validity: etcd_operator::pki::CA_VALIDITY,
            sidecar: SidecarCommand::binary("/nonexistent".into()),
            policy: Policy::default(),
            interval: Duration::from_secs(1),
            resync: Duration::from_secs(10),
            progress: false,
            metrics_addr: None,
            member_netns: None,
        };
        let e = run_local(opts, std::future::pending()).await.unwrap_err();
        assert!(
            e.to_string().contains("in use by another coordinator"),
            "{e}"
        );
        assert!(!dir.path().join("pki").exists(), "nothing was started");
        drop(held);
        drop(StateDirLock::acquire(dir.path()).unwrap());
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
