//! The coordinator's side of the control path's TLS and its own etcd client certificates.
//!
//! The coordinator holds the control path's CA (generated on first start: a file in local
//! mode, a Secret on Kubernetes). With it, it issues itself a certificate in memory (renewed
//! in memory when due, so it never expires under a running coordinator), serves the control
//! port with mutual TLS, and dials sidecars expecting each to present its member's identity.
//! The runtimes issue the members' certificates from the same CA (`local`, `k8s`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_operator::tls::{
    ClientAuth, ClientTls, CredentialSource, Credentials, ServerTls, TlsError,
};
use etcd_operator::{
    ClusterKey,
    identity::{COORDINATOR_URI, PeerIdentity},
    pki::{Authority, IssuedCert, LeafRequest, UnixSeconds, Usage, validity},
};

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> UnixSeconds {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A certificate kept in memory and issued again (same key) once it is due for renewal.
pub struct Issuing {
    authority: Arc<Authority>,
    request: LeafRequest,
    current: Mutex<Option<IssuedCert>>,
}

impl Issuing {
    /// A certificate for `request` from `authority`, issued at first use.
    pub fn new(authority: Arc<Authority>, request: LeafRequest) -> Self {
        Self {
            authority,
            request,
            current: Mutex::new(None),
        }
    }

    /// The certificate to present now.
    pub fn current(&self) -> Result<IssuedCert, TlsError> {
        let now = now_secs();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = current
            .as_ref()
            .filter(|c| validity(&c.cert_pem).is_ok_and(|v| !v.renewal_due(now)));
        if let Some(c) = fresh {
            return Ok(c.clone());
        }
        let key = current.as_ref().map(|c| c.key_pem.clone());
        let issued = self
            .authority
            .issue(&self.request, key.as_deref(), now)
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        *current = Some(issued.clone());
        Ok(issued)
    }
}

impl CredentialSource for Issuing {
    fn load(&self) -> Result<Credentials, TlsError> {
        let c = self.current()?;
        Ok(Credentials {
            cert_pem: c.cert_pem.into_bytes(),
            key_pem: c.key_pem.into_bytes(),
            ca_pem: self.authority.cert_pem().as_bytes().to_vec(),
        })
    }
}

/// The control path as the coordinator holds it: the CA, its own identity, and how long the
/// members' certificates it issues are valid.
pub struct ControlPlane {
    ca: Arc<Authority>,
    identity: Arc<Issuing>,
    member_validity: Duration,
    etcd_clients: Mutex<HashMap<ClusterKey, Arc<Issuing>>>,
}

impl ControlPlane {
    /// The control plane of `ca`; the coordinator's certificate names `hosts` (the names
    /// sidecars and people dial it by).
    pub fn new(ca: Authority, hosts: Vec<String>, member_validity: Duration) -> Arc<Self> {
        let ca = Arc::new(ca);
        let identity = Arc::new(Issuing::new(
            Arc::clone(&ca),
            LeafRequest {
                common_name: "etcd-coordinator".into(),
                uris: vec![COORDINATOR_URI.into()],
                hosts,
                usage: Usage::BOTH,
                validity: member_validity,
            },
        ));
        Arc::new(Self {
            ca,
            identity,
            member_validity,
            etcd_clients: Mutex::new(HashMap::new()),
        })
    }

    /// The control path's CA.
    pub fn ca(&self) -> &Authority {
        &self.ca
    }

    /// How long a member's certificates are valid.
    pub fn member_validity(&self) -> Duration {
        self.member_validity
    }

    /// The coordinator's own credentials (renewed in memory).
    pub fn credentials(&self) -> Arc<dyn CredentialSource> {
        Arc::clone(&self.identity) as Arc<dyn CredentialSource>
    }

    /// The control port: mutual TLS, every caller identified by its certificate.
    pub fn control_server(&self) -> Arc<ServerTls> {
        ServerTls::new(self.credentials(), ClientAuth::Optional)
    }

    /// The status port on Kubernetes: TLS with the published CA, no client certificate.
    pub fn status_server(&self) -> Arc<ServerTls> {
        ServerTls::new(self.credentials(), ClientAuth::None)
    }

    /// TLS for calling `member`'s sidecar, which must present that member's identity.
    pub fn sidecar_client(&self, cluster: &ClusterKey, member: &str) -> Arc<ClientTls> {
        ClientTls::new(self.credentials(), PeerIdentity::member(cluster, member))
    }

    /// The coordinator's etcd client TLS for `cluster`, whose etcd CA is `etcd_ca`: a
    /// client certificate kept in memory and renewed when due.
    pub fn etcd_client(
        &self,
        cluster: &ClusterKey,
        etcd_ca: &Arc<Authority>,
    ) -> Result<etcd_client::TlsOptions, TlsError> {
        let issuing = {
            let mut clients = self.etcd_clients.lock().unwrap_or_else(|e| e.into_inner());
            let entry = clients.entry(cluster.clone()).or_insert_with(|| {
                Arc::new(Issuing::new(
                    Arc::clone(etcd_ca),
                    LeafRequest {
                        common_name: "etcd-coordinator".into(),
                        uris: vec![],
                        hosts: vec![],
                        usage: Usage::CLIENT,
                        validity: self.member_validity,
                    },
                ))
            });
            // A cluster created again under the same name has a new CA.
            if entry.authority.cert_pem() != etcd_ca.cert_pem() {
                *entry = Arc::new(Issuing::new(Arc::clone(etcd_ca), entry.request.clone()));
            }
            Arc::clone(entry)
        };
        let creds = issuing.load()?;
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(creds.ca_pem))
            .identity(etcd_client::Identity::from_pem(
                creds.cert_pem,
                creds.key_pem,
            )))
    }

    /// Forgets the etcd client certificate of a cluster (deleted).
    pub fn forget(&self, cluster: &ClusterKey) {
        self.etcd_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cluster);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordinator_renews_its_own_certificate_in_memory() {
        let ca = Authority::generate("control", now_secs()).unwrap();
        let plane = ControlPlane::new(ca, vec!["127.0.0.1".into()], Duration::from_secs(2));
        let first = plane.identity.current().unwrap();
        let der = etcd_operator::pki::first_der(&first.cert_pem).unwrap();
        assert_eq!(
            PeerIdentity::from_der(&der).unwrap(),
            PeerIdentity::Coordinator
        );
        // Backdated by a tenth of its (2 s) lifetime, it is due within the second.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = plane.identity.current().unwrap();
            if now.cert_pem != first.cert_pem {
                assert_eq!(now.key_pem, first.key_pem, "the key is kept");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never renewed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
