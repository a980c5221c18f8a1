//! Reading `EtcdCluster` manifests from YAML (local mode reads the same files `kubectl apply`
//! takes). Documents of other kinds are skipped; anything malformed is a clear error.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::resource::{API_GROUP, API_VERSION, EtcdCluster, KIND};

/// The largest manifest file read (a cluster spec is a few hundred bytes).
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Why a manifest could not be read.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is too large.
    #[error("{path}: {size} bytes is more than the {MAX_MANIFEST_BYTES} bytes a manifest may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The YAML does not parse.
    #[error("{path}: malformed YAML: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An EtcdCluster document does not match the resource's shape.
    #[error("{path}: document {index} is not a valid EtcdCluster: {message}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// Which document (from 1).
        index: usize,
        /// What is wrong.
        message: String,
    },
}

impl ManifestError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Yaml { path, .. }
            | Self::Shape { path, .. } => path,
        }
    }
}

/// Parses every `EtcdCluster` document in `text` (from `path`, for messages).
pub fn parse_manifests(path: &Path, text: &str) -> Result<Vec<EtcdCluster>, ManifestError> {
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            path: path.to_path_buf(),
            size: text.len() as u64,
        });
    }
    let is_json = path.extension().is_some_and(|e| e == "json");
    let documents: Vec<serde_json::Value> = if is_json {
        vec![serde_json::from_str(text).map_err(|e| ManifestError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?]
    } else {
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    };
    let want_api = format!("{API_GROUP}/{API_VERSION}");
    let mut clusters = Vec::new();
    for (i, doc) in documents.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let shape = |message: String| ManifestError::Shape {
            path: path.to_path_buf(),
            index: i + 1,
            message,
        };
        if doc.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
            continue;
        }
        let api = doc.get("apiVersion").and_then(|a| a.as_str()).unwrap_or("");
        if api != want_api {
            return Err(shape(format!(
                "apiVersion is {api:?}; this operator serves {want_api:?}"
            )));
        }
        check_known_fields(&doc).map_err(shape)?;
        let cluster: EtcdCluster = serde_json::from_value(doc).map_err(|e| shape(e.to_string()))?;
        clusters.push(cluster);
    }
    Ok(clusters)
}

/// Refuses unknown fields in `spec` and in its `tls` and `recovery` objects (a typo such as
/// `sise: 5` or `tls: {enable: true}` must not silently do nothing).
fn check_known_fields(doc: &serde_json::Value) -> Result<(), String> {
    const KNOWN: &[&str] = &[
        "size",
        "version",
        "allowDowngrade",
        "repository",
        "storage",
        "pod",
        "tls",
        "recovery",
        "backup",
        "restore",
        "maintenance",
    ];
    const NESTED: &[(&str, &[&str])] = &[
        ("tls", &["enabled"]),
        ("recovery", &["quorumLoss"]),
        ("backup", &["schedule", "keep", "storage"]),
        ("restore", &["backup", "cluster", "storage", "bumpRevision"]),
        (
            "maintenance",
            &[
                "defragment",
                "autoCompaction",
                "quotaBackendBytes",
                "noSpace",
            ],
        ),
    ];
    let Some(spec) = doc.get("spec").and_then(|s| s.as_object()) else {
        return Ok(());
    };
    let check =
        |path: &str, object: &serde_json::Map<String, serde_json::Value>, known: &[&str]| {
            match object.keys().find(|key| !known.contains(&key.as_str())) {
                Some(key) => Err(format!(
                    "unknown field {path}.{key} (known fields: {})",
                    known.join(", ")
                )),
                None => Ok(()),
            }
        };
    check("spec", spec, KNOWN)?;
    for (field, known) in NESTED {
        if let Some(object) = spec.get(*field).and_then(|t| t.as_object()) {
            check(&format!("spec.{field}"), object, known)?;
        }
    }
    Ok(())
}

/// Reads the manifests in a file, or in every `.yaml`, `.yml` and `.json` file of a
/// directory (in name order); the first file refused is the error.
pub fn read_manifests(path: &Path) -> Result<Vec<EtcdCluster>, ManifestError> {
    Ok(read_manifests_by_file(path)?
        .into_iter()
        .map(|(_, c)| c)
        .collect())
}

/// As [`read_manifests`], each cluster with the file it was read from.
pub fn read_manifests_by_file(path: &Path) -> Result<Vec<(PathBuf, EtcdCluster)>, ManifestError> {
    let set = read_manifest_set(path)?;
    match set.refused.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(set.clusters),
    }
}

/// Every manifest file read, each on its own: the clusters of the files that parse, and the
/// files refused (one file that does not parse never keeps the others from being read).
#[derive(Debug, Default)]
pub struct ManifestSet {
    /// The clusters of the files that parse, with their file, in file order.
    pub clusters: Vec<(PathBuf, EtcdCluster)>,
    /// The files that do not (unreadable, too large, malformed, not an `EtcdCluster`).
    pub refused: Vec<ManifestError>,
}

/// Reads a manifest file, or every `.yaml`, `.yml` and `.json` file of a directory (in
/// name order), each on its own. The error is only for `path` itself: a file that is not
/// there, or a directory that cannot be listed.
pub fn read_manifest_set(path: &Path) -> Result<ManifestSet, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let files: Vec<PathBuf> = if std::fs::metadata(path).map_err(io)?.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut set = ManifestSet::default();
    for file in files {
        match read_file(&file) {
            Ok(clusters) => set
                .clusters
                .extend(clusters.into_iter().map(|c| (file.clone(), c))),
            Err(e) => set.refused.push(e),
        }
    }
    Ok(set)
}

