//! The whole checker against an independent brute-force one, on random small single-key
//! histories with revisions.
//!
//! The brute-force checker states the model directly: a history is correct when some
//! order of its operations (every answered one, any subset of those of unknown outcome)
//! respects real time and etcd's order of revisions (a write at its revision, strictly
//! after everything before it; a read at its header revision, after the writes up to it
//! and before those beyond), and replays on a register of (value, mod revision): puts and
//! successful swaps set it, a delete that deleted clears a present key, one that deleted
//! nothing and every read (a refused swap's read back too) see it exactly. A write of
//! unknown outcome takes any revision that fits. It tries every such order, with no
//! reduction, memo or shortcut, which is affordable for six operations and a final read.
//!
//! The histories are drawn from a sequential run (so about half are correct), half of
//! them then tampered with at one field: a value, a mod or header revision, a delete's
//! count, a swap's outcome, an interval. `check`'s verdict must be the brute force's on
//! every one. `CHECKER_CROSS_CHECK=<n>` runs `n` histories instead of the default.

use super::*;
use crate::rng::SeededRng;

/// How many histories the test compares by default.
const DEFAULT_HISTORIES: u64 = 6_000;

/// One item the brute force may place: an operation, or the final read.
#[derive(Clone, Debug)]
struct Item {
    call: u64,
    /// `None`: unknown outcome, optional.
    ret: Option<u64>,
    what: What,
}

/// What an item requires and does.
#[derive(Clone, Debug)]
enum What {
    /// A write of `value` (optionally compared with `expected`) at `revision` (`None`:
    /// any that fits).
    Write {
        value: String,
        expected: Option<Option<String>>,
        revision: Option<i64>,
    },
    /// A delete of a present key at `revision` (`None`: any that fits).
    Delete { revision: Option<i64> },
    /// Sees exactly `value` at header `revision` (`check_value: false`: sees anything but
    /// `not`).
    Read {
        value: Option<(String, Option<i64>)>,
        check_value: bool,
        not: Option<Option<String>>,
        revision: i64,
    },
}

type Register = Option<(String, i64)>;

fn items(h: &History, final_read: Option<&FinalRead>) -> Vec<Item> {
    let mut items = Vec::new();
    for o in &h.operations {
        let ret = o.is_ok().then_some(o.ret);
        let what = match (&o.kind, &o.outcome) {
            (_, Outcome::Failed { .. }) => continue,
            (OpKind::Put { value }, outcome) => What::Write {
                value: value.clone(),
                expected: None,
                revision: outcome.result().map(OpResult::revision),
            },
            (
                OpKind::Get { .. },
                Outcome::Ok(OpResult::Read {
                    value,
                    mod_revision,
                    revision,
                }),
            ) => What::Read {
                value: value.clone().map(|v| (v, *mod_revision)),
                check_value: true,
                not: None,
                revision: *revision,
            },
            (OpKind::Delete, Outcome::Ok(OpResult::Written { revision, deleted })) => {
                if *deleted == Some(0) {
                    What::Read {
                        value: None,
                        check_value: true,
                        not: None,
                        revision: *revision,
                    }
                } else {
                    What::Delete {
                        revision: Some(*revision),
                    }
                }
            }
            (OpKind::Delete, _) => What::Delete { revision: None },
            (
                OpKind::CompareAndSwap { expected, new },
                Outcome::Ok(OpResult::Swapped {
                    succeeded: true,
                    revision,
                    ..
                }),
            ) => What::Write {
                value: new.clone(),
                expected: Some(expected.clone()),
                revision: Some(*revision),
            },
            (
                OpKind::CompareAndSwap { expected, .. },
                Outcome::Ok(OpResult::Swapped {
                    succeeded: false,
                    revision,
                    current,
                }),
            ) => match current.get(&o.key) {
                Some(kv) => What::Read {
                    value: kv.clone().map(|kv| (kv.value, Some(kv.mod_revision))),
                    check_value: true,
                    not: Some(expected.clone()),
                    revision: *revision,
                },
                None => What::Read {
                    value: None,
                    check_value: false,
                    not: Some(expected.clone()),
                    revision: *revision,
                },
            },
            (OpKind::CompareAndSwap { expected, new }, _) => What::Write {
                value: new.clone(),
                expected: Some(expected.clone()),
                revision: None,
            },
            _ => continue,
        };
        items.push(Item {
            call: o.call,
            ret,
            what,
        });
    }
    if let Some(f) = final_read {
        let end = h.operations.iter().map(|o| o.ret).max().unwrap_or(0) + 1;
        let value = f.keys.get(K).cloned().flatten();
        items.push(Item {
            call: end,
            ret: Some(end + 1),
            what: What::Read {
                value: value.map(|kv| (kv.value, Some(kv.mod_revision))),
                check_value: true,
                not: None,
                revision: f.revision_of(K),
            },
        });
    }
    items
}

