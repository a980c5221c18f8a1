//! End to end on the Kubernetes code path: the reconciler writes Pods into an in-memory API
//! server (kube-fake-client), and this test plays kubelet. It runs each Pod's etcd container
//! as a local process: the container's real command and env from the Pod spec, with only
//! what a node would provide mapped to this machine (the sidecar binary installed by the init
//! container is the built `etcd-coordinator sidecar`, the image's `/usr/local/bin/etcd` is the
//! local etcd binary of the image's tag (its `etcdutl` the official one setup.sh caches), volumes are directories, downward-API fields are
//! read from the Pod, and the member addresses are 127.0.0.1 ports through an injected
//! `MemberAddressing`). It writes the Pod's phase and container state back, restarts the
//! container when its image changes (as the kubelet does), and stops it when the Pod is
//! deleted.
//!
//! With it, the walk-through runs against real etcd: create 3 (each member answers its
//! liveness probe and serves etcd's metrics on its metrics URL), scale to 5, delete a Pod
//! (a new ordinal replaces it), scale back to 3, change the version, and the first write is
//! still there.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_coordinator::{
    k8s::{
        ANNOTATION_ETCD_VERSION, Context, ETCD_BINARY, ETCD_CONTAINER, ETCDUTL_BINARY, KubeRuntime,
        MemberAddressing, MemberEndpoints, SIDECAR_BINARY, build::PodSettings, reconcile,
    },
    leadership::Leadership,
    plan::Policy,
    registry::Registry,
    security::{ControlPlane, now_secs},
    server,
};
use etcd_operator::{
    ClusterKey, EtcdVersion,
    etcd_bin::EtcdBinaries,
    pki::Authority,
    resource::{EtcdCluster, EtcdClusterSpec},
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    Client, ResourceExt,
    api::{Api, DeleteParams, ListParams, Patch, PatchParams},
};
use kube_fake_client::ClientBuilder;
use serde_json::json;
use testkit::{free_port, serial_guard, wait_for};
use tokio::{net::TcpListener, process::Child, sync::watch, task::JoinHandle};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const NS: &str = "default";
const NAME: &str = "etcd-cluster";
const FORM: Duration = Duration::from_secs(120);
const CHANGE: Duration = Duration::from_secs(150);

/// A member's ports: client, peer, sidecar gRPC, sidecar health, etcd metrics.
type MemberPorts = (u16, u16, u16, u16, u16);

/// Each member on 127.0.0.1, with ports handed out on first use and kept.
#[derive(Default)]
struct Loopback {
    ports: Mutex<HashMap<String, MemberPorts>>,
}

impl MemberAddressing for Loopback {
    fn endpoints(&self, _cluster: &ClusterKey, member: &str) -> MemberEndpoints {
        let (client, peer, grpc, health, metrics) = *self
            .ports
            .lock()
            .unwrap()
            .entry(member.to_string())
            .or_insert_with(|| {
                (
                    free_port(),
                    free_port(),
                    free_port(),
                    free_port(),
                    free_port(),
                )
            });
        MemberEndpoints {
            client_url: format!("http://127.0.0.1:{client}"),
            peer_url: format!("http://127.0.0.1:{peer}"),
            sidecar_url: format!("https://127.0.0.1:{grpc}"),
            listen_client_url: format!("http://127.0.0.1:{client}"),
            listen_peer_url: format!("http://127.0.0.1:{peer}"),
            listen_metrics_url: format!("http://127.0.0.1:{metrics}"),
            grpc_addr: format!("127.0.0.1:{grpc}"),
            health_addr: format!("127.0.0.1:{health}"),
        }
    }
}

/// One running container.
struct Running {
    child: Child,
    image: String,
    restarts: i32,
}

/// The node: runs the etcd container of every Pod it finds.
struct Kubelet {
    client: Client,
    root: PathBuf,
    binaries: EtcdBinaries,
    running: Mutex<HashMap<String, Running>>,
    /// etcd versions whose images cannot be pulled: a Pod on one waits in
    /// ImagePullBackOff, its container never started.
    unpullable: Mutex<std::collections::BTreeSet<String>>,
    /// How long an update of a Secret already mounted takes to reach the Pod's files (a
    /// kubelet's sync period and cache); a Pod's first files are written at once.
    secret_lag: Mutex<Duration>,
    /// Updates seen and not yet written: the file, its new contents, when first seen.
    pending_updates: Mutex<HashMap<PathBuf, (Vec<u8>, std::time::Instant)>>,
}

impl Kubelet {
    fn log_path(&self, pod: &str) -> PathBuf {
        self.root.join(format!("{pod}.log"))
    }

    /// Writes the files of every Secret volume of `pod` into its host directory, as the
    /// kubelet projects them (again on every sync, so a renewed Secret reaches the files);
    /// false while a Secret does not exist yet (the kubelet waits for it).
    async fn project_secrets(&self, pod: &Pod) -> bool {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        for volume in pod.spec.as_ref().unwrap().volumes.iter().flatten() {
            let Some(source) = &volume.secret else {
                continue;
            };
            let name = source.secret_name.clone().unwrap();
            let Ok(secret) = secrets.get(&name).await else {
                return false;
            };
            let dir = self.volume_dir(pod, &volume.name);
            self.project(&secret, &dir);
        }
        true
    }

