//! Supervises the etcd child process: starts it with the arguments the member lifecycle
//! chose, restarts it with backoff when it exits on its own, and stops it gracefully
//! (SIGTERM, then SIGKILL after a grace period) when asked.
//!
//! A start may carry arguments for that one run only ([`Supervisor::start_once`]): a
//! restart after an exit uses the arguments given for restarts, so a flag such as
//! `--force-new-cluster` can never apply to a second run, whatever happens to the caller.
//!
//! etcd's log (its stderr) passes through the sidecar to the sidecar's own stderr, line by
//! line and unchanged; the last fatal or panic line of a run is kept, so that an etcd that
//! exits on its own is reported with why ("failed to commit tx: write .../db: no space left
//! on device"), not only with its exit status.

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
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStderr, Command},
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::{Instant, sleep_until, timeout},
};
use tracing::{info, warn};

/// How long etcd gets to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(200);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A run this long resets the restart backoff.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// How long an exited etcd's last log lines may take to reach the relay.
const LOG_DRAIN: Duration = Duration::from_millis(500);

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
    /// When etcd first exited on its own in the present run of failures, milliseconds since
    /// the Unix epoch: kept across restarts that end again, and across a start on request
    /// that follows them (a join tried again on the same ports fails as before); cleared by
    /// a run of `STABLE_RUN` or a stop on request.
    pub failing_since_unix_ms: Option<i64>,
    /// The same moment on the monotonic clock: how long it has been failing is measured
    /// from it (the wall clock may step).
    pub failing_since: Option<Instant>,
}

