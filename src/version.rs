//! etcd versions and the upgrade-path rules.
//!
//! Rules (DESIGN.md, safety invariants): patch upgrades, or one minor version at a time;
//! no downgrade unless explicitly allowed (and then only a patch downgrade within a minor,
//! since a minor downgrade needs etcd's own downgrade procedure); 3.5 to 3.6 only from
//! 3.5.26 or later, whose data a 3.6 member can read after the handoff's snapshot.

use std::{cmp::Ordering, fmt, str::FromStr};

use thiserror::Error;

/// An etcd release version, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EtcdVersion {
    /// Major version (3).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

/// The minor lines this operator knows how to run.
pub const SUPPORTED_MINORS: &[(u32, u32)] = &[(3, 4), (3, 5), (3, 6), (3, 7)];

/// The releases whose official binaries `etcd-bin-vendored` ships, newest last.
pub const VENDORED_RELEASES: &[&str] = &["3.4.45", "3.5.34", "3.6.15", "3.7.2"];

/// The version a cluster gets when nothing else is said, and the one bundled in the build.
pub const DEFAULT_VERSION: EtcdVersion = EtcdVersion::new(3, 6, 15);

/// The oldest 3.5 release from which a 3.6 upgrade is allowed.
pub const MIN_35_FOR_36: EtcdVersion = EtcdVersion::new(3, 5, 26);

impl EtcdVersion {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// `major.minor`, as etcd's cluster version reports it ("3.6").
    pub fn minor_line(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// True when this operator can run this version's minor line.
    pub fn is_supported(&self) -> bool {
        SUPPORTED_MINORS.contains(&(self.major, self.minor))
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl PartialOrd for EtcdVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EtcdVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch))
    }
}

/// Why a version string is not a version.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("version {input:?} is not of the form MAJOR.MINOR.PATCH (for example \"3.6.15\")")]
pub struct VersionParseError {
    /// What was given.
    pub input: String,
}

impl FromStr for EtcdVersion {
    type Err = VersionParseError;

    /// Accepts `3.6.15` and `v3.6.15`; nothing else (no pre-release suffixes).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionParseError {
            input: s.to_string(),
        };
        let trimmed = s.strip_prefix('v').unwrap_or(s);
        let mut parts = trimmed.split('.');
        let mut next = || -> Result<u32, VersionParseError> {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 6 {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let version = EtcdVersion::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(version)
    }
}

/// What kind of step a version change is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionStep {
    /// Same version: nothing to do.
    Same,
    /// A newer patch of the same minor line.
    PatchUpgrade,
    /// The next minor line.
    MinorUpgrade,
    /// An older patch of the same minor line, explicitly allowed.
    PatchDowngrade,
}

/// Why a version change is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UpgradePathError {
    /// The target is older and downgrades were not allowed.
    #[error(
        "downgrade from {from} to {to} refused: set spec.allowDowngrade to downgrade a patch release"
    )]
    Downgrade {
        /// Running version.
        from: EtcdVersion,
        /// Requested version.
        to: EtcdVersion,
    },
    /// A minor-line downgrade, which needs etcd's own downgrade procedure.
    #[error("downgrade from {from} to {to} crosses a minor version and is not supported")]
    MinorDowngrade {
        /// Running version.
        from: EtcdVersion,
        /// Requested version.
        to: EtcdVersion,
    },
    /// The target skips one or more minor lines.
    #[error(
        "upgrade from {from} to {to} skips a minor version: upgrade one minor version at a time (to {next}.x first)"
    )]
    SkippedMinor {
        /// Running version.
        from: EtcdVersion,
        /// Requested version.
        to: EtcdVersion,
        /// The minor line to go to first.
        next: String,
    },
    /// A change of major version.
    #[error("upgrade from {from} to {to} changes the major version, which is not supported")]
    MajorChange {
        /// Running version.
        from: EtcdVersion,
        /// Requested version.
        to: EtcdVersion,
    },
    /// 3.5 to 3.6 from a 3.5 release older than 3.5.26.
    #[error(
        "upgrade from {from} to {to} needs {min} or later first: upgrade to the latest 3.5 patch release, then to 3.6"
    )]
    TooOldFor36 {
        /// Running version.
        from: EtcdVersion,
        /// Requested version.
        to: EtcdVersion,
        /// The oldest allowed 3.5 release.
        min: EtcdVersion,
    },
}

