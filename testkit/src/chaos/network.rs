//! The network scenarios: real packets dropped (iptables) or queued (tbf) between members
//! that each run in a network namespace of their own, during an operation; healed after
//! [`NETWORK_HOLD`]. A fault must be shown to have bitten: more than one packet dropped by
//! its rules, and, for a member cut off from every other, its raft log's committed index
//! held still while it was cut off (read from etcd on the member's own client URL, which
//! the harness still reaches), the measure of a partition.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etcd_operator::proto::ClusterStatus;

use super::{
    CONVERGE,
    actions::{
        DEFRAG_PERCENT, DEFRAG_WAIT, backup_cli, backup_streaming, check_backups_whole,
        compact_now, pick, replace_wiped_follower, staying_member, wait_defragmented,
        write_and_delete_large_values,
    },
    scenario::{Ctx, Injected, Scenario},
};
use crate::{cluster_view::member_status, local_cluster::LocalCoordinator, rng::SeededRng};

/// How long a network fault holds: longer than the dead-after time the scenarios run with
/// (5 s), so that a coordinator that took a partition for a death would act on it.
pub(super) const NETWORK_HOLD: Duration = Duration::from_secs(12);

/// When, into the hold, a cut-off member's committed index is first read: messages in
/// flight when the rules went in have landed by then.
const SETTLE_INTO_HOLD: Duration = Duration::from_secs(1);

/// Runs network scenario `scenario` during its operation.
pub(super) async fn inject(scenario: Scenario, x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    let v = x.version();
    let mut victim = None;
    let (during, size, version) = match scenario {
        Scenario::PartitionDuringScaleUp => {
            x.c.set_spec(5, &v)?;
            ("scale up 3 to 5".to_string(), 5, v)
        }
        Scenario::PartitionDuringScaleDown => {
            // Once the first member is gone, a member that is not itself leaving is cut
            // off while the second removal is decided.
            x.c.set_spec(3, &v)?;
            x.c.wait_until("a first member gone", CONVERGE, |s| s.members.len() < 5)
                .await?;
            victim = Some(staying_member(x.c, x.rng, None).await?);
            ("scale down 5 to 3".to_string(), 3, v)
        }
        Scenario::PartitionDuringReplacement => {
            // A member whose data is gone is replaced (as in kill-etcd-during-replacement);
            // once its replacement is created, one member (the replacement itself, or one
            // whose data is whole) is cut off while the replacement joins.
            let gone = replace_wiped_follower(x.c, x.rng, x.initial).await?;
            let status = x.c.status().await.context("status")?;
            victim = Some(pick(x.rng, &status, None)?.to_string());
            (format!("replacement of {gone}, its data gone"), 3, v)
        }
        Scenario::PartitionDuringDefrag => return partition_during_defrag(x).await,
        Scenario::PartitionDuringUpgrade => {
            let to = x.options.upgrade_to.clone();
            x.c.set_spec(3, &to)?;
            (format!("rolling upgrade {v} to {to}"), 3, to)
        }
        Scenario::PartitionDuringBackup => return partition_during_backup(x).await,
        _ => ("steady writes".to_string(), x.initial.members.len(), v),
    };
    let fault = network_fault(x.c, scenario, victim.as_deref(), x.rng, x.faulted).await?;
    Ok(Injected::new(format!("{during}; {fault}"), size, version))
}

