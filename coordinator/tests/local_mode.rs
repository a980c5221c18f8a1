//! End to end: `etcd-coordinator local` over the example manifest, with real etcd members,
//! driven the way a person drives it (editing the YAML file, killing processes) while client
//! traffic runs. Each test takes the machine-wide cluster lock; every process a test starts
//! is killed by the harness's guards, also when the test fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use etcd_client::GetOptions;
use etcd_operator::{
    etcd_bin::EtcdBinaries,
    proto::{ClusterPhase, ClusterStatus, ConditionStatus, ConditionType},
};
use testkit::{
    clients::{etcd_client, etcdctl, http_version},
    local_cluster::{
        ClusterMonitor, CoordinatorOptions, LocalCoordinator, condition, describe, is_running,
        pid_alive,
    },
    serial_guard,
    traffic::{Writer, verify_acked},
    wait_for,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Forming a 3-member cluster takes ~10 s on a quiet 2-core machine.
const FORM: Duration = Duration::from_secs(90);
/// One membership change or one member's upgrade, with room for a slow machine.
const CHANGE: Duration = Duration::from_secs(120);

const VERSION: &str = "3.6.15";
const OLD_VERSION: &str = "3.5.34";

fn coordinator_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/example-etcd-cluster.yaml")
}

async fn start(opts: CoordinatorOptions) -> LocalCoordinator {
    LocalCoordinator::start(opts)
        .await
        .expect("start the local coordinator")
}

fn example_options() -> CoordinatorOptions {
    CoordinatorOptions::new(coordinator_bin(), example())
}

/// Unwraps a harness result, adding the logs to the failure.
fn ok<T>(c: &LocalCoordinator, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}\n{}", c.logs(40)),
    }
}

/// etcd's member list as `(name, id, learner)`, read from `endpoints`.
async fn etcd_members(endpoints: &[String]) -> Vec<(String, u64, bool)> {
    try_etcd_members(endpoints)
        .await
        .unwrap_or_else(|e| panic!("etcd member list from {endpoints:?}: {e}"))
}

/// etcd's member list from the first of `endpoints` that answers.
async fn try_etcd_members(endpoints: &[String]) -> Result<Vec<(String, u64, bool)>, String> {
    let mut last = String::from("no endpoint");
    for endpoint in endpoints {
        let read = async {
            let mut client = etcd_client(std::slice::from_ref(endpoint)).await?;
            anyhow::Ok(client.member_list().await?)
        };
        match tokio::time::timeout(Duration::from_secs(3), read).await {
            Ok(Ok(list)) => {
                let mut members: Vec<(String, u64, bool)> = list
                    .members()
                    .iter()
                    .map(|m| (m.name().to_string(), m.id(), m.is_learner()))
                    .collect();
                members.sort();
                return Ok(members);
            }
            Ok(Err(e)) => last = format!("{endpoint}: {e}"),
            Err(_) => last = format!("{endpoint}: no answer"),
        }
    }
    Err(last)
}

fn names(status: &ClusterStatus) -> BTreeSet<String> {
    status.members.iter().map(|m| m.name.clone()).collect()
}

