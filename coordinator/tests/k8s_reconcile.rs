//! The Kubernetes path against a stateful in-memory API server (kube-fake-client): what a
//! reconcile creates, field by field; the status it writes; what an invalid or malformed
//! spec does (a condition and an Event, no Pods); the Pod changes of create, scale down,
//! replacement and upgrade, one step at a time; the finalizer; leader election.
//!
//! No etcd runs here: members never report, so the controller stops after its first step
//! (a seed). `k8s_kubelet.rs` runs the Pods for real.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_coordinator::{
    k8s::{
        ANNOTATION_ETCD_VERSION, ANNOTATION_NEXT_ORDINAL, ANNOTATION_RECORD, Context, FINALIZER,
        KubeRuntime,
        build::PodSettings,
        leader::{LeaderElector, LeaseSettings},
        reconcile,
    },
    runtime::{MemberData, Runtime},
};
use etcd_operator::{
    ClusterKey, EtcdVersion,
    resource::{EtcdCluster, EtcdClusterSpec, ImagePullSecret, PodPolicy, StorageSpec},
};
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{PersistentVolumeClaim, Pod, Secret, Service},
        events::v1::Event,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Client, ResourceExt,
    api::{Api, DeleteParams, ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use kube_fake_client::{ClientBuilder, interceptor};
use serde_json::json;

const NS: &str = "default";
const NAME: &str = "etcd-cluster";
const OPERATOR_IMAGE: &str = "registry.example/etcd-operator:test";

fn cluster(size: i32, version: &str) -> EtcdCluster {
    let mut c = EtcdCluster::new(
        NAME,
        EtcdClusterSpec {
            size,
            version: version.into(),
            ..Default::default()
        },
    );
    c.metadata.namespace = Some(NS.into());
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

async fn fake(objects: Vec<EtcdCluster>, funcs: Option<interceptor::Funcs>) -> Client {
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

/// The runtime of the tests: Pod DNS, a fresh control CA, certificates valid for 90 days.
fn kube_runtime(client: &Client) -> KubeRuntime {
    KubeRuntime::for_tests(
        client.clone(),
        settings(),
        etcd_operator::pki::DEFAULT_CERT_VALIDITY,
    )
}

fn context(client: &Client) -> Arc<Context> {
    Context::for_tests(client.clone(), Arc::new(kube_runtime(client)))
}

async fn reconcile_once(ctx: &Arc<Context>) -> Action {
    let obj = ctx
        .clusters(NS)
        .get(NAME)
        .await
        .expect("the cluster exists");
    reconcile(Arc::new(obj), Arc::clone(ctx))
        .await
        .expect("reconcile succeeds")
}

async fn get_cluster(client: &Client) -> EtcdCluster {
    Api::<EtcdCluster>::namespaced(client.clone(), NS)
        .get(NAME)
        .await
        .expect("the cluster exists")
}

async fn pod_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    names.sort();
    names
}

async fn events(client: &Client) -> Vec<(String, String, String)> {
    Api::<Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

fn env_map(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    format!("fieldRef:{}", from.field_ref.as_ref().unwrap().field_path)
                }
                _ => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

#[tokio::test]
async fn create_makes_the_initial_pods_services_budget_and_status() {
    // Records, at the moment each Pod is created, the next-ordinal annotation the cluster
    // carries: it must already be past the new member's ordinal.
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let seen_at_create: Seen = Arc::default();
    let seen = Arc::clone(&seen_at_create);
    let funcs = interceptor::Funcs::new().create(move |ctx| {
        if ctx.object.get("kind").and_then(|k| k.as_str()) == Some("Pod") {
            let c: EtcdCluster = ctx.client.get(NS, NAME).expect("cluster");
            let name = ctx.object["metadata"]["name"].as_str().unwrap().to_string();
            seen.lock()
                .unwrap()
                .push((name, c.annotations().get(ANNOTATION_NEXT_ORDINAL).cloned()));
        }
        Ok(None)
    });
    let client = fake(vec![cluster(3, "3.6.15")], Some(funcs)).await;
    let ctx = context(&client);

    // One pass: Services, budget, the three initial Pods (they bootstrap the cluster
    // together), status; no finalizer (deletion never waits on the coordinator).
    let generation = get_cluster(&client).await.metadata.generation;
    let action = reconcile_once(&ctx).await;
    assert_eq!(action, Action::requeue(ctx.busy_requeue));
    let initial = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
    ];
    assert_eq!(pod_names(&client).await, initial);
    assert_eq!(
        *seen_at_create.lock().unwrap(),
        [
            ("etcd-cluster-0000".to_string(), Some("1".to_string())),
            ("etcd-cluster-0001".to_string(), Some("2".to_string())),
            ("etcd-cluster-0002".to_string(), Some("3".to_string())),
        ]
    );
    let c = get_cluster(&client).await;
    assert!(c.finalizers().is_empty(), "{:?}", c.finalizers());
    let uid = c.uid().unwrap();
    assert_eq!(c.annotations()[ANNOTATION_NEXT_ORDINAL], "3");
    for name in &initial[1..] {
        let pod = Api::<Pod>::namespaced(client.clone(), NS)
            .get(name)
            .await
            .unwrap();
        assert_eq!(pod.annotations()["etcd.operator.rs/seed"], "true", "{name}");
    }
    let owner = OwnerReference {
        api_version: "etcd.operator.rs/v1alpha1".into(),
        kind: "EtcdCluster".into(),
        name: NAME.into(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };

    // The Pod, field by field.
    let pod = Api::<Pod>::namespaced(client.clone(), NS)
        .get("etcd-cluster-0000")
        .await
        .unwrap();
    assert_eq!(pod.owner_references(), std::slice::from_ref(&owner));
    let labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/instance", NAME),
        ("app.kubernetes.io/managed-by", "etcd-operator"),
        ("app.kubernetes.io/name", "etcd"),
        ("etcd.operator.rs/cluster", NAME),
        ("etcd.operator.rs/member", "etcd-cluster-0000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(pod.labels(), &labels);
    assert_eq!(pod.annotations()["etcd.operator.rs/seed"], "true");
    assert_eq!(pod.annotations()[ANNOTATION_ETCD_VERSION], "3.6.15");
    assert_eq!(pod.annotations()["etcd.operator.rs/tls"], "false");
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("etcd-cluster-0000"));
    assert_eq!(spec.subdomain.as_deref(), Some("etcd-cluster-peer"));
    assert_eq!(spec.enable_service_links, Some(false));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.fs_group, Some(65532));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );

    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, "install-sidecar");
    assert_eq!(init.image.as_deref(), Some(OPERATOR_IMAGE));
    assert_eq!(
        init.command.as_deref().unwrap(),
        [
            "/usr/local/bin/etcd-coordinator",
            "install-sidecar",
            "/opt/etcd-operator"
        ]
    );
    // Requests and limits (a namespace with a compute ResourceQuota refuses a Pod with a
    // container that has none).
    let init_resources = init.resources.as_ref().expect("init container resources");
    let quantities = |m: &Option<BTreeMap<String, Quantity>>| -> Vec<(String, String)> {
        m.iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    };
    assert_eq!(
        quantities(&init_resources.requests),
        [
            ("cpu".into(), "10m".into()),
            ("memory".into(), "32Mi".into())
        ]
    );
    assert_eq!(
        quantities(&init_resources.limits),
        [
            ("cpu".into(), "200m".into()),
            ("memory".into(), "64Mi".into())
        ]
    );
    assert_eq!(
        spec.image_pull_secrets, None,
        "none unless the spec names some"
    );
    let init_mounts = init.volume_mounts.as_ref().unwrap();
    assert_eq!(init_mounts[0].name, "sidecar");
    assert_eq!(init_mounts[0].mount_path, "/opt/etcd-operator");
    assert_eq!(init_mounts[0].read_only, None);

    assert_eq!(spec.containers.len(), 1);
    let etcd = &spec.containers[0];
    assert_eq!(etcd.name, "etcd");
    assert_eq!(
        etcd.image.as_deref(),
        Some("gcr.io/etcd-development/etcd:v3.6.15")
    );
    assert_eq!(
        etcd.command.as_deref().unwrap(),
        ["/opt/etcd-operator/etcd-sidecar", "run"]
    );
    assert_eq!(etcd.args, None);
    let host = "etcd-cluster-0000.etcd-cluster-peer.default.svc";
    let want_env: BTreeMap<String, String> = [
        ("ETCDOP_CLUSTER", NAME.to_string()),
        ("ETCDOP_NAMESPACE", "fieldRef:metadata.namespace".into()),
        ("ETCDOP_MEMBER_NAME", "etcd-cluster-0000".into()),
        ("ETCDOP_DATA_DIR", "/var/lib/etcd".into()),
        ("ETCDOP_PEER_URL", format!("http://{host}:2380")),
        ("ETCDOP_CLIENT_URL", format!("http://{host}:2379")),
        ("ETCDOP_LISTEN_PEER_URL", "http://0.0.0.0:2380".into()),
        ("ETCDOP_LISTEN_CLIENT_URL", "http://0.0.0.0:2379".into()),
        ("ETCDOP_LISTEN_METRICS_URL", "http://0.0.0.0:2381".into()),
        (
            "ETCDOP_COORDINATOR_URL",
            "https://etcd-coordinator.default.svc:7443".into(),
        ),
        ("ETCDOP_GRPC_ADDR", "0.0.0.0:7401".into()),
        ("ETCDOP_GRPC_URL", format!("https://{host}:7401")),
        ("ETCDOP_HEALTH_ADDR", "0.0.0.0:7402".into()),
        ("ETCDOP_TLS_CERT", "/etc/etcd-operator/tls/tls.crt".into()),
        ("ETCDOP_TLS_KEY", "/etc/etcd-operator/tls/tls.key".into()),
        ("ETCDOP_TLS_CA", "/etc/etcd-operator/tls/ca.crt".into()),
        (
            "ETCDOP_ETCD_VERSION",
            "fieldRef:metadata.annotations['etcd.operator.rs/etcd-version']".into(),
        ),
        ("ETCDOP_ETCD_BINARY", "/usr/local/bin/etcd".into()),
        ("ETCDOP_ETCDUTL", "/usr/local/bin/etcdutl".into()),
        (
            "ETCDOP_CLUSTER_ENDPOINTS",
            "http://etcd-cluster.default.svc:2379".into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(env_map(&pod), want_env);
    assert!(
        env_map(&pod).keys().all(|k| !k.starts_with("ETCD_")),
        "etcd reads every ETCD_* variable as a flag"
    );
    let ports: Vec<(String, i32)> = etcd
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("client".to_string(), 2379),
            ("peer".to_string(), 2380),
            ("sidecar".to_string(), 7401),
            ("health".to_string(), 7402),
            ("etcd-metrics".to_string(), 2381)
        ]
    );
    let probe = etcd
        .readiness_probe
        .as_ref()
        .unwrap()
        .grpc
        .as_ref()
        .unwrap();
    assert_eq!(
        probe.port, 7402,
        "the plaintext health port: probes speak no TLS"
    );
    assert_eq!(probe.service.as_deref(), Some("etcdop.v1.Sidecar"));
    // Liveness: the sidecar process's own gRPC health (always SERVING while it answers), on
    // the same plaintext port; never etcd's health, so a member catching up or in an
    // election is not killed.
    let live = etcd.liveness_probe.as_ref().expect("a liveness probe");
    let live_grpc = live.grpc.as_ref().unwrap();
    assert_eq!(live_grpc.port, 7402);
    assert_eq!(
        live_grpc.service.as_deref(),
        Some("etcdop.v1.Sidecar.Liveness")
    );
    assert!(live.http_get.is_none() && live.tcp_socket.is_none() && live.exec.is_none());
    assert_eq!(
        (
            live.initial_delay_seconds,
            live.period_seconds,
            live.timeout_seconds,
            live.failure_threshold
        ),
        (Some(10), Some(15), Some(5), Some(6))
    );
    let sc = etcd.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let mounts: Vec<(&str, &str, Option<bool>)> = etcd
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("data", "/var/lib/etcd", None),
            ("sidecar", "/opt/etcd-operator", Some(true)),
            ("tls", "/etc/etcd-operator/tls", Some(true))
        ]
    );
    let volumes = spec.volumes.as_ref().unwrap();
    assert_eq!(volumes.len(), 3);
    let tls = volumes[2].secret.as_ref().unwrap();
    assert_eq!(tls.secret_name.as_deref(), Some("etcd-cluster-0000-tls"));
    assert_eq!(tls.default_mode, Some(0o440));
    // The member's Secret: owned by its Pod, the control path's files only (no spec.tls).
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get("etcd-cluster-0000-tls")
        .await
        .unwrap();
    let owners = secret.owner_references();
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("Pod", "etcd-cluster-0000")
    );
    assert_eq!(Some(owners[0].uid.clone()), pod.uid());
    let keys: Vec<&str> = secret
        .data
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    assert_eq!(volumes[0].name, "data");
    assert!(volumes[0].empty_dir.is_some() && volumes[0].persistent_volume_claim.is_none());
    assert_eq!(volumes[1].name, "sidecar");
    assert!(volumes[1].empty_dir.is_some());
    let anti = spec
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap();
    let preferred = &anti
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        preferred.pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );

    // Services.
    let services = Api::<Service>::namespaced(client.clone(), NS);
    let client_svc = services.get(NAME).await.unwrap();
    assert_eq!(client_svc.owner_references(), std::slice::from_ref(&owner));
    let s = client_svc.spec.unwrap();
    assert_eq!(s.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        s.selector.unwrap(),
        BTreeMap::from([("etcd.operator.rs/cluster".to_string(), NAME.to_string())])
    );
    let ports = s.ports.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port),
        (Some("client"), 2379)
    );
    assert_eq!(
        ports[0].target_port,
        Some(IntOrString::String("client".into()))
    );
    assert_eq!(s.publish_not_ready_addresses, None);
    let peer = services.get("etcd-cluster-peer").await.unwrap();
    assert_eq!(peer.owner_references(), std::slice::from_ref(&owner));
    let p = peer.spec.unwrap();
    assert_eq!(p.cluster_ip.as_deref(), Some("None"));
    assert_eq!(p.publish_not_ready_addresses, Some(true));
    let peer_ports: Vec<(Option<String>, i32)> = p
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.port))
        .collect();
    assert_eq!(
        peer_ports,
        [
            (Some("client".into()), 2379),
            (Some("peer".into()), 2380),
            (Some("sidecar".into()), 7401),
            (Some("etcd-metrics".into()), 2381)
        ]
    );
    assert_eq!(
        peer.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"],
        "peer"
    );

    // The budget keeps quorum of 3.
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
        .get(NAME)
        .await
        .unwrap();
    assert_eq!(pdb.owner_references(), [owner]);
    let pdb = pdb.spec.unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(2)));
    assert_eq!(pdb.max_unavailable, None);

    // Status, written through the status subresource.
    let status = get_cluster(&client).await.status.expect("status written");
    assert_eq!(status.phase, "Creating");
    assert_eq!(
        status.size, 0,
        "the initial members are created in this pass, after observing"
    );
    assert_eq!(status.ready_members, 0);
    assert_eq!(status.target_version, "3.6.15");
    assert_eq!(status.selector, "etcd.operator.rs/cluster=etcd-cluster");
    // (The fake bumps the generation on metadata writes too; a real server does not.)
    assert_eq!(status.observed_generation, generation);
    let conditions: Vec<(&str, &str, &str)> = status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        conditions,
        [
            ("Available", "False", "QuorumUnavailable"),
            ("Progressing", "True", "CreateInitial"),
            ("Degraded", "False", "AllMembersHealthy"),
            ("SpecValid", "True", "Valid"),
            ("CertificatesValid", "True", "Valid"),
        ]
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.last_transition_time.ends_with('Z'))
    );
    let events = events(&client).await;
    assert!(
        events.contains(&(
            "Normal".into(),
            "CreateInitial".into(),
            "create initial etcd-cluster-0000, etcd-cluster-0001, etcd-cluster-0002".into()
        )),
        "{events:?}"
    );

    // Next pass: the members have not started (no kubelet here): nothing else is created,
    // and in particular no second set of initial members.
    reconcile_once(&ctx).await;
    assert_eq!(pod_names(&client).await, initial);
    let status = get_cluster(&client).await.status.unwrap();
    assert_eq!(status.size, 3);
    let members: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(members, initial);
    assert!(status.members.iter().all(|m| !m.healthy));
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_and_an_event_and_no_pods() {
    let client = fake(vec![cluster(0, "3.6.15")], None).await;
    let ctx = context(&client);
    reconcile_once(&ctx).await;
    assert!(pod_names(&client).await.is_empty());
    assert!(
        Api::<Service>::namespaced(client.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing is touched for an invalid spec"
    );
    let status = get_cluster(&client).await.status.unwrap();
    assert_eq!(status.phase, "Invalid");
    let spec_valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SpecValid")
        .unwrap();
    assert_eq!(spec_valid.status, "False");
    assert_eq!(spec_valid.reason, "Invalid");
    assert!(
        spec_valid.message.contains("spec.size is 0"),
        "{spec_valid:?}"
    );
    let events = events(&client).await;
    assert!(
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "InvalidSpec" && n.contains("spec.size is 0")),
        "{events:?}"
    );
}

