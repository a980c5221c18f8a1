//! Backups, the member's side (and the storage both sides use).
//!
//! Taking one: stream etcd's snapshot from the local member into a scratch file, check the
//! SHA-256 etcd appends to the stream, read its revision and key count with `etcdutl
//! snapshot status`, store it (a multipart upload, which no store shows before it completes),
//! then its metadata (only a backup with metadata is listed). Proving it restorable: fetch
//! it back from the storage, check its SHA-256, `etcdutl snapshot restore` it into a scratch
//! directory (etcdutl checks etcd's own digest and rewrites the database) and read the
//! restored database back at the backup's revision. Only then is it marked verified.
//!
//! Restoring one (the seed of a new cluster): fetch, check the SHA-256, `etcdutl snapshot
//! restore` into the member's data directory with `--bump-revision` and `--mark-compacted`
//! where this `etcdutl` has them.
//!
//! Storage is `object_store`: a local directory or an S3(-compatible) bucket. S3 credentials
//! come from this process's environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), never
//! from a request.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use etcd_operator::{
    backup::{BackupMeta, backup_name, meta_object, newest_first, snapshot_object},
    proto,
};
use futures::StreamExt;
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart, aws::AmazonS3Builder,
    local::LocalFileSystem, path::Path as ObjectPath,
};
use ring::digest::{Context, SHA256};
use serde::Deserialize;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

