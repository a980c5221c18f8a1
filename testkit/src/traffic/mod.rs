//! Client traffic against a real etcd cluster, recorded as a [`History`] for the checker.
//!
//! Where it sits: a test starts a cluster, starts [`Traffic`], injects faults (kills,
//! partitions, restarts, upgrades), stops the traffic ([`TrafficHandle::stop`]), takes a
//! [`final_read`] and hands all of it to [`crate::checker::check`]; [`hash_kv_all`] and
//! [`crate::checker::compare_hashes`] then check the members agree byte for byte.
//!
//! What runs, each part recording into one history:
//! - **Pinned clients**, one per member (or more: [`TrafficConfig::pinned_per_member`]),
//!   each sending every operation to its member alone, so a fault on that member shows in
//!   its operations. The member list is read from etcd itself every 300 ms
//!   (`members.rs`), so a member that joins (a scale-up, a replacement) gets its own
//!   client, and one that leaves loses it.
//! - **Shared clients** trying the live members in turn until one answers.
//! - The mix: puts, linearizable and serializable gets and range reads, deletes,
//!   compare-and-swaps and transactions over two keys (`ops.rs`). Keys are few
//!   (`<prefix><k>`) so clients collide; every written value is unique (`c<client>-<seq>`),
//!   which lets the checker tell which write a read observed. During a contention phase
//!   ([`TrafficHandle::contend`], run by chaos over each fault window) clients send twice
//!   as often over the first two keys only.
//! - **Watchers** of the key prefix, from revisions they choose (`watchers.rs`), and a
//!   compactor that makes some of them meet a compaction.
//! - **Lease clients** keeping leases alive with a key attached (`leases.rs`).
//!
//! Each client is a tokio task issuing one operation at a time (a sequential process, as
//! the checker expects). Each draws its operations from its own stream of the seeded
//! generator, so a failing seed replays the same operation mix (timing, and so the
//! results, will differ).
//!
//! An operation that times out or loses its connection is recorded `Unknown`; it is
//! recorded `Failed` only when it certainly never reached etcd (the connection could not
//! be made). Anything in doubt is `Unknown`: claiming `Failed` for a write that was in
//! fact applied would make the checker report a violation that etcd did not commit.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use etcd_client::ConnectOptions;
use thiserror::Error;
use tokio::{sync::watch, task::JoinHandle, time::Instant};

mod leases;
mod members;
mod ops;
mod reads;
mod watchers;
mod writer;

pub use members::Members;
pub use ops::certainly_not_sent;
pub use reads::{final_read, hash_kv_all};
pub use writer::{
    WRITE_PREFIX, WRITE_TIMEOUT, Writer, WriterLog, count_missing_acked, verify_acked,
    verify_acked_tls,
};

use crate::{
    history::{ClientId, History, Recorder},
    rng::SeededRng,
};
use ops::{Endpoints, Route, Workload};

/// How long [`Traffic::start`] waits for the cluster to answer the initial reads.
const INITIAL_READ_WITHIN: Duration = Duration::from_secs(30);

/// Pause between retries of a read that failed (final and initial reads).
const READ_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long one `HashKV` (or the revision lookup before it) may take: a member hashes its
/// whole backend, a minute at a few GiB on a loaded machine.
const HASH_KV_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the pinned clients are matched with the member list.
const PIN_EVERY: Duration = Duration::from_millis(300);

/// Client ids of the watchers start here (apart from the operations' clients).
const WATCHER_IDS: ClientId = 10_000;

/// Client ids of the lease clients start here.
const LEASE_IDS: ClientId = 20_000;

/// What kind of operation a client issues next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpChoice {
    /// A put of a fresh value.
    Put,
    /// A quorum read.
    LinearizableGet,
    /// A member-local read.
    SerializableGet,
    /// A transaction: compare with the value this client last saw, put a fresh value.
    CompareAndSwap,
    /// A delete.
    Delete,
    /// A quorum read of every key.
    LinearizableRange,
    /// A member-local read of every key.
    SerializableRange,
    /// A transaction over two keys: compare each with what this client last saw, put a
    /// fresh value in each.
    Txn,
}

/// Relative weights of the operation kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpMix {
    /// Puts.
    pub put: u32,
    /// Linearizable gets.
    pub linearizable_get: u32,
    /// Serializable gets.
    pub serializable_get: u32,
    /// Compare-and-swap transactions.
    pub compare_and_swap: u32,
    /// Deletes.
    pub delete: u32,
    /// Linearizable range reads.
    pub linearizable_range: u32,
    /// Serializable range reads.
    pub serializable_range: u32,
    /// Transactions over two keys.
    pub txn: u32,
}