#[tokio::test]
async fn private_registries_get_pull_secrets_and_the_init_image_they_name() {
    let mut c = cluster(3, "3.6.15");
    c.spec.pod = Some(PodPolicy {
        image_pull_secrets: vec![ImagePullSecret {
            name: "regcred".into(),
        }],
        sidecar_image: Some("registry.internal/mirror/etcd-operator:v0.1.0".into()),
        ..Default::default()
    });
    c.spec.repository = Some("registry.internal/mirror/etcd".into());
    let client = fake(vec![c], None).await;
    let ctx = context(&client);
    reconcile_once(&ctx).await;
    let pod = Api::<Pod>::namespaced(client.clone(), NS)
        .get("etcd-cluster-0000")
        .await
        .unwrap();
    let spec = pod.spec.unwrap();
    let pull: Vec<&str> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(pull, ["regcred"]);
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        init.image.as_deref(),
        Some("registry.internal/mirror/etcd-operator:v0.1.0")
    );
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("registry.internal/mirror/etcd:v3.6.15")
    );
}

#[tokio::test]
async fn an_empty_pull_secret_name_is_refused_with_its_place_named() {
    let mut c = cluster(3, "3.6.15");
    c.spec.pod = Some(PodPolicy {
        image_pull_secrets: vec![
            ImagePullSecret {
                name: "regcred".into(),
            },
            ImagePullSecret { name: "".into() },
        ],
        ..Default::default()
    });
    let client = fake(vec![c], None).await;
    let ctx = context(&client);
    reconcile_once(&ctx).await;
    assert!(pod_names(&client).await.is_empty());
    let status = get_cluster(&client).await.status.unwrap();
    assert_eq!(status.phase, "Invalid");
    let spec_valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SpecValid")
        .unwrap();
    assert_eq!(spec_valid.status, "False");
    assert!(
        spec_valid
            .message
            .contains("spec.pod.imagePullSecrets[1].name \"\" is not a Secret name"),
        "{spec_valid:?}"
    );
}

