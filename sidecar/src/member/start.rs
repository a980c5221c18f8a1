//! Lifecycle 1 to 4 (DESIGN.md): on start, run on the data left on disk when this member is
//! still in the cluster (1: a restart is not a membership change), wipe it when the member
//! was removed while away (2); else register, and bootstrap as the seed (4) or join as a
//! learner (3, in `join`).

use std::{sync::Arc, time::Duration};

use etcd_operator::proto::{ChangeKind, MemberPhase, RestoreSource};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, sleep, timeout},
};
use tracing::{info, instrument, warn};

use super::{Member, grant::Role, now_unix_ms};
use crate::{error::SidecarError, etcd_args::Bootstrap};

impl Member {
    /// Brings the member up: the start decision of DESIGN.md's lifecycle, retried until it
    /// succeeds. Returns once etcd runs as a member (or the member has left for good).
    #[instrument(skip_all, fields(cluster = %self.cfg.cluster, member = %self.cfg.name))]
    pub async fn start(self: &Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let result = {
                let _op = self.op.lock().await;
                self.start_once().await
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, category = e.category(), "start failed; retrying");
                    self.record_error(&e);
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn start_once(self: &Arc<Self>) -> Result<(), SidecarError> {
        if self.dir.is_removed()? {
            info!("this member left the cluster earlier; staying idle");
            self.set_phase(MemberPhase::Removed);
            return Ok(());
        }
        // An unreadable data directory stops the start here (retried, and reported as the
        // member's last error): taken for "no data" it would be wiped or bootstrapped over.
        let has_data = self.dir.has_etcd_data()?;
        // Proof either way only: see `membership`.
        let membership = if has_data {
            self.membership().await?
        } else {
            Membership::Unknown
        };
        if self.dir.is_leaving()? {
            // A leave cut short. Its wipe comes only after the member's removal: without
            // data, or on proof, the member was removed and the leave is finished.
            match (has_data, membership) {
                (false, _) | (true, Membership::Removed { .. }) => {
                    info!("a leave was cut short after this member's removal; finishing it");
                    self.finish_leaving()?;
                    self.set_phase(MemberPhase::Removed);
                    return Ok(());
                }
                (true, Membership::Member) => {
                    info!("a leave was cut short before this member's removal; it stays a member");
                    self.dir.clear_leaving()?;
                }
                (true, Membership::Unknown) => {}
            }
        }
        if has_data {
            match membership {
                Membership::Removed { cluster_id } => {
                    info!(cluster_id = %format!("{cluster_id:x}"), "this member was removed from its cluster while away (its cluster's own member list lacks it); wiping its data to rejoin");
                    etcd_operator::failpoint!("sidecar.start.before-wipe");
                    self.wipe_member_dir()?;
                    self.state.send_modify(|s| {
                        s.member_id = 0;
                        s.cluster_id = 0;
                    });
                }
                Membership::Member | Membership::Unknown => {
                    info!("restarting etcd on existing data");
                    self.run_etcd(&Bootstrap::FromData).await?;
                    self.set_phase(MemberPhase::Running);
                    return Ok(());
                }
            }
        }
        self.set_phase(MemberPhase::Starting);
        match self.register().await? {
            Role::Seed { restore } => self.bootstrap(restore.as_deref()).await,
            Role::Initial {
                initial_cluster,
                token,
            } => self.bootstrap_together(initial_cluster, token).await,
            Role::Join { endpoints } => self.join(&endpoints).await,
        }
    }

    /// With data on disk: is this member still in its cluster? Only proof says: a member
    /// list from an etcd of this member's own cluster (the cluster id in the answer's header
    /// is the one this member saved) that lists this member's id, or lacks it. Anything
    /// else (no saved identity, no one answering, an error, a timeout, or another cluster
    /// answering on a URL this member knows, as a reused local port does) is unknown, and
    /// the member starts on its data: a whole cluster restarting needs every member back.
    async fn membership(&self) -> Result<Membership, SidecarError> {
        let Some(identity) = self.dir.load_identity()? else {
            return Ok(Membership::Unknown);
        };
        if identity.member_id == 0 || identity.cluster_id == 0 {
            return Ok(Membership::Unknown);
        }
        let extra = self.try_register_endpoints().await;
        let others = self.other_endpoints(&extra);
        if others.is_empty() {
            return Ok(Membership::Unknown);
        }
        // One member at a time, and only a member that has just served a linearizable read
        // (it has applied what the leader had committed then): its member list, which etcd
        // serves from what the member applied, is not one from before this member joined.
        for endpoint in &others {
            let attempt = async {
                let mut client = self.etcd(std::slice::from_ref(endpoint)).await.ok()?;
                client
                    .get(
                        "etcd-operator/membership-barrier",
                        Some(etcd_client::GetOptions::new().with_count_only()),
                    )
                    .await
                    .ok()?;
                client.member_list().await.ok()
            };
            if let Ok(Some(list)) = tokio::time::timeout(Duration::from_secs(3), attempt).await {
                return Ok(judge_membership(
                    &identity,
                    list.header().map(|h| h.cluster_id()),
                    &list.members().iter().map(|m| m.id()).collect::<Vec<_>>(),
                ));
            }
        }
        Ok(Membership::Unknown)
    }
    /// Lifecycle 4: bootstrap a one-member cluster (lifecycle 9: from a backup when the
    /// coordinator says so; nothing starts unless the backup checks out).
    async fn bootstrap(&self, restore: Option<&RestoreSource>) -> Result<(), SidecarError> {
        let grant = self.acquire_grant(ChangeKind::Bootstrap, None).await?;
        self.set_phase(MemberPhase::Bootstrapping);
        let result = async {
            self.wipe_member_dir()?;
            match restore {
                Some(source) => {
                    let restored = self.restore(source).await?;
                    self.state.send_modify(|s| s.restored = Some(restored));
                    self.run_etcd(&Bootstrap::FromData).await?;
                }
                None => {
                    let token = format!("{}-{}", self.cfg.cluster, now_unix_ms());
                    self.run_etcd(&Bootstrap::NewCluster { token }).await?;
                }
            }
            let (member_id, cluster_id) = self.wait_local_ready().await?;
            self.learn_ids(member_id, cluster_id);
            self.learn_cluster_urls(vec![self.cfg.client_url.clone()]);
            Ok(member_id)
        }
        .await;
        self.release_grant(&grant, result.as_ref().copied()).await;
        let member_id = result?;
        info!(member_id = %format!("{member_id:x}"), "bootstrapped a one-member cluster");
        self.set_phase(MemberPhase::Running);
        Ok(())
    }

    /// Lifecycle 4, for a cluster created with several members at once: start etcd as one of
    /// the initial members (etcd's static bootstrap). The coordinator holds the one grant of
    /// the whole bootstrap, so this member asks for none. etcd answers Status before the
    /// members have elected a leader; the member is Running from then on and reports
    /// healthy once a leader is known. A start that fails is retried by `start`: on the
    /// data it wrote when it got that far (etcd then reads its membership from it), with
    /// the same initial cluster otherwise.
    async fn bootstrap_together(
        &self,
        initial_cluster: String,
        token: String,
    ) -> Result<(), SidecarError> {
        self.set_phase(MemberPhase::Bootstrapping);
        self.wipe_member_dir()?;
        let members = initial_cluster.split(',').count();
        // etcd asks every other initial member whether it already bootstrapped, and waits a
        // whole second on one that listens but does not serve yet (one in the middle of its
        // own start). Started one after another in the order of their names, each finding
        // the ones before it serving and the ones after not yet listening, none waits.
        let deadline = Instant::now() + STAGGER_DEADLINE;
        for (name, url) in lower_peers(&initial_cluster, &self.cfg.name) {
            if !peer_serves_within(url, deadline).await {
                info!(
                    peer = name,
                    "an initial member before this one does not serve yet; starting all the same"
                );
            }
        }
        self.run_etcd(&Bootstrap::Static {
            initial_cluster,
            token,
        })
        .await?;
        let (member_id, cluster_id) = self.wait_local_ready().await?;
        self.learn_ids(member_id, cluster_id);
        self.learn_cluster_urls(vec![self.cfg.client_url.clone()]);
        info!(member_id = %format!("{member_id:x}"), members, "started as an initial member");
        self.set_phase(MemberPhase::Running);
        Ok(())
    }
}

/// What a member with data on disk knows of its place in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Membership {
    /// Its own cluster lists it.
    Member,
    /// Proven removed: its own cluster (this id) answered a member list without it.
    Removed {
        /// The cluster that answered, the member's own.
        cluster_id: u64,
    },
    /// Not known: no proof either way.
    Unknown,
}

