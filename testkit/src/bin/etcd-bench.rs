//! `etcd-bench`: what the operator costs, next to what etcd itself needs.
//!
//! Every figure is measured in one run on this machine, beside its floor (a bare etcd's own
//! start-to-healthy and join time), so it reads as a ratio. Prints a Markdown table.
//!
//! ```sh
//! cargo build --release --bins && target/release/etcd-bench
//! ```

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Parser;
use testkit::bench::{
    bare::{BareCluster, floor_grow, floor_join, floor_start, floor_static, floor_upgrade},
    memory::memory,
    scenarios::{backup_restore, create, replacement, restart_on_data, scale_up, upgrade},
    size::{at_size, parse_size, size_label},
    table::{Row, Rows, median, mib, row, secs, split_row},
};

#[derive(Parser)]
#[command(
    name = "etcd-bench",
    about = "Benchmarks of the etcd operator against etcd's own floor"
)]
struct Cli {
    /// The `etcd-coordinator` binary (default: next to this one).
    #[arg(long)]
    coordinator: Option<PathBuf>,
    /// Repetitions of each timed measure (the median is shown).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Cluster counts for the coordinator memory measure.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    clusters: Vec<usize>,
    /// Skip the rolling upgrade (needs etcd 3.5.34: scripts/fetch-etcd.sh 3.5.34).
    #[arg(long)]
    skip_upgrade: bool,
    /// Only these sections: floors, create, scale, restart, replace, upgrade, backup,
    /// memory (default: all). The floors are always measured.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The database size for the backup and restore rows, MiB.
    #[arg(long, default_value_t = 100)]
    backup_mib: usize,
    /// Measure every operation on one cluster filled to this size (`1GiB`, `4GiB`), each
    /// beside its floor on a bare cluster of the same data, instead of the sections above.
    /// Needs about 12 times the size free on the disk, beyond 10 GB kept free.
    #[arg(long, value_parser = parse_size)]
    db_size: Option<u64>,
    /// Print what each operation costs the clients (stalls, failed requests, leader
    /// changes, the lease, the watcher) and whether it met its budget, instead of the
    /// sections above. Fails when an operation broke its budget.
    #[arg(long)]
    availability: bool,
}