#[tokio::test]
async fn a_malformed_object_is_refused_without_breaking_anything() {
    let client = ClientBuilder::new()
        .with_resource::<EtcdCluster>()
        .with_status_subresource::<EtcdCluster>()
        .with_runtime_objects(vec![json!({
            "apiVersion": "etcd.operator.rs/v1alpha1",
            "kind": "EtcdCluster",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {"size": "three", "version": "3.6.15"}
        })])
        .build()
        .await
        .unwrap();
    let ctx = context(&client);
    let action = reconcile_once(&ctx).await;
    assert_eq!(action, Action::await_change());
    assert!(pod_names(&client).await.is_empty());
    let raw = ctx.clusters(NS).get(NAME).await.unwrap();
    let status = &raw.data["status"];
    assert_eq!(status["phase"], "Invalid");
    assert_eq!(status["conditions"][0]["type"], "SpecValid");
    assert_eq!(status["conditions"][0]["reason"], "Malformed");
    let events = events(&client).await;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "Malformed"),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_earlier_versions_finalizer_is_removed_and_nothing_else_is_done_with_it() {
    let mut c = cluster(3, "3.6.15");
    c.metadata.finalizers = Some(vec![FINALIZER.into(), "someone.else/keep".into()]);
    let client = fake(vec![c], None).await;
    let ctx = context(&client);
    assert_eq!(reconcile_once(&ctx).await, Action::await_change());
    assert_eq!(
        get_cluster(&client).await.finalizers(),
        ["someone.else/keep".to_string()],
        "ours removed, the other kept"
    );
    assert!(pod_names(&client).await.is_empty());
    // The next pass creates the cluster: its three initial members at once.
    reconcile_once(&ctx).await;
    assert_eq!(
        pod_names(&client).await,
        [
            "etcd-cluster-0000",
            "etcd-cluster-0001",
            "etcd-cluster-0002"
        ]
    );
}

#[tokio::test]
async fn a_cluster_gone_from_the_api_is_forgotten() {
    let client = fake(vec![cluster(3, "3.6.15")], None).await;
    let ctx = context(&client);
    reconcile_once(&ctx).await;
    let key = ClusterKey::new(NS, NAME);
    assert!(ctx.registry.keys().contains(&key));
    // Still there: kept.
    assert!(
        etcd_coordinator::k8s::reconcile::forget_deleted(&ctx, std::slice::from_ref(&key))
            .is_empty()
    );
    assert!(ctx.registry.keys().contains(&key));
    // Deleted (no finalizer held it): forgotten.
    Api::<EtcdCluster>::namespaced(client.clone(), NS)
        .delete(NAME, &Default::default())
        .await
        .unwrap();
    assert!(
        Api::<EtcdCluster>::namespaced(client.clone(), NS)
            .get_opt(NAME)
            .await
            .unwrap()
            .is_none(),
        "a deletion completes without the coordinator"
    );
    assert_eq!(
        etcd_coordinator::k8s::reconcile::forget_deleted(&ctx, &[]),
        vec![key.clone()]
    );
    assert!(!ctx.registry.keys().contains(&key));
}

#[tokio::test]
async fn deletion_passes_through_cleanup_and_drops_the_finalizer() {
    let mut c = cluster(3, "3.6.15");
    c.metadata.finalizers = Some(vec![FINALIZER.into()]);
    c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    let client = fake(vec![c], None).await;
    let ctx = context(&client);
    let key = ClusterKey::new(NS, NAME);
    ctx.registry.with(&key, |entry, _| entry.recovered = true);
    reconcile_once(&ctx).await;
    assert!(ctx.registry.keys().is_empty(), "the registry forgot it");
    let left = Api::<EtcdCluster>::namespaced(client.clone(), NS)
        .get_opt(NAME)
        .await
        .unwrap();
    assert!(
        left.is_none_or(|c| c.finalizers().is_empty()),
        "the finalizer is removed"
    );
    assert!(pod_names(&client).await.is_empty());
}

/// The Kubernetes runtime's steps, called here one at a time as the controller calls them:
/// each changes exactly the objects it names (one Pod, its ordinal recorded first). That the
/// controller takes one step at a time is the planner's to show (its tables and the
/// generated-situations oracle) and the kubelet-playing test's, not this test's.
#[tokio::test]
async fn each_runtime_step_changes_only_its_own_pod() {
    let client = fake(vec![cluster(3, "3.6.15")], None).await;
    let key = ClusterKey::new(NS, NAME);
    let runtime = kube_runtime(&client);
    let c = get_cluster(&client).await;
    runtime.track(&key, &c);
    let v36 = EtcdVersion::new(3, 6, 15);
    let v37 = EtcdVersion::new(3, 7, 2);

    // Scale up: one Pod per step, each ordinal recorded first.
    for (i, name) in [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(runtime.next_ordinal(&key).await.unwrap(), i as u32);
        runtime
            .create_member(&key, name, v36, i == 0, false)
            .await
            .unwrap();
        assert_eq!(
            get_cluster(&client).await.annotations()[ANNOTATION_NEXT_ORDINAL],
            (i + 1).to_string()
        );
        assert_eq!(pod_names(&client).await.len(), i + 1);
    }
    let members = runtime.members(&key).await.unwrap();
    assert_eq!(
        members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        [
            "etcd-cluster-0000",
            "etcd-cluster-0001",
            "etcd-cluster-0002"
        ]
    );
    assert!(members[0].seed && !members[1].seed);
    assert!(members.iter().all(|m| !m.running && m.down_since.is_none()));
    assert_eq!(
        members[2].peer_url,
        "http://etcd-cluster-0002.etcd-cluster-peer.default.svc:2380"
    );

    // The kubelet reports 0000 running: the runtime says so.
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let running = json!({"status": {"phase": "Running", "containerStatuses": [
        {"name": "etcd", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
         "state": {"running": {}}}]}});
    pods.patch(
        "etcd-cluster-0000",
        &PatchParams::default(),
        &Patch::Merge(&running),
    )
    .await
    .unwrap();
    let members = runtime.members(&key).await.unwrap();
    assert!(members[0].running, "{:?}", members[0]);

    // Replacement: someone deletes 0002's Pod (no claim: its data goes with it), so the
    // member is gone at once; the replacement gets a new ordinal.
    runtime
        .delete_member(&key, "etcd-cluster-0002", false)
        .await
        .unwrap();
    assert_eq!(runtime.members(&key).await.unwrap().len(), 2);
    assert_eq!(runtime.next_ordinal(&key).await.unwrap(), 3);
    // A new coordinator (leader change) reads the same from the annotation.
    let fresh = kube_runtime(&client);
    fresh.track(&key, &get_cluster(&client).await);
    fresh.members(&key).await.unwrap();
    assert_eq!(fresh.next_ordinal(&key).await.unwrap(), 3);
    runtime
        .create_member(&key, "etcd-cluster-0003", v36, false, false)
        .await
        .unwrap();
    assert_eq!(
        pod_names(&client).await,
        [
            "etcd-cluster-0000",
            "etcd-cluster-0001",
            "etcd-cluster-0003"
        ]
    );

    // Upgrade: one Pod's image and version annotation, nothing else of it.
    let before = pods.get("etcd-cluster-0001").await.unwrap();
    runtime
        .restart_member(&key, "etcd-cluster-0001", v37)
        .await
        .unwrap();
    let after = pods.get("etcd-cluster-0001").await.unwrap();
    assert_eq!(
        after.spec.as_ref().unwrap().containers[0].image.as_deref(),
        Some("gcr.io/etcd-development/etcd:v3.7.2")
    );
    assert_eq!(after.annotations()[ANNOTATION_ETCD_VERSION], "3.7.2");
    let mut unchanged = after.spec.clone().unwrap();
    unchanged.containers[0].image = before.spec.as_ref().unwrap().containers[0].image.clone();
    assert_eq!(Some(unchanged), before.spec, "only the image changed");
    assert_eq!(env_map(&after), env_map(&before));
    assert_eq!(after.uid(), before.uid(), "the same Pod: its volumes stay");
    let other = pods.get("etcd-cluster-0000").await.unwrap();
    assert_eq!(other.annotations()[ANNOTATION_ETCD_VERSION], "3.6.15");
    let members = runtime.members(&key).await.unwrap();
    assert_eq!(members[1].version, v37);
    assert_eq!(members[0].version, v36);

    // Scale down: the Pod goes.
    runtime
        .delete_member(&key, "etcd-cluster-0003", false)
        .await
        .unwrap();
    assert_eq!(
        pod_names(&client).await,
        ["etcd-cluster-0000", "etcd-cluster-0001"]
    );
}

