//! What each operation did to each key it touched, as every check sees it: a range read is
//! a read of every key under its prefix, a transaction a write (or a read back) of each of
//! its keys, a delete that deleted nothing a read of the key's absence.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{History, OpKind, OpResult, Operation, Outcome};

/// One operation's effect on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect<'a> {
    /// Set the key to `value`; with `expected`, only if the key held it (a swap, or one key
    /// of a transaction).
    Write {
        value: &'a str,
        expected: Option<Option<&'a str>>,
    },
    /// Deleted the key: `existed` is `Some(true)` when it deleted it, `Some(false)` when it
    /// found it absent (and created no revision), `None` when not known.
    Delete { existed: Option<bool> },
    /// Read the key at the operation's header revision (`None`: absent).
    Read {
        value: Option<&'a str>,
        mod_revision: Option<i64>,
        linearizable: bool,
    },
    /// A compare that did not hold, nothing read back: the key held anything but
    /// `expected`.
    NotSwapped { expected: Option<&'a str> },
}

/// One operation's effect on one key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyEffect<'a> {
    pub(crate) op: &'a Operation,
    pub(crate) key: &'a str,
    pub(crate) effect: Effect<'a>,
}

/// What `op` did to each key (`keys`: every key of the history, for the keys a range
/// covers). A failed operation did nothing; one of unknown outcome may have written but
/// observed nothing.
pub(crate) fn effects<'a>(op: &'a Operation, keys: &'a BTreeSet<String>) -> Vec<KeyEffect<'a>> {
    let one = |key: &'a str, effect: Effect<'a>| vec![KeyEffect { op, key, effect }];
    let unknown = matches!(op.outcome, Outcome::Unknown { .. });
    match (&op.kind, &op.outcome) {
        (_, Outcome::Failed { .. }) => Vec::new(),
        (OpKind::Put { value }, _) => one(
            &op.key,
            Effect::Write {
                value,
                expected: None,
            },
        ),
        (
            OpKind::Get { linearizable },
            Outcome::Ok(OpResult::Read {
                value,
                mod_revision,
                ..
            }),
        ) => one(
            &op.key,
            Effect::Read {
                value: value.as_deref(),
                mod_revision: *mod_revision,
                linearizable: *linearizable,
            },
        ),
        (OpKind::Delete, Outcome::Ok(OpResult::Written { deleted, .. })) => one(
            &op.key,
            Effect::Delete {
                existed: deleted.map(|n| n > 0),
            },
        ),
        (OpKind::Delete, _) if unknown => one(&op.key, Effect::Delete { existed: None }),
        (OpKind::CompareAndSwap { expected, new }, outcome) => swap_effects(
            op,
            std::iter::once((op.key.as_str(), expected.as_deref(), new.as_str())),
            outcome,
        ),
        (OpKind::Txn { writes }, outcome) => swap_effects(
            op,
            writes
                .iter()
                .map(|w| (w.key.as_str(), w.expected.as_deref(), w.new.as_str())),
            outcome,
        ),
        (OpKind::Range { linearizable }, Outcome::Ok(OpResult::Ranged { kvs, .. })) => keys
            .iter()
            .filter(|k| k.starts_with(op.key.as_str()))
            .map(|k| {
                let kv = kvs.get(k);
                KeyEffect {
                    op,
                    key: k,
                    effect: Effect::Read {
                        value: kv.map(|kv| kv.value.as_str()),
                        mod_revision: kv.map(|kv| kv.mod_revision),
                        linearizable: *linearizable,
                    },
                }
            })
            .collect(),
        // Reads of unknown outcome observed nothing; answers of the wrong shape say nothing.
        _ => Vec::new(),
    }
}

/// The effects of a compare-and-swap or a transaction over `(key, expected, new)`.
fn swap_effects<'a>(
    op: &'a Operation,
    writes: impl Iterator<Item = (&'a str, Option<&'a str>, &'a str)>,
    outcome: &'a Outcome,
) -> Vec<KeyEffect<'a>> {
    writes
        .filter_map(|(key, expected, new)| {
            let effect = match outcome {
                Outcome::Ok(OpResult::Swapped {
                    succeeded: false,
                    current,
                    ..
                }) => match current.get(key) {
                    Some(kv) => Effect::Read {
                        value: kv.as_ref().map(|kv| kv.value.as_str()),
                        mod_revision: kv.as_ref().map(|kv| kv.mod_revision),
                        linearizable: true,
                    },
                    None => Effect::NotSwapped { expected },
                },
                Outcome::Ok(OpResult::Swapped {
                    succeeded: true, ..
                })
                | Outcome::Unknown { .. } => Effect::Write {
                    value: new,
                    expected: Some(expected),
                },
                _ => return None,
            };
            Some(KeyEffect { op, key, effect })
        })
        .collect()
}

/// Every operation's effects, grouped by key (every key of the history present, possibly
/// with none).
pub(crate) fn by_key<'a>(
    history: &'a History,
    keys: &'a BTreeSet<String>,
) -> BTreeMap<&'a str, Vec<KeyEffect<'a>>> {
    let mut grouped: BTreeMap<&str, Vec<KeyEffect<'a>>> =
        keys.iter().map(|k| (k.as_str(), Vec::new())).collect();
    for op in &history.operations {
        for e in effects(op, keys) {
            grouped.entry(e.key).or_default().push(e);
        }
    }
    grouped
}

/// The position of an operation in etcd's order of revisions, in half revisions: a write
/// at revision `r` is at `2r`, a read answered at header revision `r` at `2r + 1` (after
/// the write of `r`, before that of `r + 1`). `None` when not known (an unknown outcome,
/// unless its revision was learned from what observed it: `applied`).
pub(crate) fn position(op: &Operation, applied: Option<i64>) -> Option<u64> {
    // Revision 0 is none recorded (etcd's revisions start at 1).
    let half = |r: i64| u64::try_from(r).ok().filter(|r| *r > 0).map(|r| 2 * r);
    match &op.outcome {
        Outcome::Ok(result) => {
            let r = result.revision();
            match (&op.kind, result) {
                (
                    OpKind::Delete,
                    OpResult::Written {
                        deleted: Some(0), ..
                    },
                ) => half(r).map(|p| p + 1),
                (OpKind::Delete, OpResult::Written { deleted: None, .. }) => None,
                _ if op.is_acknowledged_write() => half(r),
                _ => half(r).map(|p| p + 1),
            }
        }
        Outcome::Unknown { .. } => applied.and_then(half),
        Outcome::Failed { .. } => None,
    }
}
