//! The whole kube-runtime controller (watches, triggers, requeues) against an API server
//! that watches ([`watching_api`]), counting every request it sends: what a steady
//! cluster costs, what a failing one writes, which events start a reconcile and which do
//! not.
//!
//! The steady-state measure runs one bare etcd per cluster and plays kubelet (Pods are
//! marked running) and sidecars (a health report per member every second, its raft index
//! moving as a live member's does).

mod watching_api;

use std::{
    collections::{BTreeMap, HashMap},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use etcd_coordinator::{
    k8s::{
        Context, KubeRuntime, MemberAddressing, MemberEndpoints,
        build::PodSettings,
        operator::{WatchNamespaces, run_controller},
        testing,
    },
    registry::{ReceivedReport, Registry, now_ms},
};
use etcd_operator::{
    ClusterKey,
    etcd_bin::EtcdBinaries,
    proto::{ClusterRef, HealthReport, MemberPhase},
    resource::{EtcdCluster, EtcdClusterSpec},
    version::DEFAULT_VERSION,
};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Client, ResourceExt,
    api::{Api, ListParams, Patch, PatchParams},
    runtime::events::Reporter,
};
use kube_fake_client::ClientBuilder;
use serde_json::json;
use testkit::{free_port, serial_guard, wait_for};
use watching_api::{Recorded, WatchingApi};

const NS: &str = "default";
const OPERATOR_IMAGE: &str = "registry.example/etcd-operator:test";

fn cluster(namespace: &str, name: &str, size: i32) -> EtcdCluster {
    let mut c = EtcdCluster::new(
        name,
        EtcdClusterSpec {
            size,
            version: DEFAULT_VERSION.to_string(),
            ..Default::default()
        },
    );
    c.metadata.namespace = Some(namespace.into());
    c
}

fn settings() -> PodSettings {
    PodSettings {
        operator_image: OPERATOR_IMAGE.into(),
        image_pull_policy: None,
        coordinator_url: "https://etcd-coordinator.default.svc:7443".into(),
        cluster_domain: "cluster.local".into(),
    }
}

async fn fake(
    objects: Vec<EtcdCluster>,
    funcs: Option<kube_fake_client::interceptor::Funcs>,
) -> Client {
    let mut builder = ClientBuilder::new()
        .with_resource::<EtcdCluster>()
        .with_status_subresource::<EtcdCluster>();
    for o in objects {
        builder = builder.with_object(o);
    }
    if let Some(f) = funcs {
        builder = builder.with_interceptor_funcs(f);
    }
    builder.build().await.expect("fake client")
}

fn context(client: &Client, addressing: Arc<dyn MemberAddressing>) -> Arc<Context> {
    Arc::new(bare_context(client, addressing))
}

fn bare_context(client: &Client, addressing: Arc<dyn MemberAddressing>) -> Context {
    let control = testing::control_plane(etcd_operator::pki::DEFAULT_CERT_VALIDITY);
    let runtime = Arc::new(
        KubeRuntime::new(client.clone(), settings(), addressing, control)
            .without_cluster_endpoints(),
    );
    Context::for_tests_with(client.clone(), runtime, Registry::new(), "test")
}

/// One bare etcd member, named as the seed of its cluster.
struct Bare {
    child: Child,
    _dir: tempfile::TempDir,
    client_url: String,
    peer_url: String,
}

