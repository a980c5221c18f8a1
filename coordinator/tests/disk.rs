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
//! A member's data directory on a small volume of its own (a tmpfs, as root):
//!
//! 3. The backend quota of that member fits its volume: writes fill it until etcd raises
//!    NOSPACE while the volume still has room; the operator recovers as above.
//! 4. Something else fills the volume: that member's etcd exits ("no space left on
//!    device"). DISKFULL shows on it and in the `Alarm` condition; the cluster keeps
//!    taking writes on the other two; the member is not replaced, past dead-after too.
//!    Once the space is freed it runs again on its data, or (when etcd cannot start on
//!    what it wrote as the disk filled: a WAL entry half written) it is replaced, having
//!    failed for longer than dead-after. No acknowledged write is lost either way.
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
    local_cluster::{CoordinatorOptions, LocalCoordinator, client_url, condition, manifest},
    serial_guard,
    volume::Tmpfs,
};

const VERSION: &str = "3.6.15";
const FORM: Duration = Duration::from_secs(90);
const CHANGE: Duration = Duration::from_secs(120);
const QUOTA: i64 = 16 << 20;
/// Keys written over and over: their old revisions are what a compaction frees.
const KEYS: usize = 32;
const VALUE_BYTES: usize = 96 * 1024;
const DEAD_AFTER_SECS: u64 = 5;

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

/// Puts `key` = "accepted" until etcd takes it (after an alarm is cleared, a member's
/// disarm may reach etcd a moment later).
async fn put_until_accepted(c: &LocalCoordinator, client: &mut etcd_client::Client, key: &str) {
    let deadline = Instant::now() + CHANGE;
    loop {
        match client.put(key, "accepted", None).await {
            Ok(_) => return,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "writes still refused after the alarm cleared: {e}\n{}",
                c.logs(40)
            ),
        }
    }
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
    put_until_accepted(&c, &mut client, "disk/after").await;
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

/// Writes with their order: acknowledged (the last per key) and of unknown outcome.
#[derive(Default)]
struct Writes {
    seq: u64,
    acked: BTreeMap<String, (u64, String)>,
    unknown: Vec<(u64, String, String)>,
}

impl Writes {
    fn ack(&mut self, key: String, value: String) {
        self.seq += 1;
        self.acked.insert(key, (self.seq, value));
    }

    fn unknown(&mut self, key: String, value: String) {
        self.seq += 1;
        self.unknown.push((self.seq, key, value));
    }

    /// Puts the `round`th 1 MiB value over a few keys; true when acknowledged (a failed
    /// put's outcome is unknown).
    async fn put_big(&mut self, client: &mut etcd_client::Client, round: usize) -> bool {
        let key = round % BIG_KEYS;
        let (k, v) = (format!("small/{key}"), big_value(key, round));
        match client.put(k.clone(), v.clone(), None).await {
            Ok(_) => {
                self.ack(k, v);
                true
            }
            Err(_) => {
                self.unknown(k, v);
                false
            }
        }
    }

    /// Every key holds its last acknowledged value, or a value of unknown outcome written
    /// after it.
    async fn check(&self, client: &mut etcd_client::Client) {
        for (k, (seq, v)) in &self.acked {
            let got = client.get(k.as_str(), None).await.expect("read");
            let kv = got.kvs().first().unwrap_or_else(|| panic!("{k} is gone"));
            let later = self
                .unknown
                .iter()
                .any(|(s, uk, uv)| s > seq && uk == k && uv.as_bytes() == kv.value());
            assert!(
                kv.value() == v.as_bytes() || later,
                "{k} lost its last acknowledged value"
            );
        }
    }
}

const BIG_VALUE: usize = 1 << 20;
const BIG_KEYS: usize = 8;

fn big_value(key: usize, round: usize) -> String {
    let head = format!("{key}:{round}:");
    format!("{head}{}", "y".repeat(BIG_VALUE - head.len()))
}

