//! `crash-coordinator-at-failpoint`: the coordinator killed at one of its named failpoints
//! (see `etcd_operator::failpoints`), chosen by the seed among those an operation goes
//! through (a scale up and down, a replacement, an upgrade, a backup, a new cluster restored
//! from a backup), started again at once, and the operation carried through. The fault is
//! proven by the failpoint's marker: a run whose failpoint was never reached fails.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use etcd_operator::proto::{ConditionStatus, ConditionType};

use super::{
    CONVERGE,
    actions::{backup_cli, wipe_follower_while_down},
    scenario::{Ctx, Injected},
};
use crate::{
    local_cluster::{LocalCoordinator, condition, fetch_status, is_running, manifest},
    rng::SeededRng,
};

/// The operation a failpoint is reached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// 3 to 4 members, then back to 3.
    Scale,
    /// A follower's data wiped while it is down: removed, replaced.
    Replace,
    /// A rolling upgrade.
    Upgrade,
    /// A backup and its retention.
    Backup,
    /// A new cluster restored from a backup.
    Restore,
}

/// The coordinator's failpoints the scenario chooses from, with the operation that reaches
/// each.
pub const CHOICES: &[(&str, Operation)] = &[
    ("coordinator.create-member.after-record", Operation::Scale),
    ("coordinator.grant.after-given", Operation::Scale),
    ("coordinator.leave.after-sidecar-left", Operation::Scale),
    (
        "coordinator.delete-member.after-runtime-delete",
        Operation::Scale,
    ),
    ("coordinator.grant.after-record", Operation::Replace),
    ("coordinator.remove-dead.after-grant", Operation::Replace),
    (
        "coordinator.remove-dead.after-member-remove",
        Operation::Replace,
    ),
    ("coordinator.upgrade.after-handoff", Operation::Upgrade),
    ("coordinator.upgrade.after-record", Operation::Upgrade),
    ("coordinator.backup.before-retention", Operation::Backup),
    ("coordinator.create-member.after-record", Operation::Restore),
];

/// The failpoint a run of `seed` arms, and its operation.
pub fn choose(seed: u64) -> (&'static str, Operation) {
    let mut rng = SeededRng::new(seed ^ 0x6661_696c_706f_696e);
    CHOICES[rng.below(CHOICES.len() as u64) as usize]
}

/// The environment that arms failpoint `name` in the coordinator, its markers in `dir`.
pub fn arming(name: &str, dir: &Path) -> Vec<(String, String)> {
    vec![
        ("FAILPOINTS".into(), format!("{name}=return")),
        (
            etcd_operator::failpoints::MARKER_DIR_ENV.into(),
            dir.display().to_string(),
        ),
    ]
}

/// Waits until `done` holds of cluster `cluster`'s status, starting the coordinator again
/// whenever it has died.
async fn converge(
    c: &mut LocalCoordinator,
    cluster: &str,
    what: &str,
    done: impl Fn(&etcd_operator::proto::ClusterStatus) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        c.restart_if_exited().await?;
        if fetch_status(c.channel(), cluster)
            .await
            .is_some_and(|s| done(&s))
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not within {CONVERGE:?}\n{}", c.logs(30));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub(super) async fn crash_at_failpoint(
    x: &mut Ctx<'_>,
    armed: &str,
    markers: &Path,
    operation: Operation,
) -> anyhow::Result<Injected> {
    let v = x.version();
    let cluster = x.c.cluster().to_string();
    let what = match operation {
        Operation::Scale => {
            for size in [4, 3] {
                x.c.write_manifest(&manifest(&cluster, size, &v))?;
                converge(x.c, &cluster, &format!("scaled to {size}"), |s| {
                    is_running(s, size as usize, &v)
                })
                .await?;
            }
            "a scale to 4 and back to 3"
        }
        Operation::Replace => {
            // Stops and starts the coordinator itself around the wipe; the armed failpoint
            // may kill the coordinator again at any time after.
            let initial = x.initial.clone();
            let victim = wipe_follower_while_down(x.c, x.rng, &initial).await?;
            converge(x.c, &cluster, "the wiped follower replaced", |s| {
                is_running(s, 3, &v) && s.members.iter().all(|m| m.name != victim)
            })
            .await?;
            "the replacement of a follower wiped while down"
        }
        Operation::Upgrade => {
            let to = x.options.upgrade_to.clone();
            x.c.write_manifest(&manifest(&cluster, 3, &to))?;
            converge(x.c, &cluster, "upgraded", |s| is_running(s, 3, &to)).await?;
            return finish(x.c, armed, markers, "a rolling upgrade", &to);
        }
        Operation::Backup => {
            for _ in 0..3 {
                let (ok, _) = backup_cli(x.c).await?;
                converge(x.c, &cluster, "running", |s| is_running(s, 3, &v)).await?;
                if ok && etcd_operator::failpoints::fired(markers, armed) {
                    break;
                }
            }
            "backups"
        }
        Operation::Restore => {
            let (ok, out) = backup_cli(x.c).await?;
            if !ok {
                bail!("the backup to restore from failed: {out}");
            }
            let backup = out
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let restored = format!("{cluster}-restored");
            x.c.write_manifest(&format!(
                "{}---\n{}  restore:\n    backup: \"{backup}\"\n    cluster: {cluster}\n",
                manifest(&cluster, 3, &v),
                manifest(&restored, 1, &v)
            ))?;
            converge(x.c, &restored, "the restored cluster running", |s| {
                is_running(s, 1, &v)
                    && condition(s, ConditionType::Restored)
                        .is_some_and(|r| r.status() == ConditionStatus::True)
            })
            .await?;
            "a new cluster restored from a backup"
        }
    };
    finish(x.c, armed, markers, what, &v)
}

fn finish(
    c: &LocalCoordinator,
    armed: &str,
    markers: &Path,
    what: &str,
    version: &str,
) -> anyhow::Result<Injected> {
    if !etcd_operator::failpoints::fired(markers, armed) {
        bail!(
            "failpoint {armed} was never reached during {what}:\n{}",
            c.logs(30)
        );
    }
    Ok(Injected::new(
        format!("{what}; the coordinator killed at {armed}"),
        3,
        version,
    ))
}

/// Where a run keeps its failpoints' markers.
pub fn markers_dir(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = run_dir.join("failpoints");
    std::fs::create_dir_all(&dir).context("creating the failpoints' marker directory")?;
    Ok(dir)
}
