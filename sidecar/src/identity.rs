//! What the sidecar remembers about its member across restarts, kept beside etcd's data
//! in the member directory: the member id it joined as, the cluster's client URLs, a
//! marker written once the member has left (so a restarted sidecar never rejoins), the
//! newest coordinator term it has obeyed (so a restarted sidecar still refuses a deposed
//! coordinator), and the record of a forced new cluster (so a force applies once).
//!
//! Every file is written atomically and durably (`etcd_operator::durable`), and a file
//! that cannot be read is an error, never "absent": what the start decides from these
//! files (wipe, rejoin, bootstrap) must never follow from a failed read.

use std::{
    io,
    path::{Path, PathBuf},
};

use etcd_operator::durable::{read_if_present, write_atomic};
use serde::{Deserialize, Serialize};

const IDENTITY_FILE: &str = "member.json";
const REMOVED_MARKER: &str = "removed";
const LEAVING_MARKER: &str = "leaving";
const EPOCH_FILE: &str = "coordinator-epoch";
const FORCED_FILE: &str = "force-new-cluster.json";

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

/// A forced new cluster started from this member's data, written before etcd is started
/// with `--force-new-cluster`: the force applies to that one start, and a request to force
/// again is judged against it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForcedRecord {
    /// The member forced from.
    pub member_id: u64,
    /// etcd's raft index when the force began: a force that took effect appends the
    /// removal of every other member after it.
    pub raft_index: u64,
    /// The revision the one-member cluster resumed at, once it led itself (0 before).
    pub revision: i64,
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

    fn wal_dir(&self) -> PathBuf {
        self.etcd_dir().join("member").join("wal")
    }

    /// True when etcd has written its write-ahead log here. Only a directory that is not
    /// there is no data: any other failure to read it is an error (a start must not take
    /// an unreadable data directory for an empty one and wipe or bootstrap over it).
    pub fn has_etcd_data(&self) -> io::Result<bool> {
        let wal = self.wal_dir();
        match std::fs::read_dir(&wal) {
            Ok(mut entries) => match entries.next() {
                None => Ok(false),
                Some(Ok(_)) => Ok(true),
                Some(Err(e)) => Err(with_path(e, &wal)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(with_path(e, &wal)),
        }
    }

    /// The saved identity, if any. A file that cannot be read is an error; one that reads
    /// but does not parse (written by a version that did not flush it) is no identity,
    /// which only ever leads to a start on the data, never to a wipe.
    pub fn load_identity(&self) -> io::Result<Option<Identity>> {
        let path = self.root.join(IDENTITY_FILE);
        let Some(bytes) = read_if_present(&path).map_err(|e| with_path(e, &path))? else {
            return Ok(None);
        };
        match serde_json::from_slice(&bytes) {
            Ok(identity) => Ok(Some(identity)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the saved identity does not parse; it is not used");
                Ok(None)
            }
        }
    }

    /// Saves the identity atomically and durably.
    pub fn save_identity(&self, identity: &Identity) -> io::Result<()> {
        write_atomic(
            &self.root.join(IDENTITY_FILE),
            &serde_json::to_vec_pretty(identity)?,
        )
    }

    /// Removes etcd's data, the identity and the record of a forced new cluster (the
    /// member is gone from the cluster). The write-ahead log goes first, so that a wipe cut
    /// short leaves a directory the next start sees as holding no data. etcd's directory
    /// is emptied, not removed: it may be the mount point of a volume of its own. The
    /// newest coordinator term and the removed marker are kept.
    pub fn wipe(&self) -> io::Result<()> {
        remove_if_present(&self.wal_dir())?;
        empty_if_present(&self.etcd_dir())?;
        remove_if_present(&self.root.join(FORCED_FILE))?;
        remove_if_present(&self.root.join(IDENTITY_FILE))
    }

    /// Marks the member as having left: a restarted sidecar stays idle.
    pub fn mark_removed(&self) -> io::Result<()> {
        write_atomic(&self.root.join(REMOVED_MARKER), b"left the cluster\n")
    }

    /// True when the member has left; an error when that cannot be told.
    pub fn is_removed(&self) -> io::Result<bool> {
        let path = self.root.join(REMOVED_MARKER);
        path.try_exists().map_err(|e| with_path(e, &path))
    }

    /// Marks the member as leaving, before it removes itself from etcd: a sidecar started
    /// again before the leave ended finishes it on proof that the removal went through,
    /// rather than rejoining.
    pub fn mark_leaving(&self) -> io::Result<()> {
        write_atomic(&self.root.join(LEAVING_MARKER), b"leaving the cluster\n")
    }

    /// True while a leave is under way (or was cut short); an error when that cannot be
    /// told.
    pub fn is_leaving(&self) -> io::Result<bool> {
        let path = self.root.join(LEAVING_MARKER);
        path.try_exists().map_err(|e| with_path(e, &path))
    }

    /// Forgets a leave that did not remove the member (it is still in its cluster).
    pub fn clear_leaving(&self) -> io::Result<()> {
        remove_if_present(&self.root.join(LEAVING_MARKER))
    }

    /// The newest coordinator term this member has obeyed (0 when none is recorded). A
    /// file that cannot be read or parsed is an error: forgetting it would let a deposed
    /// coordinator in.
    pub fn load_epoch(&self) -> io::Result<u64> {
        let path = self.root.join(EPOCH_FILE);
        let Some(bytes) = read_if_present(&path).map_err(|e| with_path(e, &path))? else {
            return Ok(0);
        };
        String::from_utf8_lossy(&bytes).trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a coordinator term: {e}", path.display()),
            )
        })
    }

    /// Records `epoch` as the newest coordinator term obeyed, durably.
    pub fn save_epoch(&self, epoch: u64) -> io::Result<()> {
        write_atomic(&self.root.join(EPOCH_FILE), format!("{epoch}\n").as_bytes())
    }

    /// The record of a forced new cluster from this member's data, if one was started.
    pub fn load_forced(&self) -> io::Result<Option<ForcedRecord>> {
        let path = self.root.join(FORCED_FILE);
        let Some(bytes) = read_if_present(&path).map_err(|e| with_path(e, &path))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// Records a forced new cluster, durably.
    pub fn save_forced(&self, record: &ForcedRecord) -> io::Result<()> {
        write_atomic(
            &self.root.join(FORCED_FILE),
            &serde_json::to_vec_pretty(record)?,
        )
    }
}

