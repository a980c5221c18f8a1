//! The linearizability search, one key at a time, with revisions.
//!
//! Wing & Gong's search with Lowe's memoization, as porcupine implements it: the call and
//! return events of the operations with a finite return time, sorted by time, in a doubly
//! linked list; linearizing an operation lifts its two events out of the list,
//! backtracking unlifts them; each configuration (set of linearized operations, register
//! value, revision floor) is cached so it is explored once. The set is a 128-bit Zobrist
//! hash (the XOR of a random word per operation) instead of a bitset, so an entry costs the
//! same whatever the history's length; two different sets collide with probability about
//! `entries² / 2¹²⁹`, negligible at the cap of 2·10⁷ entries.
//!
//! **Revisions.** Every operation whose revision is known has a position in etcd's order
//! ([`super::effects::position`]): a write at `2r`, a read answered at header revision `r`
//! at `2r + 1`. A linearization must visit positions in order: the *floor* is the furthest
//! position linearized so far; a write must land strictly beyond it, a read at or beyond
//! it. A write whose revision is unknown takes the lowest revision free above the floor
//! (the floor moves to the next even position): no lower choice exists, and any higher one
//! only constrains what follows. So revisions strictly increase along the linearization, a
//! read sees exactly the writes up to its header revision, and two reads at one revision
//! see one state. The floor is part of the configuration.
//!
//! An operation with an unknown outcome may take effect at any point after its call, or
//! never: its return time is +∞ and it is optional. Without care a few hundred of them
//! make the search exponential; these reductions keep it exact and tractable:
//! 1. Written values are unique in generated traffic, so an unknown write whose value a
//!    get, a successful compare-and-swap or the final read observed certainly took
//!    effect: it becomes an ordinary operation returning when its first observer did (at
//!    the revision a read saw it under, when one did).
//! 2. Values nothing observes are indistinguishable to every operation: one state.
//! 3. Unknown operations are kept out of the list, grouped in classes of interchangeable
//!    ones (same effect: all unknown deletes, all unknown puts of never-observed values,
//!    unknown swaps with the same compare and effect). Only the earliest unused one of a
//!    class is ever tried, and only when stuck at a return.
//! 4. An unknown operation is tried only where it changes the register, and then only if
//!    the operation after it could not have taken effect without it: otherwise the two
//!    commute (or the next one overwrites it) and the search covers that order anyway. (A
//!    refused compare without a read back commutes and is always tried: after the unknown
//!    operation it may sit at a lower floor.)
//! 5. For the two big classes the cache stores how many were used, and a configuration
//!    that used no fewer than an explored one with the same key is subsumed by it.
//! 6. Once the register leaves a value only one operation writes, it never holds it
//!    again: which unknown swaps expecting it were used stops mattering, and leaves the
//!    hash so that configurations differing only in that merge.
//!
//! The search succeeds once every operation with a finite return is linearized.
//!
//! A key whose search exceeds its step budget or [`MAX_CONFIGS_PER_KEY`] cached
//! configurations is reported [`Undecided`], never linearizable.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{BuildHasherDefault, Hasher},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use super::{
    CheckOptions, MAX_CONFIGS_PER_KEY, MAX_LISTED, Undecided, Violation,
    effects::{Effect, KeyEffect, by_key, position},
};
use crate::{
    history::{FinalRead, History, KeyValue, OpId, Operation, Outcome, fmt_ns},
    rng::SeededRng,
};

/// One key's linearizability answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// A linearization exists.
    Linearizable {
        /// Search steps spent.
        steps: u64,
    },
    /// None exists.
    Violation {
        /// Where and why.
        violation: Violation,
        /// Search steps spent.
        steps: u64,
    },
    /// The budget ran out first.
    Undecided(Undecided),
}

