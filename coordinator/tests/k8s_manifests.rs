//! Every manifest in `deploy/` and `examples/` is what a real cluster takes: each document
//! parses into its Kubernetes type without losing a field (a typo would be dropped
//! silently by `kubectl`), the example clusters pass the CRD's own schema and the
//! operator's validation, and the pieces agree with each other and with the code (names,
//! ports, labels, the Lease, least-privilege RBAC). `deploy/` and every overlay under
//! `deploy/overlays/` build with `kubectl kustomize` (or, without kubectl, by the test's own
//! reading of kustomize's rules, where it can) into objects of known types, nothing lost; the
//! cluster-wide overlay needs kubectl, and its ClusterRole's rules are exactly the Role's.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use etcd_coordinator::k8s::{
    COORDINATOR_CONTROL_PORT, COORDINATOR_HEALTH_PORT, COORDINATOR_PORT, LABEL_COORDINATOR_LEADER,
    leader::DEFAULT_LEASE_NAME,
    operator::{COORDINATOR_CONTAINER, default_coordinator_url},
};
use etcd_operator::{naming::LABEL_CLUSTER, resource::EtcdCluster, validate::validate_cluster};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::CustomResourceExt;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    files
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = if path.extension().is_some_and(|e| e == "json") {
        vec![serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))]
    } else {
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Parses `doc` as `T` and checks that nothing was dropped on the way.
fn typed<T: DeserializeOwned + Serialize>(path: &Path, doc: &Value) -> T {
    let value: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let back = serde_json::to_value(&value).unwrap();
    assert_eq!(
        normalize(&back),
        normalize(doc),
        "{}: a field does not survive parsing (a typo?)",
        path.display()
    );
    value
}

/// Numbers compared as numbers (YAML gives 9, a schema 9.0).
fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

fn crd_schema() -> Value {
    let crd = EtcdCluster::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

fn schema_errors(doc: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&crd_schema()).unwrap();
    validator.iter_errors(doc).map(|e| e.to_string()).collect()
}

#[derive(Default)]
struct Seen {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    crds: Vec<CustomResourceDefinition>,
    accounts: Vec<ServiceAccount>,
    clusters: Vec<(PathBuf, EtcdCluster)>,
    kustomization: Option<Value>,
}

fn classify(seen: &mut Seen, path: &Path, doc: Value) {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    match kind.as_str() {
        "CustomResourceDefinition" => {
            let crd: CustomResourceDefinition = typed(path, &doc);
            assert_eq!(crd, EtcdCluster::crd(), "{}", path.display());
            // `kubectl delete all --all` must never delete etcd clusters.
            assert!(
                !crd.spec
                    .names
                    .categories
                    .iter()
                    .flatten()
                    .any(|c| c == "all"),
                "EtcdCluster in the category all"
            );
            seen.crds.push(crd);
        }
        "ServiceAccount" => seen.accounts.push(typed(path, &doc)),
        "Role" => seen.roles.push(typed(path, &doc)),
        "RoleBinding" => seen.bindings.push(typed(path, &doc)),
        "ClusterRole" => seen.cluster_roles.push(typed(path, &doc)),
        "ClusterRoleBinding" => seen.cluster_bindings.push(typed(path, &doc)),
        "Deployment" => seen.deployments.push(typed(path, &doc)),
        "Service" => seen.services.push(typed(path, &doc)),
        "EtcdCluster" => {
            let errors = schema_errors(&doc);
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            seen.clusters.push((path.to_path_buf(), typed(path, &doc)));
        }
        "Kustomization" => {
            assert_eq!(doc["apiVersion"], "kustomize.config.k8s.io/v1beta1");
            seen.kustomization = Some(doc);
        }
        other => panic!("{}: unexpected kind {other:?}", path.display()),
    }
}

/// The base's files and the examples.
fn read_all() -> Seen {
    let mut seen = Seen::default();
    let mut paths = files("deploy/base");
    paths.extend(files("examples"));
    assert!(paths.len() >= 8, "{paths:?}");
    for path in &paths {
        for doc in documents(path) {
            classify(&mut seen, path, doc);
        }
    }
    seen
}

/// What `kubectl kustomize` builds from `dir` (relative to the repository).
fn kustomize(dir: &str) -> Seen {
    let docs = build(&root().join(dir))
        .unwrap_or_else(|| panic!("{dir} uses what only kubectl kustomize builds"));
    let path = PathBuf::from(format!("kubectl kustomize {dir}"));
    let mut seen = Seen::default();
    for doc in docs {
        classify(&mut seen, &path, doc);
    }
    seen
}

/// Reviews RBAC rules (a Role's or a ClusterRole's) for least privilege and for what the
/// code needs; returns every (resource, verb) granted.
fn review_rules(rules: &[PolicyRule]) -> BTreeSet<(String, String, String, String)> {
    let mut granted = BTreeSet::new();
    for rule in rules {
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        for word in groups.iter().chain(&resources).chain(&rule.verbs) {
            assert!(!word.contains('*'), "no wildcards: {rule:?}");
        }
        for r in &resources {
            assert!(
                !["pods/exec", "pods/attach", "nodes", "secrets/*"].contains(&r.as_str()),
                "{r} is not needed"
            );
            let names = rule.resource_names.clone().unwrap_or_default();
            assert!(names.len() <= 1, "one object per named rule: {rule:?}");
            let name = names.first().cloned().unwrap_or_default();
            for (group, verb) in groups
                .iter()
                .flat_map(|g| rule.verbs.iter().map(move |v| (g, v)))
            {
                granted.insert((group.clone(), r.clone(), name.clone(), verb.clone()));
            }
        }
        // Secrets, reviewed rule by rule: only in the coordinator's namespace (a Role),
        // only the verbs the certificate code uses (every Secret is read by name), never
        // list or watch (either would read every Secret of the namespace), never delete
        // (owned Secrets are garbage-collected with their Pod or cluster), never escalate.
        if resources.iter().any(|r| r == "secrets") {
            assert_eq!(resources, ["secrets"], "a rule of its own: {rule:?}");
            assert_eq!(groups, [""], "{rule:?}");
            let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
            assert_eq!(
                verbs,
                BTreeSet::from(["create", "get", "update", "patch"]),
                "{rule:?}"
            );
        }
        // The CA's ConfigMap: created, then patched by name only.
        if resources.iter().any(|r| r == "configmaps") {
            assert_eq!(resources, ["configmaps"], "{rule:?}");
            let named = rule.resource_names.as_deref()
                == Some(&[etcd_coordinator::k8s::CA_CONFIGMAP.to_string()][..]);
            assert!(
                named || rule.verbs == ["create"],
                "configmaps beyond create are limited to the CA's: {rule:?}"
            );
        }
        if resources == ["leases"] && rule.verbs.iter().any(|v| v == "update") {
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(&[DEFAULT_LEASE_NAME.to_string()][..])
            );
        }
    }
    // Exactly what the code calls (coordinator/src/k8s/: runtime.rs, reconcile.rs,
    // operator.rs with the controller's watches, leader.rs, kube-runtime's event recorder),
    // by group and resource and, where a rule names one, by object: one more verb fails here as
    // surely as one less.
    let lease = DEFAULT_LEASE_NAME;
    let ca = etcd_coordinator::k8s::CA_CONFIGMAP;
    let mut want = BTreeSet::new();
    for (group, resource, name, verbs) in [
        // The controller's list and watch; merge patches (next ordinal, old finalizer).
        (
            "etcd.operator.rs",
            "etcdclusters",
            "",
            &["list", "watch", "patch"][..],
        ),
        // Server-side apply of the status.
        ("etcd.operator.rs", "etcdclusters/status", "", &["patch"]),
        // Owner references with blockOwnerDeletion.
        (
            "etcd.operator.rs",
            "etcdclusters/finalizers",
            "",
            &["update"],
        ),
        (
            "",
            "pods",
            "",
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        (
            "",
            "persistentvolumeclaims",
            "",
            &["get", "list", "create", "patch", "delete"],
        ),
        // Server-side apply (create when absent) and the controller's watch.
        ("", "services", "", &["list", "watch", "create", "patch"]),
        (
            "policy",
            "poddisruptionbudgets",
            "",
            &["list", "watch", "create", "patch"],
        ),
        ("coordination.k8s.io", "leases", "", &["create"]),
        ("coordination.k8s.io", "leases", lease, &["get", "update"]),
        ("events.k8s.io", "events", "", &["create", "patch"]),
        // Certificates (read and written by name), and `get` of the Secret a backup
        // storage names (`credentialsSecret`, by name in the cluster's namespace): the
        // coordinator's only credentials for a tenant's storage. Never list or watch.
        ("", "secrets", "", &["get", "create", "update", "patch"]),
        ("", "configmaps", "", &["create"]),
        ("", "configmaps", ca, &["patch"]),
    ] {
        for verb in verbs {
            want.insert((
                group.to_string(),
                resource.to_string(),
                name.to_string(),
                verb.to_string(),
            ));
        }
    }
    type Grant = (String, String, String, String);
    assert_eq!(
        granted.difference(&want).collect::<Vec<_>>(),
        Vec::<&Grant>::new(),
        "granted but never called"
    );
    assert_eq!(
        want.difference(&granted).collect::<Vec<_>>(),
        Vec::<&Grant>::new(),
        "called but not granted"
    );
    // What earlier versions granted and the code never calls, named so that nobody adds it
    // back without changing the code and this list.
    for (resource, verb) in [
        ("secrets", "list"),
        ("secrets", "watch"),
        ("persistentvolumeclaims", "watch"),
        ("etcdclusters", "get"),
        ("etcdclusters", "update"),
        ("etcdclusters/status", "get"),
        ("etcdclusters/status", "update"),
        ("services", "get"),
        ("poddisruptionbudgets", "get"),
        ("configmaps", "get"),
        ("secrets", "delete"),
    ] {
        assert!(
            !granted
                .iter()
                .any(|(_, r, _, v)| r == resource && v == verb),
            "{resource} {verb} is granted but the code never calls it"
        );
    }
    granted
}

#[test]
fn every_manifest_parses_into_its_type() {
    let seen = read_all();
    assert_eq!(seen.crds.len(), 1);
    assert_eq!(seen.deployments.len(), 1);
    assert_eq!(seen.roles.len(), 1);
    assert_eq!(seen.bindings.len(), 1);
    assert_eq!(seen.accounts.len(), 1);
    assert!(seen.kustomization.is_some());
    assert!(seen.clusters.len() >= 3);
}

#[test]
fn example_clusters_pass_the_schema_and_validation() {
    let seen = read_all();
    for (path, cluster) in &seen.clusters {
        assert!(
            validate_cluster(cluster).is_ok(),
            "{}: {:?}",
            path.display(),
            validate_cluster(cluster)
        );
    }
    let by_file = |name: &str| {
        seen.clusters
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("examples/{name}"))
    };
    let seed = by_file("example-etcd-cluster.yaml");
    assert_eq!(seed.metadata.name.as_deref(), Some("etcd-cluster"));
    assert_eq!((seed.spec.size, seed.spec.version.as_str()), (3, "3.6.15"));
    let five = by_file("example-etcd-cluster-size-5.yaml");
    assert_eq!(five.metadata.name.as_deref(), Some("etcd-cluster"));
    assert_eq!((five.spec.size, five.spec.version.as_str()), (5, "3.6.15"));
    // Every example finishes on a one-node cluster (kind): none needs a node per member.
    for (path, cluster) in &seen.clusters {
        let rule = cluster
            .spec
            .pod
            .as_ref()
            .map(|p| p.anti_affinity)
            .unwrap_or_default();
        assert_ne!(
            rule,
            etcd_operator::resource::AntiAffinity::Required,
            "{}: Required anti-affinity leaves members Pending on one node",
            path.display()
        );
    }
    let persistent = by_file("example-etcd-cluster-persistent.yaml");
    assert!(persistent.spec.storage.is_some());
    assert_eq!(
        persistent.spec.pod.as_ref().unwrap().anti_affinity,
        etcd_operator::resource::AntiAffinity::Preferred
    );
    let tls = by_file("example-etcd-cluster-tls.yaml");
    assert!(tls.spec.etcd_tls(), "the TLS example asks for TLS");
    assert!(!seed.spec.etcd_tls());

    // The schema really refuses what it should (so passing it means something).
    let bad = |spec: Value| {
        json!({"apiVersion": "etcd.operator.rs/v1alpha1", "kind": "EtcdCluster",
               "metadata": {"name": "x"}, "spec": spec})
    };
    for spec in [
        json!({"size": 0, "version": "3.6.15"}),
        json!({"size": 10, "version": "3.6.15"}),
        json!({"size": 3, "version": "banana"}),
        json!({"size": 3}),
        json!({"size": 3, "version": "3.6.15", "storage": {"size": "lots"}}),
        json!({"size": 3, "version": "3.6.15", "pod": {"antiAffinity": "Sometimes"}}),
        json!({"size": 3, "version": "3.6.15", "tls": {"enabled": "yes"}}),
        json!({"size": 3, "version": "3.6.15", "pod": {"imagePullSecrets": [{"name": ""}]}}),
        json!({"size": 3, "version": "3.6.15", "pod": {"imagePullSecrets": [{}]}}),
        json!({"size": 3, "version": "3.6.15", "pod": {"imagePullSecrets": ["regcred"]}}),
        json!({"size": 3, "version": "3.6.15", "pod": {"imagePullSecrets": [{"name": "Reg_Cred"}]}}),
        json!({"size": 3, "version": "3.6.15", "pod": {"sidecarImage": ""}}),
        json!({"size": 3, "version": "3.6.15", "pod": {"sidecarImage": "op :1"}}),
    ] {
        assert!(!schema_errors(&bad(spec.clone())).is_empty(), "{spec}");
    }
    // ... and takes what it should.
    let good = json!({"size": 3, "version": "3.6.15", "pod": {
        "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror.example-cred"}],
        "sidecarImage": "registry.example:5000/etcd-operator:v0.1.0"}});
    assert_eq!(schema_errors(&bad(good)), Vec::<String>::new());
}

