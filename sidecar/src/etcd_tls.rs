//! etcd's own TLS files of a member (`--etcd-tls-dir`): the serving, peer and client
//! certificates etcd runs with when the cluster uses TLS, and the client certificate the
//! sidecar talks to etcd with. The control path's TLS (coordinator and sidecars) is the
//! shared crate's [`etcd_operator::tls`].

use std::path::PathBuf;

use etcd_operator::{
    pki::MemberFile as F,
    tls::{TlsError, read},
};

/// The directory of etcd's TLS files (`--etcd-tls-dir`), named as the coordinator issues
/// them ([`MemberFile`](etcd_operator::pki::MemberFile)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTlsDir {
    /// The directory.
    pub dir: PathBuf,
}

impl EtcdTlsDir {
    /// A file of the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The files etcd and the sidecar need, each checked to exist.
    pub fn check(&self) -> Result<(), TlsError> {
        for name in [
            F::ETCD_CA,
            F::ETCD_SERVER_CERT,
            F::ETCD_SERVER_KEY,
            F::ETCD_PEER_CERT,
            F::ETCD_PEER_KEY,
            F::ETCD_CLIENT_CERT,
            F::ETCD_CLIENT_KEY,
        ] {
            let path = self.file(name);
            std::fs::metadata(&path).map_err(|source| TlsError::Io { path, source })?;
        }
        Ok(())
    }

    /// The sidecar's own etcd client TLS, read now (so a rotated certificate is used by the
    /// next client made).
    pub fn client_options(&self) -> Result<etcd_client::TlsOptions, TlsError> {
        let ca = read(&self.file(F::ETCD_CA))?;
        let cert = read(&self.file(F::ETCD_CLIENT_CERT))?;
        let key = read(&self.file(F::ETCD_CLIENT_KEY))?;
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(ca))
            .identity(etcd_client::Identity::from_pem(cert, key)))
    }
}
