//! Health: observe the local etcd every interval, publish a `HealthReport`, and stream the
//! reports to the coordinator (reconnecting when it is away: a coordinator that cannot be
//! reached changes nothing about the member itself).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
use etcd_operator::proto::{Alarm, HealthReport, MemberPhase};
use tokio::sync::watch;
use tokio_stream::{StreamExt, wrappers::WatchStream};
use tonic_health::server::HealthReporter;
use tracing::debug;

use crate::member::{Member, now_unix_ms};

/// The gRPC health service name reported SERVING when the member is healthy.
pub const SERVICE_NAME: &str = "etcdop.v1.Sidecar";

/// How often the member is observed while it is not settled (starting, joining, a
/// learner, unhealthy, holding a grant): a change shows in the next report at once.
const UNSETTLED_OBSERVE: Duration = Duration::from_millis(100);

/// Observes the member forever, publishing a report when something changes (etcd started
/// or exited, became healthy, leader changed, learner caught up or promoted, the
/// lifecycle moved) and at least every report interval.
pub async fn observe(
    member: Arc<Member>,
    reports: watch::Sender<HealthReport>,
    grpc_health: HealthReporter,
) {
    let mut lifecycle = member.state();
    let mut process = member.supervisor.state();
    let mut client: Option<etcd_client::Client> = None;
    let mut was_healthy = None;
    let mut last_sent: Option<(HealthReport, Instant)> = None;
    let lifecycle_part = |s: &crate::member::MemberState| {
        (
            s.phase,
            s.member_id,
            s.held_grant.clone(),
            s.last_error.clone(),
        )
    };
    let process_part = |p: &crate::supervisor::ProcessState| (p.pid, p.restarts, p.wanted);
    loop {
        // What the observation starts from: a change after this point wakes the next one.
        let lifecycle_seen = lifecycle_part(&lifecycle.borrow_and_update());
        let process_seen = process_part(&process.borrow_and_update());
        let report = observe_once(&member, &mut client).await;
        if was_healthy != Some(report.healthy) {
            let status = if report.healthy {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            grpc_health.set_service_status(SERVICE_NAME, status).await;
            grpc_health.set_service_status("", status).await;
            was_healthy = Some(report.healthy);
        }
        let settled = settled(&report);
        let due = last_sent.as_ref().is_none_or(|(sent, at)| {
            at.elapsed() >= member.cfg.report_interval || news(sent, &report)
        });
        if due {
            // A join interrupted between the add and the promotion shows in the report (a
            // learner in phase Running): the coordinator's planner finishes it
            // (`FinishJoin`).
            last_sent = Some((report.clone(), Instant::now()));
            reports.send_replace(report);
        }
        let next = if settled {
            member.cfg.report_interval
        } else {
            UNSETTLED_OBSERVE.min(member.cfg.report_interval)
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = changed_from(&mut lifecycle, lifecycle_seen, lifecycle_part) => {}
            _ = changed_from(&mut process, process_seen, process_part) => {}
        }
    }
}

/// A member with nothing under way: healthy voter, running, no grant held.
fn settled(report: &HealthReport) -> bool {
    report.healthy
        && !report.learner
        && report.phase == MemberPhase::Running as i32
        && report.held_grant_id.is_empty()
}

/// True when `new` tells the coordinator something `old` did not (not counting what moves
/// on its own: raft indexes, revision, sizes, free space, the observation time).
fn news(old: &HealthReport, new: &HealthReport) -> bool {
    steady_part(old) != steady_part(new)
}

/// A report without what moves on its own (raft index and term, revision, sizes, free
/// space, when it was observed, etcd's pid): two reports with the same steady part tell the
/// same.
pub fn steady_part(report: &HealthReport) -> HealthReport {
    HealthReport {
        raft_index: 0,
        raft_applied_index: 0,
        raft_term: 0,
        revision: 0,
        db_size: 0,
        db_size_in_use: 0,
        observed_at_unix_ms: 0,
        etcd_pid: 0,
        data_volume_available_bytes: 0,
        ..report.clone()
    }
}

/// Resolves when the part `part` picks of the watched value differs from `before` (never,
/// once its sender is gone).
async fn changed_from<T, K: PartialEq>(
    rx: &mut watch::Receiver<T>,
    before: K,
    part: impl Fn(&T) -> K,
) {
    if part(&rx.borrow()) != before {
        return;
    }
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if part(&rx.borrow_and_update()) != before {
            return;
        }
    }
}