#[test]
fn rbac_is_namespaced_and_least_privilege() {
    let seen = read_all();
    assert!(seen.cluster_roles.is_empty() && seen.cluster_bindings.is_empty());
    let role = &seen.roles[0];
    let binding = &seen.bindings[0];
    let account = &seen.accounts[0];
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(Some(&subject.name), account.metadata.name.as_ref());
    assert_eq!(subject.namespace, account.metadata.namespace);
    review_rules(role.rules.as_deref().unwrap_or_default());
}

#[test]
fn the_coordinator_deployment_and_service_fit_together() {
    let seen = read_all();
    let deployment = &seen.deployments[0];
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2), "two replicas, one leader");
    let template = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        template.service_account_name,
        seen.accounts[0].metadata.name
    );
    let psc = template.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    let container = &template.containers[0];
    assert_eq!(container.name, COORDINATOR_CONTAINER);
    assert_eq!(
        container.command.as_deref().unwrap(),
        ["/usr/local/bin/etcd-coordinator", "kubernetes"]
    );
    let env: Vec<(String, Option<String>)> = container
        .env
        .iter()
        .flatten()
        .map(|e| {
            (
                e.name.clone(),
                e.value_from
                    .as_ref()
                    .and_then(|f| f.field_ref.as_ref())
                    .map(|f| f.field_path.clone()),
            )
        })
        .collect();
    assert!(env.contains(&("MY_POD_NAMESPACE".into(), Some("metadata.namespace".into()))));
    assert!(env.contains(&("MY_POD_NAME".into(), Some("metadata.name".into()))));
    let ports: Vec<(String, i32)> = container
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("grpc".to_string(), i32::from(COORDINATOR_PORT)),
            ("control".to_string(), i32::from(COORDINATOR_CONTROL_PORT)),
            ("health".to_string(), i32::from(COORDINATOR_HEALTH_PORT)),
        ]
    );
    // Probes speak no TLS: they use the plaintext health port.
    for probe in [&container.readiness_probe, &container.liveness_probe] {
        let grpc = probe.as_ref().unwrap().grpc.as_ref().unwrap();
        assert_eq!(grpc.port, i32::from(COORDINATOR_HEALTH_PORT));
    }
    let sc = container.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    // A namespace with a compute ResourceQuota takes the Pod: cpu and memory, requested and
    // limited.
    let r = container.resources.as_ref().unwrap();
    for m in [&r.requests, &r.limits] {
        let keys: Vec<&str> = m.iter().flatten().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["cpu", "memory"]);
    }

    let coordinator = seen
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("etcd-coordinator"))
        .unwrap();
    let namespace = coordinator.metadata.namespace.clone().unwrap();
    assert_eq!(
        default_coordinator_url(&namespace),
        format!("https://etcd-coordinator.{namespace}.svc:7443")
    );
    let s = coordinator.spec.as_ref().unwrap();
    let selector = s.selector.as_ref().unwrap();
    assert_eq!(selector[LABEL_COORDINATOR_LEADER], "true");
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    for (k, v) in selector {
        if k != LABEL_COORDINATOR_LEADER {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "the Service selects the coordinator Pods"
            );
        }
    }
    assert!(
        !spec
            .selector
            .match_labels
            .as_ref()
            .unwrap()
            .contains_key(LABEL_COORDINATOR_LEADER),
        "the Deployment must not select on the leader label it does not set"
    );
    let service_ports: Vec<(String, i32)> = s
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.port))
        .collect();
    assert_eq!(
        service_ports,
        [
            ("grpc".to_string(), i32::from(COORDINATOR_PORT)),
            ("control".to_string(), i32::from(COORDINATOR_CONTROL_PORT)),
        ]
    );

    // The walk-through's NodePort service reaches the members of etcd-cluster.
    let nodeport = seen
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("etcd-cluster-client-service"))
        .unwrap();
    let np = nodeport.spec.as_ref().unwrap();
    assert_eq!(np.type_.as_deref(), Some("NodePort"));
    assert_eq!(np.selector.as_ref().unwrap()[LABEL_CLUSTER], "etcd-cluster");
    assert_eq!(np.ports.as_ref().unwrap()[0].port, 2379);
}

