//! The sidecar's configuration: flags with matching `ETCDOP_*` environment variables
//! (the pod spec uses env), validated before anything starts.
//!
//! The prefix is `ETCDOP_`, not `ETCD_`: etcd reads every `ETCD_*` variable as a flag, and
//! the sidecar's own settings must not leak into its child.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use etcd_operator::{
    ClusterKey, EtcdVersion,
    etcd_bin::{EtcdBinaries, MissingBinary},
};
use thiserror::Error;

/// `etcd-sidecar run` flags.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Name of the EtcdCluster this member belongs to.
    #[arg(long, env = "ETCDOP_CLUSTER")]
    pub cluster: String,
    /// Namespace of the EtcdCluster (empty in local mode).
    #[arg(long, env = "ETCDOP_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// This member's name, `<cluster>-<NNNN>`.
    #[arg(long, env = "ETCDOP_MEMBER_NAME")]
    pub name: String,
    /// The member's directory: etcd's data lives in `<dir>/etcd`, the sidecar's own
    /// identity file beside it.
    #[arg(long, env = "ETCDOP_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Peer URL advertised to the other members, e.g. `http://127.0.0.1:2380`.
    #[arg(long, env = "ETCDOP_PEER_URL")]
    pub peer_url: String,
    /// Client URL advertised to clients, e.g. `http://127.0.0.1:2379`.
    #[arg(long, env = "ETCDOP_CLIENT_URL")]
    pub client_url: String,
    /// Peer URL etcd listens on (defaults to the advertised one).
    #[arg(long, env = "ETCDOP_LISTEN_PEER_URL")]
    pub listen_peer_url: Option<String>,
    /// Client URLs etcd listens on, comma separated (defaults to the advertised one).
    #[arg(long, env = "ETCDOP_LISTEN_CLIENT_URL")]
    pub listen_client_url: Option<String>,
    /// URL etcd serves its Prometheus metrics (and `/health`) on, e.g.
    /// `http://0.0.0.0:2381` (`--listen-metrics-urls`; off when not given). Always plain
    /// http, with or without etcd TLS.
    #[arg(long, env = "ETCDOP_LISTEN_METRICS_URL")]
    pub listen_metrics_url: Option<String>,
    /// The coordinator's gRPC URL, e.g. `http://127.0.0.1:7400`.
    #[arg(long, env = "ETCDOP_COORDINATOR_URL")]
    pub coordinator_url: String,
    /// Address the sidecar's own gRPC server listens on.
    #[arg(long, env = "ETCDOP_GRPC_ADDR", default_value = "127.0.0.1:7401")]
    pub grpc_addr: SocketAddr,
    /// URL the coordinator uses to reach this sidecar (defaults to `http://<grpc-addr>`).
    #[arg(long, env = "ETCDOP_GRPC_URL")]
    pub grpc_url: Option<String>,
    /// etcd version to run; selects the binary when `--etcd-binary` is not given.
    #[arg(long, env = "ETCDOP_ETCD_VERSION", default_value_t = etcd_operator::version::DEFAULT_VERSION.to_string())]
    pub etcd_version: String,
    /// Path of the etcd binary (overrides the version's cached or bundled binary).
    #[arg(long, env = "ETCDOP_ETCD_BINARY")]
    pub etcd_binary: Option<PathBuf>,
    /// Path of an official `etcdutl`, for backups and restores [default: the cached one
    /// (`scripts/setup.sh`), else one beside the etcd binary, else one on PATH].
    #[arg(long, env = "ETCDOP_ETCDUTL")]
    pub etcdutl: Option<PathBuf>,
    /// Where the Secrets a backup storage names are mounted, one directory per Secret
    /// (`<dir>/<secret>/<key>`; Kubernetes). Without it (local mode) a storage's
    /// credentials are the variables of this process's environment named in the
    /// `credentialsSecret` documentation.
    #[arg(long, env = "ETCDOP_STORAGE_CREDENTIALS_DIR")]
    pub storage_credentials_dir: Option<PathBuf>,
    /// Client URLs of the existing cluster, comma separated, used when the coordinator
    /// cannot say (a restart while it is away).
    #[arg(long, env = "ETCDOP_CLUSTER_ENDPOINTS", value_delimiter = ',')]
    pub cluster_endpoints: Vec<String>,
    /// How often the member's health is observed and reported, in milliseconds.
    #[arg(long, env = "ETCDOP_REPORT_INTERVAL_MS", default_value_t = 1000)]
    pub report_interval_ms: u64,
    /// etcd's log level.
    #[arg(long, env = "ETCDOP_ETCD_LOG_LEVEL", default_value = "warn")]
    pub etcd_log_level: String,
    /// This sidecar's control-path certificate (PEM), issued by the operator's CA for this
    /// member: presented to the coordinator and to callers of the sidecar's own server.
    /// Read again for every new connection (rotation needs no restart).
    #[arg(long, env = "ETCDOP_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The key of `--tls-cert` (PEM).
    #[arg(long, env = "ETCDOP_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The operator's CA (PEM): the coordinator's certificate must lead to it.
    #[arg(long, env = "ETCDOP_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A plaintext address serving only gRPC health and the read-only GetMemberHealth (for
    /// probes; off when not given).
    #[arg(long, env = "ETCDOP_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// The directory of etcd's TLS files (`etcd-ca.crt`, `etcd-server.crt`, ...): etcd
    /// serves clients and peers over TLS and requires client certificates. The URLs must be
    /// https then.
    #[arg(long, env = "ETCDOP_ETCD_TLS_DIR")]
    pub etcd_tls_dir: Option<PathBuf>,
    /// etcd's backend quota in bytes (`--quota-backend-bytes`; etcd's default when not given).
    #[arg(long, env = "ETCDOP_QUOTA_BACKEND_BYTES")]
    pub quota_backend_bytes: Option<u64>,
    /// etcd's automatic compaction mode, `periodic` or `revision` (`--auto-compaction-mode`).
    #[arg(long, env = "ETCDOP_AUTO_COMPACTION_MODE")]
    pub auto_compaction_mode: Option<String>,
    /// etcd's automatic compaction retention (`--auto-compaction-retention`): a duration for
    /// `periodic`, a number of revisions for `revision`. Required with the mode.
    #[arg(long, env = "ETCDOP_AUTO_COMPACTION_RETENTION")]
    pub auto_compaction_retention: Option<String>,
    /// How long the snapshot that 3.5 data needs before an upgrade to 3.6 may take, in
    /// milliseconds (1000 to 3600000). Past it the handoff is refused and etcd runs on
    /// with its normal arguments.
    #[arg(
        long,
        env = "ETCDOP_UPGRADE_SNAPSHOT_DEADLINE_MS",
        default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1_000..=3_600_000)
    )]
    pub upgrade_snapshot_deadline_ms: u64,
}

