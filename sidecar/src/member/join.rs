//! Lifecycle 3: join an existing cluster under an Add (or Replace) grant: remove this
//! member's stale entries of an earlier life, add it as a learner exactly once, start etcd
//! with the cluster's members, and promote it once it has caught up.

use std::time::Duration;

use etcd_client::{Client, MemberAddOptions};
use etcd_operator::{
    etcd_error::EtcdError,
    proto::{ChangeKind, MemberPhase},
};
use tokio::time::{Instant, sleep};
use tracing::info;

use super::{Member, remove_member};
use crate::{
    error::{SidecarError, is_transient},
    etcd_args::Bootstrap,
};

/// How long a joiner waits for its learner to catch up and be promoted.
const PROMOTE_DEADLINE: Duration = Duration::from_secs(90);

/// How soon a refused MemberAdd is asked again.
const ADD_RETRY: Duration = Duration::from_millis(100);

/// How soon a refused MemberPromote is asked again: a learner that started a moment ago
/// catches up within milliseconds, and the refusal costs the leader one request.
const PROMOTE_RETRY: Duration = Duration::from_millis(25);

impl Member {
    /// Lifecycle 3: join an existing cluster as a learner, then promote.
    pub(super) async fn join(&self, endpoints: &[String]) -> Result<(), SidecarError> {
        let others = self.other_endpoints(endpoints);
        let mut client = self.etcd(&others).await?;
        let list = client
            .member_list()
            .await
            .map_err(SidecarError::etcd("member list"))?;
        let stale = list.members().iter().any(|m| self.is_stale_entry(m));
        let kind = if stale {
            ChangeKind::Replace
        } else {
            ChangeKind::Add
        };
        let grant = self.acquire_grant(kind, None).await?;
        self.set_phase(MemberPhase::Joining);
        let result = self.join_under_grant(&mut client).await;
        if result.is_ok() {
            etcd_operator::failpoint!("sidecar.join.after-promote");
        }
        self.release_grant(&grant, result.as_ref().copied()).await;
        let member_id = result?;
        info!(member_id = %format!("{member_id:x}"), "joined and promoted");
        self.set_phase(MemberPhase::Running);
        Ok(())
    }

    /// An entry of ours from an earlier life: our name, or our peer URL on a member that
    /// started (we have no data, so that member's data is gone).
    fn is_stale_entry(&self, m: &etcd_client::Member) -> bool {
        m.name() == self.cfg.name
            || (!m.name().is_empty() && m.peer_urls().contains(&self.cfg.peer_url))
    }

    async fn join_under_grant(&self, client: &mut Client) -> Result<u64, SidecarError> {
        let list = client
            .member_list()
            .await
            .map_err(SidecarError::etcd("member list"))?;
        let mut removed = Vec::new();
        for m in list.members() {
            if self.is_stale_entry(m) {
                info!(stale_id = %format!("{:x}", m.id()), "removing this member's stale entry");
                self.grant_in_force()?;
                remove_member(self, client, m.id()).await?;
                removed.push(m.id());
            }
        }
        // The list that comes with the add (or the one that showed the add done) holds this
        // member: a list read afterwards from another member may predate the add.
        let (member_id, list, cluster_id) = self.add_learner_once(client, &removed).await?;
        etcd_operator::failpoint!("sidecar.join.after-member-add");
        let mut members = Vec::new();
        for m in &list {
            let peer = m.peer_urls().first().cloned().unwrap_or_default();
            let name = if m.id() == member_id {
                self.cfg.name.clone()
            } else if m.name().is_empty() {
                format!("unstarted-{:x}", m.id())
            } else {
                m.name().to_string()
            };
            members.push((name, peer));
        }
        let client_urls: Vec<String> = list
            .iter()
            .flat_map(|m| m.client_urls().iter().cloned())
            .chain(std::iter::once(self.cfg.client_url.clone()))
            .collect();
        self.wipe_member_dir()?;
        self.run_etcd(&Bootstrap::Existing { members }).await?;
        self.learn_ids(member_id, cluster_id);
        self.learn_cluster_urls(client_urls);
        self.wait_local_ready_unless_failing(Some(super::JOIN_START_FAILING))
            .await?;
        // etcd has written its data by now: the identity is saved with it.
        self.learn_ids(member_id, cluster_id);
        etcd_operator::failpoint!("sidecar.join.after-learner-started");
        self.promote(client, member_id).await?;
        Ok(member_id)
    }

