//! The condition types and statuses the coordinator writes, typed, and the one boundary
//! between the coordinator's enums and the contract's: `GetCluster` carries the proto
//! enums converted here, and the words the `EtcdCluster` status and the `status` table
//! show (`SpecValid`, `True`, `Running`) are read back from them here, from the same enums.

use std::fmt;

use etcd_operator::proto;

use crate::plan::{Phase, ReportedPhase};

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
    /// Kubernetes only: the last reconcile failed on a call to the API server.
    ReconcileFailed,
    /// etcd raised an alarm (NOSPACE, CORRUPT) on a member, or its data volume is full
    /// (DISKFULL).
    Alarm,
    /// An upgrade stopped: a member did not come back healthy on its new version and was
    /// rolled back.
    UpgradeFailed,
    /// The CAs the cluster's certificates chain to are there and not about to expire.
    CertificatesValid,
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
            Self::ReconcileFailed => "ReconcileFailed",
            Self::Alarm => "Alarm",
            Self::UpgradeFailed => "UpgradeFailed",
            Self::CertificatesValid => "CertificatesValid",
        }
    }
}

impl From<ConditionType> for proto::ConditionType {
    fn from(t: ConditionType) -> Self {
        match t {
            ConditionType::Available => Self::Available,
            ConditionType::Progressing => Self::Progressing,
            ConditionType::Degraded => Self::Degraded,
            ConditionType::SpecValid => Self::SpecValid,
            ConditionType::QuorumLost => Self::QuorumLost,
            ConditionType::BackupHealthy => Self::BackupHealthy,
            ConditionType::Restored => Self::Restored,
            ConditionType::ReconcileFailed => Self::ReconcileFailed,
            ConditionType::Alarm => Self::Alarm,
            ConditionType::UpgradeFailed => Self::UpgradeFailed,
            ConditionType::CertificatesValid => Self::CertificatesValid,
        }
    }
}

impl TryFrom<proto::ConditionType> for ConditionType {
    type Error = ();

    /// None of ours for `Unspecified`.
    fn try_from(t: proto::ConditionType) -> Result<Self, ()> {
        Ok(match t {
            proto::ConditionType::Unspecified => return Err(()),
            proto::ConditionType::Available => Self::Available,
            proto::ConditionType::Progressing => Self::Progressing,
            proto::ConditionType::Degraded => Self::Degraded,
            proto::ConditionType::SpecValid => Self::SpecValid,
            proto::ConditionType::QuorumLost => Self::QuorumLost,
            proto::ConditionType::BackupHealthy => Self::BackupHealthy,
            proto::ConditionType::Restored => Self::Restored,
            proto::ConditionType::ReconcileFailed => Self::ReconcileFailed,
            proto::ConditionType::Alarm => Self::Alarm,
            proto::ConditionType::UpgradeFailed => Self::UpgradeFailed,
            proto::ConditionType::CertificatesValid => Self::CertificatesValid,
        })
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

impl From<ConditionStatus> for proto::ConditionStatus {
    fn from(s: ConditionStatus) -> Self {
        match s {
            ConditionStatus::True => Self::True,
            ConditionStatus::False => Self::False,
            ConditionStatus::Unknown => Self::Unknown,
        }
    }
}

impl TryFrom<proto::ConditionStatus> for ConditionStatus {
    type Error = ();

    /// None of ours for `Unspecified`.
    fn try_from(s: proto::ConditionStatus) -> Result<Self, ()> {
        Ok(match s {
            proto::ConditionStatus::Unspecified => return Err(()),
            proto::ConditionStatus::True => Self::True,
            proto::ConditionStatus::False => Self::False,
            proto::ConditionStatus::Unknown => Self::Unknown,
        })
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds { Self::True } else { Self::False }
    }
}

impl From<Phase> for proto::ClusterPhase {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::Creating => Self::Creating,
            Phase::Running => Self::Running,
            Phase::Scaling => Self::Scaling,
            Phase::Upgrading => Self::Upgrading,
            Phase::Recovering => Self::Recovering,
            Phase::Degraded => Self::Degraded,
            Phase::Failed => Self::Failed,
            Phase::Invalid => Self::Invalid,
            Phase::Unknown => Self::Unknown,
        }
    }
}

impl TryFrom<proto::ClusterPhase> for Phase {
    type Error = ();

    /// None of ours for `Unspecified`.
    fn try_from(phase: proto::ClusterPhase) -> Result<Self, ()> {
        Ok(match phase {
            proto::ClusterPhase::Unspecified => return Err(()),
            proto::ClusterPhase::Creating => Self::Creating,
            proto::ClusterPhase::Running => Self::Running,
            proto::ClusterPhase::Scaling => Self::Scaling,
            proto::ClusterPhase::Upgrading => Self::Upgrading,
            proto::ClusterPhase::Recovering => Self::Recovering,
            proto::ClusterPhase::Degraded => Self::Degraded,
            proto::ClusterPhase::Failed => Self::Failed,
            proto::ClusterPhase::Invalid => Self::Invalid,
            proto::ClusterPhase::Unknown => Self::Unknown,
        })
    }
}

