//! `etcd-coordinator kubernetes`: the coordinator in a cluster. Serves gRPC (every replica,
//! so probes pass), takes part in leader election, and while it leads runs the kube-runtime
//! controller over `EtcdCluster` objects and the Pods, Services and PodDisruptionBudgets
//! they own. Losing the Lease stops the controller (any reconcile under way is dropped) and
//! forgets everything learned under it: the next leader starts from the cluster's truth.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use etcd_operator::naming::{LABEL_MANAGED_BY, MANAGER};
use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{ConfigMap, Pod, Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Client,
    api::{Api, DynamicObject, Patch, PatchParams, PostParams},
    runtime::{Controller, WatchStreamExt, events::Reporter, reflector, watcher},
};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{
    CA_CONFIGMAP, CA_SECRET, COORDINATOR_CONTROL_PORT, FIELD_MANAGER, KubeRuntime,
    LABEL_COORDINATOR_LEADER, PodDns,
    build::{self, PodSettings},
    leader::{LeaderElector, LeaseSettings},
    reconcile::{Context, error_policy, reconcile},
    triggers::{cluster_changed, report_changes},
};
use crate::{
    leadership::Leadership,
    plan::Policy,
    registry::Registry,
    security::{ControlPlane, now_secs},
    server,
};
use etcd_operator::pki::Authority;

/// The name of the coordinator container in its Deployment (its image is the operator image).
pub const COORDINATOR_CONTAINER: &str = "coordinator";

/// Options of `etcd-coordinator kubernetes`.
#[derive(Clone, Debug)]
pub struct KubernetesOptions {
    /// The namespaces whose clusters are managed ([`WatchNamespaces::All`] needs
    /// cluster-wide permissions).
    pub watch_namespaces: WatchNamespaces,
    /// The coordinator's own namespace (downward API).
    pub pod_namespace: String,
    /// The coordinator's own Pod name (downward API): its identity in the election.
    pub pod_name: String,
    /// Where the status port is served (TLS, read-only methods).
    pub grpc_addr: SocketAddr,
    /// Where the control port is served (mutual TLS, for the sidecars).
    pub control_addr: SocketAddr,
    /// Where plaintext gRPC health is served (the kubelet's probes).
    pub health_addr: SocketAddr,
    /// The control URL sidecars reach the coordinator on (default: its Service in its
    /// namespace, port 7443).
    pub coordinator_url: Option<String>,
    /// How long the members' certificates are valid (renewed with a third left).
    pub cert_validity: Duration,
    /// The DNS domain of the Kubernetes cluster.
    pub cluster_domain: String,
    /// The operator image for the init containers (default: this Pod's own image).
    pub operator_image: Option<String>,
    /// Pull policy of the operator image in member Pods.
    pub image_pull_policy: Option<String>,
    /// Name of the leader Lease; `None` runs without election (one replica only).
    pub lease_name: Option<String>,
    /// Planner tunables.
    pub policy: Policy,
}

/// The coordinator Service's control URL in `namespace`.
pub fn default_coordinator_url(namespace: &str) -> String {
    format!("https://etcd-coordinator.{namespace}.svc:{COORDINATOR_CONTROL_PORT}")
}

/// The names the coordinator's certificate is valid for: its Service, in every form a
/// client may dial it by, and loopback (port-forwarding).
pub fn coordinator_hosts(namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        format!("etcd-coordinator.{namespace}.svc.{cluster_domain}"),
        format!("etcd-coordinator.{namespace}.svc"),
        format!("etcd-coordinator.{namespace}"),
        "etcd-coordinator".into(),
        "localhost".into(),
        "127.0.0.1".into(),
    ]
}