    /// Writes the data of `secret` into `dir`: at once into an empty directory, an update
    /// only once it has been seen for the secret lag.
    fn project(&self, secret: &Secret, dir: &std::path::Path) {
        let first = !dir.exists();
        std::fs::create_dir_all(dir).unwrap();
        let lag = *self.secret_lag.lock().unwrap();
        let mut pending = self.pending_updates.lock().unwrap();
        for (file, data) in secret.data.iter().flatten() {
            let path = dir.join(file);
            if std::fs::read(&path).ok().as_deref() == Some(&data.0[..]) {
                pending.remove(&path);
                continue;
            }
            if !first && !lag.is_zero() {
                let seen = pending
                    .entry(path.clone())
                    .or_insert_with(|| (data.0.clone(), std::time::Instant::now()));
                if seen.0 != data.0 {
                    *seen = (data.0.clone(), std::time::Instant::now());
                }
                if seen.1.elapsed() < lag {
                    continue;
                }
                pending.remove(&path);
            }
            let tmp = dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, &data.0).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
    }

    /// The host directory of a Pod's volume: per Pod for an emptyDir or a Secret, per claim
    /// for a claim.
    fn volume_dir(&self, pod: &Pod, volume: &str) -> PathBuf {
        let v = pod
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .expect("mounted volumes exist");
        match &v.persistent_volume_claim {
            Some(c) => self.root.join("claims").join(&c.claim_name),
            None => self.root.join("pods").join(pod.uid().unwrap()).join(volume),
        }
    }

    /// Starts the etcd container of `pod` as a process.
    fn start(&self, pod: &Pod, restarts: i32) -> Running {
        let spec = pod.spec.as_ref().unwrap();
        let container = spec
            .containers
            .iter()
            .find(|c| c.name == ETCD_CONTAINER)
            .unwrap();
        let image = container.image.clone().unwrap();
        let version: EtcdVersion = image.rsplit_once(":v").unwrap().1.parse().unwrap();
        let etcd = self
            .binaries
            .resolve(version)
            .expect("the image's etcd version has a local binary");
        let mounts: Vec<(String, PathBuf)> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.clone(), self.volume_dir(pod, &m.name)))
            .collect();
        let map_path = |value: &str| -> String {
            if value == ETCD_BINARY {
                return etcd.display().to_string();
            }
            // The image's own etcdutl: here the official one setup.sh caches.
            if value == ETCDUTL_BINARY {
                return self
                    .binaries
                    .etcdutl(&etcd)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
            }
            for (mount, dir) in &mounts {
                if let Some(rest) = value.strip_prefix(mount.as_str()) {
                    return format!("{}{rest}", dir.display());
                }
            }
            value.to_string()
        };
        let command = container.command.as_ref().unwrap();
        // The init container installed the sidecar at SIDECAR_BINARY; here it is the built
        // coordinator, which embeds it as `sidecar`.
        assert_eq!(command[0], SIDECAR_BINARY);
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-coordinator"));
        cmd.arg("sidecar").args(&command[1..]);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info");
        for e in container.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => map_path(v),
                (None, Some(from)) => {
                    let path = &from.field_ref.as_ref().unwrap().field_path;
                    if path == "metadata.namespace" {
                        pod.namespace().unwrap()
                    } else if let Some(key) = path
                        .strip_prefix("metadata.annotations['")
                        .and_then(|k| k.strip_suffix("']"))
                    {
                        pod.annotations().get(key).cloned().unwrap_or_default()
                    } else {
                        panic!("unsupported downward API field {path}")
                    }
                }
                _ => String::new(),
            };
            cmd.env(&e.name, value);
        }
        for (_, dir) in &mounts {
            std::fs::create_dir_all(dir).unwrap();
        }
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path(&pod.name_any()))
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start the container");
        Running {
            child,
            image,
            restarts,
        }
    }

    /// Whether `image` names an etcd version that cannot be pulled.
    fn cannot_pull(&self, image: Option<&String>) -> bool {
        image
            .and_then(|i| i.rsplit_once(":v"))
            .is_some_and(|(_, version)| self.unpullable.lock().unwrap().contains(version))
    }

    /// The status of a Pod whose etcd image cannot be pulled, as the kubelet writes it.
    async fn report_pull_failure(&self, pod: &str, image: &str) {
        let status = json!({"status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "containerStatuses": [{
                "name": ETCD_CONTAINER, "image": image, "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {
                    "reason": "ImagePullBackOff",
                    "message": format!("Back-off pulling image \"{image}\"")
                }}
            }]
        }});
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        let _ = pods
            .patch(pod, &PatchParams::default(), &Patch::Merge(&status))
            .await;
    }

    async fn report(&self, pod: &str, image: &str, restarts: i32) {
        let status = json!({"status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "containerStatuses": [{
                "name": ETCD_CONTAINER, "image": image, "imageID": "", "ready": false,
                "restartCount": restarts, "state": {"running": {}}
            }]
        }});
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        let _ = pods
            .patch(pod, &PatchParams::default(), &Patch::Merge(&status))
            .await;
    }

    /// One sync of the node with the API server.
    async fn sync(&self) {
        enum Step {
            Start(Box<Pod>, i32),
            Restart(Box<Pod>, Running),
            Stop(Running),
            CannotPull(String, String),
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        let Ok(list) = pods.list(&ListParams::default()).await else {
            return;
        };
        let mut projected = Vec::new();
        for pod in &list.items {
            if self.project_secrets(pod).await {
                projected.push(pod.uid().unwrap());
            }
        }
        let mut steps = Vec::new();
        {
            let mut running = self.running.lock().unwrap();
            // Deleted Pods: their containers stop (SIGTERM, as within a grace period).
            let live: Vec<String> = list.items.iter().map(|p| p.uid().unwrap()).collect();
            let gone: Vec<String> = running
                .keys()
                .filter(|uid| !live.contains(uid))
                .cloned()
                .collect();
            for uid in gone {
                steps.push(Step::Stop(running.remove(&uid).unwrap()));
            }
            for pod in list
                .items
                .iter()
                .filter(|p| projected.contains(&p.uid().unwrap()))
            {
                let uid = pod.uid().unwrap();
                let image = pod.spec.as_ref().unwrap().containers[0].image.clone();
                // An image that cannot be pulled: the container (of the image before) stops,
                // none starts.
                if self.cannot_pull(image.as_ref()) {
                    if let Some(old) = running.remove(&uid) {
                        steps.push(Step::Stop(old));
                    }
                    steps.push(Step::CannotPull(pod.name_any(), image.unwrap_or_default()));
                    continue;
                }
                match running.get_mut(&uid) {
                    None => steps.push(Step::Start(Box::new(pod.clone()), 0)),
                    // An image change restarts the container, on the same volumes.
                    Some(r) if Some(&r.image) != image.as_ref() => {
                        steps.push(Step::Restart(
                            Box::new(pod.clone()),
                            running.remove(&uid).unwrap(),
                        ));
                    }
                    Some(r) => {
                        // restartPolicy: Always.
                        if matches!(r.child.try_wait(), Ok(Some(_))) {
                            let restarts = r.restarts + 1;
                            running.remove(&uid);
                            steps.push(Step::Start(Box::new(pod.clone()), restarts));
                        }
                    }
                }
            }
        }
        for step in steps {
            let (pod, restarts) = match step {
                Step::Stop(mut old) => {
                    terminate(&mut old.child).await;
                    continue;
                }
                Step::CannotPull(pod, image) => {
                    self.report_pull_failure(&pod, &image).await;
                    continue;
                }
                Step::Restart(pod, mut old) => {
                    terminate(&mut old.child).await;
                    (pod, old.restarts + 1)
                }
                Step::Start(pod, restarts) => (pod, restarts),
            };
            let started = self.start(&pod, restarts);
            let image = started.image.clone();
            self.running
                .lock()
                .unwrap()
                .insert(pod.uid().unwrap(), started);
            self.report(&pod.name_any(), &image, restarts).await;
        }
    }

    fn stop_all(&self) {
        for (_, mut r) in self.running.lock().unwrap().drain() {
            let _ = r.child.start_kill();
        }
    }

    fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return out;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {}\n{}\n",
                p.display(),
                all[all.len().saturating_sub(lines)..].join("\n")
            ));
        }
        out
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Stops a container as within a grace period: SIGTERM, SIGKILL after 30 s.
async fn terminate(child: &mut Child) {
    let exited = match child.id() {
        Some(pid) => testkit::terminate(pid, Duration::from_secs(30), || child.try_wait()).await,
        None => Ok(None),
    };
    if !matches!(exited, Ok(Some(_))) {
        let _ = child.kill().await;
    }
}