fn endpoints_of(status: &ClusterStatus) -> Vec<String> {
    status
        .endpoints
        .split(',')
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// Sidecar pids by member name, from the runtime's record.
fn pids(c: &LocalCoordinator) -> BTreeMap<String, u32> {
    c.members()
        .into_iter()
        .filter_map(|m| m.pid.map(|p| (m.name, p)))
        .collect()
}

/// Checks `check` repeatedly for `duration`: an observation window in which an invariant
/// must hold at every sample (not a wait for anything).
async fn hold_for<F, Fut>(what: &str, duration: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        if let Err(e) = check().await {
            anyhow::bail!("{what} stopped holding: {e}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// 1 and 7: the example becomes three healthy members that `etcdctl` and the etcd-client
/// crate use through the endpoints the coordinator reports; the gRPC health service says
/// SERVING. A clean stop (SIGTERM) stops every member, and a start on the same state brings
/// the same members back on their data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_becomes_three_healthy_members_that_etcdctl_uses() {
    let _serial = serial_guard();
    let mut c = start(example_options()).await;
    let status = ok(&c, c.wait_running(3, VERSION, FORM).await);
    assert_eq!(status.size, 3);
    let expected_names: BTreeSet<String> = (0..3).map(|i| c.member_name(i)).collect();
    assert_eq!(names(&status), expected_names, "{}", describe(&status));
    assert_eq!(
        condition(&status, ConditionType::Available).map(|c| c.status()),
        Some(ConditionStatus::True),
        "{}",
        describe(&status)
    );

    // Every member runs the small etcd-sidecar binary built beside the coordinator, not the
    // sidecar embedded in the coordinator.
    let sidecar = std::fs::canonicalize(env!("CARGO_BIN_EXE_etcd-sidecar")).expect("etcd-sidecar");
    let sidecars = pids(&c);
    assert_eq!(sidecars.len(), 3, "{sidecars:?}");
    for (name, pid) in sidecars {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
        assert_eq!(
            exe.ok().as_ref(),
            Some(&sidecar),
            "{name}'s sidecar (pid {pid})"
        );
    }

    // The endpoints reported are the members' client URLs, one per member.
    let endpoints = endpoints_of(&status);
    let recorded: BTreeSet<String> = c.members().iter().map(|m| m.client_url()).collect();
    assert_eq!(endpoints.len(), 3, "{}", status.endpoints);
    assert_eq!(
        endpoints.iter().cloned().collect::<BTreeSet<_>>(),
        recorded,
        "reported endpoints vs the runtime's record"
    );

    // etcdctl (Debian's etcd-client package) against the reported endpoints.
    let put = ok(&c, etcdctl(&status.endpoints, &["put", "foo", "bar"]));
    assert_eq!(put.trim(), "OK", "{put}");
    let got = ok(&c, etcdctl(&status.endpoints, &["get", "foo"]));
    assert_eq!(got.lines().collect::<Vec<_>>(), ["foo", "bar"], "{got}");
    // Every endpoint on its own answers a linearizable read with what was written.
    for endpoint in &endpoints {
        let got = ok(&c, etcdctl(endpoint, &["get", "foo", "--print-value-only"]));
        assert_eq!(got.trim(), "bar", "{endpoint}: {got}");
    }

    // The etcd-client crate sees the same, and writes what etcdctl reads.
    let mut client = ok(&c, etcd_client(&endpoints).await);
    let resp = client.get("foo", None).await.expect("get foo");
    assert_eq!(resp.kvs().len(), 1);
    assert_eq!(resp.kvs()[0].value(), b"bar");
    client.put("from-crate", "yes", None).await.expect("put");
    let got = ok(
        &c,
        etcdctl(
            &status.endpoints,
            &["get", "from-crate", "--print-value-only"],
        ),
    );
    assert_eq!(got.trim(), "yes");

    // etcd's own member list agrees with the status: same names and ids, no learner.
    let members = etcd_members(&endpoints).await;
    assert_eq!(members.len(), 3, "{members:?}");
    for (name, id, learner) in &members {
        assert!(!learner, "{name} is a learner");
        let in_status = status.members.iter().find(|m| &m.name == name);
        assert_eq!(
            in_status.map(|m| m.id.clone()),
            Some(format!("{id:x}")),
            "{name}: etcd id vs status id"
        );
    }
    assert_eq!(
        status.members.iter().filter(|m| m.leader).count(),
        1,
        "exactly one leader: {}",
        describe(&status)
    );

    // grpc.health.v1: SERVING overall and for the coordinator's service.
    let mut health = HealthClient::new(c.channel());
    for service in ["", "etcdop.v1.Coordinator"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"))
            .into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_eq!(
        unknown
            .map(|r| r.into_inner().status())
            .map_err(|s| s.code()),
        Err(tonic::Code::NotFound),
        "an unknown service is not reported serving"
    );

    // SIGTERM: the coordinator stops every member cleanly and exits 0.
    let sidecars = pids(&c);
    let exit = c.terminate(Duration::from_secs(60)).await;
    let exit = ok(&c, exit);
    assert!(exit.success(), "the coordinator exited with {exit}");
    for (name, pid) in &sidecars {
        assert!(!pid_alive(*pid), "{name}'s sidecar (pid {pid}) still runs");
    }
    for endpoint in &endpoints {
        let addr = endpoint.trim_start_matches("http://");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "etcd still listens on {endpoint}"
        );
    }
    // Started again: the same members (same etcd ids) on their data, new processes.
    let restarted = c.restart().await;
    ok(&c, restarted);
    let again = ok(&c, c.wait_running(3, VERSION, FORM).await);
    assert_eq!(etcd_members(&endpoints_of(&again)).await, members);
    for (name, pid) in pids(&c) {
        assert_ne!(sidecars.get(&name), Some(&pid), "{name} was not restarted");
    }
    let got = ok(
        &c,
        etcdctl(&again.endpoints, &["get", "foo", "--print-value-only"]),
    );
    assert_eq!(got.trim(), "bar", "the data survived the restart");
}

/// 2: 3 -> 5 -> 3 by editing the file while a writer runs: one membership change at a
/// time, new ordinals -0003 and -0004, non-leaders removed, no acknowledged write lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_three_to_five_to_three_one_change_at_a_time() {
    let _serial = serial_guard();
    let c = start(example_options()).await;
    ok(&c, c.wait_running(3, VERSION, FORM).await);
    let monitor = ClusterMonitor::start(&c);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    c.set_spec(5, VERSION).unwrap();
    let five = ok(&c, c.wait_running(5, VERSION, CHANGE * 2).await);
    let expected: BTreeSet<String> = (0..5).map(|i| c.member_name(i)).collect();
    assert_eq!(names(&five), expected, "{}", describe(&five));
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let grown = monitor.log();
    // Each add holds the cluster's grant while it lasts (often well under a second, so a
    // 100 ms sampler sees some of them, not necessarily all).
    assert!(
        !grown.changes_in_flight.is_empty() && grown.max_step >= 1,
        "the monitor saw no membership change: {grown:?}"
    );

    // Who leads from here on (the leader when the scale down starts included).
    let leaders_from = (
        grown.status_leaders.len().saturating_sub(1),
        grown.etcd_leaders.len().saturating_sub(1),
    );
    c.set_spec(3, VERSION).unwrap();
    let three = ok(&c, c.wait_running(3, VERSION, CHANGE * 2).await);
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let log = writer.stop().await;

    // Two members left, neither while it led; the ones that stayed are the status's three.
    let monitored = ok(&c, monitor.assert_one_change_at_a_time());
    let departed: Vec<&(String, bool)> = monitored.departures.iter().collect();
    assert_eq!(departed.len(), 2, "departures: {departed:?}");
    for (name, was_leader) in &departed {
        assert!(!was_leader, "{name} was asked to leave while it led");
        assert!(!names(&three).contains(name), "{name} still listed");
    }
    // The highest ordinals go first, the leader last: a member that stayed above one that
    // left must have led at some point of the scale down (as the status or etcd saw it).
    let remaining = etcd_members(&endpoints_of(&three)).await;
    let led: BTreeSet<String> = remaining
        .iter()
        .filter(|(name, id, _)| {
            monitored.status_leaders[leaders_from.0..].contains(name)
                || monitored.etcd_leaders[leaders_from.1..].contains(id)
        })
        .map(|(name, ..)| name.clone())
        .collect();
    let ordinal = |name: &str| etcd_operator::naming::member_ordinal(c.cluster(), name).unwrap();
    let lowest_gone = departed.iter().map(|(n, _)| ordinal(n)).min().unwrap();
    for name in names(&three) {
        assert!(
            ordinal(&name) < lowest_gone || led.contains(&name),
            "{name} stayed above a member that left ({departed:?}) without leading; leaders {:?} {:x?}",
            &monitored.status_leaders[leaders_from.0..],
            &monitored.etcd_leaders[leaders_from.1..]
        );
    }
    if led.iter().all(|n| ordinal(n) < 3) {
        let gone: BTreeSet<String> = departed.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(gone, [c.member_name(3), c.member_name(4)].into());
    }
    for n in [c.member_name(3), c.member_name(4)] {
        assert!(monitored.names_seen.contains(&n), "{n} never appeared");
    }
    assert_eq!(monitored.max_status_members, 5, "never more than 5 members");
    assert_eq!(
        monitor.membership().max_members,
        5,
        "etcd never listed more than 5 members"
    );
    assert!(
        monitored.max_step >= 1,
        "the monitor saw the membership change"
    );

    // etcd agrees: 3 voters, the status's names.
    let endpoints = endpoints_of(&three);
    let members = etcd_members(&endpoints).await;
    assert_eq!(
        members.iter().map(|m| m.0.clone()).collect::<BTreeSet<_>>(),
        names(&three),
        "{members:?}"
    );
    assert!(members.iter().all(|m| !m.2), "no learner left: {members:?}");
    assert_eq!(c.members().len(), 3, "the runtime keeps 3 members");

    // No acknowledged write is lost, on any member.
    let held = ok(&c, verify_acked(&endpoints, &log.acked).await);
    eprintln!(
        "scale 3->5->3: {} writes acknowledged ({held} held), {} failed, longest gap {:?}; in flight: {:?}; phases: {:?}; departures {:?}; {} member lists (max step {}, max learners {}), {} statuses (max joining/leaving {})",
        log.acked.len(),
        log.failures.len(),
        log.longest_gap,
        monitored.changes_in_flight,
        monitored.phases,
        monitored.departures,
        monitored.etcd_samples,
        monitored.max_step,
        monitored.max_learners,
        monitored.status_samples,
        monitored.max_in_transition
    );
    assert!(
        log.failures.is_empty(),
        "writes failed while scaling: {:?}",
        log.failures
    );
}

/// 3: kill -9 a follower's sidecar (its etcd dies with it), data intact: it comes back on
/// its data under the same name and member id, with no membership change at all (no add,
/// no remove: the member-list watcher sees no new id), the cluster stays available
/// throughout and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_comes_back_on_its_data() {
    let _serial = serial_guard();
    let c = start(example_options().dead_after_secs(5)).await;
    let before = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let monitor = ClusterMonitor::start(&c);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    let victim = follower(&before);
    let old_ids = etcd_members(&endpoints_of(&before)).await;
    let victim_id = id_of(&old_ids, &victim);
    let pid = kill_and_wait(&c, &victim).await;

    let after = ok(
        &c,
        c.wait_until(
            &format!("{victim} back on its data, 3 healthy voters"),
            CHANGE,
            |s| {
                is_running(s, 3, VERSION)
                    && s.members
                        .iter()
                        .any(|m| m.name == victim && m.healthy && m.restarts >= 1)
            },
        )
        .await,
    );
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let log = writer.stop().await;

    assert_eq!(names(&after), names(&before), "{}", describe(&after));
    let member = after.members.iter().find(|m| m.name == victim).unwrap();
    assert!(
        member.last_exit.contains("SIGKILL"),
        "the status says how it ended: {member:?}"
    );
    let record = c.member(&victim).expect("still recorded");
    assert_ne!(record.pid, Some(pid), "a new process runs");
    let members = etcd_members(&endpoints_of(&after)).await;
    assert_eq!(
        members.iter().map(|m| m.1).collect::<BTreeSet<u64>>(),
        old_ids.iter().map(|m| m.1).collect::<BTreeSet<u64>>(),
        "the same member ids, {victim}'s ({victim_id:x}) included"
    );
    let watched = monitor.membership();
    assert_eq!(
        watched.ids_seen.iter().copied().collect::<BTreeSet<u64>>(),
        old_ids.iter().map(|m| m.1).collect::<BTreeSet<u64>>(),
        "no member was added or removed meanwhile"
    );
    assert_eq!(watched.max_members, 3);
    let monitored = ok(&c, monitor.assert_one_change_at_a_time());
    let held = ok(&c, verify_acked(&endpoints_of(&after), &log.acked).await);
    eprintln!(
        "kill {victim}: {} writes acknowledged ({held} held), {} failed, longest gap {:?}; phases {:?}",
        log.acked.len(),
        log.failures.len(),
        log.longest_gap,
        monitored.phases
    );
    // How long writes stalled is printed above; how fast belongs to etcd-bench.
    assert!(
        log.failures.is_empty(),
        "writes failed although a quorum was up: {:?}",
        log.failures
    );
}

fn follower(status: &ClusterStatus) -> String {
    status
        .members
        .iter()
        .filter(|m| !m.leader)
        .map(|m| m.name.clone())
        .max()
        .expect("a follower")
}

fn id_of(members: &[(String, u64, bool)], name: &str) -> u64 {
    members
        .iter()
        .find(|m| m.0 == name)
        .map(|m| m.1)
        .unwrap_or_else(|| panic!("{name} not in etcd's list {members:?}"))
}

/// SIGKILLs `name`'s sidecar and waits until it and its etcd are gone; returns the pid.
async fn kill_and_wait(c: &LocalCoordinator, name: &str) -> u32 {
    ok(c, c.kill_member_and_wait(name).await)
}

/// Waits until `victim` is gone and `replacement` runs among 3 healthy voters.
async fn wait_replaced(c: &LocalCoordinator, victim: &str, replacement: &str) -> ClusterStatus {
    ok(
        c,
        c.wait_until(
            &format!("{victim} replaced by {replacement}, 3 healthy voters"),
            CHANGE,
            |s| {
                is_running(s, 3, VERSION)
                    && names(s).contains(replacement)
                    && !names(s).contains(victim)
            },
        )
        .await,
    )
}

/// `name`'s etcd data directory in local mode.
fn data_dir(c: &LocalCoordinator, name: &str) -> PathBuf {
    c.data_dir(name)
}

/// 3b: a killed member whose data is wiped cannot come back: it is removed and replaced by
/// a new ordinal at once (no dead-after wait: its data is known gone), quorum kept, no
/// acknowledged write lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_is_gone_is_replaced_by_a_new_ordinal() {
    let _serial = serial_guard();
    // A long dead-after: only the data's loss may make it replaceable.
    let c = start(example_options().dead_after_secs(600)).await;
    let before = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let monitor = ClusterMonitor::start(&c);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    let victim = follower(&before);
    let victim_id = id_of(&etcd_members(&endpoints_of(&before)).await, &victim);
    // Stop the coordinator first, so the wipe lands before anything restarts the member.
    let c = {
        let mut c = c;
        c.crash();
        kill_and_wait(&c, &victim).await;
        std::fs::remove_dir_all(data_dir(&c, &victim)).expect("wipe the victim's data");
        let restarted = c.restart().await;
        ok(&c, restarted);
        c
    };
    let replacement = c.member_name(3);
    let after = wait_replaced(&c, &victim, &replacement).await;
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let log = writer.stop().await;
    let members = etcd_members(&endpoints_of(&after)).await;
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members.iter().all(|m| m.1 != victim_id && !m.2),
        "the victim's id is gone and no learner is left: {members:?}"
    );
    assert!(c.member(&victim).is_none(), "the runtime forgot {victim}");
    let monitored = ok(&c, monitor.assert_one_change_at_a_time());
    assert_eq!(
        monitored.max_status_members, 3,
        "the replacement was added only after the dead member was removed"
    );
    ok(&c, verify_acked(&endpoints_of(&after), &log.acked).await);
    assert!(
        log.failures.is_empty(),
        "writes failed although a quorum was up: {:?}",
        log.failures
    );
}

