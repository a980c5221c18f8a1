//! The fuzz targets of `etcd_operator::fuzzing`, run for a bounded time in the suite over
//! seeded mutations of valid inputs, after replaying the inputs checked in under
//! `fuzz/regressions/<target>/` (edge cases, and every input that ever crashed a target). Longer runs: `cargo fuzz run <target>` in `fuzz/`
//! (see fuzz/README.md).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use etcd_operator::{fuzzing, proto};
use prost::Message;

/// How long each target runs here.
const BUDGET: Duration = Duration::from_secs(2);

/// splitmix64: a seeded stream, so a failing run replays with the same seed.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `input`: flip, insert, delete, duplicate a range, or splice another seed.
fn mutate(input: &[u8], seeds: &[Vec<u8>], s: &mut Stream) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=s.below(4) {
        match s.below(6) {
            0 if !out.is_empty() => {
                let i = s.below(out.len());
                out[i] ^= 1 << s.below(8);
            }
            1 => {
                let i = s.below(out.len() + 1);
                let interesting = b":-[]{}&*!|>'\"\n #0123456789.";
                out.insert(i, interesting[s.below(interesting.len())]);
            }
            2 if !out.is_empty() => {
                let i = s.below(out.len());
                let n = s.below(16).min(out.len() - i);
                out.drain(i..i + n);
            }
            3 if !out.is_empty() => {
                let i = s.below(out.len());
                let n = s.below(32).min(out.len() - i);
                let chunk = out[i..i + n].to_vec();
                let at = s.below(out.len() + 1);
                out.splice(at..at, chunk);
            }
            4 => {
                let other = &seeds[s.below(seeds.len())];
                let cut = s.below(out.len() + 1);
                let from = s.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let i = s.below(out.len() + 1);
                out.insert(i, s.next() as u8);
            }
        }
    }
    out.truncate(64 * 1024);
    out
}

/// Replays every input in `fuzz/regressions/<name>/` (edge cases checked in, and every input
/// that ever crashed the target); returns how many. The folder must hold at least one.
fn replay_regressions(name: &str, target: fn(&[u8])) -> usize {
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(name);
    let entries = std::fs::read_dir(&regressions)
        .unwrap_or_else(|e| panic!("{}: {e}", regressions.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        target(&std::fs::read(&path).unwrap());
        replayed += 1;
    }
    assert!(
        replayed > 0,
        "no regression input in {}",
        regressions.display()
    );
    replayed
}

fn run(name: &str, target: fn(&[u8]), seeds: Vec<Vec<u8>>, seed: u64) -> usize {
    replay_regressions(name, target);
    for s in &seeds {
        target(s);
    }
    let mut stream = Stream(seed);
    let started = Instant::now();
    let mut runs = 0;
    let mut current = seeds[0].clone();
    while started.elapsed() < BUDGET {
        let input = mutate(&current, &seeds, &mut stream);
        target(&input);
        runs += 1;
        // Walk away from the seeds now and then, back to one now and then.
        current = if stream.below(4) == 0 {
            seeds[stream.below(seeds.len())].clone()
        } else {
            input
        };
    }
    runs
}

fn manifest_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/example-etcd-cluster.yaml")).unwrap(),
        b"apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a, generation: 3}\nspec: {size: 5, version: v3.5.34, allowDowngrade: true}\n---\nkind: Service\n".to_vec(),
        br#"{"apiVersion":"etcd.operator.rs/v1alpha1","kind":"EtcdCluster","metadata":{"name":"a"},"spec":{"size":3,"version":"3.6.15"},"status":{"phase":"Running","members":[{"name":"a-0000"}]}}"#.to_vec(),
        b"a: &x [*x, *x]\nb: *x\n".to_vec(),
        b"apiVersion: etcd.operator.rs/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3, version: 3.6.15, tls: {enabled: true}}\n".to_vec(),
    ];
    seeds.retain(|s| !s.is_empty());
    seeds
}

fn proto_seeds() -> Vec<Vec<u8>> {
    let cluster = Some(proto::ClusterRef {
        namespace: "ns".into(),
        name: "etcd-cluster".into(),
    });
    vec![
        proto::RegisterRequest {
            cluster: cluster.clone(),
            member_name: "etcd-cluster-0001".into(),
            peer_url: "http://127.0.0.1:2380".into(),
            etcd_version: "3.6.15".into(),
            member_id: 42,
            ..Default::default()
        }
        .encode_to_vec(),
        proto::HealthReport {
            cluster: cluster.clone(),
            member_name: "etcd-cluster-0001".into(),
            alarms: vec![1, 2, 7],
            phase: 4,
            healthy: true,
            ..Default::default()
        }
        .encode_to_vec(),
        proto::GrantRequest {
            cluster,
            member_name: "etcd-cluster-0001".into(),
            kind: 2,
            peer_url: "http://127.0.0.1:2380".into(),
        }
        .encode_to_vec(),
        proto::HandoffRequest {
            target_version: "3.7.2".into(),
            restart_timeout_ms: 1,
            coordinator_epoch: 1,
            grant_id: "etcd-cluster-1-1".into(),
            restart_in_place: false,
        }
        .encode_to_vec(),
    ]
}

fn identity_seeds() -> Vec<Vec<u8>> {
    use etcd_operator::{
        ClusterKey,
        identity::PeerIdentity,
        pki::{Authority, LeafRequest, Usage, first_der},
    };
    let ca = Authority::generate("fuzz CA", 1_750_000_000).unwrap();
    let member = PeerIdentity::member(&ClusterKey::new("ns", "etcd-cluster"), "etcd-cluster-0001");
    let leaf = ca
        .issue(
            &LeafRequest {
                common_name: "etcd-cluster-0001".into(),
                uris: vec![member.uri()],
                hosts: vec!["127.0.0.1".into(), "a.b.svc".into()],
                usage: Usage::BOTH,
                validity: std::time::Duration::from_secs(3600),
            },
            None,
            1_750_000_000,
        )
        .unwrap();
    vec![
        first_der(&leaf.cert_pem).unwrap(),
        leaf.cert_pem.clone().into_bytes(),
        first_der(ca.cert_pem()).unwrap(),
        member.uri().into_bytes(),
        b"spiffe://etcd-operator/coordinator".to_vec(),
        b"https://[::1]:7401/x".to_vec(),
    ]
}

#[test]
fn identity_target_never_panics() {
    let runs = run("identity", fuzzing::identity, identity_seeds(), 0x5eed_0003);
    assert!(runs > 100, "only {runs} inputs in {BUDGET:?}");
}

#[test]
fn manifest_target_never_panics() {
    let runs = run("manifest", fuzzing::manifest, manifest_seeds(), 0x5eed_0001);
    assert!(runs > 100, "only {runs} inputs in {BUDGET:?}");
}

#[test]
fn proto_target_never_panics() {
    let runs = run(
        "proto_messages",
        fuzzing::proto_messages,
        proto_seeds(),
        0x5eed_0002,
    );
    assert!(runs > 1000, "only {runs} inputs in {BUDGET:?}");
}
