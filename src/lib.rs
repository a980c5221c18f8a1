//! Shared crate of the etcd operator: the gRPC contract compiled from `proto/`, the
//! `EtcdCluster` resource types, spec validation, etcd version rules, member naming,
//! the membership-grant table, where real etcd binaries come from, and the certificates of
//! the control path and of etcd (issuing, and reading identities back), the control path's
//! TLS (`tls`: mutual TLS between the coordinator and the sidecars), backups' metadata,
//! names and retention, and the local runtime's record of its members.
//!
//! Everything here but `tls` is pure (no network, no processes) so that the coordinator, the
//! sidecar and the tests share one definition of each rule; `tls` is here because both
//! binaries speak it.
#![forbid(unsafe_code)]

pub mod backup;
pub mod etcd_bin;
pub mod etcd_error;
pub mod fuzzing;
pub mod grant;
pub mod identity;
pub mod local_record;
pub mod manifest;
pub mod naming;
pub mod pki;
pub mod resource;
pub mod tls;
pub mod validate;
pub mod version;

/// The gRPC contract, package `etcdop.v1`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("etcdop.v1");

    /// Encoded file descriptor set of the contract, registered for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("etcdop_descriptor");
}

pub use naming::ClusterKey;
pub use version::EtcdVersion;

/// Votes needed for a decision among `voters` (a majority): the one definition the
/// planner, the disruption budget, the sidecar and the tests use.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Milliseconds since the Unix epoch, now (0 on a clock before it).
pub fn now_ms() -> grant::UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn quorum_is_a_majority() {
        let q: Vec<usize> = (1..=7).map(super::quorum).collect();
        assert_eq!(q, [1, 2, 2, 3, 3, 4, 4]);
        assert!(super::now_ms() > 1_700_000_000_000);
    }
}
