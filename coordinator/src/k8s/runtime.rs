//! Members as Pods: the [`Runtime`] the controller acts through on Kubernetes.
//!
//! A member is a Pod named after it, built by [`super::build::member_pod`] and owned by the
//! `EtcdCluster`. The next ordinal is an annotation on the `EtcdCluster`, written before a
//! Pod is created, so an ordinal is never used twice, whatever fails when. With
//! `spec.storage`, each member also has a claim; a member whose Pod is gone but whose
//! claim stays (a drained node) gets its Pod back on the same data, as a restarted process
//! does in local mode.
//!
//! Certificates: each member Pod has a Secret `<member>-tls` (owned by the Pod) with its
//! control-path certificate and, with `spec.tls`, etcd's; the cluster's etcd CA and the
//! applications' client certificate are Secrets owned by the `EtcdCluster`. Renewal updates
//! the Secrets in place ([`Runtime::renew_certificates`]). The etcd CA rotates with an
//! overlap: its Secret keeps the new CA and the phase (`ca_keys`), and each renewal writes
//! the phase's trust bundle and issuer into the members' and the client Secrets.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use etcd_operator::{
    ClusterKey, EtcdVersion,
    grant::UnixMillis,
    naming::member_ordinal,
    pki::{
        Authority, CA_VALIDITY, ClientFile, MemberCertSpec, MemberFile, client_files_trusting,
        etcd_files_digest, issued_by, member_files_trusting, member_hosts, trust_bundle,
    },
    resource::EtcdCluster,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::{
    Client, ResourceExt,
    api::{
        Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    },
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    ANNOTATION_ETCD_VERSION, ANNOTATION_NEXT_ORDINAL, ANNOTATION_SEED, ANNOTATION_TLS, CLIENT_PORT,
    MemberAddressing, MemberEndpoints,
    build::{self, MemberPodInput, PodSettings},
    claim_name, client_secret_name, etcd_ca_secret_name, member_secret_name,
    status::{PodLiveness, pod_liveness, pod_restarts},
};
use crate::{
    plan::CaPhase,
    registry::now_ms,
    runtime::{MemberData, MemberInfo, RestartHistory, Runtime, RuntimeError},
    security::{ControlPlane, now_secs},
};

/// How often a Pod update is retried on a conflict (the kubelet writes its status).
const CONFLICT_RETRIES: usize = 5;

/// What a member's Pod (or claim) says about it.
struct PodFacts {
    ordinal: u32,
    liveness: PodLiveness,
    version: EtcdVersion,
    seed: bool,
    tls: bool,
    /// The Pod is gone and its claim stays: the planner asks for the Pod again.
    claim_only: bool,
    /// A Pod being deleted: when its grace period ends (its `deletionTimestamp`).
    terminating_until: Option<UnixMillis>,
    restarts: RestartHistory,
}

#[derive(Default)]
struct Tracked {
    cluster: Option<Arc<EtcdCluster>>,
    /// The next ordinal as last written or read (at least the annotation's value).
    next_ordinal: u32,
    /// One past the highest ordinal of any Pod or claim seen.
    past_seen: u32,
    /// Since when each member has been down (coordinator clock).
    down_since: HashMap<String, UnixMillis>,
    /// Since when each member's Pod has been seen Terminating (coordinator clock).
    terminating_since: HashMap<String, UnixMillis>,
    /// The cluster's etcd CA as its Secret holds it, once read, created or written.
    etcd_ca: Option<Arc<EtcdCaView>>,
    /// When every certificate of the cluster was last checked.
    certificates_checked: Option<tokio::time::Instant>,
}

/// Keys of the etcd CA Secret ([`super::etcd_ca_secret_name`]). Outside a rotation it
/// holds the cluster's CA (`ca.crt`, `ca.key`) and what members trust (`trust.crt`, the same
/// certificate). During one it is the durable record of the new CA: `next.crt`/`next.key`,
/// made once and written (with the `resourceVersion` read) before any phase uses it, and
/// `rotation`, the phase; `trust.crt` holds both CAs in Trust and Reissue and the new one
/// alone in Drop. The issuer is `ca.*` in Trust and `next.*` after. The end is one write:
/// the new CA becomes `ca.*` and the rotation keys go.
mod ca_keys {
    pub const CERT: &str = "ca.crt";
    pub const KEY: &str = "ca.key";
    pub const NEXT_CERT: &str = "next.crt";
    pub const NEXT_KEY: &str = "next.key";
    pub const ROTATION: &str = "rotation";
    pub const TRUST: &str = "trust.crt";
}

/// A cluster's etcd CA as its Secret holds it.
struct EtcdCaView {
    /// The CA that issues leaves.
    issuer: Arc<Authority>,
    /// What members and applications trust (PEM, one or two CAs).
    trust: String,
    /// The rotation's phase, during one.
    phase: Option<CaPhase>,
}

impl EtcdCaView {
    /// The view of the Secret's `files`; an error when they are not a CA (or a rotation).
    fn of(name: &str, files: &BTreeMap<String, String>) -> Result<Self, RuntimeError> {
        let authority = |cert: &str, key: &str| -> Result<Arc<Authority>, RuntimeError> {
            let (Some(cert_pem), Some(key_pem)) = (files.get(cert), files.get(key)) else {
                return Err(RuntimeError::Invalid(format!(
                    "Secret {name} lacks {cert} or {key}"
                )));
            };
            Authority::from_pem(cert_pem, key_pem)
                .map(Arc::new)
                .map_err(|e| RuntimeError::Certificates(format!("Secret {name}: {e}")))
        };
        let base = authority(ca_keys::CERT, ca_keys::KEY)?;
        let Some(word) = files.get(ca_keys::ROTATION) else {
            return Ok(Self {
                trust: trust_bundle([base.cert_pem()]),
                issuer: base,
                phase: None,
            });
        };
        let phase = CaPhase::parse(word.trim()).ok_or_else(|| {
            RuntimeError::Invalid(format!(
                "Secret {name}: {} is {word:?}, not a phase of a rotation",
                ca_keys::ROTATION
            ))
        })?;
        let next = authority(ca_keys::NEXT_CERT, ca_keys::NEXT_KEY)?;
        Ok(match phase {
            CaPhase::Trust => Self {
                trust: trust_bundle([base.cert_pem(), next.cert_pem()]),
                issuer: base,
                phase: Some(phase),
            },
            CaPhase::Reissue => Self {
                trust: trust_bundle([base.cert_pem(), next.cert_pem()]),
                issuer: next,
                phase: Some(phase),
            },
            CaPhase::Drop => Self {
                trust: trust_bundle([next.cert_pem()]),
                issuer: next,
                phase: Some(phase),
            },
        })
    }

