//! What an operation costs the clients: a steady load held through it, and its budget.
//!
//! [`LoadProbe::start`] runs, over the live endpoints of a cluster, what an application
//! does: writers on several keys (a fresh value every 20 ms each, each put tried on the live
//! endpoints in turn within 2 s), linearizable readers, a watcher of the written keys that
//! resumes from the revision after the last one it saw when its stream breaks, a client
//! holding a lease with a 5 s TTL alive (a keep-alive every second, over any live endpoint),
//! and a sampler of the leader and the raft term. [`LoadProbe::stop`] ends it and returns
//! an [`Availability`]: counts (failed writes and reads, leader changes, whether the lease
//! expired, events the watcher missed or saw twice) and durations (the longest write and
//! read stalls). A [`Budget`] is judged on the counts only, so a test can assert it on a
//! loaded machine; the durations are for `etcd-bench`, beside their floors.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::{task::JoinHandle, time::Instant};

/// The prefix of every key the probe writes.
pub const PROBE_PREFIX: &str = "avail/";

/// The lease's TTL, as the clients the issue speaks of hold theirs.
pub const LEASE_TTL_SECS: i64 = 5;

/// Keys written, one writer each.
const WRITERS: usize = 3;

/// Linearizable readers.
const READERS: usize = 2;

/// How often each writer and reader sends.
const EVERY: Duration = Duration::from_millis(20);

/// How long one request may take on one endpoint.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the lease is kept alive (a fifth of its TTL).
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(1);

/// How long [`LoadProbe::stop`] waits for the watcher to see the last acknowledged write.
const WATCH_CATCH_UP: Duration = Duration::from_secs(30);

/// The live client URLs of the cluster, asked at each request.
pub type Endpoints = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// What the clients saw during an operation.
#[derive(Clone, Debug, Default)]
pub struct Availability {
    /// Writes acknowledged.
    pub writes_acked: usize,
    /// Writes no endpoint acknowledged within its time.
    pub writes_failed: usize,
    /// The longest time between two acknowledged writes of one writer.
    pub longest_write_stall: Duration,
    /// Linearizable reads answered.
    pub reads_ok: usize,
    /// Linearizable reads no endpoint answered within its time.
    pub reads_failed: usize,
    /// The longest time between two answered reads of one reader.
    pub longest_read_stall: Duration,
    /// Times the leader seen changed (an election or a transfer).
    pub leader_changes: usize,
    /// The raft term at the start and the end.
    pub terms: (u64, u64),
    /// Keep-alives answered with a positive TTL.
    pub lease_renewals: usize,
    /// Whether the lease expired (a keep-alive answered TTL 0, or it or its key was gone at
    /// the end).
    pub lease_expired: bool,
    /// Events the watcher received.
    pub watch_events: usize,
    /// Acknowledged writes the watcher never saw.
    pub watch_missed: usize,
    /// The highest revision compacted from under the watcher (0: none); writes at or
    /// below it are not counted missed.
    pub watch_compacted: i64,
    /// Events seen again (a revision not above the last one seen).
    pub watch_repeated: usize,
    /// Times the watch was opened again after its stream broke.
    pub watch_resumed: usize,
}

/// What an operation may cost the clients, in counts.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Writes that may fail.
    pub writes_failed: usize,
    /// Leader changes allowed (0 for an operation on a follower, 1 for a transfer away
    /// from a leader the operation stops).
    pub leader_changes: usize,
}

impl Budget {
    /// A planned operation on followers: no failed write, no leader change.
    pub const FOLLOWER: Budget = Budget {
        writes_failed: 0,
        leader_changes: 0,
    };

    /// A planned operation that stops the leader: no failed write, one transfer.
    pub const LEADER: Budget = Budget {
        writes_failed: 0,
        leader_changes: 1,
    };
}

impl Availability {
    /// What breaks `budget`, in words (empty when nothing does). The lease never expires
    /// and the watcher never misses or repeats an event, whatever the budget.
    pub fn breaches(&self, budget: &Budget) -> Vec<String> {
        let mut out = self.lease_and_watch_breaches();
        if self.writes_failed > budget.writes_failed {
            out.push(format!(
                "{} writes failed (budget {})",
                self.writes_failed, budget.writes_failed
            ));
        }
        if self.leader_changes > budget.leader_changes {
            out.push(format!(
                "{} leader changes (budget {})",
                self.leader_changes, budget.leader_changes
            ));
        }
        out
    }

