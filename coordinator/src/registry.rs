//! What the coordinator holds for every cluster: the sidecars' registrations and latest
//! health reports, the grant table, the seed designation, the last status, and the durable
//! decision record ([`crate::record`]) as last read or written. Shared by the gRPC service
//! (which writes reports and grants) and the reconcilers (which read them, plan, and write
//! status). Everything but the record is in memory only and is rebuilt from the world after
//! a restart; the record is read from its store once per term and written through to it
//! ([`Registry::decide`]): memory follows the store, never leads it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use etcd_operator::{
    ClusterKey,
    grant::{GRANT_LEASE, GrantTable, UnixMillis},
    proto::{ClusterStatus, HealthReport, RegisterRequest},
};
use tokio::sync::Notify;

use crate::{
    leadership::Leadership,
    metrics::Metrics,
    record::{DecisionRecord, MemoryRecords, RecordError, RecordStore},
};

/// A health report and when the coordinator received it. Its age is measured on the
/// coordinator's monotonic clock, never by comparing wall clocks: a step of the
/// coordinator's clock makes no old report fresh, and the sidecar's clock (whatever it
/// says) is never compared with the coordinator's.
#[derive(Clone, Debug)]
pub struct ReceivedReport {
    /// The report.
    pub report: HealthReport,
    /// When it arrived (coordinator wall clock: for ordering against other coordinator
    /// times and for people, never for its age).
    pub received_at: UnixMillis,
    /// When it arrived, on the monotonic clock.
    received: std::time::Instant,
}

impl ReceivedReport {
    /// `report`, received now (at `received_at` on the wall clock).
    pub fn new(report: HealthReport, received_at: UnixMillis) -> Self {
        Self {
            report,
            received_at,
            received: std::time::Instant::now(),
        }
    }

    /// `report`, received `age` ago (a coordinator that reads the wall clock as `now`).
    pub fn received_ago(report: HealthReport, now: UnixMillis, age: std::time::Duration) -> Self {
        let received = std::time::Instant::now();
        Self {
            report,
            received_at: now.saturating_sub(age.as_millis() as i64),
            received: received.checked_sub(age).unwrap_or(received),
        }
    }

