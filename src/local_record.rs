//! What the local runtime records of a cluster's members in `<state>/<cluster>/cluster.json`:
//! the coordinator's local runtime writes it (before a process starts, so a coordinator that
//! dies at any moment finds every member it made) and reads it back after a restart; the
//! test harness reads the same file to find the members' ports and processes.

use serde::{Deserialize, Serialize};

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
