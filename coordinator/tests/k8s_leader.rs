//! Two coordinators against one API server (a request-level mock that keeps one Lease and
//! can hang every request of one client), with the clock under the test's control: the
//! leader's renewals hang; at no moment do both act, and the other takes over within the
//! Lease's duration plus one renew period.

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use etcd_coordinator::{
    k8s::leader::{LeaderElector, LeaseSettings},
    leadership::Leadership,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::{sync::watch, time::Instant};

const NS: &str = "etcd";
const LEASE: &str = "etcd-coordinator-leader";

/// The one Lease the mock API server keeps, with resourceVersions and conflicts as the
/// API server has them.
#[derive(Default)]
struct LeaseStore {
    lease: Mutex<Option<Value>>,
    version: AtomicU64,
    writes: AtomicU64,
}

fn status(code: StatusCode, reason: &str) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": reason, "message": reason, "code": code.as_u16()}),
    )
}

impl LeaseStore {
    fn handle(&self, method: &Method, path: &str, body: &[u8]) -> (StatusCode, Value) {
        let collection = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
        let item = format!("{collection}/{LEASE}");
        let mut lease = self.lease.lock().unwrap();
        let stored = |mut obj: Value| {
            let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
            obj["metadata"]["resourceVersion"] = json!(v.to_string());
            obj["metadata"]["namespace"] = json!(NS);
            self.writes.fetch_add(1, Ordering::SeqCst);
            obj
        };
        match (method, path) {
            (&Method::GET, p) if p == item => match lease.as_ref() {
                Some(l) => (StatusCode::OK, l.clone()),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            (&Method::POST, p) if p == collection => {
                if lease.is_some() {
                    return status(StatusCode::CONFLICT, "AlreadyExists");
                }
                let obj = stored(serde_json::from_slice(body).unwrap());
                *lease = Some(obj.clone());
                (StatusCode::CREATED, obj)
            }
            (&Method::PUT, p) if p == item => {
                let obj: Value = serde_json::from_slice(body).unwrap();
                let current = lease
                    .as_ref()
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current.is_none() {
                    return status(StatusCode::NOT_FOUND, "NotFound");
                }
                if current != Some(obj["metadata"]["resourceVersion"].clone()) {
                    return status(StatusCode::CONFLICT, "Conflict");
                }
                let obj = stored(obj);
                *lease = Some(obj.clone());
                (StatusCode::OK, obj)
            }
            _ => status(StatusCode::NOT_FOUND, "NotFound"),
        }
    }

    fn holder(&self) -> Option<String> {
        self.lease.lock().unwrap().as_ref().and_then(|l| {
            l["spec"]["holderIdentity"]
                .as_str()
                .map(ToString::to_string)
        })
    }
}

/// A client of the mock server whose requests hang (never answer) while `hang` is set.
fn client(store: Arc<LeaseStore>, hang: Arc<AtomicBool>) -> kube::Client {
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let store = Arc::clone(&store);
        let hang = Arc::clone(&hang);
        async move {
            if hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let (code, value) = store.handle(&method, &path, &body);
            Ok::<_, Infallible>(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(value.to_string())))
                    .unwrap(),
            )
        }
    });
    kube::Client::new(service, NS)
}

/// What one coordinator did: every moment it found it might act, with its term's epoch.
#[derive(Default)]
struct Acts(Mutex<Vec<(Instant, u64)>>);

impl Acts {
    fn all(&self) -> Vec<(Instant, u64)> {
        self.0.lock().unwrap().clone()
    }
}

struct Replica {
    leadership: Leadership,
    hang: Arc<AtomicBool>,
    acts: Arc<Acts>,
    /// Every deadline its terms held until, as last extended.
    deadlines: Arc<Mutex<Vec<(u64, Instant)>>>,
}

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings::new(LEASE, NS, identity)
}