    /// How long ago it arrived, monotonic.
    pub fn age_ms(&self) -> i64 {
        i64::try_from(self.received.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// When it arrived, on the coordinator's wall clock as read now (`now`): `now` less its
    /// monotonic age, so that a report's age against `now` is always its true age.
    pub fn observed_at(&self, now: UnixMillis) -> UnixMillis {
        now.saturating_sub(self.age_ms())
    }

    /// The report as the planner reads it at `now`: observed when it arrived (the
    /// coordinator's clock), the time its etcd began failing placed on the same clock from
    /// the duration the sidecar measured (or, from a sidecar that sends none, from the
    /// difference of its own two timestamps): never a time of the sidecar's clock.
    pub fn planner_report(&self, now: UnixMillis) -> crate::plan::MemberReport {
        let mut report = crate::plan::MemberReport::from(&self.report);
        report.observed_at = self.observed_at(now);
        if let Some(down) = report.etcd_down.as_mut() {
            let failing_for = if self.report.etcd_failing_for_ms > 0 {
                self.report.etcd_failing_for_ms
            } else {
                self.report
                    .observed_at_unix_ms
                    .saturating_sub(self.report.etcd_failing_since_unix_ms)
                    .max(0)
            };
            down.since = report.observed_at.saturating_sub(failing_for);
        }
        report
    }
}

/// Per-cluster state.
#[derive(Default, Debug)]
pub struct ClusterEntry {
    /// Latest report per member name.
    pub reports: BTreeMap<String, ReceivedReport>,
    /// Latest registration per member name.
    pub registrations: BTreeMap<String, RegisterRequest>,
    /// The member allowed to bootstrap, while the cluster does not exist yet.
    pub seed: Option<String>,
    /// The initial members bootstrapping the cluster together, while they do.
    pub initial: Option<InitialBootstrap>,
    /// Member names the runtime has, as of the last reconcile.
    pub runtime_members: Vec<String>,
    /// True once the reconciler has read the cluster's truth after a (re)start: until then
    /// no grant is given (a grant from the previous life may still be in use).
    pub recovered: bool,
    /// No grant is given before this time (see `service::RECOVERY_SETTLE_MS`).
    pub settle_until: UnixMillis,
    /// True while etcd's member list could be read (a cluster exists).
    pub cluster_exists: bool,
    /// The last status computed.
    pub status: Option<ClusterStatus>,
    /// Members an operator asked to delete (with their data), not deleted yet.
    pub delete_requested: std::collections::BTreeSet<String>,
    /// An operator asked for a rotation of the etcd CA, not begun yet.
    pub ca_rotation_requested: bool,
    /// Where backups stand.
    pub backups: crate::backups::BackupTrack,
    /// The cluster's identity its backups are bound to (the `EtcdCluster`'s UID, or the
    /// local cluster's id), once a pass learned it.
    pub identity: Option<String>,
    /// Its backup storage, opened for ListBackups.
    pub backup_access: Option<crate::backups::BackupAccess>,
    /// The disk maintenance this coordinator did.
    pub maintenance: MaintenanceTrack,
    /// The durable decision record as last read or written (`None` until it is read in this
    /// term): written only through [`Registry::decide`].
    pub record: Option<DecisionRecord>,
    /// Serializes the writes of the record (held across the store's write).
    pub record_lock: Arc<tokio::sync::Mutex<()>>,
    /// The backup a cluster to be created is restored from, found and checked, until its
    /// seed is created (then it is in the record).
    pub pending_restore: Option<etcd_operator::proto::RestoreSource>,
    /// Since when each member the record names has had no trace in the runtime.
    pub gone_since: BTreeMap<String, UnixMillis>,
    /// Members asked to leave whose sidecar could not be reached, since its first failure.
    pub leave_unreachable: BTreeMap<String, UnixMillis>,
    /// Local mode: why the manifest file this cluster was read from is refused now (the
    /// cluster runs on as last read). Shown as `SpecValid False`.
    pub manifest_error: Option<String>,
    /// True when the last plan was `Steady`: a report that changes nothing a reconcile
    /// acts on then wakes no reconciler (while the planner acts or waits, every report
    /// does, so that its waits for a fresh report end when the report arrives).
    pub steady: bool,
    /// Wakes this cluster's reconciler (a stored permit: a wake while it reconciles is
    /// not lost).
    pub wake: Arc<Notify>,
}

/// A report arriving this long after its member's previous one wakes the reconciler even
/// when it tells the same (the member's reports were going stale).
pub const STEADY_REPORT_GAP_MS: i64 = 5_000;

/// Whether a report just received wakes its cluster's reconciler: always while the planner
/// acts or waits (`steady` false: its waits for a fresh report end at once); when steady,
/// only the first report of a member, one after a gap, or one that tells something the
/// previous one did not.
pub fn report_matters(
    steady: bool,
    previous: Option<&ReceivedReport>,
    report: &HealthReport,
) -> bool {
    !steady
        || previous.is_none_or(|old| {
            old.age_ms() > STEADY_REPORT_GAP_MS || steady_part(&old.report) != steady_part(report)
        })
}

/// A report without what moves on its own (the sidecar's own measure of news).
pub use etcd_sidecar::health::steady_part;

/// The disk maintenance a coordinator did, for the planner (`plan::MaintenanceRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceTrack {
    /// The last compaction: revision, and when it was done.
    pub compacted: Option<(i64, UnixMillis)>,
    /// When NOSPACE alarms were last disarmed.
    pub disarmed_at: Option<UnixMillis>,
    /// When each member was last defragmented.
    pub defragmented: BTreeMap<String, UnixMillis>,
}

/// A cluster being created with its initial members all at once (etcd's static bootstrap),
/// under one grant the coordinator holds until the bootstrap ends or is abandoned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialBootstrap {
    /// The initial members, lowest ordinal first.
    pub names: Vec<String>,
    /// `name=peerURL,...` of every initial member, once the runtime has them all (empty
    /// until then: no member is given its role before every peer URL is known).
    pub initial_cluster: String,
    /// The `--initial-cluster-token`, new for every bootstrap.
    pub token: String,
    /// The grant held for the bootstrap.
    pub grant_id: String,
    /// When the first initial member was given its role (the abandon deadline counts from
    /// then; `None` before).
    pub began: Option<UnixMillis>,
}