impl Cli {
    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let coordinator = match cli.coordinator.clone() {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("this binary's directory")?
            .join("etcd-coordinator"),
    };
    if !coordinator.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release --bins)",
            coordinator.display()
        );
    }
    let runs = cli.runs.max(1);
    let _serial = testkit::serial_guard();
    if cli.availability {
        println!("{}", testkit::bench::availability::HEADER);
        let rows = testkit::bench::availability::availability(&coordinator, "3.5.34", |r| {
            println!("{}", testkit::bench::availability::format_row(r))
        })
        .await?;
        let broken: Vec<&str> = rows
            .iter()
            .filter(|r| !r.breaches().is_empty())
            .map(|r| r.operation)
            .collect();
        if !broken.is_empty() {
            bail!("over budget: {}", broken.join(", "));
        }
        return Ok(());
    }
    // Rows are printed as they are measured, so a measure that fails costs only its row.
    println!("| measure | value | floor | ratio |");
    println!("|---|---|---|---|");
    let mut rows = Rows;
    if let Some(bytes) = cli.db_size {
        let from = (!cli.skip_upgrade).then_some("3.5.34");
        return size_rows(&mut rows, &coordinator, bytes, runs, from).await;
    }

    let mut starts = Vec::new();
    let mut joins = Vec::new();
    for _ in 0..runs {
        starts.push(floor_start().await?);
        joins.push(floor_join().await?);
    }
    let floor_start = median(starts);
    let floor_join = median(joins);
    rows.push(row(
        "floor: bare etcd start to healthy (1 member)",
        floor_start,
        None,
    ));
    rows.push(row(
        "floor: bare etcd learner join + promote",
        floor_join,
        None,
    ));
    eprintln!("floors done");

    for size in [1, 3, 5].into_iter().filter(|_| cli.wants("create")) {
        let mut v = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..runs {
            floors.push(if size == 1 {
                floor_start
            } else {
                floor_static(size as usize).await?
            });
            v.push(create(&coordinator, size).await?);
        }
        let floor = median(floors);
        rows.push(row(
            &format!("create {size} member(s): coordinator start to Running"),
            median(v),
            Some(floor),
        ));
        eprintln!("create {size} done");
    }

    if cli.wants("scale") {
        let mut v = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..runs {
            floors.push(floor_grow().await?);
            v.push(scale_up(&coordinator).await?);
        }
        rows.push(row(
            "per added member (3 to 5)",
            median(v),
            Some(median(floors)),
        ));
        eprintln!("scale done");
    }

    for (count, what) in [
        (1, "kill -9 of one member, healthy again on its data"),
        (
            2,
            "kill -9 of two of three (quorum lost), 3 ready again on their data",
        ),
    ]
    .into_iter()
    .filter(|_| cli.wants("restart"))
    {
        let mut ours = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..runs {
            let mut bare = BareCluster::start(3).await?;
            let victims: Vec<usize> = (1..=count).collect();
            floors.push(bare.kill_and_restart(&victims).await?);
            drop(bare);
            ours.push(restart_on_data(&coordinator, count).await?);
        }
        rows.push(row(what, median(ours), Some(median(floors))));
        eprintln!("restart {count} done");
    }

    if cli.wants("replace") {
        let mut v = Vec::new();
        for _ in 0..runs {
            v.push(replacement(&coordinator).await?);
        }
        rows.push(row(
            "member deleted with its data (delete-member), replacement healthy",
            median(v),
            Some(floor_join),
        ));
        eprintln!("replacement done");
    }

    if cli.wants("backup") {
        let f = backup_restore(&coordinator, cli.backup_mib).await?;
        let mb = f.db_bytes as f64 / 1e6;
        let rate = |d: Duration| format!("{:.1} MB/s", mb / d.as_secs_f64());
        rows.push(Row {
            measure: format!(
                "backup of a {mb:.0} MB database (stream, SHA-256 check, store, restore-verify)"
            ),
            value: format!("{} ({})", secs(f.ours_backup), rate(f.ours_backup)),
            floor: format!(
                "etcdctl snapshot save {} ({})",
                secs(f.floor_save),
                rate(f.floor_save)
            ),
            ratio: format!(
                "{:.1}x",
                f.ours_backup.as_secs_f64() / f.floor_save.as_secs_f64()
            ),
        });
        rows.push(Row {
            measure: "restore of it into a new cluster, 3 members Running".to_string(),
            value: secs(f.ours_restore),
            floor: format!(
                "etcdutl snapshot restore + bare start {}",
                secs(f.floor_restore)
            ),
            ratio: format!(
                "{:.1}x",
                f.ours_restore.as_secs_f64() / f.floor_restore.as_secs_f64()
            ),
        });
        eprintln!("backup done");
    }

    if !cli.skip_upgrade && cli.wants("upgrade") {
        let floor = floor_upgrade("3.5.34".parse()?).await?;
        let (d, stall, failed, acked) = upgrade(&coordinator).await?;
        rows.push(row(
            "rolling upgrade 3.5.34 to 3.6.15, 3 members",
            d,
            Some(floor),
        ));
        rows.push(row("  longest write stall during it", stall, None));
        rows.push(Row {
            measure: "  writes failed / acknowledged during it".into(),
            value: format!("{failed} / {acked}"),
            floor: "-".into(),
            ratio: "-".into(),
        });
        eprintln!("upgrade done");
    }

    let mut sidecar = 0;
    let mut sidecar_split = None;
    let mut etcd = 0;
    let mut sidecar_binary = String::new();
    for n in cli.clusters.iter().filter(|_| cli.wants("memory")) {
        let mut split = None;
        let (value, floor, reconciles) = match memory(&coordinator, *n).await {
            Ok(f) => {
                sidecar = f.sidecar_rss;
                sidecar_split = f.sidecar_split;
                etcd = f.etcd_rss;
                sidecar_binary = f.sidecar_binary;
                split = f.coordinator_split;
                (mib(f.coordinator_rss), "-".to_string(), Some(f.reconciles))
            }
            Err(e) => ("-".to_string(), format!("failed: {e}"), None),
        };
        rows.push(Row {
            measure: format!("coordinator RSS, {n} local cluster(s) of 1 member"),
            value,
            floor,
            ratio: "-".into(),
        });
        if let Some(split) = split {
            rows.push(split_row(split));
        }
        if let Some(h) = reconciles {
            rows.push(Row {
                measure: format!(
                    "  reconcile, steady {n} cluster(s): mean / 99% under / per second"
                ),
                value: format!(
                    "{:.1} ms / {} ms / {:.1}",
                    h.mean() * 1e3,
                    h.quantile_bound(0.99) * 1e3,
                    h.count as f64 / 10.0
                ),
                floor: "-".into(),
                ratio: "-".into(),
            });
        }
        eprintln!("memory {n} done");
    }
    if !cli.wants("memory") {
        return Ok(());
    }
    // Local mode runs `etcd-sidecar` when it is built beside the coordinator, else the
    // sidecar embedded in `etcd-coordinator`, which the value then says.
    let embedded = match sidecar_binary.as_str() {
        "etcd-sidecar" | "" => String::new(),
        other => format!(" ({other} sidecar run)"),
    };
    rows.push(Row {
        measure: "sidecar RSS (one member)".into(),
        value: format!("{}{embedded}", mib(sidecar)),
        floor: format!("etcd {}", mib(etcd)),
        ratio: format!("{:.2}x", sidecar as f64 / etcd.max(1) as f64),
    });
    if let Some(split) = sidecar_split {
        rows.push(split_row(split));
    }

    Ok(())
}

