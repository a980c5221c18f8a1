//! `etcd-coordinator status`: what the coordinator serves over gRPC, as a table (like
//! `kubectl get`) or as JSON (the same names grpcurl prints).

use std::fmt::Write;

use crate::conditions::{member_phase_word, phase_word, status_word, type_word};
use etcd_operator::proto::{
    ClusterStatus, GetClusterRequest, ListBackupsRequest, ListClustersRequest,
    coordinator_client::CoordinatorClient,
};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Columns, like `kubectl get`.
    Table,
    /// JSON, as grpcurl prints the messages.
    Json,
}

/// TLS to a coordinator's status port (Kubernetes): the CA it is verified with.
#[derive(Clone, Debug)]
pub struct StatusTls {
    /// The CA certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// The name to verify the certificate against, when not the address's host.
    pub server_name: Option<String>,
}

/// A client of the coordinator's status port.
async fn status_client(
    grpc_url: &str,
    tls: Option<StatusTls>,
) -> anyhow::Result<CoordinatorClient<tonic::transport::Channel>> {
    let unreachable = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("cannot reach the coordinator at {grpc_url}: {e}")
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(grpc_url.to_string())
        .map_err(|e| unreachable(&e))?;
    if let Some(tls) = tls {
        etcd_operator::tls::install_default_provider();
        let mut config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(tls.ca_pem));
        if let Some(name) = tls.server_name {
            config = config.domain_name(name);
        }
        endpoint = endpoint.tls_config(config).map_err(|e| unreachable(&e))?;
    }
    let channel = endpoint.connect().await.map_err(|e| unreachable(&e))?;
    Ok(CoordinatorClient::new(channel))
}

/// Fetches a cluster's backups and renders them (`etcd-coordinator backups NAME`).
pub async fn fetch_backups(
    grpc_url: &str,
    tls: Option<StatusTls>,
    name: &str,
    namespace: &str,
    output: Output,
) -> anyhow::Result<String> {
    let mut client = status_client(grpc_url, tls).await?;
    let list = client
        .list_backups(ListBackupsRequest {
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(&list)?,
        Output::Table => render_backups(&list.backups),
    })
}

/// Backups as a table, newest first.
pub fn render_backups(backups: &[etcd_operator::proto::Backup]) -> String {
    let rows: Vec<[String; 7]> = backups
        .iter()
        .map(|b| {
            [
                b.name.clone(),
                b.created_at.clone(),
                b.revision.to_string(),
                b.size_bytes.to_string(),
                dash(&b.etcd_version),
                // Whose: the identity of the cluster it was taken of, or the earlier layout.
                if b.legacy_layout {
                    "earlier layout".to_string()
                } else {
                    format!("{}/{}@{}", b.namespace, b.cluster, dash(&b.cluster_uid))
                },
                if b.verified {
                    "yes".to_string()
                } else if b.verify_error.is_empty() {
                    "not yet".to_string()
                } else {
                    format!("no: {}", b.verify_error)
                },
            ]
        })
        .collect();
    columns(
        &[
            "NAME", "CREATED", "REVISION", "BYTES", "ETCD", "CLUSTER", "VERIFIED",
        ],
        &rows,
    )
}

