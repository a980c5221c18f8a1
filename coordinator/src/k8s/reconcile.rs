//! One reconcile of one `EtcdCluster` (the pipeline of the module doc of [`super`]).
//!
//! The watched type is the raw object ([`DynamicObject`]): a document that does not parse as
//! an `EtcdCluster` reaches [`reconcile`] like any other, gets an `Invalid` status and an
//! Event, and the watch of every other cluster goes on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_operator::{
    ClusterKey,
    resource::{ClusterCondition, EtcdCluster, EtcdClusterStatus},
    validate::validate_cluster,
};
use k8s_openapi::api::{core::v1::Service, policy::v1::PodDisruptionBudget};
use kube::{
    Client, Resource, ResourceExt,
    api::{Api, ApiResource, DynamicObject, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{EventType, Reporter},
    },
};
use serde::Serialize;
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{
    FIELD_MANAGER, FINALIZER, KubeRuntime,
    build::{self, BuildError},
    error::Error,
    events::EventRecorder,
    status::resource_status,
};
use crate::{
    conditions::{ConditionStatus, ConditionType},
    controller::{ClusterController, Outcome, camel, rfc3339_now},
    plan::{Action as PlanAction, Policy},
    registry::Registry,
};

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The coordinator's registry (sidecars' reports and grants), shared with the gRPC side.
    pub registry: Registry,
    /// Where members live.
    pub runtime: Arc<KubeRuntime>,
    /// Publishes Events (one for the life of the process: repeats become series).
    pub events: EventRecorder,
    /// Planner tunables.
    pub policy: Policy,
    /// When to look again at a cluster that matches its spec, whatever happens: a resync.
    /// Changes that matter start a reconcile at once (the cluster, its Pods, Services and
    /// budget, the sidecars' reports: see [`super::triggers`]).
    pub steady_requeue: Duration,
    /// When to look again while a change is under way or awaited.
    pub busy_requeue: Duration,
    /// When to look again after a first failed reconcile (or failed action); doubled at
    /// each failure in a row, up to `max_failure_backoff`.
    pub failure_backoff: Duration,
    /// The longest wait after failures in a row.
    pub max_failure_backoff: Duration,
    resource: ApiResource,
    /// The status last written for each cluster, in this term.
    written: Mutex<HashMap<ClusterKey, EtcdClusterStatus>>,
    /// Failed reconciles in a row, for each cluster.
    failures: Mutex<HashMap<ClusterKey, u32>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Context {
    /// A context with the default timers: 5 minutes when steady, 1 s while changing,
    /// 5 s after a failure doubling up to 5 minutes.
    pub fn new(
        client: Client,
        registry: Registry,
        runtime: Arc<KubeRuntime>,
        reporter: Reporter,
        policy: Policy,
    ) -> Self {
        // The clusters' decision records are kept on the EtcdCluster objects.
        registry.set_store(Arc::new(super::records::KubeRecords::new(client.clone())));
        Self {
            events: EventRecorder::new(client.clone(), reporter),
            client,
            registry,
            runtime,
            policy,
            steady_requeue: Duration::from_secs(300),
            busy_requeue: Duration::from_secs(1),
            failure_backoff: Duration::from_secs(5),
            max_failure_backoff: Duration::from_secs(300),
            resource: ApiResource::erase::<EtcdCluster>(&()),
            written: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// The `EtcdCluster` resource, untyped.
    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }

    /// Forgets what this term remembered of every cluster (a new term reads the truth).
    pub fn start_term(&self) {
        locked(&self.written).clear();
        locked(&self.failures).clear();
    }

    fn forget(&self, key: &ClusterKey) {
        locked(&self.written).remove(key);
        locked(&self.failures).remove(key);
    }

    /// The wait after the failure of a reconcile of `key` (counted).
    fn failed(&self, key: &ClusterKey) -> Duration {
        let mut failures = locked(&self.failures);
        let n = failures.entry(key.clone()).or_default();
        *n = n.saturating_add(1);
        self.failure_backoff
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
            .min(self.max_failure_backoff)
    }

    /// The `EtcdCluster` API of a namespace, untyped.
    pub fn clusters(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.resource)
    }

    async fn publish(&self, obj: &DynamicObject, type_: EventType, reason: &str, note: String) {
        if let Err(e) = self
            .events
            .publish(
                &obj.object_ref(&self.resource),
                type_,
                reason,
                truncate(note, 1000),
            )
            .await
        {
            warn!(error = %e, reason, "could not publish an event");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Reconciles one `EtcdCluster`: the entry point kube-runtime calls.
///
/// No finalizer: owner references collect a cluster's Pods, claims, Services and budget,
/// so a deletion never waits on this coordinator (deleting a cluster while it is down, or
/// `kubectl delete -k deploy/` with clusters left, completes). The finalizer of earlier
/// versions is removed where it is found, with a merge patch carrying the
/// `resourceVersion` read, so a concurrent change of the finalizer list by anyone else
/// makes it fail and retry instead of overwriting it. What the coordinator remembers of a
/// deleted cluster is dropped when the deletion is seen here, or by
/// [`forget_deleted`] once the object is gone.
#[instrument(skip_all, fields(namespace = obj.namespace().unwrap_or_default(), cluster = %obj.name_any()))]
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj
        .namespace()
        .ok_or(Error::MissingMetadata("metadata.namespace"))?;
    let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
    let deleting = obj.metadata.deletion_timestamp.is_some();
    if deleting {
        let action = cleanup(&obj, &ctx).await?;
        if has_finalizer {
            remove_finalizer(&ctx, &obj, &namespace).await?;
        }
        return Ok(action);
    }
    if has_finalizer {
        remove_finalizer(&ctx, &obj, &namespace).await?;
        // The patch is a change: the next reconcile comes with it.
        return Ok(Action::await_change());
    }
    let result = apply(&obj, &ctx).await;
    if let Err(e) = &result {
        report_failure(&obj, &ctx, e).await;
    }
    result
}

/// Drops what the coordinator remembers of clusters that are no longer in the API (`present`
/// is every cluster the watch holds); returns those dropped.
pub fn forget_deleted(ctx: &Context, present: &[ClusterKey]) -> Vec<ClusterKey> {
    forget_deleted_in(ctx, None, present)
}

/// [`forget_deleted`] for the clusters of one namespace (`None`: every namespace), whose
/// watch holds `present`.
pub fn forget_deleted_in(
    ctx: &Context,
    namespace: Option<&str>,
    present: &[ClusterKey],
) -> Vec<ClusterKey> {
    let gone: Vec<ClusterKey> = ctx
        .registry
        .keys()
        .into_iter()
        .filter(|k| namespace.is_none_or(|ns| k.namespace == ns) && !present.contains(k))
        .collect();
    for key in &gone {
        ctx.registry.remove(key);
        ctx.runtime.forget(key);
        ctx.forget(key);
        info!(cluster = %key, "cluster deleted; forgotten");
    }
    gone
}

/// Removes the finalizer earlier versions put on clusters.
async fn remove_finalizer(
    ctx: &Context,
    obj: &DynamicObject,
    namespace: &str,
) -> Result<(), Error> {
    let finalizers = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(ctx, obj, namespace, finalizers, "remove finalizer").await
}

async fn set_finalizers(
    ctx: &Context,
    obj: &DynamicObject,
    namespace: &str,
    finalizers: Vec<String>,
    op: &'static str,
) -> Result<(), Error> {
    let name = obj.name_any();
    let patch = json!({"metadata": {
        "resourceVersion": obj.resource_version(),
        "finalizers": finalizers,
    }});
    ctx.clusters(namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(Error::kube(op, format!("{namespace}/{name}")))
}

/// What kube-runtime does after a failed reconcile: log it and look again after a wait
/// that doubles with each failure in a row (see [`Context::failure_backoff`]).
pub fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ClusterKey::new(obj.namespace().unwrap_or_default(), obj.name_any());
    let wait = ctx.failed(&key);
    warn!(cluster = %key, error = %error, category = error.category(), retry_in_s = wait.as_secs(), "reconcile failed");
    Action::requeue(wait)
}

/// Parses the raw object; the message says what is wrong with it.
pub fn parse_cluster(obj: &DynamicObject) -> Result<EtcdCluster, String> {
    let value = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

async fn apply(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let name = obj.name_any();
    let namespace = obj
        .namespace()
        .ok_or(Error::MissingMetadata("metadata.namespace"))?;
    let key = ClusterKey::new(namespace.clone(), name.clone());
    // The term's epoch is written on the cluster before the term acts on it: a later term
    // counts on from it even if the Lease is gone (`k8s/epoch.rs`).
    if let Some(epoch) = ctx.registry.leadership().current() {
        let recorded = super::epoch::record_on_cluster(&ctx.client, obj, epoch)
            .await
            .map_err(Error::kube("record the coordinator epoch", key.to_string()))?;
        if let super::epoch::Recorded::Newer(newer) = recorded {
            warn!(cluster = %key, epoch, newer, "a newer coordinator term acts on this cluster; not acting");
            return Ok(Action::await_change());
        }
    }
    let cluster = match parse_cluster(obj) {
        Ok(c) => c,
        Err(message) => return refuse_malformed(obj, ctx, &key, message).await,
    };
    ctx.runtime.track(&key, &cluster);
    let token = cluster
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(super::ANNOTATION_BACKUP_NOW))
        .map(String::as_str);
    let asked = ctx.registry.with(&key, |entry, _| {
        entry
            .backups
            .request_by_token(token, crate::registry::now_ms())
    });
    if asked {
        info!(cluster = %key, "a backup was asked for by annotation");
    }
    let rotate_asked = cluster
        .annotations()
        .contains_key(super::ANNOTATION_ROTATE_CA);
    if rotate_asked {
        ask_for_ca_rotation(obj, ctx, &key, RotateCaAnnotation::Ask).await?;
    }
    // An invalid spec touches nothing: the controller refuses it and only status changes.
    if validate_cluster(&cluster).is_ok() {
        apply_owned(&cluster, ctx).await?;
    }
    let previous = cluster.status.clone().unwrap_or_default();
    let controller = ClusterController::new(
        key.clone(),
        Arc::clone(&ctx.runtime),
        ctx.registry.clone(),
        ctx.policy,
    );
    let outcome = controller.reconcile(&cluster).await;
    if rotate_asked {
        // Begun in this pass: the annotation goes now, so it never starts a second one. Read
        // at the start of the pass, it may be gone already, and the rotation with it (ended
        // in this pass): nothing is asked for after a pass.
        ask_for_ca_rotation(obj, ctx, &key, RotateCaAnnotation::RemoveOnly).await?;
    }
    let status = resource_status(&name, &outcome.status);
    // A status the API server already has is not written again: a write is a request, and
    // a change that is none.
    let unchanged = status == previous && locked(&ctx.written).get(&key) == Some(&status);
    if !unchanged {
        write_status(ctx, &namespace, &name, &status).await?;
        locked(&ctx.written).insert(key.clone(), status.clone());
    }
    publish_outcome(obj, ctx, &previous, &status, &outcome).await;
    Ok(Action::requeue(next_look(ctx, &key, &outcome)))
}

/// What [`ask_for_ca_rotation`] may do with the `rotate-ca` annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotateCaAnnotation {
    /// Before a pass: ask for a rotation while none is recorded, remove the annotation
    /// once one is.
    Ask,
    /// After a pass, on the object read before it: only remove the annotation of a
    /// rotation recorded (begun in the pass), never ask (the rotation may have ended in the
    /// pass, the annotation removed before it).
    RemoveOnly,
}

/// The `rotate-ca` annotation on `obj`: once the decision record holds a rotation (begun),
/// the annotation is removed (with the `resourceVersion` read) and the request dropped;
/// before, the request is set (with [`RotateCaAnnotation::Ask`]), as the `rotate-ca` admin
/// call sets it. A rotation cannot end while the annotation stays: every pass during it
/// removes the annotation first or fails, so a request is never left behind to start a
/// second one.
pub async fn ask_for_ca_rotation(
    obj: &DynamicObject,
    ctx: &Context,
    key: &ClusterKey,
    may: RotateCaAnnotation,
) -> Result<(), Error> {
    // A record that cannot be read stops the pass with its reason in the status: nothing is
    // asked for on it.
    let Ok(record) = ctx.registry.record(key).await else {
        return Ok(());
    };
    // A record naming another object (its annotations copied) says nothing of this one's.
    let own = record.uid.is_empty() || Some(record.uid.as_str()) == obj.uid().as_deref();
    if !own || record.ca_rotation.is_none() {
        if may == RotateCaAnnotation::RemoveOnly {
            return Ok(());
        }
        let newly = ctx.registry.with(key, |entry, _| {
            !std::mem::replace(&mut entry.ca_rotation_requested, true)
        });
        if newly {
            info!(cluster = %key, "a rotation of the etcd CA was asked for by annotation");
        }
        return Ok(());
    }
    ctx.registry
        .with(key, |entry, _| entry.ca_rotation_requested = false);
    let patch = json!({"metadata": {
        "resourceVersion": obj.resource_version(),
        "annotations": {super::ANNOTATION_ROTATE_CA: null},
    }});
    let name = obj.name_any();
    let removed = ctx
        .clusters(&key.namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    match removed {
        Ok(_) => {
            info!(cluster = %key, "the etcd CA rotation began; its annotation is removed");
            Ok(())
        }
        // Changed since it was read (the record written in this pass, say): read it again.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let fresh = ctx
                .clusters(&key.namespace)
                .get(&name)
                .await
                .map_err(Error::kube("read the cluster", key.to_string()))?;
            if !fresh
                .annotations()
                .contains_key(super::ANNOTATION_ROTATE_CA)
            {
                return Ok(());
            }
            let patch = json!({"metadata": {
                "resourceVersion": fresh.resource_version(),
                "annotations": {super::ANNOTATION_ROTATE_CA: null},
            }});
            ctx.clusters(&key.namespace)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(Error::kube(
                    "remove the rotate-ca annotation",
                    key.to_string(),
                ))
        }
        Err(e) => Err(Error::kube(
            "remove the rotate-ca annotation",
            key.to_string(),
        )(e)),
    }
}

/// When to look at a cluster again if nothing happens meanwhile: after the failure
/// backoff when its action failed; soon while the planner acts or waits for something;
/// else at the next scheduled backup, or the steady resync.
fn next_look(ctx: &Context, key: &ClusterKey, outcome: &Outcome) -> Duration {
    if outcome.error.is_some() {
        return ctx.failed(key);
    }
    locked(&ctx.failures).remove(key);
    if !outcome.plan.settled() {
        return ctx.busy_requeue;
    }
    let next_backup = ctx
        .registry
        .with_existing(key, |entry, _| entry.backups.next_due)
        .flatten();
    match next_backup {
        Some(due) => {
            let wait = u64::try_from(due.saturating_sub(crate::registry::now_ms())).unwrap_or(0);
            Duration::from_millis(wait).clamp(ctx.busy_requeue, ctx.steady_requeue)
        }
        None => ctx.steady_requeue,
    }
}

/// Applies the Services and the PodDisruptionBudget, in this order: the peer Service
/// first (members need their DNS names before they start), then the client Service, then
/// the budget.
async fn apply_owned(cluster: &EtcdCluster, ctx: &Context) -> Result<(), Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let built = |source: BuildError| Error::Build {
        cluster: format!("{namespace}/{name}"),
        source,
    };
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    for service in [
        build::peer_service(cluster).map_err(built)?,
        build::client_service(cluster).map_err(built)?,
    ] {
        server_side_apply(&services, &service, "apply Service").await?;
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &namespace);
    server_side_apply(
        &budgets,
        &build::pod_disruption_budget(cluster).map_err(built)?,
        "apply PodDisruptionBudget",
    )
    .await
}

