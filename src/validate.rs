//! Spec validation: every problem in a spec, each with a clear message, before anything acts.

use std::fmt;

use thiserror::Error;

use crate::{
    resource::{EtcdCluster, EtcdClusterSpec},
    version::{EtcdVersion, SUPPORTED_MINORS},
};

/// The largest cluster the operator runs: beyond 9 voters, every write waits on too many
/// members for no gain in tolerated failures worth having.
pub const MAX_SIZE: i32 = 9;

/// One problem with a spec.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// `size` below 1.
    #[error("spec.size is {0}: it must be at least 1")]
    SizeTooSmall(i32),
    /// `size` above [`MAX_SIZE`].
    #[error("spec.size is {0}: at most {MAX_SIZE} members are supported")]
    SizeTooLarge(i32),
    /// `version` does not parse.
    #[error("spec.version {0:?} is not a version: use MAJOR.MINOR.PATCH, for example \"3.6.15\"")]
    VersionUnparseable(String),
    /// `version` is of a minor line this operator does not run.
    #[error("spec.version {version} is not supported: supported versions are {supported}")]
    VersionUnsupported {
        /// The version asked for.
        version: String,
        /// The supported minor lines, for the message.
        supported: String,
    },
    /// `spec.backup.schedule` is not a cron schedule.
    #[error(
        "spec.backup.schedule {schedule:?} is not a cron schedule ({reason}): use five fields in UTC, for example \"*/30 * * * *\""
    )]
    BadSchedule {
        /// The schedule given.
        schedule: String,
        /// What the parser said.
        reason: String,
    },
    /// `spec.backup.keep` below 1.
    #[error("spec.backup.keep is {0}: keep at least 1 backup")]
    KeepTooSmall(i32),
    /// A storage names no kind, or more than one.
    #[error("{0} must name exactly one storage kind (local, s3 or azure), not {1}")]
    StorageKinds(&'static str, usize),
    /// A storage field is empty or malformed.
    #[error("{field}: {reason}")]
    BadStorage {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// `spec.restore.backup` is empty.
    #[error("spec.restore.backup is empty: name a backup, or \"latest\"")]
    RestoreNamesNothing,
    /// `spec.restore.backup` is not a backup's name.
    #[error(
        "spec.restore.backup {0:?} is not a backup's name: \"latest\", or a name as listed (letters, digits, '.', '_' and '-', not beginning with '.')"
    )]
    BadRestoreBackup(String),
    /// `spec.restore.bumpRevision` is negative.
    #[error("spec.restore.bumpRevision is {0}: it must be 0 or more")]
    NegativeBump(i64),
    /// `spec.restore.bumpRevision` above [`crate::resource::MAX_BUMP_REVISION`].
    #[error(
        "spec.restore.bumpRevision is {0}: at most {max} (the default is {default})",
        max = crate::resource::MAX_BUMP_REVISION,
        default = crate::resource::DEFAULT_BUMP_REVISION
    )]
    BumpTooLarge(i64),
    /// `spec.restore.cluster` or `spec.restore.namespace` is not a Kubernetes name.
    #[error("spec.restore.{field}: {reason}")]
    BadRestoreSource {
        /// `cluster` or `namespace`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An image pull Secret's name is empty or not a Secret name.
    #[error(
        "spec.pod.imagePullSecrets[{index}].name {name:?} is not a Secret name: use the name of a Secret of this namespace (lowercase letters, digits, '-' and '.', at most 253 characters)"
    )]
    BadPullSecret {
        /// Its place in the list.
        index: usize,
        /// The name given.
        name: String,
    },
    /// `spec.pod.sidecarImage` is empty or not an image reference.
    #[error(
        "spec.pod.sidecarImage {0:?} is not an image reference: use REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST) of a copy of the operator image, without a scheme or spaces"
    )]
    BadSidecarImage(String),
    /// `spec.maintenance.defragment.schedule` is not a cron schedule.
    #[error(
        "spec.maintenance.defragment.schedule {schedule:?} is not a cron schedule ({reason}): use five fields in UTC, for example \"0 3 * * *\""
    )]
    BadDefragSchedule {
        /// The schedule given.
        schedule: String,
        /// What the parser said.
        reason: String,
    },
    /// `spec.maintenance.defragment.fragmentationPercent` outside 1..=100.
    #[error(
        "spec.maintenance.defragment.fragmentationPercent is {0}: use a share of the backend from 1 to 100"
    )]
    BadFragmentation(i32),
    /// `spec.maintenance.autoCompaction.mode` is neither `periodic` nor `revision`.
    #[error(
        "spec.maintenance.autoCompaction.mode {0:?} is not a mode: use \"periodic\" or \"revision\""
    )]
    BadCompactionMode(String),
    /// `spec.maintenance.autoCompaction.retention` does not fit its mode.
    #[error(
        "spec.maintenance.autoCompaction.retention {retention:?} does not fit mode {mode}: {expected}"
    )]
    BadRetention {
        /// The retention given.
        retention: String,
        /// The mode.
        mode: String,
        /// What the mode takes.
        expected: &'static str,
    },
    /// `spec.maintenance.quotaBackendBytes` is negative.
    #[error(
        "spec.maintenance.quotaBackendBytes is {0}: it must be 0 (etcd's default, 2 GiB) or more bytes"
    )]
    NegativeQuota(i64),
    /// The object has no name.
    #[error("metadata.name is missing")]
    MissingName,
    /// The name cannot be used for members (DNS-1035 label, with room for the ordinal).
    #[error(
        "metadata.name {0:?} must be a lowercase DNS label (a-z, 0-9, '-'), start with a letter and be at most 50 characters"
    )]
    InvalidName(String),
}

