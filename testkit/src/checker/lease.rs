//! Leases against etcd's lease guarantees: a lease lives at least its TTL past each grant
//! or keep-alive (etcd's leader extends, never shortens, what a new term inherits), once
//! gone it never comes back, and the key attached to it goes with it.
//!
//! A keep-alive sent at `c` that answered TTL `t > 0` reached the leader after `c`, so the
//! lease expires no sooner than `c + t`: any sign of it gone that returned before then
//! (a keep-alive answering 0, `TimeToLive` answering -1, a linearizable read finding its
//! key absent), unless a revocation was sent first, is an early expiry. Times are the
//! history's monotonic clock, the one etcd's timers also run on.

use super::{LeaseAnomaly, LeaseAnomalyKind, LeaseSummary};
use crate::history::{History, Lease, LeaseSeen, fmt_ns};

/// A bound on the lease: alive until at least `until` (nanoseconds), from the request
/// sent at `call`.
struct Alive {
    call: u64,
    until: u64,
    what: &'static str,
}

fn seconds(ttl: i64) -> u64 {
    u64::try_from(ttl)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
}

/// Checks every lease of `history`.
pub(crate) fn check_leases(history: &History) -> LeaseSummary {
    let mut summary = LeaseSummary {
        leases: history.leases.len(),
        ..LeaseSummary::default()
    };
    for lease in &history.leases {
        check_lease(lease, &mut summary);
    }
    summary
}

fn check_lease(lease: &Lease, summary: &mut LeaseSummary) {
    let mut alive = vec![Alive {
        call: lease.granted.call,
        until: lease.granted.call.saturating_add(seconds(lease.ttl)),
        what: "its grant",
    }];
    // When it was seen gone, and how.
    let mut gone: Vec<(u64, &'static str)> = Vec::new();
    let attached_at = lease
        .attached
        .as_ref()
        .and_then(|(at, acknowledged)| acknowledged.then_some(at.ret));
    let mut present_reads: Vec<u64> = Vec::new();
    for probe in &lease.probes {
        match probe.seen {
            LeaseSeen::KeptAlive { ttl } if ttl > 0 => {
                summary.renewals += 1;
                alive.push(Alive {
                    call: probe.at.call,
                    until: probe.at.call.saturating_add(seconds(ttl)),
                    what: "a keep-alive",
                });
            }
            LeaseSeen::KeptAlive { .. } => gone.push((probe.at.ret, "a keep-alive answered 0")),
            LeaseSeen::TimeToLive { ttl } if ttl >= 0 => alive.push(Alive {
                call: probe.at.call,
                until: probe.at.call.saturating_add(seconds(ttl)),
                what: "TimeToLive",
            }),
            LeaseSeen::TimeToLive { .. } => gone.push((probe.at.ret, "TimeToLive answered -1")),
            LeaseSeen::Key { present, .. } => {
                summary.key_reads += 1;
                if present {
                    present_reads.push(probe.at.call);
                } else if attached_at.is_some_and(|a| a < probe.at.call) {
                    gone.push((probe.at.ret, "its key was read absent"));
                }
            }
        }
    }
    let revoke_call = lease.revoked.map_or(u64::MAX, |(at, _)| at.call);
    let seen_expired = gone.iter().any(|(at, _)| *at < revoke_call);
    if seen_expired {
        summary.expired += 1;
    }
    let mut report = |kind, explanation: String| {
        summary.anomalies.push(LeaseAnomaly {
            lease: lease.id,
            kind,
            explanation,
        });
    };
    for (at, how) in gone.iter().filter(|(at, _)| *at < revoke_call) {
        if let Some(a) = alive.iter().find(|a| a.until > *at) {
            let kind = if a.call > *at {
                LeaseAnomalyKind::Resurrected
            } else {
                LeaseAnomalyKind::ExpiredEarly
            };
            report(
                kind,
                format!(
                    "lease {:x} (TTL {} s): {how} by {}, but {} sent at {} kept it alive until at least {}",
                    lease.id,
                    lease.ttl,
                    fmt_ns(*at),
                    a.what,
                    fmt_ns(a.call),
                    fmt_ns(a.until)
                ),
            );
        }
    }
    // The key goes with the lease: once it was seen gone (or its revocation acknowledged),
    // a read sent after finds no key.
    let revoked = lease.revoked.and_then(|(at, acknowledged)| {
        acknowledged.then_some((at.ret, "its revocation was acknowledged"))
    });
    let first_gone = gone
        .iter()
        .copied()
        .chain(revoked)
        .min_by_key(|(at, _)| *at);
    if let Some((at, how)) = first_gone
        && let Some(read) = present_reads.iter().find(|call| **call > at)
    {
        report(
            LeaseAnomalyKind::KeyOutlivedLease,
            format!(
                "lease {:x}: {how} by {}, yet its key {} was read present by a read sent at {}",
                lease.id,
                fmt_ns(at),
                lease.key,
                fmt_ns(*read)
            ),
        );
    }
}
