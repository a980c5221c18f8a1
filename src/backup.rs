//! Backups as stored: what each carries, how they are named and laid out, how they are
//! ordered, which ones a retention deletes and which one a restore takes. Pure: the I/O
//! lives in the sidecar's `backup` module.
//!
//! **Layout.** A cluster's backups are under `<prefix><namespace>/<cluster>/` of a storage
//! (local mode: namespace `local`): `<name>.db`, the snapshot exactly as etcd streamed it (its
//! SHA-256 appended), and `<name>.json`, its [`BackupMeta`], written only after the snapshot
//! is stored whole. Only a backup with metadata is listed, so a half-written one never is.
//! Backups of earlier versions are under `<prefix><cluster>/` ([`legacy_dir`]): they are
//! listed (marked) and restored when named, never chosen as `latest`, never deleted by a
//! retention, since nothing in them names the cluster's identity.
//!
//! **Identity.** Clusters of one namespace and name may share a directory (a cluster
//! deleted and created again; two local state directories backing up to one path). The
//! metadata and the name of every backup carry the identity of the cluster it was taken of
//! ([`BackupOwner`]: the `EtcdCluster`'s UID, or the local cluster's id kept in its state
//! directory): a retention and a `latest` see only one identity's backups.
//!
//! **Order.** Newest first: by etcd revision within one etcd cluster id; etcd clusters (a
//! cluster restored or created again is a new one) by the coordinator's clock when their
//! newest backup was asked for. A sidecar's clock never orders anything but the earlier
//! layout's backups, which carry nothing else.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The namespace segment of local-mode clusters, which have no namespace.
pub const LOCAL_NAMESPACE: &str = crate::identity::LOCAL_NAMESPACE;

/// The longest Kubernetes namespace or `EtcdCluster` name (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// The snapshot object of backup `name`.
pub fn snapshot_object(name: &str) -> String {
    format!("{name}.db")
}

/// The metadata object of backup `name`.
pub fn meta_object(name: &str) -> String {
    format!("{name}.json")
}

/// Why a name cannot be a segment of a backup's path.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} is not a Kubernetes name: lowercase letters, digits and '-', at most {MAX_NAME_LEN} characters, starting and ending with a letter or digit",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// True when `name` can be a backup's name (and so an object's): letters, digits, '.', '_'
/// and '-', not beginning with '.', at most 253 characters.
pub fn is_backup_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The namespace segment of `namespace`: itself, or [`LOCAL_NAMESPACE`] when empty.
pub fn namespace_segment(namespace: &str) -> &str {
    if namespace.is_empty() {
        LOCAL_NAMESPACE
    } else {
        namespace
    }
}

/// The directory of `cluster`'s backups under a storage's prefix, `<namespace>/<cluster>`;
/// both are checked as names before any path is built.
pub fn cluster_dir(namespace: &str, cluster: &str) -> Result<String, String> {
    let namespace = namespace_segment(namespace);
    check_name("the namespace", namespace)?;
    check_name("the cluster name", cluster)?;
    Ok(format!("{namespace}/{cluster}"))
}

/// The directory of `cluster`'s backups in the earlier layout, `<cluster>`.
pub fn legacy_dir(cluster: &str) -> Result<String, String> {
    check_name("the cluster name", cluster)?;
    Ok(cluster.to_string())
}

/// The cluster whose backups these are: namespace (segment), name and identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupOwner {
    /// The namespace, [`LOCAL_NAMESPACE`] in local mode.
    pub namespace: String,
    /// The cluster's name.
    pub cluster: String,
    /// The `EtcdCluster`'s UID, or the local cluster's id.
    pub uid: String,
}

impl BackupOwner {
    /// The owner `namespace`/`cluster` of identity `uid` (an empty namespace is local).
    pub fn new(namespace: &str, cluster: &str, uid: &str) -> Self {
        Self {
            namespace: namespace_segment(namespace).to_string(),
            cluster: cluster.to_string(),
            uid: uid.to_string(),
        }
    }

    /// True when `meta` is a backup of this very cluster (in the identity-bound layout).
    pub fn owns(&self, meta: &BackupMeta) -> bool {
        !meta.legacy && !self.uid.is_empty() && meta.uid == self.uid && self.names(meta)
    }

