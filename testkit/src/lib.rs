//! What proves the operator safe: real etcd clusters on 127.0.0.1 for tests (through the
//! real coordinator: [`local_cluster`]; plain processes: [`static_cluster`]), client traffic
//! ([`traffic`]) and the checker of its history ([`checker`]), the cluster as etcd itself
//! tells it ([`cluster_view`]), faults ([`chaos`]), the positive control the checker must
//! fail ([`control`]), process guards that clean up, and condition waits with deadlines
//! (never sleeps as synchronisation).
#![forbid(unsafe_code)]

pub mod availability;
pub mod bench;
pub mod chaos;
pub mod checker;
pub mod clients;
pub mod cluster_view;
pub mod control;
pub mod history;
pub mod local_cluster;
pub mod netns;
pub mod process;
pub mod rng;
pub mod static_cluster;
pub mod traffic;
pub mod volume;
pub mod wait;
pub mod watcher;

pub use process::{SidecarProc, SidecarSpec, free_port, serial_guard, terminate};
pub use wait::wait_for;
