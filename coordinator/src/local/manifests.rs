//! Which spec each cluster of local mode runs on (no client): the manifest files as read,
//! each on its own ([`etcd_operator::manifest::read_manifest_set`]), and the last valid spec
//! read for each cluster, kept in `<state>/<cluster>/spec.json` ([`LastSpec`]).
//!
//! `mode.rs` reads the manifests, asks [`choose`] which spec each cluster runs on, records
//! each new valid spec ([`to_record`], [`write_last_spec`]) before its cluster's loop sees
//! it, and stops the clusters no longer declared. So a file that stops parsing leaves its
//! clusters running as last read, across a restart too, and never holds back the others.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    path::{Path, PathBuf},
};

use etcd_operator::{
    ClusterKey,
    durable::{read_if_present, write_atomic},
    manifest::ManifestSet,
    resource::EtcdCluster,
    validate::validate_cluster,
};
use serde::{Deserialize, Serialize};

/// The name of the last spec read in a cluster's directory of the state directory.
pub const LAST_SPEC_FILE: &str = "spec.json";

/// The last valid spec read for a cluster, and the file it was read from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LastSpec {
    /// The manifest file that declared it.
    pub file: PathBuf,
    /// The cluster as read.
    pub cluster: EtcdCluster,
}

/// The spec a cluster runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    /// The cluster: as its file declares it, or as last read when that file is refused.
    pub cluster: EtcdCluster,
    /// The file it comes from.
    pub file: PathBuf,
    /// Why its file is refused, when it runs on as last read.
    pub refused: Option<String>,
}

/// What the manifests declare, each file on its own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Declared {
    /// Every cluster to run, with the spec it runs on.
    pub clusters: BTreeMap<ClusterKey, Chosen>,
    /// The files refused that no running cluster comes from, with why (listed on their
    /// own: the clusters they declare cannot be known).
    pub unattributed: Vec<(PathBuf, String)>,
}

/// The key of a cluster read from a manifest (local mode has no namespaces).
pub fn key_of(cluster: &EtcdCluster) -> ClusterKey {
    ClusterKey::local(cluster.metadata.name.clone().unwrap_or_default())
}

/// Which spec each cluster runs on, from the files as read (`set`) and the last valid spec
/// read for each cluster (`last`):
///
/// - a cluster declared by a file that parses runs on that file's spec;
/// - a cluster whose file of `last` is refused (it does not parse) runs on as last read,
///   saying why;
/// - one cluster is declared in one file: another file that declares it too is refused
///   (the cluster keeps the file it was last read from, else the first in name order), and
///   so is a file that declares it twice; a file refused this way is refused as a whole,
///   as one that does not parse;
/// - a cluster declared nowhere (its file removed, or parsing without it) is not run.
pub fn choose(set: &ManifestSet, last: &BTreeMap<ClusterKey, LastSpec>) -> Declared {
    let mut refused: BTreeMap<PathBuf, String> = set
        .refused
        .iter()
        .map(|e| (e.path().to_path_buf(), e.to_string()))
        .collect();
    // One conflict at a time: a file refused for one may end another.
    loop {
        let mut claims: BTreeMap<ClusterKey, Vec<&Path>> = BTreeMap::new();
        for (file, cluster) in &set.clusters {
            if !refused.contains_key(file) {
                claims.entry(key_of(cluster)).or_default().push(file);
            }
        }
        for (key, spec) in last {
            if refused.contains_key(&spec.file) {
                claims.entry(key.clone()).or_default().push(&spec.file);
            }
        }
        let Some((key, files)) = claims.into_iter().find(|(_, files)| files.len() > 1) else {
            break;
        };
        let recorded = last.get(&key).map(|l| l.file.as_path());
        let keeper = files
            .iter()
            .copied()
            .find(|f| Some(*f) == recorded)
            .unwrap_or(files[0]);
        let mut refuse: Vec<(PathBuf, String)> = files
            .iter()
            .filter(|f| **f != keeper)
            .map(|f| {
                (
                    f.to_path_buf(),
                    format!(
                        "{}: declares cluster {key}, which {} declares already (a cluster is declared in one file)",
                        f.display(),
                        keeper.display()
                    ),
                )
            })
            .collect();
        if refuse.is_empty() {
            refuse.push((
                keeper.to_path_buf(),
                format!("{}: declares cluster {key} twice", keeper.display()),
            ));
        }
        for (file, why) in refuse {
            refused.entry(file).or_insert(why);
        }
    }

    let mut declared = Declared::default();
    for (file, cluster) in &set.clusters {
        if !refused.contains_key(file) {
            declared.clusters.insert(
                key_of(cluster),
                Chosen {
                    cluster: cluster.clone(),
                    file: file.clone(),
                    refused: None,
                },
            );
        }
    }
    let mut attributed = BTreeSet::new();
    for (key, spec) in last {
        if let Some(why) = refused.get(&spec.file)
            && !declared.clusters.contains_key(key)
        {
            attributed.insert(spec.file.clone());
            declared.clusters.insert(
                key.clone(),
                Chosen {
                    cluster: spec.cluster.clone(),
                    file: spec.file.clone(),
                    refused: Some(why.clone()),
                },
            );
        }
    }
    declared.unattributed = refused
        .into_iter()
        .filter(|(file, _)| !attributed.contains(file))
        .collect();
    declared
}

