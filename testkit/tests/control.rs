//! The positive control ([`testkit::control`]): a cluster rolled back to an old copy of
//! every member's data directory under recorded traffic. The pipeline must flag it on
//! every seed; a run of the control that passes fails this test.

use testkit::{
    checker::{RevisionAnomalyKind, Verdict},
    control::rollback,
};

/// The seeds run (each a different operation mix and timing).
const SEEDS: [u64; 2] = [1, 2];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_rolled_back_to_an_old_copy_of_its_data_is_flagged_on_every_seed() {
    let waited = std::time::Instant::now();
    let _serial = testkit::serial_guard();
    println!("waited {:?} for the cluster-test lock", waited.elapsed());
    let started = std::time::Instant::now();
    for seed in SEEDS {
        let dir = tempfile::Builder::new()
            .prefix("etcdop-control-")
            .tempdir()
            .expect("temporary directory");
        let run = rollback(dir.path(), seed)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: the control did not run: {e:#}"));
        let report = &run.report;
        println!(
            "seed {seed}: {} acknowledged writes rolled back; {report}",
            run.lost_on_purpose
        );
        assert!(run.lost_on_purpose > 0, "seed {seed}: nothing to lose");
        assert_eq!(
            report.verdict(),
            Verdict::Fail,
            "seed {seed}: the control passed the checker:\n{report}"
        );
        // Revisions handed out twice: the signature of a rollback.
        assert!(
            report
                .revision_anomalies
                .iter()
                .any(|a| a.kind == RevisionAnomalyKind::SharedRevision),
            "seed {seed}: no revision handed out twice:\n{report}"
        );
    }
    println!("{} seeds in {:?}", SEEDS.len(), started.elapsed());
}
