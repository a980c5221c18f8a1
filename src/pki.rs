//! Issuing certificates: the control path's CA (one per operator) and an etcd CA per
//! cluster, and the leaves the operator hands out: the coordinator's, each member's sidecar
//! (control path), each member's etcd (serving, peer, and its own client), and the
//! applications' client certificate.
//!
//! Pure: PEM in, PEM out, no files. Where the PEM lives (files under the state directory in
//! local mode, Secrets on Kubernetes) is the caller's business; both keep a member's files
//! under the same names ([`MemberFile`]), which the sidecar reads.
//!
//! Renewal keeps the private key: a reader of a certificate file and its key file, which are
//! replaced one after the other, never sees a certificate that does not match its key.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use thiserror::Error;
use x509_parser::prelude::FromDer;

use crate::{ClusterKey, identity::PeerIdentity};

/// Seconds since the Unix epoch.
pub type UnixSeconds = i64;

/// How long a CA is valid by default (rotated with an overlap once a third of it is left).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a member's or the coordinator's certificate is valid by default.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long the applications' client certificate is valid by default.
pub const DEFAULT_CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The files of a member's TLS directory (and keys of its Kubernetes Secret).
pub struct MemberFile;

impl MemberFile {
    /// The control path's CA.
    pub const CA: &'static str = "ca.crt";
    /// The sidecar's control-path certificate.
    pub const CERT: &'static str = "tls.crt";
    /// Its key.
    pub const KEY: &'static str = "tls.key";
    /// The cluster's etcd CA.
    pub const ETCD_CA: &'static str = "etcd-ca.crt";
    /// etcd's serving certificate (client URLs).
    pub const ETCD_SERVER_CERT: &'static str = "etcd-server.crt";
    /// Its key.
    pub const ETCD_SERVER_KEY: &'static str = "etcd-server.key";
    /// etcd's peer certificate (server and client of raft traffic).
    pub const ETCD_PEER_CERT: &'static str = "etcd-peer.crt";
    /// Its key.
    pub const ETCD_PEER_KEY: &'static str = "etcd-peer.key";
    /// The sidecar's own etcd client certificate.
    pub const ETCD_CLIENT_CERT: &'static str = "etcd-client.crt";
    /// Its key.
    pub const ETCD_CLIENT_KEY: &'static str = "etcd-client.key";
}

/// The files of an application client bundle (and keys of its `kubernetes.io/tls` Secret).
pub struct ClientFile;

impl ClientFile {
    /// The cluster's etcd CA.
    pub const CA: &'static str = "ca.crt";
    /// The client certificate.
    pub const CERT: &'static str = "tls.crt";
    /// Its key.
    pub const KEY: &'static str = "tls.key";
}

/// A certificate could not be made or read.
#[derive(Debug, Error)]
pub enum PkiError {
    /// rcgen refused.
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// A PEM or DER certificate does not parse.
    #[error("reading a certificate: {0}")]
    Parse(String),
    /// A name cannot go into a certificate.
    #[error("{0:?} cannot be a subject alternative name")]
    BadName(String),
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// TLS server authentication.
    pub server: bool,
    /// TLS client authentication.
    pub client: bool,
}

impl Usage {
    /// Both ends of a connection (etcd peers, sidecars, the coordinator).
    pub const BOTH: Usage = Usage {
        server: true,
        client: true,
    };
    /// A client only.
    pub const CLIENT: Usage = Usage {
        server: false,
        client: true,
    };
}

/// A leaf certificate to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRequest {
    /// The subject's common name (what etcd logs, and its user name if auth is enabled).
    pub common_name: String,
    /// URI subject alternative names (the control path's identity).
    pub uris: Vec<String>,
    /// Host names and IP addresses (as text) the certificate is valid for.
    pub hosts: Vec<String>,
    /// Server, client or both.
    pub usage: Usage,
    /// How long it is valid.
    pub validity: Duration,
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its PKCS#8 private key.
    pub key_pem: String,
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before (Unix seconds).
    pub not_before: UnixSeconds,
    /// Not valid after (Unix seconds).
    pub not_after: UnixSeconds,
}

impl Validity {
    /// True once less than a third of the lifetime remains: time to issue the next one,
    /// with a third of the lifetime left to get it in place.
    pub fn renewal_due(&self, now: UnixSeconds) -> bool {
        let lifetime = (self.not_after - self.not_before).max(0);
        now >= self.not_after - lifetime / 3
    }
}

