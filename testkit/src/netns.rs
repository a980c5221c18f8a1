//! Real network faults between members, in network namespaces the harness makes itself.
//!
//! A run gets a *hub*: a namespace `<prefix>-hub` with its loopback up and a bridge
//! ([`BRIDGE`], [`GATEWAY`]/16). The harness runs inside it (the test re-executes itself
//! there, [`Hub::run_inside`]), so the coordinator, the traffic and the checks share it,
//! and `etcd-coordinator local --member-netns` puts every member in a namespace of its own
//! (`<prefix>-<member>`) joined to the bridge by a veth pair, as Pods on a node are. Nothing
//! outside the run's namespaces is touched: the host's interfaces, addresses, routes, rules
//! and qdiscs stay as they are.
//!
//! [`Faults`] cuts, drops or slows one member's links from inside its own namespace
//! (iptables rules, a tbf qdisc) and heals them; it heals on drop, so a failing or
//! panicking scenario leaves nothing behind. [`Hub`] removes every namespace of its run
//! (and with them every veth pair, address, rule and qdisc in them) on drop, and the
//! process that made it does so after the run inside has ended however it ended: killed,
//! panicked or passed. Hubs left by a process that is gone (killed -9) are removed by the
//! next [`Hub::create`].
//!
//! The kernel here has no `sch_netem`, so a delay of its own cannot be added; a lossy link
//! is iptables' `statistic` match dropping a share of packets, and a slow one a tbf rate
//! limit (which queues, so it also delays).

use std::{
    net::Ipv4Addr,
    process::{Command, ExitStatus},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, bail};

/// The bridge of a hub, in the hub's namespace.
pub const BRIDGE: &str = "etcdop0";
/// The bridge's address: the coordinator's, as members see it.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The environment variable that tells a re-executed test which hub it runs in (its
/// prefix).
pub const HUB_ENV: &str = "ETCDOP_TEST_HUB";
/// Every run's prefix starts with this, then the pid of the process that made it.
const PREFIX: &str = "etcdop";

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} {} (is it installed?)", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every network namespace on the machine, by name.
pub fn namespaces() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn delete_namespace(name: &str) {
    if let Err(e) = run("ip", &["netns", "delete", name]) {
        eprintln!("removing network namespace {name}: {e:#}");
    }
}

/// A run's namespaces, all named `<prefix>-...`.
#[derive(Debug)]
pub struct Hub {
    prefix: String,
    /// Made by this value (removed on drop), or only entered (a re-executed run).
    owned: bool,
}

impl Hub {
    /// Makes a hub for a new run, after removing the hubs of runs whose process is gone.
    pub fn create() -> anyhow::Result<Self> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        sweep_abandoned();
        let prefix = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let hub = Self {
            prefix,
            owned: true,
        };
        let name = hub.name();
        let gateway = format!("{GATEWAY}/16");
        let steps: [&[&str]; 5] = [
            &["netns", "add", &name],
            &["-n", &name, "link", "set", "lo", "up"],
            &["-n", &name, "link", "add", BRIDGE, "type", "bridge"],
            &["-n", &name, "addr", "add", &gateway, "dev", BRIDGE],
            &["-n", &name, "link", "set", BRIDGE, "up"],
        ];
        for step in steps {
            run("ip", step).context("making the hub namespace (as root, with iproute2)")?;
        }
        Ok(hub)
    }

    /// The hub this process was started in by [`Hub::run_inside`], if any. It is not
    /// removed when this value drops: the process that made it does that.
    pub fn current() -> Option<Self> {
        std::env::var(HUB_ENV).ok().map(|prefix| Self {
            prefix,
            owned: false,
        })
    }

    /// The run's prefix: every namespace of the run is named `<prefix>-...`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hub namespace's name.
    pub fn name(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// `--member-netns` of `etcd-coordinator local` for this hub.
    pub fn member_netns_flag(&self) -> String {
        format!("{}:{BRIDGE}:{GATEWAY}/16", self.prefix)
    }

    /// The namespace of member `member`, as the coordinator names it.
    pub fn member_namespace(&self, member: &str) -> String {
        format!("{}-{member}", self.prefix)
    }

    /// Every namespace of this run that exists now, the hub's included.
    pub fn namespaces(&self) -> Vec<String> {
        let mine = format!("{}-", self.prefix);
        namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&mine))
            .collect()
    }

    /// Runs `program` with `args` inside the hub, with [`HUB_ENV`] set, and waits for it.
    pub fn run_inside(
        &self,
        program: &std::path::Path,
        args: &[&str],
    ) -> anyhow::Result<ExitStatus> {
        Command::new("ip")
            .args(["netns", "exec", &self.name()])
            .arg(program)
            .args(args)
            .env(HUB_ENV, &self.prefix)
            .status()
            .with_context(|| format!("running {} inside {}", program.display(), self.name()))
    }

    /// Removes every namespace of the run (the members' first, then the hub).
    pub fn remove(&self) {
        let hub = self.name();
        let mut names = self.namespaces();
        names.sort_by_key(|n| *n == hub);
        for name in names {
            delete_namespace(&name);
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if self.owned {
            self.remove();
        }
    }
}

