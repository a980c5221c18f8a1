//! Client traffic against a real etcd cluster, recorded as a [`History`] for the checker.
//!
//! Where it sits: a test starts a cluster, starts [`Traffic`], injects faults (kills,
//! partitions, restarts, upgrades), stops the traffic ([`TrafficHandle::stop`]), takes a
//! [`final_read`] and hands all of it to [`crate::checker::check`]; [`hash_kv_all`] and
//! [`crate::checker::compare_hashes`] then check the members agree byte for byte.
//!
//! Each client is a tokio task issuing one operation at a time (a sequential process, as
//! the checker expects), at most one every [`TrafficConfig::op_interval`]. Some clients are
//! pinned to one endpoint each, so a fault on that member shows in their operations; the
//! others use every endpoint. Keys are few (`<prefix><k>`) so clients collide; every
//! written value is unique (`c<client>-<seq>`), which lets the checker tell which write a
//! read observed. Each client draws its operations from its own stream of the seeded
//! generator, so a failing seed replays the same operation mix (timing, and so the
//! results, will differ).
//!
//! An operation that times out or loses its connection is recorded `Unknown`; it is
//! recorded `Failed` only when it certainly never reached etcd (the connection could not
//! be made). Anything in doubt is `Unknown`: claiming `Failed` for a write that was in
//! fact applied would make the checker report a violation that etcd did not commit.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse,
};
use thiserror::Error;
use tokio::{sync::watch, task::JoinHandle, time::Instant};

mod writer;

pub use writer::{
    WRITE_PREFIX, WRITE_TIMEOUT, Writer, WriterLog, count_missing_acked, verify_acked,
    verify_acked_tls,
};

use crate::{
    checker::MemberHash,
    clients::tls_only,
    history::{ClientId, FinalRead, FinalValue, History, OpKind, OpResult, PendingOp, Recorder},
    rng::SeededRng,
};

/// How long [`Traffic::start`] waits for the cluster to answer the initial reads.
const INITIAL_READ_WITHIN: Duration = Duration::from_secs(30);