    /// The part of every budget no operation may break: the lease with a 5 s TTL never
    /// expires, the watcher never misses or repeats an event.
    pub fn lease_and_watch_breaches(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.lease_expired {
            out.push(format!("the lease with a {LEASE_TTL_SECS} s TTL expired"));
        }
        if self.watch_missed > 0 {
            out.push(format!(
                "the watcher missed {} acknowledged writes",
                self.watch_missed
            ));
        }
        if self.watch_repeated > 0 {
            out.push(format!(
                "the watcher saw {} events twice",
                self.watch_repeated
            ));
        }
        out
    }

    /// One line, for logs and failure messages.
    pub fn summary(&self) -> String {
        format!(
            "writes {} acked / {} failed (longest stall {:.2} s), reads {} / {} failed \
             (longest stall {:.2} s), leader changes {} (term {} to {}), lease renewed {} \
             times, expired {}, watch events {} (missed {}, repeated {}, resumed {})",
            self.writes_acked,
            self.writes_failed,
            self.longest_write_stall.as_secs_f64(),
            self.reads_ok,
            self.reads_failed,
            self.longest_read_stall.as_secs_f64(),
            self.leader_changes,
            self.terms.0,
            self.terms.1,
            self.lease_renewals,
            self.lease_expired,
            self.watch_events,
            self.watch_missed,
            self.watch_repeated,
            self.watch_resumed
        )
    }
}

#[derive(Default)]
struct Shared {
    /// Acknowledged writes, with the revision etcd gave each.
    acked: BTreeMap<(String, String), i64>,
    writes_failed: usize,
    write_stall: Duration,
    reads_ok: usize,
    reads_failed: usize,
    read_stall: Duration,
    leaders: Vec<u64>,
    terms: Vec<u64>,
    renewals: usize,
    lease_expired: bool,
    seen: BTreeSet<(String, String)>,
    last_revision: i64,
    events: usize,
    repeated: usize,
    resumed: usize,
    /// The highest revision a compaction took from under the watcher: writes at or below
    /// it could not be delivered by any etcd, and are not counted missed.
    compacted: i64,
}

/// A client load running against a cluster; see the module doc.
pub struct LoadProbe {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    endpoints: Endpoints,
    lease: i64,
    tasks: Vec<JoinHandle<()>>,
    watcher: JoinHandle<()>,
}

async fn connect(endpoint: &str) -> Option<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(REQUEST_TIMEOUT);
    tokio::time::timeout(REQUEST_TIMEOUT, Client::connect([endpoint], Some(options)))
        .await
        .ok()?
        .ok()
}

/// Runs `op` on the live endpoints in turn, starting after the last one that answered,
/// until one answers within [`REQUEST_TIMEOUT`] overall; `None` when none did.
async fn on_any<T, F, Fut>(endpoints: &Endpoints, from: &mut usize, mut op: F) -> Option<T>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let list = endpoints();
    for i in 0..list.len() {
        let at = (*from + i) % list.len();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let attempt = async {
            let client = connect(&list[at]).await?;
            op(client).await.ok()
        };
        if let Ok(Some(v)) = tokio::time::timeout(left, attempt).await {
            *from = at;
            return Some(v);
        }
    }
    None
}

/// Acknowledged writes the watcher has not seen, beyond those compaction took from it.
fn missed(s: &Shared) -> usize {
    s.acked
        .iter()
        .filter(|(write, revision)| **revision > s.compacted && !s.seen.contains(*write))
        .count()
}

impl LoadProbe {
    /// Grants the lease, puts its key, opens the watch and starts every client.
    pub async fn start(endpoints: Endpoints) -> anyhow::Result<Self> {
        Self::start_keeping_alive_every(endpoints, KEEP_ALIVE_EVERY).await
    }

