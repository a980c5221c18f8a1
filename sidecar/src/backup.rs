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
//! Storage is `object_store`: a local directory, an S3(-compatible) bucket or an Azure Blob
//! Storage container. Credentials are given to [`Storage::open`] explicitly
//! ([`Credentials`]): a member reads them from the Secret its Pod mounts (Kubernetes) or from
//! named variables of its environment (local mode), the coordinator from the Secret the spec
//! names; never from a request, and no client is ever built to look for credentials of its
//! own (`AmazonS3Builder::from_env`, instance metadata, workload identity).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use etcd_operator::{
    backup::{
        BackupMeta, BackupOwner, backup_name, cluster_dir, is_backup_name, legacy_dir, meta_object,
        namespace_segment, newest_first, snapshot_object,
    },
    proto,
};
use futures::StreamExt;
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart, aws::AmazonS3Builder,
    azure::MicrosoftAzureBuilder, local::LocalFileSystem, path::Path as ObjectPath,
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

/// The names of the credentials a storage reads, in a Secret (Kubernetes) or, in local mode,
/// the process's environment.
pub mod credential_keys {
    /// S3 access key id.
    pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    /// S3 secret access key.
    pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    /// S3 session token (optional).
    pub const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
    /// Azure storage account key.
    pub const AZURE_STORAGE_ACCOUNT_KEY: &str = "AZURE_STORAGE_ACCOUNT_KEY";
    /// Every key read, for the local mode's environment.
    pub const ALL: [&str; 4] = [
        AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY,
        AWS_SESSION_TOKEN,
        AZURE_STORAGE_ACCOUNT_KEY,
    ];
}

/// The Azurite emulator's well-known development account (public, the same everywhere).
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// The Azurite emulator's well-known development account key (public, the same everywhere).
pub const EMULATOR_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The credentials of one storage, read from exactly one named place (a Secret, or named
/// variables); never from a process's ambient configuration or instance metadata.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    values: std::collections::BTreeMap<String, String>,
    /// Where they were read from, for messages.
    source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "credentials from {} (keys: {:?})",
            self.source,
            self.values.keys().collect::<Vec<_>>()
        )
    }
}

impl Credentials {
    /// No credentials (local storage, the emulator).
    pub fn none() -> Self {
        Self {
            values: Default::default(),
            source: "nowhere".into(),
        }
    }

    /// The credentials `lookup` gives for the keys of [`credential_keys::ALL`], read from
    /// `source` (named in messages).
    pub fn from_lookup(source: &str, lookup: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            values: credential_keys::ALL
                .iter()
                .filter_map(|k| {
                    lookup(k)
                        .filter(|v| !v.is_empty())
                        .map(|v| (k.to_string(), v))
                })
                .collect(),
            source: source.to_string(),
        }
    }

    /// The variables of [`credential_keys::ALL`] in this process's environment (local mode:
    /// what the coordinator was started with, and passes on to its sidecars).
    pub fn from_environment() -> Self {
        Self::from_lookup("the environment", |k| std::env::var(k).ok())
    }

    /// The files `<dir>/<key>` of a Secret mounted at `dir` (a member's Pod).
    pub fn from_directory(dir: &Path) -> Self {
        Self::from_lookup(&dir.display().to_string(), |k| {
            std::fs::read_to_string(dir.join(k))
                .ok()
                .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    fn require(&self, key: &str, storage: &str) -> Result<&str, BackupError> {
        self.get(key).ok_or_else(|| {
            BackupError::Config(format!(
                "no credentials for {storage}: {key} is not in {} (name a Secret holding it in the storage's credentialsSecret; nothing falls back to an environment or instance metadata)",
                self.source
            ))
        })
    }
}

/// Backup metadata read before, by object and version (ETag, modification time, size): a
/// listing reads again only what is new or changed. Shared by clones.
#[derive(Clone, Default)]
pub struct MetaCache {
    inner: Arc<std::sync::Mutex<std::collections::HashMap<String, (MetaVersion, BackupMeta)>>>,
}

type MetaVersion = (Option<String>, i64, u64);

impl std::fmt::Debug for MetaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetaCache({} entries)", self.len())
    }
}