/// Reads the control path's CA from its Secret, creating it when it does not exist (the
/// first replica to start wins; the others read the winner's), and publishes its
/// certificate in the ConfigMap.
pub async fn load_control_ca(client: &Client, namespace: &str) -> anyhow::Result<Authority> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match secrets.get_opt(CA_SECRET).await? {
        Some(s) => s,
        None => {
            let ca = Authority::generate("etcd-operator control CA", now_secs())?;
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(CA_SECRET.into()),
                    namespace: Some(namespace.into()),
                    labels: Some(
                        [(
                            etcd_operator::naming::LABEL_MANAGED_BY.to_string(),
                            MANAGER.to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                data: Some(build::secret_data(
                    &[
                        ("ca.crt".to_string(), ca.cert_pem().to_string()),
                        ("ca.key".to_string(), ca.key_pem().to_string()),
                    ]
                    .into(),
                )),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(s) => {
                    info!(secret = CA_SECRET, "created the control path's CA");
                    s
                }
                Err(kube::Error::Api(e)) if e.code == 409 => secrets.get(CA_SECRET).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let files = build::secret_files(&secret);
    let (Some(cert), Some(key)) = (files.get("ca.crt"), files.get("ca.key")) else {
        anyhow::bail!("Secret {namespace}/{CA_SECRET} lacks ca.crt or ca.key");
    };
    let ca = Authority::from_pem(cert, key)?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    configmaps
        .patch(
            CA_CONFIGMAP,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&build::ca_configmap(namespace, ca.cert_pem())),
        )
        .await?;
    Ok(ca)
}

async fn own_image(client: &Client, opts: &KubernetesOptions) -> anyhow::Result<String> {
    if let Some(image) = &opts.operator_image {
        return Ok(image.clone());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &opts.pod_namespace);
    let pod = pods.get(&opts.pod_name).await.map_err(|e| {
        anyhow::anyhow!(
            "reading this Pod ({}/{}) for the operator image: {e}; set ETCDOP_OPERATOR_IMAGE",
            opts.pod_namespace,
            opts.pod_name
        )
    })?;
    pod.spec
        .and_then(|s| {
            s.containers
                .into_iter()
                .find(|c| c.name == COORDINATOR_CONTAINER)
        })
        .and_then(|c| c.image)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "this Pod has no container {COORDINATOR_CONTAINER:?}; set ETCDOP_OPERATOR_IMAGE"
            )
        })
}

/// Marks (or unmarks) this coordinator's Pod as the leader the Service routes to.
async fn label_leader(client: &Client, opts: &KubernetesOptions, leading: bool) {
    if opts.pod_name.is_empty() {
        return;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &opts.pod_namespace);
    let patch = json!({"metadata": {"labels": {LABEL_COORDINATOR_LEADER: leading.to_string()}}});
    if let Err(e) = pods
        .patch(
            &opts.pod_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        warn!(error = %e, leading, "could not label this coordinator's Pod");
    }
}

/// Which namespaces' clusters the coordinator manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchNamespaces {
    /// Every namespace: one cluster-wide watch (needs the ClusterRole of
    /// `deploy/overlays/cluster-wide`).
    All,
    /// These namespaces (at least one, each a valid name, none twice): one controller
    /// each, so a Role and RoleBinding in each is enough.
    Only(Vec<String>),
}

impl WatchNamespaces {
    /// One namespace.
    pub fn one(namespace: impl Into<String>) -> Self {
        Self::Only(vec![namespace.into()])
    }

    /// `*` for every namespace, else a comma-separated list of namespaces (spaces around
    /// names ignored). An empty entry, an invalid name or a repeated one is an error that
    /// says which.
    pub fn parse(list: &str) -> Result<Self, String> {
        if list.trim() == "*" {
            return Ok(Self::All);
        }
        let mut namespaces: Vec<String> = Vec::new();
        for (i, entry) in list.split(',').enumerate() {
            let name = entry.trim();
            let at = i + 1;
            if name.is_empty() {
                return Err(format!(
                    "watch namespaces {list:?}: entry {at} is empty (a list is name,name,...; `*` for every namespace)"
                ));
            }
            if name == "*" {
                return Err(format!(
                    "watch namespaces {list:?}: `*` (every namespace) stands alone, not in a list"
                ));
            }
            let valid = name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !valid {
                return Err(format!(
                    "watch namespaces {list:?}: {name:?} (entry {at}) is not a namespace name (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
                ));
            }
            if namespaces.iter().any(|n| n == name) {
                return Err(format!(
                    "watch namespaces {list:?}: {name:?} is listed twice"
                ));
            }
            namespaces.push(name.to_string());
        }
        Ok(Self::Only(namespaces))
    }

