//! The member lifecycle against real etcd processes on 127.0.0.1, with the stand-in
//! coordinator from `testkit`. Each test takes the machine-wide cluster lock.

use std::{collections::BTreeMap, path::Path, time::Duration};

use etcd_client::{Client, GetOptions};
use etcd_operator::proto::{LeaveRequest, MemberPhase, sidecar_client::SidecarClient};
use testkit::{
    SidecarProc, SidecarSpec,
    grant_server::{GrantEvent, TestCoordinator},
    serial_guard, wait_for,
    watcher::MembershipWatcher,
};

const CLUSTER: &str = "life";
const FORM_DEADLINE: Duration = Duration::from_secs(90);

fn sidecar_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-sidecar"))
}

fn name(i: u32) -> String {
    etcd_operator::naming::member_name(CLUSTER, i)
}

struct Fixture {
    coordinator: TestCoordinator,
    dir: tempfile::TempDir,
    members: BTreeMap<String, SidecarProc>,
}

impl Fixture {
    async fn new() -> Self {
        Self {
            coordinator: TestCoordinator::start(&name(0)).await.unwrap(),
            dir: tempfile::tempdir().unwrap(),
            members: BTreeMap::new(),
        }
    }

    fn spec(&self, i: u32) -> SidecarSpec {
        SidecarSpec::new(
            sidecar_bin(),
            CLUSTER,
            &name(i),
            self.dir.path(),
            &self.coordinator.url,
        )
    }

    fn start(&mut self, spec: SidecarSpec) {
        self.coordinator.issue(&spec).unwrap();
        let proc = SidecarProc::start(spec).unwrap();
        self.members.insert(proc.spec.name.clone(), proc);
    }

    fn endpoints(&self) -> Vec<String> {
        self.members.values().map(|m| m.spec.client_url()).collect()
    }