    /// The old CA is still trusted beside the new one (Trust and Reissue).
    fn overlaps(&self) -> bool {
        matches!(self.phase, Some(CaPhase::Trust | CaPhase::Reissue))
    }
}

/// The CA Secret's `files` with `trust.crt` set as the phase in their `rotation` says.
fn with_trust(mut files: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let cas: Vec<String> = match files.get(ca_keys::ROTATION).and_then(|w| CaPhase::parse(w)) {
        None => files.get(ca_keys::CERT).cloned().into_iter().collect(),
        Some(CaPhase::Drop) => files.get(ca_keys::NEXT_CERT).cloned().into_iter().collect(),
        Some(_) => [ca_keys::CERT, ca_keys::NEXT_CERT]
            .iter()
            .filter_map(|k| files.get(*k).cloned())
            .collect(),
    };
    files.insert(
        ca_keys::TRUST.to_string(),
        trust_bundle(cas.iter().map(String::as_str)),
    );
    files
}

/// The Kubernetes runtime.
pub struct KubeRuntime {
    client: Client,
    settings: PodSettings,
    addressing: Arc<dyn MemberAddressing>,
    /// Whether member Pods get `ETCDOP_CLUSTER_ENDPOINTS` (the client Service's URL).
    cluster_endpoints: bool,
    tracked: Mutex<HashMap<ClusterKey, Tracked>>,
    control: Arc<ControlPlane>,
    /// The term each write is bounded by (`None`: unbounded, a runtime of tests).
    leadership: Option<crate::leadership::Leadership>,
    /// How long a new etcd CA (of a rotation) is valid.
    ca_validity: std::time::Duration,
    /// Held by a phase change of an etcd CA rotation and by a renewal of the certificates
    /// from it, so that a renewal never writes a phase's issuer or trust over the next's.
    ca_writes: tokio::sync::Mutex<()>,
}