/// Checks every key's linearizability, keys in parallel; results in key order. `applied`
/// holds the revisions learned for writes of unknown outcome (see `revisions.rs`).
pub(crate) fn check_linearizability(
    history: &History,
    final_read: Option<&FinalRead>,
    applied: &HashMap<OpId, i64>,
    options: &CheckOptions,
) -> BTreeMap<String, KeyVerdict> {
    let mut keys: BTreeSet<String> = history.keys();
    if let Some(f) = final_read {
        keys.extend(f.keys.keys().cloned());
    }
    let grouped = by_key(history, &keys);
    let jobs: Vec<(&str, &Vec<KeyEffect>)> = grouped.iter().map(|(k, e)| (*k, e)).collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(BTreeMap::new());
    let threads = options.threads.clamp(1, jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((key, effects)) = jobs.get(i) else {
                        break;
                    };
                    let initial = history.initial.get(*key).cloned().flatten();
                    let final_value = final_read
                        .and_then(|f| Some((f.keys.get(*key)?.as_ref(), f.revision_of(key))));
                    let model = Model::build(effects, applied, initial.as_deref(), final_value);
                    let verdict = check_key(key, &model, effects, options.max_steps_per_key);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.to_string(), verdict);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Register value ids: `NONE` is the absent key, `UNOBSERVED` every value nothing observes.
const NONE: u32 = 0;
const UNOBSERVED: u32 = 1;

/// Return time of an operation that may take effect at any time after its call.
const INFINITE: u64 = u64::MAX;

/// An operation's effect on the register model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// Sets the register.
    Write(u32),
    /// Must see this value.
    Read(u32),
    /// Must see `expected`; sets `new`.
    Swap { expected: u32, new: u32 },
    /// Must see anything but `expected`.
    NotSwapped { expected: u32 },
    /// Must see a value (the key present); clears it.
    Delete,
}

impl Step {
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Write(v) => Some(v),
            Step::Read(v) => (state == v).then_some(state),
            Step::Swap { expected, new } => (state == expected).then_some(new),
            Step::NotSwapped { expected } => (state != expected).then_some(state),
            Step::Delete => (state != NONE).then_some(NONE),
        }
    }

    /// True when taking effect in `state` creates a revision.
    fn writes_in(self, state: u32) -> bool {
        match self {
            Step::Write(NONE) => state != NONE,
            Step::Write(_) | Step::Swap { .. } | Step::Delete => true,
            Step::Read(_) | Step::NotSwapped { .. } => false,
        }
    }
}

/// Where the floor goes when an operation at `pos` (if known) takes effect over it, or
/// `None` when it cannot: a write strictly beyond the floor, a read at or beyond it; a
/// write of unknown revision at the next revision free.
fn advance(floor: u64, pos: Option<u64>, writes: bool) -> Option<u64> {
    match pos {
        Some(p) if writes => (p > floor).then_some(p),
        Some(p) => (p >= floor).then_some(p),
        None if writes => Some((floor | 1) + 1),
        None => Some(floor),
    }
}

/// One operation as the search sees it.
#[derive(Clone, Debug)]
struct ModelOp {
    /// The recorded operation; `None` for the final read.
    source: Option<OpId>,
    call: u64,
    ret: u64,
    step: Step,
    /// Its position in the order of revisions, when known.
    pos: Option<u64>,
    /// For an unknown-outcome operation: its class of interchangeable operations.
    optional: Option<usize>,
}

/// One key's history prepared for the search.
struct Model {
    ops: Vec<ModelOp>,
    initial: u32,
    /// Value id to value, for explanations.
    values: Vec<Option<String>>,
    /// Per value id: written by exactly one operation (or only the initial state), so
    /// once the register moves away from it, it never holds it again.
    single_writer: Vec<bool>,
    classes: usize,
}

