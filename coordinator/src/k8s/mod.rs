//! The Kubernetes runtime: `EtcdCluster` objects in the API server, members as Pods.
//!
//! The same brain as local mode ([`crate::controller::ClusterController`] over the pure
//! planner); what changes is where members live and where status goes. One reconcile of an
//! `EtcdCluster` is a pipeline (kube-runtime calls it on every change of the object that a
//! reconcile acts on, not its status; on every change of the Pods, Services and
//! PodDisruptionBudgets it owns; when what the sidecars report changes in a way that
//! matters, since etcd's health changes without any watch event ([`triggers`]); soon again
//! while the planner acts or waits, after a growing backoff when it fails, and on a long
//! resync when the cluster is steady):
//!
//! 1. dereference (no client): the raw object is parsed into an [`EtcdCluster`]; a
//!    malformed one gets an `Invalid` status and an Event, and the watch goes on;
//! 2. no finalizer: owner references collect what a cluster owns, so a deletion never
//!    waits on the coordinator; the finalizer of earlier versions is removed where found;
//! 3. validate (no client): an invalid spec touches nothing; the controller refuses it
//!    with a condition and the reconciler publishes an Event;
//! 4. build (no client, [`build`]): Services, PodDisruptionBudget, member Pods and claims
//!    are pure functions of the spec;
//! 5. apply (client required): peer Service first (members need their DNS names before
//!    they start), then the client Service, then the PodDisruptionBudget; then one
//!    observe -> plan -> act pass of the controller, whose act step creates, deletes or
//!    patches Pods through [`runtime::KubeRuntime`];
//! 6. status (client required): the controller's status is converted ([`status`]) and
//!    written with server-side apply to the status subresource.
//!
//! Only the holder of a `coordination.k8s.io` Lease reconciles ([`leader`]); the
//! operator's wiring is in [`operator`].
//!
//! [`EtcdCluster`]: etcd_operator::resource::EtcdCluster
//! [`reconcile`]: reconcile::reconcile

pub mod addressing;
pub mod build;
pub mod epoch;
pub mod error;
pub mod events;
pub mod install;
pub mod leader;
pub mod operator;
pub mod reconcile;
pub mod records;
pub mod runtime;
pub mod status;
#[doc(hidden)]
pub mod testing;
pub mod triggers;

pub use addressing::{MemberAddressing, MemberEndpoints, PodDns};
pub use error::Error;
pub use reconcile::{Context, reconcile};
pub use runtime::KubeRuntime;

/// The finalizer earlier versions put on every `EtcdCluster`; removed where found.
pub const FINALIZER: &str = "etcd.operator.rs/cleanup";
/// Annotation on the `EtcdCluster`: the next member ordinal never used, written before the
/// Pod of a new member is created (ordinals are never reused).
pub const ANNOTATION_NEXT_ORDINAL: &str = "etcd.operator.rs/next-ordinal";
/// The `EtcdCluster`'s durable decision record ([`crate::record`]), JSON.
pub const ANNOTATION_RECORD: &str = "etcd.operator.rs/decisions";
/// On an `EtcdCluster`: set (to any new value, e.g. the time) to take a backup now:
/// `kubectl annotate etcdcluster NAME etcd.operator.rs/backup-now="$(date +%s)" --overwrite`.
pub const ANNOTATION_BACKUP_NOW: &str = "etcd.operator.rs/backup-now";
/// On an `EtcdCluster`: set (to any value) to rotate its etcd CA with an overlap, as the
/// `rotate-ca` admin call does: `kubectl annotate etcdcluster NAME etcd.operator.rs/rotate-ca=now`.
/// The coordinator removes it once the rotation is recorded as begun, so it starts one.
pub const ANNOTATION_ROTATE_CA: &str = "etcd.operator.rs/rotate-ca";
/// Annotation on a member Pod (and claim): `"true"` on the member that bootstraps the cluster.
pub const ANNOTATION_SEED: &str = "etcd.operator.rs/seed";
/// Annotation on a member Pod (and claim): the etcd version it runs. The sidecar reads it
/// through the downward API, so an upgrade patches it together with the image.
pub const ANNOTATION_ETCD_VERSION: &str = "etcd.operator.rs/etcd-version";
/// Label on the coordinator Pod that holds the leader Lease; the coordinator Service
/// selects it, so sidecars always talk to the coordinator that acts.
pub const LABEL_COORDINATOR_LEADER: &str = "etcd.operator.rs/coordinator-leader";
/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "etcd-operator";

