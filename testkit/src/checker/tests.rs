//! The checker's own tests: small hand-made histories, each anomaly alone, and generated
//! histories with one tampered read. The model of revisions' broken histories are in
//! `tests/revisions.rs`, watches and leases in `tests/watches.rs` and `tests/leases.rs`,
//! and the cross-check against an independent brute-force checker in `tests/brute.rs`.

mod brute;
mod leases;
mod revisions;
mod watches;

use super::*;
use crate::{
    history::{FinalRead, History, KeyValue, OpId, OpKind, OpResult, Operation, Outcome},
    rng::SeededRng,
};

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
        member: None,
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
        Outcome::Ok(OpResult::Written {
            revision,
            deleted: None,
        }),
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
        current: Default::default(),
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
    let value = value.map(|(v, r)| KeyValue {
        value: v.into(),
        mod_revision: r,
    });
    FinalRead {
        revision: 100,
        keys: [(K.to_string(), value)].into(),
        ..FinalRead::default()
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
        Outcome::Ok(OpResult::Written {
            revision: 7,
            deleted: None,
        }),
    ));
    let report = run(&deleted, Some(&final_read(None)));
    assert!(report.is_pass(), "{report}");
}

#[test]
fn accepts_a_get_overlapping_a_put_returning_either_value() {
    // The get's header revision says which: before b's revision, or at it.
    for (seen, at) in [("a", 2), ("b", 3)] {
        let h = history(vec![
            put(0, "a", 0, 10, 2),
            put(1, "b", 20, 40, 3),
            get(2, Some(seen), 25, 35, at),
            get(3, Some("b"), 50, 60, 3),
        ]);
        let report = run(&h, Some(&final_read(Some(("b", 3)))));
        assert!(report.is_pass(), "reading {seen}: {report}");
    }
    // Reading a at revision 3, the revision of b's write, is not what etcd does.
    let h = history(vec![
        put(0, "a", 0, 10, 2),
        put(1, "b", 20, 40, 3),
        get(2, Some("a"), 25, 35, 3),
    ]);
    assert_eq!(run(&h, None).violations.len(), 1);
    // Two concurrent puts may land in either order: their revisions tell which.
    for (last, a_at, b_at) in [("a", 3, 2), ("b", 2, 3)] {
        let h = history(vec![
            put(0, "a", 0, 30, a_at),
            put(1, "b", 5, 25, b_at),
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

/// The soak's shape (a few thousand operations per key, some of unknown outcome) is
/// decided: linearizable, nothing undecided. How fast is measured by the checker benchmark
/// (`cargo bench -p testkit --bench checker`, figures in BENCHMARKS.md), not here.
#[test]
fn a_few_thousand_operations_per_key_are_decided() {
    let (h, f) = synthetic_history(99, 12_000, 4, 30);
    let report = run(&h, Some(&f));
    assert!(report.is_pass(), "{report}");
    assert!(report.undecided.is_empty(), "{report}");
    assert_eq!(report.linearizable_keys.len(), 4, "{report}");
}
