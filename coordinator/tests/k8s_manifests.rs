//! Every manifest in `deploy/` and `examples/` is what a real cluster takes: each document
//! parses into its Kubernetes type without losing a field (a typo would be dropped
//! silently by `kubectl`), the example clusters pass the CRD's own schema and the
//! operator's validation, and the pieces agree with each other and with the code (names,
//! ports, labels, the Lease, least-privilege RBAC). The kustomizations are built with
//! `kubectl kustomize` (needs kubectl on PATH): the default install is the base's files,
//! and the cluster-wide overlay is checked the same way, its ClusterRole's rules exactly
//! the Role's.

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
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join(dir))
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl kustomize {dir}: {e} (these tests need kubectl, with its built-in kustomize, on PATH)")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let path = PathBuf::from(format!("kubectl kustomize {dir}"));
    let mut seen = Seen::default();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        classify(&mut seen, &path, doc);
    }
    seen
}

/// Reviews RBAC rules (a Role's or a ClusterRole's) for least privilege and for what the
/// code needs; returns every (resource, verb) granted.
fn review_rules(rules: &[PolicyRule]) -> BTreeSet<(String, String)> {
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
            for verb in &rule.verbs {
                granted.insert((r.clone(), verb.clone()));
            }
        }
        // Secrets, reviewed rule by rule: only the verbs the certificate code uses, never
        // delete (owned Secrets are garbage-collected with their Pod or cluster), never
        // escalate.
        if resources.iter().any(|r| r == "secrets") {
            assert_eq!(resources, ["secrets"], "a rule of its own: {rule:?}");
            assert_eq!(groups, [""], "{rule:?}");
            let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
            assert!(!verbs.contains("delete"), "{rule:?}");
            assert!(
                verbs.is_subset(&BTreeSet::from([
                    "create", "get", "update", "patch", "list", "watch"
                ])),
                "{rule:?}"
            );
        }
        // The CA's ConfigMap: created, then read and patched by name only.
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
    // What the code does needs these.
    for (resource, verb) in [
        ("etcdclusters", "watch"),
        ("etcdclusters", "patch"),
        ("etcdclusters/status", "patch"),
        ("pods", "create"),
        ("pods", "update"),
        ("pods", "delete"),
        ("pods", "watch"),
        ("persistentvolumeclaims", "create"),
        ("persistentvolumeclaims", "delete"),
        ("services", "patch"),
        ("services", "watch"),
        ("poddisruptionbudgets", "patch"),
        ("poddisruptionbudgets", "watch"),
        ("leases", "create"),
        ("leases", "update"),
        ("events", "create"),
        ("events", "patch"),
        ("secrets", "create"),
        ("secrets", "get"),
        ("secrets", "patch"),
        ("configmaps", "create"),
        ("configmaps", "patch"),
    ] {
        assert!(
            granted.contains(&(resource.to_string(), verb.to_string())),
            "{resource} {verb}"
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
    ] {
        assert!(!schema_errors(&bad(spec.clone())).is_empty(), "{spec}");
    }
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
