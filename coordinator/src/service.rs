//! The `etcdop.v1.Coordinator` gRPC service: sidecars register, report health and take
//! membership grants; people read status.
//!
//! Who may do what: the read-only methods (ListClusters, GetCluster, ListBackups) answer
//! anyone on local mode's status port (loopback, one user's machine). On Kubernetes the
//! status port answers none of them (health and reflection only): they are answered over
//! mutual TLS on the control port, to the operator's and the coordinator's certificates for
//! every namespace and to a member's for its own namespace only ([`Visible`]). The methods
//! a sidecar calls change the coordinator's view
//! (registration, health, grants), so they answer only over mutual TLS, and only a caller
//! whose certificate names the very member (and cluster) the request speaks for; a sidecar
//! can never register, report or take a grant for another member.

use etcd_operator::{
    ClusterKey,
    grant::kind_name,
    proto::{
        Backup, ClusterStatus, DeleteMemberRequest, DeleteMemberResponse, GetClusterRequest,
        GrantRequest, GrantResponse, HealthReport, ListBackupsRequest, ListBackupsResponse,
        ListClustersRequest, ListClustersResponse, MemberRole, RegisterRequest, RegisterResponse,
        ReleaseGrantRequest, ReleaseGrantResponse, RenewGrantRequest, ReportHealthResponse,
        TakeBackupRequest, coordinator_server::Coordinator,
    },
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use etcd_operator::identity::PeerIdentity;
use etcd_operator::tls;

use crate::registry::{ReceivedReport, Registry, now_ms, report_matters};

/// Wakes the reconciler of the cluster a health stream reported for when the stream ends,
/// however it ends.
struct WakeOnDrop {
    registry: Registry,
    key: Option<ClusterKey>,
}

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            self.registry.notify_cluster(key);
        }
    }
}

/// How often sidecars are asked to report, in milliseconds.
pub const REPORT_INTERVAL_MS: u32 = 1000;

/// How long after its start the coordinator gives no grant: long enough for every live
/// sidecar to open its report stream again (after its longest backoff) and report the grant
/// it may hold from before the restart. (Grants given by this version are in the durable
/// record and known at once; this covers those of a coordinator that kept none.)
pub const RECOVERY_SETTLE_MS: i64 =
    etcd_operator::grant::REPORT_RECONNECT_MAX.as_millis() as i64 + 2 * REPORT_INTERVAL_MS as i64;

// The settle window outlasts the sidecars' longest report reconnect backoff, or the build
// fails: a sidecar holding a grant from before a restart reports it before any new grant.
const _: () =
    assert!(RECOVERY_SETTLE_MS > etcd_operator::grant::REPORT_RECONNECT_MAX.as_millis() as i64);

/// What a listener lets its callers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Local mode's status port: read-only methods to anyone; the others answer
    /// UNAUTHENTICATED.
    ReadOnly,
    /// Kubernetes' status port (TLS without client certificates): every method answers
    /// UNAUTHENTICATED; health and reflection stay.
    Closed,
    /// The control port (mutual TLS): every method, each checked against the caller.
    Authenticated,
}

/// Which clusters a reader may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visible {
    /// Every namespace.
    All,
    /// One namespace (empty: local mode's clusters).
    Namespace(String),
}

impl Visible {
    /// True when a cluster of `namespace` may be shown.
    pub fn shows(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Namespace(ns) => ns == namespace,
        }
    }
}

/// The service over the shared registry.
#[derive(Clone)]
pub struct CoordinatorService {
    registry: Registry,
    access: Access,
}

impl CoordinatorService {
    /// A service over `registry`, as `access` allows.
    pub fn new(registry: Registry, access: Access) -> Self {
        Self { registry, access }
    }

    /// The epoch of this coordinator's term, if it holds one now; sidecars that reach a
    /// coordinator that does not lead are told to go to the one that does.
    fn leading(&self, method: &str) -> Result<u64, Status> {
        self.registry.leadership().current().ok_or_else(|| {
            let status = Status::unavailable(
                "this coordinator does not lead now: connect again (the coordinator's Service routes only to the leader)",
            );
            self.refused(method, &status);
            status
        })
    }

