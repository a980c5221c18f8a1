//! What a watch delivered: one [`WatchSession`] per stream opened, from the revision it
//! asked for to how it ended.

use serde::{Deserialize, Serialize};

use super::ClientId;

/// One event a watch delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The key.
    pub key: String,
    /// The revision of the write (a put's mod revision, a delete's revision).
    pub revision: i64,
    /// The value put; `None` for a delete.
    pub value: Option<String>,
    /// Which response of the session carried it (counting from 0): a revision's events
    /// must come in one response.
    pub response: u32,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchEnd {
    /// etcd canceled it because the revision asked for was compacted.
    Compacted {
        /// The compaction revision etcd reported; the watcher resumes there.
        compact_revision: i64,
    },
    /// etcd canceled it for another reason.
    Canceled {
        /// etcd's reason.
        reason: String,
    },
    /// The stream broke (member gone, connection lost); the watcher resumes after the
    /// last event on another stream.
    Broken {
        /// What broke it.
        error: String,
    },
    /// The watcher closed it to open another from a revision it chose.
    Reopened,
    /// Traffic stopped: the watcher asked for progress until etcd confirmed it had
    /// delivered everything up to `target` (the newest write acknowledged), or gave up.
    Drained {
        /// The revision every event up to which must have been delivered.
        target: i64,
        /// The highest revision etcd confirmed (an event's, or a progress notification's).
        reached: i64,
    },
}

/// One watch stream, from its open to its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSession {
    /// The watcher (a client id of the history, apart from the operations' clients).
    pub watcher: ClientId,
    /// The prefix watched.
    pub prefix: String,
    /// The revision asked for (events from it on).
    pub start_revision: i64,
    /// The endpoint it was opened on.
    pub endpoint: String,
    /// When it was opened and when it ended, nanoseconds since the history's start.
    pub opened: u64,
    /// When it ended.
    pub closed: u64,
    /// Every event, in the order delivered.
    pub events: Vec<WatchEvent>,
    /// The revisions of the progress notifications received, in order: everything up to
    /// each was delivered before it.
    pub progress: Vec<i64>,
    /// How it ended.
    pub end: WatchEnd,
}

impl WatchSession {
    /// The highest revision up to which this session must have delivered every event:
    /// its last event's or the last progress notification's.
    pub fn covered_until(&self) -> i64 {
        let events = self.events.last().map_or(0, |e| e.revision);
        let progress = self.progress.iter().copied().max().unwrap_or(0);
        let drained = match self.end {
            WatchEnd::Drained { reached, .. } => reached,
            _ => 0,
        };
        events.max(progress).max(drained)
    }
}
