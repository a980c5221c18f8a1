//! The `etcdop.v1.Sidecar` gRPC service: the coordinator's handle on this member.
//!
//! Leave and Handoff remove or stop the member: they answer only the coordinator, over
//! mutual TLS (its certificate names it). GetMemberHealth is readable by anyone who reaches a
//! port serving it (the plaintext health port, when there is one, serves only that).

use std::{sync::Arc, time::Duration};

use etcd_operator::proto::{
    Backup, BackupRequest, FinishJoinRequest, FinishJoinResponse, ForceNewClusterRequest,
    ForceNewClusterResponse, GetMemberHealthRequest, HandoffRequest, HandoffResponse, HealthReport,
    LeaveRequest, LeaveResponse, MaintainRequest, MaintainResponse, MaintenanceOp,
    sidecar_server::Sidecar,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use etcd_operator::{identity::PeerIdentity, tls};

use crate::{
    error::SidecarError,
    member::{DEFAULT_HANDOFF_RESTART_TIMEOUT, Member},
};

/// What a listener lets its callers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A plaintext listener: read-only methods; the others answer UNAUTHENTICATED.
    ReadOnly,
    /// A mutual-TLS listener: every method, each checked against the caller's identity.
    Authenticated,
}

/// The service, over the member agent and its latest report.
pub struct SidecarService {
    member: Arc<Member>,
    reports: watch::Receiver<HealthReport>,
    access: Access,
}

impl SidecarService {
    /// A service for `member`, as `access` allows.
    pub fn new(
        member: Arc<Member>,
        reports: watch::Receiver<HealthReport>,
        access: Access,
    ) -> Self {
        Self {
            member,
            reports,
            access,
        }
    }

    /// Lets only the coordinator through, and only over mutual TLS.
    fn only_the_coordinator<T>(&self, request: &Request<T>, method: &str) -> Result<(), Status> {
        let refused = match self.access {
            Access::ReadOnly => Status::unauthenticated(format!(
                "{method} changes the member: it is served only on the sidecar's mutual-TLS port, to the coordinator"
            )),
            Access::Authenticated => match tls::caller(request)? {
                PeerIdentity::Coordinator => return Ok(()),
                other => Status::permission_denied(format!(
                    "{other} may not call {method}: only the coordinator may"
                )),
            },
        };
        warn!(method, reason = %refused.message(), "refused a call");
        Err(refused)
    }
}

fn to_status(e: SidecarError) -> Status {
    match e {
        SidecarError::Refused(m) => Status::failed_precondition(m),
        SidecarError::Timeout(m) => Status::deadline_exceeded(m),
        other => Status::unavailable(other.to_string()),
    }
}

#[tonic::async_trait]
impl Sidecar for SidecarService {
    async fn get_member_health(
        &self,
        _request: Request<GetMemberHealthRequest>,
    ) -> Result<Response<HealthReport>, Status> {
        Ok(Response::new(self.reports.borrow().clone()))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        self.only_the_coordinator(&request, "Leave")?;
        self.member
            .admit_epoch(request.get_ref().coordinator_epoch, "Leave")
            .map_err(to_status)?;
        info!(reason = %request.get_ref().reason, "asked to leave the cluster");
        // In a task of its own: a call cancelled halfway (the coordinator stopped, lost its
        // term) does not stop the leave between its steps, with its grant held.
        let member = Arc::clone(&self.member);
        let outcome = tokio::spawn(async move { member.leave().await })
            .await
            .map_err(|e| Status::internal(format!("the leave ended: {e}")))?
            .map_err(to_status)?;
        Ok(Response::new(LeaveResponse {
            removed_member_id: outcome.removed_member_id,
            moved_leadership: outcome.moved_leadership,
        }))
    }

    async fn handoff(
        &self,
        request: Request<HandoffRequest>,
    ) -> Result<Response<HandoffResponse>, Status> {
        self.only_the_coordinator(&request, "Handoff")?;
        let request = request.into_inner();
        self.member
            .admit_epoch(request.coordinator_epoch, "Handoff")
            .map_err(to_status)?;
        let timeout = match request.restart_timeout_ms {
            0 => DEFAULT_HANDOFF_RESTART_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let outcome = self
            .member
            .handoff(
                &request.target_version,
                timeout,
                request.restart_in_place,
                &request.grant_id,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(HandoffResponse {
            moved_leadership: outcome.moved_leadership,
            raft_index: outcome.raft_index,
        }))
    }

    async fn take_backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<Backup>, Status> {
        self.only_the_coordinator(&request, "TakeBackup")?;
        let request = request.into_inner();
        self.member
            .admit_epoch(request.coordinator_epoch, "TakeBackup")
            .map_err(to_status)?;
        let storage = request
            .storage
            .ok_or_else(|| Status::invalid_argument("storage is required"))?;
        match self
            .member
            .backup(&storage, &request.cluster_uid, request.requested_at_unix_ms)
            .await
        {
            Ok(meta) => Ok(Response::new(crate::backup::to_proto(&meta))),
            Err(e) => {
                warn!(error = %e, category = e.category(), "backup failed");
                Err(match e {
                    crate::backup::BackupError::Storage { .. }
                    | crate::backup::BackupError::Config(_) => Status::unavailable(e.to_string()),
                    _ => Status::internal(e.to_string()),
                })
            }
        }
    }

    async fn finish_join(
        &self,
        request: Request<FinishJoinRequest>,
    ) -> Result<Response<FinishJoinResponse>, Status> {
        self.only_the_coordinator(&request, "FinishJoin")?;
        self.member
            .admit_epoch(request.get_ref().coordinator_epoch, "FinishJoin")
            .map_err(to_status)?;
        // In a task of its own, as a leave: a cancelled call does not stop it halfway.
        let member = Arc::clone(&self.member);
        let promoted = tokio::spawn(async move { member.finish_join_if_learner().await })
            .await
            .map_err(|e| Status::internal(format!("the join ended: {e}")))?
            .map_err(to_status)?;
        Ok(Response::new(FinishJoinResponse { promoted }))
    }

    async fn maintain(
        &self,
        request: Request<MaintainRequest>,
    ) -> Result<Response<MaintainResponse>, Status> {
        self.only_the_coordinator(&request, "Maintain")?;
        let request = request.into_inner();
        self.member
            .admit_epoch(request.coordinator_epoch, "Maintain")
            .map_err(to_status)?;
        let op = MaintenanceOp::try_from(request.op).unwrap_or(MaintenanceOp::Unspecified);
        let outcome = self
            .member
            .maintain(op, request.revision, &request.grant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(MaintainResponse {
            revision: outcome.revision,
            db_size: outcome.db_size,
            db_size_in_use: outcome.db_size_in_use,
            disarmed: outcome.disarmed,
        }))
    }

    async fn force_new_cluster(
        &self,
        request: Request<ForceNewClusterRequest>,
    ) -> Result<Response<ForceNewClusterResponse>, Status> {
        self.only_the_coordinator(&request, "ForceNewCluster")?;
        self.member
            .admit_epoch(request.get_ref().coordinator_epoch, "ForceNewCluster")
            .map_err(to_status)?;
        let outcome = self
            .member
            .force_new_cluster(
                request.get_ref().min_raft_index,
                &request.get_ref().grant_id,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(ForceNewClusterResponse {
            member_id: outcome.member_id,
            revision: outcome.revision,
            raft_index: outcome.raft_index,
        }))
    }
}
