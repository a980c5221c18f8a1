//! A full disk end to end with `etcd-coordinator local` and real etcd: a 3-member cluster
//! with a 16 MiB backend quota is written to until etcd raises NOSPACE and refuses writes.
//!
//! 1. With `spec.maintenance.noSpace: Manual` the alarm shows on every member and in the
//!    `Alarm` condition, which says what to do by hand; the operator changes nothing and
//!    no member is replaced.
//! 2. Once the spec lets the operator recover, it compacts, defragments one member at a
//!    time and disarms; writes are accepted again, every acknowledged write is readable,
//!    and the members (names, ids, ordinals) are the ones from before the alarm.
//!
//! Takes the machine-wide cluster lock.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use etcd_operator::proto::{ClusterStatus, ConditionStatus, ConditionType};
use testkit::{
    clients::etcd_client,
    local_cluster::{CoordinatorOptions, LocalCoordinator, condition, manifest},
    serial_guard,
};

const VERSION: &str = "3.6.15";
const FORM: Duration = Duration::from_secs(90);
const CHANGE: Duration = Duration::from_secs(120);
const QUOTA: i64 = 16 << 20;
/// Keys written over and over: their old revisions are what a compaction frees.
const KEYS: usize = 32;
const VALUE_BYTES: usize = 96 * 1024;

fn coordinator_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
}

fn spec(no_space: &str) -> String {
    format!(
        "{}  maintenance:\n    quotaBackendBytes: {QUOTA}\n    autoCompaction:\n      mode: revision\n      retention: \"1000000\"\n{no_space}",
        manifest("etcd-cluster", 3, VERSION)
    )
}

fn ok<T>(c: &LocalCoordinator, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}\n{}", c.logs(40)),
    }
}

/// Member names with their ids, as the status shows them.
fn identities(s: &ClusterStatus) -> BTreeMap<String, String> {
    s.members
        .iter()
        .map(|m| (m.name.clone(), m.id.clone()))
        .collect()
}

fn value(key: usize, round: usize) -> String {
    let head = format!("{key}:{round}:");
    format!("{head}{}", "x".repeat(VALUE_BYTES - head.len()))
}

fn endpoints(s: &ClusterStatus) -> Vec<String> {
    s.members
        .iter()
        .flat_map(|m| m.client_urls.iter().cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_is_shown_then_freed_and_no_member_is_replaced() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::write(&path, spec("    noSpace: Manual\n")).unwrap();
    let c = LocalCoordinator::start(CoordinatorOptions::new(coordinator_bin(), &path))
        .await
        .expect("start");
    let before = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let members_before = identities(&before);
    let ordinals_before: Vec<String> = c.members().iter().map(|m| m.name.clone()).collect();
    assert_eq!(members_before.len(), 3);

    // Fill: the same keys again and again until etcd refuses.
    let mut client = ok(&c, etcd_client(&endpoints(&before)).await);
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut refused = None;
    // The refused write may still be applied: etcd applies the put that crosses the quota
    // and answers it with NOSPACE. Its key holds its last acknowledged value or this one.
    let mut maybe: Option<(String, String)> = None;
    let mut writes = 0;
    for i in 0..2_000 {
        let (key, round) = (i % KEYS, i / KEYS);
        let k = format!("disk/{key:02}");
        let v = value(key, round);
        match client.put(k.clone(), v.clone(), None).await {
            Ok(_) => {
                writes += 1;
                acked.insert(k, v);
            }
            Err(e) => {
                refused = Some(e.to_string());
                maybe = Some((k, v));
                break;
            }
        }
    }
    let refused = refused.expect("etcd refuses writes once the quota is reached");
    assert!(
        refused.contains("database space exceeded") || refused.contains("NOSPACE"),
        "refused for space: {refused}"
    );
    let full_at = Instant::now();

    // 1. Manual: the alarm is shown, with what to do, and nothing changes.
    let alarmed = ok(
        &c,
        c.wait_until("the Alarm condition and the planner's wait", CHANGE, |s| {
            condition(s, ConditionType::Alarm)
                .is_some_and(|a| a.status() == ConditionStatus::True && a.reason == "NoSpace")
                && condition(s, ConditionType::Progressing)
                    .is_some_and(|p| p.message.contains("NOSPACE"))
        })
        .await,
    );
    let message = &condition(&alarmed, ConditionType::Alarm).unwrap().message;
    for want in [
        "refuses writes",
        "etcdctl compact",
        "etcdctl defrag",
        "etcdctl alarm disarm",
    ] {
        assert!(message.contains(want), "{want:?} in {message:?}");
    }
    assert!(
        alarmed
            .members
            .iter()
            .any(|m| m.alarms.iter().any(|a| a == "NOSPACE")),
        "a member shows NOSPACE: {:?}",
        alarmed.members
    );
    assert!(
        alarmed.members.iter().all(|m| m.healthy),
        "alarmed members stay healthy: {:?}",
        alarmed.members
    );
    assert_eq!(identities(&alarmed), members_before, "no member replaced");
    let still = client.put("disk/probe", "x", None).await;
    assert!(still.is_err(), "nothing freed space on its own");

    // 2. Recover: the operator compacts, defragments and disarms.
    let recover_from = Instant::now();
    c.write_manifest(&spec("")).expect("edit the manifest");
    let cleared = ok(
        &c,
        c.wait_until("the alarm cleared", CHANGE, |s| {
            condition(s, ConditionType::Alarm).is_some_and(|a| a.status() == ConditionStatus::False)
        })
        .await,
    );
    let deadline = Instant::now() + CHANGE;
    loop {
        match client.put("disk/after", "accepted", None).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "writes still refused after the alarm cleared: {e}\n{}",
                c.logs(40)
            ),
        }
    }
    eprintln!(
        "NOSPACE: {writes} writes of {VALUE_BYTES} bytes to {} keys acknowledged before it; writes accepted again {:.1}s after recovery was allowed ({:.1}s after the first refusal)",
        acked.len(),
        recover_from.elapsed().as_secs_f64(),
        full_at.elapsed().as_secs_f64()
    );
    for (k, v) in &acked {
        let got = client.get(k.as_str(), None).await.expect("read");
        let kv = got.kvs().first().unwrap_or_else(|| panic!("{k} is gone"));
        let refused_here = maybe
            .as_ref()
            .filter(|(mk, _)| mk == k)
            .map(|(_, mv)| mv.as_bytes());
        assert!(
            kv.value() == v.as_bytes() || Some(kv.value()) == refused_here,
            "{k} holds {:?}: neither its last acknowledged value {v:?} nor the refused write's {:?}",
            String::from_utf8_lossy(kv.value()),
            refused_here.map(String::from_utf8_lossy)
        );
    }
    assert_eq!(identities(&cleared), members_before, "no member replaced");
    let ordinals_after: Vec<String> = c.members().iter().map(|m| m.name.clone()).collect();
    assert_eq!(ordinals_after, ordinals_before, "no ordinal added");
    let running = ok(&c, c.wait_running(3, VERSION, CHANGE).await);
    assert_eq!(identities(&running), members_before);
    assert!(
        running
            .members
            .iter()
            .all(|m| m.db_size > 0 && m.db_size < QUOTA),
        "defragmented below the quota: {:?}",
        running
            .members
            .iter()
            .map(|m| (m.name.clone(), m.db_size, m.db_size_in_use))
            .collect::<Vec<_>>()
    );
}
