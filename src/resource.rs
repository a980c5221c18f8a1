//! The `EtcdCluster` custom resource (`etcd.operator.rs/v1alpha1`), the same document in
//! Kubernetes and in local mode. The CRD in `deploy/` is generated from these types.

// kube's printcolumn attributes repeat `type_` by design.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const API_GROUP: &str = "etcd.operator.rs";
/// API version of the resource.
pub const API_VERSION: &str = "v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "EtcdCluster";

/// The desired state of an etcd cluster.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "etcd.operator.rs",
    version = "v1alpha1",
    kind = "EtcdCluster",
    namespaced,
    status = "EtcdClusterStatus",
    shortname = "etcd",
    doc = "An etcd cluster managed by the etcd operator",
    derive = "PartialEq",
    derive = "Default",
    scale(
        spec_replicas_path = ".spec.size",
        status_replicas_path = ".status.size",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Size", type_ = "integer", json_path = ".spec.size"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyMembers"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.currentVersion"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.backup.lastSuccessfulTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterSpec {
    /// Number of members (1 to 9; odd sizes tolerate the most failures per member).
    #[schemars(range(min = 1, max = 9))]
    pub size: i32,
    /// etcd version to run, for example "3.6.15".
    #[schemars(pattern(r"^v?[0-9]+\.[0-9]+\.[0-9]+$"))]
    pub version: String,
    /// Allow a patch-release downgrade within the running minor version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_downgrade: bool,
    /// Image repository of etcd on Kubernetes; the tag is `v<version>`
    /// (default `gcr.io/etcd-development/etcd`). Ignored in local mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub repository: Option<String>,
    /// A PersistentVolumeClaim per member, so a member's data outlives its pod. Without it
    /// data lives in an `emptyDir`. Applies to members created after a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Scheduling and resources of the member pods. Applies to members created after a
    /// change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodPolicy>,
    /// TLS for etcd's client and peer traffic. Fixed when the cluster is created: a change
    /// on a running cluster is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// What the operator may do on its own when quorum is lost and cannot come back (the
    /// data of a majority of members is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
    /// Backups: taken by a member's sidecar from etcd's snapshot stream, checked against the
    /// SHA-256 etcd appends, stored with their metadata, then restored once into a scratch
    /// directory to prove them restorable. Without it, backups are taken on demand only
    /// (`etcd-coordinator backup NAME`), to the default storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Create this cluster from a backup (only a cluster with no member yet; an existing
    /// cluster is never overwritten).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
    /// Day-2 disk maintenance: etcd's backend quota and automatic compaction (etcd flags,
    /// applied to members started after a change), scheduled defragmentation, and, when it
    /// is set at all, recovery from a NOSPACE alarm by the operator (compact, defragment
    /// one member at a time, disarm). Without it a NOSPACE alarm is shown with what to do
    /// by hand and nothing is changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceSpec>,
}

/// Disk maintenance of the members' backends.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceSpec {
    /// Defragment members on a schedule, one at a time, followers first, the leader last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defragment: Option<DefragmentSpec>,
    /// etcd's automatic compaction of old revisions (`--auto-compaction-mode`,
    /// `--auto-compaction-retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_compaction: Option<AutoCompactionSpec>,
    /// etcd's backend quota in bytes (`--quota-backend-bytes`; etcd's default is 2 GiB). A
    /// member whose backend reaches it raises NOSPACE and the cluster refuses writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub quota_backend_bytes: Option<i64>,
    /// What to do when etcd raises NOSPACE: `Recover` (default) compacts to the current
    /// revision, defragments one member at a time (followers first, the leader last) and
    /// disarms the alarm; `Manual` shows the alarm with what to do and changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_space: Option<NoSpacePolicy>,
}

/// What the operator does about a NOSPACE alarm.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NoSpacePolicy {
    /// Compact, defragment one member at a time, disarm.
    #[default]
    Recover,
    /// Show the alarm and what to do by hand; change nothing.
    Manual,
}

/// Scheduled defragmentation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefragmentSpec {
    /// A cron schedule in UTC, five fields (`0 3 * * *`: every day at 03:00). At each
    /// scheduled time, for an hour, every member whose fragmentation is at least
    /// `fragmentationPercent` is defragmented.
    #[schemars(length(min = 1, max = 100))]
    pub schedule: String,
    /// The share of a member's backend that is free pages (`dbSize - dbSizeInUse` over
    /// `dbSize`) from which it is defragmented, 1 to 100 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub fragmentation_percent: Option<i32>,
}

