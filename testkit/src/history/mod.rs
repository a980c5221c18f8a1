//! A recorded client history: what each client asked of etcd, when, and what came back.
//!
//! The traffic generator ([`crate::traffic`]) records into a [`Recorder`] while faults are
//! injected; the checker ([`crate::checker`]) judges the resulting [`History`] afterwards.
//! Times are nanoseconds since the recorder was created, read from one monotonic clock
//! shared by every client task, so "A returned before B was called" is meaningful across
//! clients.
//!
//! An outcome is one of three things, and the difference matters to the checker:
//! - `Ok`: etcd answered; the result is what it said.
//! - `Failed`: the operation certainly did not take effect (refused before it was sent).
//!   A compare-and-swap whose compare failed is *not* `Failed`: it is `Ok` with
//!   `succeeded: false`, an observation that the key did not hold the expected value.
//! - `Unknown`: a timeout or a lost connection; it may have taken effect, at any time
//!   after its call, or never.
//!
//! Every answer carries etcd's revisions (the header's, and each key's mod revision) and
//! the member that gave it, which the checker's model of revisions needs. Beside the
//! operations a history holds the watch sessions ([`WatchSession`]: every event each
//! delivered, and how it ended) and the leases ([`Lease`]: each keep-alive and each read
//! of the key attached), in `watch.rs` and `lease.rs`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use serde::{Deserialize, Serialize};

mod lease;
mod watch;

pub use lease::{Interval, Lease, LeaseProbe, LeaseSeen};
pub use watch::{WatchEnd, WatchEvent, WatchSession};

/// Identifies one operation within a history.
pub type OpId = u64;

/// Identifies one client (a sequential process issuing one operation at a time).
pub type ClientId = u32;

/// One key's value as etcd returned it, with the revision of the write that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The value.
    pub value: String,
    /// The revision of the write that produced it.
    pub mod_revision: i64,
}

/// One key of a multi-key transaction: compared with `expected`, set to `new`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnWrite {
    /// The key.
    pub key: String,
    /// The value compared with (`None` compares the key's version with 0: absent).
    pub expected: Option<String>,
    /// The value put when every compare of the transaction holds.
    pub new: String,
}

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Set the key to `value`.
    Put {
        /// The value written; unique per write in generated traffic.
        value: String,
    },
    /// Read the key; a serializable read (`linearizable: false`) may be stale.
    Get {
        /// True for etcd's default (quorum) read, false for a serializable one.
        linearizable: bool,
    },
    /// Delete the key.
    Delete,
    /// A transaction: if the key holds `expected` (`None`: the key is absent) put `new`;
    /// otherwise read the key back.
    CompareAndSwap {
        /// The value compared with (`None` compares the key's version with 0).
        expected: Option<String>,
        /// The value put when the compare holds.
        new: String,
    },
    /// Read every key under the operation's key (a prefix), all at one revision.
    Range {
        /// True for a quorum read, false for a serializable one.
        linearizable: bool,
    },
    /// A transaction over several keys: if every key holds its `expected` value, put each
    /// key's `new` value (all at one revision); otherwise read every key back. The
    /// operation's `key` is the first of them.
    Txn {
        /// The keys compared and written.
        writes: Vec<TxnWrite>,
    },
}

impl OpKind {
    /// True for operations that may change a key.
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get { .. } | OpKind::Range { .. })
    }

    /// True for a serializable read (a get or a range).
    pub fn is_serializable_read(&self) -> bool {
        matches!(
            self,
            OpKind::Get {
                linearizable: false
            } | OpKind::Range {
                linearizable: false
            }
        )
    }

    /// The value this single-key operation writes, if it writes one (a transaction over
    /// several keys writes several: [`Operation::writes`]).
    pub fn written_value(&self) -> Option<&str> {
        match self {
            OpKind::Put { value } => Some(value),
            OpKind::CompareAndSwap { new, .. } => Some(new),
            OpKind::Get { .. } | OpKind::Delete | OpKind::Range { .. } | OpKind::Txn { .. } => None,
        }
    }
}

