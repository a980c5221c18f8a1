//! Members in network namespaces of their own (local mode, as root): each member's sidecar
//! and etcd run in the namespace `<prefix>-<member>`, joined to a bridge of the
//! coordinator's namespace by a veth pair, on an address of the bridge's subnet, on etcd's
//! usual ports, as Pods are. A member's links can then be cut, slowed or made lossy alone
//! (its own iptables rules and qdiscs), which one shared loopback cannot do: every
//! connection on it comes from 127.0.0.1, whoever makes it.
//!
//! The bridge and its address are the caller's (the fault harness makes them in a
//! namespace of its own); this module makes and removes the members' namespaces, with
//! iproute2's `ip`.

use std::{net::Ipv4Addr, process::Command, str::FromStr};

use crate::runtime::RuntimeError;

/// Where members' namespaces go: `--member-netns <prefix>:<bridge>:<gateway>/<length>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberNetns {
    /// Namespace names are `<prefix>-<member>`.
    pub prefix: String,
    /// The bridge, in the coordinator's namespace, the members' veth pairs join.
    pub bridge: String,
    /// The bridge's own address: the coordinator's, as members see it.
    pub gateway: Ipv4Addr,
    /// The subnet's prefix length (8 to 30).
    pub prefix_len: u8,
}

impl FromStr for MemberNetns {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("{s:?} is not <prefix>:<bridge>:<gateway>/<length>");
        let mut parts = s.split(':');
        let (Some(prefix), Some(bridge), Some(subnet), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(usage());
        };
        let (gateway, len) = subnet.split_once('/').ok_or_else(usage)?;
        let gateway: Ipv4Addr = gateway.parse().map_err(|_| usage())?;
        let prefix_len: u8 = len.parse().map_err(|_| usage())?;
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(prefix) || !name_ok(bridge) || bridge.len() > 15 {
            return Err(format!(
                "{s:?}: the prefix and the bridge are names of letters, digits, - and _ (a bridge has at most 15)"
            ));
        }
        if !(8..=30).contains(&prefix_len) {
            return Err(format!("{s:?}: the prefix length is 8 to 30"));
        }
        if gateway.is_loopback() || gateway.is_unspecified() {
            return Err(format!("{s:?}: the gateway is an address of the bridge"));
        }
        Ok(Self {
            prefix: prefix.into(),
            bridge: bridge.into(),
            gateway,
            prefix_len,
        })
    }
}

impl MemberNetns {
    /// The namespace of member `member`.
    pub fn namespace(&self, member: &str) -> String {
        format!("{}-{member}", self.prefix)
    }

    /// The `n`th member address of the subnet (`n` from 0), skipping the gateway; `None`
    /// when the subnet has no more.
    pub fn address(&self, n: u32) -> Option<Ipv4Addr> {
        let mask = u32::MAX << (32 - u32::from(self.prefix_len));
        let base = u32::from(self.gateway) & mask;
        let hosts = !mask - 1; // without the network and broadcast addresses
        let gateway = u32::from(self.gateway) - base;
        let mut offset = n.checked_add(1)?;
        if offset >= gateway {
            offset = offset.checked_add(1)?;
        }
        (offset <= hosts).then(|| Ipv4Addr::from(base + offset))
    }

