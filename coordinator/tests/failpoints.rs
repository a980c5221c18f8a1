//! The crash suite: every named failpoint of the act paths (`etcd_operator::failpoint!`), in
//! the coordinator and in the sidecar, is armed, and one life of a cluster is lived through
//! them: create, scale up and down, replace a dead member, upgrade, back up, force a new
//! cluster and restore one after a lost quorum. Each failpoint kills its process (SIGKILL)
//! the first time it is reached; the coordinator is started again at once (as a Deployment
//! restarts its Pod), a sidecar by the coordinator (as the kubelet restarts a container).
//! Every operation must still finish, and the invariants hold throughout:
//!
//! - no acknowledged write is lost (a writer runs through every operation but the two that
//!   may lose writes by design, a forced new cluster and a restore, which start from a
//!   settled cluster and must keep every write acknowledged before them);
//! - at most one learner at a time (the membership watcher reads etcd throughout);
//! - no member name (ordinal) is ever used twice;
//! - `--force-new-cluster` runs on one start per forced recovery (two only in the recovery
//!   where a forced start was killed right after it began), never after the cluster grew back;
//! - and every failpoint was reached: one that no operation reaches fails the suite, as
//!   does one in the code with no case here (the listing test).
//!
//! Runs under the machine-wide cluster lock.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_operator::proto::ClusterStatus;
use testkit::{
    local_cluster::{
        CoordinatorOptions, LocalCoordinator, describe, fetch_status, is_running, manifest,
        read_members,
    },
    serial_guard,
    traffic::{Writer, verify_acked},
    watcher::MembershipWatcher,
};

// Test builds carry the failpoints (the coordinator's dev-dependencies turn them on).
const _: () = assert!(etcd_operator::failpoints::ENABLED);

/// What reaches a failpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    ScaleUp,
    ScaleDown,
    Replace,
    Upgrade,
    Backup,
    ForceNewCluster,
    Restore,
    /// A cluster taken out of the manifests (its members stopped, its data kept).
    Undeclare,
    /// Reached in a test of its own (the file and the test named), where the one process it
    /// kills is started again by the test: a sidecar whose start decision only a restart of
    /// its own process (the kubelet's, on Kubernetes) reaches.
    Elsewhere(&'static str, &'static str),
}