/// What etcd answered to an operation that completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpResult {
    /// The answer to a get.
    Read {
        /// The value read; `None` when the key was absent.
        value: Option<String>,
        /// The key's mod revision when present.
        mod_revision: Option<i64>,
        /// The response header's revision.
        revision: i64,
    },
    /// The answer to a put or a delete.
    Written {
        /// The response header's revision (for a put, or a delete that deleted something,
        /// the revision the write created).
        revision: i64,
        /// For a delete: how many keys it deleted (`None`: not recorded). A delete that
        /// deleted nothing created no revision; it saw the key absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deleted: Option<i64>,
    },
    /// The answer to a compare-and-swap or a transaction.
    Swapped {
        /// Whether every compare held and the puts were applied.
        succeeded: bool,
        /// The response header's revision.
        revision: i64,
        /// When not swapped: each key as the transaction read it back (`None`: absent), at
        /// the header's revision. Empty when not recorded.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        current: BTreeMap<String, Option<KeyValue>>,
    },
    /// The answer to a range read: every key present under the prefix.
    Ranged {
        /// The response header's revision.
        revision: i64,
        /// The keys present, with their values.
        kvs: BTreeMap<String, KeyValue>,
    },
}

impl OpResult {
    /// The response header's revision.
    pub fn revision(&self) -> i64 {
        match self {
            OpResult::Read { revision, .. }
            | OpResult::Written { revision, .. }
            | OpResult::Swapped { revision, .. }
            | OpResult::Ranged { revision, .. } => *revision,
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// etcd answered.
    Ok(OpResult),
    /// Certainly did not take effect.
    Failed {
        /// Why, for humans.
        reason: String,
    },
    /// May or may not have taken effect.
    Unknown {
        /// Why, for humans.
        reason: String,
    },
}

impl Outcome {
    /// The result when etcd answered.
    pub fn result(&self) -> Option<&OpResult> {
        match self {
            Outcome::Ok(r) => Some(r),
            Outcome::Failed { .. } | Outcome::Unknown { .. } => None,
        }
    }
}

/// One operation of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique within the history, in call order.
    pub id: OpId,
    /// The client that issued it.
    pub client: ClientId,
    /// The etcd key (for a range, the prefix; for a transaction, its first key).
    pub key: String,
    /// What was asked.
    pub kind: OpKind,
    /// When it was called, nanoseconds since the history's start.
    pub call: u64,
    /// When the client stopped waiting (answer, error or timeout), nanoseconds since the
    /// history's start. For an `Unknown` outcome the operation may still take effect later.
    #[serde(rename = "return")]
    pub ret: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The member that answered (its id, from the response header), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<u64>,
}

impl Operation {
    /// True when etcd answered.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// True for an acknowledged write: an ok put, an ok delete that deleted something (or
    /// whose count was not recorded), or a compare-and-swap or transaction that succeeded.
    pub fn is_acknowledged_write(&self) -> bool {
        match (&self.kind, &self.outcome) {
            (OpKind::Put { .. }, Outcome::Ok(_)) => true,
            (OpKind::Delete, Outcome::Ok(OpResult::Written { deleted, .. })) => {
                deleted.is_none_or(|n| n > 0)
            }
            (
                OpKind::CompareAndSwap { .. } | OpKind::Txn { .. },
                Outcome::Ok(OpResult::Swapped { succeeded, .. }),
            ) => *succeeded,
            _ => false,
        }
    }

    /// Every key this operation may change, with the value it sets (`None`: a delete).
    pub fn writes(&self) -> Vec<(&str, Option<&str>)> {
        match &self.kind {
            OpKind::Put { value } => vec![(self.key.as_str(), Some(value.as_str()))],
            OpKind::CompareAndSwap { new, .. } => vec![(self.key.as_str(), Some(new.as_str()))],
            OpKind::Delete => vec![(self.key.as_str(), None)],
            OpKind::Txn { writes } => writes
                .iter()
                .map(|w| (w.key.as_str(), Some(w.new.as_str())))
                .collect(),
            OpKind::Get { .. } | OpKind::Range { .. } => Vec::new(),
        }
    }