#[tokio::test]
async fn with_storage_a_member_keeps_its_claim_and_gets_its_pod_back() {
    let mut c = cluster(3, "3.6.15");
    c.spec.storage = Some(StorageSpec {
        size: "8Gi".into(),
        storage_class_name: Some("fast".into()),
    });
    let client = fake(vec![c], None).await;
    let key = ClusterKey::new(NS, NAME);
    let runtime = kube_runtime(&client);
    runtime.track(&key, &get_cluster(&client).await);
    let v = EtcdVersion::new(3, 6, 15);
    runtime
        .create_member(&key, "etcd-cluster-0000", v, true, false)
        .await
        .unwrap();
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS);
    let claim = claims.get("etcd-cluster-0000-data").await.unwrap();
    let spec = claim.spec.as_ref().unwrap();
    assert_eq!(
        spec.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_string()][..])
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "8Gi"
    );
    assert_eq!(claim.annotations()["etcd.operator.rs/seed"], "true");
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let pod = pods.get("etcd-cluster-0000").await.unwrap();
    let data = &pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
    assert_eq!(
        data.persistent_volume_claim.as_ref().unwrap().claim_name,
        "etcd-cluster-0000-data"
    );
    let uid = pod.uid();

    // The Pod is deleted (a drain): the runtime reports the member down with its data, for
    // the planner to bring back; observing creates nothing.
    pods.delete("etcd-cluster-0000", &DeleteParams::default())
        .await
        .unwrap();
    let members = runtime.members(&key).await.unwrap();
    assert_eq!(members.len(), 1);
    assert!(!members[0].running && members[0].down_since.is_some());
    assert!(members[0].seed);
    assert_eq!(members[0].data, MemberData::Intact);
    assert!(members[0].restart_on_request);
    assert!(pods.get_opt("etcd-cluster-0000").await.unwrap().is_none());
    // The planner's RestartMember: the member comes back on its claim, same name.
    runtime
        .start_member(&key, "etcd-cluster-0000")
        .await
        .unwrap();
    let back = pods.get("etcd-cluster-0000").await.unwrap();
    assert_ne!(back.uid(), uid);
    let members = runtime.members(&key).await.unwrap();
    assert!(
        !members[0].restart_on_request,
        "a Pod that exists is kubelet's to restart"
    );

    // Deleting the member takes its claim too.
    runtime
        .delete_member(&key, "etcd-cluster-0000", false)
        .await
        .unwrap();
    assert!(
        claims
            .get_opt("etcd-cluster-0000-data")
            .await
            .unwrap()
            .is_none()
    );
    assert!(pod_names(&client).await.is_empty());
    assert!(runtime.members(&key).await.unwrap().is_empty());
}

#[tokio::test]
async fn pods_of_another_cluster_of_the_same_name_are_not_members() {
    let client = fake(vec![cluster(3, "3.6.15")], None).await;
    let key = ClusterKey::new(NS, NAME);
    let runtime = kube_runtime(&client);
    let c = get_cluster(&client).await;
    runtime.track(&key, &c);
    runtime
        .create_member(
            &key,
            "etcd-cluster-0000",
            EtcdVersion::new(3, 6, 15),
            true,
            false,
        )
        .await
        .unwrap();
    // The same name, recreated: a new uid.
    let mut recreated = c.clone();
    recreated.metadata.uid = Some("another-uid".into());
    runtime.track(&key, &recreated);
    assert!(runtime.members(&key).await.unwrap().is_empty());
}

fn lease_settings(identity: &str) -> LeaseSettings {
    LeaseSettings::new("etcd-coordinator-leader", NS, identity)
}

#[tokio::test]
async fn one_coordinator_leads_at_a_time() {
    let client = fake(vec![], None).await;
    let a = LeaderElector::new(client.clone(), lease_settings("coordinator-a"));
    let b = LeaderElector::new(client.clone(), lease_settings("coordinator-b"));
    let (mut seen_a, mut seen_b) = (None, None);
    let term = a.round(None, &mut seen_a).await.unwrap();
    assert!(term.is_some(), "a takes the free lease");
    assert_eq!(b.round(None, &mut seen_b).await.unwrap(), None, "b follows");
    assert_eq!(
        a.round(term, &mut seen_a).await.unwrap(),
        term,
        "a renews its term"
    );
    assert_eq!(b.round(None, &mut seen_b).await.unwrap(), None);
    let leases = Api::<Lease>::namespaced(client.clone(), NS);
    let lease = leases.get("etcd-coordinator-leader").await.unwrap();
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("coordinator-a")
    );
    a.release().await.unwrap();
    let b_term = b.round(None, &mut seen_b).await.unwrap();
    assert!(
        b_term > term,
        "b takes the released lease, under a newer term"
    );
    assert_eq!(
        a.round(None, &mut seen_a).await.unwrap(),
        None,
        "a follows now"
    );
    let lease = leases.get("etcd-coordinator-leader").await.unwrap();
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("coordinator-b")
    );
}

#[tokio::test(start_paused = true)]
async fn a_lease_unchanged_for_its_duration_is_taken_over() {
    let client = fake(vec![], None).await;
    let stale = Timestamp::now() - SignedDuration::from_secs(60);
    let leases = Api::<Lease>::namespaced(client.clone(), NS);
    leases
        .create(
            &Default::default(),
            &Lease {
                metadata: ObjectMeta {
                    name: Some("etcd-coordinator-leader".into()),
                    namespace: Some(NS.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("gone".into()),
                    lease_duration_seconds: Some(15),
                    renew_time: Some(MicroTime(stale)),
                    lease_transitions: Some(3),
                    ..Default::default()
                }),
            },
        )
        .await
        .unwrap();
    let a = LeaderElector::new(client.clone(), lease_settings("coordinator-a"));
    let mut seen = None;
    // Its renewTime says a minute ago, by the holder's clock: that decides nothing. It is
    // followed until this replica has seen it unchanged for the Lease's duration.
    assert_eq!(a.round(None, &mut seen).await.unwrap(), None);
    tokio::time::advance(Duration::from_secs(14)).await;
    assert_eq!(a.round(None, &mut seen).await.unwrap(), None);
    tokio::time::advance(Duration::from_secs(1)).await;
    let epoch = a.round(None, &mut seen).await.unwrap();
    assert!(epoch.is_some(), "taken over once unchanged for 15 s");
    let spec = leases
        .get("etcd-coordinator-leader")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("coordinator-a"));
    assert_eq!(spec.lease_transitions, Some(4));
}

#[tokio::test]
async fn a_failed_api_call_becomes_an_event_and_a_condition() {
    let funcs = interceptor::Funcs::new().patch(|ctx| {
        if ctx.name == "etcd-cluster-peer" {
            return Err(kube_fake_client::Error::Internal(
                "the API server is unwell".into(),
            ));
        }
        Ok(None)
    });
    let client = fake(vec![cluster(3, "3.6.15")], Some(funcs)).await;
    let ctx = context(&client);
    let obj = ctx.clusters(NS).get(NAME).await.unwrap();
    let err = reconcile(Arc::new(obj), Arc::clone(&ctx))
        .await
        .expect_err("the Service cannot be applied");
    assert_eq!(err.category(), "kube");
    assert!(err.to_string().contains("apply Service"), "{err}");
    assert!(
        pod_names(&client).await.is_empty(),
        "nothing acts after a failed step"
    );
    let events = events(&client).await;
    assert!(
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "ApiCallFailed" && n.contains("unwell")),
        "{events:?}"
    );
    let status = get_cluster(&client).await.status.unwrap();
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ReconcileFailed")
        .expect("a ReconcileFailed condition");
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "ApiCallFailed")
    );
    assert!(failed.message.contains("unwell"), "{failed:?}");

    // The same failure again writes no status and sends no Event: a write would be a watch
    // event and an immediate reconcile, a hot loop past the error policy's backoff.
    let version = get_cluster(&client).await.resource_version();
    let sent = events.len();
    let obj = ctx.clusters(NS).get(NAME).await.unwrap();
    reconcile(Arc::new(obj), Arc::clone(&ctx))
        .await
        .expect_err("still failing");
    assert_eq!(get_cluster(&client).await.resource_version(), version);
    assert_eq!(self::events(&client).await.len(), sent);
}