/// A spec that passed validation, with anything worth a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSpec {
    /// The number of members.
    pub size: u32,
    /// The etcd version.
    pub version: EtcdVersion,
    /// Downgrades of a patch release allowed.
    pub allow_downgrade: bool,
    /// What may be done when quorum is lost for good.
    pub quorum_loss: crate::resource::QuorumLossPolicy,
    /// What disk maintenance the operator may do on its own.
    pub maintenance: Maintenance,
    /// Things that are allowed but worth saying (an even size).
    pub warnings: Vec<String>,
}

/// The disk maintenance a valid spec allows the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// `spec.maintenance` is set: a NOSPACE alarm is recovered from by the operator
    /// (compact, defragment one member at a time, disarm).
    pub recover_nospace: bool,
    /// With a defragmentation schedule: the fragmentation (percent of the backend that is
    /// free pages) from which a member is defragmented when the schedule comes.
    pub defrag_percent: Option<u32>,
}

/// Every problem of a refused spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Validates a spec, returning every problem at once.
pub fn validate_spec(spec: &EtcdClusterSpec) -> Result<ValidSpec, SpecErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if spec.size < 1 {
        errors.push(SpecError::SizeTooSmall(spec.size));
    } else if spec.size > MAX_SIZE {
        errors.push(SpecError::SizeTooLarge(spec.size));
    } else if spec.size % 2 == 0 {
        warnings.push(format!(
            "spec.size {} is even: it tolerates no more failures than size {}, and needs one more member for every write",
            spec.size,
            spec.size - 1
        ));
    }
    let version = match spec.version.parse::<EtcdVersion>() {
        Ok(v) if v.is_supported() => Some(v),
        Ok(v) => {
            errors.push(SpecError::VersionUnsupported {
                version: v.to_string(),
                supported: supported_lines(),
            });
            None
        }
        Err(_) => {
            errors.push(SpecError::VersionUnparseable(spec.version.clone()));
            None
        }
    };
    if let Some(backup) = &spec.backup {
        check_backup(backup, &mut errors);
    }
    if let Some(restore) = &spec.restore {
        if restore.backup.trim().is_empty() {
            errors.push(SpecError::RestoreNamesNothing);
        } else if !crate::backup::is_backup_name(&restore.backup) {
            errors.push(SpecError::BadRestoreBackup(
                restore.backup.chars().take(80).collect(),
            ));
        }
        match restore.bump_revision {
            Some(bump) if bump < 0 => errors.push(SpecError::NegativeBump(bump)),
            Some(bump) if bump > crate::resource::MAX_BUMP_REVISION => {
                errors.push(SpecError::BumpTooLarge(bump))
            }
            _ => {}
        }
        for (field, value) in [
            ("cluster", &restore.cluster),
            ("namespace", &restore.namespace),
        ] {
            if let Some(value) = value
                && let Err(reason) = crate::backup::check_name(field, value)
            {
                errors.push(SpecError::BadRestoreSource { field, reason });
            }
        }
        if let Some(storage) = &restore.storage {
            check_storage("spec.restore.storage", storage, &mut errors);
        }
    }
    if let Some(pod) = &spec.pod {
        check_pod(pod, &mut errors);
    }
    if let Some(maintenance) = &spec.maintenance {
        check_maintenance(maintenance, &mut errors);
    }
    match version {
        Some(version) if errors.is_empty() => Ok(ValidSpec {
            size: spec.size as u32,
            version,
            allow_downgrade: spec.allow_downgrade,
            quorum_loss: spec.quorum_loss(),
            maintenance: Maintenance {
                recover_nospace: spec.maintenance.as_ref().is_some_and(|m| {
                    m.no_space.unwrap_or_default() == crate::resource::NoSpacePolicy::Recover
                }),
                defrag_percent: spec
                    .maintenance
                    .as_ref()
                    .and_then(|m| m.defragment.as_ref())
                    .map(|d| {
                        d.fragmentation_percent
                            .unwrap_or(crate::resource::DEFAULT_FRAGMENTATION_PERCENT)
                            as u32
                    }),
            },
            warnings,
        }),
        _ => Err(SpecErrors(errors)),
    }
}

