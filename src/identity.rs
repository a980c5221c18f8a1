//! Who is on the other end of the control path. Every certificate the operator issues for
//! the control path carries one SPIFFE-style URI in its subject alternative names:
//!
//! - the coordinator: `spiffe://etcd-operator/coordinator`;
//! - a person's command in local mode (`etcd-coordinator delete-member`), holding a
//!   short-lived certificate issued from the state directory's CA:
//!   `spiffe://etcd-operator/operator`;
//! - a member's sidecar:
//!   `spiffe://etcd-operator/ns/<namespace, or "local">/cluster/<name>/member/<member>`.
//!
//! The servers read the URI back from the peer's (already verified) certificate and compare it
//! with what a request claims: a sidecar may speak only for its own member, and only the
//! coordinator may ask a member to leave or hand off. Pure: no I/O.

use thiserror::Error;
use x509_parser::{extensions::GeneralName, prelude::FromDer};

use crate::ClusterKey;

/// The trust domain of every identity the operator issues.
pub const TRUST_DOMAIN: &str = "etcd-operator";
/// The coordinator's identity URI.
pub const COORDINATOR_URI: &str = "spiffe://etcd-operator/coordinator";
/// The identity URI of an operator's command (local mode).
pub const OPERATOR_URI: &str = "spiffe://etcd-operator/operator";
/// The namespace segment of local-mode clusters (which have no namespace).
pub const LOCAL_NAMESPACE: &str = "local";
/// The longest URI accepted (a DNS name is at most 253 bytes; three of them and the rest).
const MAX_URI_LEN: usize = 1024;

/// A peer on the control path, as its certificate names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// The coordinator.
    Coordinator,
    /// A person's command, holding a certificate of the state directory's CA.
    Operator,
    /// The sidecar of one member.
    Member {
        /// The namespace segment (`local` in local mode).
        namespace: String,
        /// The cluster's name.
        cluster: String,
        /// The member's name.
        member: String,
    },
}

