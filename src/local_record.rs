//! What the local runtime records of a cluster's members in `<state>/<cluster>/cluster.json`:
//! the coordinator's local runtime writes it (before a process starts, so a coordinator that
//! dies at any moment finds every member it made) and reads it back after a restart; the
//! test harness reads the same file to find the members' ports and processes.
//!
//! The record is the only memory of which ordinals were used: it is written whole and
//! durably ([`write_record`]), and a record that cannot be read is an error
//! ([`read_record`]), never an empty cluster (whose ordinals would start again at 0 over
//! the data of the members that exist).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::durable::{read_if_present, write_atomic};

/// The name of the record in a cluster's directory of the state directory.
pub const CLUSTER_RECORD_FILE: &str = "cluster.json";

/// Every member the local runtime made for one cluster, and the next ordinal to use.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterRecord {
    /// The ordinal the next new member gets.
    pub next_ordinal: u32,
    /// The members, in the order they were made.
    pub members: Vec<MemberRecord>,
}

/// One member as the local runtime records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    /// `<cluster>-<NNNN>`.
    pub name: String,
    /// The `NNNN`.
    pub ordinal: u32,
    /// etcd client port.
    pub client_port: u16,
    /// etcd peer port.
    pub peer_port: u16,
    /// The sidecar's gRPC port.
    pub grpc_port: u16,
    /// The etcd version the member runs with.
    pub version: String,
    /// Created as the seed.
    pub seed: bool,
    /// The sidecar's process id, once started.
    pub pid: Option<u32>,
    /// etcd serves clients and peers over TLS.
    #[serde(default)]
    pub tls: bool,
    /// The address the member listens on and is reached at (127.0.0.1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The network namespace the member runs in, when it has one of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// Why a cluster's record cannot be used.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The file is there but cannot be read.
    #[error("{path} cannot be read: {source}")]
    Unreadable {
        /// The record.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a record (truncated, overwritten, of another format).
    #[error("{path} is not a cluster record: {message}")]
    Unparsable {
        /// The record.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// The record at `path`: `None` only when there is no file.
pub fn read_record(path: &Path) -> Result<Option<ClusterRecord>, RecordError> {
    let bytes = read_if_present(path).map_err(|source| RecordError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    bytes
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| RecordError::Unparsable {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        })
        .transpose()
}

/// Writes `record` to `path` whole and durably (a crash leaves the old record or the new
/// one, never a part).
pub fn write_record(path: &Path, record: &ClusterRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    write_atomic(path, &bytes)
}

impl ClusterRecord {
    /// The record of member `name`, if the cluster has one.
    pub fn member_mut(&mut self, name: &str) -> Option<&mut MemberRecord> {
        self.members.iter_mut().find(|m| m.name == name)
    }
}

impl MemberRecord {
    /// `https` when etcd serves TLS, else `http`.
    pub fn etcd_scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// The address the member listens on and is reached at.
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or("127.0.0.1")
    }

    /// The member's etcd client URL.
    pub fn client_url(&self) -> String {
        format!(
            "{}://{}:{}",
            self.etcd_scheme(),
            self.host(),
            self.client_port
        )
    }

    /// The member's etcd peer URL.
    pub fn peer_url(&self) -> String {
        format!(
            "{}://{}:{}",
            self.etcd_scheme(),
            self.host(),
            self.peer_port
        )
    }

    /// The sidecar's URL (mutual TLS).
    pub fn sidecar_url(&self) -> String {
        format!("https://{}:{}", self.host(), self.grpc_port)
    }

    /// The sidecar's gRPC listen address.
    pub fn grpc_addr(&self) -> String {
        format!("{}:{}", self.host(), self.grpc_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_cannot_be_read_is_an_error_and_only_an_absent_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CLUSTER_RECORD_FILE);
        assert!(read_record(&path).unwrap().is_none());
        let record = ClusterRecord {
            next_ordinal: 3,
            members: Vec::new(),
        };
        write_record(&path, &record).unwrap();
        assert_eq!(read_record(&path).unwrap(), Some(record));
        for (bytes, says) in [
            (&b""[..], "EOF"),
            (&b"{\"next_ordinal\": 3, \"memb"[..], "EOF"),
            (&b"[]"[..], "expected struct"),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let e = read_record(&path).unwrap_err().to_string();
            assert!(e.contains("cluster.json is not a cluster record"), "{e}");
            assert!(e.contains(says), "{says:?} in {e}");
        }
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = read_record(&path).unwrap_err().to_string();
        assert!(e.contains("cluster.json cannot be read"), "{e}");
    }

    #[test]
    fn a_record_round_trips_and_an_old_one_without_tls_reads() {
        let member = MemberRecord {
            name: "c-0001".into(),
            ordinal: 1,
            client_port: 2379,
            peer_port: 2380,
            grpc_port: 7401,
            version: "3.6.15".into(),
            seed: true,
            pid: Some(42),
            tls: true,
            host: None,
            netns: None,
        };
        let record = ClusterRecord {
            next_ordinal: 2,
            members: vec![member.clone()],
        };
        let text = serde_json::to_string_pretty(&record).unwrap();
        assert_eq!(
            serde_json::from_str::<ClusterRecord>(&text).unwrap(),
            record
        );
        assert_eq!(member.client_url(), "https://127.0.0.1:2379");
        assert_eq!(member.peer_url(), "https://127.0.0.1:2380");
        assert_eq!(member.sidecar_url(), "https://127.0.0.1:7401");

        let old = r#"{"next_ordinal":1,"members":[{"name":"c-0000","ordinal":0,"client_port":1,"peer_port":2,"grpc_port":3,"version":"3.6.15","seed":true,"pid":null}]}"#;
        let read: ClusterRecord = serde_json::from_str(old).unwrap();
        assert!(!read.members[0].tls);
        assert_eq!(read.members[0].client_url(), "http://127.0.0.1:1");
        assert!(!text.contains("host"), "{text}");

        let isolated = MemberRecord {
            host: Some("10.77.0.2".into()),
            netns: Some("run-c-0001".into()),
            ..member
        };
        let text = serde_json::to_string(&isolated).unwrap();
        assert_eq!(
            serde_json::from_str::<MemberRecord>(&text).unwrap(),
            isolated
        );
        assert_eq!(isolated.peer_url(), "https://10.77.0.2:2380");
        assert_eq!(isolated.sidecar_url(), "https://10.77.0.2:7401");
        assert_eq!(isolated.grpc_addr(), "10.77.0.2:7401");
    }
}
