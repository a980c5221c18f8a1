//! Supervises the etcd child process: starts it with the arguments the member lifecycle
//! chose, restarts it with backoff when it exits on its own, and stops it gracefully
//! (SIGTERM, then SIGKILL after a grace period) when asked.

use std::{
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    process::{Child, Command},
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep_until, timeout},
};
use tracing::{info, warn};

/// How long etcd gets to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(200);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A run this long resets the restart backoff.
const STABLE_RUN: Duration = Duration::from_secs(30);

/// What the supervisor's child is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessState {
    /// Pid of the running etcd.
    pub pid: Option<u32>,
    /// Restarts after unexpected exits.
    pub restarts: u32,
    /// How the last run ended.
    pub last_exit: Option<String>,
    /// True while etcd is meant to run.
    pub wanted: bool,
}

enum Request {
    Start {
        args: Vec<String>,
        done: oneshot::Sender<std::io::Result<u32>>,
    },
    Stop {
        done: oneshot::Sender<()>,
    },
}

/// Handle on the supervisor task.
#[derive(Clone)]
pub struct Supervisor {
    requests: mpsc::Sender<Request>,
    state: watch::Receiver<ProcessState>,
}

impl Supervisor {
    /// Starts the supervisor task for `binary`. The child is stopped when every handle
    /// is dropped.
    pub fn spawn(binary: PathBuf) -> Self {
        let (requests, rx) = mpsc::channel(8);
        let (state_tx, state) = watch::channel(ProcessState::default());
        tokio::spawn(supervise(binary, rx, state_tx));
        Self { requests, state }
    }

    /// Starts etcd with `args` (stopping a running one first). Returns its pid.
    pub async fn start(&self, args: Vec<String>) -> std::io::Result<u32> {
        let (done, rx) = oneshot::channel();
        self.requests
            .send(Request::Start { args, done })
            .await
            .map_err(|_| std::io::Error::other("supervisor stopped"))?;
        rx.await
            .map_err(|_| std::io::Error::other("supervisor stopped"))?
    }

    /// Stops etcd gracefully and keeps it stopped.
    pub async fn stop(&self) {
        let (done, rx) = oneshot::channel();
        if self.requests.send(Request::Stop { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The child's state, updated on every change.
    pub fn state(&self) -> watch::Receiver<ProcessState> {
        self.state.clone()
    }
}

async fn supervise(
    binary: PathBuf,
    mut requests: mpsc::Receiver<Request>,
    state: watch::Sender<ProcessState>,
) {
    let mut args: Option<Vec<String>> = None;
    let mut child: Option<(Child, Instant)> = None;
    let mut restart_at: Option<Instant> = None;
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(Request::Start { args: new_args, done }) => {
                    if let Some((c, _)) = child.take() {
                        stop_child(c).await;
                    }
                    restart_at = None;
                    backoff = RESTART_BACKOFF_MIN;
                    let result = spawn_etcd(&binary, &new_args);
                    match result {
                        Ok(c) => {
                            let pid = c.id().unwrap_or(0);
                            child = Some((c, Instant::now()));
                            args = Some(new_args);
                            state.send_modify(|s| { s.pid = Some(pid); s.wanted = true; });
                            let _ = done.send(Ok(pid));
                        }
                        Err(e) => {
                            args = None;
                            state.send_modify(|s| { s.pid = None; s.wanted = false; });
                            let _ = done.send(Err(e));
                        }
                    }
                }
                Some(Request::Stop { done }) => {
                    args = None;
                    restart_at = None;
                    state.send_modify(|s| s.wanted = false);
                    if let Some((c, _)) = child.take() {
                        let how = stop_child(c).await;
                        state.send_modify(|s| { s.pid = None; s.last_exit = Some(how); });
                    }
                    let _ = done.send(());
                }
                None => {
                    if let Some((c, _)) = child.take() {
                        stop_child(c).await;
                    }
                    return;
                }
            },
            status = wait_child(&mut child) => {
                let started = child.take().map(|(_, at)| at).unwrap_or_else(Instant::now);
                let how = describe_exit(status);
                warn!(exit = %how, "etcd exited on its own");
                if started.elapsed() >= STABLE_RUN {
                    backoff = RESTART_BACKOFF_MIN;
                }
                restart_at = args.as_ref().map(|_| Instant::now() + backoff);
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                state.send_modify(|s| { s.pid = None; s.last_exit = Some(how); });
            },
            _ = sleep_until(restart_at.unwrap_or_else(Instant::now)), if restart_at.is_some() => {
                restart_at = None;
                if let Some(a) = &args {
                    match spawn_etcd(&binary, a) {
                        Ok(c) => {
                            let pid = c.id().unwrap_or(0);
                            info!(pid, "etcd restarted");
                            child = Some((c, Instant::now()));
                            state.send_modify(|s| { s.pid = Some(pid); s.restarts += 1; });
                        }
                        Err(e) => {
                            warn!(error = %e, "etcd could not be restarted");
                            restart_at = Some(Instant::now() + backoff);
                            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                        }
                    }
                }
            }
        }
    }
}

async fn wait_child(child: &mut Option<(Child, Instant)>) -> std::io::Result<ExitStatus> {
    match child {
        Some((c, _)) => c.wait().await,
        None => std::future::pending().await,
    }
}

fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

async fn stop_child(mut child: Child) -> String {
    let Some(pid) = child.id() else {
        return describe_exit(child.wait().await);
    };
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    match timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => describe_exit(status),
        Err(_) => {
            warn!(pid, "etcd did not stop within the grace period; killing it");
            let _ = child.kill().await;
            describe_exit(child.wait().await)
        }
    }
}

fn spawn_etcd(binary: &PathBuf, args: &[String]) -> std::io::Result<Child> {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C in the terminal reaches the sidecar, which
        // stops etcd in order, rather than both at once.
        .process_group(0);
    die_with_parent(&mut cmd);
    cmd.spawn()
}

/// Makes the kernel kill etcd if the sidecar dies without stopping it (SIGKILL, crash), so
/// that no orphan etcd keeps the member's ports and data directory.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: `pre_exec` runs between fork and exec; the closure only makes the
    // async-signal-safe prctl(PR_SET_PDEATHSIG) system call and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)).map_err(std::io::Error::from)
        });
    }
}
