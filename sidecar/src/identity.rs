//! What the sidecar remembers about its member across restarts, kept beside etcd's data
//! in the member directory: the member id it joined as, the cluster's client URLs, and a
//! marker written once the member has left (so a restarted sidecar never rejoins).

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

const IDENTITY_FILE: &str = "member.json";
const REMOVED_MARKER: &str = "removed";

/// The member's identity as last known.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The member's name.
    pub name: String,
    /// The etcd member id (0 if never known).
    pub member_id: u64,
    /// The etcd cluster id.
    pub cluster_id: u64,
    /// Client URLs of the cluster's members, for finding it again after a restart.
    pub cluster_client_urls: Vec<String>,
}

/// The member directory's files.
#[derive(Clone, Debug)]
pub struct MemberDir {
    root: PathBuf,
}

impl MemberDir {
    /// The member directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// etcd's data directory.
    pub fn etcd_dir(&self) -> PathBuf {
        self.root.join("etcd")
    }

    /// True when etcd has written its write-ahead log here.
    pub fn has_etcd_data(&self) -> bool {
        std::fs::read_dir(self.etcd_dir().join("member").join("wal"))
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
    }

    /// The saved identity, if any (an unreadable file counts as none).
    pub fn load_identity(&self) -> Option<Identity> {
        let bytes = std::fs::read(self.root.join(IDENTITY_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Saves the identity atomically.
    pub fn save_identity(&self, identity: &Identity) -> io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        let tmp = self.root.join(format!("{IDENTITY_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(identity)?)?;
        std::fs::rename(tmp, self.root.join(IDENTITY_FILE))
    }

    /// Removes etcd's data and the identity (the member is gone from the cluster). etcd's
    /// directory is emptied, not removed: it may be the mount point of a volume of its own.
    pub fn wipe(&self) -> io::Result<()> {
        empty_if_present(&self.etcd_dir())?;
        remove_if_present(&self.root.join(IDENTITY_FILE))
    }

    /// Marks the member as having left: a restarted sidecar stays idle.
    pub fn mark_removed(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        std::fs::write(self.root.join(REMOVED_MARKER), b"left the cluster\n")
    }

    /// True when the member has left.
    pub fn is_removed(&self) -> bool {
        self.root.join(REMOVED_MARKER).exists()
    }
}

fn empty_if_present(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    for entry in entries {
        remove_if_present(&entry?.path())?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_wipe_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let md = MemberDir::new(dir.path().join("m"));
        assert_eq!(md.load_identity(), None);
        assert!(!md.has_etcd_data());
        let id = Identity {
            name: "c-0001".into(),
            member_id: 42,
            cluster_id: 7,
            cluster_client_urls: vec!["http://127.0.0.1:1".into()],
        };
        md.save_identity(&id).unwrap();
        assert_eq!(md.load_identity(), Some(id));
        std::fs::create_dir_all(md.etcd_dir().join("member/wal")).unwrap();
        assert!(!md.has_etcd_data(), "an empty wal directory is no data");
        std::fs::write(md.etcd_dir().join("member/wal/0.wal"), b"x").unwrap();
        assert!(md.has_etcd_data());
        md.wipe().unwrap();
        assert!(!md.has_etcd_data());
        // Emptied, not removed: it may be a volume's mount point.
        assert_eq!(
            std::fs::read_dir(md.etcd_dir()).unwrap().count(),
            0,
            "nothing left in etcd's directory"
        );
        assert_eq!(md.load_identity(), None);
        assert!(!md.is_removed());
        md.mark_removed().unwrap();
        assert!(md.is_removed());
    }
}