/// Fetches one cluster (`name` given) or all, and renders them.
pub async fn fetch_and_render(
    grpc_url: &str,
    tls: Option<StatusTls>,
    name: Option<&str>,
    namespace: &str,
    output: Output,
) -> anyhow::Result<String> {
    let mut client = status_client(grpc_url, tls).await?;
    match name {
        Some(name) => {
            let status = client
                .get_cluster(GetClusterRequest {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            Ok(match output {
                Output::Json => serde_json::to_string_pretty(&status)?,
                Output::Table => render_cluster(&status),
            })
        }
        None => {
            let list = client
                .list_clusters(ListClustersRequest {
                    namespace: namespace.to_string(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            Ok(match output {
                Output::Json => serde_json::to_string_pretty(&list)?,
                Output::Table => {
                    let mut out = render_table(&list.clusters);
                    for refused in &list.refused_manifests {
                        out.push_str(&format!(
                            "\nmanifest refused, nothing in it is applied: {}: {}",
                            refused.path, refused.error
                        ));
                    }
                    out
                }
            })
        }
    }
}

/// The clusters as a `kubectl get`-like table.
pub fn render_table(clusters: &[ClusterStatus]) -> String {
    let rows: Vec<[String; 5]> = clusters
        .iter()
        .map(|c| {
            [
                if c.namespace.is_empty() {
                    c.name.clone()
                } else {
                    format!("{}/{}", c.namespace, c.name)
                },
                c.size.to_string(),
                c.ready.to_string(),
                dash(&c.current_version),
                dash(phase_word(c.phase())),
            ]
        })
        .collect();
    columns(&["NAME", "SIZE", "READY", "VERSION", "PHASE"], &rows)
}

/// One cluster with its members and conditions.
pub fn render_cluster(c: &ClusterStatus) -> String {
    let mut out = render_table(std::slice::from_ref(c));
    out.push('\n');
    let members: Vec<[String; 9]> = c
        .members
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                dash(&m.id),
                dash(&m.version),
                dash(member_phase_word(m.phase())),
                yes_no(m.healthy),
                yes_no(m.leader),
                yes_no(m.learner),
                match (m.restarts, m.last_exit.as_str()) {
                    (0, _) => "0".to_string(),
                    (n, "") => n.to_string(),
                    (n, exit) => format!("{n} ({exit})"),
                },
                m.client_urls.join(","),
            ]
        })
        .collect();
    out.push_str(&columns(
        &[
            "MEMBER",
            "ID",
            "VERSION",
            "PHASE",
            "HEALTHY",
            "LEADER",
            "LEARNER",
            "RESTARTS",
            "CLIENT URL",
        ],
        &members,
    ));
    out.push('\n');
    let conditions: Vec<[String; 4]> = c
        .conditions
        .iter()
        .map(|k| {
            [
                type_word(k.r#type()).to_string(),
                status_word(k.status()).to_string(),
                k.reason.clone(),
                k.message.clone(),
            ]
        })
        .collect();
    out.push_str(&columns(
        &["CONDITION", "STATUS", "REASON", "MESSAGE"],
        &conditions,
    ));
    if !c.change_in_flight.is_empty() {
        let _ = writeln!(out, "\nchange in flight: {}", c.change_in_flight);
    }
    if !c.endpoints.is_empty() {
        let _ = writeln!(out, "\nendpoints: {}", c.endpoints);
    }
    if let Some(b) = &c.backup {
        let _ = writeln!(
            out,
            "\nbackups: last {} ({}), verified {}, next {}{}",
            dash(&b.last_successful),
            dash(&b.last_successful_time),
            dash(&b.last_verified),
            dash(&b.next),
            if b.last_failure.is_empty() {
                String::new()
            } else {
                format!("; last failure: {}", b.last_failure)
            }
        );
    }
    out
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

fn columns<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("   ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_operator::proto::{
        ClusterPhase, Condition, ConditionStatus, ConditionType, MemberPhase, MemberStatus,
    };

    fn cluster() -> ClusterStatus {
        ClusterStatus {
            name: "etcd-cluster".into(),
            size: 3,
            ready: 2,
            phase: ClusterPhase::Degraded.into(),
            current_version: "3.6.15".into(),
            members: vec![MemberStatus {
                name: "etcd-cluster-0000".into(),
                id: "8e9e05c52164694d".into(),
                client_urls: vec!["http://127.0.0.1:2379".into()],
                version: "3.6.15".into(),
                healthy: true,
                leader: true,
                phase: MemberPhase::Running.into(),
                restarts: 2,
                last_exit: "killed by SIGKILL".into(),
                ..Default::default()
            }],
            conditions: vec![Condition {
                r#type: ConditionType::Available.into(),
                status: ConditionStatus::True.into(),
                reason: "QuorumHealthy".into(),
                message: "2 of 3 voting members healthy".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn table_lines_up_like_kubectl() {
        let table = render_table(&[cluster()]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "NAME           SIZE   READY   VERSION   PHASE");
        assert_eq!(lines[1], "etcd-cluster   3      2       3.6.15    Degraded");
    }

    #[test]
    fn cluster_view_has_members_and_conditions() {
        let text = render_cluster(&cluster());
        assert!(text.contains("etcd-cluster-0000   8e9e05c52164694d   3.6.15    Running   yes       yes      no        2 (killed by SIGKILL)   http://127.0.0.1:2379"), "{text}");
        assert!(
            text.contains("Available   True     QuorumHealthy   2 of 3 voting members healthy"),
            "{text}"
        );
    }

    #[test]
    fn json_uses_grpcurl_names() {
        let json = serde_json::to_value(cluster()).unwrap();
        assert_eq!(json["members"][0]["clientUrls"][0], "http://127.0.0.1:2379");
        assert_eq!(json["currentVersion"], "3.6.15");
        assert_eq!(json["phase"], "CLUSTER_PHASE_DEGRADED");
        assert_eq!(json["members"][0]["phase"], "MEMBER_PHASE_RUNNING");
        assert_eq!(json["conditions"][0]["type"], "CONDITION_TYPE_AVAILABLE");
        assert_eq!(json["conditions"][0]["status"], "CONDITION_STATUS_TRUE");
    }
}