/// Every failpoint, with the operation that reaches it (it may be reached earlier, by an
/// operation that goes through the same step) and what must hold after a crash there.
const FAILPOINTS: &[(&str, Op, &str)] = &[
    (
        "coordinator.create-initial.after-record",
        Op::Create,
        "the bootstrap is recorded, no member made: the next coordinator abandons it (none served) and begins anew with new ordinals",
    ),
    (
        "coordinator.abandon-bootstrap.after-record",
        Op::Create,
        "the abandon is recorded: the next coordinator carries it through",
    ),
    (
        "coordinator.abandon-bootstrap.after-delete",
        Op::Create,
        "the members are deleted, the record still names them: cleared, then a new bootstrap",
    ),
    (
        "coordinator.create-initial.between-members",
        Op::Create,
        "one initial member made of three: it cannot have served alone; abandoned, begun anew",
    ),
    (
        "coordinator.end-bootstrap.before-record",
        Op::Create,
        "the bootstrap's grant released in memory only: the next coordinator ends it again",
    ),
    (
        "coordinator.create-member.after-record",
        Op::ScaleUp,
        "a member decided and never made: gone, taken out of the record, its ordinal never used again",
    ),
    (
        "coordinator.grant.after-given",
        Op::ScaleUp,
        "a grant recorded and never answered: the sidecar asks again and gets the same one",
    ),
    (
        "coordinator.leave.after-sidecar-left",
        Op::ScaleDown,
        "the member left etcd and wiped itself: its runtime member is deleted by the next coordinator",
    ),
    (
        "coordinator.delete-member.after-runtime-delete",
        Op::ScaleDown,
        "the member deleted, the record still names it: gone, taken out of the record",
    ),
    (
        "coordinator.grant.after-record",
        Op::Replace,
        "the coordinator's own grant recorded, its work not begun: it lapses, the work is planned again",
    ),
    (
        "coordinator.remove-dead.after-grant",
        Op::Replace,
        "the removal of a dead member not made: planned again once its grant lapses",
    ),
    (
        "coordinator.remove-dead.after-member-remove",
        Op::Replace,
        "the dead member removed from etcd, its runtime member left: deleted as a member that left",
    ),
    (
        "coordinator.upgrade.after-handoff",
        Op::Upgrade,
        "the member handed off (etcd stopped), not restarted: the next coordinator restarts it on the new version",
    ),
    (
        "coordinator.upgrade.after-record",
        Op::Upgrade,
        "the upgrade step recorded, the member not restarted: restarted on the new version",
    ),
    (
        "coordinator.backup.before-retention",
        Op::Backup,
        "a backup stored and proven, old ones not deleted yet: the next backup's retention deletes them",
    ),
    (
        "coordinator.backup.during-retention",
        Op::Backup,
        "retention stopped after one deletion: the rest goes at the next backup, never the newest verified",
    ),
    (
        "coordinator.force-new-cluster.after-record",
        Op::ForceNewCluster,
        "the forced recovery recorded, not done: forced by the next coordinator, once",
    ),
    (
        "coordinator.force-new-cluster.after-force",
        Op::ForceNewCluster,
        "forced, the record not yet saying so: the cluster grows back; never forced a second time",
    ),
    (
        "coordinator.restore.after-check",
        Op::Restore,
        "the backup checked, nothing decided: the restore is planned again",
    ),
    (
        "coordinator.restore.after-record",
        Op::Restore,
        "the restore decided (backup, seed, survivors kept), nothing deleted: carried through with the same backup and seed",
    ),
    (
        "coordinator.restore.after-discard",
        Op::Restore,
        "the lost members deleted, the survivor stopped, no seed yet: the seed is created and restores the decided backup",
    ),
    (
        "coordinator.delete-kept.after-delete",
        Op::Restore,
        "the survivor kept until the restore ran is deleted, the record still names it: deleted again (nothing left), then forgotten",
    ),
    (
        "coordinator.local.before-record-save",
        Op::Create,
        "nothing recorded or started: the same member is planned again",
    ),
    (
        "coordinator.local.after-record-save",
        Op::Create,
        "recorded, no process and no data: replaced under a new ordinal",
    ),
    (
        "coordinator.local.create-after-spawn",
        Op::Create,
        "started, its pid not recorded: the next coordinator adopts the one sidecar, never starts a second",
    ),
    (
        "coordinator.local.start-after-spawn",
        Op::ScaleUp,
        "started again on its data, its pid not recorded: adopted, same member id",
    ),
    (
        "coordinator.local.delete-after-stop",
        Op::ScaleDown,
        "stopped, still recorded with its data: the planner decides again",
    ),
    (
        "coordinator.local.delete-after-record-save",
        Op::ScaleDown,
        "no longer recorded, its directory left: removed at the next load",
    ),
    (
        "coordinator.local.restart-after-stop",
        Op::Upgrade,
        "stopped on its data at the old version: started again as it was, the step carried on",
    ),
    (
        "coordinator.local.restart-after-record-save",
        Op::Upgrade,
        "down on its data, the new version recorded: started on the new version",
    ),
    (
        "coordinator.local.restart-after-spawn",
        Op::Upgrade,
        "restarted on the new version, its pid not recorded: adopted",
    ),
    (
        "coordinator.local.undeclared-after-spec-remove",
        Op::Undeclare,
        "the last spec of a cluster taken out of the manifests removed, its members not stopped yet: a restart does not start it; its data is kept",
    ),
    (
        "sidecar.join.after-member-add",
        Op::ScaleUp,
        "added as a learner, not started: registers again, finds its entry, never adds twice",
    ),
    (
        "sidecar.join.after-learner-started",
        Op::ScaleUp,
        "a learner with data: starts on it; the planner's FinishJoin promotes it",
    ),
    (
        "sidecar.join.after-promote",
        Op::ScaleUp,
        "a voter, its grant not released: starts on its data; the grant lapses",
    ),
    (
        "sidecar.handoff.in-place-after-stop",
        Op::Elsewhere(
            "sidecars.rs",
            "a_restart_in_place_starts_etcd_again_on_its_data",
        ),
        "etcd stopped for a restart in place: the sidecar started again starts it on its data, the same member",
    ),
    (
        "sidecar.leave.after-leadership-moved",
        Op::Elsewhere(
            "sidecars.rs",
            "a_leader_killed_after_moving_leadership_leaves_when_asked_again",
        ),
        "still a member: starts on its data; the coordinator asks it to leave again",
    ),
    (
        "sidecar.leave.after-member-remove",
        Op::ScaleDown,
        "removed, marked leaving: the leave is finished at the next start, never rejoined",
    ),
    (
        "sidecar.leave.after-wipe",
        Op::ScaleDown,
        "wiped, marked leaving: marked removed and idle at the next start",
    ),
    (
        "sidecar.handoff.after-leadership-moved",
        Op::Upgrade,
        "still running its old version on its data: the upgrade step is asked again",
    ),
    (
        "sidecar.handoff.after-etcd-stopped",
        Op::Upgrade,
        "etcd stopped for the handoff: started on its data; the runtime restarts it on the new version",
    ),
    (
        "sidecar.backup.after-upload",
        Op::Backup,
        "a snapshot without metadata: never listed, never restored; deleted after the next backup of the same cluster (its identity is in its name)",
    ),
    (
        "sidecar.backup.after-metadata",
        Op::Backup,
        "listed, not yet proven restorable: never chosen as the latest",
    ),
    (
        "sidecar.force-new-cluster.after-marker",
        Op::ForceNewCluster,
        "the force recorded in the member directory, not started: forced once when asked again",
    ),
    (
        "sidecar.force-new-cluster.after-forced-start",
        Op::ForceNewCluster,
        "forced once: every later start without the flag",
    ),
    (
        "sidecar.force-new-cluster.before-normal-restart",
        Op::ForceNewCluster,
        "forced, leading alone: started normally; asked again, answered from its record",
    ),
    (
        "sidecar.restore.after-fetch",
        Op::Restore,
        "the backup fetched, nothing written to the data directory: fetched and restored again",
    ),
    (
        "sidecar.restore.after-etcdutl-restore",
        Op::Restore,
        "restored data, no identity yet: etcd starts on it as the restored cluster",
    ),
    (
        "coordinator.rollback.after-record",
        Op::Elsewhere(
            "local_mode.rs",
            "a_failed_upgrade_is_rolled_back_and_a_spec_set_back_converges",
        ),
        "the rollback (and the upgrade's failure) recorded, the member still on the version that fails: the next coordinator restarts it on the version it last ran",
    ),
    (
        "coordinator.rotate-ca.after-begin-record",
        Op::Elsewhere(
            "ca_rotation.rs",
            "the_etcd_ca_rotates_with_an_overlap_under_writes_through_coordinator_crashes",
        ),
        "the rotation recorded (phase Trust, every member pending), no new CA yet: the next coordinator makes it once and carries the phase on",
    ),
    (
        "coordinator.rotate-ca.before-restart",
        Op::Elsewhere(
            "ca_rotation.rs",
            "the_etcd_ca_rotates_with_an_overlap_under_writes_through_coordinator_crashes",
        ),
        "the files of the phase in place, the member not restarted: restarted by the next coordinator",
    ),
    (
        "coordinator.rotate-ca.after-restart",
        Op::Elsewhere(
            "ca_rotation.rs",
            "the_etcd_ca_rotates_with_an_overlap_under_writes_through_coordinator_crashes",
        ),
        "the member restarted, still recorded as pending: restarted once more, harmlessly, then taken out",
    ),
    (
        "coordinator.rotate-ca.after-reissue-record",
        Op::Elsewhere(
            "ca_rotation.rs",
            "the_etcd_ca_rotates_with_an_overlap_under_writes_through_coordinator_crashes",
        ),
        "phase Reissue recorded, leaves not yet issued by the new CA: issued by the next coordinator; members still trust both CAs",
    ),
    (
        "coordinator.rotate-ca.after-reissue",
        Op::Elsewhere(
            "ca_rotation.rs",
            "the_etcd_ca_rotates_with_an_overlap_under_writes_through_coordinator_crashes",
        ),
        "leaves issued by the new CA, phase still Reissue: checked again; the old CA is dropped only once every leaf is the new CA's",
    ),
    (
        "coordinator.rotate-ca.after-drop-record",
        Op::Elsewhere(
            "ca_rotation.rs",
            "the_etcd_ca_rotates_with_an_overlap_under_writes_through_coordinator_crashes",
        ),
        "phase Drop recorded, trust files still hold both CAs: written with the new CA alone, then every member restarted",
    ),
    (
        "coordinator.rotate-ca.finish-after-phase",
        Op::Elsewhere(
            "ca_rotation.rs",
            "the_etcd_ca_rotates_with_an_overlap_under_writes_through_coordinator_crashes",
        ),
        "the rotation file says Finish, the old CA's files not yet overwritten: the new CA issues meanwhile; the next coordinator finishes",
    ),
    (
        "coordinator.rotate-ca.after-finish-files",
        Op::Elsewhere(
            "ca_rotation.rs",
            "the_etcd_ca_rotates_with_an_overlap_under_writes_through_coordinator_crashes",
        ),
        "the new CA is the cluster's, the record still says Drop: the rotation is ended; no new rotation begins",
    ),
    (
        "sidecar.start.before-wipe",
        Op::Elsewhere(
            "sidecars.rs",
            "a_member_removed_while_away_wipes_only_once_and_rejoins",
        ),
        "proof of removal read, not yet wiped: read again, wiped, rejoined under a new id",
    ),
];