/// Parses a backup schedule: five cron fields, UTC.
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    let fields = schedule.split_whitespace().count();
    if fields != 5 {
        return Err(format!("{fields} fields, not 5"));
    }
    schedule.parse::<croner::Cron>().map_err(|e| e.to_string())
}

fn check_backup(backup: &crate::resource::BackupSpec, errors: &mut Vec<SpecError>) {
    if let Some(schedule) = &backup.schedule
        && let Err(reason) = parse_schedule(schedule)
    {
        errors.push(SpecError::BadSchedule {
            schedule: schedule.clone(),
            reason,
        });
    }
    if let Some(keep) = backup.keep
        && keep < 1
    {
        errors.push(SpecError::KeepTooSmall(keep));
    }
    if let Some(storage) = &backup.storage {
        check_storage("spec.backup.storage", storage, errors);
    }
}

fn check_maintenance(m: &crate::resource::MaintenanceSpec, errors: &mut Vec<SpecError>) {
    if let Some(defrag) = &m.defragment {
        if let Err(reason) = parse_schedule(&defrag.schedule) {
            errors.push(SpecError::BadDefragSchedule {
                schedule: defrag.schedule.clone(),
                reason,
            });
        }
        if let Some(percent) = defrag.fragmentation_percent
            && !(1..=100).contains(&percent)
        {
            errors.push(SpecError::BadFragmentation(percent));
        }
    }
    if let Some(auto) = &m.auto_compaction {
        match auto.mode.as_str() {
            "periodic" => {
                if !is_retention_duration(&auto.retention) {
                    errors.push(SpecError::BadRetention {
                        retention: auto.retention.clone(),
                        mode: auto.mode.clone(),
                        expected: "a duration such as \"1h\", \"30m\" or \"1h30m\" (a bare number is hours)",
                    });
                }
            }
            "revision" => {
                if auto.retention.parse::<u64>().is_err() {
                    errors.push(SpecError::BadRetention {
                        retention: auto.retention.clone(),
                        mode: auto.mode.clone(),
                        expected: "a number of revisions to keep, such as \"10000\"",
                    });
                }
            }
            other => errors.push(SpecError::BadCompactionMode(other.to_string())),
        }
    }
    if let Some(quota) = m.quota_backend_bytes
        && quota < 0
    {
        errors.push(SpecError::NegativeQuota(quota));
    }
}

