//! The durable decision record of one cluster: every fact a later decision depends on,
//! written before the act it enables and read back when a coordinator (or a new term of
//! one) first looks at the cluster. What is only in memory is lost with the process; what
//! is here is what the next coordinator decides from.
//!
//! | fact | written | read by |
//! |---|---|---|
//! | `created`: the cluster was created (its first members decided) | before the first member is created | the planner: a cluster with no member left is one whose members are gone, never a new one to bootstrap (`Observed::created`) |
//! | `members`: the members decided and not yet deleted | before a member is created; after it is deleted | observe: a member the runtime has no trace of is gone with its data (a Pod deleted with its `emptyDir`) |
//! | `restore`: the backup a cluster is created from, found and checked | before its seed is created | the registration answer of the seed; the `Restored` condition |
//! | `recovery`: a quorum lost for good and what was done (forced new cluster, restore) | before the act | the `QuorumLost` condition; the restore's survivors kept until it runs |
//! | `grant`: the membership grant in flight | before it is answered or acted under | the grant table of the next coordinator: a holder that still works renews it |
//! | `bootstrap`: the static bootstrap under way (its members and token) | before its members are created | the registration answer of every initial member |
//! | `upgrades`: upgrade and rollback steps under way (the version restarted on, the one last run healthy) | before the member is restarted on its new version | the planner's wait for the member to come back healthy on it, its rollback past the deadline, the version rules (a member counts at the version it last ran healthy until then) |
//! | `upgradeFailed`: the upgrade that stopped, its member, versions and etcd's last error | before the member is rolled back | the planner (no further upgrade step, new members on the version rolled back to) and the `UpgradeFailed` condition |
//! | `caRotation`: the etcd CA's rotation under way, its phase and the members still to restart in it | before the CA files of the phase are written, and before each member's restart is taken out | the planner's rule 15 (the next step of the rotation) and the `CertificatesValid` condition (`CARotating`) |
//!
//! Kept by a [`RecordStore`]: local mode in `<state>/<cluster>/decisions.json` (written with
//! [`etcd_operator::durable::write_atomic`]), Kubernetes in the annotation
//! `etcd.operator.rs/decisions` of the `EtcdCluster`. A record that cannot be read is an
//! error that stops the cluster's passes, never an empty record.

use std::collections::{BTreeMap, BTreeSet};

use etcd_operator::{ClusterKey, grant::UnixMillis, proto};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The record of one cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    /// The `EtcdCluster`'s UID (Kubernetes; empty in local mode): a record is of one object,
    /// never of another of the same name created since.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Set once the cluster's first members were decided: from then on the cluster exists,
    /// whatever is left of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Created>,
    /// The runtime members decided and not yet deleted, by name.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub members: BTreeSet<String>,
    /// Members decided and not yet known to be made: one the runtime has no trace of was
    /// never made (its creation failed, or the coordinator stopped before it), and is
    /// forgotten rather than taken for a member gone with its data.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unmade: BTreeSet<String>,
    /// One past the highest ordinal ever decided: never handed out again, even for a member
    /// that was decided and never made.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_ordinal: u32,
    /// etcd's cluster id (hex), once a member reported it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etcd_cluster_id: String,
    /// The backup the cluster is (being) created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreDecision>,
    /// The last recovery after quorum was lost for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// The membership grant in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantRecord>,
    /// The static bootstrap under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapRecord>,
    /// Upgrade (and rollback) steps under way, by member.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upgrades: BTreeMap<String, UpgradeStepRecord>,
    /// The upgrade that stopped: a member did not come back healthy on its new version and
    /// was rolled back. Forgotten once the spec asks for another version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_failed: Option<UpgradeFailureRecord>,
    /// Written by a coordinator that records every grant it gives (this one): the grant in
    /// flight is the one above, and no sidecar holds another. A coordinator that finds it
    /// need not wait for the sidecars to report the grants they hold before it gives one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grants_recorded: bool,
    /// The etcd CA's rotation under way (the new CA itself is kept by the runtime, with
    /// the old one: files under the state directory, or the CA Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_rotation: Option<CaRotationRecord>,
}

