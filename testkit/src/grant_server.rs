//! A minimal stand-in for the coordinator's sidecar-facing RPCs (registration, health,
//! grants), for tests that run sidecars without a coordinator. It uses the coordinator's
//! own `GrantTable`, and records every grant so tests can assert that at most one
//! membership change was ever in flight.
//!
//! Like the real coordinator it speaks mutual TLS: it holds a CA, presents the coordinator's
//! identity, and issues each sidecar its member certificate ([`TestCoordinator::issue`]).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_operator::{
    ClusterKey,
    grant::GrantTable,
    identity::COORDINATOR_URI,
    pki::{Authority, LeafRequest, MemberCertSpec, Usage, member_files, member_hosts},
    proto::{
        ClusterStatus, DeleteMemberRequest, DeleteMemberResponse, GetClusterRequest, GrantRequest,
        GrantResponse, HealthReport, ListClustersRequest, ListClustersResponse, MemberRole,
        RegisterRequest, RegisterResponse, ReleaseGrantRequest, ReleaseGrantResponse,
        ReportHealthResponse,
        coordinator_server::{Coordinator, CoordinatorServer},
    },
};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// One grant event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantEvent {
    /// A grant was given.
    Granted {
        /// Grant id.
        id: String,
        /// Member.
        member: String,
        /// Kind name.
        kind: String,
    },
    /// A grant was given back.
    Released {
        /// Grant id.
        id: String,
        /// Whether the change succeeded.
        succeeded: bool,
        /// The member id after the change.
        member_id: u64,
    },
}

#[derive(Default)]
struct Inner {
    grants: GrantTable,
    seed: String,
    events: Vec<GrantEvent>,
    outstanding: usize,
    max_outstanding: usize,
    reports: BTreeMap<String, HealthReport>,
    registrations: Vec<RegisterRequest>,
}

/// The stand-in coordinator's shared state.
#[derive(Clone)]
pub struct GrantRecorder {
    inner: Arc<Mutex<Inner>>,
}

impl GrantRecorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every grant event, in order.
    pub fn events(&self) -> Vec<GrantEvent> {
        self.lock().events.clone()
    }

    /// The most grants ever outstanding at once.
    pub fn max_outstanding(&self) -> usize {
        self.lock().max_outstanding
    }

    /// The latest report of every member.
    pub fn reports(&self) -> BTreeMap<String, HealthReport> {
        self.lock().reports.clone()
    }

    /// The latest report of `member`.
    pub fn report(&self, member: &str) -> Option<HealthReport> {
        self.lock().reports.get(member).cloned()
    }

    /// Every registration received.
    pub fn registrations(&self) -> Vec<RegisterRequest> {
        self.lock().registrations.clone()
    }

    /// Names the member that may bootstrap.
    pub fn set_seed(&self, name: &str) {
        self.lock().seed = name.to_string();
    }
}

/// A running stand-in coordinator on 127.0.0.1.
pub struct TestCoordinator {
    /// Its URL (https: mutual TLS).
    pub url: String,
    /// What it recorded.
    pub recorder: GrantRecorder,
    /// The CA of the control path it trusts and issues from.
    pub ca: Arc<Authority>,
    task: JoinHandle<()>,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Writes `files` (name -> PEM) into `dir`, 0600.
pub fn write_files(dir: &std::path::Path, files: &BTreeMap<String, String>) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    for (name, text) in files {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join(name))?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
    }
    Ok(())
}

