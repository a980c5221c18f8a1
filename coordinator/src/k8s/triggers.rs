//! What starts a reconcile besides the controller's timers: a change of the `EtcdCluster`
//! that matters (not its status: the coordinator writes that itself), and a change of what
//! the sidecars tell the coordinator that matters (not every report: one arrives every
//! second from every member).

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use etcd_operator::ClusterKey;
use futures::Stream;
use kube::{
    ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::reflector::ObjectRef,
};

use super::{ANNOTATION_BACKUP_NOW, ANNOTATION_ROTATE_CA};
use crate::{
    plan::Policy,
    registry::{Fingerprint, Registry, now_ms},
};

/// The annotations a reconcile reads from the `EtcdCluster`. (The next-ordinal annotation
/// is the coordinator's own record, read back only after a restart, with the whole list.)
pub const RECONCILED_ANNOTATIONS: &[&str] = &[ANNOTATION_BACKUP_NOW, ANNOTATION_ROTATE_CA];

/// The watch predicate of `EtcdCluster` objects: a hash of everything a reconcile acts on
/// (the generation, which moves with the spec; labels; the annotations it reads; deletion
/// and finalizers). A change of the status alone, or of any other metadata, hashes the
/// same and starts no reconcile.
pub fn cluster_changed(obj: &DynamicObject) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    obj.metadata.uid.hash(&mut hasher);
    obj.metadata.generation.hash(&mut hasher);
    obj.labels().hash(&mut hasher);
    for key in RECONCILED_ANNOTATIONS {
        obj.annotations().get(*key).hash(&mut hasher);
    }
    obj.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut hasher);
    obj.finalizers().hash(&mut hasher);
    Some(hasher.finish())
}

