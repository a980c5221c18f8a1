//! Entry points for fuzzing what the operator accepts from outside: manifests (YAML/JSON
//! from files or the API server), the protobuf messages its two gRPC servers decode, and
//! the certificates peers present on the control path (and the PEM files it reads back).
//! `fuzz/` drives them with cargo-fuzz for long runs; a test drives them for seconds over
//! seeded mutations and replays every input that ever crashed (`fuzz/regressions/`).
//! Each function must return (never panic, never hang) whatever the input.

use std::path::Path;

use prost::Message;

use crate::{
    ClusterKey, EtcdVersion, manifest::parse_manifests, proto, validate::validate_cluster,
    version::check_version_step,
};

/// Parses `data` as a manifest (YAML, and JSON) and validates every cluster in it.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for path in ["fuzz.yaml", "fuzz.json"] {
        if let Ok(clusters) = parse_manifests(Path::new(path), text) {
            for cluster in &clusters {
                if let Ok(valid) = validate_cluster(cluster) {
                    let _ = check_version_step(valid.version, valid.version, valid.allow_downgrade);
                }
            }
        }
    }
}

/// Decodes `data` as every message the coordinator and the sidecars accept, and runs the
/// checks the servers run on them first.
pub fn proto_messages(data: &[u8]) {
    if let Ok(m) = proto::RegisterRequest::decode(data) {
        let _ = m.cluster.as_ref().map(ClusterKey::from);
        let _ = m.etcd_version.parse::<EtcdVersion>();
    }
    if let Ok(m) = proto::HealthReport::decode(data) {
        let _ = m.cluster.as_ref().map(ClusterKey::from);
        let _ = m.phase();
        let _ = m.alarms().count();
    }
    if let Ok(m) = proto::GrantRequest::decode(data) {
        let _ = m.kind();
        let _ = m.cluster.as_ref().map(ClusterKey::from);
    }
    if let Ok(m) = proto::ReleaseGrantRequest::decode(data) {
        let _ = m.cluster.as_ref().map(ClusterKey::from);
    }
    let _ = proto::GetClusterRequest::decode(data);
    let _ = proto::ListClustersRequest::decode(data);
    let _ = proto::LeaveRequest::decode(data);
    if let Ok(m) = proto::HandoffRequest::decode(data)
        && let Ok(to) = m.target_version.parse::<EtcdVersion>()
    {
        let _ = check_version_step(crate::version::DEFAULT_VERSION, to, false);
    }
}

/// Reads `data` as a peer's certificate (DER) and as PEM, as the control path's servers and
/// the certificate renewal do, and as an identity URI.
pub fn identity(data: &[u8]) {
    let _ = crate::identity::PeerIdentity::from_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::identity::PeerIdentity::parse_uri(text);
        if let Ok(validity) = crate::pki::validity(text) {
            let _ = validity.renewal_due(0);
        }
        let _ = crate::pki::url_host(text);
    }
}