/// The paths a kustomization names (resources and patch files).
fn listed(kustomization: &Value) -> BTreeSet<String> {
    let resources = kustomization["resources"].as_array().into_iter().flatten();
    let patches = kustomization["patches"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| &p["path"]);
    resources
        .chain(patches)
        .filter_map(|r| r.as_str())
        .map(str::to_string)
        .collect()
}

fn yaml_files(dir: &str) -> BTreeSet<String> {
    files(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "kustomization.yaml")
        .collect()
}

#[test]
fn the_kustomization_lists_every_deploy_manifest() {
    let seen = read_all();
    let k = seen.kustomization.unwrap();
    assert_eq!(listed(&k), yaml_files("deploy/base"));
    assert_eq!(
        k["namespace"],
        seen.accounts[0].metadata.namespace.clone().unwrap()
    );
    // `kubectl apply -k deploy/` is the base, nothing else.
    let top = documents(&root().join("deploy/kustomization.yaml"));
    assert_eq!(listed(&top[0]), BTreeSet::from(["base".to_string()]));
    assert!(
        yaml_files("deploy").is_empty(),
        "deploy/ holds the base in base/"
    );
    let overlay = documents(&root().join("deploy/overlays/cluster-wide/kustomization.yaml"));
    let mut expected = yaml_files("deploy/overlays/cluster-wide");
    expected.insert("../../base".into());
    assert_eq!(listed(&overlay[0]), expected);
}

fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

/// `kubectl apply -k deploy/` installs exactly the base's files.
#[test]
fn the_default_install_is_the_base_as_written() {
    let files = read_all();
    let built = kustomize("deploy");
    assert_eq!(built.crds.len(), 1);
    assert_eq!(json(&built.roles), json(&files.roles));
    assert_eq!(json(&built.bindings), json(&files.bindings));
    assert_eq!(json(&built.accounts), json(&files.accounts));
    assert_eq!(json(&built.deployments), json(&files.deployments));
    let base_services: Vec<&Service> = files
        .services
        .iter()
        .filter(|s| s.metadata.name.as_deref() == Some("etcd-coordinator"))
        .collect();
    assert_eq!(json(&built.services), json(&base_services));
    assert!(built.cluster_roles.is_empty() && built.cluster_bindings.is_empty());
}

/// The cluster-wide overlay: the base with the Role and RoleBinding replaced by a
/// ClusterRole with exactly the Role's rules (so they cannot drift) bound to the same
/// ServiceAccount, and the coordinator run with --all-namespaces, which the binary takes.
#[test]
fn the_cluster_wide_overlay_is_the_base_with_a_cluster_role() {
    if on_path("kubectl").is_none() && on_path("kustomize").is_none() {
        // Its patches are built only by kustomize itself: check the files as written.
        eprintln!("kubectl not on PATH: deploy/overlays/cluster-wide is checked as written");
        let dir = root().join("deploy/overlays/cluster-wide");
        let doc = &documents(&dir.join("clusterrole.yaml"))[0];
        let role: ClusterRole = typed(&dir, doc);
        assert_eq!(role.rules, read_all().roles[0].rules);
        review_rules(role.rules.as_deref().unwrap_or_default());
        let patch = std::fs::read_to_string(dir.join("all-namespaces.yaml")).unwrap();
        assert!(patch.contains("--all-namespaces"), "{patch}");
        return;
    }
    let base = kustomize("deploy");
    let wide = kustomize("deploy/overlays/cluster-wide");
    assert!(
        wide.roles.is_empty() && wide.bindings.is_empty(),
        "no namespaced Role left"
    );
    assert_eq!(wide.cluster_roles.len(), 1);
    assert_eq!(wide.cluster_bindings.len(), 1);
    let role = &wide.cluster_roles[0];
    assert_eq!(
        role.rules, base.roles[0].rules,
        "deploy/overlays/cluster-wide/clusterrole.yaml must have the rules of the Role in deploy/base/rbac.yaml"
    );
    review_rules(role.rules.as_deref().unwrap_or_default());
    let binding = &wide.cluster_bindings[0];
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let account = &wide.accounts[0];
    let subjects = binding.subjects.as_deref().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, account.metadata.namespace);

    // Everything else is the base's, but for the coordinator's arguments.
    assert_eq!(json(&wide.crds), json(&base.crds));
    assert_eq!(json(&wide.accounts), json(&base.accounts));
    assert_eq!(json(&wide.services), json(&base.services));
    let mut deployment = wide.deployments[0].clone();
    let container = &mut deployment
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0];
    let mut line: Vec<String> = container.command.clone().unwrap();
    line.extend(container.args.take().unwrap_or_default());
    assert_eq!(
        line,
        [
            "/usr/local/bin/etcd-coordinator",
            "kubernetes",
            "--all-namespaces"
        ]
    );
    assert_eq!(json(&deployment), json(&base.deployments[0]));
    // The binary takes them (clap refuses an unknown flag before it prints help).
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
        .args(&line[1..])
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{line:?}");
}