    /// The identity of the caller of a method that changes something.
    fn caller<T>(&self, request: &Request<T>, method: &str) -> Result<PeerIdentity, Status> {
        let refused = match self.access {
            Access::ReadOnly | Access::Closed => Status::unauthenticated(format!(
                "{method} is served only on the coordinator's control port (mutual TLS), to sidecars"
            )),
            Access::Authenticated => match tls::caller(request) {
                Ok(id) => return Ok(id),
                Err(status) => status,
            },
        };
        self.refused(method, &refused);
        Err(refused)
    }

    /// Which clusters the caller of a read-only method may see.
    fn reader<T>(&self, request: &Request<T>, method: &str) -> Result<Visible, Status> {
        let refused = match self.access {
            Access::ReadOnly => return Ok(Visible::All),
            Access::Closed => Status::unauthenticated(format!(
                "{method} is served only on the coordinator's control port, over mutual TLS, to a certificate of the control CA (on Kubernetes, use kubectl: RBAC decides)"
            )),
            Access::Authenticated => match tls::caller(request) {
                Ok(PeerIdentity::Operator | PeerIdentity::Coordinator) => return Ok(Visible::All),
                Ok(PeerIdentity::Member { namespace, .. }) => {
                    return Ok(Visible::Namespace(
                        if namespace == etcd_operator::identity::LOCAL_NAMESPACE {
                            String::new()
                        } else {
                            namespace
                        },
                    ));
                }
                Err(status) => status,
            },
        };
        self.refused(method, &refused);
        Err(refused)
    }

    fn refused(&self, method: &str, status: &Status) {
        warn!(method, code = ?status.code(), reason = %status.message(), "refused a call");
        self.registry
            .metrics()
            .refused_calls
            .get_or_create(&crate::metrics::RefusedLabels {
                method: method.to_string(),
            })
            .inc();
    }

    /// Refuses a caller that is not `member` of `key`.
    fn speaks_for(
        &self,
        caller: &PeerIdentity,
        key: &ClusterKey,
        member: &str,
        method: &str,
    ) -> Result<(), Status> {
        if caller.is_member(key, member) {
            return Ok(());
        }
        let refused = Status::permission_denied(format!(
            "{caller} may not call {method} for member {member:?} of cluster {key}"
        ));
        self.refused(method, &refused);
        Err(refused)
    }
}

fn cluster_key(cluster: Option<&etcd_operator::proto::ClusterRef>) -> Result<ClusterKey, Status> {
    match cluster {
        Some(c) if !c.name.is_empty() => Ok(ClusterKey::from(c)),
        _ => Err(Status::invalid_argument("cluster.name is required")),
    }
}