/// A retention etcd's periodic compaction takes: a bare number of hours, or a Go duration
/// of whole units (`1h`, `30m`, `1h30m`, `90s`, `500ms`).
fn is_retention_duration(text: &str) -> bool {
    if text.parse::<u64>().is_ok() {
        return true;
    }
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

fn check_storage(
    field: &'static str,
    storage: &crate::resource::BackupStorageSpec,
    errors: &mut Vec<SpecError>,
) {
    let kinds = usize::from(storage.local.is_some())
        + usize::from(storage.s3.is_some())
        + usize::from(storage.azure.is_some());
    if kinds != 1 {
        errors.push(SpecError::StorageKinds(field, kinds));
    }
    if let Some(local) = &storage.local
        && !local.path.starts_with('/')
    {
        errors.push(SpecError::BadStorage {
            field: "local.path",
            reason: "must be an absolute path",
        });
    }
    if let Some(s3) = &storage.s3 {
        if s3.bucket.trim().is_empty() {
            errors.push(SpecError::BadStorage {
                field: "s3.bucket",
                reason: "is empty",
            });
        }
        if let Some(endpoint) = &s3.endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            errors.push(SpecError::BadStorage {
                field: "s3.endpoint",
                reason: "must be an http:// or https:// URL",
            });
        }
    }
    if let Some(azure) = &storage.azure {
        if azure.container.trim().is_empty() {
            errors.push(SpecError::BadStorage {
                field: "azure.container",
                reason: "is empty",
            });
        }
        if azure.account.is_empty() && !azure.use_emulator {
            errors.push(SpecError::BadStorage {
                field: "azure.account",
                reason: "is empty: name the storage account",
            });
        }
        match &azure.endpoint {
            Some(endpoint)
                if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) =>
            {
                errors.push(SpecError::BadStorage {
                    field: "azure.endpoint",
                    reason: "must be an http:// or https:// URL",
                })
            }
            None if azure.use_emulator => errors.push(SpecError::BadStorage {
                field: "azure.endpoint",
                reason: "is required with useEmulator: the emulator's URL, without the account",
            }),
            _ => {}
        }
    }
    if let Some(secret) = storage.credentials_secret()
        && !is_dns_subdomain(secret)
    {
        errors.push(SpecError::BadStorage {
            field: "credentialsSecret",
            reason: "is not a Secret name (lowercase letters, digits, '-' and '.', at most 253 characters)",
        });
    }
}