struct Brute {
    items: Vec<Item>,
    max_revision: i64,
}

impl Brute {
    /// Whether some order places every answered item.
    fn correct(&self) -> bool {
        self.place(0, &None, 0)
    }

    /// `last`: the furthest position placed, in half revisions (a write at `2r`, a read
    /// at `2r + 1`).
    fn place(&self, placed: u64, register: &Register, last: i64) -> bool {
        let required = self
            .items
            .iter()
            .enumerate()
            .all(|(i, it)| it.ret.is_none() || placed & (1 << i) != 0);
        if required {
            return true;
        }
        for (i, item) in self.items.iter().enumerate() {
            if placed & (1 << i) != 0 {
                continue;
            }
            // Real time: everything that returned before this was called comes first.
            let waits = self.items.iter().enumerate().any(|(j, other)| {
                placed & (1 << j) == 0 && other.ret.is_some_and(|r| r < item.call)
            });
            if waits {
                continue;
            }
            let next = placed | (1 << i);
            let holds =
                |expected: &Option<String>| register.as_ref().map(|(v, _)| v) == expected.as_ref();
            let fits = match &item.what {
                What::Read {
                    value,
                    check_value,
                    not,
                    revision,
                } => {
                    let seen_ok = !*check_value
                        || match (value, register) {
                            (None, None) => true,
                            (Some((v, m)), Some((rv, rm))) => v == rv && m.is_none_or(|m| m == *rm),
                            _ => false,
                        };
                    let not_ok = not.as_ref().is_none_or(|n| !holds(n));
                    let at = 2 * revision + 1;
                    seen_ok && not_ok && at >= last && self.place(next, register, at)
                }
                What::Write {
                    value,
                    expected,
                    revision,
                } => {
                    expected.as_ref().is_none_or(holds)
                        && self
                            .revisions(*revision, last)
                            .any(|r| self.place(next, &Some((value.clone(), r)), 2 * r))
                }
                What::Delete { revision } => {
                    register.is_some()
                        && self
                            .revisions(*revision, last)
                            .any(|r| self.place(next, &None, 2 * r))
                }
            };
            if fits {
                return true;
            }
        }
        false
    }

    /// The revisions a write may take after position `last`: its own, if beyond; any
    /// that fits when unknown.
    fn revisions(&self, known: Option<i64>, last: i64) -> Box<dyn Iterator<Item = i64>> {
        match known {
            Some(r) => Box::new(std::iter::once(r).filter(move |r| 2 * r > last)),
            None => Box::new((last / 2 + 1)..=self.max_revision),
        }
    }
}

/// A sequential run of up to six operations on one key, with revisions (other keys'
/// writes move the revision on too), some writes of unknown outcome.
fn generate(rng: &mut SeededRng) -> (History, Option<FinalRead>) {
    let n = 2 + rng.below(5);
    let mut revision = 1i64;
    let mut register: Register = None;
    let mut written: Vec<String> = Vec::new();
    let mut ops = Vec::new();
    for i in 0..n {
        let point = 20 * i + 30;
        let call = point - rng.below(25);
        let ret = point + rng.below(25);
        if rng.chance(1, 3) {
            revision += 1;
        }
        let unknown = rng.chance(1, 5);
        let applies = !unknown || rng.chance(1, 2);
        let value = format!("v{i}");
        let current = register.as_ref().map(|(v, _)| v.clone());
        let (kind, result) = match rng.below(4) {
            0 => {
                if applies {
                    revision += 1;
                    register = Some((value.clone(), revision));
                }
                written.push(value.clone());
                (
                    OpKind::Put { value },
                    OpResult::Written {
                        revision,
                        deleted: None,
                    },
                )
            }
            1 => (
                OpKind::Get { linearizable: true },
                OpResult::Read {
                    value: current,
                    mod_revision: register.as_ref().map(|(_, m)| *m),
                    revision,
                },
            ),
            2 => {
                let deleted = i64::from(register.is_some());
                if applies && register.is_some() {
                    revision += 1;
                    register = None;
                }
                (
                    OpKind::Delete,
                    OpResult::Written {
                        revision,
                        deleted: Some(deleted),
                    },
                )
            }
            _ => {
                let expected = match rng.below(3) {
                    0 => current.clone(),
                    1 => None,
                    _ => written
                        .get(rng.below(written.len().max(1) as u64) as usize)
                        .cloned(),
                };
                let succeeded = expected == current;
                let mut read_back = std::collections::BTreeMap::new();
                if !succeeded && rng.chance(3, 4) {
                    let kv = register.as_ref().map(|(v, m)| KeyValue {
                        value: v.clone(),
                        mod_revision: *m,
                    });
                    read_back.insert(K.to_string(), kv);
                }
                if succeeded && applies {
                    revision += 1;
                    register = Some((value.clone(), revision));
                }
                written.push(value.clone());
                (
                    OpKind::CompareAndSwap {
                        expected,
                        new: value,
                    },
                    OpResult::Swapped {
                        succeeded,
                        revision,
                        current: read_back,
                    },
                )
            }
        };
        let outcome = if unknown && kind.is_write() {
            Outcome::Unknown {
                reason: "generated".into(),
            }
        } else {
            Outcome::Ok(result)
        };
        ops.push(op(i, kind, call, ret.max(call), outcome));
    }
    let fin = rng.chance(1, 2).then(|| FinalRead {
        revision,
        keys: [(
            K.to_string(),
            register.map(|(value, mod_revision)| KeyValue {
                value,
                mod_revision,
            }),
        )]
        .into(),
        ..FinalRead::default()
    });
    (history(ops), fin)
}

