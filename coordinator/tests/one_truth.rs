//! Both runtimes tell the planner the same truth: for each physical situation (a member's
//! process or Pod gone with its data, gone without it, all gone, a node cut off from the API
//! server while its sidecar still reports, a data directory that cannot be read), the local
//! runtime (processes, a state directory) and the Kubernetes runtime (Pods and claims, on a
//! stateful in-memory API server) are put in that situation, each is observed the way the
//! controller observes it ([`observed_members`], [`planner_members`]), and the planner must
//! receive the same members: the same names, running or not, down or not, data intact or
//! gone, started again by the planner or not. A node cut off from the API server has no
//! local counterpart a runtime can see (a process either runs or not): there the Pod is
//! reported down while its sidecar reports it healthy, and what must be the same is the
//! planner's verdict: not dead, nothing done to it.
//!
//! No etcd runs here: a local member is a process that carries the member's name on its
//! command line (what the local runtime looks for), a Pod runs when its status says so.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use etcd_coordinator::{
    controller::{observed_members, planner_members},
    k8s::{KubeRuntime, build::PodSettings},
    local::{LocalPki, LocalRuntime, SidecarCommand},
    plan::{self, Action, EtcdMember, MemberData, Observed, Policy, RuntimeMember},
    record::DecisionRecord,
    registry::ReceivedReport,
    runtime::{MemberInfo, Runtime},
    security::ControlPlane,
};
use etcd_operator::{
    ClusterKey, EtcdVersion,
    etcd_bin::EtcdBinaries,
    proto::{HealthReport, MemberPhase},
    resource::{EtcdCluster, EtcdClusterSpec, StorageSpec},
    validate::validate_cluster,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube_fake_client::ClientBuilder;
use serde_json::json;
use testkit::wait_for;

const NS: &str = "default";
const CLUSTER: &str = "etcd-cluster";
const VERSION: EtcdVersion = EtcdVersion::new(3, 6, 15);

/// What has physically happened to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Its process or Pod runs.
    Runs,
    /// Its process or Pod is gone; its data stays (a claim on Kubernetes).
    GoneWithData,
    /// Its process or Pod is gone, and its data with it (an `emptyDir`).
    GoneWithoutData,
    /// Its node lost the API server: the Pod is marked for deletion (Terminating) while it
    /// runs on, and its sidecar still reports it healthy. Locally: its process runs.
    CutOff,
    /// Its process or Pod is gone, and its data directory cannot be read (not proven gone).
    DataUnreadable,
}

fn name(ordinal: u32) -> String {
    etcd_operator::naming::member_name(CLUSTER, ordinal)
}

/// What the planner is given of a member, without what legitimately differs between two
/// runs (times, restart counts): the physical truth.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    name: String,
    running: bool,
    down: bool,
    data: MemberData,
    /// Who starts it again once down: the planner (true) or the runtime itself. Only
    /// meaningful for a member that does not run.
    restarted_by_planner: Option<bool>,
}

fn seen(members: &[RuntimeMember]) -> Vec<Seen> {
    members
        .iter()
        .map(|m| Seen {
            name: m.name.clone(),
            running: m.running,
            down: m.down_since.is_some(),
            data: m.data,
            restarted_by_planner: (!m.running).then_some(m.restart_on_request),
        })
        .collect()
}

/// A healthy report of every member that runs or is cut off, received after the runtimes
/// were observed the first time.
fn reports(fates: &[Fate], now: i64) -> BTreeMap<String, ReceivedReport> {
    fates
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, Fate::Runs | Fate::CutOff))
        .map(|(i, _)| {
            let name = name(i as u32);
            let report = HealthReport {
                member_name: name.clone(),
                member_id: 100 + i as u64,
                healthy: true,
                phase: MemberPhase::Running as i32,
                etcd_version: VERSION.to_string(),
                ..Default::default()
            };
            (name, ReceivedReport::new(report, now))
        })
        .collect()
}

/// When the planner is asked: now, or for a node cut off from the API server, past
/// `dead_after_ms` of its Pod being down, when that alone would make the member dead (its
/// sidecar's reports arrive fresh all along, as they are received at that time).
fn verdict_time(fates: &[Fate]) -> i64 {
    let later = if fates.contains(&Fate::CutOff) {
        Policy::default().dead_after_ms + 1_000
    } else {
        0
    };
    etcd_operator::now_ms() + 1 + later
}