/// The validity of a PEM certificate (the first one in `pem`).
pub fn validity(cert_pem: &str) -> Result<Validity, PkiError> {
    let der = first_der(cert_pem)?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    Ok(Validity {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The DER of the first certificate in `pem`.
pub fn first_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    if parsed.label != "CERTIFICATE" {
        return Err(PkiError::Parse(format!(
            "a {} PEM block, not a CERTIFICATE",
            parsed.label
        )));
    }
    Ok(parsed.contents)
}

/// The host of a URL such as `https://host:port` (brackets of an IPv6 address removed).
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority),
    };
    (!host.is_empty()).then(|| host.to_string())
}

fn unix_time(secs: UnixSeconds) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A random positive 128-bit serial number: renewals keep the key, never the serial.
fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No system randomness: the clock still makes the serial unique per issue.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_be_bytes();
    }
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Backdating against clock skew between machines: a tenth of the lifetime, at most 5 min.
fn backdate(validity: Duration) -> i64 {
    (validity.as_secs() / 10).min(300) as i64
}

/// A certificate authority: its certificate, its key, and an issuer made of them.
pub struct Authority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The end of its own validity: no leaf it issues outlives it.
    not_after: UnixSeconds,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new self-signed CA named `common_name`, valid [`CA_VALIDITY`].
    pub fn generate(common_name: &str, now: UnixSeconds) -> Result<Self, PkiError> {
        Self::generate_valid_for(common_name, now, CA_VALIDITY)
    }

    /// A new self-signed CA named `common_name`, valid `validity` from `now`.
    pub fn generate_valid_for(
        common_name: &str,
        now: UnixSeconds,
        validity: Duration,
    ) -> Result<Self, PkiError> {
        let not_after = i64::try_from(validity.as_secs())
            .ok()
            .and_then(|secs| now.checked_add(secs))
            .unwrap_or(i64::MAX)
            // What an X.509 time can say (the year 9999).
            .min(253_402_300_799);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "etcd-operator");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // Backdated as a leaf is, so that a third of a short CA's life is still ahead of it.
        params.not_before = unix_time(now - backdate(validity));
        params.not_after = unix_time(not_after);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
            not_after,
        })
    }

    /// The CA stored earlier.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let not_after = validity(cert_pem)?.not_after;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
            not_after,
        })
    }

    /// When its own certificate expires, seconds since the Unix epoch.
    pub fn not_after(&self) -> UnixSeconds {
        self.not_after
    }

    /// The CA's certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a leaf for `request`, with the key `key_pem` when given (a renewal), else a
    /// new one.
    pub fn issue(
        &self,
        request: &LeafRequest,
        key_pem: Option<&str>,
        now: UnixSeconds,
    ) -> Result<IssuedCert, PkiError> {
        let key = match key_pem {
            Some(pem) => KeyPair::from_pem(pem)?,
            None => KeyPair::generate()?,
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, request.common_name.as_str());
        dn.push(DnType::OrganizationName, "etcd-operator");
        params.distinguished_name = dn;
        for uri in &request.uris {
            params.subject_alt_names.push(SanType::URI(
                uri.as_str()
                    .try_into()
                    .map_err(|_| PkiError::BadName(uri.clone()))?,
            ));
        }
        for host in &request.hosts {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.as_str()
                        .try_into()
                        .map_err(|_| PkiError::BadName(host.clone()))?,
                ),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if request.usage.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if request.usage.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = unix_time(now - backdate(request.validity));
        // Never past the CA's own expiry: a chain is only as valid as its issuer.
        let asked = i64::try_from(request.validity.as_secs())
            .ok()
            .and_then(|secs| now.checked_add(secs))
            .unwrap_or(i64::MAX);
        params.not_after = unix_time(asked.min(self.not_after));
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The hosts a member's certificates are valid for: the hosts of its URLs, their fully
/// qualified form in `cluster_domain` (Kubernetes names under `.svc`), and loopback (the
/// sidecar and probes reach etcd and the sidecar locally).
pub fn member_hosts(urls: &[&str], cluster_domain: Option<&str>) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    let mut push = |h: String| {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    };
    for url in urls {
        if let Some(host) = url_host(url) {
            if let Some(domain) = cluster_domain.filter(|d| !d.is_empty())
                && host.ends_with(".svc")
            {
                push(format!("{host}.{domain}"));
            }
            push(host);
        }
    }
    push("localhost".into());
    push("127.0.0.1".into());
    hosts
}