/// The fragmentation a scheduled defragmentation starts from when the spec does not say.
pub const DEFAULT_FRAGMENTATION_PERCENT: i32 = 50;

/// etcd's automatic compaction.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoCompactionSpec {
    /// `periodic` (keep `retention` of history, a duration such as `1h` or `30m`) or
    /// `revision` (keep the last `retention` revisions, a number).
    #[schemars(length(min = 1, max = 16))]
    pub mode: String,
    /// How much history to keep: a duration for `periodic` (`1h`, `30m`, `90s`), a number
    /// of revisions for `revision`.
    #[schemars(length(min = 1, max = 32))]
    pub retention: String,
}

impl MaintenanceSpec {
    /// The etcd flags it asks for, in a fixed order.
    pub fn etcd_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(quota) = self.quota_backend_bytes {
            flags.push(format!("--quota-backend-bytes={quota}"));
        }
        if let Some(auto) = &self.auto_compaction {
            flags.push(format!("--auto-compaction-mode={}", auto.mode));
            flags.push(format!("--auto-compaction-retention={}", auto.retention));
        }
        flags
    }
}

/// When backups are taken and how many are kept.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// A cron schedule in UTC, five fields (`*/30 * * * *`: every half hour). Without it,
    /// backups are taken on demand only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub schedule: Option<String>,
    /// How many backups to keep (at least 1; default 10). Older ones are deleted only after
    /// a new backup succeeded, and never the newest verified one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub keep: Option<i32>,
    /// Where backups go (default: local mode's `<state>/backups/local/<cluster>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<BackupStorageSpec>,
}

/// Backups kept when `keep` is not given.
pub const DEFAULT_BACKUP_KEEP: i32 = 10;

/// Where backups are stored: exactly one kind.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageSpec {
    /// A directory (local mode; on Kubernetes a directory inside the member's container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalStorageSpec>,
    /// An S3 or S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3StorageSpec>,
    /// An Azure Blob Storage container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureStorageSpec>,
}

impl BackupStorageSpec {
    /// The Secret holding the storage's credentials, when the spec names one.
    pub fn credentials_secret(&self) -> Option<&str> {
        self.s3
            .as_ref()
            .and_then(|s| s.credentials_secret.as_deref())
            .or(self
                .azure
                .as_ref()
                .and_then(|a| a.credentials_secret.as_deref()))
    }
}

/// A directory for backups.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalStorageSpec {
    /// An absolute path.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

/// An S3 (or S3-compatible) bucket for backups.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3StorageSpec {
    /// The bucket.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// A prefix inside the bucket, e.g. `etcd/` (`<namespace>/<cluster>/` is appended).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The endpoint URL of an S3-compatible service (default: AWS's for the region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Address the bucket in the path (`https://endpoint/bucket/...`), as most
    /// S3-compatible services need.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_path_style: bool,
    /// A Secret of the cluster's namespace with `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (and optionally `AWS_SESSION_TOKEN`). On Kubernetes it is
    /// required: the members read it (mounted as files, never logged or put in status) and
    /// the coordinator reads it by name for listing, retention and restores; nothing falls
    /// back to an environment or instance metadata. In local mode the coordinator's own
    /// environment variables of those names provide them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
}

/// An Azure Blob Storage container for backups.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureStorageSpec {
    /// The container.
    #[schemars(length(min = 3, max = 63))]
    pub container: String,
    /// A prefix inside the container, e.g. `etcd/` (`<namespace>/<cluster>/` is appended).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The storage account (`devstoreaccount1` with `useEmulator`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 24))]
    pub account: String,
    /// The Blob service endpoint (default `https://<account>.blob.core.windows.net`); with
    /// `useEmulator`, the emulator's URL without the account (`http://127.0.0.1:10000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Use the Azurite emulator's well-known development account and key (local mode and
    /// tests; needs `endpoint`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_emulator: bool,
    /// A Secret of the cluster's namespace with `AZURE_STORAGE_ACCOUNT_KEY`, used as the S3
    /// one is (required on Kubernetes unless `useEmulator`). In local mode the
    /// coordinator's own environment variable of that name provides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
}

