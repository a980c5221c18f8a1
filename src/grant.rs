//! The membership-grant table: at most one membership change in flight per cluster.
//!
//! Pure: the caller passes the time. The coordinator keeps one table for all its
//! clusters; tests that run sidecars without a coordinator use the same table.

use std::{collections::HashMap, time::Duration};

use crate::{naming::ClusterKey, proto::ChangeKind};

/// Milliseconds since the Unix epoch, as the contract carries times.
pub type UnixMillis = i64;

/// A membership change that is allowed to happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipGrant {
    /// The grant's id.
    pub id: String,
    /// The member that may change its membership.
    pub member: String,
    /// What the member may do.
    pub kind: ChangeKind,
    /// When it was given.
    pub issued_at: UnixMillis,
    /// When it lapses if not released.
    pub expires_at: UnixMillis,
    /// Recovered after a coordinator restart rather than given: its holder knows it under
    /// another id, so the holder's member name releases it too.
    pub adopted: bool,
}

/// Why a grant was not given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRefusal {
    /// For the sidecar's log and the status.
    pub reason: String,
    /// When to ask again.
    pub retry_after: Duration,
}

/// Grants by cluster.
#[derive(Debug)]
pub struct GrantTable {
    ttl: Duration,
    /// Distinguishes this table's ids from those of an earlier coordinator's table.
    epoch: u64,
    next_id: u64,
    in_flight: HashMap<ClusterKey, MembershipGrant>,
    /// Grants given (or adopted) per cluster since the table was made.
    given: HashMap<ClusterKey, u64>,
}

/// How long a grant lasts after it is given or last renewed: a lease its holder renews
/// every [`GRANT_RENEW_EVERY`] for as long as it works on its change, however long that is
/// (a learner catching up on a large database, a defragmentation). A holder that died, or
/// that cannot reach the coordinator, lets it lapse within this; the holder itself stops
/// before its next membership call once its own measure of the lease runs out, which comes
/// before the coordinator's (it counts from when it sent the renewal).
pub const GRANT_LEASE: Duration = Duration::from_secs(15);

/// The longest a sidecar waits before it opens its stream of health reports to the
/// coordinator again (its backoff after a broken stream doubles up to this).
pub const REPORT_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How often the holder of a grant renews it: a few renewals may fail in a row before the
/// lease lapses.
pub const GRANT_RENEW_EVERY: Duration = Duration::from_secs(3);