    /// As [`LoadProbe::start`], the lease kept alive every `keep_alive_every` (a positive
    /// control keeps it alive less often than its TTL, and must see it expire).
    pub async fn start_keeping_alive_every(
        endpoints: Endpoints,
        keep_alive_every: Duration,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut from = 0;
        let lease = on_any(&endpoints, &mut from, |mut c| async move {
            let id = c.lease_grant(LEASE_TTL_SECS, None).await?.id();
            c.put(
                format!("{PROBE_PREFIX}lease"),
                "held",
                Some(PutOptions::new().with_lease(id)),
            )
            .await?;
            Ok(id)
        })
        .await
        .context("granting the probe's lease")?;
        let start_revision = on_any(&endpoints, &mut from, |mut c| async move {
            c.get(format!("{PROBE_PREFIX}w"), None).await
        })
        .await
        .and_then(|r| r.header().map(|h| h.revision()))
        .context("reading the revision the watch starts after")?;
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            tasks.push(tokio::spawn(write_loop(
                w,
                Arc::clone(&endpoints),
                Arc::clone(&shared),
                Arc::clone(&stop),
            )));
        }
        for r in 0..READERS {
            tasks.push(tokio::spawn(read_loop(
                r,
                Arc::clone(&endpoints),
                Arc::clone(&shared),
                Arc::clone(&stop),
            )));
        }
        tasks.push(tokio::spawn(keep_alive_loop(
            lease,
            keep_alive_every,
            Arc::clone(&endpoints),
            Arc::clone(&shared),
            Arc::clone(&stop),
        )));
        tasks.push(tokio::spawn(leader_loop(
            Arc::clone(&endpoints),
            Arc::clone(&shared),
            Arc::clone(&stop),
        )));
        {
            shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last_revision = start_revision;
        }
        let watcher = tokio::spawn(watch_loop(Arc::clone(&endpoints), Arc::clone(&shared)));
        Ok(Self {
            shared,
            stop,
            endpoints,
            lease,
            tasks,
            watcher,
        })
    }

    /// Whether etcd says the lease is gone (a positive control waits on this).
    pub async fn lease_lapsed(&self) -> bool {
        let lease = self.lease;
        let mut from = 0;
        on_any(&self.endpoints, &mut from, |mut c| async move {
            Ok(c.lease_time_to_live(lease, None).await?.ttl())
        })
        .await
        .is_some_and(|ttl| ttl <= 0)
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acked
            .len()
    }

    /// Waits until `more` writes beyond those acknowledged now are acknowledged.
    pub async fn wait_acked(&self, more: usize, within: Duration) -> anyhow::Result<()> {
        let target = self.acked() + more;
        crate::wait_for(
            &format!("{more} more writes acknowledged under the probe"),
            within,
            || async { (self.acked() >= target).then_some(()) },
        )
        .await
    }

    /// Stops the load, waits (with a deadline) for the watcher to see the last write
    /// acknowledged, checks the lease and its key are still there, and says what was seen.
    pub async fn stop(mut self) -> Availability {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let shared = Arc::clone(&self.shared);
        let caught_up = crate::wait_for(
            "the watcher to see every acknowledged write",
            WATCH_CATCH_UP,
            || async {
                let s = shared.lock().unwrap_or_else(|e| e.into_inner());
                (missed(&s) == 0).then_some(())
            },
        )
        .await;
        if let Err(e) = caught_up {
            tracing::warn!(%e, "the watcher did not catch up");
        }
        self.watcher.abort();
        let lease = self.lease;
        let mut from = 0;
        let alive = on_any(&self.endpoints, &mut from, |mut c| async move {
            let ttl = c.lease_time_to_live(lease, None).await?.ttl();
            let key = c
                .get(format!("{PROBE_PREFIX}lease"), Some(GetOptions::new()))
                .await?
                .count();
            Ok(ttl > 0 && key == 1)
        })
        .await;
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if alive != Some(true) {
            s.lease_expired = true;
        }
        let leader_changes = s.leaders.windows(2).filter(|w| w[0] != w[1]).count();
        Availability {
            writes_acked: s.acked.len(),
            writes_failed: s.writes_failed,
            longest_write_stall: s.write_stall,
            reads_ok: s.reads_ok,
            reads_failed: s.reads_failed,
            longest_read_stall: s.read_stall,
            leader_changes,
            terms: (
                s.terms.first().copied().unwrap_or(0),
                s.terms.last().copied().unwrap_or(0),
            ),
            lease_renewals: s.renewals,
            lease_expired: s.lease_expired,
            watch_events: s.events,
            watch_missed: missed(&s),
            watch_compacted: s.compacted,
            watch_repeated: s.repeated,
            watch_resumed: s.resumed,
        }
    }
}

impl Drop for LoadProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
        self.watcher.abort();
    }
}

