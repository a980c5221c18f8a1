//! The control path and etcd behind TLS, end to end with `etcd-coordinator local` and real
//! etcd:
//!
//! 1. strangers are refused: every method that changes something, on the coordinator
//!    (Register, ReportHealth, RequestGrant, ReleaseGrant) and on a sidecar (Leave, Handoff),
//!    is refused to a client without a certificate, with a certificate of another CA, and
//!    with a valid certificate of another member; the plaintext status port refuses them
//!    all and still answers the read-only ones; nothing changes in the cluster;
//! 2. a `spec.tls` cluster is created, scaled 3 -> 5 -> 3, has a killed member restarted on
//!    its data and a deleted one replaced, and
//!    is upgraded 3.6.15 -> 3.7.2 under client traffic; etcdctl works with the issued client
//!    certificate, while plain HTTP and HTTPS without a client certificate are refused;
//! 3. certificates rotate (etcd's serving and peer certificates, the control path's) while a
//!    writer runs, with no failed write, and etcd serves the new ones without a restart.
//!
//! Each test takes the machine-wide cluster lock.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use etcd_coordinator::security::now_secs;
use etcd_operator::tls::{ClientTls, CredentialSource, Credentials, TlsError};
use etcd_operator::{
    ClusterKey,
    etcd_bin::EtcdBinaries,
    identity::{COORDINATOR_URI, PeerIdentity},
    pki::{Authority, LeafRequest, Usage},
    proto::{
        BackupRequest, BackupStorage, ChangeKind, ClusterRef, ForceNewClusterRequest,
        GetClusterRequest, GrantRequest, HandoffRequest, HealthReport, LeaveRequest,
        ListClustersRequest, RegisterRequest, ReleaseGrantRequest,
        coordinator_client::CoordinatorClient, sidecar_client::SidecarClient,
    },
};
use testkit::{
    clients::{etcd_client_tls, etcdctl, http_version},
    local_cluster::{ClusterMonitor, CoordinatorOptions, LocalCoordinator, describe},
    serial_guard,
    traffic::{Writer, verify_acked_tls},
    wait_for,
};
use tonic::{Code, transport::Channel};

const FORM: Duration = Duration::from_secs(90);
const CHANGE: Duration = Duration::from_secs(120);
const VERSION: &str = "3.6.15";
const NEXT_VERSION: &str = "3.7.2";

fn coordinator_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/example-etcd-cluster.yaml")
}

fn ok<T>(c: &LocalCoordinator, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}\n{}", c.logs(40)),
    }
}

/// Credentials fixed in memory.
struct Fixed(Credentials);

impl CredentialSource for Fixed {
    fn load(&self) -> Result<Credentials, TlsError> {
        Ok(self.0.clone())
    }
}

/// A certificate naming `uri`, issued by `issuer`, trusting `trusted_ca` for servers.
fn credentials(issuer: &Authority, uri: &str, trusted_ca: &str) -> Arc<dyn CredentialSource> {
    let issued = issuer
        .issue(
            &LeafRequest {
                common_name: "intruder".into(),
                uris: vec![uri.to_string()],
                hosts: vec!["127.0.0.1".into()],
                usage: Usage::BOTH,
                validity: Duration::from_secs(3600),
            },
            None,
            now_secs(),
        )
        .unwrap();
    Arc::new(Fixed(Credentials {
        cert_pem: issued.cert_pem.into_bytes(),
        key_pem: issued.key_pem.into_bytes(),
        ca_pem: trusted_ca.as_bytes().to_vec(),
    }))
}

/// The state directory's control CA (what the coordinator issues from).
fn control_ca(c: &LocalCoordinator) -> Authority {
    let read = |f: &str| std::fs::read_to_string(c.pki_dir().join(f)).unwrap();
    Authority::from_pem(&read("ca.crt"), &read("ca.key")).unwrap()
}

/// Who calls, and how.
enum Caller {
    /// TLS that trusts the server but presents no certificate.
    NoCertificate,
    /// A certificate of another CA claiming `uri`.
    OtherCa(String),
    /// A valid certificate (the operator's CA) of `uri`.
    Valid(String),
}