/// With `spec.tls`, a member gets etcd's certificates (serving, peer, its own client) beside
/// the control path's, https URLs and `ETCDOP_ETCD_TLS_DIR`; the cluster gets its etcd CA and
/// the applications' client Secret; a renewal updates the member's Secret in place, keeping
/// its keys.
#[tokio::test]
async fn tls_members_get_etcd_certificates_and_renewals_update_their_secret() {
    let mut c = cluster(3, "3.6.15");
    c.spec.tls = Some(etcd_operator::resource::TlsSpec { enabled: true });
    let client = fake(vec![c], None).await;
    let key = ClusterKey::new(NS, NAME);
    // Short-lived certificates: due for renewal a few seconds after they are issued.
    let runtime = KubeRuntime::for_tests(client.clone(), settings(), Duration::from_secs(6));
    runtime.track(&key, &get_cluster(&client).await);
    runtime
        .create_member(
            &key,
            "etcd-cluster-0000",
            EtcdVersion::new(3, 6, 15),
            true,
            true,
        )
        .await
        .unwrap();

    let pod = Api::<Pod>::namespaced(client.clone(), NS)
        .get("etcd-cluster-0000")
        .await
        .unwrap();
    assert_eq!(pod.annotations()["etcd.operator.rs/tls"], "true");
    let env = env_map(&pod);
    assert_eq!(env["ETCDOP_ETCD_TLS_DIR"], "/etc/etcd-operator/tls");
    let host = "etcd-cluster-0000.etcd-cluster-peer.default.svc";
    assert_eq!(env["ETCDOP_PEER_URL"], format!("https://{host}:2380"));
    assert_eq!(env["ETCDOP_CLIENT_URL"], format!("https://{host}:2379"));
    assert_eq!(env["ETCDOP_LISTEN_CLIENT_URL"], "https://0.0.0.0:2379");
    assert_eq!(
        env["ETCDOP_CLUSTER_ENDPOINTS"],
        "https://etcd-cluster.default.svc:2379"
    );

    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let files = |s: &Secret| -> BTreeMap<String, String> {
        s.data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
            .collect()
    };
    let member = secrets.get("etcd-cluster-0000-tls").await.unwrap();
    let first = files(&member);
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "ca.crt",
            "etcd-ca.crt",
            "etcd-client.crt",
            "etcd-client.key",
            "etcd-peer.crt",
            "etcd-peer.key",
            "etcd-server.crt",
            "etcd-server.key",
            "tls.crt",
            "tls.key"
        ]
    );
    let etcd_ca = secrets.get("etcd-cluster-etcd-ca").await.unwrap();
    assert_eq!(etcd_ca.owner_references()[0].kind, "EtcdCluster");
    assert_eq!(files(&etcd_ca)["ca.crt"], first["etcd-ca.crt"]);
    let app = secrets.get("etcd-cluster-client-tls").await.unwrap();
    assert_eq!(app.type_.as_deref(), Some("kubernetes.io/tls"));
    let app_keys: Vec<String> = files(&app).into_keys().collect();
    assert_eq!(app_keys, ["ca.crt", "tls.crt", "tls.key"]);
    assert!(runtime.etcd_client_tls(&key).await.unwrap().is_some());

    // Nothing is due yet; then every certificate is, and the Secret is updated in place.
    assert_eq!(runtime.renew_certificates(&key).await.unwrap(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while runtime.renew_certificates(&key).await.unwrap() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no renewal within 15 s of 6 s certificates"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let renewed = files(&secrets.get("etcd-cluster-0000-tls").await.unwrap());
    for (cert, key) in [
        ("tls.crt", "tls.key"),
        ("etcd-server.crt", "etcd-server.key"),
        ("etcd-peer.crt", "etcd-peer.key"),
    ] {
        assert_ne!(renewed[cert], first[cert], "{cert} renewed");
        assert_eq!(renewed[key], first[key], "{key} kept");
    }
}

/// The durable decision record of a cluster created with `members` whose bootstrap is over.
fn created_record(members: &[&str]) -> String {
    json!({
        "created": {"at": 1, "members": members},
        "members": members,
    })
    .to_string()
}

fn condition_of<'a>(
    status: &'a etcd_operator::resource::EtcdClusterStatus,
    type_: &str,
) -> Option<&'a etcd_operator::resource::ClusterCondition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// Every member of a created cluster gone with its data (its `emptyDir` Pods deleted):
/// under `quorumLoss: Manual` a coordinator started afresh creates nothing over it (an empty
/// cluster would be Running with none of the data it acknowledged) and says what was lost.
#[tokio::test]
async fn every_member_gone_with_its_data_creates_nothing_and_says_what_was_lost() {
    let names = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
    ];
    let mut c = cluster(3, "3.6.15");
    c.metadata.annotations = Some(BTreeMap::from([
        (ANNOTATION_NEXT_ORDINAL.to_string(), "3".to_string()),
        (ANNOTATION_RECORD.to_string(), created_record(&names)),
    ]));
    let client = fake(vec![c], None).await;
    let ctx = context(&client);
    reconcile_once(&ctx).await;
    reconcile_once(&ctx).await;
    assert!(
        pod_names(&client).await.is_empty(),
        "nothing is created over a cluster whose members are gone"
    );
    let status = get_cluster(&client).await.status.expect("a status");
    assert_eq!(status.phase, "Failed", "{status:?}");
    let lost = condition_of(&status, "QuorumLost").expect("a QuorumLost condition");
    assert_eq!(
        (lost.status.as_str(), lost.reason.as_str()),
        ("True", "DataLost")
    );
    for name in names {
        assert!(lost.message.contains(name), "{}", lost.message);
    }
    // The record still says the cluster was created: a later coordinator decides the same.
    let again = context(&client);
    reconcile_once(&again).await;
    assert!(pod_names(&client).await.is_empty());
}

