//! Generated linearizable histories, for tests and benchmarks of the checker.

use crate::{
    history::{FinalRead, History, KeyValue, OpId, OpKind, OpResult, Operation, Outcome},
    rng::SeededRng,
};

/// A linearizable history with its final read, for tests and benchmarks of the checker:
/// a sequential register per key (`k0`, `k1`, ...), `n` operations 100 ns apart, each
/// operation's interval drawn at random up to 300 ns either side of its linearization
/// point (so about six overlap at any time), `unknown_per_mille` of the writes with an
/// unknown outcome, half of which took effect. The same arguments give the same history.
pub fn synthetic_history(
    seed: u64,
    n: usize,
    keys: u64,
    unknown_per_mille: u64,
) -> (History, FinalRead) {
    let mut rng = SeededRng::new(seed);
    let mut state: Vec<Option<(String, i64)>> = vec![None; keys as usize];
    let mut revision = 1i64;
    let mut ops = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let point = (i + 1) * 100 + 400;
        let call = point - 1 - rng.below(300);
        let ret = point + 1 + rng.below(300);
        let k = rng.below(keys) as usize;
        let current = state[k].clone();
        let unknown = rng.below(1000) < unknown_per_mille;
        let applies = !unknown || rng.chance(1, 2);
        let roll = rng.below(100);
        let (kind, result) = if roll < 30 {
            let value = format!("v{i}");
            if applies {
                revision += 1;
                state[k] = Some((value.clone(), revision));
            }
            (
                OpKind::Put { value },
                OpResult::Written {
                    revision,
                    deleted: None,
                },
            )
        } else if roll < 65 {
            let result = OpResult::Read {
                value: current.as_ref().map(|(v, _)| v.clone()),
                mod_revision: current.as_ref().map(|(_, r)| *r),
                revision,
            };
            let linearizable = roll < 60;
            (OpKind::Get { linearizable }, result)
        } else if roll < 75 {
            let deleted = i64::from(current.is_some());
            if applies && current.is_some() {
                revision += 1;
                state[k] = None;
            }
            (
                OpKind::Delete,
                OpResult::Written {
                    revision,
                    deleted: Some(deleted),
                },
            )
        } else {
            let current_value = current.as_ref().map(|(v, _)| v.clone());
            let expected = if rng.chance(1, 2) {
                current_value.clone()
            } else {
                Some(format!("v{}", rng.below(i + 1)))
            };
            let new = format!("v{i}");
            let succeeded = expected == current_value;
            if applies && succeeded {
                revision += 1;
                state[k] = Some((new.clone(), revision));
            }
            // A refused swap reads the key back.
            let current = if succeeded {
                Default::default()
            } else {
                let kv = current.map(|(value, mod_revision)| KeyValue {
                    value,
                    mod_revision,
                });
                [(format!("k{k}"), kv)].into()
            };
            let result = OpResult::Swapped {
                succeeded,
                revision,
                current,
            };
            (OpKind::CompareAndSwap { expected, new }, result)
        };
        let outcome = if unknown && kind.is_write() {
            Outcome::Unknown {
                reason: "generated".into(),
            }
        } else {
            Outcome::Ok(result)
        };
        ops.push(Operation {
            id: 0,
            client: (i % 8) as u32,
            key: format!("k{k}"),
            kind,
            call,
            ret,
            outcome,
            member: None,
        });
    }
    ops.sort_by_key(|op| op.call);
    for (id, op) in ops.iter_mut().enumerate() {
        op.id = id as OpId;
    }
    let keys = state
        .into_iter()
        .enumerate()
        .map(|(k, v)| {
            let value = v.map(|(value, mod_revision)| KeyValue {
                value,
                mod_revision,
            });
            (format!("k{k}"), value)
        })
        .collect();
    let final_read = FinalRead {
        revision,
        keys,
        ..FinalRead::default()
    };
    (
        History {
            operations: ops,
            ..History::default()
        },
        final_read,
    )
}
