//! The broken histories the model of revisions must reject, each of which passed the
//! checker before revisions played a part, and correct ones it must still accept.

use super::*;
use crate::history::{ClientId, TxnWrite};

/// A linearizable get that returned `value` with its mod revision.
fn read(id: OpId, value: Option<(&str, i64)>, call: u64, ret: u64, header: i64) -> Operation {
    let result = OpResult::Read {
        value: value.map(|(v, _)| v.into()),
        mod_revision: value.map(|(_, m)| m),
        revision: header,
    };
    op(
        id,
        OpKind::Get { linearizable: true },
        call,
        ret,
        Outcome::Ok(result),
    )
}

/// A delete that deleted `deleted` keys.
fn delete(id: OpId, deleted: i64, call: u64, ret: u64, header: i64) -> Operation {
    let result = OpResult::Written {
        revision: header,
        deleted: Some(deleted),
    };
    op(id, OpKind::Delete, call, ret, Outcome::Ok(result))
}

/// `o` issued by `client` and answered by `member`.
fn by(mut o: Operation, client: ClientId, member: u64) -> Operation {
    o.client = client;
    o.member = Some(member);
    o
}

/// `o` on `key`.
fn on(mut o: Operation, key: &str) -> Operation {
    o.key = key.into();
    o
}

fn kinds(report: &Report) -> Vec<RevisionAnomalyKind> {
    let mut kinds: Vec<RevisionAnomalyKind> =
        report.revision_anomalies.iter().map(|a| a.kind).collect();
    kinds.dedup();
    kinds
}

/// Every value's linearizability alone passes: the search without revisions would accept
/// the history.
fn values_alone_pass(h: &History) {
    let mut stripped = h.clone();
    for op in &mut stripped.operations {
        op.member = None;
        match &mut op.outcome {
            Outcome::Ok(OpResult::Read {
                revision,
                mod_revision,
                ..
            }) => {
                *revision = 0;
                *mod_revision = None;
            }
            Outcome::Ok(OpResult::Written { revision, .. })
            | Outcome::Ok(OpResult::Swapped { revision, .. }) => *revision = 0,
            _ => {}
        }
    }
    let report = run(&stripped, None);
    assert!(
        report.violations.is_empty(),
        "the values alone already fail: {report}"
    );
}

#[test]
fn a_lost_write_visible_only_as_a_reused_revision() {
    // x=a acknowledged at revision 5; the cluster rolls back behind it, and y=b is then
    // acknowledged at revision 5 again. Every read agrees with some order of the values.
    let h = history(vec![
        on(put(0, "a", 0, 10, 5), "x"),
        on(read(1, Some(("a", 5)), 12, 14, 5), "x"),
        on(put(2, "b", 20, 30, 5), "y"),
        on(read(3, Some(("b", 5)), 32, 34, 5), "y"),
    ]);
    values_alone_pass(&h);
    let report = run(&h, None);
    assert_eq!(report.verdict(), Verdict::Fail, "{report}");
    assert!(
        kinds(&report).contains(&RevisionAnomalyKind::SharedRevision),
        "{report}"
    );
}

#[test]
fn two_sequential_acknowledged_writes_with_one_revision() {
    let h = history(vec![put(0, "a", 0, 10, 5), put(1, "b", 20, 30, 5)]);
    values_alone_pass(&h);
    let report = run(&h, Some(&final_read(Some(("b", 5)))));
    assert_eq!(report.verdict(), Verdict::Fail, "{report}");
    assert!(kinds(&report).contains(&RevisionAnomalyKind::SharedRevision));
    // Equal revisions in real-time order are a regression too (a write is strictly later).
    assert_eq!(report.revision_regression_count, 1, "{report}");
}

