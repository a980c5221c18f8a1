//! Disk maintenance, one step per call as the coordinator's planner chooses it: compact the
//! cluster's history, defragment this member's backend, disarm the cluster's NOSPACE alarms.
//! None of them changes membership; a defragmentation stalls this member while it runs,
//! which is why the planner runs it one member at a time, the leader last.

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, CompactionOptions};
use etcd_operator::proto::MaintenanceOp;
use tracing::{info, instrument};

use super::{Member, connect_etcd_with};
use crate::error::SidecarError;

/// How long one step may take (a defragmentation rewrites the whole backend).
const MAINTENANCE_DEADLINE: Duration = Duration::from_secs(600);

/// What a maintenance step left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceOutcome {
    /// The revision compacted to, or the member's revision.
    pub revision: i64,
    /// The backend's size afterwards.
    pub db_size: i64,
    /// Of it, in use.
    pub db_size_in_use: i64,
    /// Alarms disarmed.
    pub disarmed: u32,
}

impl Member {
    /// Runs one maintenance step on this member's etcd.
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name, ?op))]
    pub async fn maintain(
        &self,
        op: MaintenanceOp,
        revision: i64,
        grant_id: &str,
    ) -> Result<MaintenanceOutcome, SidecarError> {
        // Not while a lifecycle step (a leave, a handoff) has etcd in hand.
        let _op = self.op.lock().await;
        // The coordinator's grant for this step (a defragmentation) lasts as long as it runs.
        let _held = self.hold_delegated(grant_id);
        if self.supervisor.state().borrow().pid.is_none() {
            return Err(SidecarError::Refused(
                "etcd is not running on this member".into(),
            ));
        }
        let mut client = connect_etcd_with(
            self.cfg.etcd_tls.as_ref(),
            std::slice::from_ref(&self.cfg.client_url),
            MAINTENANCE_DEADLINE,
        )
        .await?;
        let mut outcome = MaintenanceOutcome::default();
        match op {
            MaintenanceOp::Unspecified => {
                return Err(SidecarError::Refused("no maintenance step named".into()));
            }
            MaintenanceOp::Compact => {
                let current = client
                    .status()
                    .await
                    .map_err(SidecarError::etcd("status"))?
                    .header()
                    .map_or(0, |h| h.revision());
                let to = if revision <= 0 {
                    current
                } else {
                    revision.min(current)
                };
                match client
                    .compact(to, Some(CompactionOptions::new().with_physical()))
                    .await
                {
                    Ok(_) => info!(revision = to, "compacted"),
                    // Compacted there (or past it) already: the step is done.
                    Err(e)
                        if e.to_string()
                            .contains("required revision has been compacted") =>
                    {
                        info!(revision = to, "already compacted")
                    }
                    Err(e) => return Err(SidecarError::etcd("compact")(e)),
                }
                outcome.revision = to;
            }
            MaintenanceOp::Defragment => {
                let began = std::time::Instant::now();
                client
                    .defragment()
                    .await
                    .map_err(SidecarError::etcd("defragment"))?;
                info!(took_ms = began.elapsed().as_millis() as u64, "defragmented");
            }
            MaintenanceOp::Disarm => {
                let alarms = client
                    .alarm(AlarmAction::Get, AlarmType::None, None::<AlarmOptions>)
                    .await
                    .map_err(SidecarError::etcd("alarm list"))?;
                for alarm in alarms.alarms() {
                    if alarm.alarm() != AlarmType::Nospace {
                        continue;
                    }
                    let mut options = AlarmOptions::new();
                    options.with_member(alarm.member_id());
                    client
                        .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
                        .await
                        .map_err(SidecarError::etcd("alarm disarm"))?;
                    outcome.disarmed += 1;
                }
                info!(disarmed = outcome.disarmed, "NOSPACE alarms disarmed");
            }
        }
        let status = client
            .status()
            .await
            .map_err(SidecarError::etcd("status"))?;
        if outcome.revision == 0 {
            outcome.revision = status.header().map_or(0, |h| h.revision());
        }
        outcome.db_size = status.db_size();
        outcome.db_size_in_use = status.raft_used_db_size();
        Ok(outcome)
    }
}