impl Default for OpMix {
    fn default() -> Self {
        Self {
            put: 25,
            linearizable_get: 25,
            serializable_get: 8,
            compare_and_swap: 15,
            delete: 5,
            linearizable_range: 6,
            serializable_range: 4,
            txn: 12,
        }
    }
}

impl OpMix {
    /// Draws one kind according to the weights (a put when every weight is zero).
    pub fn choose(&self, rng: &mut SeededRng) -> OpChoice {
        let weighted = [
            (OpChoice::Put, self.put),
            (OpChoice::LinearizableGet, self.linearizable_get),
            (OpChoice::SerializableGet, self.serializable_get),
            (OpChoice::CompareAndSwap, self.compare_and_swap),
            (OpChoice::Delete, self.delete),
            (OpChoice::LinearizableRange, self.linearizable_range),
            (OpChoice::SerializableRange, self.serializable_range),
            (OpChoice::Txn, self.txn),
        ];
        let total: u64 = weighted.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut roll = rng.below(total.max(1));
        for (choice, weight) in weighted {
            if roll < u64::from(weight) {
                return choice;
            }
            roll -= u64::from(weight);
        }
        OpChoice::Put
    }
}

/// One client's sequence of (key index, operation kind), fixed by the seed.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    rng: SeededRng,
    mix: OpMix,
    keys: usize,
}

impl ClientPlan {
    /// The plan of `client` under `config.seed`.
    pub fn new(config: &TrafficConfig, client: ClientId) -> Self {
        Self {
            rng: SeededRng::stream(config.seed, u64::from(client)),
            mix: config.mix.clone(),
            keys: config.keys.max(1),
        }
    }

    /// The next key index and operation kind.
    pub fn next_op(&mut self) -> (usize, OpChoice) {
        let key = self.rng.below(self.keys as u64) as usize;
        (key, self.mix.choose(&mut self.rng))
    }
}

/// The contention phase: clients send this often over this many keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contention {
    /// Keys in play (the first ones).
    pub keys: usize,
    /// At most one operation per client this often.
    pub op_interval: Duration,
}

impl Default for Contention {
    fn default() -> Self {
        Self {
            keys: 2,
            op_interval: Duration::from_millis(5),
        }
    }
}

/// How to run traffic.
#[derive(Clone, Debug)]
pub struct TrafficConfig {
    /// Seeds every client's operation mix.
    pub seed: u64,
    /// Clients pinned to each member etcd lists.
    pub pinned_per_member: usize,
    /// Clients trying every live member in turn.
    pub shared_clients: usize,
    /// Number of keys.
    pub keys: usize,
    /// Key prefix; keys are `<prefix><index>`.
    pub key_prefix: String,
    /// At most one operation per client this often.
    pub op_interval: Duration,
    /// An operation not answered within this is recorded `Unknown`.
    pub op_timeout: Duration,
    /// Connection attempts give up after this.
    pub connect_timeout: Duration,
    /// Operation weights.
    pub mix: OpMix,
    /// The contention phase, when [`TrafficHandle::contend`] turns it on.
    pub contention: Contention,
    /// Watchers of the key prefix.
    pub watchers: usize,
    /// Compact to the revision of the previous round this often (none: never).
    pub compact_every: Option<Duration>,
    /// Clients keeping leases alive.
    pub lease_clients: usize,
    /// The TTL the leases are granted with, seconds.
    pub lease_ttl: i64,
    /// The prefix of the keys attached to leases (outside the key prefix).
    pub lease_prefix: String,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            pinned_per_member: 1,
            shared_clients: 2,
            keys: 8,
            key_prefix: "t/".into(),
            op_interval: Duration::from_millis(5),
            op_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            mix: OpMix::default(),
            contention: Contention::default(),
            watchers: 2,
            compact_every: Some(Duration::from_secs(3)),
            lease_clients: 1,
            lease_ttl: 5,
            lease_prefix: "l/".into(),
        }
    }
}

impl TrafficConfig {
    /// The keys traffic uses.
    pub fn key_names(&self) -> Vec<String> {
        (0..self.keys.max(1))
            .map(|k| format!("{}{k}", self.key_prefix))
            .collect()
    }

    fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.op_timeout)
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
    }
}