/// The rows of `--db-size`: every operation on one cluster filled to `bytes`, beside its
/// floor on a bare cluster of the same data.
async fn size_rows(
    rows: &mut Rows,
    coordinator: &std::path::Path,
    bytes: u64,
    runs: usize,
    upgrade_from: Option<&str>,
) -> anyhow::Result<()> {
    let f = at_size(coordinator, bytes, runs, upgrade_from).await?;
    let size = size_label(bytes);
    let fl = &f.floors;
    let ratio = |ours: Duration, floor: Duration| {
        format!("{:.1}x", ours.as_secs_f64() / floor.as_secs_f64())
    };
    rows.push(Row {
        measure: format!("database filled to {size}: keys (of them 1.4 MiB / leased), puts"),
        value: format!(
            "{} ({} / {}), {}; db {:.0} MB, a member's data {:.0} MB, in {:.0} s",
            f.filled.keys,
            f.filled.large,
            f.filled.leased,
            f.filled.puts,
            f.filled.db_bytes as f64 / 1e6,
            f.filled.member_bytes as f64 / 1e6,
            f.filled.took.as_secs_f64()
        ),
        floor: "-".into(),
        ratio: "-".into(),
    });
    if let Some((took, stall, failed)) = f.upgrade {
        rows.push(Row {
            measure: format!(
                "{size}: rolling upgrade {} to {}, 3 members",
                upgrade_from.unwrap_or("-"),
                etcd_operator::version::DEFAULT_VERSION
            ),
            value: secs(took),
            floor: format!("bare restarts on the data {}", secs(fl.restarts)),
            ratio: ratio(took, fl.restarts),
        });
        rows.push(Row {
            measure: "  longest write stall / writes failed during it".into(),
            value: format!("{} / {failed}", secs(stall)),
            floor: "-".into(),
            ratio: "-".into(),
        });
    }
    rows.push(Row {
        measure: format!("{size}: kill -9 of a follower, healthy again on its data"),
        value: secs(f.kill_restart),
        floor: format!("bare SIGKILL + start {}", secs(fl.kill_restart)),
        ratio: ratio(f.kill_restart, fl.kill_restart),
    });
    let mb = f.snapshot_bytes as f64 / 1e6;
    rows.push(Row {
        measure: format!(
            "{size}: backup of {mb:.0} MB (stream, SHA-256 check, store, restore-verify)"
        ),
        value: format!(
            "{} ({:.1} MB/s)",
            secs(f.backup),
            mb / f.backup.as_secs_f64()
        ),
        floor: format!(
            "etcdctl snapshot save {} ({:.1} MB/s)",
            secs(f.snapshot_save),
            mb / f.snapshot_save.as_secs_f64()
        ),
        ratio: ratio(f.backup, f.snapshot_save),
    });
    rows.push(Row {
        measure: format!("{size}: delete-member of a follower, replacement healthy and promoted"),
        value: secs(f.replace),
        floor: format!("bare learner add + catch-up + promote {}", secs(fl.join)),
        ratio: ratio(f.replace, fl.join),
    });
    if let Some(d) = f.scale_up {
        rows.push(Row {
            measure: format!("{size}: per added member (3 to 5)"),
            value: secs(d),
            floor: format!("bare learner add + catch-up + promote {}", secs(fl.join)),
            ratio: ratio(d, fl.join),
        });
    }
    if let Some(d) = f.scale_down {
        rows.push(row(
            &format!("{size}: per removed member (5 to 3)"),
            d,
            None,
        ));
    }
    rows.push(row(
        &format!("{size}: floor only: etcdctl defrag of each of 3 members"),
        fl.defrag,
        None,
    ));
    if let Some((took, check)) = &f.restore {
        rows.push(Row {
            measure: format!("{size}: restore of the backup into a new cluster, 3 members Running"),
            value: secs(*took),
            floor: format!(
                "etcdutl snapshot restore x3 + bare start {}",
                secs(fl.restore)
            ),
            ratio: ratio(*took, fl.restore),
        });
        rows.push(Row {
            measure: "  checked: keys on each member (as written) / HashKV across members".into(),
            value: format!(
                "{} / equal ({:08x} at revision {})",
                check
                    .counts
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                check.hashes[0],
                check.revision
            ),
            floor: "-".into(),
            ratio: "-".into(),
        });
    }
    for skipped in &f.skipped {
        rows.push(Row {
            measure: format!("{size}: skipped"),
            value: skipped.clone(),
            floor: "-".into(),
            ratio: "-".into(),
        });
    }
    Ok(())
}
