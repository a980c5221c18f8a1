//! The etcd CA rotates with an overlap, end to end with `etcd-coordinator local` and real
//! etcd: a TLS cluster whose CA is short-lived (`--ca-validity-secs`) reaches the last third
//! of its CA's life under a writer; members come to trust the old and the new CA (each
//! restarted, since etcd reads its trusted CA files only at start), every leaf is issued
//! again by the new CA, the old CA is dropped from every trust file (each member restarted
//! again). The coordinator is killed at every step of the rotation (its failpoints) and
//! carries it on. Then an operator asks for another rotation (`etcd-coordinator rotate-ca`),
//! which runs at once. No write fails, none acknowledged is lost, no member is added or
//! removed.
//!
//! Runs under the machine-wide cluster lock.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use etcd_operator::{
    pki::{Authority, der_issued_by, issued_by},
    proto::{ClusterStatus, ConditionType},
};
use testkit::{
    clients::tls_options,
    local_cluster::{CoordinatorOptions, LocalCoordinator, condition, describe},
    serial_guard,
    traffic::{Writer, verify_acked_tls},
};

const FORM: Duration = Duration::from_secs(90);
const VERSION: &str = "3.6.15";
/// The CA's lifetime: backdated by a tenth (15 s), a rotation is due 95 s after it is
/// made, 55 s before it expires.
const CA_VALIDITY_SECS: u64 = 150;

/// Every failpoint of the rotation: each kills the coordinator once.
const ROTATION_FAILPOINTS: &[&str] = &[
    "coordinator.rotate-ca.after-begin-record",
    "coordinator.rotate-ca.before-restart",
    "coordinator.rotate-ca.after-restart",
    "coordinator.rotate-ca.after-reissue-record",
    "coordinator.rotate-ca.after-reissue",
    "coordinator.rotate-ca.after-drop-record",
    "coordinator.rotate-ca.finish-after-phase",
    "coordinator.rotate-ca.after-finish-files",
];

fn coordinator_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/example-etcd-cluster.yaml")
}

fn ok<T>(c: &LocalCoordinator, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}\n{}", c.logs(80)),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The certificates of a PEM file, each as DER.
fn certs(pem: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

/// The serving certificate etcd presents on `client_url` (DER), read over TLS with the
/// client bundle in `bundle`.
async fn served_certificate(client_url: &str, bundle: &Path) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    let read = |f: &str| std::fs::read(bundle.join(f));
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&read("ca.crt")?) {
        roots.add(ca?)?;
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("tls.crt")?).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&read("tls.key")?)?;
    let config = rustls::ClientConfig::builder_with_provider(etcd_operator::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    let tcp = tokio::net::TcpStream::connect(client_url.trim_start_matches("https://")).await?;
    let stream = tokio::time::timeout(
        Duration::from_secs(3),
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1")?, tcp),
    )
    .await??;
    let (_, session) = stream.get_ref();
    Ok(session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default())
}

