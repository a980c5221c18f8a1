//! The operator's side of each row: a local coordinator doing the operation end to end,
//! timed from the request to the cluster Running again, as its status API reports it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use etcd_client::Client;
use etcd_operator::{etcd_bin::EtcdBinaries, version::DEFAULT_VERSION};

use super::bare::{bare_etcd, wait_healthy};
use crate::{
    free_port,
    local_cluster::{CoordinatorOptions, LocalCoordinator, manifest, write_atomically},
    traffic::Writer,
};

pub fn example_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/example-etcd-cluster.yaml")
}

/// Time from the coordinator's start to `size` healthy members.
pub async fn create(coordinator: &Path, size: i32) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("c.yaml");
    write_atomically(
        &path,
        &manifest("bench", size, &DEFAULT_VERSION.to_string()),
    )?;
    let started = Instant::now();
    let c = LocalCoordinator::start(CoordinatorOptions::new(coordinator, &path)).await?;
    c.wait_running(
        size as usize,
        &DEFAULT_VERSION.to_string(),
        Duration::from_secs(180),
    )
    .await?;
    Ok(started.elapsed())
}

/// Per added member when scaling 3 to 5.
pub async fn scale_up(coordinator: &Path) -> anyhow::Result<Duration> {
    let v = DEFAULT_VERSION.to_string();
    let c =
        LocalCoordinator::start(CoordinatorOptions::new(coordinator, example_manifest())).await?;
    c.wait_running(3, &v, Duration::from_secs(120)).await?;
    let started = Instant::now();
    c.set_spec(5, &v)?;
    c.wait_running(5, &v, Duration::from_secs(180)).await?;
    Ok(started.elapsed() / 2)
}

/// Kill -9 of `count` members' sidecars (followers first), data intact, to every member
/// healthy again on its data (same names).
pub async fn restart_on_data(coordinator: &Path, count: usize) -> anyhow::Result<Duration> {
    let v = DEFAULT_VERSION.to_string();
    let c =
        LocalCoordinator::start(CoordinatorOptions::new(coordinator, example_manifest())).await?;
    c.wait_running(3, &v, Duration::from_secs(120)).await?;
    kill_members(&c, &v, count).await
}

/// Kill -9 of one follower's sidecar on a running 3-member cluster, to it healthy again on
/// its data.
pub async fn kill_follower(c: &LocalCoordinator, v: &str) -> anyhow::Result<Duration> {
    kill_members(c, v, 1).await
}

async fn kill_members(c: &LocalCoordinator, v: &str, count: usize) -> anyhow::Result<Duration> {
    let status = c.wait_running(3, v, Duration::from_secs(600)).await?;
    let mut members: Vec<(bool, String, u32)> = status
        .members
        .iter()
        .map(|m| (m.leader, m.name.clone(), m.restarts))
        .collect();
    members.sort();
    let victims: Vec<(String, u32)> = members
        .into_iter()
        .take(count)
        .map(|(_, n, r)| (n, r))
        .collect();
    let started = Instant::now();
    for (victim, _) in &victims {
        c.kill_member(victim)?;
    }
    c.wait_until("the killed members back", Duration::from_secs(600), |s| {
        crate::local_cluster::is_running(s, 3, v)
            && victims.iter().all(|(n, before)| {
                s.members
                    .iter()
                    .any(|m| &m.name == n && m.healthy && m.restarts > *before)
            })
    })
    .await?;
    Ok(started.elapsed())
}

/// `etcd-coordinator delete-member` of a follower (its data goes with it) to a healthy
/// replacement under a new ordinal.
pub async fn replacement(coordinator: &Path) -> anyhow::Result<Duration> {
    let v = DEFAULT_VERSION.to_string();
    let c =
        LocalCoordinator::start(CoordinatorOptions::new(coordinator, example_manifest())).await?;
    c.wait_running(3, &v, Duration::from_secs(120)).await?;
    // etcd refuses a MemberAdd until every voter has been connected to the leader for 5 s
    // (its strict reconfiguration check), which a cluster Running for less than that has
    // not: measured on a cluster past it, as the floor's join is, and as a replacement in a
    // cluster that has run for a while is.
    tokio::time::sleep(SETTLED_AFTER).await;
    delete_follower(&c, &v).await
}

/// `delete-member` of a follower of a running 3-member cluster to its replacement
/// healthy and promoted, the cluster Running.
pub async fn delete_follower(c: &LocalCoordinator, v: &str) -> anyhow::Result<Duration> {
    let status = c.wait_running(3, v, Duration::from_secs(600)).await?;
    let victim = status
        .members
        .iter()
        .find(|m| !m.leader)
        .map(|m| m.name.clone())
        .context("a follower")?;
    let started = Instant::now();
    c.delete_member(&victim)?;
    c.wait_until("a replacement", Duration::from_secs(1200), |s| {
        crate::local_cluster::is_running(s, 3, v) && s.members.iter().all(|m| m.name != victim)
    })
    .await?;
    Ok(started.elapsed())
}

