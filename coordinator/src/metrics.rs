//! Prometheus metrics and the `/healthz`, `/readyz`, `/metrics` HTTP endpoints.
//!
//! Labels are fixed words (action kinds, error categories, grant kinds) and cluster keys,
//! never `Debug` strings.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry as PromRegistry,
};
use tokio::net::TcpListener;

/// Labels naming a cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// `namespace/name`, or `name` in local mode.
    pub cluster: String,
}

/// Labels of a planned action.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The cluster.
    pub cluster: String,
    /// The action kind (`create_member`, `wait`, ...).
    pub action: String,
}

/// Labels of a failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The cluster.
    pub cluster: String,
    /// The error category.
    pub category: String,
}

/// Labels of a grant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// The cluster.
    pub cluster: String,
    /// The change kind.
    pub kind: String,
}

/// Labels naming a member.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    /// The cluster.
    pub cluster: String,
    /// The member's name.
    pub member: String,
}

/// Labels of a member's alarm.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabels {
    /// The cluster.
    pub cluster: String,
    /// The member's name.
    pub member: String,
    /// `NOSPACE`, `CORRUPT` or `DISKFULL`.
    pub alarm: String,
}

/// Labels of a certificate authority.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaLabels {
    /// The cluster.
    pub cluster: String,
    /// `etcd` (the cluster's own) or `control` (the control path's, shared).
    pub ca: String,
}

/// Labels of a refused call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// The gRPC method (a fixed name from the code, never from the caller).
    pub method: String,
}

/// The coordinator's metrics.
pub struct Metrics {
    registry: Mutex<PromRegistry>,
    /// Reconciles by planned action.
    pub reconciles: Family<ActionLabels, Counter>,
    /// Failed actions by category.
    pub action_errors: Family<ErrorLabels, Counter>,
    /// Grants given by kind.
    pub grants: Family<GrantLabels, Counter>,
    /// Healthy voting members.
    pub ready_members: Family<ClusterLabels, Gauge>,
    /// Desired members.
    pub desired_members: Family<ClusterLabels, Gauge>,
    /// 1 while a membership change is in flight.
    pub change_in_flight: Family<ClusterLabels, Gauge>,
    /// Calls refused for want of a certificate, or from the wrong identity, by method.
    pub refused_calls: Family<RefusedLabels, Counter>,
    /// Member certificate bundles issued or renewed, by cluster.
    pub certificates_issued: Family<ClusterLabels, Counter>,
    /// Members started again on their data after their process or Pod went away.
    pub member_restarts: Family<MemberLabels, Counter>,
    /// When the newest proven backup was taken, Unix seconds.
    pub backup_last_success: Family<ClusterLabels, Gauge>,
    /// How long the newest backup took (stream, store, proof), seconds.
    pub backup_duration: Family<ClusterLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Size of the newest backup, bytes.
    pub backup_bytes: Family<ClusterLabels, Gauge>,
    /// Backups that failed.
    pub backup_failures: Family<ClusterLabels, Counter>,
    /// 1 while etcd has the alarm raised on the member.
    pub member_alarms: Family<AlarmLabels, Gauge>,
    /// Members defragmented by the operator.
    pub defragmentations: Family<ClusterLabels, Counter>,
    /// When each CA a cluster's certificates chain to expires, Unix seconds (0: lost).
    pub ca_expiry: Family<CaLabels, Gauge>,
    /// The phase of the etcd CA's rotation under way: 0 none, 1 Trust, 2 Reissue, 3 Drop.
    pub ca_rotation_phase: Family<ClusterLabels, Gauge>,
    /// How long one reconcile takes (observe, plan, act, status), every cluster together.
    pub reconcile_duration: Histogram,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = PromRegistry::with_prefix("etcd_operator");
        let reconciles = Family::<ActionLabels, Counter>::default();
        let action_errors = Family::<ErrorLabels, Counter>::default();
        let grants = Family::<GrantLabels, Counter>::default();
        let ready_members = Family::<ClusterLabels, Gauge>::default();
        let desired_members = Family::<ClusterLabels, Gauge>::default();
        let change_in_flight = Family::<ClusterLabels, Gauge>::default();
        let refused_calls = Family::<RefusedLabels, Counter>::default();
        let certificates_issued = Family::<ClusterLabels, Counter>::default();
        let member_restarts = Family::<MemberLabels, Counter>::default();
        let backup_last_success = Family::<ClusterLabels, Gauge>::default();
        let backup_duration =
            Family::<ClusterLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let backup_bytes = Family::<ClusterLabels, Gauge>::default();
        let backup_failures = Family::<ClusterLabels, Counter>::default();
        let member_alarms = Family::<AlarmLabels, Gauge>::default();
        let defragmentations = Family::<ClusterLabels, Counter>::default();
        let ca_expiry = Family::<CaLabels, Gauge>::default();
        let ca_rotation_phase = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "ca_rotation_phase",
            "The phase of the cluster's etcd CA rotation under way: 0 none, 1 Trust (members trust the old and the new CA), 2 Reissue (leaves issued by the new CA), 3 Drop (the old CA dropped)",
            ca_rotation_phase.clone(),
        );
        registry.register(
            "ca_expiry_timestamp_seconds",
            "When the CA expires (its leaves never outlive it), by cluster and CA: etcd (the cluster's own) or control (the control path's); 0 when the CA is lost",
            ca_expiry.clone(),
        );
        registry.register(
            "member_alarms",
            "1 while the alarm is raised on the member: NOSPACE or CORRUPT (etcd's), DISKFULL (its data volume is full and etcd cannot run)",
            member_alarms.clone(),
        );
        registry.register(
            "defragmentations",
            "Members defragmented by the operator",
            defragmentations.clone(),
        );
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the newest backup proven restorable was taken",
            backup_last_success.clone(),
        );
        registry.register(
            "backup_duration_seconds",
            "How long the newest backup took: stream, store and proof",
            backup_duration.clone(),
        );
        registry.register(
            "backup_bytes",
            "Size of the newest backup",
            backup_bytes.clone(),
        );
        registry.register(
            "backup_failures",
            "Backups that failed",
            backup_failures.clone(),
        );
        registry.register(
            "member_restarts",
            "Members started again on their data after their process or Pod went away",
            member_restarts.clone(),
        );
        registry.register(
            "refused_calls",
            "Calls refused: no client certificate, or one of another identity",
            refused_calls.clone(),
        );
        registry.register(
            "certificates_issued",
            "Member certificate bundles issued or renewed",
            certificates_issued.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles by planned action",
            reconciles.clone(),
        );
        registry.register(
            "action_errors",
            "Actions that failed, by category",
            action_errors.clone(),
        );
        registry.register("grants", "Membership grants given, by kind", grants.clone());
        registry.register(
            "ready_members",
            "Healthy voting members",
            ready_members.clone(),
        );
        registry.register(
            "desired_members",
            "Members the spec asks for",
            desired_members.clone(),
        );
        registry.register(
            "change_in_flight",
            "1 while a membership change is in flight",
            change_in_flight.clone(),
        );
        let reconcile_duration = Histogram::new(RECONCILE_BUCKETS.iter().copied());
        registry.register(
            "reconcile_duration_seconds",
            "How long one reconcile takes: observe, plan, act, status",
            reconcile_duration.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            action_errors,
            grants,
            ready_members,
            desired_members,
            change_in_flight,
            refused_calls,
            certificates_issued,
            member_restarts,
            backup_last_success,
            backup_duration,
            backup_bytes,
            backup_failures,
            member_alarms,
            defragmentations,
            ca_expiry,
            ca_rotation_phase,
            reconcile_duration,
            ready: AtomicBool::new(false),
        }
    }
}