fn other(context: &str) -> impl FnOnce(kube::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::api(context, e)
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn annotation_true(annotations: &BTreeMap<String, String>, key: &str) -> bool {
    annotations.get(key).is_some_and(|v| v == "true")
}

/// The annotation's next ordinal, 0 when absent or unreadable.
pub fn annotated_next_ordinal(cluster: &EtcdCluster) -> u32 {
    cluster
        .annotations()
        .get(ANNOTATION_NEXT_ORDINAL)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The etcd version of a member's Pod (or claim): its annotation, else its image tag.
pub fn object_version(
    annotations: &BTreeMap<String, String>,
    image: Option<&str>,
) -> Option<EtcdVersion> {
    annotations
        .get(ANNOTATION_ETCD_VERSION)
        .and_then(|v| v.parse().ok())
        .or_else(|| image?.rsplit_once(':')?.1.parse().ok())
}

fn pod_image(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == super::ETCD_CONTAINER)?
        .image
        .as_deref()
}

fn owned_by(
    meta_owners: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
    uid: Option<&str>,
) -> bool {
    match uid {
        // An object of an earlier cluster of the same name (awaiting garbage collection)
        // is not a member of this one.
        Some(uid) => meta_owners.is_some_and(|o| o.iter().any(|r| r.uid == uid)),
        None => true,
    }
}

impl KubeRuntime {
    /// A runtime creating member Pods with `settings`, addressed by `addressing`.
    pub fn new(
        client: Client,
        settings: PodSettings,
        addressing: Arc<dyn MemberAddressing>,
        control: Arc<ControlPlane>,
    ) -> Self {
        Self {
            client,
            settings,
            addressing,
            cluster_endpoints: true,
            tracked: Mutex::new(HashMap::new()),
            control,
            leadership: None,
            ca_validity: CA_VALIDITY,
            ca_writes: tokio::sync::Mutex::new(()),
        }
    }

    /// New etcd CAs of rotations are valid `validity`.
    pub fn with_ca_validity(mut self, validity: std::time::Duration) -> Self {
        self.ca_validity = validity;
        self
    }

    /// Every write bounded by the terms of `leadership` ([`Self::write`]).
    pub fn bounded_by(mut self, leadership: crate::leadership::Leadership) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// One API write, sent only while the term holds and given up at the term's deadline:
    /// an action of several writes checks the term before each (not only once before the
    /// first), and none runs on past the term (one already on the wire at the deadline is
    /// what the Lease's margin between a term's end and a takeover is for).
    async fn write<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, RuntimeError> {
        let Some(leadership) = &self.leadership else {
            return Ok(call.await);
        };
        let ended = || RuntimeError::TermEnded(what.to_string());
        let term = leadership
            .term()
            .filter(|t| t.holds_at(tokio::time::Instant::now()))
            .ok_or_else(ended)?;
        match term.until {
            None => Ok(call.await),
            Some(until) => tokio::time::timeout_at(until, call)
                .await
                .map_err(|_| ended()),
        }
    }

    fn endpoints(&self, key: &ClusterKey, name: &str, etcd_tls: bool) -> MemberEndpoints {
        self.addressing.endpoints(key, name).with_schemes(etcd_tls)
    }

    fn secrets(&self, key: &ClusterKey) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &key.namespace)
    }

    /// The cluster's issuing etcd CA: from memory, its Secret, or (with `create`) a new one.
    async fn etcd_ca(
        &self,
        key: &ClusterKey,
        create: bool,
    ) -> Result<Option<Arc<Authority>>, RuntimeError> {
        Ok(self
            .etcd_view(key, create)
            .await?
            .map(|v| Arc::clone(&v.issuer)))
    }

    /// Remembers what the etcd CA Secret of `key` holds, as read or written.
    fn remember_view(&self, key: &ClusterKey, view: Arc<EtcdCaView>) {
        if let Some(t) = self.lock().get_mut(key) {
            t.etcd_ca = Some(view);
        }
    }

    /// The cluster's etcd CA and what members trust: from memory, its Secret, or (with
    /// `create`) a new CA.
    async fn etcd_view(
        &self,
        key: &ClusterKey,
        create: bool,
    ) -> Result<Option<Arc<EtcdCaView>>, RuntimeError> {
        if let Some(view) = self.lock().get(key).and_then(|t| t.etcd_ca.clone()) {
            return Ok(Some(view));
        }
        let name = etcd_ca_secret_name(&key.name);
        let secrets = self.secrets(key);
        let existing = match secrets.get(&name).await {
            Ok(s) => Some(s),
            Err(e) if is_status(&e, 404) => None,
            Err(e) => return Err(other("reading the etcd CA")(e)),
        };
        // Gone while members run with certificates it issued: lost, never replaced by a new
        // CA (whose certificates the running members would refuse).
        if existing.is_none() {
            let (_, pods) = self.member_pods(key).await?;
            let uid = self.cluster(key)?.metadata.uid.clone();
            let in_use: Vec<String> = pods
                .items
                .iter()
                .filter(|p| {
                    owned_by(p.metadata.owner_references.as_ref(), uid.as_deref())
                        && annotation_true(p.annotations(), ANNOTATION_TLS)
                })
                .map(|p| p.name_any())
                .collect();
            if !in_use.is_empty() {
                return Err(RuntimeError::Certificates(format!(
                    "the etcd CA of {key} is lost (Secret {name} is gone) while {} run with certificates it issued: a new CA would make them refuse each other, so none is made. Put the Secret {name} back (from a backup of it); if it cannot be had, the members run on their certificates until they expire: create a new cluster from a backup of the data (spec.restore)",
                    in_use.join(", ")
                )));
            }
        }
        let secret = match existing {
            Some(s) => s,
            None if !create => return Ok(None),
            None => {
                let cluster = self.cluster(key)?;
                let ca =
                    Authority::generate(&format!("etcd-operator etcd CA of {key}"), now_secs())
                        .map_err(|e| RuntimeError::Certificates(e.to_string()))?;
                let mut secret = build::etcd_ca_secret(&cluster, ca.cert_pem(), ca.key_pem())
                    .map_err(|e| RuntimeError::Other(e.to_string()))?;
                secret.data = Some(build::secret_data(&with_trust(build::secret_files(
                    &secret,
                ))));
                match self
                    .write(
                        "creating the etcd CA",
                        secrets.create(&PostParams::default(), &secret),
                    )
                    .await?
                {
                    Ok(s) => s,
                    // Another coordinator (or an earlier try) made it: use that one.
                    Err(e) if is_status(&e, 409) => secrets
                        .get(&name)
                        .await
                        .map_err(other("reading the etcd CA"))?,
                    Err(e) => return Err(other("creating the etcd CA")(e)),
                }
            }
        };
        self.own_ca_secret(key, &secret)?;
        let view = Arc::new(EtcdCaView::of(&name, &build::secret_files(&secret))?);
        self.remember_view(key, Arc::clone(&view));
        Ok(Some(view))
    }

    /// Positive proof that `secret` (the etcd CA Secret by name) is this cluster's: owned by
    /// its `EtcdCluster`'s UID. One of an earlier cluster of the same name (awaiting garbage
    /// collection, or orphaned) is neither used nor changed.
    fn own_ca_secret(&self, key: &ClusterKey, secret: &Secret) -> Result<(), RuntimeError> {
        let uid = self.cluster(key)?.metadata.uid.clone();
        if owned_by(secret.metadata.owner_references.as_ref(), uid.as_deref()) {
            return Ok(());
        }
        Err(RuntimeError::Certificates(format!(
            "the Secret {} is not owned by the EtcdCluster {key} (uid {}): it is an earlier cluster's of the same name, so its CA is neither used nor changed; delete it once that cluster is gone for good",
            secret.name_any(),
            uid.unwrap_or_default()
        )))
    }

    /// One attempt of [`Runtime::set_etcd_ca_rotation`]: `Ok(None)` when the Secret changed
    /// since it was read (try again from a new read).
    async fn try_set_rotation(
        &self,
        key: &ClusterKey,
        phase: Option<CaPhase>,
    ) -> Result<Option<Option<CaPhase>>, RuntimeError> {
        let name = etcd_ca_secret_name(&key.name);
        let secrets = self.secrets(key);
        // Read from the API server each time, never from memory: the Secret is the record
        // of the new CA, and a new one is made only when it holds none.
        let secret = match secrets.get(&name).await {
            Ok(s) => s,
            Err(e) if is_status(&e, 404) => {
                return Err(RuntimeError::Certificates(format!(
                    "the etcd CA of {key} cannot be rotated: its Secret {name} is gone"
                )));
            }
            Err(e) => return Err(other("reading the etcd CA")(e)),
        };
        self.own_ca_secret(key, &secret)?;
        let mut files = build::secret_files(&secret);
        let current = EtcdCaView::of(&name, &files)?;
        let wanted = match (current.phase, phase) {
            (None, None) => {
                self.remember_view(key, Arc::new(current));
                return Ok(Some(None));
            }
            // The end, only from Drop (members trust the new CA alone, every leaf is its):
            // the new CA becomes the cluster's, in one write. From an earlier phase the
            // old CA is still trusted and still issues: a record that says otherwise is
            // refused, nothing is written.
            (Some(now), None) if now != CaPhase::Drop => {
                return Err(RuntimeError::Invalid(format!(
                    "Secret {name} is at phase {} of its rotation, not {}: the rotation cannot end there, the old CA is kept",
                    now.as_str(),
                    CaPhase::Drop.as_str()
                )));
            }
            (Some(_), None) => {
                let (Some(cert), Some(key_pem)) = (
                    files.remove(ca_keys::NEXT_CERT),
                    files.remove(ca_keys::NEXT_KEY),
                ) else {
                    return Err(RuntimeError::Invalid(format!(
                        "Secret {name} lacks the new CA"
                    )));
                };
                files.remove(ca_keys::ROTATION);
                files.insert(ca_keys::CERT.into(), cert);
                files.insert(ca_keys::KEY.into(), key_pem);
                None
            }
            // The new CA, made once: only when the Secret holds none.
            (None, Some(_)) => {
                let next = Authority::generate_valid_for(
                    &format!("etcd-operator etcd CA of {key}"),
                    now_secs(),
                    self.ca_validity,
                )
                .map_err(|e| RuntimeError::Certificates(e.to_string()))?;
                files.insert(ca_keys::NEXT_CERT.into(), next.cert_pem().to_string());
                files.insert(ca_keys::NEXT_KEY.into(), next.key_pem().to_string());
                files.insert(ca_keys::ROTATION.into(), CaPhase::Trust.as_str().into());
                Some(CaPhase::Trust)
            }
            // Never a phase back.
            (Some(now), Some(asked)) if asked <= now => {
                self.remember_view(key, Arc::new(current));
                return Ok(Some(Some(now)));
            }
            (Some(_), Some(asked)) => {
                files.insert(ca_keys::ROTATION.into(), asked.as_str().into());
                Some(asked)
            }
        };
        let files = with_trust(files);
        let view = EtcdCaView::of(&name, &files)?;
        let mut updated = secret.clone();
        updated.data = Some(build::secret_data(&files));
        // With the resourceVersion read: a Secret changed meanwhile (another coordinator, an
        // earlier try whose answer was lost) is read again, never written over.
        match self
            .write(
                "writing the etcd CA rotation",
                secrets.replace(&name, &PostParams::default(), &updated),
            )
            .await?
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => return Ok(None),
            Err(e) => return Err(other("writing the etcd CA rotation")(e)),
        }
        info!(cluster = %key, phase = wanted.map(CaPhase::as_str).unwrap_or("ended"), "etcd CA rotation written to its Secret");
        self.remember_view(key, Arc::new(view));
        Ok(Some(wanted))
    }

    /// Issues or renews the Secret of the member whose Pod is `pod`; returns true when it
    /// changed.
    async fn ensure_member_secret(
        &self,
        key: &ClusterKey,
        cluster: &EtcdCluster,
        pod: &Pod,
    ) -> Result<bool, RuntimeError> {
        let name = pod.name_any();
        let Some(uid) = pod.uid() else {
            return Ok(false);
        };
        let tls = annotation_true(pod.annotations(), ANNOTATION_TLS);
        let etcd = self.etcd_view(key, tls).await?;
        let endpoints = self.endpoints(key, &name, tls);
        let urls = [
            endpoints.client_url.as_str(),
            endpoints.peer_url.as_str(),
            endpoints.sidecar_url.as_str(),
        ];
        let spec = MemberCertSpec {
            cluster: key.clone(),
            member: name.clone(),
            hosts: member_hosts(&urls, Some(&self.settings.cluster_domain)),
            etcd_tls: tls,
            validity: self.control.member_validity(),
        };
        let secret_name = member_secret_name(&name);
        let secrets = self.secrets(key);
        let existing = match secrets.get(&secret_name).await {
            Ok(s) => Some(s),
            Err(e) if is_status(&e, 404) => None,
            Err(e) => return Err(other("reading the member's Secret")(e)),
        };
        // A Secret of an earlier Pod of the same name is not this Pod's.
        let existing =
            existing.filter(|s| owned_by(s.metadata.owner_references.as_ref(), Some(&uid)));
        let old = existing
            .as_ref()
            .map(build::secret_files)
            .unwrap_or_default();
        let (files, changed) = member_files_trusting(
            self.control.ca(),
            etcd.as_ref().map(|v| &*v.issuer),
            etcd.as_ref().map(|v| v.trust.as_str()),
            &spec,
            &old,
            now_secs(),
        )
        .map_err(|e| RuntimeError::Certificates(format!("{name}: {e}")))?;
        if !changed && existing.is_some() {
            return Ok(false);
        }
        let secret = build::member_secret(cluster, &name, &uid, &files)
            .map_err(|e| RuntimeError::Other(e.to_string()))?;
        match existing {
            Some(_) => {
                let patch = json!({"data": build::secret_data(&files)});
                self.write(
                    "renewing the member's Secret",
                    secrets.patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await?
                .map_err(other("renewing the member's Secret"))?;
            }
            None => match self
                .write(
                    "creating the member's Secret",
                    secrets.create(&PostParams::default(), &secret),
                )
                .await?
            {
                Ok(_) => {}
                // The Secret of an earlier Pod of this name, not yet collected: replace it.
                Err(e) if is_status(&e, 409) => {
                    let mut current = secrets
                        .get(&secret_name)
                        .await
                        .map_err(other("reading the member's Secret"))?;
                    current.metadata.owner_references = secret.metadata.owner_references.clone();
                    current.data = secret.data.clone();
                    self.write(
                        "replacing the member's Secret",
                        secrets.replace(&secret_name, &PostParams::default(), &current),
                    )
                    .await?
                    .map_err(other("replacing the member's Secret"))?;
                }
                Err(e) => return Err(other("creating the member's Secret")(e)),
            },
        }
        Ok(true)
    }

    /// Issues or renews the applications' client Secret; returns true when it changed.
    async fn ensure_client_secret(
        &self,
        key: &ClusterKey,
        cluster: &EtcdCluster,
    ) -> Result<bool, RuntimeError> {
        let Some(etcd) = self.etcd_view(key, true).await? else {
            return Ok(false);
        };
        let name = client_secret_name(&key.name);
        let secrets = self.secrets(key);
        let existing = match secrets.get(&name).await {
            Ok(s) => Some(s),
            Err(e) if is_status(&e, 404) => None,
            Err(e) => return Err(other("reading the client Secret")(e)),
        };
        let old = existing
            .as_ref()
            .map(build::secret_files)
            .unwrap_or_default();
        let (files, changed) = client_files_trusting(
            &etcd.issuer,
            Some(&etcd.trust),
            key,
            etcd_operator::pki::DEFAULT_CLIENT_CERT_VALIDITY,
            &old,
            now_secs(),
        )
        .map_err(|e| RuntimeError::Certificates(e.to_string()))?;
        if !changed {
            return Ok(false);
        }
        match existing {
            Some(_) => {
                let patch = json!({"data": build::secret_data(&files)});
                self.write(
                    "renewing the client Secret",
                    secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await?
                .map_err(other("renewing the client Secret"))?;
            }
            None => {
                let secret = build::client_secret(cluster, &files)
                    .map_err(|e| RuntimeError::Other(e.to_string()))?;
                match self
                    .write(
                        "creating the client Secret",
                        secrets.create(&PostParams::default(), &secret),
                    )
                    .await?
                {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 409) => {}
                    Err(e) => return Err(other("creating the client Secret")(e)),
                }
            }
        }
        Ok(true)
    }

    /// Leaves `ETCDOP_CLUSTER_ENDPOINTS` out of member Pods (when the client Service's DNS
    /// name does not resolve, as in a test that plays kubelet).
    pub fn without_cluster_endpoints(mut self) -> Self {
        self.cluster_endpoints = false;
        self
    }

    /// The settings member Pods are built with.
    pub fn settings(&self) -> &PodSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterKey, Tracked>> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the latest `EtcdCluster` object; every reconcile calls it first.
    pub fn track(&self, key: &ClusterKey, cluster: &EtcdCluster) {
        let mut tracked = self.lock();
        let t = tracked.entry(key.clone()).or_default();
        t.next_ordinal = t.next_ordinal.max(annotated_next_ordinal(cluster));
        t.cluster = Some(Arc::new(cluster.clone()));
    }

    /// Forgets a cluster (it was deleted, or leadership moved).
    pub fn forget(&self, key: &ClusterKey) {
        self.lock().remove(key);
        self.control.forget(key);
    }

    /// Forgets every cluster.
    pub fn forget_all(&self) {
        self.lock().clear();
    }

    /// The cluster and the Pods carrying its member labels (owner not yet checked).
    async fn member_pods(
        &self,
        key: &ClusterKey,
    ) -> Result<(Arc<EtcdCluster>, kube::api::ObjectList<Pod>), RuntimeError> {
        let cluster = self.cluster(key)?;
        let lp = ListParams::default().labels(&build::list_selector(&key.name));
        let pods = self
            .pods(key)
            .list(&lp)
            .await
            .map_err(other("listing member Pods"))?;
        Ok((cluster, pods))
    }

    fn cluster(&self, key: &ClusterKey) -> Result<Arc<EtcdCluster>, RuntimeError> {
        self.lock()
            .get(key)
            .and_then(|t| t.cluster.clone())
            .ok_or_else(|| RuntimeError::Other(format!("cluster {key} is not tracked")))
    }

    fn pods(&self, key: &ClusterKey) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &key.namespace)
    }

    fn claims(&self, key: &ClusterKey) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &key.namespace)
    }

    fn build_pod(
        &self,
        key: &ClusterKey,
        cluster: &EtcdCluster,
        name: &str,
        version: EtcdVersion,
        seed: bool,
        etcd_tls: bool,
    ) -> Result<Pod, RuntimeError> {
        let endpoints = self.endpoints(key, name, etcd_tls);
        let scheme = if etcd_tls { "https" } else { "http" };
        let cluster_url = format!(
            "{scheme}://{}.{}.svc:{CLIENT_PORT}",
            key.name, key.namespace
        );
        build::member_pod(MemberPodInput {
            cluster,
            member: name,
            version,
            seed,
            endpoints: &endpoints,
            cluster_client_url: self.cluster_endpoints.then_some(cluster_url.as_str()),
            settings: &self.settings,
            etcd_tls,
        })
        .map_err(|e| RuntimeError::Other(e.to_string()))
    }

    /// Creates the Pod, then its Secret (owned by it: the kubelet waits for the Secret
    /// before starting the containers).
    async fn create_pod(
        &self,
        key: &ClusterKey,
        cluster: &EtcdCluster,
        pod: &Pod,
    ) -> Result<(), RuntimeError> {
        let pods = self.pods(key);
        let created = match self
            .write("creating the Pod", pods.create(&PostParams::default(), pod))
            .await?
        {
            Ok(p) => p,
            // A create whose answer was lost, retried: the Pod is there.
            Err(e) if is_status(&e, 409) => pods
                .get(&pod.name_any())
                .await
                .map_err(other("reading the Pod"))?,
            Err(e) => return Err(other("creating the Pod")(e)),
        };
        self.ensure_member_secret(key, cluster, &created).await?;
        Ok(())
    }

    fn member_info(
        &self,
        key: &ClusterKey,
        name: &str,
        facts: PodFacts,
        now: UnixMillis,
    ) -> MemberInfo {
        let PodFacts {
            ordinal,
            liveness,
            version,
            seed,
            tls,
            claim_only,
            terminating_until,
            restarts,
        } = facts;
        let down_since = {
            let mut tracked = self.lock();
            let t = tracked.entry(key.clone()).or_default();
            t.past_seen = t.past_seen.max(ordinal.saturating_add(1));
            match liveness {
                // A Pod being deleted with its claim is draining until its grace period
                // ends (its container stops, the Pod goes, it comes back on its claim): down
                // from then on, never dead before. One still there after it (its node lost)
                // is down since then, and dead once dead-after has passed.
                PodLiveness::Down => match terminating_until {
                    Some(until) => {
                        let first = *t.terminating_since.entry(name.to_string()).or_insert(now);
                        // Once the Pod is gone, the member's own downtime begins.
                        t.down_since.remove(name);
                        Some(first.max(until))
                    }
                    None => {
                        t.terminating_since.remove(name);
                        Some(*t.down_since.entry(name.to_string()).or_insert(now))
                    }
                },
                PodLiveness::Running | PodLiveness::Starting => {
                    t.down_since.remove(name);
                    t.terminating_since.remove(name);
                    None
                }
            }
        };
        let endpoints = self.endpoints(key, name, tls);
        MemberInfo {
            name: name.to_string(),
            ordinal,
            running: liveness == PodLiveness::Running,
            down_since,
            version,
            seed,
            client_url: endpoints.client_url,
            peer_url: endpoints.peer_url,
            sidecar_url: endpoints.sidecar_url,
            etcd_tls: tls,
            // A Pod that exists keeps its data (its emptyDir or claim) while kubelet
            // restarts its containers; a Pod deleted without a claim is not listed at all.
            data: MemberData::Intact,
            restart_on_request: claim_only,
            restarts,
        }
    }
}

