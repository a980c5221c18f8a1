//! Rule 15: the cluster's etcd CA rotates with an overlap, and the rolling restart it needs.
//!
//! etcd reads its certificate and key files at every handshake but its trusted CA files
//! (`--trusted-ca-file`, `--peer-trusted-ca-file`) only when it starts. So a new CA is
//! brought in three phases, each written in the durable record before the step it enables:
//!
//! 1. **Trust**: every member's trust file holds the old and the new CA; each member that
//!    ran before is restarted on its data ([`Action::RollingRestart`]), one at a time,
//!    followers first, the leader last, each healthy again before the next.
//! 2. **Reissue**: every leaf (members', the applications' bundle, the coordinator's own) is
//!    issued again by the new CA; nothing restarts (etcd reads leaves per handshake). The
//!    phase moves on only once every member holds leaves of the new CA.
//! 3. **Drop**: the trust files hold the new CA alone; every member restarts again, as in
//!    Trust. Then the rotation is over ([`CaRotationStep::Finish`]).
//!
//! A member created during a rotation gets the files of the phase and needs no restart:
//! only the members of the phase's start are listed as pending.

use super::*;

/// Where a CA rotation is, as the durable record has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaPhase {
    /// Members trust the old and the new CA; leaves are the old CA's.
    Trust,
    /// Leaves are being issued again by the new CA; members still trust both.
    Reissue,
    /// Members trust the new CA alone.
    Drop,
}

impl CaPhase {
    /// The word kept in the record and shown in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trust => "Trust",
            Self::Reissue => "Reissue",
            Self::Drop => "Drop",
        }
    }

    /// The phase named `word` (as [`CaPhase::as_str`] writes it).
    pub fn parse(word: &str) -> Option<Self> {
        [Self::Trust, Self::Reissue, Self::Drop]
            .into_iter()
            .find(|p| p.as_str() == word)
    }
}

/// A CA rotation under way (the durable record's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRotation {
    /// The phase.
    pub phase: CaPhase,
    /// The members still to restart in this phase (Trust and Drop).
    pub pending: Vec<String>,
}

/// What the planner knows of the cluster's etcd CA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaObservation {
    /// The rotation under way, if any.
    pub rotation: Option<CaRotation>,
    /// A rotation should begin, and why (the CA has less than a third of its life left, or
    /// one was asked for); `None` otherwise.
    pub due: Option<String>,
}

/// A step of a CA rotation that restarts nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaRotationStep {
    /// Record the Trust phase with every member pending, make the new CA (or take the one
    /// made before a crash: never a third), and write the trust files of both CAs.
    Begin {
        /// Why it begins.
        reason: String,
    },
    /// Record the Reissue phase, issue every leaf again by the new CA, and once every
    /// member holds leaves of it, record the Drop phase with every member pending.
    Reissue,
    /// Every member restarted trusting the new CA alone: the new CA becomes the cluster's
    /// CA, the old one is forgotten, the rotation ends.
    Finish,
}

impl CaRotationStep {
    /// A word for logs and events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Begin { .. } => "begin",
            Self::Reissue => "reissue",
            Self::Finish => "finish",
        }
    }
}

/// Why a member is restarted on its data by a [`Action::RollingRestart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// To read a trust file that holds a new CA besides the old one.
    CaTrustNew,
    /// To read a trust file from which the old CA was dropped.
    CaDropOld,
}

impl RestartReason {
    /// For logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CaTrustNew => "CA rotation: trust the new CA",
            Self::CaDropOld => "CA rotation: drop the old CA",
        }
    }
}

impl View<'_> {
    /// Rule 15 (see the module doc). Reached only with every member in etcd and healthy
    /// voters at quorum (the earlier rules wait otherwise), after any version upgrade.
    pub(super) fn rotate_ca(&self) -> Option<Step> {
        let ca = &self.observed.ca;
        let Some(rotation) = &ca.rotation else {
            let reason = ca.due.clone()?;
            return Some((
                Action::RotateCa {
                    step: CaRotationStep::Begin { reason },
                },
                Phase::Running,
            ));
        };
        let reason = match rotation.phase {
            CaPhase::Reissue => {
                return Some((
                    Action::RotateCa {
                        step: CaRotationStep::Reissue,
                    },
                    Phase::Running,
                ));
            }
            CaPhase::Trust => RestartReason::CaTrustNew,
            CaPhase::Drop => RestartReason::CaDropOld,
        };
        // Pending members that are still members; one gone needs no restart.
        let next = self
            .members
            .iter()
            .filter(|m| m.entry.is_some() && rotation.pending.iter().any(|p| p == m.name()))
            .min_by_key(|m| (m.is_leader(), m.runtime.ordinal));
        let Some(m) = next else {
            let step = match rotation.phase {
                CaPhase::Trust => CaRotationStep::Reissue,
                _ => CaRotationStep::Finish,
            };
            return Some((Action::RotateCa { step }, Phase::Running));
        };
        // As an upgrade: a restart stops one voter; the others must still make a quorum.
        // A single member cannot avoid the pause; two would stall writes, so they wait.
        let healthy_during = self.healthy_voters.saturating_sub(1);
        if self.healthy_voters < self.voters
            || (self.voters >= 2 && healthy_during < quorum(self.voters))
        {
            return Some(wait(
                WaitReason::Other(format!(
                    "{}: restarting {} would leave {healthy_during} of {} voters running, below quorum ({}): scale to at least 3 members first",
                    reason.as_str(),
                    m.name(),
                    self.voters,
                    quorum(self.voters)
                )),
                Phase::Degraded,
            ));
        }
        Some((
            Action::RollingRestart {
                name: m.name().to_string(),
                reason,
            },
            Phase::Upgrading,
        ))
    }
}
