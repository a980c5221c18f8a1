//! Traffic against real etcd processes, recorded and checked: the whole pipeline (traffic,
//! history, final read, HashKV, checker) passes on a healthy three-member cluster, whose
//! members' hashes agree, and the same pipeline rejects the history once one read in it is
//! tampered with (and the hashes once one is); a single member killed and started again
//! under traffic stays linearizable.

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

/// One etcd process of a cluster started by the test.
struct Member {
    name: String,
    child: Option<Child>,
    client_url: String,
    peer_url: String,
}

/// A static etcd cluster of `n` members (each killed when dropped); can be killed and
/// started again on the same data and ports.
struct Etcd {
    dir: PathBuf,
    members: Vec<Member>,
}

impl Etcd {
    fn start(dir: &Path, n: usize) -> Self {
        let members = (0..n)
            .map(|i| Member {
                name: format!("t{i}"),
                child: None,
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
            })
            .collect();
        let mut etcd = Self {
            dir: dir.to_path_buf(),
            members,
        };
        etcd.restart();
        etcd
    }

    /// Starts every member's process (again), appending to the same logs.
    fn restart(&mut self) {
        let binary = EtcdBinaries::from_env()
            .resolve(DEFAULT_VERSION)
            .expect("the bundled etcd binary");
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..self.members.len() {
            let out = File::options()
                .create(true)
                .append(true)
                .open(self.log(i))
                .expect("open the etcd log");
            let m = &self.members[i];
            let (client_url, peer_url) = (&m.client_url, &m.peer_url);
            let child = Command::new(&binary)
                .arg(format!("--name={}", m.name))
                .arg(format!(
                    "--data-dir={}",
                    self.dir.join(&m.name).join("data").display()
                ))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={initial_cluster}"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("clone the log handle"))
                .stderr(out)
                .spawn()
                .expect("start etcd");
            self.members[i].child = Some(child);
        }
    }

    /// SIGKILLs every process and reaps it.
    fn kill(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    fn log(&self, member: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.members[member].name))
    }

    /// The last lines of every member's log, for failure messages.
    fn log_tail(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                let text = std::fs::read_to_string(self.log(i)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {} ---\n{}",
                    self.members[i].name,
                    lines[lines.len().saturating_sub(30)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until every member answers a linearizable read.
    async fn wait_ready(&self) {
        for endpoint in self.client_urls() {
            let ready = wait_for("etcd to answer a read", Duration::from_secs(30), || {
                let endpoints = vec![endpoint.clone()];
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
    let etcd = Etcd::start(dir.path(), 3);
    etcd.wait_ready().await;
    let endpoints = etcd.client_urls();

    // Four clients: two pinned to one member each, two using the endpoint list.
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
    // Every member hashed the same revision, so all three are compared, and agree.
    assert_eq!(hashes.len(), 3, "{hashes:?}");
    let ids: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h.member_id).collect();
    assert_eq!(ids.len(), 3, "three members answered: {hashes:?}");
    assert!(
        hashes.iter().all(|h| (h.hash_revision, h.compact_revision)
            == (hashes[0].hash_revision, hashes[0].compact_revision)),
        "{hashes:?}"
    );
    assert!(compare_hashes(&hashes).is_empty(), "{hashes:?}");
    // The comparison can fail: one member's store differing is reported, and only it.
    let mut diverged = hashes.clone();
    diverged[1].hash ^= 1;
    let mismatches = compare_hashes(&diverged);
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert_eq!(mismatches[0].disagreeing, vec![hashes[1].member_id]);

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
    let mut etcd = Etcd::start(dir.path(), 1);
    etcd.wait_ready().await;
    let endpoints = etcd.client_urls();
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
