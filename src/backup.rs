//! Backups as stored: what each carries, how they are named and laid out, which ones a
//! retention keeps and which one a restore of `latest` takes. Pure: the I/O lives in the
//! sidecar's `backup` module.
//!
//! Layout under a storage's prefix (`<prefix><cluster>/`): `<name>.db`, the snapshot exactly
//! as etcd streamed it (its SHA-256 appended), and `<name>.json`, its [`BackupMeta`], written
//! only after the snapshot is stored whole. Only a backup with metadata is listed, so a
//! half-written one never is.

use serde::{Deserialize, Serialize};

/// The snapshot object of backup `name`.
pub fn snapshot_object(name: &str) -> String {
    format!("{name}.db")
}

/// The metadata object of backup `name`.
pub fn meta_object(name: &str) -> String {
    format!("{name}.json")
}

/// The backup name for `cluster` at `unix_ms`:
/// `<cluster>-<YYYYMMDD>T<HHMMSS>.<mmm>Z-r<revision>`, so that names sort by time and two
/// backups within one second (one revision, when nothing was written between) differ.
pub fn backup_name(cluster: &str, unix_ms: i64, revision: i64) -> String {
    let time = jiff::Timestamp::from_millisecond(unix_ms)
        .map(|t| t.strftime("%Y%m%dT%H%M%S%.3fZ").to_string())
        .unwrap_or_else(|_| unix_ms.to_string());
    format!("{cluster}-{time}-r{revision}")
}

/// What a stored backup carries, beside its snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupMeta {
    /// The backup's name (its objects are `<name>.db` and `<name>.json`).
    pub name: String,
    /// The cluster's namespace (empty in local mode).
    #[serde(default)]
    pub namespace: String,
    /// The cluster's name.
    pub cluster: String,
    /// etcd's cluster id, hex.
    pub etcd_cluster_id: String,
    /// The member it was streamed from.
    pub member: String,
    /// The etcd version that member ran.
    pub etcd_version: String,
    /// The snapshot's revision.
    pub revision: i64,
    /// The member's raft index when the snapshot was taken.
    pub raft_index: u64,
    /// Keys in the snapshot.
    pub total_keys: u64,
    /// Size of the snapshot object in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the snapshot object, hex.
    pub sha256: String,
    /// When it was taken, RFC 3339.
    pub created_at: String,
    /// True once it was restored into a scratch directory and read back with the same
    /// revision and keys.
    #[serde(default)]
    pub verified: bool,
    /// When it was verified, RFC 3339.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verified_at: String,
    /// Why it could not be verified (empty when verified, or not tried yet).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verify_error: String,
}

/// Backups newest first (by creation time, then name).
pub fn newest_first(mut backups: Vec<BackupMeta>) -> Vec<BackupMeta> {
    backups.sort_by(|a, b| {
        (b.created_at.as_str(), b.name.as_str()).cmp(&(a.created_at.as_str(), a.name.as_str()))
    });
    backups
}

/// The backups a retention of `keep` deletes: all but the `keep` newest, and never the
/// newest verified one (the last good backup stays even when newer ones could not be
/// verified).
pub fn to_delete(backups: &[BackupMeta], keep: usize) -> Vec<String> {
    let ordered = newest_first(backups.to_vec());
    let last_good = ordered.iter().find(|b| b.verified).map(|b| b.name.clone());
    ordered
        .iter()
        .skip(keep.max(1))
        .filter(|b| Some(&b.name) != last_good.as_ref())
        .map(|b| b.name.clone())
        .collect()
}

/// The backup a restore of `wanted` takes: the newest verified one for `latest`, else the
/// one of that name (verified or not: naming one is a choice).
pub fn choose<'a>(backups: &'a [BackupMeta], wanted: &str) -> Option<&'a BackupMeta> {
    if wanted == "latest" {
        let mut verified: Vec<&BackupMeta> = backups.iter().filter(|b| b.verified).collect();
        verified.sort_by(|a, b| (&b.created_at, &b.name).cmp(&(&a.created_at, &a.name)));
        verified.first().copied()
    } else {
        backups.iter().find(|b| b.name == wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, minute: u32, verified: bool) -> BackupMeta {
        BackupMeta {
            name: name.into(),
            created_at: format!("2026-12-01T10:{minute:02}:00Z"),
            verified,
            ..Default::default()
        }
    }

    #[test]
    fn names_sort_by_time() {
        let a = backup_name("c", 1_764_583_200_000, 7);
        let b = backup_name("c", 1_764_583_200_001, 7);
        let c = backup_name("c", 1_764_583_201_000, 3);
        assert_eq!(a, "c-20251201T100000.000Z-r7");
        // Two backups within a second at one revision (no write between) are two names.
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(snapshot_object(&a), "c-20251201T100000.000Z-r7.db");
        assert_eq!(meta_object(&a), "c-20251201T100000.000Z-r7.json");
    }

    #[test]
    fn retention_keeps_the_newest_and_the_last_good_one() {
        let backups = vec![
            meta("b1", 1, true),
            meta("b2", 2, true),
            meta("b3", 3, true),
            meta("b4", 4, true),
            meta("b5", 5, true),
        ];
        assert_eq!(to_delete(&backups, 3), ["b2", "b1"]);
        assert_eq!(to_delete(&backups, 5), Vec::<String>::new());
        // Newer ones failed verification: the last good one is never deleted.
        let backups = vec![
            meta("good", 1, true),
            meta("bad1", 2, false),
            meta("bad2", 3, false),
        ];
        assert_eq!(to_delete(&backups, 1), ["bad1"]);
        // keep 0 is refused by validation; here it still keeps one.
        assert_eq!(to_delete(&backups, 0), ["bad1"]);
    }

    #[test]
    fn latest_is_the_newest_verified() {
        let backups = vec![
            meta("old", 1, true),
            meta("new", 2, true),
            meta("newest-unverified", 3, false),
        ];
        assert_eq!(choose(&backups, "latest").unwrap().name, "new");
        assert_eq!(
            choose(&backups, "newest-unverified").unwrap().name,
            "newest-unverified"
        );
        assert!(choose(&backups, "missing").is_none());
        assert!(choose(&[], "latest").is_none());
    }

    #[test]
    fn metadata_round_trips_as_json() {
        let m = BackupMeta {
            name: "c-1".into(),
            cluster: "c".into(),
            revision: 42,
            sha256: "ab".into(),
            verified: true,
            ..Default::default()
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"sizeBytes\":0") && text.contains("\"etcdClusterId\""));
        assert_eq!(serde_json::from_str::<BackupMeta>(&text).unwrap(), m);
    }
}
