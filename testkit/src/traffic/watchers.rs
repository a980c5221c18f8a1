//! Watchers of the traffic's keys, recorded session by session, and the compactor that
//! makes some of their sessions meet a compaction.
//!
//! A watcher watches the key prefix from a revision it chooses: at first right after the
//! traffic's initial read, after a broken stream from the revision after its last event
//! (on another member), and every few seconds it closes its stream and opens one from a
//! revision of its own choosing: a little before its last event (so events are delivered
//! again), or one already compacted, which etcd must report as such. When traffic stops,
//! each watcher asks for progress until etcd confirms it delivered everything up to the
//! newest acknowledged write.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions, WatchResponse};
use tokio::{sync::watch, time::Instant};

use super::ops::Endpoints;
use crate::{
    history::{ClientId, Recorder, WatchEnd, WatchEvent, WatchSession},
    rng::SeededRng,
};

/// How long a watcher keeps one stream before it opens another (at most; at least half).
const REOPEN_EVERY: Duration = Duration::from_secs(6);

/// How long a watcher asks for progress when traffic stops before it gives up (and is
/// reported stalled).
const DRAIN_WITHIN: Duration = Duration::from_secs(15);

/// How often a draining watcher asks for progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// How long connecting and opening a watch may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(1);

/// The revision every watch must confirm at the end (0 until traffic stops).
#[derive(Clone, Default)]
pub(super) struct DrainTarget(Arc<AtomicI64>);

impl DrainTarget {
    pub(super) fn set(&self, revision: i64) {
        self.0.store(revision, Ordering::SeqCst);
    }

    fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One watcher's settings.
pub(super) struct WatcherSpec {
    pub(super) id: ClientId,
    pub(super) prefix: String,
    /// The first session's start revision.
    pub(super) from: i64,
    pub(super) seed: u64,
}

/// A session being recorded.
struct Open {
    session: WatchSession,
    responses: u32,
}

impl Open {
    fn new(spec: &WatcherSpec, endpoint: &str, from: i64, recorder: &Recorder) -> Self {
        Self {
            session: WatchSession {
                watcher: spec.id,
                prefix: spec.prefix.clone(),
                start_revision: from,
                endpoint: endpoint.to_string(),
                opened: recorder.now(),
                closed: 0,
                events: Vec::new(),
                progress: Vec::new(),
                end: WatchEnd::Reopened,
            },
            responses: 0,
        }
    }

    /// Records a response; returns how the session ended when it did.
    fn take(&mut self, resp: &WatchResponse, next: &mut i64) -> Option<WatchEnd> {
        if resp.canceled() {
            let c = resp.compact_revision();
            return Some(if c > 0 {
                *next = c;
                WatchEnd::Compacted {
                    compact_revision: c,
                }
            } else {
                WatchEnd::Canceled {
                    reason: resp.cancel_reason().to_string(),
                }
            });
        }
        if resp.created() {
            return None;
        }
        if resp.events().is_empty() {
            if resp.compact_revision() == 0
                && let Some(h) = resp.header()
            {
                self.session.progress.push(h.revision());
            }
            return None;
        }
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            let revision = kv.mod_revision();
            self.session.events.push(WatchEvent {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                revision,
                value: match e.event_type() {
                    EventType::Put => Some(String::from_utf8_lossy(kv.value()).into_owned()),
                    EventType::Delete => None,
                },
                response: self.responses,
            });
            *next = (*next).max(revision + 1);
        }
        self.responses += 1;
        None
    }

    fn close(mut self, end: WatchEnd, recorder: &Recorder) {
        self.session.end = end;
        self.session.closed = recorder.now();
        recorder.watch_session(self.session);
    }
}

