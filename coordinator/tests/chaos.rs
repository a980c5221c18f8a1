//! A short, seeded chaos run in the suite: faults under recorded traffic (a client on every
//! member, watches, leases, a contention phase over each fault), every history checked
//! against the model of revisions, the watch and lease guarantees and etcd's own view of
//! every member. The full soak is `etcd-chaos --duration 10m` (docs/testing.md); what a pass covers
//! is in `docs/testing.md`.

use std::time::Duration;

use testkit::chaos::{ChaosOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_lose_no_acknowledged_write() {
    let _serial = testkit::serial_guard();
    let report = run(&ChaosOptions {
        coordinator: env!("CARGO_BIN_EXE_etcd-coordinator").into(),
        seed: 42,
        // One pass over these six: a fault during an operation, a control-path cut, a
        // host crash that takes quorum with it (the data survives), a sidecar killed
        // while it streams a backup, a member's own volume kept full (as root), and the
        // coordinator killed at a failpoint the seed chooses.
        duration: Duration::from_secs(1),
        only: vec![
            "kill-etcd-during-replacement".into(),
            "partition-sidecar".into(),
            "kill-majority".into(),
            "kill-sidecar-during-backup".into(),
            "fill-volume".into(),
            "crash-coordinator-at-failpoint".into(),
        ],
        version: "3.6.15".into(),
        upgrade_to: "3.7.2".into(),
    })
    .await;
    let text = report.render();
    println!("{text}");
    assert!(!report.results.is_empty(), "{text}");
    for r in &report.results {
        assert!(r.operations > 100, "too little traffic recorded:\n{text}");
        assert!(
            r.evidence.watch_events > 0,
            "no watch event checked:\n{text}"
        );
    }
    assert!(
        report.evidence().lease_renewals > 0,
        "no lease renewal checked:\n{text}"
    );
    assert_eq!(report.failed(), 0, "{text}");
    assert_eq!(report.lost(), 0, "{text}");
    assert_eq!(report.violations(), 0, "{text}");
}

const NETWORK_RUN: &str = "network_faults_remove_no_member_and_lose_no_acknowledged_write";

/// Every member in a network namespace of its own, on its own address; the faults are real
/// packets dropped (iptables) and queued (tbf). The test runs itself again inside a hub
/// namespace it makes, and afterwards checks that every namespace of the run is gone.
#[test]
fn network_faults_remove_no_member_and_lose_no_acknowledged_write() {
    use testkit::netns::{self, Hub};
    if Hub::current().is_some() {
        return inside_the_hub();
    }
    netns::available().expect("this test needs root, iproute2 and iptables (scripts/setup.sh)");
    let hub = Hub::create().expect("make the hub");
    let prefix = hub.prefix().to_string();
    let status = hub
        .run_inside(
            &std::env::current_exe().expect("this test's binary"),
            &["--exact", NETWORK_RUN, "--nocapture", "--test-threads=1"],
        )
        .expect("run inside the hub");
    drop(hub);
    let left: Vec<String> = netns::namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(status.success(), "the run inside the hub failed: {status}");
}

fn inside_the_hub() {
    let _serial = testkit::serial_guard();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime.block_on(run(&ChaosOptions {
        coordinator: env!("CARGO_BIN_EXE_etcd-coordinator").into(),
        seed: 42,
        duration: Duration::from_secs(1),
        // The leader cut off from its followers, a 2 | 3 split of five, a one-way loss, the
        // coordinator cut off from every sidecar while etcd is fine, and the leader cut off
        // in a scheduled defragmentation round (which must still reach every member).
        only: vec![
            "partition-leader".into(),
            "split-2-3".into(),
            "one-way-loss".into(),
            "coordinator-cut-off".into(),
            "partition-during-defrag".into(),
        ],
        version: "3.6.15".into(),
        upgrade_to: "3.7.2".into(),
    }));
    let text = report.render();
    println!("{text}");
    assert_eq!(report.results.len(), 5, "{text}");
    for r in &report.results {
        assert!(r.operations > 100, "too little traffic recorded:\n{text}");
        assert!(
            r.evidence.watch_events > 0,
            "no watch event checked:\n{text}"
        );
        assert_eq!(r.partition_removals, 0, "{text}");
    }
    assert_eq!(report.failed(), 0, "{text}");
    assert_eq!(report.lost(), 0, "{text}");
    assert_eq!(report.violations(), 0, "{text}");
}
