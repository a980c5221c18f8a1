//! The member's side of the coordinator: registering for a role (seed or joiner), asking
//! for a membership grant and releasing it with the outcome, and refusing the calls and
//! grants of an older coordinator term. A connection that reaches a coordinator that does
//! not lead is replaced by a new one, which the coordinator's Service routes to the leader.

use std::{sync::Arc, time::Duration};

use etcd_operator::{
    proto::{
        ChangeKind, GrantRequest, GrantResponse, MemberRole, RegisterRequest, ReleaseGrantRequest,
        RestoreSource, coordinator_client::CoordinatorClient,
    },
    tls::ClientTls,
};
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::Member;
use crate::error::SidecarError;

/// How soon an initial member asks again for the peer URLs of the others.
const INITIAL_PEERS_POLL: Duration = Duration::from_millis(100);

/// The lease of the grant this member holds, as the member measures it: from when it sent
/// the request that the coordinator answered, so that it runs out before the coordinator's
/// (which counts from when it received it), with a tenth of the lease to spare.
#[derive(Debug, Clone)]
pub(super) struct GrantLease {
    /// The grant's id.
    pub id: String,
    /// Until when this member may act under it.
    pub valid_until: Instant,
    /// When the request that last renewed it was sent.
    pub renewed_at: Instant,
    /// How often it is renewed: a fifth of its lease, so that a few renewals may fail in a
    /// row before it lapses.
    pub renew_every: Duration,
    /// Why the coordinator refused a renewal, if it did: the grant is gone.
    pub lost: Option<String>,
    /// Alive while the work that holds the grant is: a holder that ended without giving it
    /// back (its task cancelled, or panicked) stops renewing it, and it is given back.
    pub holder: std::sync::Weak<()>,
    /// Taken by the coordinator for work it asked of this member: renewed while the work
    /// runs, given back by the coordinator (never by this member).
    pub delegated: bool,
}

/// A grant held, and the token of the work that holds it: dropping it (the work ended,
/// however) ends the renewals.
pub(super) struct HeldGrant {
    response: GrantResponse,
    _holder: Arc<()>,
}

impl std::ops::Deref for HeldGrant {
    type Target = GrantResponse;

    fn deref(&self) -> &GrantResponse {
        &self.response
    }
}

/// The lease the coordinator answered (`lease_ms`; the default from a coordinator that
/// does not say).
fn lease_of(lease_ms: u32) -> Duration {
    if lease_ms == 0 {
        etcd_operator::grant::GRANT_LEASE
    } else {
        Duration::from_millis(u64::from(lease_ms))
    }
}

/// How long a grant lasts after a request the coordinator answered at `lease_ms`, as this
/// member counts it.
fn lease_span(lease_ms: u32) -> Duration {
    lease_of(lease_ms).mul_f64(0.9)
}

/// How often a grant of lease `lease_ms` is renewed.
fn renew_every(lease_ms: u32) -> Duration {
    (lease_of(lease_ms) / 5).min(etcd_operator::grant::GRANT_RENEW_EVERY)
}

/// The role the coordinator gave at registration.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Role {
    /// Bootstrap a one-member cluster (from `restore` when given).
    Seed {
        /// The backup to create the cluster from.
        restore: Option<Box<RestoreSource>>,
    },
    /// Bootstrap a new cluster together with the other initial members.
    Initial {
        /// `name=peerURL,...` of every initial member.
        initial_cluster: String,
        /// The token every initial member uses.
        token: String,
    },
    /// Join the cluster that answers on `endpoints` as a learner.
    Join {
        /// Client URLs of members of the cluster.
        endpoints: Vec<String>,
    },
}

/// A new (lazily connecting) channel to the coordinator.
pub(super) fn coordinator_channel(
    url: &str,
    tls: &Arc<ClientTls>,
) -> Result<Channel, SidecarError> {
    etcd_operator::tls::channel(
        url,
        Arc::clone(tls),
        Duration::from_secs(2),
        Some(Duration::from_secs(10)),
    )
    .map_err(|e| SidecarError::Refused(format!("coordinator URL: {e}")))
}