    fn logs(&self) -> String {
        self.members
            .values()
            .map(|m| format!("--- {} ---\n{}", m.spec.name, m.log_tail(30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until etcd lists `n` voters, no learner, and every sidecar reports its member
    /// healthy and running.
    async fn wait_voters(&self, n: usize) -> Vec<etcd_client::Member> {
        self.wait_voters_without(n, 0).await
    }

    /// As `wait_voters`, and member id `gone` is not in the list.
    async fn wait_voters_without(&self, n: usize, gone: u64) -> Vec<etcd_client::Member> {
        let endpoints = self.endpoints();
        let recorder = self.coordinator.recorder.clone();
        let names: Vec<String> = self.members.keys().cloned().collect();
        let result = wait_for(&format!("{n} healthy voters"), FORM_DEADLINE, || {
            let endpoints = endpoints.clone();
            let recorder = recorder.clone();
            let names = names.clone();
            async move {
                let mut c = Client::connect(&endpoints, None).await.ok()?;
                let list = c.member_list().await.ok()?;
                let members = list.members().to_vec();
                let voters = members.iter().filter(|m| !m.is_learner()).count();
                let all_healthy = names.iter().all(|n| {
                    recorder.report(n).is_some_and(|r| {
                        r.healthy && !r.learner && r.phase == MemberPhase::Running as i32
                    })
                });
                let gone_ok = members.iter().all(|m| m.id() != gone);
                (members.len() == n && voters == n && all_healthy && gone_ok).then_some(members)
            }
        })
        .await;
        match result {
            Ok(m) => m,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    async fn client(&self) -> Client {
        Client::connect(self.endpoints(), None).await.unwrap()
    }
}

/// Forms an `n`-member cluster, all sidecars started at once.
async fn form(n: u32) -> (Fixture, MembershipWatcher) {
    let mut f = Fixture::new().await;
    for i in 0..n {
        let spec = f.spec(i);
        f.start(spec);
    }
    let endpoints = f.endpoints();
    let watcher = MembershipWatcher::start(move || endpoints.clone());
    f.wait_voters(n as usize).await;
    (f, watcher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_form_a_cluster_one_learner_at_a_time() {
    let _serial = serial_guard();
    let (f, watcher) = form(3).await;
    let history = watcher.history();
    assert!(history.samples > 0, "the watcher read no member list");
    assert!(
        history.max_learners <= 1,
        "more than one learner at once: {history:?}"
    );
    assert_eq!(
        f.coordinator.recorder.max_outstanding(),
        1,
        "{:?}",
        f.coordinator.recorder.events()
    );

    let events = f.coordinator.recorder.events();
    let granted: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e {
            GrantEvent::Granted { member, kind, .. } => Some((member.clone(), kind.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(granted.len(), 3, "{events:?}");
    assert_eq!(
        granted[0],
        (name(0), "bootstrap".to_string()),
        "the seed bootstraps first: {events:?}"
    );
    assert!(granted[1..].iter().all(|(_, k)| k == "add"), "{events:?}");
    let released_ok = events
        .iter()
        .filter(|e| matches!(e, GrantEvent::Released { succeeded: true, member_id, .. } if *member_id != 0))
        .count();
    assert_eq!(released_ok, 3, "{events:?}");

    let mut c = f.client().await;
    c.put("foo", "bar", None).await.unwrap();
    let got = c.get("foo", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "bar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_etcd_restarts_on_its_data_with_the_same_member_id() {
    let _serial = serial_guard();
    let (f, _watcher) = form(3).await;
    let mut c = f.client().await;
    c.put("before-kill", "kept", None).await.unwrap();
    let victim = name(1);
    let report = f.coordinator.recorder.report(&victim).unwrap();
    let (old_pid, old_id) = (report.etcd_pid, report.member_id);
    assert!(old_pid != 0 && old_id != 0, "{report:?}");
    let events_before = f.coordinator.recorder.events().len();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let recorder = f.coordinator.recorder.clone();
    let v = victim.clone();
    let report = wait_for(
        "the killed etcd to come back healthy",
        Duration::from_secs(60),
        || {
            let r = recorder.report(&v);
            async move { r.filter(|r| r.etcd_pid != 0 && r.etcd_pid != old_pid && r.healthy) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    assert_eq!(report.member_id, old_id, "the member id must not change");
    assert!(report.etcd_restarts >= 1, "{report:?}");
    assert_eq!(
        f.coordinator.recorder.events().len(),
        events_before,
        "no membership change may happen"
    );
    let members = f.wait_voters(3).await;
    assert!(members.iter().any(|m| m.id() == old_id));

    // The value written before the kill is served by the restarted member itself.
    let url = f.members[&victim].spec.client_url();
    let mut own = Client::connect([url], None).await.unwrap();
    let got = own
        .get("before-kill", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_data_rejoins_as_a_new_member_without_losing_quorum() {
    let _serial = serial_guard();
    let (mut f, watcher) = form(3).await;
    let mut c = f.client().await;
    c.put("before-wipe", "kept", None).await.unwrap();

    // Pick a follower so that the writer below never waits on an election.
    let victim = (0..3)
        .map(name)
        .find(|n| f.coordinator.recorder.report(n).is_some_and(|r| !r.leader))
        .unwrap();
    let old_id = f.coordinator.recorder.report(&victim).unwrap().member_id;
    let survivors: Vec<String> = f
        .members
        .values()
        .filter(|m| m.spec.name != victim)
        .map(|m| m.spec.client_url())
        .collect();

    // A writer on the surviving members for the whole replacement.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut c = Client::connect(&survivors, None).await.unwrap();
        let (mut ok, mut failed) = (Vec::new(), 0u32);
        let mut i = 0u32;
        while !*stop_rx.borrow() {
            let key = format!("w/{i:05}");
            match tokio::time::timeout(Duration::from_secs(3), c.put(key.clone(), "v", None)).await
            {
                Ok(Ok(_)) => ok.push(key),
                _ => failed += 1,
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed)
    });

    let mut proc = f.members.remove(&victim).unwrap();
    proc.kill();
    let spec = proc.spec.clone();
    drop(proc);
    let events_before_wipe = f.coordinator.recorder.events().len();
    std::fs::remove_dir_all(&spec.member_dir).unwrap();
    f.start(spec);

    let members = f.wait_voters_without(3, old_id).await;
    stop_tx.send(true).unwrap();
    let (acked, failed) = writer.await.unwrap();
    let new_id = f.coordinator.recorder.report(&victim).unwrap().member_id;
    assert_ne!(
        new_id, old_id,
        "a member with no data must join under a new id"
    );
    assert!(
        members.iter().all(|m| m.id() != old_id),
        "the stale entry must be gone"
    );
    assert!(watcher.history().max_learners <= 1);
    assert_eq!(
        failed, 0,
        "writes failed while the member was replaced: quorum was not kept"
    );
    assert!(!acked.is_empty());

    // Earlier data, and every acknowledged write, is on the new member.
    let url = f.members[&victim].spec.client_url();
    let mut own = Client::connect([url], None).await.unwrap();
    let got = own
        .get("before-wipe", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "kept");
    let all = own
        .get(
            "w/",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await
        .unwrap();
    let present: std::collections::HashSet<&str> =
        all.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    for k in &acked {
        assert!(
            present.contains(k.as_str()),
            "acknowledged write {k} missing on the new member"
        );
    }
    // One rejoin is one membership change: exactly one grant, a replace (the stale entry
    // is removed and the learner added under it), never a second add afterwards.
    let kinds: Vec<String> = f
        .coordinator
        .recorder
        .events()
        .into_iter()
        .skip(events_before_wipe)
        .filter_map(|e| match e {
            GrantEvent::Granted { member, kind, .. } if member == victim => Some(kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        ["replace"],
        "grants taken by the rejoining member\n{}",
        f.members[&victim].log_tail(200)
    );
    assert_eq!(f.coordinator.recorder.max_outstanding(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_whose_answer_was_lost_is_not_repeated() {
    let _serial = serial_guard();
    let (mut f, _watcher) = form(2).await;
    let spec = f.spec(2);
    // The add succeeded but its caller never saw the answer: the learner is in the list.
    // (etcd refuses a MemberAdd for a few seconds after a promotion: retry until accepted.)
    let endpoints = f.endpoints();
    let peer_url = spec.peer_url();
    let pre_added_id = wait_for(
        "etcd to accept the learner",
        Duration::from_secs(30),
        || {
            let endpoints = endpoints.clone();
            let peer_url = peer_url.clone();
            async move {
                let mut c = Client::connect(&endpoints, None).await.ok()?;
                let opts = etcd_client::MemberAddOptions::new().with_is_learner();
                let added = c.member_add([peer_url], Some(opts)).await.ok()?;
                added.member().map(|m| m.id())
            }
        },
    )
    .await
    .unwrap();
    f.start(spec);
    let members = f.wait_voters(3).await;
    assert_eq!(members.len(), 3, "a second member was added");
    let report = f.coordinator.recorder.report(&name(2)).unwrap();
    assert_eq!(
        report.member_id, pre_added_id,
        "the pre-added learner must be the one that joins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_leaves_after_moving_leadership() {
    let _serial = serial_guard();
    let (f, _watcher) = form(3).await;
    let leader = f
        .coordinator
        .recorder
        .reports()
        .into_values()
        .find(|r| r.leader)
        .expect("a leader reported");
    // Leave answers only the coordinator, over mutual TLS.
    let creds = f.dir.path().join("coordinator.tls");
    f.coordinator
        .issue_client(etcd_operator::identity::COORDINATOR_URI, &creds)
        .unwrap();
    let tls = etcd_sidecar::tls::ClientTls::new(
        std::sync::Arc::new(etcd_sidecar::tls::TlsFiles {
            cert: creds.join("tls.crt"),
            key: creds.join("tls.key"),
            ca: creds.join("ca.crt"),
        }),
        etcd_operator::identity::PeerIdentity::member(
            &etcd_operator::ClusterKey::local(CLUSTER),
            &leader.member_name,
        ),
    );
    let channel =
        etcd_sidecar::tls::channel(&leader.sidecar_url, tls, Duration::from_secs(3), None).unwrap();
    let mut sidecar = SidecarClient::new(channel);
    let resp = sidecar
        .leave(LeaveRequest {
            reason: "test".into(),
            // The stand-in coordinator's term.
            coordinator_epoch: 1,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()))
        .into_inner();
    assert!(
        resp.moved_leadership,
        "the leader must move leadership before leaving"
    );
    assert_eq!(resp.removed_member_id, leader.member_id);

    let others: Vec<String> = f
        .members
        .values()
        .filter(|m| m.spec.name != leader.member_name)
        .map(|m| m.spec.client_url())
        .collect();
    let mut c = Client::connect(&others, None).await.unwrap();
    let list = c.member_list().await.unwrap();
    assert_eq!(list.members().len(), 2);
    assert!(list.members().iter().all(|m| m.id() != leader.member_id));
    let status = c.status().await.unwrap();
    assert_ne!(status.leader(), leader.member_id);
    assert_ne!(status.leader(), 0);

    let dir = &f.members[&leader.member_name].spec.member_dir;
    assert!(
        !dir.join("etcd").exists(),
        "the removed member's data must be wiped"
    );
    assert!(dir.join("removed").exists());
    c.put("after-leave", "ok", None).await.unwrap();
    let removes = f
        .coordinator
        .recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, GrantEvent::Granted { kind, .. } if kind == "remove"))
        .count();
    assert_eq!(removes, 1);
}
