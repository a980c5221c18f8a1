//! How fast the checker judges soak-sized histories (a 10-minute soak: about 100,000
//! operations over 8 keys). Ignored by default (slow in debug builds); run with
//! `cargo test -p testkit --release --test checker_speed -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use testkit::{
    checker::{CheckOptions, Report, Verdict, check, synthetic_history},
    history::{FinalRead, History, OpId, OpKind, OpResult, Outcome},
};

fn timed_check(label: &str, history: &History, final_read: &FinalRead) -> (Report, Duration) {
    let started = Instant::now();
    let report = check(history, Some(final_read), &CheckOptions::default());
    let took = started.elapsed();
    println!(
        "{label}: {} ops ({} unknown) on {} keys: {:?} in {:.2}s, {} steps",
        report.counts.total,
        report.counts.unknown,
        report.keys,
        report.verdict(),
        took.as_secs_f64(),
        report.search_steps
    );
    (report, took)
}

/// Makes a late linearizable get (300 operations before the end) read a value nothing
/// wrote, so the search must rule out everything before it.
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

#[test]
#[ignore = "benchmark: run in release with --ignored"]
fn soak_sized_linearizable_histories_check_within_seconds() {
    for (ops, keys, unknown_per_mille) in [
        (100_000, 8, 2),
        (100_000, 8, 20),
        (100_000, 8, 100),
        (100_000, 1, 20),
    ] {
        let (history, final_read) = synthetic_history(7, ops, keys, unknown_per_mille);
        let label = format!("linearizable, {unknown_per_mille}‰ unknown");
        let (report, took) = timed_check(&label, &history, &final_read);
        assert!(report.is_pass(), "{report}");
        assert!(took < Duration::from_secs(30), "{label} took {took:?}");
    }
}

#[test]
#[ignore = "benchmark: run in release with --ignored"]
fn a_late_violation_in_a_soak_sized_history_is_found_within_seconds() {
    for (ops, keys, unknown_per_mille) in [(100_000, 8, 2), (100_000, 8, 20), (100_000, 8, 100)] {
        let (mut history, final_read) = synthetic_history(11, ops, keys, unknown_per_mille);
        let victim = tamper_late_read(&mut history);
        let label = format!("one late impossible read, {unknown_per_mille}‰ unknown");
        let (report, took) = timed_check(&label, &history, &final_read);
        assert_eq!(report.verdict(), Verdict::Fail, "{report}");
        assert_eq!(report.violations.len(), 1, "{report}");
        assert_eq!(report.violations[0].blocking_op, Some(victim));
        assert!(took < Duration::from_secs(30), "{label} took {took:?}");
    }
}