/// What can go wrong outside of recorded operations.
#[derive(Debug, Error)]
pub enum TrafficError {
    /// No endpoint was given.
    #[error("no etcd endpoints given")]
    NoEndpoints,
    /// etcd refused or failed a request.
    #[error("{what} against {endpoints}: {source}")]
    Etcd {
        /// What was attempted.
        what: String,
        /// Where.
        endpoints: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// A request did not finish in time.
    #[error("{what} against {endpoints} did not finish within {within:?}")]
    Timeout {
        /// What was attempted.
        what: String,
        /// Where.
        endpoints: String,
        /// The limit.
        within: Duration,
    },
}

/// Whether the contention phase is on, shared by every client.
#[derive(Clone, Default)]
struct Hot(Arc<AtomicBool>);

impl Hot {
    fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What every operation client of a traffic shares.
#[derive(Clone)]
struct Shared {
    config: Arc<TrafficConfig>,
    keys: Vec<String>,
    recorder: Recorder,
    hot: Hot,
}

impl Shared {
    fn workload(&self, id: ClientId) -> Workload {
        Workload::Mixed {
            plan: ClientPlan::new(&self.config, id),
            keys: self.keys.clone(),
            prefix: self.config.key_prefix.clone(),
            last_seen: BTreeMap::new(),
            seq: 0,
        }
    }

    fn pace(&self) -> Pace {
        Pace {
            interval: self.config.op_interval,
            timeout: self.config.op_timeout,
            hot: Some((self.hot.clone(), self.config.contention)),
        }
    }
}

/// The tasks of a traffic, and the stop signals of the operations' clients (stopped
/// first) and of the watchers (which drain after).
struct Tasks {
    clients: Vec<JoinHandle<()>>,
    watchers: Vec<JoinHandle<()>>,
}

/// Starts traffic.
pub struct Traffic;

impl Traffic {
    /// Reads the keys' initial values (waiting up to 30 s for the cluster to answer), then
    /// starts the clients, watchers and lease clients; `endpoints` are where the member
    /// list is first read. Must run inside a tokio runtime.
    pub async fn start(
        config: TrafficConfig,
        endpoints: &[String],
    ) -> Result<TrafficHandle, TrafficError> {
        if endpoints.is_empty() {
            return Err(TrafficError::NoEndpoints);
        }
        let keys = config.key_names();
        let initial = final_read(endpoints, &keys, INITIAL_READ_WITHIN).await?;
        let recorder = Recorder::new();
        recorder.set_seed(config.seed);
        for (key, value) in &initial.keys {
            recorder.set_initial(key, value.as_ref().map(|v| v.value.clone()));
        }
        let (stop, stopped) = watch::channel(false);
        let (stop_watchers, watchers_stopped) = watch::channel(false);
        let members = Members::start(endpoints, stopped.clone());
        members.wait_read(Duration::from_secs(5)).await;
        let live: Endpoints = {
            let members = members.clone();
            Arc::new(move || members.endpoints())
        };
        let hot = Hot::default();
        let config = Arc::new(config);
        let shared = Shared {
            config: Arc::clone(&config),
            keys: keys.clone(),
            recorder: recorder.clone(),
            hot: hot.clone(),
        };
        let tasks = Arc::new(Mutex::new(Tasks {
            clients: Vec::new(),
            watchers: Vec::new(),
        }));
        let mut t = tasks.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..config.shared_clients {
            let id = ClientId::try_from(i).unwrap_or(ClientId::MAX);
            let route = Route::Failover {
                endpoints: Arc::clone(&live),
                tls: None,
                reload_tls: None,
                clients: HashMap::new(),
                good: Default::default(),
                sent: 0,
            };
            t.clients.push(tokio::spawn(run_client(
                id,
                shared.workload(id),
                route,
                shared.pace(),
                recorder.clone(),
                stopped.clone(),
                None,
            )));
        }
        let next_id = Arc::new(AtomicU32::new(config.shared_clients as u32));
        t.clients.push(tokio::spawn(pin_clients(
            shared.clone(),
            members.clone(),
            Arc::clone(&next_id),
            Arc::clone(&tasks),
            stopped.clone(),
        )));
        let target = watchers::DrainTarget::default();
        for w in 0..config.watchers {
            let spec = watchers::WatcherSpec {
                id: WATCHER_IDS + w as ClientId,
                prefix: config.key_prefix.clone(),
                from: initial.revision + 1,
                seed: config.seed,
            };
            t.watchers.push(tokio::spawn(watchers::run_watcher(
                spec,
                Arc::clone(&live),
                recorder.clone(),
                watchers_stopped.clone(),
                target.clone(),
            )));
        }
        if let Some(every) = config.compact_every {
            t.clients.push(tokio::spawn(watchers::run_compactor(
                every,
                Arc::clone(&live),
                stopped.clone(),
            )));
        }
        for l in 0..config.lease_clients {
            let spec = leases::LeaseSpec {
                id: LEASE_IDS + l as ClientId,
                ttl: config.lease_ttl,
                prefix: config.lease_prefix.clone(),
                seed: config.seed,
            };
            t.clients.push(tokio::spawn(leases::run_lease_client(
                spec,
                Arc::clone(&live),
                recorder.clone(),
                stopped.clone(),
            )));
        }
        drop(t);
        Ok(TrafficHandle {
            recorder,
            stop,
            stop_watchers,
            tasks,
            keys,
            members,
            hot,
            target,
        })
    }
}

/// Keeps one pinned client (or [`TrafficConfig::pinned_per_member`]) on every voter etcd
/// lists: a member that joins gets its own, one that leaves the list loses it (its
/// operation in flight finishes first). Traffic stopping stops them all.
async fn pin_clients(
    shared: Shared,
    members: Members,
    next_id: Arc<AtomicU32>,
    tasks: Arc<Mutex<Tasks>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut pinned: BTreeMap<u64, Vec<watch::Sender<bool>>> = BTreeMap::new();
    loop {
        let voters = members.voters();
        pinned.retain(|id, stops| {
            let stays = voters.contains_key(id);
            if !stays {
                for stop in stops.iter() {
                    let _ = stop.send(true);
                }
            }
            stays
        });
        for (member, url) in voters {
            if pinned.contains_key(&member) {
                continue;
            }
            let mut stops = Vec::new();
            for _ in 0..shared.config.pinned_per_member {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let (stop, own) = watch::channel(false);
                let route = Route::Fixed {
                    endpoints: vec![url.clone()],
                    options: shared.config.connect_options(),
                    client: None,
                };
                let task = tokio::spawn(run_client(
                    id,
                    shared.workload(id),
                    route,
                    shared.pace(),
                    shared.recorder.clone(),
                    own,
                    None,
                ));
                tasks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clients
                    .push(task);
                stops.push(stop);
            }
            pinned.insert(member, stops);
        }
        tokio::select! {
            _ = stopped.changed() => {}
            _ = tokio::time::sleep(PIN_EVERY) => {}
        }
        if *stopped.borrow() {
            for stop in pinned.values().flatten() {
                let _ = stop.send(true);
            }
            return;
        }
    }
}

/// Running traffic; [`TrafficHandle::stop`] ends it and returns the history. Dropping the
/// handle stops the clients without waiting for them.
pub struct TrafficHandle {
    recorder: Recorder,
    stop: watch::Sender<bool>,
    stop_watchers: watch::Sender<bool>,
    tasks: Arc<Mutex<Tasks>>,
    keys: Vec<String>,
    members: Members,
    hot: Hot,
    target: watchers::DrainTarget,
}

impl TrafficHandle {
    /// The recorder (a live view of the history).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Operations finished so far.
    pub fn recorded(&self) -> usize {
        self.recorder.len()
    }