    /// A one-line description for reports: `#12 c3 put t/1="c3-7" [1.2ms..1.5ms] -> ok rev 40`.
    pub fn describe(&self) -> String {
        let kind = match &self.kind {
            OpKind::Put { value } => format!("put {}={value:?}", self.key),
            OpKind::Get { linearizable: true } => format!("get {}", self.key),
            OpKind::Get {
                linearizable: false,
            } => format!("serializable get {}", self.key),
            OpKind::Delete => format!("delete {}", self.key),
            OpKind::CompareAndSwap { expected, new } => {
                format!("cas {} {expected:?}->{new:?}", self.key)
            }
            OpKind::Range { linearizable } => format!(
                "{}range {}*",
                if *linearizable { "" } else { "serializable " },
                self.key
            ),
            OpKind::Txn { writes } => format!(
                "txn {}",
                writes
                    .iter()
                    .map(|w| format!("{} {:?}->{:?}", w.key, w.expected, w.new))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let outcome = match &self.outcome {
            Outcome::Ok(OpResult::Read {
                value,
                revision,
                mod_revision,
            }) => match mod_revision {
                Some(m) => format!("ok {value:?} (mod {m}) rev {revision}"),
                None => format!("ok {value:?} rev {revision}"),
            },
            Outcome::Ok(OpResult::Written {
                revision,
                deleted: Some(n),
            }) => format!("ok deleted {n} rev {revision}"),
            Outcome::Ok(OpResult::Written { revision, .. }) => format!("ok rev {revision}"),
            Outcome::Ok(OpResult::Swapped {
                succeeded,
                revision,
                current,
            }) => {
                let read: Vec<String> = current
                    .iter()
                    .map(|(k, v)| match v {
                        Some(kv) => format!("{k}={:?} (mod {})", kv.value, kv.mod_revision),
                        None => format!("{k} absent"),
                    })
                    .collect();
                format!(
                    "ok {}{} rev {revision}",
                    if *succeeded { "swapped" } else { "not swapped" },
                    if read.is_empty() {
                        String::new()
                    } else {
                        format!(", read {}", read.join(", "))
                    }
                )
            }
            Outcome::Ok(OpResult::Ranged { revision, kvs }) => format!(
                "ok {{{}}} rev {revision}",
                kvs.iter()
                    .map(|(k, kv)| format!("{k}={:?}@{}", kv.value, kv.mod_revision))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Outcome::Failed { reason } => format!("failed ({reason})"),
            Outcome::Unknown { reason } => format!("unknown ({reason})"),
        };
        let member = self
            .member
            .map_or(String::new(), |m| format!(" from {m:x}"));
        format!(
            "#{} c{} {kind} [{}..{}] -> {outcome}{member}",
            self.id,
            self.client,
            fmt_ns(self.call),
            fmt_ns(self.ret)
        )
    }
}

/// Nanoseconds as milliseconds with three decimals, for reports.
pub fn fmt_ns(ns: u64) -> String {
    format!("{}.{:03}ms", ns / 1_000_000, (ns / 1_000) % 1_000)
}

/// Counts of outcomes in a history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// All operations.
    pub total: usize,
    /// Answered by etcd.
    pub ok: usize,
    /// Certainly without effect.
    pub failed: usize,
    /// Possibly with effect.
    pub unknown: usize,
}

/// How much operations on one key overlap in time: the contention the checker is given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlap {
    /// Operations on keys (a multi-key operation counts once per key).
    pub operations: usize,
    /// Those whose interval overlaps another operation's on the same key.
    pub overlapping: usize,
}

impl Overlap {
    /// The share of operations overlapping another on their key, in percent.
    pub fn percent(&self) -> f64 {
        if self.operations == 0 {
            0.0
        } else {
            100.0 * self.overlapping as f64 / self.operations as f64
        }
    }
}

/// A complete recorded history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The traffic seed that produced it, to replay the same operation mix.
    pub seed: Option<u64>,
    /// Each key's value when recording started (absent keys may be left out: a key not
    /// listed starts absent).
    pub initial: BTreeMap<String, Option<String>>,
    /// The operations, in id (call) order.
    pub operations: Vec<Operation>,
    /// The watches opened while recording, each session from its open to its end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<WatchSession>,
    /// The leases granted while recording, with what was seen of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<Lease>,
}

impl History {
    /// Outcome counts.
    pub fn counts(&self) -> OutcomeCounts {
        let mut c = OutcomeCounts {
            total: self.operations.len(),
            ..OutcomeCounts::default()
        };
        for op in &self.operations {
            match op.outcome {
                Outcome::Ok(_) => c.ok += 1,
                Outcome::Failed { .. } => c.failed += 1,
                Outcome::Unknown { .. } => c.unknown += 1,
            }
        }
        c
    }

