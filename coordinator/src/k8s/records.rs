//! The durable decision record of each `EtcdCluster` ([`crate::record`]), kept in the
//! annotation `etcd.operator.rs/decisions` of the object itself: it goes with the cluster
//! (a cluster created again under the same name starts with none), the coordinator's RBAC
//! already lets it patch the object, and the record is read from the API server (not from
//! a watch cache that may lag behind the last write) when a term first looks at the
//! cluster.

use etcd_operator::{ClusterKey, resource::EtcdCluster};
use kube::{
    Client,
    api::{Api, ApiResource, DynamicObject, Patch, PatchParams},
};
use serde_json::json;

use super::ANNOTATION_RECORD;
use crate::record::{DecisionRecord, RecordError, RecordStore, encode, parse};

/// Records in the annotations of the `EtcdCluster` objects.
pub struct KubeRecords {
    client: Client,
    resource: ApiResource,
}

impl KubeRecords {
    /// Records through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            resource: ApiResource::erase::<EtcdCluster>(&()),
        }
    }

    fn api(&self, key: &ClusterKey) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &key.namespace, &self.resource)
    }
}

fn location(key: &ClusterKey) -> String {
    format!("(annotation {ANNOTATION_RECORD} of EtcdCluster {key})")
}

#[tonic::async_trait]
impl RecordStore for KubeRecords {
    async fn load(&self, key: &ClusterKey) -> Result<DecisionRecord, RecordError> {
        let object = self
            .api(key)
            .get_opt(&key.name)
            .await
            .map_err(|e| RecordError::Io {
                location: location(key),
                message: format!("reading the EtcdCluster: {e}"),
            })?;
        let Some(object) = object else {
            return Ok(DecisionRecord::default());
        };
        match object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_RECORD))
        {
            Some(text) => parse(text.as_bytes(), &location(key)),
            None => Ok(DecisionRecord::default()),
        }
    }

    async fn save(&self, key: &ClusterKey, record: &DecisionRecord) -> Result<(), RecordError> {
        let text = String::from_utf8(encode(record)).unwrap_or_default();
        let patch = json!({"metadata": {"annotations": {ANNOTATION_RECORD: text}}});
        self.api(key)
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| RecordError::Io {
                location: location(key),
                message: format!("writing it: {e}"),
            })
    }
}