    /// The keys traffic uses (for [`final_read`]).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The member list as traffic follows it.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Turns the contention phase on or off: while on, clients send as often as
    /// [`Contention::op_interval`] over the first [`Contention::keys`] keys.
    pub fn contend(&self, on: bool) {
        self.hot.0.store(on, Ordering::Relaxed);
    }

    /// Stops every client, waits for their operations in flight to finish (each bounded by
    /// the operation timeout), lets every watcher confirm delivery up to the newest write
    /// acknowledged, and returns the history.
    pub async fn stop(self) -> History {
        let _ = self.stop.send(true);
        loop {
            let next = self
                .tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clients
                .pop();
            let Some(task) = next else { break };
            if let Err(e) = task.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        let newest = self
            .recorder
            .history()
            .operations
            .iter()
            .filter(|op| op.is_acknowledged_write())
            .filter_map(|op| op.outcome.result().map(|r| r.revision()))
            .max()
            .unwrap_or(0);
        self.target.set(newest);
        let _ = self.stop_watchers.send(true);
        let watchers = std::mem::take(
            &mut self
                .tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .watchers,
        );
        for task in watchers {
            if let Err(e) = task.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        self.recorder.history()
    }
}

impl Drop for TrafficHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.stop_watchers.send(true);
    }
}

/// How often a client issues an operation (at most), and how long one may take; during a
/// contention phase, as often as it says.
#[derive(Clone)]
struct Pace {
    interval: Duration,
    timeout: Duration,
    hot: Option<(Hot, Contention)>,
}

impl Pace {
    fn steady(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            hot: None,
        }
    }