    /// Every key an operation touched or the initial state names (a range's prefix is not
    /// a key: the keys it covers are).
    pub fn keys(&self) -> BTreeSet<String> {
        let mut keys: BTreeSet<String> = self.initial.keys().cloned().collect();
        for op in &self.operations {
            match &op.kind {
                OpKind::Range { .. } => {
                    if let Outcome::Ok(OpResult::Ranged { kvs, .. }) = &op.outcome {
                        keys.extend(kvs.keys().cloned());
                    }
                }
                OpKind::Txn { writes } => keys.extend(writes.iter().map(|w| w.key.clone())),
                _ => {
                    keys.insert(op.key.clone());
                }
            }
        }
        keys
    }

    /// The operation with `id`.
    pub fn get(&self, id: OpId) -> Option<&Operation> {
        self.operations.iter().find(|op| op.id == id)
    }

    /// Mutable access to the operation with `id` (for tests that tamper with a history).
    pub fn get_mut(&mut self, id: OpId) -> Option<&mut Operation> {
        self.operations.iter_mut().find(|op| op.id == id)
    }

    /// How much operations overlap another on the same key (failed ones left out: they
    /// never reached etcd). An operation of unknown outcome counts until its client
    /// stopped waiting.
    pub fn overlap(&self) -> Overlap {
        self.overlap_within(0, u64::MAX)
    }

    /// As [`History::overlap`], over the operations called within `from..until` (ns).
    pub fn overlap_within(&self, from: u64, until: u64) -> Overlap {
        let mut by_key: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
        for op in &self.operations {
            if matches!(op.outcome, Outcome::Failed { .. }) {
                continue;
            }
            let keys: Vec<&str> = match &op.kind {
                OpKind::Txn { writes } => writes.iter().map(|w| w.key.as_str()).collect(),
                _ => vec![op.key.as_str()],
            };
            for key in keys {
                by_key.entry(key).or_default().push((op.call, op.ret));
            }
        }
        let mut overlap = Overlap::default();
        for intervals in by_key.values_mut() {
            intervals.sort_unstable();
            // An interval overlaps another if one called before it returns after its
            // call, or the next one is called before it returns.
            let mut latest_return = None::<u64>;
            for (i, &(call, ret)) in intervals.iter().enumerate() {
                let before = latest_return.is_some_and(|r| r >= call);
                let after = intervals.get(i + 1).is_some_and(|&(next, _)| next <= ret);
                if (from..until).contains(&call) {
                    overlap.operations += 1;
                    if before || after {
                        overlap.overlapping += 1;
                    }
                }
                latest_return = Some(latest_return.map_or(ret, |r| r.max(ret)));
            }
        }
        overlap
    }

    /// The history as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a history always serializes")
    }

    /// A history from JSON written by [`History::to_json`].
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }

    /// Writes the history as JSON to `path` (to keep a failing history for replay).
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_json())
    }
}

/// What one member holds of the traffic's keys once the cluster settled: a serializable
/// read of each, on that member alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRead {
    /// The member's client URL.
    pub endpoint: String,
    /// The member's id (from its response headers).
    pub member_id: u64,
    /// The highest header revision of its answers.
    pub revision: i64,
    /// Each key as the member holds it; `None` when absent.
    pub keys: BTreeMap<String, Option<KeyValue>>,
}

/// The state of every traffic key after traffic stopped: linearizable reads of each key,
/// and (once the cluster settled) what each member holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRead {
    /// The highest response header revision seen by the reads.
    pub revision: i64,
    /// Each key read; `None` when absent.
    pub keys: BTreeMap<String, Option<KeyValue>>,
    /// The header revision of each key's read (keys missing here were read at `revision`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub read_at: BTreeMap<String, i64>,
    /// Each member's own copy of the keys, once settled (empty when not read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberRead>,
}

impl FinalRead {
    /// The header revision `key` was read at.
    pub fn revision_of(&self, key: &str) -> i64 {
        self.read_at.get(key).copied().unwrap_or(self.revision)
    }
}

/// Records a history from many tasks at once; cheap to clone (all clones share one
/// history and one clock).
#[derive(Clone, Debug)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