    /// The namespaces watched, one scope per controller (`None`: every namespace).
    pub fn scopes(&self) -> Vec<Option<String>> {
        match self {
            Self::All => vec![None],
            Self::Only(list) => list.iter().cloned().map(Some).collect(),
        }
    }
}

impl std::fmt::Display for WatchNamespaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("(all)"),
            Self::Only(list) => f.write_str(&list.join(",")),
        }
    }
}

impl std::str::FromStr for WatchNamespaces {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// How often the sidecars' reports are compared with what was last acted on (in memory:
/// no request), besides every `Registry::notify`.
pub const REPORT_CHECK: Duration = Duration::from_secs(1);

/// Runs one controller per watched namespace (one for all of them with
/// [`WatchNamespaces::All`]) until their streams end (only on shutdown of their inputs).
///
/// A reconcile starts when an `EtcdCluster` changes in a way that matters (not its status:
/// [`super::triggers::cluster_changed`]), when a Pod, Service or budget it owns changes,
/// when what the sidecars report changes in a way that matters
/// ([`super::triggers::report_changes`]), and when the reconcile's own requeue is due
/// (soon while the planner acts or waits, a long resync when steady).
///
/// Every task it starts (the per-scope loops that forget deleted clusters, the Event
/// flusher) is held in a [`JoinSet`](tokio::task::JoinSet) owned by this future: when the
/// term ends (the future returns, or is dropped at a lost lease or a shutdown) they are
/// aborted with it, and none of them acts on a later term with what it read in this one.
pub async fn run_controller(ctx: Arc<Context>, namespaces: WatchNamespaces) {
    ctx.start_term();
    if namespaces.scopes().is_empty() {
        // (`parse` never gives an empty list.) Returning would end the term at once, and
        // the leader loop would start it again and again.
        warn!("no namespace to watch: nothing is managed");
        return std::future::pending().await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut runs = Vec::new();
    for scope in namespaces.scopes() {
        let (store, mut listed, run) = controller(Arc::clone(&ctx), scope.clone());
        runs.push(run);
        // A cluster deleted is gone from the watch (there is no finalizer to see it
        // through a reconcile): what the coordinator remembers of it is dropped here.
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move {
            // Not `Store::wait_until_ready`: the controller waits on it too, and it wakes
            // only one of its waiters.
            if listed.wait_for(|listed| *listed).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                use kube::ResourceExt;
                let present: Vec<etcd_operator::ClusterKey> = store
                    .state()
                    .iter()
                    .map(|o| {
                        etcd_operator::ClusterKey::new(
                            o.namespace().unwrap_or_default(),
                            o.name_any(),
                        )
                    })
                    .collect();
                crate::k8s::reconcile::forget_deleted_in(&ctx, scope.as_deref(), &present);
            }
        });
    }
    // Event series that grew since they were last sent.
    tasks.spawn({
        let ctx = Arc::clone(&ctx);
        async move {
            loop {
                tokio::time::sleep(super::events::FLUSH_EVERY).await;
                ctx.events.flush().await;
            }
        }
    });
    futures::future::join_all(runs).await;
    tasks.abort_all();
}

