//! `etcd-coordinator`: runs etcd clusters declared as `EtcdCluster` resources.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use etcd_coordinator::{
    local::SidecarCommand,
    local_mode::{LocalOptions, run_local},
    plan::Policy,
    status::{Output, fetch_and_render},
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
        /// The coordinator's gRPC address (status, sidecars).
        #[arg(long, env = "ETCDOP_GRPC_ADDR", default_value = "127.0.0.1:7400")]
        grpc_addr: SocketAddr,
        /// The sidecar binary (default: this binary's embedded sidecar).
        #[arg(long, env = "ETCDOP_SIDECAR_BINARY")]
        sidecar_binary: Option<PathBuf>,
        /// How long a member's process may stay gone before it is replaced, in seconds.
        #[arg(long, default_value_t = 15)]
        dead_after_secs: u64,
        /// Print only logs, no progress lines.
        #[arg(long)]
        quiet: bool,
        /// Where `/healthz`, `/readyz` and `/metrics` are served ("off" for nowhere).
        #[arg(long, env = "ETCDOP_METRICS_ADDR", default_value = "127.0.0.1:7480")]
        metrics_addr: String,
    },
    /// Print cluster status from a running coordinator.
    Status {
        /// One cluster's name (all clusters when left out).
        name: Option<String>,
        /// Namespace (Kubernetes only).
        #[arg(long, short = 'n', default_value = "")]
        namespace: String,
        /// The coordinator's gRPC address.
        #[arg(long, env = "ETCDOP_GRPC_ADDR", default_value = "127.0.0.1:7400")]
        grpc_addr: String,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print the EtcdCluster CustomResourceDefinition as YAML.
    Crd,
    /// Run as the operator in Kubernetes: EtcdCluster objects, members as Pods.
    Kubernetes {
        /// The namespace whose clusters are managed [default: the coordinator's own].
        #[arg(long, env = "ETCDOP_WATCH_NAMESPACE")]
        watch_namespace: Option<String>,
        /// Manage clusters in every namespace (needs cluster-wide permissions).
        #[arg(long, env = "ETCDOP_ALL_NAMESPACES")]
        all_namespaces: bool,
        /// The coordinator's own namespace (downward API).
        #[arg(long, env = "MY_POD_NAMESPACE", default_value = "default")]
        pod_namespace: String,
        /// The coordinator's own Pod name (downward API): its identity in leader election.
        #[arg(long, env = "MY_POD_NAME", default_value = "")]
        pod_name: String,
        /// The coordinator's gRPC address (status, sidecars).
        #[arg(long, env = "ETCDOP_GRPC_ADDR", default_value = "0.0.0.0:7400")]
        grpc_addr: SocketAddr,
        /// The URL sidecars reach the coordinator on [default: its Service].
        #[arg(long, env = "ETCDOP_COORDINATOR_URL")]
        coordinator_url: Option<String>,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Local {
            path,
            state_dir,
            grpc_addr,
            sidecar_binary,
            dead_after_secs,
            quiet,
            metrics_addr,
        } => {
            let metrics_addr = match metrics_addr.as_str() {
                "off" | "" => None,
                addr => Some(addr.parse::<SocketAddr>().map_err(|e| {
                    anyhow::anyhow!("--metrics-addr {addr:?} is not an address: {e}")
                })?),
            };
            init_logs(if quiet { "info" } else { "warn" });
            let sidecar = match sidecar_binary {
                Some(program) => SidecarCommand {
                    program,
                    args: vec!["run".into()],
                },
                None => SidecarCommand::current_exe()?,
            };
            let opts = LocalOptions {
                manifests: path,
                state_dir: state_dir.unwrap_or_else(default_state_dir),
                grpc_addr,
                sidecar,
                policy: Policy {
                    dead_after_ms: (dead_after_secs * 1000) as i64,
                    ..Policy::default()
                },
                interval: Duration::from_secs(1),
                progress: !quiet,
                metrics_addr,
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
            output,
        } => {
            let url = if grpc_addr.contains("://") {
                grpc_addr
            } else {
                format!("http://{grpc_addr}")
            };
            match fetch_and_render(&url, name.as_deref(), &namespace, output).await {
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
            all_namespaces,
            pod_namespace,
            pod_name,
            grpc_addr,
            coordinator_url,
            operator_image,
            image_pull_policy,
            lease_name,
            no_leader_election,
            dead_after_secs,
        } => {
            init_logs("info");
            let opts = etcd_coordinator::k8s::operator::KubernetesOptions {
                watch_namespace: if all_namespaces {
                    None
                } else {
                    Some(watch_namespace.unwrap_or_else(|| pod_namespace.clone()))
                },
                pod_namespace,
                pod_name,
                grpc_addr,
                coordinator_url,
                operator_image,
                image_pull_policy,
                lease_name: (!no_leader_election).then_some(lease_name),
                policy: Policy {
                    dead_after_ms: (dead_after_secs * 1000) as i64,
                    ..Policy::default()
                },
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
        Command::Crd => {
            print!("{}", etcd_operator::resource::crd_yaml()?);
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
