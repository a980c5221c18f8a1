//! Operations on a database of a real size (`etcd-bench --db-size 1GiB`), each beside its
//! floor measured in the same run on a bare cluster holding the same data.
//!
//! One cluster is filled once ([`fill`]: many small keys with a few revisions each, some
//! values near etcd's 1.5 MiB request limit, some keys attached to leases) and every
//! operation then runs on it in turn, cheapest first; the floors run on a bare 3-member
//! cluster restored from an `etcdctl snapshot save` of it. The restore row ends with the
//! restored cluster checked ([`check_restored`]): the key count and the key set equal to
//! what was written, and `HashKV` equal on every member.
//!
//! Disk: the filled cluster holds about 1.4x the size per member (its database and up to
//! five 64 MB WAL segments), the snapshot, the backup (and its proof's scratch copy while
//! it runs), two more members while scaled to 5, and the restored cluster: about 12x the
//! size at the peak. Each step first checks that it leaves [`KEEP_FREE`] on the disk.

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use etcd_client::{Client, GetOptions, PutOptions};
use etcd_operator::{etcd_bin::EtcdBinaries, version::DEFAULT_VERSION};

use super::bare::{BareCluster, add_learner, connect, promote, wait_healthy};
use crate::{
    free_port,
    local_cluster::{CoordinatorOptions, LocalCoordinator, fetch_status, is_running, manifest},
    traffic::{Writer, hash_kv_all},
};

/// Space every step leaves free on the disk, for whoever else uses it.
pub const KEEP_FREE: u64 = 10_000_000_000;

/// The prefix of every key the fill writes.
pub const FILL_PREFIX: &str = "size/";

/// A value near etcd's default request limit (1.5 MiB), with room for the key.
const LARGE_VALUE: usize = 1_400 * 1024;

/// One large key for this many small ones: about a fifth of the bytes written are in
/// small keys.
const SMALL_PER_LARGE: usize = 100;

/// Clients writing at once: etcd commits concurrent proposals in one fsync, and a shared
/// disk's fsync is what a sequential writer waits on.
const WRITERS: usize = 64;

/// Revisions written of each small key, and of each large one.
const SMALL_REVISIONS: usize = 3;
const LARGE_REVISIONS: usize = 2;

/// Every tenth small key is attached to a lease.
const LEASED_EVERY: usize = 10;

/// Parses a size such as `1GiB`, `512MiB`, `4GiB` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit (MiB, GiB)"))?;
    let unit = match unit {
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("{text:?}: unknown unit {other:?} (MiB, GiB)")),
    };
    Ok(n * unit)
}

