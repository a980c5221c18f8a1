//! Local mode's certificates, on disk under the state directory (generated on first start):
//!
//! | path | what |
//! |---|---|
//! | `<state>/pki/ca.crt`, `ca.key` | the control path's CA |
//! | `<state>/pki/<cluster>/etcd-ca.crt`, `etcd-ca.key` | the cluster's etcd CA (with `spec.tls`) |
//! | `<state>/pki/<cluster>/<member>/` | the member's files, named as [`MemberFile`] says |
//! | `<state>/pki/<cluster>/etcd-ca-rotation.json` | while the etcd CA rotates: its phase and the new CA (certificate and key) |
//! | `<state>/<cluster>/client/` | the applications' client bundle: `ca.crt`, `tls.crt`, `tls.key` |
//!
//! During a rotation the issuing CA is the old one in phase Trust and the new one after;
//! the trust files (`etcd-ca.crt` of each member, `ca.crt` of the client bundle) hold both
//! CAs in phases Trust and Reissue and the new one alone after. At the end the new CA is
//! written over `etcd-ca.crt`/`etcd-ca.key` (the rotation file, in phase `Finish`, says
//! which CA issues until it is removed, so a crash between the two writes changes nothing).
//!
//! Directories are 0700 and files 0600. Every file is replaced atomically (a temporary file,
//! then a rename), so etcd, which reads its certificate files for every handshake, and the
//! sidecar, which reads its own for every connection, never see half a file; and a renewal
//! keeps the key, so a certificate and the key beside it always match.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_operator::{
    ClusterKey,
    pki::{
        Authority, CA_VALIDITY, ClientFile, MemberCertSpec, MemberFile, PkiError,
        client_files_trusting, issued_by, member_files_trusting, trust_bundle,
    },
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{plan::CaPhase, security::now_secs};

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const ETCD_CA_CERT: &str = "etcd-ca.crt";
const ETCD_CA_KEY: &str = "etcd-ca.key";
const ETCD_CA_ROTATION: &str = "etcd-ca-rotation.json";
/// The rotation file's phase once the new CA is being written over the old one's files.
const FINISH: &str = "Finish";

/// An etcd CA rotation under way, as kept on disk: its phase and the new CA.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct RotationFile {
    /// `Trust`, `Reissue`, `Drop` ([`CaPhase`]) or `Finish`.
    phase: String,
    /// The new CA's certificate.
    next_cert: String,
    /// Its key.
    next_key: String,
}

impl RotationFile {
    /// The phase, ordered (`Finish` after every other).
    fn rank(&self) -> u8 {
        match CaPhase::parse(&self.phase) {
            Some(CaPhase::Trust) => 0,
            Some(CaPhase::Reissue) => 1,
            Some(CaPhase::Drop) => 2,
            None => 3,
        }
    }

    /// The new CA issues (every phase after Trust).
    fn new_issues(&self) -> bool {
        self.rank() >= 1
    }

    /// The old CA is still trusted (Trust and Reissue).
    fn old_trusted(&self) -> bool {
        self.rank() <= 1
    }
}

/// The etcd CA of a cluster as it stands: the CA that issues, and what members trust.
struct EtcdView {
    issuer: Arc<Authority>,
    trust: String,
}

/// A certificate file operation failed.
#[derive(Debug, Error)]
pub enum LocalPkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A certificate could not be issued or read.
    #[error("{path}: {source}")]
    Pki {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: PkiError,
    },
    /// A CA that issued certificates still in use is gone (or half gone): never replaced
    /// by a new one, whose certificates the running members would refuse.
    #[error(
        "the {what} is lost ({missing} missing) while certificates it issued are in use: a new CA would make them refuse each other, so none is made. Put back {cert} and {key} (from a backup of the state directory); if they cannot be had, the members run on their certificates until they expire: create a new cluster from a backup of the data (spec.restore)"
    )]
    LostCa {
        /// Which CA.
        what: String,
        /// The file(s) missing.
        missing: String,
        /// Its certificate file.
        cert: String,
        /// Its key file.
        key: String,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LocalPkiError + '_ {
    move |source| LocalPkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and its parents) with mode 0700.
