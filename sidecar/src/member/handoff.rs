//! Lifecycle 6: hand off for an upgrade: leadership moves away (to a member already on the
//! target version when there is one), 3.5 data gets the snapshot 3.6 needs, and etcd stops
//! for the runtime's restart on the new version; no membership change.
//!
//! Refused unless the voters that stay up answer and keep quorum while this one is down.
//! The sequence runs in a task of its own that the call only awaits, so a cancelled call
//! never stops it halfway; once etcd is stopped the member is `HandedOff`, never `Running`
//! with etcd down, and the restart on this version if the runtime's never comes is armed
//! before the stop. A snapshot step that fails starts etcd again with its normal
//! arguments.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use etcd_operator::{EtcdVersion, proto::MemberPhase};
use tokio::time::{Instant, sleep};
use tracing::{info, instrument, warn};

use super::{Member, member_version};
use crate::{error::SidecarError, etcd_args::Bootstrap};

/// Default time to wait for the runtime's restart after a handoff.
pub const DEFAULT_HANDOFF_RESTART_TIMEOUT: Duration = Duration::from_secs(300);

/// The outcome of a handoff.
#[derive(Debug, Clone, Copy)]
pub struct HandoffOutcome {
    /// Leadership moved away first.
    pub moved_leadership: bool,
    /// Raft index when etcd stopped.
    pub raft_index: u64,
}

impl Member {
    /// Lifecycle 6: prepare for a restart on another version and stop etcd (see the
    /// module doc).
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name))]
    pub async fn handoff(
        self: &Arc<Self>,
        target_version: &str,
        restart_timeout: Duration,
        restart_in_place: bool,
        grant_id: &str,
    ) -> Result<HandoffOutcome, SidecarError> {
        let target: EtcdVersion = target_version
            .parse()
            .map_err(|e| SidecarError::Refused(format!("target version: {e}")))?;
        let me = Arc::clone(self);
        let grant_id = grant_id.to_string();
        tokio::spawn(async move {
            // The coordinator's grant for this step lasts as long as the step does here.
            let _held = me.hold_delegated(&grant_id);
            me.handoff_to_the_end(target, restart_timeout, restart_in_place)
                .await
        })
        .await
        .map_err(|e| SidecarError::Refused(format!("the handoff did not end: {e}")))?
    }

    async fn handoff_to_the_end(
        self: Arc<Self>,
        target: EtcdVersion,
        restart_timeout: Duration,
        restart_in_place: bool,
    ) -> Result<HandoffOutcome, SidecarError> {
        let _op = self.op.lock().await;
        let member_id = self.current().member_id;
        if self.current().phase != MemberPhase::Running || member_id == 0 {
            return Err(SidecarError::Refused(format!(
                "member is {:?}, not running: nothing to hand off",
                self.current().phase
            )));
        }
        if restart_in_place && target != self.cfg.etcd_version {
            return Err(SidecarError::Refused(format!(
                "a restart in place runs the version configured ({}), not {target}",
                self.cfg.etcd_version
            )));
        }
        let mut local = self
            .etcd(std::slice::from_ref(&self.cfg.client_url))
            .await?;
        let status = local.status().await.map_err(SidecarError::etcd("status"))?;
        let list = local
            .member_list()
            .await
            .map_err(SidecarError::etcd("member list"))?;
        let learner = list
            .members()
            .iter()
            .any(|m| m.id() == member_id && m.is_learner());
        let other_voters: Vec<&etcd_client::Member> = list
            .members()
            .iter()
            .filter(|m| m.id() != member_id && !m.is_learner())
            .collect();
        // Defence in depth beside the planner: while this member is down, the voters that
        // stay up must answer and be a quorum of all of them. A cluster of one or two voters
        // cannot keep quorum through any restart of one: there every other voter must
        // answer, so that quorum comes back with this member.
        let mut up_to_date = Vec::new();
        let mut answering = 0;
        for m in &other_voters {
            if let Some(version) = member_version(self.cfg.etcd_tls.as_ref(), m.client_urls()).await
            {
                answering += 1;
                // Prefer a member already on the target version: leadership then moves
                // once per handoff, never back to a member that still has to upgrade.
                up_to_date.push((version == target.to_string(), m.id()));
            }
        }
        if !keeps_quorum_while_down(learner, other_voters.len(), answering) {
            return Err(SidecarError::Refused(format!(
                "only {answering} of the {} other voters answer: stopping this member would lose quorum",
                other_voters.len()
            )));
        }
        let mut moved_leadership = false;
        if status.leader() == member_id {
            up_to_date.sort_by_key(|(on_target, _)| !on_target);
            if let Some((_, target_id)) = up_to_date.first() {
                self.move_leadership(&mut local, member_id, *target_id)
                    .await?;
                moved_leadership = true;
                etcd_operator::failpoint!("sidecar.handoff.after-leadership-moved");
            } else if !other_voters.is_empty() {
                return Err(SidecarError::Refused(
                    "no healthy voter to take leadership".into(),
                ));
            }
        }
        let raft_index = local
            .status()
            .await
            .map(|s| s.raft_index())
            .unwrap_or(status.raft_index());
        if needs_snapshot_for(self.cfg.etcd_version, target)
            && let Err(e) = self.snapshot_before_upgrade(raft_index).await
        {
            warn!(error = %e, "the snapshot before the upgrade failed; etcd runs on with its normal arguments");
            self.run_etcd(&Bootstrap::FromData).await?;
            return Err(e);
        }
        info!(target = %target, raft_index, "handing off: stopping etcd for the restart on the new version");
        // HandedOff before etcd stops, and the restart on this version armed before it:
        // a member whose etcd is down for a handoff always says so, and always comes back.
        // The restart is this handoff's: a later handoff (after this one's restart in place,
        // or after the runtime's restart of the sidecar's etcd) disarms it.
        let handoff = self.handoffs.fetch_add(1, Ordering::SeqCst) + 1;
        self.set_phase(MemberPhase::HandedOff);
        let me = Arc::clone(&self);
        tokio::spawn(async move {
            sleep(restart_timeout).await;
            let _op = me.op.lock().await;
            if me.current().phase == MemberPhase::HandedOff
                && me.handoffs.load(Ordering::SeqCst) == handoff
            {
                warn!("no restart came after the handoff; starting etcd again on this version");
                match me.run_etcd(&Bootstrap::FromData).await {
                    Ok(_) => me.set_phase(MemberPhase::Running),
                    Err(e) => me.record_error(&e),
                }
            }
        });
        self.supervisor.stop().await;
        etcd_operator::failpoint!("sidecar.handoff.after-etcd-stopped");
        if restart_in_place {
            // No runtime restart comes (the Pod's image stays): etcd starts again on its
            // data now, reading its trusted CA files afresh. A sidecar killed before this
            // starts etcd on its data when its container comes back.
            etcd_operator::failpoint!("sidecar.handoff.in-place-after-stop");
            info!("restarting etcd in place on its data");
            self.run_etcd(&Bootstrap::FromData).await?;
            self.set_phase(MemberPhase::Running);
        }
        Ok(HandoffOutcome {
            moved_leadership,
            raft_index,
        })
    }
}