/// Every `failpoint!("...")` name in the sources of the workspace.
fn failpoints_in_code() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = BTreeSet::new();
    let mut dirs: Vec<PathBuf> = ["coordinator/src", "sidecar/src", "src"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let mut rest = text.as_str();
                while let Some(at) = rest.find("failpoint!(\"") {
                    rest = &rest[at + "failpoint!(\"".len()..];
                    let end = rest.find('"').unwrap();
                    found.insert(rest[..end].to_string());
                }
            }
        }
    }
    found
}

#[test]
fn every_failpoint_in_the_code_has_a_case_and_every_case_a_failpoint() {
    let in_code = failpoints_in_code();
    let cased: BTreeSet<String> = FAILPOINTS.iter().map(|(n, ..)| n.to_string()).collect();
    assert_eq!(cased.len(), FAILPOINTS.len(), "a failpoint is listed twice");
    let without_case: Vec<&String> = in_code.difference(&cased).collect();
    let without_code: Vec<&String> = cased.difference(&in_code).collect();
    assert!(
        without_case.is_empty() && without_code.is_empty(),
        "failpoints in the code with no case here: {without_case:?}; cases whose failpoint is not in the code: {without_code:?}"
    );
    assert!(in_code.len() >= 20, "{in_code:?}");
    // A failpoint reached in a test of its own: that test exists and arms it.
    for (name, op, _) in FAILPOINTS {
        if let Op::Elsewhere(file, test) = op {
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests")
                    .join(file),
            )
            .unwrap();
            assert!(
                text.contains(&format!("fn {test}(")) && text.contains(name),
                "{file} has no test {test} arming {name}"
            );
        }
    }
}

