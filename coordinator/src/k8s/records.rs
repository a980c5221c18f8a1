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

    /// Written only if nothing changed the object since it was read, with the term's epoch
    /// beside it ([`super::epoch::ANNOTATION_EPOCH`]): a write of an older term that lands
    /// late finds the object changed (the newer term wrote its epoch on it before acting),
    /// reads it again, sees the newer epoch and is refused, so it never replaces a newer
    /// term's record.
    async fn save(
        &self,
        key: &ClusterKey,
        record: &DecisionRecord,
        epoch: u64,
    ) -> Result<(), RecordError> {
        let text = String::from_utf8(encode(record)).unwrap_or_default();
        let failed = |message: String| RecordError::Io {
            location: location(key),
            message,
        };
        for _ in 0..8 {
            let object = self
                .api(key)
                .get(&key.name)
                .await
                .map_err(|e| failed(format!("reading the EtcdCluster: {e}")))?;
            let recorded = object
                .metadata
                .annotations
                .as_ref()
                .and_then(super::epoch::recorded)
                .unwrap_or(0);
            if recorded > epoch {
                return Err(failed(format!(
                    "not written: coordinator term {recorded} acts on this cluster, newer than this term ({epoch})"
                )));
            }
            let patch = json!({"metadata": {
                "resourceVersion": object.metadata.resource_version,
                "annotations": {
                    ANNOTATION_RECORD: text,
                    super::epoch::ANNOTATION_EPOCH: epoch.to_string(),
                },
            }});
            match self
                .api(key)
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // Changed since it was read (a status write, a spec edit): read again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(failed(format!("writing it: {e}"))),
            }
        }
        Err(failed(
            "not written: the EtcdCluster kept changing under the write".into(),
        ))
    }
}
