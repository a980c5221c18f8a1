//! Where members live. The planner is the same everywhere; a runtime creates, deletes and
//! restarts members (local processes, or Pods on Kubernetes) and says which are running.

use std::{future::Future, sync::Arc};

use etcd_operator::{ClusterKey, EtcdVersion, grant::UnixMillis, pki::Authority, tls::ClientTls};
use thiserror::Error;

pub use crate::plan::MemberData;
use crate::security::ControlPlane;

/// One member as the runtime has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// `<cluster>-<NNNN>`.
    pub name: String,
    /// The ordinal.
    pub ordinal: u32,
    /// The member's process or Pod runs.
    pub running: bool,
    /// Since when it has not been running.
    pub down_since: Option<UnixMillis>,
    /// The etcd version it runs (or will run) with.
    pub version: EtcdVersion,
    /// Created as the seed that bootstraps the cluster.
    pub seed: bool,
    /// The member's etcd client URL.
    pub client_url: String,
    /// The member's etcd peer URL.
    pub peer_url: String,
    /// The sidecar's gRPC URL (mutual TLS).
    pub sidecar_url: String,
    /// etcd serves clients and peers over TLS (its URLs are https).
    pub etcd_tls: bool,
    /// Whether its data survives while it is down.
    pub data: MemberData,
    /// The runtime starts it again only when the planner asks ([`Runtime::start_member`]);
    /// false where something else restarts it (kubelet, in a Pod that exists).
    pub restart_on_request: bool,
    /// Its restarts since it last ran steadily.
    pub restarts: RestartHistory,
}

/// A member's restarts since it last ran steadily.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartHistory {
    /// Restarts since it last ran steadily.
    pub count: u32,
    /// Its first exit since it last ran steadily (`None` while it runs steadily).
    pub failing_since: Option<UnixMillis>,
    /// How it last ended ("exit status 1", "killed by SIGKILL", "Pod deleted"); empty when
    /// it never ended or the runtime cannot tell.
    pub last_exit: String,
}

/// The ordinal after `ordinal`, which member `name` of `cluster` would leave next: an
/// error for the last one there is (a counter edited by hand), which no member may take,
/// since the next one could only wrap around to an ordinal used before.
pub fn ordinal_after(ordinal: u32, name: &str, cluster: &ClusterKey) -> Result<u32, RuntimeError> {
    ordinal.checked_add(1).ok_or_else(|| {
        RuntimeError::Invalid(format!(
            "{name} of {cluster} would take the last ordinal there is ({ordinal}): the next member could only reuse one, and ordinals are never reused (the next-ordinal counter was set that high by hand?)"
        ))
    })
}

/// How long a member must run before its restarts are forgotten (kubelet forgets after ten
/// minutes; a member that runs this long without exiting is steady again).
pub const STEADY_AFTER_MS: UnixMillis = 10_000;

/// A runtime operation that failed.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The member is unknown.
    #[error("no member {0}")]
    NoSuchMember(String),
    /// The runtime cannot run this version.
    #[error("{0}")]
    VersionUnavailable(String),
    /// The Kubernetes API refused or failed a call; its HTTP status code is kept.
    #[error("{context}: {message}")]
    Api {
        /// What was being done.
        context: String,
        /// The API's status code (None when the call did not get an answer).
        code: Option<u16>,
        /// What the API (or the transport) said.
        message: String,
    },
    /// Certificates could not be issued or read.
    #[error("certificates: {0}")]
    Certificates(String),
    /// An object the runtime reads is not as it must be (a name, an annotation, a record).
    #[error("{0}")]
    Invalid(String),
    /// Anything else the runtime reports.
    #[error("{0}")]
    Other(String),
    /// The cluster's decision record cannot be read or written.
    #[error("{0}")]
    Record(#[from] crate::record::RecordError),
    /// The coordinator's term ended (or had ended) before the write: not sent, or given
    /// up at the term's deadline.
    #[error("{0}: the coordinator's term ended, so it was not written")]
    TermEnded(String),
}