/// A CA rotation under way.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CaRotationRecord {
    /// `Trust`, `Reissue` or `Drop` ([`crate::plan::CaPhase`]).
    pub phase: String,
    /// The members to restart in this phase (those of its start still to go).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub pending: BTreeSet<String>,
    /// When the rotation began (coordinator clock).
    pub began_at: UnixMillis,
    /// Why it began.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// An upgrade (or rollback) step under way: written before the member is restarted on its
/// new version, taken out once it reports healthy on it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", from = "StepAsKept")]
pub struct UpgradeStepRecord {
    /// When the member was restarted on `to` (coordinator clock).
    pub at: UnixMillis,
    /// The version it was restarted on (empty in a record of a coordinator that kept only
    /// the time: the runtime's version stands in).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// The version it last ran healthy before the step: what a failed upgrade rolls it back
    /// to (empty when not known: it is then never rolled back).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_healthy: String,
    /// The step rolls a failed upgrade back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

/// A step as kept: an object, or the bare time an older coordinator wrote.
#[derive(Deserialize)]
#[serde(untagged)]
enum StepAsKept {
    At(UnixMillis),
    Step {
        at: UnixMillis,
        #[serde(default)]
        to: String,
        #[serde(default, rename = "lastHealthy")]
        last_healthy: String,
        #[serde(default)]
        rollback: bool,
    },
}

impl From<StepAsKept> for UpgradeStepRecord {
    fn from(kept: StepAsKept) -> Self {
        match kept {
            StepAsKept::At(at) => Self {
                at,
                ..Default::default()
            },
            StepAsKept::Step {
                at,
                to,
                last_healthy,
                rollback,
            } => Self {
                at,
                to,
                last_healthy,
                rollback,
            },
        }
    }
}

/// An upgrade that stopped.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeFailureRecord {
    /// The member that did not come back healthy.
    pub member: String,
    /// The version it did not come back healthy on.
    pub to: String,
    /// The version it was rolled back to.
    pub back_to: String,
    /// What it last said.
    pub error: String,
    /// When, coordinator clock.
    pub at: UnixMillis,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DecisionRecord {
    /// Records that member `name` of `cluster` is decided (before it is made).
    pub fn add_member(&mut self, cluster: &str, name: &str) {
        self.members.insert(name.to_string());
        self.unmade.insert(name.to_string());
        if let Some(ordinal) = etcd_operator::naming::member_ordinal(cluster, name) {
            self.next_ordinal = self.next_ordinal.max(ordinal.saturating_add(1));
        }
    }

    /// Records that `names` are made (the runtime created them): from now on one the
    /// runtime has no trace of is gone with its data; and the cluster was created.
    pub fn made(&mut self, names: &[String], at: UnixMillis) {
        for name in names {
            self.unmade.remove(name);
        }
        if self.created.is_none() && !names.is_empty() {
            self.created = Some(Created {
                at,
                members: names.to_vec(),
            });
        }
    }

    /// Forgets `name` (deleted, or never made).
    pub fn forget_member(&mut self, name: &str) {
        self.members.remove(name);
        self.unmade.remove(name);
    }
}

/// When and with which members a cluster was created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// Milliseconds since the Unix epoch (coordinator clock).
    pub at: UnixMillis,
    /// The first members.
    pub members: Vec<String>,
}

/// The backup a cluster is created from, and its seed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreDecision {
    /// Where it is and what it must hash to.
    pub source: RestoreSourceRecord,
    /// The member that restores it.
    pub seed: String,
    /// The restored seed reported it runs on the backup's data.
    #[serde(default)]
    pub done: bool,
}

