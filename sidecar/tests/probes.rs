//! The sidecar's plaintext health port as the kubelet's gRPC probes see it: the liveness
//! service answers SERVING for as long as the sidecar process answers, whatever its member
//! does, and the readiness service only once the member is healthy. The member's "etcd"
//! here is a program that never answers, as a member still catching up, replaying its WAL
//! or without a leader looks from outside: the Pod must stay unready and must not be killed.
//! No etcd process is started, so the machine-wide lock is not needed.

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use etcd_sidecar::{LIVENESS_SERVICE, health::SERVICE_NAME};
use testkit::{SidecarProc, SidecarSpec, free_port, grant_server::TestCoordinator, wait_for};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

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

#[tokio::test]
async fn liveness_passes_while_the_member_is_not_ready_and_fails_once_the_sidecar_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    // An "etcd" that starts and never answers.
    let etcd = dir.path().join("etcd");
    std::fs::write(&etcd, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&etcd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let member = etcd_operator::naming::member_name("probes", 0);
    let coordinator = TestCoordinator::start(&member).await.unwrap();
    let mut spec = SidecarSpec::new(
        Path::new(env!("CARGO_BIN_EXE_etcd-sidecar")),
        "probes",
        &member,
        dir.path(),
        &coordinator.url,
    );
    let health = format!("127.0.0.1:{}", free_port());
    spec.env = vec![
        ("ETCDOP_HEALTH_ADDR".into(), health.clone()),
        ("ETCDOP_ETCD_BINARY".into(), etcd.display().to_string()),
    ];
    coordinator.issue(&spec).unwrap();
    let mut sidecar = SidecarProc::start(spec).unwrap();

    let first = wait_for("the health port answers", Duration::from_secs(30), || {
        let health = health.clone();
        async move { check(&health, LIVENESS_SERVICE).await.ok() }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", sidecar.log_tail(30)));
    assert_eq!(first, ServingStatus::Serving);
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
