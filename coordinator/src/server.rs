//! The coordinator's gRPC server: `etcdop.v1.Coordinator`, `grpc.health.v1`, and server
//! reflection (v1 and v1alpha, for grpcurl of every age).

use etcd_operator::proto::coordinator_server::CoordinatorServer;
use tokio::{net::TcpListener, sync::watch};

use crate::{registry::Registry, service::CoordinatorService};

/// The gRPC health service name.
pub const SERVICE_NAME: &str = "etcdop.v1.Coordinator";

/// Serves on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(etcd_operator::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(etcd_operator::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(CoordinatorServer::new(CoordinatorService::new(registry)))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await
}
