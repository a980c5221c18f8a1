//! Names used in several places, declared once: member names with never-reused ordinals,
//! cluster keys, labels.

use std::fmt;

/// Identifies a cluster: its namespace (empty in local mode) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClusterKey {
    /// Kubernetes namespace; empty in local mode.
    pub namespace: String,
    /// Name of the `EtcdCluster`.
    pub name: String,
}

impl ClusterKey {
    /// A key for a cluster in `namespace` (empty for local mode).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A key for a local-mode cluster.
    pub fn local(name: impl Into<String>) -> Self {
        Self::new("", name)
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

impl From<&crate::proto::ClusterRef> for ClusterKey {
    fn from(r: &crate::proto::ClusterRef) -> Self {
        Self::new(r.namespace.clone(), r.name.clone())
    }
}

impl From<&ClusterKey> for crate::proto::ClusterRef {
    fn from(k: &ClusterKey) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
        }
    }
}

/// The name of the member with `ordinal` in `cluster`: `<cluster>-<NNNN>`.
pub fn member_name(cluster: &str, ordinal: u32) -> String {
    format!("{cluster}-{ordinal:04}")
}

/// The ordinal of `member` if it is a member name of `cluster`.
pub fn member_ordinal(cluster: &str, member: &str) -> Option<u32> {
    let rest = member.strip_prefix(cluster)?.strip_prefix('-')?;
    if rest.len() < 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// Label carrying the cluster name on every object the operator owns.
pub const LABEL_CLUSTER: &str = "etcd.operator.rs/cluster";
/// Label carrying the member name on a member's objects.
pub const LABEL_MEMBER: &str = "etcd.operator.rs/member";
/// Label naming the operator as manager.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The manager value of [`LABEL_MANAGED_BY`].
pub const MANAGER: &str = "etcd-operator";

/// etcd member ids are printed in hex, as etcdctl does.
pub fn member_id_hex(id: u64) -> String {
    if id == 0 {
        String::new()
    } else {
        format!("{id:x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_round_trip() {
        assert_eq!(member_name("etcd-cluster", 0), "etcd-cluster-0000");
        assert_eq!(member_name("etcd-cluster", 12345), "etcd-cluster-12345");
        assert_eq!(member_ordinal("etcd-cluster", "etcd-cluster-0005"), Some(5));
        assert_eq!(
            member_ordinal("etcd-cluster", "etcd-cluster-12345"),
            Some(12345)
        );
    }

    #[test]
    fn foreign_names_have_no_ordinal() {
        assert_eq!(member_ordinal("etcd-cluster", "etcd-cluster-05"), None);
        assert_eq!(member_ordinal("etcd-cluster", "etcd-cluster-x005"), None);
        assert_eq!(member_ordinal("etcd", "etcd-cluster-0005"), None);
        assert_eq!(member_ordinal("etcd-cluster", "other-0005"), None);
    }

    #[test]
    fn keys_print_like_kubectl() {
        assert_eq!(ClusterKey::local("a").to_string(), "a");
        assert_eq!(ClusterKey::new("ns", "a").to_string(), "ns/a");
        assert_eq!(member_id_hex(0), "");
        assert_eq!(member_id_hex(0x8e9e05c52164694d), "8e9e05c52164694d");
    }
}