async fn server_side_apply<K>(api: &Api<K>, object: &K, op: &'static str) -> Result<(), Error>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map(|_| ())
    .map_err(Error::kube(op, name))
}

async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &EtcdClusterStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": EtcdCluster::api_version(&()),
        "kind": EtcdCluster::kind(&()),
        "status": status,
    });
    ctx.clusters(namespace)
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
        .map_err(Error::kube("write status", format!("{namespace}/{name}")))
}

/// A malformed object: an `Invalid` status and an Event; nothing else is touched, and the
/// object is looked at again when it changes.
async fn refuse_malformed(
    obj: &DynamicObject,
    ctx: &Context,
    key: &ClusterKey,
    message: String,
) -> Result<Action, Error> {
    warn!(cluster = %key, error = %message, "malformed EtcdCluster");
    let previous: EtcdClusterStatus = obj
        .data
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    // The same refusal again keeps its transition time, and writes and says nothing.
    let mut conditions = previous.conditions.clone();
    let spec_valid = ConditionType::SpecValid.as_str();
    conditions.retain(|c| c.type_ == spec_valid);
    set_condition(
        &mut conditions,
        ClusterCondition {
            type_: spec_valid.into(),
            status: ConditionStatus::False.as_str().into(),
            reason: "Malformed".into(),
            message: truncate(
                format!("the object is not a valid EtcdCluster: {message}"),
                1000,
            ),
            last_transition_time: rfc3339_now(),
        },
    );
    let status = EtcdClusterStatus {
        phase: crate::plan::Phase::Invalid.as_str().into(),
        conditions,
        observed_generation: obj.metadata.generation,
        selector: build::selector_string(&key.name),
        ..Default::default()
    };
    if status == previous {
        return Ok(Action::await_change());
    }
    write_status(ctx, &key.namespace, &key.name, &status).await?;
    ctx.publish(
        obj,
        EventType::Warning,
        "Malformed",
        format!("the object is not a valid EtcdCluster: {message}"),
    )
    .await;
    Ok(Action::await_change())
}