/// What a member's TLS files are issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberCertSpec {
    /// The cluster.
    pub cluster: ClusterKey,
    /// The member's name.
    pub member: String,
    /// Hosts of its sidecar and etcd (see [`member_hosts`]).
    pub hosts: Vec<String>,
    /// Issue etcd's serving, peer and client certificates too.
    pub etcd_tls: bool,
    /// How long each certificate is valid.
    pub validity: Duration,
}

/// One leaf of a bundle: its file names and request.
struct Leaf {
    cert: &'static str,
    key: &'static str,
    request: LeafRequest,
    etcd: bool,
}

/// Issues or renews the leaves of a bundle in `existing` (file name -> PEM): a leaf that is
/// missing, unreadable, due for renewal or made for other names is issued again, with its
/// key kept when there is one. Returns the full new set, and whether anything changed.
fn renew_bundle(
    leaves: Vec<Leaf>,
    cas: &[(&'static str, &str)],
    control: &Authority,
    etcd: Option<&Authority>,
    existing: &BTreeMap<String, String>,
    now: UnixSeconds,
) -> Result<(BTreeMap<String, String>, bool), PkiError> {
    let mut out = BTreeMap::new();
    for (name, pem) in cas {
        out.insert(name.to_string(), pem.to_string());
    }
    for leaf in leaves {
        let authority = if leaf.etcd {
            match etcd {
                Some(a) => a,
                None => continue,
            }
        } else {
            control
        };
        let key = existing.get(leaf.key);
        let current = existing.get(leaf.cert).filter(|cert| {
            key.is_some()
                && validity(cert).is_ok_and(|v| !v.renewal_due(now))
                && issued_for(cert, &leaf.request)
                && issued_by(cert, authority)
        });
        match (current, key) {
            (Some(cert), Some(key)) => {
                out.insert(leaf.cert.to_string(), cert.clone());
                out.insert(leaf.key.to_string(), key.clone());
            }
            _ => {
                let issued = authority.issue(&leaf.request, key.map(String::as_str), now)?;
                out.insert(leaf.cert.to_string(), issued.cert_pem);
                out.insert(leaf.key.to_string(), issued.key_pem);
            }
        }
    }
    let changed = &out != existing;
    Ok((out, changed))
}

/// True when `cert` names the request's hosts and URIs (a member whose address changed gets
/// a new certificate).
fn issued_for(cert_pem: &str, request: &LeafRequest) -> bool {
    let Ok(der) = first_der(cert_pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(&der) else {
        return false;
    };
    let Ok(Some(sans)) = cert.subject_alternative_name() else {
        return request.hosts.is_empty() && request.uris.is_empty();
    };
    let mut names: Vec<String> = Vec::new();
    for name in &sans.value.general_names {
        use x509_parser::extensions::GeneralName;
        match name {
            GeneralName::DNSName(d) => names.push(d.to_string()),
            GeneralName::URI(u) => names.push(u.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => names.push(
                    IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default()).to_string(),
                ),
                16 => names.push(
                    IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default()).to_string(),
                ),
                _ => {}
            },
            _ => {}
        }
    }
    request
        .hosts
        .iter()
        .chain(&request.uris)
        .all(|n| names.iter().any(|have| have == n))
}

/// True when `cert` was issued by `authority` (a certificate of an earlier CA is replaced).
pub fn issued_by(cert_pem: &str, authority: &Authority) -> bool {
    first_der(cert_pem).is_ok_and(|der| der_issued_by(&der, authority))
}

/// True when the DER certificate `der` was issued by `authority`.
pub fn der_issued_by(der: &[u8], authority: &Authority) -> bool {
    let Ok(ca_der) = first_der(authority.cert_pem()) else {
        return false;
    };
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::certificate::X509Certificate::from_der(der),
        x509_parser::certificate::X509Certificate::from_der(&ca_der),
    ) else {
        return false;
    };
    cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// A member's TLS files (see [`MemberFile`]), issued or renewed where due from `existing`.
/// The etcd files are present only with `spec.etcd_tls` (and an etcd CA).
pub fn member_files(
    control: &Authority,
    etcd: Option<&Authority>,
    spec: &MemberCertSpec,
    existing: &BTreeMap<String, String>,
    now: UnixSeconds,
) -> Result<(BTreeMap<String, String>, bool), PkiError> {
    member_files_trusting(control, etcd, None, spec, existing, now)
}

/// The PEM of several CA certificates in one file: what a member trusts while its CA
/// rotates (the old and the new one).
pub fn trust_bundle<'a>(cas: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for pem in cas {
        let pem = pem.trim_end();
        if !pem.is_empty() && !out.contains(pem) {
            out.push_str(pem);
            out.push('\n');
        }
    }
    out
}