#[test]
fn write_revisions_going_backwards_in_real_time() {
    // Two keys: y's write is called after x's returned, yet has the lower revision.
    let h = history(vec![
        on(put(0, "a", 0, 10, 5), "x"),
        on(put(1, "b", 20, 30, 4), "y"),
    ]);
    values_alone_pass(&h);
    let report = run(&h, None);
    assert_eq!(report.revision_regression_count, 1, "{report}");
    // A write called after a read at revision 5 returned cannot be revision 5 itself.
    let h = history(vec![
        on(read(0, None, 0, 10, 5), "x"),
        on(put(1, "b", 20, 30, 5), "y"),
    ]);
    let report = run(&h, None);
    assert_eq!(report.revision_regression_count, 1, "{report}");
    assert_eq!(report.verdict(), Verdict::Fail);
}

#[test]
fn a_read_whose_mod_revision_exceeds_its_header_revision() {
    let h = history(vec![
        put_unknown(0, "a", 0, 10),
        read(1, Some(("a", 7)), 20, 30, 6),
    ]);
    values_alone_pass(&h);
    let report = run(&h, None);
    assert_eq!(report.verdict(), Verdict::Fail, "{report}");
    assert!(kinds(&report).contains(&RevisionAnomalyKind::ModAboveHeader));
}

#[test]
fn a_read_whose_mod_revision_differs_from_its_writer() {
    let h = history(vec![
        put(0, "a", 0, 10, 5),
        read(1, Some(("a", 4)), 20, 30, 6),
    ]);
    values_alone_pass(&h);
    let report = run(&h, None);
    assert_eq!(report.verdict(), Verdict::Fail, "{report}");
    assert!(
        kinds(&report).contains(&RevisionAnomalyKind::WriterMismatch),
        "{report}"
    );
    // Two reads of one unknown write under two revisions: it has one.
    let h = history(vec![
        put_unknown(0, "a", 0, 10),
        read(1, Some(("a", 4)), 20, 30, 6),
        read(2, Some(("a", 5)), 40, 50, 6),
    ]);
    let report = run(&h, None);
    assert!(kinds(&report).contains(&RevisionAnomalyKind::WriterMismatch));
}

#[test]
fn a_read_at_revision_r_missing_a_write_committed_at_r() {
    // The read overlaps b's put, so the values alone allow it to come first; but its
    // header says revision 6, b's.
    let h = history(vec![
        put(0, "a", 0, 10, 5),
        put(1, "b", 20, 40, 6),
        read(2, Some(("a", 5)), 25, 35, 6),
    ]);
    values_alone_pass(&h);
    let report = run(&h, None);
    assert_eq!(report.verdict(), Verdict::Fail, "{report}");
    assert!(kinds(&report).contains(&RevisionAnomalyKind::StaleAtRevision));
    assert_eq!(report.violations.len(), 1, "the search agrees: {report}");
    // The same read as a serializable one: stale is allowed, inconsistent is not.
    let mut h = h;
    h.operations[2] = serializable(h.operations[2].clone());
    let report = run(&h, None);
    assert!(kinds(&report).contains(&RevisionAnomalyKind::StaleAtRevision));
    // At revision 5 it is just stale, and passes.
    if let Outcome::Ok(OpResult::Read { revision, .. }) = &mut h.operations[2].outcome {
        *revision = 5;
    }
    assert!(run(&h, None).is_pass(), "{}", run(&h, None));
}

#[test]
fn an_acknowledged_delete_lost_behind_a_concurrent_put() {
    // The delete (revision 4) and the put of b (revision 3) overlap: by value the delete
    // may come first and b remain; by revision the delete came last and b is gone.
    let h = history(vec![
        put(0, "a", 0, 5, 2),
        put(1, "b", 10, 40, 3),
        delete(2, 1, 15, 35, 4),
    ]);
    values_alone_pass(&h);
    let report = run(&h, Some(&final_read(Some(("b", 3)))));
    assert_eq!(report.verdict(), Verdict::Fail, "{report}");
    assert!(kinds(&report).contains(&RevisionAnomalyKind::StaleAtRevision));
    assert_eq!(report.violations.len(), 1, "{report}");
    assert_eq!(report.violations[0].blocking_op, None, "the final read");
    // Absent at the end: what the revisions say.
    assert!(run(&h, Some(&final_read(None))).is_pass());
}