fn private_dir(dir: &Path) -> Result<(), LocalPkiError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_at(dir))
}

/// Writes `contents` to `path` atomically and durably (the directory flushed too), mode 0600.
fn write_private_durable(path: &Path, contents: &str) -> Result<(), LocalPkiError> {
    write_private(path, contents)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// Writes `contents` to `path` atomically, mode 0600.
pub fn write_private(path: &Path, contents: &str) -> Result<(), LocalPkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_at(&tmp))?;
    io::Write::write_all(&mut file, contents.as_bytes()).map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))
}

fn read_optional(path: &Path) -> Result<Option<String>, LocalPkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// The files of `names` present in `dir`.
fn read_files(dir: &Path, names: &[&str]) -> Result<BTreeMap<String, String>, LocalPkiError> {
    let mut out = BTreeMap::new();
    for name in names {
        if let Some(text) = read_optional(&dir.join(name))? {
            out.insert(name.to_string(), text);
        }
    }
    Ok(out)
}

/// The files `names` of `dir` as `build` makes them from those there now (it says whether
/// they changed), written when they changed; returns whether they did.
fn rewrite_files(
    dir: &Path,
    names: &[&str],
    build: impl FnOnce(&BTreeMap<String, String>) -> Result<(BTreeMap<String, String>, bool), PkiError>,
) -> Result<bool, LocalPkiError> {
    let old = read_files(dir, names)?;
    let (new, changed) = build(&old).map_err(|source| LocalPkiError::Pki {
        path: dir.to_path_buf(),
        source,
    })?;
    if changed {
        write_changed(dir, &old, &new)?;
    }
    Ok(changed)
}

/// Writes the files of `new` that differ from `old`; removes those of `old` no longer in `new`.
fn write_changed(
    dir: &Path,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Result<(), LocalPkiError> {
    private_dir(dir)?;
    // Keys before certificates: a new key is only ever written for a member that has none.
    let mut names: Vec<&String> = new.keys().collect();
    names.sort_by_key(|n| !n.ends_with(".key"));
    for name in names {
        if old.get(name) != new.get(name) {
            write_private(&dir.join(name), &new[name])?;
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        let _ = std::fs::remove_file(dir.join(name));
    }
    Ok(())
}

const MEMBER_FILES: &[&str] = &[
    MemberFile::CA,
    MemberFile::CERT,
    MemberFile::KEY,
    MemberFile::ETCD_CA,
    MemberFile::ETCD_SERVER_CERT,
    MemberFile::ETCD_SERVER_KEY,
    MemberFile::ETCD_PEER_CERT,
    MemberFile::ETCD_PEER_KEY,
    MemberFile::ETCD_CLIENT_CERT,
    MemberFile::ETCD_CLIENT_KEY,
];

const CLIENT_FILES: &[&str] = &[ClientFile::CA, ClientFile::CERT, ClientFile::KEY];

/// Loads the CA stored in `dir` under `cert`/`key`, or creates and stores one when there
/// is none and `in_use` (whether certificates it would have issued exist) says none was
/// ever made. Half of one (a certificate without its key, or the other way round), or none
/// while its certificates are in use, is a lost CA: an error, never a new CA.
fn load_or_create_ca(
    dir: &Path,
    cert: &str,
    key: &str,
    common_name: &str,
    in_use: bool,
    validity: Duration,
) -> Result<Authority, LocalPkiError> {
    let (cert_path, key_path) = (dir.join(cert), dir.join(key));
    let pki = |source| LocalPkiError::Pki {
        path: cert_path.clone(),
        source,
    };
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(c), Some(k)) => return Authority::from_pem(&c, &k).map_err(pki),
        (None, None) if !in_use => {}
        (c, k) => {
            let missing: Vec<String> = [(c.is_none(), &cert_path), (k.is_none(), &key_path)]
                .into_iter()
                .filter(|(gone, _)| *gone)
                .map(|(_, p)| p.display().to_string())
                .collect();
            return Err(LocalPkiError::LostCa {
                what: common_name.trim_start_matches("etcd-operator ").to_string(),
                missing: missing.join(" and "),
                cert: cert_path.display().to_string(),
                key: key_path.display().to_string(),
            });
        }
    }
    let ca = Authority::generate_valid_for(common_name, now_secs(), validity).map_err(pki)?;
    write_private(&key_path, ca.key_pem())?;
    write_private(&cert_path, ca.cert_pem())?;
    Ok(ca)
}