/// One coordinator of the test: its registry and where it serves the control port.
struct Coordinator {
    registry: Registry,
    control_addr: std::net::SocketAddr,
}

/// Stands in for the coordinator's Service as kube-proxy runs it: each new connection goes
/// to the coordinator that leads at that moment (the Service selects only the leader's
/// Pod); a connection, once open, stays with the coordinator it was opened to.
async fn route_to_the_leader(service: TcpListener, coordinators: Arc<Vec<Coordinator>>) {
    loop {
        let Ok((mut inbound, _)) = service.accept().await else {
            return;
        };
        let leader = coordinators
            .iter()
            .find(|c| c.registry.leadership().current().is_some())
            .map(|c| c.control_addr);
        let Some(addr) = leader else {
            // No endpoint: the connection is refused.
            drop(inbound);
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(addr).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Everything the test runs; stopped (processes killed) when dropped.
struct Harness {
    client: Client,
    kubelet: Arc<Kubelet>,
    coordinators: Arc<Vec<Coordinator>>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        self.kubelet.stop_all();
    }
}

impl Harness {
    async fn start(size: i32, version: &str) -> Self {
        Self::start_spec(EtcdClusterSpec {
            size,
            version: version.into(),
            ..Default::default()
        })
        .await
    }

    async fn start_spec(spec: EtcdClusterSpec) -> Self {
        Self::start_with(spec, 1).await
    }

    /// With `coordinators_n` coordinators against the same API server.
    async fn start_with(spec: EtcdClusterSpec, coordinators_n: usize) -> Self {
        Self::start_with_policy(spec, coordinators_n, Policy::default()).await
    }

    /// As [`Self::start_with`], the planner tuned by `policy`.
    async fn start_with_policy(
        spec: EtcdClusterSpec,
        coordinators_n: usize,
        policy: Policy,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = EtcdCluster::new(NAME, spec);
        cluster.metadata.namespace = Some(NS.into());
        let client = ClientBuilder::new()
            .with_resource::<EtcdCluster>()
            .with_status_subresource::<EtcdCluster>()
            .with_object(cluster)
            .build()
            .await
            .unwrap();
        let ca = Authority::generate("test control CA", now_secs()).unwrap();
        // The sidecars reach the coordinators through a stand-in for their Service: one
        // coordinator, or several of which only the one that leads is routed to.
        let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let coordinator_url = format!("https://{}", service.local_addr().unwrap());
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut coordinators = Vec::new();
        // Member addresses are the same whoever computes them (on a cluster: DNS names).
        let addressing = Arc::new(Loopback::default());
        for i in 0..coordinators_n {
            // One coordinator leads for as long as it runs; of several, none leads until
            // the test gives one a term.
            let registry = if coordinators_n == 1 {
                Registry::new()
            } else {
                Registry::with_leadership(Leadership::none(), 0)
            };
            let ca = Authority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
            let control = ControlPlane::new(
                ca,
                vec!["127.0.0.1".into()],
                etcd_operator::pki::DEFAULT_CERT_VALIDITY,
            );
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let control_addr = listener.local_addr().unwrap();
            let grpc = server::serve_control(
                listener,
                registry.clone(),
                control.control_server(),
                stop_rx.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let _ = grpc.await;
            }));
            let runtime = Arc::new(
                KubeRuntime::new(
                    client.clone(),
                    PodSettings {
                        operator_image: "etcd-operator:test".into(),
                        image_pull_policy: None,
                        coordinator_url: coordinator_url.clone(),
                        cluster_domain: "cluster.local".into(),
                    },
                    Arc::clone(&addressing) as Arc<dyn MemberAddressing>,
                    control,
                )
                .without_cluster_endpoints(),
            );
            let mut ctx = Context::for_tests_with(
                client.clone(),
                Arc::clone(&runtime),
                registry.clone(),
                &format!("test-{i}"),
            );
            ctx.policy = policy;
            let ctx = Arc::new(ctx);
            // kube-runtime's controller needs watches, which the in-memory API server
            // lacks: this loop stands in for it, reconciling on the same short timer, only
            // while this coordinator leads, and starting each term from the truth, as the
            // coordinator's leader loop does.
            let c = ctx.clone();
            let leadership = registry.leadership().clone();
            let reg = registry.clone();
            let rt = Arc::clone(&runtime);
            tasks.push(tokio::spawn(async move {
                let mut term = None;
                loop {
                    let now = leadership.current();
                    if now != term {
                        reg.begin_term(now.unwrap_or(0));
                        rt.forget_all();
                        term = now;
                    }
                    if term.is_some()
                        && let Ok(obj) = c.clusters(NS).get(NAME).await
                        && let Err(e) = reconcile(Arc::new(obj), c.clone()).await
                    {
                        eprintln!("reconcile: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }));
            coordinators.push(Coordinator {
                registry,
                control_addr,
            });
        }
        let coordinators = Arc::new(coordinators);
        tasks.push(tokio::spawn(route_to_the_leader(
            service,
            Arc::clone(&coordinators),
        )));
        let kubelet = Arc::new(Kubelet {
            client: client.clone(),
            root: dir.path().to_path_buf(),
            binaries: EtcdBinaries::from_env(),
            running: Mutex::new(HashMap::new()),
            unpullable: Mutex::default(),
            secret_lag: Mutex::new(Duration::ZERO),
            pending_updates: Mutex::default(),
        });
        let k = kubelet.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                k.sync().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
        Self {
            client,
            kubelet,
            coordinators,
            tasks,
            stop,
            _dir: dir,
        }
    }

    /// Gives coordinator `i` a new term (newer than any before) and ends every other's,
    /// as a change of the Lease's holder does.
    fn lead(&self, i: usize) -> u64 {
        let epoch = self
            .coordinators
            .iter()
            .filter_map(|c| c.registry.leadership().term().map(|t| t.epoch))
            .max()
            .unwrap_or(0)
            + 1;
        for (j, c) in self.coordinators.iter().enumerate() {
            if j != i {
                c.registry.leadership().end();
            }
        }
        self.coordinators[i].registry.leadership().hold(
            epoch,
            tokio::time::Instant::now() + Duration::from_secs(3600),
        );
        epoch
    }

    async fn cluster(&self) -> EtcdCluster {
        Api::<EtcdCluster>::namespaced(self.client.clone(), NS)
            .get(NAME)
            .await
            .unwrap()
    }

    async fn pods(&self) -> Vec<Pod> {
        let mut pods = Api::<Pod>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        pods.sort_by_key(|p| p.name_any());
        pods
    }

    async fn pod_names(&self) -> Vec<String> {
        self.pods().await.iter().map(|p| p.name_any()).collect()
    }

    async fn patch_spec(&self, spec: serde_json::Value) {
        Api::<EtcdCluster>::namespaced(self.client.clone(), NS)
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// Waits until the status shows `size` ready members at `version`, named `names`.
    async fn settled(&self, what: &str, names: &[&str], version: &str, within: Duration) {
        let want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let result = wait_for(what, within, || async {
            let status = self.cluster().await.status?;
            let members: Vec<String> = status.members.iter().map(|m| m.name.clone()).collect();
            (status.phase == "Running"
                && status.ready_members == names.len() as i32
                && members == want
                && status.current_version == version
                && status
                    .members
                    .iter()
                    .all(|m| m.healthy && m.version == version)
                && self.pod_names().await == want)
                .then_some(())
        })
        .await;
        if let Err(e) = result {
            panic!(
                "{e:#}\nstatus: {:#?}\npods: {:?}\n{}",
                self.cluster().await.status,
                self.pod_names().await,
                self.kubelet.logs(25)
            );
        }
    }

    /// Client URLs of the members, as the status reports them healthy.
    async fn endpoints(&self) -> Vec<String> {
        let ports = self.pods().await;
        ports
            .iter()
            .filter_map(|p| {
                p.spec.as_ref()?.containers[0]
                    .env
                    .iter()
                    .flatten()
                    .find(|e| e.name == "ETCDOP_CLIENT_URL")
                    .and_then(|e| e.value.clone())
            })
            .collect()
    }
}

/// A container env value of `pod`'s etcd container.
fn env_value(pod: &Pod, name: &str) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("{} has no {name}", pod.name_any()))
}

/// Runs `pod`'s liveness probe as the kubelet would: a gRPC health check of the probe's
/// service on the probe's port (here the health address the Pod's env names for it).
async fn liveness(pod: &Pod) -> Result<ServingStatus, String> {
    let container = &pod.spec.as_ref().unwrap().containers[0];
    let grpc = container
        .liveness_probe
        .as_ref()
        .and_then(|p| p.grpc.as_ref())
        .expect("a gRPC liveness probe");
    let health_port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("health"))
        .unwrap();
    assert_eq!(
        grpc.port, health_port.container_port,
        "the probe asks the health port"
    );
    let addr = env_value(pod, "ETCDOP_HEALTH_ADDR");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: grpc.service.clone().unwrap_or_default(),
        })
        .await
        .map(|r| r.into_inner().status())
        .map_err(|s| s.to_string())
}

/// `GET /metrics` on the URL etcd was told to serve its metrics on.
async fn metrics(pod: &Pod) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = env_value(pod, "ETCDOP_LISTEN_METRICS_URL");
    let addr = url.strip_prefix("http://").expect("plain http");
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{} metrics at {url}: {e}", pod.name_any()));
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    body
}

async fn etcd(endpoints: &[String]) -> etcd_client::Client {
    etcd_client::Client::connect(
        endpoints,
        Some(
            etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(3))
                .with_timeout(Duration::from_secs(10)),
        ),
    )
    .await
    .expect("connect to etcd")
}