/// The specs to record before they are applied: every cluster read from a file that parses
/// whose spec is valid ([`validate_cluster`]) and not the one recorded. A spec refused is
/// never recorded: a cluster whose file stops parsing runs on the last spec that could run.
pub fn to_record(
    declared: &Declared,
    last: &BTreeMap<ClusterKey, LastSpec>,
) -> Vec<(ClusterKey, LastSpec)> {
    declared
        .clusters
        .iter()
        .filter(|(_, chosen)| chosen.refused.is_none())
        .filter(|(_, chosen)| validate_cluster(&chosen.cluster).is_ok())
        .map(|(key, chosen)| {
            (
                key.clone(),
                LastSpec {
                    file: chosen.file.clone(),
                    cluster: chosen.cluster.clone(),
                },
            )
        })
        .filter(|(key, spec)| last.get(key) != Some(spec))
        .collect()
}

fn spec_path(state_dir: &Path, key: &ClusterKey) -> PathBuf {
    state_dir.join(&key.name).join(LAST_SPEC_FILE)
}

/// Records `spec` as the last valid spec of `key`, whole and durably.
pub fn write_last_spec(state_dir: &Path, key: &ClusterKey, spec: &LastSpec) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(spec).map_err(io::Error::other)?;
    write_atomic(&spec_path(state_dir, key), &bytes)
}