impl Runtime for KubeRuntime {
    async fn members(&self, key: &ClusterKey) -> Result<Vec<MemberInfo>, RuntimeError> {
        let (cluster, pods) = self.member_pods(key).await?;
        let uid = cluster.metadata.uid.as_deref();
        let now = now_ms();
        let with_storage = cluster.spec.storage.is_some();
        let claims = if with_storage {
            let lp = ListParams::default().labels(&build::list_selector(&key.name));
            self.claims(key)
                .list(&lp)
                .await
                .map_err(other("listing member claims"))?
                .items
        } else {
            Vec::new()
        };
        // The claims that keep a member's data: owned by this cluster, not being deleted.
        let kept_claim = |member: &str| {
            claims.iter().any(|c| {
                c.name_any() == claim_name(member)
                    && c.metadata.deletion_timestamp.is_none()
                    && owned_by(c.metadata.owner_references.as_ref(), uid)
            })
        };
        let mut out = Vec::new();
        for pod in &pods.items {
            let name = pod.name_any();
            let Some(ordinal) = member_ordinal(&key.name, &name) else {
                continue;
            };
            if !owned_by(pod.metadata.owner_references.as_ref(), uid) {
                continue;
            }
            let liveness = pod_liveness(pod);
            // Without a claim, a Pod being deleted takes the member's data with it: the
            // member is gone now, and the planner replaces it at once. So is one whose
            // claim is gone or being deleted (the member was deleted): a Pod that stays
            // Terminating (its node lost) never holds its replacement back.
            let terminating = pod.metadata.deletion_timestamp.as_ref();
            if terminating.is_some() && !(with_storage && kept_claim(&name)) {
                continue;
            }
            let version = object_version(pod.annotations(), pod_image(pod))
                .ok_or_else(|| RuntimeError::Invalid(format!("Pod {name} has no etcd version")))?;
            let seed = annotation_true(pod.annotations(), ANNOTATION_SEED);
            let tls = annotation_true(pod.annotations(), ANNOTATION_TLS);
            let facts = PodFacts {
                ordinal,
                liveness,
                version,
                seed,
                tls,
                claim_only: false,
                terminating_until: terminating.map(|t| t.0.as_millisecond()),
                restarts: pod_restarts(pod),
            };
            out.push(self.member_info(key, &name, facts, now));
        }
        if with_storage {
            for claim in &claims {
                let Some(member) = claim.name_any().strip_suffix("-data").map(str::to_string)
                else {
                    continue;
                };
                let Some(ordinal) = member_ordinal(&key.name, &member) else {
                    continue;
                };
                if claim.metadata.deletion_timestamp.is_some()
                    || !owned_by(claim.metadata.owner_references.as_ref(), uid)
                    || out.iter().any(|m| m.name == member)
                {
                    continue;
                }
                let Some(version) = object_version(claim.annotations(), None) else {
                    continue;
                };
                let seed = annotation_true(claim.annotations(), ANNOTATION_SEED);
                let tls = annotation_true(claim.annotations(), ANNOTATION_TLS);
                // The planner decides when the Pod comes back (start_member).
                let facts = PodFacts {
                    ordinal,
                    liveness: PodLiveness::Down,
                    version,
                    seed,
                    tls,
                    claim_only: true,
                    terminating_until: None,
                    restarts: RestartHistory {
                        last_exit: "Pod deleted; its claim stays".into(),
                        ..Default::default()
                    },
                };
                out.push(self.member_info(key, &member, facts, now));
            }
        }
        out.sort_by_key(|m| m.ordinal);
        Ok(out)
    }

