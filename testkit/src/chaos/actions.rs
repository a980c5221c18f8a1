//! What the faults are made of: picking victims, killing and pausing processes, wiping
//! data, filling backends and volumes, backups and defragmentation rounds, each waiting on
//! a condition with a deadline.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use etcd_operator::proto::{ClusterStatus, ConditionType, MemberPhase};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::CONVERGE;
use crate::process::etcd_pid;
use crate::{
    local_cluster::{LocalCoordinator, condition, member_phase, member_running},
    rng::SeededRng,
};

/// The backend quota of the `fill-quota` scenario, bytes.
pub(super) const FILL_QUOTA: i64 = 16 << 20;

/// Fills the cluster with about 32 MiB (so that a snapshot takes a while to stream), asks
/// for a backup, and kills the streaming member's sidecar (`sidecar`) or its etcd the moment
/// its snapshot starts arriving. Returns the member and whether the call succeeded anyway.
pub(super) async fn kill_during_backup(
    c: &LocalCoordinator,
    sidecar: bool,
) -> anyhow::Result<(String, bool)> {
    let (victim, call) = backup_streaming(c).await?;
    if sidecar {
        c.kill_member(&victim)?;
    } else {
        let pid = sidecar_pid(c, &victim)?;
        signal(etcd_pid(pid)?, Signal::SIGKILL)?;
    }
    let (ok, _) = call.await??;
    Ok((victim, ok))
}

/// The backup call [`backup_streaming`] started: whether it succeeded, and its output.
pub(super) type BackupCall = tokio::task::JoinHandle<anyhow::Result<(bool, String)>>;

/// Fills the cluster with about 32 MiB (so that a snapshot takes a while to stream), asks
/// for a backup, and returns once a member's snapshot starts arriving: that member, and the
/// call.
pub(super) async fn backup_streaming(c: &LocalCoordinator) -> anyhow::Result<(String, BackupCall)> {
    let endpoints = (c.live_endpoints())();
    let value = vec![b'b'; 64 * 1024];
    let mut client = etcd_client::Client::connect(&endpoints, None).await?;
    for k in 0..512 {
        client
            .put(format!("backup-fill/{k:04}"), value.clone(), None)
            .await?;
    }
    let members: Vec<String> = c.members().into_iter().map(|m| m.name).collect();
    let scratch = |m: &str| {
        c.state_dir()
            .join(c.cluster())
            .join(m)
            .join("backup-scratch")
            .join("snapshot.db")
    };
    for m in &members {
        let _ = std::fs::remove_file(scratch(m));
    }
    let call = tokio::spawn(backup_cli_owned(
        c.coordinator_bin().to_path_buf(),
        c.cluster().to_string(),
        c.state_dir().to_path_buf(),
        c.control_addr().to_string(),
    ));
    let victim = crate::wait_for(
        "a snapshot to start streaming",
        Duration::from_secs(60),
        || {
            let found = members.iter().find(|m| scratch(m).exists()).cloned();
            async move { found }
        },
    )
    .await?;
    Ok((victim, call))
}

/// `etcd-coordinator backup` of `c`'s cluster: success, and what it printed.
pub(super) async fn backup_cli(c: &LocalCoordinator) -> anyhow::Result<(bool, String)> {
    backup_cli_owned(
        c.coordinator_bin().to_path_buf(),
        c.cluster().to_string(),
        c.state_dir().to_path_buf(),
        c.control_addr().to_string(),
    )
    .await
}

async fn backup_cli_owned(
    bin: PathBuf,
    cluster: String,
    state_dir: PathBuf,
    control_addr: String,
) -> anyhow::Result<(bool, String)> {
    let out = tokio::process::Command::new(bin)
        .arg("backup")
        .arg(cluster)
        .arg(format!("--state-dir={}", state_dir.display()))
        .arg(format!("--control-addr={control_addr}"))
        .output()
        .await?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// The backups listed, as `etcd-coordinator backups -o json` gives them.
pub(super) async fn list_backups(c: &LocalCoordinator) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = tokio::process::Command::new(c.coordinator_bin())
        .arg("backups")
        .arg(c.cluster())
        .arg(format!("--grpc-addr={}", c.addr()))
        .args(["-o", "json"])
        .output()
        .await?;
    if !out.status.success() {
        bail!("backups: {}", String::from_utf8_lossy(&out.stderr));
    }
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(parsed["backups"].as_array().cloned().unwrap_or_default())
}

/// Every listed backup is whole: its snapshot is in the (local, default) storage, under
/// `local/<cluster>/`, with the size and SHA-256 its metadata gives.
pub(super) async fn check_backups_whole(c: &LocalCoordinator) -> anyhow::Result<()> {
    let dir = c
        .state_dir()
        .join("backups")
        .join("local")
        .join(c.cluster());
    for b in list_backups(c).await? {
        let name = b["name"].as_str().context("a backup name")?;
        let path = dir.join(format!("{name}.db"));
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "backup {name} is listed but {} is not there",
                path.display()
            )
        })?;
        let size: u64 = match &b["sizeBytes"] {
            serde_json::Value::String(s) => s.parse()?,
            v => v.as_u64().context("sizeBytes")?,
        };
        let sha: String = ring::digest::digest(&ring::digest::SHA256, &bytes)
            .as_ref()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        if bytes.len() as u64 != size || b["sha256"].as_str() != Some(sha.as_str()) {
            bail!(
                "backup {name} is listed half-written: {} bytes, sha256 {sha}; its metadata says {size} bytes, {}",
                bytes.len(),
                b["sha256"]
            );
        }
    }
    Ok(())
}