/// Checks the step from the running version `from` to the requested version `to`.
pub fn check_version_step(
    from: EtcdVersion,
    to: EtcdVersion,
    allow_downgrade: bool,
) -> Result<VersionStep, UpgradePathError> {
    if from.major != to.major {
        return Err(UpgradePathError::MajorChange { from, to });
    }
    match to.cmp(&from) {
        Ordering::Equal => Ok(VersionStep::Same),
        Ordering::Less if to.minor < from.minor => {
            Err(UpgradePathError::MinorDowngrade { from, to })
        }
        Ordering::Less if allow_downgrade => Ok(VersionStep::PatchDowngrade),
        Ordering::Less => Err(UpgradePathError::Downgrade { from, to }),
        Ordering::Greater if to.minor == from.minor => Ok(VersionStep::PatchUpgrade),
        Ordering::Greater if to.minor > from.minor + 1 => Err(UpgradePathError::SkippedMinor {
            from,
            to,
            next: format!("{}.{}", from.major, from.minor + 1),
        }),
        Ordering::Greater => {
            if (from.major, from.minor) == (3, 5) && from < MIN_35_FOR_36 {
                return Err(UpgradePathError::TooOldFor36 {
                    from,
                    to,
                    min: MIN_35_FOR_36,
                });
            }
            Ok(VersionStep::MinorUpgrade)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> EtcdVersion {
        s.parse().unwrap()
    }

    #[test]
    fn parses_plain_and_v_prefixed() {
        assert_eq!(v("3.6.15"), EtcdVersion::new(3, 6, 15));
        assert_eq!(v("v3.5.34"), EtcdVersion::new(3, 5, 34));
        assert_eq!(v("3.6.15").to_string(), "3.6.15");
    }

    #[test]
    fn refuses_what_is_not_a_version() {
        for bad in [
            "",
            "banana",
            "3",
            "3.6",
            "3.6.",
            "3.6.15.1",
            "3.6.x",
            "v",
            "3.6.15-rc.0",
            " 3.6.15",
            "3..1",
            "-3.6.1",
            "3.6.1234567",
        ] {
            let err = bad.parse::<EtcdVersion>().unwrap_err();
            assert_eq!(err.input, bad);
            assert!(err.to_string().contains("MAJOR.MINOR.PATCH"), "{err}");
        }
    }

    #[test]
    fn orders_numerically() {
        assert!(v("3.5.9") < v("3.5.26"));
        assert!(v("3.5.34") < v("3.6.0"));
        assert!(v("3.10.0") > v("3.9.9"));
    }

    #[test]
    fn upgrade_path_table() {
        use VersionStep::*;
        let ok: &[(&str, &str, bool, VersionStep)] = &[
            ("3.6.15", "3.6.15", false, Same),
            ("3.6.1", "3.6.15", false, PatchUpgrade),
            ("3.4.45", "3.5.34", false, MinorUpgrade),
            ("3.5.26", "3.6.0", false, MinorUpgrade),
            ("3.5.34", "3.6.15", false, MinorUpgrade),
            ("3.6.15", "3.7.2", false, MinorUpgrade),
            ("3.6.15", "3.6.1", true, PatchDowngrade),
        ];
        for (from, to, allow, want) in ok {
            assert_eq!(
                check_version_step(v(from), v(to), *allow),
                Ok(*want),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn refused_steps_table() {
        let cases: &[(&str, &str, bool, &str)] = &[
            (
                "3.6.15",
                "3.6.1",
                false,
                "downgrade from 3.6.15 to 3.6.1 refused",
            ),
            ("3.6.15", "3.5.34", false, "crosses a minor version"),
            ("3.6.15", "3.5.34", true, "crosses a minor version"),
            (
                "3.4.45",
                "3.6.15",
                false,
                "skips a minor version: upgrade one minor version at a time (to 3.5.x first)",
            ),
            ("3.5.25", "3.6.15", false, "needs 3.5.26 or later first"),
            ("3.5.0", "3.6.0", false, "needs 3.5.26 or later first"),
            ("3.6.15", "4.0.0", false, "changes the major version"),
        ];
        for (from, to, allow, want) in cases {
            let err = check_version_step(v(from), v(to), *allow).unwrap_err();
            assert!(err.to_string().contains(want), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn vendored_releases_are_supported_and_default_is_vendored() {
        for r in VENDORED_RELEASES {
            assert!(v(r).is_supported(), "{r}");
        }
        assert!(VENDORED_RELEASES.contains(&DEFAULT_VERSION.to_string().as_str()));
        assert!(!v("3.3.27").is_supported());
        assert!(!v("3.8.0").is_supported());
    }
}
