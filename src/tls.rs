//! TLS of the control path (the coordinator and the sidecars), shared by both binaries:
//! a server side that accepts mutual TLS and a client side that dials it, both reading their
//! certificate, key and CA afresh for every new connection, so a certificate rotated on
//! disk (or renewed in memory) is used from the next handshake on without a restart.
//!
//! A server that requires no client certificate at the handshake still learns the caller's
//! identity from the certificate it did present ([`caller`]); the services decide per method
//! what a caller may do. A client checks that the server is who it meant to call: the chain
//! leads to the CA, the certificate names the host dialled, and its identity URI is the one
//! expected ([`PeerIdentity`]).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::identity::PeerIdentity;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::WebPkiClientVerifier,
};
use thiserror::Error;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Request, Status,
    transport::{Channel, Endpoint, Uri},
};
use tracing::{debug, warn};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS could not be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM does not hold what it should, or rustls refused it.
    #[error("{0}")]
    Invalid(String),
}

/// A certificate chain, its key and the CA trusted for peers, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// This end's certificate (chain).
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// The CA peers' certificates must lead to.
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// Where the current credentials come from; asked once per handshake.
pub trait CredentialSource: Send + Sync + 'static {
    /// The credentials to use now.
    fn load(&self) -> Result<Credentials, TlsError>;
}

/// Credentials in three PEM files (`--tls-cert`, `--tls-key`, `--tls-ca`), read again for
/// every handshake: a Secret updated by the kubelet, or files rewritten by the local runtime,
/// take effect on the next connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA.
    pub ca: PathBuf,
}

/// Reads a file of credentials; the error names the file.
pub fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl CredentialSource for TlsFiles {
    fn load(&self) -> Result<Credentials, TlsError> {
        Ok(Credentials {
            cert_pem: read(&self.cert)?,
            key_pem: read(&self.key)?,
            ca_pem: read(&self.ca)?,
        })
    }
}

/// The crypto used everywhere (ring), named explicitly: more than one provider is compiled in.
/// Installs ring as the process's default rustls provider, for code that builds rustls
/// configurations without naming one (tonic's own TLS). Needed because the workspace's
/// feature unification can enable both ring and aws-lc-rs, and then rustls cannot choose.
/// Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!("{what}: no certificate")));
    }
    Ok(certs)
}