async fn etcd_member_names(endpoints: &[String]) -> Vec<String> {
    let mut names: Vec<String> = etcd(endpoints)
        .await
        .member_list()
        .await
        .expect("member list")
        .members()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_runs_on_pods() {
    let _serial = serial_guard();
    let from = "3.6.15";
    let to = "3.7.2";
    let h = Harness::start(3, from).await;

    // Create: three Pods at once that bootstrap one cluster together, a Running cluster.
    let three = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
    ];
    h.settled("3 members running", &three, from, FORM).await;
    let pods = h.pods().await;
    assert!(
        pods.iter()
            .all(|p| p.annotations()["etcd.operator.rs/seed"] == "true"),
        "every initial member bootstrapped the cluster"
    );
    let endpoints = h.endpoints().await;
    assert_eq!(etcd_member_names(&endpoints).await, three);
    etcd(&endpoints)
        .await
        .put("foo", "bar", None)
        .await
        .unwrap();
    // Every member answers its liveness probe, and its etcd serves metrics on the port
    // the Pod names.
    for pod in &pods {
        assert_eq!(
            liveness(pod).await,
            Ok(ServingStatus::Serving),
            "{}",
            pod.name_any()
        );
        let text = metrics(pod).await;
        assert!(
            text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
            "{}: {}",
            pod.name_any(),
            text.lines().next().unwrap_or_default()
        );
        assert!(
            text.lines().any(|l| l == "etcd_server_has_leader 1"),
            "{}: no etcd_server_has_leader 1",
            pod.name_any()
        );
    }

    // Scale to 5 (what `kubectl scale --replicas=5` writes).
    h.patch_spec(json!({"size": 5})).await;
    let five = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
        "etcd-cluster-0003",
        "etcd-cluster-0004",
    ];
    h.settled("5 members running", &five, from, CHANGE).await;
    let grown = h.pods().await;
    for pod in &grown {
        let initial = three.contains(&pod.name_any().as_str());
        assert_eq!(
            pod.annotations()["etcd.operator.rs/seed"],
            initial.to_string(),
            "{}: only the initial members bootstrapped; later ones joined as learners",
            pod.name_any()
        );
    }
    let status = h.cluster().await.status.unwrap();
    assert_eq!(status.size, 5);
    assert_eq!(status.selector, "etcd.operator.rs/cluster=etcd-cluster");

    // Self-healing: delete a Pod; a new ordinal replaces it.
    Api::<Pod>::namespaced(h.client.clone(), NS)
        .delete("etcd-cluster-0004", &DeleteParams::default())
        .await
        .unwrap();
    let healed = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
        "etcd-cluster-0003",
        "etcd-cluster-0005",
    ];
    h.settled("0004 replaced by 0005", &healed, from, CHANGE)
        .await;
    let endpoints = h.endpoints().await;
    assert_eq!(etcd_member_names(&endpoints).await, healed);
    assert_eq!(
        h.cluster().await.annotations()["etcd.operator.rs/next-ordinal"],
        "6"
    );

    // Scale back to 3: the highest ordinals leave (each asked to leave etcd first), and
    // their Pods are deleted.
    h.patch_spec(json!({"size": 3})).await;
    h.settled("back to 3 members", &three, from, CHANGE).await;
    let endpoints = h.endpoints().await;
    assert_eq!(etcd_member_names(&endpoints).await, three);

    // Upgrade: each Pod's image is patched in place, one at a time.
    if EtcdBinaries::from_env()
        .resolve(to.parse().unwrap())
        .is_err()
    {
        eprintln!("skipping the upgrade: no etcd {to} binary (scripts/fetch-etcd.sh {to})");
        return;
    }
    let uids: BTreeMap<String, String> = h
        .pods()
        .await
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap()))
        .collect();
    h.patch_spec(json!({"version": to})).await;
    h.settled("every member on the new version", &three, to, CHANGE * 2)
        .await;
    for pod in h.pods().await {
        assert_eq!(
            pod.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some(format!("gcr.io/etcd-development/etcd:v{to}").as_str())
        );
        assert_eq!(pod.annotations()[ANNOTATION_ETCD_VERSION], to);
        assert_eq!(
            uids.get(&pod.name_any()),
            pod.uid().as_ref(),
            "upgraded in place: the same Pod, its data kept"
        );
    }
    let endpoints = h.endpoints().await;
    assert_eq!(etcd_member_names(&endpoints).await, three);
    let got = etcd(&endpoints).await.get("foo", None).await.unwrap();
    assert_eq!(
        got.kvs()[0].value(),
        b"bar",
        "the write survived everything"
    );
}

