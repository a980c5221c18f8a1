//! `etcd-coordinator`: runs etcd clusters declared as `EtcdCluster` resources.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use etcd_coordinator::{
    k8s::operator::WatchNamespaces,
    local::{LocalOptions, SidecarCommand, run_local},
    plan::Policy,
    status::{Output, StatusTls, fetch_and_render},
};
use etcd_operator::etcd_bin::EtcdBinaries;

#[derive(Parser)]
#[command(
    name = "etcd-coordinator",
    version,
    about = "Runs etcd clusters declared as EtcdCluster resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the clusters declared in a manifest file or directory as local processes.
    Local {
        /// An EtcdCluster manifest, or a directory of them (re-read when they change).
        path: PathBuf,
        /// Where the clusters keep their data [default: ~/.local/state/etcd-operator].
        #[arg(long, env = "ETCDOP_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The status address: plaintext, read-only methods, health and reflection (for
        /// grpcurl and `status`); methods that change something answer UNAUTHENTICATED here.
        #[arg(long, env = "ETCDOP_GRPC_ADDR", default_value = "127.0.0.1:7400")]
        grpc_addr: SocketAddr,
        /// The control address: mutual TLS, for the sidecars. Keep it across restarts (the
        /// sidecars of a running cluster are adopted and keep calling it).
        #[arg(long, env = "ETCDOP_CONTROL_ADDR", default_value = "127.0.0.1:7443")]
        control_addr: SocketAddr,
        /// How long the members' and the coordinator's certificates are valid, in seconds
        /// (renewed when a third is left; never past their CA's expiry) [default: 90 days;
        /// 20 s to 10 years].
        #[arg(long, env = "ETCDOP_CERT_VALIDITY_SECS", default_value_t = etcd_operator::pki::DEFAULT_CERT_VALIDITY.as_secs(), value_parser = validity_secs())]
        cert_validity_secs: u64,
        /// How long the applications' client certificate is valid, in seconds [default:
        /// 365 days; 20 s to 10 years]. Local mode only: on Kubernetes the
        /// `<cluster>-client-tls` Secret's certificate is always valid for 365 days.
        #[arg(long, env = "ETCDOP_CLIENT_CERT_VALIDITY_SECS", default_value_t = etcd_operator::pki::DEFAULT_CLIENT_CERT_VALIDITY.as_secs(), value_parser = validity_secs())]
        client_cert_validity_secs: u64,
        /// How long a new etcd CA (of a new cluster, or made by a rotation) is valid, in
        /// seconds; a CA with a third of it left is rotated with an overlap [default: 10
        /// years; 60 s to 10 years].
        #[arg(long, env = "ETCDOP_CA_VALIDITY_SECS", default_value_t = etcd_operator::pki::CA_VALIDITY.as_secs(), value_parser = validity_secs())]
        ca_validity_secs: u64,
        /// The sidecar binary [default: etcd-sidecar beside this binary when it is of the same
        /// build, else this binary's embedded sidecar].
        #[arg(long, env = "ETCDOP_SIDECAR_BINARY")]
        sidecar_binary: Option<PathBuf>,
        /// How long a member's process may stay gone before it is replaced, in seconds.
        #[arg(long, default_value_t = 15)]
        dead_after_secs: u64,
        /// How long a member restarted on a new version has to report healthy on it before
        /// it is rolled back to the version it last ran and the upgrade stops, in seconds.
        #[arg(long, default_value_t = 120)]
        upgrade_deadline_secs: u64,
        /// Print only logs, no progress lines.
        #[arg(long)]
        quiet: bool,
        /// Where `/healthz`, `/readyz` and `/metrics` are served ("off" for nowhere).
        #[arg(long, env = "ETCDOP_METRICS_ADDR", default_value = "127.0.0.1:7480")]
        metrics_addr: String,
        /// Run each new member in a network namespace of its own,
        /// `<prefix>:<bridge>:<gateway>/<length>`: the namespace `<prefix>-<member>`, joined
        /// to `bridge` (of this process's namespace, with the address `gateway`) by a veth
        /// pair, on an address of the bridge's subnet. Needs root and iproute2.
        #[arg(long, env = "ETCDOP_MEMBER_NETNS")]
        member_netns: Option<etcd_coordinator::local::MemberNetns>,
    },
    /// Print cluster status from a running coordinator.
    Status {
        /// One cluster's name (all clusters when left out).
        name: Option<String>,
        /// Namespace (Kubernetes only).
        #[arg(long, short = 'n', default_value = "")]
        namespace: String,
        /// The coordinator's status address (`https://...` for TLS, with `--cacert`).
        #[arg(long, env = "ETCDOP_GRPC_ADDR", default_value = "127.0.0.1:7400")]
        grpc_addr: String,
        /// The CA certificate to verify a TLS status address with (on Kubernetes, `ca.crt`
        /// of the ConfigMap `etcd-operator-ca`).
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// The name to verify the coordinator's certificate against (with `--cacert`, when
        /// the address is not a name it holds, e.g. `etcd-coordinator.default.svc`).
        #[arg(long)]
        servername: Option<String>,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Delete one member of a local cluster with its data, as `kubectl delete pod` does to a
    /// member Pod without a claim: the running coordinator replaces it under a new ordinal.
    DeleteMember {
        /// The cluster's name.
        cluster: String,
        /// The member's name, `<cluster>-<NNNN>`.
        member: String,
        /// The state directory of the running coordinator (its CA authenticates this
        /// command) [default: ~/.local/state/etcd-operator].
        #[arg(long, env = "ETCDOP_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The coordinator's control address.
        #[arg(long, env = "ETCDOP_CONTROL_ADDR", default_value = "127.0.0.1:7443")]
        control_addr: SocketAddr,
    },
    /// Rotate the etcd CA of a local cluster now, with an overlap (members trust the old
    /// and the new CA, every certificate moves to the new one, the old one is dropped).
    RotateCa {
        /// The cluster's name.
        cluster: String,
        /// The state directory of the running coordinator (its CA authenticates this
        /// command) [default: ~/.local/state/etcd-operator].
        #[arg(long, env = "ETCDOP_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The coordinator's control address.
        #[arg(long, env = "ETCDOP_CONTROL_ADDR", default_value = "127.0.0.1:7443")]
        control_addr: SocketAddr,
    },
    /// Take a backup of a local cluster now; prints its name once it is stored and proven
    /// restorable.
    Backup {
        /// The cluster's name.
        cluster: String,
        /// The state directory of the running coordinator (its CA authenticates this
        /// command) [default: ~/.local/state/etcd-operator].
        #[arg(long, env = "ETCDOP_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The coordinator's control address.
        #[arg(long, env = "ETCDOP_CONTROL_ADDR", default_value = "127.0.0.1:7443")]
        control_addr: SocketAddr,
    },
    /// List a cluster's backups, newest first.
    Backups {
        /// The cluster's name.
        cluster: String,
        /// Namespace (Kubernetes only).
        #[arg(long, short = 'n', default_value = "")]
        namespace: String,
        /// The coordinator's status address.
        #[arg(long, env = "ETCDOP_GRPC_ADDR", default_value = "127.0.0.1:7400")]
        grpc_addr: String,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print the EtcdCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print the EtcdCluster field reference as Markdown (docs/reference.md).
    Reference,
    /// Run as the operator in Kubernetes: EtcdCluster objects, members as Pods.
    Kubernetes {
        /// The namespace whose clusters are managed [default: the coordinator's own].
        #[arg(long, env = "ETCDOP_WATCH_NAMESPACE", conflicts_with_all = ["watch_namespaces", "all_namespaces"])]
        watch_namespace: Option<String>,
        /// The namespaces whose clusters are managed, comma-separated (`*` for every
        /// namespace). Each needs the coordinator's Role and RoleBinding, or use the
        /// ClusterRole of deploy/overlays/cluster-wide.
        #[arg(long, env = "ETCDOP_WATCH_NAMESPACES", value_parser = WatchNamespaces::parse, conflicts_with = "all_namespaces")]
        watch_namespaces: Option<WatchNamespaces>,
        /// Manage clusters in every namespace (needs the ClusterRole of
        /// deploy/overlays/cluster-wide).
        #[arg(long, env = "ETCDOP_ALL_NAMESPACES")]
        all_namespaces: bool,
        /// The coordinator's own namespace (downward API).
        #[arg(long, env = "MY_POD_NAMESPACE", default_value = "default")]
        pod_namespace: String,
        /// The coordinator's own Pod name (downward API): its identity in leader election.
        #[arg(long, env = "MY_POD_NAME", default_value = "")]
        pod_name: String,
        /// The status address: TLS with the published CA, read-only methods.
        #[arg(long, env = "ETCDOP_GRPC_ADDR", default_value = "0.0.0.0:7400")]
        grpc_addr: SocketAddr,
        /// The control address: mutual TLS, for the sidecars.
        #[arg(long, env = "ETCDOP_CONTROL_ADDR", default_value = "0.0.0.0:7443")]
        control_addr: SocketAddr,
        /// Plaintext gRPC health only, for the kubelet's probes.
        #[arg(long, env = "ETCDOP_HEALTH_ADDR", default_value = "0.0.0.0:7402")]
        health_addr: SocketAddr,
        /// The control URL sidecars reach the coordinator on [default: its Service, 7443].
        #[arg(long, env = "ETCDOP_COORDINATOR_URL")]
        coordinator_url: Option<String>,
        /// How long the members' certificates are valid, in seconds (renewed when a third is
        /// left; never past their CA's expiry) [default: 90 days; 20 s to 10 years].
        #[arg(long, env = "ETCDOP_CERT_VALIDITY_SECS", default_value_t = etcd_operator::pki::DEFAULT_CERT_VALIDITY.as_secs(), value_parser = validity_secs())]
        cert_validity_secs: u64,
        /// The DNS domain of the Kubernetes cluster (the members' certificates name their
        /// fully qualified host names).
        #[arg(long, env = "ETCDOP_CLUSTER_DOMAIN", default_value = etcd_coordinator::k8s::DEFAULT_CLUSTER_DOMAIN)]
        cluster_domain: String,
        /// The operator image for member Pods' init containers [default: this Pod's image].
        #[arg(long, env = "ETCDOP_OPERATOR_IMAGE")]
        operator_image: Option<String>,
        /// Pull policy of the operator image in member Pods [default: IfNotPresent].
        #[arg(long, env = "ETCDOP_IMAGE_PULL_POLICY")]
        image_pull_policy: Option<String>,
        /// The leader-election Lease (in the coordinator's namespace).
        #[arg(
            long,
            env = "ETCDOP_LEASE_NAME",
            default_value = etcd_coordinator::k8s::leader::DEFAULT_LEASE_NAME
        )]
        lease_name: String,
        /// Act without leader election (only ever one replica!).
        #[arg(long)]
        no_leader_election: bool,
        /// How long a member's Pod may stay down before it is replaced, in seconds.
        #[arg(long, env = "ETCDOP_DEAD_AFTER_SECS", default_value_t = 15)]
        dead_after_secs: u64,
        /// How long a member restarted on a new version (a new image) has to report healthy
        /// on it before it is rolled back to the version it last ran and the upgrade stops,
        /// in seconds.
        #[arg(long, env = "ETCDOP_UPGRADE_DEADLINE_SECS", default_value_t = 120)]
        upgrade_deadline_secs: u64,
    },
    /// Copy the sidecar binary into DIR (the member Pods' init container).
    #[command(hide = true)]
    InstallSidecar {
        /// The shared volume.
        dir: PathBuf,
        /// The sidecar binary [default: etcd-sidecar beside this binary].
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// The sidecar, embedded (same as the etcd-sidecar binary).
    Sidecar {
        #[command(subcommand)]
        command: SidecarCommandLine,
    },
}