/// [`proto::RestoreSource`], as the record keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSourceRecord {
    /// Local directory of the storage (local mode).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_path: String,
    /// S3 bucket.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub s3_bucket: String,
    /// S3 prefix.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub s3_prefix: String,
    /// S3 endpoint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub s3_endpoint: String,
    /// S3 region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub s3_region: String,
    /// S3 path-style addressing.
    #[serde(default)]
    pub s3_force_path_style: bool,
    /// Azure container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub azure_container: String,
    /// Azure prefix.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub azure_prefix: String,
    /// Azure storage account.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub azure_account: String,
    /// Azure endpoint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub azure_endpoint: String,
    /// The Azure emulator's development account.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub azure_use_emulator: bool,
    /// The Secret holding the storage's credentials (its name only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credentials_secret: String,
    /// The backup's name.
    pub backup: String,
    /// The SHA-256 its bytes must have.
    pub sha256: String,
    /// How far revisions are bumped.
    pub bump_revision: i64,
    /// The cluster the backup was taken of.
    pub source_cluster: String,
    /// Its namespace (`local` in local mode; empty in records of earlier versions: the
    /// restoring cluster's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
    /// The backup is in the earlier layout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy_layout: bool,
}

impl From<&proto::RestoreSource> for RestoreSourceRecord {
    fn from(s: &proto::RestoreSource) -> Self {
        let storage = s.storage.clone().unwrap_or_default();
        Self {
            local_path: storage.local_path,
            s3_bucket: storage.s3_bucket,
            s3_prefix: storage.s3_prefix,
            s3_endpoint: storage.s3_endpoint,
            s3_region: storage.s3_region,
            s3_force_path_style: storage.s3_force_path_style,
            azure_container: storage.azure_container,
            azure_prefix: storage.azure_prefix,
            azure_account: storage.azure_account,
            azure_endpoint: storage.azure_endpoint,
            azure_use_emulator: storage.azure_use_emulator,
            credentials_secret: storage.credentials_secret,
            backup: s.backup.clone(),
            sha256: s.sha256.clone(),
            bump_revision: s.bump_revision,
            source_cluster: s.source_cluster.clone(),
            source_namespace: s.source_namespace.clone(),
            legacy_layout: s.legacy_layout,
        }
    }
}

impl From<&RestoreSourceRecord> for proto::RestoreSource {
    fn from(r: &RestoreSourceRecord) -> Self {
        Self {
            storage: Some(proto::BackupStorage {
                local_path: r.local_path.clone(),
                s3_bucket: r.s3_bucket.clone(),
                s3_prefix: r.s3_prefix.clone(),
                s3_endpoint: r.s3_endpoint.clone(),
                s3_region: r.s3_region.clone(),
                s3_force_path_style: r.s3_force_path_style,
                azure_container: r.azure_container.clone(),
                azure_prefix: r.azure_prefix.clone(),
                azure_account: r.azure_account.clone(),
                azure_endpoint: r.azure_endpoint.clone(),
                azure_use_emulator: r.azure_use_emulator,
                credentials_secret: r.credentials_secret.clone(),
            }),
            backup: r.backup.clone(),
            sha256: r.sha256.clone(),
            bump_revision: r.bump_revision,
            source_cluster: r.source_cluster.clone(),
            source_namespace: r.source_namespace.clone(),
            legacy_layout: r.legacy_layout,
        }
    }
}

/// A recovery after quorum was lost for good.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// The survivor a new cluster was forced from, or the seed of the restore.
    pub from: String,
    /// The revision the cluster resumed at (a forced new cluster; 0 until known).
    #[serde(default)]
    pub revision: i64,
    /// The raft index the survivor had.
    #[serde(default)]
    pub raft_index: u64,
    /// The voters whose data was gone.
    pub lost: Vec<String>,
    /// When, RFC 3339.
    pub at: String,
    /// The backup the cluster was created again from (a restore), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The forced new cluster or the restore is done.
    #[serde(default)]
    pub done: bool,
    /// Survivors of the lost cluster kept (stopped, with their data) until the restored
    /// cluster runs; deleted then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
}

/// The membership grant in flight.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GrantRecord {
    /// Its id, as its holder knows it.
    pub id: String,
    /// The member it is for.
    pub member: String,
    /// The change it allows (`add`, `remove`, ...).
    pub kind: String,
    /// When it was given.
    pub issued_at: UnixMillis,
}