impl Caller {
    fn describe(&self) -> String {
        match self {
            Self::NoCertificate => "no certificate".into(),
            Self::OtherCa(uri) => format!("another CA's certificate for {uri}"),
            Self::Valid(uri) => format!("a valid certificate for {uri}"),
        }
    }

    /// A channel to `url` (https), expecting the server to be `server`.
    fn channel(&self, ca: &Authority, url: &str, server: PeerIdentity) -> Channel {
        let source = match self {
            Self::NoCertificate => {
                etcd_operator::tls::install_default_provider();
                let tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca.cert_pem()));
                return tonic::transport::Endpoint::from_shared(url.to_string())
                    .unwrap()
                    .tls_config(tls)
                    .unwrap()
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(Duration::from_secs(10))
                    .connect_lazy();
            }
            Self::OtherCa(uri) => {
                let other = Authority::generate("etcd-operator control CA", now_secs()).unwrap();
                credentials(&other, uri, ca.cert_pem())
            }
            Self::Valid(uri) => credentials(ca, uri, ca.cert_pem()),
        };
        etcd_operator::tls::channel(
            url,
            ClientTls::new(source, server),
            Duration::from_secs(3),
            Some(Duration::from_secs(10)),
        )
        .unwrap()
    }

    /// The codes a refusal of this caller may have.
    fn refusals(&self) -> &'static [Code] {
        match self {
            // Through the handshake (client certificates are optional there), refused by
            // the method.
            Self::NoCertificate => &[Code::Unauthenticated],
            // Refused at the handshake: the call never reaches a method.
            Self::OtherCa(_) => &[
                Code::Unavailable,
                Code::Unknown,
                Code::Internal,
                Code::Cancelled,
            ],
            Self::Valid(_) => &[Code::PermissionDenied],
        }
    }
}

/// Every method that changes something, called for `target` of `cluster`; returns each
/// method's result code.
async fn call_coordinator(
    channel: Channel,
    cluster: &ClusterKey,
    target: &str,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut client = CoordinatorClient::new(channel);
    let cluster_ref = Some(ClusterRef::from(cluster));
    let mut out = Vec::new();
    let register = client
        .register(RegisterRequest {
            cluster: cluster_ref.clone(),
            member_name: target.into(),
            peer_url: "http://127.0.0.1:1".into(),
            client_url: "http://127.0.0.1:2".into(),
            sidecar_url: "https://127.0.0.1:3".into(),
            ..Default::default()
        })
        .await;
    out.push(("Register", register.map(|_| ())));
    let forged = HealthReport {
        cluster: cluster_ref.clone(),
        member_name: target.into(),
        healthy: false,
        last_error: "forged".into(),
        held_grant_id: "forged-grant".into(),
        held_grant_kind: ChangeKind::Remove as i32,
        observed_at_unix_ms: 1,
        ..Default::default()
    };
    let report = client.report_health(tokio_stream::iter(vec![forged])).await;
    out.push(("ReportHealth", report.map(|_| ())));
    let grant = client
        .request_grant(GrantRequest {
            cluster: cluster_ref.clone(),
            member_name: target.into(),
            kind: ChangeKind::Remove as i32,
            peer_url: String::new(),
        })
        .await;
    out.push(("RequestGrant", grant.map(|_| ())));
    let release = client
        .release_grant(ReleaseGrantRequest {
            cluster: cluster_ref,
            grant_id: "1-1".into(),
            succeeded: true,
            member_name: target.into(),
            ..Default::default()
        })
        .await;
    out.push(("ReleaseGrant", release.map(|_| ())));
    out
}