/// Tampers with one field of the history (or its final read).
fn tamper(h: &mut History, fin: &mut Option<FinalRead>, rng: &mut SeededRng) {
    let shift = |rng: &mut SeededRng, r: &mut i64| {
        *r = (*r + if rng.chance(1, 2) { 1 } else { -1 }).max(1);
    };
    if let Some(f) = fin.as_mut()
        && rng.chance(1, 5)
    {
        match (rng.below(3), f.keys.get_mut(K)) {
            (0, Some(Some(kv))) => shift(rng, &mut kv.mod_revision),
            (1, Some(v)) => *v = None,
            _ => shift(rng, &mut f.revision),
        }
        return;
    }
    let n = h.operations.len() as u64;
    let values: Vec<String> = h
        .operations
        .iter()
        .filter_map(|o| o.kind.written_value().map(str::to_string))
        .collect();
    let o = &mut h.operations[rng.below(n) as usize];
    if rng.chance(1, 4) {
        o.call = rng.below(20 * n + 40);
        o.ret = o.call + rng.below(40);
        return;
    }
    match &mut o.outcome {
        Outcome::Ok(OpResult::Read {
            value,
            mod_revision,
            revision,
        }) => match rng.below(3) {
            0 => {
                *value = (!values.is_empty() && rng.chance(2, 3))
                    .then(|| values[rng.below(values.len() as u64) as usize].clone());
                if value.is_none() {
                    *mod_revision = None;
                } else if mod_revision.is_none() {
                    *mod_revision = Some(*revision);
                }
            }
            1 => {
                if let Some(m) = mod_revision {
                    shift(rng, m);
                }
            }
            _ => shift(rng, revision),
        },
        Outcome::Ok(OpResult::Written { revision, deleted }) => {
            if let Some(d) = deleted.filter(|_| rng.chance(1, 2)) {
                *deleted = Some(1 - d);
            } else {
                shift(rng, revision);
            }
        }
        Outcome::Ok(OpResult::Swapped {
            succeeded,
            revision,
            current,
        }) => match rng.below(3) {
            0 => *succeeded = !*succeeded,
            1 => {
                if let Some(kv) = current.get_mut(K) {
                    *kv = None;
                } else {
                    shift(rng, revision);
                }
            }
            _ => shift(rng, revision),
        },
        _ => {
            o.outcome = Outcome::Unknown {
                reason: "tampered".into(),
            };
        }
    }
}

#[test]
fn the_checker_agrees_with_a_brute_force_checker_on_random_histories() {
    let histories = std::env::var("CHECKER_CROSS_CHECK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_HISTORIES);
    let options = CheckOptions {
        threads: 1,
        ..CheckOptions::default()
    };
    let mut rng = SeededRng::new(0x000b_207e);
    let (mut correct, mut broken) = (0, 0);
    for i in 0..histories {
        let (mut h, mut fin) = generate(&mut rng);
        if rng.chance(1, 2) {
            tamper(&mut h, &mut fin, &mut rng);
        }
        let items = items(&h, fin.as_ref());
        let max_revision = items
            .iter()
            .map(|it| match &it.what {
                What::Write { revision, .. } | What::Delete { revision } => revision.unwrap_or(0),
                What::Read { revision, .. } => *revision,
            })
            .max()
            .unwrap_or(0)
            + 2 * items.len() as i64
            + 2;
        let expected = Brute {
            items,
            max_revision,
        }
        .correct();
        let report = check(&h, fin.as_ref(), &options);
        assert_ne!(
            report.verdict(),
            Verdict::Undecided,
            "history {i}: {report}"
        );
        assert_eq!(
            report.is_pass(),
            expected,
            "history {i}: the brute force says {}, the checker:\n{report}\n{}\nfinal {:?}",
            if expected { "correct" } else { "broken" },
            h.operations
                .iter()
                .map(Operation::describe)
                .collect::<Vec<_>>()
                .join("\n"),
            fin
        );
        if expected {
            correct += 1;
        } else {
            broken += 1;
        }
    }
    println!("{histories} histories: {correct} correct, {broken} broken, 0 disagreements");
    assert!(
        correct > histories / 5 && broken > histories / 5,
        "{correct} correct and {broken} broken: both must be well represented"
    );
}