fn check_pod(pod: &crate::resource::PodPolicy, errors: &mut Vec<SpecError>) {
    for (index, secret) in pod.image_pull_secrets.iter().enumerate() {
        if !is_dns_subdomain(&secret.name) {
            errors.push(SpecError::BadPullSecret {
                index,
                name: secret.name.clone(),
            });
        }
    }
    if let Some(image) = &pod.sidecar_image
        && !is_image_reference(image)
    {
        errors.push(SpecError::BadSidecarImage(image.clone()));
    }
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Something the kubelet can pull: no scheme, no spaces, no empty part.
fn is_image_reference(image: &str) -> bool {
    !image.is_empty()
        && image.len() <= 512
        && !image.contains("://")
        && !image.chars().any(char::is_whitespace)
        && !image.starts_with(['/', ':', '@'])
        && !image.ends_with(['/', ':', '@'])
}

/// Validates a whole object: its name and its spec.
pub fn validate_cluster(cluster: &EtcdCluster) -> Result<ValidSpec, SpecErrors> {
    let name_error = match cluster.metadata.name.as_deref() {
        None | Some("") => Some(SpecError::MissingName),
        Some(name) if !is_member_prefix(name) => Some(SpecError::InvalidName(name.to_string())),
        Some(_) => None,
    };
    match (name_error, validate_spec(&cluster.spec)) {
        (None, result) => result,
        (Some(e), Ok(_)) => Err(SpecErrors(vec![e])),
        (Some(e), Err(SpecErrors(mut rest))) => {
            rest.insert(0, e);
            Err(SpecErrors(rest))
        }
    }
}

fn supported_lines() -> String {
    SUPPORTED_MINORS
        .iter()
        .map(|(ma, mi)| format!("{ma}.{mi}.x"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A name usable as the prefix of member names (`<name>-NNNN` must stay a DNS-1035 label
/// of at most 63 characters, with room for large ordinals).
fn is_member_prefix(name: &str) -> bool {
    name.len() <= 50
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: i32, version: &str) -> EtcdClusterSpec {
        EtcdClusterSpec {
            size,
            version: version.into(),
            allow_downgrade: false,
            ..Default::default()
        }
    }

    #[test]
    fn a_restore_source_is_checked_before_any_path_is_built() {
        use crate::resource::{
            AzureStorageSpec, BackupStorageSpec, MAX_BUMP_REVISION, RestoreSpec,
        };
        let with = |f: &dyn Fn(&mut RestoreSpec)| {
            let mut s = spec(3, "3.6.15");
            let mut r = RestoreSpec {
                backup: "latest".into(),
                ..Default::default()
            };
            f(&mut r);
            s.restore = Some(r);
            validate_spec(&s).err().map(|e| e.to_string())
        };
        type Case<'a> = (&'a str, &'a dyn Fn(&mut RestoreSpec), Option<&'a str>);
        let table: &[Case] = &[
            ("latest of itself", &|_| {}, None),
            (
                "another namespace's cluster",
                &|r| {
                    r.cluster = Some("etcd-a".into());
                    r.namespace = Some("team-a".into());
                },
                None,
            ),
            (
                "a path",
                &|r| r.cluster = Some("../x".into()),
                Some("spec.restore.cluster"),
            ),
            (
                "dot-dot",
                &|r| r.namespace = Some("..".into()),
                Some("spec.restore.namespace"),
            ),
            (
                "absolute",
                &|r| r.cluster = Some("/etc".into()),
                Some("spec.restore.cluster"),
            ),
            (
                "too long",
                &|r| r.cluster = Some("a".repeat(64)),
                Some("spec.restore.cluster"),
            ),
            (
                "a name with a slash",
                &|r| r.backup = "a/b".into(),
                Some("spec.restore.backup"),
            ),
            (
                "a hidden name",
                &|r| r.backup = "..".into(),
                Some("spec.restore.backup"),
            ),
            (
                "a listed name",
                &|r| r.backup = "etcd-20251201T100000.000Z-r7-uabc".into(),
                None,
            ),
            (
                "the largest bump",
                &|r| r.bump_revision = Some(MAX_BUMP_REVISION),
                None,
            ),
            (
                "a bump too large",
                &|r| r.bump_revision = Some(MAX_BUMP_REVISION + 1),
                Some("bumpRevision"),
            ),
            (
                "a negative bump",
                &|r| r.bump_revision = Some(-1),
                Some("bumpRevision"),
            ),
            (
                "azure without an account",
                &|r| {
                    r.storage = Some(BackupStorageSpec {
                        azure: Some(AzureStorageSpec {
                            container: "c".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                },
                Some("azure.account"),
            ),
            (
                "the emulator needs its endpoint",
                &|r| {
                    r.storage = Some(BackupStorageSpec {
                        azure: Some(AzureStorageSpec {
                            container: "c".into(),
                            use_emulator: true,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                },
                Some("azure.endpoint"),
            ),
            (
                "a credentials Secret that is no name",
                &|r| {
                    r.storage = Some(BackupStorageSpec {
                        azure: Some(AzureStorageSpec {
                            container: "c".into(),
                            account: "a".into(),
                            credentials_secret: Some("../x".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                },
                Some("credentialsSecret"),
            ),
        ];
        for (case, f, want) in table {
            match (with(*f), want) {
                (None, None) => {}
                (Some(got), Some(part)) => assert!(got.contains(part), "{case}: {got}"),
                (got, want) => panic!("{case}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn maintenance_is_checked_field_by_field() {
        use crate::resource::{AutoCompactionSpec, DefragmentSpec, MaintenanceSpec};
        let mut good = spec(3, "3.6.15");
        good.maintenance = Some(MaintenanceSpec {
            defragment: Some(DefragmentSpec {
                schedule: "0 3 * * *".into(),
                fragmentation_percent: Some(40),
            }),
            auto_compaction: Some(AutoCompactionSpec {
                mode: "periodic".into(),
                retention: "1h30m".into(),
            }),
            quota_backend_bytes: Some(16 << 20),
            no_space: None,
        });
        let valid = validate_spec(&good).unwrap();
        assert_eq!(
            valid.maintenance,
            Maintenance {
                recover_nospace: true,
                defrag_percent: Some(40)
            }
        );
        assert_eq!(
            validate_spec(&spec(3, "3.6.15")).unwrap().maintenance,
            Maintenance::default()
        );
        let mut manual = good.clone();
        manual.maintenance.as_mut().unwrap().no_space =
            Some(crate::resource::NoSpacePolicy::Manual);
        assert!(!validate_spec(&manual).unwrap().maintenance.recover_nospace);
        let mut bad = good.clone();
        let m = bad.maintenance.as_mut().unwrap();
        m.defragment.as_mut().unwrap().schedule = "every night".into();
        m.defragment.as_mut().unwrap().fragmentation_percent = Some(0);
        m.auto_compaction.as_mut().unwrap().mode = "hourly".into();
        m.quota_backend_bytes = Some(-1);
        let errors = validate_spec(&bad).unwrap_err();
        let text = errors.to_string();
        assert_eq!(errors.0.len(), 4, "{text}");
        for want in [
            "spec.maintenance.defragment.schedule \"every night\" is not a cron schedule",
            "fragmentationPercent is 0",
            "mode \"hourly\" is not a mode: use \"periodic\" or \"revision\"",
            "quotaBackendBytes is -1",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        for (mode, retention, ok) in [
            ("periodic", "1h", true),
            ("periodic", "30m", true),
            ("periodic", "5", true),
            ("periodic", "1x", false),
            ("periodic", "h", false),
            ("periodic", "", false),
            ("revision", "1000", true),
            ("revision", "1h", false),
            ("revision", "-3", false),
        ] {
            let mut s = good.clone();
            s.maintenance.as_mut().unwrap().auto_compaction = Some(AutoCompactionSpec {
                mode: mode.into(),
                retention: retention.into(),
            });
            let got = validate_spec(&s);
            assert_eq!(got.is_ok(), ok, "{mode} {retention:?}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("does not fit mode"), "{e}");
            }
        }
    }

    #[test]
    fn maintenance_becomes_etcd_flags() {
        use crate::resource::{AutoCompactionSpec, MaintenanceSpec};
        let m = MaintenanceSpec {
            defragment: None,
            auto_compaction: Some(AutoCompactionSpec {
                mode: "revision".into(),
                retention: "1000".into(),
            }),
            quota_backend_bytes: Some(16 << 20),
            no_space: None,
        };
        assert_eq!(
            m.etcd_flags(),
            [
                "--quota-backend-bytes=16777216",
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=1000"
            ]
        );
        assert!(MaintenanceSpec::default().etcd_flags().is_empty());
    }

    #[test]
    fn accepts_the_seed_example() {
        let valid = validate_spec(&spec(3, "3.6.15")).unwrap();
        assert_eq!(valid.size, 3);
        assert_eq!(valid.version, EtcdVersion::new(3, 6, 15));
        assert!(valid.warnings.is_empty());
    }

    #[test]
    fn even_size_is_a_warning_not_an_error() {
        let valid = validate_spec(&spec(4, "3.6.15")).unwrap();
        assert_eq!(valid.warnings.len(), 1);
        assert!(valid.warnings[0].contains("even"), "{:?}", valid.warnings);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let table: &[(i32, &str, &[&str])] = &[
            (0, "3.6.15", &["spec.size is 0: it must be at least 1"]),
            (-3, "3.6.15", &["spec.size is -3"]),
            (10, "3.6.15", &["spec.size is 10: at most 9"]),
            (3, "banana", &["spec.version \"banana\" is not a version"]),
            (
                3,
                "3.1.0",
                &[
                    "spec.version 3.1.0 is not supported",
                    "3.4.x, 3.5.x, 3.6.x, 3.7.x",
                ],
            ),
            (
                0,
                "banana",
                &["spec.size is 0", "spec.version \"banana\" is not a version"],
            ),
        ];
        for (size, version, wants) in table {
            let err = validate_spec(&spec(*size, version)).unwrap_err();
            let text = err.to_string();
            for want in *wants {
                assert!(text.contains(want), "size {size} version {version}: {text}");
            }
            assert_eq!(
                err.0.len(),
                wants.iter().filter(|w| w.starts_with("spec.")).count()
            );
        }
    }

    #[test]
    fn names_must_make_member_names() {
        let mut c = EtcdCluster::new("etcd-cluster", spec(3, "3.6.15"));
        assert!(validate_cluster(&c).is_ok());
        for bad in ["Etcd", "1etcd", "etcd_cluster", "etcd-", &"a".repeat(51)] {
            c.metadata.name = Some(bad.to_string());
            let err = validate_cluster(&c).unwrap_err();
            assert!(
                matches!(err.0[0], SpecError::InvalidName(_)),
                "{bad}: {err}"
            );
        }
        c.metadata.name = None;
        c.spec.size = 0;
        let err = validate_cluster(&c).unwrap_err();
        assert_eq!(
            err.0,
            vec![SpecError::MissingName, SpecError::SizeTooSmall(0)]
        );
    }

    #[test]
    fn pull_secrets_and_the_sidecar_image_must_be_usable() {
        use crate::resource::{ImagePullSecret, PodPolicy};
        let with_pod = |secrets: &[&str], image: Option<&str>| {
            let mut s = spec(3, "3.6.15");
            s.pod = Some(PodPolicy {
                image_pull_secrets: secrets
                    .iter()
                    .map(|n| ImagePullSecret {
                        name: n.to_string(),
                    })
                    .collect(),
                sidecar_image: image.map(str::to_string),
                ..Default::default()
            });
            validate_spec(&s)
        };
        assert!(with_pod(&["regcred", "mirror.example-2"], None).is_ok());
        assert!(with_pod(&[], Some("registry.example:5000/etcd-operator:v0.1.0")).is_ok());
        assert!(with_pod(&[], Some("registry.example/etcd-operator@sha256:0123abcd")).is_ok());
        for bad in [
            "",
            " ",
            "RegCred",
            "reg_cred",
            "-regcred",
            "regcred.",
            &"a".repeat(254),
        ] {
            let err = with_pod(&["ok", bad], None).unwrap_err();
            assert_eq!(
                err.0,
                vec![SpecError::BadPullSecret {
                    index: 1,
                    name: bad.to_string()
                }],
                "{bad:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("spec.pod.imagePullSecrets[1].name "),
                "{err}"
            );
        }
        for bad in [
            "",
            "  ",
            "https://registry.example/op:1",
            "op :1",
            "op:",
            "/op",
        ] {
            let err = with_pod(&[], Some(bad)).unwrap_err();
            assert_eq!(
                err.0,
                vec![SpecError::BadSidecarImage(bad.to_string())],
                "{bad:?}"
            );
            assert!(err.to_string().contains("spec.pod.sidecarImage"), "{err}");
        }
    }
}
