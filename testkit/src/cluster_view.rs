//! The cluster as etcd itself tells it, for verdicts that do not take the system under
//! test's word: the member list every member holds, each member's status (leader, term,
//! raft index, revision, version, errors), and, once traffic stopped, what each member
//! holds of the traffic's keys and its `HashKV`.
//!
//! [`wait_converged`] is how chaos judges a cluster converged; [`settle`] gives the
//! checker every member's own reads ([`MemberRead`]) and [`crate::checker::compare_hashes`]
//! every member's hash, each asked on that member's own client URL.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::time::Instant;

use crate::{
    checker::MemberHash,
    history::{KeyValue, MemberRead},
};

/// How long one request to one member may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a wait reads the cluster again.
const POLL: Duration = Duration::from_millis(200);

/// What one member says of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// The leader it follows (0: none).
    pub leader: u64,
    /// Its raft term.
    pub raft_term: u64,
    /// Its raft log's committed index.
    pub raft_index: u64,
    /// Its store's revision (the response header's).
    pub revision: i64,
    /// Its etcd version.
    pub version: String,
    /// What it reports wrong (alarms, for one).
    pub errors: Vec<String>,
    /// Whether it is a learner.
    pub learner: bool,
    /// The member ids of its own member list.
    pub members: BTreeSet<u64>,
}

/// One member of the list, and its status when it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Its id.
    pub id: u64,
    /// Its name (empty until it started).
    pub name: String,
    /// Its client URL.
    pub endpoint: String,
    /// Whether the list names it a learner.
    pub learner: bool,
    /// What it answered, when it did.
    pub status: Option<MemberStatus>,
}

/// The cluster as etcd tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Every member of the list, each asked on its own client URL.
    pub members: Vec<MemberView>,
}

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(REQUEST_TIMEOUT)
}

async fn connect(endpoint: &str) -> Option<Client> {
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        Client::connect([endpoint], Some(options())),
    )
    .await
    .ok()?
    .ok()
}

/// One member's status, asked on its own client URL.
pub async fn member_status(endpoint: &str) -> Option<MemberStatus> {
    let mut client = connect(endpoint).await?;
    let status = tokio::time::timeout(REQUEST_TIMEOUT, client.status())
        .await
        .ok()?
        .ok()?;
    let list = tokio::time::timeout(REQUEST_TIMEOUT, client.member_list())
        .await
        .ok()?
        .ok()?;
    Some(MemberStatus {
        leader: status.leader(),
        raft_term: status.raft_term(),
        raft_index: status.raft_index(),
        revision: status.header().map_or(0, |h| h.revision()),
        version: status.version().to_string(),
        errors: status.errors().to_vec(),
        learner: status.is_learner(),
        members: list.members().iter().map(|m| m.id()).collect(),
    })
}

impl ClusterView {
    /// Reads the member list through the first of `seeds` that answers, then asks every
    /// member listed for its status.
    pub async fn read(seeds: &[String]) -> anyhow::Result<Self> {
        let mut listed = None;
        for seed in seeds {
            let Some(mut client) = connect(seed).await else {
                continue;
            };
            if let Ok(Ok(list)) = tokio::time::timeout(REQUEST_TIMEOUT, client.member_list()).await
            {
                listed = Some(list);
                break;
            }
        }
        let list = listed.with_context(|| format!("no member list from any of {seeds:?}"))?;
        let mut members = Vec::new();
        for m in list.members() {
            let endpoint = m.client_urls().first().cloned().unwrap_or_default();
            let status = if endpoint.is_empty() {
                None
            } else {
                member_status(&endpoint).await
            };
            members.push(MemberView {
                id: m.id(),
                name: m.name().to_string(),
                endpoint,
                learner: m.is_learner(),
                status,
            });
        }
        Ok(Self { members })
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| !m.endpoint.is_empty())
            .map(|m| m.endpoint.clone())
            .collect()
    }

    /// The leader every member that answered follows, when they agree on one.
    pub fn leader(&self) -> Option<u64> {
        let leaders: BTreeSet<u64> = self
            .members
            .iter()
            .filter_map(|m| Some(m.status.as_ref()?.leader))
            .collect();
        match leaders.into_iter().collect::<Vec<_>>().as_slice() {
            [one] if *one != 0 => Some(*one),
            _ => None,
        }
    }

    /// The highest raft term a member reported.
    pub fn term(&self) -> u64 {
        self.members
            .iter()
            .filter_map(|m| Some(m.status.as_ref()?.raft_term))
            .max()
            .unwrap_or(0)
    }

    /// The member named `name`.
    pub fn named(&self, name: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Why the cluster is not `size` healthy voters on `version` that agree on their list
    /// and their leader, with nothing to report; `None` when it is.
    pub fn not_converged(&self, size: usize, version: &str) -> Option<String> {
        let ids: BTreeSet<u64> = self.members.iter().map(|m| m.id).collect();
        if self.members.len() != size {
            return Some(format!("{} members listed, not {size}", self.members.len()));
        }
        let leader = self.leader();
        for m in &self.members {
            let who = format!("{} ({:x})", m.name, m.id);
            let Some(s) = &m.status else {
                return Some(format!("{who} does not answer"));
            };
            let problem = if m.learner || s.learner {
                Some("is a learner".to_string())
            } else if s.members != ids {
                Some(format!(
                    "lists other members ({:x?} against {ids:x?})",
                    s.members
                ))
            } else if leader.is_none() || !ids.contains(&s.leader) {
                Some(format!(
                    "follows leader {:x}, not one every member agrees on",
                    s.leader
                ))
            } else if s.version != version {
                Some(format!("runs {}, not {version}", s.version))
            } else if !s.errors.is_empty() {
                Some(format!("reports {:?}", s.errors))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Some(format!("{who} {problem}"));
            }
        }
        None
    }
}