/// A backup to create a new cluster from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// `latest` (the newest verified backup) or a backup's name.
    #[schemars(length(min = 1, max = 253))]
    pub backup: String,
    /// The cluster the backup was taken of (default: this cluster's name): naming another
    /// cluster is how its backups are restored; its backups are under
    /// `<prefix><namespace>/<cluster>/` in the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub cluster: Option<String>,
    /// The namespace of that cluster (default: this cluster's; `local` in local mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Where the backup is (default: the cluster's backup storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<BackupStorageSpec>,
    /// How far revisions jump past the backup's, so that watchers never see a revision go
    /// backwards (etcd's `--bump-revision`; default 1,000,000,000). The restored cluster is
    /// marked compacted at that revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_BUMP_REVISION))]
    pub bump_revision: Option<i64>,
}

/// Revisions a restore bumps by when the spec does not say.
pub const DEFAULT_BUMP_REVISION: i64 = 1_000_000_000;

/// The largest revision bump a restore takes: a thousand times the default, far below
/// where etcd's 64-bit revisions could run out.
pub const MAX_BUMP_REVISION: i64 = 1_000_000_000_000;

impl EtcdClusterSpec {
    /// The backup storage: the spec's, when it names one.
    pub fn backup_storage(&self) -> Option<&BackupStorageSpec> {
        self.backup.as_ref().and_then(|b| b.storage.as_ref())
    }

    /// True when etcd's client and peer traffic uses TLS.
    pub fn etcd_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.enabled)
    }
}

/// Recovery from what cannot heal by itself.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// When quorum is lost and a majority of the members' data is gone (members whose data
    /// survives are always brought back on it first, with no membership change):
    /// `Manual` (default) changes nothing and says how to recover; `ForceNewCluster`
    /// restarts the surviving member with the highest raft index as a one-member cluster
    /// (`--force-new-cluster`) and grows it back to `size`. Writes acknowledged only by the
    /// lost members may be gone then: the status names the revision recovered at.
    /// `Restore` deletes every member and creates the cluster again from the latest
    /// verified backup in the cluster's backup storage (`spec.backup.storage`, or the
    /// default), growing it back to `size`: writes after that backup are gone.
    #[serde(default)]
    pub quorum_loss: QuorumLossPolicy,
}

/// What to do when quorum is lost for good.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum QuorumLossPolicy {
    /// Change nothing; phase Failed and a `QuorumLost` condition with what to do.
    #[default]
    Manual,
    /// Force a new cluster from the survivor with the highest raft index.
    ForceNewCluster,
    /// Replace the cluster with one restored from the latest verified backup in the
    /// cluster's backup storage (writes after that backup are lost).
    Restore,
}

impl QuorumLossPolicy {
    /// The word in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "Manual",
            Self::ForceNewCluster => "ForceNewCluster",
            Self::Restore => "Restore",
        }
    }
}

impl EtcdClusterSpec {
    /// The quorum-loss policy (Manual when not set).
    pub fn quorum_loss(&self) -> QuorumLossPolicy {
        self.recovery
            .as_ref()
            .map(|r| r.quorum_loss)
            .unwrap_or_default()
    }
}

/// TLS for etcd's client and peer traffic.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Serve clients and peers over TLS with certificates from a CA of this cluster, and
    /// require client certificates (`--client-cert-auth`, `--peer-client-cert-auth`). The
    /// applications' client certificate is in the Secret `<cluster>-client-tls` (in local
    /// mode, under `<state>/<cluster>/client/`).
    #[serde(default)]
    pub enabled: bool,
}

/// Persistent storage of each member.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of each member's volume, a Kubernetes quantity such as "8Gi".
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// Storage class of the claims (the cluster's default class when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Scheduling and resources of the member pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodPolicy {
    /// Compute resources of the etcd container (requests and limits, Kubernetes quantities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<PodResources>,
    /// Node labels a member's node must have.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// Tolerations of the member pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<PodToleration>,
    /// Spread members over nodes: `Preferred` (default), `Required` or `None`.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,
    /// Extra labels of the member pods.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Extra annotations of the member pods.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Secrets (of type `kubernetes.io/dockerconfigjson`, in the cluster's namespace) the
    /// kubelet pulls the member pods' images with: the etcd image (`repository`) and the
    /// init container's (`sidecarImage`), for private registries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<ImagePullSecret>,
    /// The image of the init container that copies the sidecar into each member pod
    /// (default: the operator's own image). It must hold the operator's
    /// `/usr/local/bin/etcd-coordinator` and `etcd-sidecar`: a copy of the operator image in
    /// a private registry or a mirror, e.g. `registry.example/etcd-operator:v0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), pattern(r"^\S+$"))]
    pub sidecar_image: Option<String>,
}

