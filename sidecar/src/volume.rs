//! The filesystem that holds etcd's data directory: its size and free space, a backend
//! quota that fits it, and how a full one shows in etcd's exit.
//!
//! etcd raises NOSPACE only when its backend reaches `--quota-backend-bytes` (2 GiB by
//! default). On a volume smaller than that quota plus what the WAL keeps, the filesystem
//! fills first and etcd exits mid-write ("no space left on device"). So the quota etcd runs
//! with is capped to what the volume can hold: the cluster then refuses writes with NOSPACE,
//! which compaction and defragmentation recover from, before the volume is full.

use std::path::Path;

/// etcd's backend quota when none is given (`DefaultQuotaBytes`).
pub const ETCD_DEFAULT_QUOTA: u64 = 2 << 30;

/// What the WAL may hold on the volume besides the backend: etcd keeps five 64 MiB segment
/// files (`--max-wals`) and preallocates the next one.
pub const WAL_RESERVE: u64 = 6 * (64 << 20);

/// The smallest quota the cap gives (a volume this small cannot hold a useful backend).
pub const MIN_FITTED_QUOTA: u64 = 16 << 20;

/// Size and free space of a filesystem, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volume {
    /// Its size.
    pub size: u64,
    /// What an unprivileged writer may still use of it.
    pub available: u64,
}

impl Volume {
    /// The filesystem `path` is on (its nearest existing ancestor's when `path` does not
    /// exist yet); `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<Self> {
        let existing = path.ancestors().find(|p| p.exists())?;
        let stat = nix::sys::statvfs::statvfs(existing).ok()?;
        let fragment = stat.fragment_size() as u64;
        Some(Self {
            size: (stat.blocks() as u64).saturating_mul(fragment),
            available: (stat.blocks_available() as u64).saturating_mul(fragment),
        })
    }
}

/// The backend quota etcd runs with: the one asked for (`None`: etcd's default), unless the
/// volume cannot hold it, then half of what the WAL leaves (the other half is room for the
/// WAL growing between snapshots and for a defragmentation's copy). `None` means etcd's
/// default is kept.
pub fn quota_for_volume(requested: Option<u64>, volume_size: Option<u64>) -> Option<u64> {
    let Some(size) = volume_size.filter(|s| *s > 0) else {
        return requested;
    };
    let fits = (size.saturating_sub(WAL_RESERVE) / 2).max(MIN_FITTED_QUOTA);
    if requested.unwrap_or(ETCD_DEFAULT_QUOTA) <= fits {
        requested
    } else {
        Some(fits)
    }
}

/// Below this much free space a volume counts as full: etcd cannot preallocate its next
/// WAL segment.
pub const FULL_BELOW: u64 = 64 << 20;

/// Whether an etcd that exited on its own did so for want of space: its exit (as the
/// supervisor describes it, its fatal line included) says so, or its volume is still full
/// (an etcd started again on a full volume may fail otherwise, for example on a WAL entry
/// it could only half write).
pub fn is_disk_full(exit: &str, volume: Option<Volume>) -> bool {
    exit.contains("no space left on device") || volume.is_some_and(|v| v.available < FULL_BELOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn the_quota_is_capped_only_on_a_volume_too_small_for_it() {
        // (asked for, volume size, runs with)
        let cases = [
            // A large volume keeps what was asked for, etcd's default included.
            (None, Some(100 * GIB), None),
            (Some(16 * MIB), Some(100 * GIB), Some(16 * MIB)),
            (Some(8 * GIB), Some(100 * GIB), Some(8 * GIB)),
            // Unknown size: nothing is changed.
            (None, None, None),
            (Some(64 * MIB), Some(0), Some(64 * MIB)),
            // 1 GiB: (1024 - 384) / 2 MiB for the backend.
            (None, Some(GIB), Some(320 * MIB)),
            (Some(GIB), Some(GIB), Some(320 * MIB)),
            (Some(100 * MIB), Some(GIB), Some(100 * MIB)),
            // 640 MiB: 128 MiB.
            (None, Some(640 * MIB), Some(128 * MIB)),
            // Smaller than the WAL's reserve: the floor.
            (None, Some(200 * MIB), Some(MIN_FITTED_QUOTA)),
            (Some(8 * MIB), Some(200 * MIB), Some(8 * MIB)),
        ];
        for (asked, size, want) in cases {
            assert_eq!(
                quota_for_volume(asked, size),
                want,
                "asked {asked:?} on {size:?}"
            );
        }
    }

    #[test]
    fn a_full_disk_is_read_from_the_exit_or_the_volume() {
        let roomy = Some(Volume {
            size: GIB,
            available: 500 * MIB,
        });
        let full = Some(Volume {
            size: GIB,
            available: 3 * MIB,
        });
        for exit in [
            "exit status: 1: failed to commit tx: write /d/member/snap/db: no space left on device",
            "exit status: 2: failed to save Raft hard state and entries: write /d/member/wal/0.wal: no space left on device",
        ] {
            assert!(is_disk_full(exit, roomy), "{exit}");
            assert!(is_disk_full(exit, None), "{exit}");
        }
        for other in [
            "exit status: 1: failed to repair WAL: unexpected EOF",
            "signal: 9 (SIGKILL)",
            "exit status: 1",
        ] {
            assert!(!is_disk_full(other, roomy), "{other}");
            assert!(!is_disk_full(other, None), "{other}");
            // On a volume still full, whatever etcd said.
            assert!(is_disk_full(other, full), "{other}");
        }
    }

    #[test]
    fn the_volume_of_a_path_not_made_yet_is_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        let made = Volume::of(dir.path()).expect("the temp dir's filesystem");
        let later = Volume::of(&dir.path().join("member").join("wal")).expect("its parent's");
        assert_eq!(made.size, later.size);
        assert!(made.size > 0 && made.available <= made.size, "{made:?}");
    }
}