    async fn next_ordinal(&self, key: &ClusterKey) -> Result<u32, RuntimeError> {
        let tracked = self.lock();
        Ok(tracked
            .get(key)
            .map(|t| t.next_ordinal.max(t.past_seen))
            .unwrap_or(0))
    }

    async fn backup_identity(
        &self,
        key: &ClusterKey,
        resource: &etcd_operator::resource::EtcdCluster,
    ) -> Result<String, RuntimeError> {
        resource
            .metadata
            .uid
            .clone()
            .filter(|uid| !uid.is_empty())
            .ok_or_else(|| RuntimeError::Invalid(format!("the EtcdCluster {key} carries no UID")))
    }

    /// Exactly the Secret the storage names, read by name in the cluster's namespace (RBAC:
    /// `get` on secrets); no Secret named, no credentials: the coordinator's own
    /// environment, service account and instance metadata are never used for a tenant's
    /// storage.
    async fn storage_credentials(
        &self,
        key: &ClusterKey,
        storage: &etcd_operator::proto::BackupStorage,
    ) -> Result<etcd_sidecar::backup::Credentials, String> {
        if !storage.local_path.is_empty() {
            // A directory needs no credentials (and names no tenant's account).
            return Ok(etcd_sidecar::backup::Credentials::none());
        }
        let secret = storage.credentials_secret.as_str();
        if secret.is_empty() {
            if storage.azure_use_emulator {
                return Ok(etcd_sidecar::backup::Credentials::none());
            }
            return Err(format!(
                "the backup storage names no credentialsSecret: on Kubernetes the coordinator reads storage credentials only from the Secret the spec names (in namespace {}), never from its own environment or instance metadata",
                key.namespace
            ));
        }
        let found = self
            .secrets(key)
            .get_opt(secret)
            .await
            .map_err(|e| format!("reading Secret {}/{secret}: {e}", key.namespace))?
            .ok_or_else(|| {
                format!(
                    "the Secret {}/{secret} that the backup storage names does not exist",
                    key.namespace
                )
            })?;
        let data = found.data.unwrap_or_default();
        Ok(etcd_sidecar::backup::Credentials::from_lookup(
            &format!("Secret {}/{secret}", key.namespace),
            |k| {
                data.get(k)
                    .and_then(|v| String::from_utf8(v.0.clone()).ok())
                    .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
            },
        ))
    }