/// `e`, saying which path it is about.
fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
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
        assert_eq!(md.load_identity().unwrap(), None);
        assert!(!md.has_etcd_data().unwrap());
        let id = Identity {
            name: "c-0001".into(),
            member_id: 42,
            cluster_id: 7,
            cluster_client_urls: vec!["http://127.0.0.1:1".into()],
        };
        md.save_identity(&id).unwrap();
        assert_eq!(md.load_identity().unwrap(), Some(id));
        std::fs::create_dir_all(md.etcd_dir().join("member/wal")).unwrap();
        assert!(
            !md.has_etcd_data().unwrap(),
            "an empty wal directory is no data"
        );
        std::fs::write(md.etcd_dir().join("member/wal/0.wal"), b"x").unwrap();
        assert!(md.has_etcd_data().unwrap());
        md.save_epoch(9).unwrap();
        md.save_forced(&ForcedRecord {
            member_id: 42,
            raft_index: 100,
            revision: 0,
        })
        .unwrap();
        md.wipe().unwrap();
        assert!(!md.has_etcd_data().unwrap());
        // Emptied, not removed: it may be a volume's mount point.
        assert_eq!(
            std::fs::read_dir(md.etcd_dir()).unwrap().count(),
            0,
            "nothing left in etcd's directory"
        );
        assert_eq!(md.load_identity().unwrap(), None);
        assert_eq!(
            md.load_forced().unwrap(),
            None,
            "the force pinned the data wiped"
        );
        assert_eq!(
            md.load_epoch().unwrap(),
            9,
            "the newest term outlives a wipe"
        );
        assert!(!md.is_removed().unwrap());
        md.mark_removed().unwrap();
        assert!(md.is_removed().unwrap());
        assert!(!md.is_leaving().unwrap());
        md.mark_leaving().unwrap();
        assert!(md.is_leaving().unwrap());
        md.clear_leaving().unwrap();
        assert!(!md.is_leaving().unwrap());
    }

    #[test]
    fn an_unreadable_data_directory_is_an_error_not_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let md = MemberDir::new(dir.path().join("m"));
        // A file where the wal directory should be (what a root process cannot be kept
        // from reading by permissions): it cannot be listed.
        std::fs::create_dir_all(md.etcd_dir().join("member")).unwrap();
        std::fs::write(md.etcd_dir().join("member/wal"), b"not a directory").unwrap();
        let e = md
            .has_etcd_data()
            .expect_err("an unreadable wal is not \"no data\"");
        assert!(e.to_string().contains("wal"), "{e}");
        // An identity that cannot be read is an error too; one that does not parse is none.
        std::fs::create_dir_all(dir.path().join("m/member.json")).unwrap();
        assert!(md.load_identity().is_err());
        std::fs::remove_dir(dir.path().join("m/member.json")).unwrap();
        std::fs::write(dir.path().join("m/member.json"), b"{trunc").unwrap();
        assert_eq!(md.load_identity().unwrap(), None);
    }

    #[test]
    fn the_newest_term_is_kept_and_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let md = MemberDir::new(dir.path().join("m"));
        assert_eq!(md.load_epoch().unwrap(), 0);
        md.save_epoch(1_700_000_000_000_001).unwrap();
        assert_eq!(md.load_epoch().unwrap(), 1_700_000_000_000_001);
        std::fs::write(dir.path().join("m").join(EPOCH_FILE), b"garbage").unwrap();
        assert!(md.load_epoch().is_err());
    }
}