/// The clusters of one manifest file.
fn read_file(file: &Path) -> Result<Vec<EtcdCluster>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: file.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(file).map_err(io)?.len();
    if size > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            path: file.to_path_buf(),
            size,
        });
    }
    let text = std::fs::read_to_string(file).map_err(io)?;
    parse_manifests(file, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<EtcdCluster>, ManifestError> {
        parse_manifests(Path::new("x.yaml"), text)
    }

    #[test]
    fn reads_the_seed_example_and_skips_other_kinds() {
        let text = "apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: etcd-cluster\nspec:\n  size: 3\n  version: \"3.6.15\"\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc\n";
        let clusters = parse(text).unwrap();
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0].metadata.name.as_deref(), Some("etcd-cluster"));
        assert_eq!(clusters[0].spec.size, 3);
        assert_eq!(clusters[0].spec.version, "3.6.15");
        assert!(!clusters[0].spec.etcd_tls());
        let tls = parse("apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3, version: 3.6.15, tls: {enabled: true}}\n").unwrap();
        assert!(tls[0].spec.etcd_tls());
        let recovery = parse("apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3, version: 3.6.15, recovery: {quorumLoss: ForceNewCluster}}\n").unwrap();
        assert_eq!(
            recovery[0].spec.quorum_loss(),
            crate::resource::QuorumLossPolicy::ForceNewCluster
        );
        assert_eq!(
            tls[0].spec.quorum_loss(),
            crate::resource::QuorumLossPolicy::Manual
        );
    }

    #[test]
    fn malformed_input_is_a_clear_error() {
        let cases: &[(&str, &str)] = &[
            ("kind: EtcdCluster\n  size: [3\n", "malformed YAML"),
            (
                "apiVersion: coreos.com/v1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3, version: 3.6.15}\n",
                "this operator serves \"etcd.operator.rs/v1alpha1\"",
            ),
            (
                "apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {sise: 3, version: 3.6.15}\n",
                "unknown field spec.sise",
            ),
            (
                "apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3, version: 3.6.15, tls: {enable: true}}\n",
                "unknown field spec.tls.enable",
            ),
            (
                "apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3, version: 3.6.15, tls: {enabled: yes please}}\n",
                "document 1 is not a valid EtcdCluster",
            ),
            (
                "apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: three, version: 3.6.15}\n",
                "document 1 is not a valid EtcdCluster",
            ),
            (
                "apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3, version: 3.6.15, recovery: {quorumloss: ForceNewCluster}}\n",
                "unknown field spec.recovery.quorumloss",
            ),
            (
                "apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3, version: 3.6.15, recovery: {quorumLoss: Force}}\n",
                "document 1 is not a valid EtcdCluster",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.starts_with("x.yaml"), "{err}");
        }
    }

    #[test]
    fn each_file_is_read_on_its_own_and_only_the_path_itself_fails_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = |name: &str, size: &str| {
            format!(
                "apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {{name: {name}}}\nspec: {{size: {size}, version: 3.6.15}}\n"
            )
        };
        let files = [
            ("a.yaml", good("a", "1")),
            ("b.yaml", good("b", "3").replace("version", "verison")),
            ("c.yml", "kind: EtcdCluster\n  size: [3\n".to_string()),
            ("d.json", "{\"kind\": ".to_string()),
            ("e.yaml", good("e", "2147483648")),
            ("f.yaml", good("f", "3")),
            ("notes.txt", "not a manifest".to_string()),
        ];
        for (name, text) in &files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(
            dir.path().join("g.yaml"),
            "#".repeat(MAX_MANIFEST_BYTES as usize + 1),
        )
        .unwrap();
        let set = read_manifest_set(dir.path()).unwrap();
        let names: Vec<(String, String)> = set
            .clusters
            .iter()
            .map(|(file, c)| {
                (
                    file.file_name().unwrap().to_string_lossy().into_owned(),
                    c.metadata.name.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("a.yaml".to_string(), "a".to_string()),
                ("f.yaml".to_string(), "f".to_string())
            ]
        );
        let refused: Vec<(String, String)> = set
            .refused
            .iter()
            .map(|e| {
                (
                    e.path().file_name().unwrap().to_string_lossy().into_owned(),
                    e.to_string(),
                )
            })
            .collect();
        let want = [
            ("b.yaml", "unknown field spec.verison"),
            ("c.yml", "malformed YAML"),
            ("d.json", "malformed YAML"),
            ("e.yaml", "document 1 is not a valid EtcdCluster"),
            ("g.yaml", "bytes is more than"),
        ];
        assert_eq!(refused.len(), want.len(), "{refused:?}");
        for ((file, message), (want_file, says)) in refused.iter().zip(want) {
            assert_eq!(file, want_file);
            assert!(message.contains(says), "{says:?} in {message}");
        }
        // The strict reading stops at the first refused file.
        let e = read_manifests_by_file(dir.path()).unwrap_err();
        assert!(e.path().ends_with("b.yaml"), "{e}");
        // One file: refused on its own, not an error of the read.
        let one = read_manifest_set(&dir.path().join("b.yaml")).unwrap();
        assert!(one.clusters.is_empty());
        assert_eq!(one.refused.len(), 1);
        // A path that is not there is the read's error.
        assert!(read_manifest_set(&dir.path().join("none")).is_err());
        assert!(read_manifest_set(&dir.path().join("none.yaml")).is_err());
    }

    #[test]
    fn oversized_input_is_refused() {
        let text = "#".repeat(MAX_MANIFEST_BYTES as usize + 1);
        assert!(matches!(parse(&text), Err(ManifestError::TooLarge { .. })));
    }
}
