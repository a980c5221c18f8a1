//! The model of revisions, as etcd's robustness tests keep it: every write takes effect at
//! one revision of its own, in an order that real time never contradicts, and every read
//! answers with the state at its header revision.
//!
//! What is known of revisions is gathered first ([`Revisions::learn`]): an acknowledged
//! write's revision is its header's; a write of unknown outcome takes the mod revision
//! under which a read, a watch or the final read saw its (unique) value. Then:
//! - **one write per revision**: two operations at one revision are a rollback or a split
//!   brain (a delete a watch reported counts as a write of its revision);
//! - **a value has one revision**: every read of a value reports the mod revision of the
//!   write that produced it;
//! - **reads at their revision**: a read at header revision `R` (linearizable, serializable,
//!   a range, a transaction's read back, the final and the per-member reads) returns what
//!   the key held at `R`: its mod revision is at most `R` and no known write of the key
//!   falls after it up to `R`; an absence at `R` follows a delete. A serializable read may
//!   be stale, never inconsistent;
//! - **revisions follow real time** ([`check_revisions`]): an operation called after
//!   another returned is not earlier in the order of revisions, and a write is strictly
//!   later;
//! - **one client, one member, forward only**: the header revisions one client gets from
//!   one member never go backwards (its serializable reads included);
//! - **answers that contradict themselves**: a transaction refused although every key it
//!   read back held the value compared with.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Bound::{Excluded, Included},
};

use super::{
    RevisionAnomaly, RevisionAnomalyKind, RevisionRegression,
    effects::{Effect, KeyEffect, effects, position},
};
use crate::history::{
    ClientId, FinalRead, History, OpId, OpKind, OpResult, Operation, Outcome, WatchSession,
};

/// Who observed a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Observer {
    Op(OpId),
    Final,
    Member(usize),
    Watch(usize),
}

/// One observation of one key.
#[derive(Clone, Copy, Debug)]
struct Observation<'a> {
    key: &'a str,
    value: Option<&'a str>,
    mod_revision: Option<i64>,
    /// The header revision it was read at (`None`: a watch event, no read).
    header: Option<i64>,
    /// When its answer came (for reads of the history; after everything for the others).
    ret: u64,
    by: Observer,
}

/// A write the timeline of a key holds: the value set (`None`: deleted), and the
/// operation (`None`: a delete only a watch reported).
type TimelineEntry<'a> = (Option<&'a str>, Option<OpId>);

/// What is known of the revisions of a history.
pub(crate) struct Revisions<'a> {
    /// The revision each write took effect at, when known.
    pub(crate) applied: HashMap<OpId, i64>,
    /// Per key, the writes known, by revision.
    timeline: HashMap<&'a str, BTreeMap<i64, TimelineEntry<'a>>>,
    /// What contradicts the model.
    pub(crate) anomalies: Vec<RevisionAnomaly>,
}

/// The revision an acknowledged write took effect at: its header's (none when not
/// recorded: etcd's revisions start at 1).
pub(crate) fn acknowledged_revision(op: &Operation) -> Option<i64> {
    let Outcome::Ok(result) = &op.outcome else {
        return None;
    };
    let revision = match (&op.kind, result) {
        (OpKind::Delete, OpResult::Written { deleted, .. }) => {
            deleted.filter(|n| *n > 0).map(|_| result.revision())
        }
        _ if op.is_acknowledged_write() => Some(result.revision()),
        _ => None,
    };
    revision.filter(|r| *r > 0)
}

fn anomaly(
    kind: RevisionAnomalyKind,
    key: Option<&str>,
    ops: Vec<OpId>,
    explanation: String,
) -> RevisionAnomaly {
    RevisionAnomaly {
        kind,
        key: key.map(str::to_string),
        ops,
        explanation,
    }
}