/// A 3-member cluster Running (members dead after `dead_after`), watched for changes in
/// flight, under writes of which 25 are acknowledged.
async fn running_under_writes(
    dead_after: Duration,
) -> (LocalCoordinator, ClusterStatus, ClusterMonitor, Writer) {
    let c = start(example_options().dead_after_secs(dead_after.as_secs())).await;
    let before = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let monitor = ClusterMonitor::start(&c);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    (c, before, monitor, writer)
}

/// After a change, writes are acknowledged again; then: one change at a time throughout,
/// every acknowledged write read back from `after`'s members, and none failed (a quorum
/// was up all along).
async fn assert_safe_through(
    c: &LocalCoordinator,
    writer: Writer,
    monitor: ClusterMonitor,
    after: &ClusterStatus,
) {
    ok(c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let log = writer.stop().await;
    ok(c, monitor.assert_one_change_at_a_time());
    ok(c, verify_acked(&endpoints_of(after), &log.acked).await);
    assert!(
        log.failures.is_empty(),
        "writes failed although a quorum was up: {:?}",
        log.failures
    );
}

/// 3b': a member whose sidecar runs but whose etcd cannot start on its data (here its
/// client port taken by another process, so every start ends at once) is dead once it has
/// kept exiting for the dead-after time from its first exit, not before: it is removed and
/// replaced by a new ordinal, one change at a time, no acknowledged write lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_that_keeps_exiting_is_replaced_after_dead_after() {
    const DEAD_AFTER: Duration = Duration::from_secs(5);
    let _serial = serial_guard();
    let (c, before, monitor, writer) = running_under_writes(DEAD_AFTER).await;

    let victim = follower(&before);
    let url =
        testkit::local_cluster::client_url(&before, &victim).expect("the victim's client URL");
    let addr = url.trim_start_matches("http://").to_string();
    let sidecar = c.member(&victim).and_then(|m| m.pid).expect("its sidecar");
    let etcd = ok(&c, testkit::chaos::etcd_pid(sidecar));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(etcd as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill its etcd");
    let killed_at = std::time::Instant::now();
    // Take its port as soon as the killed etcd lets go of it (before the sidecar's first
    // restart, 200 ms later).
    let squatter = loop {
        match std::net::TcpListener::bind(&addr) {
            Ok(l) => break l,
            Err(_) if killed_at.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("{addr} never came free: {e}"),
        }
    };
    let replacement = c.member_name(3);
    let gone = ok(
        &c,
        c.wait_until(&format!("{victim} removed"), CHANGE, |s| {
            !names(s).contains(&victim)
        })
        .await,
    );
    let removed_after = killed_at.elapsed();
    assert!(
        removed_after >= DEAD_AFTER,
        "removed {removed_after:?} after its first exit, before the dead-after: {}",
        describe(&gone)
    );
    let after = wait_replaced(&c, &victim, &replacement).await;
    drop(squatter);
    let logs = c.logs(400);
    assert!(
        logs.contains("its etcd keeps exiting on its data")
            && logs.contains("address already in use"),
        "removed, saying why:\n{logs}"
    );
    assert_safe_through(&c, writer, monitor, &after).await;
}

/// A replacement whose etcd never starts: its client port is taken by another process
/// after the runtime picked it (while etcd refuses its MemberAdd, for 5 s after the removal
/// it replaces). Its join cannot finish and gives up, letting go of its grant; once its etcd
/// has kept exiting for the dead-after (counted across the join's attempts), it is removed
/// and another ordinal, on other ports, takes its place. One change at a time, no
/// acknowledged write lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_whose_port_is_taken_before_it_starts_is_replaced_in_turn() {
    const DEAD_AFTER: Duration = Duration::from_secs(5);
    let _serial = serial_guard();
    let (c, before, monitor, writer) = running_under_writes(DEAD_AFTER).await;

    let victim = follower(&before);
    ok(&c, c.delete_member(&victim));
    let stuck = c.member_name(3);
    let asked = std::time::Instant::now();
    let port = loop {
        if let Some(m) = c.member(&stuck) {
            break m.client_port;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{stuck} not created within 5 s of the deletion: {:?}",
            c.members()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("{stuck}'s client port {port} taken before it: {e}"));
    let next = c.member_name(4);
    let after = wait_replaced(&c, &stuck, &next).await;
    let replaced_after = asked.elapsed();
    assert!(
        replaced_after >= DEAD_AFTER,
        "{stuck} replaced {replaced_after:?} after its creation, before the dead-after"
    );
    eprintln!("{stuck} replaced by {next} {replaced_after:?} after its creation");
    let ports = c.member(&next).map(|m| m.client_port);
    assert_ne!(
        ports,
        Some(port),
        "{next} took the port held by another process"
    );
    drop(squatter);
    // Its join let go of the grant once its etcd had kept exiting, rather than holding it
    // (and every change of the cluster) until its minute-long start deadline.
    let logs = c.logs(600);
    assert!(
        logs.contains("etcd cannot start: it has kept exiting")
            && logs.contains("address already in use"),
        "the join gave up, saying why:\n{logs}"
    );
    assert_safe_through(&c, writer, monitor, &after).await;
}

/// 3c: the walk-through's step 5 in local mode: `etcd-coordinator delete-member` deletes
/// `-0002` with its data and `-0003` replaces it. Asking for a member that does not exist,
/// or from a state directory that is not the coordinator's, is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_member_replaces_the_member_with_a_new_ordinal() {
    let _serial = serial_guard();
    let c = start(example_options()).await;
    let before = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let delete = |member: &str, state_dir: &Path| {
        std::process::Command::new(coordinator_bin())
            .arg("delete-member")
            .arg(c.cluster())
            .arg(member)
            .arg(format!("--state-dir={}", state_dir.display()))
            .arg(format!("--control-addr={}", c.control_addr()))
            .output()
            .expect("run delete-member")
    };

    let unknown = delete(&c.member_name(7), c.state_dir());
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(said.contains("has no member"), "{said}");
    let stranger = tempfile::tempdir().unwrap();
    let refused = delete(&c.member_name(2), stranger.path());
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("no coordinator state"), "{said}");
    assert_eq!(
        names(&c.status().await.expect("status")),
        names(&before),
        "nothing changed"
    );

    let victim = c.member_name(2);
    let out = delete(&victim, c.state_dir());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data_dir(&c, &victim).exists(), "its data went with it");
    let replacement = c.member_name(3);
    let after = wait_replaced(&c, &victim, &replacement).await;
    let log = writer.stop().await;
    ok(&c, verify_acked(&endpoints_of(&after), &log.acked).await);
}

/// 3d: a host crash: two of three members killed at once, then all three; their data is
/// intact. Quorum comes back by restarting them on their data: the same member ids, no
/// membership change, no acknowledged write lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_whose_data_survives_comes_back_with_the_same_ids() {
    let _serial = serial_guard();
    let c = start(example_options().dead_after_secs(5)).await;
    let before = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let ids: BTreeSet<u64> = etcd_members(&endpoints_of(&before))
        .await
        .iter()
        .map(|m| m.1)
        .collect();
    let monitor = ClusterMonitor::start(&c);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    for victims in [2, 3] {
        let names_now: Vec<String> = c.members().iter().map(|m| m.name.clone()).collect();
        for victim in names_now.iter().take(victims) {
            ok(&c, c.kill_member(victim).map(|_| ()));
        }
        let after = ok(
            &c,
            c.wait_until(
                &format!("3 healthy voters again after {victims} were killed"),
                CHANGE,
                |s| {
                    is_running(s, 3, VERSION)
                        && names_now.iter().take(victims).all(|n| {
                            s.members
                                .iter()
                                .any(|m| &m.name == n && m.healthy && m.restarts >= 1)
                        })
                },
            )
            .await,
        );
        assert_eq!(names(&after), names(&before), "{}", describe(&after));
        let now: BTreeSet<u64> = etcd_members(&endpoints_of(&after))
            .await
            .iter()
            .map(|m| m.1)
            .collect();
        assert_eq!(now, ids, "the same member ids after {victims} were killed");
        ok(&c, writer.wait_acked(25, Duration::from_secs(30)).await);
    }
    let log = writer.stop().await;
    let status = c.status().await.expect("status");
    ok(&c, verify_acked(&endpoints_of(&status), &log.acked).await);
    let watched = monitor.membership();
    assert_eq!(
        watched.ids_seen.iter().copied().collect::<BTreeSet<u64>>(),
        ids,
        "no member was added or removed"
    );
    eprintln!(
        "kill 2 then 3: {} writes acknowledged, {} failed while quorum was lost, longest gap {:?}",
        log.acked.len(),
        log.failures.len(),
        log.longest_gap
    );
}