async fn etcd_member_ids(endpoints: &[String]) -> BTreeMap<String, u64> {
    etcd(endpoints)
        .await
        .member_list()
        .await
        .expect("member list")
        .members()
        .iter()
        .map(|m| (m.name().to_string(), m.id()))
        .collect()
}

/// A member whose Pod is deleted while its claim stays is a crash, not a deletion: its Pod
/// comes back under the same name on its claim, and etcd keeps the same member id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_with_its_claim_comes_back_with_the_same_member_id() {
    let _serial = serial_guard();
    let version = "3.6.15";
    let h = Harness::start_spec(EtcdClusterSpec {
        size: 3,
        version: version.into(),
        storage: Some(etcd_operator::resource::StorageSpec {
            size: "1Gi".into(),
            storage_class_name: None,
        }),
        ..Default::default()
    })
    .await;
    let three = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
    ];
    h.settled("3 members running on claims", &three, version, FORM)
        .await;
    let endpoints = h.endpoints().await;
    let ids = etcd_member_ids(&endpoints).await;
    etcd(&endpoints)
        .await
        .put("kept", "yes", None)
        .await
        .unwrap();
    let old_uid = h.pods().await[1].uid();
    Api::<Pod>::namespaced(h.client.clone(), NS)
        .delete("etcd-cluster-0001", &DeleteParams::default())
        .await
        .unwrap();
    let result = wait_for("0001 back in a new Pod", CHANGE, || async {
        let pods = h.pods().await;
        pods.iter()
            .any(|p| p.name_any() == "etcd-cluster-0001" && p.uid() != old_uid)
            .then_some(())
    })
    .await;
    if let Err(e) = result {
        panic!("{e:#}\n{}", h.kubelet.logs(25));
    }
    h.settled("0001 back on its claim", &three, version, CHANGE)
        .await;
    assert_eq!(
        etcd_member_ids(&endpoints).await,
        ids,
        "the same members under the same ids: no membership change"
    );
    let got = etcd(&endpoints).await.get("kept", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"yes");
}

