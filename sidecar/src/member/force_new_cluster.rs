//! The survivor of a quorum lost for good: etcd started once with `--force-new-cluster`,
//! then normally, as a one-member cluster the coordinator grows back.
//!
//! The flag applies to exactly one start of etcd, whatever happens after it:
//! - the forced start is a one-shot start of the supervisor: if etcd exits, it is started
//!   again with its normal arguments, never with the flag;
//! - the record of the force (`ForcedRecord`, with etcd's raft index before it) is written
//!   to the member directory before the forced start, so that a request to force again
//!   from the same data is answered from it once the force took effect, and never forces
//!   a second time a cluster that has grown back since;
//! - the whole sequence runs in a task of its own, which the call only awaits: a call
//!   cancelled (the coordinator's timeout, a leadership change) does not stop it halfway,
//!   and it always ends with etcd started normally;
//! - a start of the sidecar on its data never forces (`start.rs` starts on data as is).

use std::{sync::Arc, time::Duration};

use etcd_operator::proto::MemberPhase;
use tokio::time::{Instant, sleep};
use tracing::{info, instrument, warn};

use super::{ETCD_READY_DEADLINE, Member};
use crate::{error::SidecarError, etcd_args::Bootstrap, identity::ForcedRecord};

/// How long an etcd restarted after a recorded force is given to answer before it is taken
/// to be without quorum (a forced one-member cluster serves well within it).
const FORCED_BEFORE_GRACE: Duration = Duration::from_secs(15);

/// What a forced new cluster resumed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForcedOutcome {
    /// The member id (unchanged).
    pub member_id: u64,
    /// The revision the cluster resumes at.
    pub revision: i64,
    /// The raft index etcd had before it was forced.
    pub raft_index: u64,
}

/// What the local etcd says before a force.
struct LocalView {
    raft_index: u64,
    leader: u64,
    revision: i64,
    /// The ids of etcd's member list as this member has it (None when it could not be
    /// read).
    members: Option<Vec<u64>>,
}