/// Starts a coordinator's election and a stand-in for its acting loop: every 50 ms it asks
/// the same gate the grant service and the controller ask before they act.
fn replica(store: &Arc<LeaseStore>, identity: &str, stop: &watch::Receiver<bool>) -> Replica {
    let hang = Arc::new(AtomicBool::new(false));
    let leadership = Leadership::none();
    let elector = LeaderElector::new(
        client(Arc::clone(store), Arc::clone(&hang)),
        settings(identity),
    );
    tokio::spawn(elector.run(leadership.clone(), stop.clone()));
    let acts = Arc::new(Acts::default());
    let deadlines = Arc::new(Mutex::new(Vec::new()));
    {
        let leadership = leadership.clone();
        let acts = Arc::clone(&acts);
        let deadlines = Arc::clone(&deadlines);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                if let Some(epoch) = leadership.current() {
                    acts.0.lock().unwrap().push((Instant::now(), epoch));
                }
                if let Some(term) = leadership.term()
                    && let Some(until) = term.until
                {
                    let mut d = deadlines.lock().unwrap();
                    match d.last_mut() {
                        Some((e, u)) if *e == term.epoch => *u = until,
                        _ => d.push((term.epoch, until)),
                    }
                }
            }
        });
    }
    Replica {
        leadership,
        hang,
        acts,
        deadlines,
    }
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_hang_stops_acting_before_the_other_takes_over() {
    let store = Arc::new(LeaseStore::default());
    let (_stop_tx, stop) = watch::channel(false);
    let a = replica(&store, "coordinator-a", &stop);
    // A takes the free Lease first; B starts after and follows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = replica(&store, "coordinator-b", &stop);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(store.holder().as_deref(), Some("coordinator-a"));
    assert!(a.leadership.current().is_some(), "A leads");
    assert!(b.acts.all().is_empty(), "B acted while A renewed");
    let a_epoch = a.leadership.current().unwrap();
    let writes_before = store.writes.load(Ordering::SeqCst);
    assert!(writes_before >= 10, "A renewed: {writes_before} writes");

    // A's requests hang from now on (the API server, or the way to it, stops answering A).
    let hung_at = Instant::now();
    a.hang.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(40)).await;

    let a_acts = a.acts.all();
    let b_acts = b.acts.all();
    let a_last = a_acts.last().expect("A acted").0;
    let (b_first, b_epoch) = *b_acts.first().expect("B took over");
    // At no moment did both act: A's last act and the end of A's last term both come
    // before B's first act.
    assert!(
        a_last < b_first,
        "A acted at {a_last:?}, after B began at {b_first:?}"
    );
    let a_until = a.deadlines.lock().unwrap().last().map(|(_, u)| *u).unwrap();
    assert!(
        a_until <= b_first,
        "A's term held until {:?} after B's began",
        a_until - b_first
    );
    assert!(a.leadership.current().is_none(), "A still acts while hung");
    assert!(
        b_acts.iter().all(|(t, _)| *t >= b_first && *t > a_until),
        "B acted inside A's term"
    );
    // Within the Lease's duration plus one renew period of the hang.
    let s = settings("x");
    let took = b_first - hung_at;
    assert!(
        took <= s.lease_duration + s.renew_every,
        "B took over {took:?} after A's renewals began to hang"
    );
    // Not sooner than A's term could run out: A's term ended on its own.
    assert!(took >= s.renew_deadline - s.renew_every, "{took:?}");
    assert!(
        b_epoch > a_epoch,
        "B's term {b_epoch} is newer than A's {a_epoch}"
    );
    assert_eq!(store.holder().as_deref(), Some("coordinator-b"));

    // A's requests answer again: A sees B's Lease and follows; it never acts again.
    a.hang.store(false, Ordering::SeqCst);
    let healed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(
        a.acts.all().iter().all(|(t, _)| *t < healed_at),
        "A acted again after it could reach the API"
    );
    assert!(b.leadership.current().is_some(), "B kept the Lease");
    assert_eq!(store.holder().as_deref(), Some("coordinator-b"));
}