pub(super) fn signal(pid: u32, sig: Signal) -> anyhow::Result<()> {
    kill(Pid::from_raw(pid as i32), sig).with_context(|| format!("{sig} to {pid}"))
}

pub(super) fn sidecar_pid(c: &LocalCoordinator, name: &str) -> anyhow::Result<u32> {
    c.member(name)
        .and_then(|m| m.pid)
        .with_context(|| format!("no pid for {name}"))
}

pub(super) fn member_id(s: &ClusterStatus, name: &str) -> anyhow::Result<String> {
    s.members
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.id.clone())
        .with_context(|| format!("{name} is not in the status"))
}

pub(super) fn sidecar_pid_recorded(c: &LocalCoordinator, name: &str) -> Option<u32> {
    c.member(name).and_then(|m| m.pid)
}

/// Waits until process `pid` is gone (a killed sidecar, so its data may be touched).
pub(super) async fn wait_gone(pid: Option<u32>) -> anyhow::Result<()> {
    let Some(pid) = pid else { return Ok(()) };
    crate::wait_for(
        "a killed sidecar to be gone",
        Duration::from_secs(10),
        || async { (!crate::local_cluster::pid_alive(pid)).then_some(()) },
    )
    .await
}

pub(super) fn pick<'a>(
    rng: &mut SeededRng,
    s: &'a ClusterStatus,
    leader: Option<bool>,
) -> anyhow::Result<&'a str> {
    let candidates: Vec<&str> = s
        .members
        .iter()
        .filter(|m| leader.is_none_or(|l| m.leader == l))
        .map(|m| m.name.as_str())
        .collect();
    if candidates.is_empty() {
        bail!("no member to pick");
    }
    Ok(candidates[rng.below(candidates.len() as u64) as usize])
}

/// How long a scheduled defragmentation round may take to reach a member: the schedule
/// fires once a minute.
pub(super) const DEFRAG_WAIT: Duration = Duration::from_secs(150);

/// Wipes a follower's data while it is down and waits until its replacement is created;
/// returns the wiped member. The coordinator is stopped while the data goes, so that
/// nothing restarts the member on it first.
pub(super) async fn replace_wiped_follower(
    c: &mut LocalCoordinator,
    rng: &mut SeededRng,
    initial: &ClusterStatus,
) -> anyhow::Result<String> {
    let victim = wipe_follower_while_down(c, rng, initial).await?;
    let size = initial.members.len();
    c.wait_until("the replacement created", CONVERGE, |s| {
        s.members.len() == size && s.members.iter().all(|m| m.name != victim)
    })
    .await?;
    Ok(victim)
}

/// The coordinator stopped, a follower killed and its etcd data removed, the coordinator
/// started again: returns the follower's name.
pub(super) async fn wipe_follower_while_down(
    c: &mut LocalCoordinator,
    rng: &mut SeededRng,
    initial: &ClusterStatus,
) -> anyhow::Result<String> {
    let victim = pick(rng, initial, Some(false))?.to_string();
    c.crash();
    c.kill_member(&victim)?;
    wait_gone(sidecar_pid_recorded(c, &victim)).await?;
    let dir = c.state_dir().join(c.cluster()).join(&victim).join("etcd");
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    c.restart().await?;
    Ok(victim)
}

/// A member picked among those not themselves leaving (still recorded, healthy, running).
pub(super) async fn staying_member(
    c: &LocalCoordinator,
    rng: &mut SeededRng,
    leader: Option<bool>,
) -> anyhow::Result<String> {
    let mut status = c.status().await.context("status")?;
    status.members.retain(|m| {
        m.healthy
            && member_phase(m) == MemberPhase::Running
            && c.member(&m.name).is_some_and(|r| member_running(&r))
    });
    Ok(pick(rng, &status, leader)?.to_string())
}

