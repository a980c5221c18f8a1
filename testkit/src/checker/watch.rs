//! Watch sessions against etcd's watch guarantees (as etcd's robustness tests check them,
//! `validate/watch.go`): events in revision order, none twice, one revision's events in
//! one response, none before the revision asked for, every write under the prefix
//! delivered from that revision up to what the session confirmed (its last event or
//! progress notification: a compaction must be reported as such, never skipped over in
//! silence), each event the write of its revision, and every session still open when
//! traffic stopped confirming delivery up to the newest acknowledged write.

use std::collections::{BTreeSet, HashSet};

use super::{WatchAnomaly, WatchAnomalyKind, WatchSummary, revisions::Revisions};
use crate::history::{History, OpKind, Outcome, WatchEnd, WatchSession};

/// How many missed writes one anomaly lists.
const LISTED_MISSES: usize = 5;

/// Checks every watch session of `history` against the writes `revisions` knows.
pub(crate) fn check_watches(history: &History, revisions: &Revisions) -> WatchSummary {
    let written: HashSet<(&str, &str)> = history
        .operations
        .iter()
        .filter(|op| !matches!(op.outcome, Outcome::Failed { .. }))
        .flat_map(|op| op.writes())
        .filter_map(|(key, value)| Some((key, value?)))
        .chain(
            history
                .initial
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_deref()?))),
        )
        .collect();
    let deleted_keys: HashSet<&str> = history
        .operations
        .iter()
        .filter(|op| op.kind == OpKind::Delete && !matches!(op.outcome, Outcome::Failed { .. }))
        .map(|op| op.key.as_str())
        .collect();
    let mut summary = WatchSummary {
        sessions: history.watches.len(),
        ..WatchSummary::default()
    };
    for (i, session) in history.watches.iter().enumerate() {
        summary.events += session.events.len();
        if matches!(session.end, WatchEnd::Compacted { .. }) {
            summary.compacted += 1;
        }
        let mut found = Vec::new();
        check_order(session, &mut found);
        check_events(session, revisions, &written, &deleted_keys, &mut found);
        check_delivery(session, revisions, &mut found);
        summary
            .anomalies
            .extend(found.into_iter().map(|(kind, explanation)| WatchAnomaly {
                session: i,
                watcher: session.watcher,
                kind,
                explanation,
            }));
    }
    summary
}

type Found = Vec<(WatchAnomalyKind, String)>;

/// Ordered, unique, atomic, resumable.
fn check_order(session: &WatchSession, found: &mut Found) {
    let mut seen: HashSet<(i64, &str)> = HashSet::new();
    let mut last: Option<(i64, u32)> = None;
    for e in &session.events {
        if session.start_revision > 0 && e.revision < session.start_revision {
            found.push((
                WatchAnomalyKind::BeforeStart,
                format!(
                    "event {}@{} delivered by a watch from revision {}",
                    e.key, e.revision, session.start_revision
                ),
            ));
        }
        if !seen.insert((e.revision, &e.key)) {
            found.push((
                WatchAnomalyKind::OutOfOrder,
                format!("event {}@{} delivered twice", e.key, e.revision),
            ));
        }
        if let Some((r, response)) = last {
            if e.revision < r {
                found.push((
                    WatchAnomalyKind::OutOfOrder,
                    format!(
                        "event {}@{} delivered after an event of revision {r}",
                        e.key, e.revision
                    ),
                ));
            } else if e.revision == r && e.response != response {
                found.push((
                    WatchAnomalyKind::SplitRevision,
                    format!(
                        "revision {r}'s events split over responses {response} and {}",
                        e.response
                    ),
                ));
            }
        }
        last = Some((e.revision, e.response));
    }
}

/// Each event is the write of its revision.
fn check_events(
    session: &WatchSession,
    revisions: &Revisions,
    written: &HashSet<(&str, &str)>,
    deleted_keys: &HashSet<&str>,
    found: &mut Found,
) {
    for e in &session.events {
        match (revisions.write_at(&e.key, e.revision), e.value.as_deref()) {
            // A delete only watches reported: some delete of the key must be its cause.
            (Some((None, None)), None) if !deleted_keys.contains(e.key.as_str()) => found.push((
                WatchAnomalyKind::WrongEvent,
                format!(
                    "event: {} deleted at {}, but nothing ever deleted it",
                    e.key, e.revision
                ),
            )),
            (Some((value, _)), seen) if value == seen => {}
            (Some((value, writer)), seen) => found.push((
                WatchAnomalyKind::WrongEvent,
                format!(
                    "event {}@{} carries {seen:?}, but the write of that revision (#{}) set {value:?}",
                    e.key,
                    e.revision,
                    writer.map_or("?".into(), |w| w.to_string())
                ),
            )),
            (None, Some(value)) if !written.contains(&(e.key.as_str(), value)) => found.push((
                WatchAnomalyKind::WrongEvent,
                format!(
                    "event {}={value:?}@{}: nothing ever wrote that value there",
                    e.key, e.revision
                ),
            )),
            // Written by several operations (no telling which): its revision is not known.
            (None, Some(_)) => {}
            (None, None) if !deleted_keys.contains(e.key.as_str()) => found.push((
                WatchAnomalyKind::WrongEvent,
                format!(
                    "event: {} deleted at {}, but nothing ever deleted it",
                    e.key, e.revision
                ),
            )),
            (None, None) => {}
        }
    }
}

/// Reliable from the revision asked for up to what the session confirmed; drained at the
/// end.
fn check_delivery(session: &WatchSession, revisions: &Revisions, found: &mut Found) {
    if let WatchEnd::Drained { target, reached } = session.end
        && reached < target
    {
        found.push((
            WatchAnomalyKind::Stalled,
            format!(
                "the watch confirmed delivery only up to revision {reached}, not the newest acknowledged write's {target}"
            ),
        ));
    }
    let until = session.covered_until();
    let from = session.start_revision.max(1);
    if until < from {
        return;
    }
    let delivered: BTreeSet<(i64, &str)> = session
        .events
        .iter()
        .map(|e| (e.revision, e.key.as_str()))
        .collect();
    let missed: Vec<(i64, &str)> = revisions
        .writes_under(&session.prefix, from, until)
        .into_iter()
        .filter(|w| !delivered.contains(w))
        .collect();
    if !missed.is_empty() {
        let listed: Vec<String> = missed
            .iter()
            .take(LISTED_MISSES)
            .map(|(r, k)| format!("{k}@{r}"))
            .collect();
        found.push((
            WatchAnomalyKind::Missed,
            format!(
                "a watch from revision {from} ({}) confirmed delivery up to {until} but missed {} write{}: {}{}",
                match &session.end {
                    WatchEnd::Compacted { compact_revision } =>
                        format!("reported compacted at {compact_revision}"),
                    _ => "no compaction reported".into(),
                },
                missed.len(),
                if missed.len() == 1 { "" } else { "s" },
                listed.join(", "),
                if missed.len() > LISTED_MISSES { ", ..." } else { "" }
            ),
        ));
    }
}
