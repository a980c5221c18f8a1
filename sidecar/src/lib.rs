//! The sidecar: the agent that runs beside (and as the parent of) one etcd member.
//!
//! Pipeline: validate configuration (`config`) -> decide how to start and start etcd
//! (`member`, `supervisor`, `etcd_args`, `identity`) -> observe and report health
//! (`health`) -> serve the coordinator's requests to leave or hand off (`service`).
#![deny(unsafe_code)] // one audited exception: `supervisor::die_with_parent`

pub mod config;
pub mod error;
pub mod etcd_args;
pub mod health;
pub mod identity;
pub mod member;
pub mod service;
pub mod supervisor;

use std::{future::Future, sync::Arc};

use etcd_operator::proto::{HealthReport, sidecar_server::SidecarServer};
use tokio::sync::watch;
use tracing::info;

pub use config::{RunArgs, SidecarConfig};
pub use member::Member;

/// Runs the sidecar until `shutdown` resolves, then stops etcd gracefully.
pub async fn run(
    cfg: SidecarConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.grpc_addr).await?;
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
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(etcd_operator::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(etcd_operator::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let service = service::SidecarService::new(Arc::clone(&member), reports_rx.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(SidecarServer::new(service))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                },
            ),
    );
    let observer = tokio::spawn(health::observe(
        Arc::clone(&member),
        reports_tx,
        health_reporter,
    ));
    let reporter = tokio::spawn(health::stream_reports(Arc::clone(&member), reports_rx));
    let starter = {
        let m = Arc::clone(&member);
        tokio::spawn(async move { m.start().await })
    };
    shutdown.await;
    info!("shutting down: stopping etcd");
    starter.abort();
    observer.abort();
    reporter.abort();
    member.supervisor.stop().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    Ok(())
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
