//! The member lifecycle (DESIGN.md, "Member lifecycle"): decide on start whether to run on
//! existing data, rejoin, join or bootstrap; leave on request; hand off for an upgrade.
//!
//! Every membership change happens under a grant from the coordinator, and every step is
//! written so that a retry after a lost answer never changes membership twice.
//!
//! Here: the [`Member`] agent, its state, and what several steps share (etcd clients,
//! starting etcd, moving leadership, removing an entry). The steps: `start` (run on data,
//! bootstrap or join), `grant` (registration and grants: the coordinator's side), `join`,
//! `leave`, `handoff` (upgrades), `backup` (backups and restores) and `force_new_cluster`
//! (a quorum lost for good).

use std::{sync::Arc, time::Duration};

use etcd_client::{Client, ConnectOptions};
use etcd_operator::identity::PeerIdentity;
use etcd_operator::proto::{ChangeKind, MemberPhase, coordinator_client::CoordinatorClient};
use etcd_operator::tls::ClientTls;
use tokio::{
    sync::{Mutex, watch},
    time::{Instant, sleep},
};
use tonic::transport::Channel;
use tracing::{info, warn};

use self::grant::coordinator_channel;
use crate::{
    config::SidecarConfig,
    error::{SidecarError, is_transient},
    etcd_args::{Bootstrap, etcd_args},
    etcd_tls::EtcdTlsDir,
    identity::{Identity, MemberDir},
    supervisor::Supervisor,
};

mod backup;
mod force_new_cluster;
mod grant;
mod handoff;
mod join;
mod leave;
mod maintenance;
mod start;

pub use force_new_cluster::ForcedOutcome;
pub use handoff::{DEFAULT_HANDOFF_RESTART_TIMEOUT, HandoffOutcome, latest_snapshot_index};
pub use leave::LeaveOutcome;
pub use maintenance::MaintenanceOutcome;

/// How long a start waits for etcd to answer.
const ETCD_READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a joining member's etcd may keep exiting before the join gives up and lets go
/// of its grant. A join cannot finish on an etcd that cannot start (its port taken by
/// another process, say), and the grant it holds would keep the coordinator from replacing
/// the member, which it does once that etcd has kept exiting for the dead-after.
const JOIN_START_FAILING: Duration = Duration::from_secs(3);
/// How often a starting etcd is asked whether it answers.
const LOCAL_READY_POLL: Duration = Duration::from_millis(20);
/// How long a leadership transfer may take.
const MOVE_LEADER_DEADLINE: Duration = Duration::from_secs(15);

/// What the sidecar knows of its member right now.
#[derive(Clone, Debug, Default)]
pub struct MemberState {
    /// Lifecycle phase.
    pub phase: MemberPhase,
    /// etcd member id (0 until known).
    pub member_id: u64,
    /// etcd cluster id (0 until known).
    pub cluster_id: u64,
    /// The last lifecycle error.
    pub last_error: String,
    /// Client URLs of the cluster's members.
    pub cluster_client_urls: Vec<String>,
    /// The grant held right now: its id and kind.
    pub held_grant: Option<(String, ChangeKind)>,
    /// The backup this member's cluster was created from, when it was.
    pub restored: Option<crate::backup::Restored>,
}

/// The member's agent: configuration, etcd supervisor, coordinator client, state.
pub struct Member {
    /// Validated configuration.
    pub cfg: SidecarConfig,
    /// The member directory.
    pub dir: MemberDir,
    /// The etcd child.
    pub supervisor: Supervisor,
    /// The client of the coordinator, replaced by a fresh connection when the one it has
    /// reaches a coordinator that does not lead ([`Member::reconnect_coordinator`]).
    coordinator: std::sync::Mutex<CoordinatorClient<Channel>>,
    coordinator_tls: Arc<ClientTls>,
    /// The newest coordinator term seen, as recorded in the member directory (read at
    /// start, written before a call of a newer term is acted on); calls and grants of older
    /// terms are refused. The lock also orders the writes.
    epoch: std::sync::Mutex<u64>,
    state: watch::Sender<MemberState>,
    /// The identity as last saved in the member directory.
    saved_identity: std::sync::Mutex<Option<Identity>>,
    /// One lifecycle operation at a time (start, leave, handoff, promote).
    op: Mutex<()>,
    /// One backup at a time.
    backup: Mutex<()>,
    /// The lease of the grant held, renewed while it is held ([`Member::renew_grants`]).
    lease: std::sync::Mutex<Option<grant::GrantLease>>,
    /// Counts the handoffs: the restart a handoff arms (should the runtime's never come)
    /// belongs to that handoff alone, never to a later one.
    handoffs: std::sync::atomic::AtomicU64,
}

