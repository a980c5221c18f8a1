//! The sidecar: the agent that runs beside (and as the parent of) one etcd member.
//!
//! Pipeline: validate configuration (`config`) -> decide how to start and start etcd
//! (`member`, `supervisor`, `etcd_args`, `identity`) -> observe and report health
//! (`health`) -> serve the coordinator's requests to leave or hand off (`service`), over
//! mutual TLS (the shared crate's `etcd_operator::tls`), with gRPC health for probes on a
//! plaintext port of its own. etcd's own TLS files are `etcd_tls`'s.
#![deny(unsafe_code)] // one audited exception: `supervisor::die_with_parent`

pub mod backup;
pub mod config;
pub mod error;
pub mod etcd_args;
pub mod etcd_tls;
pub mod health;
pub mod identity;
pub mod member;
pub mod service;
pub mod supervisor;
pub mod volume;

/// The control path's TLS, which lives in the shared crate (the coordinator uses it too);
/// named here as well for the tests and tools that drive a sidecar.
pub use etcd_operator::tls;

use std::{future::Future, sync::Arc};

use etcd_operator::proto::{HealthReport, sidecar_server::SidecarServer};
use tokio::sync::watch;
use tracing::info;

pub use config::{RunArgs, SidecarConfig};
pub use member::Member;

/// The gRPC health service name reported SERVING for as long as the sidecar process
/// answers, whatever its member's state (a member that is starting, catching up or in an
/// election is alive): the liveness probe's. Readiness uses [`health::SERVICE_NAME`].
pub const LIVENESS_SERVICE: &str = "etcdop.v1.Sidecar.Liveness";

/// This sidecar's version and build, which `etcd-sidecar --version` prints after its name.
/// The build names the sources (`build.rs`): local mode runs an `etcd-sidecar` binary only
/// when it prints the build of the sidecar the coordinator embeds.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (build ",
    env!("ETCD_SIDECAR_BUILD"),
    ")"
);

/// Runs the sidecar until `shutdown` resolves, then stops etcd gracefully.
pub async fn run(
    cfg: SidecarConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server_tls = tls::ServerTls::new(Arc::new(cfg.tls.clone()), tls::ClientAuth::Optional);
    // Fail now, not at the first handshake, when the files are unusable.
    server_tls.config()?;
    let listener = tokio::net::TcpListener::bind(cfg.grpc_addr).await?;
    let health_listener = match cfg.health_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    let member = Member::new(cfg)?;
    let (reports_tx, reports_rx) = watch::channel(HealthReport::default());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(
            health::SERVICE_NAME,
            tonic_health::ServingStatus::NotServing,
        )
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    // Set once, never changed: the health observer only moves the two above.
    health_reporter
        .set_service_status(LIVENESS_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    let service = service::SidecarService::new(
        Arc::clone(&member),
        reports_rx.clone(),
        service::Access::Authenticated,
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service.clone())
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(SidecarServer::new(service))
            .serve_with_incoming_shutdown(
                Arc::clone(&server_tls).incoming(listener),
                stopped(stop_rx.clone()),
            ),
    );
    // Probes (the kubelet's gRPC probe speaks no TLS) and people: health and the read-only
    // method; Leave and Handoff answer UNAUTHENTICATED here.
    let plain = match health_listener {
        Some(listener) => {
            let (reflection_v1, reflection_v1alpha) = reflection()?;
            let service = service::SidecarService::new(
                Arc::clone(&member),
                reports_rx.clone(),
                service::Access::ReadOnly,
            );
            Some(tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(health_service)
                    .add_service(reflection_v1)
                    .add_service(reflection_v1alpha)
                    .add_service(SidecarServer::new(service))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        stopped(stop_rx.clone()),
                    ),
            ))
        }
        None => None,
    };
    let observer = tokio::spawn(health::observe(
        Arc::clone(&member),
        reports_tx,
        health_reporter,
    ));
    let reporter = tokio::spawn(health::stream_reports(Arc::clone(&member), reports_rx));
    let renewer = tokio::spawn(Arc::clone(&member).renew_grants());
    let starter = {
        let m = Arc::clone(&member);
        tokio::spawn(async move { m.start().await })
    };
    shutdown.await;
    info!("shutting down: stopping etcd");
    starter.abort();
    observer.abort();
    reporter.abort();
    renewer.abort();
    member.supervisor.stop().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    if let Some(plain) = plain {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), plain).await;
    }
    Ok(())
}

/// Server reflection, v1 and v1alpha (grpcurl of every age).
#[allow(clippy::type_complexity)]
pub fn reflection() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(etcd_operator::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(etcd_operator::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
