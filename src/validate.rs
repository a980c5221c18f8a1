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
    #[error("{0} must name exactly one storage kind (local or s3), not {1}")]
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
    /// `spec.restore.bumpRevision` is negative.
    #[error("spec.restore.bumpRevision is {0}: it must be 0 or more")]
    NegativeBump(i64),
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
    /// Things that are allowed but worth saying (an even size).
    pub warnings: Vec<String>,
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
        }
        if let Some(bump) = restore.bump_revision
            && bump < 0
        {
            errors.push(SpecError::NegativeBump(bump));
        }
        if let Some(storage) = &restore.storage {
            check_storage("spec.restore.storage", storage, &mut errors);
        }
    }
    match version {
        Some(version) if errors.is_empty() => Ok(ValidSpec {
            size: spec.size as u32,
            version,
            allow_downgrade: spec.allow_downgrade,
            quorum_loss: spec.quorum_loss(),
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

fn check_storage(
    field: &'static str,
    storage: &crate::resource::BackupStorageSpec,
    errors: &mut Vec<SpecError>,
) {
    let kinds = usize::from(storage.local.is_some()) + usize::from(storage.s3.is_some());
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
}