impl GrantRecord {
    /// The record of `grant`.
    pub fn of(grant: &etcd_operator::grant::MembershipGrant) -> Self {
        Self {
            id: grant.id.clone(),
            member: grant.member.clone(),
            kind: etcd_operator::grant::kind_name(grant.kind).to_string(),
            issued_at: grant.issued_at,
        }
    }

    /// The change kind, if the record names one.
    pub fn change_kind(&self) -> Option<proto::ChangeKind> {
        etcd_operator::grant::kind_from_name(&self.kind)
    }
}

/// A static bootstrap under way.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapRecord {
    /// The initial members, lowest ordinal first.
    pub names: Vec<String>,
    /// The `--initial-cluster-token`.
    pub token: String,
    /// When the first initial member was given its role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub began: Option<UnixMillis>,
    /// Being abandoned: its members are deleted with their data (none ever served).
    #[serde(default)]
    pub abandoning: bool,
}

/// A record that cannot be read or written.
#[derive(Debug, Error)]
pub enum RecordError {
    /// Reading or writing it failed.
    #[error("the decision record {location}: {message}")]
    Io {
        /// Where it is kept.
        location: String,
        /// What failed.
        message: String,
    },
    /// It is there but does not parse.
    #[error("the decision record {location} cannot be read: {message}")]
    Corrupt {
        /// Where it is kept.
        location: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Where records are kept.
#[tonic::async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// The record of `cluster` (an empty one when it has none yet).
    async fn load(&self, cluster: &ClusterKey) -> Result<DecisionRecord, RecordError>;
    /// Replaces the record of `cluster`, as the coordinator term `epoch`; durable when it
    /// returns. Refused when a newer term has written the cluster's record (where the store
    /// can tell: on Kubernetes).
    async fn save(
        &self,
        cluster: &ClusterKey,
        record: &DecisionRecord,
        epoch: u64,
    ) -> Result<(), RecordError>;
}

/// Parses a record as kept (`location` names it in errors).
pub fn parse(bytes: &[u8], location: &str) -> Result<DecisionRecord, RecordError> {
    serde_json::from_slice(bytes).map_err(|e| RecordError::Corrupt {
        location: location.to_string(),
        message: e.to_string(),
    })
}

/// A record as kept.
pub fn encode(record: &DecisionRecord) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// Local mode: `<state>/<cluster>/decisions.json`.
pub struct LocalRecords {
    state_dir: std::path::PathBuf,
}

/// The record's file name in a cluster's state directory.
pub const RECORD_FILE: &str = "decisions.json";

impl LocalRecords {
    /// Records under `state_dir`.
    pub fn new(state_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
        }
    }

    /// Where the record of `cluster` is kept.
    pub fn path(&self, cluster: &ClusterKey) -> std::path::PathBuf {
        let dir = if cluster.namespace.is_empty() {
            self.state_dir.join(&cluster.name)
        } else {
            self.state_dir.join(&cluster.namespace).join(&cluster.name)
        };
        dir.join(RECORD_FILE)
    }
}

#[tonic::async_trait]
impl RecordStore for LocalRecords {
    async fn load(&self, cluster: &ClusterKey) -> Result<DecisionRecord, RecordError> {
        let path = self.path(cluster);
        let location = path.display().to_string();
        let read = tokio::task::spawn_blocking({
            let path = path.clone();
            move || etcd_operator::durable::read_if_present(&path)
        })
        .await
        .map_err(|e| RecordError::Io {
            location: location.clone(),
            message: e.to_string(),
        })?;
        match read {
            Ok(None) => Ok(DecisionRecord::default()),
            Ok(Some(bytes)) => parse(&bytes, &location),
            Err(e) => Err(RecordError::Io {
                location,
                message: e.to_string(),
            }),
        }
    }

    async fn save(
        &self,
        cluster: &ClusterKey,
        record: &DecisionRecord,
        _epoch: u64,
    ) -> Result<(), RecordError> {
        let path = self.path(cluster);
        let location = path.display().to_string();
        let bytes = encode(record);
        tokio::task::spawn_blocking(move || etcd_operator::durable::write_atomic(&path, &bytes))
            .await
            .map_err(|e| RecordError::Io {
                location: location.clone(),
                message: e.to_string(),
            })?
            .map_err(|e| RecordError::Io {
                location,
                message: e.to_string(),
            })
    }
}