/// A Secret the kubelet pulls images with, as in a pod's `imagePullSecrets`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullSecret {
    /// The Secret's name (a DNS subdomain: lowercase letters, digits, '-' and '.').
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Requests and limits, as in a container's `resources`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodResources {
    /// Resources reserved for the container, e.g. `{cpu: 500m, memory: 1Gi}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub requests: std::collections::BTreeMap<String, String>,
    /// The most the container may use.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub limits: std::collections::BTreeMap<String, String>,
}

/// A toleration, as in a pod's `tolerations`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodToleration {
    /// The taint key (all keys when empty, with operator `Exists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Exists` or `Equal` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The taint value, with operator `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute` (all effects when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// How long a `NoExecute` taint is tolerated, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// How member pods are spread over nodes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AntiAffinity {
    /// Prefer distinct nodes; share one when there is no other.
    #[default]
    Preferred,
    /// Never two members on one node (members stay Pending without enough nodes).
    Required,
    /// No spreading rule.
    None,
}

/// The observed state of an etcd cluster, written by the coordinator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    /// Creating, Running, Scaling, Upgrading, Recovering, Degraded, Failed, Invalid, or
    /// Unknown when the cluster could not be observed (the gRPC contract's ClusterPhase).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Number of members that exist (the scale subresource's status replicas).
    #[serde(default)]
    pub size: i32,
    /// Number of healthy voting members.
    #[serde(default)]
    pub ready_members: i32,
    /// The members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberState>,
    /// The lowest etcd version any member runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_version: String,
    /// The version the spec asks for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_version: String,
    /// Available, Progressing, Degraded and SpecValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClusterCondition>,
    /// The generation of the spec last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Label selector of the member pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Backups: the newest taken and verified, the last failure, the next one due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
}

/// Where backups stand.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The newest backup taken.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_successful: String,
    /// When it was taken, RFC 3339.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_successful_time: String,
    /// The newest backup proven restorable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_verified: String,
    /// The last failure, for people (empty after a success).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_failure: String,
    /// When it failed, RFC 3339.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_failure_time: String,
    /// When the next scheduled backup is due, RFC 3339.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next: String,
}

/// One member in the status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberState {
    /// Member name, `<cluster>-<NNNN>`.
    pub name: String,
    /// etcd member id in hex (empty before the member joined).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// etcd version the member runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// True when the member is healthy.
    #[serde(default)]
    pub healthy: bool,
    /// True when the member is the leader.
    #[serde(default)]
    pub leader: bool,
    /// True when the member is a learner.
    #[serde(default)]
    pub learner: bool,
    /// Where the member is in its lifecycle (Running, Joining, Restarting, Down, ...; the
    /// gRPC contract's MemberPhase).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Restarts on its data since it last ran steadily.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// How its process or Pod last ended.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_exit: String,
    /// Alarms etcd raised on this member (`NOSPACE`, `CORRUPT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
    /// The member's backend size, bytes.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub db_size: i64,
    /// Of it, bytes in use.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub db_size_in_use: i64,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A condition, shaped like Kubernetes' `metav1.Condition`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCondition {
    /// Available, Progressing, Degraded, SpecValid, QuorumLost, BackupHealthy, Restored,
    /// Alarm or ReconcileFailed (the gRPC contract's ConditionType).
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// One CamelCase word.
    #[serde(default)]
    pub reason: String,
    /// For people.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last status change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
}

/// The CustomResourceDefinition as YAML, as `deploy/base/crd.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt;
    let crd = EtcdCluster::crd();
    Ok(format!(
        "# Generated by `etcd-coordinator crd` from the Rust types; do not edit.\n{}",
        serde_saphyr::to_string(&crd)?
    ))
}