/// Judges a member list read at start (`answered_by`: the cluster id in its header;
/// `members`: the ids it lists) against the member's saved `identity`: only a non-empty
/// list of the member's own cluster tells anything.
pub(super) fn judge_membership(
    identity: &crate::identity::Identity,
    answered_by: Option<u64>,
    members: &[u64],
) -> Membership {
    match answered_by {
        Some(cluster_id)
            if identity.member_id != 0
                && identity.cluster_id != 0
                && cluster_id == identity.cluster_id
                && !members.is_empty() =>
        {
            if members.contains(&identity.member_id) {
                Membership::Member
            } else {
                Membership::Removed { cluster_id }
            }
        }
        _ => Membership::Unknown,
    }
}

/// How long an initial member waits for the ones before it to serve, at most.
const STAGGER_DEADLINE: Duration = Duration::from_secs(3);

/// The initial members named before `own` in `initial_cluster` (`name=peerURL,...`), with
/// their peer URLs.
fn lower_peers<'a>(initial_cluster: &'a str, own: &str) -> Vec<(&'a str, &'a str)> {
    initial_cluster
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| *name < own)
        .collect()
}

/// `host:port` of a peer URL (`http://10.0.0.1:2380`, `https://m-0001.peer.ns.svc:2380/`).
fn host_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    authority.contains(':').then_some(authority)
}