/// 3e: two of three killed and their data wiped: quorum cannot come back by itself. Under
/// `Manual` (the default) nothing is touched and the `QuorumLost` condition says what was
/// lost and what to do; after `spec.recovery.quorumLoss: ForceNewCluster` the survivor
/// becomes a one-member cluster, grows back to 3 by learners, and the condition names the
/// revision it recovered at. The writes lost are counted, not assumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_majority_is_forced_only_when_the_spec_says_so() {
    let _serial = serial_guard();
    let c = start(example_options().dead_after_secs(5)).await;
    let before = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(50, Duration::from_secs(20)).await);
    // The leader as the writes stand, read just before the crash.
    let at_crash = c.status().await.expect("status");
    let survivor = at_crash
        .members
        .iter()
        .find(|m| m.leader)
        .map(|m| m.name.clone())
        .expect("a leader");
    let wiped: Vec<String> = before
        .members
        .iter()
        .filter(|m| m.name != survivor)
        .map(|m| m.name.clone())
        .collect();
    let mut c = c;
    c.crash();
    for victim in &wiped {
        kill_and_wait(&c, victim).await;
        std::fs::remove_dir_all(data_dir(&c, victim)).expect("wipe");
    }
    let restarted = c.restart().await;
    ok(&c, restarted);
    let stuck = ok(
        &c,
        c.wait_until(
            "the QuorumLost condition, with the survivor's raft index",
            CHANGE,
            |s| {
                condition(s, ConditionType::QuorumLost).is_some_and(|q| {
                    q.status() == ConditionStatus::True
                        && q.reason == "DataLost"
                        && q.message.contains("raft index")
                })
            },
        )
        .await,
    );
    let lost = condition(&stuck, ConditionType::QuorumLost)
        .unwrap()
        .message
        .clone();
    for part in [
        wiped.join(", ").as_str(),
        survivor.as_str(),
        "raft index",
        "set spec.recovery.quorumLoss: ForceNewCluster",
    ] {
        assert!(lost.contains(part), "{part:?} in {lost}");
    }
    assert_eq!(stuck.phase(), ClusterPhase::Failed);
    // Nothing is touched under Manual.
    ok(
        &c,
        hold_for("no change under Manual", Duration::from_secs(8), || async {
            let s = c.status().await.ok_or("no status")?;
            if names(&s) != names(&before) {
                return Err(format!("members changed: {}", describe(&s)));
            }
            Ok(())
        })
        .await,
    );

    ok(
        &c,
        c.write_manifest(&format!(
            "apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: {}\nspec:\n  size: 3\n  version: \"{VERSION}\"\n  recovery:\n    quorumLoss: ForceNewCluster\n",
            c.cluster()
        ))
        .map_err(anyhow::Error::from),
    );
    let after = ok(
        &c,
        c.wait_until("3 healthy voters from the survivor", CHANGE, |s| {
            is_running(s, 3, VERSION) && names(s).contains(&survivor)
        })
        .await,
    );
    let recovered = condition(&after, ConditionType::QuorumLost).expect("the condition stays");
    assert_eq!(recovered.status(), ConditionStatus::False);
    assert_eq!(recovered.reason, "ForcedNewCluster");
    assert!(
        recovered
            .message
            .contains(&format!("forced from {survivor} at revision")),
        "{}",
        recovered.message
    );
    for gone in &wiped {
        assert!(!names(&after).contains(gone), "{gone} was replaced");
    }
    let log = writer.stop().await;
    let missing = ok(
        &c,
        testkit::traffic::count_missing_acked(&endpoints_of(&after), &log.acked).await,
    );
    eprintln!(
        "forced new cluster from {survivor}: {} of {} acknowledged writes lost; {}",
        missing,
        log.acked.len(),
        recovered.message
    );
    // The survivor was the leader: every write it acknowledged was in its log, and a
    // forced new cluster keeps its log up to the commit index.
    assert_eq!(missing, 0, "writes lost although the survivor led");
}

/// 4: an online upgrade 3.5.34 -> 3.6.15 under steady writes: every member ends on 3.6.15,
/// the cluster version is 3.6, the leader changes at most once per member, and no
/// acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_from_3_5_to_3_6_under_writes() {
    let _serial = serial_guard();
    if let Err(e) = EtcdBinaries::from_env().resolve(OLD_VERSION.parse().unwrap()) {
        panic!("the upgrade test needs etcd {OLD_VERSION}: {e}");
    }
    let c = start(example_options().version(OLD_VERSION)).await;
    let before = ok(&c, c.wait_running(3, OLD_VERSION, FORM).await);
    assert_eq!(before.current_version, OLD_VERSION);
    let monitor = ClusterMonitor::start(&c);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    c.set_spec(3, VERSION).unwrap();
    ok(
        &c,
        c.wait_until("the upgrade to start", Duration::from_secs(30), |s| {
            s.phase() == ClusterPhase::Upgrading || s.members.iter().any(|m| m.version == VERSION)
        })
        .await,
    );
    let after = ok(&c, c.wait_running(3, VERSION, CHANGE * 3).await);
    assert_eq!(after.current_version, VERSION);
    assert_eq!(names(&after), names(&before), "the same members, upgraded");
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let log = writer.stop().await;

    // Every member's etcd says 3.6.15, and the cluster version moved to 3.6.
    let endpoints = endpoints_of(&after);
    for endpoint in &endpoints {
        let mut client = ok(&c, etcd_client(std::slice::from_ref(endpoint)).await);
        let status = client.status().await.expect("etcd status");
        assert_eq!(status.version(), VERSION, "{endpoint}");
    }
    let cluster_version = ok(
        &c,
        wait_for(
            "the cluster version 3.6",
            Duration::from_secs(60),
            || async {
                let (server, cluster) = http_version(&endpoints[0]).await.ok()?;
                (server == VERSION && cluster.starts_with("3.6")).then_some(cluster)
            },
        )
        .await,
    );
    let etcdctl_status = ok(
        &c,
        etcdctl(&after.endpoints, &["endpoint", "status", "-w", "json"]),
    );
    assert_eq!(
        etcdctl_status
            .matches(&format!("\"version\":\"{VERSION}\""))
            .count(),
        3,
        "{etcdctl_status}"
    );

    let monitored = ok(&c, monitor.assert_one_change_at_a_time());
    eprintln!(
        "upgrade: {} writes acknowledged, {} failed, longest gap {:?}; leaders (status) {:?}, leaders (etcd) {:x?}, cluster version {cluster_version}; phases {:?}",
        log.acked.len(),
        log.failures.len(),
        log.longest_gap,
        monitored.status_leaders,
        monitored.etcd_leaders,
        monitored.phases
    );
    assert!(
        monitored.etcd_leader_changes() <= 3 && monitored.status_leader_changes() <= 3,
        "the leader changed more than once per member: etcd {:x?}, status {:?}",
        monitored.etcd_leaders,
        monitored.status_leaders
    );
    assert!(
        monitored.phases.contains(&ClusterPhase::Upgrading),
        "{:?}",
        monitored.phases
    );
    let held = ok(&c, verify_acked(&endpoints, &log.acked).await);
    assert!(held >= log.acked.len());
}

/// A refused spec freezes changes, never healing: while a downgrade is refused, a follower
/// killed is started again on its data (the same member id, no membership change), then
/// another; writes run throughout and none fails or is lost; a valid spec then converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_while_the_spec_is_refused_comes_back_on_its_data() {
    let _serial = serial_guard();
    // A short dead-after: a member past it is still restarted, never replaced, while the
    // spec is refused.
    let (c, before, monitor, writer) = running_under_writes(Duration::from_secs(3)).await;
    let ids = etcd_members(&endpoints_of(&before)).await;
    c.set_spec(3, OLD_VERSION).unwrap();
    expect_refused(&c, "downgrade", before.observed_generation + 1).await;

    let mut followers: Vec<String> = before
        .members
        .iter()
        .filter(|m| !m.leader)
        .map(|m| m.name.clone())
        .collect();
    followers.sort();
    for victim in &followers {
        let pid = kill_and_wait(&c, victim).await;
        ok(
            &c,
            c.wait_until(
                &format!("{victim} back on its data while the spec is refused"),
                CHANGE,
                |s| {
                    s.phase() == ClusterPhase::Invalid
                        && s.ready == 3
                        && s.members
                            .iter()
                            .any(|m| &m.name == victim && m.healthy && m.restarts >= 1)
                },
            )
            .await,
        );
        assert_ne!(c.member(victim).and_then(|m| m.pid), Some(pid));
        ok(&c, writer.wait_acked(10, Duration::from_secs(20)).await);
    }
    assert_eq!(
        etcd_members(&endpoints_of(&before)).await,
        ids,
        "the same members, the same ids"
    );
    c.set_spec(3, VERSION).unwrap();
    let after = ok(&c, c.wait_running(3, VERSION, CHANGE).await);
    assert_eq!(names(&after), names(&before));
    assert_safe_through(&c, writer, monitor, &after).await;
}

