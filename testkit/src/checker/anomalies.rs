//! The checks beside linearizability: impossible reads, the final state against the
//! acknowledged writes, revisions in real time, and members' hashes.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{HashMismatch, ImpossibleRead, LostWrite, MemberHash, RevisionRegression};
use crate::history::{FinalRead, History, OpId, OpKind, OpResult, Operation, Outcome, fmt_ns};

/// Reads (linearizable or serializable, and the final read) of values no write explains:
/// never written by an ok or unknown put or compare-and-swap on that key (nor the initial
/// value), or written only by operations called after the read returned.
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
        if let Some(v) = op.kind.written_value() {
            if matches!(op.outcome, Outcome::Failed { .. }) {
                failed_write.insert((&op.key, v));
                continue;
            }
            let call = may_write.entry((&op.key, v)).or_insert(op.call);
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
    let mut found = Vec::new();
    for op in &history.operations {
        if let (OpKind::Get { .. }, Outcome::Ok(OpResult::Read { value: Some(v), .. })) =
            (&op.kind, &op.outcome)
            && let Some(reason) = judge(&op.key, v, op.ret)
        {
            found.push(ImpossibleRead {
                key: op.key.clone(),
                op: Some(op.id),
                value: v.clone(),
                reason,
            });
        }
    }
    for (key, fv) in final_read.iter().flat_map(|f| &f.keys) {
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
    for (key, final_value) in &final_read.keys {
        let ops: Vec<&Operation> = history
            .operations
            .iter()
            .filter(|op| &op.key == key)
            .collect();
        let acknowledged: Vec<(&Operation, &str, i64)> = ops
            .iter()
            .filter(|op| op.is_acknowledged_write())
            .filter_map(|op| {
                let v = op.kind.written_value()?;
                Some((*op, v, op.outcome.result()?.revision()))
            })
            .collect();
        match final_value {
            Some(fv) => {
                let producers: Vec<&Operation> = ops
                    .iter()
                    .copied()
                    .filter(|op| {
                        op.kind.written_value() == Some(fv.value.as_str())
                            && !matches!(op.outcome, Outcome::Failed { .. })
                    })
                    .collect();
                let from_initial =
                    history.initial.get(key).and_then(|v| v.as_deref()) == Some(fv.value.as_str());
                let explained = from_initial
                    || producers.iter().any(|op| match op.outcome.result() {
                        None => true,
                        Some(r) => !op.is_acknowledged_write() || r.revision() == fv.mod_revision,
                    });
                if !producers.is_empty() && !explained {
                    let revisions: Vec<i64> = producers
                        .iter()
                        .filter_map(|op| op.outcome.result().map(OpResult::revision))
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
                let unknown_delete = ops.iter().any(|op| {
                    op.kind == OpKind::Delete && matches!(op.outcome, Outcome::Unknown { .. })
                });
                let last_delete = ops
                    .iter()
                    .filter(|op| op.kind == OpKind::Delete)
                    .filter_map(|op| op.outcome.result().map(OpResult::revision))
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

/// Every ok operation called after another ok operation returned must see a revision at
/// least as high. Serializable gets may serve an older revision, so they are only checked
/// as the earlier operation. Returns every regression (each later op once, paired with the
/// highest revision returned before its call).
pub fn check_revisions(history: &History) -> Vec<RevisionRegression> {
    let mut done: Vec<(u64, i64, OpId)> = Vec::new();
    let mut called: Vec<(u64, i64, OpId)> = Vec::new();
    for op in &history.operations {
        let Some(result) = op.outcome.result() else {
            continue;
        };
        done.push((op.ret, result.revision(), op.id));
        if op.kind
            != (OpKind::Get {
                linearizable: false,
            })
        {
            called.push((op.call, result.revision(), op.id));
        }
    }
    done.sort_unstable();
    called.sort_unstable();
    let mut regressions = Vec::new();
    let mut highest: Option<(i64, OpId)> = None;
    let mut returned = done.iter().peekable();
    for (call, revision, id) in called {
        while let Some((_, rev, done_id)) = returned.next_if(|(ret, ..)| *ret < call) {
            if highest.is_none_or(|(h, _)| *rev > h) {
                highest = Some((*rev, *done_id));
            }
        }
        if let Some((h, earlier)) = highest
            && revision < h
        {
            regressions.push(RevisionRegression {
                earlier,
                earlier_revision: h,
                later: id,
                later_revision: revision,
            });
        }
    }
    regressions
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
