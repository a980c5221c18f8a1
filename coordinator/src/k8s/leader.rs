//! Leader election over a `coordination.k8s.io` Lease, so two coordinator replicas never
//! both act: only the holder reconciles.
//!
//! The decision of one round is pure ([`decide`]); a round writes the Lease with the
//! `resourceVersion` it read, so of two replicas racing for an expired Lease exactly one
//! write succeeds (the other gets a conflict and stays a follower). A holder that cannot
//! renew in time stops acting before the Lease can expire for the others
//! ([`LeaderElector::run`]).

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Client,
    api::{Api, PostParams},
};
use tokio::sync::watch;
use tracing::{info, warn};

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
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (and a follower retries).
    pub renew_every: Duration,
}

impl LeaseSettings {
    /// Defaults: a 15 s Lease renewed every 4 s.
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
            renew_every: Duration::from_secs(4),
        }
    }
}

/// What one round does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take the Lease (free, expired, or released); counts a transition.
    Acquire,
    /// This replica holds it: renew.
    Renew,
    /// Another replica holds it, until it expires.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// Decides one round from the Lease as read (`None` when it does not exist yet).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(at) if at + duration > now => Decision::Follow {
            holder: holder.to_string(),
        },
        _ => Decision::Acquire,
    }
}

/// Runs rounds of the election.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl LeaderElector {
    /// An elector over the Lease named in `settings`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// One round: read the Lease, decide, write. True when this replica holds the Lease
    /// afterwards. A lost race (conflict, already exists) is a follower's round, not an error.
    pub async fn round(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.settings.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.settings.identity,
            now,
        );
        let seconds = self.settings.lease_duration.as_secs().clamp(1, 3600) as i32;
        let result = match (decision, current) {
            (Decision::Follow { .. }, _) => return Ok(false),
            (Decision::Acquire, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.settings.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::Acquire {
                    spec.holder_identity = Some(self.settings.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                // The resourceVersion read above makes this write fail if anyone wrote since.
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Renew, None) => return Ok(false),
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
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

    /// Runs rounds until `stop` turns true, publishing on `leading` whether this replica
    /// leads. A holder whose renewals fail for most of a Lease's duration steps down
    /// before the others may take over. Releases the Lease when stopped while leading.
    pub async fn run(self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let mut last_renewal = tokio::time::Instant::now();
        // Step down well before the others may take over (they wait the full duration).
        let step_down_after = self.settings.lease_duration.mul_f32(0.66);
        loop {
            match self.round().await {
                Ok(true) => {
                    last_renewal = tokio::time::Instant::now();
                    if !*leading.borrow() {
                        info!(identity = %self.settings.identity, lease = %self.settings.name, "leading: this coordinator acts");
                    }
                    leading.send_if_modified(|l| !std::mem::replace(l, true));
                }
                Ok(false) => {
                    if *leading.borrow() {
                        warn!(identity = %self.settings.identity, "lost the lease: no longer acting");
                    }
                    leading.send_if_modified(|l| std::mem::replace(l, false));
                }
                Err(e) => {
                    warn!(error = %e, "leader election round failed");
                    if *leading.borrow() && last_renewal.elapsed() > step_down_after {
                        warn!("could not renew the lease in time: no longer acting");
                        leading.send_if_modified(|l| std::mem::replace(l, false));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.renew_every) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            if let Err(e) = self.release().await {
                warn!(error = %e, "could not release the lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs_ago: i64) -> LeaseSpec {
        let now = Timestamp::from_second(1_000_000).unwrap();
        LeaseSpec {
            holder_identity: (!holder.is_empty()).then(|| holder.to_string()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            ..Default::default()
        }
    }

    #[test]
    fn the_lease_goes_to_one_holder_until_it_expires() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(decide(None, "a", now), Decision::Acquire);
        assert_eq!(decide(Some(&spec("a", 3)), "a", now), Decision::Renew);
        assert_eq!(decide(Some(&spec("a", 60)), "a", now), Decision::Renew);
        assert_eq!(
            decide(Some(&spec("b", 3)), "a", now),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&spec("b", 14)), "a", now),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(decide(Some(&spec("b", 16)), "a", now), Decision::Acquire);
        assert_eq!(decide(Some(&spec("", 1)), "a", now), Decision::Acquire);
        let mut never_renewed = spec("b", 0);
        never_renewed.renew_time = None;
        assert_eq!(decide(Some(&never_renewed), "a", now), Decision::Acquire);
    }
}