impl Member {
    /// The survivor of a quorum lost for good: restart etcd once with
    /// `--force-new-cluster` on this member's data (a one-member cluster, every other member
    /// removed), wait until it leads itself, then restart it normally. Refused when this
    /// member's raft index is below `min_raft_index` (it is not the survivor the coordinator
    /// chose it as) or when its cluster has a leader (its quorum is not lost). A request
    /// after a force that took effect from this member's data is answered with that
    /// force's outcome, without forcing again. See the module doc for why the force runs
    /// in a task of its own.
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name))]
    pub async fn force_new_cluster(
        self: &Arc<Self>,
        min_raft_index: u64,
        grant_id: &str,
    ) -> Result<ForcedOutcome, SidecarError> {
        let me = Arc::clone(self);
        let grant_id = grant_id.to_string();
        tokio::spawn(async move {
            // The coordinator's grant for this step lasts as long as the step does here.
            let _held = me.hold_delegated(&grant_id);
            me.force_new_cluster_to_the_end(min_raft_index).await
        })
        .await
        .map_err(|e| SidecarError::Refused(format!("the forced new cluster did not end: {e}")))?
    }

    async fn force_new_cluster_to_the_end(
        &self,
        min_raft_index: u64,
    ) -> Result<ForcedOutcome, SidecarError> {
        let _op = self.op.lock().await;
        let member_id = self.current().member_id;
        if member_id == 0 || !self.dir.has_etcd_data()? {
            return Err(SidecarError::Refused(
                "this member has no data to force a new cluster from".into(),
            ));
        }
        let view = match self.local_view_given_time(min_raft_index).await {
            Ok(view) => view,
            Err(e) => {
                // etcd started again without quorum does not serve (it cannot publish
                // itself): nothing can have been committed since this member was chosen,
                // recorded below before its forced start. That choice is carried through;
                // without it, nothing is forced blind.
                let chosen = self
                    .dir
                    .load_forced()?
                    .filter(|r| r.member_id == member_id && r.raft_index >= min_raft_index);
                let Some(record) = chosen else {
                    return Err(e);
                };
                // A forced run that led itself (its revision recorded) took effect: its data
                // is a one-member cluster, never forced again, however long etcd takes to
                // answer; the coordinator asks again.
                if record.revision != 0 {
                    return Err(SidecarError::Timeout(format!(
                        "the force recorded took effect (resumed at revision {}), and etcd does not answer yet: {e}",
                        record.revision
                    )));
                }
                warn!(error = %e, raft_index = record.raft_index, "etcd does not serve without quorum: forcing as chosen before");
                LocalView {
                    raft_index: record.raft_index,
                    leader: 0,
                    revision: record.revision,
                    members: None,
                }
            }
        };
        if let Some(record) = self.dir.load_forced()?
            && record.member_id == member_id
            && view.raft_index > record.raft_index
            && view.leader == member_id
            && view.members.as_deref() == Some(&[member_id][..])
        {
            info!(
                raft_index = record.raft_index,
                "a new cluster was forced from this member's data already; not forcing again"
            );
            self.set_phase(MemberPhase::Running);
            return Ok(ForcedOutcome {
                member_id,
                revision: if record.revision != 0 {
                    record.revision
                } else {
                    view.revision
                },
                raft_index: record.raft_index,
            });
        }
        if view.leader != 0 {
            return Err(SidecarError::Refused(format!(
                "this member's cluster has a leader ({:x}): its quorum is not lost, and nothing is forced",
                view.leader
            )));
        }
        let raft_index = view.raft_index;
        if raft_index < min_raft_index {
            return Err(SidecarError::Refused(format!(
                "this member's raft index {raft_index} is below {min_raft_index}: it is not the most up-to-date survivor"
            )));
        }
        let mut record = ForcedRecord {
            member_id,
            raft_index,
            revision: 0,
        };
        self.dir.save_forced(&record)?;
        etcd_operator::failpoint!("sidecar.force-new-cluster.after-marker");
        warn!(raft_index, "forcing a new cluster from this member's data");
        self.supervisor.stop().await;
        // The flag for this one run; any restart of etcd after it runs without.
        let normal = self.etcd_args(&Bootstrap::FromData);
        self.supervisor
            .start_once(self.etcd_args(&Bootstrap::ForceNewCluster), normal)
            .await?;
        etcd_operator::failpoint!("sidecar.force-new-cluster.after-forced-start");
        let led = self.wait_leading_itself(member_id).await;
        if let Ok(revision) = led {
            record.revision = revision;
            if let Err(e) = self.dir.save_forced(&record) {
                warn!(error = %e, "could not record the revision the forced cluster resumed at");
            }
        }
        etcd_operator::failpoint!("sidecar.force-new-cluster.before-normal-restart");
        // Normally again, whether the forced run led itself or not: the process running
        // now still carries the flag on its command line.
        self.run_etcd(&Bootstrap::FromData).await?;
        let revision = led?;
        self.wait_local_ready().await?;
        self.learn_cluster_urls(vec![self.cfg.client_url.clone()]);
        self.set_phase(MemberPhase::Running);
        info!(
            revision,
            "running as a one-member cluster; the coordinator grows it back"
        );
        Ok(ForcedOutcome {
            member_id,
            revision,
            raft_index,
        })
    }

    /// [`Self::local_view`], given time to answer when a force from this member was
    /// recorded before: etcd restarted on data a force took effect on is a one-member
    /// cluster that serves once it has replayed its log and elected itself, which a loaded
    /// host can take seconds to do. Forcing again because it was slow would be a second
    /// forced start; only an etcd that still does not answer after
    /// [`FORCED_BEFORE_GRACE`] (no quorum: it never serves) is forced as chosen before.
    async fn local_view_given_time(&self, min_raft_index: u64) -> Result<LocalView, SidecarError> {
        let forced_before = self.dir.load_forced()?.is_some_and(|r| {
            r.member_id == self.current().member_id && r.raft_index >= min_raft_index
        });
        let deadline = Instant::now() + FORCED_BEFORE_GRACE;
        loop {
            match self.local_view().await {
                Ok(view) => return Ok(view),
                Err(e) if !forced_before || Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    info!(error = %e, "a force was recorded before: waiting for etcd to answer before choosing");
                    sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// The local etcd's raft index, leader, revision and member list.
    async fn local_view(&self) -> Result<LocalView, SidecarError> {
        let mut client = self
            .etcd(std::slice::from_ref(&self.cfg.client_url))
            .await?;
        let status = client
            .status()
            .await
            .map_err(SidecarError::etcd("status"))?;
        // Served from this member's own view of the membership (no quorum needed).
        let members = tokio::time::timeout(Duration::from_secs(3), client.member_list())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|list| list.members().iter().map(|m| m.id()).collect());
        Ok(LocalView {
            raft_index: status.raft_index(),
            leader: status.leader(),
            revision: status.header().map_or(0, |h| h.revision()),
            members,
        })
    }

    /// Waits until the local etcd answers and leads itself; returns its revision.
    async fn wait_leading_itself(&self, member_id: u64) -> Result<i64, SidecarError> {
        self.wait_local_ready().await?;
        let local = [self.cfg.client_url.clone()];
        let deadline = Instant::now() + ETCD_READY_DEADLINE;
        loop {
            if let Ok(mut client) = self.etcd(&local).await
                && let Ok(status) = client.status().await
                && status.leader() == member_id
            {
                return Ok(status.header().map_or(0, |h| h.revision()));
            }
            if Instant::now() > deadline {
                return Err(SidecarError::Timeout(
                    "etcd did not lead itself after --force-new-cluster".into(),
                ));
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
}
