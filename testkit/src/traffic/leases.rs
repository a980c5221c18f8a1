//! Lease clients: each grants a lease, attaches a key to it, keeps it alive every second
//! (reading the key after each keep-alive) for a few seconds, then either revokes it or
//! stops renewing and watches it expire; then the next lease. Every answered request is
//! recorded ([`Lease`]); the checker holds them to etcd's lease guarantees.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, PutOptions};
use tokio::{sync::watch, time::Instant};

use super::ops::Endpoints;
use crate::{
    history::{ClientId, Interval, Lease, LeaseProbe, LeaseSeen, Recorder},
    rng::SeededRng,
};

/// How often a kept lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// How long one lease request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// How often an abandoned lease is asked whether it still lives.
const POLL_EXPIRY: Duration = Duration::from_millis(500);

/// One lease client's settings.
pub(super) struct LeaseSpec {
    pub(super) id: ClientId,
    pub(super) ttl: i64,
    pub(super) prefix: String,
    pub(super) seed: u64,
}

/// A connection to one live member at a time, moving to the next on a failure.
struct Connection {
    endpoints: Endpoints,
    turn: usize,
    client: Option<Client>,
}

impl Connection {
    async fn client(&mut self) -> Option<&mut Client> {
        if self.client.is_none() {
            let live = (self.endpoints)();
            if live.is_empty() {
                return None;
            }
            let endpoint = live[self.turn % live.len()].clone();
            let options = ConnectOptions::new()
                .with_connect_timeout(REQUEST_TIMEOUT)
                .with_timeout(REQUEST_TIMEOUT);
            self.client = Client::connect([endpoint], Some(options)).await.ok();
        }
        self.client.as_mut()
    }

    fn failed(&mut self) {
        self.client = None;
        self.turn += 1;
    }
}

/// One request with a deadline, timed on the recorder's clock; `None` when it got no
/// answer (the connection moves on).
macro_rules! timed {
    ($conn:expr, $recorder:expr, |$client:ident| $request:expr) => {{
        let call = $recorder.now();
        let answer = match $conn.client().await {
            Some($client) => tokio::time::timeout(REQUEST_TIMEOUT, $request)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        if answer.is_none() {
            $conn.failed();
        }
        answer.map(|a| {
            (
                Interval {
                    call,
                    ret: $recorder.now(),
                },
                a,
            )
        })
    }};
}

/// One lease client, until traffic stops.
pub(super) async fn run_lease_client(
    spec: LeaseSpec,
    endpoints: Endpoints,
    recorder: Recorder,
    stopped: watch::Receiver<bool>,
) {
    let mut rng = SeededRng::stream(spec.seed, u64::from(spec.id));
    let mut conn = Connection {
        endpoints,
        turn: spec.id as usize,
        client: None,
    };
    let mut n = 0u64;
    while !*stopped.borrow() {
        let Some((granted, resp)) = timed!(conn, recorder, |c| c.lease_grant(spec.ttl, None))
        else {
            wait(&stopped, Duration::from_millis(200)).await;
            continue;
        };
        n += 1;
        let mut lease = Lease {
            client: spec.id,
            id: resp.id(),
            ttl: resp.ttl(),
            granted,
            key: format!("{}{}-{n}", spec.prefix, spec.id),
            attached: None,
            probes: Vec::new(),
            revoked: None,
        };
        let value = format!("l{}-{n}", spec.id);
        let put = timed!(conn, recorder, |c| c.put(
            lease.key.as_str(),
            value.as_str(),
            Some(PutOptions::new().with_lease(lease.id))
        ));
        lease.attached = Some(match put {
            Some((at, _)) => (at, true),
            None => (
                Interval {
                    call: granted.ret,
                    ret: recorder.now(),
                },
                false,
            ),
        });
        let rounds = 3 + rng.below(6);
        for _ in 0..rounds {
            if wait(&stopped, RENEW_EVERY).await {
                break;
            }
            keep_alive(&mut conn, &recorder, &mut lease).await;
            read_key(&mut conn, &recorder, &mut lease).await;
        }
        if !*stopped.borrow() {
            if rng.chance(1, 2) {
                let id = lease.id;
                let revoke = timed!(conn, recorder, |c| c.lease_revoke(id));
                lease.revoked = Some(match revoke {
                    Some((at, _)) => (at, true),
                    None => (
                        Interval {
                            call: recorder.now(),
                            ret: recorder.now(),
                        },
                        false,
                    ),
                });
            } else {
                await_expiry(&mut conn, &recorder, &mut lease, &stopped).await;
            }
            read_key(&mut conn, &recorder, &mut lease).await;
        }
        recorder.lease(lease);
    }
}

/// Sends one keep-alive and waits for its answer.
async fn keep_alive(conn: &mut Connection, recorder: &Recorder, lease: &mut Lease) {
    let id = lease.id;
    let answer = timed!(conn, recorder, |c| async move {
        let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
        keeper.keep_alive().await?;
        match stream.message().await? {
            Some(resp) => Ok(resp.ttl()),
            None => Err(etcd_client::Error::WatchError(
                "the keep-alive stream ended".into(),
            )),
        }
    });
    if let Some((at, ttl)) = answer {
        lease.probes.push(LeaseProbe {
            at,
            seen: LeaseSeen::KeptAlive { ttl },
        });
    }
}

/// Reads the key attached, linearizably.
async fn read_key(conn: &mut Connection, recorder: &Recorder, lease: &mut Lease) {
    let key = lease.key.clone();
    if let Some((at, resp)) = timed!(conn, recorder, |c| c.get(key.as_str(), None)) {
        lease.probes.push(LeaseProbe {
            at,
            seen: LeaseSeen::Key {
                present: !resp.kvs().is_empty(),
                revision: resp.header().map_or(0, |h| h.revision()),
            },
        });
    }
}

/// Stops renewing and asks `TimeToLive` until the lease is gone (or three TTLs passed, or
/// traffic stopped).
async fn await_expiry(
    conn: &mut Connection,
    recorder: &Recorder,
    lease: &mut Lease,
    stopped: &watch::Receiver<bool>,
) {
    let give_up = Instant::now() + Duration::from_secs(3 * lease.ttl.max(1) as u64);
    while Instant::now() < give_up {
        if wait(stopped, POLL_EXPIRY).await {
            return;
        }
        let id = lease.id;
        if let Some((at, resp)) = timed!(conn, recorder, |c| c.lease_time_to_live(id, None)) {
            let ttl = resp.ttl();
            lease.probes.push(LeaseProbe {
                at,
                seen: LeaseSeen::TimeToLive { ttl },
            });
            if ttl < 0 {
                return;
            }
        }
    }
}

/// Waits `d`; true when traffic stopped meanwhile.
async fn wait(stopped: &watch::Receiver<bool>, d: Duration) -> bool {
    let mut stopped = stopped.clone();
    if *stopped.borrow() {
        return true;
    }
    tokio::select! {
        _ = stopped.changed() => {}
        _ = tokio::time::sleep(d) => {}
    }
    *stopped.borrow()
}
