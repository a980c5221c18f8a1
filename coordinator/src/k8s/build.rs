//! Building the desired objects: pure functions of the `EtcdCluster` (no client, no clock).
//!
//! Every object the operator creates is built here and owned by its `EtcdCluster`
//! (`ownerReferences` with `controller: true`), so deleting the cluster lets Kubernetes'
//! garbage collector remove them.

use std::collections::BTreeMap;

use etcd_operator::{
    EtcdVersion,
    naming::{LABEL_CLUSTER, LABEL_MANAGED_BY, LABEL_MEMBER, MANAGER},
    resource::{AntiAffinity, EtcdCluster, PodPolicy, StorageSpec},
};
use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{
            Affinity, Capabilities, ConfigMap, Container, ContainerPort, EmptyDirVolumeSource,
            EnvVar, EnvVarSource, GRPCAction, LocalObjectReference, ObjectFieldSelector,
            PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
            Pod, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, Probe,
            ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext,
            Service, ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
            VolumeResourceRequirements, WeightedPodAffinityTerm,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::Resource;
use thiserror::Error;

use etcd_operator::pki::{ClientFile, MemberFile};

use super::{
    ANNOTATION_ETCD_VERSION, ANNOTATION_SEED, ANNOTATION_TLS, CA_CONFIGMAP, CLIENT_PORT,
    COORDINATOR_BINARY, DATA_DIR, DEFAULT_REPOSITORY, ETCD_BINARY, ETCD_CONTAINER, ETCDUTL_BINARY,
    INSTALL_CONTAINER, METRICS_PORT, METRICS_PORT_NAME, MemberEndpoints, NONROOT_ID, PEER_PORT,
    SIDECAR_BINARY, SIDECAR_DIR, SIDECAR_HEALTH_PORT, SIDECAR_PORT, TLS_DIR, claim_name,
    client_secret_name, etcd_ca_secret_name, member_secret_name, peer_service_name,
};

/// Label naming the application, as the Kubernetes recommended labels do.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label naming the instance (the cluster), as the Kubernetes recommended labels do.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Label naming the part an object plays, as the Kubernetes recommended labels do: `peer`
/// on the headless peer Service (which also carries the metrics port), `client` on the
/// client Service.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// The sidecar's gRPC health service, SERVING while its member is healthy (readiness).
pub const SIDECAR_HEALTH_SERVICE: &str = etcd_sidecar::health::SERVICE_NAME;
/// The sidecar's gRPC health service SERVING for as long as the sidecar answers (liveness):
/// a member that is starting, catching up or in an election is not killed.
pub const SIDECAR_LIVENESS_SERVICE: &str = etcd_sidecar::LIVENESS_SERVICE;
/// Requests and limits of the init container that copies the sidecar (a namespace with a
/// ResourceQuota on compute refuses a Pod with a container that has none). Copying one
/// static binary needs little; the limits leave room for the page cache of the copy.
pub const INSTALL_REQUESTS: [(&str, &str); 2] = [("cpu", "10m"), ("memory", "32Mi")];
/// See [`INSTALL_REQUESTS`].
pub const INSTALL_LIMITS: [(&str, &str); 2] = [("cpu", "200m"), ("memory", "64Mi")];
/// Volume holding the sidecar binary, copied by the init container.
pub const SIDECAR_VOLUME: &str = "sidecar";
/// Volume holding the member directory.
pub const DATA_VOLUME: &str = "data";
/// Volume holding the member's certificates (its Secret).
pub const TLS_VOLUME: &str = "tls";
/// Mode of the certificate files in a member Pod: readable by the owner and the group (the
/// Pod's `fsGroup`, the non-root user), nobody else.
pub const TLS_FILE_MODE: i32 = 0o440;

/// Where the etcd container finds the Secrets its backup storages name, one directory each.
pub const STORAGE_CREDENTIALS_DIR: &str = "/var/run/etcd-operator/storage-credentials";

/// The Secrets the spec's storages (backup, restore) name, each once, in that order.
pub fn storage_credential_secrets(cluster: &EtcdCluster) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let storages = [
        cluster.spec.backup_storage(),
        cluster
            .spec
            .restore
            .as_ref()
            .and_then(|r| r.storage.as_ref()),
    ];
    for secret in storages
        .into_iter()
        .flatten()
        .filter_map(|s| s.credentials_secret())
    {
        if !out.iter().any(|s| s == secret) {
            out.push(secret.to_string());
        }
    }
    out
}

/// An object cannot be built from this `EtcdCluster`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BuildError {
    /// A field the API server always sets is missing (an object not read from the server).
    #[error("the EtcdCluster has no {0}")]
    Missing(&'static str),
}

/// What member Pods need beyond the `EtcdCluster`: where the operator is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSettings {
    /// The operator image (holds `etcd-coordinator` and `etcd-sidecar`); the init container
    /// runs it to install the sidecar.
    pub operator_image: String,
    /// Pull policy of the operator image (`IfNotPresent` when left out).
    pub image_pull_policy: Option<String>,
    /// The coordinator's control URL (https) the sidecars report to.
    pub coordinator_url: String,
    /// The DNS domain of the Kubernetes cluster (`cluster.local`): the members' certificates
    /// name their fully qualified host names too.
    pub cluster_domain: String,
}

