//! Traffic against one real etcd process, recorded and checked: the whole pipeline
//! (traffic, history, final read, HashKV, checker) passes on a healthy member, and the
//! same pipeline rejects the history once one read in it is tampered with.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use etcd_operator::{etcd_bin::EtcdBinaries, version::DEFAULT_VERSION};
use testkit::{
    checker::{CheckOptions, Report, Verdict, check, compare_hashes},
    free_port,
    history::{FinalRead, History, OpKind, OpResult, Outcome, fmt_ns},
    traffic::{Traffic, TrafficConfig, TrafficHandle, final_read, hash_kv_all},
    wait_for,
};

/// One etcd member (a single-member cluster), killed when dropped; can be killed and
/// started again on the same data and ports.
struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_url: String,
    peer_url: String,
}

impl Etcd {
    fn start(dir: &Path) -> Self {
        let mut etcd = Self {
            child: None,
            dir: dir.to_path_buf(),
            client_url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
        };
        etcd.restart();
        etcd
    }

    /// Starts the process (again), appending to the same log.
    fn restart(&mut self) {
        let binary = EtcdBinaries::from_env()
            .resolve(DEFAULT_VERSION)
            .expect("the bundled etcd binary");
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("open the etcd log");
        let (client_url, peer_url) = (&self.client_url, &self.peer_url);
        let child = Command::new(binary)
            .arg("--name=t")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=t={peer_url}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    /// SIGKILLs the process and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The last lines of etcd's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until the member answers a linearizable read.
    async fn wait_ready(&self) {
        let endpoints = vec![self.client_url.clone()];
        let ready = wait_for("etcd to answer a read", Duration::from_secs(30), || {
            let endpoints = endpoints.clone();
            async move {
                let mut client = etcd_client::Client::connect(&endpoints, None).await.ok()?;
                client.get("ready", None).await.ok().map(|_| ())
            }
        })
        .await;
        if let Err(e) = ready {
            panic!("{e}\n{}", self.log_tail());
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the traffic has recorded `target` operations in all.
async fn wait_recorded(traffic: &TrafficHandle, target: usize, etcd: &Etcd) {
    let what = format!("{target} recorded operations");
    let reached = wait_for(&what, Duration::from_secs(60), || async {
        (traffic.recorded() >= target).then_some(())
    })
    .await;
    if let Err(e) = reached {
        panic!("{e}: {} recorded\n{}", traffic.recorded(), etcd.log_tail());
    }
}

/// Checks `history` with its final read, dumping it to a file when it does not pass.
fn assert_passes(history: &History, final_state: &FinalRead, name: &str) -> Report {
    let report = check(history, Some(final_state), &CheckOptions::default());
    println!("{report}");
    if !report.is_pass() {
        let dump = std::env::temp_dir().join(format!("{name}-history.json"));
        history.write_json(&dump).expect("dump the history");
        panic!("{report}\nhistory dumped to {}", dump.display());
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_against_real_etcd_is_linearizable_and_a_tampered_read_is_caught() {
    let waited = std::time::Instant::now();
    let _serial = testkit::serial_guard();
    println!("waited {:?} for the cluster-test lock", waited.elapsed());
    let dir = tempfile::Builder::new()
        .prefix("etcdop-traffic-")
        .tempdir()
        .expect("temporary directory");
    let etcd = Etcd::start(dir.path());
    etcd.wait_ready().await;
    let endpoints = vec![etcd.client_url.clone()];

    // Four clients: two pinned to the (only) endpoint, two using the endpoint list.
    let config = TrafficConfig {
        seed: 20_240_601,
        pinned_clients: 2,
        shared_clients: 2,
        ..TrafficConfig::default()
    };
    let traffic = Traffic::start(config.clone(), &endpoints)
        .await
        .expect("start traffic");
    // Run until enough operations are recorded (about 3 s on this machine), not for a
    // fixed time: the test asserts on what was recorded.
    wait_recorded(&traffic, 2500, &etcd).await;
    let history = traffic.stop().await;
    let ran = history.operations.last().map_or(0, |op| op.ret);
    println!(
        "traffic ran {} for {} operations",
        fmt_ns(ran),
        history.operations.len()
    );
    let final_state = final_read(&endpoints, &config.key_names(), Duration::from_secs(10))
        .await
        .expect("final read");
    let hashes = hash_kv_all(&endpoints, None).await.expect("HashKV");

    let report = assert_passes(&history, &final_state, "traffic");
    assert!(report.counts.total > 100, "{report}");
    assert!(report.violations.is_empty() && report.lost_writes.is_empty());
    assert_eq!(report.linearizable_keys.len(), config.keys);
    // Every kind of operation ran and came back.
    for kind in [
        OpKind::Get { linearizable: true },
        OpKind::Get {
            linearizable: false,
        },
        OpKind::Delete,
    ] {
        assert!(
            history
                .operations
                .iter()
                .any(|op| op.kind == kind && op.is_ok()),
            "no ok {kind:?}"
        );
    }
    let swaps = |succeeded: bool| {
        history.operations.iter().any(|op| {
            matches!(
                op.outcome,
                Outcome::Ok(OpResult::Swapped { succeeded: s, .. }) if s == succeeded
            )
        })
    };
    assert!(
        swaps(true) && swaps(false),
        "compare-and-swap both succeeds and fails"
    );
    assert_eq!(hashes.len(), 1);
    assert!(compare_hashes(&hashes).is_empty());

    // The pipeline can fail: one ok linearizable get now reads a value never written.
    let victim = history
        .operations
        .iter()
        .rev()
        .find(|op| {
            op.kind == OpKind::Get { linearizable: true }
                && matches!(
                    op.outcome,
                    Outcome::Ok(OpResult::Read { value: Some(_), .. })
                )
        })
        .map(|op| op.id)
        .expect("an ok linearizable get that read a value");
    let mut tampered = history.clone();
    if let Some(op) = tampered.get_mut(victim)
        && let Outcome::Ok(OpResult::Read { value, .. }) = &mut op.outcome
    {
        *value = Some("never-written".into());
    }
    let report = check(&tampered, Some(&final_state), &CheckOptions::default());
    assert_eq!(report.verdict(), Verdict::Fail, "{report}");
    assert_eq!(report.violations.len(), 1, "{report}");
    assert_eq!(report.violations[0].blocking_op, Some(victim), "{report}");
    assert_eq!(report.impossible_reads.len(), 1, "{report}");
    assert_eq!(report.impossible_reads[0].op, Some(victim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_through_an_etcd_crash_and_restart_stays_linearizable() {
    let _serial = testkit::serial_guard();
    let dir = tempfile::Builder::new()
        .prefix("etcdop-traffic-crash-")
        .tempdir()
        .expect("temporary directory");
    let mut etcd = Etcd::start(dir.path());
    etcd.wait_ready().await;
    let endpoints = vec![etcd.client_url.clone()];
    let config = TrafficConfig {
        seed: 7,
        op_timeout: Duration::from_millis(500),
        ..TrafficConfig::default()
    };
    let traffic = Traffic::start(config.clone(), &endpoints)
        .await
        .expect("start traffic");
    wait_recorded(&traffic, 500, &etcd).await;

    // SIGKILL mid-traffic: requests in flight end unknown, the next ones cannot connect.
    etcd.kill();
    let not_ok = |traffic: &TrafficHandle| {
        let counts = traffic.recorder().history().counts();
        counts.failed + counts.unknown
    };
    let failing = wait_for(
        "operations failing while etcd is down",
        Duration::from_secs(30),
        || async { (not_ok(&traffic) >= 8).then_some(()) },
    )
    .await;
    failing.expect("clients notice etcd is gone");
    etcd.restart();
    etcd.wait_ready().await;
    let before = traffic.recorded();
    wait_recorded(&traffic, before + 500, &etcd).await;
    let history = traffic.stop().await;

    let final_state = final_read(&endpoints, &config.key_names(), Duration::from_secs(10))
        .await
        .expect("final read");
    let report = assert_passes(&history, &final_state, "traffic-crash");
    // What the clients saw while etcd was down, for whoever reads the log.
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for op in &history.operations {
        let (label, reason) = match &op.outcome {
            Outcome::Failed { reason } => ("failed", reason),
            Outcome::Unknown { reason } => ("unknown", reason),
            Outcome::Ok(_) => continue,
        };
        let reason: String = reason.chars().take(120).collect();
        *reasons.entry(format!("{label}: {reason}")).or_default() += 1;
    }
    for (reason, count) in &reasons {
        println!("{count:5} {reason}");
    }
    assert!(
        report.counts.failed + report.counts.unknown >= 8,
        "{report}"
    );
    // Operations went through after the restart.
    let crash_at = history
        .operations
        .iter()
        .find(|op| !op.is_ok())
        .map(|op| op.call)
        .expect("a failed or unknown operation");
    assert!(
        history
            .operations
            .iter()
            .filter(|op| op.call > crash_at && op.is_ok())
            .count()
            > 100,
        "{report}"
    );
}
