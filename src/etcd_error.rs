//! etcd's errors, typed. etcd answers them as gRPC statuses whose descriptions are fixed
//! strings (its `api/v3rpc/rpctypes`, the way etcd's own client tells them apart); this is
//! the one place that reads those words, so that every caller matches a variant instead.

/// An error etcd answers that a caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdError {
    /// The member id is not in the member list ("member not found").
    MemberNotFound,
    /// Another member has these peer URLs ("Peer URLs already exists").
    PeerUrlExists,
    /// A promotion of a member that is not a learner ("not a learner").
    NotALearner,
    /// A promotion of a learner that has not caught up ("... in sync with leader").
    LearnerNotInSync,
    /// Something is not in sync yet ("not in sync").
    NotInSync,
    /// A learner more than etcd allows ("too many learner members").
    TooManyLearners,
    /// A reconfiguration refused while the cluster is unhealthy ("unhealthy cluster").
    Unhealthy,
    /// Leadership moved during the request ("leader changed").
    LeaderChanged,
    /// No leader ("no leader").
    NoLeader,
    /// The request timed out inside etcd ("timed out").
    TimedOut,
}

/// etcd's words, the part every supported version shares; more specific first.
const WORDS: [(&str, EtcdError); 10] = [
    ("member not found", EtcdError::MemberNotFound),
    ("Peer URLs already exists", EtcdError::PeerUrlExists),
    ("not a learner", EtcdError::NotALearner),
    ("not in sync", EtcdError::NotInSync),
    ("in sync", EtcdError::LearnerNotInSync),
    ("too many learner", EtcdError::TooManyLearners),
    ("unhealthy cluster", EtcdError::Unhealthy),
    ("leader changed", EtcdError::LeaderChanged),
    ("no leader", EtcdError::NoLeader),
    ("timed out", EtcdError::TimedOut),
];

impl EtcdError {
    /// The error a gRPC status's message names, if it is one of these.
    pub fn of(message: &str) -> Option<Self> {
        WORDS
            .iter()
            .find(|(words, _)| message.contains(words))
            .map(|(_, e)| *e)
    }

    /// The cluster is briefly unable, not refusing: asking again later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Unhealthy
                | Self::TooManyLearners
                | Self::LeaderChanged
                | Self::TimedOut
                | Self::NotInSync
                | Self::NoLeader
        )
    }

    /// A learner not caught up yet, whatever etcd version words it.
    pub fn is_learner_not_ready(self) -> bool {
        matches!(self, Self::LearnerNotInSync | Self::NotInSync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_messages_are_told_apart() {
        for (message, want) in [
            (
                "etcdserver: member not found",
                Some(EtcdError::MemberNotFound),
            ),
            (
                "etcdserver: Peer URLs already exists",
                Some(EtcdError::PeerUrlExists),
            ),
            (
                "etcdserver: can only promote a learner member which is in sync with leader",
                Some(EtcdError::LearnerNotInSync),
            ),
            (
                "etcdserver: too many learner members in cluster",
                Some(EtcdError::TooManyLearners),
            ),
            ("etcdserver: unhealthy cluster", Some(EtcdError::Unhealthy)),
            ("etcdserver: leader changed", Some(EtcdError::LeaderChanged)),
            ("etcdserver: no leader", Some(EtcdError::NoLeader)),
            ("etcdserver: request timed out", Some(EtcdError::TimedOut)),
            ("etcdserver: permission denied", None),
        ] {
            assert_eq!(EtcdError::of(message), want, "{message}");
        }
        assert!(EtcdError::Unhealthy.is_transient());
        assert!(!EtcdError::MemberNotFound.is_transient());
        assert!(!EtcdError::LearnerNotInSync.is_transient());
        assert!(EtcdError::LearnerNotInSync.is_learner_not_ready());
    }
}