#[test]
fn a_misspelt_field_is_caught() {
    let doc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                     "spec": {"selektor": {"a": "b"}}});
    let caught = std::panic::catch_unwind(|| typed::<Service>(Path::new("x.yaml"), &doc));
    assert!(caught.is_err());
}

// ---- Kustomizations: deploy/ and every overlay under deploy/overlays/ ----

/// The subset of the Prometheus Operator's `ServiceMonitor` (monitoring.coreos.com/v1) the
/// overlays use; a field it does not know is refused, as `kubectl apply` would drop it.
#[derive(serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceMonitorSpec {
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    endpoints: Vec<MonitorEndpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pod_target_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    target_labels: Vec<String>,
}

#[derive(serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MonitorEndpoint {
    port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scrape_timeout: Option<String>,
}

/// deploy/ and every directory under deploy/overlays/ with a kustomization.yaml.
fn kustomizations() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("deploy")];
    if let Ok(entries) = std::fs::read_dir(root().join("deploy/overlays")) {
        let mut overlays: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("kustomization.yaml").is_file())
            .collect();
        overlays.sort();
        dirs.extend(overlays);
    }
    dirs
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// `kubectl kustomize DIR` (or `kustomize build DIR`): what `kubectl apply -k` sends.
/// Without either tool, the test's own reading of `resources` and `namespace` (None for a
/// kustomization using anything else: it cannot be checked here then).
fn build(dir: &Path) -> Option<Vec<Value>> {
    let command = on_path("kubectl")
        .map(|k| (k, vec!["kustomize"]))
        .or_else(|| on_path("kustomize").map(|k| (k, vec!["build"])));
    let Some((tool, args)) = command else {
        eprintln!(
            "neither kubectl nor kustomize on PATH: {} is read by the test itself",
            dir.display()
        );
        return read_kustomization(dir);
    };
    let out = std::process::Command::new(&tool)
        .args(&args)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} {}: {}",
        tool.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    Some(docs.into_iter().filter(|d| !d.is_null()).collect())
}