#[tokio::test(start_paused = true)]
async fn a_stopped_leader_releases_and_the_other_takes_over_at_once() {
    let store = Arc::new(LeaseStore::default());
    let (stop_a_tx, stop_a) = watch::channel(false);
    let (_stop_b_tx, stop_b) = watch::channel(false);
    let a = replica(&store, "coordinator-a", &stop_a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = replica(&store, "coordinator-b", &stop_b);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(a.leadership.current().is_some());
    let stopped_at = Instant::now();
    stop_a_tx.send(true).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(a.leadership.current().is_none());
    let (b_first, _) = *b.acts.all().first().expect("B took over");
    let a_last = a.acts.all().last().unwrap().0;
    assert!(a_last < b_first);
    // A released the Lease: B took it on its next round, without waiting for expiry.
    assert!(
        b_first - stopped_at <= settings("x").renew_every + Duration::from_millis(100),
        "{:?}",
        b_first - stopped_at
    );
}

/// Epochs are counters, never clocks: the Lease counts terms (an annotation raised in the
/// write that takes it), and every term records its epoch on the clusters it acts on. A
/// Lease deleted (by hand, or with its namespace's clean-up) gives the next term a higher
/// epoch than any before, not a restart of the count; here the earlier terms were taken on
/// a node whose clock ran a day ahead (the Lease an earlier build left, whose epoch was its
/// acquire time), so a count from this node's clock would go back.
#[tokio::test]
async fn a_deleted_lease_gives_a_higher_epoch_not_a_lower_one() {
    use etcd_coordinator::k8s::epoch::{ANNOTATION_EPOCH, Recorded, record_on_cluster};
    use etcd_operator::resource::{EtcdCluster, EtcdClusterSpec};
    use k8s_openapi::{
        api::coordination::v1::{Lease, LeaseSpec},
        apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
        jiff::{Timestamp, ToSpan},
    };
    use kube::api::{Api, ApiResource, DeleteParams, DynamicObject};

    let day_ahead = Timestamp::now()
        .checked_add(24.hours())
        .expect("a day from now");
    let left_by_an_earlier_build = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            // Released: the next replica takes it at once.
            holder_identity: None,
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(day_ahead)),
            lease_transitions: Some(3),
            ..Default::default()
        }),
    };
    let mut cluster = EtcdCluster::new(
        "c",
        EtcdClusterSpec {
            size: 3,
            version: etcd_operator::version::DEFAULT_VERSION.to_string(),
            ..Default::default()
        },
    );
    cluster.metadata.namespace = Some(NS.into());
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<EtcdCluster>()
        .with_object(cluster)
        .with_object(left_by_an_earlier_build)
        .build()
        .await
        .expect("fake client");
    let elector = |identity: &str| {
        LeaderElector::new(client.clone(), settings(identity))
            .with_cluster_epochs(client.clone(), vec![Some(NS.to_string())])
    };
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<EtcdCluster>(&()));
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);

    // A takes the Lease: its term counts on from the earlier build's epoch.
    let a = elector("coordinator-a");
    let first = a
        .round(None, &mut None)
        .await
        .expect("a round")
        .expect("A takes the released Lease");
    let earlier = day_ahead.as_microsecond() as u64;
    assert_eq!(first, earlier + 1, "A's term counts on from the Lease's");
    let lease = leases.get(LEASE).await.unwrap();
    assert_eq!(
        lease.metadata.annotations.unwrap().get(ANNOTATION_EPOCH),
        Some(&first.to_string()),
        "the counter is written in the update that takes the Lease"
    );
    // A acts on the cluster: its epoch is recorded there first.
    let c = clusters.get("c").await.unwrap();
    assert_eq!(
        record_on_cluster(&client, &c, first).await.unwrap(),
        Recorded::Done
    );

    // The Lease is deleted; B takes a new one.
    leases
        .delete(LEASE, &DeleteParams::default())
        .await
        .unwrap();
    let b = elector("coordinator-b");
    let second = b
        .round(None, &mut None)
        .await
        .expect("a round")
        .expect("B creates the Lease");
    assert!(
        second > first,
        "B's term {second} must be newer than A's {first}, which the sidecars have seen"
    );
    // A, deposed, never writes its older epoch over B's on the cluster.
    let c = clusters.get("c").await.unwrap();
    assert_eq!(
        record_on_cluster(&client, &c, second).await.unwrap(),
        Recorded::Done
    );
    let c = clusters.get("c").await.unwrap();
    assert_eq!(
        record_on_cluster(&client, &c, first).await.unwrap(),
        Recorded::Newer(second)
    );
    // And B's next term on its own Lease counts one more, again from the counter.
    b.round(None, &mut None).await.expect("a round");
    let lease = leases.get(LEASE).await.unwrap();
    let counter: u64 = lease.metadata.annotations.unwrap()[ANNOTATION_EPOCH]
        .parse()
        .unwrap();
    assert_eq!(
        counter,
        second + 1,
        "a term that ended is followed by a newer one"
    );
}
