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
    /// Anything else the runtime reports.
    #[error("{0}")]
    Other(String),
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

    /// Deletes member `name` and its data.
    fn delete_member(
        &self,
        cluster: &ClusterKey,
        name: &str,
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
            self.control()
                .etcd_client(cluster, &ca)
                .map(Some)
                .map_err(|e| RuntimeError::Other(format!("certificates: {e}")))
        }
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