/// What the planner receives from `infos`, with the record naming every member, and what
/// it decides from it (every member a voter of the cluster etcd lists).
fn planner_view(infos: Vec<MemberInfo>, fates: &[Fate], now: i64) -> (Vec<Seen>, Action) {
    let record = DecisionRecord {
        members: (0..fates.len() as u32).map(name).collect::<BTreeSet<_>>(),
        ..Default::default()
    };
    let infos = observed_members(infos, &record, CLUSTER, VERSION, |_| now - 1);
    let members = planner_members(&infos, &reports(fates, now), &record, &BTreeMap::new(), now);
    let cluster = EtcdCluster::new(
        CLUSTER,
        EtcdClusterSpec {
            size: fates.len() as i32,
            version: VERSION.to_string(),
            ..Default::default()
        },
    );
    let observed = Observed {
        cluster: ClusterKey::local(CLUSTER),
        spec: validate_cluster(&cluster),
        etcd_members: Some(
            (0..fates.len() as u64)
                .map(|i| EtcdMember {
                    id: 100 + i,
                    name: name(i as u32),
                    peer_urls: vec![],
                    client_urls: vec![],
                    is_learner: false,
                })
                .collect(),
        ),
        members: members.clone(),
        grant: None,
        next_ordinal: fates.len() as u32,
        delete_requested: vec![],
        backup_due: false,
        restore: None,
        recovery_backup: None,
        maintenance: Default::default(),
        bootstrap: None,
        created: true,
        ever_served: true,
        pending_force: None,
        abandoning: vec![],
        kept: vec![],
        upgrade_failed: None,
        ca: Default::default(),
        leave_unreachable: Default::default(),
        now,
        policy: Policy::default(),
    };
    (seen(&members), plan::plan(&observed).action)
}

/// Local mode: members are processes that carry their name on their command line.
async fn local_view(fates: &[Fate]) -> (Vec<Seen>, Action) {
    let state = tempfile::tempdir().unwrap();
    let (pki, ca) = LocalPki::open(state.path()).unwrap();
    let control = ControlPlane::new(ca, vec!["127.0.0.1".into()], Duration::from_secs(3600));
    let runtime = LocalRuntime::new(
        state.path(),
        SidecarCommand {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "while :; do sleep 1; done".into(),
                "member".into(),
            ],
        },
        "https://127.0.0.1:1",
        EtcdBinaries::from_env(),
        Arc::new(pki),
        control,
        Duration::from_secs(3600),
    );
    let key = ClusterKey::local(CLUSTER);
    for (i, _) in fates.iter().enumerate() {
        runtime
            .create_member(&key, &name(i as u32), VERSION, true, false)
            .await
            .unwrap();
    }
    let member_dir = |i: usize| state.path().join(CLUSTER).join(name(i as u32));
    for (i, fate) in fates.iter().enumerate() {
        // Every member wrote its data while it ran.
        let wal = member_dir(i).join("etcd").join("member").join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        std::fs::write(wal.join("0.wal"), b"wal").unwrap();
        if matches!(fate, Fate::Runs | Fate::CutOff) {
            continue;
        }
        let record: etcd_operator::local_record::ClusterRecord = serde_json::from_slice(
            &std::fs::read(state.path().join(CLUSTER).join("cluster.json")).unwrap(),
        )
        .unwrap();
        let pid = record.members[i].pid.expect("a pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        match fate {
            Fate::GoneWithoutData => std::fs::remove_dir_all(member_dir(i)).unwrap(),
            Fate::DataUnreadable => {
                // A file where etcd's data directory should be: it cannot be listed.
                std::fs::remove_dir_all(member_dir(i).join("etcd")).unwrap();
                std::fs::write(member_dir(i).join("etcd"), b"not a directory").unwrap();
            }
            _ => {}
        }
    }
    let gone = fates
        .iter()
        .filter(|f| !matches!(f, Fate::Runs | Fate::CutOff))
        .count();
    let infos = wait_for(
        "the local runtime to see the killed processes gone",
        Duration::from_secs(10),
        || async {
            let infos = runtime.members(&key).await.unwrap();
            (infos.iter().filter(|i| !i.running).count() == gone).then_some(infos)
        },
    )
    .await
    .unwrap();
    let view = planner_view(infos, fates, verdict_time(fates));
    runtime.stop_all().await;
    view
}

fn settings() -> PodSettings {
    PodSettings {
        operator_image: "registry.example/etcd-operator:test".into(),
        image_pull_policy: None,
        coordinator_url: "https://etcd-coordinator.default.svc:7443".into(),
        cluster_domain: "cluster.local".into(),
    }
}