impl MetaCache {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (MetaVersion, BackupMeta)>>
    {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, location: &ObjectPath, version: &MetaVersion) -> Option<BackupMeta> {
        self.lock()
            .get(location.as_ref())
            .filter(|(v, _)| v == version)
            .map(|(_, m)| m.clone())
    }

    fn put(&self, location: &ObjectPath, version: MetaVersion, meta: &BackupMeta) {
        self.lock()
            .insert(location.to_string(), (version, meta.clone()));
    }

    fn retain(&self, seen: &std::collections::HashSet<String>) {
        self.lock().retain(|location, _| seen.contains(location));
    }

    /// How many metadata objects are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A storage of backups: a local directory, an S3(-compatible) bucket or an Azure Blob
/// Storage container, under its prefix.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    described: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

/// Retries of storage calls: a few, within half a minute.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

impl Storage {
    /// The storage `spec` names, with `credentials` (S3 and Azure need theirs; without them
    /// this fails: no client ever looks for credentials of its own).
    pub fn open(
        spec: &proto::BackupStorage,
        credentials: &Credentials,
    ) -> Result<Self, BackupError> {
        let kinds = usize::from(!spec.local_path.is_empty())
            + usize::from(!spec.s3_bucket.is_empty())
            + usize::from(!spec.azure_container.is_empty());
        if kinds != 1 {
            return Err(BackupError::Config(
                "name exactly one storage: a local path, an S3 bucket or an Azure container".into(),
            ));
        }
        if !spec.local_path.is_empty() {
            let root = Path::new(&spec.local_path);
            if !root.is_absolute() {
                return Err(BackupError::Config(format!(
                    "the backup directory {} is not an absolute path",
                    root.display()
                )));
            }
            std::fs::create_dir_all(root).map_err(io(format!(
                "creating the backup directory {}",
                root.display()
            )))?;
            let store = LocalFileSystem::new_with_prefix(root)
                .map_err(storage(format!("opening {}", root.display())))?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: String::new(),
                described: format!("{}/", root.display()),
            });
        }
        // The clients' TLS takes the process's crypto provider (ring).
        etcd_operator::tls::install_default_provider();
        if !spec.s3_bucket.is_empty() {
            let what = format!("s3://{}/{}", spec.s3_bucket, spec.s3_prefix);
            // `AmazonS3Builder::new`, never `from_env`: that one reads every AWS_* variable
            // (web identity, container credentials, profiles), and a builder without keys
            // asks the instance metadata service.
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(&spec.s3_bucket)
                .with_region(if spec.s3_region.is_empty() {
                    "us-east-1"
                } else {
                    &spec.s3_region
                })
                .with_access_key_id(credentials.require(credential_keys::AWS_ACCESS_KEY_ID, &what)?)
                .with_secret_access_key(
                    credentials.require(credential_keys::AWS_SECRET_ACCESS_KEY, &what)?,
                )
                .with_virtual_hosted_style_request(!spec.s3_force_path_style)
                .with_retry(retry());
            if let Some(token) = credentials.get(credential_keys::AWS_SESSION_TOKEN) {
                builder = builder.with_token(token);
            }
            if !spec.s3_endpoint.is_empty() {
                builder = builder
                    .with_endpoint(&spec.s3_endpoint)
                    .with_allow_http(spec.s3_endpoint.starts_with("http://"));
            }
            let store = builder
                .build()
                .map_err(|e| BackupError::Config(e.to_string()))?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: spec.s3_prefix.clone(),
                described: what,
            });
        }
        let account = if spec.azure_account.is_empty() && spec.azure_use_emulator {
            EMULATOR_ACCOUNT
        } else {
            spec.azure_account.as_str()
        };
        let what = format!(
            "azure://{account}/{}/{}",
            spec.azure_container, spec.azure_prefix
        );
        let key = match credentials.get(credential_keys::AZURE_STORAGE_ACCOUNT_KEY) {
            Some(key) => key,
            None if spec.azure_use_emulator => EMULATOR_ACCOUNT_KEY,
            None => credentials.require(credential_keys::AZURE_STORAGE_ACCOUNT_KEY, &what)?,
        };
        // The emulator is addressed by path (`<endpoint>/<account>/<container>`), as a
        // plain endpoint: object_store's emulator switch would read its URL from the
        // environment.
        let endpoint = match (spec.azure_endpoint.as_str(), spec.azure_use_emulator) {
            ("", true) => {
                return Err(BackupError::Config(
                    "the Azure emulator needs its endpoint".into(),
                ));
            }
            (endpoint, true) => format!("{}/{account}", endpoint.trim_end_matches('/')),
            ("", false) => format!("https://{account}.blob.core.windows.net"),
            (endpoint, false) => endpoint.to_string(),
        };
        let store = MicrosoftAzureBuilder::new()
            .with_account(account)
            .with_container_name(&spec.azure_container)
            .with_access_key(key)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint)
            .with_retry(retry())
            .build()
            .map_err(|e| BackupError::Config(e.to_string()))?;
        Ok(Self {
            store: Arc::new(store),
            prefix: spec.azure_prefix.clone(),
            described: what,
        })
    }

    /// `cluster`'s directory: `<prefix><namespace>/<cluster>`, or in the earlier layout
    /// `<prefix><cluster>`; the names are checked before any path is built.
    fn dir(&self, namespace: &str, cluster: &str, legacy: bool) -> Result<ObjectPath, BackupError> {
        let dir = if legacy {
            legacy_dir(cluster)
        } else {
            cluster_dir(namespace, cluster)
        }
        .map_err(BackupError::Config)?;
        Ok(ObjectPath::from(format!("{}{dir}", self.prefix)))
    }

    fn location(&self, meta: &BackupMeta, object: &str) -> Result<ObjectPath, BackupError> {
        Ok(self
            .dir(&meta.namespace, &meta.cluster, meta.legacy)?
            .join(object))
    }

    /// Where `namespace`/`cluster`'s backups are, for messages.
    pub fn describe(&self, namespace: &str, cluster: &str) -> String {
        format!(
            "{}{}/{cluster}/",
            self.described,
            namespace_segment(namespace)
        )
    }

    /// The objects directly in `dir`: `(name, meta)` of each, by name.
    async fn objects(
        &self,
        dir: &ObjectPath,
    ) -> Result<Vec<object_store::ObjectMeta>, BackupError> {
        let listed = self.store.list_with_delimiter(Some(dir)).await;
        match listed {
            Ok(listed) => Ok(listed.objects),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(storage(format!("listing {dir}"))(e)),
        }
    }

    /// Every listed backup of `namespace`/`cluster` (those with metadata naming that
    /// cluster), newest first: its own directory's, and the earlier layout's (marked
    /// `legacy`, and only those that do not name another namespace). Metadata that does
    /// not parse is skipped with a warning; metadata read before and unchanged (same
    /// location, ETag and modification time) is taken from `cache`, so a listing reads
    /// only what is new.
    pub async fn list(
        &self,
        namespace: &str,
        cluster: &str,
        cache: &MetaCache,
    ) -> Result<Vec<BackupMeta>, BackupError> {
        let mut metas = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for legacy in [false, true] {
            let dir = self.dir(namespace, cluster, legacy)?;
            for object in self.objects(&dir).await? {
                if object.location.extension() != Some("json") {
                    continue;
                }
                seen.insert(object.location.to_string());
                let Some(mut meta) = self.read_meta_cached(&object, cache).await? else {
                    continue;
                };
                meta.legacy = legacy;
                let belongs = meta.cluster == cluster
                    && if legacy {
                        meta.namespace.is_empty()
                            || namespace_segment(&meta.namespace) == namespace_segment(namespace)
                    } else {
                        namespace_segment(&meta.namespace) == namespace_segment(namespace)
                    };
                if belongs {
                    metas.push(meta);
                } else {
                    warn!(object = %object.location, "skipping backup metadata that names another cluster");
                }
            }
        }
        cache.retain(&seen);
        Ok(newest_first(metas))
    }

    async fn read_meta_cached(
        &self,
        object: &object_store::ObjectMeta,
        cache: &MetaCache,
    ) -> Result<Option<BackupMeta>, BackupError> {
        let version = (
            object.e_tag.clone(),
            object.last_modified.timestamp_millis(),
            object.size,
        );
        if let Some(meta) = cache.get(&object.location, &version) {
            return Ok(Some(meta));
        }
        let bytes = match self.store.get(&object.location).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(storage(format!("reading {}", object.location)))?,
            // Deleted since it was listed.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(storage(format!("reading {}", object.location))(e)),
        };
        match serde_json::from_slice::<BackupMeta>(&bytes) {
            Ok(meta) => {
                cache.put(&object.location, version, &meta);
                Ok(Some(meta))
            }
            Err(e) => {
                warn!(object = %object.location, error = %e, "skipping unreadable backup metadata");
                Ok(None)
            }
        }
    }

    /// The metadata of backup `name` of `namespace`/`cluster`: in its directory, else
    /// (`legacy` set) in the earlier layout's.
    pub async fn meta(
        &self,
        namespace: &str,
        cluster: &str,
        name: &str,
    ) -> Result<BackupMeta, BackupError> {
        if !is_backup_name(name) {
            return Err(BackupError::Config(format!(
                "{name:?} is not a backup's name"
            )));
        }
        for legacy in [false, true] {
            let location = self
                .dir(namespace, cluster, legacy)?
                .join(meta_object(name));
            let got = match self.store.get(&location).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(storage(format!("reading {location}"))(e)),
            };
            let bytes = got
                .bytes()
                .await
                .map_err(storage(format!("reading {location}")))?;
            let mut meta: BackupMeta = serde_json::from_slice(&bytes)
                .map_err(|e| BackupError::Integrity(format!("the metadata of {name}: {e}")))?;
            if meta.name != name || meta.cluster != cluster {
                return Err(BackupError::Integrity(format!(
                    "the metadata at {location} names backup {:?} of cluster {:?}",
                    meta.name, meta.cluster
                )));
            }
            meta.legacy = legacy;
            return Ok(meta);
        }
        Err(BackupError::NotFound(name.into()))
    }

    /// Writes the metadata of `meta` (replacing it).
    pub async fn put_meta(&self, meta: &BackupMeta) -> Result<(), BackupError> {
        let location = self.location(meta, &meta_object(&meta.name))?;
        let bytes = serde_json::to_vec_pretty(meta)
            .map_err(|e| BackupError::Config(format!("encoding metadata: {e}")))?;
        self.store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(storage(format!("writing {location}")))?;
        Ok(())
    }

    /// The snapshot objects of `owner`'s backups left without metadata, asked for before
    /// `before_unix_ms` (see [`etcd_operator::backup::orphans`]).
    pub async fn orphans(
        &self,
        owner: &BackupOwner,
        before_unix_ms: i64,
    ) -> Result<Vec<String>, BackupError> {
        let dir = self.dir(&owner.namespace, &owner.cluster, false)?;
        let objects = self.objects(&dir).await?;
        let stem = |o: &object_store::ObjectMeta, ext: &str| {
            o.location
                .filename()
                .and_then(|f| f.strip_suffix(ext))
                .map(str::to_string)
        };
        let snapshots: Vec<String> = objects.iter().filter_map(|o| stem(o, ".db")).collect();
        let with_meta: std::collections::BTreeSet<String> =
            objects.iter().filter_map(|o| stem(o, ".json")).collect();
        Ok(etcd_operator::backup::orphans(
            &snapshots,
            &with_meta,
            owner,
            before_unix_ms,
        ))
    }

    /// Deletes the snapshot object `name` of `owner` that has no metadata (an orphan); a
    /// metadata object that appeared meanwhile keeps it.
    pub async fn delete_orphan(&self, owner: &BackupOwner, name: &str) -> Result<(), BackupError> {
        let dir = self.dir(&owner.namespace, &owner.cluster, false)?;
        match self.store.head(&dir.clone().join(meta_object(name))).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(storage(format!("reading {dir}/{}", meta_object(name)))(e)),
        }
        let location = dir.join(snapshot_object(name));
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage(format!("deleting {location}"))(e)),
        }
    }

    /// Uploads `file` as object `object` in parts; nothing is visible before it completes.
    async fn put_file(
        &self,
        meta: &BackupMeta,
        object: &str,
        file: &Path,
    ) -> Result<(), BackupError> {
        let location = self.location(meta, object)?;
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
    async fn get_file(
        &self,
        meta: &BackupMeta,
        object: &str,
        file: &Path,
    ) -> Result<(u64, String), BackupError> {
        let location = self.location(meta, object)?;
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
    pub async fn check(
        &self,
        namespace: &str,
        cluster: &str,
        name: &str,
        sha256: &str,
    ) -> Result<BackupMeta, BackupError> {
        let meta = self.meta(namespace, cluster, name).await?;
        if !sha256.is_empty() && meta.sha256 != sha256 {
            return Err(BackupError::Integrity(format!(
                "backup {name} has SHA-256 {} where {sha256} was asked for",
                meta.sha256
            )));
        }
        let location = self.location(&meta, &snapshot_object(name))?;
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

    /// Deletes backup `meta`: its metadata first, so that it is never listed without its
    /// snapshot.
    pub async fn delete(&self, meta: &BackupMeta) -> Result<(), BackupError> {
        for object in [meta_object(&meta.name), snapshot_object(&meta.name)] {
            let location = self.location(meta, &object)?;
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
    /// The cluster's namespace, name and identity.
    pub owner: &'a BackupOwner,
    /// The coordinator's clock when it asked, ms since the Unix epoch (0: not given; the
    /// member's clock names the backup then).
    pub requested_at_unix_ms: i64,
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
        owner,
        requested_at_unix_ms,
        member,
        mut client,
        scratch,
    } = source;
    if owner.uid.is_empty() {
        return Err(BackupError::Config(
            "the backup names no cluster identity: retention and restores could not tell it from another cluster's".into(),
        ));
    }
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
    let requested_at = if requested_at_unix_ms > 0 {
        requested_at_unix_ms
    } else {
        now_ms
    };
    let name = backup_name(owner, requested_at, read.revision);
    let mut meta = BackupMeta {
        name: name.clone(),
        namespace: owner.namespace.clone(),
        cluster: owner.cluster.clone(),
        uid: owner.uid.clone(),
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
        requested_at_unix_ms: requested_at,
        verified: false,
        verified_at: String::new(),
        verify_error: String::new(),
        legacy: false,
    };
    storage
        .put_file(&meta, &snapshot_object(&name), &file)
        .await?;
    // A crash here leaves a snapshot object without metadata: never listed, never used,
    // deleted after the next backup of this cluster (its name names the cluster's identity).
    etcd_operator::failpoint!("sidecar.backup.after-upload");
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
    let (size, sha256) = storage
        .get_file(meta, &snapshot_object(&meta.name), file)
        .await?;
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

/// The seed of a new cluster: fetches backup `wanted` of `namespace`/`cluster` (whose
/// SHA-256 must be `sha256`) and restores it into `data_dir` as member `name` at
/// `peer_url`. Nothing is written to `data_dir` unless the backup checks out.
#[allow(clippy::too_many_arguments)]
pub async fn restore(
    storage: &Storage,
    etcdutl: &Etcdutl,
    (namespace, cluster): (&str, &str),
    wanted: &str,
    sha256: &str,
    bump: i64,
    scratch: &Path,
    data_dir: &Path,
    name: &str,
    peer_url: &str,
) -> Result<Restored, BackupError> {
    let meta = storage.meta(namespace, cluster, wanted).await?;
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
        namespace: namespace_segment(&meta.namespace).to_string(),
        cluster: meta.cluster.clone(),
        cluster_uid: meta.uid.clone(),
        requested_at_unix_ms: meta.requested_at_unix_ms,
        legacy_layout: meta.legacy,
    }
}