/// A scheduled defragmentation round over members whose backends are mostly free pages
/// (large values written, then compacted away): once the first member is defragmented,
/// the leader (still to go, last) is cut off; afterwards every member must have been
/// defragmented.
async fn partition_during_defrag(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    let v = x.version();
    write_and_delete_large_values(x.c).await?;
    let revision = compact_now(x.c).await?;
    x.c.write_manifest(&format!(
        "{}  maintenance:\n    defragment:\n      schedule: \"* * * * *\"\n      fragmentationPercent: {DEFRAG_PERCENT}\n",
        crate::local_cluster::manifest(x.c.cluster(), 3, &v)
    ))?;
    let first = wait_defragmented(x.c, 1, DEFRAG_WAIT).await?;
    let status = x.c.status().await.context("status")?;
    let fault = network_fault(x.c, Scenario::PartitionDuringDefrag, None, x.rng, x.faulted).await?;
    let all: Vec<String> = status.members.iter().map(|m| m.name.clone()).collect();
    let done = wait_defragmented(x.c, all.len(), DEFRAG_WAIT).await?;
    if let Some(missing) = all.iter().find(|n| !done.contains(n)) {
        bail!("{missing} was never defragmented in the round: {done:?}");
    }
    Ok(Injected::new(
        format!(
            "defragmentation round after compaction at {revision} ({} first); {fault}; then {}",
            first.join(", "),
            done.join(", ")
        ),
        3,
        v,
    ))
}

/// The member streaming the snapshot is cut off from the others.
async fn partition_during_backup(x: &mut Ctx<'_>) -> anyhow::Result<Injected> {
    let (streaming, call) = backup_streaming(x.c).await?;
    let fault = network_fault(
        x.c,
        Scenario::PartitionDuringBackup,
        Some(&streaming),
        x.rng,
        x.faulted,
    )
    .await?;
    let (ok, _) = call.await??;
    // Whatever the partition interrupted is never listed half-written, and the next backup,
    // asked for as the partition heals, succeeds.
    check_backups_whole(x.c).await?;
    let (next, out) = backup_cli(x.c).await?;
    if !next {
        bail!("the backup after the partition failed: {out}");
    }
    check_backups_whole(x.c).await?;
    Ok(Injected::new(
        format!(
            "backup streaming from {streaming} (the call {}); {fault}",
            if ok { "succeeded" } else { "failed" }
        ),
        3,
        x.version(),
    ))
}

