//! Events for people, aggregated the way the events API asks: the first occurrence of an
//! event is created; the same event again (same object, type, reason, note and reporter)
//! within [`SERIES_TTL`] of the last one becomes a series on it, its count sent at once the
//! first time (2) and then at most once per refresh period ([`SERIES_REFRESH`] unless
//! set; [`EventRecorder::flush`] sends what is left). A failure repeated every second is one Event whose count grows,
//! not an Event a second.
//!
//! kube-runtime's `Recorder` aggregates too, but keys on the reason without the note (two
//! different messages of one reason would show as a series of the first) and patches on
//! every repeat.

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Client,
    api::{Api, Patch, PatchParams, PostParams},
    runtime::events::{EventType, Reporter},
};
use serde_json::json;
use tokio::time::Instant;
use tracing::debug;

/// How long after its last occurrence an event can still become (or grow) a series.
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// How often [`EventRecorder::flush`] is meant to be called.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);
/// How often a growing series' count is sent at most, by default.
pub const SERIES_REFRESH: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    warning: bool,
    reason: String,
    note: String,
}

#[derive(Debug)]
struct Entry {
    name: String,
    namespace: String,
    /// Occurrences so far.
    count: i32,
    /// The count the API server has.
    sent: i32,
    last_observed: Timestamp,
    last_seen: Instant,
    last_sent: Instant,
}

/// Publishes Events, one series per repeated event. Keep one for the life of the process:
/// its memory is what turns repeats into counts.
pub struct EventRecorder {
    client: Client,
    reporter: Reporter,
    cache: Mutex<HashMap<Key, Entry>>,
    refresh_ms: AtomicU64,
}

impl EventRecorder {
    /// A recorder publishing as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            cache: Mutex::default(),
            refresh_ms: AtomicU64::new(SERIES_REFRESH.as_millis() as u64),
        }
    }

    /// Sets how often a growing series' count is sent at most.
    pub fn set_refresh(&self, refresh: Duration) {
        self.refresh_ms
            .store(refresh.as_millis() as u64, Ordering::Relaxed);
    }

    fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms.load(Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn api(&self, namespace: &str) -> Api<Event> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Publishes one occurrence of an event about `regarding`.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let key = Key {
            regarding: (
                regarding.api_version.clone(),
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.uid.clone().or_else(|| regarding.name.clone()),
            ),
            warning: type_ == EventType::Warning,
            reason: reason.to_string(),
            note: note.clone(),
        };
        let now = Instant::now();
        let refresh = self.refresh();
        let repeat = {
            let mut cache = self.lock();
            cache.retain(|_, e| now.duration_since(e.last_seen) < SERIES_TTL);
            cache.get_mut(&key).map(|e| {
                e.count += 1;
                e.last_observed = Timestamp::now();
                e.last_seen = now;
                let due = e.sent < 2 || now.duration_since(e.last_sent) >= refresh;
                (
                    e.name.clone(),
                    e.namespace.clone(),
                    e.count,
                    e.last_observed,
                    due,
                )
            })
        };
        if let Some((name, namespace, count, observed, due)) = repeat {
            if !due {
                return Ok(());
            }
            match self.send_series(&namespace, &name, count, observed).await {
                Ok(()) => {
                    if let Some(e) = self.lock().get_mut(&key) {
                        e.sent = e.sent.max(count);
                        e.last_sent = now;
                    }
                    return Ok(());
                }
                // Gone (the API server expires Events): a new one.
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    self.lock().remove(&key);
                }
                Err(e) => return Err(e),
            }
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let observed = Timestamp::now();
        let event = Event {
            action: Some(reason.to_string()),
            reason: Some(reason.to_string()),
            event_time: Some(MicroTime(observed)),
            regarding: Some(regarding.clone()),
            note: Some(note),
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: Some(format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    observed.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        };
        let created = self
            .api(&namespace)
            .create(&PostParams::default(), &event)
            .await?;
        self.lock().insert(
            key,
            Entry {
                name: created.metadata.name.unwrap_or_default(),
                namespace,
                count: 1,
                sent: 1,
                last_observed: observed,
                last_seen: now,
                last_sent: now,
            },
        );
        Ok(())
    }

    async fn send_series(
        &self,
        namespace: &str,
        name: &str,
        count: i32,
        observed: Timestamp,
    ) -> Result<(), kube::Error> {
        let series = EventSeries {
            count,
            last_observed_time: MicroTime(observed),
        };
        self.api(namespace)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "series": series })),
            )
            .await
            .map(|_| ())
    }

    /// Sends the counts of series that grew since they were last sent, once the refresh
    /// period has passed (or the series is about to be forgotten). Called every
    /// [`FLUSH_EVERY`].
    pub async fn flush(&self) {
        let now = Instant::now();
        let refresh = self.refresh();
        let due: Vec<(Key, String, String, i32, Timestamp)> = self
            .lock()
            .iter()
            .filter(|(_, e)| {
                e.count > e.sent
                    && (now.duration_since(e.last_sent) >= refresh
                        || now.duration_since(e.last_seen) + 2 * FLUSH_EVERY >= SERIES_TTL)
            })
            .map(|(k, e)| {
                (
                    k.clone(),
                    e.name.clone(),
                    e.namespace.clone(),
                    e.count,
                    e.last_observed,
                )
            })
            .collect();
        for (key, name, namespace, count, observed) in due {
            match self.send_series(&namespace, &name, count, observed).await {
                Ok(()) => {
                    if let Some(e) = self.lock().get_mut(&key) {
                        e.sent = e.sent.max(count);
                        e.last_sent = now;
                    }
                }
                Err(e) => debug!(error = %e, event = %name, "could not update an event series"),
            }
        }
    }
}
