//! Lifecycle 5: leave the cluster for good under a Remove grant: refused when the voters
//! that stay could not keep quorum; leadership moves away first; then the member is
//! removed, etcd stops and the data is wiped.
//!
//! The member directory is marked leaving before the removal and removed after the wipe:
//! a sidecar started again in between finishes the leave (`start.rs`) once its cluster's
//! own member list proves the removal, and never rejoins.

use std::time::Duration;

use etcd_operator::proto::{ChangeKind, MemberPhase};
use tracing::{info, instrument};

use super::{Member, member_answers, remove_member};
use crate::error::SidecarError;

/// How long the sidecar waits for a grant before giving up on a leave or handoff.
const GRANT_WAIT: Duration = Duration::from_secs(120);

/// The outcome of a leave.
#[derive(Debug, Clone, Copy)]
pub struct LeaveOutcome {
    /// The id removed.
    pub removed_member_id: u64,
    /// Leadership moved away first.
    pub moved_leadership: bool,
}

impl Member {
    /// Lifecycle 5: leave the cluster for good.
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name))]
    pub async fn leave(&self) -> Result<LeaveOutcome, SidecarError> {
        let _op = self.op.lock().await;
        let member_id = self.current().member_id;
        if member_id == 0 || self.current().phase != MemberPhase::Running {
            return Err(SidecarError::Refused(format!(
                "member is {:?}, not running: nothing to leave",
                self.current().phase
            )));
        }
        let grant = self
            .acquire_grant(ChangeKind::Remove, Some(GRANT_WAIT))
            .await?;
        self.set_phase(MemberPhase::Leaving);
        let result = self.leave_under_grant(member_id).await;
        self.release_grant(&grant, result.as_ref().map(|o| o.removed_member_id))
            .await;
        match &result {
            Ok(_) => self.set_phase(MemberPhase::Removed),
            Err(e) => {
                self.record_error(e);
                self.set_phase(MemberPhase::Running);
            }
        }
        result
    }

    async fn leave_under_grant(&self, member_id: u64) -> Result<LeaveOutcome, SidecarError> {
        let mut local = self
            .etcd(std::slice::from_ref(&self.cfg.client_url))
            .await?;
        let list = local
            .member_list()
            .await
            .map_err(SidecarError::etcd("member list"))?;
        let me = list.members().iter().find(|m| m.id() == member_id);
        let learner = me.is_some_and(|m| m.is_learner());
        let other_voters: Vec<&etcd_client::Member> = list
            .members()
            .iter()
            .filter(|m| m.id() != member_id && !m.is_learner())
            .collect();
        if !learner && other_voters.is_empty() {
            return Err(SidecarError::Refused(
                "the last voting member cannot leave its cluster".into(),
            ));
        }
        // Defence in depth beside the coordinator's planner: the voters that stay must be
        // enough, and healthy enough, to keep quorum without this member.
        let mut healthy_others = Vec::new();
        for m in &other_voters {
            if member_answers(self.cfg.etcd_tls.as_ref(), m.client_urls()).await {
                healthy_others.push(*m);
            }
        }
        let remaining = other_voters.len();
        if !learner && healthy_others.len() < etcd_operator::quorum(remaining) {
            return Err(SidecarError::Refused(format!(
                "only {} of the {remaining} remaining voters answer: leaving would lose quorum",
                healthy_others.len()
            )));
        }
        let mut moved_leadership = false;
        let status = local.status().await.map_err(SidecarError::etcd("status"))?;
        if status.leader() == member_id {
            let target = healthy_others[0];
            self.move_leadership(&mut local, member_id, target.id())
                .await?;
            moved_leadership = true;
            etcd_operator::failpoint!("sidecar.leave.after-leadership-moved");
        }
        let other_urls: Vec<String> = healthy_others
            .iter()
            .flat_map(|m| m.client_urls().iter().cloned())
            .collect();
        let others = self.etcd(&other_urls).await?;
        self.grant_in_force()?;
        self.dir.mark_leaving()?;
        remove_member(self, &others, member_id).await?;
        etcd_operator::failpoint!("sidecar.leave.after-member-remove");
        info!(member_id = %format!("{member_id:x}"), "removed from the cluster; stopping etcd and wiping data");
        self.supervisor.stop().await;
        self.finish_leaving()?;
        Ok(LeaveOutcome {
            removed_member_id: member_id,
            moved_leadership,
        })
    }

    /// The end of a leave whose removal went through: wipe, then mark the member removed
    /// (a restarted sidecar stays idle), then forget the leave.
    pub(super) fn finish_leaving(&self) -> Result<(), SidecarError> {
        self.wipe_member_dir()?;
        etcd_operator::failpoint!("sidecar.leave.after-wipe");
        self.dir.mark_removed()?;
        self.dir.clear_leaving()?;
        Ok(())
    }
}
