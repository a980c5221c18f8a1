//! The etcd command line for each way a member starts. Pure, so every path is unit-tested.

use crate::config::SidecarConfig;

/// How etcd should find its cluster when it has no data yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Start on existing data: etcd reads its membership from its WAL.
    FromData,
    /// Start once on existing data as a one-member cluster, every other member removed
    /// (`--force-new-cluster`): the survivor of a quorum lost for good.
    ForceNewCluster,
    /// Bootstrap a new one-member cluster with this token.
    NewCluster {
        /// `--initial-cluster-token`, unique per cluster creation.
        token: String,
    },
    /// Bootstrap a new cluster together with the other initial members (etcd's static
    /// bootstrap): every one of them in `--initial-cluster`, one token for all.
    Static {
        /// `name=peerURL,...` of every initial member, this one included.
        initial_cluster: String,
        /// `--initial-cluster-token`, the same for every initial member.
        token: String,
    },
    /// Join an existing cluster whose members (name, peer URLs) are these, this member included.
    Existing {
        /// `name=peerURL` pairs of every member in etcd's member list.
        members: Vec<(String, String)>,
    },
}

/// The arguments etcd runs with.
pub fn etcd_args(cfg: &SidecarConfig, bootstrap: &Bootstrap) -> Vec<String> {
    let mut args = vec![
        format!("--name={}", cfg.name),
        format!("--data-dir={}", cfg.etcd_data_dir().display()),
        format!("--listen-peer-urls={}", cfg.listen_peer_url),
        format!("--initial-advertise-peer-urls={}", cfg.peer_url),
        format!("--listen-client-urls={}", cfg.listen_client_url),
        format!("--advertise-client-urls={}", cfg.client_url),
        "--logger=zap".to_string(),
        format!("--log-level={}", cfg.etcd_log_level),
    ];
    if let Some(url) = &cfg.listen_metrics_url {
        // /metrics and /health on a port of their own, plain http even with etcd TLS: a
        // scraper needs no client certificate.
        args.push(format!("--listen-metrics-urls={url}"));
    }
    if let Some(tls) = &cfg.etcd_tls {
        use etcd_operator::pki::MemberFile as F;
        let file = |name: &str| tls.file(name).display().to_string();
        // etcd reads the certificate files again for every handshake: rotated files are
        // used without a restart.
        args.extend([
            format!("--cert-file={}", file(F::ETCD_SERVER_CERT)),
            format!("--key-file={}", file(F::ETCD_SERVER_KEY)),
            format!("--trusted-ca-file={}", file(F::ETCD_CA)),
            "--client-cert-auth".to_string(),
            format!("--peer-cert-file={}", file(F::ETCD_PEER_CERT)),
            format!("--peer-key-file={}", file(F::ETCD_PEER_KEY)),
            format!("--peer-trusted-ca-file={}", file(F::ETCD_CA)),
            "--peer-client-cert-auth".to_string(),
        ]);
    }
    // Disk maintenance (spec.maintenance): the backend quota and etcd's own compaction.
    if let Some(quota) = cfg.quota_backend_bytes {
        args.push(format!("--quota-backend-bytes={quota}"));
    }
    if let Some((mode, retention)) = &cfg.auto_compaction {
        args.push(format!("--auto-compaction-mode={mode}"));
        args.push(format!("--auto-compaction-retention={retention}"));
    }
    let self_only = format!("{}={}", cfg.name, cfg.peer_url);
    match bootstrap {
        Bootstrap::FromData => {
            args.push(format!("--initial-cluster={self_only}"));
        }
        Bootstrap::ForceNewCluster => {
            args.push(format!("--initial-cluster={self_only}"));
            args.push("--force-new-cluster".to_string());
        }
        Bootstrap::NewCluster { token } => {
            args.push(format!("--initial-cluster={self_only}"));
            args.push("--initial-cluster-state=new".to_string());
            args.push(format!("--initial-cluster-token={token}"));
        }
        Bootstrap::Static {
            initial_cluster,
            token,
        } => {
            args.push(format!("--initial-cluster={initial_cluster}"));
            args.push("--initial-cluster-state=new".to_string());
            args.push(format!("--initial-cluster-token={token}"));
        }
        Bootstrap::Existing { members } => {
            let list: Vec<String> = members.iter().map(|(n, u)| format!("{n}={u}")).collect();
            args.push(format!("--initial-cluster={}", list.join(",")));
            args.push("--initial-cluster-state=existing".to_string());
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{path::PathBuf, time::Duration};

    fn cfg() -> SidecarConfig {
        SidecarConfig {
            cluster: etcd_operator::ClusterKey::local("c"),
            name: "c-0001".into(),
            member_dir: PathBuf::from("/m"),
            peer_url: "http://127.0.0.1:2380".into(),
            client_url: "http://127.0.0.1:2379".into(),
            listen_peer_url: "http://0.0.0.0:2380".into(),
            listen_client_url: "http://0.0.0.0:2379".into(),
            listen_metrics_url: None,
            coordinator_url: "http://127.0.0.1:7400".into(),
            grpc_addr: "127.0.0.1:7401".parse().unwrap(),
            grpc_url: "http://127.0.0.1:7401".into(),
            etcd_version: etcd_operator::version::DEFAULT_VERSION,
            etcd_binary: PathBuf::from("/bin/etcd"),
            etcdutl: None,
            storage_credentials_dir: None,
            cluster_endpoints: vec![],
            report_interval: Duration::from_secs(1),
            etcd_log_level: "warn".into(),
            tls: etcd_operator::tls::TlsFiles {
                cert: "/t/tls.crt".into(),
                key: "/t/tls.key".into(),
                ca: "/t/ca.crt".into(),
            },
            health_addr: None,
            etcd_tls: None,
            quota_backend_bytes: None,
            auto_compaction: None,
            upgrade_snapshot_deadline: Duration::from_secs(60),
        }
    }

    #[test]
    fn maintenance_flags_go_to_etcd_on_every_start() {
        for bootstrap in [
            Bootstrap::FromData,
            Bootstrap::ForceNewCluster,
            Bootstrap::NewCluster { token: "t".into() },
            Bootstrap::Static {
                initial_cluster: "c-0001=http://127.0.0.1:2380".into(),
                token: "t".into(),
            },
            Bootstrap::Existing {
                members: vec![("c-0001".into(), "http://127.0.0.1:2380".into())],
            },
        ] {
            let plain = etcd_args(&cfg(), &bootstrap);
            assert!(
                !plain
                    .iter()
                    .any(|a| a.starts_with("--quota") || a.starts_with("--auto-compaction")),
                "{plain:?}"
            );
            let mut c = cfg();
            c.quota_backend_bytes = Some(16 << 20);
            c.auto_compaction = Some(("periodic".into(), "1h".into()));
            let args = etcd_args(&c, &bootstrap);
            for want in [
                "--quota-backend-bytes=16777216",
                "--auto-compaction-mode=periodic",
                "--auto-compaction-retention=1h",
            ] {
                assert!(args.contains(&want.to_string()), "{want}: {args:?}");
            }
        }
    }

    #[test]
    fn etcd_tls_adds_every_certificate_flag() {
        let plain = etcd_args(&cfg(), &Bootstrap::FromData);
        assert!(!plain.iter().any(|a| a.contains("cert")), "{plain:?}");
        let mut c = cfg();
        c.etcd_tls = Some(crate::etcd_tls::EtcdTlsDir { dir: "/t".into() });
        let args = etcd_args(&c, &Bootstrap::FromData);
        for want in [
            "--cert-file=/t/etcd-server.crt",
            "--key-file=/t/etcd-server.key",
            "--trusted-ca-file=/t/etcd-ca.crt",
            "--client-cert-auth",
            "--peer-cert-file=/t/etcd-peer.crt",
            "--peer-key-file=/t/etcd-peer.key",
            "--peer-trusted-ca-file=/t/etcd-ca.crt",
            "--peer-client-cert-auth",
        ] {
            assert!(args.contains(&want.to_string()), "{want}: {args:?}");
        }
    }

    #[test]
    fn metrics_listen_on_their_own_url_when_asked() {
        for bootstrap in [
            Bootstrap::FromData,
            Bootstrap::ForceNewCluster,
            Bootstrap::NewCluster { token: "t".into() },
        ] {
            let off = etcd_args(&cfg(), &bootstrap);
            assert!(
                !off.iter().any(|a| a.starts_with("--listen-metrics-urls")),
                "{off:?}"
            );
            let mut c = cfg();
            c.listen_metrics_url = Some("http://0.0.0.0:2381".into());
            c.etcd_tls = Some(crate::etcd_tls::EtcdTlsDir { dir: "/t".into() });
            let on = etcd_args(&c, &bootstrap);
            let metrics: Vec<&String> = on
                .iter()
                .filter(|a| a.starts_with("--listen-metrics-urls"))
                .collect();
            assert_eq!(metrics, ["--listen-metrics-urls=http://0.0.0.0:2381"]);
        }
    }

    #[test]
    fn new_cluster_is_self_only_with_token() {
        let args = etcd_args(
            &cfg(),
            &Bootstrap::NewCluster {
                token: "c-1".into(),
            },
        );
        assert!(args.contains(&"--initial-cluster=c-0001=http://127.0.0.1:2380".to_string()));
        assert!(args.contains(&"--initial-cluster-state=new".to_string()));
        assert!(args.contains(&"--initial-cluster-token=c-1".to_string()));
        assert!(args.contains(&"--data-dir=/m/etcd".to_string()));
        assert!(args.contains(&"--listen-client-urls=http://0.0.0.0:2379".to_string()));
        assert!(args.contains(&"--advertise-client-urls=http://127.0.0.1:2379".to_string()));
    }

    #[test]
    fn static_bootstrap_lists_every_initial_member_with_one_token() {
        let initial = "c-0000=http://127.0.0.1:3380,c-0001=http://127.0.0.1:2380";
        let args = etcd_args(
            &cfg(),
            &Bootstrap::Static {
                initial_cluster: initial.into(),
                token: "c-7".into(),
            },
        );
        let initial_flags: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .filter(|a| a.starts_with("--initial-cluster"))
            .collect();
        let want = format!("--initial-cluster={initial}");
        assert_eq!(
            initial_flags,
            [
                want.as_str(),
                "--initial-cluster-state=new",
                "--initial-cluster-token=c-7"
            ]
        );
    }

    #[test]
    fn join_lists_every_member_and_says_existing() {
        let members = vec![
            ("c-0000".to_string(), "http://127.0.0.1:3380".to_string()),
            ("c-0001".to_string(), "http://127.0.0.1:2380".to_string()),
        ];
        let args = etcd_args(&cfg(), &Bootstrap::Existing { members });
        assert!(
            args.contains(
                &"--initial-cluster=c-0000=http://127.0.0.1:3380,c-0001=http://127.0.0.1:2380"
                    .to_string()
            )
        );
        assert!(args.contains(&"--initial-cluster-state=existing".to_string()));
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--initial-cluster-token"))
        );
    }

    #[test]
    fn restart_from_data_names_no_state() {
        let args = etcd_args(&cfg(), &Bootstrap::FromData);
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--initial-cluster-state"))
        );
        assert!(!args.contains(&"--force-new-cluster".to_string()));
    }

    #[test]
    fn only_a_forced_start_forces_a_new_cluster() {
        let args = etcd_args(&cfg(), &Bootstrap::ForceNewCluster);
        assert!(args.contains(&"--force-new-cluster".to_string()));
        assert!(args.contains(&"--data-dir=/m/etcd".to_string()));
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--initial-cluster-state"))
        );
    }
}
