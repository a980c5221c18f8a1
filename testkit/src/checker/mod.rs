//! Judges a recorded [`History`]: pure code, no I/O, no clock.
//!
//! Where it sits: traffic runs against a cluster while faults are injected
//! ([`crate::traffic`]), the history is recorded ([`crate::history`]), the traffic stops,
//! every key is read once more ([`FinalRead`]), and [`check`] turns all of that into a
//! [`Report`] whose [`Verdict`] a test asserts on.
//!
//! # What is checked
//!
//! - **Linearizability with revisions, per key.** etcd keys are independent registers, so
//!   each key's operations are checked on their own (P-compositionality); a range read is
//!   a read of every key it covers, a transaction a swap (or a read back) of each of its
//!   keys. The model is a register holding `Option<String>`: a put sets it, a delete of a
//!   present key clears it (one that deleted nothing read it absent), a linearizable get
//!   returns it, a compare-and-swap succeeds iff the register equals `expected` (then
//!   holds `new`), a refused one read back what it held. Every operation whose revision is
//!   known has its place in etcd's order: along the linearization write revisions strictly
//!   increase and a read sees exactly the writes up to its header revision (`search`).
//!   The final read, when given, is one more linearizable get after everything else.
//! - **The model of revisions** (`revisions`), over every read, serializable ones and the
//!   members' own reads included: one write per revision, one revision per value (a
//!   read's mod revision is its write's), no mod revision above its header's, every read
//!   the state at its header revision (a serializable read may be stale, never
//!   inconsistent), header revisions that follow real time (a write strictly later than
//!   anything that returned before it was called), never backwards for one client on one
//!   member, and no answer that contradicts itself.
//! - **Impossible reads** (any read): a value that no write could have produced, or one
//!   whose every writer was called only after the read returned.
//! - **No acknowledged write is lost**: against the final read, a key's final value must
//!   have been written, and no acknowledged put or successful compare-and-swap may carry a
//!   revision above the final value's mod revision (for an absent key: no acknowledged
//!   write without a later delete). Members that settled at one revision hold the same
//!   keys, and the final read's.
//! - **Watches** (`watch`): etcd's watch guarantees (ordered, unique, atomic, resumable,
//!   reliable: no gap, a compaction reported as such), each event the write of its
//!   revision, and every watch still open at the end confirming delivery up to the newest
//!   acknowledged write.
//! - **Leases** (`lease`): never gone before the TTL of the last keep-alive has run out,
//!   never back once gone, and the key attached gone with the lease.
//! - [`compare_hashes`]: members' `HashKV` at the same revision must agree.
//!
//! # Where it lives
//!
//! - `report`: what a check returns ([`Report`] and its [`Verdict`]).
//! - `effects`: what each operation did to each key, as every check sees it.
//! - `search`: the linearizability search, per key: Wing & Gong's search with Lowe's
//!   memoization, revisions as positions, and the reductions that keep operations of
//!   unknown outcome tractable.
//! - `revisions`: what is known of revisions, and the checks of the model of revisions
//!   ([`check_revisions`] is its real-time part).
//! - `anomalies`: impossible reads, the final state, members' hashes ([`check_reads`],
//!   [`check_final_state`], [`compare_hashes`]).
//! - `watch`, `lease`: the watch sessions and the leases.
//! - `synthetic`: generated linearizable histories for tests and benchmarks
//!   ([`synthetic_history`]).
//!
//! # Budget
//!
//! Every key's search is bounded by [`CheckOptions::max_steps_per_key`] (default
//! [`DEFAULT_MAX_STEPS_PER_KEY`]) and [`MAX_CONFIGS_PER_KEY`] cached configurations (about
//! 1 GB); a key that runs out is reported undecided, never linearizable. Keys are searched
//! in parallel. How long the search takes on soak-sized histories is measured by
//! `cargo bench -p testkit --bench checker` and recorded in `BENCHMARKS.md` ("History
//! checker speed"), the one place those figures live.

mod anomalies;
mod effects;
mod lease;
mod report;
mod revisions;
mod search;
mod synthetic;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::BTreeSet;

use crate::history::{FinalRead, History};

pub use anomalies::{check_final_state, check_reads, compare_hashes};
pub use report::{
    HashMismatch, ImpossibleRead, LeaseAnomaly, LeaseAnomalyKind, LeaseSummary, LostWrite,
    MemberHash, Report, RevisionAnomaly, RevisionAnomalyKind, RevisionRegression, Undecided,
    Verdict, Violation, WatchAnomaly, WatchAnomalyKind, WatchSummary,
};
pub use revisions::check_revisions;
pub use search::KeyVerdict;
pub use synthetic::synthetic_history;

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

/// Runs every check on `history` (and the final read, when given).
pub fn check(history: &History, final_read: Option<&FinalRead>, options: &CheckOptions) -> Report {
    let keys: BTreeSet<String> = history
        .keys()
        .into_iter()
        .chain(final_read.into_iter().flat_map(|f| f.keys.keys().cloned()))
        .collect();
    let revisions = revisions::Revisions::learn(history, &keys, final_read);
    let per_key = search::check_linearizability(history, final_read, &revisions.applied, options);
    let serializable_reads = history
        .operations
        .iter()
        .flat_map(|op| effects::effects(op, &keys))
        .filter(|e| {
            matches!(
                e.effect,
                effects::Effect::Read {
                    linearizable: false,
                    ..
                }
            )
        })
        .count()
        + final_read.map_or(0, |f| f.members.iter().map(|m| m.keys.len()).sum());
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
        revision_anomalies: Vec::new(),
        serializable_reads,
        watch: watch::check_watches(history, &revisions),
        leases: lease::check_leases(history),
        search_steps: 0,
    };
    report.revision_anomalies = revisions.anomalies;
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