/// An upgrade to an image that cannot be pulled: the first follower's Pod is moved to it
/// and waits in ImagePullBackOff (a failed start, its version unknown); past the upgrade's
/// deadline it is rolled back, its Pod's image and its claim's version both back to 3.5.34,
/// on its claim under the same member id; the upgrade stops with `UpgradeFailed` naming the
/// member and the pull failure, and no other Pod is touched. The spec set back converges;
/// the first write is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_an_image_that_cannot_be_pulled_is_rolled_back() {
    let _serial = serial_guard();
    let (old, new) = ("3.5.34", "3.6.15");
    let h = Harness::start_with_policy(
        EtcdClusterSpec {
            size: 3,
            version: old.into(),
            storage: Some(etcd_operator::resource::StorageSpec {
                size: "1Gi".into(),
                storage_class_name: None,
            }),
            ..Default::default()
        },
        1,
        Policy {
            dead_after_ms: 5_000,
            upgrade_deadline_ms: 20_000,
            ..Policy::default()
        },
    )
    .await;
    let three = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
    ];
    h.settled("3 members on 3.5.34", &three, old, FORM).await;
    let endpoints = h.endpoints().await;
    let ids = etcd_member_ids(&endpoints).await;
    etcd(&endpoints)
        .await
        .put("kept", "yes", None)
        .await
        .unwrap();
    let uids: Vec<Option<String>> = h.pods().await.iter().map(|p| p.uid()).collect();

    h.kubelet.unpullable.lock().unwrap().insert(new.into());
    h.patch_spec(json!({"version": new})).await;
    let unknown: Mutex<Option<String>> = Mutex::default();
    let (hr, seen) = (&h, &unknown);
    let result = wait_for(
        "the upgrade to stop with UpgradeFailed",
        CHANGE,
        || async move {
            let status = hr.cluster().await.status?;
            if let Some(m) = status.members.iter().find(|m| m.version == "unknown") {
                seen.lock().unwrap().get_or_insert(m.name.clone());
            }
            let failed = status
                .conditions
                .iter()
                .find(|c| c.type_ == "UpgradeFailed" && c.status == "True")?;
            (status.ready_members == 3 && status.members.iter().all(|m| m.version == old))
                .then(|| failed.message.clone())
        },
    )
    .await;
    let message = match result {
        Ok(m) => m,
        Err(e) => panic!(
            "{e:#}
status: {:#?}
{}",
            h.cluster().await.status,
            h.kubelet.logs(25)
        ),
    };
    let member = unknown
        .into_inner()
        .unwrap()
        .expect("the member in ImagePullBackOff shown at version unknown");
    assert!(
        message.contains(&member) && message.contains("ImagePullBackOff") && message.contains(new),
        "{message}"
    );
    // Rolled back on its claim: the Pod's image and the claim's version agree on 3.5.34;
    // the same Pods, the same member ids.
    for pod in h.pods().await {
        assert_eq!(
            pod.annotations()[ANNOTATION_ETCD_VERSION],
            old,
            "{}",
            pod.name_any()
        );
        let image = pod.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap();
        assert!(image.ends_with(&format!(":v{old}")), "{image}");
    }
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(h.client.clone(), NS);
    for claim in claims.list(&ListParams::default()).await.unwrap().items {
        assert_eq!(
            claim.annotations()[ANNOTATION_ETCD_VERSION],
            old,
            "{}",
            claim.name_any()
        );
    }
    assert_eq!(
        h.pods().await.iter().map(|p| p.uid()).collect::<Vec<_>>(),
        uids,
        "no Pod was deleted or replaced"
    );
    assert_eq!(
        etcd_member_ids(&endpoints).await,
        ids,
        "no membership change"
    );

    h.patch_spec(json!({"version": old})).await;
    h.settled("the spec set back", &three, old, CHANGE).await;
    let status = h.cluster().await.status.unwrap();
    assert!(
        !status.conditions.iter().any(|c| c.type_ == "UpgradeFailed"),
        "{status:?}"
    );
    let got = etcd(&endpoints).await.get("kept", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"yes");
}