impl Model {
    /// The model of one key: its effects (serializable reads are left out: they are
    /// checked at their revision), its initial value, and its final read (value, and the
    /// header revision it was read at).
    fn build(
        effects: &[KeyEffect],
        applied: &HashMap<OpId, i64>,
        initial: Option<&str>,
        final_value: Option<(Option<&KeyValue>, i64)>,
    ) -> Self {
        let final_time = effects
            .iter()
            .map(|e| e.op.ret.max(e.op.call))
            .max()
            .unwrap_or(0)
            + 1;
        let included: Vec<&KeyEffect> = effects
            .iter()
            .filter(|e| {
                !matches!(
                    e.effect,
                    Effect::Read {
                        linearizable: false,
                        ..
                    }
                )
            })
            .collect();

        // Which values anything distinguishes, and when each is first observed.
        let mut observed: HashMap<&str, u32> = HashMap::new();
        let mut values: Vec<Option<String>> = vec![None, Some("<a value nothing observed>".into())];
        let mut first_observed_by: HashMap<&str, u64> = HashMap::new();
        fn note<'v>(
            v: &'v str,
            at: Option<u64>,
            observed: &mut HashMap<&'v str, u32>,
            values: &mut Vec<Option<String>>,
            first_observed_by: &mut HashMap<&'v str, u64>,
        ) {
            if !observed.contains_key(v) {
                observed.insert(v, values.len() as u32);
                values.push(Some(v.to_string()));
            }
            if let Some(at) = at {
                let first = first_observed_by.entry(v).or_insert(at);
                *first = (*first).min(at);
            }
        }
        for e in &included {
            let ok = e.op.is_ok();
            match e.effect {
                Effect::Read { value: Some(v), .. } => note(
                    v,
                    Some(e.op.ret),
                    &mut observed,
                    &mut values,
                    &mut first_observed_by,
                ),
                Effect::Write {
                    expected: Some(Some(v)),
                    ..
                } => note(
                    v,
                    ok.then_some(e.op.ret),
                    &mut observed,
                    &mut values,
                    &mut first_observed_by,
                ),
                Effect::NotSwapped { expected: Some(v) } => {
                    note(v, None, &mut observed, &mut values, &mut first_observed_by)
                }
                _ => {}
            }
        }
        if let Some((Some(kv), _)) = final_value {
            note(
                &kv.value,
                Some(final_time + 1),
                &mut observed,
                &mut values,
                &mut first_observed_by,
            );
        }
        let canon = |v: Option<&str>| match v {
            None => NONE,
            Some(v) => observed.get(v).copied().unwrap_or(UNOBSERVED),
        };

        // How many operations (or the initial state) produce each value.
        let mut writers: HashMap<&str, usize> = HashMap::new();
        if let Some(v) = initial {
            *writers.entry(v).or_default() += 1;
        }
        for e in &included {
            if let Effect::Write { value, .. } = e.effect {
                *writers.entry(value).or_default() += 1;
            }
        }
        // An unknown write whose unique value was observed took effect, before its first
        // observer returned.
        let certain_until = |value: &str, call: u64| -> Option<u64> {
            if writers.get(value) != Some(&1) {
                return None;
            }
            first_observed_by
                .get(value)
                .copied()
                .filter(|at| *at >= call)
        };

        let mut model_ops = Vec::with_capacity(included.len() + 1);
        for e in &included {
            let op = e.op;
            let unknown = matches!(op.outcome, Outcome::Unknown { .. });
            let step = match e.effect {
                Effect::Read { value, .. } => Step::Read(canon(value)),
                Effect::Write {
                    value,
                    expected: None,
                } => Step::Write(canon(Some(value))),
                Effect::Write {
                    value,
                    expected: Some(expected),
                } => Step::Swap {
                    expected: canon(expected),
                    new: canon(Some(value)),
                },
                Effect::Delete {
                    existed: Some(true),
                } => Step::Delete,
                Effect::Delete {
                    existed: Some(false),
                } => Step::Read(NONE),
                Effect::Delete { existed: None } => Step::Write(NONE),
                Effect::NotSwapped { expected } => Step::NotSwapped {
                    expected: canon(expected),
                },
            };
            let (ret, optional) = match (unknown, e.effect) {
                (false, _) => (op.ret.max(op.call), false),
                (true, Effect::Write { value, .. }) => match certain_until(value, op.call) {
                    Some(until) => (until.max(op.call), false),
                    None => (INFINITE, true),
                },
                (true, _) => (INFINITE, true),
            };
            model_ops.push(ModelOp {
                source: Some(op.id),
                call: op.call,
                ret,
                step,
                pos: if optional {
                    None
                } else {
                    position(op, applied.get(&op.id).copied())
                },
                optional: optional.then_some(0),
            });
        }
        if let Some((kv, read_at)) = final_value {
            model_ops.push(ModelOp {
                source: None,
                call: final_time,
                ret: final_time + 1,
                step: Step::Read(canon(kv.map(|kv| kv.value.as_str()))),
                pos: u64::try_from(read_at).ok().map(|r| 2 * r + 1),
                optional: None,
            });
        }