async fn observe_once(member: &Member, client: &mut Option<etcd_client::Client>) -> HealthReport {
    let state = member.current();
    let process = member.supervisor.state().borrow().clone();
    let mut report = HealthReport {
        cluster: Some((&member.cfg.cluster).into()),
        member_name: member.cfg.name.clone(),
        member_id: state.member_id,
        cluster_id: state.cluster_id,
        phase: match (state.phase, process.pid) {
            (MemberPhase::Running, None) if process.wanted => MemberPhase::Restarting,
            (phase, _) => phase,
        } as i32,
        client_url: member.cfg.client_url.clone(),
        peer_url: member.cfg.peer_url.clone(),
        sidecar_url: member.cfg.grpc_url.clone(),
        etcd_pid: process.pid.unwrap_or(0),
        etcd_restarts: process.restarts,
        observed_at_unix_ms: now_unix_ms(),
        last_error: state.last_error.clone(),
        held_grant_id: state
            .held_grant
            .as_ref()
            .map(|(id, _)| id.clone())
            .unwrap_or_default(),
        held_grant_kind: state
            .held_grant
            .as_ref()
            .map(|(_, k)| *k as i32)
            .unwrap_or(0),
        // What etcd says it runs, once it answers (below): never the version it is
        // configured with, which a member that cannot start on it never ran.
        etcd_version: String::new(),
        restored_from: state
            .restored
            .as_ref()
            .map(|r| r.backup.clone())
            .unwrap_or_default(),
        restored_revision: state.restored.as_ref().map_or(0, |r| r.revision),
        restored_bump: state.restored.as_ref().map_or(0, |r| r.bumped_by),
        ..Default::default()
    };
    if let Some(tls) = &member.cfg.etcd_tls {
        // What etcd reads at its next start, as the Pod has it now.
        report.etcd_files_sha256 = etcd_operator::pki::etcd_files_digest(|name| {
            std::fs::read_to_string(tls.file(name)).ok()
        });
    }
    let volume = crate::volume::Volume::of(&member.cfg.etcd_data_dir());
    if let Some(volume) = volume {
        report.data_volume_bytes = volume.size as i64;
        report.data_volume_available_bytes = volume.available as i64;
    }
    if process.pid.is_none() {
        // Between restarts: why the last run ended, etcd's own fatal line included.
        if process.wanted {
            report.etcd_failing_since_unix_ms = process.failing_since_unix_ms.unwrap_or(0);
            report.etcd_failing_for_ms = process
                .failing_since
                .map_or(0, |at| at.elapsed().as_millis().max(1) as i64);
            if let Some(exit) = &process.last_exit {
                if report.last_error.is_empty() {
                    report.last_error = format!("etcd exited ({exit}); starting it again");
                }
                if crate::volume::is_disk_full(exit, volume) {
                    report.alarms.push(Alarm::DiskFull as i32);
                }
            }
        }
        *client = None;
        return report;
    }
    if client.is_none() {
        *client = member
            .etcd(std::slice::from_ref(&member.cfg.client_url))
            .await
            .ok();
    }
    let Some(c) = client.as_mut() else {
        report.last_error = "etcd does not accept connections".into();
        return report;
    };
    let status = match tokio::time::timeout(Duration::from_secs(2), c.status()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            debug!(error = %e, "status failed");
            report.last_error = format!("status: {e}");
            // Connect afresh next time (etcd may have restarted, or the client certificate
            // been rotated).
            *client = None;
            return report;
        }
        Err(_) => {
            report.last_error = "status timed out".into();
            *client = None;
            return report;
        }
    };
    if let Some(h) = status.header() {
        report.member_id = h.member_id();
        report.cluster_id = h.cluster_id();
        report.revision = h.revision();
        member.learn_ids(h.member_id(), h.cluster_id());
    }
    report.leader_id = status.leader();
    report.leader = status.leader() != 0 && status.leader() == report.member_id;
    report.learner = status.is_learner();
    report.raft_index = status.raft_index();
    report.raft_applied_index = status.raft_applied_index();
    report.raft_term = status.raft_term();
    report.db_size = status.db_size();
    report.db_size_in_use = status.raft_used_db_size();
    report.db_size_quota = status.db_size_quota();
    report.etcd_version = status.version().to_string();
    // etcd lists its raised alarms among the status errors ("memberID:... alarm:NOSPACE"):
    // they are read from the alarm list below, and are not ill health.
    let mut errors: Vec<String> = status
        .errors()
        .iter()
        .filter(|e| !e.contains("alarm:"))
        .cloned()
        .collect();
    match tokio::time::timeout(
        Duration::from_secs(2),
        c.alarm(AlarmAction::Get, AlarmType::None, None::<AlarmOptions>),
    )
    .await
    {
        Ok(Ok(resp)) => {
            // etcd lists every member's alarms: this member reports its own.
            for a in resp
                .alarms()
                .iter()
                .filter(|a| a.member_id() == report.member_id)
            {
                let alarm = match a.alarm() {
                    AlarmType::Nospace => Alarm::Nospace,
                    AlarmType::Corrupt => Alarm::Corrupt,
                    AlarmType::None => continue,
                };
                if !report.alarms.contains(&(alarm as i32)) {
                    report.alarms.push(alarm as i32);
                }
            }
        }
        Ok(Err(e)) => errors.push(format!("alarm list: {e}")),
        Err(_) => errors.push("alarm list timed out".into()),
    }
    // The cluster's client URLs, for finding it again after a restart (serializable read:
    // a learner answers it too).
    if let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(2), c.member_list()).await {
        let urls: Vec<String> = list
            .members()
            .iter()
            .flat_map(|m| m.client_urls().iter().cloned())
            .collect();
        member.learn_cluster_urls(urls);
    }
    // An alarm does not make the member unhealthy: a member with NOSPACE answers, serves
    // reads and is never replaced for it (the coordinator shows the alarm and, when the
    // spec allows it, frees space).
    report.healthy = report.leader_id != 0 && errors.is_empty();
    if !errors.is_empty() {
        report.last_error = errors.join("; ");
    }
    report
}

/// Streams every report to the coordinator, reconnecting with backoff.
pub async fn stream_reports(member: Arc<Member>, reports: watch::Receiver<HealthReport>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let stream =
            WatchStream::from_changes(reports.clone()).filter(|r| r.observed_at_unix_ms != 0);
        match member.coordinator().report_health(stream).await {
            Ok(_) => backoff = Duration::from_millis(200),
            Err(status) => {
                debug!(error = %status.message(), code = ?status.code(), "health stream to the coordinator ended");
                member.coordinator_failed(&status);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(etcd_operator::grant::REPORT_RECONNECT_MAX);
    }
}