    /// True when `meta` names this cluster's namespace and name (any identity).
    pub fn names(&self, meta: &BackupMeta) -> bool {
        namespace_segment(&meta.namespace) == self.namespace && meta.cluster == self.cluster
    }
}

/// The backup name for `owner` at `unix_ms` of the coordinator's clock:
/// `<cluster>-<YYYYMMDD>T<HHMMSS>.<mmm>Z-r<revision>-u<uid>`, so that names of one cluster
/// sort by time, two backups within one second (one revision, when nothing was written
/// between) differ, and a snapshot object whose metadata was never written still names the
/// cluster it belongs to.
pub fn backup_name(owner: &BackupOwner, unix_ms: i64, revision: i64) -> String {
    format!(
        "{}-{}-r{revision}-u{}",
        owner.cluster,
        name_time(unix_ms),
        owner.uid
    )
}

fn name_time(unix_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(unix_ms)
        .map(|t| t.strftime("%Y%m%dT%H%M%S%.3fZ").to_string())
        .unwrap_or_else(|_| unix_ms.to_string())
}

/// The coordinator's time and the identity a name of [`backup_name`] carries, when `name`
/// is one of `cluster`'s.
pub fn parse_name(cluster: &str, name: &str) -> Option<(i64, String)> {
    let rest = name.strip_prefix(cluster)?.strip_prefix('-')?;
    let (time, rest) = rest.split_at_checked(20)?;
    let unix_ms = jiff::fmt::strtime::parse("%Y%m%dT%H%M%S%.3fZ", time)
        .ok()?
        .to_datetime()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp()
        .as_millisecond();
    let rest = rest.strip_prefix("-r")?;
    let (revision, uid) = rest.split_once("-u")?;
    revision.parse::<i64>().ok()?;
    (!uid.is_empty()).then(|| (unix_ms, uid.to_string()))
}

/// What a stored backup carries, beside its snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupMeta {
    /// The backup's name (its objects are `<name>.db` and `<name>.json`).
    pub name: String,
    /// The cluster's namespace (`local`, or empty in the earlier layout, in local mode).
    #[serde(default)]
    pub namespace: String,
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's identity: its `EtcdCluster`'s UID, or the local cluster's id (empty
    /// in the earlier layout).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
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
    /// When it was taken (the member's clock), RFC 3339.
    pub created_at: String,
    /// When the coordinator asked for it, by the coordinator's clock, ms since the Unix
    /// epoch (0 in the earlier layout).
    #[serde(default)]
    pub requested_at_unix_ms: i64,
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
    /// Found in the earlier layout (`<prefix><cluster>/`): where it was listed, not what
    /// it says.
    #[serde(skip)]
    pub legacy: bool,
}

impl BackupMeta {
    /// The time that orders it among the backups of other etcd clusters: the coordinator's,
    /// else (the earlier layout) the member's.
    fn order_time(&self) -> i64 {
        if self.requested_at_unix_ms > 0 {
            return self.requested_at_unix_ms;
        }
        self.created_at
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .unwrap_or(0)
    }
}

/// Backups newest first: by revision within one etcd cluster id, etcd clusters by the
/// coordinator's time of their newest backup (a total order: ties fall to the names).
pub fn newest_first(mut backups: Vec<BackupMeta>) -> Vec<BackupMeta> {
    let mut newest_of: BTreeMap<String, i64> = BTreeMap::new();
    for b in &backups {
        let t = newest_of
            .entry(b.etcd_cluster_id.clone())
            .or_insert(i64::MIN);
        *t = (*t).max(b.order_time());
    }
    backups.sort_by_cached_key(|b| {
        std::cmp::Reverse((
            newest_of[&b.etcd_cluster_id],
            b.etcd_cluster_id.clone(),
            b.revision,
            b.order_time(),
            b.name.clone(),
        ))
    });
    backups
}

/// The backups of `owner` a retention of `keep` deletes: all of its own but the `keep`
/// newest, and never its newest verified one (the last good backup stays even when newer
/// ones could not be verified). Another identity's backups and the earlier layout's are
/// never considered.
pub fn to_delete(backups: &[BackupMeta], owner: &BackupOwner, keep: usize) -> Vec<String> {
    let own = newest_first(backups.iter().filter(|b| owner.owns(b)).cloned().collect());
    let last_good = own.iter().find(|b| b.verified).map(|b| b.name.clone());
    own.iter()
        .skip(keep.max(1))
        .filter(|b| Some(&b.name) != last_good.as_ref())
        .map(|b| b.name.clone())
        .collect()
}