/// As [`member_files`], with `etcd_trust` (a [`trust_bundle`]) written as the etcd CA file
/// instead of the issuing CA's certificate alone: during a CA rotation members trust the
/// old and the new CA while their leaves come from one of them.
pub fn member_files_trusting(
    control: &Authority,
    etcd: Option<&Authority>,
    etcd_trust: Option<&str>,
    spec: &MemberCertSpec,
    existing: &BTreeMap<String, String>,
    now: UnixSeconds,
) -> Result<(BTreeMap<String, String>, bool), PkiError> {
    let etcd = etcd.filter(|_| spec.etcd_tls);
    let identity = PeerIdentity::member(&spec.cluster, &spec.member);
    let leaf = |common_name: String, uris: Vec<String>, hosts: Vec<String>, usage| LeafRequest {
        common_name,
        uris,
        hosts,
        usage,
        validity: spec.validity,
    };
    let leaves = vec![
        Leaf {
            cert: MemberFile::CERT,
            key: MemberFile::KEY,
            request: leaf(
                spec.member.clone(),
                vec![identity.uri()],
                spec.hosts.clone(),
                Usage::BOTH,
            ),
            etcd: false,
        },
        // etcd's serving certificate doubles as the client certificate of its own gRPC
        // gateway under --client-cert-auth: it needs both usages.
        Leaf {
            cert: MemberFile::ETCD_SERVER_CERT,
            key: MemberFile::ETCD_SERVER_KEY,
            request: leaf(spec.member.clone(), vec![], spec.hosts.clone(), Usage::BOTH),
            etcd: true,
        },
        Leaf {
            cert: MemberFile::ETCD_PEER_CERT,
            key: MemberFile::ETCD_PEER_KEY,
            request: leaf(spec.member.clone(), vec![], spec.hosts.clone(), Usage::BOTH),
            etcd: true,
        },
        Leaf {
            cert: MemberFile::ETCD_CLIENT_CERT,
            key: MemberFile::ETCD_CLIENT_KEY,
            request: leaf(
                format!("{}-sidecar", spec.member),
                vec![],
                vec![],
                Usage::CLIENT,
            ),
            etcd: true,
        },
    ];
    let mut cas = vec![(MemberFile::CA, control.cert_pem())];
    if let Some(etcd) = etcd {
        cas.push((MemberFile::ETCD_CA, etcd_trust.unwrap_or(etcd.cert_pem())));
    }
    renew_bundle(leaves, &cas, control, etcd, existing, now)
}

/// The etcd files of a member whose contents [`etcd_files_digest`] covers: the trusted CA
/// file and the three leaves (keys are kept across renewals and rotations).
pub const ETCD_DIGEST_FILES: [&str; 4] = [
    MemberFile::ETCD_CA,
    MemberFile::ETCD_SERVER_CERT,
    MemberFile::ETCD_PEER_CERT,
    MemberFile::ETCD_CLIENT_CERT,
];