impl Member {
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
        if matches!(
            status.code(),
            Code::PermissionDenied | Code::NotFound | Code::Unavailable
        ) {
            debug!(code = ?status.code(), "the coordinator's answer asks for another connection");
            self.reconnect_coordinator();
        }
    }

    /// Replaces the connection to the coordinator with a new one, which the coordinator's
    /// Service routes to the leader: after an answer from a coordinator that does not lead
    /// ([`Member::coordinator_failed`]) or from an older coordinator term.
    pub fn reconnect_coordinator(&self) {
        match coordinator_channel(&self.cfg.coordinator_url, &self.coordinator_tls) {
            Ok(channel) => {
                debug!("connecting to the coordinator again");
                *self.coordinator.lock().unwrap_or_else(|e| e.into_inner()) =
                    CoordinatorClient::new(channel);
            }
            Err(e) => warn!(error = %e, "cannot connect to the coordinator again"),
        }
    }

    /// The newest coordinator term this member has seen.
    pub fn newest_epoch(&self) -> u64 {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a call or grant of the coordinator term `epoch`: refused when a newer term
    /// has been seen (a deposed coordinator's late call), else remembered as the newest:
    /// written to the member directory before the call is acted on, so that a restarted
    /// sidecar refuses the older terms too. A term that cannot be recorded is refused.
    pub fn admit_epoch(&self, epoch: u64, what: &str) -> Result<(), SidecarError> {
        let mut newest = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        if epoch < *newest {
            warn!(
                epoch,
                newest = *newest,
                what,
                "refused: from an older coordinator term"
            );
            return Err(SidecarError::Refused(format!(
                "{what} comes from coordinator term {epoch}, older than term {} already seen: a coordinator that no longer leads is not obeyed",
                *newest
            )));
        }
        if epoch > *newest {
            self.dir.save_epoch(epoch).map_err(|e| {
                warn!(epoch, error = %e, "cannot record the coordinator term; refused");
                SidecarError::Io(e)
            })?;
            info!(epoch, previous = *newest, "a newer coordinator term");
            *newest = epoch;
        }
        Ok(())
    }

    /// Asks the coordinator (briefly) where the cluster is, for the restart decision.
    pub(super) async fn try_register_endpoints(&self) -> Vec<String> {
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
            // Unreadable data is not said to be absent.
            has_data: self.dir.has_etcd_data().unwrap_or(true),
            member_id: s.member_id,
            etcd_version: self.cfg.etcd_version.to_string(),
        }
    }

    /// Registers until the coordinator gives a role (and, for a joiner, endpoints; for a
    /// seed that restores, the backup; for an initial member, the initial cluster).
    pub(super) async fn register(&self) -> Result<Role, SidecarError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.coordinator().register(self.register_request()).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if let Err(e) =
                        self.admit_epoch(resp.coordinator_epoch, "a registration answer")
                    {
                        warn!(error = %e, "registration answer ignored");
                        self.reconnect_coordinator();
                    } else {
                        match resp.role() {
                            MemberRole::Seed => {
                                return Ok(Role::Seed {
                                    restore: resp.restore.map(Box::new),
                                });
                            }
                            MemberRole::Join if !resp.cluster_client_urls.is_empty() => {
                                return Ok(Role::Join {
                                    endpoints: resp.cluster_client_urls,
                                });
                            }
                            MemberRole::Initial
                                if !resp.initial_cluster.is_empty()
                                    && !resp.initial_cluster_token.is_empty() =>
                            {
                                return Ok(Role::Initial {
                                    initial_cluster: resp.initial_cluster,
                                    token: resp.initial_cluster_token,
                                });
                            }
                            // An initial member whose peers are still being created: their
                            // URLs come within moments.
                            MemberRole::Initial => {
                                sleep(INITIAL_PEERS_POLL).await;
                                continue;
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
    pub(super) async fn acquire_grant(
        &self,
        kind: ChangeKind,
        wait: Option<Duration>,
    ) -> Result<HeldGrant, SidecarError> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            let sent_at = Instant::now();
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
                        self.reconnect_coordinator();
                        Duration::from_secs(1)
                    } else if resp.granted {
                        info!(grant = %resp.grant_id, kind = ?kind, lease_ms = resp.lease_ms, "membership grant received");
                        let holder = Arc::new(());
                        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(GrantLease {
                            id: resp.grant_id.clone(),
                            valid_until: sent_at + lease_span(resp.lease_ms),
                            renewed_at: sent_at,
                            renew_every: renew_every(resp.lease_ms),
                            lost: None,
                            holder: Arc::downgrade(&holder),
                            delegated: false,
                        });
                        self.state
                            .send_modify(|s| s.held_grant = Some((resp.grant_id.clone(), kind)));
                        return Ok(HeldGrant {
                            response: resp,
                            _holder: holder,
                        });
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

    /// Refuses to go on with a membership change when the grant it is made under is no
    /// longer this member's: its lease ran out (renewals did not reach the coordinator) or
    /// the coordinator refused a renewal. Called before every membership call.
    pub(super) fn grant_in_force(&self) -> Result<(), SidecarError> {
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match lease {
            None => Err(SidecarError::Refused(
                "no membership grant is held: the change is not made".into(),
            )),
            Some(GrantLease {
                id,
                lost: Some(why),
                ..
            }) => Err(SidecarError::Refused(format!(
                "grant {id} is no longer held ({why}): the change is not made"
            ))),
            Some(lease) if Instant::now() >= lease.valid_until => {
                Err(SidecarError::Refused(format!(
                    "grant {} lapsed: it could not be renewed in time, so the change is not made",
                    lease.id
                )))
            }
            Some(_) => Ok(()),
        }
    }

    /// Renews, while the returned token lives, the grant `grant_id` the coordinator took for
    /// work it asked of this member (an upgrade's handoff, a forced new cluster, a
    /// defragmentation): the grant lasts as long as the work here does, even if the
    /// coordinator that took it stops meanwhile. None when no grant was named.
    pub(super) fn hold_delegated(&self, grant_id: &str) -> Option<Arc<()>> {
        if grant_id.is_empty() {
            return None;
        }
        let holder = Arc::new(());
        let now = Instant::now();
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(GrantLease {
            id: grant_id.to_string(),
            valid_until: now + lease_span(0),
            renewed_at: now,
            renew_every: renew_every(0),
            lost: None,
            holder: Arc::downgrade(&holder),
            delegated: true,
        });
        Some(holder)
    }

    /// Renews the grant this member holds every [`GRANT_RENEW_EVERY`] for as long as it
    /// holds it: the coordinator gives no other grant meanwhile, however long the change
    /// takes (a learner catching up on a large database). Runs for the life of the sidecar.
    ///
    /// [`GRANT_RENEW_EVERY`]: etcd_operator::grant::GRANT_RENEW_EVERY
    pub async fn renew_grants(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // A grant whose work ended without giving it back is given back now.
            let abandoned = {
                let mut held = self.lease.lock().unwrap_or_else(|e| e.into_inner());
                match held.as_ref() {
                    Some(l) if l.holder.strong_count() == 0 => held.take(),
                    _ => None,
                }
            };
            if let Some(lease) = abandoned.as_ref().filter(|l| l.delegated) {
                debug!(grant = %lease.id, "the work the coordinator's grant was taken for ended here");
                continue;
            }
            if let Some(lease) = abandoned {
                warn!(grant = %lease.id, "the work holding the grant ended without giving it back: giving it back");
                self.state.send_modify(|s| s.held_grant = None);
                let request = ReleaseGrantRequest {
                    cluster: Some((&self.cfg.cluster).into()),
                    grant_id: lease.id.clone(),
                    succeeded: false,
                    member_id: 0,
                    error: "the work holding it ended".into(),
                    member_name: self.cfg.name.clone(),
                };
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    self.coordinator().release_grant(request),
                )
                .await;
                continue;
            }
            let due = self
                .lease
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .filter(|l| l.lost.is_none() && l.renewed_at.elapsed() >= l.renew_every);
            let Some(lease) = due else {
                continue;
            };
            let sent_at = Instant::now();
            let request = etcd_operator::proto::RenewGrantRequest {
                cluster: Some((&self.cfg.cluster).into()),
                grant_id: lease.id.clone(),
                member_name: self.cfg.name.clone(),
            };
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                self.coordinator().renew_grant(request),
            )
            .await;
            let mut held = self.lease.lock().unwrap_or_else(|e| e.into_inner());
            let Some(current) = held.as_mut().filter(|l| l.id == lease.id) else {
                continue;
            };
            match answer {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    if self
                        .admit_epoch(resp.coordinator_epoch, "a grant renewal")
                        .is_err()
                    {
                        continue;
                    }
                    if resp.granted {
                        current.valid_until = sent_at + lease_span(resp.lease_ms);
                        current.renewed_at = sent_at;
                        current.renew_every = renew_every(resp.lease_ms);
                    } else {
                        warn!(grant = %lease.id, reason = %resp.reason, "the coordinator refused to renew the grant: the change it allows stops");
                        current.lost = Some(resp.reason);
                    }
                }
                Ok(Err(status)) => {
                    debug!(grant = %lease.id, error = %status.message(), "grant renewal failed");
                    self.coordinator_failed(&status);
                    current.renewed_at = sent_at;
                }
                Err(_) => {
                    debug!(grant = %lease.id, "grant renewal not answered in time");
                    current.renewed_at = sent_at;
                }
            }
        }
    }

    pub(super) async fn release_grant(
        &self,
        grant: &GrantResponse,
        outcome: Result<u64, &SidecarError>,
    ) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::SidecarConfig;

    fn cfg(member_dir: &Path) -> SidecarConfig {
        SidecarConfig {
            cluster: etcd_operator::ClusterKey::local("c"),
            name: "c-0001".into(),
            member_dir: member_dir.to_path_buf(),
            peer_url: "http://127.0.0.1:2380".into(),
            client_url: "http://127.0.0.1:2379".into(),
            listen_peer_url: "http://127.0.0.1:2380".into(),
            listen_client_url: "http://127.0.0.1:2379".into(),
            listen_metrics_url: None,
            coordinator_url: "https://127.0.0.1:7400".into(),
            grpc_addr: "127.0.0.1:7401".parse().unwrap(),
            grpc_url: "https://127.0.0.1:7401".into(),
            etcd_version: etcd_operator::version::DEFAULT_VERSION,
            etcd_binary: PathBuf::from("/bin/false"),
            etcdutl: None,
            storage_credentials_dir: None,
            cluster_endpoints: vec![],
            report_interval: Duration::from_secs(1),
            etcd_log_level: "warn".into(),
            tls: etcd_operator::tls::TlsFiles {
                cert: "/t/tls.crt".into(),
                key: "/t/tls.key".into(),
                ca: "/t/ca.crt".into(),
            },
            health_addr: None,
            etcd_tls: None,
            quota_backend_bytes: None,
            auto_compaction: None,
            upgrade_snapshot_deadline: Duration::from_secs(60),
        }
    }

    /// A sidecar restarted on its member directory still refuses the terms older than the
    /// newest it obeyed before: a deposed coordinator's late Leave, Handoff or
    /// ForceNewCluster is not obeyed because the sidecar happened to restart in between.
    #[tokio::test]
    async fn a_restarted_sidecar_refuses_the_terms_older_than_the_newest_it_obeyed() {
        etcd_operator::tls::install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        let member = Member::new(cfg(dir.path())).unwrap();
        member.admit_epoch(5, "a registration answer").unwrap();
        member.admit_epoch(1_000, "Handoff").unwrap();
        assert!(member.admit_epoch(999, "Leave").is_err());
        drop(member);

        let again = Member::new(cfg(dir.path())).unwrap();
        assert_eq!(again.newest_epoch(), 1_000);
        let refused = again
            .admit_epoch(999, "Leave")
            .expect_err("a term older than one obeyed before the restart");
        assert!(
            refused.to_string().contains("older than term 1000"),
            "{refused}"
        );
        again.admit_epoch(1_000, "Leave").unwrap();
        again.admit_epoch(1_001, "Leave").unwrap();
        drop(again);
        assert_eq!(Member::new(cfg(dir.path())).unwrap().newest_epoch(), 1_001);

        // A record that cannot be read stops the sidecar rather than forgetting the term.
        std::fs::write(dir.path().join("coordinator-epoch"), b"garbage").unwrap();
        assert!(Member::new(cfg(dir.path())).is_err());
    }
}