/// Pause between retries of a read that failed (final and initial reads).
const READ_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long one `HashKV` (or the revision lookup before it) may take.
const HASH_KV_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl Default for OpMix {
    fn default() -> Self {
        Self {
            put: 30,
            linearizable_get: 35,
            serializable_get: 10,
            compare_and_swap: 20,
            delete: 5,
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

/// How to run traffic.
#[derive(Clone, Debug)]
pub struct TrafficConfig {
    /// Seeds every client's operation mix.
    pub seed: u64,
    /// Clients pinned to one endpoint each (round robin over the endpoints).
    pub pinned_clients: usize,
    /// Clients using every endpoint.
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
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            pinned_clients: 2,
            shared_clients: 2,
            keys: 8,
            key_prefix: "t/".into(),
            op_interval: Duration::from_millis(5),
            op_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            mix: OpMix::default(),
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

/// Starts traffic.
pub struct Traffic;

impl Traffic {
    /// Reads the keys' initial values (waiting up to 30 s for the cluster to answer), then
    /// starts the clients. Must run inside a tokio runtime.
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
        for (key, value) in initial.keys {
            recorder.set_initial(&key, value.map(|v| v.value));
        }
        let (stop, stopped) = watch::channel(false);
        let clients = config.pinned_clients + config.shared_clients;
        let tasks = (0..clients)
            .map(|i| {
                let client_endpoints = if i < config.pinned_clients {
                    vec![endpoints[i % endpoints.len()].clone()]
                } else {
                    endpoints.to_vec()
                };
                let id = ClientId::try_from(i).unwrap_or(ClientId::MAX);
                let workload = Workload::Mixed {
                    plan: ClientPlan::new(&config, id),
                    keys: keys.clone(),
                    last_seen: BTreeMap::new(),
                    seq: 0,
                };
                let route = Route::Fixed {
                    endpoints: client_endpoints,
                    options: config.connect_options(),
                    client: None,
                };
                tokio::spawn(run_client(
                    id,
                    workload,
                    route,
                    Pace {
                        interval: config.op_interval,
                        timeout: config.op_timeout,
                    },
                    recorder.clone(),
                    stopped.clone(),
                    None,
                ))
            })
            .collect();
        Ok(TrafficHandle {
            recorder,
            stop,
            tasks,
            keys,
        })
    }
}

/// Running traffic; [`TrafficHandle::stop`] ends it and returns the history. Dropping the
/// handle stops the clients without waiting for them.
pub struct TrafficHandle {
    recorder: Recorder,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    keys: Vec<String>,
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

    /// Stops every client, waits for their operations in flight to finish (each bounded by
    /// the operation timeout), and returns the history.
    pub async fn stop(mut self) -> History {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
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
    }
}

/// What one client issues: the seeded mix over the shared keys (checked by the checker), or
/// a put of a fresh key each time (a steady application writer, [`Writer`]).
enum Workload {
    /// The client's seeded plan over `keys`.
    Mixed {
        plan: ClientPlan,
        keys: Vec<String>,
        /// The value this client last saw per key, for its compare-and-swaps.
        last_seen: BTreeMap<String, Option<String>>,
        /// Values written so far (each value is `c<client>-<seq>`).
        seq: u64,
    },
    /// `<prefix><n>` = `v<n>`, n counting from 0.
    FreshKeys { prefix: String, next: u64 },
}

impl Workload {
    /// The next operation.
    fn next(&mut self, id: ClientId) -> (String, OpKind) {
        match self {
            Workload::Mixed {
                plan,
                keys,
                last_seen,
                seq,
            } => {
                let (key_index, choice) = plan.next_op();
                let key = keys[key_index % keys.len()].clone();
                let mut fresh_value = || {
                    *seq += 1;
                    format!("c{id}-{seq}")
                };
                let kind = match choice {
                    OpChoice::Put => OpKind::Put {
                        value: fresh_value(),
                    },
                    OpChoice::LinearizableGet => OpKind::Get { linearizable: true },
                    OpChoice::SerializableGet => OpKind::Get {
                        linearizable: false,
                    },
                    OpChoice::CompareAndSwap => OpKind::CompareAndSwap {
                        expected: last_seen.get(&key).cloned().flatten(),
                        new: fresh_value(),
                    },
                    OpChoice::Delete => OpKind::Delete,
                };
                (key, kind)
            }
            Workload::FreshKeys { prefix, next } => {
                let n = *next;
                *next += 1;
                (
                    format!("{prefix}{n:08}"),
                    OpKind::Put {
                        value: format!("v{n}"),
                    },
                )
            }
        }
    }

    /// Notes what an answered operation revealed of `key`.
    fn saw(&mut self, key: &str, seen: Option<String>) {
        if let Workload::Mixed { last_seen, .. } = self {
            last_seen.insert(key.to_string(), seen);
        }
    }
}

/// Endpoints asked for before every operation (members come and go).
type Endpoints = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Where one client's operations go.
enum Route {
    /// One etcd client over fixed endpoints (the client library spreads requests over
    /// them); each operation is sent once, within the operation timeout.
    Fixed {
        endpoints: Vec<String>,
        options: ConnectOptions,
        client: Option<Box<Client>>,
    },
    /// The live endpoints, tried in turn until one acknowledges, all within the operation
    /// timeout; every try is an operation of the history. Endpoints whose last try succeeded
    /// go first; every tenth operation probes another first, so a member that joins gets
    /// traffic too.
    Failover {
        endpoints: Endpoints,
        tls: Option<etcd_client::TlsOptions>,
        clients: HashMap<String, Client>,
        good: BTreeSet<String>,
        sent: usize,
    },
}

/// How one operation of a client ended, over all its tries.
struct Sent {
    /// The answer, when an endpoint gave one.
    answer: Option<Answer>,
    /// The endpoint that answered.
    answered_by: Option<String>,
    /// The last error, when none answered.
    last_error: String,
}

impl Route {
    async fn send(
        &mut self,
        recorder: &Recorder,
        id: ClientId,
        key: &str,
        kind: &OpKind,
        op_timeout: Duration,
    ) -> Sent {
        match self {
            Route::Fixed {
                endpoints,
                options,
                client,
            } => {
                let pending = recorder.call(id, key, kind.clone());
                let etcd = match client {
                    Some(c) => c,
                    None => match Client::connect(&*endpoints, Some(options.clone())).await {
                        Ok(c) => client.insert(Box::new(c)),
                        Err(e) => {
                            let error = format!("connecting to {}: {e}", endpoints.join(","));
                            pending.failed(error.clone());
                            return Sent::refused(error);
                        }
                    },
                };
                let outcome = tokio::time::timeout(op_timeout, execute(etcd, key, kind)).await;
                let sent = Sent::record(pending, outcome, op_timeout);
                Sent {
                    answered_by: sent.answer.as_ref().map(|_| endpoints.join(",")),
                    ..sent
                }
            }
            Route::Failover {
                endpoints,
                tls,
                clients,
                good,
                sent,
            } => {
                let n = *sent;
                *sent += 1;
                let (mut preferred, mut others): (Vec<String>, Vec<String>) =
                    endpoints().into_iter().partition(|e| good.contains(e));
                rotate(&mut preferred, n);
                rotate(&mut others, n);
                let probe = n % 10 == 0 && !others.is_empty();
                let order: Vec<String> = if probe {
                    others
                        .iter()
                        .take(1)
                        .chain(&preferred)
                        .chain(others.iter().skip(1))
                        .cloned()
                        .collect()
                } else {
                    preferred.iter().chain(&others).cloned().collect()
                };
                let deadline = Instant::now() + op_timeout;
                let mut last_error = String::from("no live endpoint");
                for (i, endpoint) in order.iter().enumerate() {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    let left = deadline - now;
                    // The last candidate gets whatever time is left; the others a share of it.
                    let budget = if i + 1 == order.len() {
                        left
                    } else if good.contains(endpoint) {
                        left.min(Duration::from_millis(1200))
                    } else {
                        left.min(Duration::from_millis(400))
                    };
                    let pending = recorder.call(id, key, kind.clone());
                    let client = match clients.get(endpoint) {
                        Some(c) => c.clone(),
                        None => match Client::connect([endpoint.as_str()], tls_only(tls)).await {
                            Ok(c) => {
                                clients.insert(endpoint.clone(), c.clone());
                                c
                            }
                            Err(e) => {
                                last_error = format!("{endpoint}: {e}");
                                pending.failed(last_error.clone());
                                continue;
                            }
                        },
                    };
                    let mut client = client;
                    let outcome =
                        tokio::time::timeout(budget, execute(&mut client, key, kind)).await;
                    let tried = Sent::record(pending, outcome, budget);
                    if tried.answer.is_some() {
                        good.insert(endpoint.clone());
                        return Sent {
                            answered_by: Some(endpoint.clone()),
                            ..tried
                        };
                    }
                    last_error = format!("{endpoint}: {}", tried.last_error);
                    good.remove(endpoint);
                }
                Sent::refused(last_error)
            }
        }
    }
}

impl Sent {
    fn refused(error: String) -> Self {
        Self {
            answer: None,
            answered_by: None,
            last_error: error,
        }
    }

    /// Records how one try ended: no answer in time or a lost connection is `Unknown`,
    /// `Failed` only when the request certainly never reached etcd.
    fn record(
        pending: PendingOp,
        outcome: Result<Result<Answer, etcd_client::Error>, tokio::time::error::Elapsed>,
        within: Duration,
    ) -> Self {
        match outcome {
            Err(_) => {
                let error = format!("no answer within {within:?}");
                pending.unknown(error.clone());
                Self::refused(error)
            }
            Ok(Err(e)) => {
                let error = error_chain(&e);
                if certainly_not_sent(&e) {
                    pending.failed(error.clone());
                } else {
                    pending.unknown(error.clone());
                }
                Self::refused(error)
            }
            Ok(Ok(answer)) => {
                pending.ok(answer.result.clone());
                Self {
                    answer: Some(answer),
                    answered_by: None,
                    last_error: String::new(),
                }
            }
        }
    }
}

/// How often a client issues an operation (at most), and how long one may take.
#[derive(Clone, Copy, Debug)]
struct Pace {
    interval: Duration,
    timeout: Duration,
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
    let mut ticker = tokio::time::interval(pace.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => {}
            _ = ticker.tick() => {}
        }
        if *stopped.borrow() {
            return;
        }
        let (key, kind) = workload.next(id);
        let sent = route.send(&recorder, id, &key, &kind, pace.timeout).await;
        if let Some(seen) = sent.answer.as_ref().and_then(|a| a.seen.clone()) {
            workload.saw(&key, seen);
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

fn rotate(list: &mut [String], by: usize) {
    if !list.is_empty() {
        let by = by % list.len();
        list.rotate_left(by);
    }
}

/// What etcd answered, and the key's value it revealed (if any).
struct Answer {
    result: OpResult,
    seen: Option<Option<String>>,
}

async fn execute(
    client: &mut Client,
    key: &str,
    kind: &OpKind,
) -> Result<Answer, etcd_client::Error> {
    let revision = |h: Option<&etcd_client::ResponseHeader>| h.map_or(0, |h| h.revision());
    match kind {
        OpKind::Put { value } => {
            let resp = client.put(key, value.as_str(), None).await?;
            Ok(Answer {
                result: OpResult::Written {
                    revision: revision(resp.header()),
                },
                seen: Some(Some(value.clone())),
            })
        }
        OpKind::Get { linearizable } => {
            let options = (!linearizable).then(|| GetOptions::new().with_serializable());
            let resp = client.get(key, options).await?;
            let kv = resp.kvs().first();
            let value = kv.map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            Ok(Answer {
                result: OpResult::Read {
                    value: value.clone(),
                    mod_revision: kv.map(|kv| kv.mod_revision()),
                    revision: revision(resp.header()),
                },
                seen: linearizable.then_some(value),
            })
        }
        OpKind::Delete => {
            let resp = client.delete(key, None).await?;
            Ok(Answer {
                result: OpResult::Written {
                    revision: revision(resp.header()),
                },
                seen: Some(None),
            })
        }
        OpKind::CompareAndSwap { expected, new } => {
            let compare = match expected {
                Some(v) => Compare::value(key, CompareOp::Equal, v.as_str()),
                None => Compare::version(key, CompareOp::Equal, 0),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key, new.as_str(), None)])
                .or_else([TxnOp::get(key, None)]);
            let resp = client.txn(txn).await?;
            let seen = if resp.succeeded() {
                Some(Some(new.clone()))
            } else {
                resp.op_responses().into_iter().find_map(|r| match r {
                    TxnOpResponse::Get(get) => Some(
                        get.kvs()
                            .first()
                            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                    ),
                    _ => None,
                })
            };
            Ok(Answer {
                result: OpResult::Swapped {
                    succeeded: resp.succeeded(),
                    revision: revision(resp.header()),
                },
                seen,
            })
        }
    }
}

/// The error with its sources, one line.
fn error_chain(e: &etcd_client::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// True only when the request certainly never reached etcd: it was invalid before being
/// sent, or no connection could be made. A reset or a timeout after sending is not.
pub fn certainly_not_sent(e: &etcd_client::Error) -> bool {
    use etcd_client::Error;
    match e {
        Error::InvalidArgs(_) | Error::InvalidUri(_) | Error::EndpointError(_) => true,
        Error::GRpcStatus(_) | Error::TransportError(_) | Error::IoError(_) => {
            let text = error_chain(e).to_ascii_lowercase();
            text.contains("tcp connect error")
                || text.contains("connection refused")
                || text.contains("error trying to connect")
        }
        _ => false,
    }
}

/// Linearizable reads of every key in `keys` (with their mod revisions), retrying each
/// until it succeeds or `within` has passed. Use once traffic has stopped.
pub async fn final_read(
    endpoints: &[String],
    keys: &[String],
    within: Duration,
) -> Result<FinalRead, TrafficError> {
    if endpoints.is_empty() {
        return Err(TrafficError::NoEndpoints);
    }
    let what = |key: &str| format!("linearizable read of {key}");
    let deadline = Instant::now() + within;
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(5));
    let mut client = Client::connect(endpoints, Some(options))
        .await
        .map_err(|source| TrafficError::Etcd {
            what: "connecting".into(),
            endpoints: endpoints.join(","),
            source,
        })?;
    let mut read = FinalRead::default();
    for key in keys {
        let resp = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left, client.get(key.as_str(), None)).await;
            match attempt {
                Ok(Ok(resp)) => break resp,
                Ok(Err(source)) if Instant::now() + READ_RETRY_PAUSE >= deadline => {
                    return Err(TrafficError::Etcd {
                        what: what(key),
                        endpoints: endpoints.join(","),
                        source,
                    });
                }
                Err(_) => {
                    return Err(TrafficError::Timeout {
                        what: what(key),
                        endpoints: endpoints.join(","),
                        within,
                    });
                }
                // Retrying a read is harmless; the cluster may still be recovering.
                Ok(Err(_)) => tokio::time::sleep(READ_RETRY_PAUSE).await,
            }
        };
        if let Some(h) = resp.header() {
            read.revision = read.revision.max(h.revision());
        }
        let value = resp.kvs().first().map(|kv| FinalValue {
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            mod_revision: kv.mod_revision(),
        });
        read.keys.insert(key.clone(), value);
    }
    Ok(read)
}

/// `HashKV` of every member, each asked on its own endpoint, all at one revision:
/// `revision`, or (when `None`) the lowest current revision among the members, so that
/// every member can answer it.
pub async fn hash_kv_all(
    member_endpoints: &[String],
    revision: Option<i64>,
) -> Result<Vec<MemberHash>, TrafficError> {
    if member_endpoints.is_empty() {
        return Err(TrafficError::NoEndpoints);
    }
    let mut clients = Vec::new();
    for endpoint in member_endpoints {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(HASH_KV_TIMEOUT);
        let client = Client::connect([endpoint.as_str()], Some(options))
            .await
            .map_err(|source| TrafficError::Etcd {
                what: "connecting".into(),
                endpoints: endpoint.clone(),
                source,
            })?;
        clients.push((endpoint, client));
    }
    let revision = match revision {
        Some(r) => r,
        None => {
            let mut lowest = i64::MAX;
            for (endpoint, client) in &mut clients {
                // A serializable read answers with the member's own current revision.
                let options = Some(GetOptions::new().with_serializable());
                let resp = timed(endpoint, "reading the current revision", async {
                    client.get("\0", options).await
                })
                .await?;
                lowest = lowest.min(resp.header().map_or(0, |h| h.revision()));
            }
            lowest
        }
    };
    let mut hashes = Vec::new();
    for (endpoint, client) in &mut clients {
        let resp = timed(endpoint, &format!("HashKV at revision {revision}"), async {
            client.hash_kv(revision).await
        })
        .await?;
        hashes.push(MemberHash {
            endpoint: endpoint.clone(),
            member_id: resp.header().map_or(0, |h| h.member_id()),
            hash: resp.hash(),
            compact_revision: resp.compact_version(),
            hash_revision: resp.hash_revision(),
        });
    }
    Ok(hashes)
}

async fn timed<T>(
    endpoint: &str,
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, TrafficError> {
    match tokio::time::timeout(HASH_KV_TIMEOUT, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(TrafficError::Etcd {
            what: what.into(),
            endpoints: endpoint.into(),
            source,
        }),
        Err(_) => Err(TrafficError::Timeout {
            what: what.into(),
            endpoints: endpoint.into(),
            within: HASH_KV_TIMEOUT,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(kinds.len(), 5);
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
}