/// Milliseconds since the Unix epoch.
pub use etcd_operator::now_ms as now_unix_ms;

/// Connects an etcd client to `endpoints` with short timeouts, over TLS with the member's
/// etcd client certificate when `tls` is given (read now: a rotated certificate is used by
/// every client made after the rotation).
pub async fn connect_etcd(
    tls: Option<&EtcdTlsDir>,
    endpoints: &[String],
) -> Result<Client, SidecarError> {
    connect_etcd_with(tls, endpoints, Duration::from_secs(5)).await
}

/// [`connect_etcd`] with a request timeout of `timeout` (a defragmentation takes a while on
/// a large backend).
pub async fn connect_etcd_with(
    tls: Option<&EtcdTlsDir>,
    endpoints: &[String],
    timeout: Duration,
) -> Result<Client, SidecarError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(timeout);
    if let Some(tls) = tls {
        let tls = tls
            .client_options()
            .map_err(|e| SidecarError::Refused(format!("etcd client TLS: {e}")))?;
        options = options.with_tls(tls);
    }
    Client::connect(endpoints, Some(options))
        .await
        .map_err(SidecarError::etcd("connect"))
}

impl Member {
    /// A member agent for `cfg`. Starts nothing yet.
    pub fn new(cfg: SidecarConfig) -> Result<Arc<Self>, SidecarError> {
        // Mutual TLS to the coordinator, whose certificate must name it; the files are read
        // again for every new connection.
        let tls = ClientTls::new(Arc::new(cfg.tls.clone()), PeerIdentity::Coordinator);
        let channel = coordinator_channel(&cfg.coordinator_url, &tls)?;
        let dir = MemberDir::new(cfg.member_dir.clone());
        // Without the newest term it obeyed, a restarted sidecar would obey a deposed
        // coordinator: a record that cannot be read stops the sidecar here.
        let epoch = dir.load_epoch()?;
        let supervisor = Supervisor::spawn(cfg.etcd_binary.clone());
        // An identity that cannot be read is reported by the start, which stops on it.
        let saved_identity = dir.load_identity().ok().flatten();
        let identity = saved_identity.clone().unwrap_or_default();
        let (state, _) = watch::channel(MemberState {
            phase: MemberPhase::Starting,
            member_id: identity.member_id,
            cluster_id: identity.cluster_id,
            last_error: String::new(),
            cluster_client_urls: identity.cluster_client_urls,
            held_grant: None,
            restored: None,
        });
        Ok(Arc::new(Self {
            cfg,
            dir,
            supervisor,
            coordinator: std::sync::Mutex::new(CoordinatorClient::new(channel)),
            coordinator_tls: tls,
            epoch: std::sync::Mutex::new(epoch),
            state,
            saved_identity: std::sync::Mutex::new(saved_identity),
            op: Mutex::new(()),
            backup: Mutex::new(()),
            lease: std::sync::Mutex::new(None),
            handoffs: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The member's state, updated on every change.
    pub fn state(&self) -> watch::Receiver<MemberState> {
        self.state.subscribe()
    }

    /// A snapshot of the state.
    pub fn current(&self) -> MemberState {
        self.state.borrow().clone()
    }

    /// An etcd client to `endpoints`, over TLS when the cluster uses it.
    pub async fn etcd(&self, endpoints: &[String]) -> Result<Client, SidecarError> {
        connect_etcd(self.cfg.etcd_tls.as_ref(), endpoints).await
    }

    fn set_phase(&self, phase: MemberPhase) {
        self.state.send_modify(|s| s.phase = phase);
    }

    /// Records an error for the health report.
    pub fn record_error(&self, e: &SidecarError) {
        self.state.send_modify(|s| s.last_error = e.to_string());
    }

    /// Records what the health loop learned about the member (id, cluster id).
    pub fn learn_ids(&self, member_id: u64, cluster_id: u64) {
        if member_id == 0 {
            return;
        }
        let changed = {
            let s = self.state.borrow();
            s.member_id != member_id || s.cluster_id != cluster_id
        };
        if changed {
            self.state.send_modify(|s| {
                s.member_id = member_id;
                s.cluster_id = cluster_id;
            });
        }
        self.persist_identity();
    }

    /// Records the cluster's client URLs as the health loop sees them.
    pub fn learn_cluster_urls(&self, urls: Vec<String>) {
        if urls.is_empty() || self.state.borrow().cluster_client_urls == urls {
            return;
        }
        self.state.send_modify(|s| s.cluster_client_urls = urls);
        self.persist_identity();
    }

    /// Saves the identity when it differs from the one saved last, once etcd has written
    /// its data (an identity without data would describe nothing): its cluster id is what
    /// a later start needs to tell its own cluster's answer from a stranger's.
    fn persist_identity(&self) {
        let s = self.current();
        if s.member_id == 0 {
            return;
        }
        let identity = Identity {
            name: self.cfg.name.clone(),
            member_id: s.member_id,
            cluster_id: s.cluster_id,
            cluster_client_urls: s.cluster_client_urls,
        };
        let mut saved = self
            .saved_identity
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if saved.as_ref() == Some(&identity) {
            return;
        }
        let removed = self.dir.is_removed();
        let has_data = self.dir.has_etcd_data();
        if !matches!((&removed, &has_data), (Ok(false), Ok(true))) {
            if let (Err(e), _) | (_, Err(e)) = (removed, has_data) {
                warn!(error = %e, "the member directory cannot be read; the identity is not saved");
            }
            return;
        }
        match self.dir.save_identity(&identity) {
            Ok(()) => *saved = Some(identity),
            Err(e) => warn!(error = %e, "could not save the member identity"),
        }
    }

    /// Wipes the member directory ([`MemberDir::wipe`]); the identity is saved again once
    /// etcd has data anew.
    fn wipe_member_dir(&self) -> Result<(), SidecarError> {
        let mut saved = self
            .saved_identity
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *saved = None;
        self.dir.wipe()?;
        Ok(())
    }

    /// Client URLs of the cluster other than this member's, from every source known.
    fn other_endpoints(&self, extra: &[String]) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        let known = self.current().cluster_client_urls;
        for u in extra
            .iter()
            .chain(known.iter())
            .chain(self.cfg.cluster_endpoints.iter())
        {
            if *u != self.cfg.client_url && !urls.contains(u) {
                urls.push(u.clone());
            }
        }
        urls
    }

    /// The arguments etcd starts with: [`etcd_args`], with a backend quota the data
    /// directory's volume can hold ([`crate::volume::quota_for_volume`]), measured at each
    /// start (a volume may have grown).
    pub(crate) fn etcd_args(&self, bootstrap: &Bootstrap) -> Vec<String> {
        let mut args = etcd_args(&self.cfg, bootstrap);
        let asked = self.cfg.quota_backend_bytes;
        let volume = crate::volume::Volume::of(&self.cfg.etcd_data_dir());
        let fitted = crate::volume::quota_for_volume(asked, volume.map(|v| v.size));
        if fitted != asked
            && let Some(quota) = fitted
        {
            warn!(
                volume_bytes = volume.map_or(0, |v| v.size),
                asked = asked.unwrap_or(crate::volume::ETCD_DEFAULT_QUOTA),
                quota,
                "the data volume cannot hold the backend quota: etcd runs with a smaller one, so that it raises NOSPACE before the volume is full"
            );
            args.retain(|a| !a.starts_with("--quota-backend-bytes="));
            args.push(format!("--quota-backend-bytes={quota}"));
        }
        args
    }

    async fn run_etcd(&self, bootstrap: &Bootstrap) -> Result<u32, SidecarError> {
        let args = self.etcd_args(bootstrap);
        let pid = self.supervisor.start(args).await?;
        info!(pid, ?bootstrap, "etcd started");
        Ok(pid)
    }

    /// Waits until the local etcd answers Status; returns (member id, cluster id).
    async fn wait_local_ready(&self) -> Result<(u64, u64), SidecarError> {
        self.wait_local_ready_unless_failing(None).await
    }

    /// [`Self::wait_local_ready`], giving up once etcd is down and has kept exiting for
    /// `failing` (when given).
    async fn wait_local_ready_unless_failing(
        &self,
        failing: Option<Duration>,
    ) -> Result<(u64, u64), SidecarError> {
        let deadline = Instant::now() + ETCD_READY_DEADLINE;
        let local = [self.cfg.client_url.clone()];
        loop {
            if let Ok(mut client) = self.etcd(&local).await
                && let Ok(status) = client.status().await
                && let Some(header) = status.header()
            {
                return Ok((header.member_id(), header.cluster_id()));
            }
            if Instant::now() > deadline {
                return Err(SidecarError::Timeout(
                    "etcd did not answer after starting".into(),
                ));
            }
            if let Some(limit) = failing {
                let process = self.supervisor.state().borrow().clone();
                if let Some(since) = process.failing_since
                    && process.pid.is_none()
                    && since.elapsed() >= limit
                {
                    return Err(SidecarError::Refused(format!(
                        "etcd cannot start: it has kept exiting for {} ms ({})",
                        since.elapsed().as_millis(),
                        process.last_exit.unwrap_or_default()
                    )));
                }
            }
            // A refused connection to the local etcd costs nothing: looked at often, the
            // next step (a promotion, a report) follows etcd's start closely.
            sleep(LOCAL_READY_POLL).await;
        }
    }

    /// Moves leadership from this member (the leader) to `target` and waits until another
    /// member leads.
    async fn move_leadership(
        &self,
        local: &mut Client,
        member_id: u64,
        target: u64,
    ) -> Result<(), SidecarError> {
        info!(target = %format!("{target:x}"), "moving leadership away");
        let deadline = Instant::now() + MOVE_LEADER_DEADLINE;
        loop {
            match local.move_leader(target).await {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(SidecarError::etcd("move leader")(e)),
            }
            if let Ok(status) = local.status().await
                && status.leader() != member_id
                && status.leader() != 0
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(SidecarError::Timeout("moving leadership away".into()));
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Removes etcd's entry `member_id` through `client` (this member's own on a leave, a stale
/// one of an earlier life on a rejoin), retrying while etcd's errors are transient. An entry
/// already gone counts as removed: a removal whose answer was lost may have gone through.
/// Made only under the grant `member` holds, checked before every attempt: a grant that
/// lapsed while it retried allows no more.
async fn remove_member(
    member: &Member,
    client: &Client,
    member_id: u64,
) -> Result<(), SidecarError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut backoff = Duration::from_millis(200);
    loop {
        member.grant_in_force()?;
        let mut c = client.clone();
        match c.member_remove(member_id).await {
            Ok(_) => return Ok(()),
            Err(e) if is_transient(&e) && Instant::now() < deadline => {
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                let e = SidecarError::etcd("member remove")(e);
                return if is_member_not_found(&e) {
                    Ok(())
                } else {
                    Err(e)
                };
            }
        }
    }
}

fn is_member_not_found(e: &SidecarError) -> bool {
    matches!(e, SidecarError::Etcd { source, .. }
        if crate::error::etcd_error(source) == Some(etcd_operator::etcd_error::EtcdError::MemberNotFound))
}

/// True when a member answers Status on one of its client URLs within 2 s.
async fn member_answers(tls: Option<&EtcdTlsDir>, client_urls: &[String]) -> bool {
    member_version(tls, client_urls).await.is_some()
}

/// The etcd version a member reports, if it answers within 2 s.
async fn member_version(tls: Option<&EtcdTlsDir>, client_urls: &[String]) -> Option<String> {
    if client_urls.is_empty() {
        return None;
    }
    let attempt = async {
        let mut c = connect_etcd(tls, client_urls).await.ok()?;
        let status = c.status().await.ok()?;
        (status.leader() != 0).then(|| status.version().to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}
