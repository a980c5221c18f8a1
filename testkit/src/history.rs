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

/// Identifies one operation within a history.
pub type OpId = u64;

/// Identifies one client (a sequential process issuing one operation at a time).
pub type ClientId = u32;

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
    /// A transaction: if the key holds `expected` (`None`: the key is absent) put `new`.
    CompareAndSwap {
        /// The value compared with (`None` compares the key's version with 0).
        expected: Option<String>,
        /// The value put when the compare holds.
        new: String,
    },
}

impl OpKind {
    /// True for operations that may change the key.
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get { .. })
    }

    /// The value this operation writes, if it writes one.
    pub fn written_value(&self) -> Option<&str> {
        match self {
            OpKind::Put { value } => Some(value),
            OpKind::CompareAndSwap { new, .. } => Some(new),
            OpKind::Get { .. } | OpKind::Delete => None,
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
        /// The response header's revision (for a put, the revision the write created).
        revision: i64,
    },
    /// The answer to a compare-and-swap.
    Swapped {
        /// Whether the compare held and the put was applied.
        succeeded: bool,
        /// The response header's revision.
        revision: i64,
    },
}

impl OpResult {
    /// The response header's revision.
    pub fn revision(&self) -> i64 {
        match self {
            OpResult::Read { revision, .. }
            | OpResult::Written { revision }
            | OpResult::Swapped { revision, .. } => *revision,
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
    /// The etcd key.
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
}

impl Operation {
    /// True when etcd answered.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// True for an acknowledged write: an ok put, an ok delete, or a compare-and-swap that
    /// succeeded.
    pub fn is_acknowledged_write(&self) -> bool {
        match (&self.kind, &self.outcome) {
            (OpKind::Put { .. } | OpKind::Delete, Outcome::Ok(_)) => true,
            (OpKind::CompareAndSwap { .. }, Outcome::Ok(OpResult::Swapped { succeeded, .. })) => {
                *succeeded
            }
            _ => false,
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
        };
        let outcome = match &self.outcome {
            Outcome::Ok(OpResult::Read {
                value, revision, ..
            }) => format!("ok {value:?} rev {revision}"),
            Outcome::Ok(OpResult::Written { revision }) => format!("ok rev {revision}"),
            Outcome::Ok(OpResult::Swapped {
                succeeded,
                revision,
            }) => format!(
                "ok {} rev {revision}",
                if *succeeded { "swapped" } else { "not swapped" }
            ),
            Outcome::Failed { reason } => format!("failed ({reason})"),
            Outcome::Unknown { reason } => format!("unknown ({reason})"),
        };
        format!(
            "#{} c{} {kind} [{}..{}] -> {outcome}",
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

    /// Every key an operation touched or the initial state names.
    pub fn keys(&self) -> BTreeSet<String> {
        self.operations
            .iter()
            .map(|op| op.key.clone())
            .chain(self.initial.keys().cloned())
            .collect()
    }

    /// The operation with `id`.
    pub fn get(&self, id: OpId) -> Option<&Operation> {
        self.operations.iter().find(|op| op.id == id)
    }

    /// Mutable access to the operation with `id` (for tests that tamper with a history).
    pub fn get_mut(&mut self, id: OpId) -> Option<&mut Operation> {
        self.operations.iter_mut().find(|op| op.id == id)
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

/// One key's value at the end, as a linearizable read returned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalValue {
    /// The value.
    pub value: String,
    /// The revision of the write that produced it.
    pub mod_revision: i64,
}

/// The state of every traffic key after traffic stopped: linearizable reads of each key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRead {
    /// The highest response header revision seen by the reads.
    pub revision: i64,
    /// Each key read; `None` when absent.
    pub keys: BTreeMap<String, Option<FinalValue>>,
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
            }),
        }
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
                            0 => op.ok(OpResult::Written { revision: i + 1 }),
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
