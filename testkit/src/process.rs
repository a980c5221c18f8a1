//! Processes a test starts: free ports, a sidecar process guard that kills on drop, a
//! sidecar's etcd child, and a machine-wide lock so tests that start etcd clusters run one at a time (a 2-core machine
//! running several clusters at once starves them into election timeouts).

use std::{
    collections::HashSet,
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The etcd child of a sidecar (spawned from any of its threads, so every thread's
/// children are read).
pub fn etcd_pid(sidecar: u32) -> anyhow::Result<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{sidecar}/task"))
        .map_err(|e| anyhow::anyhow!("sidecar {sidecar} is not running: {e}"))?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return Ok(pid);
        }
    }
    anyhow::bail!("sidecar {sidecar} has no etcd child")
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1, never the same twice in one test process.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port on 127.0.0.1");
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// SIGTERMs process `pid` (a clean stop) and polls `exited` (a child's `try_wait`) until
/// it gives the exit status or `within` has passed: `Ok(None)` then, and the caller kills
/// it. The one way the testkit and its tests stop a process cleanly.
pub async fn terminate<S>(
    pid: u32,
    within: Duration,
    mut exited: impl FnMut() -> std::io::Result<Option<S>>,
) -> std::io::Result<Option<S>> {
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).map_err(std::io::Error::from)?;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = exited()? {
            return Ok(Some(status));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Holds the machine-wide lock for tests that run etcd clusters; released on drop.
pub struct SerialGuard {
    _file: File,
}

/// Takes the machine-wide cluster-test lock, waiting for other tests to finish.
pub fn serial_guard() -> SerialGuard {
    let path = std::env::temp_dir().join("etcd-operator-cluster-tests.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("open the cluster-test lock file");
    file.lock().expect("take the cluster-test lock");
    SerialGuard { _file: file }
}

/// How to start one sidecar.
#[derive(Clone, Debug)]
pub struct SidecarSpec {
    /// The `etcd-sidecar` binary.
    pub binary: PathBuf,
    /// Arguments before `run`: none for `etcd-sidecar`, `["sidecar"]` for
    /// `etcd-coordinator`, which embeds the same sidecar.
    pub leading_args: Vec<String>,
    /// Cluster name.
    pub cluster: String,
    /// Member name.
    pub name: String,
    /// Member directory.
    pub member_dir: PathBuf,
    /// Coordinator URL.
    pub coordinator_url: String,
    /// etcd client port.
    pub client_port: u16,
    /// etcd peer port.
    pub peer_port: u16,
    /// Sidecar gRPC port.
    pub grpc_port: u16,
    /// etcd version (binary resolved by the sidecar).
    pub etcd_version: Option<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// The control path's files (`ca.crt`, `tls.crt`, `tls.key`), issued by the coordinator.
    pub tls_dir: PathBuf,
}

impl SidecarSpec {
    /// A sidecar with fresh ports, its member directory under `base`.
    pub fn new(
        binary: &Path,
        cluster: &str,
        name: &str,
        base: &Path,
        coordinator_url: &str,
    ) -> Self {
        Self {
            binary: binary.to_path_buf(),
            leading_args: Vec::new(),
            cluster: cluster.into(),
            name: name.into(),
            member_dir: base.join(name),
            tls_dir: base.join(format!("{name}.tls")),
            coordinator_url: coordinator_url.into(),
            client_port: free_port(),
            peer_port: free_port(),
            grpc_port: free_port(),
            etcd_version: None,
            env: Vec::new(),
        }
    }

    /// The member's client URL.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The member's peer URL.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The sidecar's gRPC URL (mutual TLS).
    pub fn grpc_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }
}

/// A running sidecar; killed (with its etcd) when dropped.
pub struct SidecarProc {
    /// How it was started.
    pub spec: SidecarSpec,
    child: Option<Child>,
}

impl SidecarProc {
    /// Starts the sidecar; its output goes to `<member_dir>.log`.
    pub fn start(spec: SidecarSpec) -> std::io::Result<Self> {
        std::fs::create_dir_all(spec.member_dir.parent().unwrap_or(Path::new("/tmp")))?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(spec.member_dir.with_extension("log"))?;
        let mut cmd = Command::new(&spec.binary);
        cmd.args(&spec.leading_args)
            .arg("run")
            .arg(format!("--cluster={}", spec.cluster))
            .arg(format!("--name={}", spec.name))
            .arg(format!("--data-dir={}", spec.member_dir.display()))
            .arg(format!("--peer-url={}", spec.peer_url()))
            .arg(format!("--client-url={}", spec.client_url()))
            .arg(format!("--coordinator-url={}", spec.coordinator_url))
            .arg(format!("--grpc-addr=127.0.0.1:{}", spec.grpc_port))
            .arg("--report-interval-ms=250")
            .arg(format!(
                "--tls-cert={}",
                spec.tls_dir.join("tls.crt").display()
            ))
            .arg(format!(
                "--tls-key={}",
                spec.tls_dir.join("tls.key").display()
            ))
            .arg(format!(
                "--tls-ca={}",
                spec.tls_dir.join("ca.crt").display()
            ))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(v) = &spec.etcd_version {
            cmd.arg(format!("--etcd-version={v}"));
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn()?;
        Ok(Self {
            spec,
            child: Some(child),
        })
    }

    /// The sidecar's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILLs the sidecar (its etcd dies with it) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to 30 s for a clean exit (then SIGKILLs it); returns
    /// whether it exited by itself.
    pub async fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let exited = terminate(c.id(), Duration::from_secs(30), || c.try_wait()).await;
        if matches!(exited, Ok(Some(_))) {
            return true;
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last `n` lines of the sidecar's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text =
            std::fs::read_to_string(self.spec.member_dir.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for SidecarProc {
    fn drop(&mut self) {
        self.kill();
    }
}