/// Two of three Pods deleted without claims: a majority's data is gone and quorum cannot
/// come back by itself. Under Manual nothing is created or removed and the `QuorumLost`
/// condition says what to do; ForceNewCluster then rebuilds from the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_of_three_deleted_without_claims_wait_for_the_spec() {
    let _serial = serial_guard();
    let version = "3.6.15";
    let h = Harness::start(3, version).await;
    let three = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
    ];
    h.settled("3 members running", &three, version, FORM).await;
    let pods = Api::<Pod>::namespaced(h.client.clone(), NS);
    for gone in ["etcd-cluster-0001", "etcd-cluster-0002"] {
        pods.delete(gone, &DeleteParams::default()).await.unwrap();
    }
    let result = wait_for("the QuorumLost condition", CHANGE, || async {
        let status = h.cluster().await.status?;
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == "QuorumLost" && c.status == "True" && c.reason == "DataLost")?;
        c.message
            .contains("raft index")
            .then(|| (status.phase.clone(), c.message.clone()))
    })
    .await;
    let (phase, message) = match result {
        Ok(m) => m,
        Err(e) => panic!("{e:#}\n{:#?}", h.cluster().await.status),
    };
    assert_eq!(phase, "Failed");
    assert!(
        message.contains("etcd-cluster-0001, etcd-cluster-0002")
            && message.contains("set spec.recovery.quorumLoss: ForceNewCluster"),
        "{message}"
    );
    // Nothing is created while it waits.
    let window = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < window {
        assert_eq!(h.pod_names().await, ["etcd-cluster-0000"]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    h.patch_spec(json!({"recovery": {"quorumLoss": "ForceNewCluster"}}))
        .await;
    h.settled(
        "rebuilt from the survivor",
        &[
            "etcd-cluster-0000",
            "etcd-cluster-0003",
            "etcd-cluster-0004",
        ],
        version,
        CHANGE * 2,
    )
    .await;
    let status = h.cluster().await.status.unwrap();
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "QuorumLost")
        .expect("the condition stays");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ForcedNewCluster")
    );
    assert!(
        c.message
            .contains("forced from etcd-cluster-0000 at revision"),
        "{}",
        c.message
    );
}

