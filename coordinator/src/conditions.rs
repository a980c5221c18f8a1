//! The condition types and statuses the coordinator writes, typed; the words they are
//! written as (`EtcdCluster` status, `GetCluster`) come only from here.

use std::fmt;

/// A condition of a cluster's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// A quorum of voting members is healthy.
    Available,
    /// A step is under way or awaited.
    Progressing,
    /// A member is unhealthy or missing.
    Degraded,
    /// The spec (and the manifest it came from) is accepted.
    SpecValid,
    /// Quorum was lost for good, and what became of it.
    QuorumLost,
    /// Backups are taken and proven restorable.
    BackupHealthy,
    /// The cluster was created from a backup.
    Restored,
    /// etcd raised an alarm (NOSPACE, CORRUPT) on a member.
    Alarm,
}

impl ConditionType {
    /// The word written to status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "Available",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::SpecValid => "SpecValid",
            Self::QuorumLost => "QuorumLost",
            Self::BackupHealthy => "BackupHealthy",
            Self::Restored => "Restored",
            Self::Alarm => "Alarm",
        }
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a condition holds, as Kubernetes conditions say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not.
    False,
    /// Not known yet.
    Unknown,
}

impl ConditionStatus {
    /// The word written to status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds { Self::True } else { Self::False }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_kubernetes_condition_words() {
        assert_eq!(ConditionType::SpecValid.to_string(), "SpecValid");
        assert_eq!(ConditionStatus::from(true).as_str(), "True");
        assert_eq!(ConditionStatus::from(false).as_str(), "False");
        assert_eq!(ConditionStatus::Unknown.as_str(), "Unknown");
    }
}