    /// Adds this member as a learner exactly once: a MemberAdd whose answer was lost may
    /// have succeeded, so the member list is read before every attempt. `removed` are the
    /// ids of this member's stale entries just removed: a member list that still shows one
    /// (read from a member that has not applied the removal yet) is read again, never
    /// taken for this member's new entry.
    async fn add_learner_once(
        &self,
        client: &mut Client,
        removed: &[u64],
    ) -> Result<(u64, Vec<etcd_client::Member>, u64), SidecarError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(list) = client.member_list().await {
                let ours = list
                    .members()
                    .iter()
                    .find(|m| m.peer_urls().contains(&self.cfg.peer_url));
                if let Some(m) = ours
                    && removed.contains(&m.id())
                {
                    info!(stale_id = %format!("{:x}", m.id()), "the stale entry's removal has not reached this member yet; reading again");
                } else if let Some(m) = ours {
                    info!(member_id = %format!("{:x}", m.id()), "found this member already added; not adding again");
                    let cluster_id = list.header().map(|h| h.cluster_id()).unwrap_or(0);
                    return Ok((m.id(), list.members().to_vec(), cluster_id));
                } else {
                    self.grant_in_force()?;
                    match client
                        .member_add(
                            [self.cfg.peer_url.as_str()],
                            Some(MemberAddOptions::new().with_is_learner()),
                        )
                        .await
                    {
                        Ok(resp) => {
                            if let Some(m) = resp.member() {
                                info!(member_id = %format!("{:x}", m.id()), "added as learner");
                                let cluster_id = resp.header().map(|h| h.cluster_id()).unwrap_or(0);
                                return Ok((m.id(), resp.member_list().to_vec(), cluster_id));
                            }
                        }
                        // Right after the stale entry's removal etcd may answer as if it were
                        // still there for a moment: retried here, under the same grant, so that
                        // one rejoin stays one membership change.
                        Err(e)
                            if is_transient(&e)
                                || (!removed.is_empty() && is_stale_removal_settling(&e)) =>
                        {
                            info!(error = %e, "member add not possible yet; retrying");
                        }
                        Err(e) => return Err(SidecarError::etcd("member add")(e)),
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(SidecarError::Timeout(
                    "adding this member as a learner".into(),
                ));
            }
            // etcd refuses the add until every voter has been connected for 5 s after the
            // last change (its strict reconfiguration check): asking again often (a refusal
            // costs one request) adds the learner as soon as etcd allows it.
            sleep(ADD_RETRY).await;
        }
    }

    /// Promotes the learner once it has caught up with the leader.
    async fn promote(&self, client: &mut Client, member_id: u64) -> Result<(), SidecarError> {
        let deadline = Instant::now() + PROMOTE_DEADLINE;
        loop {
            self.grant_in_force()?;
            match client.member_promote(member_id).await {
                Ok(_) => return Ok(()),
                Err(e) if is_not_learner(&e) => return Ok(()),
                Err(e) if is_transient(&e) || is_not_in_sync(&e) => {
                    if Instant::now() > deadline {
                        return Err(SidecarError::etcd("member promote")(e));
                    }
                }
                Err(e) => return Err(SidecarError::etcd("member promote")(e)),
            }
            sleep(PROMOTE_RETRY).await;
        }
    }

    /// A member that came back on its data as a learner (the sidecar died between the add
    /// and the promotion) finishes its join under a grant, when the coordinator's planner
    /// asks (`FinishJoin`). True when this call promoted it.
    pub async fn finish_join_if_learner(&self) -> Result<bool, SidecarError> {
        let Ok(_op) = self.op.try_lock() else {
            return Ok(false);
        };
        let member_id = self.current().member_id;
        if member_id == 0 || self.current().phase != MemberPhase::Running {
            return Ok(false);
        }
        let others = self.other_endpoints(&[]);
        if others.is_empty() {
            return Ok(false);
        }
        // The cluster, not the local etcd (which may lag behind its own promotion), says
        // whether this member is still a learner; no grant is asked for otherwise.
        let mut client = self.etcd(&others).await?;
        let list = client
            .member_list()
            .await
            .map_err(SidecarError::etcd("member list"))?;
        if !list
            .members()
            .iter()
            .any(|m| m.id() == member_id && m.is_learner())
        {
            return Ok(false);
        }
        let grant = self
            .acquire_grant(ChangeKind::Add, Some(Duration::from_secs(30)))
            .await?;
        self.set_phase(MemberPhase::Joining);
        let result = self
            .promote(&mut client, member_id)
            .await
            .map(|()| member_id);
        self.release_grant(&grant, result.as_ref().copied()).await;
        self.set_phase(MemberPhase::Running);
        result.map(|_| true)
    }
}

/// What etcd may answer a MemberAdd served by a member that has not applied the removal
/// of this member's stale entry yet.
fn is_stale_removal_settling(e: &etcd_client::Error) -> bool {
    matches!(
        crate::error::etcd_error(e),
        Some(EtcdError::MemberNotFound | EtcdError::PeerUrlExists)
    )
}

fn is_not_learner(e: &etcd_client::Error) -> bool {
    crate::error::etcd_error(e) == Some(EtcdError::NotALearner)
}

fn is_not_in_sync(e: &etcd_client::Error) -> bool {
    crate::error::etcd_error(e).is_some_and(EtcdError::is_learner_not_ready)
}