impl Bare {
    fn start(member: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let binary = EtcdBinaries::from_env()
            .resolve(DEFAULT_VERSION)
            .expect("the bundled etcd binary");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--name={member}"))
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={member}={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        Self {
            child,
            _dir: dir,
            client_url,
            peer_url,
        }
    }

    /// The member id, once etcd answers.
    async fn member_id(&self) -> u64 {
        let endpoints = vec![self.client_url.clone()];
        wait_for("etcd to answer", Duration::from_secs(30), || {
            let endpoints = endpoints.clone();
            async move {
                let mut client = etcd_client::Client::connect(&endpoints, None).await.ok()?;
                let list = client.member_list().await.ok()?;
                list.members().first().map(|m| m.id())
            }
        })
        .await
        .expect("etcd starts")
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every cluster's seed is its bare etcd.
struct Fixed(HashMap<ClusterKey, (String, String)>);

impl MemberAddressing for Fixed {
    fn endpoints(&self, cluster: &ClusterKey, _member: &str) -> MemberEndpoints {
        let (client_url, peer_url) = self.0.get(cluster).cloned().unwrap_or_else(|| {
            (
                "http://127.0.0.1:9".to_string(),
                "http://127.0.0.1:9".to_string(),
            )
        });
        MemberEndpoints {
            listen_client_url: client_url.clone(),
            listen_peer_url: peer_url.clone(),
            client_url,
            peer_url,
            sidecar_url: "https://127.0.0.1:9".into(),
            grpc_addr: "127.0.0.1:9".into(),
            health_addr: "127.0.0.1:9".into(),
            listen_metrics_url: "http://127.0.0.1:9".into(),
        }
    }
}

/// Plays kubelet: every Pod that is not running yet is marked running.
fn kubelet(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods = Api::<Pod>::all(client.clone());
        let running = json!({"status": {"phase": "Running", "containerStatuses": [
            {"name": "etcd", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"running": {}}}]}});
        loop {
            for pod in pods.list(&ListParams::default()).await.unwrap().items {
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
                    Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap())
                        .patch(
                            &pod.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&running),
                        )
                        .await
                        .unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Plays the sidecars: a healthy leader's report for every cluster's seed every second,
/// its raft index moving.
fn sidecars(
    registry: Registry,
    members: Vec<(ClusterKey, u64, String, String)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut index = 10u64;
        loop {
            index += 1;
            for (key, id, client_url, peer_url) in &members {
                let member = format!("{}-0000", key.name);
                let report = HealthReport {
                    cluster: Some(ClusterRef {
                        namespace: key.namespace.clone(),
                        name: key.name.clone(),
                    }),
                    member_name: member.clone(),
                    member_id: *id,
                    cluster_id: 1,
                    leader_id: *id,
                    leader: true,
                    healthy: true,
                    raft_index: index,
                    raft_applied_index: index,
                    raft_term: 2,
                    etcd_version: DEFAULT_VERSION.to_string(),
                    phase: MemberPhase::Running as i32,
                    client_url: client_url.clone(),
                    peer_url: peer_url.clone(),
                    observed_at_unix_ms: now_ms(),
                    revision: index as i64,
                    ..Default::default()
                };
                registry.with_existing(key, |entry, _| {
                    entry
                        .reports
                        .insert(member, ReceivedReport::new(report, now_ms()));
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

fn count(requests: &[Recorded], what: impl Fn(&Recorded) -> bool) -> usize {
    requests.iter().filter(|r| what(r)).count()
}

/// Clusters that match their spec cost (almost) no API requests: no reconcile runs
/// unless something changes (the cluster, a member's Pod, a health report in a way that
/// matters) or the long resync is due, a reconcile that finds the status as it was writes
/// none, and the certificate loop looks at the API once per tenth of the certificates'
/// life. A 3-second re-reconcile of everything (5 requests: the Pod list, 3 applies, the
/// status) would be 100 requests per cluster per minute. The figure printed is the one in
/// BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_clusters_cost_almost_no_requests() {
    const CLUSTERS: usize = 3;
    const WINDOW: Duration = Duration::from_secs(30);
    let _guard = serial_guard();
    let names: Vec<String> = (0..CLUSTERS).map(|i| format!("steady-{i}")).collect();
    let etcds: Vec<Bare> = names
        .iter()
        .map(|n| Bare::start(&format!("{n}-0000")))
        .collect();
    let mut members = Vec::new();
    let mut addresses = HashMap::new();
    for (name, etcd) in names.iter().zip(&etcds) {
        let key = ClusterKey::new(NS, name.clone());
        addresses.insert(
            key.clone(),
            (etcd.client_url.clone(), etcd.peer_url.clone()),
        );
        members.push((
            key,
            etcd.member_id().await,
            etcd.client_url.clone(),
            etcd.peer_url.clone(),
        ));
    }
    let api = WatchingApi::new(fake(names.iter().map(|n| cluster(NS, n, 1)).collect(), None).await);
    let ctx = context(&api.client(), Arc::new(Fixed(addresses)));
    let helpers = [
        kubelet(api.uncounted()),
        sidecars(ctx.registry.clone(), members),
    ];
    let controller = tokio::spawn(run_controller(Arc::clone(&ctx), WatchNamespaces::one(NS)));

    let clusters = Api::<EtcdCluster>::namespaced(api.uncounted(), NS);
    wait_for("every cluster Running", Duration::from_secs(90), || {
        let clusters = clusters.clone();
        async move {
            let list = clusters.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .all(|c| {
                    c.status
                        .as_ref()
                        .is_some_and(|s| s.phase == "Running" && s.ready_members == 1)
                })
                .then_some(())
        }
    })
    .await
    .expect("the clusters become Running");
    // The coordinator's other loop over every cluster, as `run_kubernetes` runs it: its
    // first round (now) checks every certificate, its next (in the window) is due to look
    // again only in an hour.
    let renewals = tokio::spawn(etcd_coordinator::runtime::renew_certificates_forever(
        Arc::clone(&ctx.runtime),
        ctx.registry.clone(),
        Duration::from_secs(30),
    ));
    // What is under way when the last one turns Running finishes: the window starts once
    // 5 s have passed with no request (within a minute; past it the window tells why).
    let quiet_by = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = count(&api.requests(), |r| !r.watch);
        tokio::time::sleep(Duration::from_secs(5)).await;
        if count(&api.requests(), |r| !r.watch) == seen || tokio::time::Instant::now() > quiet_by {
            break;
        }
    }

    let before = api.requests().len();
    tokio::time::sleep(WINDOW).await;
    let window: Vec<Recorded> = api.requests()[before..].to_vec();
    let requests = count(&window, |r| !r.watch);
    let per_cluster_minute = requests as f64 / CLUSTERS as f64 / (WINDOW.as_secs_f64() / 60.0);
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in &window {
        *by_kind
            .entry(format!("{} {}", r.method, r.path))
            .or_default() += 1;
    }
    println!(
        "steady state: {requests} requests from {CLUSTERS} clusters in {} s: {per_cluster_minute:.1} requests per cluster per minute; {by_kind:?}",
        WINDOW.as_secs()
    );
    assert_eq!(
        count(&window, Recorded::is_status_write),
        0,
        "no status write while nothing changes: {by_kind:?}"
    );
    if per_cluster_minute > 10.0 {
        // What kept the clusters from being steady: their conditions as last written.
        let statuses: Vec<String> = clusters
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|c| format!("{}: {:?}", c.name_any(), c.status))
                    .collect()
            })
            .unwrap_or_default();
        panic!(
            "{per_cluster_minute:.1} requests per cluster per minute: {by_kind:?}\n{}",
            statuses.join("\n")
        );
    }

    // The sidecars fall silent (no API event at all): once their reports are stale the
    // clusters are looked at, and shown as they are.
    for h in helpers {
        h.abort();
    }
    wait_for(
        "the silence to show in every status",
        Duration::from_secs(90),
        || {
            let clusters = clusters.clone();
            async move {
                let list = clusters.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .all(|c| c.status.as_ref().is_some_and(|s| s.ready_members == 0))
                    .then_some(())
            }
        },
    )
    .await
    .expect("stale reports start a reconcile");
    controller.abort();
    renewals.abort();
}

async fn wait_for_status(
    clusters: &Api<EtcdCluster>,
    name: &str,
    what: &str,
    ok: impl Fn(&etcd_operator::resource::EtcdClusterStatus) -> bool,
) {
    wait_for(what, Duration::from_secs(30), || {
        let clusters = clusters.clone();
        let ok = &ok;
        async move {
            let c = clusters.get(name).await.ok()?;
            c.status.as_ref().is_some_and(ok).then_some(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Reconciles of `name` so far: each lists the cluster's Pods once.
fn reconciles(api: &WatchingApi) -> usize {
    count(&api.requests(), |r| {
        r.method == "GET" && r.path.ends_with("/pods") && !r.watch
    })
}

/// The controller's own status writes, a status written by anyone else, and metadata a
/// reconcile does not read start no reconcile; the spec, the labels and the backup-now
/// annotation do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_changes_that_matter_start_a_reconcile() {
    // An invalid spec: refused once, then nothing is awaited.
    let api = WatchingApi::new(fake(vec![cluster(NS, "quiet", 0)], None).await);
    let ctx = context(&api.client(), Arc::new(Fixed(HashMap::new())));
    let controller = tokio::spawn(run_controller(Arc::clone(&ctx), WatchNamespaces::one(NS)));
    let clusters = Api::<EtcdCluster>::namespaced(api.uncounted(), NS);
    wait_for_status(&clusters, "quiet", "the spec refused", |s| {
        s.phase == "Invalid"
    })
    .await;
    let settle = Duration::from_secs(3);
    tokio::time::sleep(settle).await;
    let first = reconciles(&api);
    assert!(first >= 1);

    let merge = |v: serde_json::Value| Patch::Merge(v);
    clusters
        .patch_status(
            "quiet",
            &PatchParams::default(),
            &merge(json!({"status": {"readyMembers": 5}})),
        )
        .await
        .unwrap();
    clusters
        .patch(
            "quiet",
            &PatchParams::default(),
            &merge(json!({"metadata": {"annotations": {"example.com/note": "x"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(settle).await;
    assert_eq!(
        reconciles(&api),
        first,
        "a status or an unrelated annotation starts no reconcile"
    );

    for (what, patch) in [
        (
            "the backup-now annotation",
            json!({"metadata": {"annotations": {"etcd.operator.rs/backup-now": "1"}}}),
        ),
        ("a label", json!({"metadata": {"labels": {"team": "a"}}})),
        ("the spec", json!({"spec": {"size": 1}})),
    ] {
        let before = reconciles(&api);
        clusters
            .patch("quiet", &PatchParams::default(), &merge(patch))
            .await
            .unwrap();
        wait_for(what, Duration::from_secs(30), || {
            let api = api.clone();
            async move { (reconciles(&api) > before).then_some(()) }
        })
        .await
        .unwrap_or_else(|e| panic!("{what} starts a reconcile: {e}"));
    }
    wait_for_status(&clusters, "quiet", "the seed created", |s| {
        s.phase == "Creating"
    })
    .await;
    controller.abort();
}

/// A cluster whose reconcile fails the same way every time writes its status and sends
/// its Event once, then retries on the error policy's growing backoff: its own status
/// write starts no reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cluster_writes_its_status_at_most_once_per_backoff() {
    const WINDOW: Duration = Duration::from_secs(12);
    let funcs = kube_fake_client::interceptor::Funcs::new().patch(|ctx| {
        if ctx.name == "failing-peer" {
            return Err(kube_fake_client::Error::Internal(
                "the API server is unwell".into(),
            ));
        }
        Ok(None)
    });
    let api = WatchingApi::new(fake(vec![cluster(NS, "failing", 3)], Some(funcs)).await);
    let mut ctx = bare_context(&api.client(), Arc::new(Fixed(HashMap::new())));
    ctx.failure_backoff = Duration::from_secs(1);
    ctx.max_failure_backoff = Duration::from_secs(4);
    let ctx = Arc::new(ctx);
    let controller = tokio::spawn(run_controller(Arc::clone(&ctx), WatchNamespaces::one(NS)));
    let clusters = Api::<EtcdCluster>::namespaced(api.uncounted(), NS);
    wait_for_status(&clusters, "failing", "the failure recorded", |s| {
        s.conditions.iter().any(|c| c.type_ == "ReconcileFailed")
    })
    .await;
    let start = api.requests().len();
    tokio::time::sleep(WINDOW).await;
    controller.abort();
    let all = api.requests();
    let window = &all[start..];
    let attempts = count(window, |r| {
        r.method == "PATCH" && r.path.ends_with("/services/failing-peer")
    });
    println!(
        "failing cluster: {attempts} attempts, {} status writes, {} Events in {} s",
        count(window, Recorded::is_status_write),
        count(window, Recorded::is_event_create) + count(window, Recorded::is_event_patch),
        WINDOW.as_secs()
    );
    // Backoff 1, 2, 4, 4, ... s: about 4 in 12 s (a fixed 1-s retry would be 12, a
    // reconcile on every status write unbounded).
    assert!(
        (1..=6).contains(&attempts),
        "{attempts} attempts in {} s",
        WINDOW.as_secs()
    );
    assert_eq!(count(window, Recorded::is_status_write), 0);
    assert_eq!(count(&all, Recorded::is_status_write), 1, "written once");
    assert_eq!(count(&all, Recorded::is_event_create), 1, "said once");
    assert_eq!(count(&all, Recorded::is_event_patch), 0);
}

/// With a list of namespaces, the clusters of those namespaces are managed and no other;
/// with every namespace, all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watched_namespaces_and_no_other() {
    let clusters = || {
        ["team-a", "team-b", "team-c"]
            .into_iter()
            .map(|ns| cluster(ns, "etcd", 1))
            .collect::<Vec<_>>()
    };
    let seeds = |api: &WatchingApi| {
        let pods = Api::<Pod>::all(api.uncounted());
        async move {
            let mut namespaces: Vec<String> = pods
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .filter(|p| p.name_any() == "etcd-0000")
                .map(|p| p.namespace().unwrap())
                .collect();
            namespaces.sort();
            namespaces
        }
    };
    for (watched, expected) in [
        (
            WatchNamespaces::parse("team-a, team-b").unwrap(),
            vec!["team-a", "team-b"],
        ),
        (WatchNamespaces::All, vec!["team-a", "team-b", "team-c"]),
    ] {
        let api = WatchingApi::new(fake(clusters(), None).await);
        let ctx = context(&api.client(), Arc::new(Fixed(HashMap::new())));
        let controller = tokio::spawn(run_controller(Arc::clone(&ctx), watched.clone()));
        let ok = wait_for(
            "a seed in each watched namespace",
            Duration::from_secs(30),
            || {
                let seeds = seeds(&api);
                let expected = expected.clone();
                async move { (seeds.await == expected).then_some(()) }
            },
        )
        .await;
        if let Err(e) = ok {
            panic!("{watched}: {e}; seeds in {:?}", seeds(&api).await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        controller.abort();
        assert_eq!(seeds(&api).await, expected, "{watched}");
        if watched != WatchNamespaces::All {
            let elsewhere: Vec<Recorded> = api
                .requests()
                .into_iter()
                .filter(|r| r.path.contains("/namespaces/team-c/"))
                .collect();
            assert!(elsewhere.is_empty(), "{elsewhere:?}");
            assert!(ctx.registry.keys().iter().all(|k| k.namespace != "team-c"));
        }
    }
}

/// An Event repeated becomes one Event with a series: its count is sent the first time it
/// repeats, then at most once per refresh period (by a repeat or a flush); a different
/// note is another Event.
#[tokio::test]
async fn a_repeated_event_is_one_series() {
    use etcd_coordinator::k8s::events::EventRecorder;
    use k8s_openapi::api::{core::v1::ObjectReference, events::v1::Event};
    use kube::runtime::events::EventType;
    let api = WatchingApi::new(fake(vec![], None).await);
    let recorder = EventRecorder::new(
        api.client(),
        Reporter {
            controller: "etcd-operator".into(),
            instance: None,
        },
    );
    recorder.set_refresh(Duration::from_secs(3600));
    let regarding = ObjectReference {
        api_version: Some("etcd.operator.rs/v1alpha1".into()),
        kind: Some("EtcdCluster".into()),
        name: Some("etcd".into()),
        namespace: Some(NS.into()),
        uid: Some("u-1".into()),
        ..Default::default()
    };
    let say = |note: &str| {
        recorder.publish(
            &regarding,
            EventType::Warning,
            "ApiCallFailed",
            note.to_string(),
        )
    };
    for _ in 0..10 {
        say("unwell").await.unwrap();
    }
    let events = Api::<Event>::namespaced(api.uncounted(), NS);
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].series.as_ref().map(|s| s.count), Some(2));
    let requests = api.requests();
    assert_eq!(count(&requests, Recorded::is_event_create), 1);
    assert_eq!(
        count(&requests, Recorded::is_event_patch),
        1,
        "ten said, two sent"
    );

    // Not due yet: nothing sent. Due: the count.
    recorder.flush().await;
    assert_eq!(count(&api.requests(), Recorded::is_event_patch), 1);
    recorder.set_refresh(Duration::ZERO);
    recorder.flush().await;
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed[0].series.as_ref().map(|s| s.count), Some(10));
    say("unwell: another message").await.unwrap();
    assert_eq!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(count(&api.requests(), Recorded::is_event_patch), 2);
}

/// Every task a term starts ends with the term. The controller runs under a term; its loop
/// that forgets deleted clusters is seen at work (a cluster the API does not hold is
/// forgotten); the term ends (its future is dropped, as `run_kubernetes` drops it when the
/// Lease is lost); a cluster learned after that is never forgotten by a loop of the old
/// term, whose view of the API stopped at its end.
#[tokio::test(start_paused = true)]
async fn no_loop_of_an_ended_term_forgets_a_cluster_learned_after_it() {
    let api = WatchingApi::new(fake(vec![], None).await);
    let ctx = context(&api.client(), Arc::new(Fixed(HashMap::new())));
    let term = tokio::spawn(run_controller(Arc::clone(&ctx), WatchNamespaces::one(NS)));
    let deleted = ClusterKey::new(NS, "deleted-before");
    ctx.registry.with(&deleted, |_, _| ());
    wait_for(
        "the term's loop to forget a cluster the API does not hold",
        Duration::from_secs(120),
        || {
            let gone = !ctx.registry.keys().contains(&deleted);
            async move { gone.then_some(()) }
        },
    )
    .await
    .expect("the forgetting loop runs while the term lasts");
    term.abort();
    let ended = term.await.expect_err("the term was ended");
    assert!(ended.is_cancelled(), "{ended}");

    let later = ClusterKey::new(NS, "created-later");
    ctx.registry.with(&later, |_, _| ());
    // An observation window of three rounds of the old loop (30 s each, on the paused
    // clock): the cluster must be there at every sample.
    let end = tokio::time::Instant::now() + Duration::from_secs(95);
    while tokio::time::Instant::now() < end {
        assert!(
            ctx.registry.keys().contains(&later),
            "a loop of the ended term forgot {later}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