impl GrantTable {
    /// A table whose grants last `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self::with_epoch(ttl, 0)
    }

    /// A table whose grant ids carry `epoch` (for example the coordinator's start time), so
    /// that a grant id from an earlier coordinator never names a grant of this one.
    pub fn with_epoch(ttl: Duration, epoch: u64) -> Self {
        Self {
            ttl,
            epoch,
            next_id: 1,
            in_flight: HashMap::new(),
            given: HashMap::new(),
        }
    }

    /// Asks for a grant. A member that asks again for the same change while its grant is
    /// in flight gets the same grant back (its earlier answer may have been lost).
    pub fn request(
        &mut self,
        cluster: &ClusterKey,
        member: &str,
        kind: ChangeKind,
        now: UnixMillis,
    ) -> Result<MembershipGrant, GrantRefusal> {
        if kind == ChangeKind::Unspecified {
            return Err(GrantRefusal {
                reason: "the change kind is not set".into(),
                retry_after: Duration::from_secs(60),
            });
        }
        if let Some(current) = self.in_flight(cluster, now) {
            if current.member == member && current.kind == kind {
                return Ok(current.clone());
            }
            return Err(GrantRefusal {
                reason: format!(
                    "membership change {} ({} of {}) is in flight",
                    current.id,
                    kind_name(current.kind),
                    current.member
                ),
                retry_after: Duration::from_millis(500),
            });
        }
        Ok(self.issue(cluster, member, kind, now))
    }

    fn issue(
        &mut self,
        cluster: &ClusterKey,
        member: &str,
        kind: ChangeKind,
        now: UnixMillis,
    ) -> MembershipGrant {
        let grant = MembershipGrant {
            id: if self.epoch == 0 {
                format!("{}-{}", cluster.name, self.next_id)
            } else {
                format!("{}-{}-{}", cluster.name, self.epoch, self.next_id)
            },
            member: member.to_string(),
            kind,
            issued_at: now,
            expires_at: now + self.ttl.as_millis() as i64,
            adopted: false,
        };
        self.next_id += 1;
        *self.given.entry(cluster.clone()).or_default() += 1;
        self.in_flight.insert(cluster.clone(), grant.clone());
        grant
    }

    /// How many grants this table gave (or adopted) for `cluster`: each membership change
    /// holds its own, so two changes between two looks at etcd's member list need at least
    /// one grant given between them.
    pub fn given(&self, cluster: &ClusterKey) -> u64 {
        self.given.get(cluster).copied().unwrap_or(0)
    }

    /// Records that a grant is in flight, when the truth is recovered after a restart
    /// (a pending learner means an add is under way). Replaces nothing already in flight.
    pub fn adopt(
        &mut self,
        cluster: &ClusterKey,
        member: &str,
        kind: ChangeKind,
        now: UnixMillis,
    ) -> MembershipGrant {
        if let Some(current) = self.in_flight(cluster, now) {
            return current.clone();
        }
        let mut grant = self.issue(cluster, member, kind, now);
        grant.adopted = true;
        self.in_flight.insert(cluster.clone(), grant.clone());
        grant
    }

    /// True when `grant_id` was given by this table (rather than an earlier one).
    pub fn is_own_id(&self, cluster: &ClusterKey, grant_id: &str) -> bool {
        let prefix = if self.epoch == 0 {
            format!("{}-", cluster.name)
        } else {
            format!("{}-{}-", cluster.name, self.epoch)
        };
        grant_id
            .strip_prefix(&prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Whether `member` holds the grant in flight named `grant_id`: its id (or, for an
    /// adopted grant, whose holder knows it under another id, any id) and its member.
    fn held_by(g: &MembershipGrant, grant_id: &str, member: &str) -> bool {
        !member.is_empty() && g.member == member && (g.id == grant_id || g.adopted)
    }

    /// Its holder gives a grant back: only the member it was given to releases it.
    pub fn release_by(&mut self, cluster: &ClusterKey, grant_id: &str, member: &str) -> bool {
        match self.in_flight.get(cluster) {
            Some(g) if Self::held_by(g, grant_id, member) => {
                self.in_flight.remove(cluster);
                true
            }
            _ => false,
        }
    }

    /// Its holder renews a grant: it lasts another lease from `now`. Refused when it is not
    /// the grant in flight (it lapsed, was released, or is another's).
    pub fn renew(
        &mut self,
        cluster: &ClusterKey,
        grant_id: &str,
        member: &str,
        now: UnixMillis,
    ) -> Result<MembershipGrant, GrantRefusal> {
        let ttl = self.ttl.as_millis() as i64;
        match self.in_flight(cluster, now).cloned() {
            Some(g) if Self::held_by(&g, grant_id, member) => {
                let renewed = MembershipGrant {
                    expires_at: now + ttl,
                    ..g
                };
                self.in_flight.insert(cluster.clone(), renewed.clone());
                Ok(renewed)
            }
            other => Err(GrantRefusal {
                reason: match other {
                    Some(g) => format!(
                        "grant {grant_id} is not in flight: {} ({} of {}) is",
                        g.id,
                        kind_name(g.kind),
                        g.member
                    ),
                    None => {
                        format!("grant {grant_id} is not in flight (it lapsed or was released)")
                    }
                },
                retry_after: Duration::from_millis(500),
            }),
        }
    }

    /// Puts back a grant given before this table was made (read from the durable record
    /// after a restart), with a new lease from `now` for its holder to renew it. Replaces
    /// nothing already in flight.
    pub fn restore(
        &mut self,
        cluster: &ClusterKey,
        grant_id: &str,
        member: &str,
        kind: ChangeKind,
        issued_at: UnixMillis,
        now: UnixMillis,
    ) -> MembershipGrant {
        if let Some(current) = self.in_flight(cluster, now) {
            return current.clone();
        }
        let grant = MembershipGrant {
            id: grant_id.to_string(),
            member: member.to_string(),
            kind,
            issued_at,
            expires_at: now + self.ttl.as_millis() as i64,
            adopted: false,
        };
        self.in_flight.insert(cluster.clone(), grant.clone());
        grant
    }

    /// How long a grant lasts after it is given or renewed.
    pub fn lease(&self) -> Duration {
        self.ttl
    }

    /// Grants given or renewed from now on last `lease`.
    pub fn set_lease(&mut self, lease: Duration) {
        self.ttl = lease;
    }

    /// Gives a grant back. False when it is not the one in flight (expired or unknown).
    pub fn release(&mut self, cluster: &ClusterKey, grant_id: &str) -> bool {
        match self.in_flight.get(cluster) {
            Some(g) if g.id == grant_id => {
                self.in_flight.remove(cluster);
                true
            }
            _ => false,
        }
    }

    /// The grant in flight for `cluster`, dropping it if it lapsed.
    pub fn in_flight(&mut self, cluster: &ClusterKey, now: UnixMillis) -> Option<&MembershipGrant> {
        if self
            .in_flight
            .get(cluster)
            .is_some_and(|g| g.expires_at <= now)
        {
            self.in_flight.remove(cluster);
        }
        self.in_flight.get(cluster)
    }

    /// Forgets a cluster (deleted).
    pub fn forget(&mut self, cluster: &ClusterKey) {
        self.in_flight.remove(cluster);
        self.given.remove(cluster);
    }
}

impl Default for GrantTable {
    fn default() -> Self {
        Self::new(GRANT_LEASE)
    }
}

/// The change kind a word of [`kind_name`] names.
pub fn kind_from_name(name: &str) -> Option<ChangeKind> {
    [
        ChangeKind::Bootstrap,
        ChangeKind::Add,
        ChangeKind::Remove,
        ChangeKind::Replace,
        ChangeKind::Upgrade,
        ChangeKind::ForceNewCluster,
        ChangeKind::Defragment,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == name)
}

/// A word for people.
pub fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Unspecified => "unspecified",
        ChangeKind::Bootstrap => "bootstrap",
        ChangeKind::Add => "add",
        ChangeKind::Remove => "remove",
        ChangeKind::Replace => "replace",
        ChangeKind::Upgrade => "upgrade",
        ChangeKind::ForceNewCluster => "force-new-cluster",
        ChangeKind::Defragment => "defragment",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::local("c")
    }

    #[test]
    fn one_grant_at_a_time_per_cluster() {
        let mut t = GrantTable::new(Duration::from_secs(10));
        let g = t.request(&key(), "c-0001", ChangeKind::Add, 0).unwrap();
        let refused = t.request(&key(), "c-0002", ChangeKind::Add, 1).unwrap_err();
        assert!(refused.reason.contains(&g.id), "{}", refused.reason);
        assert!(refused.reason.contains("c-0001"), "{}", refused.reason);
        // Another cluster is independent.
        t.request(&ClusterKey::local("d"), "d-0001", ChangeKind::Add, 1)
            .unwrap();
        assert!(t.release(&key(), &g.id));
        let g2 = t.request(&key(), "c-0002", ChangeKind::Add, 2).unwrap();
        assert_ne!(g.id, g2.id);
    }

    #[test]
    fn given_counts_each_new_grant_once_per_cluster() {
        let mut t = GrantTable::new(Duration::from_secs(10));
        assert_eq!(t.given(&key()), 0);
        let g = t.request(&key(), "c-0001", ChangeKind::Add, 0).unwrap();
        // Asked again, or refused: nothing new given.
        t.request(&key(), "c-0001", ChangeKind::Add, 1).unwrap();
        t.request(&key(), "c-0002", ChangeKind::Add, 1).unwrap_err();
        assert_eq!(t.given(&key()), 1);
        t.request(&ClusterKey::local("d"), "d-0001", ChangeKind::Add, 1)
            .unwrap();
        assert_eq!(t.given(&key()), 1, "another cluster's grant is its own");
        assert!(t.release(&key(), &g.id));
        t.request(&key(), "c-0002", ChangeKind::Remove, 2).unwrap();
        assert_eq!(t.given(&key()), 2);
        t.forget(&key());
        assert_eq!(t.given(&key()), 0);
    }

    #[test]
    fn same_member_same_change_gets_the_same_grant() {
        let mut t = GrantTable::new(Duration::from_secs(10));
        let g = t.request(&key(), "c-0001", ChangeKind::Add, 0).unwrap();
        assert_eq!(t.request(&key(), "c-0001", ChangeKind::Add, 5).unwrap(), g);
        assert!(t.request(&key(), "c-0001", ChangeKind::Remove, 5).is_err());
    }

    #[test]
    fn grants_lapse_and_stale_releases_are_refused() {
        let mut t = GrantTable::new(Duration::from_secs(10));
        let g = t.request(&key(), "c-0001", ChangeKind::Add, 0).unwrap();
        assert_eq!(g.expires_at, 10_000);
        assert!(t.in_flight(&key(), 9_999).is_some());
        assert!(t.in_flight(&key(), 10_000).is_none());
        let g2 = t
            .request(&key(), "c-0002", ChangeKind::Add, 10_001)
            .unwrap();
        assert!(
            !t.release(&key(), &g.id),
            "a lapsed grant must not release the next one"
        );
        assert!(t.in_flight(&key(), 10_002).is_some());
        assert!(t.release(&key(), &g2.id));
    }

    #[test]
    fn ids_of_another_epoch_never_collide() {
        let mut old = GrantTable::with_epoch(Duration::from_secs(10), 1700);
        let mut new = GrantTable::with_epoch(Duration::from_secs(10), 1800);
        let a = old.request(&key(), "c-0001", ChangeKind::Add, 0).unwrap();
        let b = new.request(&key(), "c-0002", ChangeKind::Add, 0).unwrap();
        assert_ne!(a.id, b.id);
        assert!(!new.release(&key(), &a.id));
        assert!(new.is_own_id(&key(), &b.id));
        assert!(!new.is_own_id(&key(), &a.id), "{}", a.id);
        assert!(!new.is_own_id(&key(), "c-1800-"));
    }

    #[test]
    fn adopt_keeps_what_is_in_flight() {
        let mut t = GrantTable::new(Duration::from_secs(10));
        let g = t.adopt(&key(), "c-0003", ChangeKind::Add, 0);
        assert_eq!(g.member, "c-0003");
        assert!(g.adopted);
        let again = t.adopt(&key(), "c-0004", ChangeKind::Remove, 1);
        assert_eq!(again, g);
        // The holder knows the grant under the id the previous coordinator gave it.
        assert!(!t.release_by(&key(), "old-7", "c-0004"));
        assert!(t.release_by(&key(), "old-7", "c-0003"));
        assert!(t.in_flight(&key(), 2).is_none());
        let given = t.request(&key(), "c-0005", ChangeKind::Add, 3).unwrap();
        assert!(
            !t.release_by(&key(), "other", "c-0005"),
            "a given grant releases by id only"
        );
        assert!(
            !t.release_by(&key(), &given.id, "c-0001"),
            "only its holder releases a grant"
        );
        assert!(!t.release_by(&key(), &given.id, ""));
        assert!(t.release_by(&key(), &given.id, "c-0005"));
        assert!(
            t.request(&key(), "c-0001", ChangeKind::Unspecified, 1)
                .is_err()
        );
    }

    #[test]
    fn a_grant_lasts_while_its_holder_renews_it_and_not_a_moment_longer() {
        let mut t = GrantTable::new(Duration::from_secs(10));
        let g = t.request(&key(), "c-0001", ChangeKind::Add, 0).unwrap();
        // Renewed by its holder, again and again, well past its first lease.
        for now in [5_000, 14_000, 23_000, 32_000] {
            let renewed = t.renew(&key(), &g.id, "c-0001", now).unwrap();
            assert_eq!(renewed.expires_at, now + 10_000);
        }
        assert!(t.in_flight(&key(), 41_999).is_some());
        // Nobody else renews it.
        assert!(t.renew(&key(), &g.id, "c-0002", 40_000).is_err());
        // Once it lapsed it cannot be renewed, and another grant may be given.
        assert!(t.in_flight(&key(), 42_000).is_none());
        let refused = t.renew(&key(), &g.id, "c-0001", 42_001).unwrap_err();
        assert!(refused.reason.contains("lapsed"), "{}", refused.reason);
        let other = t
            .request(&key(), "c-0002", ChangeKind::Remove, 42_002)
            .unwrap();
        let refused = t.renew(&key(), &g.id, "c-0001", 42_003).unwrap_err();
        assert!(refused.reason.contains(&other.id), "{}", refused.reason);
    }

    #[test]
    fn a_grant_from_the_record_is_put_back_with_a_new_lease_and_its_old_id() {
        let mut t = GrantTable::with_epoch(Duration::from_secs(10), 9);
        let g = t.restore(&key(), "c-3-7", "c-0001", ChangeKind::Add, 100, 50_000);
        assert_eq!(
            (g.id.as_str(), g.issued_at, g.expires_at),
            ("c-3-7", 100, 60_000)
        );
        assert!(!g.adopted);
        // Its holder renews and releases it under the id it knows.
        assert!(t.renew(&key(), "c-3-7", "c-0001", 55_000).is_ok());
        assert!(
            t.request(&key(), "c-0002", ChangeKind::Add, 56_000)
                .is_err()
        );
        assert!(t.release_by(&key(), "c-3-7", "c-0001"));
        // Put back over nothing: a grant in flight is kept.
        let given = t
            .request(&key(), "c-0002", ChangeKind::Add, 57_000)
            .unwrap();
        assert_eq!(
            t.restore(&key(), "c-3-8", "c-0003", ChangeKind::Remove, 1, 57_001),
            given
        );
        assert_eq!(
            kind_from_name("force-new-cluster"),
            Some(ChangeKind::ForceNewCluster)
        );
        assert_eq!(kind_from_name("nothing"), None);
    }
}