/// What every member Pod is built from.
#[derive(Clone, Copy, Debug)]
pub struct MemberPodInput<'a> {
    /// The cluster.
    pub cluster: &'a EtcdCluster,
    /// The member's name, `<cluster>-<NNNN>` (also the Pod's name).
    pub member: &'a str,
    /// The etcd version it runs.
    pub version: EtcdVersion,
    /// True for the member that bootstraps the cluster.
    pub seed: bool,
    /// Its URLs and listen addresses.
    pub endpoints: &'a MemberEndpoints,
    /// A client URL of the whole cluster (the client Service), the sidecar's fallback when
    /// the coordinator cannot say where the cluster is.
    pub cluster_client_url: Option<&'a str>,
    /// Where the operator is.
    pub settings: &'a PodSettings,
    /// etcd serves clients and peers over TLS (the endpoints are https).
    pub etcd_tls: bool,
}

fn name_of(cluster: &EtcdCluster) -> Result<&str, BuildError> {
    cluster
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::Missing("metadata.name"))
}

fn namespace_of(cluster: &EtcdCluster) -> Result<&str, BuildError> {
    cluster
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::Missing("metadata.namespace"))
}

/// The owner reference every object of the cluster carries (`controller: true`).
pub fn owner_reference(cluster: &EtcdCluster) -> Result<OwnerReference, BuildError> {
    Ok(OwnerReference {
        api_version: EtcdCluster::api_version(&()).into_owned(),
        kind: EtcdCluster::kind(&()).into_owned(),
        name: name_of(cluster)?.to_string(),
        uid: cluster
            .metadata
            .uid
            .clone()
            .ok_or(BuildError::Missing("metadata.uid"))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Labels of every object of cluster `name`.
pub fn cluster_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), name.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_NAME.to_string(), "etcd".to_string()),
        (LABEL_INSTANCE.to_string(), name.to_string()),
    ])
}

/// The labels selecting the member Pods of cluster `name`.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_CLUSTER.to_string(), name.to_string())])
}

/// The member Pods' selector as a string (`status.selector`, for the scale subresource).
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The list selector of every member object (Pods and claims) of cluster `name`.
pub fn list_selector(name: &str) -> String {
    format!("{LABEL_CLUSTER}={name},{LABEL_MANAGED_BY}={MANAGER}")
}

fn object_meta(
    cluster: &EtcdCluster,
    name: String,
    labels: BTreeMap<String, String>,
) -> Result<ObjectMeta, BuildError> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(namespace_of(cluster)?.to_string()),
        labels: Some(labels),
        owner_references: Some(vec![owner_reference(cluster)?]),
        ..Default::default()
    })
}

/// The etcd image of `version`: `<repository>:v<version>`.
pub fn etcd_image(cluster: &EtcdCluster, version: EtcdVersion) -> String {
    let repository = cluster
        .spec
        .repository
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_REPOSITORY);
    format!("{repository}:v{version}")
}

fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The client Service `<cluster>` on 2379: ready members only.
pub fn client_service(cluster: &EtcdCluster) -> Result<Service, BuildError> {
    let name = name_of(cluster)?;
    Ok(Service {
        metadata: object_meta(cluster, name.to_string(), component_labels(name, "client"))?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(name)),
            ports: Some(vec![service_port("client", CLIENT_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The headless peer Service `<cluster>-peer`: every member gets the DNS name
/// `<pod>.<cluster>-peer.<ns>.svc` from the moment it exists (not-ready addresses are
/// published, since a member must be reachable by its peers before it is healthy). It also
/// lists etcd's metrics port, so a Prometheus `ServiceMonitor` selecting it
/// (`deploy/overlays/metrics/`) scrapes every member, ready or not.
pub fn peer_service(cluster: &EtcdCluster) -> Result<Service, BuildError> {
    let name = name_of(cluster)?;
    Ok(Service {
        metadata: object_meta(
            cluster,
            peer_service_name(name),
            component_labels(name, "peer"),
        )?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(name)),
            ports: Some(vec![
                service_port("client", CLIENT_PORT),
                service_port("peer", PEER_PORT),
                service_port("sidecar", SIDECAR_PORT),
                service_port(METRICS_PORT_NAME, METRICS_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn component_labels(name: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = cluster_labels(name);
    labels.insert(LABEL_COMPONENT.to_string(), component.to_string());
    labels
}

/// The PodDisruptionBudget that keeps quorum of `size` voters through voluntary
/// disruptions (drains): `minAvailable` = quorum; a single member may be drained.
pub fn pod_disruption_budget(cluster: &EtcdCluster) -> Result<PodDisruptionBudget, BuildError> {
    let name = name_of(cluster)?;
    let size = cluster.spec.size.max(1);
    let (min_available, max_unavailable) = if size == 1 {
        (None, Some(IntOrString::Int(1)))
    } else {
        (
            Some(IntOrString::Int(etcd_operator::quorum(size as usize) as i32)),
            None,
        )
    };
    Ok(PodDisruptionBudget {
        metadata: object_meta(cluster, name.to_string(), cluster_labels(name))?,
        spec: Some(PodDisruptionBudgetSpec {
            min_available,
            max_unavailable,
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn member_labels(
    cluster_name: &str,
    member: &str,
    policy: Option<&PodPolicy>,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = policy.map(|p| p.labels.clone()).unwrap_or_default();
    // The operator's own labels win: they select the members.
    labels.extend(cluster_labels(cluster_name));
    labels.insert(LABEL_MEMBER.to_string(), member.to_string());
    labels
}

fn member_annotations(version: EtcdVersion, seed: bool, tls: bool) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_ETCD_VERSION.to_string(), version.to_string()),
        (ANNOTATION_SEED.to_string(), seed.to_string()),
        (ANNOTATION_TLS.to_string(), tls.to_string()),
    ])
}

/// The PersistentVolumeClaim of a member, when the spec asks for storage.
pub fn member_claim(
    cluster: &EtcdCluster,
    member: &str,
    version: EtcdVersion,
    seed: bool,
    tls: bool,
    storage: &StorageSpec,
) -> Result<PersistentVolumeClaim, BuildError> {
    let name = name_of(cluster)?;
    let mut meta = object_meta(
        cluster,
        claim_name(member),
        member_labels(name, member, None),
    )?;
    meta.annotations = Some(member_annotations(version, seed, tls));
    Ok(PersistentVolumeClaim {
        metadata: meta,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: field_path.to_string(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The restricted container security context (Pod Security Standards, `restricted`).
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT_ID),
        run_as_group: Some(NONROOT_ID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT_ID),
        run_as_group: Some(NONROOT_ID),
        // Volumes (a claim in particular) become writable by the non-root user.
        fs_group: Some(NONROOT_ID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn affinity(cluster_name: &str, rule: AntiAffinity) -> Option<Affinity> {
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(cluster_name)),
            ..Default::default()
        }),
        topology_key: "kubernetes.io/hostname".into(),
        ..Default::default()
    };
    let anti = match rule {
        AntiAffinity::None => return None,
        AntiAffinity::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..Default::default()
        },
        AntiAffinity::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..Default::default()
        },
    };
    Some(Affinity {
        pod_anti_affinity: Some(anti),
        ..Default::default()
    })
}

fn resources(policy: Option<&PodPolicy>) -> Option<ResourceRequirements> {
    let r = policy?.resources.as_ref()?;
    let quantities = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect()
        })
    };
    Some(ResourceRequirements {
        requests: quantities(&r.requests),
        limits: quantities(&r.limits),
        ..Default::default()
    })
}

fn tolerations(policy: Option<&PodPolicy>) -> Option<Vec<Toleration>> {
    let list = &policy?.tolerations;
    (!list.is_empty()).then(|| {
        list.iter()
            .map(|t| Toleration {
                key: t.key.clone(),
                operator: t.operator.clone(),
                value: t.value.clone(),
                effect: t.effect.clone(),
                toleration_seconds: t.toleration_seconds,
            })
            .collect()
    })
}

/// The Pod of one member.
///
/// The etcd container runs an official etcd image with the sidecar as its entrypoint; the
/// init container (the operator image) copies the sidecar binary into a shared `emptyDir`
/// first, so nothing in the Pod needs a shell (etcd images are distroless). The etcd version
/// reaches the sidecar through the downward API from an annotation, because a Pod's env
/// cannot change while its image can: an upgrade patches both, and the restarted container
/// reads the new version.
pub fn member_pod(input: MemberPodInput<'_>) -> Result<Pod, BuildError> {
    let MemberPodInput {
        cluster,
        member,
        version,
        seed,
        endpoints,
        cluster_client_url,
        settings,
        etcd_tls,
    } = input;
    let name = name_of(cluster)?;
    let policy = cluster.spec.pod.as_ref();
    let mut meta = object_meta(
        cluster,
        member.to_string(),
        member_labels(name, member, policy),
    )?;
    let mut annotations = policy.map(|p| p.annotations.clone()).unwrap_or_default();
    annotations.extend(member_annotations(version, seed, etcd_tls));
    meta.annotations = Some(annotations);
    let tls_file = |name: &str| format!("{TLS_DIR}/{name}");

    let mut env_vars = vec![
        env("ETCDOP_CLUSTER", name),
        env_from_field("ETCDOP_NAMESPACE", "metadata.namespace"),
        env("ETCDOP_MEMBER_NAME", member),
        env("ETCDOP_DATA_DIR", DATA_DIR),
        env("ETCDOP_PEER_URL", &endpoints.peer_url),
        env("ETCDOP_CLIENT_URL", &endpoints.client_url),
        env("ETCDOP_LISTEN_PEER_URL", &endpoints.listen_peer_url),
        env("ETCDOP_LISTEN_CLIENT_URL", &endpoints.listen_client_url),
        env("ETCDOP_LISTEN_METRICS_URL", &endpoints.listen_metrics_url),
        env("ETCDOP_COORDINATOR_URL", &settings.coordinator_url),
        env("ETCDOP_GRPC_ADDR", &endpoints.grpc_addr),
        env("ETCDOP_GRPC_URL", &endpoints.sidecar_url),
        env_from_field(
            "ETCDOP_ETCD_VERSION",
            &format!("metadata.annotations['{ANNOTATION_ETCD_VERSION}']"),
        ),
        env("ETCDOP_ETCD_BINARY", ETCD_BINARY),
        env("ETCDOP_ETCDUTL", ETCDUTL_BINARY),
        env("ETCDOP_HEALTH_ADDR", &endpoints.health_addr),
        env("ETCDOP_TLS_CERT", tls_file(MemberFile::CERT)),
        env("ETCDOP_TLS_KEY", tls_file(MemberFile::KEY)),
        env("ETCDOP_TLS_CA", tls_file(MemberFile::CA)),
    ];
    if etcd_tls {
        env_vars.push(env("ETCDOP_ETCD_TLS_DIR", TLS_DIR));
    }
    if let Some(url) = cluster_client_url {
        env_vars.push(env("ETCDOP_CLUSTER_ENDPOINTS", url));
    }
    // etcd's flags from spec.maintenance, through the sidecar (members created after a
    // change get them).
    if let Some(m) = &cluster.spec.maintenance {
        if let Some(quota) = m.quota_backend_bytes.filter(|q| *q > 0) {
            env_vars.push(env("ETCDOP_QUOTA_BACKEND_BYTES", quota.to_string()));
        }
        if let Some(auto) = &m.auto_compaction {
            env_vars.push(env("ETCDOP_AUTO_COMPACTION_MODE", &auto.mode));
            env_vars.push(env("ETCDOP_AUTO_COMPACTION_RETENTION", &auto.retention));
        }
    }
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let data_volume = match &cluster.spec.storage {
        Some(_) => Volume {
            name: DATA_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(member),
                ..Default::default()
            }),
            ..Default::default()
        },
        None => Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    // The credentials of the backup (and restore) storage: each Secret the spec names,
    // mounted read-only at `<STORAGE_CREDENTIALS_DIR>/<secret>/` for the sidecar alone (not
    // its environment, which etcd would inherit); never in status or logs.
    let credential_secrets = storage_credential_secrets(cluster);
    if !credential_secrets.is_empty() {
        env_vars.push(EnvVar {
            name: "ETCDOP_STORAGE_CREDENTIALS_DIR".into(),
            value: Some(STORAGE_CREDENTIALS_DIR.into()),
            ..Default::default()
        });
    }
    let credential_volumes: Vec<(String, String)> = credential_secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| (format!("storage-credentials-{i}"), secret.clone()))
        .collect();
    let etcd = Container {
        name: ETCD_CONTAINER.into(),
        image: Some(etcd_image(cluster, version)),
        command: Some(vec![SIDECAR_BINARY.into(), "run".into()]),
        env: Some(env_vars),
        ports: Some(vec![
            port("client", CLIENT_PORT),
            port("peer", PEER_PORT),
            port("sidecar", SIDECAR_PORT),
            port("health", SIDECAR_HEALTH_PORT),
            port(METRICS_PORT_NAME, METRICS_PORT),
        ]),
        // The kubelet's gRPC probe speaks no TLS: it uses the sidecar's plaintext health
        // port, which serves nothing that changes the member.
        readiness_probe: Some(Probe {
            grpc: Some(GRPCAction {
                port: i32::from(SIDECAR_HEALTH_PORT),
                service: Some(SIDECAR_HEALTH_SERVICE.into()),
            }),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        // Liveness asks the sidecar process, never etcd: a member that is catching up,
        // replaying its WAL or in an election is unready, not dead (the sidecar restarts
        // etcd itself when it exits). Only a sidecar that has not answered for a minute and
        // a half is restarted.
        liveness_probe: Some(Probe {
            grpc: Some(GRPCAction {
                port: i32::from(SIDECAR_HEALTH_PORT),
                service: Some(SIDECAR_LIVENESS_SERVICE.into()),
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(15),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        resources: resources(policy),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(
            [
                mount(DATA_VOLUME, DATA_DIR, false),
                mount(SIDECAR_VOLUME, SIDECAR_DIR, true),
                mount(TLS_VOLUME, TLS_DIR, true),
            ]
            .into_iter()
            .chain(credential_volumes.iter().map(|(volume, secret)| {
                mount(volume, &format!("{STORAGE_CREDENTIALS_DIR}/{secret}"), true)
            }))
            .collect(),
        ),
        ..Default::default()
    };
    let install_image = policy
        .and_then(|p| p.sidecar_image.clone())
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| settings.operator_image.clone());
    let quantities = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    };
    let install = Container {
        name: INSTALL_CONTAINER.into(),
        image: Some(install_image),
        image_pull_policy: Some(
            settings
                .image_pull_policy
                .clone()
                .unwrap_or_else(|| "IfNotPresent".into()),
        ),
        command: Some(vec![
            COORDINATOR_BINARY.into(),
            "install-sidecar".into(),
            SIDECAR_DIR.into(),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&INSTALL_REQUESTS)),
            limits: Some(quantities(&INSTALL_LIMITS)),
            ..Default::default()
        }),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![mount(SIDECAR_VOLUME, SIDECAR_DIR, false)]),
        ..Default::default()
    };
    Ok(Pod {
        metadata: meta,
        spec: Some(PodSpec {
            hostname: Some(member.to_string()),
            subdomain: Some(peer_service_name(name)),
            // Service links would put ETCD_*-looking variables (from a Service named
            // `etcd-...`) into the environment, and etcd reads every ETCD_* as a flag.
            enable_service_links: Some(false),
            automount_service_account_token: Some(false),
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(60),
            security_context: Some(pod_security()),
            init_containers: Some(vec![install]),
            containers: vec![etcd],
            volumes: Some(
                [
                    data_volume,
                    Volume {
                        name: SIDECAR_VOLUME.into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    },
                    // The member's Secret: created right after the Pod, owned by it (the kubelet
                    // waits for it), updated in place on renewal (the kubelet swaps the files
                    // atomically; the sidecar and etcd read them for every new connection).
                    Volume {
                        name: TLS_VOLUME.into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(member_secret_name(member)),
                            default_mode: Some(TLS_FILE_MODE),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]
                .into_iter()
                .chain(credential_volumes.iter().map(|(volume, secret)| Volume {
                    name: volume.clone(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret.clone()),
                        default_mode: Some(TLS_FILE_MODE),
                        ..Default::default()
                    }),
                    ..Default::default()
                }))
                .collect(),
            ),
            affinity: affinity(name, policy.map(|p| p.anti_affinity).unwrap_or_default()),
            node_selector: policy
                .map(|p| p.node_selector.clone())
                .filter(|m| !m.is_empty()),
            tolerations: tolerations(policy),
            image_pull_secrets: image_pull_secrets(policy),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn image_pull_secrets(policy: Option<&PodPolicy>) -> Option<Vec<LocalObjectReference>> {
    let list = &policy?.image_pull_secrets;
    (!list.is_empty()).then(|| {
        list.iter()
            .map(|s| LocalObjectReference {
                name: s.name.clone(),
            })
            .collect()
    })
}

/// PEM files as Secret data.
pub fn secret_data(files: &BTreeMap<String, String>) -> BTreeMap<String, ByteString> {
    files
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
        .collect()
}

/// Secret data as PEM files (entries that are not UTF-8 are left out: they are not ours).
pub fn secret_files(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

/// A member's Secret (see [`MemberFile`]), owned by its Pod: deleting the Pod (scale down,
/// replacement) deletes the Secret, and the operator needs no right to delete Secrets.
pub fn member_secret(
    cluster: &EtcdCluster,
    member: &str,
    pod_uid: &str,
    files: &BTreeMap<String, String>,
) -> Result<Secret, BuildError> {
    let name = name_of(cluster)?;
    let mut meta = object_meta(
        cluster,
        member_secret_name(member),
        member_labels(name, member, None),
    )?;
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: member.to_string(),
        uid: pod_uid.to_string(),
        controller: Some(true),
        // Blocking the Pod's deletion would need rights on pods/finalizers: not needed.
        block_owner_deletion: None,
    }]);
    Ok(Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(secret_data(files)),
        ..Default::default()
    })
}

/// The cluster's etcd CA Secret (`ca.crt`, `ca.key`), owned by the cluster.
pub fn etcd_ca_secret(
    cluster: &EtcdCluster,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Secret, BuildError> {
    let name = name_of(cluster)?;
    Ok(Secret {
        metadata: object_meta(cluster, etcd_ca_secret_name(name), cluster_labels(name))?,
        type_: Some("Opaque".into()),
        data: Some(secret_data(&BTreeMap::from([
            ("ca.crt".to_string(), cert_pem.to_string()),
            ("ca.key".to_string(), key_pem.to_string()),
        ]))),
        ..Default::default()
    })
}

/// The applications' client certificate (`ca.crt`, `tls.crt`, `tls.key`; see
/// [`ClientFile`]), a `kubernetes.io/tls` Secret owned by the cluster.
pub fn client_secret(
    cluster: &EtcdCluster,
    files: &BTreeMap<String, String>,
) -> Result<Secret, BuildError> {
    let name = name_of(cluster)?;
    debug_assert!(files.contains_key(ClientFile::CERT));
    Ok(Secret {
        metadata: object_meta(cluster, client_secret_name(name), cluster_labels(name))?,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(secret_data(files)),
        ..Default::default()
    })
}

/// The ConfigMap publishing the control path's CA certificate in `namespace`.
pub fn ca_configmap(namespace: &str, cert_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CA_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (LABEL_NAME.to_string(), "etcd-coordinator".to_string()),
                (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "ca.crt".to_string(),
            cert_pem.to_string(),
        )])),
        ..Default::default()
    }
}

/// The same Pod moved to `version`: the etcd container's image and the version annotation
/// change together (only the etcd container restarts; its volumes, the sidecar binary
/// included, stay).
pub fn upgraded_pod(mut pod: Pod, image: &str, version: EtcdVersion) -> Pod {
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_ETCD_VERSION.to_string(), version.to_string());
    if let Some(spec) = pod.spec.as_mut() {
        for c in spec
            .containers
            .iter_mut()
            .filter(|c| c.name == ETCD_CONTAINER)
        {
            c.image = Some(image.to_string());
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::MemberAddressing;
    use etcd_operator::resource::EtcdClusterSpec;

    fn cluster(size: i32) -> EtcdCluster {
        let mut c = EtcdCluster::new(
            "etcd-cluster",
            EtcdClusterSpec {
                size,
                version: "3.6.15".into(),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some("default".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    #[test]
    fn quorum_budget_by_size() {
        for (size, min, max) in [(1, None, Some(1)), (3, Some(2), None), (5, Some(3), None)] {
            let pdb = pod_disruption_budget(&cluster(size)).unwrap();
            let spec = pdb.spec.unwrap();
            assert_eq!(spec.min_available, min.map(IntOrString::Int), "size {size}");
            assert_eq!(
                spec.max_unavailable,
                max.map(IntOrString::Int),
                "size {size}"
            );
        }
    }

    #[test]
    fn objects_need_a_server_read_cluster() {
        let mut c = cluster(3);
        c.metadata.uid = None;
        assert_eq!(
            client_service(&c).unwrap_err(),
            BuildError::Missing("metadata.uid")
        );
        c.metadata.namespace = None;
        assert_eq!(
            client_service(&c).unwrap_err(),
            BuildError::Missing("metadata.namespace")
        );
    }

    fn endpoints() -> MemberEndpoints {
        crate::k8s::PodDns.endpoints(
            &etcd_operator::ClusterKey::new("default", "etcd-cluster"),
            "etcd-cluster-0003",
        )
    }

    fn settings() -> PodSettings {
        PodSettings {
            operator_image: "op:1".into(),
            image_pull_policy: Some("Always".into()),
            coordinator_url: "https://etcd-coordinator.default.svc:7443".into(),
            cluster_domain: "cluster.local".into(),
        }
    }

    /// Member `etcd-cluster-0003` of `c` (not the seed, no client URL), its etcd on TLS
    /// when `etcd_tls`.
    fn member_pod_of(c: &EtcdCluster, etcd_tls: bool) -> Pod {
        let (e, s) = (endpoints(), settings());
        member_pod(MemberPodInput {
            cluster: c,
            member: "etcd-cluster-0003",
            version: EtcdVersion::new(3, 6, 15),
            seed: false,
            endpoints: &e,
            cluster_client_url: None,
            settings: &s,
            etcd_tls,
        })
        .unwrap()
    }

    /// [`member_pod_of`], plaintext etcd.
    fn plain_pod(c: &EtcdCluster) -> Pod {
        member_pod_of(c, false)
    }

    #[test]
    fn pod_options_reach_the_pod_and_cannot_take_the_operators_labels() {
        use etcd_operator::resource::{PodResources, PodToleration};
        let mut c = cluster(3);
        c.spec.storage = Some(StorageSpec {
            size: "1Gi".into(),
            storage_class_name: None,
        });
        c.spec.pod = Some(PodPolicy {
            resources: Some(PodResources {
                requests: BTreeMap::from([("cpu".into(), "250m".into())]),
                limits: BTreeMap::from([("memory".into(), "1Gi".into())]),
            }),
            node_selector: BTreeMap::from([("disk".into(), "ssd".into())]),
            tolerations: vec![PodToleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("etcd".into()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            }],
            anti_affinity: AntiAffinity::Required,
            labels: BTreeMap::from([
                ("team".into(), "storage".into()),
                (LABEL_CLUSTER.into(), "someone-else".into()),
            ]),
            annotations: BTreeMap::from([
                ("note".into(), "hi".into()),
                (ANNOTATION_SEED.into(), "true".into()),
            ]),
            image_pull_secrets: vec![
                etcd_operator::resource::ImagePullSecret {
                    name: "regcred".into(),
                },
                etcd_operator::resource::ImagePullSecret {
                    name: "mirror-cred".into(),
                },
            ],
            sidecar_image: Some("mirror.example/etcd-operator:v1".into()),
        });
        let pod = plain_pod(&c);
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "storage");
        assert_eq!(labels[LABEL_CLUSTER], "etcd-cluster", "selector labels win");
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["note"], "hi");
        assert_eq!(annotations[ANNOTATION_SEED], "false", "the seed flag wins");
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.node_selector,
            Some(BTreeMap::from([("disk".into(), "ssd".into())]))
        );
        let t = &spec.tolerations.unwrap()[0];
        assert_eq!(
            (t.key.as_deref(), t.value.as_deref(), t.effect.as_deref()),
            (Some("dedicated"), Some("etcd"), Some("NoSchedule"))
        );
        let anti = spec.affinity.unwrap().pod_anti_affinity.unwrap();
        assert!(
            anti.preferred_during_scheduling_ignored_during_execution
                .is_none()
        );
        assert_eq!(
            anti.required_during_scheduling_ignored_during_execution
                .unwrap()[0]
                .topology_key,
            "kubernetes.io/hostname"
        );
        let etcd = &spec.containers[0];
        let r = etcd.resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "250m");
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "1Gi");
        assert!(
            !etcd
                .env
                .iter()
                .flatten()
                .any(|e| e.name == "ETCDOP_CLUSTER_ENDPOINTS")
        );
        let init = &spec.init_containers.unwrap()[0];
        assert_eq!(init.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            init.image.as_deref(),
            Some("mirror.example/etcd-operator:v1"),
            "the init image follows spec.pod.sidecarImage"
        );
        assert_eq!(
            etcd.image.as_deref(),
            Some("gcr.io/etcd-development/etcd:v3.6.15"),
            "the etcd image does not"
        );
        let pull: Vec<&str> = spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(pull, ["regcred", "mirror-cred"]);
        let data = &spec.volumes.unwrap()[0];
        assert_eq!(
            data.persistent_volume_claim.as_ref().unwrap().claim_name,
            "etcd-cluster-0003-data"
        );

        c.spec.pod.as_mut().unwrap().anti_affinity = AntiAffinity::None;
        let none = plain_pod(&c);
        assert!(none.spec.unwrap().affinity.is_none());
    }

    #[test]
    fn maintenance_reaches_the_sidecar_as_variables_it_reads() {
        use clap::Args;
        use etcd_operator::resource::{AutoCompactionSpec, MaintenanceSpec};
        let env_of = |c: &EtcdCluster| -> BTreeMap<String, String> {
            let pod = plain_pod(c);
            pod.spec.unwrap().containers[0]
                .env
                .iter()
                .flatten()
                .map(|v| (v.name.clone(), v.value.clone().unwrap_or_default()))
                .collect()
        };
        const MAINTENANCE: [&str; 3] = [
            "ETCDOP_QUOTA_BACKEND_BYTES",
            "ETCDOP_AUTO_COMPACTION_MODE",
            "ETCDOP_AUTO_COMPACTION_RETENTION",
        ];
        let plain = env_of(&cluster(3));
        for name in MAINTENANCE {
            assert!(!plain.contains_key(name), "{name} without spec.maintenance");
        }
        let mut c = cluster(3);
        c.spec.maintenance = Some(MaintenanceSpec {
            quota_backend_bytes: Some(16 << 20),
            auto_compaction: Some(AutoCompactionSpec {
                mode: "revision".into(),
                retention: "1000".into(),
            }),
            ..Default::default()
        });
        let env = env_of(&c);
        assert_eq!(env["ETCDOP_QUOTA_BACKEND_BYTES"], "16777216");
        assert_eq!(env["ETCDOP_AUTO_COMPACTION_MODE"], "revision");
        assert_eq!(env["ETCDOP_AUTO_COMPACTION_RETENTION"], "1000");
        // A zero quota is etcd's default: not passed.
        c.spec.maintenance.as_mut().unwrap().quota_backend_bytes = Some(0);
        assert!(!env_of(&c).contains_key("ETCDOP_QUOTA_BACKEND_BYTES"));
        // Every ETCDOP_ variable the Pod sets is one the sidecar reads.
        let sidecar = etcd_sidecar::config::RunArgs::augment_args(clap::Command::new("run"));
        let read: Vec<String> = sidecar
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        for name in env.keys().filter(|n| n.starts_with("ETCDOP_")) {
            assert!(
                read.contains(name),
                "the sidecar does not read {name}: {read:?}"
            );
        }
    }

    #[test]
    fn probes_init_resources_and_metrics_of_a_default_pod() {
        let c = cluster(3);
        let pod = member_pod_of(&c, true);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.image_pull_secrets, None, "none unless asked for");
        let etcd = &spec.containers[0];

        // Liveness: the sidecar's own gRPC health on its plaintext port, the service that is
        // SERVING whatever etcd does; nothing that asks etcd (no HTTP /health, no client or
        // metrics port, not the readiness service).
        let live = etcd.liveness_probe.as_ref().expect("a liveness probe");
        let grpc = live.grpc.as_ref().unwrap();
        assert_eq!(grpc.port, i32::from(SIDECAR_HEALTH_PORT));
        assert_eq!(grpc.service.as_deref(), Some(SIDECAR_LIVENESS_SERVICE));
        assert_ne!(SIDECAR_LIVENESS_SERVICE, SIDECAR_HEALTH_SERVICE);
        assert!(live.http_get.is_none() && live.tcp_socket.is_none() && live.exec.is_none());
        for etcd_port in [CLIENT_PORT, PEER_PORT, METRICS_PORT] {
            assert_ne!(grpc.port, i32::from(etcd_port));
        }
        // Generous: over a minute of silence before a restart.
        let patience = live.period_seconds.unwrap() * live.failure_threshold.unwrap();
        assert!(patience >= 60, "{patience} s");
        assert!(live.failure_threshold.unwrap() >= 3);
        assert!(live.timeout_seconds.unwrap() >= 2);
        let ready = etcd
            .readiness_probe
            .as_ref()
            .unwrap()
            .grpc
            .as_ref()
            .unwrap();
        assert_eq!(ready.service.as_deref(), Some(SIDECAR_HEALTH_SERVICE));

        // The init container: the operator image, requests and limits for cpu and memory.
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("op:1"));
        let r = init.resources.as_ref().expect("init container resources");
        for (kind, list) in [(&r.requests, INSTALL_REQUESTS), (&r.limits, INSTALL_LIMITS)] {
            let kind = kind.as_ref().unwrap();
            assert_eq!(kind.len(), 2);
            for (k, v) in list {
                assert_eq!(kind[k].0, v);
            }
        }

        // etcd's metrics: a named port and the URL the sidecar passes to etcd, plain http
        // even with etcd TLS.
        assert!(
            etcd.ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref() == Some(METRICS_PORT_NAME)
                    && p.container_port == i32::from(METRICS_PORT))
        );
        let url = etcd
            .env
            .iter()
            .flatten()
            .find(|v| v.name == "ETCDOP_LISTEN_METRICS_URL")
            .and_then(|v| v.value.clone());
        assert_eq!(url.as_deref(), Some("http://0.0.0.0:2381"));
        // The peer Service carries the port (the ServiceMonitor's target), the client
        // Service does not; the component label tells them apart.
        let peer = peer_service(&c).unwrap();
        assert_eq!(
            peer.metadata.labels.as_ref().unwrap()[LABEL_COMPONENT],
            "peer"
        );
        let metrics = peer
            .spec
            .unwrap()
            .ports
            .unwrap()
            .into_iter()
            .find(|p| p.name.as_deref() == Some(METRICS_PORT_NAME))
            .expect("the metrics port on the peer Service");
        assert_eq!(metrics.port, i32::from(METRICS_PORT));
        assert_eq!(
            metrics.target_port,
            Some(IntOrString::String(METRICS_PORT_NAME.into()))
        );
        let client = client_service(&c).unwrap();
        assert_eq!(
            client.metadata.labels.as_ref().unwrap()[LABEL_COMPONENT],
            "client"
        );
        assert_eq!(client.spec.unwrap().ports.unwrap().len(), 1);
    }

    #[test]
    fn an_upgrade_changes_only_the_image_and_the_version() {
        let c = cluster(3);
        let e = endpoints();
        let s = settings();
        let pod = member_pod(MemberPodInput {
            cluster: &c,
            member: "etcd-cluster-0003",
            version: EtcdVersion::new(3, 6, 15),
            seed: false,
            endpoints: &e,
            cluster_client_url: Some("http://etcd-cluster.default.svc:2379"),
            settings: &s,
            etcd_tls: false,
        })
        .unwrap();
        let to = EtcdVersion::new(3, 7, 2);
        let up = upgraded_pod(pod.clone(), &etcd_image(&c, to), to);
        assert_eq!(
            up.metadata.annotations.as_ref().unwrap()[ANNOTATION_ETCD_VERSION],
            "3.7.2"
        );
        let mut spec = up.spec.unwrap();
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("gcr.io/etcd-development/etcd:v3.7.2")
        );
        spec.containers[0].image = pod.spec.as_ref().unwrap().containers[0].image.clone();
        assert_eq!(Some(spec), pod.spec);
    }

    #[test]
    fn backup_credentials_come_from_the_named_secrets_only() {
        use etcd_operator::resource::{
            AzureStorageSpec, BackupSpec, BackupStorageSpec, RestoreSpec, S3StorageSpec,
        };
        let pod_of = plain_pod;
        let etcd_of = |pod: &Pod| pod.spec.as_ref().unwrap().containers[0].clone();
        let plain = etcd_of(&pod_of(&cluster(3)));
        let env = plain.env.clone().unwrap();
        assert!(!env.iter().any(|v| v.name.starts_with("AWS_")));
        assert!(
            !env.iter()
                .any(|v| v.name == "ETCDOP_STORAGE_CREDENTIALS_DIR")
        );
        let mut c = cluster(3);
        c.spec.backup = Some(BackupSpec {
            schedule: None,
            keep: None,
            storage: Some(BackupStorageSpec {
                s3: Some(S3StorageSpec {
                    bucket: "b".into(),
                    credentials_secret: Some("s3-creds".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        });
        c.spec.restore = Some(RestoreSpec {
            backup: "latest".into(),
            storage: Some(BackupStorageSpec {
                azure: Some(AzureStorageSpec {
                    container: "c".into(),
                    account: "a".into(),
                    credentials_secret: Some("azure-creds".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let pod = pod_of(&c);
        let etcd = etcd_of(&pod);
        let env = etcd.env.clone().unwrap();
        // Backups are proven and restored with the etcdutl of the member's own image.
        let etcdutl = env.iter().find(|v| v.name == "ETCDOP_ETCDUTL").unwrap();
        assert_eq!(etcdutl.value.as_deref(), Some("/usr/local/bin/etcdutl"));
        // Not in the environment (etcd, the sidecar's child, would inherit it).
        assert!(
            !env.iter()
                .any(|v| v.name.starts_with("AWS_") || v.name.starts_with("AZURE_"))
        );
        let dir = env
            .iter()
            .find(|v| v.name == "ETCDOP_STORAGE_CREDENTIALS_DIR")
            .unwrap();
        assert_eq!(dir.value.as_deref(), Some(STORAGE_CREDENTIALS_DIR));
        let volumes = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
        let mounts = etcd.volume_mounts.unwrap();
        for secret in ["s3-creds", "azure-creds"] {
            let volume = volumes
                .iter()
                .find(|v| {
                    v.secret
                        .as_ref()
                        .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
                })
                .expect(secret);
            let mount = mounts.iter().find(|m| m.name == volume.name).expect(secret);
            assert_eq!(
                mount.mount_path,
                format!("{STORAGE_CREDENTIALS_DIR}/{secret}")
            );
            assert_eq!(mount.read_only, Some(true));
        }
    }

    #[test]
    fn images_follow_the_repository() {
        let mut c = cluster(3);
        let v = EtcdVersion::new(3, 6, 15);
        assert_eq!(etcd_image(&c, v), "gcr.io/etcd-development/etcd:v3.6.15");
        c.spec.repository = Some("quay.io/coreos/etcd".into());
        assert_eq!(etcd_image(&c, v), "quay.io/coreos/etcd:v3.6.15");
        assert_eq!(
            selector_string("etcd-cluster"),
            "etcd.operator.rs/cluster=etcd-cluster"
        );
    }
}