const CLUSTER_SCOPED: [&str; 4] = [
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Namespace",
];

/// kustomize's rules for what this repository's kustomizations use: files below the
/// kustomization's own directory, bases anywhere but in a directory that contains it (a
/// cycle), the namespace set on every namespaced object and on ServiceAccount subjects.
fn read_kustomization(dir: &Path) -> Option<Vec<Value>> {
    let k = &documents(&dir.join("kustomization.yaml"))[0];
    let known = ["apiVersion", "kind", "namespace", "resources", "images"];
    if let Some(other) = k
        .as_object()
        .unwrap()
        .keys()
        .find(|f| !known.contains(&f.as_str()))
    {
        eprintln!("{}: {other:?} needs kubectl to be checked", dir.display());
        return None;
    }
    let here = dir.canonicalize().unwrap();
    let mut docs = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let path = here.join(r.as_str().unwrap());
        let path = path
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {r}: {e}", dir.display()));
        if path.is_dir() {
            assert!(
                !here.starts_with(&path),
                "{}: the base {r} contains this kustomization (kustomize refuses the cycle)",
                dir.display()
            );
            docs.extend(read_kustomization(&path)?);
        } else {
            assert!(
                path.starts_with(&here),
                "{}: {r} is not in or below the kustomization (kustomize refuses it)",
                dir.display()
            );
            docs.extend(documents(&path));
        }
    }
    if let Some(ns) = k["namespace"].as_str() {
        for doc in &mut docs {
            if !CLUSTER_SCOPED.contains(&doc["kind"].as_str().unwrap_or_default()) {
                doc["metadata"]["namespace"] = json!(ns);
            }
            let subjects = doc.get_mut("subjects").and_then(Value::as_array_mut);
            for s in subjects.into_iter().flatten() {
                if s["kind"] == "ServiceAccount" {
                    s["namespace"] = json!(ns);
                }
            }
        }
    }
    Some(docs)
}