/// The reconcile duration buckets, seconds.
pub const RECONCILE_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// Records one reconcile's duration.
    pub fn observe_reconcile(&self, seconds: f64) {
        self.reconcile_duration.observe(seconds);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }

    /// Marks the coordinator ready (serving, its first reconciles done).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// True once ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// The HTTP routes: `/healthz` (alive), `/readyz` (serving), `/metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
                    .into_response()
            }),
        )
        .with_state(metrics)
}

/// Serves the routes on `addr` until the task is dropped.
pub async fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    axum::serve(listener, router(metrics)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_fixed_labels() {
        let m = Metrics::default();
        m.reconciles
            .get_or_create(&ActionLabels {
                cluster: "etcd-cluster".into(),
                action: "create_member".into(),
            })
            .inc();
        m.ready_members
            .get_or_create(&ClusterLabels {
                cluster: "etcd-cluster".into(),
            })
            .set(3);
        let text = m.render();
        assert!(
            text.contains(
                "etcd_operator_reconciles_total{cluster=\"etcd-cluster\",action=\"create_member\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("etcd_operator_ready_members{cluster=\"etcd-cluster\"} 3"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn readyz_follows_readiness() {
        let m = Arc::new(Metrics::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(axum::serve(listener, router(Arc::clone(&m))).into_future());
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        m.set_ready(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        m.grants
            .get_or_create(&GrantLabels {
                cluster: "c".into(),
                kind: "add".into(),
            })
            .inc();
        let metrics = get("/metrics").await;
        assert!(
            metrics.contains("etcd_operator_grants_total{cluster=\"c\",kind=\"add\"} 1"),
            "{metrics}"
        );
        server.abort();
    }
}
