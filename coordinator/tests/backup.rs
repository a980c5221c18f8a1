//! Backups end to end with `etcd-coordinator local`, real etcd, the official etcdutl and a
//! real S3-compatible server (moto, started here on a loopback port and stopped after):
//!
//! 1. a backup taken on demand while a writer runs is stored, listed and proven restorable;
//!    a new cluster created from it holds every write acknowledged before the backup and
//!    none written after it, HashKV equal on its members, and says what it was restored
//!    from; the original cluster is untouched;
//! 2. to S3 with `keep: 3`: five backups leave the three newest; with the S3 server down a
//!    backup fails with the reason in status and nothing else changes; once it is back the
//!    next one succeeds.
//!
//! Each test takes the machine-wide cluster lock.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use etcd_client::GetOptions;
use etcd_operator::proto::{ClusterStatus, ConditionStatus, ConditionType};
use testkit::{
    clients::etcd_client,
    free_port,
    local_cluster::{
        CoordinatorOptions, LocalCoordinator, condition, describe, fetch_status, is_running,
        manifest,
    },
    serial_guard,
    traffic::{Writer, verify_acked},
    wait_for,
};

const VERSION: &str = "3.6.15";
const FORM: Duration = Duration::from_secs(90);
const CHANGE: Duration = Duration::from_secs(120);

fn coordinator_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
}

fn ok<T>(c: &LocalCoordinator, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}\n{}", c.logs(40)),
    }
}