/// An etcd cache in which `version` is a binary that cannot run on this host (a wrapper
/// that says so in etcd's fatal log line and exits) and every other version the real one.
fn cache_with_bad_binary(version: &str) -> tempfile::TempDir {
    let real = EtcdBinaries::from_env();
    let cache = tempfile::tempdir().unwrap();
    let bins = EtcdBinaries::new(cache.path());
    for v in [OLD_VERSION, VERSION, "3.7.2"] {
        let path = bins.cached_path(v.parse().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if v == version {
            std::fs::write(
                &path,
                "#!/bin/sh\necho '{\"level\":\"fatal\",\"msg\":\"cannot execute binary\",\"error\":\"exec format error\"}' >&2\nexit 1\n",
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else if let Ok(binary) = real.resolve(v.parse().unwrap()) {
            std::os::unix::fs::symlink(binary, &path).unwrap();
        }
    }
    let etcdutl = real
        .cache_dir()
        .join(etcd_operator::etcd_bin::ETCDUTL_IN_CACHE);
    if etcdutl.is_file() {
        let to = cache.path().join(etcd_operator::etcd_bin::ETCDUTL_IN_CACHE);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(etcdutl, to).unwrap();
    }
    cache
}

/// Waits until the status satisfies `ready`, starting the coordinator again whenever it
/// has died (at a failpoint); on timeout says what was awaited.
async fn converge(
    c: &mut LocalCoordinator,
    what: &str,
    within: Duration,
    mut ready: impl FnMut(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = None;
    loop {
        let restarted = c.restart_if_exited().await;
        ok(c, restarted);
        if let Some(status) = c.status().await {
            if ready(&status) {
                return status;
            }
            last = Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out after {within:?} waiting for {what}\nlast status: {}\n{}",
                last.as_ref().map(describe).unwrap_or_else(|| "none".into()),
                c.logs(60)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An upgrade to a version whose etcd cannot start on this host (a bad binary): the first
/// member restarted on it keeps failing; within the upgrade's deadline it is neither judged
/// dead nor replaced (though past dead-after), and its status says its version is unknown;
/// past the deadline it is rolled back to 3.5.34 on its own data (the same member id),
/// through a coordinator crash right after the rollback is recorded; the upgrade stops with
/// an `UpgradeFailed` condition naming the member and etcd's last error, and no other
/// member is touched. Setting the spec back to 3.5.34 is accepted and converges. Writes run
/// throughout: none fails or is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_is_rolled_back_and_a_spec_set_back_converges() {
    let _serial = serial_guard();
    let cache = cache_with_bad_binary(VERSION);
    let markers = tempfile::tempdir().unwrap();
    let mut c = start(
        example_options()
            .version(OLD_VERSION)
            .dead_after_secs(3)
            .arg("--upgrade-deadline-secs=12")
            .env(
                etcd_operator::etcd_bin::CACHE_DIR_ENV,
                &cache.path().display().to_string(),
            )
            .env("FAILPOINTS", "coordinator.rollback.after-record=return")
            .env(
                etcd_operator::failpoints::MARKER_DIR_ENV,
                &markers.path().display().to_string(),
            ),
    )
    .await;
    let before = ok(&c, c.wait_running(3, OLD_VERSION, FORM).await);
    let ids = etcd_members(&endpoints_of(&before)).await;
    let pids_before = pids(&c);
    let monitor = ClusterMonitor::start(&c);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    let began = std::time::Instant::now();
    c.set_spec(3, VERSION).unwrap();
    let mut unknown_seen = None;
    let stopped = converge(
        &mut c,
        "the upgrade to stop with UpgradeFailed, every member healthy on 3.5.34",
        CHANGE * 2,
        |s| {
            if let Some(m) = s.members.iter().find(|m| m.version == "unknown") {
                unknown_seen.get_or_insert_with(|| m.name.clone());
            }
            is_failed_upgrade(s)
                && s.ready == 3
                && s.members.iter().all(|m| m.version == OLD_VERSION)
        },
    )
    .await;
    eprintln!("stopped after {:?}", began.elapsed());
    let failed = condition(&stopped, ConditionType::UpgradeFailed).unwrap();
    let member = unknown_seen.expect("the failing member's version shown as unknown while down");
    assert!(
        failed.message.contains(&member)
            && failed.message.contains("cannot execute binary")
            && failed.message.contains(VERSION),
        "the condition names the member, the version and etcd's last error: {failed:?}"
    );
    assert!(
        etcd_operator::failpoints::fired(markers.path(), "coordinator.rollback.after-record"),
        "the coordinator crashed once the rollback was recorded"
    );
    assert_eq!(
        etcd_members(&endpoints_of(&stopped)).await,
        ids,
        "no member was removed or added: rolled back on its own data"
    );
    let untouched: Vec<&String> = pids_before.keys().filter(|n| **n != member).collect();
    for name in untouched {
        assert_eq!(
            pids(&c).get(name),
            pids_before.get(name),
            "{name} was never touched by the stopped upgrade"
        );
    }
    // Stays stopped: no other member is upgraded.
    ok(
        &c,
        hold_for("the stopped upgrade", Duration::from_secs(5), || async {
            match c.status().await {
                Some(s)
                    if s.members
                        .iter()
                        .all(|m| m.version == OLD_VERSION || m.version == "unknown") =>
                {
                    Ok(())
                }
                Some(s) => Err(describe(&s)),
                None => Ok(()),
            }
        })
        .await,
    );

    // The spec set back: accepted (the member never ran 3.6.15), the failure forgotten.
    c.set_spec(3, OLD_VERSION).unwrap();
    let after = converge(&mut c, "Running on 3.5.34, no UpgradeFailed", CHANGE, |s| {
        is_running(s, 3, OLD_VERSION) && condition(s, ConditionType::UpgradeFailed).is_none()
    })
    .await;
    eprintln!("set back after {:?}", began.elapsed());
    assert_eq!(names(&after), names(&before));
    assert_safe_through(&c, writer, monitor, &after).await;
}

fn is_failed_upgrade(s: &ClusterStatus) -> bool {
    condition(s, ConditionType::UpgradeFailed).is_some_and(|k| k.status() == ConditionStatus::True)
}

/// Waits until the status refuses the spec with a SpecValid=False condition naming
/// `problem`, at `generation`; checks the `status` CLI shows the same.
async fn expect_refused(c: &LocalCoordinator, problem: &str, generation: i64) -> ClusterStatus {
    let status = ok(
        c,
        c.wait_until(
            &format!("phase Invalid, SpecValid=False naming {problem:?}"),
            Duration::from_secs(30),
            |s| {
                s.phase() == ClusterPhase::Invalid
                    && s.observed_generation == generation
                    && condition(s, ConditionType::SpecValid).is_some_and(|k| {
                        k.status() == ConditionStatus::False && k.message.contains(problem)
                    })
            },
        )
        .await,
    );
    let out = std::process::Command::new(coordinator_bin())
        .args(["status", c.cluster(), "--grpc-addr"])
        .arg(c.addr().to_string())
        .output()
        .expect("run etcd-coordinator status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status CLI failed: {out:?}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(c.cluster()) && l.trim_end().ends_with("Invalid")),
        "the table shows phase Invalid:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("SpecValid") && l.contains("False") && l.contains(problem)),
        "the conditions show SpecValid False naming {problem:?}:\n{text}"
    );
    status
}

/// What must not change while specs are refused: etcd's member ids and the sidecar
/// processes.
async fn untouched(
    c: &LocalCoordinator,
    ids: &[(String, u64, bool)],
    before: &BTreeMap<String, u32>,
    endpoints: &[String],
) -> Result<(), String> {
    let now = pids(c);
    if &now != before {
        return Err(format!("sidecars changed: {before:?} -> {now:?}"));
    }
    if let Some((name, pid)) = now.iter().find(|(_, p)| !pid_alive(**p)) {
        return Err(format!("{name}'s sidecar (pid {pid}) is gone"));
    }
    let list = etcd_members(endpoints).await;
    if list != ids {
        return Err(format!("etcd members changed: {ids:?} -> {list:?}"));
    }
    Ok(())
}

/// 5: size 0, an unparseable version, a downgrade and malformed YAML are refused with a
/// clear message, and nothing running is touched; a valid spec then converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_leave_the_running_cluster_untouched() {
    let _serial = serial_guard();
    let c = start(example_options()).await;
    let running = ok(&c, c.wait_running(3, VERSION, FORM).await);
    let endpoints = endpoints_of(&running);
    let ids = etcd_members(&endpoints).await;
    let pids = pids(&c);
    assert_eq!(pids.len(), 3, "{pids:?}");
    let mut generation = running.observed_generation;

    let cases: [(i32, &str, &str); 3] = [
        (0, VERSION, "spec.size is 0"),
        (3, "banana", "\"banana\" is not a version"),
        (3, OLD_VERSION, "downgrade from 3.6.15 to 3.5.34"),
    ];
    let mut last = running.clone();
    for (size, version, problem) in cases {
        c.set_spec(size, version).unwrap();
        generation += 1;
        last = expect_refused(&c, problem, generation).await;
        assert_eq!(last.members.len(), 3, "{}", describe(&last));
        ok(
            &c,
            hold_for(
                &format!("the cluster untouched under {problem:?}"),
                Duration::from_secs(3),
                || untouched(&c, &ids, &pids, &endpoints),
            )
            .await,
        );
        // Still serving clients.
        let mut client = ok(&c, etcd_client(&endpoints).await);
        client
            .put(format!("during/{size}/{version}"), "ok", None)
            .await
            .expect("the cluster serves writes while the spec is refused");
    }

    // Malformed YAML: the previous spec stays, an error is printed, nothing changes.
    c.write_manifest("apiVersion: \"etcd.operator.rs/v1alpha1\"\nkind: EtcdCluster\nmetadata: {name: \"etcd-cluster\"\nspec:\n  size: [3\n")
        .unwrap();
    // The error is printed with the parser's excerpt of the file (several lines).
    let printed = ok(
        &c,
        wait_for(
            "the coordinator to print that the manifest is malformed",
            Duration::from_secs(20),
            || async {
                let out = c.stdout();
                let at = out.find("error: ")?;
                let printed = &out[at..];
                (printed.contains("malformed YAML")
                    && (printed.contains("runs on as last read)")
                        || printed.contains("(nothing in it is applied)")))
                .then(|| printed.to_string())
            },
        )
        .await,
    );
    assert!(
        printed.contains(&c.manifest_path().display().to_string()),
        "the error names the file: {printed}"
    );
    ok(
        &c,
        hold_for(
            "the cluster untouched under malformed YAML",
            Duration::from_secs(3),
            || untouched(&c, &ids, &pids, &endpoints),
        )
        .await,
    );
    let kept = c.status().await.expect("status");
    assert_eq!(
        kept.observed_generation,
        generation,
        "the previous spec is kept: {}",
        describe(&kept)
    );
    assert_eq!(kept.target_version, OLD_VERSION, "{}", describe(&kept));
    assert_eq!(kept.phase, last.phase);

    // A valid spec again: the refusal clears and the cluster is Running as before.
    c.set_spec(3, VERSION).unwrap();
    let back = ok(
        &c,
        c.wait_until("a valid spec to converge", FORM, |s| {
            is_running(s, 3, VERSION)
                && s.observed_generation == generation + 1
                && condition(s, ConditionType::SpecValid)
                    .is_some_and(|k| k.status() == ConditionStatus::True)
        })
        .await,
    );
    assert_eq!(names(&back), names(&running));
    ok(
        &c,
        untouched(&c, &ids, &pids, &endpoints)
            .await
            .map_err(anyhow::Error::msg),
    );
    let mut client = ok(&c, etcd_client(&endpoints).await);
    let during = client
        .get("during/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert_eq!(during.kvs().len(), 3, "the writes made while refused");
}

/// 6: the coordinator killed in the middle of a scale-up (once as soon as the 4th member is
/// recorded, once while the 5th holds its grant) and started again on the same state
/// converges to 5 healthy members, with no duplicate member and no learner left; the
/// running sidecars are adopted, and a clean stop afterwards stops them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_in_the_middle_of_a_scale_up() {
    let _serial = serial_guard();
    let mut c = start(example_options()).await;
    ok(&c, c.wait_running(3, VERSION, FORM).await);
    let pids_before = pids(&c);
    let monitor = ClusterMonitor::start(&c);
    let writer = Writer::start(c.live_endpoints());
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);

    c.set_spec(5, VERSION).unwrap();
    let at_crash = ok(
        &c,
        wait_for(
            "a 4th member or a change in flight",
            Duration::from_secs(60),
            || async {
                let recorded = c.members().len();
                let status = c.status().await;
                let in_flight = status.as_ref().is_some_and(|s| {
                    !s.change_in_flight.is_empty() || s.members.iter().any(|m| m.learner)
                });
                (recorded >= 4 || in_flight).then(|| {
                    format!(
                        "{recorded} recorded; {}",
                        status.as_ref().map(describe).unwrap_or_default()
                    )
                })
            },
        )
        .await,
    );
    c.crash();
    eprintln!("coordinator killed with: {at_crash}");
    let restarted = c.restart().await;
    ok(&c, restarted);

    // Once more while the last member holds its grant: its sidecar adds itself as a learner
    // with no coordinator to answer, and the next coordinator must find that add in flight.
    let last = c.member_name(4);
    let log_path = c.state_dir().join(c.cluster()).join(format!("{last}.log"));
    let at_second_crash = ok(
        &c,
        wait_for(&format!("{last} to receive its grant"), CHANGE, || async {
            let text = std::fs::read_to_string(&log_path).ok()?;
            text.contains("membership grant received").then_some(())?;
            let list = try_etcd_members(&(c.live_endpoints())()).await;
            Some(format!("etcd members (name, id, learner): {list:x?}"))
        })
        .await,
    );
    c.crash();
    eprintln!("coordinator killed again once {last} held its grant; {at_second_crash}");
    let restarted = c.restart().await;
    ok(&c, restarted);

    let five = ok(&c, c.wait_running(5, VERSION, CHANGE * 2).await);
    ok(&c, writer.wait_acked(25, Duration::from_secs(20)).await);
    let log = writer.stop().await;

    // No duplicate: five entries in etcd, unique names, the status's names, no learner.
    let endpoints = endpoints_of(&five);
    let members = etcd_members(&endpoints).await;
    assert_eq!(members.len(), 5, "{members:?}");
    let etcd_names: BTreeSet<String> = members.iter().map(|m| m.0.clone()).collect();
    assert_eq!(etcd_names.len(), 5, "names unique: {members:?}");
    assert_eq!(etcd_names, names(&five));
    assert!(members.iter().all(|m| !m.2), "no learner left: {members:?}");
    let records = c.members();
    let ordinals: BTreeSet<u32> = records.iter().map(|m| m.ordinal).collect();
    assert_eq!(records.len(), 5, "{records:?}");
    assert_eq!(ordinals.len(), 5, "ordinals unique: {records:?}");
    // The members that ran before the crash were adopted, not restarted.
    for (name, pid) in &pids_before {
        assert_eq!(pids(&c).get(name), Some(pid), "{name} was restarted");
    }

    let monitored = ok(&c, monitor.assert_one_change_at_a_time());
    let held = ok(&c, verify_acked(&endpoints, &log.acked).await);
    eprintln!(
        "restart mid-scale-up: {} writes acknowledged ({held} held), {} failed; in flight {:?}",
        log.acked.len(),
        log.failures.len(),
        monitored.changes_in_flight
    );
    assert!(log.failures.is_empty(), "{:?}", log.failures);

    // A clean stop now stops every member, the adopted ones included.
    let sidecars = pids(&c);
    let exit = c.terminate(Duration::from_secs(90)).await;
    let exit = ok(&c, exit);
    assert!(exit.success(), "the coordinator exited with {exit}");
    let still: Vec<&String> = sidecars
        .iter()
        .filter(|(_, pid)| pid_alive(**pid))
        .map(|(name, _)| name)
        .collect();
    assert!(
        still.is_empty(),
        "sidecars still running after a clean stop: {still:?}"
    );
}

/// The coordinator killed while the three initial members bootstrap together: the next one
/// finds the bootstrap from the members it recorded and lets it finish under the same
/// initial cluster and token (members told their role before the crash and after it start
/// one cluster), or, had it never formed, begins it again. Either way: one Running cluster
/// of three voters, every recorded member in it, no learner, writes accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_in_the_middle_of_the_bootstrap() {
    let _serial = serial_guard();
    let mut c = start(example_options()).await;
    let at_crash = ok(
        &c,
        wait_for(
            "the three initial members recorded",
            Duration::from_secs(60),
            || async {
                let recorded = c.members();
                (recorded.len() == 3).then(|| format!("{recorded:?}"))
            },
        )
        .await,
    );
    c.crash();
    let status_before = c.status().await;
    eprintln!(
        "coordinator killed with the initial members recorded: {at_crash}; {status_before:?}"
    );
    let restarted = c.restart().await;
    ok(&c, restarted);

    let three = ok(&c, c.wait_running(3, VERSION, FORM * 2).await);
    let endpoints = endpoints_of(&three);
    let members = etcd_members(&endpoints).await;
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|m| !m.2), "no learner: {members:?}");
    let etcd_names: BTreeSet<String> = members.iter().map(|m| m.0.clone()).collect();
    assert_eq!(etcd_names, names(&three), "{}", describe(&three));
    let recorded: BTreeSet<String> = c.members().iter().map(|m| m.name.clone()).collect();
    assert_eq!(
        recorded, etcd_names,
        "a recorded member outside the cluster"
    );
    let initial: BTreeSet<String> = (0..3).map(|i| c.member_name(i)).collect();
    // Which way it went depends on how far the bootstrap had got (told their roles, or
    // formed already); the outcome above may not.
    let stderr = std::fs::read_to_string(c.stderr_path()).unwrap_or_default();
    let taken_up = stderr.contains("a static bootstrap begun before this start goes on");
    eprintln!(
        "after the restart: {}, {}",
        if etcd_names == initial {
            "the same initial members"
        } else {
            "the bootstrap was begun again"
        },
        if taken_up {
            "the restarted coordinator took the bootstrap up"
        } else {
            "the cluster had formed before the restart"
        }
    );
    // One cluster: every endpoint answers from the same cluster id.
    let mut ids = BTreeSet::new();
    for endpoint in &endpoints {
        let mut client = ok(&c, etcd_client(std::slice::from_ref(endpoint)).await);
        let status = client.status().await.expect("status");
        ids.insert(status.header().expect("header").cluster_id());
    }
    assert_eq!(ids.len(), 1, "one cluster, not several: {ids:x?}");
    let put = ok(&c, etcdctl(&three.endpoints, &["put", "foo", "bar"]));
    assert_eq!(put.trim(), "OK", "{put}");
}

/// A manifest edited into something that does not parse (malformed YAML, then an unknown
/// field) changes nothing, and says so where users look: `SpecValid False` with the parse
/// error on the cluster the file declares; fixed, the cluster's spec is valid again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_does_not_parse_is_shown_as_spec_valid_false() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.yaml");
    let good = testkit::local_cluster::manifest("etcd-cluster", 1, VERSION);
    std::fs::write(&path, &good).unwrap();
    let c = start(CoordinatorOptions::new(coordinator_bin(), &path)).await;
    let before = ok(&c, c.wait_running(1, VERSION, FORM).await);
    for (broken, says) in [
        (
            good.replace("size: 1", "size: [1"),
            &["malformed YAML", "line 7 column 10"][..],
        ),
        (
            good.replace("size: 1", "sise: 1"),
            &["unknown field spec.sise"][..],
        ),
    ] {
        ok(&c, c.write_manifest(&broken).map_err(anyhow::Error::from));
        let refused = ok(
            &c,
            c.wait_until("SpecValid False for the refused manifest", CHANGE, |s| {
                condition(s, ConditionType::SpecValid).is_some_and(|v| {
                    v.status() == ConditionStatus::False && v.reason == "ManifestRefused"
                })
            })
            .await,
        );
        let valid = condition(&refused, ConditionType::SpecValid).unwrap();
        for part in says.iter().chain(&["cluster.yaml"]) {
            assert!(
                valid.message.contains(part),
                "{part:?} in {}",
                valid.message
            );
        }
        assert_eq!(names(&refused), names(&before), "nothing changed");
        ok(&c, c.write_manifest(&good).map_err(anyhow::Error::from));
        ok(
            &c,
            c.wait_until("SpecValid True again", CHANGE, |s| {
                condition(s, ConditionType::SpecValid)
                    .is_some_and(|v| v.status() == ConditionStatus::True)
                    && is_running(s, 1, VERSION)
            })
            .await,
        );
    }
}