enum Request {
    Start {
        args: Vec<String>,
        restart_args: Vec<String>,
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

    /// Starts etcd with `args` (stopping a running one first), and with them again after
    /// each exit. Returns its pid.
    pub async fn start(&self, args: Vec<String>) -> std::io::Result<u32> {
        self.start_once(args.clone(), args).await
    }

    /// Starts etcd with `once` for this run only (stopping a running one first); a restart
    /// after it exits uses `restart_args`. Returns its pid.
    pub async fn start_once(
        &self,
        once: Vec<String>,
        restart_args: Vec<String>,
    ) -> std::io::Result<u32> {
        let (done, rx) = oneshot::channel();
        self.requests
            .send(Request::Start {
                args: once,
                restart_args,
                done,
            })
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
    // The relay of the running etcd's log; it ends with the run's last fatal line.
    let mut relay: Option<JoinHandle<Option<String>>> = None;
    let mut restart_at: Option<Instant> = None;
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(Request::Start { args: new_args, restart_args, done }) => {
                    if let Some((c, _)) = child.take() {
                        stop_child(c).await;
                    }
                    restart_at = None;
                    backoff = RESTART_BACKOFF_MIN;
                    let result = spawn_etcd(&binary, &new_args);
                    match result {
                        Ok((c, log)) => {
                            let pid = c.id().unwrap_or(0);
                            child = Some((c, Instant::now()));
                            relay = log;
                            // What a restart runs: never the arguments of this run
                            // only.
                            args = Some(restart_args);
                            state.send_modify(|s| {
                                s.pid = Some(pid);
                                s.wanted = true;
                            });
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
                    state.send_modify(|s| {
                        s.wanted = false;
                        s.failing_since_unix_ms = None;
                        s.failing_since = None;
                    });
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
                let fatal = match relay.take() {
                    Some(log) => timeout(LOG_DRAIN, log).await.ok().and_then(Result::ok).flatten(),
                    None => None,
                };
                let how = match fatal {
                    Some(why) => format!("{}: {why}", describe_exit(status)),
                    None => describe_exit(status),
                };
                warn!(exit = %how, "etcd exited on its own");
                let stable = started.elapsed() >= STABLE_RUN;
                if stable {
                    backoff = RESTART_BACKOFF_MIN;
                }
                restart_at = args.as_ref().map(|_| Instant::now() + backoff);
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                state.send_modify(|s| {
                    s.pid = None;
                    s.last_exit = Some(how);
                    if stable || s.failing_since_unix_ms.is_none() {
                        s.failing_since_unix_ms = Some(unix_ms());
                        s.failing_since = Some(Instant::now());
                    }
                });
            },
            _ = sleep_until(restart_at.unwrap_or_else(Instant::now)), if restart_at.is_some() => {
                restart_at = None;
                if let Some(a) = &args {
                    match spawn_etcd(&binary, a) {
                        Ok((c, log)) => {
                            let pid = c.id().unwrap_or(0);
                            info!(pid, "etcd restarted");
                            child = Some((c, Instant::now()));
                            relay = log;
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

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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

/// Starts etcd; its stderr is relayed ([`relay_log`]).
fn spawn_etcd(
    binary: &PathBuf,
    args: &[String],
) -> std::io::Result<(Child, Option<JoinHandle<Option<String>>>)> {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C in the terminal reaches the sidecar, which
        // stops etcd in order, rather than both at once.
        .process_group(0);
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let log = child.stderr.take().map(|e| tokio::spawn(relay_log(e)));
    Ok((child, log))
}

/// Copies etcd's log to the sidecar's stderr as it comes, until etcd closes it; returns
/// the last fatal or panic line's message ([`fatal_message`]).
async fn relay_log(from: ChildStderr) -> Option<String> {
    let mut lines = BufReader::new(from);
    let mut out = tokio::io::stderr();
    let mut line = Vec::new();
    let mut fatal = None;
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Some(why) = fatal_message(&String::from_utf8_lossy(&line)) {
                    fatal = Some(why);
                }
                let _ = out.write_all(&line).await;
            }
        }
    }
    let _ = out.flush().await;
    fatal
}

/// The message of one of etcd's JSON log lines at level fatal or panic: `msg`, and its
/// `error` when it has one. None for any other line.
pub fn fatal_message(line: &str) -> Option<String> {
    let entry: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let level = entry.get("level")?.as_str()?;
    if !["fatal", "panic", "dpanic"].contains(&level) {
        return None;
    }
    let msg = entry.get("msg")?.as_str()?;
    Some(match entry.get("error").and_then(|e| e.as_str()) {
        Some(error) => format!("{msg}: {error}"),
        None => msg.to_string(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_lines_give_their_message_and_error() {
        let full = r#"{"level":"fatal","ts":"2026-12-03T13:31:31.239860Z","caller":"backend/batch_tx.go:282","msg":"failed to commit tx","error":"write /data/member/snap/db: no space left on device","stacktrace":"go.etcd.io/..."}"#;
        assert_eq!(
            fatal_message(full).as_deref(),
            Some("failed to commit tx: write /data/member/snap/db: no space left on device")
        );
        let panic = r#"{"level":"panic","msg":"failed to open database"}"#;
        assert_eq!(
            fatal_message(panic).as_deref(),
            Some("failed to open database")
        );
        for other in [
            r#"{"level":"warn","msg":"simple token is not cryptographically signed"}"#,
            r#"{"level":"error","msg":"x","error":"y"}"#,
            "panic: failed to open database",
            "",
        ] {
            assert_eq!(fatal_message(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn an_etcd_that_exits_on_its_own_is_reported_with_its_fatal_line() {
        let supervisor = Supervisor::spawn(PathBuf::from("/bin/sh"));
        let mut state = supervisor.state();
        let script = r#"echo '{"level":"info","msg":"starting"}' >&2; echo '{"level":"fatal","msg":"failed to commit tx","error":"no space left on device"}' >&2; exit 1"#;
        supervisor
            .start(vec!["-c".into(), script.into()])
            .await
            .unwrap();
        let exited = timeout(
            Duration::from_secs(10),
            state.wait_for(|s| s.last_exit.is_some()),
        )
        .await
        .expect("the exit is reported")
        .unwrap()
        .clone();
        assert_eq!(
            exited.last_exit.as_deref(),
            Some("exit status: 1: failed to commit tx: no space left on device")
        );
        assert!(exited.wanted, "it is restarted: {exited:?}");
        let first = exited
            .failing_since_unix_ms
            .expect("failing since its first exit");
        // It is started again and exits again: still failing since the first exit.
        let again = timeout(
            Duration::from_secs(10),
            state.wait_for(|s| s.restarts >= 1 && s.pid.is_none()),
        )
        .await
        .expect("a second exit")
        .unwrap()
        .clone();
        assert_eq!(again.failing_since_unix_ms, Some(first), "{again:?}");
        // Started again on request (a join tried again) and failing as before: the run of
        // failures goes on.
        let pid = supervisor
            .start(vec!["-c".into(), script.into()])
            .await
            .unwrap();
        let asked = timeout(
            Duration::from_secs(10),
            state.wait_for(|s| s.pid != Some(pid)),
        )
        .await
        .expect("the exit of the run asked for")
        .unwrap()
        .clone();
        assert_eq!(asked.failing_since_unix_ms, Some(first), "{asked:?}");
        supervisor.stop().await;
        assert_eq!(
            supervisor.state().borrow().failing_since_unix_ms,
            None,
            "a stop on request ends the run of failures"
        );
    }

    #[tokio::test]
    async fn arguments_for_one_start_never_apply_to_a_restart() {
        let supervisor = Supervisor::spawn(PathBuf::from("/bin/sh"));
        let mut state = supervisor.state();
        // The run of the one-shot arguments exits at once; the restart runs the others.
        let once = vec!["-c".into(), "exit 3".into(), "once-only".into()];
        let normal = vec![
            "-c".into(),
            "while :; do sleep 1; done".into(),
            "normal".into(),
        ];
        let first = supervisor.start_once(once, normal).await.unwrap();
        let restarted = timeout(
            Duration::from_secs(10),
            state.wait_for(|s| s.restarts >= 1 && s.pid.is_some_and(|p| p != first)),
        )
        .await
        .expect("a restart after the exit")
        .unwrap()
        .pid
        .unwrap();
        let cmdline = std::fs::read(format!("/proc/{restarted}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(cmdline.contains("normal"), "{cmdline}");
        assert!(!cmdline.contains("once-only"), "{cmdline}");
        supervisor.stop().await;
    }
}