impl RuntimeError {
    /// A kube error, with what was being done; the status code is kept.
    pub fn api(context: &str, e: kube::Error) -> Self {
        let (code, message) = match &e {
            kube::Error::Api(status) => (Some(status.code), status.message.clone()),
            other => (None, other.to_string()),
        };
        Self::Api {
            context: context.to_string(),
            code,
            message,
        }
    }

    /// A stable word for the kind of failure, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::NoSuchMember(_) => "no_such_member",
            Self::VersionUnavailable(_) => "version_unavailable",
            Self::Api {
                code: Some(409), ..
            } => "api_conflict",
            Self::Api {
                code: Some(404), ..
            } => "api_not_found",
            Self::Api {
                code: Some(401 | 403),
                ..
            } => "api_forbidden",
            Self::Api {
                code: Some(422), ..
            } => "api_invalid",
            Self::Api {
                code: Some(500..), ..
            } => "api_server",
            Self::Api { code: None, .. } => "api_unreachable",
            Self::Api { .. } => "api",
            Self::Certificates(_) => "certificates",
            Self::Invalid(_) => "invalid",
            Self::Other(_) => "other",
            Self::Record(_) => "record",
            Self::TermEnded(_) => "term_ended",
        }
    }
}

/// What the coordinator needs from a place members live in.
pub trait Runtime: Send + Sync + 'static {
    /// The cluster's members.
    fn members(
        &self,
        cluster: &ClusterKey,
    ) -> impl Future<Output = Result<Vec<MemberInfo>, RuntimeError>> + Send;

    /// The next ordinal never used in this cluster.
    fn next_ordinal(
        &self,
        cluster: &ClusterKey,
    ) -> impl Future<Output = Result<u32, RuntimeError>> + Send;

    /// Whether this runtime can run `version` (a binary or image exists).
    fn check_version(&self, version: EtcdVersion) -> Result<(), RuntimeError>;

    /// Where backups go when the spec names no storage (local mode: `<state>/backups`);
    /// `None` where there is no sensible default (Kubernetes: a Pod's disk is no place for
    /// its own backups).
    fn default_backup_storage(&self) -> Option<etcd_operator::proto::BackupStorage> {
        None
    }

    /// The identity `cluster`'s backups are bound to: on Kubernetes its `EtcdCluster`'s UID;
    /// in local mode a random id kept in its state directory, created once.
    fn backup_identity(
        &self,
        cluster: &ClusterKey,
        resource: &etcd_operator::resource::EtcdCluster,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// The credentials for the coordinator's own calls to `storage` of `cluster` (listing,
    /// retention, finding and checking a restore's backup), or why there are none. Never
    /// the coordinator's ambient credentials on Kubernetes: exactly the Secret the storage
    /// names, read by name in the cluster's namespace.
    fn storage_credentials(
        &self,
        cluster: &ClusterKey,
        storage: &etcd_operator::proto::BackupStorage,
    ) -> impl Future<Output = Result<etcd_sidecar::backup::Credentials, String>> + Send;

    /// Creates member `name` running `version`; `seed` marks the bootstrapping member;
    /// `etcd_tls` gives it etcd certificates and https URLs. The member's certificates are
    /// issued before it starts.
    fn create_member(
        &self,
        cluster: &ClusterKey,
        name: &str,
        version: EtcdVersion,
        seed: bool,
        etcd_tls: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The spec as last read, before each pass: a runtime that starts members without
    /// the spec at hand (local processes) keeps what they need of it (etcd's flags from
    /// `spec.maintenance`, applied to members started after a change).
    fn note_spec(
        &self,
        _cluster: &ClusterKey,
        _spec: &etcd_operator::resource::EtcdClusterSpec,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Deletes member `name` and its data. With `hand_over` (it leads) it is stopped
    /// gracefully, so that etcd hands leadership over first; otherwise it may be stopped at
    /// once, as nothing it holds is kept.
    fn delete_member(
        &self,
        cluster: &ClusterKey,
        name: &str,
        hand_over: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The coordinator's side of the control path: its certificate, the CA members'
    /// certificates are issued under, and the clients it keeps.
    fn control(&self) -> &ControlPlane;

    /// The cluster's etcd CA as it is kept (local files, or a Secret); None when the cluster
    /// has none (it does not use TLS). Never creates one.
    fn existing_etcd_ca(
        &self,
        cluster: &ClusterKey,
    ) -> impl Future<Output = Result<Option<Arc<Authority>>, RuntimeError>> + Send;

    /// TLS for calling the sidecar of `member`: the coordinator's certificate, and the
    /// member's identity expected of the sidecar.
    fn sidecar_tls(&self, cluster: &ClusterKey, member: &str) -> Arc<ClientTls> {
        self.control().sidecar_client(cluster, member)
    }

    /// The coordinator's own etcd client TLS for `cluster` (a client certificate of its etcd
    /// CA, kept in memory by [`ControlPlane::etcd_client`]); None when the cluster has no etcd
    /// CA (it does not use TLS).
    fn etcd_client_tls(
        &self,
        cluster: &ClusterKey,
    ) -> impl Future<Output = Result<Option<etcd_client::TlsOptions>, RuntimeError>> + Send {
        async move {
            let Some(ca) = self.existing_etcd_ca(cluster).await? else {
                return Ok(None);
            };
            let tls = self
                .control()
                .etcd_client(cluster, &ca)
                .map_err(|e| RuntimeError::Certificates(e.to_string()))?;
            // During a CA rotation the members serve leaves of either CA: both trusted.
            Ok(Some(match self.etcd_trust(cluster).await? {
                Some(bundle) => tls.ca_certificate(etcd_client::Certificate::from_pem(bundle)),
                None => tls,
            }))
        }
    }

    /// The etcd CA certificates trusted for `cluster` besides its issuing CA, PEM: during a
    /// rotation, the other CA of the two; `None` outside one (or without TLS).
    fn etcd_trust(
        &self,
        _cluster: &ClusterKey,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send {
        async { Ok(None) }
    }

    /// Whether this runtime rotates etcd CAs ([`Runtime::set_etcd_ca_rotation`]): where it
    /// does not, no rotation begins, and the `CertificatesValid` condition warns before
    /// the CA expires.
    fn rotates_etcd_ca(&self) -> bool {
        false
    }

    /// Brings the storage of `cluster`'s etcd CA to `phase` of a rotation
    /// ([`crate::plan::ca_rotation`]): on the way into Trust a new CA is made and kept
    /// beside the old one, unless one was made before (never a third); Reissue makes the
    /// new CA the issuer; Drop leaves it alone trusted; `None` ends the rotation (the new CA
    /// becomes the cluster's CA, the old one is forgotten). Never moves a phase back: returns
    /// the phase in effect. The members' files follow at the next
    /// [`Runtime::renew_certificates`].
    fn set_etcd_ca_rotation(
        &self,
        cluster: &ClusterKey,
        _phase: Option<crate::plan::CaPhase>,
    ) -> impl Future<Output = Result<Option<crate::plan::CaPhase>, RuntimeError>> + Send {
        let cluster = cluster.to_string();
        async move {
            Err(RuntimeError::Other(format!(
                "{cluster}: this runtime does not rotate the etcd CA"
            )))
        }
    }

    /// The holders of etcd leaves of `cluster` (members by name, `client` for the
    /// applications' bundle) whose leaves are not issued by its issuing etcd CA: what a
    /// rotation waits for before it drops the old CA. Positive proof only: a holder whose
    /// files cannot be read is listed.
    fn etcd_leaves_elsewhere(
        &self,
        cluster: &ClusterKey,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send {
        let cluster = cluster.to_string();
        async move {
            Err(RuntimeError::Other(format!(
                "{cluster}: this runtime does not rotate the etcd CA"
            )))
        }
    }

    /// The digest ([`etcd_operator::pki::etcd_files_digest`]) of the etcd files `member`'s
    /// runtime holds for it, where the member reads them only after a delay (a Secret the
    /// kubelet writes into its Pod later): a restart that must read new files waits until
    /// the sidecar reports this digest of what it has. `None` where the member reads what the
    /// runtime wrote at once (local files): nothing to wait for.
    fn etcd_files_digest(
        &self,
        _cluster: &ClusterKey,
        _member: &str,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send {
        async { Ok(None) }
    }

    /// Whether [`Runtime::restart_member`] restarts a member on the version it runs
    /// already (local mode: the process is started again); where it does not (a Pod whose
    /// image stays is not restarted), the sidecar restarts etcd itself after its handoff
    /// (`HandoffRequest.restart_in_place`).
    fn restarts_on_same_version(&self) -> bool {
        true
    }

    /// Issues the certificates of every member that lacks them and renews those with less
    /// than a third of their lifetime left (the applications' client bundle too); returns
    /// how many bundles changed. Called on a timer of its own, so that a long action (an
    /// upgrade) never delays a renewal.
    fn renew_certificates(
        &self,
        cluster: &ClusterKey,
    ) -> impl Future<Output = Result<usize, RuntimeError>> + Send;

    /// Starts member `name` again on its data, with the version it last ran, after its
    /// process or Pod went away ([`crate::plan::Action::RestartMember`]).
    fn start_member(
        &self,
        cluster: &ClusterKey,
        name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops member `name` and keeps its data (a survivor of a lost cluster kept until its
    /// restore runs); the member stays the runtime's until deleted. Where stopping would
    /// lose the data (a Pod without a claim), it is left as it is.
    fn stop_member(
        &self,
        cluster: &ClusterKey,
        name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Restarts member `name` on its data with `version` (after its upgrade handoff).
    fn restart_member(
        &self,
        cluster: &ClusterKey,
        name: &str,
        version: EtcdVersion,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// Renews the certificates of every cluster in `registry` when due, every `every`, on a
/// timer of its own (an action under way, such as an upgrade, never delays a renewal).
pub async fn renew_certificates_forever<R: Runtime>(
    runtime: std::sync::Arc<R>,
    registry: crate::registry::Registry,
    every: std::time::Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for key in registry.keys() {
            match runtime.renew_certificates(&key).await {
                Ok(0) => {}
                Ok(n) => {
                    registry
                        .metrics()
                        .certificates_issued
                        .get_or_create(&crate::metrics::ClusterLabels {
                            cluster: key.to_string(),
                        })
                        .inc_by(n as u64);
                }
                Err(e) => {
                    tracing::warn!(cluster = %key, error = %e, "could not renew certificates")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> RuntimeError {
        RuntimeError::api(
            "creating the Pod",
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "refused".into(),
                ..Default::default()
            })),
        )
    }

    #[test]
    fn kubernetes_status_codes_survive_into_the_category() {
        assert_eq!(api(409).category(), "api_conflict");
        assert_eq!(api(404).category(), "api_not_found");
        assert_eq!(api(403).category(), "api_forbidden");
        assert_eq!(api(422).category(), "api_invalid");
        assert_eq!(api(503).category(), "api_server");
        assert_eq!(api(400).category(), "api");
        assert!(matches!(
            api(409),
            RuntimeError::Api {
                code: Some(409),
                ..
            }
        ));
        assert_eq!(api(409).to_string(), "creating the Pod: refused");
        assert_eq!(
            RuntimeError::Certificates("bad key".into()).category(),
            "certificates"
        );
    }
}
