//! What a check returns: the [`Report`], its [`Verdict`], and one type per kind of anomaly.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{FinalValue, OpId, OutcomeCounts};

/// The overall answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed.
    Pass,
    /// At least one check found an anomaly.
    Fail,
    /// No anomaly, but some key's search ran out of budget.
    Undecided,
}

/// A key whose history has no linearization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// The operation that could not be placed: every operation that returned before it
    /// has a linearization, none includes it. `None`: the final read.
    pub blocking_op: Option<OpId>,
    /// When the blocking operation returned: the shortest failing prefix of the history
    /// ends here.
    pub prefix_ends_at: u64,
    /// The values the register could hold just before the blocking operation's return.
    pub possible_values: Vec<String>,
    /// Operations that explain it: those overlapping the blocking one and the last writes
    /// before it.
    pub involved: Vec<OpId>,
    /// A human explanation.
    pub explanation: String,
}

/// A key whose search ran out of budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undecided {
    /// The key.
    pub key: String,
    /// Operations in the key's search.
    pub operations: usize,
    /// Steps spent.
    pub steps: u64,
}

/// A read that no write explains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpossibleRead {
    /// The key.
    pub key: String,
    /// The get; `None` for the final read.
    pub op: Option<OpId>,
    /// The value read.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// An acknowledged write that the final state neither shows nor supersedes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    /// The key.
    pub key: String,
    /// The acknowledged write.
    pub op: OpId,
    /// Its value.
    pub value: String,
    /// The revision it was acknowledged with.
    pub revision: i64,
    /// What the final read found.
    pub final_value: Option<FinalValue>,
}

/// Op `later` was called after op `earlier` returned, yet saw an older revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionRegression {
    /// The op that returned first.
    pub earlier: OpId,
    /// Its header revision.
    pub earlier_revision: i64,
    /// The op called afterwards.
    pub later: OpId,
    /// Its (smaller) header revision.
    pub later_revision: i64,
}

/// One member's `HashKV` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHash {
    /// The endpoint asked.
    pub endpoint: String,
    /// The member that answered (from the response header).
    pub member_id: u64,
    /// The hash of the key-value store up to `hash_revision`.
    pub hash: u32,
    /// The member's compaction revision.
    pub compact_revision: i64,
    /// The revision hashed.
    pub hash_revision: i64,
}

/// Members that hashed the same revision (and compaction) and disagree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashMismatch {
    /// The revision hashed.
    pub hash_revision: i64,
    /// The compaction revision they share.
    pub compact_revision: i64,
    /// Every member of the group with its hash.
    pub hashes: Vec<(u64, u32)>,
    /// Members outside the largest group of equal hashes (all of them on a tie).
    pub disagreeing: Vec<u64>,
}

/// What the checker found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Operations recorded, by outcome.
    pub counts: OutcomeCounts,
    /// Keys in the history.
    pub keys: usize,
    /// Keys whose history is linearizable.
    pub linearizable_keys: Vec<String>,
    /// Keys whose history is not.
    pub violations: Vec<Violation>,
    /// Keys whose search ran out of budget.
    pub undecided: Vec<Undecided>,
    /// Reads of values nothing wrote.
    pub impossible_reads: Vec<ImpossibleRead>,
    /// Whether a final read was given (without one, lost writes are not checked).
    pub final_read_checked: bool,
    /// Acknowledged writes lost.
    pub lost_writes: Vec<LostWrite>,
    /// Other disagreements between the final read and the history.
    pub final_anomalies: Vec<String>,
    /// Revision regressions (at most a few listed).
    pub revision_regressions: Vec<RevisionRegression>,
    /// How many operations saw a revision regression.
    pub revision_regression_count: usize,
    /// Search steps over all keys.
    pub search_steps: u64,
}

impl Verdict {
    /// `pass`, `fail` or `undecided`, as reports print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Undecided => "undecided",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Report {
    /// The overall answer.
    pub fn verdict(&self) -> Verdict {
        if !self.violations.is_empty()
            || !self.impossible_reads.is_empty()
            || !self.lost_writes.is_empty()
            || !self.final_anomalies.is_empty()
            || self.revision_regression_count > 0
        {
            Verdict::Fail
        } else if !self.undecided.is_empty() {
            Verdict::Undecided
        } else {
            Verdict::Pass
        }
    }

    /// True when every check passed.
    pub fn is_pass(&self) -> bool {
        self.verdict() == Verdict::Pass
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "verdict {:?}: {} operations ({} ok, {} failed, {} unknown) on {} keys, {} search steps",
            self.verdict(),
            c.total,
            c.ok,
            c.failed,
            c.unknown,
            self.keys,
            self.search_steps
        )?;
        writeln!(
            f,
            "linearizable keys {}, violations {}, undecided {}, impossible reads {}, lost writes {}{}, revision regressions {}",
            self.linearizable_keys.len(),
            self.violations.len(),
            self.undecided.len(),
            self.impossible_reads.len(),
            self.lost_writes.len(),
            if self.final_read_checked {
                ""
            } else {
                " (no final read)"
            },
            self.revision_regression_count
        )?;
        for v in &self.violations {
            writeln!(f, "NOT LINEARIZABLE {}: {}", v.key, v.explanation)?;
        }
        for u in &self.undecided {
            writeln!(
                f,
                "UNDECIDED {}: search budget exhausted after {} steps over {} operations",
                u.key, u.steps, u.operations
            )?;
        }
        for r in &self.impossible_reads {
            let op = r.op.map_or("final read".to_string(), |id| format!("#{id}"));
            writeln!(
                f,
                "IMPOSSIBLE READ {} {op}: {:?}: {}",
                r.key, r.value, r.reason
            )?;
        }
        for w in &self.lost_writes {
            writeln!(
                f,
                "LOST WRITE {} #{} {:?} acknowledged at revision {}, final {:?}",
                w.key, w.op, w.value, w.revision, w.final_value
            )?;
        }
        for a in &self.final_anomalies {
            writeln!(f, "FINAL STATE: {a}")?;
        }
        for r in &self.revision_regressions {
            writeln!(
                f,
                "REVISION REGRESSION: #{} returned at revision {}, then #{} was called and saw {}",
                r.earlier, r.earlier_revision, r.later, r.later_revision
            )?;
        }
        Ok(())
    }
}
