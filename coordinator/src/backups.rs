//! Backups, the coordinator's side: where a cluster's backups go, when the next one is due,
//! how a failed one is retried, and which old ones a retention deletes. The schedule and
//! storage rules are pure; taking a backup is the sidecar's (`etcd_sidecar::backup`), and
//! the planner decides when ([`crate::plan::Action::TakeBackup`]).

use etcd_operator::{
    grant::UnixMillis,
    proto,
    resource::{BackupStorageSpec, EtcdClusterSpec},
    validate::parse_schedule,
};

/// The first retry of a failed backup comes after this long; it doubles up to
/// [`RETRY_MAX_MS`].
pub const RETRY_BASE_MS: i64 = 10_000;
/// The longest wait between retries of a failing backup.
pub const RETRY_MAX_MS: i64 = 300_000;

/// Where a cluster's backups stand, as the coordinator remembers them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupTrack {
    /// An operator asked for a backup at this time (pending until one finishes after it).
    pub requested_at: Option<UnixMillis>,
    /// The newest backup taken (verified or not), and when it finished.
    pub last_success: Option<(proto::Backup, UnixMillis)>,
    /// The newest backup proven restorable.
    pub last_verified: Option<proto::Backup>,
    /// The last failure: when, and why.
    pub last_failure: Option<(UnixMillis, String)>,
    /// Failures since the last success.
    pub failures: u32,
    /// Backups finished (either way), for callers waiting on one.
    pub finished: u64,
    /// The storage resolved at the last reconcile (for ListBackups).
    pub storage: Option<proto::BackupStorage>,
    /// When the next scheduled backup is due.
    pub next_due: Option<UnixMillis>,
    /// The last value of the backup-now annotation acted on (Kubernetes).
    pub annotation_seen: Option<String>,
    /// Why the retention after the last successful backup failed (old backups kept).
    pub retention_error: Option<String>,
}

impl BackupTrack {
    /// The backup-now annotation's value (`None` without one) at a reconcile: asks for a
    /// backup once per new value; what is there when the coordinator first looks (after a
    /// start) is taken as already handled, so a restart does not take one again.
    pub fn request_by_token(&mut self, token: Option<&str>, now: UnixMillis) -> bool {
        let token = token.unwrap_or("");
        let first = self.annotation_seen.is_none();
        if self.annotation_seen.as_deref() == Some(token) {
            return false;
        }
        self.annotation_seen = Some(token.to_string());
        if first {
            return false;
        }
        self.requested_at.get_or_insert(now);
        true
    }
}

/// The storage of a cluster's backups: the spec's, else the runtime's default (local mode:
/// `<state>/backups`); an error says why there is none.
pub fn resolve_storage(
    spec: Option<&BackupStorageSpec>,
    default: Option<proto::BackupStorage>,
) -> Result<proto::BackupStorage, String> {
    match spec {
        Some(s) => Ok(to_proto(s)),
        None => default.ok_or_else(|| {
            "no backup storage: set spec.backup.storage (s3 on Kubernetes)".to_string()
        }),
    }
}

/// The wire form of a storage in the spec.
pub fn to_proto(spec: &BackupStorageSpec) -> proto::BackupStorage {
    let credentials_secret = spec.credentials_secret().unwrap_or_default().to_string();
    match (&spec.local, &spec.s3, &spec.azure) {
        (Some(local), _, _) => proto::BackupStorage {
            local_path: local.path.clone(),
            ..Default::default()
        },
        (None, Some(s3), _) => proto::BackupStorage {
            s3_bucket: s3.bucket.clone(),
            s3_prefix: s3.prefix.clone(),
            s3_endpoint: s3.endpoint.clone().unwrap_or_default(),
            s3_region: s3.region.clone().unwrap_or_default(),
            s3_force_path_style: s3.force_path_style,
            credentials_secret,
            ..Default::default()
        },
        (None, None, Some(azure)) => proto::BackupStorage {
            azure_container: azure.container.clone(),
            azure_prefix: azure.prefix.clone(),
            azure_account: azure.account.clone(),
            azure_endpoint: azure.endpoint.clone().unwrap_or_default(),
            azure_use_emulator: azure.use_emulator,
            credentials_secret,
            ..Default::default()
        },
        (None, None, None) => proto::BackupStorage::default(),
    }
}

/// How long an opened storage (its credentials read) serves ListBackups before they are
/// read again: a rotated Secret is picked up within this long.
pub const ACCESS_REFRESH_MS: i64 = 60_000;

/// A cluster's backup storage as the coordinator last opened it (with the credentials the
/// runtime gave), for ListBackups; kept fresh by the cluster's passes.
#[derive(Debug, Clone)]
pub struct BackupAccess {
    /// Whose backups.
    pub owner: etcd_operator::backup::BackupOwner,
    /// The storage.
    pub storage: proto::BackupStorage,
    /// The storage opened, or why it could not be (no credentials, say).
    pub opened: Result<etcd_sidecar::backup::Storage, String>,
    /// When it was opened.
    pub opened_at: UnixMillis,
    /// The metadata read before, so that a listing reads only what is new.
    pub cache: etcd_sidecar::backup::MetaCache,
}

/// The wait before retrying after `failures` failures in a row.
pub fn retry_after_ms(failures: u32) -> i64 {
    match failures {
        0 => 0,
        n => (RETRY_BASE_MS << (n - 1).min(10)).min(RETRY_MAX_MS),
    }
}