/// Why a certificate or URI names no identity.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The certificate does not parse.
    #[error("the certificate does not parse: {0}")]
    Certificate(String),
    /// No URI of the operator's trust domain is in the certificate.
    #[error("the certificate names no etcd-operator identity")]
    Missing,
    /// More than one identity URI (ambiguous).
    #[error("the certificate names {0} etcd-operator identities")]
    Ambiguous(usize),
    /// The URI is not one the operator issues.
    #[error("{uri:?} is not an etcd-operator identity: {reason}")]
    Malformed {
        /// The URI (truncated).
        uri: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The namespace segment of a cluster key: the namespace, or `local` without one.
pub fn namespace_segment(cluster: &ClusterKey) -> &str {
    if cluster.namespace.is_empty() {
        LOCAL_NAMESPACE
    } else {
        &cluster.namespace
    }
}

/// A path segment the operator issues: a DNS label or subdomain, as Kubernetes names are.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

impl PeerIdentity {
    /// The identity of `member` of `cluster`.
    pub fn member(cluster: &ClusterKey, member: &str) -> Self {
        Self::Member {
            namespace: namespace_segment(cluster).to_string(),
            cluster: cluster.name.clone(),
            member: member.to_string(),
        }
    }

    /// The URI written into certificates.
    pub fn uri(&self) -> String {
        match self {
            Self::Coordinator => COORDINATOR_URI.to_string(),
            Self::Operator => OPERATOR_URI.to_string(),
            Self::Member {
                namespace,
                cluster,
                member,
            } => {
                format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/cluster/{cluster}/member/{member}")
            }
        }
    }

    /// True when this is the sidecar of `member` of `cluster`.
    pub fn is_member(&self, cluster: &ClusterKey, member: &str) -> bool {
        matches!(self, Self::Member { namespace, cluster: c, member: m }
            if namespace == namespace_segment(cluster) && *c == cluster.name && m == member)
    }

    /// Parses an identity URI; anything else of the trust domain is refused.
    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let malformed = |reason| IdentityError::Malformed {
            uri: uri.chars().take(80).collect(),
            reason,
        };
        if uri.len() > MAX_URI_LEN {
            return Err(malformed("too long"));
        }
        if uri == COORDINATOR_URI {
            return Ok(Self::Coordinator);
        }
        if uri == OPERATOR_URI {
            return Ok(Self::Operator);
        }
        let path = uri
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.strip_prefix(TRUST_DOMAIN))
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| malformed("not in the spiffe://etcd-operator/ trust domain"))?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", namespace, "cluster", cluster, "member", member] => {
                if ![namespace, cluster, member]
                    .iter()
                    .all(|s| valid_segment(s))
                {
                    return Err(malformed("a name is not a DNS subdomain"));
                }
                Ok(Self::Member {
                    namespace: namespace.to_string(),
                    cluster: cluster.to_string(),
                    member: member.to_string(),
                })
            }
            _ => Err(malformed(
                "expected /coordinator or /ns/<ns>/cluster/<name>/member/<member>",
            )),
        }
    }

    /// The identity a DER certificate names: its one URI of the operator's trust domain.
    /// The certificate must already have been verified against the operator's CA.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let ours: Vec<&str> = sans
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(&format!("spiffe://{TRUST_DOMAIN}/")) => {
                    Some(*uri)
                }
                _ => None,
            })
            .collect();
        match ours.as_slice() {
            [] => Err(IdentityError::Missing),
            [uri] => Self::parse_uri(uri),
            many => Err(IdentityError::Ambiguous(many.len())),
        }
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        let local = PeerIdentity::member(&ClusterKey::local("etcd-cluster"), "etcd-cluster-0001");
        assert_eq!(
            local.uri(),
            "spiffe://etcd-operator/ns/local/cluster/etcd-cluster/member/etcd-cluster-0001"
        );
        let k8s = PeerIdentity::member(&ClusterKey::new("prod", "a"), "a-0000");
        for id in [
            PeerIdentity::Coordinator,
            PeerIdentity::Operator,
            local.clone(),
            k8s.clone(),
        ] {
            assert_eq!(PeerIdentity::parse_uri(&id.uri()), Ok(id));
        }
        assert!(local.is_member(&ClusterKey::local("etcd-cluster"), "etcd-cluster-0001"));
        assert!(!local.is_member(&ClusterKey::local("etcd-cluster"), "etcd-cluster-0002"));
        assert!(!local.is_member(&ClusterKey::new("x", "etcd-cluster"), "etcd-cluster-0001"));
        assert!(k8s.is_member(&ClusterKey::new("prod", "a"), "a-0000"));
        assert!(!PeerIdentity::Coordinator.is_member(&ClusterKey::new("prod", "a"), "a-0000"));
    }

    #[test]
    fn foreign_and_malformed_uris_are_refused() {
        for uri in [
            "spiffe://other/coordinator",
            "spiffe://etcd-operator/coordinator/",
            "spiffe://etcd-operator/operator/x",
            "spiffe://etcd-operator/ns/a/cluster/b",
            "spiffe://etcd-operator/ns/a/cluster/b/member/c/d",
            "spiffe://etcd-operator/ns/a/cluster/b/member/../x",
            "spiffe://etcd-operator/ns//cluster/b/member/c",
            "spiffe://etcd-operator/ns/A/cluster/b/member/c",
            "spiffe://etcd-operator/ns/a/cluster/b/member/c%2f",
            "https://etcd-operator/coordinator",
            "",
        ] {
            assert!(PeerIdentity::parse_uri(uri).is_err(), "{uri:?}");
        }
        let long = format!(
            "spiffe://etcd-operator/ns/a/cluster/b/member/{}",
            "a".repeat(2000)
        );
        assert!(PeerIdentity::parse_uri(&long).is_err());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            PeerIdentity::from_der(b"not a certificate"),
            Err(IdentityError::Certificate(_))
        ));
    }
}