const CLUSTER: &str = "etcd-cluster";
const OTHER: &str = "etcd-other";
const FROM: &str = "3.6.15";
const TO: &str = "3.7.2";
const WITHIN: Duration = Duration::from_secs(240);

/// The cluster under test, and what watches it.
struct Life {
    c: LocalCoordinator,
    markers: tempfile::TempDir,
    names: Arc<Mutex<NameLog>>,
    force_pids: Arc<Mutex<BTreeSet<u32>>>,
    restarts: usize,
}

/// Every member name the runtime ever recorded, and those it dropped: a name dropped and
/// seen again is an ordinal used twice.
#[derive(Default)]
struct NameLog {
    present: BTreeSet<String>,
    dropped: BTreeSet<String>,
    reused: BTreeSet<String>,
}

/// The one crash after which a second forced start is right: the sidecar (and its etcd
/// with it) killed right after the forced start, before the force could take effect.
const KILLED_FORCED_START: &str = "sidecar.force-new-cluster.after-forced-start";

fn spec(size: i32, version: &str, extra: &str) -> String {
    format!(
        "{}  backup:\n    keep: 1\n{extra}",
        manifest(CLUSTER, size, version)
    )
}

impl Life {
    fn fired(&self) -> BTreeSet<String> {
        FAILPOINTS
            .iter()
            .filter(|(_, op, _)| !matches!(op, Op::Elsewhere(..)))
            .filter(|(name, ..)| etcd_operator::failpoints::fired(self.markers.path(), name))
            .map(|(name, ..)| name.to_string())
            .collect()
    }

