//! `etcd-bench --availability`: what each operation costs the clients, measured with
//! [`crate::availability::LoadProbe`] held through it, on one small 3-member cluster that
//! goes through every operation in turn. A planned operation is judged on its budget's
//! counts ([`Budget`]); a fault (kill -9) has none beyond the lease and the watcher.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use etcd_operator::version::DEFAULT_VERSION;

use super::scenarios::{SETTLED_AFTER, delete_follower, example_manifest, take_backup};
use crate::{
    availability::{Availability, Budget, LoadProbe},
    local_cluster::{CoordinatorOptions, LocalCoordinator, is_running},
};

/// Writes acknowledged under the probe before and after each operation.
const WRITES_AROUND: usize = 25;

/// How long one operation may take.
const WITHIN: Duration = Duration::from_secs(300);

/// One operation's row.
pub struct AvailabilityRow {
    pub operation: &'static str,
    /// `None` for a fault: only the lease and the watcher are judged.
    pub budget: Option<Budget>,
    pub seen: Availability,
}

impl AvailabilityRow {
    /// What broke the budget (the lease and the watcher always count).
    pub fn breaches(&self) -> Vec<String> {
        match &self.budget {
            Some(b) => self.seen.breaches(b),
            None => self.seen.lease_and_watch_breaches(),
        }
    }
}

/// The operations, in the order they run on one cluster, each with the probe held
/// through it. `upgrade_from` is the version the cluster starts on (upgraded first).
pub async fn availability(
    coordinator: &Path,
    upgrade_from: &str,
    mut on_row: impl FnMut(&AvailabilityRow),
) -> anyhow::Result<Vec<AvailabilityRow>> {
    let v = DEFAULT_VERSION.to_string();
    let mut c = LocalCoordinator::start(
        CoordinatorOptions::new(coordinator, example_manifest()).version(upgrade_from),
    )
    .await?;
    c.wait_running(3, upgrade_from, WITHIN).await?;
    tokio::time::sleep(SETTLED_AFTER).await;
    let mut rows = Vec::new();
    let mut push = |row: AvailabilityRow, rows: &mut Vec<AvailabilityRow>| {
        on_row(&row);
        rows.push(row);
    };

    let probe = start(&c).await?;
    c.set_spec(3, &v)?;
    c.wait_running(3, &v, WITHIN).await?;
    push(
        row("rolling upgrade", Some(Budget::LEADER), stop(probe).await?),
        &mut rows,
    );

    let probe = start(&c).await?;
    delete_follower(&c, &v).await?;
    push(
        row(
            "replace a follower (delete-member)",
            Some(Budget::FOLLOWER),
            stop(probe).await?,
        ),
        &mut rows,
    );

    let leader = leader_name(&c).await?;
    let probe = start(&c).await?;
    c.delete_member(&leader)?;
    c.wait_until("the leader replaced", WITHIN, |s| {
        is_running(s, 3, &v) && s.members.iter().all(|m| m.name != leader)
    })
    .await?;
    push(
        row(
            "replace the leader (delete-member)",
            Some(Budget::LEADER),
            stop(probe).await?,
        ),
        &mut rows,
    );

    let probe = start(&c).await?;
    c.set_spec(5, &v)?;
    c.wait_running(5, &v, WITHIN).await?;
    push(
        row(
            "scale up 3 to 5",
            Some(Budget::FOLLOWER),
            stop(probe).await?,
        ),
        &mut rows,
    );

    let probe = start(&c).await?;
    c.set_spec(3, &v)?;
    c.wait_running(3, &v, WITHIN).await?;
    push(
        row(
            "scale down 5 to 3",
            Some(Budget::LEADER),
            stop(probe).await?,
        ),
        &mut rows,
    );

    let probe = start(&c).await?;
    take_backup(&c)?;
    push(
        row("backup", Some(Budget::FOLLOWER), stop(probe).await?),
        &mut rows,
    );

    let probe = start(&c).await?;
    // The coordinator killed and started again; its members run on meanwhile.
    c.crash();
    c.restart().await?;
    c.wait_running(3, &v, WITHIN).await?;
    push(
        row(
            "coordinator restart",
            Some(Budget::FOLLOWER),
            stop(probe).await?,
        ),
        &mut rows,
    );

    for (operation, leader) in [
        ("kill -9 of a follower's sidecar and etcd", false),
        ("kill -9 of the leader's sidecar and etcd", true),
    ] {
        let status = c.wait_running(3, &v, WITHIN).await?;
        let victim = status
            .members
            .iter()
            .find(|m| m.leader == leader)
            .map(|m| (m.name.clone(), m.restarts))
            .context("a victim")?;
        let probe = start(&c).await?;
        c.kill_member(&victim.0)?;
        c.wait_until("the killed member back on its data", WITHIN, |s| {
            is_running(s, 3, &v)
                && s.members
                    .iter()
                    .any(|m| m.name == victim.0 && m.restarts > victim.1)
        })
        .await?;
        push(row(operation, None, stop(probe).await?), &mut rows);
    }
    Ok(rows)
}

fn row(operation: &'static str, budget: Option<Budget>, seen: Availability) -> AvailabilityRow {
    AvailabilityRow {
        operation,
        budget,
        seen,
    }
}

async fn start(c: &LocalCoordinator) -> anyhow::Result<LoadProbe> {
    let probe = LoadProbe::start(Arc::new(c.live_endpoints())).await?;
    probe
        .wait_acked(WRITES_AROUND, Duration::from_secs(60))
        .await?;
    Ok(probe)
}

async fn stop(probe: LoadProbe) -> anyhow::Result<Availability> {
    probe
        .wait_acked(WRITES_AROUND, Duration::from_secs(60))
        .await?;
    Ok(probe.stop().await)
}

async fn leader_name(c: &LocalCoordinator) -> anyhow::Result<String> {
    c.status()
        .await
        .context("the status")?
        .members
        .iter()
        .find(|m| m.leader)
        .map(|m| m.name.clone())
        .context("a leader in the status")
}

/// The table's header.
pub const HEADER: &str = "| operation | longest write stall | longest read stall | writes failed / acked | reads failed | leader changes | lease (5 s TTL) expired | watch missed / repeated | budget |\n|---|---|---|---|---|---|---|---|---|";

/// One row of the table.
pub fn format_row(r: &AvailabilityRow) -> String {
    let s = &r.seen;
    let breaches = r.breaches();
    let verdict = match (&r.budget, breaches.is_empty()) {
        (_, false) => format!("broken: {}", breaches.join("; ")),
        (Some(b), true) => format!(
            "met (failed writes <= {}, leader changes <= {})",
            b.writes_failed, b.leader_changes
        ),
        (None, true) => "fault: lease and watch held".into(),
    };
    format!(
        "| {} | {:.2} s | {:.2} s | {} / {} | {} | {} | {} | {} / {} | {} |",
        r.operation,
        s.longest_write_stall.as_secs_f64(),
        s.longest_read_stall.as_secs_f64(),
        s.writes_failed,
        s.writes_acked,
        s.reads_failed,
        s.leader_changes,
        if s.lease_expired { "yes" } else { "no" },
        s.watch_missed,
        s.watch_repeated,
        verdict
    )
}
