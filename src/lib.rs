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
pub mod durable;
pub mod etcd_bin;
pub mod etcd_error;
pub mod failpoints;
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

    /// Enum fields in JSON by their proto names, as grpcurl prints them (a number the
    /// contract does not define stays a number, as grpcurl leaves it).
    pub mod json {
        macro_rules! by_name {
            ($($name:ident: $enum:ty),* $(,)?) => {$(
                #[doc = concat!("A `", stringify!($enum), "` field by its proto name.")]
                pub fn $name<S: serde::Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
                    match <$enum>::try_from(*value) {
                        Ok(v) => s.serialize_str(v.as_str_name()),
                        Err(_) => s.serialize_i32(*value),
                    }
                }
            )*};
        }
        by_name!(
            cluster_phase: super::ClusterPhase,
            member_phase: super::MemberPhase,
            condition_type: super::ConditionType,
            condition_status: super::ConditionStatus,
        );
    }
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

    #[test]
    fn status_json_names_enums_as_grpcurl_does() {
        use super::proto::{
            ClusterPhase, ClusterStatus, Condition, ConditionStatus, ConditionType, MemberPhase,
            MemberStatus,
        };
        let status = ClusterStatus {
            phase: ClusterPhase::Running as i32,
            members: vec![MemberStatus {
                phase: MemberPhase::HandedOff as i32,
                ..Default::default()
            }],
            conditions: vec![
                Condition {
                    r#type: ConditionType::SpecValid as i32,
                    status: ConditionStatus::True as i32,
                    ..Default::default()
                },
                Condition {
                    r#type: 99,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "CLUSTER_PHASE_RUNNING");
        assert_eq!(json["members"][0]["phase"], "MEMBER_PHASE_HANDED_OFF");
        assert_eq!(json["conditions"][0]["type"], "CONDITION_TYPE_SPEC_VALID");
        assert_eq!(json["conditions"][0]["status"], "CONDITION_STATUS_TRUE");
        assert_eq!(json["conditions"][1]["type"], 99);
        assert_eq!(
            json["conditions"][1]["status"],
            "CONDITION_STATUS_UNSPECIFIED"
        );
    }
}