/// Parses a built object into its type (nothing may be lost), by kind.
fn typed_object(dir: &Path, doc: &Value) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let kind = doc["kind"].as_str().unwrap_or_default();
    match kind {
        "CustomResourceDefinition" => {
            let crd: CustomResourceDefinition = typed(dir, doc);
            assert_eq!(crd, EtcdCluster::crd(), "{}", dir.display());
        }
        "ServiceAccount" => drop(typed::<ServiceAccount>(dir, doc)),
        "Role" => drop(typed::<Role>(dir, doc)),
        "RoleBinding" => drop(typed::<RoleBinding>(dir, doc)),
        "ClusterRole" => drop(typed::<ClusterRole>(dir, doc)),
        "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(dir, doc)),
        "Namespace" => drop(typed::<k8s_openapi::api::core::v1::Namespace>(dir, doc)),
        "Deployment" => drop(typed::<Deployment>(dir, doc)),
        "Service" => drop(typed::<Service>(dir, doc)),
        "ServiceMonitor" => {
            assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1");
            drop(typed::<ServiceMonitor>(dir, doc));
        }
        other => panic!("{}: unexpected kind {other:?}", dir.display()),
    }
}

#[test]
fn every_kustomization_builds_into_objects_of_known_types() {
    let dirs = kustomizations();
    assert!(
        dirs.iter().any(|d| d.ends_with("deploy/overlays/metrics")),
        "{dirs:?}"
    );
    for dir in &dirs {
        let Some(docs) = build(dir) else {
            continue;
        };
        assert!(!docs.is_empty(), "{} builds nothing", dir.display());
        let mut names = BTreeSet::new();
        for doc in &docs {
            typed_object(dir, doc);
            let kind = doc["kind"].as_str().unwrap().to_string();
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            let namespace = doc["metadata"]["namespace"].as_str().map(str::to_string);
            assert_eq!(
                namespace.is_none(),
                CLUSTER_SCOPED.contains(&kind.as_str()),
                "{}: {kind} {name} namespace {namespace:?}",
                dir.display()
            );
            assert!(
                names.insert((kind.clone(), namespace, name.clone())),
                "{}: {kind} {name} twice",
                dir.display()
            );
        }
    }
    // The base builds exactly the files it lists.
    let base = build(&root().join("deploy"));
    if let Some(base) = base {
        let kinds: BTreeSet<&str> = base.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                "CustomResourceDefinition",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "Deployment",
                "Service",
            ])
        );
    }
}