/// What a member's status shows: the phase its sidecar reports while its process or Pod
/// runs, otherwise whether the runtime restarts it on its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberShown {
    /// The phase its sidecar reported.
    Reported(ReportedPhase),
    /// It does not run; the runtime starts it again on its data.
    Restarting,
    /// It does not run and nothing restarts it on its data.
    Down,
}

impl From<MemberShown> for proto::MemberPhase {
    fn from(shown: MemberShown) -> Self {
        match shown {
            MemberShown::Reported(phase) => phase.into(),
            MemberShown::Restarting => Self::Restarting,
            MemberShown::Down => Self::Down,
        }
    }
}

impl From<ReportedPhase> for proto::MemberPhase {
    fn from(phase: ReportedPhase) -> Self {
        match phase {
            ReportedPhase::Starting => Self::Starting,
            ReportedPhase::Bootstrapping => Self::Bootstrapping,
            ReportedPhase::Joining => Self::Joining,
            ReportedPhase::Running => Self::Running,
            ReportedPhase::Leaving => Self::Leaving,
            ReportedPhase::Removed => Self::Removed,
            ReportedPhase::HandedOff => Self::HandedOff,
            ReportedPhase::Restarting => Self::Restarting,
        }
    }
}

/// The word a cluster's phase is shown as ("" for `Unspecified`, which is never written).
pub fn phase_word(phase: proto::ClusterPhase) -> &'static str {
    Phase::try_from(phase).map_or("", Phase::as_str)
}

/// The word a member's phase is shown as ("" for `Unspecified`, which is never written).
pub fn member_phase_word(phase: proto::MemberPhase) -> &'static str {
    match phase {
        proto::MemberPhase::Unspecified => "",
        proto::MemberPhase::Down => "Down",
        reported => ReportedPhase::from(reported).as_str(),
    }
}

/// The word a condition's type is written as ("" for `Unspecified`, never written).
pub fn type_word(t: proto::ConditionType) -> &'static str {
    ConditionType::try_from(t).map_or("", ConditionType::as_str)
}

/// The word a condition's status is written as ("" for `Unspecified`, never written).
pub fn status_word(s: proto::ConditionStatus) -> &'static str {
    ConditionStatus::try_from(s).map_or("", ConditionStatus::as_str)
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

    #[test]
    fn every_proto_value_but_unspecified_is_one_of_ours_and_back() {
        for i in 1..16 {
            if let Ok(t) = proto::ConditionType::try_from(i) {
                let ours = ConditionType::try_from(t).unwrap();
                assert_eq!(proto::ConditionType::from(ours), t);
                assert_eq!(type_word(t), ours.as_str());
            }
            if let Ok(s) = proto::ConditionStatus::try_from(i) {
                let ours = ConditionStatus::try_from(s).unwrap();
                assert_eq!(proto::ConditionStatus::from(ours), s);
                assert_eq!(status_word(s), ours.as_str());
            }
            if let Ok(p) = proto::ClusterPhase::try_from(i) {
                let ours = Phase::try_from(p).unwrap();
                assert_eq!(proto::ClusterPhase::from(ours), p);
                assert_eq!(phase_word(p), ours.as_str());
            }
        }
        assert_eq!(
            proto::ClusterPhase::from(Phase::Unknown).as_str_name(),
            "CLUSTER_PHASE_UNKNOWN"
        );
        assert_eq!(type_word(proto::ConditionType::SpecValid), "SpecValid");
        assert_eq!(status_word(proto::ConditionStatus::True), "True");
        assert_eq!(phase_word(proto::ClusterPhase::Unspecified), "");
        assert_eq!(type_word(proto::ConditionType::Unspecified), "");
    }

    #[test]
    fn member_phases_are_shown_by_their_variant_words() {
        let reported = [
            ReportedPhase::Starting,
            ReportedPhase::Bootstrapping,
            ReportedPhase::Joining,
            ReportedPhase::Running,
            ReportedPhase::Leaving,
            ReportedPhase::Removed,
            ReportedPhase::HandedOff,
            ReportedPhase::Restarting,
        ];
        for phase in reported {
            let shown = proto::MemberPhase::from(MemberShown::Reported(phase));
            assert_eq!(ReportedPhase::from(shown), phase);
            assert_eq!(member_phase_word(shown), phase.as_str());
            assert_eq!(member_phase_word(shown), format!("{shown:?}"));
        }
        assert_eq!(
            proto::MemberPhase::from(MemberShown::Restarting),
            proto::MemberPhase::Restarting
        );
        assert_eq!(
            proto::MemberPhase::from(MemberShown::Down),
            proto::MemberPhase::Down
        );
        assert_eq!(member_phase_word(proto::MemberPhase::Down), "Down");
        assert_eq!(
            member_phase_word(proto::MemberPhase::HandedOff),
            "HandedOff"
        );
        assert_eq!(member_phase_word(proto::MemberPhase::Unspecified), "");
    }
}