        // Classes of interchangeable unknown operations; in call order within a class, as
        // the search uses them.
        model_ops.sort_by_key(|op| (op.call, op.source));
        let mut class_ids: HashMap<Step, usize> = HashMap::new();
        for op in &mut model_ops {
            if op.optional.is_some() {
                let next = class_ids.len();
                op.optional = Some(*class_ids.entry(op.step).or_insert(next));
            }
        }
        let single_writer = values
            .iter()
            .enumerate()
            .map(|(id, v)| match v {
                Some(v) if id > UNOBSERVED as usize => writers.get(v.as_str()) == Some(&1),
                _ => false,
            })
            .collect();
        Model {
            ops: model_ops,
            initial: canon(initial),
            values,
            single_writer,
            classes: class_ids.len(),
        }
    }

    fn value_name(&self, id: u32) -> String {
        match self.values.get(id as usize) {
            Some(Some(v)) if id == UNOBSERVED => v.clone(),
            Some(Some(v)) => format!("{v:?}"),
            _ => "absent".to_string(),
        }
    }
}

/// A floor for explanations: the revision it stands at.
fn floor_name(floor: u64) -> String {
    match floor {
        0 => "before any revision".into(),
        f if f % 2 == 0 => format!("after the write of revision {}", f / 2),
        f => format!("after a read at revision {}", f / 2),
    }
}

/// a cheap mix instead of SipHash.
#[derive(Default)]
struct ConfigHasher(u64);