/// A backup in a local storage directory, as a sidecar would have written it: its metadata
/// (verified) beside its snapshot, under `<namespace>/<cluster>/`.
fn stored_backup(dir: &std::path::Path, cluster: &str, name: &str) {
    let under = dir.join(NS).join(cluster);
    std::fs::create_dir_all(&under).unwrap();
    std::fs::write(under.join(format!("{name}.db")), b"snapshot").unwrap();
    let meta = etcd_operator::backup::BackupMeta {
        name: name.into(),
        namespace: NS.into(),
        cluster: cluster.into(),
        uid: format!("{cluster}-uid"),
        requested_at_unix_ms: 1_796_119_200_000,
        etcd_cluster_id: "abc".into(),
        member: format!("{cluster}-0000"),
        etcd_version: "3.6.15".into(),
        revision: 42,
        size_bytes: 8,
        sha256: "00".into(),
        created_at: "2026-12-01T10:00:00Z".into(),
        verified: true,
        ..Default::default()
    };
    std::fs::write(
        under.join(format!("{name}.json")),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
}

/// The backup a cluster is created from is decided once, in the `EtcdCluster`'s record,
/// before its seed is created: a coordinator started after the seed was created (before it
/// registers: a Pod being scheduled) finds the same backup there for the seed, and creates
/// no second seed.
#[tokio::test]
async fn the_restore_a_seed_was_created_for_survives_a_coordinator_restart() {
    let storage = tempfile::tempdir().unwrap();
    stored_backup(storage.path(), "source", "source-20261201T100000.000Z-r42");
    let mut c = cluster(3, "3.6.15");
    c.spec.restore = Some(etcd_operator::resource::RestoreSpec {
        backup: "latest".into(),
        cluster: Some("source".into()),
        storage: Some(etcd_operator::resource::BackupStorageSpec {
            local: Some(etcd_operator::resource::LocalStorageSpec {
                path: storage.path().display().to_string(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let client = fake(vec![c], None).await;
    let ctx = context(&client);
    reconcile_once(&ctx).await;
    assert_eq!(pod_names(&client).await, ["etcd-cluster-0000"]);
    let key = ClusterKey::new(NS, NAME);
    let decided = ctx.registry.record(&key).await.unwrap();
    let restore = decided.restore.expect("the restore is recorded");
    assert_eq!(restore.seed, "etcd-cluster-0000");
    assert_eq!(restore.source.backup, "source-20261201T100000.000Z-r42");

    // The backup storage goes away; the coordinator starts again (a new term).
    drop(storage);
    let restarted = context(&client);
    reconcile_once(&restarted).await;
    reconcile_once(&restarted).await;
    let read = restarted.registry.record(&key).await.unwrap();
    assert_eq!(
        read.restore.as_ref().map(|r| (&r.seed, &r.source.backup)),
        Some((&restore.seed, &restore.source.backup)),
        "the restarted coordinator reads the same decision"
    );
    assert_eq!(
        pod_names(&client).await,
        ["etcd-cluster-0000"],
        "no second seed"
    );
}

/// An `EtcdCluster` applied from the manifest of a deleted one carries that one's record in
/// its annotations: it names another object (its UID), so none of it holds here; the new
/// cluster is created as any new one is.
#[tokio::test]
async fn a_record_copied_from_another_object_is_not_this_clusters() {
    let names = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
    ];
    let mut c = cluster(3, "3.6.15");
    let mut copied: serde_json::Value = serde_json::from_str(&created_record(&names)).unwrap();
    copied["uid"] = json!("uid-of-a-deleted-cluster");
    c.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_RECORD.to_string(),
        copied.to_string(),
    )]));
    let client = fake(vec![c], None).await;
    let ctx = context(&client);
    reconcile_once(&ctx).await;
    assert_eq!(
        pod_names(&client).await.len(),
        3,
        "the new cluster is created"
    );
    let record = ctx
        .registry
        .record(&ClusterKey::new(NS, NAME))
        .await
        .unwrap();
    assert_eq!(record.uid, get_cluster(&client).await.metadata.uid.unwrap());
}

fn with_storage(mut c: EtcdCluster) -> EtcdCluster {
    c.spec.storage = Some(StorageSpec {
        size: "1Gi".into(),
        storage_class_name: None,
    });
    c
}

const MEMBERS: [&str; 3] = [
    "etcd-cluster-0000",
    "etcd-cluster-0001",
    "etcd-cluster-0002",
];

/// Three members created by the runtime (with claims when the spec has storage), their
/// Pods running as the kubelet reports them.
async fn three_running(client: &Client) {
    let key = ClusterKey::new(NS, NAME);
    let runtime = kube_runtime(client);
    runtime.track(&key, &get_cluster(client).await);
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let running = json!({"status": {"phase": "Running", "containerStatuses": [
        {"name": "etcd", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
         "state": {"running": {}}}]}});
    for (i, name) in MEMBERS.into_iter().enumerate() {
        runtime
            .create_member(&key, name, EtcdVersion::new(3, 6, 15), i == 0, false)
            .await
            .unwrap();
        pods.patch(name, &PatchParams::default(), &Patch::Merge(&running))
            .await
            .unwrap();
    }
}

/// The objects of `source` on a new server where `terminating`'s Pod is being deleted, its
/// grace period ending at `until`; while `stays` holds, deleting it does nothing (its node
/// is lost: nobody stops its container and the Pod stays Terminating).
async fn with_pod_terminating(
    source: &Client,
    terminating: &str,
    until: Timestamp,
    stays: Arc<std::sync::atomic::AtomicBool>,
) -> Client {
    let stuck = terminating.to_string();
    let funcs = interceptor::Funcs::new().delete(move |ctx| {
        if ctx.name == stuck && stays.load(std::sync::atomic::Ordering::SeqCst) {
            let pod: Pod = ctx.client.get(ctx.namespace, ctx.name)?;
            return Ok(Some(serde_json::to_value(pod).unwrap()));
        }
        Ok(None)
    });
    let mut builder = ClientBuilder::new()
        .with_resource::<EtcdCluster>()
        .with_status_subresource::<EtcdCluster>()
        .with_object(get_cluster(source).await)
        .with_interceptor_funcs(funcs);
    for mut pod in Api::<Pod>::namespaced(source.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        if pod.name_any() == terminating {
            pod.metadata.finalizers = Some(vec!["example.com/node-lost".into()]);
            pod.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(until));
        }
        builder = builder.with_object(pod);
    }
    for claim in Api::<PersistentVolumeClaim>::namespaced(source.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        builder = builder.with_object(claim);
    }
    builder.build().await.unwrap()
}

/// What the planner decides at `now` from `infos`, the record naming them, every running
/// member reporting healthy, and etcd listing `listed` as voters.
fn plan_at(
    infos: Vec<etcd_coordinator::runtime::MemberInfo>,
    listed: &[&str],
    now: i64,
) -> etcd_coordinator::plan::Action {
    let observed = observed_at(infos, listed, now, with_storage(cluster(3, "3.6.15")), true);
    etcd_coordinator::plan::plan(&observed).action
}

/// What the planner is told at `now` of `resource` from `infos`, the record naming them,
/// every running member reporting (healthy, the first one leading, when `quorum`; else
/// running without a leader), and etcd listing `listed` as voters.
fn observed_at(
    infos: Vec<etcd_coordinator::runtime::MemberInfo>,
    listed: &[&str],
    now: i64,
    resource: EtcdCluster,
    quorum: bool,
) -> etcd_coordinator::plan::Observed {
    use etcd_coordinator::{
        controller::{observed_members, planner_members},
        plan::{EtcdMember, Observed, Policy},
        record::DecisionRecord,
        registry::ReceivedReport,
    };
    let id =
        |name: &str| 100 + u64::from(etcd_operator::naming::member_ordinal(NAME, name).unwrap());
    let record = DecisionRecord {
        members: infos.iter().map(|i| i.name.clone()).collect(),
        ..Default::default()
    };
    let reports = infos
        .iter()
        .filter(|i| i.running)
        .map(|i| {
            let report = etcd_operator::proto::HealthReport {
                member_name: i.name.clone(),
                member_id: id(&i.name),
                healthy: quorum,
                leader: quorum && i.name == MEMBERS[0],
                phase: etcd_operator::proto::MemberPhase::Running as i32,
                etcd_version: "3.6.15".into(),
                raft_index: 900,
                revision: 400,
                ..Default::default()
            };
            (i.name.clone(), ReceivedReport::new(report, now))
        })
        .collect();
    let v36 = EtcdVersion::new(3, 6, 15);
    let infos = observed_members(infos, &record, NAME, v36, |_| now);
    let members = planner_members(&infos, &reports, &record, &BTreeMap::new(), now);
    Observed {
        cluster: ClusterKey::new(NS, NAME),
        spec: etcd_operator::validate::validate_cluster(&resource),
        members,
        etcd_members: Some(
            listed
                .iter()
                .map(|name| EtcdMember {
                    id: id(name),
                    name: name.to_string(),
                    peer_urls: vec![],
                    client_urls: vec![],
                    is_learner: false,
                })
                .collect(),
        ),
        grant: None,
        next_ordinal: 3,
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
    }
}

/// A Pod stuck Terminating with its claim (its node lost) is down, and dead once its grace
/// period and dead-after have passed; once the member is removed and deleted (its claim
/// deleted), the Pod that stays Terminating is no member any more: the replacement is
/// created, not blocked behind a deletion planned again at every pass.
#[tokio::test]
async fn a_pod_stuck_terminating_with_its_claim_never_blocks_its_replacement() {
    use etcd_coordinator::plan::Action as Planned;
    let source = fake(vec![with_storage(cluster(3, "3.6.15"))], None).await;
    three_running(&source).await;
    let stays = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ten_minutes_ago = Timestamp::now() - SignedDuration::from_secs(600);
    let client = with_pod_terminating(&source, MEMBERS[1], ten_minutes_ago, stays).await;
    let key = ClusterKey::new(NS, NAME);
    let runtime = kube_runtime(&client);
    runtime.track(&key, &get_cluster(&client).await);

    let t0 = etcd_operator::now_ms();
    let infos = runtime.members(&key).await.unwrap();
    let stuck = infos.iter().find(|i| i.name == MEMBERS[1]).unwrap();
    assert!(!stuck.running && stuck.down_since.is_some() && stuck.data == MemberData::Intact);
    let action = plan_at(infos, &MEMBERS, t0 + 16_000);
    assert!(
        matches!(&action, Planned::RemoveDeadMember { name, .. } if name == MEMBERS[1]),
        "{action:?}"
    );
    // The removal's runtime half: the claim goes, the Pod stays Terminating.
    runtime
        .delete_member(&key, MEMBERS[1], false)
        .await
        .unwrap();
    assert!(
        pod_names(&client).await.contains(&MEMBERS[1].to_string()),
        "stuck"
    );
    let infos = runtime.members(&key).await.unwrap();
    assert_eq!(
        infos.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        [MEMBERS[0], MEMBERS[2]],
        "a Pod Terminating without its claim is no member"
    );
    let action = plan_at(infos, &[MEMBERS[0], MEMBERS[2]], t0 + 17_000);
    assert_eq!(
        action,
        Planned::CreateMember {
            name: "etcd-cluster-0003".into(),
            version: EtcdVersion::new(3, 6, 15),
        }
    );
}

/// A drain slower than dead-after: the Pod is Terminating for its whole grace period, longer
/// than dead-after. It is down, not dead, until the grace period ends; once the Pod is gone
/// the member comes back on its claim (same name), never removed for the drain.
#[tokio::test]
async fn a_drain_slower_than_dead_after_brings_the_member_back_on_its_claim() {
    use etcd_coordinator::plan::Action as Planned;
    let source = fake(vec![with_storage(cluster(3, "3.6.15"))], None).await;
    three_running(&source).await;
    let stays = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let grace_ends = Timestamp::now() + SignedDuration::from_secs(60);
    let client = with_pod_terminating(&source, MEMBERS[2], grace_ends, Arc::clone(&stays)).await;
    let key = ClusterKey::new(NS, NAME);
    let runtime = kube_runtime(&client);
    runtime.track(&key, &get_cluster(&client).await);

    let t0 = etcd_operator::now_ms();
    let infos = runtime.members(&key).await.unwrap();
    let draining = infos.iter().find(|i| i.name == MEMBERS[2]).unwrap();
    assert!(!draining.running);
    assert!(
        draining.down_since >= Some(grace_ends.as_second() * 1000),
        "not counted down before its grace period ends: {draining:?}"
    );
    // Past dead-after, within the grace period: waited on.
    let action = plan_at(infos, &MEMBERS, t0 + 20_000);
    assert!(
        matches!(&action, Planned::Wait { .. }),
        "a draining member is not dead: {action:?}"
    );
    // The Pod goes at last: the member comes back on its claim.
    stays.store(false, std::sync::atomic::Ordering::SeqCst);
    Api::<Pod>::namespaced(client.clone(), NS)
        .delete(MEMBERS[2], &DeleteParams::default())
        .await
        .unwrap();
    let gone_at = etcd_operator::now_ms();
    let infos = runtime.members(&key).await.unwrap();
    let action = plan_at(infos, &MEMBERS, gone_at + 1_000);
    assert!(
        matches!(&action, Planned::RestartMember { name, .. } if name == MEMBERS[2]),
        "{action:?}"
    );
    runtime.start_member(&key, MEMBERS[2]).await.unwrap();
    assert_eq!(pod_names(&client).await, MEMBERS);
}

/// A member moved to another version: the claim is written before the Pod, so whichever of
/// the two writes a term loss cuts off, the Pod never runs a version its claim does not
/// name, and a Pod made again from the claim (after a drain) runs the version the step
/// moved to; the step carried on then finishes both.
#[tokio::test]
async fn pod_and_claim_versions_never_disagree_after_a_term_loss_between_the_writes() {
    let fail: Arc<Mutex<Option<&'static str>>> = Arc::default();
    let (on_replace, on_patch) = (Arc::clone(&fail), Arc::clone(&fail));
    let funcs = interceptor::Funcs::new()
        .replace(move |ctx| {
            if ctx.name == MEMBERS[1] && *on_replace.lock().unwrap() == Some("pod") {
                return Err(kube_fake_client::Error::InvalidRequest(
                    "the term ended before the Pod was written".into(),
                ));
            }
            Ok(None)
        })
        .patch(move |ctx| {
            if ctx.name == format!("{}-data", MEMBERS[1])
                && *on_patch.lock().unwrap() == Some("claim")
            {
                return Err(kube_fake_client::Error::InvalidRequest(
                    "the term ended before the claim was written".into(),
                ));
            }
            Ok(None)
        });
    let client = fake(vec![with_storage(cluster(3, "3.6.15"))], Some(funcs)).await;
    three_running(&client).await;
    let key = ClusterKey::new(NS, NAME);
    let runtime = kube_runtime(&client);
    runtime.track(&key, &get_cluster(&client).await);
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS);
    let versions = || async {
        let pod = pods.get(MEMBERS[1]).await.unwrap();
        let claim = claims.get(&format!("{}-data", MEMBERS[1])).await.unwrap();
        (
            pod.annotations()[ANNOTATION_ETCD_VERSION].clone(),
            claim.annotations()[ANNOTATION_ETCD_VERSION].clone(),
        )
    };
    let v37 = EtcdVersion::new(3, 7, 2);
    for cut in ["claim", "pod"] {
        *fail.lock().unwrap() = Some(cut);
        let e = runtime.restart_member(&key, MEMBERS[1], v37).await;
        assert!(e.is_err(), "the {cut} write fails");
        let (pod, claim) = versions().await;
        assert!(
            !(pod == "3.7.2" && claim == "3.6.15"),
            "cut at the {cut}: the Pod runs 3.7.2 while its claim names 3.6.15 (a drain would bring it back on the old version)"
        );
    }
    // Cut at the Pod: the claim names 3.7.2. A drain now makes the Pod again from it, on
    // the version the step moved to.
    *fail.lock().unwrap() = None;
    assert_eq!(versions().await, ("3.6.15".into(), "3.7.2".into()));
    pods.delete(MEMBERS[1], &DeleteParams::default())
        .await
        .unwrap();
    runtime.start_member(&key, MEMBERS[1]).await.unwrap();
    assert_eq!(versions().await, ("3.7.2".into(), "3.7.2".into()));
    let image = pods.get(MEMBERS[1]).await.unwrap().spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(
        image.as_deref(),
        Some("gcr.io/etcd-development/etcd:v3.7.2")
    );
    // The step carried on (as the planner does with a step whose restart did not finish).
    runtime.restart_member(&key, MEMBERS[1], v37).await.unwrap();
    assert_eq!(versions().await, ("3.7.2".into(), "3.7.2".into()));
}

/// The etcd CA's Secret deleted while members run with its certificates: a coordinator
/// started afresh makes no new CA (the members would refuse its certificates); it says so
/// in `CertificatesValid` (False, `CALost`, naming the Secret and what to do), and no new
/// member or certificate is issued under another CA.
#[tokio::test]
async fn a_deleted_etcd_ca_secret_gives_a_condition_not_a_new_ca() {
    let mut c = cluster(3, "3.6.15");
    c.spec.tls = Some(etcd_operator::resource::TlsSpec { enabled: true });
    let client = fake(vec![c], None).await;
    let ctx = context(&client);
    reconcile_once(&ctx).await;
    assert_eq!(pod_names(&client).await.len(), 3);
    let status = get_cluster(&client).await.status.unwrap();
    let valid = condition_of(&status, "CertificatesValid").expect("the condition");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("True", "Valid")
    );
    assert!(
        valid.message.contains("the etcd CA expires at"),
        "{}",
        valid.message
    );

    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let ca_secret = format!("{NAME}-etcd-ca");
    secrets
        .delete(&ca_secret, &DeleteParams::default())
        .await
        .unwrap();
    // A coordinator started again: nothing of the CA in memory.
    let restarted = context(&client);
    reconcile_once(&restarted).await;
    assert!(
        secrets.get_opt(&ca_secret).await.unwrap().is_none(),
        "no new etcd CA was made"
    );
    let runtime = kube_runtime(&client);
    let key = ClusterKey::new(NS, NAME);
    runtime.track(&key, &get_cluster(&client).await);
    let e = runtime
        .create_member(
            &key,
            "etcd-cluster-0003",
            EtcdVersion::new(3, 6, 15),
            false,
            true,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is lost"), "{e}");
    assert!(secrets.get_opt(&ca_secret).await.unwrap().is_none());
    let status = get_cluster(&client).await.status.unwrap();
    let lost = condition_of(&status, "CertificatesValid").expect("the condition");
    assert_eq!(
        (lost.status.as_str(), lost.reason.as_str()),
        ("False", "CALost")
    );
    assert!(
        lost.message.contains(&ca_secret) && lost.message.contains("Put the Secret"),
        "{}",
        lost.message
    );
}

/// A next-ordinal annotation edited up to the last ordinal there is: no member takes it
/// (the one after could only wrap around to an ordinal used before); nothing is written.
#[tokio::test]
async fn the_last_ordinal_there_is_is_never_taken() {
    let mut c = cluster(1, "3.6.15");
    c.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_NEXT_ORDINAL.to_string(),
        u32::MAX.to_string(),
    )]));
    let client = fake(vec![c], None).await;
    let key = ClusterKey::new(NS, NAME);
    let runtime = kube_runtime(&client);
    runtime.track(&key, &get_cluster(&client).await);
    let last = etcd_operator::naming::member_name(NAME, u32::MAX);
    let e = runtime
        .create_member(&key, &last, EtcdVersion::new(3, 6, 15), true, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("last ordinal there is"), "{e}");
    assert!(pod_names(&client).await.is_empty());
    assert_eq!(
        get_cluster(&client).await.annotations()[ANNOTATION_NEXT_ORDINAL],
        u32::MAX.to_string(),
        "the counter never wraps"
    );
}