#[derive(Debug)]
struct RecorderInner {
    start: Instant,
    next_id: AtomicU64,
    history: Mutex<History>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(RecorderInner {
                start: Instant::now(),
                next_id: AtomicU64::new(0),
                history: Mutex::new(History::default()),
            }),
        }
    }

    /// Nanoseconds since the recorder was created.
    pub fn now(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Notes the seed that drives the traffic.
    pub fn set_seed(&self, seed: u64) {
        self.lock().seed = Some(seed);
    }

    /// Notes a key's value before any recorded operation.
    pub fn set_initial(&self, key: &str, value: Option<String>) {
        self.lock().initial.insert(key.to_string(), value);
    }

    /// Starts an operation: assigns its id and takes its call time. Finish it with
    /// [`PendingOp::ok`], [`PendingOp::failed`] or [`PendingOp::unknown`]; one dropped
    /// unfinished is recorded as `Unknown`.
    pub fn call(&self, client: ClientId, key: &str, kind: OpKind) -> PendingOp {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let call = self.now();
        PendingOp {
            recorder: self.clone(),
            op: Some(Operation {
                id,
                client,
                key: key.to_string(),
                kind,
                call,
                ret: call,
                outcome: Outcome::Unknown {
                    reason: String::new(),
                },
                member: None,
            }),
        }
    }

    /// Adds a watch session that ended.
    pub fn watch_session(&self, session: WatchSession) {
        self.lock().watches.push(session);
    }

    /// Adds what was seen of a lease.
    pub fn lease(&self, lease: Lease) {
        self.lock().leases.push(lease);
    }

    /// Number of finished operations.
    pub fn len(&self) -> usize {
        self.lock().operations.len()
    }

    /// True before the first operation finished.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the finished operations so far, in id order.
    pub fn history(&self) -> History {
        let mut history = self.lock().clone();
        history.operations.sort_by_key(|op| op.id);
        history
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.inner
            .history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An operation that was called and has not finished yet.
#[derive(Debug)]
pub struct PendingOp {
    recorder: Recorder,
    op: Option<Operation>,
}

impl PendingOp {
    /// The operation's id.
    pub fn id(&self) -> OpId {
        self.op.as_ref().map(|op| op.id).unwrap_or_default()
    }

    /// etcd answered with `result`.
    pub fn ok(self, result: OpResult) {
        self.finish(Outcome::Ok(result));
    }

    /// Member `member` answered with `result`.
    pub fn ok_from(mut self, result: OpResult, member: Option<u64>) {
        if let Some(op) = &mut self.op {
            op.member = member;
        }
        self.finish(Outcome::Ok(result));
    }

    /// Certainly did not take effect.
    pub fn failed(self, reason: impl Into<String>) {
        self.finish(Outcome::Failed {
            reason: reason.into(),
        });
    }

    /// May or may not have taken effect.
    pub fn unknown(self, reason: impl Into<String>) {
        self.finish(Outcome::Unknown {
            reason: reason.into(),
        });
    }

    /// Records `outcome` with the return time now.
    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        if let Some(mut op) = self.op.take() {
            op.ret = self.recorder.now().max(op.call);
            op.outcome = outcome;
            self.recorder.lock().operations.push(op);
        }
    }
}

impl Drop for PendingOp {
    fn drop(&mut self) {
        // A task cancelled mid-request: the request may have reached etcd.
        self.record(Outcome::Unknown {
            reason: "abandoned before an outcome was recorded".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_many_threads_in_id_order_and_round_trips_through_json() {
        let recorder = Recorder::new();
        recorder.set_seed(7);
        recorder.set_initial("t/0", Some("old".into()));
        std::thread::scope(|s| {
            for client in 0..4u32 {
                let recorder = recorder.clone();
                s.spawn(move || {
                    for i in 0..50 {
                        let key = format!("t/{}", i % 3);
                        let op = recorder.call(
                            client,
                            &key,
                            OpKind::Put {
                                value: format!("c{client}-{i}"),
                            },
                        );
                        match i % 3 {
                            0 => op.ok(OpResult::Written {
                                revision: i + 1,
                                deleted: None,
                            }),
                            1 => op.failed("refused"),
                            _ => drop(op),
                        }
                    }
                });
            }
        });
        let history = recorder.history();
        assert_eq!(history.operations.len(), 200);
        assert!(history.operations.windows(2).all(|w| w[0].id < w[1].id));
        assert!(history.operations.iter().all(|op| op.call <= op.ret));
        let counts = history.counts();
        assert_eq!(counts.ok + counts.failed + counts.unknown, 200);
        assert_eq!(counts.unknown, 64, "dropped ops are recorded as unknown");
        let back = History::from_json(&history.to_json()).expect("parse");
        assert_eq!(back, history);
        assert_eq!(back.seed, Some(7));
    }
}
