//! A volume of its own for a member's data directory: a size-limited tmpfs (as root), and
//! something else filling it.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};

/// A tmpfs of `size` (`mount -o size=`, for example "640m") mounted at `path` (made if
/// missing), lazily unmounted when dropped.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts it (as root).
    pub fn mount(path: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "mounting a tmpfs at {} (as root): {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self(path.to_path_buf()))
    }

    /// Bytes still free on it.
    pub fn available(&self) -> u64 {
        nix::sys::statvfs::statvfs(&self.0)
            .map_or(0, |stat| stat.blocks_available() * stat.fragment_size())
    }

    /// Something else filling the volume: a thread appends zeros to a file of its own
    /// whenever there is room (so space etcd frees as it exits is taken again), until the
    /// returned filler is dropped, which removes the file.
    pub fn keep_full(&self) -> anyhow::Result<Filler> {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (full_tx, full_rx) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let chunk = vec![0u8; 256 << 10];
            let mut said = false;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                match f.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {
                        if !said {
                            let _ = full_tx.send(());
                            said = true;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("filling the volume: {e}"),
                }
            }
        });
        let filler = Filler {
            path,
            stop,
            thread: Some(thread),
        };
        full_rx
            .recv_timeout(Duration::from_secs(30))
            .context("the volume did not fill")?;
        Ok(filler)
    }
}

/// See [`Tmpfs::keep_full`].
pub struct Filler {
    path: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
