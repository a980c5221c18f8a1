//! The coordinator: watch `EtcdCluster` specs, plan one safe step at a time, act through a
//! runtime (local processes or Kubernetes), serialize membership changes, serve status.
//!
//! `plan` is pure; `controller` runs observe -> plan -> act -> status for one cluster;
//! `registry` and `service` are the sidecars' and people's side of the gRPC contract;
//! `runtime` and `local` are where members live; `local_mode` ties them together for
//! `etcd-coordinator local`; `status` prints what the coordinator serves. `security` and
//! `local_pki` hold the control path's TLS and the certificates the runtimes issue; `admin`
//! is an operator's commands against a running local coordinator.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backups;
pub mod controller;
pub mod k8s;
pub mod leadership;
pub mod local;
pub mod local_mode;
pub mod local_pki;
pub mod metrics;
pub mod plan;
pub mod registry;
pub mod runtime;
pub mod security;
pub mod server;
pub mod service;
pub mod status;
