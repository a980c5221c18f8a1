//! The sidecar against the coordinator's own service: real etcd processes on 127.0.0.1,
//! each under a sidecar the test starts (as a runtime would), registering, reporting and
//! taking membership grants from the real `CoordinatorService` over a `Registry`, on the
//! control port (mutual TLS, every caller checked against its certificate, no grant in the
//! settle window after a start). Every grant the service gives and every release it accepts
//! is recorded where the service answers, so the tests judge the real history.
//!
//! The test plays only the reconciler's part that the service reads from the registry:
//! which members the runtime has, which one may bootstrap, and whether etcd's member list
//! can be read (the cluster exists). Tests that start etcd take the machine-wide lock.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use etcd_client::{Client, GetOptions};
use etcd_coordinator::{
    local::pki::LocalPki,
    registry::{InitialBootstrap, Registry, now_ms},
    security::ControlPlane,
    service::{Access, CoordinatorService, RECOVERY_SETTLE_MS},
};
use etcd_operator::{
    ClusterKey,
    pki::{DEFAULT_CERT_VALIDITY, MemberCertSpec, member_hosts},
    proto::{
        Backup, ChangeKind, ClusterStatus, DeleteMemberRequest, DeleteMemberResponse,
        ForceNewClusterRequest, GetClusterRequest, GrantRequest, GrantResponse, HandoffRequest,
        HealthReport, LeaveRequest, ListBackupsRequest, ListBackupsResponse, ListClustersRequest,
        ListClustersResponse, MemberPhase, RegisterRequest, RegisterResponse, ReleaseGrantRequest,
        ReleaseGrantResponse, RenewGrantRequest, ReportHealthResponse, TakeBackupRequest,
        coordinator_server::{Coordinator, CoordinatorServer},
        sidecar_client::SidecarClient,
    },
};
use etcd_sidecar::{LIVENESS_SERVICE, health::SERVICE_NAME};
use testkit::{
    SidecarProc, SidecarSpec, free_port, serial_guard, wait_for, watcher::MembershipWatcher,
};
use tokio::{sync::watch, task::JoinHandle};
use tonic::{Request, Response, Status, Streaming, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const CLUSTER: &str = "life";
const FORM_DEADLINE: Duration = Duration::from_secs(90);

/// The coordinator's binary, which embeds the sidecar (`etcd-coordinator sidecar run`).
fn sidecar_spec(cluster: &str, name: &str, base: &Path, coordinator_url: &str) -> SidecarSpec {
    let mut spec = SidecarSpec::new(
        Path::new(env!("CARGO_BIN_EXE_etcd-coordinator")),
        cluster,
        name,
        base,
        coordinator_url,
    );
    spec.leading_args = vec!["sidecar".into()];
    spec
}

fn name(i: u32) -> String {
    etcd_operator::naming::member_name(CLUSTER, i)
}

/// One grant event, as the service answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum GrantEvent {
    /// A grant was given (recorded once the service answered).
    Granted {
        id: String,
        member: String,
        kind: ChangeKind,
        expires_at_unix_ms: i64,
        at: Duration,
        at_unix_ms: i64,
    },
    /// Its holder renewed a grant: it lapses later.
    Renewed { id: String, expires_at_unix_ms: i64 },
    /// A grant was given back (recorded before the service was asked, kept when it
    /// released it): so a correct service's next grant is always recorded later.
    Released {
        id: String,
        succeeded: bool,
        member_id: u64,
        at: Duration,
    },
}

/// The grant events of a run, in the order they were recorded.
#[derive(Clone)]
struct GrantLog {
    started: Instant,
    events: Arc<Mutex<Vec<GrantEvent>>>,
}

impl GrantLog {
    fn events(&self) -> Vec<GrantEvent> {
        self.events.lock().unwrap().clone()
    }

    /// The grants given, in order: (member, kind).
    fn granted(&self) -> Vec<(String, ChangeKind)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                GrantEvent::Granted { member, kind, .. } => Some((member, kind)),
                GrantEvent::Released { .. } | GrantEvent::Renewed { .. } => None,
            })
            .collect()
    }
}

/// Fails unless no two grants were ever in flight together: each grant was given after
/// the one before it was released (or had lapsed). Returns how many grants were given.
fn assert_one_grant_at_a_time(events: &[GrantEvent]) -> usize {
    struct Interval<'a> {
        id: &'a str,
        given: Duration,
        given_unix_ms: i64,
        lapses_unix_ms: i64,
        released: Option<Duration>,
    }
    let mut grants: Vec<Interval> = Vec::new();
    for e in events {
        match e {
            GrantEvent::Granted {
                id,
                expires_at_unix_ms,
                at,
                at_unix_ms,
                ..
            } => grants.push(Interval {
                id,
                given: *at,
                given_unix_ms: *at_unix_ms,
                lapses_unix_ms: *expires_at_unix_ms,
                released: None,
            }),
            GrantEvent::Renewed {
                id,
                expires_at_unix_ms,
            } => {
                let grant = grants.iter_mut().find(|g| g.id == id);
                let grant =
                    grant.unwrap_or_else(|| panic!("{id} renewed, never given: {events:?}"));
                assert!(
                    grant.released.is_none(),
                    "{id} renewed after its release: {events:?}"
                );
                grant.lapses_unix_ms = grant.lapses_unix_ms.max(*expires_at_unix_ms);
            }
            GrantEvent::Released { id, at, .. } => {
                let grant = grants.iter_mut().find(|g| g.id == id);
                let grant =
                    grant.unwrap_or_else(|| panic!("{id} released, never given: {events:?}"));
                assert!(grant.released.is_none(), "{id} released twice: {events:?}");
                grant.released = Some(*at);
            }
        }
    }
    grants.sort_by_key(|g| g.given);
    for pair in grants.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        let ended = match earlier.released {
            Some(released) => released < later.given,
            None => later.given_unix_ms >= earlier.lapses_unix_ms,
        };
        assert!(
            ended,
            "grant {} was given while {} was in flight: {events:?}",
            later.id, earlier.id
        );
    }
    grants.len()
}

/// The real service, with every grant and release it answers recorded.
#[derive(Clone)]
struct Recorded {
    service: CoordinatorService,
    log: GrantLog,
}

#[tonic::async_trait]
impl Coordinator for Recorded {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.service.register(request).await
    }

    async fn report_health(
        &self,
        request: Request<Streaming<HealthReport>>,
    ) -> Result<Response<ReportHealthResponse>, Status> {
        self.service.report_health(request).await
    }

    async fn request_grant(
        &self,
        request: Request<GrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        let (member, kind) = (
            request.get_ref().member_name.clone(),
            request.get_ref().kind(),
        );
        let response = self.service.request_grant(request).await?;
        let answer = response.get_ref();
        if answer.granted {
            let at = self.log.started.elapsed();
            let mut events = self.log.events.lock().unwrap();
            // Asking again while holding it answers the same grant.
            let known = events
                .iter()
                .any(|e| matches!(e, GrantEvent::Granted { id, .. } if *id == answer.grant_id));
            if !known {
                events.push(GrantEvent::Granted {
                    id: answer.grant_id.clone(),
                    member,
                    kind,
                    expires_at_unix_ms: answer.expires_at_unix_ms,
                    at,
                    at_unix_ms: now_ms(),
                });
            }
        }
        Ok(response)
    }

    async fn release_grant(
        &self,
        request: Request<ReleaseGrantRequest>,
    ) -> Result<Response<ReleaseGrantResponse>, Status> {
        let asked = request.get_ref().clone();
        let at = self.log.started.elapsed();
        let response = self.service.release_grant(request).await?;
        if response.get_ref().released {
            self.log.events.lock().unwrap().push(GrantEvent::Released {
                id: asked.grant_id,
                succeeded: asked.succeeded,
                member_id: asked.member_id,
                at,
            });
        }
        Ok(response)
    }

    async fn renew_grant(
        &self,
        request: Request<RenewGrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        let response = self.service.renew_grant(request).await?;
        let answer = response.get_ref();
        if answer.granted {
            self.log.events.lock().unwrap().push(GrantEvent::Renewed {
                id: answer.grant_id.clone(),
                expires_at_unix_ms: answer.expires_at_unix_ms,
            });
        }
        Ok(response)
    }

    async fn list_clusters(
        &self,
        request: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        self.service.list_clusters(request).await
    }

    async fn get_cluster(
        &self,
        request: Request<GetClusterRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        self.service.get_cluster(request).await
    }

    async fn delete_member(
        &self,
        request: Request<DeleteMemberRequest>,
    ) -> Result<Response<DeleteMemberResponse>, Status> {
        self.service.delete_member(request).await
    }

    async fn rotate_ca(
        &self,
        request: Request<etcd_operator::proto::RotateCaRequest>,
    ) -> Result<Response<etcd_operator::proto::RotateCaResponse>, Status> {
        self.service.rotate_ca(request).await
    }

    async fn take_backup(
        &self,
        request: Request<TakeBackupRequest>,
    ) -> Result<Response<Backup>, Status> {
        self.service.take_backup(request).await
    }

    async fn list_backups(
        &self,
        request: Request<ListBackupsRequest>,
    ) -> Result<Response<ListBackupsResponse>, Status> {
        self.service.list_backups(request).await
    }
}