/// The controller of one scope (a namespace, or every namespace), its store, and whether
/// the store holds a whole list (true from the first list's end on).
fn controller(
    ctx: Arc<Context>,
    scope: Option<String>,
) -> (
    kube::runtime::reflector::Store<DynamicObject>,
    watch::Receiver<bool>,
    impl std::future::Future<Output = ()>,
) {
    let client = ctx.client.clone();
    let resource = ctx.resource().clone();
    let (clusters, pods, services, budgets) = match &scope {
        Some(ns) => (
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
            Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            Api::<Pod>::all(client.clone()),
            Api::<Service>::all(client.clone()),
            Api::<PodDisruptionBudget>::all(client.clone()),
        ),
    };
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let (listed_tx, listed) = watch::channel(false);
    let changes = watcher(clusters, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                listed_tx.send_replace(true);
            }
        })
        .filter_map(only_changes());
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let reports = report_changes(
        ctx.registry.clone(),
        ctx.policy,
        scope.clone(),
        resource.clone(),
        REPORT_CHECK,
    );
    let controller = Controller::for_stream_with(changes, store.clone(), resource)
        .owns(pods, owned.clone())
        .owns(services, owned.clone())
        .owns(budgets, owned)
        .reconcile_on(reports);
    let run = async move {
        controller
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                match result {
                    Ok((obj, _)) => debug!(cluster = %obj.name, "reconciled"),
                    Err(e) => warn!(error = %e, "controller"),
                }
            })
            .await;
    };
    (store, listed, run)
}

/// The objects of the `EtcdCluster` watch that changed in a way a reconcile acts on
/// ([`cluster_changed`]); a change of the status alone (the coordinator's own writes) is
/// dropped.
type WatchResult<T> = Result<T, watcher::Error>;

fn only_changes() -> impl FnMut(
    WatchResult<watcher::Event<DynamicObject>>,
) -> std::future::Ready<Option<WatchResult<DynamicObject>>> {
    let mut seen: HashMap<(Option<String>, String), u64> = HashMap::new();
    move |event| {
        use kube::ResourceExt;
        let key = |o: &DynamicObject| (o.namespace(), o.name_any());
        std::future::ready(match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let hash = cluster_changed(&o);
                let changed = match hash {
                    Some(h) => seen.insert(key(&o), h) != Some(h),
                    None => true,
                };
                changed.then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&key(&o));
                None
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        })
    }
}