async fn write_loop(
    writer: usize,
    endpoints: Endpoints,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) {
    let key = format!("{PROBE_PREFIX}w{writer}");
    let mut from = writer;
    let mut last_ack = Instant::now();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let value = format!("{seq}");
        let acked = on_any(&endpoints, &mut from, |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await
        .map(|r| r.header().map_or(0, |h| h.revision()));
        {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(revision) = acked {
                s.acked.insert((key.clone(), value), revision);
                s.write_stall = s.write_stall.max(last_ack.elapsed());
                last_ack = Instant::now();
            } else {
                s.writes_failed += 1;
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn read_loop(
    reader: usize,
    endpoints: Endpoints,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) {
    let key = format!("{PROBE_PREFIX}w{}", reader % WRITERS);
    let mut from = reader + 1;
    let mut last_ok = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let ok = on_any(&endpoints, &mut from, |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await
        .is_some();
        {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            if ok {
                s.reads_ok += 1;
                s.read_stall = s.read_stall.max(last_ok.elapsed());
                last_ok = Instant::now();
            } else {
                s.reads_failed += 1;
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn keep_alive_loop(
    lease: i64,
    every: Duration,
    endpoints: Endpoints,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) {
    let mut from = 0;
    while !stop.load(Ordering::SeqCst) {
        let ttl = on_any(&endpoints, &mut from, |mut c| async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            match stream.message().await? {
                Some(r) => Ok(r.ttl()),
                None => Err(etcd_client::Error::LeaseKeepAliveError(
                    "keep-alive stream ended".into(),
                )),
            }
        })
        .await;
        {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            match ttl {
                Some(ttl) if ttl > 0 => s.renewals += 1,
                Some(_) => s.lease_expired = true,
                None => {}
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn leader_loop(endpoints: Endpoints, shared: Arc<Mutex<Shared>>, stop: Arc<AtomicBool>) {
    let mut from = 0;
    while !stop.load(Ordering::SeqCst) {
        if let Some((leader, term)) = on_any(&endpoints, &mut from, |mut c| async move {
            let s = c.status().await?;
            Ok((s.leader(), s.raft_term()))
        })
        .await
            && leader != 0
        {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            // A member that has not heard of a newer leader yet answers with an older
            // one: only a later term counts as a change.
            if s.terms.last().is_none_or(|t| term > *t) {
                s.leaders.push(leader);
                s.terms.push(term);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Watches the written keys from the revision after the last event seen, opening the watch
/// again on any live endpoint when its stream breaks.
async fn watch_loop(endpoints: Endpoints, shared: Arc<Mutex<Shared>>) {
    let mut from = 0;
    loop {
        let after = shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_revision;
        let list = endpoints();
        if list.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        from = (from + 1) % list.len();
        let Some(mut client) = connect(&list[from]).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1);
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.watch(format!("{PROBE_PREFIX}w"), Some(options)),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Writes come every 20 ms while the load runs: a stream silent for longer than
        // this is one that will not tell more (its member stopped answering).
        while let Ok(Ok(Some(resp))) =
            tokio::time::timeout(Duration::from_secs(3), stream.message()).await
        {
            if resp.canceled() {
                // Compacted past where the watcher resumed: what lies below the compaction
                // is gone from every member; resume from it.
                if resp.compact_revision() > 0 {
                    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                    s.compacted = s.compacted.max(resp.compact_revision() - 1);
                    s.last_revision = s.last_revision.max(resp.compact_revision() - 1);
                }
                break;
            }
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                if event.event_type() != EventType::Put {
                    continue;
                }
                s.events += 1;
                if kv.mod_revision() <= s.last_revision {
                    s.repeated += 1;
                    continue;
                }
                s.last_revision = kv.mod_revision();
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let value = String::from_utf8_lossy(kv.value()).into_owned();
                s.seen.insert((key, value));
            }
        }
        shared.lock().unwrap_or_else(|e| e.into_inner()).resumed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::Scenario;

    fn clean() -> Availability {
        Availability {
            writes_acked: 100,
            reads_ok: 100,
            lease_renewals: 5,
            watch_events: 100,
            ..Availability::default()
        }
    }

    #[test]
    fn each_count_over_its_budget_breaks_it() {
        assert!(clean().breaches(&Budget::FOLLOWER).is_empty());
        let over = [
            Availability {
                lease_expired: true,
                ..clean()
            },
            Availability {
                watch_missed: 1,
                ..clean()
            },
            Availability {
                watch_repeated: 1,
                ..clean()
            },
            Availability {
                writes_failed: 1,
                ..clean()
            },
            Availability {
                leader_changes: 1,
                ..clean()
            },
        ];
        for seen in &over {
            assert_eq!(seen.breaches(&Budget::FOLLOWER).len(), 1, "{seen:?}");
        }
        // One transfer is within a leader's budget, two are not; durations never count.
        let transfer = Availability {
            leader_changes: 1,
            longest_write_stall: Duration::from_secs(30),
            ..clean()
        };
        assert!(transfer.breaches(&Budget::LEADER).is_empty());
        let two = Availability {
            leader_changes: 2,
            ..clean()
        };
        assert_eq!(two.breaches(&Budget::LEADER).len(), 1);
    }

    #[test]
    fn a_fault_breaks_its_budget_by_the_lease_only_where_quorum_and_leader_stay() {
        let expired = Availability {
            lease_expired: true,
            ..clean()
        };
        assert_eq!(Scenario::KillSidecar.budget().judge(&expired).len(), 1);
        assert!(Scenario::KillAll.budget().judge(&expired).is_empty());
        let missed = Availability {
            watch_missed: 3,
            ..clean()
        };
        assert_eq!(Scenario::KillAll.budget().judge(&missed).len(), 1);
        assert!(Scenario::WipeMajority.budget().judge(&missed).is_empty());
    }
}