/// A manifest file whose cluster names cannot be read (it never parsed) is listed on its own
/// by ListClusters and `etcd-coordinator status`, with the file and the line; the clusters
/// of the other files run on untouched, and the entry goes once the file is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_whose_names_cannot_be_read_is_listed_on_its_own() {
    use etcd_operator::proto::{ListClustersRequest, coordinator_client::CoordinatorClient};
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.yaml");
    std::fs::write(
        &path,
        testkit::local_cluster::manifest("etcd-cluster", 1, VERSION),
    )
    .unwrap();
    let c = start(CoordinatorOptions::new(coordinator_bin(), &path).manifests_dir()).await;
    let before = ok(&c, c.wait_running(1, VERSION, FORM).await);
    let other = c.manifest_path().parent().unwrap().join("other.yaml");
    std::fs::write(
        &other,
        "apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: [\n",
    )
    .unwrap();
    let list = || async {
        CoordinatorClient::new(c.channel())
            .list_clusters(ListClustersRequest::default())
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    let listed = testkit::wait_for("the refused file listed on its own", CHANGE, || async {
        list().await.filter(|l| !l.refused_manifests.is_empty())
    })
    .await;
    let listed = ok(&c, listed);
    assert_eq!(listed.refused_manifests.len(), 1, "{listed:?}");
    let refused = &listed.refused_manifests[0];
    assert!(refused.path.ends_with("other.yaml"), "{refused:?}");
    assert!(refused.error.contains("line"), "{refused:?}");
    // The cluster of the other file is as it was, its spec not refused.
    let now = c.status().await.expect("status");
    assert_eq!(names(&now), names(&before));
    assert!(
        condition(&now, ConditionType::SpecValid)
            .is_some_and(|v| v.status() == ConditionStatus::True),
        "{now:?}"
    );
    let out = std::process::Command::new(coordinator_bin())
        .args(["status", "--grpc-addr"])
        .arg(c.addr().to_string())
        .output()
        .expect("run etcd-coordinator status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status CLI failed: {out:?}");
    assert!(
        text.lines().any(|l| l.starts_with("manifest refused")
            && l.contains("other.yaml")
            && l.contains("line")),
        "the status CLI names the refused file:\n{text}"
    );
    // Fixed (here: removed), the entry goes.
    std::fs::remove_file(&other).unwrap();
    let cleared = testkit::wait_for("the refusal cleared", CHANGE, || async {
        list().await.filter(|l| l.refused_manifests.is_empty())
    })
    .await;
    ok(&c, cleared);
}

