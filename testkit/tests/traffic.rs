//! Traffic against real etcd processes, recorded and checked: the whole pipeline (traffic
//! with watches and leases, history, final read, every member's own reads, HashKV,
//! checker) passes on a healthy three-member cluster, whose members' hashes agree, and the
//! same pipeline rejects the history once one read in it is tampered with (and the hashes
//! once one is); a single member killed and started again under traffic stays
//! linearizable.

use std::time::Duration;

use testkit::{
    checker::{CheckOptions, Report, Verdict, check, compare_hashes},
    cluster_view::{ClusterView, settle},
    history::{FinalRead, History, OpKind, OpResult, Outcome, fmt_ns},
    static_cluster::StaticCluster,
    traffic::{Traffic, TrafficConfig, TrafficHandle, final_read, hash_kv_all},
    wait_for,
};

/// Waits until the traffic has recorded `target` operations in all.
async fn wait_recorded(traffic: &TrafficHandle, target: usize, etcd: &StaticCluster) {
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
    let etcd = StaticCluster::start(dir.path(), 3).expect("start etcd");
    etcd.wait_ready().await.expect("etcd ready");
    let endpoints = etcd.client_urls();

    // Five clients: one pinned to each member, two trying every member in turn; two
    // watchers, one lease client.
    let config = TrafficConfig {
        seed: 20_240_601,
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
    let mut final_state = final_read(&endpoints, &config.key_names(), Duration::from_secs(10))
        .await
        .expect("final read");
    let view = ClusterView::read(&endpoints).await.expect("etcd's view");
    assert_eq!(view.not_converged(3, "3.6.15"), None, "{view:?}");
    let settled = settle(&view, &config.key_names(), Duration::from_secs(10))
        .await
        .expect("every member settled");
    final_state.members = settled.reads;
    let hashes = hash_kv_all(&endpoints, None).await.expect("HashKV");

    let report = assert_passes(&history, &final_state, "traffic");
    assert!(report.counts.total > 100, "{report}");
    assert!(report.violations.is_empty() && report.lost_writes.is_empty());
    assert_eq!(report.linearizable_keys.len(), config.keys);
    // Each member was read on its own once settled; every pinned client's member answered.
    assert_eq!(final_state.members.len(), 3);
    let answered: std::collections::BTreeSet<u64> = history
        .operations
        .iter()
        .filter_map(|op| op.member)
        .collect();
    assert_eq!(answered.len(), 3, "every member answered operations");
    // The watches delivered events and the lease was renewed: both were checked.
    assert!(report.watch.events > 100, "{report}");
    assert!(report.leases.renewals > 0, "{report}");
    println!(
        "overlap on a key: {:.1}% of {} operations",
        history.overlap().percent(),
        history.overlap().operations
    );
    // Every kind of operation ran and came back.
    for kind in [
        OpKind::Get { linearizable: true },
        OpKind::Get {
            linearizable: false,
        },
        OpKind::Delete,
        OpKind::Range { linearizable: true },
        OpKind::Range {
            linearizable: false,
        },
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
    assert!(
        history
            .operations
            .iter()
            .any(|op| matches!(op.kind, OpKind::Txn { .. }) && op.is_ok()),
        "no ok transaction over two keys"
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
    let mut etcd = StaticCluster::start(dir.path(), 1).expect("start etcd");
    etcd.wait_ready().await.expect("etcd ready");
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
    etcd.restart().expect("restart etcd");
    etcd.wait_ready().await.expect("etcd ready again");
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