#[test]
fn opposite_orders_seen_through_serializable_reads() {
    // a (revision 2) and b (revision 3) are written concurrently; client 10 sees a then b,
    // client 11 (on another member) sees b and then a.
    let base = vec![
        put(0, "a", 0, 100, 2),
        put(1, "b", 0, 100, 3),
        by(serializable(read(2, Some(("a", 2)), 10, 20, 2)), 10, 1),
        by(serializable(read(3, Some(("b", 3)), 30, 40, 3)), 10, 1),
        by(serializable(read(4, Some(("b", 3)), 10, 20, 3)), 11, 2),
    ];
    values_alone_pass(&history(base.clone()));
    // The member answers a at revision 3: a is not what revision 3 holds.
    let mut h = base.clone();
    h.push(by(serializable(read(5, Some(("a", 2)), 30, 40, 3)), 11, 2));
    let report = run(&history(h), None);
    assert!(
        kinds(&report).contains(&RevisionAnomalyKind::StaleAtRevision),
        "{report}"
    );
    // It answers a at revision 2: the client went back from 3 to 2 on one member.
    let mut h = base.clone();
    h.push(by(serializable(read(5, Some(("a", 2)), 30, 40, 2)), 11, 2));
    let report = run(&history(h), None);
    assert_eq!(
        kinds(&report),
        vec![RevisionAnomalyKind::ClientRegression],
        "{report}"
    );
    // The writes of unknown outcome: their revisions are learned from the reads.
    let mut h = base;
    h[0] = put_unknown(0, "a", 0, 100);
    h[1] = put_unknown(1, "b", 0, 100);
    h.push(by(serializable(read(5, Some(("a", 2)), 30, 40, 4)), 11, 2));
    let report = run(&history(h), None);
    assert!(kinds(&report).contains(&RevisionAnomalyKind::StaleAtRevision));
}

#[test]
fn a_linearizable_read_of_b_then_a_serializable_read_of_the_older_a() {
    let reads = |member: u64| {
        history(vec![
            put(0, "a", 0, 10, 2),
            put(1, "b", 20, 30, 3),
            by(read(2, Some(("b", 3)), 40, 50, 3), 7, 1),
            by(serializable(read(3, Some(("a", 2)), 60, 70, 2)), 7, member),
        ])
    };
    values_alone_pass(&reads(1));
    let report = run(&reads(1), None);
    assert_eq!(
        kinds(&report),
        vec![RevisionAnomalyKind::ClientRegression],
        "{report}"
    );
    // From another, lagging member it is a stale read etcd allows.
    assert!(run(&reads(2), None).is_pass(), "{}", run(&reads(2), None));
}

#[test]
fn a_refused_compare_that_read_back_what_it_compared_with() {
    let mut refused = cas(1, Some("a"), "c", (20, 30), false, 2);
    if let Outcome::Ok(OpResult::Swapped { current, .. }) = &mut refused.outcome {
        current.insert(
            K.into(),
            Some(KeyValue {
                value: "a".into(),
                mod_revision: 2,
            }),
        );
    }
    let h = history(vec![put(0, "a", 0, 10, 2), refused]);
    let report = run(&h, None);
    assert_eq!(
        kinds(&report),
        vec![RevisionAnomalyKind::ContradictoryAnswer],
        "{report}"
    );
}

#[test]
fn a_delete_count_that_contradicts_the_key() {
    // Deleted nothing while the key held a.
    let h = history(vec![put(0, "a", 0, 10, 2), delete(1, 0, 20, 30, 2)]);
    let report = run(&h, None);
    assert!(kinds(&report).contains(&RevisionAnomalyKind::StaleAtRevision));
    assert_eq!(report.violations.len(), 1, "{report}");
    // Deleted a key that was absent.
    let h = history(vec![delete(0, 1, 0, 10, 2), read(1, None, 20, 30, 2)]);
    let report = run(&h, None);
    assert_eq!(report.violations.len(), 1, "{report}");
    // The truthful counts pass.
    let h = history(vec![
        put(0, "a", 0, 10, 2),
        delete(1, 1, 20, 30, 3),
        delete(2, 0, 40, 50, 3),
        read(3, None, 60, 70, 3),
    ]);
    assert!(run(&h, Some(&final_read(None))).is_pass());
}

