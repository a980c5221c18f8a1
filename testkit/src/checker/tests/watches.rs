//! Watch sessions that break etcd's watch guarantees, and ones that keep them.

use super::*;
use crate::history::{WatchEnd, WatchEvent, WatchSession};

/// Writes on keys `w/0` and `w/1`: a@2, b@3 (w/0), c@4 (w/1), w/0 deleted at 5.
fn writes() -> Vec<Operation> {
    let on = |mut o: Operation, key: &str| {
        o.key = key.into();
        o
    };
    vec![
        on(put(0, "a", 0, 10, 2), "w/0"),
        on(put(1, "b", 20, 30, 3), "w/0"),
        on(put(2, "c", 40, 50, 4), "w/1"),
        on(
            op(
                3,
                OpKind::Delete,
                60,
                70,
                Outcome::Ok(OpResult::Written {
                    revision: 5,
                    deleted: Some(1),
                }),
            ),
            "w/0",
        ),
    ]
}

/// Every write above as its event, one response each.
fn all_events() -> Vec<(&'static str, i64, Option<&'static str>)> {
    vec![
        ("w/0", 2, Some("a")),
        ("w/0", 3, Some("b")),
        ("w/1", 4, Some("c")),
        ("w/0", 5, None),
    ]
}

fn session(start: i64, events: &[(&str, i64, Option<&str>)], end: WatchEnd) -> WatchSession {
    WatchSession {
        watcher: 100,
        prefix: "w/".into(),
        start_revision: start,
        endpoint: "e".into(),
        opened: 0,
        closed: 100,
        events: events
            .iter()
            .enumerate()
            .map(|(i, (key, revision, value))| WatchEvent {
                key: key.to_string(),
                revision: *revision,
                value: value.map(str::to_string),
                response: i as u32,
            })
            .collect(),
        progress: Vec::new(),
        end,
    }
}

fn drained() -> WatchEnd {
    WatchEnd::Drained {
        target: 5,
        reached: 5,
    }
}

fn with(sessions: Vec<WatchSession>) -> Report {
    let h = History {
        operations: writes(),
        watches: sessions,
        ..History::default()
    };
    run(&h, None)
}

fn kinds(report: &Report) -> Vec<WatchAnomalyKind> {
    report.watch.anomalies.iter().map(|a| a.kind).collect()
}

#[test]
fn complete_sessions_pass_reopened_and_compacted_ones_too() {
    let report = with(vec![
        session(2, &all_events()[..2], WatchEnd::Reopened),
        // Reopened from a revision before the last event: delivered again.
        session(3, &all_events()[1..], drained()),
        // From a compacted revision: reported as such, nothing delivered.
        session(
            1,
            &[],
            WatchEnd::Compacted {
                compact_revision: 4,
            },
        ),
        session(4, &all_events()[2..], drained()),
    ]);
    assert!(report.is_pass(), "{report}");
    assert_eq!(report.watch.events, 7);
    assert_eq!(report.watch.compacted, 1);
}

#[test]
fn a_gap_is_caught() {
    let mut events = all_events();
    events.remove(1);
    let report = with(vec![session(2, &events, drained())]);
    assert_eq!(kinds(&report), vec![WatchAnomalyKind::Missed], "{report}");
}

#[test]
fn a_compaction_skipped_in_silence_is_caught() {
    // Asked from revision 2, got events from 4 on, and no compaction was reported.
    let report = with(vec![session(2, &all_events()[2..], drained())]);
    assert_eq!(kinds(&report), vec![WatchAnomalyKind::Missed], "{report}");
}

#[test]
fn a_repeated_or_reordered_event_is_caught() {
    let mut twice = all_events();
    twice.insert(2, ("w/0", 3, Some("b")));
    let report = with(vec![session(2, &twice, drained())]);
    assert!(
        kinds(&report).contains(&WatchAnomalyKind::OutOfOrder),
        "{report}"
    );
    let mut swapped = all_events();
    swapped.swap(0, 1);
    let report = with(vec![session(2, &swapped, drained())]);
    assert!(
        kinds(&report).contains(&WatchAnomalyKind::OutOfOrder),
        "{report}"
    );
}

#[test]
fn an_event_before_the_revision_asked_for_is_caught() {
    let report = with(vec![session(3, &all_events(), drained())]);
    assert!(
        kinds(&report).contains(&WatchAnomalyKind::BeforeStart),
        "{report}"
    );
}

#[test]
fn an_event_that_is_not_its_revisions_write_is_caught() {
    // b reported at revision 4 (c's): a value under another revision than its write's.
    let mut wrong = all_events();
    wrong[1] = ("w/0", 4, Some("b"));
    let report = with(vec![session(2, &wrong, drained())]);
    assert_eq!(report.verdict(), Verdict::Fail, "{report}");
    assert!(
        report
            .revision_anomalies
            .iter()
            .any(|a| a.kind == RevisionAnomalyKind::WriterMismatch),
        "{report}"
    );
    // A value nothing wrote.
    let mut made_up = all_events();
    made_up[2] = ("w/1", 4, Some("zzz"));
    let report = with(vec![session(2, &made_up, drained())]);
    assert!(
        kinds(&report).contains(&WatchAnomalyKind::WrongEvent),
        "{report}"
    );
    // A delete of a key nothing deleted.
    let mut deleted = all_events();
    deleted.push(("w/1", 6, None));
    let report = with(vec![session(2, &deleted, drained())]);
    assert!(
        kinds(&report).contains(&WatchAnomalyKind::WrongEvent),
        "{report}"
    );
}

#[test]
fn a_revision_split_over_two_responses_is_caught() {
    // A transaction's two events at revision 4, delivered in two responses.
    let mut s = session(2, &all_events(), drained());
    s.events.insert(
        2,
        WatchEvent {
            key: "w/0".into(),
            revision: 4,
            value: Some("d".into()),
            response: 1,
        },
    );
    let report = with(vec![s]);
    assert!(
        kinds(&report).contains(&WatchAnomalyKind::SplitRevision),
        "{report}"
    );
}

#[test]
fn a_watch_gone_silent_is_caught() {
    let report = with(vec![session(
        2,
        &all_events()[..2],
        WatchEnd::Drained {
            target: 5,
            reached: 3,
        },
    )]);
    assert_eq!(kinds(&report), vec![WatchAnomalyKind::Stalled], "{report}");
}
