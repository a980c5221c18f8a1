//! The coordinator's gRPC servers: `etcdop.v1.Coordinator`, `grpc.health.v1`, and server
//! reflection (v1 and v1alpha, for grpcurl of every age), on up to three listeners:
//!
//! - status (`--grpc-addr`): for people. Health and reflection; in local mode (plaintext on
//!   loopback) also the read-only methods, every method that changes something answering
//!   UNAUTHENTICATED. On Kubernetes (TLS with the published CA, no client certificate) every
//!   `Coordinator` method answers UNAUTHENTICATED: the read-only ones span namespaces, so they
//!   answer only on the control port, to a certificate of the control CA (`service.rs`).
//! - control (`--control-addr`): for the sidecars. Mutual TLS; every method, each checked
//!   against the caller's certificate.
//! - health (`--health-addr`, Kubernetes): plaintext gRPC health only, for the kubelet's
//!   probes (which speak no TLS).

use std::sync::Arc;

use etcd_operator::proto::coordinator_server::CoordinatorServer;
use etcd_operator::tls::ServerTls;
use tokio::{net::TcpListener, sync::watch};
use tonic_health::server::HealthReporter;

use crate::{
    registry::Registry,
    service::{Access, CoordinatorService},
};

/// The gRPC health service name.
pub const SERVICE_NAME: &str = "etcdop.v1.Coordinator";

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A health service reporting SERVING for the coordinator.
async fn health() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    (reporter, service)
}

/// Serves the status endpoint on `listener` (over TLS when `tls` is given, and then with
/// no `Coordinator` method answering: see the module doc) until `stop`.
pub async fn serve_status(
    listener: TcpListener,
    registry: Registry,
    tls: Option<Arc<ServerTls>>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let access = if tls.is_some() {
        Access::Closed
    } else {
        Access::ReadOnly
    };
    let (_reporter, health) = health().await;
    let (reflection_v1, reflection_v1alpha) =
        etcd_sidecar::reflection().expect("the embedded descriptor sets are valid");
    let router = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(CoordinatorServer::new(CoordinatorService::new(
            registry, access,
        )));
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), stopped(stop))
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stopped(stop),
                )
                .await
        }
    }
}

/// Serves the control endpoint (mutual TLS, identity-checked) on `listener` until `stop`.
pub async fn serve_control(
    listener: TcpListener,
    registry: Registry,
    tls: Arc<ServerTls>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (_reporter, health) = health().await;
    let (reflection_v1, reflection_v1alpha) =
        etcd_sidecar::reflection().expect("the embedded descriptor sets are valid");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(CoordinatorServer::new(CoordinatorService::new(
            registry,
            Access::Authenticated,
        )))
        .serve_with_incoming_shutdown(tls.incoming(listener), stopped(stop))
        .await
}

/// Serves plaintext gRPC health only (the kubelet's probes) on `listener` until `stop`.
pub async fn serve_health(
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (_reporter, health) = health().await;
    tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stopped(stop),
        )
        .await
}