/// `etcd-coordinator backup` of the cluster: the backup's name once it is stored and proven.
pub fn take_backup(c: &LocalCoordinator) -> anyhow::Result<String> {
    let out = Command::new(c.coordinator_bin())
        .arg("backup")
        .arg(c.cluster())
        .arg(format!("--state-dir={}", c.state_dir().display()))
        .arg(format!("--control-addr={}", c.control_addr()))
        .output()?;
    if !out.status.success() {
        bail!(
            "etcd-coordinator backup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .context("the backup's name")?
        .to_string())
}

/// How long a new cluster runs before a replacement is measured on it: etcd's 5 s window
/// of connected voters before it accepts a MemberAdd, and a little more.
pub const SETTLED_AFTER: Duration = Duration::from_millis(5_500);

/// Rolling upgrade 3.5.34 -> 3.6.15 of 3 members under a writer: duration, longest stall,
/// failed writes.
pub async fn upgrade(coordinator: &Path) -> anyhow::Result<(Duration, Duration, usize, usize)> {
    let c = LocalCoordinator::start(
        CoordinatorOptions::new(coordinator, example_manifest()).version("3.5.34"),
    )
    .await?;
    c.wait_running(3, "3.5.34", Duration::from_secs(120))
        .await?;
    let writer = Writer::start(c.live_endpoints());
    writer.wait_acked(50, Duration::from_secs(30)).await?;
    let started = Instant::now();
    c.set_spec(3, "3.6.15")?;
    c.wait_running(3, "3.6.15", Duration::from_secs(300))
        .await?;
    let elapsed = started.elapsed();
    let log = writer.stop().await;
    Ok((
        elapsed,
        log.longest_gap,
        log.failures.len(),
        log.acked.len(),
    ))
}

/// What the backup and restore rows measure, beside their floors.
pub struct BackupFigures {
    pub db_bytes: u64,
    pub ours_backup: Duration,
    pub floor_save: Duration,
    pub ours_restore: Duration,
    pub floor_restore: Duration,
}

/// Fills a 3-member cluster with about `mib` MiB, then: `etcd-coordinator backup` (stream,
/// check, store, prove restorable) beside `etcdctl snapshot save` of the same database; a
/// new 3-member cluster restored from it to Running beside `etcdutl snapshot restore` plus
/// a bare etcd start on the restored data.
pub async fn backup_restore(coordinator: &Path, mib: usize) -> anyhow::Result<BackupFigures> {
    let v = DEFAULT_VERSION.to_string();
    let c =
        LocalCoordinator::start(CoordinatorOptions::new(coordinator, example_manifest())).await?;
    let status = c.wait_running(3, &v, Duration::from_secs(120)).await?;
    let endpoints: Vec<String> = status.endpoints.split(',').map(str::to_string).collect();
    // 64 KiB values, four writers.
    let value = vec![b'x'; 64 * 1024];
    let keys = mib * 16;
    let mut writers = Vec::new();
    for w in 0..4 {
        let endpoints = endpoints.clone();
        let value = value.clone();
        writers.push(tokio::spawn(async move {
            let mut client = Client::connect(&endpoints, None).await?;
            for k in (w..keys).step_by(4) {
                client
                    .put(format!("bench/{k:06}"), value.clone(), None)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let dir = tempfile::tempdir()?;
    let snap = dir.path().join("floor.db");
    let started = Instant::now();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints[0]))
        .args(["snapshot", "save"])
        .arg(&snap)
        .output()
        .context("etcdctl (scripts/setup.sh installs Debian's etcd-client)")?;
    let floor_save = started.elapsed();
    if !out.status.success() {
        bail!(
            "etcdctl snapshot save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let db_bytes = std::fs::metadata(&snap)?.len();

    let started = Instant::now();
    let name = take_backup(&c)?;
    let ours_backup = started.elapsed();

    // Floor: etcdutl restore, then a bare start on the restored data.
    let etcd = EtcdBinaries::from_env().resolve(DEFAULT_VERSION)?;
    let etcdutl = EtcdBinaries::from_env()
        .etcdutl(&etcd)
        .context("an official etcdutl (scripts/setup.sh caches it)")?;
    let peer = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = Command::new(&etcdutl)
        .args(["snapshot", "restore"])
        .arg(&snap)
        .arg(format!("--data-dir={}", dir.path().join("floor").display()))
        .args(["--name=floor", &format!("--initial-cluster=floor={peer}")])
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .output()?;
    if !out.status.success() {
        bail!(
            "etcdutl snapshot restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bare = bare_etcd(dir.path(), "floor", "", "new")?;
    wait_healthy(&bare.client_url, Duration::from_secs(60)).await?;
    let floor_restore = started.elapsed();
    drop(bare);

    let started = Instant::now();
    c.write_manifest(&format!(
        "{}---\n{}  restore:\n    backup: \"{name}\"\n    cluster: {}\n",
        manifest(c.cluster(), 3, &v),
        manifest("restored", 3, &v),
        c.cluster()
    ))?;
    let channel = c.channel();
    crate::wait_for(
        "the restored cluster running",
        Duration::from_secs(300),
        || {
            let channel = channel.clone();
            let v = v.clone();
            async move {
                crate::local_cluster::fetch_status(channel, "restored")
                    .await
                    .filter(|s| crate::local_cluster::is_running(s, 3, &v))
            }
        },
    )
    .await?;
    let ours_restore = started.elapsed();
    Ok(BackupFigures {
        db_bytes,
        ours_backup,
        floor_save,
        ours_restore,
        floor_restore,
    })
}