/// The coordinator's service on a free port of 127.0.0.1, over a registry the test keeps as
/// the reconciler would; stopped when dropped.
struct ServedCoordinator {
    /// Its URL (https: mutual TLS).
    url: String,
    key: ClusterKey,
    registry: Registry,
    control: Arc<ControlPlane>,
    pki: LocalPki,
    grants: GrantLog,
    /// Client URLs of the members started, where the cluster's member list is read.
    endpoints: Arc<Mutex<Vec<String>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServedCoordinator {
    /// Serves `cluster`, of which `seed` may bootstrap, with its PKI under `state`.
    async fn start(cluster: &str, seed: &str, state: &Path) -> Self {
        etcd_sidecar::tls::install_default_provider();
        let (pki, ca) = LocalPki::open(state).unwrap();
        let control = ControlPlane::new(ca, vec!["127.0.0.1".into()], DEFAULT_CERT_VALIDITY);
        let registry = Registry::new();
        let key = ClusterKey::local(cluster);
        registry.with(&key, |entry, _| {
            entry.seed = Some(seed.to_string());
            entry.recovered = true;
            // A new cluster's record, as the reconciler reads it first.
            entry.record = Some(Default::default());
            // As a coordinator that finds members at its start: no grant before their
            // reports are in.
            entry.settle_until = now_ms() + RECOVERY_SETTLE_MS;
        });
        let grants = GrantLog {
            started: Instant::now(),
            events: Arc::default(),
        };
        let service = Recorded {
            service: CoordinatorService::new(registry.clone(), Access::Authenticated),
            log: grants.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (stop, mut stopped) = watch::channel(false);
        let server = tonic::transport::Server::builder()
            .add_service(CoordinatorServer::new(service))
            .serve_with_incoming_shutdown(
                control.control_server().incoming(listener),
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            );
        let endpoints: Arc<Mutex<Vec<String>>> = Arc::default();
        let tasks = vec![
            tokio::spawn(async move {
                let _ = server.await;
            }),
            tokio::spawn(watch_cluster_exists(
                registry.clone(),
                key.clone(),
                Arc::clone(&endpoints),
            )),
        ];
        Self {
            url,
            key,
            registry,
            control,
            pki,
            grants,
            endpoints,
            stop,
            tasks,
        }
    }

    /// Makes `spec` a member of the runtime, as the runtime would before starting it:
    /// issues its control-path certificate and lists it among the cluster's members.
    fn admit(&self, spec: &mut SidecarSpec) {
        let urls = [spec.client_url(), spec.peer_url(), spec.grpc_url()];
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        self.pki
            .ensure_member(
                self.control.ca(),
                &MemberCertSpec {
                    cluster: self.key.clone(),
                    member: spec.name.clone(),
                    hosts: member_hosts(&urls, None),
                    etcd_tls: false,
                    validity: DEFAULT_CERT_VALIDITY,
                },
            )
            .unwrap();
        spec.tls_dir = self.pki.member_dir(&self.key, &spec.name);
        self.registry.with(&self.key, |entry, _| {
            if !entry.runtime_members.contains(&spec.name) {
                entry.runtime_members.push(spec.name.clone());
            }
        });
        let mut endpoints = self.endpoints.lock().unwrap();
        if !endpoints.contains(&spec.client_url()) {
            endpoints.push(spec.client_url());
        }
    }

    /// The latest report of every member.
    fn reports(&self) -> BTreeMap<String, HealthReport> {
        self.registry.with(&self.key, |entry, _| {
            entry
                .reports
                .iter()
                .map(|(name, r)| (name.clone(), r.report.clone()))
                .collect()
        })
    }

    /// The latest report of `member`.
    fn report(&self, member: &str) -> Option<HealthReport> {
        self.reports().remove(member)
    }

    /// The epoch of the coordinator's term, which the sidecars admit.
    fn epoch(&self) -> u64 {
        self.registry.leadership().current().expect("it leads")
    }
}

impl Drop for ServedCoordinator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The reconciler's reading of etcd, which Register and the bootstrap grant depend on: the
/// cluster exists while its member list can be read from the members started.
async fn watch_cluster_exists(
    registry: Registry,
    key: ClusterKey,
    endpoints: Arc<Mutex<Vec<String>>>,
) {
    loop {
        let urls = endpoints.lock().unwrap().clone();
        let read = async {
            let mut c = Client::connect(&urls, None).await.ok()?;
            c.member_list().await.ok()
        };
        let exists = !urls.is_empty()
            && matches!(
                tokio::time::timeout(Duration::from_secs(1), read).await,
                Ok(Some(_))
            );
        registry.with(&key, |entry, _| entry.cluster_exists = exists);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Fixture {
    coordinator: ServedCoordinator,
    dir: tempfile::TempDir,
    members: BTreeMap<String, SidecarProc>,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            coordinator: ServedCoordinator::start(CLUSTER, &name(0), &dir.path().join("state"))
                .await,
            dir,
            members: BTreeMap::new(),
        }
    }

    /// A fixture whose grants last `lease` unless renewed.
    async fn with_grant_lease(lease: Duration) -> Self {
        let f = Self::new().await;
        f.coordinator.registry.set_grant_lease(lease);
        f
    }

    fn spec(&self, i: u32) -> SidecarSpec {
        sidecar_spec(CLUSTER, &name(i), self.dir.path(), &self.coordinator.url)
    }

    fn start(&mut self, mut spec: SidecarSpec) {
        self.coordinator.admit(&mut spec);
        let proc = SidecarProc::start(spec).unwrap();
        self.members.insert(proc.spec.name.clone(), proc);
    }

    fn grants(&self) -> &GrantLog {
        &self.coordinator.grants
    }

    fn endpoints(&self) -> Vec<String> {
        self.members.values().map(|m| m.spec.client_url()).collect()
    }

    fn logs(&self) -> String {
        self.members
            .values()
            .map(|m| format!("--- {} ---\n{}", m.spec.name, m.log_tail(30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until etcd lists `n` voters, no learner, and every sidecar reports its member
    /// healthy and running.
    async fn wait_voters(&self, n: usize) -> Vec<etcd_client::Member> {
        self.wait_voters_without(n, 0).await
    }

    /// As `wait_voters`, and member id `gone` is not in the list.
    async fn wait_voters_without(&self, n: usize, gone: u64) -> Vec<etcd_client::Member> {
        let endpoints = self.endpoints();
        let names: Vec<String> = self.members.keys().cloned().collect();
        let result = wait_for(&format!("{n} healthy voters"), FORM_DEADLINE, || {
            let endpoints = endpoints.clone();
            let reports = self.coordinator.reports();
            let names = names.clone();
            async move {
                let mut c = Client::connect(&endpoints, None).await.ok()?;
                let list = c.member_list().await.ok()?;
                let members = list.members().to_vec();
                let voters = members.iter().filter(|m| !m.is_learner()).count();
                let all_healthy = names.iter().all(|n| {
                    reports.get(n).is_some_and(|r| {
                        r.healthy && !r.learner && r.phase() == MemberPhase::Running
                    })
                });
                let gone_ok = members.iter().all(|m| m.id() != gone);
                (members.len() == n && voters == n && all_healthy && gone_ok).then_some(members)
            }
        })
        .await;
        match result {
            Ok(m) => m,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    async fn client(&self) -> Client {
        Client::connect(self.endpoints(), None).await.unwrap()
    }
}

/// Forms an `n`-member cluster, all sidecars started at once.
async fn form(n: u32) -> (Fixture, MembershipWatcher) {
    let mut f = Fixture::new().await;
    for i in 0..n {
        let spec = f.spec(i);
        f.start(spec);
    }
    let endpoints = f.endpoints();
    let watcher = MembershipWatcher::start(move || endpoints.clone());
    f.wait_voters(n as usize).await;
    (f, watcher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_form_a_cluster_one_learner_at_a_time() {
    let _serial = serial_guard();
    let (f, watcher) = form(3).await;
    let history = watcher.history();
    assert!(history.samples > 0, "the watcher read no member list");
    assert!(
        history.max_learners <= 1,
        "more than one learner at once: {history:?}"
    );
    // The grants the service gave, one at a time on the recorded history.
    let events = f.grants().events();
    assert_eq!(assert_one_grant_at_a_time(&events), 3, "{events:?}");
    let granted = f.grants().granted();
    assert_eq!(
        granted[0],
        (name(0), ChangeKind::Bootstrap),
        "the seed bootstraps first: {events:?}"
    );
    assert!(
        granted[1..].iter().all(|(_, k)| *k == ChangeKind::Add),
        "{events:?}"
    );
    let released_ok = events
        .iter()
        .filter(|e| matches!(e, GrantEvent::Released { succeeded: true, member_id, .. } if *member_id != 0))
        .count();
    assert_eq!(released_ok, 3, "{events:?}");

    let mut c = f.client().await;
    c.put("foo", "bar", None).await.unwrap();
    let got = c.get("foo", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "bar");
}

/// A grant lasts as long as its holder works under it, renewed, not a fixed time: with
/// grants of a 400 ms lease, joins that take longer each keep theirs until they give it
/// back, and no grant is given while another's holder still works (none lapses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_longer_than_its_lease_keeps_its_grant_by_renewing_it() {
    let _serial = serial_guard();
    let mut f = Fixture::with_grant_lease(Duration::from_millis(400)).await;
    for i in 0..3 {
        let spec = f.spec(i);
        f.start(spec);
    }
    f.wait_voters(3).await;
    let events = f.grants().events();
    assert_eq!(assert_one_grant_at_a_time(&events), 3, "{events:?}");
    let renewed = events
        .iter()
        .filter(|e| matches!(e, GrantEvent::Renewed { .. }))
        .count();
    assert!(renewed > 0, "no grant was renewed: {events:?}");
    // Each grant was given back by its holder before the next was given: none lapsed
    // under a holder still at work.
    let mut given: Vec<(String, Duration)> = Vec::new();
    for e in &events {
        if let GrantEvent::Granted { id, at, .. } = e {
            for (earlier, _) in &given {
                assert!(
                    events.iter().any(|r| matches!(r,
                        GrantEvent::Released { id: released, at: when, .. }
                            if released == earlier && when < at)),
                    "{id} given before {earlier} was given back: {events:?}"
                );
            }
            given.push((id.clone(), *at));
        }
    }
}

/// The static bootstrap: three initial members told their role by the service start one
/// cluster together, every one of them a voter from the first member list on, under the one
/// Bootstrap grant the coordinator holds; no sidecar asks for a grant of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_initial_members_bootstrap_together_under_the_coordinators_one_grant() {
    let _serial = serial_guard();
    let mut f = Fixture::new().await;
    let mut specs: Vec<SidecarSpec> = (0..3).map(|i| f.spec(i)).collect();
    for spec in &mut specs {
        f.coordinator.admit(spec);
    }
    let names: Vec<String> = (0..3).map(name).collect();
    let key = f.coordinator.key.clone();
    let grant_id = f.coordinator.registry.with(&key, |entry, grants| {
        let grant = grants
            .request(&key, &names[0], ChangeKind::Bootstrap, now_ms())
            .expect("the bootstrap's grant");
        entry.seed = None;
        entry.initial = Some(InitialBootstrap {
            names: names.clone(),
            initial_cluster: InitialBootstrap::initial_cluster_of(&names, |n| {
                specs.iter().find(|s| s.name == n).map(|s| s.peer_url())
            })
            .expect("every peer URL"),
            token: format!("life-{}", now_ms()),
            grant_id: grant.id.clone(),
            began: None,
        });
        grant.id
    });
    for spec in specs {
        let proc = SidecarProc::start(spec).unwrap();
        f.members.insert(proc.spec.name.clone(), proc);
    }
    let endpoints = f.endpoints();
    let watcher = MembershipWatcher::start(move || endpoints.clone());
    let members = f.wait_voters(3).await;

    let history = watcher.history();
    assert!(history.samples > 0, "the watcher read no member list");
    assert_eq!(
        history.max_learners, 0,
        "an initial member is a voter from the start: {history:?}"
    );
    let events = f.grants().events();
    assert!(
        f.grants().granted().is_empty(),
        "no sidecar asks for a grant of its own: {events:?}"
    );
    let (in_flight, began) = f.coordinator.registry.with(&key, |entry, grants| {
        (
            grants.in_flight(&key, now_ms()).map(|g| g.id.clone()),
            entry.initial.as_ref().and_then(|i| i.began),
        )
    });
    assert_eq!(
        in_flight.as_deref(),
        Some(grant_id.as_str()),
        "the bootstrap held the one grant throughout"
    );
    assert!(began.is_some(), "the first role given starts the deadline");
    let mut listed: Vec<&str> = members.iter().map(|m| m.name()).collect();
    listed.sort();
    assert_eq!(listed, names.iter().map(String::as_str).collect::<Vec<_>>());
    let reports = f.coordinator.reports();
    let clusters: std::collections::BTreeSet<u64> =
        reports.values().map(|r| r.cluster_id).collect();
    assert_eq!(clusters.len(), 1, "one cluster, not three: {reports:?}");

    let mut c = f.client().await;
    c.put("foo", "bar", None).await.unwrap();
    let got = c.get("foo", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "bar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_etcd_restarts_on_its_data_with_the_same_member_id() {
    let _serial = serial_guard();
    let (f, _watcher) = form(3).await;
    let mut c = f.client().await;
    c.put("before-kill", "kept", None).await.unwrap();
    let victim = name(1);
    let report = f.coordinator.report(&victim).unwrap();
    let (old_pid, old_id) = (report.etcd_pid, report.member_id);
    assert!(old_pid != 0 && old_id != 0, "{report:?}");
    let events_before = f.grants().events().len();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let report = wait_for(
        "the killed etcd to come back healthy",
        Duration::from_secs(60),
        || {
            let r = f.coordinator.report(&victim);
            async move { r.filter(|r| r.etcd_pid != 0 && r.etcd_pid != old_pid && r.healthy) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    assert_eq!(report.member_id, old_id, "the member id must not change");
    assert!(report.etcd_restarts >= 1, "{report:?}");
    assert_eq!(
        f.grants().events().len(),
        events_before,
        "no membership change may happen"
    );
    let members = f.wait_voters(3).await;
    assert!(members.iter().any(|m| m.id() == old_id));

    // The value written before the kill is served by the restarted member itself.
    let url = f.members[&victim].spec.client_url();
    let mut own = Client::connect([url], None).await.unwrap();
    let got = own
        .get("before-kill", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_data_rejoins_as_a_new_member_without_losing_quorum() {
    let _serial = serial_guard();
    let (mut f, watcher) = form(3).await;
    let mut c = f.client().await;
    c.put("before-wipe", "kept", None).await.unwrap();

    // Pick a follower so that the writer below never waits on an election.
    let victim = (0..3)
        .map(name)
        .find(|n| f.coordinator.report(n).is_some_and(|r| !r.leader))
        .unwrap();
    let old_id = f.coordinator.report(&victim).unwrap().member_id;
    let survivors: Vec<String> = f
        .members
        .values()
        .filter(|m| m.spec.name != victim)
        .map(|m| m.spec.client_url())
        .collect();

    // A writer on the surviving members for the whole replacement.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut c = Client::connect(&survivors, None).await.unwrap();
        let (mut ok, mut failed) = (Vec::new(), 0u32);
        let mut i = 0u32;
        while !*stop_rx.borrow() {
            let key = format!("w/{i:05}");
            match tokio::time::timeout(Duration::from_secs(3), c.put(key.clone(), "v", None)).await
            {
                Ok(Ok(_)) => ok.push(key),
                _ => failed += 1,
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed)
    });

    let mut proc = f.members.remove(&victim).unwrap();
    proc.kill();
    let spec = proc.spec.clone();
    drop(proc);
    let events_before_wipe = f.grants().events().len();
    std::fs::remove_dir_all(&spec.member_dir).unwrap();
    f.start(spec);

    let members = f.wait_voters_without(3, old_id).await;
    stop_tx.send(true).unwrap();
    let (acked, failed) = writer.await.unwrap();
    let new_id = f.coordinator.report(&victim).unwrap().member_id;
    assert_ne!(
        new_id, old_id,
        "a member with no data must join under a new id"
    );
    assert!(
        members.iter().all(|m| m.id() != old_id),
        "the stale entry must be gone"
    );
    assert!(watcher.history().max_learners <= 1);
    assert_eq!(
        failed, 0,
        "writes failed while the member was replaced: quorum was not kept"
    );
    assert!(!acked.is_empty());

    // Earlier data, and every acknowledged write, is on the new member.
    let url = f.members[&victim].spec.client_url();
    let mut own = Client::connect([url], None).await.unwrap();
    let got = own
        .get("before-wipe", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "kept");
    let all = own
        .get(
            "w/",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await
        .unwrap();
    let present: std::collections::HashSet<&str> =
        all.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    for k in &acked {
        assert!(
            present.contains(k.as_str()),
            "acknowledged write {k} missing on the new member"
        );
    }
    // One rejoin is one membership change: exactly one grant, a replace (the stale entry
    // is removed and the learner added under it), never a second add afterwards.
    let events = f.grants().events();
    let kinds: Vec<ChangeKind> = events[events_before_wipe..]
        .iter()
        .filter_map(|e| match e {
            GrantEvent::Granted { member, kind, .. } if *member == victim => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [ChangeKind::Replace],
        "grants taken by the rejoining member\n{}",
        f.members[&victim].log_tail(200)
    );
    assert_eq!(assert_one_grant_at_a_time(&events), 4, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_whose_answer_was_lost_is_not_repeated() {
    let _serial = serial_guard();
    let (mut f, _watcher) = form(2).await;
    let spec = f.spec(2);
    // The add succeeded but its caller never saw the answer: the learner is in the list.
    // (etcd refuses a MemberAdd for a few seconds after a promotion: retry until accepted.)
    let endpoints = f.endpoints();
    let peer_url = spec.peer_url();
    let pre_added_id = wait_for(
        "etcd to accept the learner",
        Duration::from_secs(30),
        || {
            let endpoints = endpoints.clone();
            let peer_url = peer_url.clone();
            async move {
                let mut c = Client::connect(&endpoints, None).await.ok()?;
                let opts = etcd_client::MemberAddOptions::new().with_is_learner();
                let added = c.member_add([peer_url], Some(opts)).await.ok()?;
                added.member().map(|m| m.id())
            }
        },
    )
    .await
    .unwrap();
    f.start(spec);
    let members = f.wait_voters(3).await;
    assert_eq!(members.len(), 3, "a second member was added");
    let report = f.coordinator.report(&name(2)).unwrap();
    assert_eq!(
        report.member_id, pre_added_id,
        "the pre-added learner must be the one that joins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_leaves_after_moving_leadership() {
    let _serial = serial_guard();
    let (f, _watcher) = form(3).await;
    let leader = f
        .coordinator
        .reports()
        .into_values()
        .find(|r| r.leader)
        .expect("a leader reported");
    // Leave answers only the coordinator, over mutual TLS.
    let key = ClusterKey::local(CLUSTER);
    let tls = f
        .coordinator
        .control
        .sidecar_client(&key, &leader.member_name);
    let channel =
        etcd_sidecar::tls::channel(&leader.sidecar_url, tls, Duration::from_secs(3), None).unwrap();
    let mut sidecar = SidecarClient::new(channel);
    let resp = sidecar
        .leave(LeaveRequest {
            reason: "test".into(),
            coordinator_epoch: f.coordinator.epoch(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()))
        .into_inner();
    assert!(
        resp.moved_leadership,
        "the leader must move leadership before leaving"
    );
    assert_eq!(resp.removed_member_id, leader.member_id);

    let others: Vec<String> = f
        .members
        .values()
        .filter(|m| m.spec.name != leader.member_name)
        .map(|m| m.spec.client_url())
        .collect();
    let mut c = Client::connect(&others, None).await.unwrap();
    let list = c.member_list().await.unwrap();
    assert_eq!(list.members().len(), 2);
    assert!(list.members().iter().all(|m| m.id() != leader.member_id));
    let status = c.status().await.unwrap();
    assert_ne!(status.leader(), leader.member_id);
    assert_ne!(status.leader(), 0);

    let dir = &f.members[&leader.member_name].spec.member_dir;
    // Emptied, not removed: etcd's directory may be a volume's mount point.
    assert!(
        std::fs::read_dir(dir.join("etcd")).map_or(true, |mut entries| entries.next().is_none()),
        "the removed member's data must be wiped"
    );
    assert!(dir.join("removed").exists());
    c.put("after-leave", "ok", None).await.unwrap();
    let removes = f
        .grants()
        .granted()
        .into_iter()
        .filter(|(_, kind)| *kind == ChangeKind::Remove)
        .count();
    assert_eq!(removes, 1);
    let events = f.grants().events();
    assert_eq!(assert_one_grant_at_a_time(&events), 4, "{events:?}");
}

async fn check(addr: &str, service: &str) -> Result<ServingStatus, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// The sidecar's plaintext health port as the kubelet's gRPC probes see it: the liveness
/// service answers SERVING for as long as the sidecar process answers, whatever its member
/// does, and the readiness service only once the member is healthy. The member's "etcd"
/// here is a program that never answers, as a member still catching up, replaying its WAL
/// or without a leader looks from outside: the Pod must stay unready and must not be killed.
/// No etcd process is started, so the machine-wide lock is not needed.
#[tokio::test]
async fn liveness_passes_while_the_member_is_not_ready_and_fails_once_the_sidecar_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    // An "etcd" that starts and never answers.
    let etcd = dir.path().join("etcd");
    write_program(&etcd, "#!/bin/sh\nexec sleep 600\n".into());
    let member = etcd_operator::naming::member_name("probes", 0);
    let coordinator = ServedCoordinator::start("probes", &member, &dir.path().join("state")).await;
    let mut spec = sidecar_spec("probes", &member, dir.path(), &coordinator.url);
    let health = format!("127.0.0.1:{}", free_port());
    spec.env = vec![
        ("ETCDOP_HEALTH_ADDR".into(), health.clone()),
        ("ETCDOP_ETCD_BINARY".into(), etcd.display().to_string()),
    ];
    coordinator.admit(&mut spec);
    let mut sidecar = SidecarProc::start(spec).unwrap();

    let first = wait_for("the health port answers", Duration::from_secs(30), || {
        let health = health.clone();
        async move { check(&health, LIVENESS_SERVICE).await.ok() }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", sidecar.log_tail(30)));
    assert_eq!(first, ServingStatus::Serving);
    // The member's "etcd" runs (bootstrapped under the coordinator's grant) and never
    // answers.
    wait_for(
        "the member's etcd to start",
        Duration::from_secs(30),
        || {
            let started = coordinator.report(&member).is_some_and(|r| r.etcd_pid != 0);
            async move { started.then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", sidecar.log_tail(30)));
    // Many health rounds (every 250 ms here): the member never becomes healthy, readiness
    // stays NOT_SERVING, liveness stays SERVING.
    for _ in 0..12 {
        assert_eq!(
            check(&health, LIVENESS_SERVICE).await,
            Ok(ServingStatus::Serving),
            "{}",
            sidecar.log_tail(30)
        );
        for readiness in [SERVICE_NAME, ""] {
            assert_eq!(
                check(&health, readiness).await,
                Ok(ServingStatus::NotServing),
                "readiness service {readiness:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The probe is the process's own answer: with the sidecar gone it fails.
    sidecar.kill();
    assert!(check(&health, LIVENESS_SERVICE).await.is_err());
}

/// A client of `member`'s sidecar, as the coordinator calls it (mutual TLS, the
/// coordinator's identity).
fn sidecar_of(f: &Fixture, member: &str) -> SidecarClient<Channel> {
    let key = ClusterKey::local(CLUSTER);
    let tls = f.coordinator.control.sidecar_client(&key, member);
    let url = f.members[member].spec.grpc_url();
    SidecarClient::new(etcd_sidecar::tls::channel(&url, tls, Duration::from_secs(3), None).unwrap())
}

/// etcd's command line, as the kernel has it.
fn cmdline(pid: u32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// Reads `url`'s Status and member list: (member id, leader, raft index, member ids).
async fn local_view(url: &str) -> Option<(u64, u64, u64, Vec<u64>)> {
    let attempt = async {
        let mut c = Client::connect([url], None).await.ok()?;
        let status = c.status().await.ok()?;
        let list = c.member_list().await.ok()?;
        Some((
            status.header()?.member_id(),
            status.leader(),
            status.raft_index(),
            list.members().iter().map(|m| m.id()).collect(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

/// `--force-new-cluster` applies to exactly one start of etcd. The call that forces is cut
/// short (the coordinator's timeout, a leadership change) while etcd runs with the flag;
/// the force goes on to its end all the same, and when etcd dies afterwards (an OOM kill,
/// a crash) and is started again, it runs without the flag: the member added after the
/// force stays in the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_cut_short_never_applies_to_a_later_start_of_etcd() {
    let _serial = serial_guard();
    let (mut f, _watcher) = form(3).await;
    let mut c = f.client().await;
    c.put("before-the-force", "kept", None).await.unwrap();
    drop(c);
    let survivor = name(0);
    // Quorum lost for good: the two others are gone, their etcd with them.
    for gone in [name(1), name(2)] {
        f.members.remove(&gone).unwrap().kill();
    }
    let url = f.members[&survivor].spec.client_url();
    let sidecar_pid = f.members[&survivor].pid().unwrap();
    // Without quorum, etcd answers Status once it stops waiting for its cluster.
    let (member_id, raft_index) = wait_for(
        "the survivor's etcd to answer without a leader",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                let (id, leader, index, _) = local_view(&url).await?;
                (leader == 0).then_some((id, index))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));

    let mut sidecar = sidecar_of(&f, &survivor);
    let epoch = f.coordinator.epoch();
    let call = tokio::spawn(async move {
        sidecar
            .force_new_cluster(ForceNewClusterRequest {
                min_raft_index: raft_index,
                coordinator_epoch: epoch,
                grant_id: String::new(),
            })
            .await
    });
    // The forced etcd, found as soon as it runs (it lives at least until it leads itself).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let forced = loop {
        if let Ok(pid) = testkit::chaos::etcd_pid(sidecar_pid)
            && cmdline(pid).is_some_and(|c| c.contains("--force-new-cluster"))
        {
            break pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for etcd to run with --force-new-cluster\n{}",
            f.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Held before it can lead itself, the call is cut short; then etcd goes on.
    signal(forced, nix::sys::signal::Signal::SIGSTOP);
    call.abort();
    let _ = call.await;
    signal(forced, nix::sys::signal::Signal::SIGCONT);

    let alone = |url: String| async move {
        let (id, leader, _, members) = local_view(&url).await?;
        (leader == member_id && members == [id]).then_some(())
    };
    wait_for(
        "the survivor to lead a cluster of itself",
        Duration::from_secs(60),
        || alone(url.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    // The cluster grows back: a learner added after the force.
    let learner_peer = format!("http://127.0.0.1:{}", free_port());
    let learner = wait_for(
        "a learner added after the force",
        Duration::from_secs(30),
        || {
            let (url, peer) = (url.clone(), learner_peer.clone());
            async move {
                let mut c = Client::connect([url], None).await.ok()?;
                let opts = etcd_client::MemberAddOptions::new().with_is_learner();
                c.member_add([peer], Some(opts))
                    .await
                    .ok()?
                    .member()
                    .map(|m| m.id())
            }
        },
    )
    .await
    .unwrap();

    // etcd dies on its own; it is started again, and every start from now on runs without
    // the flag and keeps the learner.
    for round in 0..2 {
        let before = testkit::chaos::etcd_pid(sidecar_pid).unwrap();
        signal(before, nix::sys::signal::Signal::SIGKILL);
        let (after, line) = wait_for(
            "etcd started again after it died",
            Duration::from_secs(60),
            || async move {
                let pid = testkit::chaos::etcd_pid(sidecar_pid).ok()?;
                let line = cmdline(pid)?;
                (pid != before && line.contains("--data-dir")).then_some((pid, line))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
        assert!(
            !line.contains("--force-new-cluster"),
            "round {round}: etcd {after} started again with the flag: {line}"
        );
        let members = wait_for(
            "the survivor to lead again",
            Duration::from_secs(60),
            || {
                let url = url.clone();
                async move {
                    let (_, leader, _, members) = local_view(&url).await?;
                    (leader == member_id).then_some(members)
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
        assert!(
            members.contains(&learner),
            "round {round}: the learner added after the force was dropped: {members:x?}"
        );
    }
    let mut own = Client::connect([url.clone()], None).await.unwrap();
    let got = own
        .get(
            "before-the-force",
            Some(GetOptions::new().with_serializable()),
        )
        .await
        .unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "kept");
    // The force is recorded beside the member's data, at the raft index it began from.
    let record = std::fs::read_to_string(
        f.members[&survivor]
            .spec
            .member_dir
            .join("force-new-cluster.json"),
    )
    .expect("the record of the force");
    assert!(
        record.contains(&format!("\"raft_index\": {raft_index}")),
        "{record}"
    );
}

/// A plain etcd of a cluster of its own, on the ports given (a stranger taking a port
/// that a member knows); killed when dropped.
struct Stranger {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Stranger {
    fn start(client_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let binary = etcd_operator::etcd_bin::EtcdBinaries::from_env()
            .resolve(etcd_operator::version::DEFAULT_VERSION)
            .unwrap();
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = std::process::Command::new(binary)
            .args([
                "--name=stranger".to_string(),
                format!("--data-dir={}", dir.path().join("etcd").display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=stranger={peer}"),
                "--log-level=error".into(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Self { child, _dir: dir }
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A member wipes its data only on proof that its own cluster removed it. Here its whole
/// cluster is down and another cluster serves on a client URL the member knows as its
/// cluster's (local ports are reused): that cluster's member list lacks the member, but it
/// is not the member's cluster (another cluster id), so the member starts on its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_answered_by_another_cluster_keeps_its_data() {
    let _serial = serial_guard();
    let (mut f, _watcher) = form(2).await;
    let mut c = f.client().await;
    c.put("mine", "kept", None).await.unwrap();
    drop(c);
    let (me, other) = (name(0), name(1));
    let report = f.coordinator.report(&me).unwrap();
    let member_dir = f.members[&me].spec.member_dir.clone();
    // The member's identity names its cluster once etcd has written its data (the seed's is
    // saved as soon as it bootstrapped).
    wait_for(
        "the identity saved with the cluster id",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(member_dir.join("member.json")).unwrap_or_default();
            let cluster_id = report.cluster_id;
            async move {
                let saved: serde_json::Value = serde_json::from_str(&text).ok()?;
                (saved["cluster_id"] == cluster_id && cluster_id != 0).then_some(())
            }
        },
    )
    .await
    .unwrap();
    // Both members go down (a host restart); another cluster takes the other's client port.
    let mine = f.members.remove(&me).unwrap();
    let spec = mine.spec.clone();
    drop(mine);
    let other_url = f.members[&other].spec.client_url();
    drop(f.members.remove(&other));
    let _stranger = Stranger::start(&other_url);
    let stranger_id = wait_for("the stranger to serve", Duration::from_secs(30), || {
        let url = other_url.clone();
        async move {
            let (id, leader, _, _) = local_view(&url).await?;
            (leader == id).then_some(id)
        }
    })
    .await
    .unwrap();
    // The member comes back: asked for its cluster's members, only the stranger answers.
    let old_pid = report.etcd_pid;
    f.start(spec);
    wait_for(
        "the member's etcd to run again",
        Duration::from_secs(60),
        || {
            let r = f.coordinator.report(&me);
            async move {
                r.filter(|r| {
                    r.etcd_pid != 0 && r.etcd_pid != old_pid && r.phase() == MemberPhase::Running
                })
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    let saved = std::fs::read_to_string(member_dir.join("member.json"))
        .unwrap_or_else(|e| panic!("the member's identity is gone (wiped?): {e}\n{}", f.logs()));
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(
        saved["member_id"], report.member_id,
        "the member's identity is kept"
    );
    assert!(
        std::fs::read_dir(member_dir.join("etcd/member/wal"))
            .is_ok_and(|mut entries| entries.next().is_some()),
        "the member's data was wiped\n{}",
        f.logs()
    );
    let log = f.members[&me].log_tail(400);
    assert!(log.contains("restarting etcd on existing data"), "{log}");
    // Nothing was done to the stranger either.
    let (_, _, _, members) = local_view(&other_url).await.unwrap();
    assert_eq!(members, [stranger_id]);
}

/// An I/O error reading the data directory stops the start (retried, and reported as the
/// member's last error); it is never taken for "no data", which would bootstrap over it
/// (this member is the designated seed: its start would wipe the directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_wal_directory_is_an_error_not_a_wipe() {
    // No etcd is started unless the start goes wrong; the lock is taken all the same.
    let _serial = serial_guard();
    let mut f = Fixture::new().await;
    let spec = f.spec(0);
    let etcd_dir = spec.member_dir.join("etcd").join("member");
    std::fs::create_dir_all(etcd_dir.join("snap")).unwrap();
    std::fs::write(etcd_dir.join("snap").join("db"), b"the member's data").unwrap();
    // A file where the wal directory should be: it cannot be listed, whoever reads it (a
    // directory without permissions would not stop root).
    std::fs::write(etcd_dir.join("wal"), b"not a directory").unwrap();
    f.start(spec);
    let member = name(0);
    let report = wait_for(
        "the start to stop on the unreadable wal, saying so",
        Duration::from_secs(30),
        || {
            let r = f.coordinator.report(&member);
            async move { r.filter(|r| r.last_error.contains("wal")) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    assert_eq!(report.etcd_pid, 0, "etcd was started: {report:?}");
    assert_eq!(
        std::fs::read(etcd_dir.join("snap").join("db")).unwrap(),
        b"the member's data"
    );
    assert!(etcd_dir.join("wal").is_file());
    assert!(
        f.grants().granted().is_empty(),
        "no grant was asked for: {:?}",
        f.grants().events()
    );
}

/// A handoff whose call is cut short while etcd stops: the member says HandedOff as soon as
/// etcd is down (never Running with etcd stopped), and with no restart from the runtime it
/// starts etcd again on its own version once the restart timeout passes. Before that, a
/// handoff that would leave the voters still up below quorum is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_cut_short_never_strands_its_member() {
    let _serial = serial_guard();
    let mut f = Fixture::new().await;
    // Member 2's etcd stops on request only when the test says: its SIGTERM is held (and
    // marked) by a wrapper until the release file exists.
    let dir = f.dir.path().to_path_buf();
    let (stopping, release) = (dir.join("stopping"), dir.join("release"));
    let real = etcd_operator::etcd_bin::EtcdBinaries::from_env()
        .resolve(etcd_operator::version::DEFAULT_VERSION)
        .unwrap();
    let wrapper = dir.join("held-etcd");
    write_program(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             setpriv --pdeathsig KILL '{}' \"$@\" &\n\
             child=$!\n\
             trap 'touch \"{}\"; while [ ! -e \"{}\" ]; do sleep 0.05; done; kill -TERM $child; wait $child; exit 0' TERM\n\
             wait $child\n",
            real.display(),
            stopping.display(),
            release.display()
        ),
    );
    for i in 0..3 {
        let mut spec = f.spec(i);
        if i == 2 {
            spec.env = vec![("ETCDOP_ETCD_BINARY".into(), wrapper.display().to_string())];
        }
        f.start(spec);
    }
    f.wait_voters(3).await;
    let victim = name(2);
    let version = etcd_operator::version::DEFAULT_VERSION.to_string();
    let request = |epoch| HandoffRequest {
        target_version: version.clone(),
        restart_timeout_ms: 3_000,
        coordinator_epoch: epoch,
        grant_id: String::new(),
        restart_in_place: false,
    };
    let epoch = f.coordinator.epoch();

    // One other voter down: stopping this one would leave 1 of 3. Refused, etcd untouched.
    let old_pid = f.coordinator.report(&name(0)).map(|r| r.etcd_pid);
    let down = f.members.remove(&name(0)).unwrap();
    let down_spec = down.spec.clone();
    drop(down);
    let refused = sidecar_of(&f, &victim)
        .handoff(request(epoch))
        .await
        .expect_err("a handoff that would lose quorum");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("quorum"),
        "{}",
        refused.message()
    );
    assert!(!stopping.exists(), "etcd was asked to stop");
    f.start(down_spec);
    // Its last report before it went down still says healthy: wait for one from its new etcd.
    wait_for(
        "the restarted member's etcd to report healthy",
        FORM_DEADLINE,
        || {
            let r = f.coordinator.report(&name(0));
            async move {
                r.filter(|r| r.healthy && r.etcd_pid != 0 && Some(r.etcd_pid) != old_pid)
                    .map(|_| ())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    f.wait_voters(3).await;

    // The call is cut short while etcd stops.
    let mut sidecar = sidecar_of(&f, &victim);
    let asked = request(epoch);
    let call = tokio::spawn(async move { sidecar.handoff(asked).await });
    wait_for("the handoff to stop etcd", Duration::from_secs(60), || {
        let at = stopping.clone();
        async move { at.exists().then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    call.abort();
    let _ = call.await;
    std::fs::write(&release, b"").unwrap();
    wait_for(
        "the member to say it is handed off, with etcd down",
        Duration::from_secs(30),
        || {
            let r = f.coordinator.report(&victim);
            async move { r.filter(|r| r.phase() == MemberPhase::HandedOff && r.etcd_pid == 0) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    // No runtime restarts it here: past the restart timeout it comes back on its version.
    wait_for(
        "the member's etcd back after the restart timeout",
        Duration::from_secs(60),
        || {
            let r = f.coordinator.report(&victim);
            async move {
                r.filter(|r| r.phase() == MemberPhase::Running && r.healthy && r.etcd_pid != 0)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    f.wait_voters(3).await;
}

/// A restart in place (on Kubernetes, where a Pod whose image stays is not restarted by the
/// runtime): the sidecar stops etcd after the handoff's checks and starts it again on its
/// data itself, before it answers; same member id, a new etcd process, healthy again, no
/// membership change. Asked for another version than the member's, it is refused with etcd
/// untouched (a restart in place cannot change the binary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_place_starts_etcd_again_on_its_data() {
    let _serial = serial_guard();
    let mut f = Fixture::new().await;
    // The member's sidecar is killed once, between the stop of etcd and its start in place.
    let fired = f.dir.path().join("failpoints");
    std::fs::create_dir_all(&fired).unwrap();
    for i in 0..3 {
        let mut spec = f.spec(i);
        if i == 1 {
            spec.env = vec![
                (
                    "FAILPOINTS".into(),
                    "sidecar.handoff.in-place-after-stop=return".into(),
                ),
                (
                    etcd_operator::failpoints::MARKER_DIR_ENV.into(),
                    fired.display().to_string(),
                ),
            ];
        }
        f.start(spec);
    }
    f.wait_voters(3).await;
    let victim = name(1);
    let granted = f.grants().granted().len();
    let before = f.coordinator.report(&victim).expect("a report");
    assert!(before.etcd_pid != 0 && before.member_id != 0, "{before:?}");
    let epoch = f.coordinator.epoch();
    // The restart a handoff arms should the runtime's never come: 8 s for this one.
    let request = |version: &str| HandoffRequest {
        target_version: version.to_string(),
        restart_timeout_ms: 8_000,
        coordinator_epoch: epoch,
        grant_id: String::new(),
        restart_in_place: true,
    };

    let refused = sidecar_of(&f, &victim)
        .handoff(request("3.7.2"))
        .await
        .expect_err("a restart in place cannot change the version");
    assert!(
        refused.message().contains("in place"),
        "{}",
        refused.message()
    );
    assert_eq!(
        f.coordinator.report(&victim).map(|r| r.etcd_pid),
        Some(before.etcd_pid),
        "etcd untouched"
    );

    // Killed after the stop: started again on its directory, it starts etcd on its data.
    let cut = sidecar_of(&f, &victim)
        .handoff(request(
            &etcd_operator::version::DEFAULT_VERSION.to_string(),
        ))
        .await;
    assert!(cut.is_err(), "the sidecar died in the restart: {cut:?}");
    assert!(
        etcd_operator::failpoints::fired(&fired, "sidecar.handoff.in-place-after-stop"),
        "{}",
        f.logs()
    );
    let spec = f.members.remove(&victim).expect("the member").spec.clone();
    f.start(spec);
    let back = wait_for(
        "the member's etcd started again by its sidecar",
        Duration::from_secs(60),
        || {
            let r = f.coordinator.report(&victim);
            let old_pid = before.etcd_pid;
            async move { r.filter(|r| r.healthy && r.etcd_pid != 0 && r.etcd_pid != old_pid) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    assert_eq!(back.member_id, before.member_id, "the same member");
    f.wait_voters(3).await;

    let handed_off = tokio::time::Instant::now();
    sidecar_of(&f, &victim)
        .handoff(request(
            &etcd_operator::version::DEFAULT_VERSION.to_string(),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", f.logs()));
    wait_for(
        "the member's etcd restarted in place and healthy",
        Duration::from_secs(60),
        || {
            let r = f.coordinator.report(&victim);
            let old_pid = before.etcd_pid;
            async move {
                r.filter(|r| {
                    r.phase() == MemberPhase::Running
                        && r.healthy
                        && r.etcd_pid != 0
                        && r.etcd_pid != old_pid
                })
            }
        },
    )
    .await
    .map(|r| assert_eq!(r.member_id, before.member_id, "the same member"))
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    f.wait_voters(3).await;
    assert_eq!(
        f.grants().granted().len(),
        granted,
        "no membership change: {:?}",
        f.grants().events()
    );

    // A handoff for a restart by the runtime follows (an upgrade right after the rotation's
    // restarts). The restart the first handoff armed is not this one's: past its 8 s etcd
    // stays down, waiting for the runtime.
    sidecar_of(&f, &victim)
        .handoff(HandoffRequest {
            restart_timeout_ms: 120_000,
            restart_in_place: false,
            ..request(&etcd_operator::version::DEFAULT_VERSION.to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", f.logs()));
    wait_for(
        "the member to say it is handed off",
        Duration::from_secs(10),
        || {
            let r = f.coordinator.report(&victim);
            async move { r.filter(|r| r.phase() == MemberPhase::HandedOff && r.etcd_pid == 0) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    let first_timer = handed_off + Duration::from_secs(11);
    while tokio::time::Instant::now() < first_timer {
        let r = f.coordinator.report(&victim).expect("a report");
        assert!(
            r.phase() == MemberPhase::HandedOff,
            "etcd started again before the runtime's restart, by an earlier handoff's timer: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The runtime's restart: the sidecar started again, etcd on its data.
    let spec = f.members.remove(&victim).expect("the member").spec.clone();
    f.start(spec);
    f.wait_voters(3).await;
}

/// The snapshot that 3.5 data needs before a 3.6 start runs etcd once with
/// `--snapshot-count=1`. When that step times out, the handoff is refused and etcd runs on
/// with its normal arguments: no later start (a crash, an OOM kill) carries the flag. Here
/// the member's etcd is a wrapper that logs every start's arguments and drops the flag, so
/// the snapshot never comes and the step always times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_snapshot_step_leaves_etcd_on_its_normal_arguments() {
    let _serial = serial_guard();
    let mut f = Fixture::new().await;
    let from = "3.5.34";
    let dir = f.dir.path().to_path_buf();
    let starts = dir.join("starts.log");
    let real = etcd_operator::etcd_bin::EtcdBinaries::from_env()
        .resolve(from.parse().unwrap())
        .unwrap();
    let wrapper = dir.join("snapshotless-etcd");
    write_program(
        &wrapper,
        format!(
            "#!/bin/bash\n\
             echo \"$*\" >> '{}'\n\
             args=()\n\
             for a in \"$@\"; do [ \"$a\" = --snapshot-count=1 ] || args+=(\"$a\"); done\n\
             exec '{}' \"${{args[@]}}\"\n",
            starts.display(),
            real.display()
        ),
    );
    for i in 0..3 {
        let mut spec = f.spec(i);
        spec.etcd_version = Some(from.into());
        if i == 2 {
            spec.env = vec![
                ("ETCDOP_ETCD_BINARY".into(), wrapper.display().to_string()),
                ("ETCDOP_UPGRADE_SNAPSHOT_DEADLINE_MS".into(), "1000".into()),
            ];
        }
        f.start(spec);
    }
    f.wait_voters(3).await;
    let victim = name(2);
    let flag = "--snapshot-count=1";
    let starts_logged = || -> Vec<String> {
        std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let flagged = |lines: &[String]| lines.iter().filter(|l| l.contains(flag)).count();
    assert_eq!(
        flagged(&starts_logged()),
        0,
        "a start with the snapshot flag before any handoff"
    );
    let before = f.coordinator.report(&victim).map(|r| r.etcd_pid);

    let refused = sidecar_of(&f, &victim)
        .handoff(HandoffRequest {
            target_version: "3.6.15".into(),
            restart_timeout_ms: 3_000,
            coordinator_epoch: f.coordinator.epoch(),
            grant_id: String::new(),
            restart_in_place: false,
        })
        .await
        .expect_err("a handoff whose snapshot never comes");
    assert!(
        refused.message().contains("snapshot"),
        "{}",
        refused.message()
    );
    // The start after the step's (its wrapper logs it a moment after the spawn).
    let after_step = wait_for(
        "a start of etcd after the snapshot step",
        Duration::from_secs(10),
        || {
            let lines = starts_logged();
            async move {
                let i = lines.iter().position(|l| l.contains(flag))?;
                lines.get(i + 1).cloned()
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", starts_logged(), f.logs()));
    assert!(
        !after_step.contains(flag),
        "etcd started again with the snapshot flag after the step timed out: {after_step}"
    );
    let running = wait_for(
        "the member's etcd running and healthy again on its data",
        FORM_DEADLINE,
        || {
            let r = f.coordinator.report(&victim);
            async move {
                r.filter(|r| {
                    r.phase() == MemberPhase::Running
                        && r.healthy
                        && r.etcd_pid != 0
                        && Some(r.etcd_pid) != before
                        && std::path::Path::new(&format!("/proc/{}", r.etcd_pid)).exists()
                })
                .map(|r| r.etcd_pid)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    let logged = starts_logged().len();

    // A crash of that etcd: the supervisor's restart has the normal arguments too.
    signal(running, nix::sys::signal::Signal::SIGKILL);
    wait_for(
        "the member's etcd back after a crash",
        FORM_DEADLINE,
        || {
            let r = f.coordinator.report(&victim);
            async move {
                r.filter(|r| r.healthy && r.etcd_pid != 0 && r.etcd_pid != running)
                    .map(|_| ())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    let lines = wait_for(
        "the restart's start logged",
        Duration::from_secs(10),
        || {
            let lines = starts_logged();
            async move { (lines.len() > logged).then_some(lines) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        flagged(&lines),
        1,
        "a start after the step carried the snapshot flag: {lines:?}"
    );
    assert_eq!(
        f.coordinator.report(&victim).map(|r| r.etcd_version),
        Some(from.to_string()),
        "the member still runs the version it ran"
    );
    f.wait_voters(3).await;
}

/// A leave cut short between the member's removal from etcd and the wipe of its data (the
/// sidecar killed there: failpoint `sidecar.leave.after-member-remove`) is finished when the
/// sidecar starts again on its directory: the member's own cluster lacks it, so it wipes
/// its data, marks itself removed and stays idle; it never rejoins the cluster it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_cut_short_after_the_removal_is_finished_not_rejoined() {
    if !etcd_operator::failpoints::ENABLED {
        panic!("this test needs a build with failpoints (test builds have them)");
    }
    let _serial = serial_guard();
    let mut f = Fixture::new().await;
    let fired = f.dir.path().join("failpoints");
    std::fs::create_dir_all(&fired).unwrap();
    for i in 0..3 {
        let mut spec = f.spec(i);
        if i == 2 {
            spec.env = vec![
                (
                    "FAILPOINTS".into(),
                    "sidecar.leave.after-member-remove=return".into(),
                ),
                (
                    etcd_operator::failpoints::MARKER_DIR_ENV.into(),
                    fired.display().to_string(),
                ),
            ];
        }
        f.start(spec);
    }
    f.wait_voters(3).await;
    let leaver = name(2);
    let left_id = f.coordinator.report(&leaver).unwrap().member_id;
    let epoch = f.coordinator.epoch();
    let answer = sidecar_of(&f, &leaver)
        .leave(LeaveRequest {
            reason: "test".into(),
            coordinator_epoch: epoch,
        })
        .await;
    assert!(answer.is_err(), "the sidecar died in the leave: {answer:?}");
    assert!(
        etcd_operator::failpoints::fired(&fired, "sidecar.leave.after-member-remove"),
        "{}",
        f.logs()
    );
    let grants_before = f.grants().granted().len();
    // Started again on the same directory (the failpoint does not fire twice).
    let spec = f.members.remove(&leaver).unwrap().spec.clone();
    f.start(spec);
    let report = wait_for(
        "the member to finish its leave",
        Duration::from_secs(60),
        || {
            let r = f.coordinator.report(&leaver);
            async move { r.filter(|r| r.phase() == MemberPhase::Removed) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    assert_eq!(report.etcd_pid, 0, "{report:?}");
    let dir = f.members[&leaver].spec.member_dir.clone();
    assert!(dir.join("removed").exists());
    assert!(!dir.join("leaving").exists());
    assert!(
        std::fs::read_dir(dir.join("etcd")).map_or(true, |mut e| e.next().is_none()),
        "the data of the member that left is wiped"
    );
    let mut c = Client::connect(&[f.members[&name(0)].spec.client_url()], None)
        .await
        .unwrap();
    let members: Vec<u64> = c
        .member_list()
        .await
        .unwrap()
        .members()
        .iter()
        .map(|m| m.id())
        .collect();
    assert_eq!(members.len(), 2, "{members:x?}");
    assert!(!members.contains(&left_id));
    let after: Vec<_> = f.grants().granted()[grants_before..].to_vec();
    assert!(
        after.is_empty(),
        "the member asked for grants again: {after:?}"
    );
}

/// A member removed from the cluster while its sidecar was down, started again on its
/// data: its start reads the proof of its removal (its own cluster answers, without it),
/// and the sidecar killed right there, before the wipe, reads it again when started once
/// more, wipes and rejoins under a new id; nothing the cluster held is lost and one learner
/// at a time joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_away_wipes_only_once_and_rejoins() {
    let _serial = serial_guard();
    let (mut f, watcher) = form(3).await;
    let fired = f.dir.path().join("failpoints");
    std::fs::create_dir_all(&fired).unwrap();
    let mut c = f.client().await;
    c.put("before-removal", "kept", None).await.unwrap();
    let victim = (0..3)
        .map(name)
        .find(|n| f.coordinator.report(n).is_some_and(|r| !r.leader))
        .unwrap();
    let old_id = f.coordinator.report(&victim).unwrap().member_id;
    let mut proc = f.members.remove(&victim).unwrap();
    proc.kill();
    let mut spec = proc.spec.clone();
    drop(proc);
    // Removed by hand while it is away, as a person or another coordinator might.
    let survivors: Vec<String> = f.members.values().map(|m| m.spec.client_url()).collect();
    let on_survivors = Client::connect(&survivors, None).await.unwrap();
    // etcd refuses a removal for a moment after a member goes (its strict check).
    wait_for("the removal by hand", Duration::from_secs(30), || {
        let mut c = on_survivors.clone();
        async move { c.member_remove(old_id).await.ok().map(|_| ()) }
    })
    .await
    .unwrap();
    spec.env = vec![
        (
            "FAILPOINTS".into(),
            "sidecar.start.before-wipe=return".into(),
        ),
        (
            etcd_operator::failpoints::MARKER_DIR_ENV.into(),
            fired.display().to_string(),
        ),
    ];
    f.start(spec.clone());
    wait_for(
        "the sidecar to die at its wipe",
        Duration::from_secs(60),
        || {
            let done = etcd_operator::failpoints::fired(&fired, "sidecar.start.before-wipe");
            async move { done.then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    assert!(
        spec.member_dir.join("etcd").join("member").is_dir(),
        "nothing is wiped before the crash"
    );
    // Started again on the same directory (the failpoint does not fire twice).
    f.members.remove(&victim);
    f.start(spec);
    let members = f.wait_voters_without(3, old_id).await;
    let new_id = f.coordinator.report(&victim).unwrap().member_id;
    assert_ne!(new_id, old_id, "rejoined under a new id");
    assert!(members.iter().all(|m| m.id() != old_id));
    assert!(watcher.history().max_learners <= 1);
    let got = c.get("before-removal", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"kept");
}

/// The leader asked to leave moves leadership away and is killed right after: started again
/// on its data it is still a member (a follower now); asked again, it leaves, and the
/// cluster keeps every write, one change at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_after_moving_leadership_leaves_when_asked_again() {
    let _serial = serial_guard();
    let mut f = Fixture::with_grant_lease(Duration::from_secs(1)).await;
    let fired = f.dir.path().join("failpoints");
    std::fs::create_dir_all(&fired).unwrap();
    for i in 0..3 {
        let mut spec = f.spec(i);
        spec.env = vec![
            (
                "FAILPOINTS".into(),
                "sidecar.leave.after-leadership-moved=return".into(),
            ),
            (
                etcd_operator::failpoints::MARKER_DIR_ENV.into(),
                fired.display().to_string(),
            ),
        ];
        f.start(spec);
    }
    f.wait_voters(3).await;
    let mut c = f.client().await;
    c.put("before-leave", "kept", None).await.unwrap();
    let leader = f
        .coordinator
        .reports()
        .into_values()
        .find(|r| r.leader)
        .expect("a leader reported");
    let leave = |f: &Fixture| {
        let key = ClusterKey::local(CLUSTER);
        let tls = f
            .coordinator
            .control
            .sidecar_client(&key, &leader.member_name);
        let channel =
            etcd_sidecar::tls::channel(&leader.sidecar_url, tls, Duration::from_secs(3), None)
                .unwrap();
        let epoch = f.coordinator.epoch();
        async move {
            SidecarClient::new(channel)
                .leave(LeaveRequest {
                    reason: "test".into(),
                    coordinator_epoch: epoch,
                })
                .await
        }
    };
    let answer = leave(&f).await;
    assert!(answer.is_err(), "the sidecar died in its leave: {answer:?}");
    assert!(etcd_operator::failpoints::fired(
        &fired,
        "sidecar.leave.after-leadership-moved"
    ));
    // Started again on the same directory: still a member, on its data.
    let spec = f.members.remove(&leader.member_name).unwrap().spec.clone();
    f.start(spec);
    f.wait_voters(3).await;
    let back = wait_for(
        "the member back on its data",
        Duration::from_secs(60),
        || {
            let r = f.coordinator.report(&leader.member_name);
            async move { r.filter(|r| r.healthy && r.member_id == leader.member_id) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    assert!(!back.leader, "leadership moved away before the crash");
    let resp = leave(&f)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()))
        .into_inner();
    assert_eq!(resp.removed_member_id, leader.member_id);
    let staying: Vec<String> = f
        .members
        .values()
        .filter(|m| m.spec.name != leader.member_name)
        .map(|m| m.spec.client_url())
        .collect();
    let mut c = Client::connect(&staying, None).await.unwrap();
    let list = c.member_list().await.unwrap();
    assert_eq!(list.members().len(), 2);
    assert!(list.members().iter().all(|m| m.id() != leader.member_id));
    let got = c.get("before-leave", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"kept");
    let events = f.grants().events();
    assert_one_grant_at_a_time(&events);
}

/// Writes an executable program (a script) at `path`.
fn write_program(path: &std::path::Path, text: String) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
