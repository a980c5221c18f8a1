//! `etcd-chaos`: a bounded soak of fault injection under traffic, every history checked.
//!
//! ```sh
//! cargo build --release --bins && target/release/etcd-chaos --duration 600s --seed 7
//! ```
//!
//! Prints one line per scenario run, the summary line
//! `summary: scenarios N, failed F, acknowledged writes lost L, linearizability violations V`,
//! a `checked:` line (how much the operations overlapped on a key, over the whole run and
//! in the fault windows, and how many watch events, lease renewals and serializable reads
//! the checker judged), and then one row per scenario over all its runs (the soak table in
//! BENCHMARKS.md); exits non-zero when F, L or V is not zero. The same seed replays the
//! same faults in the same order. What a run without failure covers is in
//! `docs/testing.md`.
//!
//! Network scenarios (`partition-leader`, `split-2-3`, ...) put every member in a network
//! namespace of its own: run as root, `etcd-chaos` makes a hub namespace, runs itself
//! inside it, and removes every namespace of the run when that ends, however it ends.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use testkit::{
    chaos::{ChaosOptions, Scenario, run, scenarios},
    netns::{self, Hub},
};

#[derive(Parser)]
#[command(
    name = "etcd-chaos",
    about = "Fault injection under traffic, with every history checked"
)]
struct Cli {
    /// How long to keep starting scenarios (e.g. 120s, 10m).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the scenario order, victims and traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only these scenarios (comma separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The `etcd-coordinator` binary (default: next to this one).
    #[arg(long)]
    coordinator: Option<PathBuf>,
    /// The etcd version clusters start on.
    #[arg(long, default_value = "3.6.15")]
    version: String,
    /// The version the upgrade scenario goes to.
    #[arg(long, default_value = "3.7.2")]
    upgrade_to: String,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Do not hold the availability probe through each fault (its budget is then not
    /// judged).
    #[arg(long)]
    no_budget: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 120s or 10m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} is not a duration like 120s or 10m")),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.list {
        for s in scenarios() {
            println!("{s}");
        }
        return Ok(());
    }
    for o in &cli.only {
        if !scenarios().any(|s| s == o) {
            anyhow::bail!("unknown scenario {o:?}: see --list");
        }
    }
    let wants_network = cli.only.is_empty()
        || cli
            .only
            .iter()
            .any(|o| Scenario::from_name(o).is_some_and(Scenario::is_network));
    if wants_network && Hub::current().is_none() {
        match netns::available() {
            Ok(()) => {
                // Again, inside a hub of this run's own; every namespace goes with it.
                let hub = Hub::create()?;
                let args: Vec<String> = std::env::args().skip(1).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let status = hub.run_inside(&std::env::current_exe()?, &args)?;
                drop(hub);
                std::process::exit(status.code().unwrap_or(1));
            }
            Err(why) if cli.only.is_empty() => {
                eprintln!("skipping the network scenarios: {why}");
            }
            Err(why) => anyhow::bail!("{why}"),
        }
    }
    let coordinator = match cli.coordinator {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("this binary's directory")?
            .join("etcd-coordinator"),
    };
    if !coordinator.is_file() {
        anyhow::bail!(
            "{} not found: build it first (cargo build --release --bins)",
            coordinator.display()
        );
    }
    let _serial = testkit::serial_guard();
    let report = run(&ChaosOptions {
        coordinator,
        seed: cli.seed,
        duration: cli.duration,
        only: cli.only,
        version: cli.version,
        upgrade_to: cli.upgrade_to,
        budget: !cli.no_budget,
    })
    .await;
    print!("{}", report.render());
    println!();
    print!("{}", report.per_scenario());
    if report.failed() > 0 || report.lost() > 0 || report.violations() > 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10d").is_err());
    }
}
