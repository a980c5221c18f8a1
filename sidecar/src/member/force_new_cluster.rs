//! The survivor of a quorum lost for good: etcd restarted once with
//! `--force-new-cluster`, then normally, as a one-member cluster the coordinator grows back.

use std::time::Duration;

use etcd_operator::proto::MemberPhase;
use tokio::time::{Instant, sleep};
use tracing::{info, instrument, warn};

use super::{ETCD_READY_DEADLINE, Member};
use crate::{error::SidecarError, etcd_args::Bootstrap};

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

impl Member {
    /// The survivor of a quorum lost for good: restart etcd once with
    /// `--force-new-cluster` on this member's data (a one-member cluster, every other member
    /// removed), wait until it leads itself, then restart it normally so that no later
    /// restart forces again. Refused when this member's raft index is below `min_raft_index`
    /// (it is not the survivor the coordinator chose it as).
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name))]
    pub async fn force_new_cluster(
        &self,
        min_raft_index: u64,
    ) -> Result<ForcedOutcome, SidecarError> {
        let _op = self.op.lock().await;
        let member_id = self.current().member_id;
        if member_id == 0 || !self.dir.has_etcd_data() {
            return Err(SidecarError::Refused(
                "this member has no data to force a new cluster from".into(),
            ));
        }
        let local = [self.cfg.client_url.clone()];
        let raft_index = {
            let mut client = self.etcd(&local).await?;
            client
                .status()
                .await
                .map_err(SidecarError::etcd("status"))?
                .raft_index()
        };
        if raft_index < min_raft_index {
            return Err(SidecarError::Refused(format!(
                "this member's raft index {raft_index} is below {min_raft_index}: it is not the most up-to-date survivor"
            )));
        }
        warn!(raft_index, "forcing a new cluster from this member's data");
        self.supervisor.stop().await;
        self.run_etcd(&Bootstrap::ForceNewCluster).await?;
        self.wait_local_ready().await?;
        let deadline = Instant::now() + ETCD_READY_DEADLINE;
        let revision = loop {
            if let Ok(mut client) = self.etcd(&local).await
                && let Ok(status) = client.status().await
                && status.leader() == member_id
            {
                break status.header().map_or(0, |h| h.revision());
            }
            if Instant::now() > deadline {
                return Err(SidecarError::Timeout(
                    "etcd did not lead itself after --force-new-cluster".into(),
                ));
            }
            sleep(Duration::from_millis(200)).await;
        };
        // Normally again: the flag must never apply to a later restart (it would drop every
        // member added since).
        self.run_etcd(&Bootstrap::FromData).await?;
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
}