/// Two coordinators against one API server, the sidecars reaching them through a Service
/// that routes new connections to the leader. After the Lease changes hands, every
/// sidecar's reports reach the new leader (the sidecars connect again when the old one
/// refuses them), the old one hears nothing more, and the new one changes the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_leader_change_every_sidecar_reports_to_the_new_leader() {
    let _serial = serial_guard();
    let version = "3.6.15";
    let h = Harness::start_with(
        EtcdClusterSpec {
            size: 3,
            version: version.into(),
            ..Default::default()
        },
        2,
    )
    .await;
    let key = ClusterKey::new(NS, NAME);
    let three = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
    ];
    let first = h.lead(0);
    h.settled("3 members under the first leader", &three, version, FORM)
        .await;
    let endpoints = h.endpoints().await;
    etcd(&endpoints)
        .await
        .put("before", "the change", None)
        .await
        .unwrap();
    assert!(
        h.coordinators[1].registry.keys().is_empty(),
        "the follower took reports"
    );

    let changed_at = etcd_coordinator::registry::now_ms();
    let second = h.lead(1);
    assert!(second > first);
    let reports_at = |i: usize| {
        h.coordinators[i]
            .registry
            .with_existing(&key, |entry, _| {
                three
                    .iter()
                    .filter(|m| {
                        entry
                            .reports
                            .get(**m)
                            .is_some_and(|r| r.received_at > changed_at)
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let result = wait_for(
        "every sidecar reporting to the new leader",
        Duration::from_secs(30),
        || async { (reports_at(1) == three.len()).then_some(()) },
    )
    .await;
    if let Err(e) = result {
        panic!(
            "{e:#}: {} of {} report to the new leader\n{}",
            reports_at(1),
            three.len(),
            h.kubelet.logs(25)
        );
    }
    eprintln!(
        "every sidecar reports to the new leader {} ms after the change",
        etcd_coordinator::registry::now_ms() - changed_at
    );
    assert_eq!(
        reports_at(0),
        0,
        "the deposed coordinator still takes reports"
    );

    // The new leader acts: a fourth member joins under its grant.
    let four = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
        "etcd-cluster-0003",
    ];
    h.patch_spec(json!({ "size": 4 })).await;
    h.settled("4 members under the new leader", &four, version, CHANGE)
        .await;
    assert_eq!(reports_at(0), 0);
    assert!(h.coordinators[0].registry.keys().is_empty());
    let got = etcd(&endpoints).await.get("before", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"the change");
}

/// The etcd CA rotates on Pods under a TLS writer, asked for by the `rotate-ca` annotation,
/// with Secret updates reaching the Pods' files 3 s late (as a kubelet's sync): members
/// trust both CAs (each restarted in place on its data, never before its files hold both),
/// then every leaf moves to the new CA, then the old CA is dropped (each restarted again).
/// No write fails, every acknowledged write is there, the members are the same etcd members,
/// every member serves a leaf of the new CA and trusts it alone, and the annotation is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_ca_rotates_on_pods_under_writes_with_no_failed_write() {
    use etcd_coordinator::k8s::{ANNOTATION_RECORD, ANNOTATION_ROTATE_CA};
    use etcd_operator::pki::issued_by;
    use testkit::traffic::{Writer, verify_acked_tls};

    let _serial = serial_guard();
    let version = "3.6.15";
    let h = Harness::start_spec(EtcdClusterSpec {
        size: 3,
        version: version.into(),
        tls: Some(etcd_operator::resource::TlsSpec { enabled: true }),
        ..Default::default()
    })
    .await;
    let three = [
        "etcd-cluster-0000",
        "etcd-cluster-0001",
        "etcd-cluster-0002",
    ];
    h.settled("3 TLS members running", &three, version, FORM)
        .await;
    *h.kubelet.secret_lag.lock().unwrap() = Duration::from_secs(3);
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), NS);
    let files = |s: Secret| -> BTreeMap<String, String> {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect()
    };
    let ca_secret = "etcd-cluster-etcd-ca";
    let old_ca = files(secrets.get(ca_secret).await.unwrap())["ca.crt"].clone();

    // An application reading the client Secret again as it changes.
    let app = h._dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let project_app = {
        let (secrets, app) = (secrets.clone(), app.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(s) = secrets.get("etcd-cluster-client-tls").await {
                    for (file, data) in s.data.unwrap_or_default() {
                        let tmp = app.join(format!(".{file}.tmp"));
                        std::fs::write(&tmp, &data.0).unwrap();
                        std::fs::rename(&tmp, app.join(&file)).unwrap();
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    wait_for("the client bundle", Duration::from_secs(10), || async {
        app.join("tls.key").exists().then_some(())
    })
    .await
    .unwrap();
    let endpoints = h.endpoints().await;
    assert!(endpoints.iter().all(|e| e.starts_with("https://")));
    let ids = {
        let tls = testkit::clients::tls_options(&app).unwrap();
        let c = etcd_client::Client::connect(
            &endpoints,
            Some(etcd_client::ConnectOptions::new().with_tls(tls)),
        )
        .await
        .unwrap();
        let mut c = c;
        let mut ids: Vec<u64> = c
            .member_list()
            .await
            .unwrap()
            .members()
            .iter()
            .map(|m| m.id())
            .collect();
        ids.sort();
        ids
    };
    let writer = {
        let (endpoints, app) = (endpoints.clone(), app.clone());
        Writer::start_tls_reloading(
            move || endpoints.clone(),
            move || testkit::clients::tls_options(&app).ok(),
        )
    };
    writer
        .wait_acked(25, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", h.kubelet.logs(25)));

    Api::<EtcdCluster>::namespaced(h.client.clone(), NS)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {ANNOTATION_ROTATE_CA: "now"}}})),
        )
        .await
        .unwrap();
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let (rotating, both_trusted) = (AtomicBool::new(false), AtomicBool::new(false));
    let over = wait_for(
        "the etcd CA rotated: a new CA in its Secret, no rotation recorded, no CARotating",
        Duration::from_secs(420),
        || {
            let h = &h;
            let secrets = secrets.clone();
            let (rotating, both_trusted) = (&rotating, &both_trusted);
            let old_ca = old_ca.clone();
            async move {
                let cluster = h.cluster().await;
                let reason = cluster
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "CertificatesValid"))
                    .map(|c| c.reason.clone())
                    .unwrap_or_default();
                if reason == "CARotating" {
                    rotating.store(true, SeqCst);
                }
                let member = secrets.get("etcd-cluster-0001-tls").await.ok()?;
                let trusted = member
                    .data
                    .as_ref()
                    .and_then(|d| d.get("etcd-ca.crt"))
                    .map(|v| {
                        String::from_utf8_lossy(&v.0)
                            .matches("BEGIN CERTIFICATE")
                            .count()
                    })
                    .unwrap_or(0);
                if trusted == 2 {
                    both_trusted.store(true, SeqCst);
                }
                let ca = secrets.get(ca_secret).await.ok()?.data?;
                let recorded = cluster
                    .annotations()
                    .get(ANNOTATION_RECORD)
                    .is_some_and(|r| r.contains("caRotation"));
                (rotating.load(SeqCst)
                    && !recorded
                    && !ca.contains_key("rotation")
                    && String::from_utf8_lossy(&ca["ca.crt"].0) != old_ca
                    && reason != "CARotating")
                    .then_some(())
            }
        },
    )
    .await;
    if let Err(e) = over {
        panic!(
            "{e:#}\nstatus: {:#?}\n{}",
            h.cluster().await.status,
            h.kubelet.logs(30)
        );
    }
    assert!(
        both_trusted.load(SeqCst),
        "members trusted the old and the new CA together"
    );
    assert!(
        !h.cluster()
            .await
            .annotations()
            .contains_key(ANNOTATION_ROTATE_CA),
        "the annotation is removed"
    );
    h.settled(
        "3 members running after the rotation",
        &three,
        version,
        FORM,
    )
    .await;
    writer
        .wait_acked(25, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", h.kubelet.logs(25)));
    let log = writer.stop().await;
    project_app.abort();

    let ca = files(secrets.get(ca_secret).await.unwrap());
    let new_ca = Authority::from_pem(&ca["ca.crt"], &ca["ca.key"]).unwrap();
    for member in three {
        let f = files(secrets.get(&format!("{member}-tls")).await.unwrap());
        assert_eq!(
            f["etcd-ca.crt"].trim(),
            ca["ca.crt"].trim(),
            "{member} trusts the new CA alone"
        );
        for leaf in ["etcd-server.crt", "etcd-peer.crt", "etcd-client.crt"] {
            assert!(
                issued_by(&f[leaf], &new_ca),
                "{member}'s {leaf} is the new CA's"
            );
        }
    }
    let tls = testkit::clients::tls_options(&app).unwrap();
    let mut c = etcd_client::Client::connect(
        &endpoints,
        Some(etcd_client::ConnectOptions::new().with_tls(tls.clone())),
    )
    .await
    .unwrap();
    let mut after: Vec<u64> = c
        .member_list()
        .await
        .unwrap()
        .members()
        .iter()
        .map(|m| m.id())
        .collect();
    after.sort();
    assert_eq!(after, ids, "the same etcd members");
    let held = verify_acked_tls(&endpoints, &log.acked, Some(&tls))
        .await
        .unwrap();
    eprintln!(
        "CA rotation on Pods: {} writes acknowledged ({held} held), {} failed, longest gap {:?}",
        log.acked.len(),
        log.failures.len(),
        log.longest_gap
    );
    assert!(
        log.failures.is_empty(),
        "writes failed while the CA rotated: {:?}",
        log.failures
    );
}