/// Whether any directory below `dir` (a member's) holds a file named `file`: a
/// certificate a CA issued, still in use.
fn issued_below(dir: &Path, file: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        path.is_dir() && (path.join(file).is_file() || issued_below(&path, file))
    })
}

/// The certificate files of a state directory.
pub struct LocalPki {
    state_dir: PathBuf,
    /// One writer at a time: a member's first key must not be written twice.
    lock: Mutex<()>,
    /// Taken before `lock`, around reading which CA issues and what is trusted and writing
    /// files from it: a renewal never writes the files of a rotation's earlier phase.
    phase_lock: Mutex<()>,
    etcd_cas: Mutex<HashMap<ClusterKey, Arc<Authority>>>,
    /// How long a new etcd CA is valid.
    ca_validity: Duration,
}

impl LocalPki {
    /// Opens the state directory's PKI, creating the control path's CA on first start;
    /// returns the CA too.
    pub fn open(state_dir: impl Into<PathBuf>) -> Result<(Self, Authority), LocalPkiError> {
        let state_dir = state_dir.into();
        let pki = Self {
            state_dir,
            lock: Mutex::new(()),
            phase_lock: Mutex::new(()),
            etcd_cas: Mutex::new(HashMap::new()),
            ca_validity: CA_VALIDITY,
        };
        // Members were given certificates of it: a control CA gone is lost, not new.
        let in_use = issued_below(&pki.pki_dir(), MemberFile::CERT);
        let ca = load_or_create_ca(
            &pki.pki_dir(),
            CA_CERT,
            CA_KEY,
            "etcd-operator control CA",
            in_use,
            CA_VALIDITY,
        )?;
        Ok((pki, ca))
    }

    /// New etcd CAs (of a new cluster, or of a rotation) are valid `validity`.
    pub fn with_ca_validity(mut self, validity: Duration) -> Self {
        self.ca_validity = validity;
        self
    }

    /// `<state>/pki`.
    pub fn pki_dir(&self) -> PathBuf {
        self.state_dir.join("pki")
    }

    fn cluster_pki_dir(&self, cluster: &ClusterKey) -> PathBuf {
        let base = self.pki_dir();
        if cluster.namespace.is_empty() {
            base.join(&cluster.name)
        } else {
            base.join(&cluster.namespace).join(&cluster.name)
        }
    }

    /// The member's TLS directory.
    pub fn member_dir(&self, cluster: &ClusterKey, member: &str) -> PathBuf {
        self.cluster_pki_dir(cluster).join(member)
    }

    /// The applications' client bundle of `cluster`.
    pub fn client_dir(&self, cluster: &ClusterKey) -> PathBuf {
        let base = if cluster.namespace.is_empty() {
            self.state_dir.join(&cluster.name)
        } else {
            self.state_dir.join(&cluster.namespace).join(&cluster.name)
        };
        base.join("client")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn phase_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.phase_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cluster's issuing etcd CA (during a rotation, the new one from phase Reissue on):
    /// loaded, or created when `create` (else None if there is none).
    pub fn etcd_ca(
        &self,
        cluster: &ClusterKey,
        create: bool,
    ) -> Result<Option<Arc<Authority>>, LocalPkiError> {
        Ok(self.etcd_view(cluster, create)?.map(|v| v.issuer))
    }

    /// The rotation under way, if any.
    fn rotation(&self, cluster: &ClusterKey) -> Result<Option<RotationFile>, LocalPkiError> {
        let path = self.cluster_pki_dir(cluster).join(ETCD_CA_ROTATION);
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LocalPkiError::Io {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })
    }