/// When the schedule of `spec` next comes after `after` (ms since the epoch); `None` without
/// a schedule (or with one validation refuses).
pub fn next_scheduled(spec: &EtcdClusterSpec, after: UnixMillis) -> Option<UnixMillis> {
    let schedule = spec.backup.as_ref()?.schedule.as_deref()?;
    let cron = parse_schedule(schedule).ok()?;
    let start = jiff::Timestamp::from_millisecond(after)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC);
    let next = cron.find_next_occurrence(&start, false).ok()?;
    Some(next.timestamp().as_millisecond())
}

/// Whether a backup is due at `now`: one was asked for, or the schedule came since the last
/// success (or since `started`, the coordinator's start); a failure is retried with a
/// backoff before either.
pub fn due(
    track: &BackupTrack,
    spec: &EtcdClusterSpec,
    started: UnixMillis,
    now: UnixMillis,
) -> bool {
    if let Some((at, _)) = &track.last_failure
        && now < at + retry_after_ms(track.failures)
    {
        return false;
    }
    if track.requested_at.is_some() {
        return true;
    }
    // A failed attempt leaves the last success where it was: the slot stays due, and is
    // retried once the backoff above has passed.
    let since = track.last_success.as_ref().map_or(started, |(_, at)| *at);
    next_scheduled(spec, since).is_some_and(|next| next <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_operator::resource::{BackupSpec, LocalStorageSpec};

    fn spec(schedule: Option<&str>) -> EtcdClusterSpec {
        EtcdClusterSpec {
            size: 3,
            version: "3.6.15".into(),
            backup: Some(BackupSpec {
                schedule: schedule.map(str::to_string),
                keep: Some(3),
                storage: None,
            }),
            ..Default::default()
        }
    }

    /// 2026-12-01T10:00:00Z.
    const T0: UnixMillis = 1_796_119_200_000;
    const MIN: i64 = 60_000;

    #[test]
    fn the_schedule_is_cron_in_utc() {
        let s = spec(Some("*/30 * * * *"));
        assert_eq!(next_scheduled(&s, T0), Some(T0 + 30 * MIN));
        assert_eq!(next_scheduled(&s, T0 + 1), Some(T0 + 30 * MIN));
        assert_eq!(next_scheduled(&spec(None), T0), None);
        assert_eq!(next_scheduled(&spec(Some("not cron")), T0), None);
        let hourly = spec(Some("15 * * * *"));
        assert_eq!(next_scheduled(&hourly, T0), Some(T0 + 15 * MIN));
    }

    #[test]
    fn due_when_the_slot_comes_when_asked_and_after_a_backoff() {
        let s = spec(Some("*/30 * * * *"));
        let mut t = BackupTrack::default();
        assert!(!due(&t, &s, T0, T0 + 29 * MIN), "before the first slot");
        assert!(due(&t, &s, T0, T0 + 30 * MIN), "at the slot");
        t.last_success = Some((Default::default(), T0 + 30 * MIN + 5_000));
        assert!(!due(&t, &s, T0, T0 + 40 * MIN), "taken for this slot");
        assert!(due(&t, &s, T0, T0 + 60 * MIN), "the next slot");
        // Failed at the slot: retried after 10 s, then 20 s, not at once.
        t.failures = 1;
        t.last_failure = Some((T0 + 60 * MIN, "storage down".into()));
        assert!(!due(&t, &s, T0, T0 + 60 * MIN + 5_000));
        assert!(due(&t, &s, T0, T0 + 60 * MIN + 10_000));
        t.failures = 2;
        assert!(!due(&t, &s, T0, T0 + 60 * MIN + 15_000));
        assert!(due(&t, &s, T0, T0 + 60 * MIN + 20_000));
        // On demand, without a schedule.
        let mut t = BackupTrack::default();
        assert!(!due(&t, &spec(None), T0, T0 + 1000 * MIN));
        t.requested_at = Some(T0);
        assert!(due(&t, &spec(None), T0, T0));
    }

    #[test]
    fn an_annotation_asks_once_per_new_value() {
        let mut t = BackupTrack::default();
        assert!(
            !t.request_by_token(Some("1"), T0),
            "the value found at start"
        );
        assert!(!t.request_by_token(Some("1"), T0 + 1));
        assert!(t.requested_at.is_none());
        assert!(t.request_by_token(Some("2"), T0 + 2));
        assert_eq!(t.requested_at, Some(T0 + 2));
        assert!(!t.request_by_token(Some("2"), T0 + 3));
        // No annotation at start: the first one set asks.
        let mut t = BackupTrack::default();
        assert!(!t.request_by_token(None, T0));
        assert!(t.request_by_token(Some("x"), T0 + 1));
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        let waits: Vec<i64> = (0..8).map(retry_after_ms).collect();
        assert_eq!(
            waits,
            [0, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000]
        );
    }

    #[test]
    fn storage_is_the_specs_else_the_runtimes_default() {
        let default = proto::BackupStorage {
            local_path: "/state/backups".into(),
            ..Default::default()
        };
        assert_eq!(
            resolve_storage(None, Some(default.clone())),
            Ok(default.clone())
        );
        let local = BackupStorageSpec {
            local: Some(LocalStorageSpec {
                path: "/var/backups/etcd".into(),
            }),
            s3: None,
            azure: None,
        };
        assert_eq!(
            resolve_storage(Some(&local), Some(default))
                .unwrap()
                .local_path,
            "/var/backups/etcd"
        );
        assert!(
            resolve_storage(None, None)
                .unwrap_err()
                .contains("spec.backup.storage")
        );
    }
}