impl<'a> Revisions<'a> {
    /// Gathers what is known of revisions, and checks it.
    pub(crate) fn learn(
        history: &'a History,
        keys: &'a BTreeSet<String>,
        final_read: Option<&'a FinalRead>,
    ) -> Self {
        let by_id: HashMap<OpId, &Operation> =
            history.operations.iter().map(|op| (op.id, op)).collect();
        let describe = |id: OpId| by_id.get(&id).map_or(format!("#{id}"), |op| op.describe());
        let mut anomalies = Vec::new();

        // Who may have written each value of each key.
        let mut writers: HashMap<(&str, &str), Vec<OpId>> = HashMap::new();
        for op in &history.operations {
            if matches!(op.outcome, Outcome::Failed { .. }) {
                continue;
            }
            for (key, value) in op.writes() {
                if let Some(value) = value {
                    writers.entry((key, value)).or_default().push(op.id);
                }
            }
        }
        let initial = |key: &str, value: &str| {
            history.initial.get(key).and_then(Option::as_deref) == Some(value)
        };

        let observations = observations(history, keys, final_read);
        let mut applied: HashMap<OpId, i64> = history
            .operations
            .iter()
            .filter_map(|op| Some((op.id, acknowledged_revision(op)?)))
            .collect();
        // Unknown writes take the revision their value was seen under.
        let mut learned_from: HashMap<OpId, Observer> = HashMap::new();
        for o in &observations {
            let (Some(value), Some(m)) = (o.value, o.mod_revision) else {
                continue;
            };
            let Some([writer]) = writers.get(&(o.key, value)).map(Vec::as_slice) else {
                continue;
            };
            if initial(o.key, value) {
                continue;
            }
            match applied.get(writer) {
                Some(&r) if r != m => {
                    let how = match learned_from.get(writer) {
                        Some(first) => {
                            format!("was seen at revision {r} by {}", who(*first, &describe))
                        }
                        None => format!("was acknowledged at revision {r}"),
                    };
                    anomalies.push(anomaly(
                        RevisionAnomalyKind::WriterMismatch,
                        Some(o.key),
                        observer_ops(o.by, *writer),
                        format!(
                            "{} saw {}={value:?} at mod revision {m}, but its write {how}: {}",
                            who(o.by, &describe),
                            o.key,
                            describe(*writer)
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    applied.insert(*writer, m);
                    learned_from.insert(*writer, o.by);
                }
            }
        }

        // One write per revision.
        let mut at: BTreeMap<i64, Vec<OpId>> = BTreeMap::new();
        for (id, r) in &applied {
            at.entry(*r).or_default().push(*id);
        }
        for (r, ids) in &mut at {
            ids.sort_unstable();
            if ids.len() > 1 {
                anomalies.push(anomaly(
                    RevisionAnomalyKind::SharedRevision,
                    None,
                    ids.clone(),
                    format!(
                        "{} writes took effect at revision {r}: {}",
                        ids.len(),
                        ids.iter()
                            .map(|id| describe(*id))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                ));
            }
        }
        let mut timeline: HashMap<&str, BTreeMap<i64, TimelineEntry<'a>>> = HashMap::new();
        for op in &history.operations {
            if let Some(r) = applied.get(&op.id) {
                for (key, value) in op.writes() {
                    timeline
                        .entry(key)
                        .or_default()
                        .insert(*r, (value, Some(op.id)));
                }
            }
        }
        // Deletes a watch reported are writes of their revision too.
        let mut watched_deletes: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
        for session in &history.watches {
            for e in session.events.iter().filter(|e| e.value.is_none()) {
                watched_deletes
                    .entry(e.revision)
                    .or_default()
                    .insert(&e.key);
            }
        }
        for (r, deleted) in &watched_deletes {
            let writer = at.get(r).and_then(|ids| ids.first()).copied();
            for key in deleted {
                let explained = writer.is_some_and(|id| {
                    by_id
                        .get(&id)
                        .is_some_and(|op| op.writes().contains(&(*key, None)))
                });
                if let Some(id) = writer.filter(|_| !explained) {
                    anomalies.push(anomaly(
                        RevisionAnomalyKind::SharedRevision,
                        Some(key),
                        vec![id],
                        format!(
                            "a watch reported {key} deleted at revision {r}, the revision of {}",
                            describe(id)
                        ),
                    ));
                } else if writer.is_none() {
                    timeline.entry(key).or_default().insert(*r, (None, None));
                }
            }
            if writer.is_none() && deleted.len() > 1 {
                anomalies.push(anomaly(
                    RevisionAnomalyKind::SharedRevision,
                    None,
                    Vec::new(),
                    format!(
                        "watches reported deletes of {deleted:?} at one revision {r}, which no one operation made"
                    ),
                ));
            }
        }

        let mut revisions = Self {
            applied,
            timeline,
            anomalies,
        };
        revisions.check_reads_at_revision(history, keys, &observations, &describe);
        revisions.check_clients(history);
        revisions.check_answers(history, keys);
        if let Some(final_read) = final_read {
            revisions.check_members_agree(final_read);
        }
        revisions
    }

    /// The write known at `revision` on `key`: the value set (`None`: deleted), and its
    /// operation (`None`: a delete only a watch reported).
    pub(crate) fn write_at(
        &self,
        key: &str,
        revision: i64,
    ) -> Option<(Option<&'a str>, Option<OpId>)> {
        self.timeline.get(key)?.get(&revision).copied()
    }

    /// The writes known on keys under `prefix` with revisions in `from..=until`.
    pub(crate) fn writes_under(&self, prefix: &str, from: i64, until: i64) -> Vec<(i64, &'a str)> {
        let mut writes: Vec<(i64, &str)> = self
            .timeline
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter(|_| from <= until)
            .flat_map(|(key, t)| t.range(from..=until).map(|(r, _)| (*r, *key)))
            .collect();
        writes.sort_unstable();
        writes
    }

    /// Every read returns what its key held at its header revision.
    fn check_reads_at_revision(
        &mut self,
        history: &History,
        keys: &BTreeSet<String>,
        observations: &[Observation<'a>],
        describe: &dyn Fn(OpId) -> String,
    ) {
        // Deletes whose revision is unknown, per key, by call: one of them may explain an
        // absence.
        let mut unplaced_deletes: HashMap<&str, Vec<u64>> = HashMap::new();
        for op in &history.operations {
            for e in effects(op, keys) {
                if matches!(e.effect, Effect::Delete { existed: None })
                    && !self.applied.contains_key(&op.id)
                {
                    unplaced_deletes.entry(e.key).or_default().push(op.call);
                }
            }
        }
        let empty = BTreeMap::new();
        for o in observations {
            let Some(header) = o.header else { continue };
            let timeline = self.timeline.get(o.key).unwrap_or(&empty);
            let reader = who(o.by, describe);
            match (o.value, o.mod_revision) {
                (Some(value), Some(m)) => {
                    if m > header {
                        self.anomalies.push(anomaly(
                            RevisionAnomalyKind::ModAboveHeader,
                            Some(o.key),
                            observer_ops(o.by, u64::MAX),
                            format!(
                                "{reader} returned {}={value:?} with mod revision {m} above its header revision {header}",
                                o.key
                            ),
                        ));
                        continue;
                    }
                    if let Some((r, (_, writer))) =
                        timeline.range((Excluded(m), Included(header))).next()
                    {
                        self.anomalies.push(anomaly(
                            RevisionAnomalyKind::StaleAtRevision,
                            Some(o.key),
                            observer_ops(o.by, writer.unwrap_or(u64::MAX)),
                            format!(
                                "{reader} read {}={value:?} (mod revision {m}) at revision {header}, missing the write of revision {r} ({})",
                                o.key,
                                writer.map_or("a delete a watch reported".into(), describe)
                            ),
                        ));
                    }
                }
                (None, _) => {
                    let Some((p, (Some(value), writer))) = timeline.range(..=header).next_back()
                    else {
                        continue;
                    };
                    let deleted_since = unplaced_deletes
                        .get(o.key)
                        .is_some_and(|calls| calls.iter().any(|c| *c <= o.ret));
                    if !deleted_since {
                        self.anomalies.push(anomaly(
                            RevisionAnomalyKind::StaleAtRevision,
                            Some(o.key),
                            observer_ops(o.by, writer.unwrap_or(u64::MAX)),
                            format!(
                                "{reader} found {} absent at revision {header}, yet {} put {value:?} there at revision {p} and nothing deleted it since",
                                o.key,
                                writer.map_or("?".into(), describe)
                            ),
                        ));
                    }
                }
                // A value without a mod revision (a hand-made history): nothing to check.
                (Some(_), None) => {}
            }
        }
    }

    /// The header revisions one client gets from one member never go backwards.
    fn check_clients(&mut self, history: &History) {
        let mut highest: HashMap<(ClientId, Option<u64>), (i64, OpId)> = HashMap::new();
        let mut ops: Vec<&Operation> = history.operations.iter().filter(|o| o.is_ok()).collect();
        ops.sort_by_key(|op| (op.client, op.call, op.id));
        for op in ops {
            let Some(result) = op.outcome.result() else {
                continue;
            };
            let revision = result.revision();
            let seen = highest
                .entry((op.client, op.member))
                .or_insert((revision, op.id));
            if revision < seen.0 {
                self.anomalies.push(anomaly(
                    RevisionAnomalyKind::ClientRegression,
                    Some(&op.key),
                    vec![seen.1, op.id],
                    format!(
                        "client {} got revision {} from {} after revision {} from the same member (#{})",
                        op.client,
                        revision,
                        op.describe(),
                        seen.0,
                        seen.1
                    ),
                ));
            } else {
                *seen = (revision, op.id);
            }
        }
    }

    /// Answers that contradict themselves.
    fn check_answers(&mut self, history: &History, keys: &BTreeSet<String>) {
        for op in &history.operations {
            match (&op.kind, &op.outcome) {
                (
                    OpKind::Delete,
                    Outcome::Ok(OpResult::Written {
                        deleted: Some(n), ..
                    }),
                ) if *n > 1 => {
                    self.anomalies.push(anomaly(
                        RevisionAnomalyKind::ContradictoryAnswer,
                        Some(&op.key),
                        vec![op.id],
                        format!("{} deleted {n} keys of one", op.describe()),
                    ));
                }
                (
                    OpKind::CompareAndSwap { .. } | OpKind::Txn { .. },
                    Outcome::Ok(OpResult::Swapped {
                        succeeded: false,
                        current,
                        ..
                    }),
                ) if !current.is_empty() => {
                    let read = effects(op, keys);
                    let every_compare_held = read.iter().all(|e| {
                        let expected = compared(op, e.key);
                        matches!(e.effect, Effect::Read { value, .. } if Some(value) == expected)
                    });
                    if every_compare_held && !read.is_empty() {
                        self.anomalies.push(anomaly(
                            RevisionAnomalyKind::ContradictoryAnswer,
                            Some(&op.key),
                            vec![op.id],
                            format!(
                                "{} was refused, yet every key it read back held the value compared with",
                                op.describe()
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    /// Members that settled at the same revision hold the same keys, and the same as the
    /// final linearizable read when read at its revision.
    fn check_members_agree(&mut self, final_read: &FinalRead) {
        let mut by_revision: BTreeMap<i64, Vec<&crate::history::MemberRead>> = BTreeMap::new();
        for m in &final_read.members {
            by_revision.entry(m.revision).or_default().push(m);
        }
        for (revision, members) in by_revision {
            let first = members[0];
            for other in &members[1..] {
                if other.keys != first.keys {
                    self.anomalies.push(anomaly(
                        RevisionAnomalyKind::MembersDisagree,
                        None,
                        Vec::new(),
                        format!(
                            "members {:x} ({}) and {:x} ({}) both at revision {revision} hold different keys: {:?} and {:?}",
                            first.member_id,
                            first.endpoint,
                            other.member_id,
                            other.endpoint,
                            first.keys,
                            other.keys
                        ),
                    ));
                }
            }
            for (key, value) in &first.keys {
                if final_read.revision_of(key) == revision
                    && final_read.keys.get(key).is_some_and(|f| f != value)
                {
                    self.anomalies.push(anomaly(
                        RevisionAnomalyKind::MembersDisagree,
                        Some(key),
                        Vec::new(),
                        format!(
                            "member {:x} ({}) holds {key}={value:?} at revision {revision}, the final read found {:?} there",
                            first.member_id, first.endpoint, final_read.keys[key]
                        ),
                    ));
                }
            }
        }
    }
}

/// The value `op` compared `key` with.
fn compared<'a>(op: &'a Operation, key: &str) -> Option<Option<&'a str>> {
    match &op.kind {
        OpKind::CompareAndSwap { expected, .. } => Some(expected.as_deref()),
        OpKind::Txn { writes } => writes
            .iter()
            .find(|w| w.key == key)
            .map(|w| w.expected.as_deref()),
        _ => None,
    }
}

/// The operations an anomaly names: the observer's (when it is one) and `other`.
fn observer_ops(by: Observer, other: OpId) -> Vec<OpId> {
    let mut ops = Vec::new();
    if let Observer::Op(id) = by {
        ops.push(id);
    }
    if other != u64::MAX {
        ops.push(other);
    }
    ops
}

fn who(by: Observer, describe: &dyn Fn(OpId) -> String) -> String {
    match by {
        Observer::Op(id) => describe(id),
        Observer::Final => "the final read".into(),
        Observer::Member(i) => format!("member read {i} once settled"),
        Observer::Watch(i) => format!("watch session {i}"),
    }
}

/// Every observation of a key in the history, the final read, the members' reads and the
/// watches.
fn observations<'a>(
    history: &'a History,
    keys: &'a BTreeSet<String>,
    final_read: Option<&'a FinalRead>,
) -> Vec<Observation<'a>> {
    let mut seen = Vec::new();
    for op in &history.operations {
        let header = op.outcome.result().map(OpResult::revision);
        for KeyEffect { key, effect, .. } in effects(op, keys) {
            let (value, mod_revision) = match effect {
                Effect::Read {
                    value,
                    mod_revision,
                    ..
                } => (value, mod_revision),
                Effect::Delete {
                    existed: Some(false),
                } => (None, None),
                _ => continue,
            };
            seen.push(Observation {
                key,
                value,
                mod_revision,
                header,
                ret: op.ret,
                by: Observer::Op(op.id),
            });
        }
    }
    if let Some(f) = final_read {
        for (key, kv) in &f.keys {
            seen.push(Observation {
                key,
                value: kv.as_ref().map(|kv| kv.value.as_str()),
                mod_revision: kv.as_ref().map(|kv| kv.mod_revision),
                header: Some(f.revision_of(key)),
                ret: u64::MAX,
                by: Observer::Final,
            });
        }
        for (i, m) in f.members.iter().enumerate() {
            for (key, kv) in &m.keys {
                seen.push(Observation {
                    key,
                    value: kv.as_ref().map(|kv| kv.value.as_str()),
                    mod_revision: kv.as_ref().map(|kv| kv.mod_revision),
                    header: Some(m.revision),
                    ret: u64::MAX,
                    by: Observer::Member(i),
                });
            }
        }
    }
    for (i, session) in history.watches.iter().enumerate() {
        seen.extend(watch_observations(session, i));
    }
    seen
}

fn watch_observations(session: &WatchSession, i: usize) -> impl Iterator<Item = Observation<'_>> {
    session.events.iter().filter_map(move |e| {
        Some(Observation {
            key: &e.key,
            value: Some(e.value.as_deref()?),
            mod_revision: Some(e.revision),
            header: None,
            ret: u64::MAX,
            by: Observer::Watch(i),
        })
    })
}

/// Every ok operation called after another ok operation returned is no earlier in the
/// order of revisions ([`position`]: a write at its revision, a read just after its header
/// revision), and a write strictly later. A serializable read may serve an old revision,
/// so it is only ever the earlier operation of a pair. Returns every regression (each
/// later operation once, paired with the furthest position returned before its call).
pub fn check_revisions(history: &History) -> Vec<RevisionRegression> {
    let mut done: Vec<(u64, u64, OpId)> = Vec::new();
    let mut called: Vec<(u64, u64, bool, OpId)> = Vec::new();
    for op in &history.operations {
        let Some(pos) = position(op, None).filter(|_| op.is_ok()) else {
            continue;
        };
        done.push((op.ret, pos, op.id));
        if !op.kind.is_serializable_read() {
            called.push((op.call, pos, pos % 2 == 0, op.id));
        }
    }
    done.sort_unstable();
    called.sort_unstable();
    let mut regressions = Vec::new();
    let mut furthest: Option<(u64, OpId)> = None;
    let mut returned = done.iter().peekable();
    for (call, pos, is_write, id) in called {
        while let Some((_, p, done_id)) = returned.next_if(|(ret, ..)| *ret < call) {
            if furthest.is_none_or(|(f, _)| *p > f) {
                furthest = Some((*p, *done_id));
            }
        }
        if let Some((f, earlier)) = furthest
            && (pos < f || (pos == f && is_write))
        {
            regressions.push(RevisionRegression {
                earlier,
                earlier_revision: (f / 2) as i64,
                later: id,
                later_revision: (pos / 2) as i64,
            });
        }
    }
    regressions
}
