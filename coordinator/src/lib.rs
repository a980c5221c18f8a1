//! The coordinator: watch, plan, act, serve status.
#![forbid(unsafe_code)]

pub mod plan;
