//! `etcd-sidecar`: runs one etcd member as its child and manages its lifecycle. A thin main
//! over the sidecar crate (`sidecar/`), without the coordinator's dependencies: the binary
//! local mode runs for each member, and the one the image installs into member Pods.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use etcd_operator::etcd_bin::EtcdBinaries;
use etcd_sidecar::RunArgs;

#[derive(Parser)]
#[command(
    name = "etcd-sidecar",
    version = etcd_sidecar::VERSION,
    about = "The etcd member's own agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run etcd as a member of a cluster.
    Run(RunArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    etcd_operator::tls::install_default_provider();
    etcd_operator::failpoints::setup();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let cfg = match args.validate(&EtcdBinaries::from_env()) {
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