/// Runs until `shutdown` resolves.
pub async fn run_kubernetes(
    opts: KubernetesOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // A connection that stops answering is cut after a bounded wait (watches end on the
    // server's side within 290 s, so any live connection reads something before this).
    let mut config = kube::Config::infer().await?;
    config.read_timeout = Some(Duration::from_secs(310));
    let client = Client::try_from(config)?;
    let operator_image = own_image(&client, &opts).await?;
    let coordinator_url = opts
        .coordinator_url
        .clone()
        .unwrap_or_else(|| default_coordinator_url(&opts.pod_namespace));
    // With an election nothing acts before a term begins; without one (a single replica),
    // this coordinator's term lasts as long as it runs.
    // Epochs only grow: with an election the Lease counts them (above what the clusters
    // record); without one, this start's term is one above every epoch the clusters record.
    let registry = if opts.lease_name.is_some() {
        Registry::with_leadership(Leadership::none(), 0)
    } else {
        let scopes = opts.watch_namespaces.scopes();
        let epoch = super::epoch::highest_on_clusters(&client, &scopes).await? + 1;
        super::epoch::record_on_all(&client, &scopes, epoch).await?;
        Registry::always(epoch)
    };
    let ca = load_control_ca(&client, &opts.pod_namespace).await?;
    let control = ControlPlane::new(
        ca,
        coordinator_hosts(&opts.pod_namespace, &opts.cluster_domain),
        opts.cert_validity,
    );
    let listener = tokio::net::TcpListener::bind(opts.grpc_addr).await?;
    let control_listener = tokio::net::TcpListener::bind(opts.control_addr).await?;
    let health_listener = tokio::net::TcpListener::bind(opts.health_addr).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let servers = [
        tokio::spawn(server::serve_status(
            listener,
            registry.clone(),
            Some(control.status_server()),
            stop_rx.clone(),
        )),
        tokio::spawn(server::serve_control(
            control_listener,
            registry.clone(),
            control.control_server(),
            stop_rx.clone(),
        )),
        tokio::spawn(server::serve_health(health_listener, stop_rx.clone())),
    ];
    info!(addr = %opts.grpc_addr, control_addr = %opts.control_addr, health_addr = %opts.health_addr, %operator_image, %coordinator_url, namespaces = %opts.watch_namespaces, "coordinator starting");

    let runtime = Arc::new(
        KubeRuntime::new(
            client.clone(),
            PodSettings {
                operator_image,
                image_pull_policy: opts.image_pull_policy.clone(),
                coordinator_url,
                cluster_domain: opts.cluster_domain.clone(),
            },
            Arc::new(PodDns),
            Arc::clone(&control),
        )
        // Each write is sent only while this coordinator's term holds.
        .bounded_by(registry.leadership().clone()),
    );
    let reporter = Reporter {
        controller: "etcd-operator".into(),
        instance: (!opts.pod_name.is_empty()).then(|| opts.pod_name.clone()),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        registry.clone(),
        Arc::clone(&runtime),
        reporter,
        opts.policy,
    ));

    let elector = opts.lease_name.as_ref().map(|lease| {
        let identity = if opts.pod_name.is_empty() {
            format!("etcd-coordinator-{}", std::process::id())
        } else {
            opts.pod_name.clone()
        };
        let elector = LeaderElector::new(
            client.clone(),
            LeaseSettings::new(lease.clone(), opts.pod_namespace.clone(), identity),
        )
        .with_cluster_epochs(client.clone(), opts.watch_namespaces.scopes());
        tokio::spawn(elector.run(registry.leadership().clone(), stop_rx.clone()))
    });
    label_leader(&client, &opts, false).await;

    let leadership = registry.leadership().clone();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let epoch = tokio::select! {
            epoch = leadership.acquired() => epoch,
            _ = &mut shutdown => break,
        };
        // A term starts from the cluster's truth: nothing learned under an earlier one
        // (reports, grants) carries over, and grant ids carry this term's epoch.
        registry.begin_term(epoch);
        runtime.forget_all();
        label_leader(&client, &opts, true).await;
        let stopped = tokio::select! {
            _ = run_controller(Arc::clone(&ctx), opts.watch_namespaces.clone()) => false,
            _ = crate::runtime::renew_certificates_forever(Arc::clone(&runtime), registry.clone(), Duration::from_secs(30)) => false,
            _ = leadership.lost() => false,
            _ = &mut shutdown => true,
        };
        registry.begin_term(epoch);
        runtime.forget_all();
        label_leader(&client, &opts, false).await;
        if stopped {
            break;
        }
        info!("not leading: waiting for the lease");
    }
    info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(elector) = elector {
        let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
    }
    for server in servers {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_namespaces_parse_and_refuse_bad_input_clearly() {
        assert_eq!(WatchNamespaces::parse("*"), Ok(WatchNamespaces::All));
        assert_eq!(
            WatchNamespaces::parse("team-a"),
            Ok(WatchNamespaces::one("team-a"))
        );
        assert_eq!(
            WatchNamespaces::parse(" team-a , b2 "),
            Ok(WatchNamespaces::Only(vec!["team-a".into(), "b2".into()]))
        );
        assert_eq!(
            WatchNamespaces::parse("a,b").unwrap().scopes(),
            [Some("a".to_string()), Some("b".to_string())]
        );
        assert_eq!(WatchNamespaces::All.scopes(), [None]);
        for (bad, says) in [
            ("", "entry 1 is empty"),
            ("a,,b", "entry 2 is empty"),
            ("a,", "entry 2 is empty"),
            ("a,*", "stands alone"),
            ("Team", "\"Team\" (entry 1) is not a namespace name"),
            ("a,-b", "\"-b\" (entry 2) is not a namespace name"),
            ("a_b", "is not a namespace name"),
            ("a,b,a", "\"a\" is listed twice"),
        ] {
            let e = WatchNamespaces::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let long = "a".repeat(64);
        assert!(WatchNamespaces::parse(&long).is_err());
        assert_eq!(WatchNamespaces::parse("a,b").unwrap().to_string(), "a,b");
        assert_eq!(WatchNamespaces::All.to_string(), "(all)");
    }
}
