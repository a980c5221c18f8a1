//! One client's operations: what it issues next ([`Workload`]), where it sends them
//! ([`Route`]), and how each answer or failure is recorded.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue as EtcdKeyValue, Txn, TxnOp,
    TxnOpResponse,
};
use tokio::time::Instant;

use super::{ClientPlan, OpChoice};
use crate::{
    clients::tls_only,
    history::{ClientId, KeyValue, OpKind, OpResult, PendingOp, Recorder, TxnWrite},
};

/// What one client issues: the seeded mix over the shared keys (checked by the checker), or
/// a put of a fresh key each time (a steady application writer, [`super::Writer`]).
pub(super) enum Workload {
    /// The client's seeded plan over `keys` (under `prefix`).
    Mixed {
        plan: ClientPlan,
        keys: Vec<String>,
        prefix: String,
        /// The value this client last saw per key, for its compare-and-swaps.
        last_seen: BTreeMap<String, Option<String>>,
        /// Values written so far (each value is `c<client>-<seq>`).
        seq: u64,
    },
    /// `<prefix><n>` = `v<n>`, n counting from 0.
    FreshKeys { prefix: String, next: u64 },
}

impl Workload {
    /// The next operation: its key (a range's prefix, a transaction's first key) and kind.
    /// `hot_keys`, during a contention phase, narrows the keys to the first few.
    pub(super) fn next(&mut self, id: ClientId, hot_keys: Option<usize>) -> (String, OpKind) {
        match self {
            Workload::Mixed {
                plan,
                keys,
                prefix,
                last_seen,
                seq,
            } => {
                let (key_index, choice) = plan.next_op();
                let span = hot_keys.unwrap_or(keys.len()).clamp(1, keys.len());
                let key = keys[key_index % span].clone();
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
                    OpChoice::LinearizableRange | OpChoice::SerializableRange => {
                        return (
                            prefix.clone(),
                            OpKind::Range {
                                linearizable: choice == OpChoice::LinearizableRange,
                            },
                        );
                    }
                    OpChoice::Txn => {
                        // This key and the next: two keys that other transactions share.
                        let other = keys[(key_index + 1) % span].clone();
                        let mut pair = [key.clone(), other];
                        pair.sort();
                        let writes: Vec<TxnWrite> = pair
                            .iter()
                            .map(|k| TxnWrite {
                                key: k.clone(),
                                expected: last_seen.get(k).cloned().flatten(),
                                new: fresh_value(),
                            })
                            .collect();
                        if writes[0].key == writes[1].key {
                            // One key only (a single key in play): a compare-and-swap.
                            let w = &writes[0];
                            return (
                                w.key.clone(),
                                OpKind::CompareAndSwap {
                                    expected: w.expected.clone(),
                                    new: w.new.clone(),
                                },
                            );
                        }
                        return (pair[0].clone(), OpKind::Txn { writes });
                    }
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

    /// Notes what an answered operation revealed of each key.
    pub(super) fn saw(&mut self, seen: &[(String, Option<String>)]) {
        if let Workload::Mixed { last_seen, .. } = self {
            for (key, value) in seen {
                last_seen.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Endpoints asked for before every operation (members come and go).
pub(super) type Endpoints = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Where a client's TLS is read from again before each new connection (certificates that
/// rotate, a CA bundle that changes).
pub(super) type TlsSource = Arc<dyn Fn() -> Option<etcd_client::TlsOptions> + Send + Sync>;

/// Where one client's operations go.
pub(super) enum Route {
    /// One etcd client over fixed endpoints (one, for a client pinned to a member); each
    /// operation is sent once, within the operation timeout.
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
        /// When given, `tls` is read from it again for every new connection, and a client
        /// whose try failed is dropped (its next try connects anew with what it reads).
        reload_tls: Option<TlsSource>,
        clients: HashMap<String, Client>,
        good: BTreeSet<String>,
        sent: usize,
    },
}

/// How one operation of a client ended, over all its tries.
pub(super) struct Sent {
    /// The answer, when an endpoint gave one.
    pub(super) answer: Option<Answer>,
    /// The endpoint that answered.
    pub(super) answered_by: Option<String>,
    /// The last error, when none answered.
    pub(super) last_error: String,
}

impl Route {
    pub(super) async fn send(
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
                reload_tls,
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
                    // A try after the first writes values of its own: every value stays
                    // written by one operation, which the checker needs to tell which
                    // write a read saw.
                    let kind = retried(kind, i);
                    let pending = recorder.call(id, key, kind.clone());
                    let client = match clients.get(endpoint) {
                        Some(c) => c.clone(),
                        None => match Client::connect(
                            [endpoint.as_str()],
                            tls_only(&match reload_tls {
                                Some(read) => read(),
                                None => tls.clone(),
                            }),
                        )
                        .await
                        {
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
                        tokio::time::timeout(budget, execute(&mut client, key, &kind)).await;
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
                    if reload_tls.is_some() {
                        clients.remove(endpoint);
                    }
                }
                Sent::refused(last_error)
            }
        }
    }
}

/// `kind` as try `attempt` sends it: from the second try on, every value it writes gets
/// the suffix `-r<attempt>`.
fn retried(kind: &OpKind, attempt: usize) -> OpKind {
    let mut kind = kind.clone();
    if attempt == 0 {
        return kind;
    }
    let fresh = |v: &mut String| v.push_str(&format!("-r{attempt}"));
    match &mut kind {
        OpKind::Put { value } => fresh(value),
        OpKind::CompareAndSwap { new, .. } => fresh(new),
        OpKind::Txn { writes } => writes.iter_mut().for_each(|w| fresh(&mut w.new)),
        OpKind::Get { .. } | OpKind::Delete | OpKind::Range { .. } => {}
    }
    kind
}

impl Sent {
    pub(super) fn refused(error: String) -> Self {
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
                pending.ok_from(answer.result.clone(), answer.member);
                Self {
                    answer: Some(answer),
                    answered_by: None,
                    last_error: String::new(),
                }
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

/// What etcd answered, the member that answered, and the keys' values it revealed.
pub(super) struct Answer {
    pub(super) result: OpResult,
    pub(super) member: Option<u64>,
    pub(super) seen: Vec<(String, Option<String>)>,
}

fn key_value(kv: &EtcdKeyValue) -> (String, KeyValue) {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        KeyValue {
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            mod_revision: kv.mod_revision(),
        },
    )
}

pub(super) async fn execute(
    client: &mut Client,
    key: &str,
    kind: &OpKind,
) -> Result<Answer, etcd_client::Error> {
    let revision = |h: Option<&etcd_client::ResponseHeader>| h.map_or(0, |h| h.revision());
    let member = |h: Option<&etcd_client::ResponseHeader>| h.map(|h| h.member_id());
    match kind {
        OpKind::Put { value } => {
            let resp = client.put(key, value.as_str(), None).await?;
            Ok(Answer {
                result: OpResult::Written {
                    revision: revision(resp.header()),
                    deleted: None,
                },
                member: member(resp.header()),
                seen: vec![(key.to_string(), Some(value.clone()))],
            })
        }
        OpKind::Get { linearizable } => {
            let options = (!linearizable).then(|| GetOptions::new().with_serializable());
            let resp = client.get(key, options).await?;
            let kv = resp.kvs().first().map(key_value);
            let value = kv.as_ref().map(|(_, kv)| kv.value.clone());
            Ok(Answer {
                result: OpResult::Read {
                    value: value.clone(),
                    mod_revision: kv.map(|(_, kv)| kv.mod_revision),
                    revision: revision(resp.header()),
                },
                member: member(resp.header()),
                seen: if *linearizable {
                    vec![(key.to_string(), value)]
                } else {
                    Vec::new()
                },
            })
        }
        OpKind::Delete => {
            let resp = client.delete(key, None).await?;
            Ok(Answer {
                result: OpResult::Written {
                    revision: revision(resp.header()),
                    deleted: Some(resp.deleted()),
                },
                member: member(resp.header()),
                seen: vec![(key.to_string(), None)],
            })
        }
        OpKind::Range { linearizable } => {
            let mut options = GetOptions::new().with_prefix();
            if !linearizable {
                options = options.with_serializable();
            }
            let resp = client.get(key, Some(options)).await?;
            let kvs: BTreeMap<String, KeyValue> = resp.kvs().iter().map(key_value).collect();
            Ok(Answer {
                seen: Vec::new(),
                result: OpResult::Ranged {
                    revision: revision(resp.header()),
                    kvs,
                },
                member: member(resp.header()),
            })
        }
        OpKind::CompareAndSwap { expected, new } => {
            let writes = [TxnWrite {
                key: key.to_string(),
                expected: expected.clone(),
                new: new.clone(),
            }];
            transact(client, &writes).await
        }
        OpKind::Txn { writes } => transact(client, writes).await,
    }
}

/// If every key holds its expected value, put each its new one; otherwise read them back.
async fn transact(client: &mut Client, writes: &[TxnWrite]) -> Result<Answer, etcd_client::Error> {
    let compares: Vec<Compare> = writes
        .iter()
        .map(|w| match &w.expected {
            Some(v) => Compare::value(w.key.as_str(), CompareOp::Equal, v.as_str()),
            None => Compare::version(w.key.as_str(), CompareOp::Equal, 0),
        })
        .collect();
    let puts: Vec<TxnOp> = writes
        .iter()
        .map(|w| TxnOp::put(w.key.as_str(), w.new.as_str(), None))
        .collect();
    let gets: Vec<TxnOp> = writes
        .iter()
        .map(|w| TxnOp::get(w.key.as_str(), None))
        .collect();
    let txn = Txn::new().when(compares).and_then(puts).or_else(gets);
    let resp = client.txn(txn).await?;
    let header = resp.header();
    let mut current = BTreeMap::new();
    let seen = if resp.succeeded() {
        writes
            .iter()
            .map(|w| (w.key.clone(), Some(w.new.clone())))
            .collect()
    } else {
        let mut seen = Vec::new();
        for (w, r) in writes.iter().zip(resp.op_responses()) {
            if let TxnOpResponse::Get(get) = r {
                let kv = get.kvs().first().map(|kv| key_value(kv).1);
                seen.push((w.key.clone(), kv.as_ref().map(|kv| kv.value.clone())));
                current.insert(w.key.clone(), kv);
            }
        }
        seen
    };
    Ok(Answer {
        result: OpResult::Swapped {
            succeeded: resp.succeeded(),
            revision: header.map_or(0, |h| h.revision()),
            current,
        },
        member: header.map(|h| h.member_id()),
        seen,
    })
}

/// The error with its sources, one line.
pub(super) fn error_chain(e: &etcd_client::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_write_writes_values_of_its_own() {
        let put = OpKind::Put {
            value: "c1-7".into(),
        };
        assert_eq!(retried(&put, 0), put);
        assert_eq!(
            retried(&put, 2),
            OpKind::Put {
                value: "c1-7-r2".into()
            }
        );
        let txn = OpKind::Txn {
            writes: vec![TxnWrite {
                key: "t/0".into(),
                expected: Some("c0-1".into()),
                new: "c1-8".into(),
            }],
        };
        let OpKind::Txn { writes } = retried(&txn, 1) else {
            panic!("a transaction stays one");
        };
        assert_eq!(writes[0].new, "c1-8-r1");
        assert_eq!(
            writes[0].expected.as_deref(),
            Some("c0-1"),
            "compares unchanged"
        );
        let get = OpKind::Get { linearizable: true };
        assert_eq!(retried(&get, 3), get);
    }
}