/// A refused configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A required value is empty.
    #[error("--{0} must not be empty")]
    Empty(&'static str),
    /// A URL is not `http(s)://host:port`.
    #[error("--{flag} {value:?} is not a URL of the form http://HOST:PORT")]
    BadUrl {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// The version does not parse.
    #[error("--etcd-version: {0}")]
    Version(#[from] etcd_operator::version::VersionParseError),
    /// No binary for the version.
    #[error(transparent)]
    Binary(#[from] MissingBinary),
    /// The given binary does not exist.
    #[error("--etcd-binary {0} does not exist")]
    BinaryNotFound(PathBuf),
    /// The interval is out of range.
    #[error("--report-interval-ms must be between 100 and 60000, got {0}")]
    Interval(u64),
    /// The control path's TLS files are missing.
    #[error(
        "--{0} is required: the control path between the coordinator and the sidecars is mutual TLS (the coordinator issues the files)"
    )]
    MissingTls(&'static str),
    /// A TLS file or directory is unusable.
    #[error("{0}")]
    Tls(#[from] etcd_operator::tls::TlsError),
    /// The automatic compaction flags do not go together.
    #[error(
        "--auto-compaction-mode and --auto-compaction-retention go together, the mode being periodic or revision (got {mode:?}, {retention:?})"
    )]
    AutoCompaction {
        /// The mode given.
        mode: Option<String>,
        /// The retention given.
        retention: Option<String>,
    },
    /// A URL's scheme does not match the TLS settings.
    #[error("--{flag} {value:?} must be {scheme}:// {why}")]
    Scheme {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
        /// The scheme wanted.
        scheme: &'static str,
        /// Why.
        why: &'static str,
    },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The cluster.
    pub cluster: ClusterKey,
    /// This member's name.
    pub name: String,
    /// The member's directory.
    pub member_dir: PathBuf,
    /// Advertised peer URL.
    pub peer_url: String,
    /// Advertised client URL.
    pub client_url: String,
    /// Listened peer URL.
    pub listen_peer_url: String,
    /// Listened client URLs.
    pub listen_client_url: String,
    /// The URL etcd serves metrics on, if any (http).
    pub listen_metrics_url: Option<String>,
    /// The coordinator.
    pub coordinator_url: String,
    /// Where the sidecar's gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// The URL the coordinator calls back on.
    pub grpc_url: String,
    /// The etcd version run.
    pub etcd_version: EtcdVersion,
    /// The etcd binary.
    pub etcd_binary: PathBuf,
    /// An official `etcdutl`, when one was found.
    pub etcdutl: Option<PathBuf>,
    /// Where the storages' Secrets are mounted (Kubernetes).
    pub storage_credentials_dir: Option<PathBuf>,
    /// Fallback client URLs of the cluster.
    pub cluster_endpoints: Vec<String>,
    /// Health observation interval.
    pub report_interval: Duration,
    /// etcd's log level.
    pub etcd_log_level: String,
    /// The control path's certificate, key and CA.
    pub tls: etcd_operator::tls::TlsFiles,
    /// The plaintext health address, if any.
    pub health_addr: Option<SocketAddr>,
    /// etcd's TLS files, when etcd uses TLS.
    pub etcd_tls: Option<crate::etcd_tls::EtcdTlsDir>,
    /// etcd's backend quota, bytes (etcd's default when `None`).
    pub quota_backend_bytes: Option<u64>,
    /// etcd's automatic compaction: mode and retention.
    pub auto_compaction: Option<(String, String)>,
    /// How long the snapshot before a 3.5 to 3.6 upgrade may take.
    pub upgrade_snapshot_deadline: Duration,
}

impl SidecarConfig {
    /// etcd's data directory.
    pub fn etcd_data_dir(&self) -> PathBuf {
        self.member_dir.join("etcd")
    }
}

fn check_url(flag: &'static str, value: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadUrl {
        flag,
        value: value.to_string(),
    };
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

fn check_scheme(
    flag: &'static str,
    value: &str,
    tls: bool,
    why: &'static str,
) -> Result<(), ConfigError> {
    let scheme = if tls { "https" } else { "http" };
    if value.starts_with(&format!("{scheme}://")) {
        Ok(())
    } else {
        Err(ConfigError::Scheme {
            flag,
            value: value.to_string(),
            scheme,
            why,
        })
    }
}

fn required_file(flag: &'static str, path: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    let path = path
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or(ConfigError::MissingTls(flag))?;
    std::fs::metadata(&path).map_err(|source| {
        ConfigError::Tls(etcd_operator::tls::TlsError::Io {
            path: path.clone(),
            source,
        })
    })?;
    Ok(path)
}

impl RunArgs {
    /// Validates the flags; nothing is started before this succeeds.
    pub fn validate(self, binaries: &EtcdBinaries) -> Result<SidecarConfig, ConfigError> {
        for (flag, value) in [
            ("cluster", &self.cluster),
            ("name", &self.name),
            ("peer-url", &self.peer_url),
            ("client-url", &self.client_url),
            ("coordinator-url", &self.coordinator_url),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::Empty(flag));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Empty("data-dir"));
        }
        check_url("peer-url", &self.peer_url)?;
        check_url("client-url", &self.client_url)?;
        check_url("coordinator-url", &self.coordinator_url)?;
        for e in &self.cluster_endpoints {
            check_url("cluster-endpoints", e)?;
        }
        let listen_peer_url = self
            .listen_peer_url
            .unwrap_or_else(|| self.peer_url.clone());
        check_url("listen-peer-url", &listen_peer_url)?;
        let listen_client_url = self
            .listen_client_url
            .unwrap_or_else(|| self.client_url.clone());
        for u in listen_client_url.split(',') {
            check_url("listen-client-url", u)?;
        }
        let listen_metrics_url = self.listen_metrics_url.filter(|u| !u.is_empty());
        if let Some(url) = &listen_metrics_url {
            check_url("listen-metrics-url", url)?;
            check_scheme(
                "listen-metrics-url",
                url,
                false,
                "(metrics are served in plain HTTP for the scraper)",
            )?;
        }
        if !(100..=60_000).contains(&self.report_interval_ms) {
            return Err(ConfigError::Interval(self.report_interval_ms));
        }
        let etcd_version: EtcdVersion = self.etcd_version.parse()?;
        let etcd_binary = match self.etcd_binary {
            Some(path) if path.is_file() => path,
            Some(path) => return Err(ConfigError::BinaryNotFound(path)),
            None => binaries.resolve(etcd_version)?,
        };
        let grpc_url = self
            .grpc_url
            .unwrap_or_else(|| format!("https://{}", self.grpc_addr));
        let control = "(the control path is mutual TLS)";
        check_url("grpc-url", &grpc_url)?;
        check_scheme("coordinator-url", &self.coordinator_url, true, control)?;
        check_scheme("grpc-url", &grpc_url, true, control)?;
        let tls = etcd_operator::tls::TlsFiles {
            cert: required_file("tls-cert", self.tls_cert)?,
            key: required_file("tls-key", self.tls_key)?,
            ca: required_file("tls-ca", self.tls_ca)?,
        };
        let etcd_tls = self
            .etcd_tls_dir
            .filter(|d| !d.as_os_str().is_empty())
            .map(|dir| crate::etcd_tls::EtcdTlsDir { dir });
        if let Some(dir) = &etcd_tls {
            dir.check()?;
        }
        let why = if etcd_tls.is_some() {
            "(--etcd-tls-dir is given: etcd speaks TLS)"
        } else {
            "(without --etcd-tls-dir etcd speaks plain HTTP)"
        };
        let with_tls = etcd_tls.is_some();
        check_scheme("peer-url", &self.peer_url, with_tls, why)?;
        check_scheme("client-url", &self.client_url, with_tls, why)?;
        check_scheme("listen-peer-url", &listen_peer_url, with_tls, why)?;
        for u in listen_client_url.split(',') {
            check_scheme("listen-client-url", u, with_tls, why)?;
        }
        for e in &self.cluster_endpoints {
            check_scheme("cluster-endpoints", e, with_tls, why)?;
        }
        let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
        let auto_compaction = match (
            nonempty(self.auto_compaction_mode),
            nonempty(self.auto_compaction_retention),
        ) {
            (None, None) => None,
            (Some(mode), Some(retention)) if mode == "periodic" || mode == "revision" => {
                Some((mode, retention))
            }
            (mode, retention) => return Err(ConfigError::AutoCompaction { mode, retention }),
        };
        Ok(SidecarConfig {
            cluster: ClusterKey::new(self.namespace, self.cluster),
            name: self.name,
            member_dir: self.data_dir,
            peer_url: self.peer_url,
            client_url: self.client_url,
            listen_peer_url,
            listen_client_url,
            listen_metrics_url,
            coordinator_url: self.coordinator_url,
            grpc_addr: self.grpc_addr,
            grpc_url,
            etcdutl: self
                .etcdutl
                .filter(|p| p.is_file())
                .or_else(|| binaries.etcdutl(&etcd_binary)),
            storage_credentials_dir: self.storage_credentials_dir,
            etcd_version,
            etcd_binary,
            cluster_endpoints: self.cluster_endpoints,
            report_interval: Duration::from_millis(self.report_interval_ms),
            etcd_log_level: self.etcd_log_level,
            tls,
            health_addr: self.health_addr,
            etcd_tls,
            quota_backend_bytes: self.quota_backend_bytes.filter(|q| *q > 0),
            auto_compaction,
            upgrade_snapshot_deadline: Duration::from_millis(self.upgrade_snapshot_deadline_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    /// A directory with the control path's files (any content: only existence is checked).
    fn tls_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in ["tls.crt", "tls.key", "ca.crt"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        dir
    }

    fn parse(extra: &[&str]) -> RunArgs {
        static TLS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let tls = TLS.get_or_init(tls_dir);
        let tls_args: Vec<String> = ["tls-cert=tls.crt", "tls-key=tls.key", "tls-ca=ca.crt"]
            .iter()
            .map(|a| {
                let (flag, file) = a.split_once('=').unwrap();
                format!("--{flag}={}", tls.path().join(file).display())
            })
            .collect();
        let mut args = vec![
            "x",
            "--cluster=c",
            "--name=c-0000",
            "--data-dir=/tmp/x",
            "--peer-url=http://127.0.0.1:2380",
            "--client-url=http://127.0.0.1:2379",
            "--coordinator-url=https://127.0.0.1:7443",
        ];
        args.extend(tls_args.iter().map(String::as_str));
        // A flag given in `extra` replaces its default above; `--flag=` leaves it out.
        args.retain(|a| {
            let flag = a.split('=').next().unwrap_or(a);
            !extra.iter().any(|e| e.split('=').next() == Some(flag))
        });
        args.extend(extra.iter().filter(|e| !e.ends_with('=')));
        Cli::try_parse_from(args).unwrap().run
    }

    #[test]
    fn valid_flags_fill_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = parse(&[]).validate(&EtcdBinaries::new(dir.path())).unwrap();
        assert_eq!(cfg.listen_peer_url, "http://127.0.0.1:2380");
        assert_eq!(cfg.grpc_url, "https://127.0.0.1:7401");
        assert!(cfg.etcd_tls.is_none());
        assert_eq!(cfg.etcd_version.to_string(), "3.6.15");
        assert!(cfg.etcd_binary.is_file());
        assert_eq!(cfg.etcd_data_dir(), PathBuf::from("/tmp/x/etcd"));
        assert_eq!(cfg.listen_metrics_url, None);
        let cfg = parse(&["--listen-metrics-url=http://0.0.0.0:2381"])
            .validate(&EtcdBinaries::new(dir.path()))
            .unwrap();
        assert_eq!(
            cfg.listen_metrics_url.as_deref(),
            Some("http://0.0.0.0:2381")
        );
    }

    #[test]
    fn etcd_tls_takes_https_urls_and_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let etcd = tempfile::tempdir().unwrap();
        for f in [
            "etcd-ca.crt",
            "etcd-server.crt",
            "etcd-server.key",
            "etcd-peer.crt",
            "etcd-peer.key",
            "etcd-client.crt",
            "etcd-client.key",
        ] {
            std::fs::write(etcd.path().join(f), "x").unwrap();
        }
        let flag = format!("--etcd-tls-dir={}", etcd.path().display());
        let cfg = parse(&[
            &flag,
            "--peer-url=https://127.0.0.1:2380",
            "--client-url=https://127.0.0.1:2379",
        ])
        .validate(&EtcdBinaries::new(dir.path()))
        .unwrap();
        assert_eq!(cfg.etcd_tls.unwrap().dir, etcd.path());
        let err = parse(&[&flag])
            .validate(&EtcdBinaries::new(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be https://"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let dir = tempfile::tempdir().unwrap();
        let bins = EtcdBinaries::new(dir.path());
        let cases: &[(&[&str], &str)] = &[
            (
                &["--peer-url=127.0.0.1:2380"],
                "--peer-url \"127.0.0.1:2380\"",
            ),
            (&["--client-url=http://h:port"], "--client-url"),
            (
                &["--cluster-endpoints=http://a:1,b"],
                "--cluster-endpoints \"b\"",
            ),
            (&["--etcd-version=banana"], "--etcd-version"),
            (&["--etcd-version=3.5.34"], "scripts/fetch-etcd.sh 3.5.34"),
            (
                &["--etcd-binary=/nonexistent/etcd"],
                "/nonexistent/etcd does not exist",
            ),
            (&["--report-interval-ms=5"], "between 100 and 60000"),
            (&["--name= "], "--name must not be empty"),
            (
                &["--coordinator-url=http://127.0.0.1:7400"],
                "--coordinator-url \"http://127.0.0.1:7400\" must be https://",
            ),
            (&["--tls-cert="], "--tls-cert is required"),
            (&["--tls-ca=/nonexistent/ca.crt"], "/nonexistent/ca.crt"),
            (
                &["--client-url=https://127.0.0.1:2379"],
                "without --etcd-tls-dir etcd speaks plain HTTP",
            ),
            (&["--etcd-tls-dir=/nonexistent"], "/nonexistent/etcd-ca.crt"),
            (
                &["--listen-metrics-url=0.0.0.0:2381"],
                "--listen-metrics-url \"0.0.0.0:2381\" is not a URL",
            ),
            (
                &["--listen-metrics-url=https://0.0.0.0:2381"],
                "--listen-metrics-url \"https://0.0.0.0:2381\" must be http://",
            ),
        ];
        for (extra, want) in cases {
            let err = parse(extra).validate(&bins).unwrap_err().to_string();
            assert!(err.contains(want), "{extra:?}: {err}");
        }
    }
}
