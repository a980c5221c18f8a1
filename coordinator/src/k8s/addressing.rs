//! How a member is reached: its advertised URLs and what its processes listen on.
//!
//! On Kubernetes every member Pod has a stable DNS name through the headless peer Service
//! (`hostname` = Pod name, `subdomain` = the Service), and listens on all interfaces. The
//! scheme is a strategy so that a test can play kubelet on one machine, mapping each Pod to
//! 127.0.0.1 ports, without touching anything else of the Pod spec.

use etcd_operator::ClusterKey;

use super::{
    CLIENT_PORT, METRICS_PORT, PEER_PORT, SIDECAR_HEALTH_PORT, SIDECAR_PORT, peer_service_name,
};

/// The URLs and addresses of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEndpoints {
    /// etcd's advertised client URL.
    pub client_url: String,
    /// etcd's advertised peer URL.
    pub peer_url: String,
    /// The sidecar's gRPC URL (the coordinator calls back on it).
    pub sidecar_url: String,
    /// The client URL etcd listens on.
    pub listen_client_url: String,
    /// The peer URL etcd listens on.
    pub listen_peer_url: String,
    /// The URL etcd serves its metrics on (always http: a scraper needs no certificate).
    pub listen_metrics_url: String,
    /// The address the sidecar's gRPC server listens on.
    pub grpc_addr: String,
    /// The address of the sidecar's plaintext health port (probes).
    pub health_addr: String,
}

impl MemberEndpoints {
    /// The same endpoints with etcd's URLs https when `etcd_tls`, and the sidecar's always
    /// https (the control path is mutual TLS); the metrics URL stays http.
    pub fn with_schemes(mut self, etcd_tls: bool) -> Self {
        let set = |url: &mut String, tls: bool| {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or(url)
                .to_string();
            *url = format!("{}://{rest}", if tls { "https" } else { "http" });
        };
        set(&mut self.client_url, etcd_tls);
        set(&mut self.peer_url, etcd_tls);
        for url in [&mut self.listen_client_url, &mut self.listen_peer_url] {
            let each: Vec<String> = url
                .split(',')
                .map(|u| {
                    let mut u = u.to_string();
                    set(&mut u, etcd_tls);
                    u
                })
                .collect();
            *url = each.join(",");
        }
        set(&mut self.sidecar_url, true);
        self
    }
}

/// Maps a member to its endpoints.
pub trait MemberAddressing: Send + Sync + 'static {
    /// The endpoints of `member` of `cluster`.
    fn endpoints(&self, cluster: &ClusterKey, member: &str) -> MemberEndpoints;
}

/// Pod DNS through the headless peer Service: `http://<pod>.<cluster>-peer.<ns>.svc:<port>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PodDns;

impl MemberAddressing for PodDns {
    fn endpoints(&self, cluster: &ClusterKey, member: &str) -> MemberEndpoints {
        let host = format!(
            "{member}.{}.{}.svc",
            peer_service_name(&cluster.name),
            cluster.namespace
        );
        MemberEndpoints {
            client_url: format!("http://{host}:{CLIENT_PORT}"),
            peer_url: format!("http://{host}:{PEER_PORT}"),
            sidecar_url: format!("https://{host}:{SIDECAR_PORT}"),
            listen_client_url: format!("http://0.0.0.0:{CLIENT_PORT}"),
            listen_peer_url: format!("http://0.0.0.0:{PEER_PORT}"),
            listen_metrics_url: format!("http://0.0.0.0:{METRICS_PORT}"),
            grpc_addr: format!("0.0.0.0:{SIDECAR_PORT}"),
            health_addr: format!("0.0.0.0:{SIDECAR_HEALTH_PORT}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_dns_names_go_through_the_peer_service() {
        let e = PodDns.endpoints(
            &ClusterKey::new("prod", "etcd-cluster"),
            "etcd-cluster-0004",
        );
        assert_eq!(
            e.peer_url,
            "http://etcd-cluster-0004.etcd-cluster-peer.prod.svc:2380"
        );
        assert_eq!(
            e.client_url,
            "http://etcd-cluster-0004.etcd-cluster-peer.prod.svc:2379"
        );
        assert_eq!(
            e.sidecar_url,
            "https://etcd-cluster-0004.etcd-cluster-peer.prod.svc:7401"
        );
        assert_eq!(e.listen_peer_url, "http://0.0.0.0:2380");
        assert_eq!(e.listen_client_url, "http://0.0.0.0:2379");
        assert_eq!(e.listen_metrics_url, "http://0.0.0.0:2381");
        assert_eq!(e.grpc_addr, "0.0.0.0:7401");
        assert_eq!(e.health_addr, "0.0.0.0:7402");
        let tls = e.with_schemes(true);
        assert_eq!(
            tls.peer_url,
            "https://etcd-cluster-0004.etcd-cluster-peer.prod.svc:2380"
        );
        assert_eq!(tls.listen_client_url, "https://0.0.0.0:2379");
        assert_eq!(tls.listen_metrics_url, "http://0.0.0.0:2381");
        assert_eq!(
            tls.with_schemes(false).client_url,
            "http://etcd-cluster-0004.etcd-cluster-peer.prod.svc:2379"
        );
    }
}