/// `1 GiB`, `512 MiB`: how a size reads in a row.
pub fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// Free bytes on the file system holding `path`.
pub fn free_bytes(path: &Path) -> anyhow::Result<u64> {
    let s = nix::sys::statvfs::statvfs(path).context("statvfs")?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Bytes of the files under `path` (their apparent size: a WAL segment counts whole).
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Fails unless `needed` bytes can be written under `path` with [`KEEP_FREE`] left.
pub fn ensure_disk(path: &Path, needed: u64, what: &str) -> anyhow::Result<()> {
    let free = free_bytes(path)?;
    if free < needed + KEEP_FREE {
        bail!(
            "{what} needs {:.1} GB and {:.0} GB kept free; {:.1} GB free",
            needed as f64 / 1e9,
            KEEP_FREE as f64 / 1e9,
            free as f64 / 1e9
        );
    }
    Ok(())
}

/// What the fill wrote.
#[derive(Clone, Debug, Default)]
pub struct Filled {
    /// Distinct keys under [`FILL_PREFIX`].
    pub keys: usize,
    /// Of them, values near the request limit.
    pub large: usize,
    /// Of them, attached to a lease.
    pub leased: usize,
    /// Puts made.
    pub puts: usize,
    /// The leader's database size once full.
    pub db_bytes: u64,
    /// One member's data directory once full (database, WAL, snapshots).
    pub member_bytes: u64,
    /// How long the fill took.
    pub took: Duration,
}

/// Fills the cluster at `endpoints` until its leader's database holds `target` bytes. Keys
/// are `size/s<n>` (1 to 4 KiB, [`SMALL_REVISIONS`] revisions each, every tenth attached to
/// one of eight day-long leases) and `size/l<n>` (one per [`SMALL_PER_LARGE`] small ones,
/// 1.4 MiB, [`LARGE_REVISIONS`] revisions), written by [`WRITERS`] clients. A key is written whole
/// (all its revisions) before a client looks at the size again, so every key counted holds
/// its last value.
pub async fn fill(endpoints: &[String], target: u64) -> anyhow::Result<Filled> {
    let started = Instant::now();
    let mut admin = Client::connect(endpoints, None).await?;
    let mut leases = Vec::new();
    for _ in 0..8 {
        leases.push(admin.lease_grant(86_400, None).await?.id());
    }
    let leases = Arc::new(leases);
    let next = Arc::new(AtomicUsize::new(0));
    let full = Arc::new(AtomicBool::new(false));
    let puts = Arc::new(AtomicUsize::new(0));
    let db = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let endpoints = endpoints.to_vec();
        let (next, full, puts, leases) = (
            Arc::clone(&next),
            Arc::clone(&full),
            Arc::clone(&puts),
            Arc::clone(&leases),
        );
        writers.push(tokio::spawn(async move {
            let mut client = Client::connect(&endpoints, None).await?;
            let mut written = Vec::new();
            while !full.load(Ordering::SeqCst) {
                let job = next.fetch_add(1, Ordering::SeqCst);
                let (key, revisions, len, lease) = if job % (SMALL_PER_LARGE + 1) == 0 {
                    (
                        format!("{FILL_PREFIX}l{job:08}"),
                        LARGE_REVISIONS,
                        LARGE_VALUE,
                        None,
                    )
                } else {
                    let lease = (job % LEASED_EVERY == 1).then(|| leases[job % leases.len()]);
                    (
                        format!("{FILL_PREFIX}s{job:08}"),
                        SMALL_REVISIONS,
                        1024 + (job * 97) % 3072,
                        lease,
                    )
                };
                for r in 0..revisions {
                    let mut value = format!("{job}.{r}.").into_bytes();
                    value.resize(len, b'v' + (r as u8));
                    let options = lease.map(|l| PutOptions::new().with_lease(l));
                    put_retrying(&mut client, &key, value, options).await?;
                    puts.fetch_add(1, Ordering::Relaxed);
                }
                written.push((job, lease.is_some()));
            }
            anyhow::Ok(written)
        }));
    }
    let watch_size = {
        let (full, db) = (Arc::clone(&full), Arc::clone(&db));
        let mut client = admin.clone();
        async move {
            loop {
                if let Ok(s) = client.status().await {
                    db.store(s.db_size() as u64, Ordering::SeqCst);
                    if s.db_size() as u64 >= target {
                        full.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    watch_size.await;
    let mut filled = Filled::default();
    for w in writers {
        for (job, leased) in w.await?? {
            filled.keys += 1;
            filled.large += usize::from(job % (SMALL_PER_LARGE + 1) == 0);
            filled.leased += usize::from(leased);
        }
    }
    filled.puts = puts.load(Ordering::SeqCst);
    filled.db_bytes = admin.status().await?.db_size() as u64;
    filled.took = started.elapsed();
    Ok(filled)
}

async fn put_retrying(
    client: &mut Client,
    key: &str,
    value: Vec<u8>,
    options: Option<PutOptions>,
) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        match client.put(key, value.clone(), options.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::debug!(%e, key, "put failed, again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("putting {key}")),
        }
    }
}

/// Every key under [`FILL_PREFIX`] (keys only), read from one member.
pub async fn fill_keys(endpoint: &str) -> anyhow::Result<BTreeSet<Vec<u8>>> {
    let mut client = connect_slow(endpoint).await?;
    let mut keys = BTreeSet::new();
    let mut from = FILL_PREFIX.as_bytes().to_vec();
    let end = b"size0".to_vec();
    loop {
        let resp = client
            .get(
                from.clone(),
                Some(
                    GetOptions::new()
                        .with_range(end.clone())
                        .with_keys_only()
                        .with_limit(2_000),
                ),
            )
            .await?;
        let page: Vec<Vec<u8>> = resp.kvs().iter().map(|kv| kv.key().to_vec()).collect();
        let more = resp.more();
        if let Some(last) = page.last() {
            from = last.clone();
            from.push(0);
        }
        keys.extend(page);
        if !more {
            return Ok(keys);
        }
    }
}

/// A client whose requests may take as long as a loaded member right after a fill needs
/// to range over tens of thousands of keys.
async fn connect_slow(endpoint: &str) -> anyhow::Result<Client> {
    Ok(Client::connect(
        [endpoint],
        Some(
            etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(60)),
        ),
    )
    .await?)
}

/// What the check of a restored cluster found.
#[derive(Clone, Debug)]
pub struct RestoreCheck {
    /// Keys under [`FILL_PREFIX`] on each member, counted by etcd (`count_only`).
    pub counts: Vec<i64>,
    /// The distinct HashKV values of the members at one revision (one when they agree).
    pub hashes: Vec<u32>,
    /// The revision they were compared at.
    pub revision: i64,
}

/// Checks a restored cluster against the source's keys: on every member (`members`, each
/// asked alone) etcd counts exactly `expected.len()` keys under the prefix and lists the same
/// keys, and `HashKV` is equal across the members at one revision.
pub async fn check_restored(
    members: &[String],
    expected: &BTreeSet<Vec<u8>>,
) -> anyhow::Result<RestoreCheck> {
    let mut counts = Vec::new();
    for endpoint in members {
        let mut client = connect_slow(endpoint).await?;
        let count = client
            .get(
                FILL_PREFIX,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?
            .count();
        if count as usize != expected.len() {
            bail!(
                "{endpoint} counts {count} keys under {FILL_PREFIX}, {} were written",
                expected.len()
            );
        }
        let keys = fill_keys(endpoint).await?;
        if &keys != expected {
            let missing = expected.difference(&keys).count();
            let extra = keys.difference(expected).count();
            bail!("{endpoint}: {missing} keys written are missing, {extra} were never written");
        }
        counts.push(count);
    }
    let hashes = hash_kv_all(members, None).await?;
    let revision = hashes.first().map_or(0, |h| h.hash_revision);
    let mut distinct: Vec<u32> = hashes.iter().map(|h| h.hash).collect();
    distinct.dedup();
    if distinct.len() != 1 || hashes.iter().any(|h| h.hash_revision != revision) {
        bail!("HashKV differs across the restored members: {hashes:?}");
    }
    Ok(RestoreCheck {
        counts,
        hashes: distinct,
        revision,
    })
}

/// The floors at size, on a bare 3-member cluster restored from `snapshot`.
#[derive(Clone, Debug, Default)]
pub struct SizeFloors {
    /// `etcdutl snapshot restore` of each of 3 members, all started, every one healthy.
    pub restore: Duration,
    /// SIGKILL of a follower, started again on its data, every member healthy (median).
    pub kill_restart: Duration,
    /// A learner added, caught up and promoted (its database streamed from the leader).
    pub join: Duration,
    /// Each member stopped (SIGTERM) and started again on its data, the leader last after
    /// a move of the leadership, every member healthy after each.
    pub restarts: Duration,
    /// `etcdctl defrag` of each member in turn.
    pub defrag: Duration,
}

/// Measures [`SizeFloors`] on a bare cluster restored from `snapshot` under `dir`.
pub async fn size_floors(dir: &Path, snapshot: &Path, runs: usize) -> anyhow::Result<SizeFloors> {
    let started = Instant::now();
    let mut bare = BareCluster::restore_from(dir, snapshot, 3).await?;
    let restore = started.elapsed();
    let mut kills = Vec::new();
    for _ in 0..runs {
        let follower = (bare.leader().await? + 1) % 3;
        kills.push(bare.kill_and_restart(&[follower]).await?);
    }
    let restarts = bare.upgrade_to(DEFAULT_VERSION).await?;
    let started = Instant::now();
    for (client, _) in bare.urls.clone() {
        let out = Command::new(etcdctl())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={client}"))
            .args(["defrag", "--command-timeout=600s"])
            .output()?;
        if !out.status.success() {
            bail!("etcdctl defrag: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let defrag = started.elapsed();
    let join = bare.join_one().await?;
    Ok(SizeFloors {
        restore,
        kill_restart: super::table::median(kills),
        join,
        restarts,
        defrag,
    })
}

fn etcdctl() -> &'static str {
    "etcdctl"
}

/// `etcdctl snapshot save` of the member at `endpoint` into `path`: how long it took.
pub fn snapshot_save(endpoint: &str, path: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = Command::new(etcdctl())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["snapshot", "save", "--command-timeout=600s"])
        .arg(path)
        .output()
        .context("etcdctl (scripts/setup.sh installs Debian's etcd-client)")?;
    if !out.status.success() {
        bail!(
            "etcdctl snapshot save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed())
}

/// The operator's side at size, each on the one filled cluster, in the order measured.
#[derive(Clone, Debug, Default)]
pub struct SizeFigures {
    pub filled: Filled,
    pub snapshot_bytes: u64,
    pub snapshot_save: Duration,
    pub upgrade: Option<(Duration, Duration, usize)>,
    pub kill_restart: Duration,
    pub backup: Duration,
    pub replace: Duration,
    pub scale_up: Option<Duration>,
    pub scale_down: Option<Duration>,
    pub restore: Option<(Duration, RestoreCheck)>,
    pub floors: SizeFloors,
    /// Steps not measured, and why.
    pub skipped: Vec<String>,
}

/// Fills a 3-member cluster (of `from` when an upgrade is measured, else of the default
/// version) to `target` bytes and measures each operation on it, with the floors on a bare
/// cluster of the same data in between.
pub async fn at_size(
    coordinator: &Path,
    target: u64,
    runs: usize,
    upgrade_from: Option<&str>,
) -> anyhow::Result<SizeFigures> {
    let v = DEFAULT_VERSION.to_string();
    let first = upgrade_from.unwrap_or(&v).to_string();
    let work = tempfile::Builder::new().prefix("etcdop-size-").tempdir()?;
    let dir = work.path();
    ensure_disk(dir, target * 4, "the filled cluster and its snapshot")?;
    let source = dir.join("source.yaml");
    crate::local_cluster::write_atomically(&source, &manifest("sized", 3, &first))?;
    let c = LocalCoordinator::start(CoordinatorOptions::new(coordinator, &source).version(&first))
        .await?;
    let status = c.wait_running(3, &first, Duration::from_secs(120)).await?;
    let endpoints: Vec<String> = status.endpoints.split(',').map(str::to_string).collect();
    let mut f = SizeFigures {
        filled: fill(&endpoints, target).await?,
        ..SizeFigures::default()
    };
    f.filled.member_bytes = status
        .members
        .iter()
        .map(|m| dir_bytes(&c.data_dir(&m.name)))
        .max()
        .unwrap_or(0);
    let member = f.filled.member_bytes.max(target);
    let expected = fill_keys(&endpoints[0]).await?;
    if expected.len() != f.filled.keys {
        bail!(
            "{} keys read back after the fill, {} written",
            expected.len(),
            f.filled.keys
        );
    }
    eprintln!(
        "filled: {} keys ({} large, {} leased), {} puts, db {:.0} MB, a member's data {:.0} MB, in {:.0} s",
        f.filled.keys,
        f.filled.large,
        f.filled.leased,
        f.filled.puts,
        f.filled.db_bytes as f64 / 1e6,
        f.filled.member_bytes as f64 / 1e6,
        f.filled.took.as_secs_f64()
    );

    let snapshot = dir.join("floor.db");
    f.snapshot_save = snapshot_save(&endpoints[0], &snapshot)?;
    f.snapshot_bytes = std::fs::metadata(&snapshot)?.len();
    ensure_disk(dir, 4 * member, "the bare floors")?;
    f.floors = size_floors(&dir.join("floors"), &snapshot, runs).await?;
    std::fs::remove_dir_all(dir.join("floors"))?;
    std::fs::remove_file(&snapshot)?;
    eprintln!("floors at size done: {:?}", f.floors);

    if let Some(from) = upgrade_from {
        let writer = Writer::start(c.live_endpoints());
        writer.wait_acked(20, Duration::from_secs(60)).await?;
        let started = Instant::now();
        c.set_spec(3, &v)?;
        c.wait_running(3, &v, Duration::from_secs(900)).await?;
        let took = started.elapsed();
        let log = writer.stop().await;
        f.upgrade = Some((took, log.longest_gap, log.failures.len()));
        eprintln!("upgrade from {from} at size done");
    }

    let mut kills = Vec::new();
    for _ in 0..runs {
        kills.push(super::scenarios::kill_follower(&c, &v).await?);
    }
    f.kill_restart = super::table::median(kills);
    eprintln!("kill -9 at size done");

    ensure_disk(dir, 2 * f.snapshot_bytes, "a backup")?;
    let started = Instant::now();
    let backup = super::scenarios::take_backup(&c)?;
    f.backup = started.elapsed();
    eprintln!("backup at size done: {backup}");

    match ensure_disk(
        dir,
        3 * member + f.snapshot_bytes,
        "a restore into 3 members",
    ) {
        Ok(()) => {
            let started = Instant::now();
            c.write_manifest(&format!(
                "{}---\n{}  restore:\n    backup: \"{backup}\"\n    cluster: {}\n",
                manifest(c.cluster(), 3, &v),
                manifest("restored", 3, &v),
                c.cluster()
            ))?;
            let channel = c.channel();
            let status = crate::wait_for(
                "the restored cluster Running with 3 members",
                Duration::from_secs(1800),
                || {
                    let channel = channel.clone();
                    let v = v.clone();
                    async move {
                        fetch_status(channel, "restored")
                            .await
                            .filter(|s| is_running(s, 3, &v))
                    }
                },
            )
            .await?;
            let took = started.elapsed();
            let members: Vec<String> = status.endpoints.split(',').map(str::to_string).collect();
            let check = check_restored(&members, &expected).await?;
            f.restore = Some((took, check));
            eprintln!("restore at size done and checked");
        }
        Err(e) => f.skipped.push(format!("restore: {e}")),
    }
    ensure_disk(dir, member, "a replacement")?;
    f.replace = super::scenarios::delete_follower(&c, &v).await?;
    eprintln!("replacement at size done");

    match ensure_disk(dir, 2 * member, "scaling to 5") {
        Ok(()) => {
            let started = Instant::now();
            c.set_spec(5, &v)?;
            c.wait_running(5, &v, Duration::from_secs(900)).await?;
            f.scale_up = Some(started.elapsed() / 2);
            let started = Instant::now();
            c.set_spec(3, &v)?;
            c.wait_running(3, &v, Duration::from_secs(300)).await?;
            f.scale_down = Some(started.elapsed() / 2);
            eprintln!("scale at size done");
        }
        Err(e) => f.skipped.push(format!("scale 3 to 5: {e}")),
    }

    drop(c);
    Ok(f)
}

impl BareCluster {
    /// A bare static cluster of `n` members of the default version, every one restored
    /// from `snapshot` with `etcdutl snapshot restore` (the same initial cluster), all
    /// started together, as etcd's disaster-recovery guide does.
    pub async fn restore_from(dir: &Path, snapshot: &Path, n: usize) -> anyhow::Result<Self> {
        let mut c = Self::unstarted(dir, n, DEFAULT_VERSION)?;
        let etcd = EtcdBinaries::from_env().resolve(DEFAULT_VERSION)?;
        let etcdutl = EtcdBinaries::from_env()
            .etcdutl(&etcd)
            .context("an official etcdutl (scripts/setup.sh caches it)")?;
        let mut restores = Vec::new();
        for i in 0..n {
            restores.push(
                std::process::Command::new(&etcdutl)
                    .args(["snapshot", "restore"])
                    .arg(snapshot)
                    .arg(format!("--data-dir={}", c.data_dir(i).display()))
                    .arg(format!("--name={}", c.names[i]))
                    .arg(format!("--initial-cluster={}", c.initial))
                    .arg(format!("--initial-advertise-peer-urls={}", c.urls[i].1))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()?,
            );
        }
        for r in restores {
            let out = r.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "etcdutl snapshot restore: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        for i in 0..n {
            let child = c.spawn(i)?;
            c.members.push(Some(child));
        }
        for (client, _) in &c.urls {
            wait_healthy(client, Duration::from_secs(600)).await?;
        }
        Ok(c)
    }

    /// Floor of a replacement at size, on a cluster settled for etcd's 5 s window: one learner added, started (etcd streams it the
    /// leader's snapshot), promoted once etcd says it is in sync, healthy; then removed.
    pub async fn join_one(&mut self) -> anyhow::Result<Duration> {
        let bin = EtcdBinaries::from_env().resolve(self.version)?;
        let mut client = connect(&self.urls[0].0).await?;
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let client_url = format!("http://127.0.0.1:{}", free_port());
        // etcd refuses a MemberAdd until every voter has been connected to the leader for
        // 5 s: the operator's replacement runs on a cluster long past that window, and so
        // does this one.
        tokio::time::sleep(super::scenarios::SETTLED_AFTER).await;
        let started = Instant::now();
        let id = add_learner(&mut client, &peer_url, Duration::from_secs(60)).await?;
        let mut joiner = std::process::Command::new(bin)
            .args([
                "--name=joiner".to_string(),
                format!("--data-dir={}", self.dir.path().join("joiner").display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={},joiner={peer_url}", self.initial),
                "--initial-cluster-state=existing".into(),
                "--log-level=error".into(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let joined = async {
            promote(&mut client, id, Duration::from_secs(600)).await?;
            wait_healthy(&client_url, Duration::from_secs(60)).await
        }
        .await;
        let took = started.elapsed();
        let _ = joiner.kill();
        let _ = joiner.wait();
        joined?;
        Ok(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_their_unit_and_read_back() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert!(parse_size("1GB").is_err());
        assert!(parse_size("GiB").is_err());
        assert_eq!(size_label(4 << 30), "4 GiB");
        assert_eq!(size_label(64 << 20), "64 MiB");
    }
}