/// Records kept in memory only: for tests of what reads and writes the record without a
/// runtime.
#[derive(Default)]
pub struct MemoryRecords {
    records: std::sync::Mutex<std::collections::HashMap<ClusterKey, DecisionRecord>>,
    /// While set, every save fails (a store that is down).
    pub failing: std::sync::atomic::AtomicBool,
}

#[tonic::async_trait]
impl RecordStore for MemoryRecords {
    async fn load(&self, cluster: &ClusterKey) -> Result<DecisionRecord, RecordError> {
        Ok(self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(cluster)
            .cloned()
            .unwrap_or_default())
    }

    async fn save(
        &self,
        cluster: &ClusterKey,
        record: &DecisionRecord,
        _epoch: u64,
    ) -> Result<(), RecordError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RecordError::Io {
                location: format!("of {cluster} (in memory)"),
                message: "the store is down".into(),
            });
        }
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cluster.clone(), record.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DecisionRecord {
        DecisionRecord {
            created: Some(Created {
                at: 5,
                members: vec!["c-0000".into()],
            }),
            members: ["c-0000".to_string()].into(),
            restore: Some(RestoreDecision {
                source: RestoreSourceRecord {
                    local_path: "/b".into(),
                    backup: "full-1".into(),
                    sha256: "ab".into(),
                    bump_revision: 7,
                    source_cluster: "c".into(),
                    ..Default::default()
                },
                seed: "c-0000".into(),
                done: false,
            }),
            grant: Some(GrantRecord {
                id: "c-1-1".into(),
                member: "c-0000".into(),
                kind: "bootstrap".into(),
                issued_at: 5,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_record_round_trips_and_an_empty_one_is_small() {
        let record = sample();
        assert_eq!(parse(&encode(&record), "x").unwrap(), record);
        assert_eq!(encode(&DecisionRecord::default()), b"{}");
        let source = proto::RestoreSource::from(&record.restore.as_ref().unwrap().source);
        assert_eq!(
            RestoreSourceRecord::from(&source),
            record.restore.unwrap().source
        );
    }

    #[test]
    fn an_upgrade_step_kept_as_a_bare_time_is_read_as_a_step_of_unknown_versions() {
        let record = parse(br#"{"upgrades":{"c-0001":1700}}"#, "x").unwrap();
        assert_eq!(
            record.upgrades["c-0001"],
            UpgradeStepRecord {
                at: 1700,
                ..Default::default()
            }
        );
        let step = UpgradeStepRecord {
            at: 5,
            to: "3.6.15".into(),
            last_healthy: "3.5.34".into(),
            rollback: true,
        };
        let record = DecisionRecord {
            upgrades: [("c-0001".to_string(), step.clone())].into(),
            upgrade_failed: Some(UpgradeFailureRecord {
                member: "c-0001".into(),
                to: "3.6.15".into(),
                back_to: "3.5.34".into(),
                error: "exit status 1".into(),
                at: 6,
            }),
            ..Default::default()
        };
        let text = String::from_utf8(encode(&record)).unwrap();
        assert!(text.contains(r#""lastHealthy":"3.5.34""#), "{text}");
        assert!(text.contains(r#""backTo":"3.5.34""#), "{text}");
        assert_eq!(parse(text.as_bytes(), "x").unwrap(), record);
    }

    #[tokio::test]
    async fn local_records_are_files_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalRecords::new(dir.path());
        let key = ClusterKey::local("c");
        assert_eq!(store.load(&key).await.unwrap(), DecisionRecord::default());
        store.save(&key, &sample(), 1).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), sample());
        std::fs::write(store.path(&key), b"{\"created\": ").unwrap();
        let e = store.load(&key).await.unwrap_err();
        assert!(matches!(e, RecordError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("decisions.json"), "{e}");
    }
}