    fn next_ca(
        &self,
        cluster: &ClusterKey,
        file: &RotationFile,
    ) -> Result<Authority, LocalPkiError> {
        Authority::from_pem(&file.next_cert, &file.next_key).map_err(|source| LocalPkiError::Pki {
            path: self.cluster_pki_dir(cluster).join(ETCD_CA_ROTATION),
            source,
        })
    }

    /// The issuing CA and the trust bundle of the cluster, rotation included.
    fn etcd_view(
        &self,
        cluster: &ClusterKey,
        create: bool,
    ) -> Result<Option<EtcdView>, LocalPkiError> {
        let rotation = self.rotation(cluster)?;
        if let Some(file) = rotation.as_ref().filter(|f| !f.old_trusted()) {
            // Drop and Finish: the new CA alone (the old one's files may be being rewritten).
            let issuer = Arc::new(self.next_ca(cluster, file)?);
            let trust = trust_bundle([issuer.cert_pem()]);
            return Ok(Some(EtcdView { issuer, trust }));
        }
        let Some(base) = self.base_etcd_ca(cluster, create || rotation.is_some())? else {
            return Ok(None);
        };
        Ok(Some(match rotation {
            None => EtcdView {
                trust: trust_bundle([base.cert_pem()]),
                issuer: base,
            },
            Some(file) => {
                let next = Arc::new(self.next_ca(cluster, &file)?);
                let trust = trust_bundle([base.cert_pem(), next.cert_pem()]);
                EtcdView {
                    issuer: if file.new_issues() { next } else { base },
                    trust,
                }
            }
        }))
    }

    /// The etcd CA certificates trusted beside the issuing one (during Trust and Reissue,
    /// the other CA of the rotation).
    pub fn etcd_trust_extra(&self, cluster: &ClusterKey) -> Result<Option<String>, LocalPkiError> {
        let Some(file) = self.rotation(cluster)?.filter(RotationFile::old_trusted) else {
            return Ok(None);
        };
        let Some(view) = self.etcd_view(cluster, false)? else {
            return Ok(None);
        };
        Ok(Some(view.trust).filter(|_| !file.next_cert.is_empty()))
    }