/// The term ends while an action of several writes is under way (during the first of a
/// member's creation, the ordinal annotation): none of its later writes (the claim, the
/// Pod) is sent. Each write is checked against the term, not only the action's first.
#[tokio::test]
async fn no_write_of_an_action_is_sent_after_the_term_ends() {
    use etcd_coordinator::{leadership::Leadership, runtime::RuntimeError};
    let leadership = Leadership::none();
    leadership.hold(7, tokio::time::Instant::now() + Duration::from_secs(3600));
    let ends = leadership.clone();
    let funcs = interceptor::Funcs::new().patch(move |ctx| {
        if ctx.name == NAME {
            ends.end();
        }
        Ok(None)
    });
    let client = fake(vec![with_storage(cluster(3, "3.6.15"))], Some(funcs)).await;
    let key = ClusterKey::new(NS, NAME);
    let runtime = kube_runtime(&client).bounded_by(leadership.clone());
    runtime.track(&key, &get_cluster(&client).await);
    let e = runtime
        .create_member(&key, MEMBERS[0], EtcdVersion::new(3, 6, 15), true, false)
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::TermEnded(_)), "{e}");
    assert!(pod_names(&client).await.is_empty(), "no Pod after the term");
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(claims.items.is_empty(), "no claim after the term");
}

/// moto's S3 server on a loopback port, with one bucket; killed on drop.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Moto {
    async fn start(bucket: &str) -> Self {
        let port = testkit::free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys; from moto.server import main; main(sys.argv[1:])",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto (scripts/setup.sh installs it)");
        let addr = format!("127.0.0.1:{port}");
        testkit::wait_for("moto to listen", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await
        .expect("moto listens");
        let endpoint = format!("http://127.0.0.1:{port}");
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing').create_bucket(Bucket=sys.argv[2])",
                &endpoint,
                bucket,
            ])
            .output()
            .expect("python3 with boto3");
        assert!(out.status.success(), "{out:?}");
        Self { child, endpoint }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two namespaces, one bucket, a cluster of the same name in each: a cluster created from