/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;
/// etcd's metrics port (`--listen-metrics-urls`: `/metrics` and `/health`, plain http).
pub const METRICS_PORT: u16 = 2381;
/// Name of the member Pods' (and the peer Service's) metrics port.
pub const METRICS_PORT_NAME: &str = "etcd-metrics";
/// The sidecar's gRPC port (mutual TLS).
pub const SIDECAR_PORT: u16 = 7401;
/// The sidecar's plaintext port for probes (gRPC health and GetMemberHealth only).
pub const SIDECAR_HEALTH_PORT: u16 = 7402;
/// The coordinator's status port (TLS with the published CA; read-only methods).
pub const COORDINATOR_PORT: u16 = 7400;
/// The coordinator's control port (mutual TLS; the sidecars call it).
pub const COORDINATOR_CONTROL_PORT: u16 = 7443;
/// The coordinator's plaintext port for probes (gRPC health only).
pub const COORDINATOR_HEALTH_PORT: u16 = 7402;
/// The Secret holding the control path's CA (`ca.crt`, `ca.key`), created once.
pub const CA_SECRET: &str = "etcd-operator-ca";
/// The ConfigMap publishing the control path's CA certificate (`ca.crt`) for clients of the
/// status port (`grpcurl -cacert`).
pub const CA_CONFIGMAP: &str = "etcd-operator-ca";
/// Where a member's Secret is mounted in its Pod.
pub const TLS_DIR: &str = "/etc/etcd-operator/tls";
/// Annotation on a member Pod (and claim): `"true"` when its etcd uses TLS.
pub const ANNOTATION_TLS: &str = "etcd.operator.rs/tls";
/// The default DNS domain of the Kubernetes cluster (for the members' certificates).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Where official etcd images come from; the tag is `v<version>`.
pub const DEFAULT_REPOSITORY: &str = "gcr.io/etcd-development/etcd";
/// The etcd binary inside the official images (3.5 and later are distroless).
pub const ETCD_BINARY: &str = "/usr/local/bin/etcd";
/// The `etcdutl` the official images ship beside it, of the image's own version: backups
/// are proven and restored with it.
pub const ETCDUTL_BINARY: &str = "/usr/local/bin/etcdutl";
/// The shared volume the init container copies the sidecar into.
pub const SIDECAR_DIR: &str = "/opt/etcd-operator";
/// The sidecar binary inside member Pods.
pub const SIDECAR_BINARY: &str = "/opt/etcd-operator/etcd-sidecar";
/// The member directory inside member Pods (etcd's data in `<dir>/etcd`).
pub const DATA_DIR: &str = "/var/lib/etcd";
/// Name of the etcd container of a member Pod.
pub const ETCD_CONTAINER: &str = "etcd";
/// Name of the init container that installs the sidecar.
pub const INSTALL_CONTAINER: &str = "install-sidecar";
/// The coordinator image's binary (runs `install-sidecar` as the init container).
pub const COORDINATOR_BINARY: &str = "/usr/local/bin/etcd-coordinator";
/// User and group id of every operator process in a Pod (distroless `nonroot`).
pub const NONROOT_ID: i64 = 65532;

/// Name of the headless Service that gives members their peer DNS names.
pub fn peer_service_name(cluster: &str) -> String {
    format!("{cluster}-peer")
}

/// Name of the PersistentVolumeClaim of a member.
pub fn claim_name(member: &str) -> String {
    format!("{member}-data")
}

/// Name of a member's Secret (its certificates; owned by its Pod).
pub fn member_secret_name(member: &str) -> String {
    format!("{member}-tls")
}

/// Name of a cluster's etcd CA Secret (with `spec.tls`).
pub fn etcd_ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-etcd-ca")
}

/// Name of a cluster's client certificate Secret for applications (with `spec.tls`).
pub fn client_secret_name(cluster: &str) -> String {
    format!("{cluster}-client-tls")
}
