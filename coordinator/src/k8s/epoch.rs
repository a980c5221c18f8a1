//! The epoch of a Kubernetes term (see `crate::epoch`): a counter kept on the Lease
//! ([`ANNOTATION_EPOCH`]), raised at each acquisition above the highest epoch recorded on
//! the `EtcdCluster`s the coordinator can list; and each `EtcdCluster` records the epoch
//! of the term that acts on it before that term acts ([`record_on_cluster`]). A Lease
//! deleted, or replaced by one without the counter, therefore never restarts the count:
//! every epoch a sidecar can have seen was first written on its cluster.

use std::collections::BTreeMap;

use etcd_operator::resource::EtcdCluster;
use kube::{
    Client, ResourceExt,
    api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::json;

/// On the Lease and on each `EtcdCluster`: the epoch of the newest coordinator term that
/// held the Lease, or that acted on the cluster.
pub const ANNOTATION_EPOCH: &str = "etcd.operator.rs/coordinator-epoch";

/// The epoch recorded in `annotations`, if one is (an unreadable value counts as none: it
/// was never written by a coordinator).
pub fn recorded(annotations: &BTreeMap<String, String>) -> Option<u64> {
    annotations.get(ANNOTATION_EPOCH)?.trim().parse().ok()
}

fn clusters(client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<EtcdCluster>(&());
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// The highest epoch recorded on the `EtcdCluster`s of `scopes` (a namespace each, `None`
/// for every namespace); 0 when none records one. An error when a scope cannot be listed:
/// a term must not begin below an epoch it could not read.
pub async fn highest_on_clusters(
    client: &Client,
    scopes: &[Option<String>],
) -> Result<u64, kube::Error> {
    let mut highest = 0;
    for scope in scopes {
        let list = clusters(client, scope.as_deref())
            .list(&ListParams::default())
            .await?;
        for cluster in &list.items {
            highest = highest.max(recorded(cluster.annotations()).unwrap_or(0));
        }
    }
    Ok(highest)
}

/// Records `epoch` on every `EtcdCluster` of `scopes` (see [`record_on_cluster`]): a term
/// taken without a Lease claims it everywhere before it acts anywhere, so the next start
/// counts above it even if it acted on no cluster.
pub async fn record_on_all(
    client: &Client,
    scopes: &[Option<String>],
    epoch: u64,
) -> Result<(), kube::Error> {
    for scope in scopes {
        let list = clusters(client, scope.as_deref())
            .list(&ListParams::default())
            .await?;
        for cluster in &list.items {
            record_on_cluster(client, cluster, epoch).await?;
        }
    }
    Ok(())
}

/// What [`record_on_cluster`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The cluster records this epoch (written now, or already).
    Done,
    /// The cluster records a newer term's epoch: this term must not act on it.
    Newer(u64),
}

/// Records `epoch` on the cluster `obj` before its term acts on it: written when the
/// cluster records an older one, with the `resourceVersion` read, so that a value read
/// stale never overwrites a newer term's (a conflict reads the cluster again).
pub async fn record_on_cluster(
    client: &Client,
    obj: &DynamicObject,
    epoch: u64,
) -> Result<Recorded, kube::Error> {
    let namespace = obj.namespace();
    let api = clusters(client, namespace.as_deref());
    let name = obj.name_any();
    let mut current = obj.clone();
    for _ in 0..3 {
        match recorded(current.annotations()) {
            Some(e) if e > epoch => return Ok(Recorded::Newer(e)),
            Some(e) if e == epoch => return Ok(Recorded::Done),
            _ => {}
        }
        let patch = json!({"metadata": {
            "resourceVersion": current.resource_version(),
            "annotations": {ANNOTATION_EPOCH: epoch.to_string()},
        }});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(Recorded::Done),
            Err(kube::Error::Api(s)) if s.code == 409 => current = api.get(&name).await?,
            Err(e) => return Err(e),
        }
    }
    // Changed under us three times in a row: the next reconcile tries again.
    Err(kube::Error::Api(
        kube::core::Status::failure(
            &format!("{name}: changed while its coordinator epoch was recorded"),
            "Conflict",
        )
        .with_code(409)
        .boxed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_number_is_an_epoch() {
        let mut a = BTreeMap::new();
        assert_eq!(recorded(&a), None);
        a.insert(ANNOTATION_EPOCH.to_string(), "42".to_string());
        assert_eq!(recorded(&a), Some(42));
        a.insert(ANNOTATION_EPOCH.to_string(), "x".to_string());
        assert_eq!(recorded(&a), None);
    }
}
