//! The harness behind `etcd-bench`: what the operator costs, next to what etcd itself needs.
//!
//! Every figure is measured in one run on this machine, beside its floor (bare etcd
//! processes doing the same step by hand, [`bare`]), so it reads as a ratio. The operator's
//! side of each row is in [`scenarios`] (small databases), [`size`] (a database filled to
//! a real size, with the restore checked key by key) and [`memory`] (a fleet's resident
//! memory); [`availability`] is the client load that measures what an operation costs the
//! clients. [`table`] prints the rows. The CLI is `testkit/src/bin/etcd-bench.rs`.

pub mod availability;
pub mod bare;
pub mod memory;
pub mod scenarios;

pub mod size;
pub mod table;