    /// Brings the cluster's rotation to `phase` (see [`crate::runtime::Runtime::set_etcd_ca_rotation`]):
    /// the new CA made once, on the way into Trust; the phase never moved back; `None`
    /// ends it. Returns the phase in effect.
    pub fn set_rotation(
        &self,
        cluster: &ClusterKey,
        phase: Option<CaPhase>,
    ) -> Result<Option<CaPhase>, LocalPkiError> {
        let dir = self.cluster_pki_dir(cluster);
        let path = dir.join(ETCD_CA_ROTATION);
        let _phase = self.phase_lock();
        let current = self.rotation(cluster)?;
        let write = |file: &RotationFile| -> Result<(), LocalPkiError> {
            let text = serde_json::to_string_pretty(file).map_err(|e| LocalPkiError::Io {
                path: path.clone(),
                source: io::Error::other(e),
            })?;
            write_private_durable(&path, &text)
        };
        let Some(phase) = phase else {
            let Some(mut file) = current else {
                return Ok(None);
            };
            // The new CA over the old one's files; the rotation file, in Finish, says which
            // CA issues until it is gone.
            let next = self.next_ca(cluster, &file)?;
            if file.phase != FINISH {
                file.phase = FINISH.to_string();
                write(&file)?;
            }
            etcd_operator::failpoint!("coordinator.rotate-ca.finish-after-phase");
            write_private_durable(&dir.join(ETCD_CA_KEY), next.key_pem())?;
            write_private_durable(&dir.join(ETCD_CA_CERT), next.cert_pem())?;
            self.etcd_cas
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(cluster.clone(), Arc::new(next));
            std::fs::remove_file(&path).map_err(io_at(&path))?;
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_at(&dir))?;
            return Ok(None);
        };
        let mut file = match current {
            Some(file) => file,
            None => {
                // The old CA must be there (never a rotation away from a lost CA).
                if self.base_etcd_ca(cluster, false)?.is_none() {
                    return Err(LocalPkiError::Pki {
                        path: dir.join(ETCD_CA_CERT),
                        source: PkiError::Parse("no etcd CA to rotate".into()),
                    });
                }
                let next = Authority::generate_valid_for(
                    &format!("etcd-operator etcd CA of {cluster}"),
                    now_secs(),
                    self.ca_validity,
                )
                .map_err(|source| LocalPkiError::Pki {
                    path: path.clone(),
                    source,
                })?;
                let file = RotationFile {
                    phase: CaPhase::Trust.as_str().to_string(),
                    next_cert: next.cert_pem().to_string(),
                    next_key: next.key_pem().to_string(),
                };
                write(&file)?;
                return Ok(Some(CaPhase::Trust));
            }
        };
        if file.phase == FINISH {
            // Being finished: nothing moves back.
            return Ok(Some(CaPhase::Drop));
        }
        let asked = RotationFile {
            phase: phase.as_str().to_string(),
            ..file.clone()
        };
        if asked.rank() > file.rank() {
            file = asked;
            write(&file)?;
        }
        Ok(CaPhase::parse(&file.phase))
    }

    /// The holders of etcd leaves (members of `members`, and `client` for the applications'
    /// bundle) whose leaves are not the issuing CA's.
    pub fn leaves_elsewhere(
        &self,
        cluster: &ClusterKey,
        members: &[String],
    ) -> Result<Vec<String>, LocalPkiError> {
        let Some(view) = self.etcd_view(cluster, false)? else {
            return Ok(Vec::new());
        };
        let mut holders: Vec<(String, PathBuf, &[&str])> = members
            .iter()
            .map(|m| {
                (
                    m.clone(),
                    self.member_dir(cluster, m),
                    &[
                        MemberFile::ETCD_SERVER_CERT,
                        MemberFile::ETCD_PEER_CERT,
                        MemberFile::ETCD_CLIENT_CERT,
                    ][..],
                )
            })
            .collect();
        holders.push((
            "client".into(),
            self.client_dir(cluster),
            &[ClientFile::CERT],
        ));
        let mut elsewhere = Vec::new();
        for (holder, dir, files) in holders {
            let present = read_files(&dir, files)?;
            if present.is_empty() {
                continue;
            }
            let mine = files.len() == present.len()
                && present.values().all(|pem| issued_by(pem, &view.issuer));
            if !mine {
                elsewhere.push(holder);
            }
        }
        Ok(elsewhere)
    }

    /// The cluster's etcd CA as its own files have it (the old one during a rotation).
    fn base_etcd_ca(
        &self,
        cluster: &ClusterKey,
        create: bool,
    ) -> Result<Option<Arc<Authority>>, LocalPkiError> {
        if let Some(ca) = self
            .etcd_cas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(cluster)
        {
            return Ok(Some(Arc::clone(ca)));
        }
        let dir = self.cluster_pki_dir(cluster);
        let exists = dir.join(ETCD_CA_CERT).is_file() || dir.join(ETCD_CA_KEY).is_file();
        // Members (or the applications' bundle) hold certificates of it.
        let in_use = issued_below(&dir, MemberFile::ETCD_PEER_CERT)
            || self.client_dir(cluster).join(ClientFile::CA).is_file();
        if !exists && !create && !in_use {
            return Ok(None);
        }
        let ca = {
            let _guard = self.lock();
            Arc::new(load_or_create_ca(
                &dir,
                ETCD_CA_CERT,
                ETCD_CA_KEY,
                &format!("etcd-operator etcd CA of {cluster}"),
                in_use,
                self.ca_validity,
            )?)
        };
        self.etcd_cas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cluster.clone(), Arc::clone(&ca));
        Ok(Some(ca))
    }

    /// Issues or renews the member's files as due; returns true when any file changed.
    pub fn ensure_member(
        &self,
        control: &Authority,
        spec: &MemberCertSpec,
    ) -> Result<bool, LocalPkiError> {
        self.issue_member(control, spec, false)
    }

    fn issue_member(
        &self,
        control: &Authority,
        spec: &MemberCertSpec,
        only_existing: bool,
    ) -> Result<bool, LocalPkiError> {
        let _phase = self.phase_lock();
        let etcd = self.etcd_view(&spec.cluster, spec.etcd_tls && !only_existing)?;
        if spec.etcd_tls && etcd.is_none() {
            // The cluster's etcd CA is gone: leave the member's files as they are.
            return Ok(false);
        }
        let dir = self.member_dir(&spec.cluster, &spec.member);
        let _guard = self.lock();
        if only_existing && !dir.join(MemberFile::CERT).is_file() {
            return Ok(false);
        }
        rewrite_files(&dir, MEMBER_FILES, |old| {
            member_files_trusting(
                control,
                etcd.as_ref().map(|v| &*v.issuer),
                etcd.as_ref().map(|v| v.trust.as_str()),
                spec,
                old,
                now_secs(),
            )
        })
    }

    /// Renews the member's files when they exist (a member deleted meanwhile is not
    /// brought back); returns true when any file changed.
    pub fn renew_member(
        &self,
        control: &Authority,
        spec: &MemberCertSpec,
    ) -> Result<bool, LocalPkiError> {
        self.issue_member(control, spec, true)
    }

    /// Issues or renews the applications' client bundle; returns true when it changed.
    pub fn ensure_client(
        &self,
        cluster: &ClusterKey,
        validity: Duration,
    ) -> Result<bool, LocalPkiError> {
        let _phase = self.phase_lock();
        let Some(etcd) = self.etcd_view(cluster, false)? else {
            return Ok(false);
        };
        let dir = self.client_dir(cluster);
        let _guard = self.lock();
        rewrite_files(&dir, CLIENT_FILES, |old| {
            client_files_trusting(
                &etcd.issuer,
                Some(&etcd.trust),
                cluster,
                validity,
                old,
                now_secs(),
            )
        })
    }

    /// Removes a deleted member's files.
    pub fn remove_member(&self, cluster: &ClusterKey, member: &str) {
        let _guard = self.lock();
        let _ = std::fs::remove_dir_all(self.member_dir(cluster, member));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_private_and_the_ca_is_kept_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, ca) = LocalPki::open(dir.path()).unwrap();
        let (_, again) = LocalPki::open(dir.path()).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
        let key = ClusterKey::local("c");
        let spec = MemberCertSpec {
            cluster: key.clone(),
            member: "c-0000".into(),
            hosts: vec!["127.0.0.1".into()],
            etcd_tls: true,
            validity: Duration::from_secs(3600),
        };
        assert!(pki.ensure_member(&ca, &spec).unwrap());
        assert!(!pki.ensure_member(&ca, &spec).unwrap(), "nothing due");
        assert!(pki.ensure_client(&key, Duration::from_secs(3600)).unwrap());
        for path in [
            dir.path().join("pki/ca.key"),
            dir.path().join("pki/c/etcd-ca.key"),
            dir.path().join("pki/c/c-0000/tls.key"),
            dir.path().join("pki/c/c-0000/etcd-peer.key"),
            dir.path().join("c/client/tls.key"),
        ] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        let mode = std::fs::metadata(dir.path().join("pki"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        pki.remove_member(&key, "c-0000");
        assert!(!pki.renew_member(&ca, &spec).unwrap(), "not brought back");
        assert!(!dir.path().join("pki/c/c-0000").exists());
    }

    /// A rotation makes one new CA and keeps it across restarts (never a third), moves only
    /// forward, trusts both CAs until the old one is dropped, and ends with the new CA as
    /// the cluster's.
    #[test]
    fn a_rotation_keeps_one_new_ca_and_only_moves_forward() {
        use etcd_operator::pki::issued_by;
        let dir = tempfile::tempdir().unwrap();
        let (pki, control) = LocalPki::open(dir.path()).unwrap();
        let key = ClusterKey::local("c");
        let spec = MemberCertSpec {
            cluster: key.clone(),
            member: "c-0000".into(),
            hosts: vec!["127.0.0.1".into()],
            etcd_tls: true,
            validity: Duration::from_secs(3600),
        };
        let member = dir.path().join("pki/c/c-0000");
        let cas_in = |file: &str| {
            std::fs::read_to_string(member.join(file))
                .unwrap()
                .matches("BEGIN CERTIFICATE")
                .count()
        };
        pki.ensure_member(&control, &spec).unwrap();
        pki.ensure_client(&key, Duration::from_secs(3600)).unwrap();
        let old = pki.etcd_ca(&key, false).unwrap().unwrap();
        let rotation = dir.path().join("pki/c/etcd-ca-rotation.json");

        assert_eq!(
            pki.set_rotation(&key, Some(CaPhase::Trust)).unwrap(),
            Some(CaPhase::Trust)
        );
        let made = std::fs::read_to_string(&rotation).unwrap();
        assert_eq!(
            std::fs::metadata(&rotation).unwrap().permissions().mode() & 0o777,
            0o600,
            "it holds a key"
        );
        // Asked again, and by a coordinator started again: the same new CA.
        assert_eq!(
            pki.set_rotation(&key, Some(CaPhase::Trust)).unwrap(),
            Some(CaPhase::Trust)
        );
        let (pki, control) = LocalPki::open(dir.path()).unwrap();
        assert_eq!(
            pki.set_rotation(&key, Some(CaPhase::Trust)).unwrap(),
            Some(CaPhase::Trust)
        );
        assert_eq!(
            std::fs::read_to_string(&rotation).unwrap(),
            made,
            "never a third CA"
        );
        // Trust: both trusted, the old one still issues.
        assert!(pki.renew_member(&control, &spec).unwrap());
        assert_eq!(cas_in(MemberFile::ETCD_CA), 2);
        assert!(issued_by(
            &std::fs::read_to_string(member.join(MemberFile::ETCD_PEER_CERT)).unwrap(),
            &old
        ));
        assert!(
            pki.leaves_elsewhere(&key, &["c-0000".into()])
                .unwrap()
                .is_empty()
        );
        assert!(pki.etcd_trust_extra(&key).unwrap().is_some());

        // Reissue: the new CA issues; until the files follow, their holders are listed.
        assert_eq!(
            pki.set_rotation(&key, Some(CaPhase::Reissue)).unwrap(),
            Some(CaPhase::Reissue)
        );
        let new = pki.etcd_ca(&key, false).unwrap().unwrap();
        assert_ne!(new.cert_pem(), old.cert_pem());
        assert_eq!(
            pki.leaves_elsewhere(&key, &["c-0000".into()]).unwrap(),
            ["c-0000", "client"]
        );
        pki.renew_member(&control, &spec).unwrap();
        pki.ensure_client(&key, Duration::from_secs(3600)).unwrap();
        assert!(
            pki.leaves_elsewhere(&key, &["c-0000".into()])
                .unwrap()
                .is_empty()
        );
        assert_eq!(cas_in(MemberFile::ETCD_CA), 2, "the old CA still trusted");
        // Never back.
        assert_eq!(
            pki.set_rotation(&key, Some(CaPhase::Trust)).unwrap(),
            Some(CaPhase::Reissue)
        );

        // Drop: the new CA alone.
        assert_eq!(
            pki.set_rotation(&key, Some(CaPhase::Drop)).unwrap(),
            Some(CaPhase::Drop)
        );
        pki.renew_member(&control, &spec).unwrap();
        pki.ensure_client(&key, Duration::from_secs(3600)).unwrap();
        assert_eq!(cas_in(MemberFile::ETCD_CA), 1);
        assert_eq!(
            std::fs::read_to_string(member.join(MemberFile::ETCD_CA))
                .unwrap()
                .trim(),
            new.cert_pem().trim()
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("c/client/ca.crt"))
                .unwrap()
                .trim(),
            new.cert_pem().trim()
        );
        assert!(pki.etcd_trust_extra(&key).unwrap().is_none());

        // The end: the new CA is the cluster's, also for a coordinator started again.
        assert_eq!(pki.set_rotation(&key, None).unwrap(), None);
        assert!(!rotation.exists());
        assert_eq!(pki.set_rotation(&key, None).unwrap(), None, "ended once");
        let (pki, _) = LocalPki::open(dir.path()).unwrap();
        assert_eq!(
            pki.etcd_ca(&key, false).unwrap().unwrap().cert_pem(),
            new.cert_pem()
        );
    }

    /// A CA whose certificates are in use and whose files are gone (or half gone) is lost:
    /// an error that says what to do, never a new CA written over it.
    #[test]
    fn a_lost_ca_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, ca) = LocalPki::open(dir.path()).unwrap();
        let key = ClusterKey::local("c");
        let spec = MemberCertSpec {
            cluster: key.clone(),
            member: "c-0000".into(),
            hosts: vec!["127.0.0.1".into()],
            etcd_tls: true,
            validity: Duration::from_secs(3600),
        };
        pki.ensure_member(&ca, &spec).unwrap();
        let etcd_ca_cert = dir.path().join("pki/c/etcd-ca.crt");
        let issued = std::fs::read_to_string(&etcd_ca_cert).unwrap();

        // The etcd CA's key removed; a coordinator started again (nothing in memory).
        std::fs::remove_file(dir.path().join("pki/c/etcd-ca.key")).unwrap();
        let (pki, ca) = LocalPki::open(dir.path()).unwrap();
        for e in [
            pki.etcd_ca(&key, true).unwrap_err(),
            pki.etcd_ca(&key, false).unwrap_err(),
            pki.ensure_member(&ca, &spec).unwrap_err(),
        ] {
            let text = e.to_string();
            assert!(matches!(e, LocalPkiError::LostCa { .. }), "{text}");
            assert!(
                text.contains("etcd-ca.key") && text.contains("Put back"),
                "{text}"
            );
        }
        assert_eq!(std::fs::read_to_string(&etcd_ca_cert).unwrap(), issued);
        assert!(!dir.path().join("pki/c/etcd-ca.key").exists(), "no new key");
        // Both files gone while members hold its certificates: lost all the same.
        std::fs::remove_file(&etcd_ca_cert).unwrap();
        let (pki, _) = LocalPki::open(dir.path()).unwrap();
        assert!(matches!(
            pki.etcd_ca(&key, true),
            Err(LocalPkiError::LostCa { .. })
        ));
        assert!(!etcd_ca_cert.exists());
        // A cluster that never had one gets one.
        assert!(
            pki.etcd_ca(&ClusterKey::local("d"), true)
                .unwrap()
                .is_some()
        );

        // The control CA's key removed while members hold its certificates: no start.
        std::fs::remove_file(dir.path().join("pki/ca.key")).unwrap();
        let e = LocalPki::open(dir.path()).err().unwrap();
        assert!(
            matches!(e, LocalPkiError::LostCa { .. }) && e.to_string().contains("control CA"),
            "{e}"
        );
    }
}
