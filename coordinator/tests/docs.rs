//! The user's documentation holds: README.md and `docs/*.md` link only to files and headings
//! that exist, `docs/reference.md` is what `etcd-coordinator reference` writes and lists every
//! field of the CRD's schema, every `EtcdCluster` shown in the docs or under `examples/` is
//! one the operator accepts, and every shell command shown either runs in a test or sits in
//! a block marked Kubernetes-only.
//!
//! The marking: a shell block's info string is `sh` (runs on this machine, checked here
//! against the test that runs it) or `sh kubernetes` (needs a Kubernetes cluster). Output is
//! shown in blocks with no language or `text`. No etcd process is started here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use etcd_operator::manifest::parse_manifests;
use etcd_operator::validate::validate_cluster;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md and every `docs/*.md`, as (path, text).
fn documents() -> Vec<(PathBuf, String)> {
    let mut paths = vec![root().join("README.md")];
    let mut guides: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    guides.sort();
    paths.extend(guides);
    paths.into_iter().map(|p| (p.clone(), read(&p))).collect()
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A fenced code block: its info string, its first line's number and its text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

/// The fenced blocks of a Markdown text, and its prose lines (outside blocks) with numbers.
fn split(markdown: &str) -> (Vec<Block>, Vec<(usize, &str)>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            Some(block) if trimmed.starts_with("```") => blocks.push(block),
            Some(mut block) => {
                block.text.push_str(line);
                block.text.push('\n');
                open = Some(block);
            }
            None if trimmed.starts_with("```") => {
                open = Some(Block {
                    info: trimmed.trim_start_matches('`').trim().to_string(),
                    line: i + 1,
                    text: String::new(),
                });
            }
            None => prose.push((i + 1, line)),
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    (blocks, prose)
}

/// The anchors GitHub gives the headings of a Markdown text.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let (_, prose) = split(markdown);
    let mut seen = BTreeSet::new();
    for (_, line) in prose {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// The link targets on a prose line, inline code left out.
fn links(line: &str) -> Vec<String> {
    let mut text = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            text.push_str(part);
        }
    }
    let mut found = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        found.push(after[..end].to_string());
        rest = &after[end..];
    }
    found
}