/// Why a backup or a restore failed.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The storage refused or could not be reached.
    #[error("storage: {context}: {source}")]
    Storage {
        /// What was being done.
        context: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The storage is not configured usably.
    #[error("storage: {0}")]
    Config(String),
    /// A local file could not be written or read.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// etcd failed.
    #[error("etcd {op}: {source}")]
    Etcd {
        /// The call.
        op: &'static str,
        /// The error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcdutl failed, or is missing.
    #[error("etcdutl: {0}")]
    Etcdutl(String),
    /// Bytes that do not match their checksum, or a backup that is not what it says.
    #[error("integrity: {0}")]
    Integrity(String),
    /// No such backup.
    #[error("no backup {0:?} in the storage")]
    NotFound(String),
    /// The member cannot take one (no etcdutl, its etcd unreachable).
    #[error("{0}")]
    Member(String),
}

impl BackupError {
    /// A stable word for the kind of failure (metrics, events).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Storage { .. } | Self::Config(_) => "storage",
            Self::Io { .. } => "io",
            Self::Etcd { .. } => "etcd",
            Self::Etcdutl(_) => "etcdutl",
            Self::Integrity(_) => "integrity",
            Self::NotFound(_) => "not_found",
            Self::Member(_) => "member",
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

fn storage(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Storage { context, source }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Chunks of a multipart upload.
const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

/// A cluster's backups in one storage.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    described: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

impl Storage {
    /// The backups of `cluster` in `spec`: `<path>/<cluster>/` or `s3://<bucket>/<prefix><cluster>/`.
    pub fn open(spec: &proto::BackupStorage, cluster: &str) -> Result<Self, BackupError> {
        match (spec.local_path.is_empty(), spec.s3_bucket.is_empty()) {
            (false, true) => {
                let dir = Path::new(&spec.local_path).join(cluster);
                std::fs::create_dir_all(&dir).map_err(io(format!(
                    "creating the backup directory {}",
                    dir.display()
                )))?;
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(storage(format!("opening {}", dir.display())))?;
                Ok(Self {
                    store: Arc::new(store),
                    prefix: ObjectPath::default(),
                    described: dir.display().to_string(),
                })
            }
            (true, false) => {
                // The S3 client's TLS takes the process's crypto provider (ring).
                etcd_operator::tls::install_default_provider();
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&spec.s3_bucket)
                    .with_region(if spec.s3_region.is_empty() {
                        "us-east-1"
                    } else {
                        &spec.s3_region
                    })
                    .with_virtual_hosted_style_request(!spec.s3_force_path_style)
                    .with_retry(object_store::RetryConfig {
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(30),
                        ..Default::default()
                    });
                if !spec.s3_endpoint.is_empty() {
                    builder = builder
                        .with_endpoint(&spec.s3_endpoint)
                        .with_allow_http(spec.s3_endpoint.starts_with("http://"));
                }
                let store = builder
                    .build()
                    .map_err(|e| BackupError::Config(e.to_string()))?;
                let prefix = format!("{}{cluster}", spec.s3_prefix);
                Ok(Self {
                    store: Arc::new(store),
                    described: format!("s3://{}/{prefix}/", spec.s3_bucket),
                    prefix: ObjectPath::from(prefix),
                })
            }
            _ => Err(BackupError::Config(
                "name exactly one storage: a local path or an S3 bucket".into(),
            )),
        }
    }

    fn path(&self, object: &str) -> ObjectPath {
        if self.prefix.as_ref().is_empty() {
            ObjectPath::from(object)
        } else {
            self.prefix.clone().join(object)
        }
    }

    /// Every listed backup (those with metadata), newest first. Metadata that does not
    /// parse is skipped with a warning.
    pub async fn list(&self) -> Result<Vec<BackupMeta>, BackupError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let mut objects = self.store.list(prefix);
        let mut metas = Vec::new();
        while let Some(object) = objects.next().await {
            let object = object.map_err(storage(format!("listing {self:?}")))?;
            if object.location.extension() != Some("json") {
                continue;
            }
            let bytes = self
                .store
                .get(&object.location)
                .await
                .map_err(storage(format!("reading {}", object.location)))?
                .bytes()
                .await
                .map_err(storage(format!("reading {}", object.location)))?;
            match serde_json::from_slice::<BackupMeta>(&bytes) {
                Ok(meta) => metas.push(meta),
                Err(e) => {
                    warn!(object = %object.location, error = %e, "skipping unreadable backup metadata")
                }
            }
        }
        Ok(newest_first(metas))
    }

    /// The metadata of backup `name`.
    pub async fn meta(&self, name: &str) -> Result<BackupMeta, BackupError> {
        let location = self.path(&meta_object(name));
        let got = match self.store.get(&location).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackupError::NotFound(name.into()));
            }
            Err(e) => return Err(storage(format!("reading {location}"))(e)),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(storage(format!("reading {location}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| BackupError::Integrity(format!("the metadata of {name}: {e}")))
    }

    /// Writes the metadata of `meta.name` (replacing it).
    pub async fn put_meta(&self, meta: &BackupMeta) -> Result<(), BackupError> {
        let location = self.path(&meta_object(&meta.name));
        let bytes = serde_json::to_vec_pretty(meta)
            .map_err(|e| BackupError::Config(format!("encoding metadata: {e}")))?;
        self.store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(storage(format!("writing {location}")))?;
        Ok(())
    }

    /// Uploads `file` as object `object` in parts; nothing is visible before it completes.
    async fn put_file(&self, object: &str, file: &Path) -> Result<(), BackupError> {
        let location = self.path(object);
        let upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(storage(format!("starting the upload of {location}")))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_CHUNK);
        let mut source = tokio::fs::File::open(file)
            .await
            .map_err(io(format!("opening {}", file.display())))?;
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = match source.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(format!("reading {}", file.display()))(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(4).await {
                let _ = writer.abort().await;
                return Err(storage(format!("uploading {location}"))(e));
            }
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map_err(storage(format!("completing the upload of {location}")))?;
        Ok(())
    }

    /// Downloads object `object` into `file`; returns its size and SHA-256 (hex).
    async fn get_file(&self, object: &str, file: &Path) -> Result<(u64, String), BackupError> {
        let location = self.path(object);
        let got = match self.store.get(&location).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackupError::NotFound(object.into()));
            }
            Err(e) => return Err(storage(format!("reading {location}"))(e)),
        };
        let mut out = tokio::fs::File::create(file)
            .await
            .map_err(io(format!("creating {}", file.display())))?;
        let mut hash = Context::new(&SHA256);
        let mut size = 0u64;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(storage(format!("reading {location}")))?;
            hash.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .map_err(io(format!("writing {}", file.display())))?;
        }
        out.sync_all()
            .await
            .map_err(io(format!("writing {}", file.display())))?;
        Ok((size, hex(hash.finish().as_ref())))
    }

    /// Reads backup `name` whole, without keeping it, and checks it against its metadata
    /// (and against `sha256` when given): its bytes must hash to what was recorded and be
    /// as many. Proves that the storage still holds a backup that can be restored, before
    /// anything is done that needs it.
    pub async fn check(&self, name: &str, sha256: &str) -> Result<BackupMeta, BackupError> {
        let meta = self.meta(name).await?;
        if !sha256.is_empty() && meta.sha256 != sha256 {
            return Err(BackupError::Integrity(format!(
                "backup {name} has SHA-256 {} where {sha256} was asked for",
                meta.sha256
            )));
        }
        let location = self.path(&snapshot_object(name));
        let got = match self.store.get(&location).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackupError::NotFound(snapshot_object(name)));
            }
            Err(e) => return Err(storage(format!("reading {location}"))(e)),
        };
        let mut hash = Context::new(&SHA256);
        let mut size = 0u64;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(storage(format!("reading {location}")))?;
            hash.update(&chunk);
            size += chunk.len() as u64;
        }
        let sum = hex(hash.finish().as_ref());
        if sum != meta.sha256 || size != meta.size_bytes {
            return Err(BackupError::Integrity(format!(
                "backup {name} is damaged: {size} bytes hashing to {sum}, where its metadata records {} bytes hashing to {}",
                meta.size_bytes, meta.sha256
            )));
        }
        Ok(meta)
    }

    /// Deletes backup `name`: its metadata first, so that it is never listed without its
    /// snapshot.
    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        for object in [meta_object(name), snapshot_object(name)] {
            let location = self.path(&object);
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(storage(format!("deleting {location}"))(e)),
            }
        }
        Ok(())
    }
}