/// True when `report` is fresh enough to count (the planner's default staleness), by its
/// age on the monotonic clock.
fn fresh(r: &ReceivedReport) -> bool {
    r.age_ms() <= crate::plan::Policy::default().report_stale_after_ms
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let caller = self.caller(&request, "Register")?;
        let epoch = self.leading("Register")?;
        let request = request.into_inner();
        let key = cluster_key(request.cluster.as_ref())?;
        self.speaks_for(&caller, &key, &request.member_name, "Register")?;
        let now = now_ms();
        let (role, urls, initial) = self
            .registry
            .with_existing(&key, |entry, _| {
                if !entry.runtime_members.contains(&request.member_name) {
                    return Err(Status::permission_denied(format!(
                        "{} is not a member of cluster {key}",
                        request.member_name
                    )));
                }
                entry
                    .registrations
                    .insert(request.member_name.clone(), request.clone());
                let urls: Vec<String> = entry
                    .reports
                    .values()
                    .filter(|r| {
                        fresh(r)
                            && r.report.healthy
                            && !r.report.learner
                            && r.report.member_name != request.member_name
                    })
                    .map(|r| r.report.client_url.clone())
                    .collect();
                // An initial member of a bootstrap under way starts with the others, once
                // every peer URL is known (until then it is told its role with no list, and
                // asks again soon).
                if let Some(initial) = entry
                    .initial
                    .as_mut()
                    .filter(|i| i.names.contains(&request.member_name))
                {
                    if !initial.initial_cluster.is_empty() {
                        initial.began.get_or_insert(now);
                    }
                    return Ok((
                        MemberRole::Initial,
                        Vec::new(),
                        Some((initial.initial_cluster.clone(), initial.token.clone())),
                    ));
                }
                let role = if !urls.is_empty() {
                    MemberRole::Join
                } else if entry.seed.as_deref() == Some(request.member_name.as_str())
                    && !entry.cluster_exists
                    && crate::grants::may_seed(entry, &request.member_name)
                {
                    MemberRole::Seed
                } else {
                    MemberRole::Unspecified
                };
                Ok((role, urls, None))
            })
            .ok_or_else(|| Status::not_found(format!("cluster {key} is not managed here")))??;
        // The backup a seed restores, from the durable record: decided before the seed was
        // created, so a coordinator restarted since hands out the same one.
        let restore = match role {
            MemberRole::Seed => self
                .registry
                .with_existing(&key, |entry, _| {
                    entry
                        .record
                        .as_ref()
                        .and_then(|r| r.restore.as_ref())
                        .filter(|r| !r.done && r.seed == request.member_name)
                        .map(|r| etcd_operator::proto::RestoreSource::from(&r.source))
                })
                .flatten(),
            _ => None,
        };
        info!(cluster = %key, member = %request.member_name, ?role, restore = restore.is_some(), "sidecar registered");
        Ok(Response::new(RegisterResponse {
            role: role as i32,
            cluster_client_urls: urls,
            report_interval_ms: REPORT_INTERVAL_MS,
            restore,
            coordinator_epoch: epoch,
            initial_cluster: initial.as_ref().map(|i| i.0.clone()).unwrap_or_default(),
            initial_cluster_token: initial.map(|i| i.1).unwrap_or_default(),
        }))
    }

    async fn report_health(
        &self,
        request: Request<Streaming<HealthReport>>,
    ) -> Result<Response<ReportHealthResponse>, Status> {
        let caller = self.caller(&request, "ReportHealth")?;
        let mut stream = request.into_inner();
        let mut received = 0u64;
        // A stream that breaks (the sidecar's process ended, or lost the coordinator) is
        // news for its cluster: it is reconciled at once.
        let mut wake_at_end = WakeOnDrop {
            registry: self.registry.clone(),
            key: None,
        };
        while let Some(report) = stream.next().await {
            let report = report?;
            let key = cluster_key(report.cluster.as_ref())?;
            self.speaks_for(&caller, &key, &report.member_name, "ReportHealth")?;
            self.leading("ReportHealth")?;
            received += 1;
            let known = self
                .registry
                .with_existing(&key, |entry, grants| {
                    if !entry.runtime_members.contains(&report.member_name) {
                        return None;
                    }
                    let now = now_ms();
                    crate::grants::adopt_reported(grants, &key, &report, now);
                    let matters = report_matters(
                        entry.steady,
                        entry.reports.get(&report.member_name),
                        &report,
                    );
                    entry.reports.insert(
                        report.member_name.clone(),
                        ReceivedReport::new(report.clone(), now),
                    );
                    Some(matters)
                })
                .flatten();
            if known == Some(true) {
                // Reconciled at once: what it changes is acted on now, not at the next tick.
                self.registry.notify_cluster(&key);
            }
            if known.is_some() && wake_at_end.key.is_none() {
                wake_at_end.key = Some(key.clone());
            }
            if known.is_none() {
                return Err(Status::permission_denied(format!(
                    "{} is not a member of cluster {key}",
                    report.member_name
                )));
            }
        }
        Ok(Response::new(ReportHealthResponse {
            reports_received: received,
        }))
    }

    async fn request_grant(
        &self,
        request: Request<GrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        let caller = self.caller(&request, "RequestGrant")?;
        let epoch = self.leading("RequestGrant")?;
        let request = request.into_inner();
        let key = cluster_key(request.cluster.as_ref())?;
        self.speaks_for(&caller, &key, &request.member_name, "RequestGrant")?;
        let kind = request.kind();
        let now = now_ms();
        let refused = |reason: String, retry_after_ms: u32| GrantResponse {
            granted: false,
            reason,
            retry_after_ms,
            ..Default::default()
        };
        let lease_ms = self
            .registry
            .with_existing(&key, |_, grants| grants.lease().as_millis() as u32)
            .unwrap_or_default();
        let response = self
            .registry
            .with_existing(&key, |entry, grants| {
                if !entry.runtime_members.contains(&request.member_name) {
                    return Err(Status::permission_denied(format!(
                        "{} is not a member of cluster {key}",
                        request.member_name
                    )));
                }
                match crate::grants::may_request(entry, &request.member_name, kind, now) {
                    Ok(()) => {}
                    Err(crate::grants::NotGiven::Refused(r)) => {
                        return Ok(refused(r.reason, r.retry_after.as_millis() as u32));
                    }
                    Err(crate::grants::NotGiven::NotRequestable(why)) => {
                        return Err(Status::invalid_argument(why));
                    }
                }
                Ok(
                    match grants.request(&key, &request.member_name, kind, now) {
                        Ok(g) => GrantResponse {
                            granted: true,
                            grant_id: g.id,
                            expires_at_unix_ms: g.expires_at,
                            coordinator_epoch: epoch,
                            lease_ms,
                            ..Default::default()
                        },
                        Err(r) => refused(r.reason, r.retry_after.as_millis() as u32),
                    },
                )
            })
            .ok_or_else(|| Status::not_found(format!("cluster {key} is not managed here")))??;
        if response.granted {
            // Written down before it is answered: a coordinator started after this one
            // knows the grant in flight, and its holder renews it there.
            if let Err(e) = self.registry.record_grant(&key).await {
                self.registry.with_existing(&key, |_, grants| {
                    grants.release_by(&key, &response.grant_id, &request.member_name)
                });
                warn!(cluster = %key, error = %e, "a grant could not be recorded: not given");
                return Ok(Response::new(GrantResponse {
                    granted: false,
                    reason: format!("the grant could not be recorded: {e}"),
                    retry_after_ms: 1000,
                    ..Default::default()
                }));
            }
            etcd_operator::failpoint!("coordinator.grant.after-given");
            self.registry
                .metrics()
                .grants
                .get_or_create(&crate::metrics::GrantLabels {
                    cluster: key.to_string(),
                    kind: kind_name(kind).to_string(),
                })
                .inc();
            info!(cluster = %key, member = %request.member_name, kind = kind_name(kind), grant = %response.grant_id, "membership grant given");
        }
        Ok(Response::new(response))
    }

    async fn release_grant(
        &self,
        request: Request<ReleaseGrantRequest>,
    ) -> Result<Response<ReleaseGrantResponse>, Status> {
        let caller = self.caller(&request, "ReleaseGrant")?;
        let request = request.into_inner();
        let key = cluster_key(request.cluster.as_ref())?;
        self.speaks_for(&caller, &key, &request.member_name, "ReleaseGrant")?;
        let released = self
            .registry
            .with_existing(&key, |_, grants| {
                grants.release_by(&key, &request.grant_id, &request.member_name)
            })
            .unwrap_or(false);
        if released {
            info!(cluster = %key, grant = %request.grant_id, succeeded = request.succeeded, "membership grant released");
            if let Err(e) = self.registry.record_grant(&key).await {
                // The record still names it: a coordinator started from it lets it lapse.
                warn!(cluster = %key, grant = %request.grant_id, error = %e, "the release of a grant could not be recorded");
            }
            self.registry.notify_cluster(&key);
        } else {
            warn!(cluster = %key, grant = %request.grant_id, "release of a grant not in flight");
        }
        if !request.error.is_empty() {
            warn!(cluster = %key, member = %request.member_name, error = %request.error, "membership change failed");
        }
        Ok(Response::new(ReleaseGrantResponse { released }))
    }

    async fn renew_grant(
        &self,
        request: Request<RenewGrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        let caller = self.caller(&request, "RenewGrant")?;
        let epoch = self.leading("RenewGrant")?;
        let request = request.into_inner();
        let key = cluster_key(request.cluster.as_ref())?;
        self.speaks_for(&caller, &key, &request.member_name, "RenewGrant")?;
        let renewed = self
            .registry
            .with_existing(&key, |_, grants| {
                let lease_ms = grants.lease().as_millis() as u32;
                grants
                    .renew(&key, &request.grant_id, &request.member_name, now_ms())
                    .map(|g| (g, lease_ms))
            })
            .ok_or_else(|| Status::not_found(format!("cluster {key} is not managed here")))?;
        Ok(Response::new(match renewed {
            Ok((g, lease_ms)) => GrantResponse {
                granted: true,
                grant_id: g.id,
                expires_at_unix_ms: g.expires_at,
                coordinator_epoch: epoch,
                lease_ms,
                ..Default::default()
            },
            Err(refusal) => {
                warn!(cluster = %key, member = %request.member_name, grant = %request.grant_id, reason = %refusal.reason, "a grant renewal refused");
                GrantResponse {
                    granted: false,
                    grant_id: request.grant_id,
                    reason: refusal.reason,
                    coordinator_epoch: epoch,
                    ..Default::default()
                }
            }
        }))
    }

    async fn list_clusters(
        &self,
        request: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        let visible = self.reader(&request, "ListClusters")?;
        let namespace = request.into_inner().namespace;
        let clusters = self
            .registry
            .statuses()
            .into_iter()
            .filter(|s| visible.shows(&s.namespace))
            .filter(|s| namespace.is_empty() || s.namespace == namespace)
            .map(|mut s| {
                s.members.clear();
                s
            })
            .collect();
        let refused_manifests = if visible == Visible::All {
            self.registry.refused_manifests()
        } else {
            Vec::new()
        }
        .into_iter()
        .map(|(path, error)| etcd_operator::proto::RefusedManifest { path, error })
        .collect();
        Ok(Response::new(ListClustersResponse {
            clusters,
            refused_manifests,
        }))
    }

    async fn get_cluster(
        &self,
        request: Request<GetClusterRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        let visible = self.reader(&request, "GetCluster")?;
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let matches: Vec<ClusterStatus> = self
            .registry
            .statuses()
            .into_iter()
            .filter(|s| visible.shows(&s.namespace))
            .filter(|s| {
                s.name == request.name
                    && (request.namespace.is_empty() || s.namespace == request.namespace)
            })
            .collect();
        match matches.len() {
            0 => Err(Status::not_found(format!(
                "no cluster named {:?}{}",
                request.name,
                if request.namespace.is_empty() {
                    String::new()
                } else {
                    format!(" in namespace {:?}", request.namespace)
                }
            ))),
            1 => Ok(Response::new(
                matches.into_iter().next().unwrap_or_default(),
            )),
            _ => Err(Status::failed_precondition(format!(
                "{} clusters are named {:?}: give the namespace",
                matches.len(),
                request.name
            ))),
        }
    }

    async fn take_backup(
        &self,
        request: Request<TakeBackupRequest>,
    ) -> Result<Response<Backup>, Status> {
        self.only_an_operator(&request, "TakeBackup")?;
        let key = cluster_key(request.get_ref().cluster.as_ref())?;
        let now = now_ms();
        let finished_before = self
            .registry
            .with_existing(&key, |entry, _| {
                if entry.backups.storage.is_none() {
                    return Err(Status::failed_precondition(format!(
                        "cluster {key} has no backup storage: set spec.backup.storage"
                    )));
                }
                entry.backups.requested_at.get_or_insert(now);
                Ok(entry.backups.finished)
            })
            .ok_or_else(|| Status::not_found(format!("cluster {key} is not managed here")))??;
        info!(cluster = %key, "asked for a backup now");
        self.registry.notify_cluster(&key);
        let deadline = tokio::time::Instant::now() + TAKE_BACKUP_DEADLINE;
        loop {
            let done = self
                .registry
                .with_existing(&key, |entry, _| {
                    let t = &entry.backups;
                    (t.finished > finished_before).then(|| {
                        match (&t.last_success, &t.last_failure) {
                            (_, Some((at, message))) if *at >= now => Err(message.clone()),
                            (Some((backup, at)), _) if *at >= now => Ok(backup.clone()),
                            _ => Err("the backup did not finish".to_string()),
                        }
                    })
                })
                .flatten();
            match done {
                Some(Ok(backup)) => return Ok(Response::new(backup)),
                Some(Err(message)) => return Err(Status::unavailable(message)),
                None if tokio::time::Instant::now() >= deadline => {
                    return Err(Status::deadline_exceeded(format!(
                        "no backup of {key} finished within {}s",
                        TAKE_BACKUP_DEADLINE.as_secs()
                    )));
                }
                None => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }

    async fn list_backups(
        &self,
        request: Request<ListBackupsRequest>,
    ) -> Result<Response<ListBackupsResponse>, Status> {
        let visible = self.reader(&request, "ListBackups")?;
        let request = request.into_inner();
        let key = self.find_cluster(&request.name, &request.namespace, &visible)?;
        let access = self
            .registry
            .with_existing(&key, |entry, _| {
                entry
                    .backup_access
                    .clone()
                    .filter(|a| entry.backups.storage.as_ref() == Some(&a.storage))
            })
            .flatten()
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "cluster {key} has no backup storage yet: set spec.backup.storage"
                ))
            })?;
        let store = access
            .opened
            .map_err(|e| Status::failed_precondition(format!("the backups of {key}: {e}")))?;
        let owner = &access.owner;
        // One listing; only metadata not read before (by ETag and modification time) is
        // downloaded.
        let backups = store
            .list(&owner.namespace, &owner.cluster, &access.cache)
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "listing the backups in {}: {e}",
                    store.describe(&owner.namespace, &owner.cluster)
                ))
            })?;
        Ok(Response::new(ListBackupsResponse {
            backups: backups.iter().map(etcd_sidecar::backup::to_proto).collect(),
        }))
    }

    async fn rotate_ca(
        &self,
        request: Request<etcd_operator::proto::RotateCaRequest>,
    ) -> Result<Response<etcd_operator::proto::RotateCaResponse>, Status> {
        self.only_an_operator(&request, "RotateCa")?;
        let key = cluster_key(request.into_inner().cluster.as_ref())?;
        let message = self.ask_for_ca_rotation(&key)?;
        Ok(Response::new(etcd_operator::proto::RotateCaResponse {
            message,
        }))
    }

    async fn delete_member(
        &self,
        request: Request<DeleteMemberRequest>,
    ) -> Result<Response<DeleteMemberResponse>, Status> {
        self.only_an_operator(&request, "DeleteMember")?;
        let request = request.into_inner();
        let key = cluster_key(request.cluster.as_ref())?;
        let name = request.member_name;
        self.registry
            .with_existing(&key, |entry, _| {
                if !entry.runtime_members.contains(&name) {
                    return Err(Status::not_found(format!(
                        "cluster {key} has no member {name:?} (members: {})",
                        entry.runtime_members.join(", ")
                    )));
                }
                entry.delete_requested.insert(name.clone());
                Ok(())
            })
            .ok_or_else(|| Status::not_found(format!("cluster {key} is not managed here")))??;
        info!(cluster = %key, member = %name, "asked to delete a member with its data");
        self.registry.notify_cluster(&key);
        // The planner deletes it at its next step, unless that would break quorum; the
        // request is withdrawn if it is still waiting at the deadline.
        let deadline = tokio::time::Instant::now() + DELETE_MEMBER_DEADLINE;
        loop {
            let (present, progress) = self
                .registry
                .with_existing(&key, |entry, _| {
                    let progress = entry
                        .status
                        .as_ref()
                        .and_then(|s| {
                            s.conditions.iter().find(|c| {
                                c.r#type() == etcd_operator::proto::ConditionType::Progressing
                            })
                        })
                        .map(|c| c.message.clone())
                        .unwrap_or_default();
                    (entry.runtime_members.contains(&name), progress)
                })
                .unwrap_or((false, String::new()));
            if !present {
                return Ok(Response::new(DeleteMemberResponse { member_name: name }));
            }
            if tokio::time::Instant::now() >= deadline {
                self.registry.with_existing(&key, |entry, _| {
                    entry.delete_requested.remove(&name);
                });
                return Err(Status::deadline_exceeded(format!(
                    "{name} was not deleted within {}s, and the request is withdrawn: {progress}",
                    DELETE_MEMBER_DEADLINE.as_secs()
                )));
            }
            // The registry is in memory: looked at often, the answer follows the deletion
            // closely.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl CoordinatorService {
    /// Lets only an operator's command through (a certificate of the CA naming
    /// `spiffe://etcd-operator/operator`), on the control port.
    /// Asks for a rotation of the etcd CA of a cluster: the planner begins it at its next
    /// pass (after anything more urgent), unless one is under way.
    pub(crate) fn ask_for_ca_rotation(&self, key: &ClusterKey) -> Result<String, Status> {
        let message = self
            .registry
            .with_existing(key, |entry, _| {
                let rotating = entry.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| c.reason == "CARotating")
                });
                if rotating {
                    "a rotation of the etcd CA is under way already".to_string()
                } else {
                    entry.ca_rotation_requested = true;
                    "a rotation of the etcd CA is asked for; the status says CARotating while it runs".to_string()
                }
            })
            .ok_or_else(|| Status::not_found(format!("cluster {key} is not managed here")))?;
        info!(cluster = %key, "asked to rotate the etcd CA");
        self.registry.notify_cluster(key);
        Ok(message)
    }

    fn only_an_operator<T>(&self, request: &Request<T>, method: &str) -> Result<(), Status> {
        let caller = self.caller(request, method)?;
        if caller == PeerIdentity::Operator {
            return Ok(());
        }
        let refused = Status::permission_denied(format!(
            "{caller} may not call {method}: only an operator's command may (a certificate of the state directory's CA)"
        ));
        self.refused(method, &refused);
        Err(refused)
    }

    /// The cluster named `name` (in `namespace`, when given) that the registry knows and the
    /// caller may see.
    fn find_cluster(
        &self,
        name: &str,
        namespace: &str,
        visible: &Visible,
    ) -> Result<ClusterKey, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let keys: Vec<ClusterKey> = self
            .registry
            .keys()
            .into_iter()
            .filter(|k| visible.shows(&k.namespace))
            .filter(|k| k.name == name && (namespace.is_empty() || k.namespace == namespace))
            .collect();
        match keys.as_slice() {
            [key] => Ok(key.clone()),
            [] => Err(Status::not_found(format!("no cluster named {name:?}"))),
            _ => Err(Status::failed_precondition(format!(
                "{} clusters are named {name:?}: give the namespace",
                keys.len()
            ))),
        }
    }
}

