//! Watches a cluster's member list while a test runs, recording what the safety
//! invariants speak of: how many learners and members existed at once.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::task::JoinHandle;

use crate::clients::tls_only;

/// What the watcher saw.
#[derive(Clone, Debug, Default)]
pub struct MembershipHistory {
    /// Most learners seen in one member list.
    pub max_learners: usize,
    /// Most members seen in one member list.
    pub max_members: usize,
    /// Member lists read.
    pub samples: usize,
    /// Every distinct member id seen.
    pub ids_seen: Vec<u64>,
}

/// Polls the member list of the cluster reachable at the endpoints `endpoints()` returns.
pub struct MembershipWatcher {
    history: Arc<Mutex<MembershipHistory>>,
    task: JoinHandle<()>,
}

impl MembershipWatcher {
    /// Starts polling every 50 ms.
    pub fn start(endpoints: impl Fn() -> Vec<String> + Send + 'static) -> Self {
        Self::start_tls(endpoints, None)
    }

    /// As [`MembershipWatcher::start`], over TLS when given.
    pub fn start_tls(
        endpoints: impl Fn() -> Vec<String> + Send + 'static,
        tls: Option<etcd_client::TlsOptions>,
    ) -> Self {
        let history = Arc::new(Mutex::new(MembershipHistory::default()));
        let h = Arc::clone(&history);
        let task = tokio::spawn(async move {
            loop {
                for ep in endpoints() {
                    let Ok(Ok(mut c)) = tokio::time::timeout(
                        Duration::from_millis(500),
                        etcd_client::Client::connect([ep.as_str()], tls_only(&tls)),
                    )
                    .await
                    else {
                        continue;
                    };
                    if let Ok(Ok(list)) =
                        tokio::time::timeout(Duration::from_millis(500), c.member_list()).await
                    {
                        let members = list.members();
                        let learners = members.iter().filter(|m| m.is_learner()).count();
                        let mut g = h.lock().unwrap_or_else(|e| e.into_inner());
                        g.samples += 1;
                        g.max_learners = g.max_learners.max(learners);
                        g.max_members = g.max_members.max(members.len());
                        for m in members {
                            if !g.ids_seen.contains(&m.id()) {
                                g.ids_seen.push(m.id());
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { history, task }
    }

    /// What was seen so far.
    pub fn history(&self) -> MembershipHistory {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for MembershipWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