/// One watcher, until traffic stops and it drained.
pub(super) async fn run_watcher(
    spec: WatcherSpec,
    endpoints: Endpoints,
    recorder: Recorder,
    mut stopped: watch::Receiver<bool>,
    target: DrainTarget,
) {
    let mut rng = SeededRng::stream(spec.seed, u64::from(spec.id));
    let mut next = spec.from;
    let mut turn = 0usize;
    // Once traffic stopped: until when the watcher may try to drain.
    let mut drain_by: Option<Instant> = None;
    let options = ConnectOptions::new()
        .with_connect_timeout(OPEN_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1));
    loop {
        if *stopped.borrow() && drain_by.is_none() {
            drain_by = Some(Instant::now() + DRAIN_WITHIN);
        }
        if let Some(by) = drain_by
            && Instant::now() >= by
        {
            // No stream could be opened to confirm delivery: a stall.
            let open = Open::new(&spec, "", next, &recorder);
            let end = WatchEnd::Drained {
                target: target.get(),
                reached: 0,
            };
            open.close(end, &recorder);
            return;
        }
        let live = endpoints();
        if live.is_empty() {
            pause(&mut stopped, Duration::from_millis(200)).await;
            continue;
        }
        let endpoint = live[turn % live.len()].clone();
        turn += 1;
        let opened = tokio::time::timeout(OPEN_TIMEOUT * 2, async {
            let mut client = Client::connect([endpoint.as_str()], Some(options.clone())).await?;
            let watch_options = WatchOptions::new().with_prefix().with_start_revision(next);
            client
                .watch(spec.prefix.as_str(), Some(watch_options))
                .await
        })
        .await;
        let Ok(Ok(mut stream)) = opened else {
            pause(&mut stopped, Duration::from_millis(100)).await;
            continue;
        };
        let mut open = Open::new(&spec, &endpoint, next, &recorder);
        let reopen_at = Instant::now()
            + REOPEN_EVERY / 2
            + REOPEN_EVERY.mul_f64(rng.below(500) as f64 / 1000.0);
        let end = match drain_by {
            Some(by) => drain(&mut open, &mut stream, &mut next, &target, by).await,
            None => loop {
                tokio::select! {
                    _ = stopped.changed() => {
                        let by = Instant::now() + DRAIN_WITHIN;
                        drain_by = Some(by);
                        break drain(&mut open, &mut stream, &mut next, &target, by).await;
                    }
                    _ = tokio::time::sleep_until(reopen_at) => break WatchEnd::Reopened,
                    message = stream.message() => match message {
                        Ok(Some(resp)) => {
                            if let Some(end) = open.take(&resp, &mut next) {
                                break end;
                            }
                        }
                        Ok(None) => break WatchEnd::Broken { error: "the stream ended".into() },
                        Err(e) => break WatchEnd::Broken { error: e.to_string() },
                    },
                }
            },
        };
        let drained = matches!(end, WatchEnd::Drained { .. });
        if end == WatchEnd::Reopened {
            // From a revision of its own choosing: a little before its last event, or
            // (one time in three) one that may well be compacted; on the same member.
            let last = next - 1;
            next = if rng.chance(1, 3) {
                1 + rng.below(last.max(1) as u64) as i64
            } else {
                (last - rng.below(20) as i64).max(1)
            };
            turn = turn.wrapping_sub(1);
        }
        open.close(end, &recorder);
        drop(stream);
        if drained {
            return;
        }
    }
}

/// Asks for progress until etcd confirms delivery up to the target, or `by` passes.
async fn drain(
    open: &mut Open,
    stream: &mut etcd_client::WatchStream,
    next: &mut i64,
    target: &DrainTarget,
    by: Instant,
) -> WatchEnd {
    let target = target.get();
    let reached = |open: &Open| open.session.covered_until();
    while reached(open) < target && Instant::now() < by {
        if stream.request_progress().await.is_err() {
            break;
        }
        let ask_again = (Instant::now() + PROGRESS_EVERY).min(by);
        while Instant::now() < ask_again && reached(open) < target {
            match tokio::time::timeout_at(ask_again, stream.message()).await {
                Ok(Ok(Some(resp))) => {
                    if let Some(end) = open.take(&resp, next) {
                        return end;
                    }
                }
                // The stream broke: drained as far as it got (the next stream goes on).
                Ok(Ok(None)) | Ok(Err(_)) => {
                    return WatchEnd::Broken {
                        error: "the stream ended while draining".into(),
                    };
                }
                Err(_) => {}
            }
        }
    }
    WatchEnd::Drained {
        target,
        reached: reached(open),
    }
}

/// Waits `d`, or until traffic stops (once stopped, just waits).
async fn pause(stopped: &mut watch::Receiver<bool>, d: Duration) {
    if *stopped.borrow() {
        tokio::time::sleep(d).await;
        return;
    }
    tokio::select! {
        _ = stopped.changed() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Compacts the cluster every `every` to the revision it read the time before, until
/// traffic stops: watches opened from older revisions meet the compaction.
pub(super) async fn run_compactor(
    every: Duration,
    endpoints: Endpoints,
    mut stopped: watch::Receiver<bool>,
) {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    let mut previous: Option<i64> = None;
    loop {
        pause(&mut stopped, every).await;
        if *stopped.borrow() {
            return;
        }
        let live = endpoints();
        let Ok(mut client) = Client::connect(live, Some(options.clone())).await else {
            continue;
        };
        let revision = match client
            .get("\0", Some(GetOptions::new().with_serializable()))
            .await
        {
            Ok(resp) => resp.header().map_or(0, |h| h.revision()),
            Err(_) => continue,
        };
        if let Some(to) = previous.filter(|p| *p > 1) {
            // A compaction refused (already compacted further, a member down) is harmless.
            let _ = client.compact(to, None).await;
        }
        previous = Some(revision);
    }
}