/// Overwrites a few keys outside the traffic's with 96 KiB values until etcd refuses a write
/// for space (NOSPACE); returns the writes acknowledged before.
pub(super) async fn fill_until_nospace(c: &LocalCoordinator) -> anyhow::Result<usize> {
    const KEYS: usize = 8;
    const VALUE: usize = 96 * 1024;
    let endpoints = (c.live_endpoints())();
    let mut client = crate::clients::etcd_client(&endpoints).await?;
    let value = "x".repeat(VALUE);
    let mut acknowledged = 0;
    for i in 0..(4 * FILL_QUOTA as usize / VALUE) {
        match client
            .put(format!("chaos-fill/{}", i % KEYS), value.as_str(), None)
            .await
        {
            Ok(_) => acknowledged += 1,
            Err(e) if e.to_string().contains("database space exceeded") => return Ok(acknowledged),
            // Another failure (a leader change under the load): the next write goes on.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    bail!("no write was refused for space after {acknowledged} writes of {VALUE} bytes")
}

/// Overwrites a few keys outside the traffic's with 1 MiB values until the status shows
/// DISKFULL on `member` (its volume is full and its etcd exited); returns the writes made.
pub(super) async fn fill_until_disk_full(
    c: &LocalCoordinator,
    member: &str,
) -> anyhow::Result<usize> {
    const KEYS: usize = 4;
    let endpoints = (c.live_endpoints())();
    let mut client = crate::clients::etcd_client(&endpoints).await?;
    let value = "v".repeat(1 << 20);
    let deadline = Instant::now() + CONVERGE;
    let mut i = 0;
    loop {
        if let Some(s) = c.status().await
            && s.members
                .iter()
                .any(|m| m.name == member && m.alarms.iter().any(|a| a == "DISKFULL"))
        {
            if condition(&s, ConditionType::Alarm).is_none_or(|a| a.reason != "DiskFull") {
                bail!("DISKFULL on {member} but not in the Alarm condition");
            }
            return Ok(i);
        }
        if Instant::now() > deadline {
            bail!("no DISKFULL on {member} after {i} writes of 1 MiB");
        }
        // A write in flight on the member as it exits may fail: the next one goes on.
        if client
            .put(format!("chaos-volume/{}", i % KEYS), value.as_str(), None)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        i += 1;
    }
}

/// The fragmentation from which the `partition-during-defrag` round defragments a member.
pub(super) const DEFRAG_PERCENT: i32 = 20;

/// Writes about 8 MiB in large values over a few keys outside the traffic's, then deletes
/// them, so that a compaction leaves most of every backend free pages: more than the
/// traffic fills again while a defragmentation round goes through the members.
pub(super) async fn write_and_delete_large_values(c: &LocalCoordinator) -> anyhow::Result<()> {
    const KEYS: usize = 4;
    const VALUE: usize = 64 * 1024;
    let endpoints = (c.live_endpoints())();
    let mut client = crate::clients::etcd_client(&endpoints).await?;
    let value = "x".repeat(VALUE);
    let mut written = 0;
    let mut attempts = 0;
    while written < (8 << 20) / VALUE {
        attempts += 1;
        if attempts > 1000 {
            bail!("only {written} large writes were acknowledged");
        }
        match client
            .put(
                format!("chaos-defrag/{}", written % KEYS),
                value.as_str(),
                None,
            )
            .await
        {
            Ok(_) => written += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    for key in 0..KEYS {
        client
            .delete(format!("chaos-defrag/{key}"), None)
            .await
            .context("deleting the large values")?;
    }
    Ok(())
}

/// Compacts the cluster to its current revision, as a user would before a
/// defragmentation; returns the revision.
pub(super) async fn compact_now(c: &LocalCoordinator) -> anyhow::Result<i64> {
    let endpoints = (c.live_endpoints())();
    let mut client = crate::clients::etcd_client(&endpoints).await?;
    let revision = client
        .get("chaos-compact-probe", None)
        .await
        .context("reading the revision")?
        .header()
        .context("a response header")?
        .revision();
    client
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .with_context(|| format!("compacting at {revision}"))?;
    Ok(revision)
}

/// The members the coordinator logged as defragmented, in order, once there are at least
/// `count` of them.
pub(super) async fn wait_defragmented(
    c: &LocalCoordinator,
    count: usize,
    deadline: Duration,
) -> anyhow::Result<Vec<String>> {
    let log = c.stderr_path();
    crate::wait::wait_for("members defragmented", deadline, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let done = defragmented_in(&text);
        (done.len() >= count).then_some(done)
    })
    .await
}

/// The members a coordinator log says were defragmented, each once, in order.
pub(super) fn defragmented_in(log: &str) -> Vec<String> {
    let mut done: Vec<String> = Vec::new();
    for line in log.lines().filter(|l| l.contains(" defragmented ")) {
        let Some(name) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("member="))
        else {
            continue;
        };
        if !done.iter().any(|d| d == name) {
            done.push(name.to_string());
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defragmented_members_are_read_from_the_log() {
        let log = "\
2026-12-03T12:00:00Z  INFO reconcile{cluster=default/chaos}: etcd_coordinator::controller: defragmenting member=chaos-0001 reason=scheduled
2026-12-03T12:00:00Z  INFO reconcile{cluster=default/chaos}: etcd_coordinator::controller: defragmented member=chaos-0001 db_size=20480 db_size_in_use=16384
2026-12-03T12:00:01Z  INFO etcd_coordinator::controller: defragmented member=chaos-0000 db_size=1 db_size_in_use=1
2026-12-03T12:00:02Z  INFO etcd_coordinator::controller: defragmented member=chaos-0001 db_size=1 db_size_in_use=1
";
        assert_eq!(defragmented_in(log), vec!["chaos-0001", "chaos-0000"]);
        assert!(defragmented_in("defragmenting member=chaos-0002").is_empty());
    }
}