fn members_named(s: &ClusterStatus, name: &str) -> usize {
    s.members.iter().filter(|m| m.name == name).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_data_volume_fills_and_its_member_is_not_replaced_for_it() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    let spec = |no_space: &str| {
        format!(
            "{}  maintenance:\n    autoCompaction:\n      mode: revision\n      retention: \"1000000\"\n{no_space}",
            manifest("etcd-cluster", 3, VERSION)
        )
    };
    std::fs::write(&path, spec("    noSpace: Manual\n")).unwrap();
    let c = LocalCoordinator::start(
        CoordinatorOptions::new(coordinator_bin(), &path).dead_after_secs(DEAD_AFTER_SECS),
    )
    .await
    .expect("start");
    let first = ok(&c, c.wait_running(3, VERSION, FORM).await);

    // The replacement of a follower gets the next ordinal: its data directory is put on a
    // 640 MiB volume of its own before it exists.
    let small = c.member_name(c.next_ordinal());
    let volume = Tmpfs::mount(&c.data_dir(&small), "640m").expect("a volume of its own");
    let follower = first
        .members
        .iter()
        .find(|m| !m.leader)
        .map(|m| m.name.clone())
        .unwrap();
    ok(&c, c.delete_member(&follower));
    let before = ok(
        &c,
        c.wait_until(&format!("{small} in place of {follower}"), CHANGE, |s| {
            testkit::local_cluster::is_running(s, 3, VERSION) && members_named(s, &small) == 1
        })
        .await,
    );
    let members_before = identities(&before);
    let small_url = client_url(&before, &small).expect("the small member's client URL");

    // 3. Its quota fits its volume: (640 - 384) / 2 MiB; the others keep etcd's default.
    let mut client = ok(&c, etcd_client(&endpoints(&before)).await);
    let mut on_small = ok(&c, etcd_client(std::slice::from_ref(&small_url)).await);
    let quota = on_small.status().await.expect("status").db_size_quota();
    assert_eq!(
        quota,
        128 << 20,
        "the quota of the member on the small volume"
    );
    let mut writes = Writes::default();
    let mut refused = None;
    for i in 0..2_000 {
        let (key, round) = (i % BIG_KEYS, i / BIG_KEYS);
        let (k, v) = (format!("small/{key}"), big_value(key, round));
        match client.put(k.clone(), v.clone(), None).await {
            Ok(_) => {
                writes.ack(k, v);
            }
            Err(e) => {
                refused = Some((i, e.to_string()));
                writes.unknown(k, v);
                break;
            }
        }
    }
    let (filled_by, refused) =
        refused.expect("etcd refuses writes once the small member's quota is reached");
    assert!(
        refused.contains("database space exceeded") || refused.contains("NOSPACE"),
        "refused for space: {refused}"
    );
    // Far below the others' 2 GiB: the small member's quota raised it.
    assert!(
        filled_by < 400,
        "{filled_by} writes of 1 MiB before NOSPACE"
    );
    let alarmed = ok(
        &c,
        c.wait_until("NOSPACE on the small member", CHANGE, |s| {
            condition(s, ConditionType::Alarm).is_some_and(|a| a.reason == "NoSpace")
                && s.members
                    .iter()
                    .any(|m| m.name == small && m.alarms.iter().any(|a| a == "NOSPACE"))
        })
        .await,
    );
    assert_eq!(identities(&alarmed), members_before, "no member replaced");
    let left = volume.available();
    assert!(
        left > 64 << 20,
        "NOSPACE came while the volume still had {} MiB free",
        left >> 20
    );
    c.write_manifest(&spec(""))
        .expect("let the operator recover");
    ok(
        &c,
        c.wait_until("the alarm cleared", CHANGE, |s| {
            condition(s, ConditionType::Alarm).is_some_and(|a| a.status() == ConditionStatus::False)
        })
        .await,
    );
    put_until_accepted(&c, &mut client, "small/after-nospace").await;
    writes.ack("small/after-nospace".into(), "accepted".into());

    // 4. Something else fills the volume: the small member's etcd exits on its next write.
    let filler = volume.keep_full().expect("fill the volume");
    let full_at = Instant::now();
    let mut round = 1_000;
    let disk_full = loop {
        let status = c.status().await;
        if let Some(s) = status.as_ref().filter(|s| {
            s.members
                .iter()
                .any(|m| m.name == small && m.alarms.iter().any(|a| a == "DISKFULL"))
        }) {
            break s.clone();
        }
        assert!(
            full_at.elapsed() < CHANGE,
            "no DISKFULL on {small}: {status:?}\n{}",
            c.logs(40)
        );
        // Writes go on (one in flight on the member as it exits may fail: its outcome is
        // unknown).
        writes.put_big(&mut client, round).await;
        round += 1;
    };
    let disk_full_after = full_at.elapsed();
    let alarm = condition(&disk_full, ConditionType::Alarm).cloned();
    assert!(
        alarm
            .as_ref()
            .is_some_and(|a| a.status() == ConditionStatus::True
                && a.reason == "DiskFull"
                && a.message.contains("not replaced")
                && a.message.contains("Free space on that volume")),
        "{alarm:?}"
    );
    // Not replaced, for twice the dead-after while the volume stays full: the cluster goes
    // on with two of three.
    let watch_until = Instant::now() + Duration::from_secs(2 * DEAD_AFTER_SECS);
    let mut accepted = 0;
    while Instant::now() < watch_until {
        if let Some(s) = c.status().await {
            assert_eq!(
                identities(&s),
                members_before,
                "a member replaced for a full volume\n{}",
                c.logs(40)
            );
        }
        if writes.put_big(&mut client, round).await {
            accepted += 1;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        accepted >= 10,
        "only {accepted} writes accepted with two of three members healthy"
    );

    // Space back: the member runs again on its data, or, when etcd cannot start on what it
    // wrote as the volume filled, is replaced after dead-after.
    drop(filler);
    assert!(volume.available() > 64 << 20, "the space is back");
    let freed_at = Instant::now();
    let after = ok(
        &c,
        c.wait_until("the member back, or replaced", CHANGE, |s| {
            testkit::local_cluster::is_running(s, 3, VERSION)
        })
        .await,
    );
    let outcome = if identities(&after) == members_before {
        "ran again on its data"
    } else {
        assert_eq!(members_named(&after, &small), 0, "{:?}", after.members);
        let logs = c.logs(200);
        assert!(
            logs.contains("keeps exiting on its data"),
            "replaced for something else:\n{logs}"
        );
        "replaced: etcd could not start on its data"
    };
    eprintln!(
        "small volume: NOSPACE after {filled_by} writes of 1 MiB ({} MiB still free); DISKFULL {:.1}s after the volume filled; after the space came back the member {outcome} ({:.1}s)",
        left >> 20,
        disk_full_after.as_secs_f64(),
        freed_at.elapsed().as_secs_f64()
    );
    drop(on_small);
    let mut client = ok(&c, etcd_client(&endpoints(&after)).await);
    writes.check(&mut client).await;
}