/// `latest` of `etcd-cluster` in `team-a` finds `team-a`'s backup (not `team-b`'s newer one
/// of the same cluster name), with the credentials of the Secret its storage names, read by
/// name in its own namespace; in `team-b` the same Secret name (which exists only in
/// `team-a`) is not found, and a storage that names no Secret is refused with a condition
/// that says so. Nothing falls back to the coordinator's environment (this process has no
/// S3 credentials in it), and no Pod is made for a restore that cannot be resolved.
#[tokio::test]
async fn restores_in_two_namespaces_sharing_a_bucket_resolve_their_own_with_their_own_secret() {
    let bucket = "shared-backups";
    let moto = Moto::start(bucket).await;
    let storage = etcd_operator::proto::BackupStorage {
        s3_bucket: bucket.into(),
        s3_prefix: "etcd/".into(),
        s3_endpoint: moto.endpoint.clone(),
        s3_force_path_style: true,
        ..Default::default()
    };
    let keys = etcd_sidecar::backup::Credentials::from_lookup("the test", |k| match k {
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("testing".into()),
        _ => None,
    });
    let store = etcd_sidecar::backup::Storage::open(&storage, &keys).unwrap();
    // One backup of each namespace's etcd-cluster, team-b's the newer.
    let backup_of = |namespace: &str, uid: &str, minute: i64| {
        let owner = etcd_operator::backup::BackupOwner::new(namespace, "etcd-cluster", uid);
        let at = 1_796_119_200_000 + minute * 60_000;
        etcd_operator::backup::BackupMeta {
            name: etcd_operator::backup::backup_name(&owner, at, 42),
            namespace: namespace.into(),
            cluster: "etcd-cluster".into(),
            uid: uid.into(),
            etcd_cluster_id: format!("{uid}-etcd"),
            member: "etcd-cluster-0000".into(),
            etcd_version: "3.6.15".into(),
            revision: 42,
            size_bytes: 8,
            sha256: "00".into(),
            created_at: "2026-12-01T10:00:00Z".into(),
            requested_at_unix_ms: at,
            verified: true,
            ..Default::default()
        }
    };
    let team_a = backup_of("team-a", "uid-a", 1);
    let team_b = backup_of("team-b", "uid-b", 2);
    store.put_meta(&team_a).await.unwrap();
    store.put_meta(&team_b).await.unwrap();

    let restoring = |namespace: &str, secret: Option<&str>| {
        let mut c = EtcdCluster::new(
            "restored",
            EtcdClusterSpec {
                size: 1,
                version: "3.6.15".into(),
                restore: Some(etcd_operator::resource::RestoreSpec {
                    backup: "latest".into(),
                    cluster: Some("etcd-cluster".into()),
                    storage: Some(etcd_operator::resource::BackupStorageSpec {
                        s3: Some(etcd_operator::resource::S3StorageSpec {
                            bucket: bucket.into(),
                            prefix: "etcd/".into(),
                            endpoint: Some(moto.endpoint.clone()),
                            force_path_style: true,
                            credentials_secret: secret.map(str::to_string),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some(namespace.into());
        c.metadata.uid = Some(format!("{namespace}-restored-uid"));
        c
    };
    let client = ClientBuilder::new()
        .with_resource::<EtcdCluster>()
        .with_status_subresource::<EtcdCluster>()
        .with_object(restoring("team-a", Some("s3-creds")))
        .with_object(restoring("team-b", Some("s3-creds")))
        .build()
        .await
        .expect("fake client");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("s3-creds".into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                "AWS_ACCESS_KEY_ID".to_string(),
                k8s_openapi::ByteString(b"testing".to_vec()),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                k8s_openapi::ByteString(b"testing".to_vec()),
            ),
        ])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), "team-a")
        .create(&Default::default(), &secret)
        .await
        .unwrap();
    let ctx = context(&client);
    let pass = |namespace: &'static str| {
        let ctx = Arc::clone(&ctx);
        async move {
            let obj = ctx.clusters(namespace).get("restored").await.unwrap();
            reconcile(Arc::new(obj), Arc::clone(&ctx))
                .await
                .expect("reconcile succeeds");
            Api::<EtcdCluster>::namespaced(ctx.client.clone(), namespace)
                .get("restored")
                .await
                .unwrap()
                .status
                .unwrap_or_default()
        }
    };
    let pods = |namespace: &'static str| {
        let client = client.clone();
        async move {
            Api::<Pod>::namespaced(client, namespace)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len()
        }
    };

    // team-a: its own backup, with its own Secret; decided before the seed is made.
    let status = pass("team-a").await;
    assert!(
        condition_of(&status, "Restored").is_none_or(|c| c.status != "False"),
        "{:?}",
        status.conditions
    );
    let decided = ctx
        .registry
        .record(&ClusterKey::new("team-a", "restored"))
        .await
        .unwrap()
        .restore
        .expect("team-a's restore is decided");
    assert_eq!(
        decided.source.backup, team_a.name,
        "team-a's, not team-b's newer one"
    );
    assert_eq!(decided.source.source_namespace, "team-a");
    assert_eq!(decided.source.credentials_secret, "s3-creds");
    assert_eq!(pods("team-a").await, 1, "its seed");

    // team-b names a Secret that is only in team-a: not found in its own namespace.
    let status = pass("team-b").await;
    let refused = condition_of(&status, "Restored").expect("a Restored condition");
    assert_eq!(
        (refused.status.as_str(), refused.reason.as_str()),
        ("False", "RestoreRefused")
    );
    assert!(
        refused.message.contains("team-b/s3-creds") && refused.message.contains("does not exist"),
        "{}",
        refused.message
    );
    assert_eq!(pods("team-b").await, 0, "nothing is made for it");

    // And a storage that names no Secret at all: refused, saying so.
    let mut no_secret = restoring("team-b", None);
    no_secret.metadata.name = Some("no-secret".into());
    Api::<EtcdCluster>::namespaced(client.clone(), "team-b")
        .create(&Default::default(), &no_secret)
        .await
        .unwrap();
    let obj = ctx.clusters("team-b").get("no-secret").await.unwrap();
    reconcile(Arc::new(obj), Arc::clone(&ctx))
        .await
        .expect("reconcile succeeds");
    let status = Api::<EtcdCluster>::namespaced(client.clone(), "team-b")
        .get("no-secret")
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    let refused = condition_of(&status, "Restored").expect("a Restored condition");
    assert_eq!(refused.status, "False");
    assert!(
        refused.message.contains("names no credentialsSecret")
            && refused.message.contains("never from its own environment"),
        "{}",
        refused.message
    );
    assert_eq!(pods("team-b").await, 0);
}

/// Two of three `emptyDir` members gone with their Pods (their data with them), one left
/// without a leader, under `quorumLoss: Restore`: the runtime's view and the record make
/// the two members whose data is gone, so the pass reads the backup storage, and the planner
/// restores from the latest verified backup, keeping the survivor's data aside. It never
/// waits on backup storage that nothing reads.
#[tokio::test]
async fn a_minority_left_under_restore_reads_the_backup_storage_and_restores() {
    use etcd_coordinator::{
        controller::{needs_recovery_backup, observed_members},
        plan::{Action as Planned, WaitReason},
        record::DecisionRecord,
    };
    use etcd_operator::resource::{QuorumLossPolicy, RecoverySpec};
    let mut restoring = cluster(3, "3.6.15");
    restoring.spec.recovery = Some(RecoverySpec {
        quorum_loss: QuorumLossPolicy::Restore,
    });
    let client = fake(vec![restoring.clone()], None).await;
    three_running(&client).await;
    let key = ClusterKey::new(NS, NAME);
    let runtime = kube_runtime(&client);
    runtime.track(&key, &get_cluster(&client).await);
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    // Two Pods deleted: their emptyDir goes with them.
    for name in &MEMBERS[1..] {
        pods.delete(name, &Default::default()).await.unwrap();
    }
    let record = DecisionRecord {
        members: MEMBERS.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    };
    let now = etcd_operator::now_ms();
    let seen = runtime.members(&key).await.unwrap();
    let infos = observed_members(seen, &record, NAME, EtcdVersion::new(3, 6, 15), |_| now);
    let gone: Vec<&str> = infos
        .iter()
        .filter(|i| i.data == MemberData::Gone)
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(gone, &MEMBERS[1..], "{infos:?}");
    assert!(
        needs_recovery_backup(QuorumLossPolicy::Restore, &infos, true, &record),
        "the backup storage is read for a recovery"
    );
    assert!(!needs_recovery_backup(
        QuorumLossPolicy::Manual,
        &infos,
        true,
        &record
    ));

    let backup = "etcd-cluster-20261201T100000.000Z-r400";
    let mut observed = observed_at(infos.clone(), &MEMBERS, now + 1_000, restoring, false);
    observed.recovery_backup = Some(Ok(backup.into()));
    let action = etcd_coordinator::plan::plan(&observed).action;
    match &action {
        Planned::RestoreCluster {
            backup: from,
            discard,
            keep,
            lost,
            ..
        } => {
            assert_eq!(from, backup);
            assert_eq!(discard, &MEMBERS[1..]);
            assert_eq!(keep, &[MEMBERS[0]]);
            assert_eq!(lost, &MEMBERS[1..]);
        }
        other => panic!("a restore from the latest backup, not {other:?}"),
    }
    // The storage not read (as before members gone with their Pods counted as gone): the
    // planner can only wait, which is why the pass reads it.
    observed.recovery_backup = None;
    let waited = etcd_coordinator::plan::plan(&observed).action;
    assert!(
        matches!(
            &waited,
            Planned::Wait {
                reason: WaitReason::QuorumLostForGood { no_backup: Some(why), .. }
            } if why.contains("not been read")
        ),
        "{waited:?}"
    );
}