/// A one-member cluster's manifest in a file of its own, for [`CoordinatorOptions::new`].
fn one_member_manifest(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, testkit::local_cluster::manifest(name, 1, VERSION)).unwrap();
    path
}

/// Waits until cluster `name` (any cluster of the coordinator) satisfies `ready`.
async fn wait_cluster(
    c: &LocalCoordinator,
    name: &str,
    what: &str,
    within: Duration,
    ready: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let waited = wait_for(&format!("{name}: {what}"), within, || async {
        testkit::local_cluster::fetch_status(c.channel(), name)
            .await
            .filter(|s| ready(s))
    })
    .await;
    match waited {
        Ok(s) => s,
        Err(e) => {
            let last = testkit::local_cluster::fetch_status(c.channel(), name).await;
            panic!(
                "{e}\nlast status: {}\n{}",
                last.as_ref().map(describe).unwrap_or_default(),
                c.logs(30)
            )
        }
    }
}

/// The manifest files the coordinator lists as refused on their own, with why.
async fn refused_manifests(c: &LocalCoordinator) -> Option<Vec<(String, String)>> {
    use etcd_operator::proto::{ListClustersRequest, coordinator_client::CoordinatorClient};
    let list = CoordinatorClient::new(c.channel())
        .list_clusters(ListClustersRequest::default())
        .await
        .ok()?
        .into_inner();
    Some(
        list.refused_manifests
            .into_iter()
            .map(|r| (r.path, r.error))
            .collect(),
    )
}

/// The member directories under `<state>/<cluster>/`.
fn member_dirs(c: &LocalCoordinator, cluster: &str) -> BTreeSet<String> {
    std::fs::read_dir(c.state_dir().join(cluster))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{cluster}-")))
        .collect()
}

/// A cluster's `cluster.json` truncated while its members run, then the coordinator
/// restarted: the record is an error that stops that cluster alone (its status names the
/// file and why); no ordinal is used again, no member is created, started, stopped or
/// wiped; the other cluster of the state directory runs on; the file restored, the cluster
/// is back with the same member, adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_cluster_record_stops_only_its_cluster_until_restored() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let opts = CoordinatorOptions::new(
        coordinator_bin(),
        one_member_manifest(dir.path(), "etcd-cluster"),
    )
    .extra_manifest(
        "other.yaml",
        &testkit::local_cluster::manifest("other", 1, VERSION),
    );
    let mut c = start(opts).await;
    ok(&c, c.wait_running(1, VERSION, FORM).await);
    wait_cluster(&c, "other", "Running", FORM, |s| is_running(s, 1, VERSION)).await;
    let record = std::fs::read(c.cluster_json()).unwrap();
    let pids_before = pids(&c);
    let dirs_before = member_dirs(&c, "etcd-cluster");
    let other_json = c.state_dir().join("other").join("cluster.json");
    let other_before = testkit::local_cluster::read_members(&other_json);
    assert_eq!(pids_before.len(), 1, "{pids_before:?}");

    c.crash();
    std::fs::write(c.cluster_json(), b"").unwrap();
    let restarted = c.restart().await;
    ok(&c, restarted);

    let refused = wait_cluster(
        &c,
        "etcd-cluster",
        "the unreadable record shown",
        CHANGE,
        |s| {
            condition(s, ConditionType::Available).is_some_and(|a| {
                a.reason == "ObserveFailed"
                    && a.message.contains("cluster.json is not a cluster record")
            })
        },
    )
    .await;
    eprintln!("shown: {}", describe(&refused));
    wait_cluster(&c, "other", "Running after the restart", CHANGE, |s| {
        is_running(s, 1, VERSION)
    })
    .await;
    assert_eq!(
        testkit::local_cluster::read_members(&other_json),
        other_before,
        "the other cluster's members were adopted as they were"
    );
    // Passes go on every second meanwhile: none of them touches the cluster.
    let untouched = hold_for("etcd-cluster untouched", Duration::from_secs(5), || async {
        let now = std::fs::read(c.cluster_json()).map_err(|e| e.to_string())?;
        if !now.is_empty() {
            return Err(format!(
                "the record was written: {}",
                String::from_utf8_lossy(&now)
            ));
        }
        let dirs = member_dirs(&c, "etcd-cluster");
        if dirs != dirs_before {
            return Err(format!("member directories {dirs:?}, were {dirs_before:?}"));
        }
        for (name, pid) in &pids_before {
            if !pid_alive(*pid) {
                return Err(format!("{name}'s sidecar (pid {pid}) was stopped"));
            }
        }
        Ok(())
    })
    .await;
    ok(&c, untouched);

    testkit::local_cluster::write_atomically(
        &c.cluster_json(),
        std::str::from_utf8(&record).unwrap(),
    )
    .unwrap();
    let back = ok(&c, c.wait_running(1, VERSION, CHANGE).await);
    assert_eq!(
        pids(&c),
        pids_before,
        "the member was adopted, not started again"
    );
    assert_eq!(
        back.members
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>(),
        ["etcd-cluster-0000"]
    );
    assert_eq!(c.next_ordinal(), 1, "no ordinal used again");
}

