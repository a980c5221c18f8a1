//! The checks beside linearizability: impossible reads, the final state against the
//! acknowledged writes, and members' hashes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{
    HashMismatch, ImpossibleRead, LostWrite, MemberHash,
    effects::{Effect, effects},
    revisions::acknowledged_revision,
};
use crate::history::{FinalRead, History, OpResult, Operation, Outcome, fmt_ns};

/// Reads (linearizable or serializable, ranges and transactions' reads back, the final
/// read and the members' reads) of values no write explains: never written by an ok or
/// unknown write on that key (nor the initial value), or written only by operations
/// called after the read returned.
pub fn check_reads(history: &History, final_read: Option<&FinalRead>) -> Vec<ImpossibleRead> {
    // key -> value -> earliest call of a write that may have produced it.
    let mut may_write: HashMap<(&str, &str), u64> = HashMap::new();
    let mut failed_write: HashSet<(&str, &str)> = HashSet::new();
    for (key, value) in &history.initial {
        if let Some(v) = value {
            may_write.insert((key, v), 0);
        }
    }
    for op in &history.operations {
        for (key, value) in op.writes() {
            let Some(v) = value else { continue };
            if matches!(op.outcome, Outcome::Failed { .. }) {
                failed_write.insert((key, v));
                continue;
            }
            let call = may_write.entry((key, v)).or_insert(op.call);
            *call = (*call).min(op.call);
        }
    }
    let judge = |key: &str, value: &str, returned: u64| -> Option<String> {
        match may_write.get(&(key, value)) {
            None if failed_write.contains(&(key, value)) => {
                Some("written only by an operation that was reported failed".into())
            }
            None => Some("never written".into()),
            Some(call) if *call > returned => Some(format!(
                "read before any write of it was called (first writer called at {})",
                fmt_ns(*call)
            )),
            Some(_) => None,
        }
    };
    let keys = history.keys();
    let mut found = Vec::new();
    for op in &history.operations {
        for e in effects(op, &keys) {
            if let Effect::Read { value: Some(v), .. } = e.effect
                && let Some(reason) = judge(e.key, v, op.ret)
            {
                found.push(ImpossibleRead {
                    key: e.key.to_string(),
                    op: Some(op.id),
                    value: v.to_string(),
                    reason,
                });
            }
        }
    }
    let finals = final_read.iter().flat_map(|f| {
        f.keys
            .iter()
            .chain(f.members.iter().flat_map(|m| m.keys.iter()))
    });
    for (key, fv) in finals {
        if let Some(fv) = fv
            && let Some(reason) = judge(key, &fv.value, u64::MAX)
        {
            found.push(ImpossibleRead {
                key: key.clone(),
                op: None,
                value: fv.value.clone(),
                reason,
            });
        }
    }
    found
}

/// Compares the final read with the history: returns the acknowledged writes lost, and
/// other anomalies (a final value with a different revision than its acknowledged write).
pub fn check_final_state(
    history: &History,
    final_read: &FinalRead,
) -> (Vec<LostWrite>, Vec<String>) {
    let mut lost = Vec::new();
    let mut anomalies = Vec::new();
    let keys: BTreeSet<String> = history
        .keys()
        .into_iter()
        .chain(final_read.keys.keys().cloned())
        .collect();
    let mut by_key: BTreeMap<&str, Vec<(&Operation, Option<&str>)>> = BTreeMap::new();
    for op in &history.operations {
        for e in effects(op, &keys) {
            let value = match e.effect {
                Effect::Write { value, .. } => Some(value),
                Effect::Delete { .. } => None,
                _ => continue,
            };
            by_key.entry(e.key).or_default().push((op, value));
        }
    }
    let none = Vec::new();
    for (key, final_value) in &final_read.keys {
        let writes = by_key.get(key.as_str()).unwrap_or(&none);
        // Acknowledged writes of a value, with their revisions.
        let acknowledged: Vec<(&Operation, &str, i64)> = writes
            .iter()
            .filter_map(|(op, value)| Some((*op, (*value)?, acknowledged_revision(op)?)))
            .collect();
        match final_value {
            Some(fv) => {
                let producers: Vec<&Operation> = writes
                    .iter()
                    .filter(|(_, value)| *value == Some(fv.value.as_str()))
                    .map(|(op, _)| *op)
                    .collect();
                let from_initial =
                    history.initial.get(key).and_then(|v| v.as_deref()) == Some(fv.value.as_str());
                let explained = from_initial
                    || producers
                        .iter()
                        .any(|op| acknowledged_revision(op).is_none_or(|r| r == fv.mod_revision));
                if !producers.is_empty() && !explained {
                    let revisions: Vec<i64> = producers
                        .iter()
                        .filter_map(|op| acknowledged_revision(op))
                        .collect();
                    anomalies.push(format!(
                        "{key}: final value {:?} has mod revision {} but its write was acknowledged at revision {revisions:?}",
                        fv.value, fv.mod_revision
                    ));
                }
                for (op, value, revision) in &acknowledged {
                    if *revision > fv.mod_revision {
                        lost.push(LostWrite {
                            key: key.clone(),
                            op: op.id,
                            value: value.to_string(),
                            revision: *revision,
                            final_value: Some(fv.clone()),
                        });
                    }
                }
            }
            None => {
                let unknown_delete = writes.iter().any(|(op, value)| {
                    value.is_none() && matches!(op.outcome, Outcome::Unknown { .. })
                });
                let last_delete = writes
                    .iter()
                    .filter(|(_, value)| value.is_none())
                    .filter_map(|(op, _)| match &op.outcome {
                        // A delete whose count was not recorded may be the one.
                        Outcome::Ok(OpResult::Written { revision, deleted })
                            if *deleted != Some(0) =>
                        {
                            Some(*revision)
                        }
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                for (op, value, revision) in &acknowledged {
                    if !unknown_delete && *revision >= last_delete {
                        lost.push(LostWrite {
                            key: key.clone(),
                            op: op.id,
                            value: value.to_string(),
                            revision: *revision,
                            final_value: None,
                        });
                    }
                }
            }
        }
    }
    (lost, anomalies)
}

/// Groups members' `HashKV` answers by (hash revision, compaction revision) and reports
/// every group whose hashes differ. Answers at different revisions are not comparable.
pub fn compare_hashes(results: &[MemberHash]) -> Vec<HashMismatch> {
    let mut groups: BTreeMap<(i64, i64), Vec<&MemberHash>> = BTreeMap::new();
    for r in results {
        groups
            .entry((r.hash_revision, r.compact_revision))
            .or_default()
            .push(r);
    }
    let mut mismatches = Vec::new();
    for ((hash_revision, compact_revision), members) in groups {
        let mut by_hash: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for m in &members {
            by_hash.entry(m.hash).or_default().push(m.member_id);
        }
        if by_hash.len() < 2 {
            continue;
        }
        let largest = by_hash.values().map(Vec::len).max().unwrap_or(0);
        let majority: Vec<&Vec<u64>> = by_hash.values().filter(|g| g.len() == largest).collect();
        let disagreeing = if majority.len() == 1 {
            by_hash
                .values()
                .filter(|g| g.len() != largest)
                .flatten()
                .copied()
                .collect()
        } else {
            members.iter().map(|m| m.member_id).collect()
        };
        mismatches.push(HashMismatch {
            hash_revision,
            compact_revision,
            hashes: members.iter().map(|m| (m.member_id, m.hash)).collect(),
            disagreeing,
        });
    }
    mismatches
}
