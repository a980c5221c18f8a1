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
//!
//! # Where it lives
//!
//! - `report`: what a check returns ([`Report`] and its [`Verdict`]).
//! - `search`: the linearizability search, per key ([`check_linearizability`],
//!   [`check_key`]): Wing & Gong's search with Lowe's memoization, and the reductions that
//!   keep operations of unknown outcome tractable.
//! - `anomalies`: the other checks ([`check_reads`], [`check_final_state`],
//!   [`check_revisions`], [`compare_hashes`]).
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
mod report;
mod search;
mod synthetic;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use crate::history::{FinalRead, History};

pub use anomalies::{check_final_state, check_reads, check_revisions, compare_hashes};
pub use report::{
    HashMismatch, ImpossibleRead, LostWrite, MemberHash, Report, RevisionRegression, Undecided,
    Verdict, Violation,
};
pub use search::{KeyVerdict, check_key, check_linearizability};
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
