//! Names the sidecar's build: a hash of every source the sidecar is built from (this crate,
//! the shared crate and its contract, the lock file), as `ETCD_SIDECAR_BUILD`. Local mode
//! runs the `etcd-sidecar` binary beside the coordinator only when its build matches the
//! sidecar the coordinator embeds, so a binary left from an older build is never run.

use std::{
    hash::{DefaultHasher, Hasher},
    path::{Path, PathBuf},
};

/// What the sidecar is built from, relative to this crate.
const SOURCES: &[&str] = &[
    "src",
    "Cargo.toml",
    "../src",
    "../proto",
    "../build.rs",
    "../Cargo.toml",
    "../Cargo.lock",
];

fn files(path: &Path, out: &mut Vec<PathBuf>) {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                files(&entry.path(), out);
            }
        }
        Err(_) if path.is_file() => out.push(path.to_path_buf()),
        Err(_) => {}
    }
}

fn main() {
    let mut paths = Vec::new();
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
        files(Path::new(source), &mut paths);
    }
    paths.sort();
    let mut hasher = DefaultHasher::new();
    for path in &paths {
        hasher.write(path.to_string_lossy().as_bytes());
        hasher.write(&std::fs::read(path).unwrap_or_default());
    }
    println!(
        "cargo:rustc-env=ETCD_SIDECAR_BUILD={:016x}",
        hasher.finish()
    );
}
