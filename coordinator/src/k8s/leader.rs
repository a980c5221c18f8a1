//! Leader election over a `coordination.k8s.io` Lease, so two coordinator replicas never
//! both act: only the holder of a term that still holds reconciles, grants or calls a
//! sidecar ([`Leadership`]).
//!
//! The decision of one round is pure ([`decide`]); a round writes the Lease with the
//! `resourceVersion` it read, so of two replicas racing for an expired Lease exactly one
//! write succeeds (the other gets a conflict and stays a follower).
//!
//! Fencing, as client-go's leader election does it:
//! - a follower judges expiry by when it last saw the Lease's record change, on its own
//!   clock, never by comparing the holder's `renewTime` with its clock (clock skew between
//!   nodes decides nothing);
//! - every round is bounded by a timeout (a request that hangs is a failed round);
//! - the holder's term holds only until `renew_deadline` after the start of its last
//!   successful round, checked on every use ([`Leadership::current`]) rather than after an
//!   error: a holder whose renewals hang stops acting `lease_duration - renew_deadline`
//!   before any follower may take over;
//! - each term has an epoch, larger than every earlier holder's, carried by every grant
//!   and sidecar call; sidecars refuse calls of older terms. The epoch is a counter, never
//!   a clock: the Lease's (annotation [`ANNOTATION_EPOCH`], written in the same update that
//!   takes the Lease), raised above every epoch the `EtcdCluster`s record (`k8s/epoch.rs`),
//!   so a deleted Lease does not restart the count.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Client,
    api::{Api, PostParams},
};
use std::collections::BTreeMap;
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

pub use super::epoch::ANNOTATION_EPOCH;
use crate::leadership::Leadership;

/// The Lease's name unless told otherwise (the Role in `deploy/` names it).
pub const DEFAULT_LEASE_NAME: &str = "etcd-coordinator-leader";

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease (the coordinator's own).
    pub namespace: String,
    /// This replica's identity (its Pod name).
    pub identity: String,
    /// How long a Lease holds without renewal (followers wait this long after they last saw
    /// it change).
    pub lease_duration: Duration,
    /// How long the holder's term holds after the start of its last successful round; less
    /// than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the holder renews (and a follower retries); also each round's timeout.
    pub renew_every: Duration,
}

impl LeaseSettings {
    /// Defaults: a 15 s Lease renewed every 2 s; a holder that could not renew for 10 s
    /// stops acting (client-go's defaults).
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// What one round does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Begin a term: take the Lease (free, expired, released, or this replica's from a
    /// term that ended).
    Acquire,
    /// This replica holds the Lease under the term it still holds: renew.
    Renew,
    /// Another replica holds it, until it has not changed for a Lease duration.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// What of a Lease a follower watches for change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    holder: Option<String>,
    renew: Option<Timestamp>,
    acquire: Option<Timestamp>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Self {
            holder: spec.holder_identity.clone(),
            renew: spec.renew_time.as_ref().map(|t| t.0),
            acquire: spec.acquire_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions,
        }
    }
}

/// The epoch of the term a Lease records: its counter ([`ANNOTATION_EPOCH`]); for a Lease
/// written before the counter, the acquire time in microseconds that served as the epoch
/// then (so the count goes on above it); 0 if none.
pub fn epoch_of(lease: &Lease) -> u64 {
    if let Some(epoch) = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(super::epoch::recorded)
    {
        return epoch;
    }
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.acquire_time.as_ref())
        .map(|t| t.0.as_microsecond().max(0) as u64)
        .unwrap_or(0)
}

/// Decides one round from the Lease as read (`None` when it does not exist yet) and the
/// epoch it records, the epoch of the term this replica holds now (if any), and when this
/// replica first saw the Lease's current record (its own clock).
pub fn decide(
    spec: Option<&LeaseSpec>,
    recorded_epoch: u64,
    identity: &str,
    held: Option<u64>,
    unchanged_since: Instant,
    now: Instant,
) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return if held == Some(recorded_epoch) {
            Decision::Renew
        } else {
            // This replica's Lease from a term that ended: a new term, with a new epoch.
            Decision::Acquire
        };
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
    if now.saturating_duration_since(unchanged_since) >= duration {
        Decision::Acquire
    } else {
        Decision::Follow {
            holder: holder.to_string(),
        }
    }
}