    /// The interval now, and the keys in play when contending.
    fn now(&self) -> (Duration, Option<usize>) {
        match &self.hot {
            Some((hot, contention)) if hot.is_on() => {
                (contention.op_interval, Some(contention.keys))
            }
            _ => (self.interval, None),
        }
    }
}

/// One client: a sequential process issuing its workload's operations until told to stop
/// (or aborted), recording every try; `log`, when given, is kept as a writer's view.
async fn run_client(
    id: ClientId,
    mut workload: Workload,
    mut route: Route,
    pace: Pace,
    recorder: Recorder,
    mut stopped: watch::Receiver<bool>,
    log: Option<Arc<Mutex<WriterLog>>>,
) {
    let started = Instant::now();
    let mut last_ack = started;
    let mut next_at = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => {}
            _ = tokio::time::sleep_until(next_at) => {}
        }
        if *stopped.borrow() {
            return;
        }
        let (interval, hot_keys) = pace.now();
        next_at = Instant::now() + interval;
        let (key, kind) = workload.next(id, hot_keys);
        let sent = route.send(&recorder, id, &key, &kind, pace.timeout).await;
        if let Some(answer) = &sent.answer {
            workload.saw(&answer.seen);
        }
        if let Some(log) = &log {
            let mut g = log.lock().unwrap_or_else(|e| e.into_inner());
            match sent.answered_by {
                Some(endpoint) => {
                    let now = Instant::now();
                    g.longest_gap = g.longest_gap.max(now - last_ack);
                    last_ack = now;
                    g.acked.push(key);
                    *g.acked_by.entry(endpoint).or_default() += 1;
                }
                None => g.failures.push((started.elapsed(), key, sent.last_error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpKind;

    #[test]
    fn a_seed_replays_each_clients_operation_mix() {
        let config = TrafficConfig {
            seed: 42,
            ..TrafficConfig::default()
        };
        let plan = |client| {
            let mut p = ClientPlan::new(&config, client);
            (0..200).map(|_| p.next_op()).collect::<Vec<_>>()
        };
        assert_eq!(plan(0), plan(0));
        assert_ne!(plan(0), plan(1), "clients draw from different streams");
        let other_seed = TrafficConfig {
            seed: 43,
            ..config.clone()
        };
        let mut p = ClientPlan::new(&other_seed, 0);
        let other: Vec<_> = (0..200).map(|_| p.next_op()).collect();
        assert_ne!(plan(0), other);
        // Every kind shows up with the default weights.
        let kinds: std::collections::HashSet<OpChoice> = plan(3).iter().map(|(_, c)| *c).collect();
        assert_eq!(kinds.len(), 8);
        assert!(plan(2).iter().all(|(k, _)| *k < config.keys));
    }

    #[test]
    fn connect_failures_are_certain_and_timeouts_are_not() {
        let refused = etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
            "error trying to connect: tcp connect error: Connection refused (os error 111)",
        ));
        assert!(certainly_not_sent(&refused));
        let reset = etcd_client::Error::GRpcStatus(tonic::Status::unknown(
            "h2 protocol error: error reading a body from connection",
        ));
        assert!(!certainly_not_sent(&reset));
        let timeout = etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
            "etcdserver: request timed out",
        ));
        assert!(!certainly_not_sent(&timeout));
    }

    #[test]
    fn contention_narrows_the_keys_and_transactions_span_two() {
        let config = TrafficConfig {
            seed: 9,
            ..TrafficConfig::default()
        };
        let shared = Shared {
            config: Arc::new(config.clone()),
            keys: config.key_names(),
            recorder: Recorder::new(),
            hot: Hot::default(),
        };
        let mut workload = shared.workload(3);
        let mut txns = 0;
        for _ in 0..2000 {
            let (key, kind) = workload.next(3, Some(2));
            match kind {
                OpKind::Range { .. } => assert_eq!(key, config.key_prefix),
                OpKind::Txn { writes } => {
                    txns += 1;
                    let keys: Vec<&str> = writes.iter().map(|w| w.key.as_str()).collect();
                    assert_eq!(keys, ["t/0", "t/1"], "a transaction over both hot keys");
                }
                _ => assert!(key == "t/0" || key == "t/1", "{key} is not a hot key"),
            }
        }
        assert!(txns > 0);
        // Every value written is unique, across kinds.
        let mut workload = shared.workload(4);
        let mut values = std::collections::HashSet::new();
        for _ in 0..2000 {
            let (_, kind) = workload.next(4, None);
            let written: Vec<String> = match kind {
                OpKind::Txn { writes } => writes.into_iter().map(|w| w.new).collect(),
                other => other
                    .written_value()
                    .map(str::to_string)
                    .into_iter()
                    .collect(),
            };
            for v in written {
                assert!(values.insert(v.clone()), "{v} written twice");
            }
        }
    }
}