impl Hasher for ConfigHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = self.0.rotate_left(21) ^ v;
    }

    fn write_u32(&mut self, v: u32) {
        self.0 = self.0.rotate_left(21) ^ u64::from(v);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<ConfigHasher>>;

/// A configuration: the hash of the linearized operations (except those of the counted
/// classes) mixed with the floor, and the register state with (after an unknown operation)
/// the state before it in the high half.
type ConfigKey = ([u64; 2], u64);

/// How many operations of the two counted classes (unknown puts of never-observed
/// values, unknown deletes) a configuration used, packed in one word.
type Usage = u64;

fn usage_le(a: Usage, b: Usage) -> bool {
    (a & 0xffff_ffff) <= (b & 0xffff_ffff) && (a >> 32) <= (b >> 32)
}

/// Configurations already explored. A configuration that used no more of each counted
/// class than an explored one with the same key is subsumed by it: the explored one had
/// every operation this one has left (the classes' operations are interchangeable), so
/// whatever this one could reach, it could reach too.
#[derive(Default)]
struct ConfigCache {
    first: FastMap<ConfigKey, Usage>,
    /// Further usages of a key, incomparable with the first (rare).
    more: FastMap<ConfigKey, Vec<Usage>>,
    /// Usages remembered.
    len: usize,
}

impl ConfigCache {
    /// Records the configuration; false when it (or one subsuming it) was seen before.
    fn visit(&mut self, key: ConfigKey, usage: Usage) -> bool {
        let Some(first) = self.first.get_mut(&key) else {
            self.first.insert(key, usage);
            self.len += 1;
            return true;
        };
        if usage_le(*first, usage) {
            return false;
        }
        if usage_le(usage, *first) {
            *first = usage;
            return true;
        }
        let more = self.more.entry(key).or_default();
        if more.iter().any(|seen| usage_le(*seen, usage)) {
            return false;
        }
        let before = more.len();
        more.retain(|seen| !usage_le(usage, *seen));
        more.push(usage);
        self.len = self.len + more.len() - before;
        true
    }
}

/// One event in the search's list.
#[derive(Clone, Copy, Debug)]
struct Event {
    time: u64,
    is_call: bool,
    op: usize,
}

/// A linearized operation, to undo on backtrack.
struct Frame {
    linearized: Linearized,
    state: u32,
    floor: u64,
    hash: [u64; 2],
    after_unknown: Option<u32>,
}

/// What a frame linearized, and where the scan resumes once it is undone.
#[derive(Clone, Copy)]
enum Linearized {
    /// An operation with a finite return: its call node in the list.
    Listed { node: usize },
    /// The next unknown operation of a class: the candidate index the scan was at, and
    /// the list's first return node then.
    Unknown {
        class: usize,
        candidate: usize,
        frontier: usize,
    },
}

/// Where the search is in trying the candidates of one configuration: first the list's
/// calls before its first return node, then (at that return node, `frontier`) the
/// unknown operations called by then, the `candidate`-th class that fits the state; then
/// it is stuck at `frontier` and backtracks. Unknown operations come last so that a
/// configuration is first reached with as few of them used as possible, which makes the
/// cache's subsumption prune the more.
#[derive(Clone, Copy)]
enum Cursor {
    Start,
    Node(usize),
    Class { candidate: usize, frontier: usize },
    Stuck(usize),
}

/// Checks one key's operations (all of one key, in any order).
///
/// `initial` is the key's value before the history; `final_value` is the final read of
/// the key (`Some(None)`: read absent), checked as one more linearizable get.
fn check_key(key: &str, model: &Model, effects: &[KeyEffect], max_steps: u64) -> KeyVerdict {
    let n = model.ops.len();

    // Operations with a finite return go into the event list, sorted by time; on equal
    // times calls first (touching operations count as concurrent, the permissive reading).
    let mut events: Vec<Event> = Vec::with_capacity(2 * n);
    // Unknown operations stay out of it: per class, in call order (rank order), since only
    // the next unused one of a class is ever a candidate.
    let mut class_ops: Vec<Vec<usize>> = vec![Vec::new(); model.classes];
    for (i, op) in model.ops.iter().enumerate() {
        match op.optional {
            Some(class) => class_ops[class].push(i),
            None => {
                events.push(Event {
                    time: op.call,
                    is_call: true,
                    op: i,
                });
                events.push(Event {
                    time: op.ret,
                    is_call: false,
                    op: i,
                });
            }
        }
    }
    events.sort_by_key(|e| (e.time, !e.is_call, e.op));
    // Classes a state can use: every class of writes, and the swaps expecting that state.
    let mut write_classes: Vec<usize> = Vec::new();
    let mut swap_classes: HashMap<u32, Vec<usize>> = HashMap::new();
    // The two counted classes (see `ConfigCache`): slot 0 unknown puts of never-observed
    // values, slot 1 unknown deletes. Every other unknown operation is in the hash.
    let mut counted: Vec<Option<u32>> = vec![None; model.classes];
    for (class, members) in class_ops.iter().enumerate() {
        match model.ops[members[0]].step {
            Step::Swap { expected, .. } => swap_classes.entry(expected).or_default().push(class),
            step => {
                write_classes.push(class);
                counted[class] = match step {
                    Step::Write(UNOBSERVED) => Some(0),
                    Step::Write(NONE) => Some(32),
                    _ => None,
                };
            }
        }
    }
    let no_classes: Vec<usize> = Vec::new();
    // Right after an unknown operation that left state `s` only operations that could not
    // have taken effect in `s` are tried: one that could commutes with the unknown
    // operation (or overwrites it), and the search covers that order anyway. So writes
    // are out, and swaps are in as they need the current state, not `s`.
    let candidate_class = |state: u32, after_unknown: Option<u32>, candidate: usize| {
        let writes: &[usize] = if after_unknown.is_some() {
            &[]
        } else {
            &write_classes
        };
        match writes.get(candidate) {
            Some(class) => Some(*class),
            None => swap_classes
                .get(&state)
                .unwrap_or(&no_classes)
                .get(candidate - writes.len())
                .copied(),
        }
    };

    // Doubly linked list over nodes: 0 is the head, event i is node i + 1, the last node
    // is the tail.
    let head = 0usize;
    let tail = events.len() + 1;
    let mut next: Vec<usize> = (1..=tail).chain([tail]).collect();
    let mut prev: Vec<usize> = [head].into_iter().chain(0..tail).collect();
    let mut return_node = vec![0usize; n];
    for (i, e) in events.iter().enumerate() {
        if !e.is_call {
            return_node[e.op] = i + 1;
        }
    }

    let mut zobrist = SeededRng::new(0x5eed_0f11_4ea2);
    let keys: Vec<[u64; 2]> = (0..n)
        .map(|_| [zobrist.next_u64(), zobrist.next_u64()])
        .collect();
    // Per class, the XOR of the keys of its first k operations: what its usage adds to the
    // hash.
    let class_xor: Vec<Vec<[u64; 2]>> = class_ops
        .iter()
        .map(|members| {
            let mut acc = [0u64; 2];
            let mut prefix = vec![acc];
            for op in members {
                acc = [acc[0] ^ keys[*op][0], acc[1] ^ keys[*op][1]];
                prefix.push(acc);
            }
            prefix
        })
        .collect();
    // Once the register leaves a value only one operation writes, swaps expecting it can
    // never apply again: which of them were used no longer matters, so their usage leaves
    // the hash and configurations that differ only in it merge.
    let leave = |hash: [u64; 2], old: u32, new: u32, class_used: &[usize]| -> [u64; 2] {
        if old == new
            || !model
                .single_writer
                .get(old as usize)
                .copied()
                .unwrap_or(false)
        {
            return hash;
        }
        let mut hash = hash;
        for class in swap_classes.get(&old).unwrap_or(&no_classes) {
            let used = class_xor[*class][class_used[*class]];
            hash = [hash[0] ^ used[0], hash[1] ^ used[1]];
        }
        hash
    };

    let mut cache = ConfigCache::default();
    let mut state = model.initial;
    let mut floor = 0u64;
    let mut hash = [0u64; 2];
    let mut usage: Usage = 0;
    let mut after_unknown: Option<u32> = None;
    // The floor is mixed into the set's hash: configurations with one set and one state
    // but different floors differ (a lower floor allows more).
    let config =
        |hash: [u64; 2], state: u32, after_unknown: Option<u32>, floor: u64| -> ConfigKey {
            let prior = after_unknown.map_or(0, |s| u64::from(s) + 1);
            let mixed = [
                hash[0] ^ floor.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                hash[1] ^ floor.wrapping_mul(0xc2b2_ae3d_27d4_eb4f).rotate_left(29),
            ];
            (mixed, u64::from(state) | (prior << 32))
        };
    cache.visit(config(hash, state, after_unknown, floor), usage);
    let mut stack: Vec<Frame> = Vec::new();
    let mut class_used = vec![0usize; model.classes];
    let mut steps = 0u64;
    // The furthest return node the search got stuck at, and the register values (with
    // floors) seen there.
    let mut stuck_at = 0usize;
    let mut stuck_states: Vec<(u32, u64)> = Vec::new();

    let mut cursor = Cursor::Start;
    loop {
        steps += 1;
        if steps > max_steps || cache.len > MAX_CONFIGS_PER_KEY {
            return KeyVerdict::Undecided(Undecided {
                key: key.to_string(),
                operations: n,
                steps,
            });
        }
        match cursor {
            Cursor::Start if next[head] == tail => {
                // Every operation with a finite return is linearized; unknown ones left
                // over simply never took effect.
                return KeyVerdict::Linearizable { steps };
            }
            Cursor::Start => cursor = Cursor::Node(next[head]),
            Cursor::Class {
                candidate,
                frontier,
            } => {
                let Some(class) = candidate_class(state, after_unknown, candidate) else {
                    cursor = Cursor::Stuck(frontier);
                    continue;
                };
                cursor = Cursor::Class {
                    candidate: candidate + 1,
                    frontier,
                };
                let Some(&op) = class_ops[class].get(class_used[class]) else {
                    continue;
                };
                if model.ops[op].call > events[frontier - 1].time {
                    continue;
                }
                // Taking effect without changing the register is the same as never (and
                // never leaves the floor lower).
                let step = model.ops[op].step;
                let Some(new_state) = step.apply(state) else {
                    continue;
                };
                if new_state == state {
                    continue;
                }
                let Some(new_floor) = advance(floor, None, step.writes_in(state)) else {
                    continue;
                };
                let (new_hash, new_usage) = match counted[class] {
                    Some(shift) => (hash, usage + (1 << shift)),
                    None => ([hash[0] ^ keys[op][0], hash[1] ^ keys[op][1]], usage),
                };
                class_used[class] += 1;
                let new_hash = leave(new_hash, state, new_state, &class_used);
                if cache.visit(
                    config(new_hash, new_state, Some(state), new_floor),
                    new_usage,
                ) {
                    stack.push(Frame {
                        linearized: Linearized::Unknown {
                            class,
                            candidate,
                            frontier,
                        },
                        state,
                        floor,
                        hash,
                        after_unknown,
                    });
                    after_unknown = Some(state);
                    state = new_state;
                    floor = new_floor;
                    hash = new_hash;
                    usage = new_usage;
                    cursor = Cursor::Start;
                } else {
                    class_used[class] -= 1;
                }
            }
            Cursor::Node(node) if events[node - 1].is_call => {
                cursor = Cursor::Node(next[node]);
                let op = events[node - 1].op;
                let step = model.ops[op].step;
                if !matches!(step, Step::NotSwapped { .. })
                    && after_unknown.is_some_and(|prior| step.apply(prior).is_some())
                {
                    continue;
                }
                let Some(new_state) = step.apply(state) else {
                    continue;
                };
                let Some(new_floor) = advance(floor, model.ops[op].pos, step.writes_in(state))
                else {
                    continue;
                };
                let new_hash = [hash[0] ^ keys[op][0], hash[1] ^ keys[op][1]];
                let new_hash = leave(new_hash, state, new_state, &class_used);
                if cache.visit(config(new_hash, new_state, None, new_floor), usage) {
                    stack.push(Frame {
                        linearized: Linearized::Listed { node },
                        state,
                        floor,
                        hash,
                        after_unknown,
                    });
                    state = new_state;
                    floor = new_floor;
                    hash = new_hash;
                    after_unknown = None;
                    // Lift the call and its return out of the list.
                    let ret = return_node[op];
                    next[prev[node]] = next[node];
                    prev[next[node]] = prev[node];
                    next[prev[ret]] = next[ret];
                    prev[next[ret]] = prev[ret];
                    cursor = Cursor::Start;
                }
            }
            Cursor::Node(frontier) => {
                // A return: its operation must be linearized before it. Unknown operations
                // called by now may still make that possible.
                cursor = Cursor::Class {
                    candidate: 0,
                    frontier,
                };
            }
            Cursor::Stuck(stuck) => {
                // Nothing fits before this return: backtrack.
                if stuck > stuck_at {
                    stuck_at = stuck;
                    stuck_states.clear();
                }
                if stuck == stuck_at
                    && stuck_states.len() < 8
                    && !stuck_states.contains(&(state, floor))
                {
                    stuck_states.push((state, floor));
                }
                let Some(frame) = stack.pop() else {
                    let violation = explain(key, model, &events, stuck_at, &stuck_states, effects);
                    return KeyVerdict::Violation { violation, steps };
                };
                state = frame.state;
                floor = frame.floor;
                hash = frame.hash;
                after_unknown = frame.after_unknown;
                cursor = match frame.linearized {
                    Linearized::Listed { node } => {
                        // Unlift in reverse order.
                        let ret = return_node[events[node - 1].op];
                        next[prev[ret]] = ret;
                        prev[next[ret]] = ret;
                        next[prev[node]] = node;
                        prev[next[node]] = node;
                        Cursor::Node(next[node])
                    }
                    Linearized::Unknown {
                        class,
                        candidate,
                        frontier,
                    } => {
                        class_used[class] -= 1;
                        if let Some(shift) = counted[class] {
                            usage -= 1 << shift;
                        }
                        Cursor::Class {
                            candidate: candidate + 1,
                            frontier,
                        }
                    }
                };
            }
        }
    }
}

fn explain(
    key: &str,
    model: &Model,
    events: &[Event],
    stuck_at: usize,
    stuck_states: &[(u32, u64)],
    effects: &[KeyEffect],
) -> Violation {
    let blocking = &model.ops[events[stuck_at - 1].op];
    let by_id: HashMap<OpId, &Operation> = effects.iter().map(|e| (e.op.id, e.op)).collect();
    let describe = |m: &ModelOp| match m.source.and_then(|id| by_id.get(&id)) {
        Some(op) => op.describe(),
        None => format!(
            "final read of {key} = {}",
            match m.step {
                Step::Read(v) => model.value_name(v),
                _ => "?".into(),
            }
        ),
    };
    // Operations overlapping the blocking one, then the last few writes before it.
    let mut involved: Vec<&ModelOp> = model
        .ops
        .iter()
        .filter(|m| !std::ptr::eq(*m, blocking) && m.call <= blocking.ret && m.ret >= blocking.call)
        .take(MAX_LISTED)
        .collect();
    let mut earlier_writes: Vec<&ModelOp> = model
        .ops
        .iter()
        .filter(|m| m.ret < blocking.call && !matches!(m.step, Step::Read(_)))
        .collect();
    earlier_writes.sort_by_key(|m| m.ret);
    involved.extend(earlier_writes.iter().rev().take(3));
    involved.sort_by_key(|m| (m.call, m.source));
    // Values nothing observed are one state in the search; name the ones the involved
    // operations wrote.
    let unobserved: Vec<String> = involved
        .iter()
        .filter_map(|m| m.source.and_then(|id| by_id.get(&id)))
        .flat_map(|op| op.writes())
        .filter(|(k, _)| *k == key)
        .filter_map(|(_, v)| v)
        .filter(|v| {
            !model
                .values
                .iter()
                .any(|known| known.as_deref() == Some(*v))
        })
        .map(|v| format!("{v:?}"))
        .collect();
    let name = |s: u32| match s {
        UNOBSERVED if !unobserved.is_empty() => {
            format!("a value no read observed ({})", unobserved.join(" or "))
        }
        s => model.value_name(s),
    };
    let mut possible_values: Vec<String> = Vec::new();
    for (s, _) in stuck_states {
        let v = name(*s);
        if !possible_values.contains(&v) {
            possible_values.push(v);
        }
    }
    let possible_states: Vec<String> = stuck_states
        .iter()
        .map(|(s, floor)| format!("{} ({})", name(*s), floor_name(*floor)))
        .collect();
    let position = match blocking.pos {
        Some(p) if p % 2 == 0 => format!(" (a write at revision {})", p / 2),
        Some(p) => format!(" (a read at revision {})", p / 2),
        None => String::new(),
    };
    let mut explanation = format!(
        "no linearization of the ops up to {}: {}{position} cannot take effect at any point within its interval; the register could only hold {} just before it returned. Involved:",
        fmt_ns(blocking.ret),
        describe(blocking),
        possible_states.join(" or "),
    );
    for m in &involved {
        explanation.push_str("\n    ");
        explanation.push_str(&describe(m));
        if m.optional.is_some() {
            explanation.push_str(" (may take effect any time after its call, or never)");
        }
    }
    Violation {
        key: key.to_string(),
        blocking_op: blocking.source,
        prefix_ends_at: blocking.ret,
        possible_values,
        involved: involved.iter().filter_map(|m| m.source).collect(),
        explanation,
    }
}