#[test]
fn a_transaction_seen_half_applied() {
    // One transaction writes x and y at revision 4; a range read at revision 4 sees the
    // new x and the old y.
    let writes = vec![
        TxnWrite {
            key: "x".into(),
            expected: None,
            new: "x1".into(),
        },
        TxnWrite {
            key: "y".into(),
            expected: Some("y0".into()),
            new: "y1".into(),
        },
    ];
    let txn = op(
        1,
        OpKind::Txn { writes },
        10,
        20,
        Outcome::Ok(OpResult::Swapped {
            succeeded: true,
            revision: 4,
            current: Default::default(),
        }),
    );
    let range = |y: (&str, i64)| {
        let kvs = [
            (
                "x".to_string(),
                KeyValue {
                    value: "x1".into(),
                    mod_revision: 4,
                },
            ),
            (
                "y".to_string(),
                KeyValue {
                    value: y.0.into(),
                    mod_revision: y.1,
                },
            ),
        ];
        op(
            2,
            OpKind::Range { linearizable: true },
            30,
            40,
            Outcome::Ok(OpResult::Ranged {
                revision: 4,
                kvs: kvs.into(),
            }),
        )
    };
    let mut ok = history(vec![
        on(put(0, "y0", 0, 5, 3), "y"),
        txn.clone(),
        range(("y1", 4)),
    ]);
    for o in &mut ok.operations {
        if matches!(o.kind, OpKind::Range { .. }) {
            o.key = String::new();
        }
    }
    assert!(run(&ok, None).is_pass(), "{}", run(&ok, None));
    let mut torn = history(vec![on(put(0, "y0", 0, 5, 3), "y"), txn, range(("y0", 3))]);
    torn.operations[2].key = String::new();
    let report = run(&torn, None);
    assert_eq!(report.verdict(), Verdict::Fail, "{report}");
    assert!(kinds(&report).contains(&RevisionAnomalyKind::StaleAtRevision));
}

#[test]
fn correct_histories_with_unknown_outcomes_pass() {
    // An unknown put seen by a read (its revision learned), an unknown delete that may
    // explain an absence, serializable reads behind, a member lagging, a refused swap
    // reading back, and the final read and the members' reads.
    let mut refused = cas(5, Some("zz"), "c", (60, 70), false, 3);
    if let Outcome::Ok(OpResult::Swapped { current, .. }) = &mut refused.outcome {
        current.insert(
            K.into(),
            Some(KeyValue {
                value: "b".into(),
                mod_revision: 3,
            }),
        );
    }
    let h = history(vec![
        by(put(0, "a", 0, 10, 2), 1, 1),
        by(put_unknown(1, "b", 20, 30), 1, 1),
        by(read(2, Some(("b", 3)), 40, 50, 3), 2, 2),
        by(serializable(read(3, Some(("a", 2)), 40, 50, 2)), 3, 3),
        by(serializable(read(4, Some(("b", 3)), 52, 58, 3)), 3, 3),
        by(refused, 2, 2),
        by(
            op(
                6,
                OpKind::Delete,
                80,
                90,
                Outcome::Unknown {
                    reason: "timeout".into(),
                },
            ),
            1,
            1,
        ),
        by(read(7, None, 100, 110, 4), 2, 2),
    ]);
    let mut fin = final_read(None);
    fin.revision = 4;
    for member in 1..=3 {
        fin.members.push(crate::history::MemberRead {
            endpoint: format!("m{member}"),
            member_id: member,
            revision: 4,
            keys: [(K.to_string(), None)].into(),
        });
    }
    let report = run(&h, Some(&fin));
    assert!(report.is_pass(), "{report}");
    assert_eq!(report.serializable_reads, 5, "{report}");
    // A member holding something else at the same revision is caught.
    let mut split = fin.clone();
    split.members[1].keys.insert(
        K.into(),
        Some(KeyValue {
            value: "b".into(),
            mod_revision: 3,
        }),
    );
    let report = run(&h, Some(&split));
    assert!(kinds(&report).contains(&RevisionAnomalyKind::MembersDisagree));
}
