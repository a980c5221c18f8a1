//! The local runtime: members are `etcd-sidecar` processes on 127.0.0.1, their data and
//! certificates under a state directory. The same brain as on Kubernetes
//! ([`crate::controller::ClusterController`] over the pure planner); what changes is where
//! members live and where status goes.
//!
//! - [`runtime`]: [`LocalRuntime`], members as processes recorded in
//!   `<state>/<cluster>/cluster.json` (the counterpart of [`crate::k8s::runtime`]);
//! - [`pki`]: [`LocalPki`], the certificates on disk under `<state>/pki/` (on Kubernetes,
//!   Secrets written by [`crate::k8s::runtime`]);
//! - [`netns`]: [`MemberNetns`], members in network namespaces of their own, on their own
//!   addresses (`--member-netns`, as root), so that one member's links can be faulted;
//! - [`manifests`]: which spec each cluster runs on, each manifest file read on its own,
//!   the last valid spec of each cluster kept in `<state>/<cluster>/spec.json`;
//! - [`mode`]: `etcd-coordinator local`, the wiring: manifests re-read when they change,
//!   one controller per cluster, the gRPC ports, progress for people (the counterpart of
//!   [`crate::k8s::operator`]).

pub mod manifests;
pub mod mode;
pub mod netns;
pub mod pki;
pub mod runtime;

pub use mode::{LocalOptions, run_local};
pub use netns::MemberNetns;
pub use pki::{LocalPki, LocalPkiError};
pub use runtime::{LocalRuntime, SidecarCommand, clusters_in};
