//! Judges a recorded [`History`]: pure code, no I/O, no clock.
//!
//! Where it sits: traffic runs against a cluster while faults are injected
//! ([`crate::traffic`]), the history is recorded ([`crate::history`]), the traffic stops,
//! every key is read once more ([`FinalRead`]), and [`check`] turns all of that into a
//! [`Report`] whose [`Verdict`] a test asserts on.
//!
//! # What is checked
//!
//! - **Linearizability, per key.** etcd keys are independent registers, so each key's
//!   operations are checked on their own (P-compositionality). The model is a register
//!   holding `Option<String>`: a put sets it, a delete clears it, a linearizable get returns
//!   it, a compare-and-swap succeeds iff the register equals `expected` (then holds `new`),
//!   and a compare-and-swap that answered "not swapped" must have seen a different value.
//!   The final read, when given, is one more linearizable get after everything else.
//!   Serializable gets may be stale and are left out of this check.
//! - **Impossible reads** (any get, serializable too): a value that no put or
//!   compare-and-swap could have produced, or one whose every writer was called only after
//!   the read returned.
//! - **Revisions never go backwards in real time**: when op A returned before op B was
//!   called (both ok), B's header revision is at least A's. A serializable get can serve
//!   an old revision, so it is only ever the earlier op of a pair.
//! - **No acknowledged write is lost**: against the final read, a key's final value must
//!   have been written, and no acknowledged put or successful compare-and-swap may carry a
//!   revision above the final value's mod revision (for an absent key: no acknowledged
//!   write without a later delete).
//! - [`compare_hashes`]: members' `HashKV` at the same revision must agree.
//!
//! # The search
//!
//! Wing & Gong's search with Lowe's memoization, as porcupine implements it: the call and
//! return events of the operations with a finite return time, sorted by time, in a doubly
//! linked list; linearizing an operation lifts its two events out of the list,
//! backtracking unlifts them; each configuration (set of linearized operations, register
//! value) is cached so it is explored once. The set is a 128-bit Zobrist hash (the XOR of
//! a random word per operation) instead of a bitset, so an entry costs the same whatever
//! the history's length; two different sets collide with probability about
//! `entries² / 2¹²⁹`, negligible at the cap of 2·10⁷ entries.
//!
//! An operation with an unknown outcome may take effect at any point after its call, or
//! never: its return time is +∞ and it is optional. Without care a few hundred of them
//! make the search exponential; these reductions keep it exact and tractable:
//! 1. Written values are unique in generated traffic, so an unknown write whose value a
//!    get, a successful compare-and-swap or the final read observed certainly took
//!    effect: it becomes an ordinary operation returning when its first observer did.
//! 2. Values nothing observes are indistinguishable to every operation: one state.
//! 3. Unknown operations are kept out of the list, grouped in classes of interchangeable
//!    ones (same effect: all unknown deletes, all unknown puts of never-observed values,
//!    unknown swaps with the same compare and effect). Only the earliest unused one of a
//!    class is ever tried, and only when stuck at a return.
//! 4. An unknown operation is tried only where it changes the register, and then only if
//!    the operation after it could not have taken effect without it: otherwise the two
//!    commute (or the next one overwrites it) and the search covers that order anyway.
//! 5. For the two big classes the cache stores how many were used, and a configuration
//!    that used no fewer than an explored one with the same key is subsumed by it.
//! 6. Once the register leaves a value only one operation writes, it never holds it
//!    again: which unknown swaps expecting it were used stops mattering, and leaves the
//!    hash so that configurations differing only in that merge.
//!
//! The search succeeds once every operation with a finite return is linearized.
//!
//! # Limits and budget
//!
//! On a linearizable history the depth-first search walks roughly once through the
//! history (a few steps per operation); a violation forces it to exhaust every
//! configuration before the failing point, which grows with concurrency and with the
//! number of unknown operations still available there. Measured on the 2-core test
//! machine (release build, `tests/checker_speed.rs`, synthetic histories with about six
//! operations overlapping at any time):
//!
//! | history | linearizable | one late violation |
//! |---|---|---|
//! | 100,000 ops over 8 keys, 0.2% unknown writes | 0.20 s | 0.18 s |
//! | 100,000 ops over 8 keys, 2% unknown writes | 0.20 s | 0.21 s |
//! | 100,000 ops over 8 keys, 10% unknown writes | 0.19 s | 0.72 s |
//! | 100,000 ops on 1 key, 2% unknown writes | 1.3 s | budget exhausted |
//! | 100,000 ops on 1 key, 0.2% unknown writes | | 19 s (2·10⁸ steps) |
//!
//! So the soak shape (about 12,000 operations per key) is decided within a second either
//! way; what does not scale is a violation late in a very long single-key history with
//! unknown operations. Every key's search is bounded by
//! [`CheckOptions::max_steps_per_key`] (default [`DEFAULT_MAX_STEPS_PER_KEY`], about ten
//! seconds of search) and [`MAX_CONFIGS_PER_KEY`] cached configurations (about 1 GB);
//! a key that runs out is reported undecided, never linearizable. Keys are searched in
//! parallel.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
    hash::{BuildHasherDefault, Hasher},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use serde::{Deserialize, Serialize};

use crate::history::{
    FinalRead, FinalValue, History, OpId, OpKind, OpResult, Operation, Outcome, OutcomeCounts,
    fmt_ns,
};

/// The default search budget per key (one step = one event visited).
pub const DEFAULT_MAX_STEPS_PER_KEY: u64 = 100_000_000;

/// Configurations one key's search may remember (about 50 bytes each) before it is
/// reported undecided: bounds the checker's memory as the step budget bounds its time.
pub const MAX_CONFIGS_PER_KEY: usize = 20_000_000;

/// How many examples of a kind of anomaly a report lists (the counts stay exact).
const MAX_LISTED: usize = 20;

/// How the checker runs.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Search steps allowed per key before it is reported undecided.
    pub max_steps_per_key: u64,
    /// Keys checked in parallel.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            max_steps_per_key: DEFAULT_MAX_STEPS_PER_KEY,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

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

/// Runs every check on `history` (and the final read, when given).
pub fn check(history: &History, final_read: Option<&FinalRead>, options: &CheckOptions) -> Report {
    let keys: BTreeSet<String> = history
        .keys()
        .into_iter()
        .chain(final_read.into_iter().flat_map(|f| f.keys.keys().cloned()))
        .collect();
    let per_key = check_linearizability(history, final_read, options);
    let mut report = Report {
        counts: history.counts(),
        keys: keys.len(),
        linearizable_keys: Vec::new(),
        violations: Vec::new(),
        undecided: Vec::new(),
        impossible_reads: check_reads(history, final_read),
        final_read_checked: final_read.is_some(),
        lost_writes: Vec::new(),
        final_anomalies: Vec::new(),
        revision_regressions: Vec::new(),
        revision_regression_count: 0,
        search_steps: 0,
    };
    for (key, verdict) in per_key {
        match verdict {
            KeyVerdict::Linearizable { steps } => {
                report.search_steps += steps;
                report.linearizable_keys.push(key);
            }
            KeyVerdict::Violation { violation, steps } => {
                report.search_steps += steps;
                report.violations.push(violation);
            }
            KeyVerdict::Undecided(u) => {
                report.search_steps += u.steps;
                report.undecided.push(u);
            }
        }
    }
    if let Some(final_read) = final_read {
        let (lost, anomalies) = check_final_state(history, final_read);
        report.lost_writes = lost;
        report.final_anomalies = anomalies;
    }
    let regressions = check_revisions(history);
    report.revision_regression_count = regressions.len();
    report.revision_regressions = regressions.into_iter().take(MAX_LISTED).collect();
    report
}