    /// The host end of `namespace`'s veth pair: at most 15 characters, one per namespace.
    fn host_link(namespace: &str) -> String {
        // FNV-1a: stable across runs and builds (the name is found again after a restart).
        let hash = namespace.bytes().fold(0x811c9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x01000193)
        });
        format!("eo{hash:08x}")
    }

    /// Whether `namespace` exists.
    pub fn exists(namespace: &str) -> bool {
        std::path::Path::new("/run/netns").join(namespace).exists()
    }

    /// Makes `namespace` with the member's address on its `eth0`, joined to the bridge, and
    /// its loopback up. Made again from scratch when a part of it is missing.
    pub fn create(&self, namespace: &str, address: Ipv4Addr) -> Result<(), RuntimeError> {
        if Self::exists(namespace) {
            let has_address = output("ip", &["-n", namespace, "-o", "-4", "addr", "show"])
                .is_ok_and(|out| out.contains(&format!("inet {address}/")));
            if has_address {
                return Ok(());
            }
            self.remove(namespace)?;
        }
        let link = Self::host_link(namespace);
        let cidr = format!("{address}/{}", self.prefix_len);
        let steps: [&[&str]; 6] = [
            &["netns", "add", namespace],
            &[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", namespace,
            ],
            &["link", "set", &link, "master", &self.bridge, "up"],
            &["-n", namespace, "addr", "add", &cidr, "dev", "eth0"],
            &["-n", namespace, "link", "set", "eth0", "up"],
            &["-n", namespace, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = output("ip", step) {
                let _ = self.remove(namespace);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes `namespace` (and with it its veth pair, rules and qdiscs); nothing when it is
    /// gone already.
    pub fn remove(&self, namespace: &str) -> Result<(), RuntimeError> {
        if Self::exists(namespace) {
            output("ip", &["netns", "delete", namespace])?;
        }
        // The host end goes with its peer; one left by an interrupted create goes here.
        let link = Self::host_link(namespace);
        if std::path::Path::new("/sys/class/net").join(&link).exists() {
            let _ = output("ip", &["link", "delete", &link]);
        }
        Ok(())
    }
}

fn output(program: &str, args: &[&str]) -> Result<String, RuntimeError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| RuntimeError::Io {
            context: format!("running {program} {}", args.join(" ")),
            source,
        })?;
    if !out.status.success() {
        return Err(RuntimeError::Other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_reads_and_bad_ones_say_why() {
        let n: MemberNetns = "run7:etcdop0:10.77.0.1/16".parse().unwrap();
        assert_eq!(
            n,
            MemberNetns {
                prefix: "run7".into(),
                bridge: "etcdop0".into(),
                gateway: Ipv4Addr::new(10, 77, 0, 1),
                prefix_len: 16,
            }
        );
        assert_eq!(n.namespace("c-0001"), "run7-c-0001");
        for (bad, says) in [
            ("run7:etcdop0", "is not"),
            ("run7:etcdop0:10.77.0.1", "is not"),
            ("run7:etcdop0:10.77.0.1/33", "8 to 30"),
            ("run7:etcdop0:10.77.0.300/16", "is not"),
            ("run/7:etcdop0:10.77.0.1/16", "letters"),
            ("run7:a-bridge-name-too-long:10.77.0.1/16", "at most 15"),
            ("run7:etcdop0:127.0.0.1/8", "gateway"),
            ("run7:etcdop0:10.77.0.1/16:x", "is not"),
        ] {
            let e = bad.parse::<MemberNetns>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn addresses_skip_the_gateway_and_end_with_the_subnet() {
        let n: MemberNetns = "p:b:10.77.0.1/16".parse().unwrap();
        assert_eq!(n.address(0), Some(Ipv4Addr::new(10, 77, 0, 2)));
        assert_eq!(n.address(253), Some(Ipv4Addr::new(10, 77, 0, 255)));
        assert_eq!(n.address(254), Some(Ipv4Addr::new(10, 77, 1, 0)));
        let small: MemberNetns = "p:b:192.168.9.5/29".parse().unwrap();
        let all: Vec<_> = (0..10).map_while(|i| small.address(i)).collect();
        // .0 is the network, .7 broadcast, .5 the gateway.
        assert_eq!(
            all,
            [1, 2, 3, 4, 6]
                .map(|h| Ipv4Addr::new(192, 168, 9, h))
                .to_vec()
        );
    }

    #[test]
    fn host_links_are_short_and_stable() {
        let a = MemberNetns::host_link("a-very-long-prefix-of-a-run-cluster-0001");
        assert_eq!(a.len(), 10);
        assert_eq!(
            a,
            MemberNetns::host_link("a-very-long-prefix-of-a-run-cluster-0001")
        );
        assert_ne!(
            a,
            MemberNetns::host_link("a-very-long-prefix-of-a-run-cluster-0002")
        );
    }
}