#[test]
fn links_and_anchors_in_readme_and_docs_resolve() {
    let mut broken = Vec::new();
    for (path, text) in documents() {
        let (_, prose) = split(&text);
        for (number, line) in prose {
            for target in links(line) {
                if target.starts_with("http://")
                    || target.starts_with("https://")
                    || target.starts_with("mailto:")
                {
                    continue;
                }
                let (file, anchor) = match target.split_once('#') {
                    Some((file, anchor)) => (file, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let resolved = if file.is_empty() {
                    path.clone()
                } else {
                    path.parent().expect("a file's directory").join(file)
                };
                let at = format!("{}:{number}: {target}", shown(&path));
                if !resolved.exists() {
                    broken.push(format!("{at}: no such file"));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let headings = if resolved.extension().is_some_and(|e| e == "md") {
                        anchors(&read(&resolved))
                    } else {
                        BTreeSet::new()
                    };
                    if !headings.contains(anchor) {
                        broken.push(format!("{at}: no such heading"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_reference_is_what_the_subcommand_writes() {
    let committed = read(&root().join("docs/reference.md"));
    let generated = etcd_coordinator::reference::markdown().expect("the CRD as JSON");
    assert!(
        committed == generated,
        "docs/reference.md differs from what the types give: run \
         `cargo run --bin etcd-coordinator -- reference > docs/reference.md`"
    );
    // The subcommand prints the same text.
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
        .arg("reference")
        .output()
        .expect("run etcd-coordinator reference");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), generated);
}

#[test]
fn the_crd_subcommand_prints_the_committed_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
        .arg("crd")
        .output()
        .expect("run etcd-coordinator crd");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout) == read(&root().join("deploy/base/crd.yaml")),
        "deploy/base/crd.yaml differs from `etcd-coordinator crd`: run \
         `cargo run --bin etcd-coordinator -- crd > deploy/base/crd.yaml`"
    );
}

/// Every property path of a schema node: `spec.size`, `spec.pod.tolerations[].key`, ...
fn field_paths(path: &str, node: &Value, out: &mut Vec<String>) {
    if let Some(properties) = node["properties"].as_object() {
        for (name, field) in properties {
            let field_path = format!("{path}.{name}");
            out.push(field_path.clone());
            field_paths(&field_path, field, out);
        }
    }
    if node["items"].is_object() {
        field_paths(&format!("{path}[]"), &node["items"], out);
    }
}

#[test]
fn the_reference_lists_every_field_of_the_crd_schema() {
    let crd: Value =
        serde_saphyr::from_str(&read(&root().join("deploy/base/crd.yaml"))).expect("crd.yaml");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut fields = Vec::new();
    for top in ["spec", "status"] {
        field_paths(top, &schema["properties"][top], &mut fields);
    }
    assert!(fields.len() > 50, "the schema has {} fields", fields.len());
    let reference = read(&root().join("docs/reference.md"));
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !reference.contains(&format!("| `{f}` |")))
        .collect();
    assert!(missing.is_empty(), "docs/reference.md lacks {missing:?}");
}

/// A cluster every snippet of a spec is read into, as a user would paste it.
fn base_cluster() -> Value {
    json!({
        "apiVersion": "etcd.operator.rs/v1alpha1",
        "kind": "EtcdCluster",
        "metadata": {"name": "etcd-cluster"},
        "spec": {"size": 3, "version": "3.6.15"},
    })
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from.clone(),
    }
}

/// Parses `document` as the operator reads a manifest and validates it; the refusal if not.
fn accepted(document: &Value) -> Result<usize, String> {
    let clusters = parse_manifests(Path::new("snippet.json"), &document.to_string())
        .map_err(|e| e.to_string())?;
    for cluster in &clusters {
        validate_cluster(cluster).map_err(|e| e.to_string())?;
    }
    Ok(clusters.len())
}

#[test]
fn yaml_snippets_in_the_docs_parse_and_clusters_validate() {
    let mut refused = Vec::new();
    let mut clusters = 0;
    for (path, text) in documents() {
        let (blocks, _) = split(&text);
        for block in blocks {
            let at = format!("{}:{}", shown(&path), block.line);
            let language = block.info.split_whitespace().next().unwrap_or("");
            if language == "json" {
                if let Err(e) = serde_json::from_str::<Value>(&block.text) {
                    refused.push(format!("{at}: {e}"));
                }
                continue;
            }
            if language != "yaml" {
                continue;
            }
            let documents: Vec<Value> = match serde_saphyr::from_multiple(&block.text) {
                Ok(d) => d,
                Err(e) => {
                    refused.push(format!("{at}: malformed YAML: {e}"));
                    continue;
                }
            };
            for document in documents {
                let keys: BTreeSet<&str> = document
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                // A whole EtcdCluster, or a fragment of one (`spec:` with or without
                // `metadata:`) read into a minimal cluster; anything else only parses.
                let cluster = if document["kind"] == "EtcdCluster" {
                    document
                } else if keys.contains("spec")
                    && keys.iter().all(|k| ["spec", "metadata"].contains(k))
                {
                    let mut cluster = base_cluster();
                    merge(&mut cluster, &document);
                    cluster
                } else {
                    continue;
                };
                match accepted(&cluster) {
                    Ok(n) => clusters += n,
                    Err(e) => refused.push(format!("{at}: {e}")),
                }
            }
        }
    }
    assert!(
        refused.is_empty(),
        "snippets refused:\n{}",
        refused.join("\n")
    );
    assert!(clusters >= 5, "only {clusters} cluster snippets found");
}

#[test]
fn every_example_parses_and_its_clusters_validate() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("examples/ entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 5);
    for file in files {
        let text = read(&file);
        if file.extension().is_some_and(|e| e == "json") {
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", shown(&file)));
            if value["kind"] != "EtcdCluster" {
                assert!(value["kind"].is_string(), "{}: no kind", shown(&file));
                continue;
            }
        }
        let clusters =
            parse_manifests(&file, &text).unwrap_or_else(|e| panic!("{}: {e}", shown(&file)));
        assert!(!clusters.is_empty(), "{}: no EtcdCluster", shown(&file));
        for cluster in clusters {
            if let Err(e) = validate_cluster(&cluster) {
                panic!("{}: refused: {e}", shown(&file));
            }
        }
    }
}

/// What runs each command a runnable (`sh`) block may show: the command (its program, or
/// `etcd-coordinator` and its subcommand), the file that runs it, and what in that file
/// runs it.
const RUN_BY: &[(&str, &str, &str)] = &[
    ("scripts/setup.sh", ".ci/run", "scripts/setup.sh"),
    ("scripts/fetch-etcd.sh", "scripts/setup.sh", "fetch-etcd.sh"),
    ("cargo test", ".ci/run", "cargo test --workspace"),
    ("cargo build", ".ci/run", "cargo test --workspace"),
    ("cargo fmt", ".ci/run", "cargo fmt --all -- --check"),
    ("cargo clippy", ".ci/run", "cargo clippy --workspace"),
    (
        "etcd-coordinator local",
        "testkit/src/local_cluster/mod.rs",
        "\"local\"",
    ),
    (
        "etcd-coordinator delete-member",
        "coordinator/tests/local_mode.rs",
        "\"delete-member\"",
    ),
    (
        "etcd-coordinator backup",
        "coordinator/tests/backup.rs",
        "[\"backup\"",
    ),
    (
        "etcd-coordinator backups",
        "coordinator/tests/backup.rs",
        "[\"backups\"",
    ),
    (
        "etcd-coordinator status",
        "coordinator/tests/docs.rs",
        "fn status_runs_against_a_coordinator",
    ),
    (
        "etcd-coordinator crd",
        "coordinator/tests/docs.rs",
        ".arg(\"crd\")",
    ),
    (
        "etcd-coordinator reference",
        "coordinator/tests/docs.rs",
        ".arg(\"reference\")",
    ),
    (
        "etcdctl",
        "testkit/src/clients.rs",
        "Command::new(\"etcdctl\")",
    ),
    // The suite runs the same scenarios through the library `etcd-chaos` is a thin main of.
    (
        "etcd-chaos",
        "coordinator/tests/chaos.rs",
        "testkit::chaos::",
    ),
];

/// The commands of a shell block, continuation lines joined, comments dropped.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// A command's key in [`RUN_BY`] and the long flags it passes (of `etcd-coordinator`).
fn command_key(command: &str) -> (String, Vec<String>) {
    let mut words = command
        .split_whitespace()
        .take_while(|w| !w.starts_with('#') && *w != "&&" && *w != "|" && *w != ">")
        .skip_while(|w| w.contains('=') && !w.starts_with('-'));
    let program = words.next().unwrap_or("").to_string();
    let rest: Vec<&str> = words.collect();
    let (program, rest) = match (program.as_str(), rest.first()) {
        ("cargo", Some(&"run")) => {
            let at = rest
                .iter()
                .position(|w| *w == "--")
                .map_or(rest.len(), |i| i + 1);
            ("etcd-coordinator".to_string(), rest[at..].to_vec())
        }
        ("cargo", Some(sub)) => (format!("cargo {sub}"), Vec::new()),
        (p, _) => (p.rsplit('/').next().unwrap_or(p).to_string(), rest),
    };
    let program = match program.as_str() {
        "setup.sh" | "fetch-etcd.sh" => format!("scripts/{program}"),
        _ => program,
    };
    if program != "etcd-coordinator" {
        return (program, Vec::new());
    }
    let sub = rest.first().copied().unwrap_or("");
    let flags = rest
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap_or(w).to_string())
        .collect();
    (format!("etcd-coordinator {sub}"), flags)
}

#[test]
fn shell_commands_run_in_a_test_or_are_marked_kubernetes_only() {
    let mut unchecked = Vec::new();
    let mut checked = 0;
    for (path, text) in documents() {
        let (blocks, _) = split(&text);
        for block in blocks {
            let at = format!("{}:{}", shown(&path), block.line);
            let mut words = block.info.split_whitespace();
            let language = words.next().unwrap_or("");
            let marking: Vec<&str> = words.collect();
            match language {
                "bash" | "shell" | "zsh" | "console" | "shell-session" => {
                    unchecked.push(format!(
                        "{at}: shell blocks are `sh` (runs here) or `sh kubernetes`"
                    ));
                    continue;
                }
                "" | "text" => {
                    // Output only: no command at the start of a line.
                    for line in block.text.lines() {
                        if [
                            "kubectl ",
                            "cargo ",
                            "etcdctl ",
                            "etcd-coordinator ",
                            "scripts/",
                        ]
                        .iter()
                        .any(|p| line.starts_with(p))
                        {
                            unchecked.push(format!("{at}: a command in an output block: {line}"));
                        }
                    }
                    continue;
                }
                "sh" => {}
                _ => continue,
            }
            match marking.as_slice() {
                ["kubernetes"] => continue,
                [] => {}
                other => {
                    unchecked.push(format!("{at}: unknown marking {other:?}"));
                    continue;
                }
            }
            for command in commands(&block.text) {
                let (key, flags) = command_key(&command);
                if key.is_empty() {
                    continue; // only variables set
                }
                let Some((_, file, needle)) = RUN_BY.iter().find(|(k, _, _)| *k == key) else {
                    unchecked.push(format!(
                        "{at}: `{command}`: no test runs `{key}` (mark the block `sh kubernetes` \
                         if it needs a Kubernetes cluster)"
                    ));
                    continue;
                };
                if !read(&root().join(file)).contains(needle) {
                    unchecked.push(format!("{at}: `{key}`: {file} no longer runs it"));
                }
                if let Some(sub) = key.strip_prefix("etcd-coordinator ") {
                    let help = Command::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
                        .args([sub, "--help"])
                        .output()
                        .expect("etcd-coordinator --help");
                    let help = String::from_utf8_lossy(&help.stdout);
                    for flag in flags {
                        if !help.contains(&format!("{flag} ")) {
                            unchecked.push(format!("{at}: `{key}` takes no {flag}"));
                        }
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(unchecked.is_empty(), "{}", unchecked.join("\n"));
    assert!(checked >= 10, "only {checked} commands checked");
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = read(&root().join("README.md"));
    let (blocks, _) = split(&readme);
    let test_commands: Vec<String> = blocks
        .iter()
        .filter(|b| b.info == "sh")
        .flat_map(|b| commands(&b.text))
        .filter(|c| c.starts_with("cargo test"))
        .collect();
    assert_eq!(
        test_commands.len(),
        1,
        "README's test commands: {test_commands:?}"
    );
    let ci = read(&root().join(".ci/run"));
    assert!(
        ci.lines()
            .any(|l| l.trim_start().starts_with("step ") && l.ends_with(&test_commands[0])),
        ".ci/run does not run the README's `{}`",
        test_commands[0]
    );
    // The README's promise: one command sets up (the one CI runs first), one runs a local
    // cluster from a file under `examples/`.
    let readme_commands: Vec<String> = blocks
        .iter()
        .filter(|b| b.info == "sh")
        .flat_map(|b| commands(&b.text))
        .collect();
    assert!(readme_commands.iter().any(|c| c == "scripts/setup.sh"));
    assert!(
        ci.lines()
            .any(|l| l.starts_with("step ") && l.ends_with(" scripts/setup.sh"))
    );
    let run = readme_commands
        .iter()
        .find(|c| c.contains(" -- local "))
        .expect("the README's local run command");
    let manifest = run.rsplit(' ').next().unwrap_or_default();
    assert!(
        manifest.starts_with("examples/") && root().join(manifest).is_file(),
        "the README runs {manifest}"
    );
}

/// A child process killed and reaped when dropped, however the test ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `etcd-coordinator status`, as the docs show it, against a local coordinator that runs
/// no cluster (an empty manifest directory: no etcd starts).
#[test]
fn status_runs_against_a_coordinator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("manifests dir");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .to_string()
    };
    let (grpc, control) = (free(), free());
    let bin = env!("CARGO_BIN_EXE_etcd-coordinator");
    let _coordinator = Stopped(
        Command::new(bin)
            .arg("local")
            .arg(&manifests)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--grpc-addr", &grpc, "--control-addr", &control])
            .args(["--metrics-addr", "off", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd-coordinator local"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = |args: &[&str]| {
        Command::new(bin)
            .arg("status")
            .args(args)
            .args(["--grpc-addr", &grpc])
            .output()
            .expect("run etcd-coordinator status")
    };
    let table = loop {
        let out = status(&[]);
        if out.status.success() {
            break out;
        }
        if Instant::now() > deadline {
            panic!(
                "etcd-coordinator status never answered within 30 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let json = status(&["-o", "json"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("NAME"));
    assert!(json.status.success());
    let parsed: Value = serde_json::from_slice(&json.stdout).expect("status -o json is JSON");
    assert!(parsed.is_object(), "{parsed}");
}