/// Removes the namespaces of runs whose process is gone.
fn sweep_abandoned() {
    for name in namespaces() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !crate::local_cluster::pid_alive(pid) {
            delete_namespace(&name);
        }
    }
}

/// The comment every rule of the harness carries.
const RULE_COMMENT: &str = "etcdop-fault";

/// Faults on members' links, each applied inside one member's namespace; all healed by
/// [`Faults::heal`] or on drop.
#[derive(Debug, Default)]
pub struct Faults {
    /// Namespaces with rules or a qdisc of ours.
    touched: Vec<String>,
}

impl Faults {
    /// No fault yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn iptables(&mut self, namespace: &str, rule: &[&str]) -> anyhow::Result<()> {
        if !self.touched.iter().any(|t| t == namespace) {
            self.touched.push(namespace.to_string());
        }
        let mut args = vec!["netns", "exec", namespace, "iptables", "-w", "-A"];
        args.extend_from_slice(rule);
        args.extend_from_slice(&["-m", "comment", "--comment", RULE_COMMENT, "-j", "DROP"]);
        run("ip", &args).map(|_| ())
    }

    /// Nothing passes between the member in `namespace` and `peer`, either way.
    pub fn cut(&mut self, namespace: &str, peer: &str) -> anyhow::Result<()> {
        self.iptables(namespace, &["OUTPUT", "-d", peer])?;
        self.iptables(namespace, &["INPUT", "-s", peer])
    }

    /// Packets from the member in `namespace` to `peer` are dropped; the other way passes.
    pub fn drop_outgoing(&mut self, namespace: &str, peer: &str) -> anyhow::Result<()> {
        self.iptables(namespace, &["OUTPUT", "-d", peer])
    }

    /// The connections between `peer` and TCP port `port` of the member in `namespace`
    /// are cut, either way; its other traffic passes.
    pub fn cut_port(&mut self, namespace: &str, peer: &str, port: u16) -> anyhow::Result<()> {
        let port = port.to_string();
        self.iptables(
            namespace,
            &["INPUT", "-s", peer, "-p", "tcp", "--dport", &port],
        )?;
        self.iptables(
            namespace,
            &["OUTPUT", "-d", peer, "-p", "tcp", "--sport", &port],
        )
    }

    /// The member in `namespace` reaching `peer`'s TCP port `port` is cut, either way.
    pub fn cut_to_port(&mut self, namespace: &str, peer: &str, port: u16) -> anyhow::Result<()> {
        let port = port.to_string();
        self.iptables(
            namespace,
            &["OUTPUT", "-d", peer, "-p", "tcp", "--dport", &port],
        )?;
        self.iptables(
            namespace,
            &["INPUT", "-s", peer, "-p", "tcp", "--sport", &port],
        )
    }

    /// A share `loss` (0 to 1) of the packets in and out of the member in `namespace` is
    /// dropped at random.
    pub fn lossy(&mut self, namespace: &str, loss: f64) -> anyhow::Result<()> {
        let p = format!("{:.3}", loss.clamp(0.0, 1.0));
        for chain in ["INPUT", "OUTPUT"] {
            self.iptables(
                namespace,
                &[
                    chain,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                ],
            )?;
        }
        Ok(())
    }

    /// The member in `namespace` sends at most `kbit` kbit/s, queueing up to `latency_ms`
    /// (packets beyond are dropped).
    pub fn slow(&mut self, namespace: &str, kbit: u32, latency_ms: u32) -> anyhow::Result<()> {
        if !self.touched.iter().any(|t| t == namespace) {
            self.touched.push(namespace.to_string());
        }
        run(
            "ip",
            &[
                "netns",
                "exec",
                namespace,
                "tc",
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                &format!("{kbit}kbit"),
                "burst",
                "16kb",
                "latency",
                &format!("{latency_ms}ms"),
            ],
        )
        .map(|_| ())
    }

    /// Packets the harness's rules have dropped so far, over every namespace it touched:
    /// the proof that a fault bit.
    pub fn dropped(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for namespace in &self.touched {
            let listed = run(
                "ip",
                &[
                    "netns", "exec", namespace, "iptables", "-w", "-L", "-v", "-x", "-n",
                ],
            )?;
            total += listed
                .lines()
                .filter(|l| l.contains(RULE_COMMENT))
                .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Whether any fault is applied.
    pub fn any(&self) -> bool {
        !self.touched.is_empty()
    }

    /// Removes every rule and qdisc this value applied (in namespaces that still exist).
    pub fn heal(&mut self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for namespace in std::mem::take(&mut self.touched) {
            if !namespaces().contains(&namespace) {
                continue;
            }
            for (rule, _) in rules(&namespace)? {
                let mut args = vec!["netns", "exec", &namespace, "iptables", "-w", "-D"];
                args.extend(rule.iter().map(String::as_str));
                if let Err(e) = run("ip", &args) {
                    failed.push(format!("{e:#}"));
                }
            }
            if qdisc(&namespace)?.contains("tbf")
                && let Err(e) = run(
                    "ip",
                    &[
                        "netns", "exec", &namespace, "tc", "qdisc", "del", "dev", "eth0", "root",
                    ],
                )
            {
                failed.push(format!("{e:#}"));
            }
        }
        if !failed.is_empty() {
            bail!("healing: {}", failed.join("; "));
        }
        Ok(())
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        if let Err(e) = self.heal() {
            eprintln!("{e:#}");
        }
    }
}

/// The harness's rules in `namespace` (as `iptables -S` prints them, without `-A`), with
/// the chain.
pub fn rules(namespace: &str) -> anyhow::Result<Vec<(Vec<String>, String)>> {
    let listed = run("ip", &["netns", "exec", namespace, "iptables", "-w", "-S"])?;
    Ok(listed
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains(RULE_COMMENT))
        .map(|l| {
            let words: Vec<String> = l
                .split_whitespace()
                .skip(1)
                .map(|w| w.trim_matches('"').to_string())
                .collect();
            let chain = words.first().cloned().unwrap_or_default();
            (words, chain)
        })
        .collect())
}

/// `tc qdisc show dev eth0` in `namespace`.
pub fn qdisc(namespace: &str) -> anyhow::Result<String> {
    run(
        "ip",
        &[
            "netns", "exec", namespace, "tc", "qdisc", "show", "dev", "eth0",
        ],
    )
}

/// Whether this process may make namespaces (root, with iproute2 and iptables).
pub fn available() -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        return Err("network faults need root".into());
    }
    for tool in ["ip", "iptables", "tc"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(format!(
                "network faults need {tool} (scripts/setup.sh installs iproute2 and iptables)"
            ));
        }
    }
    Ok(())
}
