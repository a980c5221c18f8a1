//! Local mode's certificates, on disk under the state directory (generated on first start):
//!
//! | path | what |
//! |---|---|
//! | `<state>/pki/ca.crt`, `ca.key` | the control path's CA |
//! | `<state>/pki/<cluster>/etcd-ca.crt`, `etcd-ca.key` | the cluster's etcd CA (with `spec.tls`) |
//! | `<state>/pki/<cluster>/<member>/` | the member's files, named as [`MemberFile`] says |
//! | `<state>/<cluster>/client/` | the applications' client bundle: `ca.crt`, `tls.crt`, `tls.key` |
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
        Authority, ClientFile, MemberCertSpec, MemberFile, PkiError, client_files, member_files,
    },
};
use thiserror::Error;

use crate::security::now_secs;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const ETCD_CA_CERT: &str = "etcd-ca.crt";
const ETCD_CA_KEY: &str = "etcd-ca.key";

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
    let ca = Authority::generate(common_name, now_secs()).map_err(pki)?;
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
    etcd_cas: Mutex<HashMap<ClusterKey, Arc<Authority>>>,
}

impl LocalPki {
    /// Opens the state directory's PKI, creating the control path's CA on first start;
    /// returns the CA too.
    pub fn open(state_dir: impl Into<PathBuf>) -> Result<(Self, Authority), LocalPkiError> {
        let state_dir = state_dir.into();
        let pki = Self {
            state_dir,
            lock: Mutex::new(()),
            etcd_cas: Mutex::new(HashMap::new()),
        };
        // Members were given certificates of it: a control CA gone is lost, not new.
        let in_use = issued_below(&pki.pki_dir(), MemberFile::CERT);
        let ca = load_or_create_ca(
            &pki.pki_dir(),
            CA_CERT,
            CA_KEY,
            "etcd-operator control CA",
            in_use,
        )?;
        Ok((pki, ca))
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

    /// The cluster's etcd CA: loaded, or created when `create` (else None if there is none).
    pub fn etcd_ca(
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
        let etcd = self.etcd_ca(&spec.cluster, spec.etcd_tls && !only_existing)?;
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
            member_files(control, etcd.as_deref(), spec, old, now_secs())
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
        let Some(etcd) = self.etcd_ca(cluster, false)? else {
            return Ok(false);
        };
        let dir = self.client_dir(cluster);
        let _guard = self.lock();
        rewrite_files(&dir, CLIENT_FILES, |old| {
            client_files(&etcd, cluster, validity, old, now_secs())
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