impl TestCoordinator {
    /// Starts one that lets `seed` bootstrap the cluster.
    pub async fn start(seed: &str) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0".parse()?, seed).await
    }

    /// Starts one on `addr` (to come back on the same address after a stop).
    pub async fn start_on(addr: SocketAddr, seed: &str) -> anyhow::Result<Self> {
        let ca = Arc::new(Authority::generate("test control CA", now_secs())?);
        let identity = ca.issue(
            &LeafRequest {
                common_name: "test-coordinator".into(),
                uris: vec![COORDINATOR_URI.into()],
                hosts: vec!["127.0.0.1".into(), "localhost".into()],
                usage: Usage::BOTH,
                validity: Duration::from_secs(24 * 3600),
            },
            None,
            now_secs(),
        )?;
        // tonic's TLS asks rustls for the process default provider; the workspace's feature
        // unification may enable two, so name one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                identity.cert_pem,
                identity.key_pem,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(ca.cert_pem()))
            .client_auth_optional(true);
        let recorder = GrantRecorder {
            inner: Arc::new(Mutex::new(Inner {
                grants: GrantTable::new(Duration::from_secs(120)),
                seed: seed.to_string(),
                ..Default::default()
            })),
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("https://{}", listener.local_addr()?);
        let service = Service {
            recorder: recorder.clone(),
        };
        let mut server = tonic::transport::Server::builder().tls_config(tls)?;
        let task = tokio::spawn(async move {
            let _ = server
                .add_service(CoordinatorServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Ok(Self {
            url,
            recorder,
            ca,
            task,
        })
    }

    /// Issues a certificate naming `uri` (the coordinator's identity, say) into `dir`
    /// (`ca.crt`, `tls.crt`, `tls.key`), as a client of the sidecars would hold it.
    pub fn issue_client(&self, uri: &str, dir: &std::path::Path) -> anyhow::Result<()> {
        let issued = self.ca.issue(
            &LeafRequest {
                common_name: "test-client".into(),
                uris: vec![uri.to_string()],
                hosts: vec!["127.0.0.1".into()],
                usage: Usage::BOTH,
                validity: Duration::from_secs(24 * 3600),
            },
            None,
            now_secs(),
        )?;
        write_files(
            dir,
            &BTreeMap::from([
                ("ca.crt".to_string(), self.ca.cert_pem().to_string()),
                ("tls.crt".to_string(), issued.cert_pem),
                ("tls.key".to_string(), issued.key_pem),
            ]),
        )?;
        Ok(())
    }

    /// Issues the control-path certificate of the sidecar `spec` describes into its
    /// `tls_dir` (`ca.crt`, `tls.crt`, `tls.key`).
    pub fn issue(&self, spec: &crate::SidecarSpec) -> anyhow::Result<()> {
        let urls = [spec.client_url(), spec.peer_url(), spec.grpc_url()];
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let (files, _) = member_files(
            &self.ca,
            None,
            &MemberCertSpec {
                cluster: ClusterKey::local(spec.cluster.clone()),
                member: spec.name.clone(),
                hosts: member_hosts(&urls, None),
                etcd_tls: false,
                validity: Duration::from_secs(24 * 3600),
            },
            &BTreeMap::new(),
            now_secs(),
        )?;
        write_files(&spec.tls_dir, &files)?;
        Ok(())
    }

    /// Stops serving (a coordinator outage).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Service {
    recorder: GrantRecorder,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[tonic::async_trait]
impl Coordinator for Service {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        let mut inner = self.recorder.lock();
        inner.registrations.push(request.clone());
        let healthy_urls: Vec<String> = inner
            .reports
            .values()
            .filter(|r| r.healthy && !r.learner && r.member_name != request.member_name)
            .map(|r| r.client_url.clone())
            .collect();
        let role = if request.member_name == inner.seed && healthy_urls.is_empty() {
            MemberRole::Seed
        } else if healthy_urls.is_empty() {
            MemberRole::Unspecified
        } else {
            MemberRole::Join
        };
        Ok(Response::new(RegisterResponse {
            role: role as i32,
            cluster_client_urls: healthy_urls,
            report_interval_ms: 250,
            restore: None,
            coordinator_epoch: 1,
        }))
    }

    async fn report_health(
        &self,
        request: Request<Streaming<HealthReport>>,
    ) -> Result<Response<ReportHealthResponse>, Status> {
        let mut stream = request.into_inner();
        let mut received = 0;
        while let Some(report) = stream.next().await {
            let report = report?;
            received += 1;
            self.recorder
                .lock()
                .reports
                .insert(report.member_name.clone(), report);
        }
        Ok(Response::new(ReportHealthResponse {
            reports_received: received,
        }))
    }

    async fn request_grant(
        &self,
        request: Request<GrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        let request = request.into_inner();
        let key = request
            .cluster
            .as_ref()
            .map(ClusterKey::from)
            .ok_or_else(|| Status::invalid_argument("cluster is required"))?;
        let mut inner = self.recorder.lock();
        let now = now_ms();
        let before = inner.grants.in_flight(&key, now).map(|g| g.id.clone());
        match inner
            .grants
            .request(&key, &request.member_name, request.kind(), now)
        {
            Ok(grant) => {
                if before.as_deref() != Some(grant.id.as_str()) {
                    inner.outstanding += 1;
                    inner.max_outstanding = inner.max_outstanding.max(inner.outstanding);
                    inner.events.push(GrantEvent::Granted {
                        id: grant.id.clone(),
                        member: grant.member.clone(),
                        kind: etcd_operator::grant::kind_name(grant.kind).to_string(),
                    });
                }
                Ok(Response::new(GrantResponse {
                    granted: true,
                    grant_id: grant.id,
                    expires_at_unix_ms: grant.expires_at,
                    coordinator_epoch: 1,
                    ..Default::default()
                }))
            }
            Err(refusal) => Ok(Response::new(GrantResponse {
                granted: false,
                reason: refusal.reason,
                retry_after_ms: refusal.retry_after.as_millis() as u32,
                ..Default::default()
            })),
        }
    }

    async fn release_grant(
        &self,
        request: Request<ReleaseGrantRequest>,
    ) -> Result<Response<ReleaseGrantResponse>, Status> {
        let request = request.into_inner();
        let key = request
            .cluster
            .as_ref()
            .map(ClusterKey::from)
            .ok_or_else(|| Status::invalid_argument("cluster is required"))?;
        let mut inner = self.recorder.lock();
        let released = inner.grants.release(&key, &request.grant_id);
        if released {
            inner.outstanding -= 1;
            inner.events.push(GrantEvent::Released {
                id: request.grant_id,
                succeeded: request.succeeded,
                member_id: request.member_id,
            });
        }
        Ok(Response::new(ReleaseGrantResponse { released }))
    }

    async fn list_clusters(
        &self,
        _request: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        Err(Status::unimplemented(
            "the test coordinator serves no status",
        ))
    }

    async fn get_cluster(
        &self,
        _request: Request<GetClusterRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        Err(Status::unimplemented(
            "the test coordinator serves no status",
        ))
    }

    async fn delete_member(
        &self,
        _request: Request<DeleteMemberRequest>,
    ) -> Result<Response<DeleteMemberResponse>, Status> {
        Err(Status::unimplemented(
            "the test coordinator deletes no member",
        ))
    }

    async fn take_backup(
        &self,
        _request: Request<etcd_operator::proto::TakeBackupRequest>,
    ) -> Result<Response<etcd_operator::proto::Backup>, Status> {
        Err(Status::unimplemented(
            "the test coordinator takes no backup",
        ))
    }

    async fn list_backups(
        &self,
        _request: Request<etcd_operator::proto::ListBackupsRequest>,
    ) -> Result<Response<etcd_operator::proto::ListBackupsResponse>, Status> {
        Err(Status::unimplemented(
            "the test coordinator lists no backup",
        ))
    }
}