/// Applies network fault `scenario` for [`NETWORK_HOLD`], sampling the status meanwhile,
/// then heals it; returns what it did, with the proof it bit. The faults are healed when
/// this returns or fails.
async fn network_fault(
    c: &LocalCoordinator,
    scenario: Scenario,
    victim: Option<&str>,
    rng: &mut SeededRng,
    faulted: &mut Option<(ClusterStatus, Instant)>,
) -> anyhow::Result<String> {
    let status = c.status().await.context("status")?;
    let before = status.clone();
    let records = c.members();
    let place = |member: &str| -> anyhow::Result<(String, String)> {
        let r = records
            .iter()
            .find(|r| r.name == member)
            .with_context(|| format!("{member} is not recorded"))?;
        let ns = r
            .netns
            .clone()
            .with_context(|| format!("{member} has no network namespace of its own"))?;
        Ok((ns, r.host().to_string()))
    };
    let client_url = |member: &str| {
        records
            .iter()
            .find(|r| r.name == member)
            .map(|r| r.client_url())
    };
    let names: Vec<String> = status.members.iter().map(|m| m.name.clone()).collect();
    let mut faults = crate::netns::Faults::new();
    // Members cut off from every other one: their committed index must hold still.
    let mut isolated: Vec<String> = Vec::new();
    let what = match scenario {
        Scenario::PartitionLeader
        | Scenario::PartitionFollower
        | Scenario::PartitionDuringScaleUp
        | Scenario::PartitionDuringScaleDown
        | Scenario::PartitionDuringReplacement
        | Scenario::PartitionDuringUpgrade
        | Scenario::PartitionDuringBackup
        | Scenario::PartitionDuringDefrag => {
            let leader = matches!(
                scenario,
                Scenario::PartitionLeader | Scenario::PartitionDuringDefrag
            );
            let victim = match victim {
                Some(v) => v.to_string(),
                None => pick(rng, &status, Some(leader))?.to_string(),
            };
            let (ns, _) = place(&victim)?;
            for other in names.iter().filter(|n| **n != victim) {
                faults.cut(&ns, &place(other)?.1)?;
            }
            isolated.push(victim.clone());
            format!(
                "{} {victim} cut off from every other member",
                match scenario {
                    _ if leader => "leader",
                    Scenario::PartitionDuringBackup | Scenario::PartitionDuringReplacement =>
                        "member",
                    _ => "follower",
                }
            )
        }
        Scenario::Split2x3 => {
            let mut shuffled = names.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let (two, three) = shuffled.split_at(2);
            for a in two {
                let (ns, _) = place(a)?;
                for b in three {
                    faults.cut(&ns, &place(b)?.1)?;
                }
            }
            // The two have no quorum: neither commits while split.
            isolated.extend(two.iter().cloned());
            format!("{} split from {}", two.join(" and "), three.join(", "))
        }
        Scenario::OneWayLoss => {
            let from = pick(rng, &status, None)?.to_string();
            let to = names
                .iter()
                .filter(|n| **n != from)
                .nth(rng.below(names.len() as u64 - 1) as usize)
                .context("a second member")?
                .clone();
            faults.drop_outgoing(&place(&from)?.0, &place(&to)?.1)?;
            format!("{from} to {to} dropped, {to} to {from} passes")
        }
        Scenario::LossySlowLink => {
            let victim = pick(rng, &status, None)?.to_string();
            let (ns, _) = place(&victim)?;
            faults.lossy(&ns, 0.3)?;
            faults.slow(&ns, 1024, 200)?;
            format!("{victim}: 30% of packets lost, 1 Mbit/s queued up to 200 ms")
        }
        Scenario::CoordinatorCutOff => {
            let gateway = crate::netns::GATEWAY.to_string();
            let control = c.control_addr().port();
            for member in &names {
                let (ns, _) = place(member)?;
                let grpc = records
                    .iter()
                    .find(|r| &r.name == member)
                    .map_or(7401, |r| r.grpc_port);
                faults.cut_to_port(&ns, &gateway, control)?;
                faults.cut_port(&ns, &gateway, grpc)?;
            }
            "the coordinator cut off from every sidecar, etcd untouched".to_string()
        }
        other => bail!("{} is not a network scenario", other.name()),
    };
    // The fault itself: held, with the cut-off members' committed index read once the
    // rules are in and again at the end.
    tokio::time::sleep(SETTLE_INTO_HOLD).await;
    let mut held = Vec::new();
    for member in &isolated {
        let index = match client_url(member) {
            Some(url) => member_status(&url).await.map(|s| s.raft_index),
            None => None,
        };
        held.push((member.clone(), index));
    }
    tokio::time::sleep(NETWORK_HOLD - SETTLE_INTO_HOLD).await;
    let mut measured = Vec::new();
    for (member, first) in &held {
        let last = match client_url(member) {
            Some(url) => member_status(&url).await.map(|s| s.raft_index),
            None => None,
        };
        match (first, last) {
            (Some(first), Some(last)) if last > *first => bail!(
                "{what}: {member} committed raft entries {first} to {last} while cut off, the fault did not isolate it"
            ),
            (Some(first), Some(_)) => measured.push(format!("{member} held at raft index {first}")),
            // A member not serving (not started yet, or down): nothing to measure on it.
            _ => measured.push(format!("{member} not answering")),
        }
    }
    let dropped = faults.dropped()?;
    faults.heal()?;
    *faulted = Some((before, Instant::now()));
    if dropped < 2 {
        bail!("{what}: {dropped} packet dropped, the fault did not bite");
    }
    Ok(format!(
        "{what} for {} s ({dropped} packets dropped{})",
        NETWORK_HOLD.as_secs(),
        if measured.is_empty() {
            String::new()
        } else {
            format!("; {}", measured.join(", "))
        }
    ))
}