/// The `etcdutl` binary and what it can do.
#[derive(Clone, Debug)]
pub struct Etcdutl {
    path: PathBuf,
}

/// What `etcdutl snapshot status -w json` prints.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// The database's hash.
    pub hash: u64,
    /// Its revision.
    pub revision: i64,
    /// Keys in it.
    pub total_key: u64,
    /// Its size.
    pub total_size: u64,
}

impl Etcdutl {
    /// `etcdutl` at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    async fn run(&self, args: &[String]) -> Result<String, BackupError> {
        let out = tokio::process::Command::new(&self.path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| BackupError::Etcdutl(format!("running {}: {e}", self.path.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(BackupError::Etcdutl(format!(
                "`{} {}` failed ({}): {last}",
                self.path.display(),
                args.first().map(String::as_str).unwrap_or(""),
                out.status
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `etcdutl snapshot status` of a snapshot or database file.
    pub async fn status(&self, file: &Path) -> Result<SnapshotStatus, BackupError> {
        let text = self
            .run(&[
                "snapshot".into(),
                "status".into(),
                file.display().to_string(),
                "-w".into(),
                "json".into(),
            ])
            .await?;
        serde_json::from_str(text.trim())
            .map_err(|e| BackupError::Etcdutl(format!("unreadable snapshot status {text:?}: {e}")))
    }

    /// True when this `etcdutl` knows `--bump-revision` and `--mark-compacted` (3.5.9 and
    /// later; the 3.5.1 build does not).
    pub async fn can_bump_revision(&self) -> bool {
        self.run(&["snapshot".into(), "restore".into(), "--help".into()])
            .await
            .is_ok_and(|help| help.contains("--bump-revision") && help.contains("--mark-compacted"))
    }

    /// `etcdutl snapshot restore` of `snapshot` into `data_dir` as the one member `name` at
    /// `peer_url`; `bump` revisions with `--mark-compacted` when given.
    pub async fn restore(
        &self,
        snapshot: &Path,
        data_dir: &Path,
        name: &str,
        peer_url: &str,
        token: &str,
        bump: Option<i64>,
    ) -> Result<(), BackupError> {
        let mut args = vec![
            "snapshot".to_string(),
            "restore".to_string(),
            snapshot.display().to_string(),
            format!("--data-dir={}", data_dir.display()),
            format!("--name={name}"),
            format!("--initial-cluster={name}={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster-token={token}"),
        ];
        if let Some(bump) = bump {
            args.push(format!("--bump-revision={bump}"));
            args.push("--mark-compacted".into());
        }
        self.run(&args).await.map(|_| ())
    }
}

/// What the member knows when it takes a backup.
pub struct Source<'a> {
    /// The cluster's namespace and name.
    pub cluster: &'a etcd_operator::ClusterKey,
    /// This member's name.
    pub member: &'a str,
    /// A client of this member's etcd.
    pub client: etcd_client::Client,
    /// A scratch directory of this member's (emptied after use).
    pub scratch: &'a Path,
}

/// Takes a backup of the member `source` speaks for into `storage`, then proves it
/// restorable; returns its metadata (`verified` false, with the reason, when the proof
/// failed: the backup is stored all the same).
pub async fn take(
    source: Source<'_>,
    storage: &Storage,
    etcdutl: &Etcdutl,
) -> Result<BackupMeta, BackupError> {
    let Source {
        cluster,
        member,
        mut client,
        scratch,
    } = source;
    let _ = tokio::fs::remove_dir_all(scratch).await;
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(io(format!("creating {}", scratch.display())))?;
    let status = client.status().await.map_err(|source| BackupError::Etcd {
        op: "status",
        source,
    })?;
    let file = scratch.join("snapshot.db");
    let (size, sha256) = stream_snapshot(&mut client, &file).await?;
    let read = etcdutl.status(&file).await?;
    let now_ms = crate::member::now_unix_ms();
    let now = now_ms / 1000;
    let name = backup_name(&cluster.name, now_ms, read.revision);
    storage.put_file(&snapshot_object(&name), &file).await?;
    // A crash here leaves a snapshot object without metadata: never listed, never used.
    etcd_operator::failpoint!("sidecar.backup.after-upload");
    let mut meta = BackupMeta {
        name: name.clone(),
        namespace: cluster.namespace.clone(),
        cluster: cluster.name.clone(),
        etcd_cluster_id: format!(
            "{:x}",
            status.header().map(|h| h.cluster_id()).unwrap_or_default()
        ),
        member: member.to_string(),
        etcd_version: status.version().to_string(),
        revision: read.revision,
        raft_index: status.raft_index(),
        total_keys: read.total_key,
        size_bytes: size,
        sha256,
        created_at: rfc3339(now),
        verified: false,
        verified_at: String::new(),
        verify_error: String::new(),
    };
    storage.put_meta(&meta).await?;
    // A crash here leaves a backup listed as not verified, which a restore never picks.
    etcd_operator::failpoint!("sidecar.backup.after-metadata");
    info!(backup = %name, revision = meta.revision, size, "backup stored; proving it restorable");
    match verify(storage, etcdutl, &meta, scratch).await {
        Ok(()) => {
            meta.verified = true;
            meta.verified_at = rfc3339(crate::member::now_unix_ms() / 1000);
        }
        Err(e) => {
            warn!(backup = %name, error = %e, "the backup could not be proven restorable");
            meta.verify_error = e.to_string();
        }
    }
    storage.put_meta(&meta).await?;
    let _ = tokio::fs::remove_dir_all(scratch).await;
    Ok(meta)
}

fn rfc3339(unix_seconds: i64) -> String {
    jiff::Timestamp::from_second(unix_seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Streams etcd's snapshot into `file`: checks the SHA-256 etcd appends to the stream (its
/// last 32 bytes, over everything before them); returns the size and the SHA-256 of the
/// whole file, hex.
async fn stream_snapshot(
    client: &mut etcd_client::Client,
    file: &Path,
) -> Result<(u64, String), BackupError> {
    let mut stream = client
        .snapshot()
        .await
        .map_err(|source| BackupError::Etcd {
            op: "snapshot",
            source,
        })?;
    let mut out = tokio::fs::File::create(file)
        .await
        .map_err(io(format!("creating {}", file.display())))?;
    let mut whole = Context::new(&SHA256);
    let mut body = Context::new(&SHA256);
    let mut pending: Vec<u8> = Vec::new();
    let mut size = 0u64;
    while let Some(message) = stream.message().await.map_err(|source| BackupError::Etcd {
        op: "snapshot stream",
        source,
    })? {
        let blob = message.blob();
        out.write_all(blob)
            .await
            .map_err(io(format!("writing {}", file.display())))?;
        whole.update(blob);
        size += blob.len() as u64;
        pending.extend_from_slice(blob);
        if pending.len() > 32 {
            let n = pending.len() - 32;
            body.update(&pending[..n]);
            pending.drain(..n);
        }
    }
    out.sync_all()
        .await
        .map_err(io(format!("writing {}", file.display())))?;
    if pending.len() != 32 || body.finish().as_ref() != pending.as_slice() {
        return Err(BackupError::Integrity(
            "the snapshot stream does not match the SHA-256 etcd appended to it".into(),
        ));
    }
    Ok((size, hex(whole.finish().as_ref())))
}

/// Fetches backup `meta` back from `storage`, checks its SHA-256, restores it into a
/// scratch directory and reads the restored database back at the same revision.
pub async fn verify(
    storage: &Storage,
    etcdutl: &Etcdutl,
    meta: &BackupMeta,
    scratch: &Path,
) -> Result<(), BackupError> {
    let fetched = scratch.join("verify.db");
    let restored = scratch.join("verify-restore");
    let _ = tokio::fs::remove_dir_all(&restored).await;
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(io(format!("creating {}", scratch.display())))?;
    fetch_checked(storage, meta, &fetched).await?;
    etcdutl
        .restore(
            &fetched,
            &restored,
            "verify",
            "http://127.0.0.1:2380",
            "verify",
            None,
        )
        .await?;
    let db = restored.join("member").join("snap").join("db");
    let back = etcdutl.status(&db).await?;
    let _ = tokio::fs::remove_dir_all(&restored).await;
    let _ = tokio::fs::remove_file(&fetched).await;
    if back.revision != meta.revision {
        return Err(BackupError::Integrity(format!(
            "restored at revision {} where the backup says {}",
            back.revision, meta.revision
        )));
    }
    // The key counts are not compared: `totalKey` counts every bucket, and a restore
    // rewrites the membership buckets for the one-member scratch cluster. The bytes were
    // checked against their SHA-256 (and etcdutl checked etcd's own digest), the database
    // opened and was rewritten, and it is at the backup's revision.
    if back.total_key == 0 {
        return Err(BackupError::Integrity(
            "the restored database holds no keys".into(),
        ));
    }
    Ok(())
}

/// Downloads backup `meta`'s snapshot to `file` and checks its size and SHA-256 against
/// the metadata.
async fn fetch_checked(
    storage: &Storage,
    meta: &BackupMeta,
    file: &Path,
) -> Result<(), BackupError> {
    let (size, sha256) = storage.get_file(&snapshot_object(&meta.name), file).await?;
    if sha256 != meta.sha256 || size != meta.size_bytes {
        return Err(BackupError::Integrity(format!(
            "the stored snapshot of {} has SHA-256 {sha256} ({size} bytes) where its metadata says {} ({} bytes)",
            meta.name, meta.sha256, meta.size_bytes
        )));
    }
    Ok(())
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup.
    pub backup: String,
    /// Its revision.
    pub revision: i64,
    /// The revision bump applied (0 when this `etcdutl` cannot).
    pub bumped_by: i64,
}

/// The seed of a new cluster: fetches backup `wanted` (whose SHA-256 must be `sha256`)
/// and restores it into `data_dir` as member `name` at `peer_url`. Nothing is written to
/// `data_dir` unless the backup checks out.
#[allow(clippy::too_many_arguments)]
pub async fn restore(
    storage: &Storage,
    etcdutl: &Etcdutl,
    wanted: &str,
    sha256: &str,
    bump: i64,
    scratch: &Path,
    data_dir: &Path,
    name: &str,
    peer_url: &str,
) -> Result<Restored, BackupError> {
    let meta = storage.meta(wanted).await?;
    if !sha256.is_empty() && meta.sha256 != sha256 {
        return Err(BackupError::Integrity(format!(
            "backup {wanted} has SHA-256 {} where {sha256} was asked for",
            meta.sha256
        )));
    }
    let _ = tokio::fs::remove_dir_all(scratch).await;
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(io(format!("creating {}", scratch.display())))?;
    let file = scratch.join("restore.db");
    fetch_checked(storage, &meta, &file).await?;
    // Nothing is in the data directory yet: a start again registers and restores anew.
    etcd_operator::failpoint!("sidecar.restore.after-fetch");
    let bump = if bump > 0 {
        if etcdutl.can_bump_revision().await {
            Some(bump)
        } else {
            warn!(
                "this etcdutl has no --bump-revision: the restored cluster resumes at the backup's revision"
            );
            None
        }
    } else {
        None
    };
    let token = format!("{name}-restored-{}", crate::member::now_unix_ms());
    etcdutl
        .restore(&file, data_dir, name, peer_url, &token, bump)
        .await?;
    // The data directory holds the restored member: a start again runs etcd on it.
    etcd_operator::failpoint!("sidecar.restore.after-etcdutl-restore");
    let _ = tokio::fs::remove_dir_all(scratch).await;
    info!(backup = %wanted, revision = meta.revision, bumped_by = bump.unwrap_or(0), "restored");
    Ok(Restored {
        backup: wanted.to_string(),
        revision: meta.revision,
        bumped_by: bump.unwrap_or(0),
    })
}

/// The wire form of stored metadata.
pub fn to_proto(meta: &BackupMeta) -> proto::Backup {
    proto::Backup {
        name: meta.name.clone(),
        revision: meta.revision,
        size_bytes: meta.size_bytes,
        sha256: meta.sha256.clone(),
        verified: meta.verified,
        created_at: meta.created_at.clone(),
        etcd_version: meta.etcd_version.clone(),
        member: meta.member.clone(),
        raft_index: meta.raft_index,
        total_keys: meta.total_keys,
        etcd_cluster_id: meta.etcd_cluster_id.clone(),
        verify_error: meta.verify_error.clone(),
    }
}
