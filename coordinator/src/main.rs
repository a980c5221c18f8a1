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