/// Leave, Handoff, ForceNewCluster, TakeBackup and Maintain of a sidecar, as a coordinator of term
/// `epoch` would send them.
async fn call_sidecar(
    channel: Channel,
    epoch: u64,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut client = SidecarClient::new(channel);
    let leave = client
        .leave(LeaveRequest {
            reason: "intruder".into(),
            coordinator_epoch: epoch,
        })
        .await;
    let handoff = client
        .handoff(HandoffRequest {
            target_version: NEXT_VERSION.into(),
            restart_timeout_ms: 1,
            coordinator_epoch: epoch,
            grant_id: String::new(),
            restart_in_place: false,
        })
        .await;
    let force = client
        .force_new_cluster(ForceNewClusterRequest {
            min_raft_index: 0,
            coordinator_epoch: epoch,
            grant_id: String::new(),
        })
        .await;
    let backup = client
        .take_backup(BackupRequest {
            storage: Some(BackupStorage {
                local_path: "/tmp/etcdop-intruder-backups".into(),
                ..Default::default()
            }),
            coordinator_epoch: epoch,
            ..Default::default()
        })
        .await;
    let maintain = client
        .maintain(etcd_operator::proto::MaintainRequest {
            op: etcd_operator::proto::MaintenanceOp::Defragment as i32,
            revision: 0,
            coordinator_epoch: epoch,
            grant_id: String::new(),
        })
        .await;
    vec![
        ("Leave", leave.map(|_| ())),
        ("Handoff", handoff.map(|_| ())),
        ("ForceNewCluster", force.map(|_| ())),
        ("TakeBackup", backup.map(|_| ())),
        ("Maintain", maintain.map(|_| ())),
    ]
}