/// Clusters (of `namespace`, or of every namespace) whose reports, registrations, grant or
/// requests changed in a way that matters since they were last looked at, checked at every
/// `Registry::notify` and every `tick` (a report going stale is a change too). A cluster
/// seen for the first time is not a change: the controller reconciles every cluster when
/// it starts.
pub fn report_changes(
    registry: Registry,
    policy: Policy,
    namespace: Option<String>,
    resource: ApiResource,
    tick: Duration,
) -> impl Stream<Item = ObjectRef<DynamicObject>> + Send + 'static {
    let state: HashMap<ClusterKey, Fingerprint> = HashMap::new();
    futures::stream::unfold(
        (state, Vec::<ClusterKey>::new()),
        move |(mut seen, mut pending)| {
            let registry = registry.clone();
            let namespace = namespace.clone();
            let resource = resource.clone();
            async move {
                while pending.is_empty() {
                    tokio::select! {
                        _ = registry.changed() => {}
                        _ = tokio::time::sleep(tick) => {}
                    }
                    let now = now_ms();
                    let keys: Vec<ClusterKey> = registry
                        .keys()
                        .into_iter()
                        .filter(|k| namespace.as_ref().is_none_or(|ns| &k.namespace == ns))
                        .collect();
                    seen.retain(|k, _| keys.contains(k));
                    for key in keys {
                        let Some(print) =
                            registry.fingerprint(&key, now, policy.report_stale_after_ms)
                        else {
                            continue;
                        };
                        match seen.get(&key) {
                            Some(old) if *old == print => {}
                            Some(_) => {
                                seen.insert(key.clone(), print);
                                pending.push(key);
                            }
                            None => {
                                seen.insert(key, print);
                            }
                        }
                    }
                }
                let key = pending.remove(0);
                let object = ObjectRef::new_with(&key.name, resource).within(&key.namespace);
                Some((object, (seen, pending)))
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ReceivedReport;
    use etcd_operator::proto::HealthReport;
    use futures::StreamExt;
    use serde_json::json;

    fn object(metadata: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "etcd.operator.rs/v1alpha1", "kind": "EtcdCluster",
            "metadata": metadata, "spec": {"size": 3, "version": "3.6.15"}
        }))
        .unwrap()
    }

    #[test]
    fn only_what_a_reconcile_reads_changes_the_predicate() {
        let base = json!({"name": "a", "namespace": "ns", "uid": "u", "generation": 2,
                          "resourceVersion": "10", "labels": {"team": "x"},
                          "annotations": {"etcd.operator.rs/next-ordinal": "3"}});
        let hash = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut meta = base.clone();
            f(&mut meta);
            let mut obj = object(meta);
            obj.data["status"] = json!({"phase": "Running"});
            cluster_changed(&obj)
        };
        let same = hash(&|_| {});
        // Status, resource version, managed fields, the coordinator's own annotation.
        let mut with_status = object(base.clone());
        with_status.data["status"] = json!({"phase": "Degraded", "readyMembers": 2});
        assert_eq!(cluster_changed(&with_status), same);
        assert_eq!(hash(&|m| m["resourceVersion"] = json!("11")), same);
        assert_eq!(
            hash(&|m| m["annotations"]["etcd.operator.rs/next-ordinal"] = json!("4")),
            same
        );
        // The spec (generation), labels, the backup annotation, deletion, finalizers.
        assert_ne!(hash(&|m| m["generation"] = json!(3)), same);
        assert_ne!(hash(&|m| m["labels"]["team"] = json!("y")), same);
        assert_ne!(
            hash(&|m| m["annotations"][ANNOTATION_BACKUP_NOW] = json!("1")),
            same
        );
        assert_ne!(
            hash(&|m| m["deletionTimestamp"] = json!("2026-01-01T00:00:00Z")),
            same
        );
        assert_ne!(hash(&|m| m["finalizers"] = json!(["x/y"])), same);
    }

    fn report(key: &ClusterKey, healthy: bool, index: u64) -> ReceivedReport {
        ReceivedReport::new(
            HealthReport {
                member_name: format!("{}-0000", key.name),
                member_id: 7,
                healthy,
                leader: true,
                raft_index: index,
                raft_term: index,
                revision: index as i64,
                observed_at_unix_ms: now_ms(),
                ..Default::default()
            },
            now_ms(),
        )
    }

    type Changes = std::pin::Pin<Box<dyn Stream<Item = ObjectRef<DynamicObject>> + Send>>;

    /// The next change within a moment, if any.
    async fn next(
        changes: &mut Changes,
    ) -> Result<Option<ObjectRef<DynamicObject>>, tokio::time::error::Elapsed> {
        tokio::time::timeout(Duration::from_millis(150), changes.next()).await
    }

    #[tokio::test]
    async fn reports_start_a_reconcile_only_when_something_that_matters_changes() {
        let registry = Registry::new();
        let a = ClusterKey::new("ns", "a");
        let other = ClusterKey::new("elsewhere", "b");
        let put = |key: &ClusterKey, r: ReceivedReport| {
            registry.with(key, |entry, _| {
                entry.reports.insert(r.report.member_name.clone(), r);
            });
        };
        put(&a, report(&a, true, 1));
        put(&other, report(&other, true, 1));
        let policy = Policy {
            report_stale_after_ms: 2_000,
            ..Policy::default()
        };
        let resource = ApiResource::erase::<etcd_operator::resource::EtcdCluster>(&());
        let mut changes: Changes = Box::pin(report_changes(
            registry.clone(),
            policy,
            Some("ns".into()),
            resource,
            Duration::from_millis(20),
        ));
        // Seen first: no change. New reports whose only news is the raft index: none.
        for i in 2..6 {
            put(&a, report(&a, true, i));
            assert!(
                next(&mut changes).await.is_err(),
                "a moving raft index is no news"
            );
        }
        // Unhealthy: a change, once. The other namespace's cluster is never named.
        put(&a, report(&a, false, 7));
        put(&other, report(&other, false, 7));
        let changed = next(&mut changes).await.expect("a change");
        assert_eq!(
            changed.map(|o| (o.name, o.namespace)),
            Some(("a".into(), Some("ns".into())))
        );
        assert!(next(&mut changes).await.is_err());
        // No report for longer than the staleness bound: a change, without any report.
        let stale = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .expect("a report going stale is a change");
        assert_eq!(stale.map(|o| o.name), Some("a".into()));
        // An operator's request (delete-member) is one too.
        registry.with(&a, |entry, _| {
            entry.delete_requested.insert("a-0000".into());
        });
        registry.notify();
        assert!(next(&mut changes).await.is_ok_and(|o| o.is_some()));
    }
}
