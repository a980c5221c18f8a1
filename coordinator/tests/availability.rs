//! The availability budget, from the clients' side: a client holding a lease with a 5 s TTL
//! and a watcher of the written keys (beside steady writers and linearizable readers,
//! `testkit::availability`) live through a replacement of the leader and a rolling upgrade
//! of a small cluster in local mode. Counts are asserted, never durations: the lease never
//! expires, the watcher never misses nor repeats an acknowledged write. Takes the
//! machine-wide cluster lock.

use std::{path::Path, sync::Arc, time::Duration};

use testkit::{
    availability::{Availability, LEASE_TTL_SECS, LoadProbe},
    local_cluster::{CoordinatorOptions, LocalCoordinator, is_running},
    serial_guard,
};

const FORM: Duration = Duration::from_secs(90);
const CHANGE: Duration = Duration::from_secs(120);
const OLD_VERSION: &str = "3.5.34";
const VERSION: &str = "3.6.15";

/// Writes acknowledged under the probe before and after an operation, so each operation
/// runs with the load flowing and the watcher has events after it to deliver.
const WRITES_AROUND: usize = 30;

fn coordinator_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-coordinator"))
}

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/example-etcd-cluster.yaml")
}

fn ok<T>(c: &LocalCoordinator, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}\n{}", c.logs(40)),
    }
}

async fn probe(c: &LocalCoordinator) -> LoadProbe {
    let probe = ok(c, LoadProbe::start(Arc::new(c.live_endpoints())).await);
    ok(
        c,
        probe
            .wait_acked(WRITES_AROUND, Duration::from_secs(30))
            .await,
    );
    probe
}

async fn finish(c: &LocalCoordinator, what: &str, probe: LoadProbe) -> Availability {
    ok(
        c,
        probe
            .wait_acked(WRITES_AROUND, Duration::from_secs(30))
            .await,
    );
    let seen = probe.stop().await;
    eprintln!("{what}: {}", seen.summary());
    seen
}

fn assert_budget(what: &str, seen: &Availability) {
    // What was checked must not be nothing: events delivered and renewals answered.
    assert!(
        seen.watch_events >= 2 * WRITES_AROUND && seen.lease_renewals >= 1,
        "{what}: the probe saw too little to judge: {}",
        seen.summary()
    );
    let breaches = seen.lease_and_watch_breaches();
    assert!(
        breaches.is_empty(),
        "{what} broke its budget: {}\n{}",
        breaches.join("; "),
        seen.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_and_a_watcher_live_through_a_leader_replacement_and_an_upgrade() {
    let _serial = serial_guard();
    let c = LocalCoordinator::start(
        CoordinatorOptions::new(coordinator_bin(), example()).version(OLD_VERSION),
    )
    .await
    .expect("start the local coordinator");
    let status = ok(&c, c.wait_running(3, OLD_VERSION, FORM).await);

    // The leader deleted with its data: it hands leadership over, is removed, and a new
    // ordinal joins as a learner and is promoted.
    let leader = status
        .members
        .iter()
        .find(|m| m.leader)
        .map(|m| m.name.clone())
        .expect("a leader in the status");
    let load = probe(&c).await;
    ok(&c, c.delete_member(&leader));
    ok(
        &c,
        c.wait_until("the leader replaced", CHANGE, |s| {
            is_running(s, 3, OLD_VERSION) && s.members.iter().all(|m| m.name != leader)
        })
        .await,
    );
    let replaced = finish(&c, "leader replaced", load).await;

    // A rolling upgrade: followers first, the leader last after leadership moves away.
    let load = probe(&c).await;
    c.set_spec(3, VERSION).expect("write the manifest");
    ok(&c, c.wait_running(3, VERSION, 3 * CHANGE).await);
    let upgraded = finish(&c, "upgrade", load).await;

    assert_budget("the leader's replacement", &replaced);
    assert_budget("the rolling upgrade", &upgraded);

    // The positive control: the same probe, its lease kept alive only every 7 s (past its
    // 5 s TTL), must see the lease expire and say so.
    let control = ok(
        &c,
        LoadProbe::start_keeping_alive_every(
            Arc::new(c.live_endpoints()),
            Duration::from_secs(LEASE_TTL_SECS as u64 + 2),
        )
        .await,
    );
    ok(
        &c,
        testkit::wait_for(
            "the control's lease to lapse (a keep-alive sent past its TTL)",
            Duration::from_secs(30),
            || async { control.lease_lapsed().await.then_some(()) },
        )
        .await,
    );
    let control = finish(&c, "control", control).await;
    assert!(
        control.lease_expired,
        "a lease kept alive past its TTL was not reported expired: {}",
        control.summary()
    );
}
