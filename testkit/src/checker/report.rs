//! What a check returns: the [`Report`], its [`Verdict`], and one type per kind of anomaly.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{ClientId, KeyValue, OpId, OutcomeCounts};

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
    pub final_value: Option<KeyValue>,
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

/// What a revision anomaly is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionAnomalyKind {
    /// Two writes took effect at one revision (a reused revision: a rollback, a split
    /// brain).
    SharedRevision,
    /// A value was seen under a mod revision other than its write's.
    WriterMismatch,
    /// A read's mod revision exceeds its own header revision.
    ModAboveHeader,
    /// A read at revision `R` missed a write of revision `R` or below (or found a key
    /// absent that was put and never deleted).
    StaleAtRevision,
    /// A client got an older header revision from a member than it had got from it
    /// before.
    ClientRegression,
    /// An answer that contradicts itself (a refused compare that read back the value it
    /// compared with; a delete of one key that deleted several).
    ContradictoryAnswer,
    /// Settled members, at one revision, hold different keys (or not the final read's).
    MembersDisagree,
}

impl RevisionAnomalyKind {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SharedRevision => "two writes at one revision",
            Self::WriterMismatch => "a value under another revision than its write's",
            Self::ModAboveHeader => "a mod revision above the header's",
            Self::StaleAtRevision => "a read missing a write of its revision",
            Self::ClientRegression => "a client's revision going backwards on one member",
            Self::ContradictoryAnswer => "an answer contradicting itself",
            Self::MembersDisagree => "members disagreeing at one revision",
        }
    }
}

/// Something the history shows that etcd's revisions cannot explain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionAnomaly {
    /// What kind.
    pub kind: RevisionAnomalyKind,
    /// The key, when one.
    pub key: Option<String>,
    /// The operations involved.
    pub ops: Vec<OpId>,
    /// A human explanation.
    pub explanation: String,
}

/// What a watch anomaly is, after etcd's watch guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchAnomalyKind {
    /// Events out of revision order, or one event twice (Ordered, Unique).
    OutOfOrder,
    /// One revision's events split over two responses (Atomic).
    SplitRevision,
    /// An event before the revision the watch asked for (Resumable).
    BeforeStart,
    /// A write the watch should have delivered and did not (Reliable): a gap, a
    /// compaction not reported.
    Missed,
    /// An event no write explains, or whose revision is not its write's.
    WrongEvent,
    /// The watch never confirmed delivering everything up to the newest acknowledged
    /// write (it went silent).
    Stalled,
}

/// A watch session that broke one of etcd's watch guarantees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchAnomaly {
    /// Which session (index in the history's watches).
    pub session: usize,
    /// The watcher.
    pub watcher: ClientId,
    /// What kind.
    pub kind: WatchAnomalyKind,
    /// A human explanation.
    pub explanation: String,
}

/// What a lease anomaly is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseAnomalyKind {
    /// The lease was gone before its TTL ran out from a keep-alive (or its grant).
    ExpiredEarly,
    /// A keep-alive renewed a lease already seen gone.
    Resurrected,
    /// The key attached to a lease was read after the lease was seen gone.
    KeyOutlivedLease,
}

/// A lease that broke etcd's lease guarantees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAnomaly {
    /// The lease.
    pub lease: i64,
    /// What kind.
    pub kind: LeaseAnomalyKind,
    /// A human explanation.
    pub explanation: String,
}

/// What the watch checks covered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSummary {
    /// Sessions checked.
    pub sessions: usize,
    /// Events checked.
    pub events: usize,
    /// Sessions etcd canceled for a compaction (each reported as such).
    pub compacted: usize,
    /// What broke a guarantee.
    pub anomalies: Vec<WatchAnomaly>,
}

/// What the lease checks covered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSummary {
    /// Leases checked.
    pub leases: usize,
    /// Keep-alives that renewed a lease, each a bound on when it may expire.
    pub renewals: usize,
    /// Reads of keys attached to leases.
    pub key_reads: usize,
    /// Leases seen expire (not revoked).
    pub expired: usize,
    /// What broke a guarantee.
    pub anomalies: Vec<LeaseAnomaly>,
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
    /// What the model of revisions cannot explain.
    pub revision_anomalies: Vec<RevisionAnomaly>,
    /// Reads checked at their revision only (serializable: may be stale, never
    /// inconsistent), the members' own reads included.
    pub serializable_reads: usize,
    /// The watch checks.
    pub watch: WatchSummary,
    /// The lease checks.
    pub leases: LeaseSummary,
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
            || !self.revision_anomalies.is_empty()
            || !self.watch.anomalies.is_empty()
            || !self.leases.anomalies.is_empty()
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
        writeln!(
            f,
            "revision anomalies {}, serializable reads {}, watch sessions {} ({} events, {} compacted) anomalies {}, leases {} ({} renewals, {} key reads, {} expired) anomalies {}",
            self.revision_anomalies.len(),
            self.serializable_reads,
            self.watch.sessions,
            self.watch.events,
            self.watch.compacted,
            self.watch.anomalies.len(),
            self.leases.leases,
            self.leases.renewals,
            self.leases.key_reads,
            self.leases.expired,
            self.leases.anomalies.len(),
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
        for a in self.revision_anomalies.iter().take(MAX_PRINTED) {
            writeln!(f, "REVISION ({}): {}", a.kind.as_str(), a.explanation)?;
        }
        more(f, self.revision_anomalies.len())?;
        for a in self.watch.anomalies.iter().take(MAX_PRINTED) {
            writeln!(
                f,
                "WATCH {:?} (session {}, watcher {}): {}",
                a.kind, a.session, a.watcher, a.explanation
            )?;
        }
        more(f, self.watch.anomalies.len())?;
        for a in self.leases.anomalies.iter().take(MAX_PRINTED) {
            writeln!(f, "LEASE {:?} ({:x}): {}", a.kind, a.lease, a.explanation)?;
        }
        more(f, self.leases.anomalies.len())?;
        Ok(())
    }
}

/// How many anomalies of one kind a report prints (the lists stay whole).
const MAX_PRINTED: usize = 20;

fn more(f: &mut fmt::Formatter<'_>, total: usize) -> fmt::Result {
    if total > MAX_PRINTED {
        writeln!(f, "... and {} more", total - MAX_PRINTED)?;
    }
    Ok(())
}