    fn check_version(&self, _version: EtcdVersion) -> Result<(), RuntimeError> {
        // Every supported release has an official image; a wrong repository shows as a
        // Pod that cannot pull, which the planner waits on and the Pod's events explain.
        Ok(())
    }

    async fn create_member(
        &self,
        key: &ClusterKey,
        name: &str,
        version: EtcdVersion,
        seed: bool,
        etcd_tls: bool,
    ) -> Result<(), RuntimeError> {
        let ordinal = member_ordinal(&key.name, name).ok_or_else(|| {
            RuntimeError::Invalid(format!("{name} is not a member name of {key}"))
        })?;
        let next = crate::runtime::ordinal_after(ordinal, name, key)?;
        let cluster = self.cluster(key)?;
        let recorded = self.lock().get(key).map(|t| t.next_ordinal).unwrap_or(0);
        if recorded <= ordinal {
            // Written before the Pod exists: a coordinator that dies right after still
            // never hands this ordinal out again.
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.client.clone(),
                &key.namespace,
                &ApiResource::erase::<EtcdCluster>(&()),
            );
            let patch =
                json!({"metadata": {"annotations": {ANNOTATION_NEXT_ORDINAL: next.to_string()}}});
            self.write(
                "recording the next ordinal",
                api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await?
            .map_err(other("recording the next ordinal"))?;
            if let Some(t) = self.lock().get_mut(key) {
                t.next_ordinal = t.next_ordinal.max(next);
            }
        }
        if let Some(storage) = &cluster.spec.storage {
            let claim = build::member_claim(&cluster, name, version, seed, etcd_tls, storage)
                .map_err(|e| RuntimeError::Other(e.to_string()))?;
            let claims = self.claims(key);
            match self
                .write(
                    "creating the claim",
                    claims.create(&PostParams::default(), &claim),
                )
                .await?
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 409) => {}
                Err(e) => return Err(other("creating the claim")(e)),
            }
        }
        if etcd_tls {
            // The etcd CA and the applications' client certificate exist before any member.
            self.etcd_ca(key, true).await?;
            self.ensure_client_secret(key, &cluster).await?;
        }
        let pod = self.build_pod(key, &cluster, name, version, seed, etcd_tls)?;
        self.create_pod(key, &cluster, &pod).await?;
        info!(cluster = %key, member = %name, %version, seed, etcd_tls, "member Pod created");
        Ok(())
    }

    // A Pod always gets its termination grace period: the kubelet stops it.
    async fn delete_member(
        &self,
        key: &ClusterKey,
        name: &str,
        _hand_over: bool,
    ) -> Result<(), RuntimeError> {
        // The claim first: once it is deleting, a Pod that disappears is not brought back.
        let (claims, pods) = (self.claims(key), self.pods(key));
        match self
            .write(
                "deleting the claim",
                claims.delete(&claim_name(name), &DeleteParams::background()),
            )
            .await?
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(other("deleting the claim")(e)),
        }
        match self
            .write(
                "deleting the Pod",
                pods.delete(name, &DeleteParams::background()),
            )
            .await?
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(other("deleting the Pod")(e)),
        }
        if let Some(t) = self.lock().get_mut(key) {
            t.down_since.remove(name);
        }
        info!(cluster = %key, member = %name, "member Pod deleted");
        Ok(())
    }

    fn control(&self) -> &ControlPlane {
        &self.control
    }

    async fn existing_etcd_ca(
        &self,
        key: &ClusterKey,
    ) -> Result<Option<Arc<Authority>>, RuntimeError> {
        self.etcd_ca(key, false).await
    }

    async fn etcd_trust(&self, key: &ClusterKey) -> Result<Option<String>, RuntimeError> {
        Ok(self
            .etcd_view(key, false)
            .await?
            .filter(|v| v.overlaps())
            .map(|v| v.trust.clone()))
    }

    fn rotates_etcd_ca(&self) -> bool {
        true
    }

    fn restarts_on_same_version(&self) -> bool {
        // A Pod whose image stays is not restarted by replacing it; deleting it would take
        // an emptyDir's data along. The sidecar restarts etcd in place instead.
        false
    }

    async fn set_etcd_ca_rotation(
        &self,
        key: &ClusterKey,
        phase: Option<CaPhase>,
    ) -> Result<Option<CaPhase>, RuntimeError> {
        let _phase_change = self.ca_writes.lock().await;
        for _ in 0..CONFLICT_RETRIES {
            if let Some(in_effect) = self.try_set_rotation(key, phase).await? {
                // The members' Secrets follow at the next renewal, which must not wait for
                // its timer.
                if let Some(t) = self.lock().get_mut(key) {
                    t.certificates_checked = None;
                }
                return Ok(in_effect);
            }
            warn!(cluster = %key, "the etcd CA Secret changed meanwhile; reading it again");
        }
        Err(RuntimeError::Other(format!(
            "{key}: the etcd CA Secret kept changing while its rotation was written"
        )))
    }

    /// Members by the leaves their Secrets hold (a Pod being deleted included: its etcd may
    /// still serve, and its Secret is no longer renewed); a Secret that is absent, of an
    /// earlier Pod, or cannot be read counts as elsewhere.
    async fn etcd_leaves_elsewhere(&self, key: &ClusterKey) -> Result<Vec<String>, RuntimeError> {
        let Some(view) = self.etcd_view(key, false).await? else {
            return Ok(Vec::new());
        };
        let (cluster, pods) = self.member_pods(key).await?;
        let uid = cluster.metadata.uid.as_deref();
        let secrets = self.secrets(key);
        let mine = |files: &BTreeMap<String, String>, names: &[&str]| {
            names.iter().all(|n| {
                files
                    .get(*n)
                    .is_some_and(|pem| issued_by(pem, &view.issuer))
            })
        };
        let mut elsewhere = Vec::new();
        for pod in &pods.items {
            let name = pod.name_any();
            if member_ordinal(&key.name, &name).is_none()
                || !owned_by(pod.metadata.owner_references.as_ref(), uid)
                || !annotation_true(pod.annotations(), ANNOTATION_TLS)
            {
                continue;
            }
            let files = match secrets.get(&member_secret_name(&name)).await {
                Ok(s) if owned_by(s.metadata.owner_references.as_ref(), pod.uid().as_deref()) => {
                    build::secret_files(&s)
                }
                _ => BTreeMap::new(),
            };
            if !mine(
                &files,
                &[
                    MemberFile::ETCD_SERVER_CERT,
                    MemberFile::ETCD_PEER_CERT,
                    MemberFile::ETCD_CLIENT_CERT,
                ],
            ) {
                elsewhere.push(name);
            }
        }
        elsewhere.sort();
        let client = match secrets.get(&client_secret_name(&key.name)).await {
            Ok(s) => build::secret_files(&s),
            Err(_) => BTreeMap::new(),
        };
        if !mine(&client, &[ClientFile::CERT]) {
            elsewhere.push("client".into());
        }
        Ok(elsewhere)
    }

    /// Of the member's Secret, while its Pod exists with etcd TLS.
    async fn etcd_files_digest(
        &self,
        key: &ClusterKey,
        member: &str,
    ) -> Result<Option<String>, RuntimeError> {
        let pod = match self.pods(key).get(member).await {
            Ok(p) => p,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(other("reading the Pod")(e)),
        };
        if !annotation_true(pod.annotations(), ANNOTATION_TLS) {
            return Ok(None);
        }
        let files = match self.secrets(key).get(&member_secret_name(member)).await {
            Ok(s) if owned_by(s.metadata.owner_references.as_ref(), pod.uid().as_deref()) => {
                build::secret_files(&s)
            }
            Ok(_) => BTreeMap::new(),
            Err(e) if is_status(&e, 404) => BTreeMap::new(),
            Err(e) => return Err(other("reading the member's Secret")(e)),
        };
        Ok(Some(etcd_files_digest(|name| files.get(name).cloned())))
    }

    async fn renew_certificates(&self, key: &ClusterKey) -> Result<usize, RuntimeError> {
        // Certificates are renewed with a third of their life left: looking every tenth of
        // it (at most hourly) is soon enough, and spares the API a Pod list and a Secret
        // read per member every round. A member created meanwhile got its Secret then.
        let recheck =
            (self.control.member_validity() / 10).min(std::time::Duration::from_secs(3600));
        if self
            .lock()
            .get(key)
            .and_then(|t| t.certificates_checked)
            .is_some_and(|at| at.elapsed() < recheck)
        {
            return Ok(0);
        }
        let _renewal = self.ca_writes.lock().await;
        let (cluster, pods) = self.member_pods(key).await?;
        let uid = cluster.metadata.uid.as_deref();
        let mut changed = 0;
        let mut tls = false;
        for pod in &pods.items {
            if pod.metadata.deletion_timestamp.is_some()
                || member_ordinal(&key.name, &pod.name_any()).is_none()
                || !owned_by(pod.metadata.owner_references.as_ref(), uid)
            {
                continue;
            }
            tls |= annotation_true(pod.annotations(), ANNOTATION_TLS);
            if self.ensure_member_secret(key, &cluster, pod).await? {
                info!(cluster = %key, member = %pod.name_any(), "member certificates issued or renewed");
                changed += 1;
            }
        }
        if tls && self.ensure_client_secret(key, &cluster).await? {
            info!(cluster = %key, "client certificate issued or renewed");
            changed += 1;
        }
        if let Some(t) = self.lock().get_mut(key) {
            t.certificates_checked = Some(tokio::time::Instant::now());
        }
        Ok(changed)
    }

    async fn start_member(&self, key: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        let cluster = self.cluster(key)?;
        if cluster.spec.storage.is_none() {
            // Without a claim a Pod that is gone took its data along: nothing to start on.
            return Err(RuntimeError::NoSuchMember(name.into()));
        }
        match self.pods(key).get(name).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(other("reading the Pod")(e)),
        }
        let claim = match self.claims(key).get(&claim_name(name)).await {
            Ok(claim) => claim,
            Err(e) if is_status(&e, 404) => return Err(RuntimeError::NoSuchMember(name.into())),
            Err(e) => return Err(other("reading the member's claim")(e)),
        };
        let version = object_version(claim.annotations(), None).ok_or_else(|| {
            RuntimeError::Invalid(format!("the claim of {name} has no etcd version"))
        })?;
        let seed = annotation_true(claim.annotations(), ANNOTATION_SEED);
        let tls = annotation_true(claim.annotations(), ANNOTATION_TLS);
        info!(cluster = %key, member = %name, %version, "creating the member's Pod again on its claim");
        let pod = self.build_pod(key, &cluster, name, version, seed, tls)?;
        self.create_pod(key, &cluster, &pod).await
    }

    async fn stop_member(&self, key: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        // With a claim, the Pod goes and the claim keeps the data; without one, deleting
        // the Pod would take the data with it: the Pod is left as it is.
        let cluster = self.cluster(key)?;
        if cluster.spec.storage.is_none() {
            return Ok(());
        }
        let pods = self.pods(key);
        match self
            .write(
                "deleting the Pod",
                pods.delete(name, &DeleteParams::background()),
            )
            .await?
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(other("deleting the Pod")(e)),
        }
        info!(cluster = %key, member = %name, "member Pod deleted; its claim keeps the data");
        Ok(())
    }

    async fn restart_member(
        &self,
        key: &ClusterKey,
        name: &str,
        version: EtcdVersion,
    ) -> Result<(), RuntimeError> {
        let cluster = self.cluster(key)?;
        let image = build::etcd_image(&cluster, version);
        // The claim first: a Pod made again from it (after a drain) runs the version the
        // step is under way to, whatever stops between the two writes; the planner carries
        // a step whose Pod still runs the other version on (the step is in the record).
        if cluster.spec.storage.is_some() {
            let patch = json!({"metadata": {"annotations": {ANNOTATION_ETCD_VERSION: version.to_string()}}});
            let claims = self.claims(key);
            match self
                .write(
                    "recording the version on the claim",
                    claims.patch(
                        &claim_name(name),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    ),
                )
                .await?
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(other("recording the version on the claim")(e)),
            }
        }
        let pods = self.pods(key);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let pod = match pods.get(name).await {
                Ok(p) => p,
                Err(e) if is_status(&e, 404) => {
                    return Err(RuntimeError::NoSuchMember(name.into()));
                }
                Err(e) => return Err(other("reading the Pod")(e)),
            };
            let upgraded = build::upgraded_pod(pod, &image, version);
            match self
                .write(
                    "patching the Pod's image",
                    pods.replace(name, &PostParams::default(), &upgraded),
                )
                .await?
            {
                Ok(_) => break,
                Err(e) if is_status(&e, 409) && attempt < CONFLICT_RETRIES => {
                    warn!(member = %name, "the Pod changed meanwhile; patching it again");
                }
                Err(e) => return Err(other("patching the Pod's image")(e)),
            }
        }
        info!(cluster = %key, member = %name, %version, %image, "member Pod moved to the new image");
        Ok(())
    }
}