/// The epoch of a new term: one more than the Lease's counter and than every epoch the
/// clusters record. No clock plays a part.
pub fn next_epoch(lease_counter: u64, clusters_highest: u64) -> u64 {
    lease_counter.max(clusters_highest).saturating_add(1)
}

/// Runs rounds of the election.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// Where the `EtcdCluster`s whose recorded epochs a new term must exceed are listed.
    clusters: Option<(Client, Vec<Option<String>>)>,
}

impl LeaderElector {
    /// An elector over the Lease named in `settings`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            clusters: None,
        }
    }

    /// A new term's epoch also exceeds every epoch recorded on the `EtcdCluster`s of
    /// `scopes` (a namespace each, `None` for all): a term is not taken while they cannot
    /// be listed.
    pub fn with_cluster_epochs(mut self, client: Client, scopes: Vec<Option<String>>) -> Self {
        self.clusters = Some((client, scopes));
        self
    }

    async fn clusters_highest_epoch(&self) -> Result<u64, kube::Error> {
        match &self.clusters {
            Some((client, scopes)) => super::epoch::highest_on_clusters(client, scopes).await,
            None => Ok(0),
        }
    }

    /// One round: read the Lease, decide, write. The epoch of the term this replica holds
    /// afterwards, if it holds one. A lost race (conflict, already exists) is a follower's
    /// round, not an error. `seen` is when this replica first saw the record it reads.
    pub async fn round(
        &self,
        held: Option<u64>,
        seen: &mut Option<(Record, Instant)>,
    ) -> Result<Option<u64>, kube::Error> {
        let current = self.api.get_opt(&self.settings.name).await?;
        let now = Instant::now();
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let unchanged_since = match (spec.map(Record::of), seen.as_ref()) {
            (Some(record), Some((last, at))) if &record == last => *at,
            (Some(record), _) => {
                *seen = Some((record, now));
                now
            }
            (None, _) => {
                *seen = None;
                now
            }
        };
        let recorded_epoch = current.as_ref().map_or(0, epoch_of);
        let decision = decide(
            spec,
            recorded_epoch,
            &self.settings.identity,
            held,
            unchanged_since,
            now,
        );
        let seconds = self.settings.lease_duration.as_secs().clamp(1, 3600) as i32;
        let wall = Timestamp::now();
        let result = match (decision, current) {
            (Decision::Follow { .. }, _) => return Ok(None),
            (Decision::Acquire, None) => {
                let epoch = next_epoch(0, self.clusters_highest_epoch().await?);
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        annotations: Some(BTreeMap::from([(
                            ANNOTATION_EPOCH.to_string(),
                            epoch.to_string(),
                        )])),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.settings.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(wall)),
                        renew_time: Some(MicroTime(wall)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| epoch)
            }
            (decision, Some(mut lease)) => {
                let mut epoch = recorded_epoch;
                if decision == Decision::Acquire {
                    epoch = next_epoch(epoch, self.clusters_highest_epoch().await?);
                    // The counter goes up in the same write that takes the Lease.
                    lease
                        .metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .insert(ANNOTATION_EPOCH.to_string(), epoch.to_string());
                }
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::Acquire {
                    spec.holder_identity = Some(self.settings.identity.clone());
                    spec.acquire_time = Some(MicroTime(wall));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(wall));
                // The resourceVersion read above makes this write fail if anyone wrote since.
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| epoch)
            }
            (Decision::Renew, None) => return Ok(None),
        };
        match result {
            Ok(epoch) => Ok(Some(epoch)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown), so a follower takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs rounds until `stop` turns true, holding terms in `leadership`: a term begins
    /// when a round takes the Lease, is extended by each successful renewal up to
    /// `renew_deadline` after that round began, and ends when a round finds the Lease
    /// taken, or at its deadline, whichever comes first (a hung round is cut off at
    /// `renew_every`). Releases the Lease when stopped while leading.
    pub async fn run(self, leadership: Leadership, mut stop: watch::Receiver<bool>) {
        let mut seen = None;
        loop {
            let started = Instant::now();
            let held = leadership.current();
            let round =
                tokio::time::timeout(self.settings.renew_every, self.round(held, &mut seen)).await;
            match round {
                Ok(Ok(Some(epoch))) => {
                    if held != Some(epoch) {
                        info!(identity = %self.settings.identity, lease = %self.settings.name, epoch, "leading: this coordinator acts");
                    }
                    leadership.hold(epoch, started + self.settings.renew_deadline);
                }
                Ok(Ok(None)) => {
                    if leadership.term().is_some() {
                        warn!(identity = %self.settings.identity, "the lease is taken: no longer acting");
                    }
                    leadership.end();
                }
                Ok(Err(e)) => warn!(error = %e, "leader election round failed"),
                Err(_) => warn!(
                    timeout_ms = self.settings.renew_every.as_millis() as u64,
                    "leader election round timed out"
                ),
            }
            // Until the next round: end the term at its deadline if it comes first.
            let next = started + self.settings.renew_every;
            let mut stopping = false;
            loop {
                let until = leadership
                    .term()
                    .and_then(|t| t.until)
                    .filter(|u| *u < next);
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    _ = tokio::time::sleep_until(until.unwrap_or(next)), if until.is_some() => {
                        warn!("could not renew the lease in time: no longer acting");
                        leadership.end();
                    }
                    r = stop.wait_for(|s| *s) => {
                        drop(r);
                        stopping = true;
                        break;
                    }
                }
            }
            if stopping {
                if leadership.term().is_some() {
                    leadership.end();
                    if let Err(e) = self.release().await {
                        warn!(error = %e, "could not release the lease");
                    }
                }
                return;
            }
            // A term that ran out during a hung round is ended before the next round.
            if leadership.term().is_some() && leadership.current().is_none() {
                warn!("could not renew the lease in time: no longer acting");
                leadership.end();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(epoch: u64) -> Timestamp {
        Timestamp::from_microsecond(epoch.min(i64::MAX as u64) as i64).unwrap_or(Timestamp::MAX)
    }

    fn spec(holder: &str, acquired: u64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: (!holder.is_empty()).then(|| holder.to_string()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(micros(acquired))),
            renew_time: Some(MicroTime(micros(acquired))),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_goes_to_one_holder_until_it_has_not_changed_for_its_duration() {
        let seen = Instant::now();
        let after = |secs| seen + Duration::from_secs(secs);
        assert_eq!(decide(None, 0, "a", None, seen, seen), Decision::Acquire);
        // Held by this replica under the term it holds: renew; its own Lease from a term
        // that ended: a new term.
        assert_eq!(
            decide(Some(&spec("a", 5)), 5, "a", Some(5), seen, after(60)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec("a", 5)), 5, "a", None, seen, after(1)),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&spec("a", 5)), 5, "a", Some(4), seen, after(1)),
            Decision::Acquire
        );
        // Held by another: followed until unchanged for the Lease's duration, as seen on
        // this replica's clock; the renewTime written by the holder's clock plays no part.
        for secs in [0, 3, 14] {
            assert_eq!(
                decide(Some(&spec("b", 5)), 5, "a", None, seen, after(secs)),
                Decision::Follow { holder: "b".into() }
            );
        }
        assert_eq!(
            decide(Some(&spec("b", 5)), 5, "a", None, seen, after(15)),
            Decision::Acquire
        );
        let mut far_future = spec("b", 5);
        far_future.renew_time = Some(MicroTime(Timestamp::MAX));
        assert_eq!(
            decide(Some(&far_future), 5, "a", None, seen, after(16)),
            Decision::Acquire,
            "a holder's clock ahead does not keep the Lease"
        );
        assert_eq!(
            decide(Some(&spec("", 5)), 5, "a", None, seen, seen),
            Decision::Acquire
        );
    }

    #[test]
    fn epochs_count_on_from_the_lease_and_the_clusters_never_from_a_clock() {
        assert_eq!(next_epoch(0, 0), 1);
        assert_eq!(next_epoch(7, 3), 8);
        // A Lease deleted (its counter gone): the clusters' record carries the count on.
        assert_eq!(next_epoch(0, 41), 42);
        let lease = |annotation: Option<&str>, acquired: u64| Lease {
            metadata: ObjectMeta {
                annotations: annotation
                    .map(|a| BTreeMap::from([(ANNOTATION_EPOCH.to_string(), a.to_string())])),
                ..Default::default()
            },
            spec: Some(spec("a", acquired)),
        };
        assert_eq!(epoch_of(&lease(Some("42"), 1_700_000_000_000_000)), 42);
        // A Lease of an earlier build, whose epoch was its acquire time: counted on from it.
        assert_eq!(
            epoch_of(&lease(None, 1_700_000_000_000_000)),
            1_700_000_000_000_000
        );
        assert_eq!(epoch_of(&Lease::default()), 0);
    }
}
