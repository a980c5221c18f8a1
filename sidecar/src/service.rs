//! The `etcdop.v1.Sidecar` gRPC service: the coordinator's handle on this member.

use std::{sync::Arc, time::Duration};

use etcd_operator::proto::{
    GetMemberHealthRequest, HandoffRequest, HandoffResponse, HealthReport, LeaveRequest,
    LeaveResponse, sidecar_server::Sidecar,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::{
    error::SidecarError,
    member::{DEFAULT_HANDOFF_RESTART_TIMEOUT, Member},
};

/// The service, over the member agent and its latest report.
pub struct SidecarService {
    member: Arc<Member>,
    reports: watch::Receiver<HealthReport>,
}

impl SidecarService {
    /// A service for `member`.
    pub fn new(member: Arc<Member>, reports: watch::Receiver<HealthReport>) -> Self {
        Self { member, reports }
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
        info!(reason = %request.get_ref().reason, "asked to leave the cluster");
        let outcome = self.member.leave().await.map_err(to_status)?;
        Ok(Response::new(LeaveResponse {
            removed_member_id: outcome.removed_member_id,
            moved_leadership: outcome.moved_leadership,
        }))
    }

    async fn handoff(
        &self,
        request: Request<HandoffRequest>,
    ) -> Result<Response<HandoffResponse>, Status> {
        let request = request.into_inner();
        let timeout = match request.restart_timeout_ms {
            0 => DEFAULT_HANDOFF_RESTART_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let outcome = self
            .member
            .handoff(&request.target_version, timeout)
            .await
            .map_err(to_status)?;
        Ok(Response::new(HandoffResponse {
            moved_leadership: outcome.moved_leadership,
            raft_index: outcome.raft_index,
        }))
    }
}