/// Whether a member (`learner` or a voter beside `other_voters`, of which `answering`
/// answer) may stop for a handoff: a learner always; a voter when the voters that stay up
/// are a quorum of all of them, or, in a cluster of one or two voters (which no restart of
/// one keeps at quorum), when every other voter answers.
fn keeps_quorum_while_down(learner: bool, other_voters: usize, answering: usize) -> bool {
    let voters = other_voters + 1;
    learner || answering >= etcd_operator::quorum(voters).min(other_voters)
}

/// etcd 3.6 refuses to start on 3.5 data whose WAL holds v2 entries after the last snapshot
/// (`detected disallowed v2 WAL for stage --v2-deprecation=write-only`); a small cluster
/// with the default snapshot count may never have taken one.
fn needs_snapshot_for(from: EtcdVersion, to: EtcdVersion) -> bool {
    (from.major, from.minor) == (3, 5) && (to.major, to.minor) >= (3, 6)
}

/// The highest raft index covered by a snapshot file in `snap_dir` (`<term>-<index>.snap`).
pub fn latest_snapshot_index(snap_dir: &std::path::Path) -> Option<u64> {
    std::fs::read_dir(snap_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".snap")?;
            let (_, index) = stem.split_once('-')?;
            u64::from_str_radix(index, 16).ok()
        })
        .max()
}

impl Member {
    /// Makes 3.5 data readable by 3.6: restart etcd with a snapshot count of 1, so the
    /// next applied entry (its own attribute publish, or any write) takes a snapshot that
    /// covers the WAL, and wait for that snapshot.
    async fn snapshot_before_upgrade(&self, raft_index: u64) -> Result<(), SidecarError> {
        let snap_dir = self.cfg.etcd_data_dir().join("member").join("snap");
        if latest_snapshot_index(&snap_dir).is_some_and(|i| i >= raft_index) {
            return Ok(());
        }
        info!(
            raft_index,
            "taking a snapshot that covers the WAL before the upgrade"
        );
        let normal = self.etcd_args(&Bootstrap::FromData);
        let mut args = normal.clone();
        args.push("--snapshot-count=1".into());
        // For this run only: should etcd exit meanwhile, it comes back without the flag.
        self.supervisor.start_once(args, normal).await?;
        let deadline = Instant::now() + self.cfg.upgrade_snapshot_deadline;
        loop {
            if latest_snapshot_index(&snap_dir).is_some_and(|i| i >= raft_index) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(SidecarError::Timeout(
                    "the snapshot before the upgrade".into(),
                ));
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voter_stops_only_while_the_voters_that_stay_up_keep_quorum() {
        for (learner, others, answering, may, why) in [
            (false, 0, 0, true, "the only voter: down for its restart"),
            (false, 1, 1, true, "two voters, the other answers"),
            (false, 1, 0, false, "two voters, the other does not answer"),
            (false, 2, 2, true, "three voters, both others answer"),
            (false, 2, 1, false, "three voters, one other down"),
            (false, 4, 3, true, "five voters, three others answer"),
            (false, 4, 2, false, "five voters, two others down"),
            (true, 2, 0, true, "a learner counts toward no quorum"),
        ] {
            assert_eq!(
                keeps_quorum_while_down(learner, others, answering),
                may,
                "{why}"
            );
        }
    }

    #[test]
    fn only_35_to_36_and_later_needs_the_snapshot() {
        let v = |s: &str| s.parse::<EtcdVersion>().unwrap();
        assert!(needs_snapshot_for(v("3.5.34"), v("3.6.15")));
        assert!(!needs_snapshot_for(v("3.5.33"), v("3.5.34")));
        assert!(!needs_snapshot_for(v("3.6.15"), v("3.7.2")));
        assert!(!needs_snapshot_for(v("3.4.45"), v("3.5.34")));
    }

    #[test]
    fn snapshot_index_is_read_from_file_names() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(latest_snapshot_index(dir.path()), None);
        for name in [
            "0000000000000002-0000000000000010.snap",
            "0000000000000003-00000000000000ff.snap",
            "db",
            "x.snap.broken",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(latest_snapshot_index(dir.path()), Some(0xff));
    }
}