fn roots(ca_pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certs(ca_pem, "the CA")? {
        roots
            .add(ca)
            .map_err(|e| TlsError::Invalid(format!("the CA: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Invalid(format!("the key: {e}")))
}

/// A value rebuilt only when the credentials it was made from change.
struct Cache<T> {
    slot: Mutex<Option<(Credentials, Arc<T>)>>,
}

impl<T> Cache<T> {
    fn new() -> Self {
        Self {
            slot: Mutex::new(None),
        }
    }

    fn get(
        &self,
        source: &dyn CredentialSource,
        build: impl FnOnce(&Credentials) -> Result<T, TlsError>,
    ) -> Result<Arc<T>, TlsError> {
        let creds = source.load()?;
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, value)) = slot.as_ref()
            && *cached == creds
        {
            return Ok(Arc::clone(value));
        }
        let value = Arc::new(build(&creds)?);
        *slot = Some((creds, Arc::clone(&value)));
        Ok(value)
    }
}

/// Whether a server asks clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Asked for and verified against the CA when given; a client without one still
    /// connects and is refused per method ([`caller`]): a certificate of another CA is
    /// refused at the handshake.
    Optional,
    /// Not asked for (a status endpoint for people).
    None,
}

/// The server side: an acceptor whose configuration follows the credentials.
pub struct ServerTls {
    source: Arc<dyn CredentialSource>,
    client_auth: ClientAuth,
    cache: Cache<ServerConfig>,
}

impl ServerTls {
    /// A server presenting the credentials of `source`.
    pub fn new(source: Arc<dyn CredentialSource>, client_auth: ClientAuth) -> Arc<Self> {
        Arc::new(Self {
            source,
            client_auth,
            cache: Cache::new(),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.cache.get(self.source.as_ref(), |creds| {
            let provider = provider();
            let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Invalid(e.to_string()))?;
            let builder = match self.client_auth {
                ClientAuth::Optional => {
                    let verifier = WebPkiClientVerifier::builder_with_provider(
                        roots(&creds.ca_pem)?,
                        provider,
                    )
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Invalid(e.to_string()))?;
                    builder.with_client_cert_verifier(verifier)
                }
                ClientAuth::None => builder.with_no_client_auth(),
            };
            let mut config = builder
                .with_single_cert(
                    certs(&creds.cert_pem, "the certificate")?,
                    key(&creds.key_pem)?,
                )
                .map_err(|e| TlsError::Invalid(e.to_string()))?;
            // gRPC clients (grpcurl, grpc-go) insist on HTTP/2 by ALPN.
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(config)
        })
    }

    /// Accepts connections on `listener` and yields those whose handshake succeeds; each
    /// handshake runs on its own task, so a slow or hostile client delays nobody. Stops (and
    /// closes the listener) when the stream is dropped.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = tx.closed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let tls = Arc::clone(&self);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let config = match tls.config() {
                        Ok(c) => c,
                        Err(e) => {
                            warn!(error = %e, "no TLS credentials: connection dropped");
                            return;
                        }
                    };
                    let handshake = TlsAcceptor::from(config).accept(tcp);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// Verifies a server as webpki does (chain to the CA, name of the host dialled, validity),
/// then that its certificate names the identity expected.
#[derive(Debug)]
struct IdentityVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: PeerIdentity,
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match PeerIdentity::from_der(end_entity) {
            Ok(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            Ok(id) => Err(rustls::Error::General(format!(
                "the server is {id}, not {}",
                self.expected
            ))),
            Err(e) => Err(rustls::Error::General(e.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client side: dials a server of the control path that must be `expected`. Shaped as
/// [`ServerTls`] is (credentials asked for at every handshake, the configuration rebuilt only
/// when they change); what differs is the verification, which runs the other way.
pub struct ClientTls {
    source: Arc<dyn CredentialSource>,
    expected: PeerIdentity,
    cache: Cache<ClientConfig>,
}

impl ClientTls {
    /// A client presenting the credentials of `source` to a server that must be `expected`.
    pub fn new(source: Arc<dyn CredentialSource>, expected: PeerIdentity) -> Arc<Self> {
        Arc::new(Self {
            source,
            expected,
            cache: Cache::new(),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.cache.get(self.source.as_ref(), |creds| {
            let provider = provider();
            let inner = WebPkiServerVerifier::builder_with_provider(
                roots(&creds.ca_pem)?,
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Invalid(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(IdentityVerifier {
                    inner,
                    expected: self.expected.clone(),
                }))
                .with_client_auth_cert(
                    certs(&creds.cert_pem, "the certificate")?,
                    key(&creds.key_pem)?,
                )
                .map_err(|e| TlsError::Invalid(e.to_string()))?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(config)
        })
    }

    /// Dials `uri`'s host and port and completes the handshake.
    pub async fn connect(
        &self,
        uri: &Uri,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
        let host = uri
            .host()
            .ok_or_else(|| std::io::Error::other(format!("{uri} has no host")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let config = self.config().map_err(std::io::Error::other)?;
        let name = ServerName::try_from(host.clone()).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        let _ = tcp.set_nodelay(true);
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| std::io::Error::other(format!("TLS handshake with {uri} timed out")))?
    }
}

/// A lazily connecting gRPC channel to `url` (`https://host:port`) over `tls`: every new
/// connection reads the credentials again.
pub fn channel(
    url: &str,
    tls: Arc<ClientTls>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<Channel, TlsError> {
    if !url.starts_with("https://") {
        return Err(TlsError::Invalid(format!(
            "{url:?}: the control path is mutual TLS, the URL must be https://"
        )));
    }
    // The connector below does the TLS (tonic's own would fix the credentials at build
    // time); tonic refuses an https URI it does not secure itself, so it is given the
    // authority under http, and never sees a connection that is not TLS.
    let authority = url.trim_start_matches("https://");
    let mut endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| TlsError::Invalid(format!("{url:?}: {e}")))?
        .connect_timeout(connect_timeout);
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = Arc::clone(&tls);
        async move {
            let stream = tls.connect(&uri).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// The verified identity of the caller of a request that came over mutual TLS; the
/// certificate's chain was checked at the handshake.
pub fn caller<T>(request: &Request<T>) -> Result<PeerIdentity, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated(
            "this call needs a client certificate issued by the operator's CA (mutual TLS on the control port)",
        )
    })?;
    let leaf = certs.first().ok_or_else(|| {
        Status::unauthenticated("this call needs a client certificate issued by the operator's CA")
    })?;
    PeerIdentity::from_der(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ClusterKey,
        pki::{Authority, LeafRequest, Usage},
    };

    struct Fixed(Credentials);

    impl CredentialSource for Fixed {
        fn load(&self) -> Result<Credentials, TlsError> {
            Ok(self.0.clone())
        }
    }

    fn creds(ca: &Authority, id: &PeerIdentity) -> Arc<dyn CredentialSource> {
        let issued = ca
            .issue(
                &LeafRequest {
                    common_name: "t".into(),
                    uris: vec![id.uri()],
                    hosts: vec!["127.0.0.1".into()],
                    usage: Usage::BOTH,
                    validity: Duration::from_secs(3600),
                },
                None,
                now(),
            )
            .unwrap();
        Arc::new(Fixed(Credentials {
            cert_pem: issued.cert_pem.into_bytes(),
            key_pem: issued.key_pem.into_bytes(),
            ca_pem: ca.cert_pem().as_bytes().to_vec(),
        }))
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// A handshake from `client` (expecting `expected`) to a server presenting `server`.
    async fn handshake(
        server: Arc<dyn CredentialSource>,
        client: Arc<dyn CredentialSource>,
        expected: PeerIdentity,
    ) -> Result<Option<PeerIdentity>, std::io::Error> {
        use tokio_stream::StreamExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = ServerTls::new(server, ClientAuth::Optional).incoming(listener);
        let client = ClientTls::new(client, expected);
        let uri: Uri = format!("https://{addr}").parse().unwrap();
        let dial = tokio::spawn(async move { client.connect(&uri).await.map(|_| ()) });
        let accepted = tokio::time::timeout(Duration::from_secs(2), incoming.next()).await;
        dial.await.unwrap()?;
        let stream = accepted.ok().flatten().expect("accepted").unwrap();
        let certs = stream.get_ref().1.peer_certificates().map(|c| c.to_vec());
        Ok(certs.map(|c| PeerIdentity::from_der(&c[0]).unwrap()))
    }

    #[tokio::test]
    async fn mutual_tls_names_both_ends_and_refuses_strangers() {
        let ca = Authority::generate("control", now()).unwrap();
        let other = Authority::generate("control", now()).unwrap();
        let member = PeerIdentity::member(&ClusterKey::local("c"), "c-0000");
        let coordinator = PeerIdentity::Coordinator;
        // The coordinator dials a member: each learns the other's identity.
        let seen = handshake(
            creds(&ca, &member),
            creds(&ca, &coordinator),
            member.clone(),
        )
        .await
        .unwrap();
        assert_eq!(seen, Some(coordinator.clone()));
        // A server that is not the member expected is refused by the client.
        assert!(
            handshake(
                creds(&ca, &coordinator),
                creds(&ca, &coordinator),
                member.clone()
            )
            .await
            .is_err()
        );
        // A server of another CA is refused by the client.
        assert!(
            handshake(
                creds(&other, &member),
                creds(&ca, &coordinator),
                member.clone()
            )
            .await
            .is_err()
        );
    }
}
