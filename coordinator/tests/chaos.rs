//! A short, seeded chaos run in the suite: faults under recorded traffic, every history
//! checked. The full soak is `etcd-chaos --duration 10m` (README).

use std::time::Duration;

use testkit::chaos::{ChaosOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_lose_no_acknowledged_write() {
    let _serial = testkit::serial_guard();
    let report = run(&ChaosOptions {
        coordinator: env!("CARGO_BIN_EXE_etcd-coordinator").into(),
        seed: 42,
        // One pass over these four: a fault during an operation, a control-path cut, a
        // host crash that takes quorum with it (the data survives), and a sidecar killed
        // while it streams a backup.
        duration: Duration::from_secs(1),
        only: vec![
            "kill-etcd-during-replacement".into(),
            "partition-sidecar".into(),
            "kill-majority".into(),
            "kill-sidecar-during-backup".into(),
        ],
        version: "3.6.15".into(),
        upgrade_to: "3.7.2".into(),
    })
    .await;
    let text = report.render();
    assert!(!report.results.is_empty(), "{text}");
    for r in &report.results {
        assert!(r.operations > 100, "too little traffic recorded:\n{text}");
    }
    assert_eq!(report.failed(), 0, "{text}");
    assert_eq!(report.lost(), 0, "{text}");
    assert_eq!(report.violations(), 0, "{text}");
}