/// True once something serves on `url` before `deadline`: a connection that is answered
/// (or closed) after a request, whether plain HTTP or TLS, is served; one that is accepted
/// by the kernel and left unread is a listener whose server has not started.
async fn peer_serves_within(url: &str, deadline: Instant) -> bool {
    let Some(addr) = host_port(url) else {
        return false;
    };
    while Instant::now() < deadline {
        let attempt = async {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            stream
                .write_all(b"GET /version HTTP/1.0\r\n\r\n")
                .await
                .ok()?;
            let mut byte = [0u8; 1];
            timeout(Duration::from_millis(300), stream.read(&mut byte))
                .await
                .ok()
                .map(|_| ())
        };
        if timeout(Duration::from_millis(500), attempt)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            return true;
        }
        sleep(Duration::from_millis(20)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_members_wait_only_for_the_ones_named_before_them() {
        let list =
            "c-0000=http://127.0.0.1:1,c-0001=https://m1.peer:2380,c-0002=http://127.0.0.1:3";
        assert_eq!(lower_peers(list, "c-0000"), []);
        assert_eq!(
            lower_peers(list, "c-0002"),
            [
                ("c-0000", "http://127.0.0.1:1"),
                ("c-0001", "https://m1.peer:2380")
            ]
        );
        assert_eq!(host_port("https://m1.peer:2380"), Some("m1.peer:2380"));
        assert_eq!(host_port("http://127.0.0.1:3/"), Some("127.0.0.1:3"));
        assert_eq!(host_port("http://no-port"), None);
    }

    #[test]
    fn only_the_members_own_cluster_proves_it_removed() {
        let me = crate::identity::Identity {
            name: "c-0001".into(),
            member_id: 0xa1,
            cluster_id: 0xc1,
            cluster_client_urls: vec![],
        };
        let removed = Membership::Removed { cluster_id: 0xc1 };
        let unknown = Membership::Unknown;
        for (answered_by, members, expected, why) in [
            (
                Some(0xc1),
                vec![0xb1, 0xb2],
                removed,
                "its own cluster, without it",
            ),
            (
                Some(0xc1),
                vec![0xa1, 0xb2],
                Membership::Member,
                "its own cluster, with it",
            ),
            (
                Some(0xc2),
                vec![0xb1, 0xb2],
                unknown,
                "another cluster on a known URL",
            ),
            (None, vec![0xb1], unknown, "no header: no cluster id"),
            (Some(0xc1), vec![], unknown, "an empty list proves nothing"),
        ] {
            assert_eq!(
                judge_membership(&me, answered_by, &members),
                expected,
                "{why}"
            );
        }
        let never_knew_its_cluster = crate::identity::Identity {
            cluster_id: 0,
            ..me.clone()
        };
        assert_eq!(
            judge_membership(&never_knew_its_cluster, Some(0), &[0xb1]),
            unknown,
            "a member that never saved its cluster id is never proven removed"
        );
    }

    #[tokio::test]
    async fn a_listener_that_does_not_serve_is_told_from_one_that_does() {
        // Accepted by the kernel, never read: a server not started yet.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let soon = Instant::now() + Duration::from_millis(700);
        assert!(!peer_serves_within(&url, soon).await);
        // One that answers.
        let serving = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", serving.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = serving.accept().await {
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            }
        });
        assert!(peer_serves_within(&url, Instant::now() + Duration::from_secs(2)).await);
        // Nothing listening at all.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        assert!(!peer_serves_within(&url, Instant::now() + Duration::from_millis(200)).await);
    }
}