/// Whose backups a restore chooses from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreFrom {
    /// The namespace (segment) and name of the cluster the backups were taken of.
    pub namespace: String,
    /// Its name.
    pub cluster: String,
    /// Its identity, when known (this very cluster, or one the coordinator knows): `latest`
    /// then sees only that identity's backups.
    pub uid: Option<String>,
    /// With `uid` given and no verified backup of it: take those of the one identity found
    /// instead (a cluster restoring itself from a life before its current identity).
    pub or_earlier_life: bool,
}

/// Why no backup can be chosen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChooseError {
    /// No verified backup of that cluster.
    #[error("no verified backup of {0}")]
    NoVerified(String),
    /// No backup of that name of that cluster.
    #[error("no backup {name:?} of {cluster}")]
    NoSuchBackup {
        /// The name asked for.
        name: String,
        /// The cluster.
        cluster: String,
    },
    /// `latest` of a cluster whose identity is not known, with the backups of several.
    #[error(
        "the backups of {cluster} were taken of {} different clusters of that name ({}): name the backup to restore instead of \"latest\"",
        uids.len(),
        uids.iter().cloned().collect::<Vec<_>>().join(", ")
    )]
    Ambiguous {
        /// The cluster.
        cluster: String,
        /// The identities found.
        uids: BTreeSet<String>,
    },
}

/// The backup a restore of `wanted` from `from` takes: for `latest`, the newest verified one
/// of that cluster's identity (when the identity is not known, of the one identity its
/// backups have; several are ambiguous); else the one of that name of that cluster,
/// verified or not, in either layout (naming one is a choice).
pub fn choose<'a>(
    backups: &'a [BackupMeta],
    wanted: &str,
    from: &RestoreFrom,
) -> Result<&'a BackupMeta, ChooseError> {
    let who = format!("{}/{}", from.namespace, from.cluster);
    let named = |b: &&BackupMeta| {
        namespace_segment(&b.namespace) == from.namespace && b.cluster == from.cluster
    };
    if wanted != "latest" {
        return backups
            .iter()
            .filter(named)
            .find(|b| b.name == wanted)
            .ok_or_else(|| ChooseError::NoSuchBackup {
                name: wanted.to_string(),
                cluster: who,
            });
    }
    let verified = || {
        backups
            .iter()
            .filter(named)
            .filter(|b| b.verified && !b.legacy && !b.uid.is_empty())
    };
    let mut candidates: Vec<&BackupMeta> = verified()
        .filter(|b| from.uid.as_ref().is_none_or(|uid| &b.uid == uid))
        .collect();
    if candidates.is_empty() && from.or_earlier_life {
        candidates = verified().collect();
    }
    let uids: BTreeSet<String> = candidates.iter().map(|b| b.uid.clone()).collect();
    if uids.len() > 1 {
        return Err(ChooseError::Ambiguous { cluster: who, uids });
    }
    let newest = newest_first(candidates.into_iter().cloned().collect())
        .into_iter()
        .next()
        .ok_or(ChooseError::NoVerified(who))?;
    Ok(backups
        .iter()
        .find(|b| b.name == newest.name && !b.legacy)
        .expect("chosen among them"))
}