#[derive(Subcommand)]
enum SidecarCommandLine {
    /// Run etcd as a member of a cluster.
    Run(Box<etcd_sidecar::RunArgs>),
}

/// A certificate lifetime in seconds: at least a minute (renewed at two thirds), at most a
/// CA's own lifetime (no leaf outlives its CA anyway).
fn validity_secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(20..=etcd_operator::pki::CA_VALIDITY.as_secs())
}

/// The planner's tunables from the command line (`--dead-after-secs`,
/// `--upgrade-deadline-secs`, on both runtimes).
fn policy(dead_after_secs: u64, upgrade_deadline_secs: u64) -> Policy {
    let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    Policy {
        dead_after_ms: ms(dead_after_secs),
        upgrade_deadline_ms: ms(upgrade_deadline_secs),
        ..Policy::default()
    }
}

fn default_state_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/state/etcd-operator")
}

fn init_logs(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// jemalloc: it gives freed memory back to the system (glibc's malloc keeps what a burst of
/// reconciles and connections took, 6 MiB of 28 at 200 clusters), and it is the same
/// allocator in the static (musl) image as here.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    etcd_operator::tls::install_default_provider();
    etcd_operator::failpoints::setup();
    match cli.command {
        Command::Local {
            path,
            state_dir,
            grpc_addr,
            control_addr,
            cert_validity_secs,
            client_cert_validity_secs,
            ca_validity_secs,
            sidecar_binary,
            dead_after_secs,
            upgrade_deadline_secs,
            quiet,
            metrics_addr,
            member_netns,
        } => {
            let metrics_addr = match metrics_addr.as_str() {
                "off" | "" => None,
                addr => Some(addr.parse::<SocketAddr>().map_err(|e| {
                    anyhow::anyhow!("--metrics-addr {addr:?} is not an address: {e}")
                })?),
            };
            init_logs(if quiet { "info" } else { "warn" });
            let sidecar = match sidecar_binary {
                Some(program) => SidecarCommand::binary(program),
                None => {
                    let (sidecar, warning) = SidecarCommand::beside_current_exe()?;
                    if let Some(warning) = warning {
                        tracing::warn!("{warning}");
                    }
                    sidecar
                }
            };
            let opts = LocalOptions {
                manifests: path,
                state_dir: state_dir.unwrap_or_else(default_state_dir),
                grpc_addr,
                control_addr,
                cert_validity: Duration::from_secs(cert_validity_secs.max(1)),
                client_cert_validity: Duration::from_secs(client_cert_validity_secs.max(1)),
                ca_validity: Duration::from_secs(ca_validity_secs.max(1)),
                sidecar,
                policy: policy(dead_after_secs, upgrade_deadline_secs),
                interval: Duration::from_secs(1),
                resync: Duration::from_secs(10),
                progress: !quiet,
                metrics_addr,
                member_netns,
            };
            if let Err(e) = run_local(opts, etcd_sidecar::shutdown_signal()).await {
                eprintln!("etcd-coordinator: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Status {
            name,
            namespace,
            grpc_addr,
            cacert,
            servername,
            output,
        } => {
            let url = if grpc_addr.contains("://") {
                grpc_addr
            } else if cacert.is_some() {
                format!("https://{grpc_addr}")
            } else {
                format!("http://{grpc_addr}")
            };
            let tls = match &cacert {
                Some(path) => Some(StatusTls {
                    ca_pem: std::fs::read(path)
                        .map_err(|e| anyhow::anyhow!("--cacert {}: {e}", path.display()))?,
                    server_name: servername,
                }),
                None => None,
            };
            match fetch_and_render(&url, tls, name.as_deref(), &namespace, output).await {
                Ok(text) => {
                    print!("{text}");
                    if !text.ends_with('\n') {
                        println!();
                    }
                    Ok(())
                }
                Err(e) => {
                    eprintln!("etcd-coordinator status: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Kubernetes {
            watch_namespace,
            watch_namespaces,
            all_namespaces,
            pod_namespace,
            pod_name,
            grpc_addr,
            control_addr,
            health_addr,
            coordinator_url,
            cert_validity_secs,
            cluster_domain,
            operator_image,
            image_pull_policy,
            lease_name,
            no_leader_election,
            dead_after_secs,
            upgrade_deadline_secs,
        } => {
            init_logs("info");
            let opts = etcd_coordinator::k8s::operator::KubernetesOptions {
                watch_namespaces: if all_namespaces {
                    WatchNamespaces::All
                } else if let Some(list) = watch_namespaces {
                    list
                } else {
                    let one = watch_namespace.unwrap_or_else(|| pod_namespace.clone());
                    match WatchNamespaces::parse(&one) {
                        Ok(WatchNamespaces::Only(list)) if list.len() == 1 => {
                            WatchNamespaces::Only(list)
                        }
                        Ok(_) => {
                            eprintln!(
                                "etcd-coordinator: --watch-namespace takes one namespace; use --watch-namespaces for a list or `*`"
                            );
                            std::process::exit(2);
                        }
                        Err(e) => {
                            eprintln!("etcd-coordinator: --watch-namespace: {e}");
                            std::process::exit(2);
                        }
                    }
                },
                pod_namespace,
                pod_name,
                grpc_addr,
                control_addr,
                health_addr,
                coordinator_url,
                cert_validity: Duration::from_secs(cert_validity_secs.max(1)),
                cluster_domain,
                operator_image,
                image_pull_policy,
                lease_name: (!no_leader_election).then_some(lease_name),
                policy: policy(dead_after_secs, upgrade_deadline_secs),
            };
            if let Err(e) = etcd_coordinator::k8s::operator::run_kubernetes(
                opts,
                etcd_sidecar::shutdown_signal(),
            )
            .await
            {
                eprintln!("etcd-coordinator: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::InstallSidecar { dir, from } => {
            let from = match from {
                Some(f) => f,
                None => etcd_coordinator::k8s::install::default_source()?,
            };
            let target = etcd_coordinator::k8s::install::install_sidecar(&from, &dir)?;
            println!("installed {}", target.display());
            Ok(())
        }
        Command::DeleteMember {
            cluster,
            member,
            state_dir,
            control_addr,
        } => {
            let state_dir = state_dir.unwrap_or_else(default_state_dir);
            match etcd_coordinator::admin::delete_member(
                &state_dir,
                control_addr,
                &cluster,
                &member,
            )
            .await
            {
                Ok(name) => {
                    println!("deleted {name} with its data; the coordinator replaces it");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("etcd-coordinator delete-member: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::RotateCa {
            cluster,
            state_dir,
            control_addr,
        } => {
            let state_dir = state_dir.unwrap_or_else(default_state_dir);
            match etcd_coordinator::admin::rotate_ca(&state_dir, control_addr, &cluster).await {
                Ok(message) => {
                    println!("{message}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("etcd-coordinator rotate-ca: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Backup {
            cluster,
            state_dir,
            control_addr,
        } => {
            let state_dir = state_dir.unwrap_or_else(default_state_dir);
            match etcd_coordinator::admin::take_backup(&state_dir, control_addr, &cluster).await {
                Ok(backup) => {
                    println!(
                        "{} (revision {}, {} bytes, sha256 {}, verified)",
                        backup.name, backup.revision, backup.size_bytes, backup.sha256
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("etcd-coordinator backup: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Backups {
            cluster,
            namespace,
            grpc_addr,
            output,
        } => {
            let url = if grpc_addr.contains("://") {
                grpc_addr
            } else {
                format!("http://{grpc_addr}")
            };
            match etcd_coordinator::status::fetch_backups(&url, None, &cluster, &namespace, output)
                .await
            {
                Ok(text) => {
                    print!("{text}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("etcd-coordinator backups: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Crd => {
            print!("{}", etcd_operator::resource::crd_yaml()?);
            Ok(())
        }
        Command::Reference => {
            print!("{}", etcd_coordinator::reference::markdown()?);
            Ok(())
        }
        Command::Sidecar {
            command: SidecarCommandLine::Run(args),
        } => {
            init_logs("info");
            let cfg = match (*args).validate(&EtcdBinaries::from_env()) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("etcd-sidecar: invalid configuration: {e}");
                    std::process::exit(2);
                }
            };
            etcd_sidecar::run(cfg, etcd_sidecar::shutdown_signal()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_lifetimes_are_bounded() {
        let parse = |secs: &str| {
            Cli::try_parse_from([
                "etcd-coordinator",
                "local",
                "x.yaml",
                "--cert-validity-secs",
                secs,
            ])
        };
        assert!(parse("3600").is_ok());
        for refused in ["18446744073709551615", "315360001", "19"] {
            let e = parse(refused).err().unwrap().to_string();
            assert!(e.contains("cert-validity-secs"), "{refused}: {e}");
        }
        assert_eq!(policy(15, u64::MAX).upgrade_deadline_ms, i64::MAX);
    }
}