impl InitialBootstrap {
    /// `name=peerURL,...` for `names`, from the runtime's peer URLs; `None` while one is not
    /// known yet.
    pub fn initial_cluster_of(
        names: &[String],
        peer_url: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let pairs: Option<Vec<String>> = names
            .iter()
            .map(|n| {
                peer_url(n)
                    .filter(|u| !u.is_empty())
                    .map(|u| format!("{n}={u}"))
            })
            .collect();
        pairs.map(|p| p.join(","))
    }
}

/// A new cluster forced from a survivor, or created again from a backup, after quorum was
/// lost for good (kept in the durable record).
pub use crate::record::Recovery as ForcedRecovery;

/// What the coordinator holds for a cluster, reduced to what a reconcile acts on or shows.
/// A change of it is news for the cluster's reconciler; what moves on its own is left out.
#[derive(Debug, Default, PartialEq)]
pub struct Fingerprint {
    /// Each member's report without what moves on its own (raft index and term,
    /// revision, size, when it was observed, etcd's pid), and whether it is fresh.
    reports: Vec<(String, HealthReport, bool)>,
    registrations: BTreeSet<String>,
    grant: Option<String>,
    backup_requested: Option<UnixMillis>,
    backups_finished: u64,
    delete_requested: BTreeSet<String>,
    ca_rotation_requested: bool,
}

struct Inner {
    clusters: HashMap<ClusterKey, ClusterEntry>,
    /// Local mode: manifest files refused that declare no known cluster, with why.
    refused_manifests: Vec<(String, String)>,
    grants: GrantTable,
    started_at: UnixMillis,
}

impl Inner {
    fn new(epoch: u64) -> Self {
        Self {
            clusters: HashMap::new(),
            refused_manifests: Vec::new(),
            // Grant ids carry the term's epoch: a sidecar still holding a grant of an
            // earlier coordinator (or term) can never release one of this one's.
            grants: GrantTable::with_epoch(GRANT_LEASE, epoch),
            started_at: now_ms(),
        }
    }
}

/// The shared registry.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    store: Arc<std::sync::RwLock<Arc<dyn RecordStore>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// The epoch of a registry made without one (tests and tools). A coordinator's term takes
/// its epoch from a counter that only grows (`crate::epoch`), never from a clock.
pub const DEFAULT_EPOCH: u64 = 1;

/// Milliseconds since the Unix epoch.
pub use etcd_operator::now_ms;

impl Registry {
    /// An empty registry of a coordinator whose term never ends, of [`DEFAULT_EPOCH`].
    pub fn new() -> Self {
        Self::always(DEFAULT_EPOCH)
    }

    /// An empty registry of a coordinator whose term, of `epoch`, never ends (local mode,
    /// and Kubernetes without an election).
    pub fn always(epoch: u64) -> Self {
        Self::with_leadership(Leadership::always(epoch), epoch)
    }