/// A directory holding a file with a typo (`verison:`) beside a good one, at start: the
/// good cluster is created and runs, the bad file is refused on its own and listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_at_start_is_refused_on_its_own() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let typo = testkit::local_cluster::manifest("typo", 1, VERSION).replace("version", "verison");
    let opts = CoordinatorOptions::new(
        coordinator_bin(),
        one_member_manifest(dir.path(), "etcd-cluster"),
    )
    .extra_manifest("typo.yaml", &typo);
    let c = start(opts).await;
    ok(&c, c.wait_running(1, VERSION, FORM).await);
    let refused = ok(
        &c,
        wait_for("the bad file listed", CHANGE, || async {
            refused_manifests(&c).await.filter(|r| !r.is_empty())
        })
        .await,
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].0.ends_with("typo.yaml"), "{refused:?}");
    assert!(
        refused[0].1.contains("unknown field spec.verison"),
        "{refused:?}"
    );
    assert!(
        testkit::local_cluster::fetch_status(c.channel(), "typo")
            .await
            .is_none(),
        "nothing of the bad file is applied"
    );
}

/// While a file that does not parse lies beside them, every other file is applied as if it
/// were alone: a cluster added is created, and another cluster's own file scaled from one
/// member to three is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_beside_holds_back_no_other_change() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let c = start(
        CoordinatorOptions::new(
            coordinator_bin(),
            one_member_manifest(dir.path(), "etcd-cluster"),
        )
        .manifests_dir(),
    )
    .await;
    ok(&c, c.wait_running(1, VERSION, FORM).await);
    let manifests = c.manifest_path().parent().unwrap().to_path_buf();
    std::fs::write(
        manifests.join("typo.yaml"),
        testkit::local_cluster::manifest("typo", 1, VERSION).replace("version", "verison"),
    )
    .unwrap();
    ok(
        &c,
        wait_for("the bad file listed", CHANGE, || async {
            refused_manifests(&c).await.filter(|r| !r.is_empty())
        })
        .await,
    );
    testkit::local_cluster::write_atomically(
        &manifests.join("third.yaml"),
        &testkit::local_cluster::manifest("third", 1, VERSION),
    )
    .unwrap();
    c.set_spec(3, VERSION).unwrap();
    wait_cluster(&c, "third", "created beside the bad file", FORM, |s| {
        is_running(s, 1, VERSION)
    })
    .await;
    let three = ok(&c, c.wait_running(3, VERSION, CHANGE * 2).await);
    assert!(
        condition(&three, ConditionType::SpecValid)
            .is_some_and(|v| v.status() == ConditionStatus::True),
        "{}",
        describe(&three)
    );
    let refused = refused_manifests(&c).await.unwrap_or_default();
    assert!(
        refused.len() == 1 && refused[0].0.ends_with("typo.yaml"),
        "{refused:?}"
    );
}

/// A running cluster whose file stops parsing, then the coordinator stopped and started
/// again: the cluster runs on as last read (from the spec recorded in its state directory),
/// its member back on its data with the same etcd member id, nothing created, and its status
/// says the file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_file_breaks_runs_on_as_last_read_across_a_restart() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(CoordinatorOptions::new(
        coordinator_bin(),
        one_member_manifest(dir.path(), "etcd-cluster"),
    ))
    .await;
    let before = ok(&c, c.wait_running(1, VERSION, FORM).await);
    let good = testkit::local_cluster::manifest("etcd-cluster", 1, VERSION);
    c.write_manifest(&good.replace("version", "verison"))
        .unwrap();
    let refused_spec = |s: &ClusterStatus| {
        condition(s, ConditionType::SpecValid).is_some_and(|v| {
            v.reason == "ManifestRefused"
                && v.message.contains("unknown field spec.verison")
                && v.message.contains("runs on as last read")
        })
    };
    ok(
        &c,
        c.wait_until("the file refused", CHANGE, refused_spec).await,
    );
    let pids_before = pids(&c);
    let exit = c.terminate(Duration::from_secs(90)).await;
    assert!(ok(&c, exit).success(), "a clean stop");
    let restarted = c.restart().await;
    ok(&c, restarted);

    let after = ok(
        &c,
        c.wait_until("Running as last read after the restart", FORM, |s| {
            is_running(s, 1, VERSION) && refused_spec(s)
        })
        .await,
    );
    let ids = |s: &ClusterStatus| -> Vec<(String, String)> {
        s.members
            .iter()
            .map(|m| (m.name.clone(), m.id.clone()))
            .collect()
    };
    assert_eq!(ids(&after), ids(&before), "the same member, on its data");
    assert_ne!(pids(&c), pids_before, "started again after the clean stop");
    assert_eq!(c.next_ordinal(), 1, "nothing created");
    // Fixed, the file is read again.
    c.write_manifest(&good).unwrap();
    ok(
        &c,
        c.wait_until("SpecValid True again", CHANGE, |s| {
            condition(s, ConditionType::SpecValid)
                .is_some_and(|v| v.status() == ConditionStatus::True)
        })
        .await,
    );
}

/// The live sidecar processes of member `name` (their arguments name it and its directory).
fn sidecars_of(c: &LocalCoordinator, name: &str) -> Vec<u32> {
    let want_name = format!("--name={name}");
    let want_dir = format!(
        "--data-dir={}",
        c.state_dir().join(c.cluster()).join(name).display()
    );
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                args.contains(&want_name.as_bytes()) && args.contains(&want_dir.as_bytes())
            }) && pid_alive(*pid)
        })
        .collect();
    pids.sort();
    pids
}

/// The coordinator killed (failpoint `coordinator.local.start-after-spawn`) after it started
/// a member's sidecar again and before it recorded the new pid: the next coordinator finds
/// that sidecar by its arguments and adopts it, and never starts a second one on the same
/// data and ports. The member keeps its etcd member id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_started_just_before_a_crash_is_adopted_not_doubled() {
    const FAILPOINT: &str = "coordinator.local.start-after-spawn";
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let markers = dir.path().join("failpoints");
    let opts = CoordinatorOptions::new(
        coordinator_bin(),
        one_member_manifest(dir.path(), "etcd-cluster"),
    )
    .env("FAILPOINTS", &format!("{FAILPOINT}=return"))
    .env(
        etcd_operator::failpoints::MARKER_DIR_ENV,
        markers.to_str().unwrap(),
    );
    let mut c = start(opts).await;
    let before = ok(&c, c.wait_running(1, VERSION, FORM).await);
    let name = c.member_name(0);
    ok(&c, c.kill_member_and_wait(&name).await);
    ok(
        &c,
        wait_for(&format!("the failpoint {FAILPOINT}"), CHANGE, || async {
            etcd_operator::failpoints::fired(&markers, FAILPOINT).then_some(())
        })
        .await,
    );
    c.crash();
    let started = sidecars_of(&c, &name);
    assert_eq!(started.len(), 1, "the sidecar started before the crash");
    assert_ne!(
        c.member(&name).unwrap().pid,
        Some(started[0]),
        "not recorded"
    );
    let restarted = c.restart().await;
    ok(&c, restarted);

    let after = ok(&c, c.wait_running(1, VERSION, CHANGE).await);
    assert_eq!(after.members[0].id, before.members[0].id, "the same member");
    let recorded = wait_for("the adopted sidecar's pid recorded", CHANGE, || async {
        (c.member(&name)?.pid == Some(started[0])).then_some(())
    })
    .await;
    ok(&c, recorded);
    // Over a few passes: the one sidecar, no second one started beside it.
    let one = hold_for(
        "one sidecar of the member",
        Duration::from_secs(5),
        || async {
            match sidecars_of(&c, &name).as_slice() {
                [pid] if *pid == started[0] => Ok(()),
                other => Err(format!("sidecars {other:?}, adopted {}", started[0])),
            }
        },
    )
    .await;
    ok(&c, one);
}