/// One key's linearizability answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// A linearization exists.
    Linearizable {
        /// Search steps spent.
        steps: u64,
    },
    /// None exists.
    Violation {
        /// Where and why.
        violation: Violation,
        /// Search steps spent.
        steps: u64,
    },
    /// The budget ran out first.
    Undecided(Undecided),
}

/// Checks every key's linearizability, keys in parallel; results in key order.
pub fn check_linearizability(
    history: &History,
    final_read: Option<&FinalRead>,
    options: &CheckOptions,
) -> BTreeMap<String, KeyVerdict> {
    let mut by_key: BTreeMap<String, Vec<&Operation>> = BTreeMap::new();
    for key in history.keys() {
        by_key.entry(key).or_default();
    }
    if let Some(f) = final_read {
        for key in f.keys.keys() {
            by_key.entry(key.clone()).or_default();
        }
    }
    for op in &history.operations {
        by_key.entry(op.key.clone()).or_default().push(op);
    }
    let jobs: Vec<(String, Vec<&Operation>)> = by_key.into_iter().collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(BTreeMap::new());
    let threads = options.threads.clamp(1, jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((key, ops)) = jobs.get(i) else {
                        break;
                    };
                    let initial = history.initial.get(key).cloned().flatten();
                    let final_value = final_read.and_then(|f| f.keys.get(key));
                    let verdict = check_key(
                        key,
                        ops,
                        initial.as_deref(),
                        final_value.map(Option::as_ref),
                        options.max_steps_per_key,
                    );
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.clone(), verdict);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Register value ids: `NONE` is the absent key, `UNOBSERVED` every value nothing observes.
const NONE: u32 = 0;
const UNOBSERVED: u32 = 1;

/// Return time of an operation that may take effect at any time after its call.
const INFINITE: u64 = u64::MAX;

/// An operation's effect on the register model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// Sets the register.
    Write(u32),
    /// Must see this value.
    Read(u32),
    /// Must see `expected`; sets `new`.
    Swap { expected: u32, new: u32 },
    /// Must see anything but `expected`.
    NotSwapped { expected: u32 },
}

impl Step {
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Write(v) => Some(v),
            Step::Read(v) => (state == v).then_some(state),
            Step::Swap { expected, new } => (state == expected).then_some(new),
            Step::NotSwapped { expected } => (state != expected).then_some(state),
        }
    }
}

/// One operation as the search sees it.
#[derive(Clone, Debug)]
struct ModelOp {
    /// The recorded operation; `None` for the final read.
    source: Option<OpId>,
    call: u64,
    ret: u64,
    step: Step,
    /// For an unknown-outcome operation: its class of interchangeable operations.
    optional: Option<usize>,
}

/// One key's history prepared for the search.
struct Model {
    ops: Vec<ModelOp>,
    initial: u32,
    /// Value id to value, for explanations.
    values: Vec<Option<String>>,
    /// Per value id: written by exactly one operation (or only the initial state), so
    /// once the register moves away from it, it never holds it again.
    single_writer: Vec<bool>,
    classes: usize,
}

impl Model {
    fn build(
        ops: &[&Operation],
        initial: Option<&str>,
        final_value: Option<Option<&FinalValue>>,
    ) -> Self {
        let final_time = ops.iter().map(|op| op.ret.max(op.call)).max().unwrap_or(0) + 1;
        let included: Vec<&Operation> = ops
            .iter()
            .copied()
            .filter(|op| match (&op.kind, &op.outcome) {
                (_, Outcome::Failed { .. }) => false,
                (OpKind::Get { linearizable }, Outcome::Ok(_)) => *linearizable,
                (OpKind::Get { .. }, _) => false,
                _ => true,
            })
            .collect();

        // Which values anything distinguishes, and when each is first observed.
        let mut observed: HashMap<&str, u32> = HashMap::new();
        let mut values: Vec<Option<String>> = vec![None, Some("<a value nothing observed>".into())];
        let mut first_observed_by: HashMap<&str, u64> = HashMap::new();
        for op in &included {
            let (seen, at): (Option<&str>, Option<u64>) = match (&op.kind, &op.outcome) {
                (OpKind::Get { .. }, Outcome::Ok(OpResult::Read { value, .. })) => {
                    (value.as_deref(), Some(op.ret))
                }
                (
                    OpKind::CompareAndSwap { expected, .. },
                    Outcome::Ok(OpResult::Swapped { succeeded, .. }),
                ) => (expected.as_deref(), succeeded.then_some(op.ret)),
                (OpKind::CompareAndSwap { expected, .. }, _) => (expected.as_deref(), None),
                _ => (None, None),
            };
            if let Some(v) = seen {
                if !observed.contains_key(v) {
                    observed.insert(v, values.len() as u32);
                    values.push(Some(v.to_string()));
                }
                if let Some(at) = at {
                    let first = first_observed_by.entry(v).or_insert(at);
                    *first = (*first).min(at);
                }
            }
        }
        if let Some(Some(fv)) = final_value {
            let v = fv.value.as_str();
            if !observed.contains_key(v) {
                observed.insert(v, values.len() as u32);
                values.push(Some(v.to_string()));
            }
            let first = first_observed_by.entry(v).or_insert(final_time + 1);
            *first = (*first).min(final_time + 1);
        }
        let canon = |v: Option<&str>| match v {
            None => NONE,
            Some(v) => observed.get(v).copied().unwrap_or(UNOBSERVED),
        };

        // How many operations (or the initial state) produce each value.
        let mut writers: HashMap<&str, usize> = HashMap::new();
        if let Some(v) = initial {
            *writers.entry(v).or_default() += 1;
        }
        for op in &included {
            if let Some(v) = op.kind.written_value() {
                *writers.entry(v).or_default() += 1;
            }
        }
        // An unknown write whose unique value was observed took effect, before its first
        // observer returned.
        let certain_until = |op: &Operation| -> Option<u64> {
            let v = op.kind.written_value()?;
            if writers.get(v) != Some(&1) {
                return None;
            }
            first_observed_by
                .get(v)
                .copied()
                .filter(|at| *at >= op.call)
        };

        let mut model_ops = Vec::with_capacity(included.len() + 1);
        for op in &included {
            let unknown = matches!(op.outcome, Outcome::Unknown { .. });
            let (step, ret, optional) = match (&op.kind, &op.outcome) {
                (OpKind::Get { .. }, Outcome::Ok(OpResult::Read { value, .. })) => {
                    (Step::Read(canon(value.as_deref())), op.ret, false)
                }
                (OpKind::Put { value }, _) => {
                    let step = Step::Write(canon(Some(value)));
                    match (unknown, certain_until(op)) {
                        (false, _) => (step, op.ret, false),
                        (true, Some(until)) => (step, until, false),
                        (true, None) => (step, INFINITE, true),
                    }
                }
                (OpKind::Delete, _) => {
                    if unknown {
                        (Step::Write(NONE), INFINITE, true)
                    } else {
                        (Step::Write(NONE), op.ret, false)
                    }
                }
                (OpKind::CompareAndSwap { expected, new }, outcome) => {
                    let expected = canon(expected.as_deref());
                    let swap = Step::Swap {
                        expected,
                        new: canon(Some(new)),
                    };
                    match outcome {
                        Outcome::Ok(OpResult::Swapped {
                            succeeded: false, ..
                        }) => (Step::NotSwapped { expected }, op.ret, false),
                        Outcome::Ok(_) => (swap, op.ret, false),
                        _ => match certain_until(op) {
                            Some(until) => (swap, until, false),
                            None => (swap, INFINITE, true),
                        },
                    }
                }
                // Filtered out above.
                (OpKind::Get { .. }, _) => continue,
            };
            model_ops.push(ModelOp {
                source: Some(op.id),
                call: op.call,
                ret: if ret == INFINITE {
                    INFINITE
                } else {
                    ret.max(op.call)
                },
                step,
                optional: optional.then_some(0),
            });
        }
        if let Some(fv) = final_value {
            model_ops.push(ModelOp {
                source: None,
                call: final_time,
                ret: final_time + 1,
                step: Step::Read(canon(fv.map(|fv| fv.value.as_str()))),
                optional: None,
            });
        }

        // Classes of interchangeable unknown operations; in call order within a class, as
        // the search uses them.
        model_ops.sort_by_key(|op| (op.call, op.source));
        let mut class_ids: HashMap<Step, usize> = HashMap::new();
        for op in &mut model_ops {
            if op.optional.is_some() {
                let next = class_ids.len();
                op.optional = Some(*class_ids.entry(op.step).or_insert(next));
            }
        }
        let single_writer = values
            .iter()
            .enumerate()
            .map(|(id, v)| match v {
                Some(v) if id > UNOBSERVED as usize => writers.get(v.as_str()) == Some(&1),
                _ => false,
            })
            .collect();
        Model {
            ops: model_ops,
            initial: canon(initial),
            values,
            single_writer,
            classes: class_ids.len(),
        }
    }

