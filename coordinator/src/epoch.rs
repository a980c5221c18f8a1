//! Where a coordinator term's epoch comes from: counters that only grow, never a clock.
//! Sidecars refuse calls of an epoch older than one they have seen (and remember the newest
//! across their restarts), so a new term must always count above every earlier one, even
//! when the clock has been set back.
//!
//! - Local mode: `<state>/epoch`, read, incremented and written durably at each start of
//!   the coordinator, under an advisory lock on `<state>/epoch.lock` ([`next_local_epoch`]).
//! - Kubernetes: a counter on the Lease, raised above every epoch recorded on the
//!   `EtcdCluster`s the coordinator can list, each of which records the term's epoch before
//!   the term acts on it (`k8s/epoch.rs`).

use std::{
    io::{self, ErrorKind},
    path::Path,
};

use etcd_operator::durable::{read_if_present, write_atomic};

/// The counter's file under the state directory.
pub const LOCAL_EPOCH_FILE: &str = "epoch";
const LOCAL_EPOCH_LOCK: &str = "epoch.lock";

/// The epoch of a local coordinator's term: one more than the last start's, as counted in
/// `<state>/epoch` (1 on the first start), written durably before it is used. A counter
/// that cannot be read is an error: starting from 1 again would make every sidecar refuse
/// this coordinator.
pub fn next_local_epoch(state_dir: &Path) -> io::Result<u64> {
    std::fs::create_dir_all(state_dir)?;
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join(LOCAL_EPOCH_LOCK))?;
    // Two coordinators started at once on one directory still get two epochs.
    lock.lock()?;
    let path = state_dir.join(LOCAL_EPOCH_FILE);
    let last = match read_if_present(&path)? {
        // No counter yet in a directory that already holds clusters: they were run by an
        // earlier build, whose epochs were the clock in microseconds, and their sidecars may
        // remember one. The count starts above them, once.
        None if holds_clusters(state_dir) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
        None => 0,
        Some(bytes) => String::from_utf8_lossy(&bytes)
            .trim()
            .parse::<u64>()
            .map_err(|e| {
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{}: not an epoch counter: {e}", path.display()),
                )
            })?,
    };
    let next = last
        .checked_add(1)
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "the epoch counter is exhausted"))?;
    write_atomic(&path, format!("{next}\n").as_bytes())?;
    Ok(next)
}

/// Whether `state_dir` holds the state of a cluster (a directory with a `cluster.json`).
fn holds_clusters(state_dir: &Path) -> bool {
    std::fs::read_dir(state_dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            e.path()
                .join(etcd_operator::local_record::CLUSTER_RECORD_FILE)
                .is_file()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_of_an_earlier_build_counts_on_above_its_clock_epochs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join("c").join("cluster.json"), "{}").unwrap();
        // What a sidecar of that build may remember: the clock then, in microseconds.
        let earlier = 1_796_000_000_000_000u64;
        let first = next_local_epoch(dir.path()).unwrap();
        assert!(first > earlier, "{first}");
        assert_eq!(next_local_epoch(dir.path()).unwrap(), first + 1);
    }

    #[test]
    fn each_local_start_counts_one_more_whatever_the_clock_says() {
        let dir = tempfile::tempdir().unwrap();
        let first = next_local_epoch(dir.path()).unwrap();
        let second = next_local_epoch(dir.path()).unwrap();
        assert_eq!((first, second), (1, 2));
        // A counter far above any clock reading (a term from an earlier build, which took
        // the clock in microseconds, on a machine whose clock ran a century ahead): the
        // next start counts on from it; a clock would give less.
        let ahead = (etcd_operator::now_ms().max(0) as u64) * 1000 + 3_155_760_000_000_000;
        std::fs::write(dir.path().join(LOCAL_EPOCH_FILE), format!("{ahead}\n")).unwrap();
        assert_eq!(next_local_epoch(dir.path()).unwrap(), ahead + 1);
        assert_eq!(next_local_epoch(dir.path()).unwrap(), ahead + 2);
    }

    #[test]
    fn an_unreadable_counter_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCAL_EPOCH_FILE), b"not a number").unwrap();
        assert!(next_local_epoch(dir.path()).is_err());
        std::fs::remove_file(dir.path().join(LOCAL_EPOCH_FILE)).unwrap();
        std::fs::create_dir(dir.path().join(LOCAL_EPOCH_FILE)).unwrap();
        assert!(next_local_epoch(dir.path()).is_err());
    }
}