fn certificates_reason(status: &ClusterStatus) -> Option<String> {
    condition(status, ConditionType::CertificatesValid).map(|c| c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_ca_rotates_with_an_overlap_under_writes_through_coordinator_crashes() {
    let _serial = serial_guard();
    let started = std::time::Instant::now();
    let markers = tempfile::tempdir().unwrap();
    let armed: Vec<String> = ROTATION_FAILPOINTS
        .iter()
        .map(|f| format!("{f}=return"))
        .collect();
    let mut c = LocalCoordinator::start(
        CoordinatorOptions::new(coordinator_bin(), example())
            .tls()
            .arg(format!("--ca-validity-secs={CA_VALIDITY_SECS}"))
            .env("FAILPOINTS", &armed.join(";"))
            .env(
                etcd_operator::failpoints::MARKER_DIR_ENV,
                &markers.path().display().to_string(),
            ),
    )
    .await
    .unwrap();
    let running = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let names: BTreeSet<String> = running.members.iter().map(|m| m.name.clone()).collect();
    let ids: BTreeSet<String> = running.members.iter().map(|m| m.id.clone()).collect();
    let cluster_pki = c.pki_dir().join(c.cluster());
    let old_ca = read(&cluster_pki.join("etcd-ca.crt"));
    assert_eq!(certs(&old_ca).len(), 1, "one CA before the rotation");
    let bundle = c.client_bundle();
    let writer = {
        let bundle = bundle.clone();
        Writer::start_tls_reloading(c.live_endpoints(), move || tls_options(&bundle).ok())
    };
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    let first_member = cluster_pki.join(&running.members[0].name);
    let seen = wait_rotated(&mut c, &old_ca, &first_member).await;
    let fired: Vec<&str> = ROTATION_FAILPOINTS
        .iter()
        .copied()
        .filter(|f| !etcd_operator::failpoints::fired(markers.path(), f))
        .collect();
    assert!(fired.is_empty(), "failpoints never reached: {fired:?}");
    assert!(
        seen.rotating,
        "the status said CARotating during the rotation"
    );
    assert!(
        seen.both_trusted,
        "members trusted the old and the new CA together"
    );

    // The new CA is the cluster's; every trust file holds it alone; every leaf is its.
    let new_ca = read(&cluster_pki.join("etcd-ca.crt"));
    let new_key = read(&cluster_pki.join("etcd-ca.key"));
    let authority = Authority::from_pem(&new_ca, &new_key).expect("the new CA and its key");
    assert_ne!(certs(&new_ca), certs(&old_ca));
    let now = c.members();
    assert_eq!(
        now.iter().map(|m| m.name.clone()).collect::<BTreeSet<_>>(),
        names,
        "the same members: none added or removed"
    );
    for m in &now {
        let dir = cluster_pki.join(&m.name);
        assert_eq!(
            certs(&read(&dir.join("etcd-ca.crt"))),
            certs(&new_ca),
            "{} trusts the new CA alone",
            m.name
        );
        for leaf in ["etcd-server.crt", "etcd-peer.crt", "etcd-client.crt"] {
            assert!(
                issued_by(&read(&dir.join(leaf)), &authority),
                "{}'s {leaf} is the new CA's",
                m.name
            );
        }
        let served = ok(&c, served_certificate(&m.client_url(), &bundle).await);
        assert!(
            der_issued_by(&served, &authority),
            "{} serves a certificate of the new CA",
            m.name
        );
    }
    assert_eq!(certs(&read(&bundle.join("ca.crt"))), certs(&new_ca));
    assert!(issued_by(&read(&bundle.join("tls.crt")), &authority));
    let after = ok(&c, c.wait_running(3, VERSION, FORM).await);
    assert_eq!(
        after
            .members
            .iter()
            .map(|m| m.id.clone())
            .collect::<BTreeSet<_>>(),
        ids,
        "the same etcd members"
    );

    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    // Asked for by an operator, long before it is due: a second rotation, to a third CA.
    let answer = ok(&c, c.rotate_ca());
    assert!(answer.contains("asked for"), "{answer}");
    let seen = wait_rotated(&mut c, &new_ca, &first_member).await;
    assert!(seen.rotating && seen.both_trusted, "{seen:?}");
    let newest = read(&cluster_pki.join("etcd-ca.crt"));
    assert_ne!(certs(&newest), certs(&new_ca));
    for m in c.members() {
        assert_eq!(
            certs(&read(&cluster_pki.join(&m.name).join("etcd-ca.crt"))),
            certs(&newest),
            "{} trusts the newest CA alone",
            m.name
        );
    }
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let log = writer.stop().await;
    let endpoints = (c.live_endpoints())();
    let held = ok(
        &c,
        verify_acked_tls(&endpoints, &log.acked, c.etcd_tls().as_ref()).await,
    );
    eprintln!(
        "CA rotation: {} writes acknowledged ({held} held), {} failed, longest gap {:?}; in {:?}",
        log.acked.len(),
        log.failures.len(),
        log.longest_gap,
        started.elapsed()
    );
    assert!(
        log.failures.is_empty(),
        "writes failed while the CA rotated: {:?}",
        log.failures
    );
}

/// What was seen while a rotation ran.
#[derive(Debug)]
struct Seen {
    /// The status said `CARotating`.
    rotating: bool,
    /// A member's trust file held two CAs.
    both_trusted: bool,
}

/// Waits until the rotation away from `from_ca` is over: the cluster's CA files name another
/// CA, no rotation is under way (neither its file nor the record's), and the cluster runs
/// without `CARotating`. The coordinator is started again whenever it exits (a failpoint).
async fn wait_rotated(c: &mut LocalCoordinator, from_ca: &str, member_pki: &Path) -> Seen {
    let cluster_pki = c.pki_dir().join(c.cluster());
    let rotation_file = cluster_pki.join("etcd-ca-rotation.json");
    let decisions = c.state_dir().join(c.cluster()).join("decisions.json");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(CA_VALIDITY_SECS + 120);
    let mut seen = Seen {
        rotating: false,
        both_trusted: false,
    };
    loop {
        let restarted = c.restart_if_exited().await;
        ok(c, restarted);
        let status = c.status().await;
        if let Some(s) = &status
            && certificates_reason(s).as_deref() == Some("CARotating")
        {
            seen.rotating = true;
        }
        if certs(&read(&member_pki.join("etcd-ca.crt"))).len() == 2 {
            seen.both_trusted = true;
        }
        let ca = read(&cluster_pki.join("etcd-ca.crt"));
        let done = !ca.is_empty()
            && ca != from_ca
            && !rotation_file.exists()
            && !read(&decisions).contains("caRotation")
            && status.as_ref().is_some_and(|s| {
                testkit::local_cluster::is_running(s, 3, VERSION)
                    && certificates_reason(s).as_deref() != Some("CARotating")
            });
        if done {
            return seen;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out waiting for the CA rotation to end\nlast status: {}\n{}",
                status
                    .as_ref()
                    .map(describe)
                    .unwrap_or_else(|| "none".into()),
                c.logs(80)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