/// Forgets the last spec of `key` (no longer declared), durably; nothing when there is none.
pub fn remove_last_spec(state_dir: &Path, key: &ClusterKey) -> io::Result<()> {
    let path = spec_path(state_dir, key);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// The last spec recorded for every cluster of the state directory, and why each one that
/// could not be read was left out.
pub fn load_last_specs(state_dir: &Path) -> (BTreeMap<ClusterKey, LastSpec>, Vec<String>) {
    let mut specs = BTreeMap::new();
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return (specs, errors);
    };
    for entry in entries.filter_map(|e| e.ok()) {
        // A cluster's state is a directory; the coordinator's own files sit beside them.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let key = ClusterKey::local(name.clone());
        let path = spec_path(state_dir, &key);
        let read = read_if_present(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                bytes
                    .map(|b| serde_json::from_slice::<LastSpec>(&b).map_err(|e| e.to_string()))
                    .transpose()
            });
        match read {
            Ok(None) => {}
            Ok(Some(spec)) if spec.cluster.metadata.name.as_deref() == Some(name.as_str()) => {
                specs.insert(key, spec);
            }
            Ok(Some(spec)) => errors.push(format!(
                "{}: records cluster {:?}, not {name:?}",
                path.display(),
                spec.cluster.metadata.name.unwrap_or_default()
            )),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    (specs, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_operator::{manifest::ManifestError, resource::EtcdClusterSpec};

    fn cluster(name: &str, size: i32) -> EtcdCluster {
        EtcdCluster::new(
            name,
            EtcdClusterSpec {
                size,
                version: "3.6.15".into(),
                ..Default::default()
            },
        )
    }

    fn refused(file: &str) -> ManifestError {
        ManifestError::Shape {
            path: file.into(),
            index: 1,
            message: "unknown field spec.verison".into(),
        }
    }

    fn set(clusters: &[(&str, EtcdCluster)], refused_files: &[&str]) -> ManifestSet {
        ManifestSet {
            clusters: clusters
                .iter()
                .map(|(f, c)| (PathBuf::from(f), c.clone()))
                .collect(),
            refused: refused_files.iter().map(|f| refused(f)).collect(),
        }
    }

    fn last(specs: &[(&str, EtcdCluster)]) -> BTreeMap<ClusterKey, LastSpec> {
        specs
            .iter()
            .map(|(f, c)| {
                (
                    key_of(c),
                    LastSpec {
                        file: f.into(),
                        cluster: c.clone(),
                    },
                )
            })
            .collect()
    }

    /// Each cluster's (file, size, refused or not), and the files listed on their own.
    type Summary = (Vec<(String, String, i32, bool)>, Vec<String>);

    fn summary(d: &Declared) -> Summary {
        (
            d.clusters
                .iter()
                .map(|(k, c)| {
                    (
                        k.name.clone(),
                        c.file.display().to_string(),
                        c.cluster.spec.size,
                        c.refused.is_some(),
                    )
                })
                .collect(),
            d.unattributed
                .iter()
                .map(|(f, _)| f.display().to_string())
                .collect(),
        )
    }

    fn row(name: &str, file: &str, size: i32, refused: bool) -> (String, String, i32, bool) {
        (name.into(), file.into(), size, refused)
    }

    #[test]
    fn every_file_is_applied_as_if_alone_and_a_refused_one_runs_on_as_last_read() {
        let (a1, a3, b1, b5, c1) = (
            cluster("a", 1),
            cluster("a", 3),
            cluster("b", 1),
            cluster("b", 5),
            cluster("c", 1),
        );
        let cases: Vec<(&str, ManifestSet, BTreeMap<ClusterKey, LastSpec>, Summary)> = vec![
            (
                "a start with a bad file beside a good one: the good one runs, the bad one is listed",
                set(&[("a.yaml", a1.clone())], &["bad.yaml"]),
                last(&[]),
                (vec![row("a", "a.yaml", 1, false)], vec!["bad.yaml".into()]),
            ),
            (
                "while a bad file is there, a new cluster and an edit of another file apply",
                set(
                    &[("a.yaml", a3.clone()), ("c.yaml", c1.clone())],
                    &["bad.yaml"],
                ),
                last(&[("a.yaml", a1.clone())]),
                (
                    vec![row("a", "a.yaml", 3, false), row("c", "c.yaml", 1, false)],
                    vec!["bad.yaml".into()],
                ),
            ),
            (
                "a cluster whose file stops parsing runs on as last read (a restart: from disk)",
                set(&[("b.yaml", b5.clone())], &["a.yaml"]),
                last(&[("a.yaml", a3.clone()), ("b.yaml", b1.clone())]),
                (
                    vec![row("a", "a.yaml", 3, true), row("b", "b.yaml", 5, false)],
                    vec![],
                ),
            ),
            (
                "one file of a single-file directory that stops parsing: every cluster of it runs on",
                set(&[], &["all.yaml"]),
                last(&[("all.yaml", a1.clone()), ("all.yaml", b1.clone())]),
                (
                    vec![row("a", "all.yaml", 1, true), row("b", "all.yaml", 1, true)],
                    vec![],
                ),
            ),
            (
                "a file removed (or parsing without the cluster): the cluster is not run",
                set(&[("b.yaml", b1.clone())], &[]),
                last(&[("a.yaml", a1.clone()), ("b.yaml", b1.clone())]),
                (vec![row("b", "b.yaml", 1, false)], vec![]),
            ),
            (
                "a bad file that declares no cluster known stays listed on its own",
                set(&[], &["bad.yaml"]),
                last(&[]),
                (vec![], vec!["bad.yaml".into()]),
            ),
            (
                "a cluster moved to another file keeps the file it was read from, the other is refused",
                set(&[("a.yaml", a1.clone()), ("new.yaml", a3.clone())], &[]),
                last(&[("new.yaml", a3.clone())]),
                (vec![row("a", "new.yaml", 3, false)], vec!["a.yaml".into()]),
            ),
            (
                "a new cluster declared twice: the first file in name order has it",
                set(&[("x.yaml", c1.clone()), ("y.yaml", cluster("c", 3))], &[]),
                last(&[]),
                (vec![row("c", "x.yaml", 1, false)], vec!["y.yaml".into()]),
            ),
            (
                "a cluster whose file is refused is not taken over by another file that declares it",
                set(
                    &[("b.yaml", a1.clone()), ("b.yaml", b1.clone())],
                    &["a.yaml"],
                ),
                last(&[("a.yaml", a3.clone()), ("b.yaml", b1.clone())]),
                (
                    vec![row("a", "a.yaml", 3, true), row("b", "b.yaml", 1, true)],
                    vec![],
                ),
            ),
            (
                "a file refused for a conflict ends no other conflict it took part in",
                set(
                    &[
                        ("1.yaml", a1.clone()),
                        ("1.yaml", b1.clone()),
                        ("2.yaml", b5.clone()),
                        ("2.yaml", c1.clone()),
                        ("3.yaml", cluster("c", 3)),
                    ],
                    &[],
                ),
                last(&[]),
                (
                    vec![
                        row("a", "1.yaml", 1, false),
                        row("b", "1.yaml", 1, false),
                        row("c", "3.yaml", 3, false),
                    ],
                    vec!["2.yaml".into()],
                ),
            ),
            (
                "a file that declares one cluster twice is refused",
                set(&[("a.yaml", a1.clone()), ("a.yaml", a3.clone())], &[]),
                last(&[]),
                (vec![], vec!["a.yaml".into()]),
            ),
        ];
        for (name, set, last, want) in cases {
            assert_eq!(summary(&choose(&set, &last)), want, "{name}");
        }
    }

    #[test]
    fn a_cluster_run_as_last_read_says_why_its_file_is_refused() {
        let a = cluster("a", 3);
        let d = choose(&set(&[], &["a.yaml"]), &last(&[("a.yaml", a.clone())]));
        let why = d.clusters[&key_of(&a)].refused.clone().unwrap();
        assert!(why.starts_with("a.yaml: document 1"), "{why}");
        assert!(why.contains("spec.verison"), "{why}");
        let d = choose(
            &set(&[("a.yaml", a.clone()), ("b.yaml", cluster("a", 1))], &[]),
            &last(&[]),
        );
        assert_eq!(
            d.unattributed[0].1,
            "b.yaml: declares cluster a, which a.yaml declares already (a cluster is declared in one file)"
        );
    }

    #[test]
    fn only_new_valid_specs_read_from_files_that_parse_are_recorded() {
        let (a1, a3, b0, c1) = (
            cluster("a", 1),
            cluster("a", 3),
            cluster("b", 0),
            cluster("c", 1),
        );
        let recorded = last(&[("a.yaml", a1.clone()), ("c.yaml", c1.clone())]);
        let names = |specs: Vec<(ClusterKey, LastSpec)>| -> Vec<(String, i32)> {
            specs
                .into_iter()
                .map(|(k, s)| (k.name, s.cluster.spec.size))
                .collect()
        };
        // An edit is recorded; an invalid spec (size 0) is not; what is recorded already is
        // not written again; a cluster run as last read is not written.
        let d = choose(
            &set(
                &[
                    ("a.yaml", a3.clone()),
                    ("b.yaml", b0),
                    ("c.yaml", c1.clone()),
                ],
                &[],
            ),
            &recorded,
        );
        assert_eq!(names(to_record(&d, &recorded)), [("a".to_string(), 3)]);
        let d = choose(&set(&[], &["a.yaml", "c.yaml"]), &recorded);
        assert!(to_record(&d, &recorded).is_empty());
        // The same spec from another file is a new record (its file is part of it).
        let moved = last(&[("old.yaml", a1.clone())]);
        let d = choose(&set(&[("a.yaml", a1.clone())], &[]), &moved);
        assert_eq!(names(to_record(&d, &moved)), [("a".to_string(), 1)]);
    }

    #[test]
    fn last_specs_round_trip_through_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = cluster("a", 3);
        let spec = LastSpec {
            file: "/m/a.yaml".into(),
            cluster: a.clone(),
        };
        write_last_spec(dir.path(), &key_of(&a), &spec).unwrap();
        // Not a spec: left out, saying why; a directory without one (pki, backups) is not
        // a cluster.
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b").join(LAST_SPEC_FILE), "{").unwrap();
        std::fs::create_dir_all(dir.path().join("pki")).unwrap();
        // The coordinator's own files beside the clusters are no cluster either.
        for file in ["epoch", "epoch.lock", "coordinator.lock"] {
            std::fs::write(dir.path().join(file), "1").unwrap();
        }
        let other = LastSpec {
            file: "/m/c.yaml".into(),
            cluster: cluster("c", 1),
        };
        write_last_spec(dir.path(), &ClusterKey::local("d"), &other).unwrap();
        let (specs, errors) = load_last_specs(dir.path());
        assert_eq!(specs.len(), 1, "{specs:?}");
        assert_eq!(specs[&key_of(&a)], spec);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("b/spec.json")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("records cluster \"c\"")),
            "{errors:?}"
        );
        remove_last_spec(dir.path(), &key_of(&a)).unwrap();
        remove_last_spec(dir.path(), &key_of(&a)).unwrap();
        assert!(!load_last_specs(dir.path()).0.contains_key(&key_of(&a)));
    }
}
