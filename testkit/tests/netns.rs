//! The network-fault harness leaves nothing behind: every rule and qdisc it applied is
//! gone when its `Faults` drops (a panicking scenario included), and every namespace of a
//! run (with its veth pairs and addresses) when its `Hub` drops, even after the run inside
//! panicked. Needs root, iproute2 and iptables (scripts/setup.sh); starts no etcd.

use std::process::Command;

use testkit::netns::{self, Faults, GATEWAY, Hub};

const INNER: &str = "a_run_that_panics_inside_its_hub";

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A member namespace as the coordinator makes one: eth0 on the hub's bridge.
fn member(hub: &Hub, name: &str, address: &str) -> String {
    let ns = hub.member_namespace(name);
    let link = format!("eo-{name}");
    ip(&["netns", "add", &ns]);
    ip(&[
        "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ]);
    ip(&["link", "set", &link, "master", netns::BRIDGE, "up"]);
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{address}/16"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", &ns, "link", "set", "eth0", "up"]);
    ns
}

fn links_of_hub(hub: &Hub) -> String {
    ip(&["-n", &hub.name(), "-o", "link", "show"])
}

/// Runs inside a hub only (the outer test starts it there): makes two members, faults
/// them, checks a panicking scenario heals its faults, then panics with the namespaces
/// still there, for the outer test to see them removed.
#[test]
fn a_run_that_panics_inside_its_hub() {
    let Some(hub) = Hub::current() else {
        return; // Only meaningful inside the hub the outer test makes.
    };
    let a = member(&hub, "a", "10.77.0.2");
    let b = member(&hub, "b", "10.77.0.3");
    assert!(links_of_hub(&hub).contains("eo-a"));

    let scenario = std::panic::catch_unwind(|| {
        let mut faults = Faults::new();
        faults.cut(&a, "10.77.0.3").unwrap();
        faults.drop_outgoing(&b, "10.77.0.2").unwrap();
        faults.cut_port(&a, &GATEWAY.to_string(), 7401).unwrap();
        faults.cut_to_port(&b, &GATEWAY.to_string(), 7443).unwrap();
        faults.lossy(&a, 0.3).unwrap();
        faults.slow(&b, 1024, 200).unwrap();
        // Applied where the harness says.
        assert_eq!(netns::rules(&a).unwrap().len(), 6, "{:?}", netns::rules(&a));
        assert_eq!(netns::rules(&b).unwrap().len(), 3, "{:?}", netns::rules(&b));
        assert!(netns::qdisc(&b).unwrap().contains("tbf"));
        panic!("the scenario fails with its faults applied");
    });
    assert!(scenario.is_err());
    for ns in [&a, &b] {
        assert!(
            netns::rules(ns).unwrap().is_empty(),
            "{ns}: {:?}",
            netns::rules(ns)
        );
        let qdisc = netns::qdisc(ns).unwrap();
        assert!(!qdisc.contains("tbf"), "{ns}: {qdisc}");
    }
    if let Ok(marker) = std::env::var("NETNS_TEST_MARKER") {
        std::fs::write(marker, "healed").unwrap();
    }
    panic!("the run ends in a panic, its namespaces still there");
}

#[test]
fn every_namespace_rule_and_qdisc_goes_even_when_the_run_panics() {
    if Hub::current().is_some() {
        return;
    }
    netns::available().expect("this test needs root, iproute2 and iptables (scripts/setup.sh)");
    let hub = Hub::create().unwrap();
    let prefix = hub.prefix().to_string();
    assert_eq!(hub.namespaces(), vec![hub.name()]);
    let marker = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", &hub.name()])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", INNER, "--nocapture", "--test-threads=1"])
        .env(netns::HUB_ENV, hub.prefix())
        .env("NETNS_TEST_MARKER", marker.path())
        .output()
        .unwrap();
    // Its panics are the point; shown only when it did not end as it should.
    let inner = format!(
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        !status.status.success(),
        "the inner run was to panic:\n{inner}"
    );
    assert_eq!(
        std::fs::read_to_string(marker.path()).unwrap(),
        "healed",
        "the inner run did not get to heal its faults:\n{inner}"
    );
    // Left behind by the panic: the members' namespaces, for the hub to remove.
    let mut left = hub.namespaces();
    left.sort();
    assert_eq!(
        left,
        vec![format!("{prefix}-a"), format!("{prefix}-b"), hub.name()]
    );
    drop(hub);
    let after: Vec<String> = netns::namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(after.is_empty(), "left behind: {after:?}");
    // The host's links are untouched: the veth pairs lived in the run's namespaces.
    let host_links = ip(&["-o", "link", "show"]);
    assert!(!host_links.contains("eo-a"), "{host_links}");
    assert!(!host_links.contains(netns::BRIDGE), "{host_links}");
}

#[test]
fn a_hub_whose_process_is_gone_is_removed_by_the_next_one() {
    if Hub::current().is_some() {
        return;
    }
    netns::available().expect("this test needs root, iproute2 and iptables (scripts/setup.sh)");
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let stale = format!("etcdop{pid}x0-hub");
    ip(&["netns", "add", &stale]);
    let hub = Hub::create().unwrap();
    let still = netns::namespaces().contains(&stale);
    if still {
        ip(&["netns", "delete", &stale]);
    }
    assert!(!still, "{stale} was left");
    // Ours stays while its process lives.
    assert!(netns::namespaces().contains(&hub.name()));
}