/// Kubernetes: members are Pods (with claims when their data is to outlive them), their
/// status written as the kubelet writes it.
async fn kubernetes_view(fates: &[Fate]) -> (Vec<Seen>, Action) {
    let with_claims = !fates.contains(&Fate::GoneWithoutData);
    let mut cluster = EtcdCluster::new(
        CLUSTER,
        EtcdClusterSpec {
            size: fates.len() as i32,
            version: VERSION.to_string(),
            storage: with_claims.then(|| StorageSpec {
                size: "1Gi".into(),
                storage_class_name: None,
            }),
            ..Default::default()
        },
    );
    cluster.metadata.namespace = Some(NS.into());
    let client = ClientBuilder::new()
        .with_resource::<EtcdCluster>()
        .with_status_subresource::<EtcdCluster>()
        .with_object(cluster.clone())
        .build()
        .await
        .unwrap();
    let runtime = KubeRuntime::for_tests(
        client.clone(),
        settings(),
        etcd_operator::pki::DEFAULT_CERT_VALIDITY,
    );
    let key = ClusterKey::new(NS, CLUSTER);
    let stored: EtcdCluster = Api::namespaced(client.clone(), NS)
        .get(CLUSTER)
        .await
        .unwrap();
    runtime.track(&key, &stored);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for (i, _) in fates.iter().enumerate() {
        let member = name(i as u32);
        runtime
            .create_member(&key, &member, VERSION, true, false)
            .await
            .unwrap();
        let running = json!({"status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "etcd", "image": "etcd", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}
            }]
        }});
        pods.patch(&member, &PatchParams::default(), &Patch::Merge(&running))
            .await
            .unwrap();
    }
    // Observed once while everything runs (the runtime notes when a member goes down).
    runtime.members(&key).await.unwrap();
    for (i, fate) in fates.iter().enumerate() {
        let member = name(i as u32);
        match fate {
            Fate::Runs => {}
            // Marked below, on a server that starts with it so (an API server sets
            // deletionTimestamp itself; the in-memory one keeps what it is given).
            Fate::CutOff => {}
            // The claim stays: its data is there, unreadable or not, as far as anyone
            // outside the Pod can tell.
            Fate::GoneWithData | Fate::DataUnreadable | Fate::GoneWithoutData => {
                pods.delete(&member, &DeleteParams::default())
                    .await
                    .unwrap();
            }
        }
    }
    if with_claims {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
        assert_eq!(
            claims.list(&Default::default()).await.unwrap().items.len(),
            fates.len()
        );
    }
    let infos = match fates.iter().position(|f| *f == Fate::CutOff) {
        None => runtime.members(&key).await.unwrap(),
        Some(cut_off) => {
            // The same objects on a server where that member's Pod is Terminating, as the
            // node controller leaves the Pods of a node it cannot reach, its container
            // still running as last reported.
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
            let mut builder = ClientBuilder::new()
                .with_resource::<EtcdCluster>()
                .with_status_subresource::<EtcdCluster>()
                .with_object(stored.clone());
            for mut pod in pods.list(&Default::default()).await.unwrap().items {
                if pod.metadata.name.as_deref() == Some(name(cut_off as u32).as_str()) {
                    pod.metadata.finalizers = Some(vec!["example.com/node-unreachable".into()]);
                    pod.metadata.deletion_timestamp =
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::now(),
                        ));
                }
                builder = builder.with_object(pod);
            }
            for claim in claims.list(&Default::default()).await.unwrap().items {
                builder = builder.with_object(claim);
            }
            let client = builder.build().await.unwrap();
            let pod: Pod = Api::namespaced(client.clone(), NS)
                .get(&name(cut_off as u32))
                .await
                .unwrap();
            assert!(pod.metadata.deletion_timestamp.is_some(), "Terminating");
            let runtime = KubeRuntime::for_tests(
                client,
                settings(),
                etcd_operator::pki::DEFAULT_CERT_VALIDITY,
            );
            runtime.track(&key, &stored);
            runtime.members(&key).await.unwrap()
        }
    };
    planner_view(infos, fates, verdict_time(fates))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_runtimes_tell_the_planner_the_same_truth() {
    use Fate::*;
    let rows: &[(&str, [Fate; 3])] = &[
        ("every member runs", [Runs, Runs, Runs]),
        (
            "a process or Pod gone with its data (a claim kept)",
            [Runs, Runs, GoneWithData],
        ),
        (
            "a process or Pod gone without its data",
            [Runs, Runs, GoneWithoutData],
        ),
        (
            "every member gone without its data",
            [GoneWithoutData, GoneWithoutData, GoneWithoutData],
        ),
        (
            "every member gone, its data kept",
            [GoneWithData, GoneWithData, GoneWithData],
        ),
        (
            "a node cut off from the API server, its sidecar still reporting healthy",
            [Runs, Runs, CutOff],
        ),
        (
            "a data directory that cannot be read",
            [Runs, Runs, DataUnreadable],
        ),
    ];
    for (situation, fates) in rows {
        let (local, local_plan) = local_view(fates).await;
        let (kubernetes, kubernetes_plan) = kubernetes_view(fates).await;
        if fates.contains(&CutOff) {
            // Cut off: nothing is done to the member its sidecar says serves.
            for plan in [&local_plan, &kubernetes_plan] {
                assert!(
                    !matches!(
                        plan,
                        Action::RemoveDeadMember { .. }
                            | Action::DeleteRuntimeMember { .. }
                            | Action::RestartMember { .. }
                    ),
                    "{situation}: {plan:?}"
                );
            }
            continue;
        }
        assert_eq!(
            local, kubernetes,
            "{situation}: the planner is told different things"
        );
        assert_eq!(
            local_plan, kubernetes_plan,
            "{situation}: the planner decides differently"
        );
        // And what it is told is the physical truth.
        for (seen, fate) in local.iter().zip(fates.iter()) {
            let expected = match fate {
                Runs | CutOff => (true, MemberData::Intact),
                GoneWithData | DataUnreadable => (false, MemberData::Intact),
                GoneWithoutData => (false, MemberData::Gone),
            };
            assert_eq!(
                (seen.running, seen.data),
                expected,
                "{situation}: {} ({fate:?})",
                seen.name
            );
        }
    }
}