    /// Waits until the cluster's status satisfies `done`, starting the coordinator again
    /// whenever it has died.
    async fn converge(
        &mut self,
        what: &str,
        done: impl Fn(&ClusterStatus) -> bool,
    ) -> ClusterStatus {
        self.converge_cluster(CLUSTER, what, done).await
    }

    /// [`Self::converge`] for cluster `cluster`.
    async fn converge_cluster(
        &mut self,
        cluster: &str,
        what: &str,
        done: impl Fn(&ClusterStatus) -> bool,
    ) -> ClusterStatus {
        let deadline = tokio::time::Instant::now() + WITHIN;
        let mut last = None;
        loop {
            match self.c.restart_if_exited().await {
                Ok(true) => self.restarts += 1,
                Ok(false) => {}
                Err(e) => panic!("starting the coordinator again: {e:#}"),
            }
            if let Some(s) = fetch_status(self.c.channel(), cluster).await {
                if done(&s) {
                    return s;
                }
                last = Some(describe(&s));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {WITHIN:?} (failpoints fired: {:?})\nlast: {}\n{}",
                self.fired(),
                last.unwrap_or_default(),
                self.c.logs(60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn set_spec(&self, text: &str) {
        self.c.write_manifest(text).expect("write the manifest");
    }

    /// `etcd-coordinator <args>` against the coordinator's state directory.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
            .args(args)
            .arg(format!("--state-dir={}", self.c.state_dir().display()))
            .arg(format!("--control-addr={}", self.c.control_addr()))
            .output()
            .expect("run etcd-coordinator")
    }

    /// Kills every member but the first and wipes their data (a majority lost for good),
    /// the coordinator stopped meanwhile (else it starts a killed member again on its data
    /// before the data is gone).
    async fn lose_a_majority(&mut self, running: &ClusterStatus) {
        self.c.crash();
        for m in &running.members[1..] {
            self.c.kill_member_and_wait(&m.name).await.expect("kill");
            std::fs::remove_dir_all(self.c.data_dir(&m.name)).expect("wipe");
        }
    }

    /// Waits until every member holds the same data (after the writer stopped).
    async fn settled(&self, running: &ClusterStatus) {
        let endpoints: Vec<String> = running
            .members
            .iter()
            .flat_map(|m| m.client_urls.clone())
            .collect();
        testkit::wait_for("every member to hold the same data", WITHIN, || {
            let endpoints = endpoints.clone();
            async move {
                let hashes = testkit::traffic::hash_kv_all(&endpoints, None).await.ok()?;
                (hashes.len() == endpoints.len()
                    && testkit::checker::compare_hashes(&hashes).is_empty())
                .then_some(())
            }
        })
        .await
        .expect("settled");
    }
}

fn running(size: usize, version: &'static str) -> impl Fn(&ClusterStatus) -> bool {
    move |s| is_running(s, size, version)
}

/// Samples the command lines of this state directory's etcd processes: every pid that ran
/// with `--force-new-cluster`.
fn watch_forced(state: PathBuf, seen: Arc<Mutex<BTreeSet<u32>>>) {
    std::thread::spawn(move || {
        let state = state.display().to_string();
        loop {
            if let Ok(entries) = std::fs::read_dir("/proc") {
                for e in entries.flatten() {
                    let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                        continue;
                    };
                    let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                        continue;
                    };
                    let args: Vec<String> = cmdline
                        .split(|b| *b == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    if args.iter().any(|a| a == "--force-new-cluster")
                        && args.iter().any(|a| a.contains(&state))
                    {
                        seen.lock().unwrap().insert(pid);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// Follows the member names the runtime records.
fn watch_names(cluster_json: PathBuf, log: Arc<Mutex<NameLog>>) {
    std::thread::spawn(move || {
        loop {
            let now: BTreeSet<String> = read_members(&cluster_json)
                .into_iter()
                .map(|m| m.name)
                .collect();
            {
                let mut log = log.lock().unwrap();
                let gone: Vec<String> = log.present.difference(&now).cloned().collect();
                let back: Vec<String> = now.intersection(&log.dropped).cloned().collect();
                log.reused.extend(back);
                log.dropped.extend(gone);
                log.present = now;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_failpoint_loses_nothing_and_the_cluster_carries_on() {
    let _serial = serial_guard();
    let markers = tempfile::tempdir().unwrap();
    let armed: Vec<String> = FAILPOINTS
        .iter()
        .filter(|(_, op, _)| !matches!(op, Op::Elsewhere(..)))
        .map(|(name, ..)| format!("{name}=return"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::write(&path, spec(3, FROM, "")).unwrap();
    let c = LocalCoordinator::start(
        CoordinatorOptions::new(env!("CARGO_BIN_EXE_etcd-coordinator"), &path)
            .dead_after_secs(4)
            .may_die_early()
            .env("FAILPOINTS", &armed.join(";"))
            .env(
                etcd_operator::failpoints::MARKER_DIR_ENV,
                &markers.path().display().to_string(),
            ),
    )
    .await
    .expect("start");
    let names = Arc::new(Mutex::new(NameLog::default()));
    watch_names(c.cluster_json(), Arc::clone(&names));
    let force_pids = Arc::new(Mutex::new(BTreeSet::new()));
    watch_forced(c.state_dir().to_path_buf(), Arc::clone(&force_pids));
    let mut life = Life {
        c,
        markers,
        names,
        force_pids,
        restarts: 0,
    };
    let watcher = MembershipWatcher::start(life.c.live_endpoints());
    let mut reached: BTreeMap<Op, Vec<String>> = BTreeMap::new();
    let mut check = |life: &Life, op: Op| {
        let fired = life.fired();
        let missing: Vec<&str> = FAILPOINTS
            .iter()
            .filter(|(name, at, _)| *at <= op && !fired.contains(*name))
            .map(|(name, ..)| *name)
            .collect();
        assert!(
            missing.is_empty(),
            "after {op:?}, failpoints never reached: {missing:?}\n{}",
            life.c.logs(40)
        );
        let newly: Vec<String> = fired
            .iter()
            .filter(|n| !reached.values().flatten().any(|r| r == *n))
            .cloned()
            .collect();
        reached.insert(op, newly);
    };

    // Create, through every crash of a bootstrap.
    life.converge("the cluster created", running(3, FROM)).await;
    check(&life, Op::Create);
    let writer = Writer::start(life.c.live_endpoints());
    writer
        .wait_acked(20, Duration::from_secs(30))
        .await
        .expect("writes acknowledged");

    // Scale up and down until every crash of both was reached.
    for round in 0..4 {
        life.set_spec(&spec(4, FROM, ""));
        life.converge("scaled to 4", running(4, FROM)).await;
        life.set_spec(&spec(3, FROM, ""));
        life.converge("scaled back to 3", running(3, FROM)).await;
        let fired = life.fired();
        let left = FAILPOINTS
            .iter()
            .filter(|(n, op, _)| *op <= Op::ScaleDown && !fired.contains(*n))
            .count();
        if left == 0 || round == 3 {
            break;
        }
    }
    check(&life, Op::ScaleUp);
    check(&life, Op::ScaleDown);

    // A member dies with its data: removed under the coordinator's own grant, replaced.
    for _ in 0..3 {
        let now = life.converge("running", running(3, FROM)).await;
        let victim = now
            .members
            .iter()
            .find(|m| !m.leader)
            .expect("a follower")
            .name
            .clone();
        // The coordinator stopped meanwhile: else it starts the killed member again on its
        // data before the data is gone.
        life.c.crash();
        life.c.kill_member_and_wait(&victim).await.expect("kill");
        std::fs::remove_dir_all(life.c.data_dir(&victim)).expect("wipe");
        life.converge("the dead member replaced", |s| {
            is_running(s, 3, FROM) && s.members.iter().all(|m| m.name != victim)
        })
        .await;
        if FAILPOINTS
            .iter()
            .filter(|(_, op, _)| *op == Op::Replace)
            .all(|(n, ..)| life.fired().contains(*n))
        {
            break;
        }
    }
    check(&life, Op::Replace);

    // Upgrade, follower by follower, the leader last.
    life.set_spec(&spec(3, TO, ""));
    life.converge("upgraded", running(3, TO)).await;
    check(&life, Op::Upgrade);

    // Backups, with a retention of one, until every crash of a backup was reached: each
    // crash fails the backup it hits (the coordinator or the sidecar died under it).
    for _ in 0..8 {
        let out = life.cli(&["backup", CLUSTER]);
        if !out.status.success() {
            life.converge("running", running(3, TO)).await;
        }
        let fired = life.fired();
        if FAILPOINTS
            .iter()
            .filter(|(_, op, _)| *op == Op::Backup)
            .all(|(n, ..)| fired.contains(*n))
        {
            break;
        }
    }
    check(&life, Op::Backup);

    // Every write acknowledged so far is there.
    let acked = writer.stop().await.acked;
    let now = life.converge("running", running(3, TO)).await;
    let endpoints: Vec<String> = now.endpoints.split(',').map(str::to_string).collect();
    verify_acked(&endpoints, &acked)
        .await
        .expect("no acknowledged write lost");

    // A majority lost for good: forced from the survivor, again until every crash of a
    // forced new cluster was reached; each one forces from the same data, and never after the cluster grew back.
    life.set_spec(&spec(
        3,
        TO,
        "  recovery:\n    quorumLoss: ForceNewCluster\n",
    ));
    let mut forced = now;
    for _ in 0..3 {
        life.settled(&forced).await;
        let before = life.force_pids.lock().unwrap().clone();
        let killed_forced_before = life.fired().contains(KILLED_FORCED_START);
        life.lose_a_majority(&forced).await;
        forced = life
            .converge("grown back after a forced new cluster", running(3, TO))
            .await;
        let endpoints: Vec<String> = forced.endpoints.split(',').map(str::to_string).collect();
        verify_acked(&endpoints, &acked)
            .await
            .expect("the survivor held every acknowledged write");
        // The flag ran on at least one start, and on none after the cluster grew back: a
        // forced start killed before it took effect (the sidecar and its etcd crashed right
        // after it) is followed by another from the same data, never by one that drops a
        // member added since.
        let pids = life.force_pids.lock().unwrap().clone();
        let killed_forced = !killed_forced_before && life.fired().contains(KILLED_FORCED_START);
        let starts = pids.len() - before.len();
        assert!(starts >= 1, "no start with --force-new-cluster: {pids:?}");
        assert!(
            starts <= 1 + usize::from(killed_forced),
            "--force-new-cluster ran {starts} times in one recovery (a forced start killed \
             before it took effect in it: {killed_forced}): {pids:?}"
        );
        life.settled(&forced).await;
        let after = life.force_pids.lock().unwrap().clone();
        assert_eq!(
            after, pids,
            "--force-new-cluster ran again after the cluster grew back"
        );
        let fired = life.fired();
        if FAILPOINTS
            .iter()
            .filter(|(_, op, _)| *op == Op::ForceNewCluster)
            .all(|(n, ..)| fired.contains(*n))
        {
            break;
        }
    }
    check(&life, Op::ForceNewCluster);

    // A majority lost for good again: restored from the latest backup.
    life.settled(&forced).await;
    let out = life.cli(&["backup", CLUSTER]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    life.set_spec(&spec(3, TO, "  recovery:\n    quorumLoss: Restore\n"));
    life.lose_a_majority(&forced).await;
    let restored = life
        .converge("restored from the backup", |s| {
            is_running(s, 3, TO)
                && s.members
                    .iter()
                    .all(|m| !forced.members.iter().any(|f| f.name == m.name))
        })
        .await;
    let endpoints: Vec<String> = restored.endpoints.split(',').map(str::to_string).collect();
    verify_acked(&endpoints, &acked)
        .await
        .expect("the restored cluster holds every write acknowledged before the backup");
    // The survivor kept until the restore ran is deleted afterwards.
    let survivor = life.c.data_dir(&forced.members[0].name);
    life.converge("the survivor of the lost cluster deleted", move |_| {
        !survivor.exists()
    })
    .await;
    check(&life, Op::Restore);

    // A second cluster declared, then taken out of the manifests: stopped, its data kept,
    // not started again by a coordinator that restarts.
    let base = spec(3, TO, "  recovery:\n    quorumLoss: Restore\n");
    life.set_spec(&format!("{base}---\n{}", manifest(OTHER, 1, TO)));
    life.converge_cluster(OTHER, "the second cluster running", running(1, TO))
        .await;
    life.set_spec(&base);
    let marker = life
        .markers
        .path()
        .join("coordinator.local.undeclared-after-spec-remove");
    life.converge("the second cluster taken out", move |_| marker.exists())
        .await;
    life.converge("running after the second cluster went", running(3, TO))
        .await;
    assert!(
        fetch_status(life.c.channel(), OTHER).await.is_none(),
        "a cluster taken out of the manifests is not started again"
    );
    check(&life, Op::Undeclare);

    let history = watcher.history();
    assert!(
        history.max_learners <= 1,
        "more than one learner at once: {history:?}"
    );
    let names = life.names.lock().unwrap();
    assert!(
        names.reused.is_empty(),
        "member names used twice: {:?}",
        names.reused
    );
    assert!(life.restarts > 0, "the coordinator never crashed");
    let all: Vec<&str> = FAILPOINTS
        .iter()
        .filter(|(_, op, _)| !matches!(op, Op::Elsewhere(..)))
        .map(|(n, ..)| *n)
        .collect();
    assert_eq!(life.fired().len(), all.len(), "{reached:?}");
    eprintln!(
        "{} failpoints reached, the coordinator started {} times; by operation: {reached:?}",
        all.len(),
        life.restarts + 1
    );
}