    fn value_name(&self, id: u32) -> String {
        match self.values.get(id as usize) {
            Some(Some(v)) if id == UNOBSERVED => v.clone(),
            Some(Some(v)) => format!("{v:?}"),
            _ => "absent".to_string(),
        }
    }
}

/// A hasher for cache keys that are already random (Zobrist hashes): fold and finish with
/// a cheap mix instead of SipHash.
#[derive(Default)]
struct ConfigHasher(u64);

impl Hasher for ConfigHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = self.0.rotate_left(21) ^ v;
    }

    fn write_u32(&mut self, v: u32) {
        self.0 = self.0.rotate_left(21) ^ u64::from(v);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<ConfigHasher>>;

/// A configuration: the hash of the linearized operations (except those of the counted
/// classes), and the register state with (after an unknown operation) the state before it
/// in the high half.
type ConfigKey = ([u64; 2], u64);

/// How many operations of the two counted classes (unknown puts of never-observed
/// values, unknown deletes) a configuration used, packed in one word.
type Usage = u64;

fn usage_le(a: Usage, b: Usage) -> bool {
    (a & 0xffff_ffff) <= (b & 0xffff_ffff) && (a >> 32) <= (b >> 32)
}

/// Configurations already explored. A configuration that used no more of each counted
/// class than an explored one with the same key is subsumed by it: the explored one had
/// every operation this one has left (the classes' operations are interchangeable), so
/// whatever this one could reach, it could reach too.
#[derive(Default)]
struct ConfigCache {
    first: FastMap<ConfigKey, Usage>,
    /// Further usages of a key, incomparable with the first (rare).
    more: FastMap<ConfigKey, Vec<Usage>>,
    /// Usages remembered.
    len: usize,
}

impl ConfigCache {
    /// Records the configuration; false when it (or one subsuming it) was seen before.
    fn visit(&mut self, key: ConfigKey, usage: Usage) -> bool {
        let Some(first) = self.first.get_mut(&key) else {
            self.first.insert(key, usage);
            self.len += 1;
            return true;
        };
        if usage_le(*first, usage) {
            return false;
        }
        if usage_le(usage, *first) {
            *first = usage;
            return true;
        }
        let more = self.more.entry(key).or_default();
        if more.iter().any(|seen| usage_le(*seen, usage)) {
            return false;
        }
        let before = more.len();
        more.retain(|seen| !usage_le(usage, *seen));
        more.push(usage);
        self.len = self.len + more.len() - before;
        true
    }
}

/// One event in the search's list.
#[derive(Clone, Copy, Debug)]
struct Event {
    time: u64,
    is_call: bool,
    op: usize,
}

/// A linearized operation, to undo on backtrack.
struct Frame {
    linearized: Linearized,
    state: u32,
    hash: [u64; 2],
    after_unknown: Option<u32>,
}

/// What a frame linearized, and where the scan resumes once it is undone.
#[derive(Clone, Copy)]
enum Linearized {
    /// An operation with a finite return: its call node in the list.
    Listed { node: usize },
    /// The next unknown operation of a class: the candidate index the scan was at, and
    /// the list's first return node then.
    Unknown {
        class: usize,
        candidate: usize,
        frontier: usize,
    },
}

/// Where the search is in trying the candidates of one configuration: first the list's
/// calls before its first return node, then (at that return node, `frontier`) the
/// unknown operations called by then, the `candidate`-th class that fits the state; then
/// it is stuck at `frontier` and backtracks. Unknown operations come last so that a
/// configuration is first reached with as few of them used as possible, which makes the
/// cache's subsumption prune the more.
#[derive(Clone, Copy)]
enum Cursor {
    Start,
    Node(usize),
    Class { candidate: usize, frontier: usize },
    Stuck(usize),
}

/// Checks one key's operations (all of one key, in any order).
///
/// `initial` is the key's value before the history; `final_value` is the final read of
/// the key (`Some(None)`: read absent), checked as one more linearizable get.
pub fn check_key(
    key: &str,
    ops: &[&Operation],
    initial: Option<&str>,
    final_value: Option<Option<&FinalValue>>,
    max_steps: u64,
) -> KeyVerdict {
    let model = Model::build(ops, initial, final_value);
    let n = model.ops.len();

    // Operations with a finite return go into the event list, sorted by time; on equal
    // times calls first (touching operations count as concurrent, the permissive reading).
    let mut events: Vec<Event> = Vec::with_capacity(2 * n);
    // Unknown operations stay out of it: per class, in call order (rank order), since only
    // the next unused one of a class is ever a candidate.
    let mut class_ops: Vec<Vec<usize>> = vec![Vec::new(); model.classes];
    for (i, op) in model.ops.iter().enumerate() {
        match op.optional {
            Some(class) => class_ops[class].push(i),
            None => {
                events.push(Event {
                    time: op.call,
                    is_call: true,
                    op: i,
                });
                events.push(Event {
                    time: op.ret,
                    is_call: false,
                    op: i,
                });
            }
        }
    }
    events.sort_by_key(|e| (e.time, !e.is_call, e.op));
    // Classes a state can use: every class of writes, and the swaps expecting that state.
    let mut write_classes: Vec<usize> = Vec::new();
    let mut swap_classes: HashMap<u32, Vec<usize>> = HashMap::new();
    // The two counted classes (see `ConfigCache`): slot 0 unknown puts of never-observed
    // values, slot 1 unknown deletes. Every other unknown operation is in the hash.
    let mut counted: Vec<Option<u32>> = vec![None; model.classes];
    for (class, members) in class_ops.iter().enumerate() {
        match model.ops[members[0]].step {
            Step::Swap { expected, .. } => swap_classes.entry(expected).or_default().push(class),
            step => {
                write_classes.push(class);
                counted[class] = match step {
                    Step::Write(UNOBSERVED) => Some(0),
                    Step::Write(NONE) => Some(32),
                    _ => None,
                };
            }
        }
    }
    let no_classes: Vec<usize> = Vec::new();
    // Right after an unknown operation that left state `s` only operations that could not
    // have taken effect in `s` are tried: one that could commutes with the unknown
    // operation (or overwrites it), and the search covers that order anyway. So writes
    // are out, and swaps are in as they need the current state, not `s`.
    let candidate_class = |state: u32, after_unknown: Option<u32>, candidate: usize| {
        let writes: &[usize] = if after_unknown.is_some() {
            &[]
        } else {
            &write_classes
        };
        match writes.get(candidate) {
            Some(class) => Some(*class),
            None => swap_classes
                .get(&state)
                .unwrap_or(&no_classes)
                .get(candidate - writes.len())
                .copied(),
        }
    };

    // Doubly linked list over nodes: 0 is the head, event i is node i + 1, the last node
    // is the tail.
    let head = 0usize;
    let tail = events.len() + 1;
    let mut next: Vec<usize> = (1..=tail).chain([tail]).collect();
    let mut prev: Vec<usize> = [head].into_iter().chain(0..tail).collect();
    let mut return_node = vec![0usize; n];
    for (i, e) in events.iter().enumerate() {
        if !e.is_call {
            return_node[e.op] = i + 1;
        }
    }

    let mut zobrist = crate::traffic::SeededRng::new(0x5eed_0f11_4ea2);
    let keys: Vec<[u64; 2]> = (0..n)
        .map(|_| [zobrist.next_u64(), zobrist.next_u64()])
        .collect();
    // Per class, the XOR of the keys of its first k operations: what its usage adds to the
    // hash.
    let class_xor: Vec<Vec<[u64; 2]>> = class_ops
        .iter()
        .map(|members| {
            let mut acc = [0u64; 2];
            let mut prefix = vec![acc];
            for op in members {
                acc = [acc[0] ^ keys[*op][0], acc[1] ^ keys[*op][1]];
                prefix.push(acc);
            }
            prefix
        })
        .collect();
    // Once the register leaves a value only one operation writes, swaps expecting it can
    // never apply again: which of them were used no longer matters, so their usage leaves
    // the hash and configurations that differ only in it merge.
    let leave = |hash: [u64; 2], old: u32, new: u32, class_used: &[usize]| -> [u64; 2] {
        if old == new
            || !model
                .single_writer
                .get(old as usize)
                .copied()
                .unwrap_or(false)
        {
            return hash;
        }
        let mut hash = hash;
        for class in swap_classes.get(&old).unwrap_or(&no_classes) {
            let used = class_xor[*class][class_used[*class]];
            hash = [hash[0] ^ used[0], hash[1] ^ used[1]];
        }
        hash
    };

    let mut cache = ConfigCache::default();
    let mut state = model.initial;
    let mut hash = [0u64; 2];
    let mut usage: Usage = 0;
    let mut after_unknown: Option<u32> = None;
    let config = |hash: [u64; 2], state: u32, after_unknown: Option<u32>| -> ConfigKey {
        let prior = after_unknown.map_or(0, |s| u64::from(s) + 1);
        (hash, u64::from(state) | (prior << 32))
    };
    cache.visit(config(hash, state, after_unknown), usage);
    let mut stack: Vec<Frame> = Vec::new();
    let mut class_used = vec![0usize; model.classes];
    let mut steps = 0u64;
    // The furthest return node the search got stuck at, and the register values seen there.
    let mut stuck_at = 0usize;
    let mut stuck_states: Vec<u32> = Vec::new();

    let mut cursor = Cursor::Start;
    loop {
        steps += 1;
        if steps > max_steps || cache.len > MAX_CONFIGS_PER_KEY {
            return KeyVerdict::Undecided(Undecided {
                key: key.to_string(),
                operations: n,
                steps,
            });
        }
        match cursor {
            Cursor::Start if next[head] == tail => {
                // Every operation with a finite return is linearized; unknown ones left
                // over simply never took effect.
                return KeyVerdict::Linearizable { steps };
            }
            Cursor::Start => cursor = Cursor::Node(next[head]),
            Cursor::Class {
                candidate,
                frontier,
            } => {
                let Some(class) = candidate_class(state, after_unknown, candidate) else {
                    cursor = Cursor::Stuck(frontier);
                    continue;
                };
                cursor = Cursor::Class {
                    candidate: candidate + 1,
                    frontier,
                };
                let Some(&op) = class_ops[class].get(class_used[class]) else {
                    continue;
                };
                if model.ops[op].call > events[frontier - 1].time {
                    continue;
                }
                // Taking effect without changing the register is the same as never.
                let Some(new_state) = model.ops[op].step.apply(state) else {
                    continue;
                };
                if new_state == state {
                    continue;
                }
                let (new_hash, new_usage) = match counted[class] {
                    Some(shift) => (hash, usage + (1 << shift)),
                    None => ([hash[0] ^ keys[op][0], hash[1] ^ keys[op][1]], usage),
                };
                class_used[class] += 1;
                let new_hash = leave(new_hash, state, new_state, &class_used);
                if cache.visit(config(new_hash, new_state, Some(state)), new_usage) {
                    stack.push(Frame {
                        linearized: Linearized::Unknown {
                            class,
                            candidate,
                            frontier,
                        },
                        state,
                        hash,
                        after_unknown,
                    });
                    after_unknown = Some(state);
                    state = new_state;
                    hash = new_hash;
                    usage = new_usage;
                    cursor = Cursor::Start;
                } else {
                    class_used[class] -= 1;
                }
            }
            Cursor::Node(node) if events[node - 1].is_call => {
                cursor = Cursor::Node(next[node]);
                let op = events[node - 1].op;
                let step = model.ops[op].step;
                if after_unknown.is_some_and(|prior| step.apply(prior).is_some()) {
                    continue;
                }
                let Some(new_state) = step.apply(state) else {
                    continue;
                };
                let new_hash = [hash[0] ^ keys[op][0], hash[1] ^ keys[op][1]];
                let new_hash = leave(new_hash, state, new_state, &class_used);
                if cache.visit(config(new_hash, new_state, None), usage) {
                    stack.push(Frame {
                        linearized: Linearized::Listed { node },
                        state,
                        hash,
                        after_unknown,
                    });
                    state = new_state;
                    hash = new_hash;
                    after_unknown = None;
                    // Lift the call and its return out of the list.
                    let ret = return_node[op];
                    next[prev[node]] = next[node];
                    prev[next[node]] = prev[node];
                    next[prev[ret]] = next[ret];
                    prev[next[ret]] = prev[ret];
                    cursor = Cursor::Start;
                }
            }
            Cursor::Node(frontier) => {
                // A return: its operation must be linearized before it. Unknown operations
                // called by now may still make that possible.
                cursor = Cursor::Class {
                    candidate: 0,
                    frontier,
                };
            }
            Cursor::Stuck(stuck) => {
                // Nothing fits before this return: backtrack.
                if stuck > stuck_at {
                    stuck_at = stuck;
                    stuck_states.clear();
                }
                if stuck == stuck_at && stuck_states.len() < 8 && !stuck_states.contains(&state) {
                    stuck_states.push(state);
                }
                let Some(frame) = stack.pop() else {
                    let violation = explain(key, &model, &events, stuck_at, &stuck_states, ops);
                    return KeyVerdict::Violation { violation, steps };
                };
                state = frame.state;
                hash = frame.hash;
                after_unknown = frame.after_unknown;
                cursor = match frame.linearized {
                    Linearized::Listed { node } => {
                        // Unlift in reverse order.
                        let ret = return_node[events[node - 1].op];
                        next[prev[ret]] = ret;
                        prev[next[ret]] = ret;
                        next[prev[node]] = node;
                        prev[next[node]] = node;
                        Cursor::Node(next[node])
                    }
                    Linearized::Unknown {
                        class,
                        candidate,
                        frontier,
                    } => {
                        class_used[class] -= 1;
                        if let Some(shift) = counted[class] {
                            usage -= 1 << shift;
                        }
                        Cursor::Class {
                            candidate: candidate + 1,
                            frontier,
                        }
                    }
                };
            }
        }
    }
}

fn explain(
    key: &str,
    model: &Model,
    events: &[Event],
    stuck_at: usize,
    stuck_states: &[u32],
    ops: &[&Operation],
) -> Violation {
    let blocking = &model.ops[events[stuck_at - 1].op];
    let by_id: HashMap<OpId, &Operation> = ops.iter().map(|op| (op.id, *op)).collect();
    let describe = |m: &ModelOp| match m.source.and_then(|id| by_id.get(&id)) {
        Some(op) => op.describe(),
        None => format!(
            "final read of {key} = {}",
            match m.step {
                Step::Read(v) => model.value_name(v),
                _ => "?".into(),
            }
        ),
    };
    // Operations overlapping the blocking one, then the last few writes before it.
    let mut involved: Vec<&ModelOp> = model
        .ops
        .iter()
        .filter(|m| !std::ptr::eq(*m, blocking) && m.call <= blocking.ret && m.ret >= blocking.call)
        .take(MAX_LISTED)
        .collect();
    let mut earlier_writes: Vec<&ModelOp> = model
        .ops
        .iter()
        .filter(|m| m.ret < blocking.call && !matches!(m.step, Step::Read(_)))
        .collect();
    earlier_writes.sort_by_key(|m| m.ret);
    involved.extend(earlier_writes.iter().rev().take(3));
    involved.sort_by_key(|m| (m.call, m.source));
    // Values nothing observed are one state in the search; name the ones the involved
    // operations wrote.
    let unobserved: Vec<String> = involved
        .iter()
        .filter_map(|m| m.source.and_then(|id| by_id.get(&id)))
        .filter_map(|op| op.kind.written_value())
        .filter(|v| {
            !model
                .values
                .iter()
                .any(|known| known.as_deref() == Some(*v))
        })
        .map(|v| format!("{v:?}"))
        .collect();
    let possible_values: Vec<String> = stuck_states
        .iter()
        .map(|s| match *s {
            UNOBSERVED if !unobserved.is_empty() => {
                format!("a value no read observed ({})", unobserved.join(" or "))
            }
            s => model.value_name(s),
        })
        .collect();
    let mut explanation = format!(
        "no linearization of the ops up to {}: {} cannot take effect at any point within its interval; the register could only hold {} just before it returned. Involved:",
        fmt_ns(blocking.ret),
        describe(blocking),
        possible_values.join(" or "),
    );
    for m in &involved {
        explanation.push_str("\n    ");
        explanation.push_str(&describe(m));
        if m.optional.is_some() {
            explanation.push_str(" (may take effect any time after its call, or never)");
        }
    }
    Violation {
        key: key.to_string(),
        blocking_op: blocking.source,
        prefix_ends_at: blocking.ret,
        possible_values,
        involved: involved.iter().filter_map(|m| m.source).collect(),
        explanation,
    }
}

/// Reads (linearizable or serializable, and the final read) of values no write explains:
/// never written by an ok or unknown put or compare-and-swap on that key (nor the initial
/// value), or written only by operations called after the read returned.
pub fn check_reads(history: &History, final_read: Option<&FinalRead>) -> Vec<ImpossibleRead> {
    // key -> value -> earliest call of a write that may have produced it.
    let mut may_write: HashMap<(&str, &str), u64> = HashMap::new();
    let mut failed_write: HashSet<(&str, &str)> = HashSet::new();
    for (key, value) in &history.initial {
        if let Some(v) = value {
            may_write.insert((key, v), 0);
        }
    }
    for op in &history.operations {
        if let Some(v) = op.kind.written_value() {
            if matches!(op.outcome, Outcome::Failed { .. }) {
                failed_write.insert((&op.key, v));
                continue;
            }
            let call = may_write.entry((&op.key, v)).or_insert(op.call);
            *call = (*call).min(op.call);
        }
    }
    let judge = |key: &str, value: &str, returned: u64| -> Option<String> {
        match may_write.get(&(key, value)) {
            None if failed_write.contains(&(key, value)) => {
                Some("written only by an operation that was reported failed".into())
            }
            None => Some("never written".into()),
            Some(call) if *call > returned => Some(format!(
                "read before any write of it was called (first writer called at {})",
                fmt_ns(*call)
            )),
            Some(_) => None,
        }
    };
    let mut found = Vec::new();
    for op in &history.operations {
        if let (OpKind::Get { .. }, Outcome::Ok(OpResult::Read { value: Some(v), .. })) =
            (&op.kind, &op.outcome)
            && let Some(reason) = judge(&op.key, v, op.ret)
        {
            found.push(ImpossibleRead {
                key: op.key.clone(),
                op: Some(op.id),
                value: v.clone(),
                reason,
            });
        }
    }
    for (key, fv) in final_read.iter().flat_map(|f| &f.keys) {
        if let Some(fv) = fv
            && let Some(reason) = judge(key, &fv.value, u64::MAX)
        {
            found.push(ImpossibleRead {
                key: key.clone(),
                op: None,
                value: fv.value.clone(),
                reason,
            });
        }
    }
    found
}

/// Compares the final read with the history: returns the acknowledged writes lost, and
/// other anomalies (a final value with a different revision than its acknowledged write).
pub fn check_final_state(
    history: &History,
    final_read: &FinalRead,
) -> (Vec<LostWrite>, Vec<String>) {
    let mut lost = Vec::new();
    let mut anomalies = Vec::new();
    for (key, final_value) in &final_read.keys {
        let ops: Vec<&Operation> = history
            .operations
            .iter()
            .filter(|op| &op.key == key)
            .collect();
        let acknowledged: Vec<(&Operation, &str, i64)> = ops
            .iter()
            .filter(|op| op.is_acknowledged_write())
            .filter_map(|op| {
                let v = op.kind.written_value()?;
                Some((*op, v, op.outcome.result()?.revision()))
            })
            .collect();
        match final_value {
            Some(fv) => {
                let producers: Vec<&Operation> = ops
                    .iter()
                    .copied()
                    .filter(|op| {
                        op.kind.written_value() == Some(fv.value.as_str())
                            && !matches!(op.outcome, Outcome::Failed { .. })
                    })
                    .collect();
                let from_initial =
                    history.initial.get(key).and_then(|v| v.as_deref()) == Some(fv.value.as_str());
                let explained = from_initial
                    || producers.iter().any(|op| match op.outcome.result() {
                        None => true,
                        Some(r) => !op.is_acknowledged_write() || r.revision() == fv.mod_revision,
                    });
                if !producers.is_empty() && !explained {
                    let revisions: Vec<i64> = producers
                        .iter()
                        .filter_map(|op| op.outcome.result().map(OpResult::revision))
                        .collect();
                    anomalies.push(format!(
                        "{key}: final value {:?} has mod revision {} but its write was acknowledged at revision {revisions:?}",
                        fv.value, fv.mod_revision
                    ));
                }
                for (op, value, revision) in &acknowledged {
                    if *revision > fv.mod_revision {
                        lost.push(LostWrite {
                            key: key.clone(),
                            op: op.id,
                            value: value.to_string(),
                            revision: *revision,
                            final_value: Some(fv.clone()),
                        });
                    }
                }
            }
            None => {
                let unknown_delete = ops.iter().any(|op| {
                    op.kind == OpKind::Delete && matches!(op.outcome, Outcome::Unknown { .. })
                });
                let last_delete = ops
                    .iter()
                    .filter(|op| op.kind == OpKind::Delete)
                    .filter_map(|op| op.outcome.result().map(OpResult::revision))
                    .max()
                    .unwrap_or(0);
                for (op, value, revision) in &acknowledged {
                    if !unknown_delete && *revision >= last_delete {
                        lost.push(LostWrite {
                            key: key.clone(),
                            op: op.id,
                            value: value.to_string(),
                            revision: *revision,
                            final_value: None,
                        });
                    }
                }
            }
        }
    }
    (lost, anomalies)
}

/// Every ok operation called after another ok operation returned must see a revision at
/// least as high. Serializable gets may serve an older revision, so they are only checked
/// as the earlier operation. Returns every regression (each later op once, paired with the
/// highest revision returned before its call).
pub fn check_revisions(history: &History) -> Vec<RevisionRegression> {
    let mut done: Vec<(u64, i64, OpId)> = Vec::new();
    let mut called: Vec<(u64, i64, OpId)> = Vec::new();
    for op in &history.operations {
        let Some(result) = op.outcome.result() else {
            continue;
        };
        done.push((op.ret, result.revision(), op.id));
        if op.kind
            != (OpKind::Get {
                linearizable: false,
            })
        {
            called.push((op.call, result.revision(), op.id));
        }
    }
    done.sort_unstable();
    called.sort_unstable();
    let mut regressions = Vec::new();
    let mut highest: Option<(i64, OpId)> = None;
    let mut returned = done.iter().peekable();
    for (call, revision, id) in called {
        while let Some((_, rev, done_id)) = returned.next_if(|(ret, ..)| *ret < call) {
            if highest.is_none_or(|(h, _)| *rev > h) {
                highest = Some((*rev, *done_id));
            }
        }
        if let Some((h, earlier)) = highest
            && revision < h
        {
            regressions.push(RevisionRegression {
                earlier,
                earlier_revision: h,
                later: id,
                later_revision: revision,
            });
        }
    }
    regressions
}

/// Groups members' `HashKV` answers by (hash revision, compaction revision) and reports
/// every group whose hashes differ. Answers at different revisions are not comparable.
pub fn compare_hashes(results: &[MemberHash]) -> Vec<HashMismatch> {
    let mut groups: BTreeMap<(i64, i64), Vec<&MemberHash>> = BTreeMap::new();
    for r in results {
        groups
            .entry((r.hash_revision, r.compact_revision))
            .or_default()
            .push(r);
    }
    let mut mismatches = Vec::new();
    for ((hash_revision, compact_revision), members) in groups {
        let mut by_hash: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for m in &members {
            by_hash.entry(m.hash).or_default().push(m.member_id);
        }
        if by_hash.len() < 2 {
            continue;
        }
        let largest = by_hash.values().map(Vec::len).max().unwrap_or(0);
        let majority: Vec<&Vec<u64>> = by_hash.values().filter(|g| g.len() == largest).collect();
        let disagreeing = if majority.len() == 1 {
            by_hash
                .values()
                .filter(|g| g.len() != largest)
                .flatten()
                .copied()
                .collect()
        } else {
            members.iter().map(|m| m.member_id).collect()
        };
        mismatches.push(HashMismatch {
            hash_revision,
            compact_revision,
            hashes: members.iter().map(|m| (m.member_id, m.hash)).collect(),
            disagreeing,
        });
    }
    mismatches
}

/// A linearizable history with its final read, for tests and benchmarks of the checker:
/// a sequential register per key (`k0`, `k1`, ...), `n` operations 100 ns apart, each
/// operation's interval drawn at random up to 300 ns either side of its linearization
/// point (so about six overlap at any time), `unknown_per_mille` of the writes with an
/// unknown outcome, half of which took effect. The same arguments give the same history.
pub fn synthetic_history(
    seed: u64,
    n: usize,
    keys: u64,
    unknown_per_mille: u64,
) -> (History, FinalRead) {
    let mut rng = crate::traffic::SeededRng::new(seed);
    let mut state: Vec<Option<(String, i64)>> = vec![None; keys as usize];
    let mut revision = 1i64;
    let mut ops = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let point = (i + 1) * 100 + 400;
        let call = point - 1 - rng.below(300);
        let ret = point + 1 + rng.below(300);
        let k = rng.below(keys) as usize;
        let current = state[k].clone();
        let unknown = rng.below(1000) < unknown_per_mille;
        let applies = !unknown || rng.chance(1, 2);
        let roll = rng.below(100);
        let (kind, result) = if roll < 30 {
            let value = format!("v{i}");
            if applies {
                revision += 1;
                state[k] = Some((value.clone(), revision));
            }
            (OpKind::Put { value }, OpResult::Written { revision })
        } else if roll < 65 {
            let result = OpResult::Read {
                value: current.as_ref().map(|(v, _)| v.clone()),
                mod_revision: current.as_ref().map(|(_, r)| *r),
                revision,
            };
            let linearizable = roll < 60;
            (OpKind::Get { linearizable }, result)
        } else if roll < 75 {
            if applies && current.is_some() {
                revision += 1;
                state[k] = None;
            }
            (OpKind::Delete, OpResult::Written { revision })
        } else {
            let current_value = current.as_ref().map(|(v, _)| v.clone());
            let expected = if rng.chance(1, 2) {
                current_value.clone()
            } else {
                Some(format!("v{}", rng.below(i + 1)))
            };
            let new = format!("v{i}");
            let succeeded = expected == current_value;
            if applies && succeeded {
                revision += 1;
                state[k] = Some((new.clone(), revision));
            }
            let result = OpResult::Swapped {
                succeeded,
                revision,
            };
            (OpKind::CompareAndSwap { expected, new }, result)
        };
        let outcome = if unknown && kind.is_write() {
            Outcome::Unknown {
                reason: "generated".into(),
            }
        } else {
            Outcome::Ok(result)
        };
        ops.push(Operation {
            id: 0,
            client: (i % 8) as u32,
            key: format!("k{k}"),
            kind,
            call,
            ret,
            outcome,
        });
    }
    ops.sort_by_key(|op| op.call);
    for (id, op) in ops.iter_mut().enumerate() {
        op.id = id as OpId;
    }
    let keys = state
        .into_iter()
        .enumerate()
        .map(|(k, v)| {
            let value = v.map(|(value, mod_revision)| FinalValue {
                value,
                mod_revision,
            });
            (format!("k{k}"), value)
        })
        .collect();
    let final_read = FinalRead { revision, keys };
    (
        History {
            operations: ops,
            ..History::default()
        },
        final_read,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::SeededRng;

    const K: &str = "k";

    fn op(id: OpId, kind: OpKind, call: u64, ret: u64, outcome: Outcome) -> Operation {
        Operation {
            id,
            client: id as u32,
            key: K.into(),
            kind,
            call,
            ret,
            outcome,
        }
    }

    fn put(id: OpId, value: &str, call: u64, ret: u64, revision: i64) -> Operation {
        let kind = OpKind::Put {
            value: value.into(),
        };
        op(
            id,
            kind,
            call,
            ret,
            Outcome::Ok(OpResult::Written { revision }),
        )
    }

    fn put_unknown(id: OpId, value: &str, call: u64, ret: u64) -> Operation {
        let kind = OpKind::Put {
            value: value.into(),
        };
        let outcome = Outcome::Unknown {
            reason: "timeout".into(),
        };
        op(id, kind, call, ret, outcome)
    }

    fn get(id: OpId, value: Option<&str>, call: u64, ret: u64, revision: i64) -> Operation {
        let result = OpResult::Read {
            value: value.map(Into::into),
            mod_revision: None,
            revision,
        };
        let kind = OpKind::Get { linearizable: true };
        op(id, kind, call, ret, Outcome::Ok(result))
    }

    fn serializable(mut o: Operation) -> Operation {
        o.kind = OpKind::Get {
            linearizable: false,
        };
        o
    }

    fn cas(
        id: OpId,
        expected: Option<&str>,
        new: &str,
        (call, ret): (u64, u64),
        succeeded: bool,
        revision: i64,
    ) -> Operation {
        let kind = OpKind::CompareAndSwap {
            expected: expected.map(Into::into),
            new: new.into(),
        };
        let result = OpResult::Swapped {
            succeeded,
            revision,
        };
        op(id, kind, call, ret, Outcome::Ok(result))
    }

    fn history(ops: Vec<Operation>) -> History {
        History {
            operations: ops,
            ..History::default()
        }
    }

    fn final_read(value: Option<(&str, i64)>) -> FinalRead {
        let value = value.map(|(v, r)| FinalValue {
            value: v.into(),
            mod_revision: r,
        });
        FinalRead {
            revision: 100,
            keys: [(K.to_string(), value)].into(),
        }
    }

    fn run(h: &History, f: Option<&FinalRead>) -> Report {
        check(h, f, &CheckOptions::default())
    }

    #[test]
    fn rejects_a_stale_read() {
        // b's put completed before the get was called, yet the get returns a.
        let h = history(vec![
            put(0, "a", 0, 10, 2),
            put(1, "b", 20, 30, 3),
            get(2, Some("a"), 40, 50, 3),
        ]);
        let report = run(&h, None);
        assert_eq!(report.verdict(), Verdict::Fail, "{report}");
        let [v] = report.violations.as_slice() else {
            panic!("one violation expected: {report}");
        };
        assert_eq!(v.key, K);
        assert_eq!(v.blocking_op, Some(2));
        assert_eq!(
            v.possible_values,
            vec!["a value no read observed (\"b\")".to_string()]
        );
        assert!(v.involved.contains(&1), "{}", v.explanation);
        assert!(report.lost_writes.is_empty() && report.impossible_reads.is_empty());
    }

    #[test]
    fn rejects_a_lost_write() {
        // Both puts acknowledged; the final state shows the older one.
        let h = history(vec![put(0, "a", 0, 10, 5), put(1, "b", 20, 30, 6)]);
        let report = run(&h, Some(&final_read(Some(("a", 5)))));
        assert_eq!(report.verdict(), Verdict::Fail);
        assert_eq!(report.lost_writes.len(), 1, "{report}");
        assert_eq!(report.lost_writes[0].op, 1);
        assert_eq!(report.lost_writes[0].revision, 6);
        // The final read is also a linearizable get, so the search agrees.
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].blocking_op, None);

        // Gone altogether, with no delete that could explain it.
        let report = run(&h, Some(&final_read(None)));
        assert_eq!(report.lost_writes.len(), 2, "{report}");

        // Superseded writes are not lost.
        let report = run(&h, Some(&final_read(Some(("b", 6)))));
        assert!(report.is_pass(), "{report}");
        let mut deleted = h.clone();
        deleted.operations.push(op(
            2,
            OpKind::Delete,
            40,
            50,
            Outcome::Ok(OpResult::Written { revision: 7 }),
        ));
        let report = run(&deleted, Some(&final_read(None)));
        assert!(report.is_pass(), "{report}");
    }

    #[test]
    fn accepts_a_get_overlapping_a_put_returning_either_value() {
        for seen in ["a", "b"] {
            let h = history(vec![
                put(0, "a", 0, 10, 2),
                put(1, "b", 20, 40, 3),
                get(2, Some(seen), 25, 35, 3),
                get(3, Some("b"), 50, 60, 3),
            ]);
            let report = run(&h, Some(&final_read(Some(("b", 3)))));
            assert!(report.is_pass(), "reading {seen}: {report}");
        }
        // Two concurrent puts may land in either order.
        for last in ["a", "b"] {
            let h = history(vec![
                put(0, "a", 0, 30, 2),
                put(1, "b", 5, 25, 3),
                get(2, Some(last), 40, 50, 3),
            ]);
            assert!(run(&h, None).is_pass(), "last {last}");
        }
    }

    #[test]
    fn accepts_reads_that_do_or_do_not_observe_an_unknown_write() {
        for seen in ["a", "b"] {
            let h = history(vec![
                put(0, "a", 0, 10, 2),
                put_unknown(1, "b", 20, 30),
                get(2, Some(seen), 40, 50, 3),
                get(3, Some(seen), 60, 70, 3),
            ]);
            let fin = final_read(Some((seen, if seen == "a" { 2 } else { 3 })));
            let report = run(&h, Some(&fin));
            assert!(report.is_pass(), "reading {seen}: {report}");
            assert_eq!(report.counts.unknown, 1);
        }
        // An unknown write may take effect long after its call.
        let h = history(vec![
            put(0, "a", 0, 10, 2),
            put_unknown(1, "b", 20, 30),
            get(2, Some("a"), 40, 50, 2),
            get(3, Some("b"), 60, 70, 3),
        ]);
        assert!(run(&h, None).is_pass());
    }

    #[test]
    fn rejects_an_unknown_write_seen_and_then_unseen() {
        let h = history(vec![
            put(0, "a", 0, 10, 2),
            put_unknown(1, "b", 20, 30),
            get(2, Some("b"), 40, 50, 3),
            get(3, Some("a"), 60, 70, 3),
        ]);
        let report = run(&h, None);
        assert_eq!(report.violations.len(), 1, "{report}");
        assert_eq!(report.violations[0].blocking_op, Some(3));
    }

    #[test]
    fn rejects_a_read_of_a_value_never_written() {
        let h = history(vec![put(0, "a", 0, 10, 2), get(1, Some("zzz"), 20, 30, 2)]);
        let report = run(&h, None);
        assert_eq!(report.violations.len(), 1, "{report}");
        assert_eq!(report.impossible_reads.len(), 1);
        assert_eq!(report.impossible_reads[0].reason, "never written");

        // A serializable read is not checked for linearizability, but must still read
        // something written.
        let h = history(vec![
            put(0, "a", 0, 10, 2),
            serializable(get(1, Some("zzz"), 20, 30, 2)),
        ]);
        let report = run(&h, None);
        assert!(report.violations.is_empty());
        assert_eq!(report.impossible_reads.len(), 1, "{report}");

        // A write reported failed certainly did not take effect.
        let mut failed = put(0, "a", 0, 10, 2);
        failed.outcome = Outcome::Failed {
            reason: "connection refused".into(),
        };
        let h = history(vec![failed, get(1, Some("a"), 20, 30, 2)]);
        let report = run(&h, None);
        assert_eq!(report.verdict(), Verdict::Fail);
        assert!(
            report.impossible_reads[0].reason.contains("failed"),
            "{report}"
        );
    }

    #[test]
    fn accepts_stale_serializable_reads() {
        let h = history(vec![
            put(0, "a", 0, 10, 2),
            put(1, "b", 20, 30, 3),
            serializable(get(2, Some("a"), 40, 50, 2)),
        ]);
        let report = run(&h, Some(&final_read(Some(("b", 3)))));
        assert!(report.is_pass(), "{report}");
        // Reading a value before anything wrote it is impossible even for a stale read.
        let h = history(vec![
            serializable(get(0, Some("a"), 0, 10, 1)),
            put(1, "a", 20, 30, 2),
        ]);
        let report = run(&h, None);
        assert_eq!(report.impossible_reads.len(), 1, "{report}");
    }

    #[test]
    fn rejects_a_cas_that_contradicts_the_state() {
        // Swapped although the register held a, not b.
        let h = history(vec![
            put(0, "a", 0, 10, 2),
            cas(1, Some("b"), "c", (20, 30), true, 3),
        ]);
        let report = run(&h, None);
        assert_eq!(report.violations.len(), 1, "{report}");
        assert_eq!(report.violations[0].blocking_op, Some(1));

        // Not swapped although the register held exactly the expected value.
        let h = history(vec![
            put(0, "a", 0, 10, 2),
            cas(1, Some("a"), "c", (20, 30), false, 2),
        ]);
        assert_eq!(run(&h, None).violations.len(), 1);

        // Swapping into an absent key needs the key absent.
        let h = history(vec![
            put(0, "a", 0, 10, 2),
            cas(1, None, "c", (20, 30), true, 3),
        ]);
        assert_eq!(run(&h, None).violations.len(), 1);

        // The consistent versions pass.
        let h = history(vec![
            cas(0, None, "a", (0, 10), true, 2),
            cas(1, Some("a"), "c", (20, 30), true, 3),
            cas(2, Some("a"), "d", (40, 50), false, 3),
            get(3, Some("c"), 60, 70, 3),
        ]);
        let report = run(&h, Some(&final_read(Some(("c", 3)))));
        assert!(report.is_pass(), "{report}");
    }

    #[test]
    fn accepts_a_failed_cas_explained_only_by_an_unknown_write() {
        // Nobody ever reads u, but the not-swapped CAS proves something replaced a.
        let h = history(vec![
            put(0, "a", 0, 10, 2),
            put_unknown(1, "u", 5, 2_000),
            cas(2, Some("a"), "c", (20, 30), false, 3),
            put(3, "d", 40, 50, 4),
            get(4, Some("d"), 60, 70, 4),
        ]);
        let report = run(&h, Some(&final_read(Some(("d", 4)))));
        assert!(report.is_pass(), "{report}");
        // Without the unknown write it is a violation.
        let mut without = h.clone();
        without.operations.remove(1);
        assert_eq!(run(&without, None).violations.len(), 1);
    }

    #[test]
    fn detects_revisions_going_backwards() {
        let h = history(vec![
            put(0, "a", 0, 10, 10),
            get(1, Some("a"), 20, 30, 5),
            serializable(get(2, Some("a"), 40, 50, 3)),
        ]);
        let report = run(&h, None);
        assert_eq!(report.revision_regression_count, 1, "{report}");
        assert_eq!(
            report.revision_regressions[0],
            RevisionRegression {
                earlier: 0,
                earlier_revision: 10,
                later: 1,
                later_revision: 5,
            }
        );
        assert_eq!(report.verdict(), Verdict::Fail);
        // Overlapping operations may see revisions in any order.
        let h = history(vec![put(0, "a", 0, 30, 10), get(1, Some("a"), 20, 40, 5)]);
        assert_eq!(check_revisions(&h), vec![]);
    }

    #[test]
    fn hashes_that_disagree_at_the_same_revision_are_reported() {
        let member = |id: u64, hash: u32, hash_revision: i64| MemberHash {
            endpoint: format!("http://127.0.0.1:{id}"),
            member_id: id,
            hash,
            compact_revision: 1,
            hash_revision,
        };
        assert!(compare_hashes(&[member(1, 7, 50), member(2, 7, 50), member(3, 7, 50)]).is_empty());
        let mismatches = compare_hashes(&[member(1, 7, 50), member(2, 9, 50), member(3, 7, 50)]);
        assert_eq!(mismatches.len(), 1);
        assert_eq!(mismatches[0].disagreeing, vec![2]);
        // Different revisions are not comparable.
        assert!(compare_hashes(&[member(1, 7, 50), member(2, 9, 51)]).is_empty());
    }

    #[test]
    fn an_exhausted_budget_is_undecided_never_a_pass() {
        let (h, f) = synthetic_history(3, 200, 1, 50);
        let options = CheckOptions {
            max_steps_per_key: 10,
            ..CheckOptions::default()
        };
        let report = check(&h, Some(&f), &options);
        assert_eq!(report.verdict(), Verdict::Undecided, "{report}");
        assert_eq!(report.undecided.len(), 1);
    }

    fn ok_linearizable_gets(h: &History) -> Vec<OpId> {
        h.operations
            .iter()
            .filter(|op| op.kind == OpKind::Get { linearizable: true } && op.is_ok())
            .map(|op| op.id)
            .collect()
    }

    fn set_read(h: &mut History, id: OpId, value: &str) {
        let op = h.get_mut(id).expect("op");
        if let Outcome::Ok(OpResult::Read { value: v, .. }) = &mut op.outcome {
            *v = Some(value.to_string());
        }
    }

    #[test]
    fn generated_linearizable_histories_pass_and_one_impossible_read_fails_them() {
        for seed in 0..12 {
            let (h, f) = synthetic_history(seed, 400, 3, 80);
            let report = run(&h, Some(&f));
            assert!(report.is_pass(), "seed {seed}: {report}");
            assert!(report.counts.unknown > 0);

            // A read of a value nothing wrote.
            let mut rng = SeededRng::new(seed);
            let gets = ok_linearizable_gets(&h);
            let victim = gets[rng.below(gets.len() as u64) as usize];
            let mut tampered = h.clone();
            set_read(&mut tampered, victim, "never-written");
            let report = run(&tampered, Some(&f));
            assert_eq!(report.verdict(), Verdict::Fail, "seed {seed}");
            assert_eq!(report.violations.len(), 1, "seed {seed}: {report}");
            assert_eq!(report.violations[0].blocking_op, Some(victim));

            // A read of a value written only after the read returned.
            let future = gets.iter().find_map(|&g| {
                let get = h.get(g)?;
                let later = h.operations.iter().find(|w| {
                    w.key == get.key
                        && w.call > get.ret
                        && w.is_ok()
                        && matches!(w.kind, OpKind::Put { .. })
                })?;
                Some((g, later.kind.written_value()?.to_string()))
            });
            let (g, value) = future.expect("some get precedes some put");
            let mut tampered = h.clone();
            set_read(&mut tampered, g, &value);
            let report = run(&tampered, Some(&f));
            assert_eq!(report.violations.len(), 1, "seed {seed}: {report}");
            assert_eq!(report.violations[0].blocking_op, Some(g));
        }
    }

    #[test]
    fn a_few_thousand_operations_per_key_check_quickly() {
        let (h, f) = synthetic_history(99, 12_000, 4, 30);
        let started = std::time::Instant::now();
        let report = run(&h, Some(&f));
        let took = started.elapsed();
        assert!(report.is_pass(), "{report}");
        assert!(
            took < std::time::Duration::from_secs(3),
            "took {took:?}: {report}"
        );
    }
}
