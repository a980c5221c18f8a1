//! What a fleet of one-member clusters costs: resident memory of the coordinator, one
//! sidecar and its etcd, and the steady reconciles scraped from the coordinator's metrics.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use etcd_operator::{
    proto::{ListClustersRequest, coordinator_client::CoordinatorClient},
    version::DEFAULT_VERSION,
};

use crate::{
    free_port,
    local_cluster::{manifest, write_atomically},
};

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `field` of `/proc/<pid>/smaps_rollup` (`Anonymous`, `Rss`, ...), in KiB.
pub fn smaps_kib(pid: u32, field: &str) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A process's resident memory split as (anonymous: its own heap and stacks, file: pages
/// of its binary and libraries, shared with every process that maps them).
pub fn rss_split_kib(pid: u32) -> Option<(u64, u64)> {
    let rss = smaps_kib(pid, "Rss")?;
    let anon = smaps_kib(pid, "Anonymous")?;
    Some((anon, rss.saturating_sub(anon)))
}

/// The coordinator's reconcile duration histogram, as scraped from `/metrics`: the
/// cumulative bucket counts (upper bound, count), the sum and the count.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// What was observed between `earlier` and this one.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0, |(_, n)| *n);
                    (*le, n.saturating_sub(before))
                })
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The smallest bucket bound that holds at least `q` of the observations.
    pub fn quantile_bound(&self, q: f64) -> f64 {
        let want = (self.count as f64 * q).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= want)
            .map_or(f64::INFINITY, |(le, _)| *le)
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Scrapes `etcd_operator_reconcile_duration_seconds` from the coordinator's `/metrics`.
pub fn reconcile_histogram(addr: &str) -> anyhow::Result<Histogram> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    conn.read_to_string(&mut body)?;
    let mut h = Histogram::default();
    let name = "etcd_operator_reconcile_duration_seconds";
    for line in body.lines() {
        let Some((metric, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if let Some(le) = metric
            .strip_prefix(&format!("{name}_bucket{{le=\""))
            .and_then(|r| r.strip_suffix("\"}"))
        {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            h.buckets.push((le, value.parse()?));
        } else if metric == format!("{name}_sum") {
            h.sum = value.parse()?;
        } else if metric == format!("{name}_count") {
            h.count = value.parse()?;
        }
    }
    if h.buckets.is_empty() {
        bail!("{name} not found at http://{addr}/metrics");
    }
    Ok(h)
}

/// What a fleet of one-member clusters costs.
pub struct Fleet {
    pub coordinator_rss: u64,
    pub coordinator_split: Option<(u64, u64)>,
    pub sidecar_rss: u64,
    pub sidecar_split: Option<(u64, u64)>,
    pub etcd_rss: u64,
    /// The file name of the sidecar's binary.
    pub sidecar_binary: String,
    /// The reconciles of a 10 s window of the steady fleet.
    pub reconciles: Histogram,
}

/// Resident memory of the coordinator managing `n` one-member clusters, and of one sidecar
/// and one etcd there (the binary local mode runs, named); the reconciles of its steady
/// state.
pub async fn memory(coordinator: &Path, n: usize) -> anyhow::Result<Fleet> {
    let dir = tempfile::tempdir()?;
    let manifests = dir.path().join("clusters");
    std::fs::create_dir_all(&manifests)?;
    let v = DEFAULT_VERSION.to_string();
    for i in 0..n {
        write_atomically(
            &manifests.join(format!("c{i:02}.yaml")),
            &manifest(&format!("c{i:02}"), 1, &v),
        )?;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let state = dir.path().join("state");
    let mut child = Command::new(coordinator)
        .args([
            "local".to_string(),
            manifests.display().to_string(),
            format!("--state-dir={}", state.display()),
            format!("--grpc-addr={addr}"),
            format!("--control-addr=127.0.0.1:{}", free_port()),
            format!("--metrics-addr={metrics_addr}"),
            "--quiet".into(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("coordinator.log"))?)
        .spawn()?;
    let pid = child.id();
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(60 + 12 * n as u64);
        let mut behind = String::from("no answer from the coordinator");
        loop {
            if let Ok(mut client) = CoordinatorClient::connect(format!("http://{addr}")).await
                && let Ok(list) = client.list_clusters(ListClustersRequest::default()).await
            {
                let list = list.into_inner().clusters;
                let not_running: Vec<String> = list
                    .iter()
                    .filter(|c| {
                        c.phase() != etcd_operator::proto::ClusterPhase::Running || c.ready != 1
                    })
                    .map(|c| format!("{} {:?} {}/{}", c.name, c.phase(), c.ready, c.size))
                    .collect();
                if list.len() == n && not_running.is_empty() {
                    break;
                }
                behind = format!(
                    "{} listed, not Running: {}",
                    list.len(),
                    not_running
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "the coordinator's last log lines:\n{}",
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
                bail!("{n} clusters did not all become Running ({behind})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Let the steady state settle (reports flowing, resyncs), then measure the
        // reconciles of a 10 s window of it.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = reconcile_histogram(&metrics_addr)?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = reconcile_histogram(&metrics_addr)?;
        let window = after.since(&before);
        let coordinator_rss = rss_kib(pid).context("coordinator RSS")?;
        let coordinator_split = rss_split_kib(pid);
        let members = crate::local_cluster::read_members(&state.join("c00").join("cluster.json"));
        let sidecar = members
            .first()
            .and_then(|m| m.pid)
            .context("a sidecar pid")?;
        let sidecar_rss = rss_kib(sidecar).context("sidecar RSS")?;
        let sidecar_split = rss_split_kib(sidecar);
        let sidecar_binary = std::fs::read_link(format!("/proc/{sidecar}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .context("the sidecar's binary")?;
        let etcd_pid = crate::process::etcd_pid(sidecar)?;
        let etcd_rss = rss_kib(etcd_pid).context("etcd RSS")?;
        Ok(Fleet {
            coordinator_rss,
            coordinator_split,
            sidecar_rss,
            sidecar_split,
            etcd_rss,
            sidecar_binary,
            reconciles: window,
        })
    }
    .await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    result
}
