//! The positive control: a deliberately broken cluster the whole pipeline (traffic,
//! history, etcd's own view, checker) must flag, every time. A pipeline that passes it
//! proves nothing by passing real runs.
//!
//! The break is a rollback: every member of a three-member cluster is stopped, its data
//! directory copied, and started again; traffic goes on until more writes are
//! acknowledged; then every member is stopped and started again from the old copy, as a
//! restore in place or a `--force-new-cluster` applied twice would leave it. The writes
//! acknowledged after the copy are gone and their revisions are handed out again, to
//! other writes. Nothing else is wrong: etcd is real, unmodified, and consistent with
//! itself after the rollback, so only a checker that holds the history to revisions,
//! watches and acknowledged writes sees it.

use std::{path::Path, time::Duration};

use anyhow::Context;

use crate::{
    checker::{CheckOptions, Report, check, compare_hashes},
    cluster_view::{ClusterView, settle},
    history::Recorder,
    static_cluster::StaticCluster,
    traffic::{Traffic, TrafficConfig, final_read},
    wait_for,
};

/// Writes acknowledged in each phase (before the copy, after it, after the rollback).
const WRITES_PER_PHASE: usize = 40;

/// What one run of the control gave.
pub struct ControlRun {
    /// The checker's report (it must fail).
    pub report: Report,
    /// Members whose `HashKV` disagreed once settled.
    pub hash_mismatches: usize,
    /// Writes acknowledged after the copy, which the rollback lost.
    pub lost_on_purpose: usize,
}

/// Runs the control with traffic seed `seed`, in `dir`.
pub async fn rollback(dir: &Path, seed: u64) -> anyhow::Result<ControlRun> {
    let mut cluster = StaticCluster::start(dir, 3)?;
    cluster.wait_ready().await?;
    let config = TrafficConfig {
        seed,
        op_interval: Duration::from_millis(10),
        ..TrafficConfig::default()
    };
    let keys = config.key_names();
    let traffic = Traffic::start(config, &cluster.client_urls()).await?;
    let acknowledged = |recorder: &Recorder| {
        recorder
            .history()
            .operations
            .iter()
            .filter(|op| op.is_acknowledged_write())
            .count()
    };
    let more_writes = |from: usize| {
        let recorder = traffic.recorder().clone();
        async move {
            wait_for(
                &format!("{WRITES_PER_PHASE} more acknowledged writes"),
                Duration::from_secs(60),
                || {
                    let n = acknowledged(&recorder);
                    async move { (n >= from + WRITES_PER_PHASE).then_some(()) }
                },
            )
            .await
        }
    };
    more_writes(0).await?;

    // The copy, taken with every member stopped.
    cluster.kill();
    let copies = dir.join("copies");
    for i in 0..cluster.len() {
        copy_dir(&cluster.data_dir(i), &copies.join(i.to_string()))?;
    }
    cluster.restart()?;
    cluster.wait_ready().await?;
    let at_copy = acknowledged(traffic.recorder());
    more_writes(at_copy).await?;

    // The rollback.
    cluster.kill();
    let lost_on_purpose = acknowledged(traffic.recorder()) - at_copy;
    for i in 0..cluster.len() {
        let data = cluster.data_dir(i);
        std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        copy_dir(&copies.join(i.to_string()), &data)?;
    }
    cluster.restart()?;
    cluster.wait_ready().await?;
    more_writes(acknowledged(traffic.recorder())).await?;

    let history = traffic.stop().await;
    let endpoints = cluster.client_urls();
    let mut final_state = final_read(&endpoints, &keys, Duration::from_secs(30)).await?;
    let view = ClusterView::read(&endpoints).await?;
    let settled = settle(&view, &keys, Duration::from_secs(30)).await?;
    final_state.members = settled.reads;
    let report = tokio::task::spawn_blocking(move || {
        check(&history, Some(&final_state), &CheckOptions::default())
    })
    .await?;
    Ok(ControlRun {
        report,
        hash_mismatches: compare_hashes(&settled.hashes).len(),
        lost_on_purpose,
    })
}

/// Copies directory `from` to `to` (created), recursively.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