/// Events for people: what the controller did, what it refused, what failed, and phase
/// changes.
async fn publish_outcome(
    obj: &DynamicObject,
    ctx: &Context,
    previous: &EtcdClusterStatus,
    status: &EtcdClusterStatus,
    outcome: &Outcome,
) {
    if previous.phase != status.phase && !status.phase.is_empty() {
        info!(from = %previous.phase, to = %status.phase, "phase changed");
    }
    for (type_, reason, note) in events_for(
        previous,
        status,
        &outcome.plan.action,
        outcome.error.as_deref(),
    ) {
        ctx.publish(obj, type_, &reason, note).await;
    }
}

/// The Events one reconcile publishes, as (type, reason, note): the action taken (a
/// Warning when it failed or lost data on purpose), a refused spec, quorum lost and an
/// alarm raised (each once, when it starts or changes), and a phase change.
fn events_for(
    previous: &EtcdClusterStatus,
    status: &EtcdClusterStatus,
    action: &PlanAction,
    error: Option<&str>,
) -> Vec<(EventType, String, String)> {
    let mut events = Vec::new();
    match action {
        PlanAction::RefuseSpec { message } => {
            events.push((EventType::Warning, "InvalidSpec".into(), message.clone()));
        }
        action if action.changes_something() => {
            let reason = camel(action.kind());
            let note = match error {
                None => action.describe(),
                Some(e) => format!("{} failed: {e}", action.describe()),
            };
            let note = match action {
                PlanAction::ForceNewCluster { revision, lost, .. } if error.is_none() => {
                    format!(
                        "{note} at revision {revision}: the data of {} was gone; writes acknowledged only by those members may be lost",
                        lost.join(", ")
                    )
                }
                PlanAction::RollBackMember {
                    failure: Some(why), ..
                } if error.is_none() => {
                    format!("{note}: the upgrade failed ({why})")
                }
                PlanAction::RestoreCluster { backup, lost, .. } if error.is_none() => {
                    format!(
                        "{note} from backup {backup}: the data of {} was gone; writes after the backup are lost",
                        lost.join(", ")
                    )
                }
                _ => note,
            };
            let type_ = if error.is_some()
                || matches!(
                    action,
                    PlanAction::ForceNewCluster { .. }
                        | PlanAction::RestoreCluster { .. }
                        | PlanAction::RollBackMember { .. }
                ) {
                EventType::Warning
            } else {
                EventType::Normal
            };
            events.push((type_, reason, note));
        }
        _ => {}
    }
    // A True condition of `type_`, as (reason, message).
    let raised = |s: &EtcdClusterStatus, type_: ConditionType| {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_.as_str() && c.status == ConditionStatus::True.as_str())
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    // Quorum lost: said once when it starts (the condition keeps saying it).
    if let Some((reason, message)) = raised(status, ConditionType::QuorumLost)
        && raised(previous, ConditionType::QuorumLost).is_none_or(|(was, _)| was != reason)
    {
        events.push((EventType::Warning, "QuorumLost".into(), message));
    }
    // An alarm raised (NOSPACE, CORRUPT): a Warning when it starts or changes.
    if let Some((reason, message)) = raised(status, ConditionType::Alarm)
        && raised(previous, ConditionType::Alarm).is_none_or(|(was, _)| was != reason)
    {
        events.push((EventType::Warning, reason, message));
    }
    // An upgrade that stopped: a Warning once, when it stops.
    if let Some((reason, message)) = raised(status, ConditionType::UpgradeFailed)
        && raised(previous, ConditionType::UpgradeFailed).is_none()
    {
        events.push((EventType::Warning, format!("Upgrade{reason}"), message));
    }
    if previous.phase != status.phase && !status.phase.is_empty() {
        let from = if previous.phase.is_empty() {
            "-"
        } else {
            &previous.phase
        };
        events.push((
            EventType::Normal,
            "PhaseChanged".into(),
            format!(
                "{from} -> {} ({}/{} ready)",
                status.phase, status.ready_members, status.size
            ),
        ));
    }
    events
}