fn check_refused(
    who: &str,
    allowed: &[Code],
    results: Vec<(&'static str, Result<(), tonic::Status>)>,
) {
    for (method, result) in results {
        match result {
            Ok(()) => panic!("{method} answered {who}"),
            Err(status) => assert!(
                allowed.contains(&status.code()),
                "{method} from {who}: {:?} {} (expected one of {allowed:?})",
                status.code(),
                status.message()
            ),
        }
    }
}

/// What must not change: etcd's members, the sidecar processes, the status.
async fn snapshot(c: &LocalCoordinator) -> (Vec<(String, u64)>, BTreeMap<String, u32>) {
    let endpoints = (c.live_endpoints())();
    let mut client = ok(c, etcd_client_tls(&endpoints, c.etcd_tls().as_ref()).await);
    let mut members: Vec<(String, u64)> = client
        .member_list()
        .await
        .expect("member list")
        .members()
        .iter()
        .map(|m| (m.name().to_string(), m.id()))
        .collect();
    members.sort();
    let pids = c
        .members()
        .into_iter()
        .filter_map(|m| m.pid.map(|p| (m.name, p)))
        .collect();
    (members, pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_change_nothing() {
    let _serial = serial_guard();
    let started = std::time::Instant::now();
    let c = LocalCoordinator::start(CoordinatorOptions::new(coordinator_bin(), example()))
        .await
        .unwrap();
    ok(&c, c.wait_running(3, VERSION, FORM).await);
    let before = snapshot(&c).await;
    let key = ClusterKey::local(c.cluster());
    let ca = control_ca(&c);
    let control_url = format!("https://{}", c.control_addr());
    let member = |i: u32| c.member_name(i);
    let target = member(2);
    let target_record = c.member(&target).unwrap();
    let sidecar_url = target_record.sidecar_url();
    let member_uri = |name: &str| PeerIdentity::member(&key, name).uri();

    for caller in [
        Caller::NoCertificate,
        Caller::OtherCa(member_uri(&target)),
        Caller::OtherCa(COORDINATOR_URI.into()),
        // A real member speaking for another: refused.
        Caller::Valid(member_uri(&member(1))),
    ] {
        let who = caller.describe();
        let channel = caller.channel(&ca, &control_url, PeerIdentity::Coordinator);
        check_refused(
            &format!("{who} (coordinator)"),
            caller.refusals(),
            call_coordinator(channel, &key, &target).await,
        );
        let channel = caller.channel(&ca, &sidecar_url, PeerIdentity::member(&key, &target));
        check_refused(
            &format!("{who} (sidecar)"),
            caller.refusals(),
            call_sidecar(channel, u64::MAX).await,
        );
    }
    // A member asking another member (or itself) to leave: only the coordinator may.
    for name in [member(1), target.clone()] {
        let caller = Caller::Valid(member_uri(&name));
        let channel = caller.channel(&ca, &sidecar_url, PeerIdentity::member(&key, &target));
        check_refused(
            &format!("{} (sidecar of {target})", caller.describe()),
            &[Code::PermissionDenied],
            call_sidecar(channel, u64::MAX).await,
        );
    }
    // A deposed coordinator: the real CA and the coordinator's identity, but a term older
    // than the one the sidecar has seen (the running coordinator's, from its registration):
    // every call is refused and nothing changes in etcd (checked below).
    let deposed = Caller::Valid(COORDINATOR_URI.into());
    // Local terms are counted in the state directory: every earlier start's is below.
    let current: u64 = std::fs::read_to_string(c.state_dir().join("epoch"))
        .expect("the coordinator's epoch counter")
        .trim()
        .parse()
        .expect("an epoch");
    for epoch in [0u64, current - 1] {
        let channel = deposed.channel(&ca, &sidecar_url, PeerIdentity::member(&key, &target));
        let results = call_sidecar(channel, epoch).await;
        for (method, result) in &results {
            match result {
                Ok(()) => panic!("{method} of coordinator term {epoch} was obeyed"),
                Err(status) => assert!(
                    status.code() == Code::FailedPrecondition
                        && status.message().contains("older than term"),
                    "{method} of term {epoch}: {:?} {}",
                    status.code(),
                    status.message()
                ),
            }
        }
    }
    // The plaintext status port: every changing method is UNAUTHENTICATED there...
    check_refused(
        "the plaintext status port",
        &[Code::Unauthenticated],
        call_coordinator(c.channel(), &key, &target).await,
    );
    // ... and the read-only ones answer.
    let mut status = CoordinatorClient::new(c.channel());
    let cluster = status
        .get_cluster(GetClusterRequest {
            name: c.cluster().into(),
            namespace: String::new(),
        })
        .await
        .expect("GetCluster on the plaintext port")
        .into_inner();
    assert_eq!(cluster.members.len(), 3);
    let list = status
        .list_clusters(ListClustersRequest::default())
        .await
        .expect("ListClusters on the plaintext port")
        .into_inner();
    assert_eq!(list.clusters.len(), 1);

    // Nothing changed: etcd's members and the processes are the same, the coordinator
    // took no forged report (the target is healthy, nothing in flight), for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(snapshot(&c).await, before, "the cluster changed");
        let s = c.status().await.expect("status");
        assert!(s.change_in_flight.is_empty(), "{}", describe(&s));
        assert!(
            s.members
                .iter()
                .all(|m| m.healthy && !m.last_error.contains("forged")),
            "a forged report was taken: {}",
            describe(&s)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And the cluster still does what its spec says (the real control path works).
    c.set_spec(4, VERSION).unwrap();
    ok(&c, c.wait_running(4, VERSION, CHANGE).await);
    eprintln!("strangers refused in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_creates_scales_replaces_and_upgrades() {
    let _serial = serial_guard();
    if let Err(e) = EtcdBinaries::from_env().resolve(NEXT_VERSION.parse().unwrap()) {
        panic!("the upgrade needs etcd {NEXT_VERSION}: {e}");
    }
    let started = std::time::Instant::now();
    let c = LocalCoordinator::start(
        CoordinatorOptions::new(coordinator_bin(), example())
            .tls()
            .dead_after_secs(5),
    )
    .await
    .unwrap();
    let three = ok(&c, c.wait_running(3, VERSION, FORM).await);
    assert!(
        three
            .endpoints
            .split(',')
            .all(|e| e.starts_with("https://")),
        "{}",
        three.endpoints
    );
    // The coordinator prints where the client certificate is.
    let printed = c.stdout();
    let bundle = c.client_bundle();
    assert!(
        printed.contains(&format!("--cert={}", bundle.join("tls.crt").display())),
        "{printed}"
    );

    // etcdctl with the issued client certificate works...
    let tls_args = c.etcdctl_tls_args();
    let with = |args: &[&str]| -> Vec<String> {
        tls_args
            .iter()
            .cloned()
            .chain(args.iter().map(|a| a.to_string()))
            .collect()
    };
    let run = |endpoints: &str, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        etcdctl(endpoints, &args)
    };
    let put = ok(&c, run(&three.endpoints, with(&["put", "foo", "bar"])));
    assert_eq!(put.trim(), "OK");
    let got = ok(
        &c,
        run(
            &three.endpoints,
            with(&["get", "foo", "--print-value-only"]),
        ),
    );
    assert_eq!(got.trim(), "bar");
    // ... plain HTTP is refused ...
    let one = three.endpoints.split(',').next().unwrap().to_string();
    let plain = one.replace("https://", "http://");
    assert!(
        etcdctl(&plain, &["get", "foo"]).is_err(),
        "plain HTTP must be refused"
    );
    assert!(
        http_version(&plain).await.is_err(),
        "plain HTTP /version must be refused"
    );
    // ... and so is HTTPS without a client certificate.
    let ca_only = format!("--cacert={}", bundle.join("ca.crt").display());
    assert!(
        etcdctl(&one, &[&ca_only, "get", "foo"]).is_err(),
        "HTTPS without a client certificate must be refused"
    );

    let monitor = ClusterMonitor::start(&c);
    let writer = Writer::start_tls(c.live_endpoints(), c.etcd_tls());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    // Scale 3 -> 5 -> 3.
    c.set_spec(5, VERSION).unwrap();
    ok(&c, c.wait_running(5, VERSION, CHANGE * 2).await);
    c.set_spec(3, VERSION).unwrap();
    let back = ok(&c, c.wait_running(3, VERSION, CHANGE * 2).await);
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    // Restart: kill a follower's sidecar; it comes back on its data, under the same id,
    // with its TLS.
    let victim = back
        .members
        .iter()
        .filter(|m| !m.leader)
        .map(|m| m.name.clone())
        .max()
        .unwrap();
    let victim_id = back
        .members
        .iter()
        .find(|m| m.name == victim)
        .map(|m| m.id.clone())
        .unwrap();
    ok(&c, c.kill_member(&victim));
    ok(
        &c,
        c.wait_until(&format!("{victim} back on its data"), CHANGE, |s| {
            testkit::local_cluster::is_running(s, 3, VERSION)
                && s.members
                    .iter()
                    .any(|m| m.name == victim && m.id == victim_id && m.restarts >= 1)
        })
        .await,
    );

    // Replace: delete a follower with its data; a new ordinal takes its place.
    ok(&c, c.delete_member(&victim));
    let replaced = ok(
        &c,
        c.wait_until(&format!("{victim} replaced by a new member"), CHANGE, |s| {
            testkit::local_cluster::is_running(s, 3, VERSION)
                && s.members.iter().all(|m| m.name != victim)
        })
        .await,
    );
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let before_upgrade = writer.log();

    // Upgrade 3.6.15 -> 3.7.2, member by member.
    c.set_spec(3, NEXT_VERSION).unwrap();
    let upgraded = ok(&c, c.wait_running(3, NEXT_VERSION, CHANGE * 3).await);
    assert_eq!(
        upgraded.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
        replaced.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
        "the same members, upgraded"
    );
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let log = writer.stop().await;
    let monitored = ok(&c, monitor.assert_one_change_at_a_time());

    let endpoints: Vec<String> = upgraded.endpoints.split(',').map(str::to_string).collect();
    let held = ok(
        &c,
        verify_acked_tls(&endpoints, &log.acked, c.etcd_tls().as_ref()).await,
    );
    let got = ok(
        &c,
        run(
            &upgraded.endpoints,
            with(&["get", "foo", "--print-value-only"]),
        ),
    );
    assert_eq!(got.trim(), "bar", "the first write survived everything");
    eprintln!(
        "TLS cluster: {} writes acknowledged ({held} held), {} failed ({} before the upgrade), longest gap {:?}; phases {:?}; in {:?}",
        log.acked.len(),
        log.failures.len(),
        before_upgrade.failures.len(),
        log.longest_gap,
        monitored.phases,
        started.elapsed()
    );
    assert!(
        before_upgrade.failures.is_empty(),
        "writes failed while scaling or replacing a follower: {:?}",
        before_upgrade.failures
    );
}

/// The serving certificate etcd presents on `client_url` (DER), read over TLS with the
/// cluster's CA.
async fn served_certificate(client_url: &str, bundle: &Path) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    let read = |f: &str| std::fs::read(bundle.join(f));
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&read("ca.crt")?) {
        roots.add(ca?)?;
    }
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("tls.crt")?).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&read("tls.key")?)?;
    let config = rustls::ClientConfig::builder_with_provider(etcd_operator::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    let addr = client_url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1")?;
    let stream = tokio::time::timeout(
        Duration::from_secs(3),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await??;
    let (_, session) = stream.get_ref();
    Ok(session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default())
}

fn pem_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path).unwrap_or_default();
    etcd_operator::pki::first_der(&pem).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_steady_writes() {
    let _serial = serial_guard();
    let started = std::time::Instant::now();
    // 24 s certificates: renewed every ~16 s, several times while the writer runs.
    let mut c = LocalCoordinator::start(
        CoordinatorOptions::new(coordinator_bin(), example())
            .tls()
            .arg("--cert-validity-secs=24"),
    )
    .await
    .unwrap();
    let running = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let names: Vec<String> = running.members.iter().map(|m| m.name.clone()).collect();
    let member_dir = |name: &str| c.pki_dir().join(c.cluster()).join(name);
    let files = ["etcd-server.crt", "etcd-peer.crt", "tls.crt"];
    let first: BTreeMap<(String, &str), Vec<u8>> = names
        .iter()
        .flat_map(|n| files.iter().map(move |f| (n.clone(), *f)))
        .map(|(n, f)| {
            let der = pem_der(&member_dir(&n).join(f));
            ((n, f), der)
        })
        .collect();
    let pids: BTreeMap<String, u32> = c
        .members()
        .into_iter()
        .filter_map(|m| m.pid.map(|p| (m.name, p)))
        .collect();

    let writer = Writer::start_tls(c.live_endpoints(), c.etcd_tls());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    // Two rotations of every certificate of every member, counted by distinct files seen.
    let mut seen: BTreeMap<(String, &str), Vec<Vec<u8>>> = first
        .iter()
        .map(|(k, v)| (k.clone(), vec![v.clone()]))
        .collect();
    let rotated = wait_for(
        "every member's certificates renewed twice",
        Duration::from_secs(90),
        || {
            for ((name, file), versions) in seen.iter_mut() {
                let now = pem_der(&member_dir(name).join(file));
                if !now.is_empty() && !versions.contains(&now) {
                    versions.push(now);
                }
            }
            let done = seen.values().all(|v| v.len() >= 3);
            async move { done.then_some(()) }
        },
    )
    .await;
    ok(&c, rotated);

    // etcd serves a renewed certificate, without a restart (same sidecars, same members).
    let bundle = c.client_bundle();
    for m in c.members() {
        let served = ok(&c, served_certificate(&m.client_url(), &bundle).await);
        assert_ne!(
            served,
            first[&(m.name.clone(), "etcd-server.crt")],
            "{} still serves its first certificate",
            m.name
        );
    }
    let now_pids: BTreeMap<String, u32> = c
        .members()
        .into_iter()
        .filter_map(|m| m.pid.map(|p| (m.name, p)))
        .collect();
    assert_eq!(now_pids, pids, "no member was restarted");
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    // The control path with rotated certificates: a coordinator started anew (new
    // connections from every sidecar, with their current certificates) hears every member
    // again, and acts (a scale-up needs registration, grants and reports).
    c.crash();
    let restarted = c.restart().await;
    ok(&c, restarted);
    ok(&c, c.wait_running(3, VERSION, FORM).await);
    c.set_spec(4, VERSION).unwrap();
    ok(&c, c.wait_running(4, VERSION, CHANGE).await);
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let log = writer.stop().await;
    let endpoints = (c.live_endpoints())();
    let held = ok(
        &c,
        verify_acked_tls(&endpoints, &log.acked, c.etcd_tls().as_ref()).await,
    );
    eprintln!(
        "rotation: {} writes acknowledged ({held} held), {} failed, longest gap {:?}; {} certificate versions seen; in {:?}",
        log.acked.len(),
        log.failures.len(),
        log.longest_gap,
        seen.values().map(Vec::len).sum::<usize>(),
        started.elapsed()
    );
    assert!(
        log.failures.is_empty(),
        "writes failed while certificates rotated: {:?}",
        log.failures
    );
}