/// SHA-256 (hex) of a member's etcd files as `file` reads them (by [`MemberFile`] name;
/// `None` for one that is absent): the sidecar reports it of the files mounted in its Pod,
/// the coordinator computes it of the member's Secret, and equal digests prove that the
/// files etcd reads are the Secret's (the kubelet writes a Secret's update into a Pod after
/// a delay).
pub fn etcd_files_digest(mut file: impl FnMut(&str) -> Option<String>) -> String {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for name in ETCD_DIGEST_FILES {
        digest.update(name.as_bytes());
        match file(name) {
            Some(text) => {
                digest.update(b"=");
                digest.update(text.trim_end().as_bytes());
            }
            None => digest.update(b"-"),
        }
        digest.update(b"\0");
    }
    digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The applications' client bundle of a cluster (see [`ClientFile`]), issued or renewed
/// where due from `existing`.
pub fn client_files(
    etcd: &Authority,
    cluster: &ClusterKey,
    validity: Duration,
    existing: &BTreeMap<String, String>,
    now: UnixSeconds,
) -> Result<(BTreeMap<String, String>, bool), PkiError> {
    client_files_trusting(etcd, None, cluster, validity, existing, now)
}

/// As [`client_files`], with `trust` (a [`trust_bundle`]) as the CA file.
pub fn client_files_trusting(
    etcd: &Authority,
    trust: Option<&str>,
    cluster: &ClusterKey,
    validity: Duration,
    existing: &BTreeMap<String, String>,
    now: UnixSeconds,
) -> Result<(BTreeMap<String, String>, bool), PkiError> {
    let leaves = vec![Leaf {
        cert: ClientFile::CERT,
        key: ClientFile::KEY,
        request: LeafRequest {
            common_name: format!("{}-client", cluster.name),
            uris: vec![],
            hosts: vec![],
            usage: Usage::CLIENT,
            validity,
        },
        etcd: true,
    }];
    renew_bundle(
        leaves,
        &[(ClientFile::CA, trust.unwrap_or(etcd.cert_pem()))],
        etcd,
        Some(etcd),
        existing,
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixSeconds = 1_750_000_000;

    fn spec(etcd_tls: bool, validity: Duration) -> MemberCertSpec {
        MemberCertSpec {
            cluster: ClusterKey::local("c"),
            member: "c-0001".into(),
            hosts: member_hosts(&["https://127.0.0.1:2379"], None),
            etcd_tls,
            validity,
        }
    }

    /// The digest the sidecar reports of its files and the coordinator computes of the
    /// Secret: equal for the same files (a trailing newline aside), different once any of
    /// them differs, and an absent file is not an empty one.
    #[test]
    fn the_etcd_files_digest_tells_the_files_apart() {
        let files = BTreeMap::from([
            (MemberFile::ETCD_CA.to_string(), "ca".to_string()),
            (
                MemberFile::ETCD_SERVER_CERT.to_string(),
                "server".to_string(),
            ),
            (MemberFile::ETCD_PEER_CERT.to_string(), "peer".to_string()),
            (
                MemberFile::ETCD_CLIENT_CERT.to_string(),
                "client".to_string(),
            ),
            (MemberFile::ETCD_SERVER_KEY.to_string(), "key".to_string()),
        ]);
        let digest = |f: &BTreeMap<String, String>| etcd_files_digest(|n| f.get(n).cloned());
        let base = digest(&files);
        assert_eq!(base.len(), 64);
        let mut newline = files.clone();
        newline.insert(MemberFile::ETCD_CA.into(), "ca\n".into());
        assert_eq!(digest(&newline), base);
        let mut key = files.clone();
        key.insert(MemberFile::ETCD_SERVER_KEY.into(), "another key".into());
        assert_eq!(
            digest(&key),
            base,
            "keys are kept across rotations: not covered"
        );
        for name in ETCD_DIGEST_FILES {
            let mut changed = files.clone();
            changed.insert(name.into(), "other".into());
            assert_ne!(digest(&changed), base, "{name}");
            let mut empty = files.clone();
            empty.insert(name.into(), String::new());
            let mut absent = files.clone();
            absent.remove(name);
            assert_ne!(digest(&empty), digest(&absent), "{name}");
        }
    }

    #[test]
    fn a_member_bundle_names_the_member_and_renews_at_two_thirds() {
        let control = Authority::generate("control", NOW).unwrap();
        let etcd = Authority::generate("etcd", NOW).unwrap();
        let lifetime = Duration::from_secs(3000);
        let (files, changed) = member_files(
            &control,
            Some(&etcd),
            &spec(true, lifetime),
            &BTreeMap::new(),
            NOW,
        )
        .unwrap();
        assert!(changed);
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "ca.crt",
                "etcd-ca.crt",
                "etcd-client.crt",
                "etcd-client.key",
                "etcd-peer.crt",
                "etcd-peer.key",
                "etcd-server.crt",
                "etcd-server.key",
                "tls.crt",
                "tls.key"
            ]
        );
        let der = first_der(&files[MemberFile::CERT]).unwrap();
        assert_eq!(
            PeerIdentity::from_der(&der).unwrap(),
            PeerIdentity::member(&ClusterKey::local("c"), "c-0001")
        );
        assert!(issued_by(&files[MemberFile::ETCD_PEER_CERT], &etcd));
        assert!(!issued_by(&files[MemberFile::ETCD_PEER_CERT], &control));
        // Nothing due: nothing changes.
        let later = NOW + 1800;
        let (same, changed) =
            member_files(&control, Some(&etcd), &spec(true, lifetime), &files, later).unwrap();
        assert!(!changed);
        assert_eq!(same, files);
        // Less than a third left: every leaf renewed, with the same keys.
        let due = NOW + 2100;
        let (renewed, changed) =
            member_files(&control, Some(&etcd), &spec(true, lifetime), &files, due).unwrap();
        assert!(changed);
        for (cert, key) in [
            (MemberFile::CERT, MemberFile::KEY),
            (MemberFile::ETCD_SERVER_CERT, MemberFile::ETCD_SERVER_KEY),
        ] {
            assert_ne!(renewed[cert], files[cert], "{cert}");
            assert_eq!(renewed[key], files[key], "{key} kept");
            assert!(validity(&renewed[cert]).unwrap().not_after > due + 2900);
        }
        // Without etcd TLS, only the control path's files.
        let (plain, _) = member_files(
            &control,
            Some(&etcd),
            &spec(false, lifetime),
            &BTreeMap::new(),
            NOW,
        )
        .unwrap();
        assert_eq!(plain.len(), 3);
    }

    #[test]
    fn no_leaf_outlives_its_ca_whatever_validity_is_asked() {
        // A CA made almost ten years ago: one day left.
        let day = 24 * 3600;
        let ca = Authority::generate("etcd", NOW - CA_VALIDITY.as_secs() as i64 + day).unwrap();
        assert_eq!(ca.not_after(), NOW + day);
        let stored = Authority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(stored.not_after(), ca.not_after());
        for asked in [DEFAULT_CERT_VALIDITY, Duration::from_secs(u64::MAX)] {
            let (files, _) =
                member_files(&ca, Some(&ca), &spec(true, asked), &BTreeMap::new(), NOW).unwrap();
            let leaf = validity(&files[MemberFile::ETCD_PEER_CERT]).unwrap();
            assert_eq!(leaf.not_after, ca.not_after(), "asked {asked:?}");
            assert!(leaf.not_before <= NOW);
        }
        // A short leaf of a young CA keeps its own lifetime.
        let young = Authority::generate("etcd", NOW).unwrap();
        let (files, _) = member_files(
            &young,
            None,
            &spec(false, Duration::from_secs(3000)),
            &BTreeMap::new(),
            NOW,
        )
        .unwrap();
        assert_eq!(
            validity(&files[MemberFile::CERT]).unwrap().not_after,
            NOW + 3000
        );
    }

    #[test]
    fn a_leaf_of_another_ca_or_for_other_names_is_replaced() {
        let control = Authority::generate("control", NOW).unwrap();
        let other = Authority::generate("control", NOW).unwrap();
        let s = spec(false, DEFAULT_CERT_VALIDITY);
        let (files, _) = member_files(&other, None, &s, &BTreeMap::new(), NOW).unwrap();
        let (mine, changed) = member_files(&control, None, &s, &files, NOW).unwrap();
        assert!(changed);
        assert!(issued_by(&mine[MemberFile::CERT], &control));
        let mut moved = s.clone();
        moved.hosts.push("10.0.0.7".into());
        let (again, changed) = member_files(&control, None, &moved, &mine, NOW).unwrap();
        assert!(changed && again[MemberFile::CERT] != mine[MemberFile::CERT]);
    }

    #[test]
    fn a_stored_ca_issues_like_the_original() {
        let ca = Authority::generate("control", NOW).unwrap();
        let again = Authority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let (files, _) = client_files(
            &again,
            &ClusterKey::local("c"),
            DEFAULT_CLIENT_CERT_VALIDITY,
            &BTreeMap::new(),
            NOW,
        )
        .unwrap();
        assert!(issued_by(&files[ClientFile::CERT], &ca));
        assert_eq!(files[ClientFile::CA], ca.cert_pem());
    }

    #[test]
    fn hosts_come_from_urls_with_the_cluster_domain() {
        assert_eq!(
            member_hosts(
                &[
                    "https://a-0001.a-peer.ns.svc:2380",
                    "https://a-0001.a-peer.ns.svc:2379",
                    "https://[::1]:7401"
                ],
                Some("cluster.local")
            ),
            [
                "a-0001.a-peer.ns.svc.cluster.local",
                "a-0001.a-peer.ns.svc",
                "::1",
                "localhost",
                "127.0.0.1"
            ]
        );
        assert_eq!(url_host("http://127.0.0.1:2379"), Some("127.0.0.1".into()));
        assert_eq!(url_host("nohost"), Some("nohost".into()));
        assert_eq!(url_host("http://:1"), None);
    }

    #[test]
    fn renewal_is_due_in_the_last_third() {
        let v = Validity {
            not_before: 0,
            not_after: 300,
        };
        assert!(!v.renewal_due(199));
        assert!(v.renewal_due(200));
        assert!(v.renewal_due(400));
    }
}