/// The snapshot objects a backup of `owner` left without metadata (a crash, or a storage
/// failure, between the two writes) that may be deleted: named as `owner`'s backups are
/// (the identity is in the name), asked for before `before_unix_ms` (the coordinator's
/// time of the backup just taken: one backup of a cluster at a time, so none of them is
/// still being written), and without a metadata object. `objects` are the names (without
/// extension) of the `.db` objects, `with_meta` those of the `.json` ones.
pub fn orphans(
    snapshots: &[String],
    with_meta: &BTreeSet<String>,
    owner: &BackupOwner,
    before_unix_ms: i64,
) -> Vec<String> {
    snapshots
        .iter()
        .filter(|name| !with_meta.contains(*name))
        .filter(|name| {
            parse_name(&owner.cluster, name)
                .is_some_and(|(at, uid)| uid == owner.uid && at < before_unix_ms)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_583_200_000; // 2025-12-01T10:00:00Z

    fn owner(uid: &str) -> BackupOwner {
        BackupOwner::new("team-a", "etcd", uid)
    }

    /// A backup of `team-a/etcd` of identity `uid`, etcd cluster `etcd_id`, at `revision`,
    /// asked for `minute` minutes after T0 by the coordinator.
    fn meta(uid: &str, etcd_id: &str, revision: i64, minute: i64, verified: bool) -> BackupMeta {
        let o = owner(uid);
        BackupMeta {
            name: backup_name(&o, T0 + minute * 60_000, revision),
            namespace: o.namespace,
            cluster: o.cluster,
            uid: uid.into(),
            etcd_cluster_id: etcd_id.into(),
            revision,
            requested_at_unix_ms: T0 + minute * 60_000,
            verified,
            ..Default::default()
        }
    }

    fn order(backups: &[BackupMeta]) -> Vec<(i64, String)> {
        backups
            .iter()
            .map(|b| (b.revision, b.etcd_cluster_id.clone()))
            .collect()
    }

    #[test]
    fn names_carry_the_time_revision_and_identity() {
        let o = BackupOwner::new("", "c", "4f1c");
        assert_eq!(o.namespace, "local");
        let a = backup_name(&o, T0, 7);
        let b = backup_name(&o, T0 + 1, 7);
        let c = backup_name(&o, T0 + 1000, 3);
        assert_eq!(a, "c-20251201T100000.000Z-r7-u4f1c");
        // Two backups within a second at one revision (no write between) are two names.
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(snapshot_object(&a), "c-20251201T100000.000Z-r7-u4f1c.db");
        assert_eq!(meta_object(&a), "c-20251201T100000.000Z-r7-u4f1c.json");
        assert_eq!(parse_name("c", &a), Some((T0, "4f1c".into())));
        // A cluster whose name another's begins with is not taken for it.
        for (cluster, name) in [
            ("c", "c-x-20251201T100000.000Z-r7-u4f1c"),
            ("c", "c-20251201T100000.000Z-r7"),
            ("c", "c-20251201T100000.000Z-rX-u4f1c"),
            ("c", "c-20251201T100000.000Z-r7-u"),
            ("cc", &a),
        ] {
            assert_eq!(parse_name(cluster, name), None, "{cluster} {name}");
        }
    }

    #[test]
    fn path_segments_are_kubernetes_names_checked_before_any_path() {
        assert_eq!(cluster_dir("team-a", "etcd").unwrap(), "team-a/etcd");
        assert_eq!(cluster_dir("", "etcd").unwrap(), "local/etcd");
        assert_eq!(legacy_dir("etcd").unwrap(), "etcd");
        let long = "a".repeat(64);
        for (ns, cluster) in [
            ("team-a", ".."),
            ("..", "etcd"),
            ("team-a", "../etcd"),
            ("team-a", "/etc"),
            ("team-a", "a/b"),
            ("team-a", ""),
            ("team-a", "Etcd"),
            ("team-a", "-etcd"),
            ("team-a", "etcd-"),
            ("team-a", "e.tcd"),
            ("team-a", long.as_str()),
            (long.as_str(), "etcd"),
        ] {
            assert!(cluster_dir(ns, cluster).is_err(), "{ns:?}/{cluster:?}");
        }
        assert!(legacy_dir("..").is_err());
    }

    #[test]
    fn order_is_by_revision_within_an_etcd_cluster_then_by_the_coordinators_clock() {
        // (etcd cluster, revision, coordinator minute) -> expected position, newest first.
        /// (case, (etcd cluster, revision, coordinator minute) each, newest first).
        type Case<'a> = (&'a str, &'a [(&'a str, i64, i64)], &'a [(i64, &'a str)]);
        let table: &[Case] = &[
            (
                "one etcd cluster: revisions decide, whatever the clocks say",
                &[("e1", 10, 5), ("e1", 30, 1), ("e1", 20, 9)],
                &[(30, "e1"), (20, "e1"), (10, "e1")],
            ),
            (
                "a cluster restored (a new etcd cluster id) is newer, its revisions lower",
                &[("e1", 500, 1), ("e1", 600, 2), ("e2", 10, 3), ("e2", 20, 4)],
                &[(20, "e2"), (10, "e2"), (600, "e1"), (500, "e1")],
            ),
            (
                "etcd clusters ordered by their newest backup's coordinator time",
                &[("e2", 10, 3), ("e1", 600, 7), ("e1", 500, 1)],
                &[(600, "e1"), (500, "e1"), (10, "e2")],
            ),
        ];
        for (case, input, want) in table {
            let backups: Vec<BackupMeta> = input
                .iter()
                .map(|(e, r, m)| meta("u1", e, *r, *m, true))
                .collect();
            let got = order(&newest_first(backups));
            let want: Vec<(i64, String)> = want.iter().map(|(r, e)| (*r, e.to_string())).collect();
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn a_members_clock_running_ahead_pins_nothing() {
        // The member's clock says the oldest backup is from next year: it orders nothing.
        let mut old = meta("u1", "e1", 10, 1, true);
        old.created_at = "2099-01-01T00:00:00Z".into();
        let new = meta("u1", "e1", 20, 2, true);
        let backups = vec![old.clone(), new.clone()];
        let from = RestoreFrom {
            namespace: "team-a".into(),
            cluster: "etcd".into(),
            uid: Some("u1".into()),
            or_earlier_life: false,
        };
        assert_eq!(choose(&backups, "latest", &from).unwrap().name, new.name);
        assert_eq!(to_delete(&backups, &owner("u1"), 1), [old.name]);
    }

    #[test]
    fn retention_sees_only_its_own_identity() {
        let mine: Vec<BackupMeta> = (1..=5)
            .map(|i| meta("mine", "e1", i * 10, i, true))
            .collect();
        let theirs: Vec<BackupMeta> = (1..=5)
            .map(|i| meta("theirs", "e9", i * 100, i + 10, true))
            .collect();
        let mut legacy = meta("", "e1", 1, 0, true);
        legacy.legacy = true;
        let mut other_ns = meta("mine", "e1", 1, 0, true);
        other_ns.namespace = "team-b".into();
        let mut all = mine.clone();
        all.extend(theirs.clone());
        all.push(legacy);
        all.push(other_ns);
        let table: &[(&str, usize, Vec<String>)] = &[
            (
                "keep 3 of mine, none of theirs, not the old layout's, not another namespace's",
                3,
                vec![mine[1].name.clone(), mine[0].name.clone()],
            ),
            ("keep 5", 5, vec![]),
            (
                "keep 0 is refused by validation; here it still keeps one",
                0,
                mine[..4].iter().rev().map(|b| b.name.clone()).collect(),
            ),
        ];
        for (case, keep, want) in table {
            assert_eq!(&to_delete(&all, &owner("mine"), *keep), want, "{case}");
        }
        // Theirs, seen from their side, untouched by mine.
        assert_eq!(
            to_delete(&all, &owner("theirs"), 4),
            [theirs[0].name.clone()]
        );
        // No identity: nothing is anyone's.
        assert!(to_delete(&all, &owner(""), 1).is_empty());
    }

    #[test]
    fn retention_keeps_the_last_good_one() {
        let good = meta("u", "e1", 10, 1, true);
        let bad1 = meta("u", "e1", 20, 2, false);
        let bad2 = meta("u", "e1", 30, 3, false);
        let backups = vec![good, bad1.clone(), bad2];
        assert_eq!(to_delete(&backups, &owner("u"), 1), [bad1.name]);
    }

    #[test]
    fn latest_is_the_newest_verified_of_one_identity() {
        let a_old = meta("a", "ea", 10, 1, true);
        let a_new = meta("a", "ea", 20, 2, true);
        let a_unverified = meta("a", "ea", 30, 3, false);
        let b_newest = meta("b", "eb", 999, 9, true);
        let mut legacy = meta("", "ea", 5000, 20, true);
        legacy.legacy = true;
        legacy.name = "etcd-20251201T103000.000Z-r5000".into();
        let all = vec![
            a_old.clone(),
            a_new.clone(),
            a_unverified.clone(),
            b_newest.clone(),
            legacy.clone(),
        ];
        let from = |uid: Option<&str>| RestoreFrom {
            namespace: "team-a".into(),
            cluster: "etcd".into(),
            uid: uid.map(str::to_string),
            or_earlier_life: false,
        };
        let earlier_life = |uid: &str| RestoreFrom {
            or_earlier_life: true,
            ..from(Some(uid))
        };
        /// (case, backups, wanted, from, the name chosen or a part of the error).
        type Case<'a> = (
            &'a str,
            &'a [BackupMeta],
            &'a str,
            RestoreFrom,
            Result<&'a str, &'a str>,
        );
        let table: Vec<Case> = vec![
            (
                "own identity",
                &all,
                "latest",
                from(Some("a")),
                Ok(&a_new.name),
            ),
            (
                "the other's",
                &all,
                "latest",
                from(Some("b")),
                Ok(&b_newest.name),
            ),
            (
                "identity unknown, two found: refused",
                &all,
                "latest",
                from(None),
                Err("2 different clusters"),
            ),
            (
                "identity unknown, one found",
                &all[..3],
                "latest",
                from(None),
                Ok(&a_new.name),
            ),
            (
                "never the old layout's as latest",
                std::slice::from_ref(&legacy),
                "latest",
                from(None),
                Err("no verified backup of team-a/etcd"),
            ),
            (
                "an unverified one by name",
                &all,
                &a_unverified.name,
                from(Some("a")),
                Ok(&a_unverified.name),
            ),
            (
                "the old layout's by name",
                &all,
                &legacy.name,
                from(Some("a")),
                Ok(&legacy.name),
            ),
            (
                "another namespace's name is not found",
                &all,
                &a_new.name,
                RestoreFrom {
                    namespace: "team-b".into(),
                    cluster: "etcd".into(),
                    uid: None,
                    or_earlier_life: false,
                },
                Err("no backup"),
            ),
            (
                "a new identity without backups: no earlier life unless asked",
                &all[..3],
                "latest",
                from(Some("new")),
                Err("no verified"),
            ),
            (
                "a new identity restoring its one earlier life",
                &all[..3],
                "latest",
                earlier_life("new"),
                Ok(&a_new.name),
            ),
            (
                "its own backups first, when it has some",
                &all,
                "latest",
                earlier_life("b"),
                Ok(&b_newest.name),
            ),
            (
                "an earlier life among two is ambiguous",
                &all,
                "latest",
                earlier_life("new"),
                Err("2 different clusters"),
            ),
            (
                "nothing",
                &[],
                "latest",
                from(Some("a")),
                Err("no verified"),
            ),
        ];
        for (case, backups, wanted, from, want) in table {
            match (choose(backups, wanted, &from), want) {
                (Ok(got), Ok(name)) => assert_eq!(got.name, name, "{case}"),
                (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{case}: {e}"),
                (got, want) => panic!("{case}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn orphans_are_only_this_identitys_older_snapshots_without_metadata() {
        let o = owner("u1");
        let name = |uid: &str, minute: i64| backup_name(&owner(uid), T0 + minute * 60_000, 1);
        let with_meta: BTreeSet<String> = [name("u1", 1)].into_iter().collect();
        let snapshots = vec![
            name("u1", 1),                              // has metadata
            name("u1", 2),                              // an orphan
            name("u2", 2),                              // another identity's
            name("u1", 9),                              // not older than the backup just taken
            "etcd-20251201T100000.000Z-r1".to_string(), // the old layout's
            "other-20251201T100000.000Z-r1-uu1".to_string(),
        ];
        assert_eq!(
            orphans(&snapshots, &with_meta, &o, T0 + 5 * 60_000),
            [name("u1", 2)]
        );
        assert!(orphans(&snapshots, &with_meta, &owner(""), T0 + 60 * 60_000).is_empty());
    }

    #[test]
    fn metadata_round_trips_as_json_and_reads_the_earlier_format() {
        let m = meta("u", "e1", 42, 1, true);
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"sizeBytes\":0") && text.contains("\"etcdClusterId\""));
        assert!(text.contains("\"uid\":\"u\"") && text.contains("\"requestedAtUnixMs\""));
        assert!(!text.contains("legacy"), "where it was found is not stored");
        assert_eq!(serde_json::from_str::<BackupMeta>(&text).unwrap(), m);
        let earlier = r#"{"name":"c-20251201T100000.000Z-r7","cluster":"c","etcdClusterId":"a","member":"c-0001","etcdVersion":"3.6.15","revision":7,"raftIndex":9,"totalKeys":3,"sizeBytes":10,"sha256":"ab","createdAt":"2025-12-01T10:00:00Z","verified":true}"#;
        let read: BackupMeta = serde_json::from_str(earlier).unwrap();
        assert_eq!((read.uid.as_str(), read.requested_at_unix_ms), ("", 0));
        assert_eq!(read.order_time(), T0);
    }
}
