//! Leases that break etcd's lease guarantees, and ones that keep them.

use super::*;
use crate::history::{Interval, Lease, LeaseProbe, LeaseSeen};

const S: u64 = 1_000_000_000;

/// A lease of TTL 5 s granted at 0, its key attached at 0.1 s.
fn lease(probes: Vec<(u64, LeaseSeen)>, revoked: Option<(u64, bool)>) -> Lease {
    let at = |call: u64| Interval {
        call,
        ret: call + S / 100,
    };
    Lease {
        client: 1,
        id: 0x42,
        ttl: 5,
        granted: at(0),
        key: "l/1-1".into(),
        attached: Some((at(S / 10), true)),
        probes: probes
            .into_iter()
            .map(|(call, seen)| LeaseProbe { at: at(call), seen })
            .collect(),
        revoked: revoked.map(|(call, ok)| (at(call), ok)),
    }
}

fn kept(ttl: i64) -> LeaseSeen {
    LeaseSeen::KeptAlive { ttl }
}

fn key(present: bool) -> LeaseSeen {
    LeaseSeen::Key {
        present,
        revision: 10,
    }
}

fn check_one(l: Lease) -> Report {
    let h = History {
        leases: vec![l],
        ..History::default()
    };
    run(&h, None)
}

fn kinds(report: &Report) -> Vec<LeaseAnomalyKind> {
    report.leases.anomalies.iter().map(|a| a.kind).collect()
}

#[test]
fn kept_alive_then_expired_or_revoked_passes() {
    // Renewed every second for 3 s, then left: gone 5 s after the last renewal.
    let report = check_one(lease(
        vec![
            (S, kept(5)),
            (S + S / 20, key(true)),
            (2 * S, kept(5)),
            (3 * S, kept(5)),
            (7 * S, LeaseSeen::TimeToLive { ttl: 1 }),
            (8 * S + S / 10, LeaseSeen::TimeToLive { ttl: -1 }),
            (8 * S + S / 5, key(false)),
        ],
        None,
    ));
    assert!(report.is_pass(), "{report}");
    assert_eq!(report.leases.renewals, 3);
    assert_eq!(report.leases.expired, 1);
    // Revoked while kept alive: gone at once, and its key with it.
    let report = check_one(lease(
        vec![(S, kept(5)), (2 * S, key(false))],
        Some((S + S / 2, true)),
    ));
    assert!(report.is_pass(), "{report}");
}

#[test]
fn a_lease_gone_while_kept_alive_is_caught() {
    // Renewed at 3 s for 5 s, found gone at 6 s.
    for gone in [LeaseSeen::TimeToLive { ttl: -1 }, kept(0), key(false)] {
        let report = check_one(lease(vec![(3 * S, kept(5)), (6 * S, gone.clone())], None));
        assert_eq!(
            kinds(&report),
            vec![LeaseAnomalyKind::ExpiredEarly],
            "{gone:?}: {report}"
        );
    }
}

#[test]
fn a_lease_back_after_it_was_gone_is_caught() {
    let report = check_one(lease(vec![(6 * S, kept(0)), (7 * S, kept(5))], None));
    assert_eq!(
        kinds(&report),
        vec![LeaseAnomalyKind::Resurrected],
        "{report}"
    );
}

#[test]
fn a_key_outliving_its_lease_is_caught() {
    // Expired (no renewal since the grant) and its key still read.
    let report = check_one(lease(
        vec![
            (6 * S, LeaseSeen::TimeToLive { ttl: -1 }),
            (7 * S, key(true)),
        ],
        None,
    ));
    assert_eq!(
        kinds(&report),
        vec![LeaseAnomalyKind::KeyOutlivedLease],
        "{report}"
    );
    // Revoked, acknowledged, and its key still read.
    let report = check_one(lease(vec![(2 * S, key(true))], Some((S, true))));
    assert_eq!(
        kinds(&report),
        vec![LeaseAnomalyKind::KeyOutlivedLease],
        "{report}"
    );
}