/// A failed reconcile becomes an Event and a `ReconcileFailed` condition, the rest of the
/// status kept as it was.
async fn report_failure(obj: &DynamicObject, ctx: &Context, error: &Error) {
    let (Some(namespace), name) = (obj.namespace(), obj.name_any()) else {
        return;
    };
    let mut status: EtcdClusterStatus = obj
        .data
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    let condition = ClusterCondition {
        type_: ConditionType::ReconcileFailed.as_str().into(),
        status: ConditionStatus::True.as_str().into(),
        reason: error.reason().into(),
        message: truncate(error.to_string(), 1000),
        last_transition_time: rfc3339_now(),
    };
    // The same failure again writes nothing and says nothing: a status write is a watch
    // event and an immediate reconcile, which would bypass the error policy's backoff.
    if !set_condition(&mut status.conditions, condition) {
        return;
    }
    ctx.publish(obj, EventType::Warning, error.reason(), error.to_string())
        .await;
    // The status written is no longer the last one computed: the next success writes it.
    locked(&ctx.written).remove(&ClusterKey::new(namespace.clone(), name.clone()));
    if let Err(e) = write_status(ctx, &namespace, &name, &status).await {
        warn!(error = %e, "could not record the failure in the status");
    }
}

/// Puts `condition` into `conditions`, keeping the transition time of one of its type
/// whose status and reason are unchanged. False when nothing changed at all.
fn set_condition(conditions: &mut Vec<ClusterCondition>, mut condition: ClusterCondition) -> bool {
    if let Some(old) = conditions.iter().find(|c| c.type_ == condition.type_)
        && old.status == condition.status
        && old.reason == condition.reason
    {
        if old.message == condition.message {
            return false;
        }
        condition.last_transition_time = old.last_transition_time.clone();
    }
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
    true
}