    /// An empty registry acting under `leadership` (Kubernetes: the leader election's),
    /// its grant ids carrying `epoch` until the first [`Self::begin_term`].
    pub fn with_leadership(leadership: Leadership, epoch: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::new(epoch))),
            changed: Arc::default(),
            metrics: Arc::default(),
            leadership,
            store: Arc::new(std::sync::RwLock::new(Arc::new(MemoryRecords::default()))),
        }
    }

    /// Grants given or renewed from now on last `lease` (the default is
    /// [`etcd_operator::grant::GRANT_LEASE`]).
    pub fn set_grant_lease(&self, lease: std::time::Duration) {
        self.lock().grants.set_lease(lease);
    }

    /// Keeps the decision records in `store` (the runtime's: a file per cluster in local
    /// mode, an annotation of the `EtcdCluster` on Kubernetes), for this registry and every
    /// clone of it. Until then records are kept in memory (tests).
    pub fn set_store(&self, store: Arc<dyn RecordStore>) {
        *self.store.write().unwrap_or_else(|e| e.into_inner()) = store;
    }

    fn store(&self) -> Arc<dyn RecordStore> {
        Arc::clone(&self.store.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The cluster's decision record, read from the store the first time it is asked for in
    /// this term (a grant it names is put back into the grant table, with a new lease for
    /// its holder to renew), from memory after that.
    pub async fn record(&self, key: &ClusterKey) -> Result<DecisionRecord, RecordError> {
        if let Some(record) = self.with(key, |entry, _| entry.record.clone()) {
            return Ok(record);
        }
        let lock = self.with(key, |entry, _| Arc::clone(&entry.record_lock));
        let _held = lock.lock().await;
        if let Some(record) = self.with(key, |entry, _| entry.record.clone()) {
            return Ok(record);
        }
        let record = self.store().load(key).await?;
        self.with(key, |entry, grants| {
            if let Some(g) = &record.grant
                && let Some(kind) = g.change_kind()
            {
                let restored = grants.restore(key, &g.id, &g.member, kind, g.issued_at, now_ms());
                tracing::info!(cluster = %key, grant = %restored.id, member = %restored.member, kind = %g.kind, "grant in flight read back from the decision record");
            }
            entry.record = Some(record.clone());
        });
        Ok(record)
    }

    /// Forgets the record held in memory for `key` (it is of another object): the next
    /// [`Self::record`] reads it from the store again.
    pub fn forget_record(&self, key: &ClusterKey) {
        self.with(key, |entry, _| entry.record = None);
    }

    /// Changes the cluster's decision record: `change` is applied to a copy, the copy is
    /// written to the store, and only once it is there does it replace the record in memory
    /// (a failed write changes nothing). Refused when this coordinator does not lead now.
    pub async fn decide<T>(
        &self,
        key: &ClusterKey,
        change: impl FnOnce(&mut DecisionRecord) -> T,
    ) -> Result<T, RecordError> {
        let not_leading = || RecordError::Io {
            location: format!("of {key}"),
            message: "not written: this coordinator does not lead now".into(),
        };
        // The term this decision is made under: it is written as that term, and kept in
        // memory only if that term still holds and the entry is still the one the term
        // read (a new term forgets every entry and reads the record again).
        let term = self.leadership.current().ok_or_else(not_leading)?;
        self.record(key).await?;
        let lock = self.with(key, |entry, _| Arc::clone(&entry.record_lock));
        let _held = lock.lock().await;
        let mut record = self
            .with(key, |entry, _| entry.record.clone())
            .unwrap_or_default();
        let out = change(&mut record);
        if self.with(key, |entry, _| entry.record.as_ref() == Some(&record)) {
            return Ok(out);
        }
        record.grants_recorded = true;
        if self.leadership.current() != Some(term) {
            return Err(not_leading());
        }
        self.store().save(key, &record, term).await?;
        let kept = self.with(key, |entry, _| {
            let same_entry = Arc::ptr_eq(&entry.record_lock, &lock);
            if same_entry {
                entry.record = Some(record);
            }
            same_entry
        });
        if !kept || self.leadership.current() != Some(term) {
            return Err(not_leading());
        }
        Ok(out)
    }

    /// Records the grant now in flight for `key` (or none) in its decision record.
    /// The grant table is read while the record's writes are held, so that the last write
    /// always carries the latest grant.
    pub async fn record_grant(&self, key: &ClusterKey) -> Result<(), RecordError> {
        self.decide(key, |record| {
            record.grant = self.with(key, |_, grants| {
                grants
                    .in_flight(key, now_ms())
                    .map(crate::record::GrantRecord::of)
            });
        })
        .await
    }

    /// Whether, and under which term, this coordinator may act now.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// Forgets every cluster and grant: a new term (or its end) starts from the truth,
    /// with grant ids of `epoch`.
    pub fn begin_term(&self, epoch: u64) {
        let mut inner = self.lock();
        *inner = Inner::new(epoch);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the cluster's entry (created if missing) and the grant table.
    pub fn with<T>(
        &self,
        key: &ClusterKey,
        f: impl FnOnce(&mut ClusterEntry, &mut GrantTable) -> T,
    ) -> T {
        let mut inner = self.lock();
        let Inner {
            clusters, grants, ..
        } = &mut *inner;
        f(clusters.entry(key.clone()).or_default(), grants)
    }

    /// Runs `f` on the cluster's entry if the cluster is known.
    pub fn with_existing<T>(
        &self,
        key: &ClusterKey,
        f: impl FnOnce(&mut ClusterEntry, &mut GrantTable) -> T,
    ) -> Option<T> {
        let mut inner = self.lock();
        let Inner {
            clusters, grants, ..
        } = &mut *inner;
        clusters.get_mut(key).map(|entry| f(entry, grants))
    }

    /// What a reconcile of `key` acts on or shows ([`Fingerprint`]) at `now`, a report older
    /// than `stale_after_ms` counting as stale; None for a cluster not known.
    pub fn fingerprint(
        &self,
        key: &ClusterKey,
        now: UnixMillis,
        stale_after_ms: i64,
    ) -> Option<Fingerprint> {
        self.with_existing(key, |entry, grants| Fingerprint {
            reports: entry
                .reports
                .iter()
                .map(|(name, r)| {
                    let fresh = r.age_ms() <= stale_after_ms;
                    (name.clone(), steady_part(&r.report), fresh)
                })
                .collect(),
            registrations: entry.registrations.keys().cloned().collect(),
            grant: grants.in_flight(key, now).map(|g| g.id.clone()),
            backup_requested: entry.backups.requested_at,
            backups_finished: entry.backups.finished,
            delete_requested: entry.delete_requested.clone(),
            ca_rotation_requested: entry.ca_rotation_requested,
        })
    }

    /// Every known cluster.
    pub fn keys(&self) -> Vec<ClusterKey> {
        let mut keys: Vec<ClusterKey> = self.lock().clusters.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Forgets a cluster.
    pub fn remove(&self, key: &ClusterKey) {
        let mut inner = self.lock();
        inner.clusters.remove(key);
        inner.grants.forget(key);
    }

    /// Milliseconds since this registry (the coordinator) started.
    pub fn age_ms(&self, now: UnixMillis) -> i64 {
        now - self.lock().started_at
    }

    /// The coordinator's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Wakes reconcilers (a report or grant changed).
    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// Wakes the reconciler of `key` (and whatever waits on [`Registry::changed`]).
    pub fn notify_cluster(&self, key: &ClusterKey) {
        if let Some(wake) = self.with_existing(key, |entry, _| Arc::clone(&entry.wake)) {
            wake.notify_one();
        }
        self.changed.notify_waiters();
    }

    /// What wakes the reconciler of `key` ([`Registry::notify_cluster`]): await
    /// `notified()` on it.
    pub fn cluster_wake(&self, key: &ClusterKey) -> Arc<Notify> {
        self.with(key, |entry, _| Arc::clone(&entry.wake))
    }

    /// Resolves at the next `notify`.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Local mode: the manifest files refused that declare no cluster known here (their
    /// names cannot be read), each with why; replaces the previous list.
    pub fn set_refused_manifests(&self, refused: Vec<(String, String)>) {
        self.lock().refused_manifests = refused;
    }

    /// The manifest files refused that declare no known cluster, with why.
    pub fn refused_manifests(&self) -> Vec<(String, String)> {
        self.lock().refused_manifests.clone()
    }

    /// The status of every cluster that has one.
    pub fn statuses(&self) -> Vec<ClusterStatus> {
        let inner = self.lock();
        let mut out: Vec<ClusterStatus> = inner
            .clusters
            .iter()
            .filter_map(|(key, e)| {
                // The count is read now, not at the last reconcile: a watcher compares it
                // with what it saw of etcd between two reads.
                e.status.clone().map(|mut s| {
                    s.grants_given = inner.grants.given(key);
                    s
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_cluster_is_known_only_once_every_peer_url_is() {
        let names: Vec<String> = ["c-0000", "c-0001", "c-0002"].map(String::from).to_vec();
        let urls = |known: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                known
                    .iter()
                    .find(|(name, _)| *name == n)
                    .map(|(_, u)| u.to_string())
            }
        };
        assert_eq!(
            InitialBootstrap::initial_cluster_of(
                &names,
                urls(&[
                    ("c-0002", "http://127.0.0.1:3"),
                    ("c-0000", "http://127.0.0.1:1"),
                    ("c-0001", "http://127.0.0.1:2"),
                ])
            )
            .as_deref(),
            Some("c-0000=http://127.0.0.1:1,c-0001=http://127.0.0.1:2,c-0002=http://127.0.0.1:3"),
            "every member, in the order of the names"
        );
        assert_eq!(
            InitialBootstrap::initial_cluster_of(
                &names,
                urls(&[
                    ("c-0000", "http://127.0.0.1:1"),
                    ("c-0002", "http://127.0.0.1:3")
                ])
            ),
            None,
            "a member not created yet"
        );
        assert_eq!(
            InitialBootstrap::initial_cluster_of(
                &names,
                urls(&[
                    ("c-0000", "http://127.0.0.1:1"),
                    ("c-0001", ""),
                    ("c-0002", "http://127.0.0.1:3"),
                ])
            ),
            None,
            "a member whose peer URL is not known yet"
        );
    }

    fn report(leader_id: u64, raft_index: u64) -> HealthReport {
        HealthReport {
            member_name: "c-0000".into(),
            healthy: true,
            leader_id,
            raft_index,
            observed_at_unix_ms: raft_index as i64,
            ..Default::default()
        }
    }

    fn received(report: HealthReport, at: UnixMillis) -> ReceivedReport {
        ReceivedReport::new(report, at)
    }

    #[test]
    fn statuses_carry_the_grants_given_as_of_now() {
        let registry = Registry::new();
        let key = ClusterKey::local("c");
        registry.with(&key, |entry, _| {
            entry.status = Some(ClusterStatus {
                name: "c".into(),
                ..Default::default()
            })
        });
        assert_eq!(registry.statuses()[0].grants_given, 0);
        registry.with(&key, |_, grants| {
            grants
                .request(&key, "c-0001", etcd_operator::proto::ChangeKind::Add, 0)
                .unwrap()
        });
        // Without another reconcile, the status read now counts the grant.
        assert_eq!(registry.statuses()[0].grants_given, 1);
    }

    #[test]
    fn only_news_wakes_a_steady_cluster() {
        let old = received(report(7, 100), 1_000);
        // Steady: the raft index and the observation time move on their own.
        assert!(!report_matters(true, Some(&old), &report(7, 150)));
        // A new leader is news; so is a member's first report, and one after a gap.
        assert!(report_matters(true, Some(&old), &report(8, 150)));
        assert!(report_matters(true, None, &report(7, 150)));
        let gap = std::time::Duration::from_millis(STEADY_REPORT_GAP_MS as u64 + 1);
        let long_ago = ReceivedReport::received_ago(report(7, 100), 1_000, gap);
        assert!(report_matters(true, Some(&long_ago), &report(7, 150)));
        // While the planner acts or waits, every report wakes it.
        assert!(report_matters(false, Some(&old), &report(7, 150)));
    }

    #[tokio::test]
    async fn a_wake_while_the_reconciler_is_busy_is_not_lost() {
        let registry = Registry::new();
        let key = ClusterKey::local("c");
        let wake = registry.cluster_wake(&key);
        // Nobody waits yet (the reconciler is busy): the wake is kept for it.
        registry.notify_cluster(&key);
        tokio::time::timeout(std::time::Duration::from_secs(5), wake.notified())
            .await
            .expect("the stored wake");
        // Another cluster's wake is not this one's.
        registry.notify_cluster(&ClusterKey::local("other"));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), wake.notified())
                .await
                .is_err()
        );
    }
}