/// `etcd-coordinator <args>` against `c`'s state directory and ports.
fn cli(c: &LocalCoordinator, args: &[&str]) -> Output {
    let mut cmd = Command::new(coordinator_bin());
    cmd.args(args);
    match args.first() {
        Some(&"backups") => cmd.arg(format!("--grpc-addr={}", c.addr())),
        _ => cmd
            .arg(format!("--state-dir={}", c.state_dir().display()))
            .arg(format!("--control-addr={}", c.control_addr())),
    };
    cmd.output().expect("run etcd-coordinator")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A manifest of `etcd-cluster` with `size` members and `extra` appended to its spec, in a
/// directory of its own (kept while the returned guard lives).
fn manifest_with(size: i32, extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::write(
        &path,
        format!("{}{extra}", manifest("etcd-cluster", size, VERSION)),
    )
    .unwrap();
    (dir, path)
}

/// Asks for a backup that must fail; returns the status once `BackupHealthy` is False, and
/// its message.
async fn backup_fails(c: &LocalCoordinator) -> (ClusterStatus, String) {
    let failed = cli(c, &["backup", c.cluster()]);
    assert!(!failed.status.success(), "{}", text(&failed));
    let status = wait_cluster(c, c.cluster(), "BackupHealthy False", CHANGE, |s| {
        condition(s, ConditionType::BackupHealthy)
            .is_some_and(|b| b.status() == ConditionStatus::False)
    })
    .await;
    let reason = condition(&status, ConditionType::BackupHealthy)
        .unwrap()
        .message
        .clone();
    (status, reason)
}

/// The names of the backups listed, sorted.
fn listed_names(c: &LocalCoordinator) -> Vec<String> {
    let out = cli(c, &["backups", c.cluster()]);
    assert!(out.status.success(), "{}", text(&out));
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// A listed backup's revision (JSON carries 64-bit integers as strings).
fn backup_revision(listed: &serde_json::Value) -> i64 {
    listed["revision"]
        .as_str()
        .map(|r| r.parse().unwrap())
        .or_else(|| listed["revision"].as_i64())
        .expect("a revision")
}

/// Takes a backup through the CLI; returns its name.
fn backup_now(c: &LocalCoordinator) -> String {
    let out = cli(c, &["backup", c.cluster()]);
    assert!(out.status.success(), "{}\n{}", text(&out), c.logs(30));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("the backup's name")
        .to_string()
}

async fn wait_cluster(
    c: &LocalCoordinator,
    name: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let channel = c.channel();
    let result = wait_for(what, within, || {
        let channel = channel.clone();
        let done = &done;
        async move { fetch_status(channel, name).await.filter(|s| done(s)) }
    })
    .await;
    match result {
        Ok(s) => s,
        Err(e) => panic!(
            "{e:#}\nlast: {}\n{}",
            fetch_status(c.channel(), name)
                .await
                .map(|s| describe(&s))
                .unwrap_or_default(),
            c.logs(40)
        ),
    }
}

fn endpoints(s: &ClusterStatus) -> Vec<String> {
    s.endpoints.split(',').map(str::to_string).collect()
}

/// Writes under a recorder until 50 are acknowledged, takes a backup, then writes `late`
/// keys under `after/` that no cluster restored from it may hold. Returns the writes
/// acknowledged before the backup, and its name.
async fn backup_between_writes(
    c: &LocalCoordinator,
    running: &ClusterStatus,
    late: usize,
) -> (Vec<String>, String) {
    let writer = Writer::start(c.live_endpoints());
    ok(c, writer.wait_acked(50, Duration::from_secs(20)).await);
    let acked = writer.stop().await.acked;
    let name = backup_now(c);
    let mut client = ok(c, etcd_client(&endpoints(running)).await);
    for i in 0..late {
        client
            .put(format!("after/{i:03}"), "late", None)
            .await
            .expect("a write after the backup");
    }
    (acked, name)
}

/// How many `after/` keys `endpoints` hold, and the revision the count was read at.
async fn count_late(c: &LocalCoordinator, endpoints: &[String]) -> (i64, i64) {
    let mut client = ok(c, etcd_client(endpoints).await);
    let late = client
        .get(
            "after/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    (late.count(), late.header().map_or(0, |h| h.revision()))
}

/// A cluster restored from a backup holds every write acknowledged before it and none
/// written after it, at a revision not below `revision`, HashKV equal on its 3 members.
async fn check_restored(
    c: &LocalCoordinator,
    restored: &ClusterStatus,
    acked: &[String],
    revision: i64,
) {
    let restored_endpoints = endpoints(restored);
    ok(c, verify_acked(&restored_endpoints, acked).await);
    let (late, header_revision) = count_late(c, &restored_endpoints).await;
    assert_eq!(late, 0, "no write from after the backup");
    assert!(
        header_revision >= revision,
        "revisions never go backwards: {header_revision} < {revision}"
    );
    let hashes = testkit::traffic::hash_kv_all(&restored_endpoints, None)
        .await
        .expect("HashKV of every restored member");
    assert_eq!(hashes.len(), 3);
    assert!(
        testkit::checker::compare_hashes(&hashes).is_empty(),
        "HashKV differs: {hashes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_writes_restores_into_a_new_cluster() {
    let _serial = serial_guard();
    let c = LocalCoordinator::start(CoordinatorOptions::new(
        coordinator_bin(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/example-etcd-cluster.yaml"),
    ))
    .await
    .expect("start");
    let before = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let (acked_before, name) = backup_between_writes(&c, &before, 30).await;

    let listed = cli(&c, &["backups", c.cluster()]);
    let listing = text(&listed);
    assert!(listed.status.success(), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&name) && l.trim_end().ends_with("yes")),
        "{name} is listed as verified:\n{listing}"
    );
    let status = wait_cluster(&c, c.cluster(), "BackupHealthy", CHANGE, |s| {
        condition(s, ConditionType::BackupHealthy)
            .is_some_and(|b| b.status() == ConditionStatus::True)
    })
    .await;
    assert_eq!(status.backup.as_ref().unwrap().last_verified, name);
    let json = cli(&c, &["backups", c.cluster(), "-o", "json"]);
    let parsed: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("backups -o json is JSON");
    let first = &parsed["backups"][0];
    assert_eq!(first["name"], name.as_str());
    assert_eq!(first["verified"], true);
    let revision = backup_revision(first);
    for field in ["sizeBytes", "sha256", "createdAt", "etcdVersion"] {
        assert!(!first[field].is_null(), "{field} in {first}");
    }

    // A new cluster from it, beside the first (never over it).
    let restored = "etcd-restored";
    ok(
        &c,
        c.write_manifest(&format!(
            "{}---\n{}  restore:\n    backup: \"{name}\"\n    cluster: {}\n",
            manifest(c.cluster(), 3, VERSION),
            manifest(restored, 3, VERSION),
            c.cluster()
        ))
        .map_err(anyhow::Error::from),
    );
    let up = wait_cluster(
        &c,
        restored,
        "the restored cluster running",
        CHANGE * 2,
        |s| is_running(s, 3, VERSION),
    )
    .await;
    let said = condition(&up, ConditionType::Restored).expect("a Restored condition");
    assert_eq!(said.status(), ConditionStatus::True, "{}", describe(&up));
    assert!(said.message.contains(&name), "{}", said.message);
    check_restored(&c, &up, &acked_before, revision).await;
    // The first cluster is untouched, its late writes still there.
    let first = fetch_status(c.channel(), c.cluster()).await.unwrap();
    assert!(is_running(&first, 3, VERSION), "{}", describe(&first));
    assert_eq!(count_late(&c, &endpoints(&before)).await.0, 30);
}

/// moto's S3 server on a loopback port, killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    async fn start(port: u16) -> Self {
        let child = Command::new("python3")
            .args([
                "-c",
                "import sys; from moto.server import main; main(sys.argv[1:])",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto (scripts/setup.sh installs it)");
        let addr = format!("127.0.0.1:{port}");
        wait_for("moto to listen", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await
        .expect("moto listens");
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Creates `bucket` (moto keeps nothing across a restart).
    fn create_bucket(&self, bucket: &str) {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing').create_bucket(Bucket=sys.argv[2])",
                &self.endpoint,
                bucket,
            ])
            .output()
            .expect("python3 with boto3");
        assert!(out.status.success(), "{}", text(&out));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_to_s3_keep_the_newest_and_survive_the_storage_going_away() {
    let _serial = serial_guard();
    let port = free_port();
    let moto = Moto::start(port).await;
    let bucket = "etcd-backups";
    moto.create_bucket(bucket);
    let (_dir, path) = manifest_with(
        3,
        &format!(
            "  backup:\n    keep: 3\n    storage:\n      s3:\n        bucket: {bucket}\n        prefix: etcd/\n        endpoint: \"{}\"\n        region: us-east-1\n        forcePathStyle: true\n",
            moto.endpoint
        ),
    );
    let c = LocalCoordinator::start(
        CoordinatorOptions::new(coordinator_bin(), &path)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing"),
    )
    .await
    .expect("start");
    let before = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(20, Duration::from_secs(20)).await);

    let mut names = Vec::new();
    for _ in 0..5 {
        names.push(backup_now(&c));
        ok(&c, writer.wait_acked(5, Duration::from_secs(20)).await);
    }
    let mut newest: Vec<String> = names[2..].to_vec();
    newest.sort();
    assert_eq!(listed_names(&c), newest, "keep 3 of 5");

    // The storage goes away: the backup fails with a reason, nothing else changes.
    drop(moto);
    let (status, reason) = backup_fails(&c).await;
    assert!(reason.contains("storage"), "{reason}");
    assert!(is_running(&status, 3, VERSION), "{}", describe(&status));
    let names_now: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    let names_before: Vec<&str> = before.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names_now, names_before, "the cluster is untouched");

    // Back: the next one succeeds.
    let moto = Moto::start(port).await;
    moto.create_bucket(bucket);
    let next = backup_now(&c);
    wait_cluster(&c, c.cluster(), "BackupHealthy True again", CHANGE, |s| {
        condition(s, ConditionType::BackupHealthy)
            .is_some_and(|b| b.status() == ConditionStatus::True)
            && s.backup.as_ref().is_some_and(|b| b.last_verified == next)
    })
    .await;
    let log = writer.stop().await;
    assert!(
        log.failures.is_empty(),
        "writes failed while backups ran or failed: {:?}",
        log.failures
    );
    drop(moto);
}

/// `spec.recovery.quorumLoss: Restore`: two of three members killed and wiped, the
/// cluster is created again from the latest verified backup: every write acknowledged
/// before the backup is there, none written after it (the survivor had those: it is
/// discarded, not recovered from), HashKV equal, and the conditions name the backup and
/// its revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_majority_comes_back_from_the_latest_verified_backup() {
    let _serial = serial_guard();
    let (_dir, path) = manifest_with(3, "  recovery:\n    quorumLoss: Restore\n");
    let mut c = LocalCoordinator::start(
        CoordinatorOptions::new(coordinator_bin(), &path).dead_after_secs(5),
    )
    .await
    .expect("start");
    let before = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let (acked_before, name) = backup_between_writes(&c, &before, 20).await;
    let listed = cli(&c, &["backups", c.cluster(), "-o", "json"]);
    let parsed: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("backups -o json is JSON");
    let revision = backup_revision(&parsed["backups"][0]);

    let old: Vec<String> = before.members.iter().map(|m| m.name.clone()).collect();
    // The backup's bytes are damaged before anything is lost: the restore must find it
    // out before it deletes or stops anything.
    let snapshot = c
        .state_dir()
        .join("backups")
        .join("local")
        .join(c.cluster())
        .join(format!("{name}.db"));
    let good = std::fs::read(&snapshot).expect("the backup's snapshot");
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&snapshot, &damaged).unwrap();
    c.crash();
    for victim in &old[1..] {
        ok(&c, c.kill_member_and_wait(victim).await);
        std::fs::remove_dir_all(c.data_dir(victim)).expect("wipe");
    }
    let restarted = c.restart().await;
    ok(&c, restarted);
    let refused = wait_cluster(
        &c,
        c.cluster(),
        "the restore refused for a damaged backup",
        CHANGE,
        |s| {
            condition(s, ConditionType::Progressing)
                .is_some_and(|p| p.message.contains("nothing was deleted"))
        },
    )
    .await;
    let said = &condition(&refused, ConditionType::Progressing)
        .unwrap()
        .message;
    assert!(said.contains("damaged"), "{said}");
    assert!(
        c.data_dir(&old[0]).join("member").is_dir(),
        "the survivor's data is untouched"
    );
    assert!(
        c.members().iter().all(|m| old.contains(&m.name)),
        "no member was created for a backup that cannot be restored: {:?}",
        c.members()
    );
    // The backup is whole again: restored, the survivor kept until the restored cluster runs.
    std::fs::write(&snapshot, &good).unwrap();
    let up = wait_cluster(
        &c,
        c.cluster(),
        "3 healthy voters restored from the backup",
        CHANGE * 2,
        |s| is_running(s, 3, VERSION) && s.members.iter().all(|m| !old.contains(&m.name)),
    )
    .await;
    let restored = condition(&up, ConditionType::Restored).expect("a Restored condition");
    assert_eq!(
        restored.status(),
        ConditionStatus::True,
        "{}",
        describe(&up)
    );
    assert!(restored.message.contains(&name), "{}", restored.message);
    assert!(
        restored.message.contains("at revision"),
        "{}",
        restored.message
    );
    let quorum = condition(&up, ConditionType::QuorumLost).expect("the QuorumLost condition stays");
    assert_eq!(
        (quorum.status(), quorum.reason.as_str()),
        (ConditionStatus::False, "RestoredFromBackup"),
        "{}",
        quorum.message
    );
    assert!(quorum.message.contains(&name), "{}", quorum.message);
    check_restored(&c, &up, &acked_before, revision).await;
    // Once the restored cluster runs, the survivor of the lost one goes with its data.
    let survivor = c.data_dir(&old[0]);
    ok(
        &c,
        wait_for(
            "the survivor deleted once the restored cluster runs",
            CHANGE,
            || {
                let gone = !survivor.exists() && c.member(&old[0]).is_none();
                async move { gone.then_some(()) }
            },
        )
        .await,
    );
}

/// A tmpfs of its own for a backup storage that can fill up; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs (the test runs as root): {}",
            text(&out)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills it up but for `spare` bytes.
    fn fill(&self, spare: u64) {
        let stat = nix::sys::statvfs::statvfs(self.path()).unwrap();
        let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        let filler = std::fs::File::create(self.path().join("filler")).unwrap();
        filler.set_len(0).unwrap();
        use std::io::Write;
        let mut w = std::io::BufWriter::new(filler);
        let chunk = vec![7u8; 64 * 1024];
        let mut left = free.saturating_sub(spare);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if w.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = w.flush();
    }

    fn unfill(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Retention and a full disk, on local storage: `keep: 3`, five backups leave the three
/// newest; with the disk full a sixth fails with the reason in status and deletes nothing;
/// with room again the next one succeeds and retention applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_deletes_nothing() {
    let _serial = serial_guard();
    let disk = SmallDisk::mount(64);
    let (_dir, path) = manifest_with(
        1,
        &format!(
            "  backup:\n    keep: 3\n    storage:\n      local:\n        path: {}\n",
            disk.path().display()
        ),
    );
    let c = LocalCoordinator::start(CoordinatorOptions::new(coordinator_bin(), &path))
        .await
        .expect("start");
    ok(&c, c.wait_running(1, VERSION, FORM).await);
    let mut names = Vec::new();
    for _ in 0..5 {
        names.push(backup_now(&c));
    }
    let mut newest: Vec<String> = names[2..].to_vec();
    newest.sort();
    assert_eq!(listed_names(&c), newest, "keep 3 of 5");

    disk.fill(4096);
    let (status, reason) = backup_fails(&c).await;
    assert!(
        reason.to_lowercase().contains("space"),
        "the reason names the full disk: {reason}"
    );
    assert_eq!(listed_names(&c), newest, "a failed sixth deletes nothing");
    assert!(is_running(&status, 1, VERSION), "{}", describe(&status));

    disk.unfill();
    let next = backup_now(&c);
    let mut kept: Vec<String> = names[3..].to_vec();
    kept.push(next);
    kept.sort();
    assert_eq!(
        listed_names(&c),
        kept,
        "retention again once a backup succeeded"
    );
    drop(c);
}

/// A sidecar wrapper that starts the members of `cluster` `delay_secs` late, as Pods being
/// scheduled and pulling their image do; every other member starts at once.
fn slow_start_wrapper(dir: &Path, cluster: &str, delay_secs: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("slow-sidecar");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" --name={cluster}-\"*) sleep {delay_secs};; esac\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_etcd-sidecar")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The restore source is decided once, in the durable record, before the seed is created:
/// a coordinator killed after creating the seed and before the seed registers (a Pod being
/// scheduled) hands the same backup to it when it registers with the restarted coordinator,
/// never an empty start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_survives_a_coordinator_crash_before_its_seed_registers() {
    let _serial = serial_guard();
    let restored = "etcd-restored";
    let wrappers = tempfile::tempdir().unwrap();
    let wrapper = slow_start_wrapper(wrappers.path(), restored, 5);
    let mut c = LocalCoordinator::start(
        CoordinatorOptions::new(
            coordinator_bin(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/example-etcd-cluster.yaml"),
        )
        .arg(format!("--sidecar-binary={}", wrapper.display())),
    )
    .await
    .expect("start");
    let running = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let mut client = ok(&c, etcd_client(&endpoints(&running)).await);
    for i in 0..100 {
        client
            .put(format!("k/{i:03}"), "v", None)
            .await
            .expect("a write before the backup");
    }
    let name = backup_now(&c);
    ok(
        &c,
        c.write_manifest(&format!(
            "{}---\n{}  restore:\n    backup: \"{name}\"\n    cluster: {}\n",
            manifest(c.cluster(), 3, VERSION),
            manifest(restored, 3, VERSION),
            c.cluster()
        ))
        .map_err(anyhow::Error::from),
    );
    // The seed is created (recorded by the runtime) and its sidecar has not started yet.
    let record = c.state_dir().join(restored).join("cluster.json");
    let seed = ok(
        &c,
        wait_for("the restore's seed to be created", CHANGE, || {
            let record = record.clone();
            async move {
                testkit::local_cluster::read_members(&record)
                    .into_iter()
                    .find(|m| m.seed)
            }
        })
        .await,
    );
    c.crash();
    let restarted = c.restart().await;
    ok(&c, restarted);
    let up = wait_cluster(
        &c,
        restored,
        "the restored cluster running",
        CHANGE * 2,
        |s| is_running(s, 3, VERSION),
    )
    .await;
    assert!(
        up.members.iter().any(|m| m.name == seed.name),
        "the seed created before the crash restored it: {}",
        describe(&up)
    );
    let said = condition(&up, ConditionType::Restored).expect("a Restored condition");
    assert_eq!(said.status(), ConditionStatus::True, "{}", describe(&up));
    assert!(said.message.contains(&name), "{}", said.message);
    let mut restored_client = ok(&c, etcd_client(&endpoints(&up)).await);
    let keys = restored_client
        .get(
            "k/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count the restored keys");
    assert_eq!(
        keys.count(),
        100,
        "every key of the backup is in the restored cluster"
    );
}

/// The backups listed for `c`'s cluster (JSON), each `(name, clusterUid, legacyLayout)`.
fn listed(c: &LocalCoordinator) -> Vec<(String, String, bool)> {
    let out = cli(c, &["backups", c.cluster(), "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    parsed["backups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["clusterUid"].as_str().unwrap_or("").to_string(),
                b["legacyLayout"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The names listed of identity `uid`, sorted.
fn of(listed: &[(String, String, bool)], uid: &str) -> Vec<String> {
    let mut names: Vec<String> = listed
        .iter()
        .filter(|(_, u, legacy)| u == uid && !legacy)
        .map(|(n, _, _)| n.clone())
        .collect();
    names.sort();
    names
}

/// Waits until the backups `c` lists of identity `uid` are `want` (a retention runs once a
/// backup is taken, after the backup's answer); returns everything listed then.
async fn wait_listed(
    c: &LocalCoordinator,
    uid: &str,
    want: &[String],
) -> Vec<(String, String, bool)> {
    let mut want = want.to_vec();
    want.sort();
    let got = wait_for("the backups listed after retention", CHANGE, || {
        let now = listed(c);
        let done = of(&now, uid) == want;
        async move { done.then_some(now) }
    })
    .await;
    match got {
        Ok(now) => now,
        Err(e) => panic!("{e:#}: wanted {want:?}, listed {:?}", listed(c)),
    }
}

/// The identity `c`'s cluster's backups are bound to, from its state directory.
fn identity(c: &LocalCoordinator, cluster: &str) -> String {
    std::fs::read_to_string(c.state_dir().join(cluster).join("backup-identity"))
        .expect("the cluster's backup identity")
        .trim()
        .to_string()
}

/// Puts `n` keys `<prefix>/NNN` into the cluster at `endpoints`.
async fn put_keys(c: &LocalCoordinator, endpoints: &[String], prefix: &str, n: usize) {
    let mut client = ok(c, etcd_client(endpoints).await);
    for i in 0..n {
        client
            .put(format!("{prefix}/{i:03}"), "v", None)
            .await
            .expect("a write");
    }
}

/// How many keys under `prefix/` the cluster at `endpoints` holds.
async fn count_keys(c: &LocalCoordinator, endpoints: &[String], prefix: &str) -> i64 {
    let mut client = ok(c, etcd_client(endpoints).await);
    client
        .get(
            format!("{prefix}/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("a count")
        .count()
}

/// Waits for `name` on `c` to run restored; returns its status and its Restored message.
async fn restored_cluster(
    c: &LocalCoordinator,
    name: &str,
    size: usize,
) -> (ClusterStatus, String) {
    let up = wait_cluster(c, name, "the restored cluster running", CHANGE * 2, |s| {
        is_running(s, size, VERSION)
            && condition(s, ConditionType::Restored)
                .is_some_and(|r| r.status() == ConditionStatus::True)
    })
    .await;
    let said = condition(&up, ConditionType::Restored)
        .unwrap()
        .message
        .clone();
    (up, said)
}

/// Two local coordinators (separate state directories), each with a one-member
/// `etcd-cluster`, backing up to one shared path (`<path>/local/etcd-cluster/`): each one's
/// retention deletes only its own backups, each one's `latest` restore brings back its own
/// data and says whose backup it was; a snapshot left without metadata is deleted by the
/// next backup of its own cluster only; a backup of the earlier layout (`<path>/<cluster>/`)
/// is listed and restored by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_named_clusters_sharing_a_backup_path_keep_to_their_own() {
    let _serial = serial_guard();
    let shared = tempfile::tempdir().unwrap();
    let storage = format!(
        "  backup:\n    keep: 2\n    storage:\n      local:\n        path: {}\n",
        shared.path().display()
    );
    let (_dir_a, path_a) = manifest_with(1, &storage);
    let (_dir_b, path_b) = manifest_with(1, &storage);
    let a = LocalCoordinator::start(CoordinatorOptions::new(coordinator_bin(), &path_a))
        .await
        .expect("start A");
    let b = LocalCoordinator::start(CoordinatorOptions::new(coordinator_bin(), &path_b))
        .await
        .expect("start B");
    let running_a = ok(&a, a.wait_running(1, VERSION, FORM).await);
    let running_b = ok(&b, b.wait_running(1, VERSION, FORM).await);
    put_keys(&a, &endpoints(&running_a), "a", 10).await;
    put_keys(&b, &endpoints(&running_b), "b", 20).await;

    let b1 = backup_now(&b);
    let b2 = backup_now(&b);
    let (uid_a, uid_b) = (identity(&a, a.cluster()), identity(&b, b.cluster()));
    assert_ne!(uid_a, uid_b, "two state directories, two identities");
    // A snapshot each left without metadata (a crash between the two writes), older than
    // anything A takes next.
    let dir = shared.path().join("local").join(a.cluster());
    let orphan = |uid: &str| format!("{}-20200101T000000.000Z-r1-u{uid}.db", a.cluster());
    std::fs::write(dir.join(orphan(&uid_a)), b"half").unwrap();
    std::fs::write(dir.join(orphan(&uid_b)), b"half").unwrap();
    let a_names: Vec<String> = (0..3).map(|_| backup_now(&a)).collect();
    let now = listed(&a);
    assert_eq!(
        of(&now, &uid_a),
        a_names[1..].to_vec(),
        "A keeps its 2 newest"
    );
    assert_eq!(
        of(&now, &uid_b),
        [b1.clone(), b2.clone()],
        "A's retention touches none of B's"
    );
    ok(
        &a,
        wait_for("A's orphan deleted after its backup", CHANGE, || {
            let gone = !dir.join(orphan(&uid_a)).exists();
            async move { gone.then_some(()) }
        })
        .await,
    );
    assert!(
        dir.join(orphan(&uid_b)).exists(),
        "B's is not A's to delete"
    );
    let b3 = backup_now(&b);
    let now = wait_listed(&b, &uid_b, &[b2, b3.clone()]).await;
    assert_eq!(
        of(&now, &uid_a),
        a_names[1..].to_vec(),
        "and none of A's goes"
    );

    // A backup of the earlier layout, `<path>/<cluster>/`, as an earlier version wrote it.
    let newest_a = &a_names[2];
    let legacy_name = format!("{}-20250101T000000.000Z-r9", a.cluster());
    let legacy_dir = shared.path().join(a.cluster());
    std::fs::create_dir_all(&legacy_dir).unwrap();
    std::fs::copy(
        dir.join(format!("{newest_a}.db")),
        legacy_dir.join(format!("{legacy_name}.db")),
    )
    .unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{newest_a}.json"))).unwrap())
            .unwrap();
    let fields = meta.as_object_mut().unwrap();
    fields.remove("uid");
    fields.remove("requestedAtUnixMs");
    fields.insert("name".into(), legacy_name.clone().into());
    fields.insert("namespace".into(), "".into());
    std::fs::write(
        legacy_dir.join(format!("{legacy_name}.json")),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    assert!(
        listed(&a)
            .iter()
            .any(|(n, _, legacy)| n == &legacy_name && *legacy),
        "the earlier layout's backup is listed, marked"
    );

    // Each one's latest restore, and A's of the earlier layout's backup by name.
    let restore = |name: &str, backup: &str| {
        format!(
            "{}  restore:\n    backup: \"{backup}\"\n    cluster: etcd-cluster\n    storage:\n      local:\n        path: {}\n",
            manifest(name, 1, VERSION),
            shared.path().display()
        )
    };
    ok(
        &a,
        a.write_manifest(&format!(
            "{}{storage}---\n{}---\n{}",
            manifest(a.cluster(), 1, VERSION),
            restore("etcd-restored", "latest"),
            restore("etcd-legacy", &legacy_name)
        ))
        .map_err(anyhow::Error::from),
    );
    ok(
        &b,
        b.write_manifest(&format!(
            "{}{storage}---\n{}",
            manifest(b.cluster(), 1, VERSION),
            restore("etcd-restored", "latest"),
        ))
        .map_err(anyhow::Error::from),
    );
    let (up_a, said_a) = restored_cluster(&a, "etcd-restored", 1).await;
    assert!(
        said_a.contains(&format!("local/etcd-cluster/{newest_a}")),
        "{said_a}"
    );
    assert_eq!(count_keys(&a, &endpoints(&up_a), "a").await, 10);
    assert_eq!(
        count_keys(&a, &endpoints(&up_a), "b").await,
        0,
        "none of B's data"
    );
    let (up_b, said_b) = restored_cluster(&b, "etcd-restored", 1).await;
    assert!(
        said_b.contains(&format!("local/etcd-cluster/{b3}")),
        "{said_b}"
    );
    assert_eq!(count_keys(&b, &endpoints(&up_b), "b").await, 20);
    assert_eq!(
        count_keys(&b, &endpoints(&up_b), "a").await,
        0,
        "none of A's data"
    );
    let (up_legacy, said_legacy) = restored_cluster(&a, "etcd-legacy", 1).await;
    assert!(said_legacy.contains("earlier layout"), "{said_legacy}");
    assert!(said_legacy.contains(&legacy_name), "{said_legacy}");
    assert_eq!(count_keys(&a, &endpoints(&up_legacy), "a").await, 10);
}

/// Azurite, Microsoft's Azure Storage emulator (blob service only), on a loopback port,
/// killed on drop. `scripts/setup.sh` installs it into the cache.
struct Azurite {
    child: Child,
    endpoint: String,
    log: std::path::PathBuf,
}

impl Azurite {
    async fn start(port: u16, dir: &Path) -> Self {
        let cache = std::env::var_os("ETCD_OPERATOR_CACHE_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                    .join(".cache/etcd-operator")
            });
        let log = dir.join(format!("azurite-{port}.log"));
        let child = Command::new(cache.join("azurite/node_modules/.bin/azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir)
            .arg("--debug")
            .arg(&log)
            .args(["--disableTelemetry", "--skipApiVersionCheck", "--loose"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite (scripts/setup.sh installs it)");
        let addr = format!("127.0.0.1:{port}");
        wait_for("Azurite to listen", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await
        .expect("Azurite listens");
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Creates `container` with the emulator's well-known account (Shared Key), if absent.
    fn create_container(&self, container: &str) {
        let out = Command::new("python3")
            .args([
                "-c",
                r#"
import base64, datetime, hashlib, hmac, sys, urllib.error, urllib.request
endpoint, container = sys.argv[1], sys.argv[2]
account = "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
version = "2021-08-06"
to_sign = "PUT\n" + "\n" * 4 + "application/octet-stream\n" + "\n" * 6 + f"x-ms-date:{date}\nx-ms-version:{version}\n/{account}/{account}/{container}\nrestype:container"
signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
request = urllib.request.Request(f"{endpoint}/{account}/{container}?restype=container", data=b"", method="PUT")
request.add_header("Content-Type", "application/octet-stream")
request.add_header("x-ms-date", date)
request.add_header("x-ms-version", version)
request.add_header("Authorization", f"SharedKey {account}:{signature}")
try:
    urllib.request.urlopen(request)
except urllib.error.HTTPError as e:
    if e.code != 409:
        raise SystemExit(f"{e.code}: {e.read()}")
"#,
                &self.endpoint,
                container,
            ])
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", text(&out));
    }

    /// Requests Azurite logged that upload a block of a blob.
    fn blocks_put(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("comp=block&")
            .count()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Azure Blob Storage on Azurite: backups stored under `<prefix>local/etcd-cluster/`, proven
/// restorable and pruned to `keep`; Azurite stopped in the middle of a backup fails that
/// backup with the reason in status and leaves the cluster untouched, the next one succeeds
/// once it is back; a new cluster restored from `latest` holds every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_to_azure_on_azurite_are_pruned_survive_the_emulator_stopping_and_restore() {
    let _serial = serial_guard();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let azurite = Azurite::start(port, data.path()).await;
    let container = "etcd-backups";
    azurite.create_container(container);
    let storage = format!(
        "    storage:\n      azure:\n        container: {container}\n        prefix: etcd/\n        useEmulator: true\n        endpoint: \"{}\"\n",
        azurite.endpoint
    );
    let (_dir, path) = manifest_with(1, &format!("  backup:\n    keep: 2\n{storage}"));
    let c = LocalCoordinator::start(CoordinatorOptions::new(coordinator_bin(), &path))
        .await
        .expect("start");
    let before = ok(&c, c.wait_running(1, VERSION, FORM).await);
    // About 10 MiB, so that a backup uploads more than one block.
    let mut client = ok(&c, etcd_client(&endpoints(&before)).await);
    for i in 0..100 {
        client
            .put(format!("k/{i:03}"), vec![b'x'; 100 * 1024], None)
            .await
            .expect("a write");
    }
    let names: Vec<String> = (0..3).map(|_| backup_now(&c)).collect();
    let uid = identity(&c, c.cluster());
    wait_listed(&c, &uid, &names[1..]).await;

    // Azurite stops while a backup uploads.
    let blocks = azurite.blocks_put();
    let mut asked = Command::new(coordinator_bin())
        .args(["backup", c.cluster()])
        .arg(format!("--state-dir={}", c.state_dir().display()))
        .arg(format!("--control-addr={}", c.control_addr()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcd-coordinator backup");
    ok(
        &c,
        wait_for("the backup's upload to begin", CHANGE, || {
            let begun = azurite.blocks_put() > blocks;
            async move { begun.then_some(()) }
        })
        .await,
    );
    drop(azurite);
    let failed = asked.wait().expect("the backup command ends");
    assert!(!failed.success(), "the backup fails with the emulator gone");
    let status = wait_cluster(&c, c.cluster(), "BackupHealthy False", CHANGE, |s| {
        condition(s, ConditionType::BackupHealthy)
            .is_some_and(|b| b.status() == ConditionStatus::False)
    })
    .await;
    let reason = &condition(&status, ConditionType::BackupHealthy)
        .unwrap()
        .message;
    assert!(!reason.is_empty(), "a reason is given");
    assert!(is_running(&status, 1, VERSION), "{}", describe(&status));
    let names_now: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    let names_before: Vec<&str> = before.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names_now, names_before, "the cluster is untouched");

    // Back (its data kept): the next one succeeds, and restores.
    let azurite = Azurite::start(port, data.path()).await;
    azurite.create_container(container);
    let next = backup_now(&c);
    wait_cluster(&c, c.cluster(), "BackupHealthy True again", CHANGE, |s| {
        condition(s, ConditionType::BackupHealthy)
            .is_some_and(|b| b.status() == ConditionStatus::True)
            && s.backup.as_ref().is_some_and(|b| b.last_verified == next)
    })
    .await;
    ok(
        &c,
        c.write_manifest(&format!(
            "{}  backup:\n    keep: 2\n{storage}---\n{}  restore:\n    backup: latest\n    cluster: etcd-cluster\n{}",
            manifest(c.cluster(), 1, VERSION),
            manifest("etcd-restored", 1, VERSION),
            storage
        ))
        .map_err(anyhow::Error::from),
    );
    let (up, said) = restored_cluster(&c, "etcd-restored", 1).await;
    assert!(
        said.contains(&format!("local/etcd-cluster/{next}")),
        "{said}"
    );
    assert_eq!(count_keys(&c, &endpoints(&up), "k").await, 100);
    drop(azurite);
}

/// The same with S3 on moto: two local coordinators, a one-member `etcd-cluster` each, one
/// bucket and prefix. Each one's retention keeps its own newest and leaves the other's;
/// each one's `latest` restore brings back its own data, and says whose backup it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_named_clusters_sharing_a_bucket_keep_to_their_own() {
    let _serial = serial_guard();
    let moto = Moto::start(free_port()).await;
    let bucket = "etcd-backups";
    moto.create_bucket(bucket);
    let storage = format!(
        "    storage:\n      s3:\n        bucket: {bucket}\n        prefix: etcd/\n        endpoint: \"{}\"\n        region: us-east-1\n        forcePathStyle: true\n",
        moto.endpoint
    );
    let backup = format!("  backup:\n    keep: 1\n{storage}");
    let (_dir_a, path_a) = manifest_with(1, &backup);
    let (_dir_b, path_b) = manifest_with(1, &backup);
    let start = |path: std::path::PathBuf| {
        LocalCoordinator::start(
            CoordinatorOptions::new(coordinator_bin(), path)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing"),
        )
    };
    let a = start(path_a).await.expect("start A");
    let b = start(path_b).await.expect("start B");
    let running_a = ok(&a, a.wait_running(1, VERSION, FORM).await);
    let running_b = ok(&b, b.wait_running(1, VERSION, FORM).await);
    put_keys(&a, &endpoints(&running_a), "a", 10).await;
    put_keys(&b, &endpoints(&running_b), "b", 20).await;
    let b1 = backup_now(&b);
    let a_names = [backup_now(&a), backup_now(&a)];
    let (uid_a, uid_b) = (identity(&a, a.cluster()), identity(&b, b.cluster()));
    let now = wait_listed(&a, &uid_a, &a_names[1..]).await;
    assert_eq!(
        of(&now, &uid_b),
        std::slice::from_ref(&b1),
        "and leaves B's"
    );

    let restored = |c: &LocalCoordinator| {
        format!(
            "{}{backup}---\n{}  restore:\n    backup: latest\n    cluster: etcd-cluster\n{storage}",
            manifest(c.cluster(), 1, VERSION),
            manifest("etcd-restored", 1, VERSION),
        )
    };
    ok(
        &a,
        a.write_manifest(&restored(&a)).map_err(anyhow::Error::from),
    );
    ok(
        &b,
        b.write_manifest(&restored(&b)).map_err(anyhow::Error::from),
    );
    let (up_a, said_a) = restored_cluster(&a, "etcd-restored", 1).await;
    assert!(
        said_a.contains(&format!("local/etcd-cluster/{}", a_names[1])),
        "{said_a}"
    );
    assert_eq!(count_keys(&a, &endpoints(&up_a), "a").await, 10);
    assert_eq!(count_keys(&a, &endpoints(&up_a), "b").await, 0);
    let (up_b, said_b) = restored_cluster(&b, "etcd-restored", 1).await;
    assert!(
        said_b.contains(&format!("local/etcd-cluster/{b1}")),
        "{said_b}"
    );
    assert_eq!(count_keys(&b, &endpoints(&up_b), "b").await, 20);
    assert_eq!(count_keys(&b, &endpoints(&up_b), "a").await, 0);
    drop(moto);
}