#[test]
fn the_metrics_overlay_scrapes_every_members_metrics_port() {
    use etcd_coordinator::k8s::{
        METRICS_PORT, METRICS_PORT_NAME, MemberAddressing, PodDns,
        build::{MemberPodInput, PodSettings, client_service, member_pod, peer_service},
    };
    let dir = root().join("deploy/overlays/metrics");
    let docs = build(&dir).expect("the metrics overlay is checkable without kubectl");
    let monitors: Vec<ServiceMonitor> = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceMonitor")
        .map(|d| typed(&dir, d))
        .collect();
    assert_eq!(monitors.len(), 1, "one ServiceMonitor");
    assert_eq!(
        docs.len(),
        1,
        "nothing but the ServiceMonitor: deploy/ installs the rest"
    );
    let monitor = &monitors[0];
    // In the namespace deploy/ installs into (where the clusters and their Services are).
    let base = &documents(&root().join("deploy/base/kustomization.yaml"))[0];
    assert_eq!(
        monitor.metadata.namespace.as_deref(),
        base["namespace"].as_str(),
        "the ServiceMonitor and the operator share a namespace"
    );

    // What the operator builds for a cluster: the monitor selects its peer Service (every
    // member, ready or not) and not its client Service (no double scrape).
    let mut cluster = EtcdCluster::new(
        "etcd-cluster",
        etcd_operator::resource::EtcdClusterSpec {
            size: 3,
            version: "3.6.15".into(),
            ..Default::default()
        },
    );
    cluster.metadata.namespace = Some("default".into());
    cluster.metadata.uid = Some("uid".into());
    let selects = |labels: &std::collections::BTreeMap<String, String>| {
        assert!(monitor.spec.selector.match_expressions.is_none());
        monitor
            .spec
            .selector
            .match_labels
            .as_ref()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    };
    let peer = peer_service(&cluster).unwrap();
    assert!(
        selects(peer.metadata.labels.as_ref().unwrap()),
        "the peer Service"
    );
    let client = client_service(&cluster).unwrap();
    assert!(
        !selects(client.metadata.labels.as_ref().unwrap()),
        "the client Service"
    );
    let peer_spec = peer.spec.unwrap();
    assert_eq!(peer_spec.publish_not_ready_addresses, Some(true));
    let monitor_port = &monitor.spec.endpoints[0].port;
    let service_port = peer_spec
        .ports
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_ref() == Some(monitor_port))
        .expect("the monitor's port is on the peer Service");
    assert_eq!(service_port.port, i32::from(METRICS_PORT));

    // ... which leads to the etcd container's named port, where etcd listens for metrics.
    let endpoints = PodDns.endpoints(
        &etcd_operator::ClusterKey::new("default", "etcd-cluster"),
        "etcd-cluster-0000",
    );
    let settings = PodSettings {
        operator_image: "etcd-operator:dev".into(),
        image_pull_policy: None,
        coordinator_url: default_coordinator_url("default"),
        cluster_domain: "cluster.local".into(),
    };
    let pod = member_pod(MemberPodInput {
        cluster: &cluster,
        member: "etcd-cluster-0000",
        version: "3.6.15".parse().unwrap(),
        seed: true,
        endpoints: &endpoints,
        cluster_client_url: None,
        settings: &settings,
        etcd_tls: true,
    })
    .unwrap();
    let etcd = &pod.spec.as_ref().unwrap().containers[0];
    let container_port = etcd
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(METRICS_PORT_NAME))
        .expect("the etcd container names its metrics port");
    assert_eq!(container_port.container_port, i32::from(METRICS_PORT));
    assert_eq!(
        service_port.target_port,
        Some(
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                METRICS_PORT_NAME.into()
            )
        )
    );
    assert!(
        endpoints
            .listen_metrics_url
            .ends_with(&format!(":{METRICS_PORT}"))
    );
    let pod_labels = pod.metadata.labels.as_ref().unwrap();
    for label in &monitor.spec.pod_target_labels {
        assert!(pod_labels.contains_key(label), "member Pods carry {label}");
    }

    // Plain http on /metrics (etcd serves its metrics URL without TLS, whatever spec.tls
    // says), in durations Prometheus takes.
    assert_eq!(monitor.spec.endpoints.len(), 1);
    let e = &monitor.spec.endpoints[0];
    assert_eq!(e.port, METRICS_PORT_NAME);
    assert_eq!(e.scheme.as_deref(), Some("http"));
    assert_eq!(e.path.as_deref(), Some("/metrics"));
    let seconds = |d: &Option<String>| -> u64 {
        let d = d.as_deref().expect("a duration");
        d.strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{d:?} is not N s"))
    };
    assert!(seconds(&e.scrape_timeout) < seconds(&e.interval));
}

#[test]
fn the_image_installs_protoc_and_ships_both_binaries_where_the_pods_expect_them() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    // Instructions with their continuation lines joined, comments left out.
    let mut instructions: Vec<String> = Vec::new();
    let mut open = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b.trim(), true),
            None => (line, false),
        };
        match instructions.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(body);
            }
            _ => instructions.push(body.to_string()),
        }
        open = continues;
    }
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.starts_with("FROM "))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and the image: {instructions:?}"
    );
    let build = &instructions[stages[0]..stages[1]];
    let image = &instructions[stages[1]..];
    // protoc installed explicitly in the build stage, and used.
    let install = build
        .iter()
        .find(|i| i.starts_with("RUN apk add"))
        .expect("the build stage installs packages");
    let packages: Vec<&str> = install.split_whitespace().collect();
    for p in ["protoc", "protobuf-dev", "musl-dev", "gcc"] {
        assert!(packages.contains(&p), "{p} in {install}");
    }
    assert!(build.iter().any(|i| i == "ENV PROTOC=/usr/bin/protoc"));
    let cargo = build
        .iter()
        .find(|i| i.contains("cargo build"))
        .expect("cargo build");
    // Both binaries: the member Pods run the small `etcd-sidecar`, not the coordinator's
    // embedded sidecar.
    assert!(
        cargo.contains("--bin etcd-coordinator") && cargo.contains("--bin etcd-sidecar"),
        "{cargo}"
    );
    // The image: the coordinator where the init container runs it, the sidecar beside it
    // (where `install-sidecar` copies it from by default).
    let copy = image
        .iter()
        .find(|i| i.starts_with("COPY --from="))
        .expect("the binaries are copied in");
    assert!(
        copy.ends_with(" /usr/local/bin/")
            && copy.contains("/etcd-coordinator ")
            && copy.contains("/etcd-sidecar "),
        "{copy}"
    );
    assert_eq!(
        etcd_coordinator::k8s::COORDINATOR_BINARY,
        "/usr/local/bin/etcd-coordinator"
    );
    assert_eq!(etcd_coordinator::k8s::install::SIDECAR_FILE, "etcd-sidecar");
    assert!(image.iter().any(|i| i == "USER 65532:65532"));
}
