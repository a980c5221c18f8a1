//! `etcd-coordinator install-sidecar DIR`: the member Pod's init container copies the
//! sidecar binary from the operator image into a shared volume. Written in Rust because
//! nothing in a member Pod may rely on a shell (etcd images are distroless).

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// The name of the sidecar binary, in the operator image and in the shared volume.
pub const SIDECAR_FILE: &str = "etcd-sidecar";

/// Where the sidecar binary is by default: beside the running `etcd-coordinator`.
pub fn default_source() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .map(|d| d.join(SIDECAR_FILE))
        .unwrap_or_else(|| PathBuf::from(SIDECAR_FILE)))
}

/// Copies `source` to `<dir>/etcd-sidecar` (executable), atomically: a container that
/// starts meanwhile never runs half a binary. Returns the destination.
pub fn install_sidecar(source: &Path, dir: &Path) -> io::Result<PathBuf> {
    let with_path = |e: io::Error, what: &str, path: &Path| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| with_path(e, "creating", dir))?;
    let target = dir.join(SIDECAR_FILE);
    let tmp = dir.join(format!(".{SIDECAR_FILE}.tmp"));
    std::fs::copy(source, &tmp).map_err(|e| with_path(e, "copying", source))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| with_path(e, "making executable", &tmp))?;
    std::fs::rename(&tmp, &target).map_err(|e| with_path(e, "installing", &target))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_an_executable_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src-bin");
        std::fs::write(&source, b"\x7fELF not really").unwrap();
        let target = install_sidecar(&source, &dir.path().join("opt")).unwrap();
        assert_eq!(target, dir.path().join("opt/etcd-sidecar"));
        assert_eq!(std::fs::read(&target).unwrap(), b"\x7fELF not really");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // Running it again (an init container restarted) replaces the copy.
        install_sidecar(&source, &dir.path().join("opt")).unwrap();
        let err = install_sidecar(&dir.path().join("missing"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
