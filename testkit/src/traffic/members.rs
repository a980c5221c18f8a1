//! The live member list, read from etcd itself: traffic follows the cluster as members
//! join, are replaced or leave, without asking the system under test.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_client::{Client, ConnectOptions};
use tokio::sync::watch;

/// How often the member list is read.
const POLL: Duration = Duration::from_millis(300);

/// How long one member-list read may take.
const READ_TIMEOUT: Duration = Duration::from_millis(800);

/// The voters etcd lists (id to client URL), and every client URL ever seen to ask.
#[derive(Clone, Default)]
pub struct Members {
    inner: Arc<Mutex<Known>>,
}

#[derive(Default)]
struct Known {
    voters: BTreeMap<u64, String>,
    asked: BTreeSet<String>,
    reads: usize,
}

impl Members {
    /// Starts reading the member list through `seeds` (and then through every member it
    /// lists) until `stopped` turns true.
    pub(super) fn start(seeds: &[String], mut stopped: watch::Receiver<bool>) -> Self {
        let members = Self::default();
        {
            let mut known = members.lock();
            known.asked.extend(seeds.iter().cloned());
        }
        let m = members.clone();
        tokio::spawn(async move {
            loop {
                m.refresh().await;
                tokio::select! {
                    _ = stopped.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                if *stopped.borrow() {
                    return;
                }
            }
        });
        members
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the list from the first endpoint that answers (voters first).
    async fn refresh(&self) {
        let candidates: Vec<String> = {
            let known = self.lock();
            known
                .voters
                .values()
                .cloned()
                .chain(known.asked.iter().cloned())
                .collect()
        };
        let options = ConnectOptions::new()
            .with_connect_timeout(READ_TIMEOUT)
            .with_timeout(READ_TIMEOUT);
        for endpoint in candidates {
            let read = async {
                let mut client = Client::connect([endpoint.as_str()], Some(options.clone()))
                    .await
                    .ok()?;
                client.member_list().await.ok()
            };
            let Ok(Some(list)) = tokio::time::timeout(READ_TIMEOUT * 2, read).await else {
                continue;
            };
            let voters: BTreeMap<u64, String> = list
                .members()
                .iter()
                .filter(|m| !m.is_learner() && !m.name().is_empty())
                .filter_map(|m| Some((m.id(), m.client_urls().first()?.clone())))
                .collect();
            let mut known = self.lock();
            known.asked.extend(voters.values().cloned());
            known.voters = voters;
            known.reads += 1;
            return;
        }
    }

    /// The voters of the last list read, id to client URL.
    pub fn voters(&self) -> BTreeMap<u64, String> {
        self.lock().voters.clone()
    }

    /// The voters' client URLs (every URL known to answer until a list was read).
    pub fn endpoints(&self) -> Vec<String> {
        let known = self.lock();
        if known.reads == 0 {
            known.asked.iter().cloned().collect()
        } else {
            known.voters.values().cloned().collect()
        }
    }

    /// Waits until a member list was read (at most `within`): true when one was.
    pub(super) async fn wait_read(&self, within: Duration) -> bool {
        crate::wait_for("a member list read", within, || async {
            (self.lock().reads > 0).then_some(())
        })
        .await
        .is_ok()
    }
}
