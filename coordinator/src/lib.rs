//! The coordinator: watch `EtcdCluster` specs, plan one safe step at a time, act through a
//! runtime (local processes or Kubernetes), serialize membership changes, serve status.
//!
//! `plan` is pure; `controller` runs observe -> plan -> act -> status for one cluster;
//! `registry` and `service` are the sidecars' and people's side of the gRPC contract;
//! `runtime` says what a place members live in must do, and the two runtimes have the same
//! shape: `local` (processes; `local::mode` is `etcd-coordinator local`) and `k8s` (Pods;
//! `k8s::operator` is `etcd-coordinator kubernetes`); `status` prints what the coordinator
//! serves. `security` holds the coordinator's side of the control path's TLS (the TLS itself
//! is the shared crate's `etcd_operator::tls`), `local::pki` and `k8s::runtime` the
//! certificates the runtimes issue; `admin` is an operator's commands against a running local
//! coordinator.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backups;
pub mod conditions;
pub mod controller;
pub mod epoch;
pub mod grants;
pub mod k8s;
pub mod leadership;
pub mod local;
pub mod metrics;
pub mod plan;
pub mod record;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod security;
pub mod server;
pub mod service;
pub mod status;