/// How long TakeBackup waits for the backup to be taken and proven.
const TAKE_BACKUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1800);

/// How long DeleteMember waits for the planner to delete the member.
const DELETE_MEMBER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_operator::proto::{ChangeKind, ClusterRef};

    fn grant_request() -> GrantRequest {
        GrantRequest {
            cluster: Some(ClusterRef {
                namespace: String::new(),
                name: "c".into(),
            }),
            member_name: "c-0001".into(),
            kind: ChangeKind::Remove as i32,
            peer_url: String::new(),
        }
    }

    #[tokio::test]
    async fn changing_methods_need_a_certificate_and_reading_ones_do_not() {
        let registry = Registry::new();
        registry.with(&ClusterKey::local("c"), |entry, _| {
            entry.runtime_members = vec!["c-0001".into()];
        });
        for access in [Access::ReadOnly, Access::Closed, Access::Authenticated] {
            let service = CoordinatorService::new(registry.clone(), access);
            // No TLS connection info at all: nobody is identified.
            let status = service
                .request_grant(Request::new(grant_request()))
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{access:?}");
            // The operator's methods too: nothing is deleted, no backup is asked for.
            let status = service
                .delete_member(Request::new(DeleteMemberRequest {
                    cluster: grant_request().cluster,
                    member_name: "c-0001".into(),
                }))
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{access:?}");
            let status = service
                .take_backup(Request::new(TakeBackupRequest {
                    cluster: grant_request().cluster,
                }))
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{access:?}");
            let status = service
                .register(Request::new(RegisterRequest {
                    cluster: grant_request().cluster,
                    member_name: "c-0001".into(),
                    ..Default::default()
                }))
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{access:?}");
            // The read-only methods: to anyone on local mode's status port only; on
            // Kubernetes' status port to nobody, on the control port to a certificate.
            let listed = service
                .list_clusters(Request::new(ListClustersRequest::default()))
                .await;
            let got = service
                .get_cluster(Request::new(GetClusterRequest {
                    name: "c".into(),
                    namespace: String::new(),
                }))
                .await;
            let backups = service
                .list_backups(Request::new(ListBackupsRequest {
                    name: "c".into(),
                    namespace: String::new(),
                }))
                .await;
            if access == Access::ReadOnly {
                assert!(listed.is_ok());
            } else {
                for code in [
                    listed.unwrap_err().code(),
                    got.unwrap_err().code(),
                    backups.unwrap_err().code(),
                ] {
                    assert_eq!(code, tonic::Code::Unauthenticated, "{access:?}");
                }
            }
        }
        assert!(
            registry.with(&ClusterKey::local("c"), |entry, grants| {
                entry.registrations.is_empty()
                    && grants
                        .in_flight(&ClusterKey::local("c"), now_ms())
                        .is_none()
            }),
            "nothing was recorded"
        );
        assert!(
            registry.with(&ClusterKey::local("c"), |entry, _| {
                entry.delete_requested.is_empty() && entry.backups.requested_at.is_none()
            }),
            "no deletion and no backup was asked for"
        );
        assert_eq!(
            registry
                .metrics()
                .refused_calls
                .get_or_create(&crate::metrics::RefusedLabels {
                    method: "RequestGrant".into()
                })
                .get(),
            3
        );
    }

    #[test]
    fn a_reader_sees_its_namespace_or_all() {
        assert!(Visible::All.shows("team-a") && Visible::All.shows(""));
        let team_a = Visible::Namespace("team-a".into());
        assert!(team_a.shows("team-a"));
        assert!(!team_a.shows("team-b") && !team_a.shows(""));
    }

    #[test]
    fn a_member_speaks_only_for_itself() {
        let service = CoordinatorService::new(Registry::new(), Access::Authenticated);
        let key = ClusterKey::new("ns", "c");
        let member = PeerIdentity::member(&key, "c-0001");
        assert!(service.speaks_for(&member, &key, "c-0001", "m").is_ok());
        for (k, m) in [
            (key.clone(), "c-0002"),
            (ClusterKey::new("other", "c"), "c-0001"),
            (ClusterKey::local("c"), "c-0001"),
        ] {
            let status = service.speaks_for(&member, &k, m, "m").unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{k} {m}");
        }
        let status = service
            .speaks_for(&PeerIdentity::Coordinator, &key, "c-0001", "m")
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }
}