async fn cleanup(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let key = ClusterKey::new(obj.namespace().unwrap_or_default(), obj.name_any());
    // Pods, claims, Services and the budget are owned by the cluster: the garbage
    // collector removes them. What is left is the coordinator's own memory of it.
    ctx.registry.remove(&key);
    ctx.runtime.forget(&key);
    ctx.forget(&key);
    info!(cluster = %key, "cluster deleted; its objects go with it");
    ctx.publish(
        obj,
        EventType::Normal,
        "Deleted",
        "the cluster's members and services are deleted with it".into(),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_objects_are_told_apart() {
        let good: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "etcd.operator.rs/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"size": 3, "version": "3.6.15"}
        }))
        .unwrap();
        assert_eq!(parse_cluster(&good).unwrap().spec.size, 3);
        let bad: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "etcd.operator.rs/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"size": "three", "version": "3.6.15"}
        }))
        .unwrap();
        assert!(parse_cluster(&bad).unwrap_err().contains("invalid type"));
        assert_eq!(camel("remove_dead_member"), "RemoveDeadMember");
        assert_eq!(truncate("héllo".into(), 2), "h");
    }

    #[test]
    fn events_say_each_action_alarm_and_quorum_loss_once() {
        let status = |phase: &str, conditions: &[(&str, &str, &str)]| EtcdClusterStatus {
            phase: phase.into(),
            size: 3,
            ready_members: 3,
            conditions: conditions
                .iter()
                .map(|(type_, status, reason)| ClusterCondition {
                    type_: type_.to_string(),
                    status: status.to_string(),
                    reason: reason.to_string(),
                    message: format!("{type_} {reason}"),
                    last_transition_time: "2026-01-01T00:00:00Z".into(),
                })
                .collect(),
            ..Default::default()
        };
        let running = status("Running", &[]);
        let no_space = status("Running", &[("Alarm", "True", "NoSpace")]);
        let corrupt = status("Running", &[("Alarm", "True", "Corrupt")]);
        let disk_full = status("Degraded", &[("Alarm", "True", "DiskFull")]);
        let cleared = status("Running", &[("Alarm", "False", "NoAlarm")]);
        let lost = status("Degraded", &[("QuorumLost", "True", "MembersDown")]);
        let defrag = PlanAction::Defragment {
            name: "a-0001".into(),
            reason: "NOSPACE".into(),
        };
        let force = PlanAction::ForceNewCluster {
            name: "a-0000".into(),
            raft_index: 10,
            revision: 7,
            lost: vec!["a-0001".into(), "a-0002".into()],
        };
        let refuse = PlanAction::RefuseSpec {
            message: "size must be 1 to 9".into(),
        };
        type Case<'a> = (
            &'a str,
            &'a EtcdClusterStatus,
            &'a EtcdClusterStatus,
            &'a PlanAction,
            Option<&'a str>,
            &'a [(EventType, &'a str)],
        );
        let cases: &[Case] = &[
            (
                "steady: nothing",
                &running,
                &running,
                &PlanAction::Steady,
                None,
                &[],
            ),
            (
                "an alarm raised: one Warning",
                &running,
                &no_space,
                &PlanAction::Steady,
                None,
                &[(EventType::Warning, "NoSpace")],
            ),
            (
                "the same alarm again: nothing more",
                &no_space,
                &no_space,
                &PlanAction::Steady,
                None,
                &[],
            ),
            (
                "another alarm: a Warning again",
                &no_space,
                &corrupt,
                &PlanAction::Steady,
                None,
                &[(EventType::Warning, "Corrupt")],
            ),
            (
                "a member's data volume full: a Warning, with the phase change",
                &running,
                &disk_full,
                &PlanAction::Steady,
                None,
                &[
                    (EventType::Warning, "DiskFull"),
                    (EventType::Normal, "PhaseChanged"),
                ],
            ),
            (
                "an alarm cleared: nothing",
                &no_space,
                &cleared,
                &PlanAction::Steady,
                None,
                &[],
            ),
            (
                "a step taken under the alarm: Normal",
                &no_space,
                &no_space,
                &defrag,
                None,
                &[(EventType::Normal, "Defragment")],
            ),
            (
                "a step that failed: Warning",
                &no_space,
                &no_space,
                &defrag,
                Some("deadline"),
                &[(EventType::Warning, "Defragment")],
            ),
            (
                "quorum lost: once, with the phase change",
                &running,
                &lost,
                &PlanAction::Steady,
                None,
                &[
                    (EventType::Warning, "QuorumLost"),
                    (EventType::Normal, "PhaseChanged"),
                ],
            ),
            (
                "quorum still lost: nothing",
                &lost,
                &lost,
                &PlanAction::Steady,
                None,
                &[],
            ),
            (
                "a forced new cluster loses data on purpose: Warning",
                &lost,
                &lost,
                &force,
                None,
                &[(EventType::Warning, "ForceNewCluster")],
            ),
            (
                "a refused spec",
                &running,
                &running,
                &refuse,
                None,
                &[(EventType::Warning, "InvalidSpec")],
            ),
        ];
        for (what, previous, now, action, error, want) in cases {
            let got = events_for(previous, now, action, *error);
            let kinds: Vec<(EventType, &str)> =
                got.iter().map(|(t, r, _)| (*t, r.as_str())).collect();
            assert_eq!(&kinds, want, "{what}: {got:?}");
        }
        // The notes say what happened.
        let alarm = events_for(&running, &no_space, &PlanAction::Steady, None);
        assert_eq!(alarm[0].2, "Alarm NoSpace");
        let failed = events_for(&no_space, &no_space, &defrag, Some("deadline"));
        assert!(failed[0].2.ends_with("failed: deadline"), "{failed:?}");
        let forced = events_for(&lost, &lost, &force, None);
        assert!(
            forced[0].2.contains("at revision 7") && forced[0].2.contains("a-0001, a-0002"),
            "{forced:?}"
        );
    }

    #[test]
    fn the_same_failure_again_changes_nothing() {
        let failed = |reason: &str, message: &str, at: &str| ClusterCondition {
            type_: "ReconcileFailed".into(),
            status: "True".into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: at.into(),
        };
        let mut conditions = vec![failed("Kube", "forbidden", "2026-01-01T00:00:00Z")];
        // Again, a second later: no write at all.
        assert!(!set_condition(
            &mut conditions,
            failed("Kube", "forbidden", "2026-01-01T00:00:01Z")
        ));
        assert_eq!(conditions[0].last_transition_time, "2026-01-01T00:00:00Z");
        // Same reason, new message: written, the transition time kept.
        assert!(set_condition(
            &mut conditions,
            failed("Kube", "forbidden: pods", "2026-01-01T00:00:02Z")
        ));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].message, "forbidden: pods");
        assert_eq!(conditions[0].last_transition_time, "2026-01-01T00:00:00Z");
        // Another reason: a transition.
        assert!(set_condition(
            &mut conditions,
            failed("Build", "bad", "2026-01-01T00:00:03Z")
        ));
        assert_eq!(conditions[0].last_transition_time, "2026-01-01T00:00:03Z");
    }
}
