//! What was seen of a lease: its grant, the key attached to it, every keep-alive and read
//! that got an answer, and its revocation.

use serde::{Deserialize, Serialize};

use super::ClientId;

/// A call and its return, nanoseconds since the history's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    /// When the request was sent.
    pub call: u64,
    /// When its answer came.
    pub ret: u64,
}

/// What one answered request said about a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseSeen {
    /// A keep-alive answered with the lease's TTL in seconds (0: the lease is gone).
    KeptAlive {
        /// The TTL etcd answered.
        ttl: i64,
    },
    /// `TimeToLive` answered (-1: the lease is gone).
    TimeToLive {
        /// The remaining TTL etcd answered, seconds.
        ttl: i64,
    },
    /// A linearizable read of the key attached to the lease.
    Key {
        /// Whether the key was there.
        present: bool,
        /// The response header's revision.
        revision: i64,
    },
}

/// One answered request about a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseProbe {
    /// When.
    pub at: Interval,
    /// What it said.
    pub seen: LeaseSeen,
}

/// One lease of the traffic and what was seen of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The client that held it.
    pub client: ClientId,
    /// etcd's lease id.
    pub id: i64,
    /// The TTL granted, seconds.
    pub ttl: i64,
    /// The grant.
    pub granted: Interval,
    /// The key attached to it (put with the lease once, never written otherwise).
    pub key: String,
    /// The put of the key: when, and whether it was acknowledged.
    pub attached: Option<(Interval, bool)>,
    /// Every keep-alive, `TimeToLive` and read of the key that got an answer, in order.
    pub probes: Vec<LeaseProbe>,
    /// The revocation, when one was asked: when, and whether it was acknowledged.
    pub revoked: Option<(Interval, bool)>,
}