/// Waits until etcd itself shows `size` healthy voters on `version` that agree on their
/// member list and their leader, reading the list through `seeds()` (asked again at every
/// try); fails after `within` saying what was not so.
pub async fn wait_converged(
    seeds: impl Fn() -> Vec<String>,
    size: usize,
    version: &str,
    within: Duration,
) -> anyhow::Result<ClusterView> {
    let deadline = Instant::now() + within;
    loop {
        let why = match ClusterView::read(&seeds()).await {
            Ok(view) => match view.not_converged(size, version) {
                None => return Ok(view),
                Some(why) => why,
            },
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("etcd did not show {size} healthy voters on {version} within {within:?}: {why}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What every member holds once traffic stopped.
#[derive(Clone, Debug, Default)]
pub struct Settled {
    /// The revision every member reached.
    pub revision: i64,
    /// Each member's serializable reads of the keys.
    pub reads: Vec<MemberRead>,
    /// Each member's `HashKV` at that revision.
    pub hashes: Vec<MemberHash>,
}

/// Waits until every member of `view` is at one revision (all of them applied everything),
/// then reads every key of `keys` on each member alone (serializable) and asks each for
/// its `HashKV` at that revision.
pub async fn settle(
    view: &ClusterView,
    keys: &[String],
    within: Duration,
) -> anyhow::Result<Settled> {
    let endpoints = view.endpoints();
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        let client = connect(endpoint)
            .await
            .with_context(|| format!("connecting to {endpoint}"))?;
        clients.push((endpoint.clone(), client));
    }
    let serializable = || Some(GetOptions::new().with_serializable());
    let deadline = Instant::now() + within;
    let revision = loop {
        let mut revisions = BTreeMap::new();
        for (endpoint, client) in &mut clients {
            if let Ok(Ok(resp)) =
                tokio::time::timeout(REQUEST_TIMEOUT, client.get("\0", serializable())).await
            {
                revisions.insert(endpoint.clone(), resp.header().map_or(0, |h| h.revision()));
            }
        }
        let distinct: BTreeSet<i64> = revisions.values().copied().collect();
        if revisions.len() == clients.len() && distinct.len() == 1 {
            break *distinct.first().unwrap_or(&0);
        }
        if Instant::now() >= deadline {
            bail!("the members did not reach one revision within {within:?}: {revisions:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    let mut settled = Settled {
        revision,
        ..Settled::default()
    };
    for (endpoint, client) in &mut clients {
        let mut read = MemberRead {
            endpoint: endpoint.clone(),
            ..MemberRead::default()
        };
        for key in keys {
            let resp =
                tokio::time::timeout(REQUEST_TIMEOUT, client.get(key.as_str(), serializable()))
                    .await
                    .with_context(|| format!("reading {key} on {endpoint}"))?
                    .with_context(|| format!("reading {key} on {endpoint}"))?;
            if let Some(h) = resp.header() {
                read.member_id = h.member_id();
                read.revision = read.revision.max(h.revision());
            }
            let kv = resp.kvs().first().map(|kv| KeyValue {
                value: String::from_utf8_lossy(kv.value()).into_owned(),
                mod_revision: kv.mod_revision(),
            });
            read.keys.insert(key.clone(), kv);
        }
        settled.reads.push(read);
        let hash = tokio::time::timeout(REQUEST_TIMEOUT * 5, client.hash_kv(revision))
            .await
            .with_context(|| format!("HashKV on {endpoint}"))?
            .with_context(|| format!("HashKV at {revision} on {endpoint}"))?;
        settled.hashes.push(MemberHash {
            endpoint: endpoint.clone(),
            member_id: hash.header().map_or(0, |h| h.member_id()),
            hash: hash.hash(),
            compact_revision: hash.compact_version(),
            hash_revision: hash.hash_revision(),
        });
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, leader: u64) -> MemberView {
        MemberView {
            id,
            name: format!("m{id}"),
            endpoint: format!("http://127.0.0.1:{id}"),
            learner: false,
            status: Some(MemberStatus {
                leader,
                raft_term: 2,
                raft_index: 10,
                revision: 5,
                version: "3.6.15".into(),
                errors: Vec::new(),
                learner: false,
                members: [1, 2, 3].into(),
            }),
        }
    }

    fn three() -> ClusterView {
        ClusterView {
            members: vec![member(1, 2), member(2, 2), member(3, 2)],
        }
    }

    #[test]
    fn converged_only_when_every_member_agrees_and_is_well() {
        assert_eq!(three().not_converged(3, "3.6.15"), None);
        assert_eq!(three().leader(), Some(2));
        assert!(three().not_converged(5, "3.6.15").is_some(), "size");
        assert!(three().not_converged(3, "3.7.2").is_some(), "version");
        let broken: [fn(&mut ClusterView); 5] = [
            |v| v.members[0].status = None,
            |v| v.members[1].learner = true,
            |v| v.members[2].status.as_mut().unwrap().leader = 3,
            |v| v.members[0].status.as_mut().unwrap().members = [1, 2].into(),
            |v| {
                v.members[1].status.as_mut().unwrap().errors = vec!["alarm:NOSPACE".into()];
            },
        ];
        for (i, breaks) in broken.iter().enumerate() {
            let mut view = three();
            breaks(&mut view);
            assert!(
                view.not_converged(3, "3.6.15").is_some(),
                "case {i}: {view:?}"
            );
        }
    }
}
