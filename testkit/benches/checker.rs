//! How fast the checker judges soak-sized histories (a 10-minute soak records about 100,000
//! operations over 8 keys): each shape once linearizable and once with one impossible read
//! late in it, so the search must rule out everything before it. Prints the table of
//! BENCHMARKS.md ("History checker speed"), where the figures are kept:
//!
//! ```sh
//! cargo bench -p testkit --bench checker
//! ```
//!
//! It measures and asserts nothing about time; it fails only if the checker gives a wrong
//! answer (a linearizable history not passing, the tampered one passing, or, when every
//! key's search was decided, the tampered one not failing at the tampered read; a key whose
//! search ran out of budget is reported undecided).

use std::time::Instant;

use testkit::{
    checker::{CheckOptions, Report, Verdict, check, synthetic_history},
    history::{FinalRead, History, OpId, OpKind, OpResult, Outcome},
};

/// The shapes measured: operations, keys, unknown writes per mille.
const SHAPES: &[(usize, u64, u64)] = &[
    (100_000, 8, 2),
    (100_000, 8, 20),
    (100_000, 8, 100),
    (100_000, 1, 20),
    (100_000, 1, 2),
];

fn timed_check(history: &History, final_read: &FinalRead) -> (Report, f64) {
    let started = Instant::now();
    let report = check(history, Some(final_read), &CheckOptions::default());
    (report, started.elapsed().as_secs_f64())
}

/// Makes a late linearizable get (300 operations before the end) read a value nothing
/// wrote.
fn tamper_late_read(history: &mut History) -> OpId {
    let victim = history
        .operations
        .iter()
        .rev()
        .skip(300)
        .find(|op| op.kind == OpKind::Get { linearizable: true } && op.is_ok())
        .map(|op| op.id)
        .expect("a get");
    if let Some(op) = history.get_mut(victim)
        && let Outcome::Ok(OpResult::Read { value, .. }) = &mut op.outcome
    {
        *value = Some("never-written".into());
    }
    victim
}

/// One cell of the table: the time, or why there is none (a key's search ran out of
/// budget: the history cannot pass, but the search did not decide where it breaks).
fn cell(report: &Report, seconds: f64) -> String {
    if report.undecided.is_empty() {
        format!("{seconds:.2} s")
    } else {
        format!("undecided (search budget, {seconds:.1} s)")
    }
}

fn main() {
    println!("| history | linearizable | one late violation |");
    println!("|---|---|---|");
    for &(ops, keys, unknown_per_mille) in SHAPES {
        let (history, final_read) = synthetic_history(7, ops, keys, unknown_per_mille);
        let (report, linearizable) = timed_check(&history, &final_read);
        assert_ne!(report.verdict(), Verdict::Fail, "{report}");

        let (mut tampered, final_read) = synthetic_history(11, ops, keys, unknown_per_mille);
        let victim = tamper_late_read(&mut tampered);
        let (violation, late) = timed_check(&tampered, &final_read);
        assert_ne!(violation.verdict(), Verdict::Pass, "{violation}");
        if violation.undecided.is_empty() {
            assert_eq!(violation.verdict(), Verdict::Fail, "{violation}");
            assert_eq!(violation.violations.len(), 1, "{violation}");
            assert_eq!(violation.violations[0].blocking_op, Some(victim));
        }
        println!(
            "| {ops} ops / {keys} key{}, {}% unknown writes | {} | {} |",
            if keys == 1 { "" } else { "s" },
            unknown_per_mille as f64 / 10.0,
            cell(&report, linearizable),
            cell(&violation, late),
        );
    }
}
