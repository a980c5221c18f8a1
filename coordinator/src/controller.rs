//! One cluster's control loop: observe (client required) -> plan (pure) -> act (client
//! required, one action) -> status (no client, but not pure: built from what was observed
//! and planned, with what the registry holds of the cluster (the previous status, the
//! sidecars' last errors, a forced recovery, the backups) and the clock for the conditions'
//! transition times).
//!
//! Acting is awaited inside the loop, so at most one action per cluster is ever under way;
//! the grant table adds the same guarantee across the coordinator and the sidecars.

use std::{sync::Arc, time::Duration};

use etcd_client::{Client, ConnectOptions};
use etcd_operator::{
    ClusterKey, EtcdVersion,
    grant::UnixMillis,
    naming::member_id_hex,
    proto::{
        self, ChangeKind, ClusterStatus, Condition, ForceNewClusterRequest, HandoffRequest,
        LeaveRequest, MaintenanceOp, MemberStatus, sidecar_client::SidecarClient,
    },
    resource::EtcdCluster,
    validate::validate_cluster,
};
use thiserror::Error;
use tracing::{info, instrument, warn};

use crate::{
    conditions::{ConditionStatus, ConditionType, MemberShown},
    plan::{self, Action, EtcdMember, Observed, Phase, Plan, Policy, ReportedPhase, RuntimeMember},
    record::{
        BootstrapRecord, DecisionRecord, GrantRecord, RestoreDecision, UpgradeFailureRecord,
        UpgradeStepRecord,
    },
    registry::{ForcedRecovery, InitialBootstrap, Registry, now_ms},
    runtime::{MemberInfo, Runtime, RuntimeError},
};

/// How long one maintenance step (a defragmentation rewrites a whole backend) may take.
const MAINTENANCE_DEADLINE: Duration = Duration::from_secs(600);

/// How long a scheduled defragmentation round stays open after its scheduled time.
const DEFRAG_ROUND_MS: i64 = 3_600_000;

/// The scheduled defragmentation round under way at `now`: the latest scheduled time, if
/// it came after the coordinator started and less than an hour ago.
pub fn defrag_round(
    spec: &etcd_operator::resource::EtcdClusterSpec,
    started: UnixMillis,
    now: UnixMillis,
) -> Option<UnixMillis> {
    let schedule = &spec.maintenance.as_ref()?.defragment.as_ref()?.schedule;
    let cron = etcd_operator::validate::parse_schedule(schedule).ok()?;
    let at = jiff::Timestamp::from_millisecond(now)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC);
    let last = cron
        .find_previous_occurrence(&at, true)
        .ok()?
        .timestamp()
        .as_millisecond();
    (last >= started && now - last < DEFRAG_ROUND_MS).then_some(last)
}

/// How long one backup (stream, store, fetch back, restore into scratch) may take.
const BACKUP_DEADLINE: Duration = Duration::from_secs(1800);

/// How many backups the spec keeps.
fn resource_keep(resource: &EtcdCluster) -> usize {
    resource
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.keep)
        .unwrap_or(etcd_operator::resource::DEFAULT_BACKUP_KEEP)
        .max(1) as usize
}

/// Errors of the act step, with a stable category for logs and metrics.
#[derive(Debug, Error)]
pub enum ActError {
    /// The runtime failed.
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// An etcd call failed.
    #[error("etcd {op}: {source}")]
    Etcd {
        /// The call.
        op: &'static str,
        /// The error.
        #[source]
        source: etcd_client::Error,
    },
    /// A sidecar call failed.
    #[error("sidecar {member}: {message}")]
    Sidecar {
        /// The member.
        member: String,
        /// What it said.
        message: String,
    },
    /// A grant could not be taken.
    #[error("grant refused: {0}")]
    Grant(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A backup failed (the cluster is untouched).
    #[error("backup: {0}")]
    Backup(String),
    /// This coordinator cannot show that it still leads: it does nothing.
    #[error("this coordinator does not lead now: nothing done")]
    NotLeading,
    /// The decision this act depends on could not be written down: it is not done.
    #[error("{0}")]
    Record(#[from] crate::record::RecordError),
}

impl ActError {
    /// A stable word for the kind of failure.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Runtime(e) => e.category(),
            Self::Etcd { .. } => "etcd",
            Self::Sidecar { .. } => "sidecar",
            Self::Grant(_) => "grant",
            Self::Timeout(_) => "timeout",
            Self::Backup(_) => "backup",
            Self::NotLeading => "not_leading",
            Self::Record(_) => "record",
        }
    }
}

/// What one reconcile saw and did.
#[derive(Debug)]
pub struct Outcome {
    /// The plan.
    pub plan: Plan,
    /// The status written.
    pub status: ClusterStatus,
    /// The act step's error, if any.
    pub error: Option<String>,
}

/// The controller of one cluster.
mod ca_rotation;

pub struct ClusterController<R: Runtime> {
    /// The cluster.
    pub key: ClusterKey,
    runtime: Arc<R>,
    registry: Registry,
    policy: Policy,
}

async fn connect(
    tls: Option<&etcd_client::TlsOptions>,
    endpoints: &[String],
) -> Result<Client, etcd_client::Error> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        options = options.with_tls(tls.clone());
    }
    Client::connect(endpoints, Some(options)).await
}

/// Reads etcd's member list from any of `endpoints`; None when no member answers. Once the
/// cluster's etcd cluster id is known (`cluster_id`), only a list from that cluster counts:
/// another etcd that answers on an address one of its members had is a stranger.
async fn read_member_list(
    tls: Option<&etcd_client::TlsOptions>,
    endpoints: &[String],
    cluster_id: Option<u64>,
) -> Option<Vec<EtcdMember>> {
    for endpoint in endpoints {
        let attempt = async {
            let mut c = connect(tls, std::slice::from_ref(endpoint)).await.ok()?;
            let list = c.member_list().await.ok()?;
            let answered_by = list.header().map_or(0, |h| h.cluster_id());
            if let Some(expected) = cluster_id
                && answered_by != expected
            {
                warn!(endpoint = %endpoint, cluster_id = %member_id_hex(answered_by), expected = %member_id_hex(expected), "another etcd cluster answers on a member's address: its member list is not this cluster's");
                return None;
            }
            Some(
                list.members()
                    .iter()
                    .map(|m| EtcdMember {
                        id: m.id(),
                        name: m.name().to_string(),
                        peer_urls: m.peer_urls().to_vec(),
                        client_urls: m.client_urls().to_vec(),
                        is_learner: m.is_learner(),
                    })
                    .collect(),
            )
        };
        if let Ok(Some(list)) = tokio::time::timeout(Duration::from_secs(3), attempt).await {
            return Some(list);
        }
    }
    None
}

impl<R: Runtime> ClusterController<R> {
    /// A controller for `key`.
    pub fn new(key: ClusterKey, runtime: Arc<R>, registry: Registry, policy: Policy) -> Self {
        Self {
            key,
            runtime,
            registry,
            policy,
        }
    }

    /// One observe -> plan -> act -> status pass for `resource`.
    #[instrument(skip_all, fields(cluster = %self.key))]
    pub async fn reconcile(&self, resource: &EtcdCluster) -> Outcome {
        let started = std::time::Instant::now();
        // On the heap for the pass only: a cluster's loop holds this future while it waits
        // for its next pass, and the pass's state machine (25 KiB) would otherwise be part
        // of every idle loop of a fleet.
        let outcome = Box::pin(self.reconcile_once(resource)).await;
        let steady = matches!(outcome.plan.action, Action::Steady);
        self.registry
            .with(&self.key, |entry, _| entry.steady = steady);
        self.registry
            .metrics()
            .observe_reconcile(started.elapsed().as_secs_f64());
        outcome
    }

    async fn reconcile_once(&self, resource: &EtcdCluster) -> Outcome {
        let (observed, infos) = match self.observe(resource).await {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "could not observe the cluster");
                let status = ClusterStatus {
                    namespace: self.key.namespace.clone(),
                    name: self.key.name.clone(),
                    phase: proto::ClusterPhase::from(Phase::Unknown).into(),
                    conditions: vec![condition(
                        ConditionType::Available,
                        ConditionStatus::Unknown,
                        "ObserveFailed",
                        &e.to_string(),
                    )],
                    ..Default::default()
                };
                self.registry
                    .with(&self.key, |entry, _| entry.status = Some(status.clone()));
                return Outcome {
                    plan: Plan {
                        action: Action::Steady,
                        phase: Phase::Unknown,
                        warnings: vec![],
                        refused: None,
                    },
                    status,
                    error: Some(e.to_string()),
                };
            }
        };
        let mut plan = plan::plan(&observed);
        // TLS is chosen when the cluster is created: switching a running cluster between
        // http and https would change every member's URLs at once.
        // (A refusal freezes changes, not healing: `plan::refuse` still restarts members
        // down with their data.)
        if let Some(message) = tls_mismatch(resource.spec.etcd_tls(), &infos)
            && plan.refused.is_none()
        {
            plan = plan::refuse(&observed, message, plan.warnings);
        }
        // The runtime must be able to run the version asked for before anything acts on it.
        if let Ok(spec) = &observed.spec
            && plan.refused.is_none()
            && plan.action.changes_something()
            && let Err(e) = self.runtime.check_version(spec.version)
        {
            plan = plan::refuse(&observed, e.to_string(), plan.warnings);
        }
        let error = if plan.action.changes_something() {
            info!(
                action = plan.action.kind(),
                member = plan.action.member().unwrap_or(""),
                phase = plan.phase.as_str(),
                "acting"
            );
            let acted = match self.epoch() {
                Ok(_) => self.act(&plan.action, &infos, resource).await,
                Err(e) => Err(e),
            };
            match acted {
                Ok(()) => None,
                Err(e) => {
                    warn!(action = plan.action.kind(), error = %e, category = e.category(), "action failed");
                    Some((e.category(), e.to_string()))
                }
            }
        } else {
            None
        };
        let (category, error) = error.unzip();
        let mut authorities = self.authorities(resource).await;
        authorities.rotating = observed.ca.rotation.as_ref().map(|r| r.phase);
        self.record_authorities(&authorities);
        let status = self.status(
            resource,
            &observed,
            &infos,
            &plan,
            error.as_deref(),
            &authorities,
        );
        self.record_metrics(&plan, &status, category);
        self.registry
            .with(&self.key, |entry, _| entry.status = Some(status.clone()));
        Outcome {
            plan,
            status,
            error,
        }
    }

    /// The CAs this cluster's certificates chain to: the control path's, and with TLS its
    /// own etcd CA (or why it cannot be had: lost).
    async fn authorities(&self, resource: &EtcdCluster) -> Authorities {
        let etcd = if resource.spec.etcd_tls() {
            match self.runtime.existing_etcd_ca(&self.key).await {
                Ok(Some(ca)) => Some(Ok(ca.not_after())),
                Ok(None) => None,
                Err(e) => Some(Err(e.to_string())),
            }
        } else {
            None
        };
        Authorities {
            control: self.runtime.control().ca().not_after(),
            etcd,
            rotating: None,
        }
    }

    fn record_authorities(&self, authorities: &Authorities) {
        let metrics = self.registry.metrics();
        let labels = |ca: &str| crate::metrics::CaLabels {
            cluster: self.key.to_string(),
            ca: ca.to_string(),
        };
        metrics
            .ca_expiry
            .get_or_create(&labels("control"))
            .set(authorities.control);
        metrics
            .ca_rotation_phase
            .get_or_create(&crate::metrics::ClusterLabels {
                cluster: self.key.to_string(),
            })
            .set(match authorities.rotating {
                None => 0,
                Some(plan::CaPhase::Trust) => 1,
                Some(plan::CaPhase::Reissue) => 2,
                Some(plan::CaPhase::Drop) => 3,
            });
        if let Some(etcd) = &authorities.etcd {
            metrics
                .ca_expiry
                .get_or_create(&labels("etcd"))
                .set(*etcd.as_ref().unwrap_or(&0));
        }
    }

    /// `failed`: the category of the act step's error, if it failed.
    fn record_metrics(&self, plan: &Plan, status: &ClusterStatus, failed: Option<&'static str>) {
        use crate::metrics::{ActionLabels, ClusterLabels, ErrorLabels};
        let metrics = self.registry.metrics();
        let cluster = self.key.to_string();
        metrics
            .reconciles
            .get_or_create(&ActionLabels {
                cluster: cluster.clone(),
                action: plan.action.kind().to_string(),
            })
            .inc();
        if let Some(category) = failed {
            metrics
                .action_errors
                .get_or_create(&ErrorLabels {
                    cluster: cluster.clone(),
                    category: category.to_string(),
                })
                .inc();
        }
        for m in &status.members {
            for alarm in plan::MemberAlarm::ALL {
                metrics
                    .member_alarms
                    .get_or_create(&crate::metrics::AlarmLabels {
                        cluster: cluster.clone(),
                        member: m.name.clone(),
                        alarm: alarm.as_str().to_string(),
                    })
                    .set(i64::from(m.alarms.iter().any(|a| a == alarm.as_str())));
            }
        }
        let labels = ClusterLabels { cluster };
        metrics
            .ready_members
            .get_or_create(&labels)
            .set(i64::from(status.ready));
        metrics
            .desired_members
            .get_or_create(&labels)
            .set(i64::from(status.size));
        metrics
            .change_in_flight
            .get_or_create(&labels)
            .set(i64::from(!status.change_in_flight.is_empty()));
    }

    async fn observe(
        &self,
        resource: &EtcdCluster,
    ) -> Result<(Observed, Vec<MemberInfo>), RuntimeError> {
        // The durable record first: a cluster whose record cannot be read is not acted on.
        let uid = resource.metadata.uid.clone().unwrap_or_default();
        let mut record = self.registry.record(&self.key).await?;
        if !record.uid.is_empty() && record.uid != uid {
            // Held in memory for another object of the same name (deleted and created
            // again): this one's is read afresh.
            self.registry.forget_record(&self.key);
            record = self.registry.record(&self.key).await?;
        }
        if !record.uid.is_empty() && record.uid != uid {
            // The object carries the record of another (its annotations copied from a
            // deleted cluster's manifest): none of it is this cluster's.
            warn!(recorded = %record.uid, uid = %uid, "the decision record names another EtcdCluster; starting this one's afresh");
            record = self
                .registry
                .decide(&self.key, |r| {
                    *r = DecisionRecord {
                        uid: uid.clone(),
                        ..Default::default()
                    };
                    r.clone()
                })
                .await?;
        }
        let infos = self.runtime.members(&self.key).await?;
        let mut next_ordinal = self.runtime.next_ordinal(&self.key).await?;
        self.runtime.note_spec(&self.key, &resource.spec).await;
        // Survivors of a lost cluster kept, with their data, until its restore runs: not
        // members of the cluster being restored.
        let kept: Vec<String> = record
            .recovery
            .as_ref()
            .map(|r| r.kept.clone())
            .unwrap_or_default();
        let now = now_ms();
        let spec_version = resource
            .spec
            .version
            .parse()
            .unwrap_or(etcd_operator::version::DEFAULT_VERSION);
        // Members decided and never made (their creation failed, or a coordinator stopped
        // before it): forgotten, their ordinals never used again.
        let never_made: Vec<String> = record
            .unmade
            .iter()
            .filter(|n| !infos.iter().any(|i| &i.name == *n))
            .cloned()
            .collect();
        // And those the runtime has are made, whether or not that was written down.
        let made: Vec<String> = record
            .unmade
            .iter()
            .filter(|n| infos.iter().any(|i| &i.name == *n))
            .cloned()
            .collect();
        if !never_made.is_empty() || !made.is_empty() {
            if !never_made.is_empty() {
                info!(members = ?never_made, "members decided and never made are forgotten");
            }
            record = self
                .registry
                .decide(&self.key, |r| {
                    for name in &never_made {
                        r.forget_member(name);
                    }
                    r.made(&made, now);
                    r.clone()
                })
                .await?;
        }
        let infos = observed_members(infos, &record, &self.key.name, spec_version, |name| {
            self.registry.with(&self.key, |entry, _| {
                *entry.gone_since.entry(name.to_string()).or_insert(now)
            })
        });
        // Never an ordinal the record handed out, whether or not the runtime made it.
        next_ordinal = next_ordinal.max(record.next_ordinal);
        if let Some(highest) = record
            .members
            .iter()
            .chain(kept.iter())
            .filter_map(|n| etcd_operator::naming::member_ordinal(&self.key.name, n))
            .max()
        {
            next_ordinal = next_ordinal.max(highest.saturating_add(1));
        }
        let (reports, delete_requested, maintenance, leave_unreachable) =
            self.registry.with(&self.key, |entry, _| {
                entry.runtime_members = infos.iter().map(|m| m.name.clone()).collect();
                entry
                    .gone_since
                    .retain(|name, _| record.members.contains(name));
                // Several members created as seeds are the initial members of a static
                // bootstrap; one alone is the seed of a cluster grown by learners.
                let seeds: Vec<&MemberInfo> = infos.iter().filter(|m| m.seed).collect();
                entry.seed = match seeds.as_slice() {
                    [one] => Some(one.name.clone()),
                    _ => None,
                };
                entry
                    .reports
                    .retain(|name, _| infos.iter().any(|m| &m.name == name));
                entry
                    .delete_requested
                    .retain(|name| infos.iter().any(|m| &m.name == name));
                entry
                    .maintenance
                    .defragmented
                    .retain(|name, _| infos.iter().any(|m| &m.name == name));
                entry
                    .leave_unreachable
                    .retain(|name, _| infos.iter().any(|m| &m.name == name));
                (
                    entry.reports.clone(),
                    entry.delete_requested.iter().cloned().collect(),
                    entry.maintenance.clone(),
                    entry.leave_unreachable.clone(),
                )
            });
        // Read the member list from members that run, voters reported healthy first.
        let mut endpoints: Vec<String> = infos
            .iter()
            .filter(|m| m.running && !m.client_url.is_empty())
            .map(|m| m.client_url.clone())
            .collect();
        endpoints.sort_by_key(|url| {
            !reports
                .values()
                .any(|r| &r.report.client_url == url && r.report.healthy && !r.report.learner)
        });
        let tls = self.etcd_tls(&endpoints).await;
        let etcd_members = if endpoints.is_empty() {
            None
        } else {
            let known = u64::from_str_radix(&record.etcd_cluster_id, 16).ok();
            read_member_list(tls.as_ref(), &endpoints, known).await
        };
        record = self
            .backfill_record(record, &infos, &reports, etcd_members.is_some(), resource)
            .await?;
        let settle_until = now - self.registry.age_ms(now) + crate::service::RECOVERY_SETTLE_MS;
        let upgrades = record.upgrades.clone();
        let grant = self.registry.with(&self.key, |entry, grants| {
            entry.cluster_exists = etcd_members.is_some();
            // The static bootstrap under way, as the record has it, with the initial cluster
            // once the runtime knows every peer URL.
            entry.initial = record
                .bootstrap
                .as_ref()
                .filter(|b| !b.abandoning)
                .map(|b| {
                    let known = entry.initial.as_ref().filter(|i| i.names == b.names);
                    InitialBootstrap {
                        names: b.names.clone(),
                        initial_cluster: initial_cluster(&b.names, &infos).unwrap_or_default(),
                        token: b.token.clone(),
                        grant_id: record
                            .grant
                            .as_ref()
                            .filter(|g| g.kind == "bootstrap")
                            .map(|g| g.id.clone())
                            .unwrap_or_default(),
                        began: known.and_then(|i| i.began).or(b.began),
                    }
                });
            // Grants given by a coordinator that recorded them are all in the record: no
            // wait for the sidecars to name the ones they hold.
            let settle_until = if record.grants_recorded {
                0
            } else {
                settle_until
            };
            crate::grants::recover(
                entry,
                grants,
                &self.key,
                etcd_members.as_deref(),
                &infos,
                now,
                settle_until,
            );
            crate::grants::end_adopted(entry, grants, &self.key, etcd_members.as_deref(), now);
            grants.in_flight(&self.key, now).cloned()
        });
        // An upgrade step is over once its member reports healthy after it: on the step's
        // version (done), or on the version the runtime still runs it with (the restart
        // never reached the runtime, or a Pod was made again from a claim not yet moved: the
        // upgrade rule begins the step again).
        let done_upgrades: Vec<String> = upgrades
            .iter()
            .filter(|(name, step)| {
                infos.iter().all(|m| &m.name != *name)
                    || infos.iter().any(|m| {
                        let to = step.to.parse().unwrap_or(m.version);
                        &m.name == *name
                            && reports.get(*name).is_some_and(|r| {
                                let report = r.planner_report(now);
                                report.healthy
                                    && (plan::upgraded(&report, step.at, to)
                                        || (m.version != to
                                            && plan::upgraded(&report, step.at, m.version)))
                            })
                    })
            })
            .map(|(name, _)| name.clone())
            .collect();
        // The upgrade that stopped is forgotten once the spec asks for another version.
        let spec = validate_cluster(resource);
        let failure_over = record.upgrade_failed.as_ref().is_some_and(|f| {
            spec.as_ref()
                .is_ok_and(|spec| f.to.parse::<EtcdVersion>().ok() != Some(spec.version))
        });
        if !done_upgrades.is_empty() || failure_over {
            record = self
                .registry
                .decide(&self.key, |r| {
                    r.upgrades.retain(|name, _| !done_upgrades.contains(name));
                    if failure_over {
                        r.upgrade_failed = None;
                    }
                    r.clone()
                })
                .await?;
        }
        let members = planner_members(&infos, &reports, &record, &maintenance.defragmented, now);
        let storage = crate::backups::resolve_storage(
            resource.spec.backup_storage(),
            self.runtime.default_backup_storage(),
        );
        let started = now - self.registry.age_ms(now);
        let backup_due = self.registry.with(&self.key, |entry, _| {
            let track = &mut entry.backups;
            track.storage = storage.as_ref().ok().cloned();
            let since = track.last_success.as_ref().map_or(started, |(_, at)| *at);
            track.next_due = crate::backups::next_scheduled(&resource.spec, since);
            storage.is_ok() && crate::backups::due(track, &resource.spec, started, now)
        });
        // The identity the cluster's backups are bound to, and its storage opened for
        // ListBackups (with the credentials the runtime reads, again once a minute).
        let identity = match self.runtime.backup_identity(&self.key, resource).await {
            Ok(id) => Some(id),
            Err(e) => {
                warn!(error = %e, "the cluster's backup identity is not known");
                None
            }
        };
        self.registry
            .with(&self.key, |entry, _| entry.identity = identity.clone());
        if let (Ok(storage), Some(uid)) = (&storage, &identity) {
            self.refresh_backup_access(storage, uid, now).await;
        }
        // The restore a cluster is created from: decided once (in the record, before its
        // seed is created) and never looked up again; until then found and checked here.
        let restore = match (&record.restore, &resource.spec.restore) {
            (Some(decided), _) if !decided.done => Some(Ok(decided.source.backup.clone())),
            // Only a spec that validates: no name from it reaches a path before it is checked.
            (None, Some(restore))
                if record.created.is_none()
                    && infos.is_empty()
                    && validate_cluster(resource).is_ok() =>
            {
                Some(self.resolve_restore(resource, restore).await)
            }
            _ => None,
        };
        let recovery_backup = if needs_recovery_backup(
            resource.spec.quorum_loss(),
            &infos,
            etcd_members.is_some(),
            &record,
        ) {
            Some(
                self.recovery_source(resource, "latest")
                    .await
                    .map(|s| s.backup),
            )
        } else {
            None
        };
        let upgrade_failed = record.upgrade_failed.as_ref().and_then(|f| {
            Some(plan::UpgradeFailure {
                member: f.member.clone(),
                to: f.to.parse().ok()?,
                back_to: f.back_to.parse().ok()?,
                error: f.error.clone(),
            })
        });
        let ca = self.observe_ca(resource, &record).await;
        let observed = Observed {
            cluster: self.key.clone(),
            spec,
            upgrade_failed,
            ca,
            leave_unreachable,
            members,
            etcd_members,
            grant,
            next_ordinal,
            delete_requested,
            backup_due,
            restore,
            recovery_backup,
            maintenance: plan::MaintenanceRecord {
                compacted: maintenance.compacted,
                disarmed_at: maintenance.disarmed_at,
                defrag_round: defrag_round(&resource.spec, started, now),
            },
            bootstrap: self.registry.with(&self.key, |entry, _| {
                entry.initial.as_ref().map(|i| plan::BootstrapUnderWay {
                    names: i.names.clone(),
                    began: i.began,
                })
            }),
            abandoning: record
                .bootstrap
                .as_ref()
                .filter(|b| b.abandoning)
                .map(|b| b.names.clone())
                .unwrap_or_default(),
            created: record.created.is_some(),
            pending_force: record
                .recovery
                .as_ref()
                .filter(|r| !r.done && r.backup.is_none())
                .map(|r| plan::PendingForce {
                    name: r.from.clone(),
                    raft_index: r.raft_index,
                    revision: r.revision,
                    lost: r.lost.clone(),
                }),
            ever_served: !record.etcd_cluster_id.is_empty(),
            kept,
            now,
            policy: self.policy,
        };
        Ok((observed, infos))
    }

    /// What the record learns from the world, written before anything acts on it: that a
    /// cluster with members was created (by a coordinator of a version that kept no record,
    /// or before a crash that lost nothing else), the static bootstrap such a coordinator
    /// began, etcd's cluster id, and that a restore is done.
    async fn backfill_record(
        &self,
        record: DecisionRecord,
        infos: &[MemberInfo],
        reports: &std::collections::BTreeMap<String, crate::registry::ReceivedReport>,
        cluster_answers: bool,
        resource: &EtcdCluster,
    ) -> Result<DecisionRecord, RuntimeError> {
        let abandoning = record.bootstrap.as_ref().is_some_and(|b| b.abandoning);
        let present: Vec<String> = infos
            .iter()
            .filter(|i| i.data == plan::MemberData::Intact || i.running)
            .map(|i| i.name.clone())
            .collect();
        let cluster_id = reports
            .values()
            .filter(|r| record.members.contains(&r.report.member_name) || record.members.is_empty())
            .map(|r| r.report.cluster_id)
            .find(|id| *id != 0)
            .map(member_id_hex)
            .unwrap_or_default();
        let forced = record.recovery.as_ref().is_some_and(|r| {
            !r.done
                && r.backup.is_none()
                && reports
                    .get(&r.from)
                    .is_some_and(|rep| rep.report.healthy && rep.report.leader)
        });
        let restored = record.restore.as_ref().is_some_and(|r| {
            !r.done
                && reports
                    .get(&r.seed)
                    .is_some_and(|rep| rep.report.restored_from == r.source.backup)
        });
        // A static bootstrap begun by a coordinator that kept no record: several members
        // created as its initial members and no cluster answering.
        let seeds: Vec<String> = infos
            .iter()
            .filter(|m| m.seed)
            .map(|m| m.name.clone())
            .collect();
        let adopt_bootstrap = record.created.is_none()
            && record.bootstrap.is_none()
            && !cluster_answers
            && seeds.len() > 1;
        let needs = (record.created.is_none() && !abandoning && !present.is_empty())
            || (record.etcd_cluster_id.is_empty() && !cluster_id.is_empty())
            || restored
            || forced;
        if !needs {
            return Ok(record);
        }
        let uid = resource.metadata.uid.clone();
        let key = self.key.clone();
        let record = self
            .registry
            .decide(&self.key, |r| {
                if r.created.is_none() && !abandoning && !present.is_empty() {
                    info!(members = ?present, "recording that this cluster was created");
                    r.uid = uid.clone().unwrap_or_default();
                    r.created = Some(crate::record::Created {
                        at: now_ms(),
                        members: present.clone(),
                    });
                    for name in &present {
                        r.add_member(&key.name, name);
                    }
                    r.made(&present, now_ms());
                    if adopt_bootstrap {
                        info!(members = ?seeds, "a static bootstrap begun before this start goes on");
                        r.bootstrap = Some(crate::record::BootstrapRecord {
                            names: seeds.clone(),
                            token: bootstrap_token(&key, uid.as_deref(), &seeds[0]),
                            began: None,
                            abandoning: false,
                        });
                    }
                }
                if r.etcd_cluster_id.is_empty() && !cluster_id.is_empty() {
                    r.etcd_cluster_id = cluster_id.clone();
                }
                if forced && let Some(recovery) = r.recovery.as_mut() {
                    recovery.done = true;
                }
                if restored && let Some(restore) = r.restore.as_mut() {
                    restore.done = true;
                    if let Some(recovery) = r.recovery.as_mut()
                        && recovery.backup.is_some()
                    {
                        recovery.done = true;
                    }
                }
                r.clone()
            })
            .await?;
        if adopt_bootstrap && record.grant.is_none() {
            // The bootstrap's grant, as the coordinator that began it held one.
            self.take_bootstrap_grant(&seeds[0])
                .await
                .map_err(|e| RuntimeError::Other(e.to_string()))?;
        }
        Ok(self.registry.record(&self.key).await?)
    }

    /// The backup a cluster to be created is restored from: found, checked against the
    /// version rules, and handed to the seed when it registers; or why it cannot be.
    /// Another cluster's backups are restored only when the spec names it
    /// (`restore.cluster`, `restore.namespace`); `latest` takes the newest verified backup of
    /// that cluster's identity when this coordinator knows it (it runs that cluster, or it
    /// is this one), else of the one identity found there.
    async fn resolve_restore(
        &self,
        resource: &EtcdCluster,
        restore: &etcd_operator::resource::RestoreSpec,
    ) -> Result<String, String> {
        let storage = match &restore.storage {
            Some(s) => Ok(crate::backups::to_proto(s)),
            None => crate::backups::resolve_storage(
                resource.spec.backup_storage(),
                self.runtime.default_backup_storage(),
            ),
        }
        .map_err(|e| format!("spec.restore: {e}"))?;
        let namespace = match &restore.namespace {
            Some(ns)
                if !self.key.namespace.is_empty()
                    || ns != etcd_operator::backup::LOCAL_NAMESPACE =>
            {
                ns.clone()
            }
            _ => self.key.namespace.clone(),
        };
        let cluster = restore
            .cluster
            .clone()
            .unwrap_or_else(|| self.key.name.clone());
        let source_key = ClusterKey::new(&namespace, &cluster);
        let from = etcd_operator::backup::RestoreFrom {
            namespace: etcd_operator::backup::namespace_segment(&namespace).to_string(),
            cluster,
            uid: self
                .registry
                .with_existing(&source_key, |entry, _| entry.identity.clone())
                .flatten(),
            // A cluster created from its own name's backups: those of a life before this
            // identity (an EtcdCluster deleted and created again).
            or_earlier_life: source_key == self.key,
        };
        let bump = restore
            .bump_revision
            .unwrap_or(etcd_operator::resource::DEFAULT_BUMP_REVISION);
        let source = self
            .backup_source(
                resource,
                storage,
                from,
                &restore.backup,
                bump,
                "spec.restore",
            )
            .await?;
        let name = format!(
            "{}/{}/{}",
            etcd_operator::backup::namespace_segment(&source.source_namespace),
            source.source_cluster,
            source.backup
        );
        // Kept in memory until the seed is created, when it is recorded.
        self.registry
            .with(&self.key, |entry, _| entry.pending_restore = Some(source));
        Ok(name)
    }

    /// With `spec.recovery.quorumLoss: Restore`: backup `which` of this very cluster (its
    /// identity) in its own backup storage, checked against the version rules.
    async fn recovery_source(
        &self,
        resource: &EtcdCluster,
        which: &str,
    ) -> Result<etcd_operator::proto::RestoreSource, String> {
        let context = "spec.recovery.quorumLoss: Restore";
        let storage = crate::backups::resolve_storage(
            resource.spec.backup_storage(),
            self.runtime.default_backup_storage(),
        )
        .map_err(|e| format!("{context}: {e}"))?;
        let uid = self
            .runtime
            .backup_identity(&self.key, resource)
            .await
            .map_err(|e| format!("{context}: {e}"))?;
        let bump = resource
            .spec
            .restore
            .as_ref()
            .and_then(|r| r.bump_revision)
            .unwrap_or(etcd_operator::resource::DEFAULT_BUMP_REVISION);
        let from = etcd_operator::backup::RestoreFrom {
            namespace: etcd_operator::backup::namespace_segment(&self.key.namespace).to_string(),
            cluster: self.key.name.clone(),
            uid: Some(uid),
            or_earlier_life: false,
        };
        self.backup_source(resource, storage, from, which, bump, context)
            .await
    }

    /// `storage` opened with the credentials the runtime gives for it.
    async fn open_storage(
        &self,
        storage: &etcd_operator::proto::BackupStorage,
    ) -> Result<etcd_sidecar::backup::Storage, String> {
        let credentials = self.runtime.storage_credentials(&self.key, storage).await?;
        etcd_sidecar::backup::Storage::open(storage, &credentials).map_err(|e| e.to_string())
    }

    /// Keeps the cluster's storage opened for ListBackups: opened again when the storage or
    /// the identity changed, or after [`crate::backups::ACCESS_REFRESH_MS`] (a rotated
    /// Secret), keeping what was read of it.
    async fn refresh_backup_access(
        &self,
        storage: &etcd_operator::proto::BackupStorage,
        uid: &str,
        now: UnixMillis,
    ) {
        let owner =
            etcd_operator::backup::BackupOwner::new(&self.key.namespace, &self.key.name, uid);
        let cache = self
            .registry
            .with(&self.key, |entry, _| match &entry.backup_access {
                Some(a)
                    if a.storage == *storage
                        && a.owner == owner
                        && now - a.opened_at < crate::backups::ACCESS_REFRESH_MS =>
                {
                    None
                }
                Some(a) if a.storage == *storage => Some(a.cache.clone()),
                _ => Some(Default::default()),
            });
        let Some(cache) = cache else { return };
        let opened = self.open_storage(storage).await;
        self.registry.with(&self.key, |entry, _| {
            entry.backup_access = Some(crate::backups::BackupAccess {
                owner,
                storage: storage.clone(),
                opened,
                opened_at: now,
                cache,
            });
        });
    }

    /// Backup `which` (`latest` for the newest verified one) of the cluster `from` in
    /// `storage`, checked against the version rules; or why it cannot be restored.
    async fn backup_source(
        &self,
        resource: &EtcdCluster,
        storage: etcd_operator::proto::BackupStorage,
        from: etcd_operator::backup::RestoreFrom,
        which: &str,
        bump_revision: i64,
        context: &str,
    ) -> Result<etcd_operator::proto::RestoreSource, String> {
        let store = self
            .open_storage(&storage)
            .await
            .map_err(|e| format!("{context}: {e}: nothing is started"))?;
        let whose = store.describe(&from.namespace, &from.cluster);
        let backups = store
            .list(&from.namespace, &from.cluster, &Default::default())
            .await
            .map_err(|e| format!("{context}: the backups in {whose} cannot be listed: {e}"))?;
        let chosen = etcd_operator::backup::choose(&backups, which, &from)
            .map_err(|e| format!("{context}: {e} in {whose}: nothing is started"))?;
        let spec_version: EtcdVersion = resource
            .spec
            .version
            .parse()
            .map_err(|e| format!("spec.version: {e}"))?;
        let taken_on: EtcdVersion = chosen.etcd_version.parse().map_err(|e| {
            format!(
                "backup {} names no usable etcd version ({:?}: {e}): nothing is started",
                chosen.name, chosen.etcd_version
            )
        })?;
        etcd_operator::version::check_version_step(
            taken_on,
            spec_version,
            resource.spec.allow_downgrade,
        )
        .map_err(|e| {
            format!(
                "backup {} was taken on etcd {taken_on} and cannot be restored on {spec_version}: {e}",
                chosen.name
            )
        })?;
        Ok(etcd_operator::proto::RestoreSource {
            storage: Some(storage),
            backup: chosen.name.clone(),
            sha256: chosen.sha256.clone(),
            bump_revision,
            source_cluster: from.cluster.clone(),
            source_namespace: from.namespace.clone(),
            legacy_layout: chosen.legacy,
        })
    }

    /// The coordinator's etcd client TLS when `endpoints` are https.
    async fn etcd_tls(&self, endpoints: &[String]) -> Option<etcd_client::TlsOptions> {
        if !endpoints.iter().any(|e| e.starts_with("https://")) {
            return None;
        }
        match self.runtime.etcd_client_tls(&self.key).await {
            Ok(tls) => tls,
            Err(e) => {
                warn!(error = %e, "no etcd client certificate for the coordinator");
                None
            }
        }
    }

    async fn act(
        &self,
        action: &Action,
        infos: &[MemberInfo],
        resource: &EtcdCluster,
    ) -> Result<(), ActError> {
        let etcd_tls = resource.spec.etcd_tls();
        let uid = resource.metadata.uid.clone().unwrap_or_default();
        match action {
            Action::CreateSeed { name, version } | Action::CreateMember { name, version } => {
                let seed = matches!(action, Action::CreateSeed { .. });
                // Known before its process starts, so that its first registration is
                // answered rather than refused until the next observation.
                self.registry.with(&self.key, |entry, _| {
                    if !entry.runtime_members.contains(name) {
                        entry.runtime_members.push(name.clone());
                    }
                    if seed {
                        entry.seed = Some(name.clone());
                    }
                });
                // Decided before the member exists: the cluster is created (a cluster with
                // no member left is never bootstrapped again from nothing), and a seed
                // restores the backup found for it (a restarted coordinator hands the same
                // backup to it, never an empty start).
                let pending = self
                    .registry
                    .with(&self.key, |entry, _| entry.pending_restore.clone());
                self.epoch()?;
                self.registry
                    .decide(&self.key, |r| {
                        r.uid = uid.clone();
                        r.add_member(&self.key.name, name);
                        if seed {
                            if let Some(restore) = r.restore.as_mut().filter(|r| !r.done) {
                                restore.seed = name.clone();
                            } else if let Some(source) = &pending {
                                r.restore = Some(RestoreDecision {
                                    source: source.into(),
                                    seed: name.clone(),
                                    done: false,
                                });
                            }
                        }
                    })
                    .await?;
                etcd_operator::failpoint!("coordinator.create-member.after-record");
                self.epoch()?;
                self.runtime
                    .create_member(&self.key, name, *version, seed, etcd_tls)
                    .await?;
                self.registry
                    .decide(&self.key, |r| r.made(std::slice::from_ref(name), now_ms()))
                    .await?;
            }
            Action::CreateInitial { names, version } => {
                info!(members = ?names, "creating the initial members together (static bootstrap)");
                self.epoch()?;
                self.registry.with(&self.key, |entry, _| {
                    for name in names {
                        if !entry.runtime_members.contains(name) {
                            entry.runtime_members.push(name.clone());
                        }
                    }
                    entry.seed = None;
                });
                let grant = self.take_bootstrap_grant(&names[0]).await?;
                let token = bootstrap_token(&self.key, resource.metadata.uid.as_deref(), &names[0]);
                self.registry
                    .decide(&self.key, |r| {
                        r.uid = uid.clone();
                        for name in names {
                            r.add_member(&self.key.name, name);
                        }
                        r.bootstrap = Some(BootstrapRecord {
                            names: names.clone(),
                            token: token.clone(),
                            began: None,
                            abandoning: false,
                        });
                        r.grant = Some(GrantRecord::of(&grant));
                    })
                    .await?;
                etcd_operator::failpoint!("coordinator.create-initial.after-record");
                for (i, name) in names.iter().enumerate() {
                    if i == 1 {
                        etcd_operator::failpoint!("coordinator.create-initial.between-members");
                    }
                    self.epoch()?;
                    self.runtime
                        .create_member(&self.key, name, *version, true, etcd_tls)
                        .await?;
                }
                self.registry
                    .decide(&self.key, |r| r.made(names, now_ms()))
                    .await?;
                // Every peer URL is known now: the members that registered already are told
                // the initial cluster the next time they ask.
                let created = self.runtime.members(&self.key).await?;
                self.registry.with(&self.key, |entry, _| {
                    if let Some(initial) = entry.initial.as_mut()
                        && let Some(list) = initial_cluster(&initial.names, &created)
                    {
                        initial.initial_cluster = list;
                    }
                });
            }
            Action::EndBootstrap => {
                let ended = self.registry.with(&self.key, |entry, grants| {
                    let initial = entry.initial.take()?;
                    grants.release(&self.key, &initial.grant_id);
                    Some(initial)
                });
                etcd_operator::failpoint!("coordinator.end-bootstrap.before-record");
                self.registry
                    .decide(&self.key, |r| {
                        r.bootstrap = None;
                        if r.grant.as_ref().is_some_and(|g| g.kind == "bootstrap") {
                            r.grant = None;
                        }
                    })
                    .await?;
                if let Some(initial) = ended {
                    let took = initial.began.map(|at| now_ms() - at);
                    info!(members = ?initial.names, took_ms = ?took, "static bootstrap done");
                }
            }
            Action::AbandonBootstrap { names, reason } => {
                warn!(members = ?names, %reason, "abandoning a static bootstrap that never formed a cluster; deleting its members and their data");
                // Decided first: a coordinator restarted in the middle deletes the rest
                // (none of them ever served: nothing acknowledged is lost) and begins anew.
                self.registry
                    .decide(&self.key, |r| {
                        let b = r.bootstrap.get_or_insert_with(|| BootstrapRecord {
                            names: names.clone(),
                            ..Default::default()
                        });
                        b.abandoning = true;
                        r.created = None;
                        r.etcd_cluster_id.clear();
                    })
                    .await?;
                etcd_operator::failpoint!("coordinator.abandon-bootstrap.after-record");
                for name in names {
                    if infos
                        .iter()
                        .any(|i| &i.name == name && !i.client_url.is_empty())
                    {
                        self.epoch()?;
                        self.runtime.delete_member(&self.key, name, false).await?;
                    }
                }
                etcd_operator::failpoint!("coordinator.abandon-bootstrap.after-delete");
                self.registry.with(&self.key, |entry, grants| {
                    if let Some(initial) = entry.initial.take() {
                        grants.release(&self.key, &initial.grant_id);
                    }
                });
                self.registry
                    .decide(&self.key, |r| {
                        r.bootstrap = None;
                        for name in names {
                            r.forget_member(name);
                        }
                        if r.grant.as_ref().is_some_and(|g| g.kind == "bootstrap") {
                            r.grant = None;
                        }
                    })
                    .await?;
            }
            Action::DeleteRuntimeMember {
                name,
                reason,
                hand_over,
            } => {
                info!(member = %name, %reason, hand_over, "deleting runtime member");
                self.delete_runtime_member(infos, name, *hand_over).await?;
            }
            Action::RemoveDeadMember {
                name,
                member_id,
                reason,
            } => {
                info!(member = %name, member_id = %member_id_hex(*member_id), %reason, "removing dead member");
                self.with_grant(name, ChangeKind::Remove, |_| async {
                    etcd_operator::failpoint!("coordinator.remove-dead.after-grant");
                    self.remove_from_etcd(*member_id, infos).await?;
                    etcd_operator::failpoint!("coordinator.remove-dead.after-member-remove");
                    if infos.iter().any(|i| &i.name == name) {
                        self.delete_runtime_member(infos, name, false).await?;
                    }
                    Ok(())
                })
                .await?;
            }
            Action::AskToLeave { name } => {
                let info = find(infos, name)?;
                // A sidecar that cannot be reached is noted (from its first failure): past
                // dead-after the planner removes its member from etcd directly.
                let unreachable = |e: ActError| {
                    if matches!(&e, ActError::Sidecar { message, .. } if message.starts_with("unreachable"))
                    {
                        let now = now_ms();
                        self.registry.with(&self.key, |entry, _| {
                            entry.leave_unreachable.entry(name.clone()).or_insert(now);
                        });
                    }
                    e
                };
                let mut sidecar = self.sidecar_client(info).await.map_err(unreachable)?;
                self.registry.with(&self.key, |entry, _| {
                    entry.leave_unreachable.remove(name);
                });
                sidecar
                    .leave(LeaveRequest {
                        reason: "scale down".into(),
                        coordinator_epoch: self.epoch()?,
                    })
                    .await
                    .map_err(refused_by(name))?;
                info!(member = %name, "member left; deleting it");
                etcd_operator::failpoint!("coordinator.leave.after-sidecar-left");
                self.delete_runtime_member(infos, name, false).await?;
            }
            Action::FinishJoin { name } => {
                let info = find(infos, name)?;
                let mut sidecar = self.sidecar_client(info).await?;
                let finished = sidecar
                    .finish_join(etcd_operator::proto::FinishJoinRequest {
                        coordinator_epoch: self.epoch()?,
                    })
                    .await
                    .map_err(refused_by(name))?
                    .into_inner();
                info!(member = %name, promoted = finished.promoted, "finished an interrupted join");
            }
            Action::UpgradeMember { name, to } => {
                self.with_grant(name, ChangeKind::Upgrade, |grant| {
                    self.upgrade(infos, name, *to, grant)
                })
                .await?;
            }
            Action::RollBackMember {
                name,
                to,
                from,
                failure,
            } => {
                warn!(member = %name, %from, %to, failure = failure.as_deref().unwrap_or(""), "rolling the member back to the version it last ran, on its data");
                self.with_grant(name, ChangeKind::Upgrade, |_| {
                    self.roll_back(name, *to, *from, failure.as_deref())
                })
                .await?;
            }
            Action::RollingRestart { name, reason } => {
                self.rolling_restart(infos, name, *reason).await?;
            }
            Action::RotateCa { step } => {
                self.rotate_ca(infos, step).await?;
            }
            Action::TakeBackup { name } => {
                self.take_backup(infos, name, resource_keep(resource))
                    .await?;
            }
            Action::RestartMember { name, reason } => {
                info!(member = %name, %reason, "starting the member again on its data");
                self.epoch()?;
                self.runtime.start_member(&self.key, name).await?;
                self.registry
                    .metrics()
                    .member_restarts
                    .get_or_create(&crate::metrics::MemberLabels {
                        cluster: self.key.to_string(),
                        member: name.clone(),
                    })
                    .inc();
            }
            Action::ForceNewCluster {
                name,
                raft_index,
                revision,
                lost,
            } => {
                warn!(member = %name, raft_index, revision, lost = ?lost, "quorum lost for good: forcing a new cluster from the most up-to-date survivor");
                self.with_grant(name, ChangeKind::ForceNewCluster, |grant| async move {
                    self.registry
                        .decide(&self.key, |r| {
                            r.recovery = Some(ForcedRecovery {
                                from: name.clone(),
                                raft_index: *raft_index,
                                revision: *revision,
                                lost: lost.clone(),
                                at: rfc3339_now(),
                                ..Default::default()
                            });
                        })
                        .await?;
                    etcd_operator::failpoint!("coordinator.force-new-cluster.after-record");
                    let info = find(infos, name)?;
                    let mut sidecar = self.sidecar_client(info).await?;
                    let forced = sidecar
                        .force_new_cluster(ForceNewClusterRequest {
                            min_raft_index: *raft_index,
                            coordinator_epoch: self.epoch()?,
                            grant_id: grant,
                        })
                        .await
                        .map_err(refused_by(name))?
                        .into_inner();
                    etcd_operator::failpoint!("coordinator.force-new-cluster.after-force");
                    warn!(member = %name, revision = forced.revision, "new cluster forced; growing back by learners");
                    self.registry
                        .decide(&self.key, |r| {
                            if let Some(recovery) = r.recovery.as_mut() {
                                recovery.revision = forced.revision;
                                recovery.raft_index = forced.raft_index;
                                recovery.done = true;
                            }
                        })
                        .await?;
                    Ok(())
                })
                .await?;
            }
            Action::RestoreCluster {
                backup,
                seed,
                version,
                discard,
                keep,
                lost,
            } => {
                warn!(%backup, %seed, lost = ?lost, discard = ?discard, keep = ?keep, "quorum lost for good: creating the cluster again from the latest verified backup");
                self.with_grant(seed, ChangeKind::ForceNewCluster, |_| {
                    self.restore_cluster(backup, seed, *version, discard, keep, lost, resource)
                })
                .await?;
            }
            Action::DeleteKept { names } => {
                info!(members = ?names, "the restored cluster runs: deleting the survivors of the lost one, kept until now with their data");
                for name in names {
                    self.epoch()?;
                    self.runtime.delete_member(&self.key, name, false).await?;
                    etcd_operator::failpoint!("coordinator.delete-kept.after-delete");
                }
                self.registry
                    .decide(&self.key, |r| {
                        if let Some(recovery) = r.recovery.as_mut() {
                            recovery.kept.retain(|k| !names.contains(k));
                        }
                    })
                    .await?;
            }
            Action::Compact { name, revision } => {
                let done = self
                    .maintain(
                        infos,
                        name,
                        MaintenanceOp::Compact,
                        *revision,
                        String::new(),
                    )
                    .await?;
                info!(member = %name, revision = done.revision, "compacted");
                self.registry.with(&self.key, |entry, _| {
                    entry.maintenance.compacted = Some((done.revision.max(*revision), now_ms()));
                });
            }
            Action::Defragment { name, reason } => {
                info!(member = %name, %reason, "defragmenting");
                let mut outcome = None;
                let done = self
                    .with_grant(name, ChangeKind::Defragment, |grant| async {
                        outcome = Some(
                            self.maintain(infos, name, MaintenanceOp::Defragment, 0, grant)
                                .await?,
                        );
                        Ok(())
                    })
                    .await;
                // Recorded even when it failed: the member reports again before any other
                // step, and a failed round is not retried in a loop.
                self.registry.with(&self.key, |entry, _| {
                    entry
                        .maintenance
                        .defragmented
                        .insert(name.clone(), now_ms());
                });
                done?;
                let done = outcome.unwrap_or_default();
                self.registry
                    .metrics()
                    .defragmentations
                    .get_or_create(&crate::metrics::ClusterLabels {
                        cluster: self.key.to_string(),
                    })
                    .inc();
                info!(member = %name, db_size = done.db_size, db_size_in_use = done.db_size_in_use, "defragmented");
            }
            Action::DisarmAlarms { name } => {
                let done = self
                    .maintain(infos, name, MaintenanceOp::Disarm, 0, String::new())
                    .await?;
                info!(member = %name, disarmed = done.disarmed, "NOSPACE alarms disarmed");
                self.registry.with(&self.key, |entry, _| {
                    entry.maintenance.disarmed_at = Some(now_ms());
                });
            }
            Action::RefuseSpec { .. } | Action::Wait { .. } | Action::Steady => {}
        }
        Ok(())
    }

    /// Deletes runtime member `name` with its data, then takes it out of the record (a
    /// crash between the two finds it gone, and deletes nothing more).
    async fn delete_runtime_member(
        &self,
        infos: &[MemberInfo],
        name: &str,
        hand_over: bool,
    ) -> Result<(), ActError> {
        // A member the runtime had no trace of (gone with its data) has nothing to delete.
        if infos
            .iter()
            .any(|i| i.name == name && !i.client_url.is_empty())
        {
            self.epoch()?;
            self.runtime
                .delete_member(&self.key, name, hand_over)
                .await?;
        }
        etcd_operator::failpoint!("coordinator.delete-member.after-runtime-delete");
        self.registry
            .decide(&self.key, |r| r.forget_member(name))
            .await?;
        Ok(())
    }

    /// Quorum lost for good, `spec.recovery.quorumLoss: Restore`: the backup is read whole
    /// and checked first (nothing is deleted for a backup that is gone, damaged or out of
    /// reach); then the decision is written (the backup, the seed, the survivors kept with
    /// their data until the restored cluster runs); then the members whose data is gone are
    /// deleted and the seed is created, which restores the backup.
    #[allow(clippy::too_many_arguments)]
    async fn restore_cluster(
        &self,
        backup: &str,
        seed: &str,
        version: EtcdVersion,
        discard: &[String],
        keep: &[String],
        lost: &[String],
        resource: &EtcdCluster,
    ) -> Result<(), ActError> {
        // A restore decided before (and interrupted) goes on with the backup and the seed it
        // decided, and keeps the survivors it kept.
        let record = self.registry.record(&self.key).await?;
        let pending = record.restore.as_ref().filter(|r| !r.done).cloned();
        let mut keep: Vec<String> = keep.to_vec();
        for k in record.recovery.iter().flat_map(|r| r.kept.iter()) {
            if !keep.contains(k) {
                keep.push(k.clone());
            }
        }
        // A seed decided before whose data is gone (it died before its restore ended) is
        // discarded with the rest, and the restore goes on with a new seed under a name never
        // used; one whose data survives is the seed still, never stopped as a survivor.
        keep.retain(|k| pending.as_ref().is_none_or(|p| &p.seed != k));
        let keep = keep.as_slice();
        let (source, seed) = match &pending {
            Some(p) if discard.contains(&p.seed) => {
                (etcd_operator::proto::RestoreSource::from(&p.source), seed)
            }
            Some(p) => (
                etcd_operator::proto::RestoreSource::from(&p.source),
                p.seed.as_str(),
            ),
            None => (
                self.recovery_source(resource, backup)
                    .await
                    .map_err(ActError::Backup)?,
                seed,
            ),
        };
        let backup = source.backup.as_str();
        let storage = source.storage.clone().unwrap_or_default();
        let store = self.open_storage(&storage).await.map_err(|e| {
            ActError::Backup(format!(
                "backup {backup} cannot be checked, so nothing was deleted: {e}"
            ))
        })?;
        let source_namespace = if source.source_namespace.is_empty() {
            self.key.namespace.as_str()
        } else {
            source.source_namespace.as_str()
        };
        store
            .check(
                source_namespace,
                &source.source_cluster,
                &source.backup,
                &source.sha256,
            )
            .await
            .map_err(|e| {
                ActError::Backup(format!(
                    "backup {backup} cannot be restored, so nothing was deleted: {e}"
                ))
            })?;
        etcd_operator::failpoint!("coordinator.restore.after-check");
        self.epoch()?;
        self.registry
            .decide(&self.key, |r| {
                r.restore = Some(RestoreDecision {
                    source: (&source).into(),
                    seed: seed.to_string(),
                    done: false,
                });
                // Its ordinal is taken with the decision: never given to another member.
                r.add_member(&self.key.name, seed);
                // The restored cluster is a new etcd cluster, with an id of its own.
                r.etcd_cluster_id.clear();
                r.recovery = Some(ForcedRecovery {
                    from: seed.to_string(),
                    lost: lost.to_vec(),
                    at: rfc3339_now(),
                    backup: Some(backup.to_string()),
                    kept: keep.to_vec(),
                    ..Default::default()
                });
                for name in keep {
                    r.forget_member(name);
                }
            })
            .await?;
        etcd_operator::failpoint!("coordinator.restore.after-record");
        for name in discard {
            self.epoch()?;
            self.runtime.delete_member(&self.key, name, false).await?;
            self.registry
                .decide(&self.key, |r| {
                    r.forget_member(name);
                })
                .await?;
        }
        for name in keep {
            // Stopped, its data kept: it must not run the lost cluster beside the restored
            // one, and it is deleted only once the restored cluster runs.
            self.epoch()?;
            self.runtime.stop_member(&self.key, name).await?;
        }
        etcd_operator::failpoint!("coordinator.restore.after-discard");
        self.registry.with(&self.key, |entry, _| {
            for name in discard.iter().chain(keep) {
                entry.reports.remove(name);
                entry.registrations.remove(name);
            }
            entry
                .runtime_members
                .retain(|n| !discard.contains(n) && !keep.contains(n));
            entry.runtime_members.push(seed.to_string());
            entry.seed = Some(seed.to_string());
            entry.cluster_exists = false;
        });
        self.registry
            .decide(&self.key, |r| {
                r.add_member(&self.key.name, seed);
            })
            .await?;
        let made = self
            .runtime
            .members(&self.key)
            .await?
            .iter()
            .any(|m| m.name == seed);
        if !made {
            self.epoch()?;
            self.runtime
                .create_member(&self.key, seed, version, true, resource.spec.etcd_tls())
                .await?;
        }
        self.registry
            .decide(&self.key, |r| r.made(&[seed.to_string()], now_ms()))
            .await?;
        Ok(())
    }

    /// Takes the grant of a static bootstrap (held by the coordinator until the bootstrap
    /// ends or is abandoned), recorded before anything is created under it.
    async fn take_bootstrap_grant(
        &self,
        holder: &str,
    ) -> Result<etcd_operator::grant::MembershipGrant, ActError> {
        let grant = self
            .registry
            .with(&self.key, |_, grants| {
                grants.request(&self.key, holder, ChangeKind::Bootstrap, now_ms())
            })
            .map_err(|r| ActError::Grant(r.reason))?;
        if let Err(e) = self.registry.record_grant(&self.key).await {
            self.registry
                .with(&self.key, |_, grants| grants.release(&self.key, &grant.id));
            return Err(e.into());
        }
        Ok(grant)
    }

    /// One maintenance step through `name`'s sidecar.
    async fn maintain(
        &self,
        infos: &[MemberInfo],
        name: &str,
        op: MaintenanceOp,
        revision: i64,
        grant_id: String,
    ) -> Result<etcd_operator::proto::MaintainResponse, ActError> {
        let info = find(infos, name)?;
        let mut sidecar = self.sidecar_client_for(info, MAINTENANCE_DEADLINE).await?;
        Ok(sidecar
            .maintain(etcd_operator::proto::MaintainRequest {
                op: op as i32,
                revision,
                coordinator_epoch: self.epoch()?,
                grant_id,
            })
            .await
            .map_err(refused_by(name))?
            .into_inner())
    }

    /// The epoch of the term this coordinator acts under, asked again before every call
    /// that changes something: a coordinator that cannot show it leads does nothing.
    fn epoch(&self) -> Result<u64, ActError> {
        self.registry
            .leadership()
            .current()
            .ok_or(ActError::NotLeading)
    }

    /// Runs `work` holding a grant of `kind` for `member`, taken by the coordinator itself:
    /// refused while the coordinator is still reading the cluster's state after a start (the
    /// grants sidecars hold from before it are not known yet), recorded before `work`
    /// starts, renewed while it runs, and given back (and the record cleared) when it ends.
    /// `work` is given the grant's id, for the sidecar it asks to work under it (which renews
    /// it while it does, so that it outlives a coordinator that stops meanwhile).
    async fn with_grant<F>(
        &self,
        member: &str,
        kind: ChangeKind,
        work: impl FnOnce(String) -> F,
    ) -> Result<(), ActError>
    where
        F: Future<Output = Result<(), ActError>>,
    {
        let now = now_ms();
        let grant = self
            .registry
            .with(&self.key, |entry, grants| {
                crate::grants::settled(entry, now)?;
                grants
                    .request(&self.key, member, kind, now)
                    .map_err(crate::grants::NotGiven::Refused)
            })
            .map_err(|refusal| ActError::Grant(refusal.to_string()))?;
        if let Err(e) = self.registry.record_grant(&self.key).await {
            self.registry
                .with(&self.key, |_, grants| grants.release(&self.key, &grant.id));
            return Err(e.into());
        }
        etcd_operator::failpoint!("coordinator.grant.after-record");
        let mut work = std::pin::pin!(work(grant.id.clone()));
        let mut renew = tokio::time::interval(etcd_operator::grant::GRANT_RENEW_EVERY);
        renew.tick().await;
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                _ = renew.tick() => {
                    let renewed = self.registry.with(&self.key, |_, grants| {
                        grants.renew(&self.key, &grant.id, member, now_ms())
                    });
                    if let Err(refusal) = renewed {
                        warn!(grant = %grant.id, reason = %refusal.reason, "the coordinator's own grant could not be renewed");
                    }
                }
            }
        };
        self.registry
            .with(&self.key, |_, grants| grants.release(&self.key, &grant.id));
        if let Err(e) = self.registry.record_grant(&self.key).await {
            // The record still names it: a coordinator started from it lets it lapse.
            warn!(grant = %grant.id, error = %e, "the release of a grant could not be recorded");
        }
        result
    }

    /// Asks `name`'s sidecar for a backup, records the outcome, and, once a new backup is
    /// proven restorable, applies the retention of `keep`.
    async fn take_backup(
        &self,
        infos: &[MemberInfo],
        name: &str,
        keep: usize,
    ) -> Result<(), ActError> {
        let began = now_ms();
        let (storage, uid) = self.registry.with(&self.key, |entry, _| {
            (entry.backups.storage.clone(), entry.identity.clone())
        });
        let storage = storage.ok_or_else(|| ActError::Backup("no backup storage".into()))?;
        let uid = uid.ok_or_else(|| {
            ActError::Backup(
                "the cluster's identity is not known yet: no backup is taken that retention could not tell from another cluster's".into(),
            )
        })?;
        info!(member = %name, "taking a backup");
        let result = async {
            let info = find(infos, name)?;
            let mut sidecar = self.sidecar_client_for(info, BACKUP_DEADLINE).await?;
            let backup = sidecar
                .take_backup(etcd_operator::proto::BackupRequest {
                    storage: Some(storage.clone()),
                    coordinator_epoch: self.epoch()?,
                    cluster_uid: uid.clone(),
                    requested_at_unix_ms: began,
                })
                .await
                .map_err(refused_by(name))?
                .into_inner();
            Ok::<_, ActError>(backup)
        }
        .await;
        let now = now_ms();
        let metrics = self.registry.metrics();
        let labels = crate::metrics::ClusterLabels {
            cluster: self.key.to_string(),
        };
        let outcome = match result {
            Ok(backup) if backup.verified => Ok(backup),
            Ok(backup) => Err((
                Some(backup.clone()),
                format!(
                    "backup {} is stored but could not be proven restorable: {}",
                    backup.name, backup.verify_error
                ),
            )),
            Err(e) => Err((None, e.to_string())),
        };
        self.registry.with(&self.key, |entry, _| {
            let track = &mut entry.backups;
            // A success counts as finished once its retention ran too (below), so that
            // whoever waits on it sees the storage as retention left it.
            if outcome.is_err() {
                track.finished += 1;
            }
            if track.requested_at.is_some_and(|at| at <= began) {
                track.requested_at = None;
            }
            match &outcome {
                Ok(backup) => {
                    track.last_success = Some((backup.clone(), now));
                    track.last_verified = Some(backup.clone());
                    track.last_failure = None;
                    track.failures = 0;
                }
                Err((stored, message)) => {
                    if let Some(b) = stored {
                        track.last_success = Some((b.clone(), now));
                    }
                    track.last_failure = Some((now, message.clone()));
                    track.failures += 1;
                }
            }
        });
        let backup = match outcome {
            Ok(backup) => backup,
            Err((_, message)) => {
                metrics.backup_failures.get_or_create(&labels).inc();
                warn!(member = %name, error = %message, "backup failed");
                return Err(ActError::Backup(message));
            }
        };
        metrics
            .backup_last_success
            .get_or_create(&labels)
            .set(now / 1000);
        metrics
            .backup_duration
            .get_or_create(&labels)
            .set((now - began) as f64 / 1000.0);
        metrics
            .backup_bytes
            .get_or_create(&labels)
            .set(i64::try_from(backup.size_bytes).unwrap_or(i64::MAX));
        info!(member = %name, backup = %backup.name, revision = backup.revision, bytes = backup.size_bytes, "backup taken and proven restorable");
        etcd_operator::failpoint!("coordinator.backup.before-retention");
        // Retention, only now that a new backup is proven good, and only among this
        // cluster's own backups (its identity); then the snapshots its earlier backups left
        // without metadata, asked for before this one (one backup of a cluster at a time).
        let owner =
            etcd_operator::backup::BackupOwner::new(&self.key.namespace, &self.key.name, &uid);
        let retained = async {
            let store = self.open_storage(&storage).await?;
            let all = store
                .list(&owner.namespace, &owner.cluster, &Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let doomed = etcd_operator::backup::to_delete(&all, &owner, keep);
            for old in all.iter().filter(|b| doomed.contains(&b.name)) {
                store.delete(old).await.map_err(|e| e.to_string())?;
                etcd_operator::failpoint!("coordinator.backup.during-retention");
            }
            let orphans = store
                .orphans(&owner, began)
                .await
                .map_err(|e| e.to_string())?;
            for orphan in &orphans {
                store
                    .delete_orphan(&owner, orphan)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>((doomed, orphans))
        }
        .await;
        let retention_error = match retained {
            Ok((deleted, orphans)) => {
                if !deleted.is_empty() {
                    info!(deleted = ?deleted, keep, "old backups deleted");
                }
                if !orphans.is_empty() {
                    info!(deleted = ?orphans, "snapshots left without metadata deleted");
                }
                None
            }
            Err(e) => {
                warn!(error = %e, "retention failed; old backups are kept");
                Some(e)
            }
        };
        self.registry.with(&self.key, |entry, _| {
            entry.backups.retention_error = retention_error;
            entry.backups.finished += 1;
        });
        Ok(())
    }

    async fn remove_from_etcd(&self, member_id: u64, infos: &[MemberInfo]) -> Result<(), ActError> {
        let endpoints: Vec<String> = infos
            .iter()
            .filter(|i| i.running)
            .map(|i| i.client_url.clone())
            .collect();
        let tls = self.etcd_tls(&endpoints).await;
        let mut client =
            connect(tls.as_ref(), &endpoints)
                .await
                .map_err(|source| ActError::Etcd {
                    op: "connect",
                    source,
                })?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match client.member_remove(member_id).await {
                Ok(_) => return Ok(()),
                Err(e)
                    if etcd_sidecar::error::etcd_error(&e)
                        == Some(etcd_operator::etcd_error::EtcdError::MemberNotFound) =>
                {
                    // Gone already (a removal whose answer was lost), if the member list of
                    // this very cluster says so: a stranger on a member's address knows
                    // nothing of it.
                    let known = self.registry.with(&self.key, |entry, _| {
                        entry
                            .record
                            .as_ref()
                            .and_then(|r| u64::from_str_radix(&r.etcd_cluster_id, 16).ok())
                    });
                    match read_member_list(tls.as_ref(), &endpoints, known).await {
                        Some(list) if list.iter().all(|m| m.id != member_id) => return Ok(()),
                        _ => {
                            return Err(ActError::Etcd {
                                op: "member remove (not found, by a member whose cluster could not be confirmed)",
                                source: e,
                            });
                        }
                    }
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    warn!(error = %e, "member remove failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(source) => {
                    return Err(ActError::Etcd {
                        op: "member remove",
                        source,
                    });
                }
            }
        }
    }

    async fn upgrade(
        &self,
        infos: &[MemberInfo],
        name: &str,
        to: EtcdVersion,
        grant_id: String,
    ) -> Result<(), ActError> {
        let info = find(infos, name)?;
        self.runtime.check_version(to)?;
        // A restart on the version it runs where the runtime would not restart it: the
        // sidecar starts etcd again itself once it has stopped.
        let in_place = to == info.version && !self.runtime.restarts_on_same_version();
        let mut sidecar = self.sidecar_client(info).await?;
        let phase = sidecar
            .get_member_health(etcd_operator::proto::GetMemberHealthRequest {})
            .await
            .map_err(refused_by(name))?
            .into_inner()
            .phase();
        if phase == proto::MemberPhase::HandedOff {
            // Handed off before (a coordinator that stopped before the restart): its etcd is
            // stopped; the step goes on from there.
            info!(member = %name, %to, "handed off already; restarting on the new version");
        } else {
            let handoff = sidecar
                .handoff(HandoffRequest {
                    target_version: to.to_string(),
                    restart_timeout_ms: 0,
                    coordinator_epoch: self.epoch()?,
                    grant_id,
                    restart_in_place: in_place,
                })
                .await
                .map_err(refused_by(name))?
                .into_inner();
            info!(member = %name, %to, moved_leadership = handoff.moved_leadership, "handed off; restarting on the new version");
        }
        etcd_operator::failpoint!("coordinator.upgrade.after-handoff");
        // The step is under way, recorded before the restart: the planner waits for the
        // member to report healthy on the new version (`WaitReason::Upgrading`) before any
        // other step, and status is written on every pass meanwhile; with the version it
        // last ran healthy, which it is rolled back to if it does not come back healthy.
        let restarted_at = now_ms();
        let reported = self.registry.with(&self.key, |entry, _| {
            entry
                .reports
                .get(name)
                .filter(|r| r.report.healthy)
                .and_then(|r| r.report.etcd_version.parse::<EtcdVersion>().ok())
        });
        self.registry
            .decide(&self.key, |r| {
                let last_healthy = r
                    .upgrades
                    .get(name)
                    .map(|step| step.last_healthy.clone())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| reported.unwrap_or(info.version).to_string());
                r.upgrades.insert(
                    name.to_string(),
                    UpgradeStepRecord {
                        at: restarted_at,
                        to: to.to_string(),
                        last_healthy,
                        rollback: false,
                    },
                );
            })
            .await?;
        etcd_operator::failpoint!("coordinator.upgrade.after-record");
        if !in_place {
            self.epoch()?;
            self.runtime.restart_member(&self.key, name, to).await?;
        }
        // What its sidecar said before the restart (handed off) is not news about it now.
        self.registry.with(&self.key, |entry, _| {
            entry.reports.remove(name);
        });
        Ok(())
    }

    /// Rolls `name` back to `to`, the version it last ran healthy, on its data: the step
    /// (and, when the upgrade failed, the failure) recorded first, then the restart. No
    /// handoff: its etcd does not serve on `from`.
    async fn roll_back(
        &self,
        name: &str,
        to: EtcdVersion,
        from: EtcdVersion,
        failure: Option<&str>,
    ) -> Result<(), ActError> {
        self.runtime.check_version(to)?;
        let at = now_ms();
        self.registry
            .decide(&self.key, |r| {
                r.upgrades.insert(
                    name.to_string(),
                    UpgradeStepRecord {
                        at,
                        to: to.to_string(),
                        last_healthy: to.to_string(),
                        rollback: true,
                    },
                );
                if let Some(error) = failure {
                    r.upgrade_failed = Some(UpgradeFailureRecord {
                        member: name.to_string(),
                        to: from.to_string(),
                        back_to: to.to_string(),
                        error: error.to_string(),
                        at,
                    });
                }
            })
            .await?;
        etcd_operator::failpoint!("coordinator.rollback.after-record");
        self.epoch()?;
        self.runtime.restart_member(&self.key, name, to).await?;
        self.registry.with(&self.key, |entry, _| {
            entry.reports.remove(name);
        });
        Ok(())
    }

    fn status(
        &self,
        resource: &EtcdCluster,
        observed: &Observed,
        infos: &[MemberInfo],
        plan: &Plan,
        error: Option<&str>,
        authorities: &Authorities,
    ) -> ClusterStatus {
        let previous = self
            .registry
            .with(&self.key, |entry, _| entry.status.clone())
            .unwrap_or_default();
        let etcd = observed.etcd_members.as_deref().unwrap_or(&[]);
        // Health as the planner judged it: one definition for the plan and the status.
        let health = plan::health(observed);
        let ready = health.healthy_voters;
        let mut members = Vec::new();
        for rm in &observed.members {
            let info = infos.iter().find(|i| i.name == rm.name);
            let report = rm.report.as_ref();
            let entry = etcd.iter().find(|e| {
                report.is_some_and(|r| r.member_id != 0 && r.member_id == e.id) || e.name == rm.name
            });
            let healthy = health.healthy.contains(&rm.name);
            let learner = entry
                .map(|e| e.is_learner)
                .unwrap_or(report.is_some_and(|r| r.learner));
            let last_error = self.registry.with(&self.key, |e, _| {
                e.reports
                    .get(&rm.name)
                    .map(|r| r.report.last_error.clone())
                    .unwrap_or_default()
            });
            members.push(MemberStatus {
                name: rm.name.clone(),
                id: member_id_hex(
                    entry
                        .map(|e| e.id)
                        .or(report.map(|r| r.member_id))
                        .unwrap_or(0),
                ),
                client_urls: entry
                    .map(|e| e.client_urls.clone())
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| {
                        info.map(|i| vec![i.client_url.clone()]).unwrap_or_default()
                    }),
                peer_urls: entry
                    .map(|e| e.peer_urls.clone())
                    .unwrap_or_else(|| info.map(|i| vec![i.peer_url.clone()]).unwrap_or_default()),
                // What etcd says it runs, never what it was configured with: a member whose
                // etcd is down runs no version.
                version: report
                    .filter(|_| rm.running)
                    .map(|r| r.etcd_version.clone())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| UNKNOWN_VERSION.to_string()),
                healthy,
                leader: healthy && report.is_some_and(|r| r.leader),
                learner,
                phase: proto::MemberPhase::from(if rm.running {
                    MemberShown::Reported(report.map_or(ReportedPhase::Starting, |r| r.phase))
                } else if rm.data == plan::MemberData::Intact
                    && (rm.restart_on_request || rm.restarts > 0)
                {
                    MemberShown::Restarting
                } else {
                    MemberShown::Down
                })
                .into(),
                last_error,
                restarts: info.map_or(0, |i| i.restarts.count),
                last_exit: info
                    .map(|i| i.restarts.last_exit.clone())
                    .unwrap_or_default(),
                alarms: report
                    .map(|r| r.alarms.iter().map(|a| a.as_str().to_string()).collect())
                    .unwrap_or_default(),
                db_size: report.map_or(0, |r| r.db_size),
                db_size_in_use: report.map_or(0, |r| r.db_size_in_use),
            });
        }
        let manifest_error = self
            .registry
            .with(&self.key, |entry, _| entry.manifest_error.clone());
        let spec_ok = observed.spec.is_ok() && plan.refused.is_none() && manifest_error.is_none();
        let voters = health.voters;
        let available = voters > 0 && ready >= plan::quorum(voters);
        let spec_message = match (&observed.spec, &plan.action) {
            _ if manifest_error.is_some() => format!(
                "{}; the cluster runs on as last read",
                manifest_error.as_deref().unwrap_or_default()
            ),
            (Err(e), _) => e.to_string(),
            _ if plan.refused.is_some() => plan.refused.clone().unwrap_or_default(),
            (Ok(spec), _) if !spec.warnings.is_empty() => spec.warnings.join("; "),
            _ => "the spec is valid".into(),
        };
        let progressing =
            plan.action.changes_something() || matches!(plan.action, Action::Wait { .. });
        let progress_message = match (&plan.action, error) {
            (_, Some(e)) => format!("{}: {e}", plan.action.kind()),
            (Action::Wait { reason }, _) => reason.to_string(),
            (Action::Steady, _) => "the cluster matches its spec".into(),
            (Action::RefuseSpec { .. }, _) => "nothing changes while the spec is refused".into(),
            (a, _) => format!("{} {}", a.kind(), a.member().unwrap_or("")),
        };
        let degraded =
            matches!(plan.phase, Phase::Degraded | Phase::Failed) || ready < members.len();
        let mut conditions = vec![
            condition(
                ConditionType::Available,
                ConditionStatus::from(available),
                if available {
                    "QuorumHealthy"
                } else {
                    "QuorumUnavailable"
                },
                &format!("{ready} of {voters} voting members healthy"),
            ),
            condition(
                ConditionType::Progressing,
                ConditionStatus::from(progressing),
                if progressing {
                    camel(plan.action.kind())
                } else {
                    "Steady".into()
                }
                .as_str(),
                &progress_message,
            ),
            condition(
                ConditionType::Degraded,
                ConditionStatus::from(degraded),
                if degraded {
                    plan.phase.as_str()
                } else {
                    "AllMembersHealthy"
                },
                &format!("{ready} of {} members healthy", members.len()),
            ),
            condition(
                ConditionType::SpecValid,
                ConditionStatus::from(spec_ok),
                match (spec_ok, manifest_error.is_some()) {
                    (true, _) => "Valid",
                    (false, true) => "ManifestRefused",
                    (false, false) => "Invalid",
                },
                &spec_message,
            ),
        ];
        let (forced, track, reports) = self.registry.with(&self.key, |entry, _| {
            (
                entry.record.as_ref().and_then(|r| r.recovery.clone()),
                entry.backups.clone(),
                entry
                    .reports
                    .values()
                    .map(|r| r.report.clone())
                    .collect::<Vec<_>>(),
            )
        });
        if let Some(c) = quorum_condition(&plan.action, forced.as_ref()) {
            conditions.push(c);
        }
        let alarm_seen = previous
            .conditions
            .iter()
            .any(|c| c.r#type() == proto::ConditionType::Alarm);
        if let Some(c) = alarm_condition(resource, alarm_seen, &members) {
            conditions.push(c);
        }
        if let Some(failure) = &observed.upgrade_failed {
            conditions.push(condition(
                ConditionType::UpgradeFailed,
                ConditionStatus::True,
                "RolledBack",
                &plan::WaitReason::UpgradeFailed(failure.clone()).to_string(),
            ));
        }
        conditions.push(authorities.condition(crate::security::now_secs()));
        if let Some(c) = backup_condition(resource, &track) {
            conditions.push(c);
        }
        let from_backup = forced.as_ref().is_some_and(|f| f.backup.is_some());
        let origin = self.registry.with(&self.key, |entry, _| {
            entry
                .record
                .as_ref()
                .and_then(|r| r.restore.as_ref())
                .map(|r| restore_origin(&r.source, &self.key))
        });
        if let Some(c) = restored_condition(
            resource,
            observed,
            plan,
            &reports,
            from_backup,
            origin.as_deref(),
        ) {
            conditions.push(c);
        }
        let backup = backup_state(&track);
        let now = rfc3339_now();
        for c in &mut conditions {
            c.last_transition_time = previous
                .conditions
                .iter()
                .find(|p| p.r#type == c.r#type && p.status == c.status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
        }
        let endpoints: Vec<String> = members
            .iter()
            .filter(|m| !m.learner && m.healthy)
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect();
        let change_in_flight = observed
            .grant
            .as_ref()
            .map(|g| {
                format!(
                    "{} of {} ({})",
                    etcd_operator::grant::kind_name(g.kind),
                    g.member,
                    g.id
                )
            })
            .unwrap_or_default();
        ClusterStatus {
            namespace: self.key.namespace.clone(),
            name: self.key.name.clone(),
            size: resource.spec.size.max(0) as u32,
            ready: ready as u32,
            phase: proto::ClusterPhase::from(plan.phase).into(),
            current_version: plan::cluster_version(observed)
                .map(|v| v.to_string())
                .unwrap_or_default(),
            target_version: resource.spec.version.clone(),
            conditions,
            members,
            change_in_flight,
            observed_generation: resource.metadata.generation.unwrap_or(0),
            endpoints: endpoints.join(","),
            backup,
            // Read from the grant table whenever the status is read (Registry::statuses).
            grants_given: 0,
        }
    }
}

/// The certificate authorities a cluster's certificates chain to, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorities {
    /// When the control path's CA expires, Unix seconds.
    pub control: i64,
    /// With TLS: when the cluster's etcd CA expires, or why it cannot be had (it is lost:
    /// never replaced by a new one).
    pub etcd: Option<Result<i64, String>>,
    /// The phase of the etcd CA's rotation under way, if any.
    pub rotating: Option<plan::CaPhase>,
}

/// A CA expiring within this is said to in the `CertificatesValid` condition (False).
pub const CA_EXPIRY_WARNING_SECS: i64 = 30 * 24 * 3600;

impl Authorities {
    /// The `CertificatesValid` condition at `now` (Unix seconds): False when a CA is lost
    /// or expires within [`CA_EXPIRY_WARNING_SECS`], saying what to do.
    pub fn condition(&self, now: i64) -> Condition {
        if let Some(Err(lost)) = &self.etcd {
            return condition(
                ConditionType::CertificatesValid,
                ConditionStatus::False,
                "CALost",
                lost,
            );
        }
        let at = |secs: i64| {
            jiff::Timestamp::from_second(secs)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        if let Some(phase) = self.rotating {
            let step = match phase {
                plan::CaPhase::Trust => {
                    "members are restarted one at a time to trust the old and the new CA"
                }
                plan::CaPhase::Reissue => "every certificate is issued again by the new CA",
                plan::CaPhase::Drop => {
                    "members are restarted one at a time to trust the new CA alone (applications must use the client bundle issued by the new CA)"
                }
            };
            return condition(
                ConditionType::CertificatesValid,
                ConditionStatus::True,
                "CARotating",
                &format!("the etcd CA rotates (phase {}): {step}", phase.as_str()),
            );
        }
        let mut cas = vec![("control", self.control)];
        if let Some(Ok(etcd)) = &self.etcd {
            cas.push(("etcd", *etcd));
        }
        let listed: Vec<String> = cas
            .iter()
            .map(|(name, expires)| format!("the {name} CA expires at {}", at(*expires)))
            .collect();
        let soonest = cas.iter().min_by_key(|(_, expires)| *expires).copied();
        match soonest {
            Some((name, expires)) if expires - now <= CA_EXPIRY_WARNING_SECS => condition(
                ConditionType::CertificatesValid,
                ConditionStatus::False,
                "CAExpiresSoon",
                &format!(
                    "the {name} CA expires at {}: no certificate it issues outlives it{}",
                    at(expires),
                    if name == "control" {
                        ", and the control CA is not rotated in place. Before then, create a new cluster from a backup (it gets a CA of its own); the control CA is replaced by deleting it (local: <state>/pki/ca.*; Kubernetes: the Secret etcd-operator-ca) once no member uses it"
                    } else {
                        ". It rotates on its own, with an overlap, once a third of its life is left"
                    }
                ),
            ),
            _ => condition(
                ConditionType::CertificatesValid,
                ConditionStatus::True,
                "Valid",
                &listed.join("; "),
            ),
        }
    }
}

/// A member's version while its etcd does not say which it runs (down, or not answering).
pub const UNKNOWN_VERSION: &str = "unknown";

fn rfc3339_ms(ms: UnixMillis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Where backups stand, for the status (`None` before any backup and without a schedule).
fn backup_state(track: &crate::backups::BackupTrack) -> Option<etcd_operator::proto::BackupState> {
    if track.last_success.is_none() && track.last_failure.is_none() && track.next_due.is_none() {
        return None;
    }
    Some(etcd_operator::proto::BackupState {
        last_successful: track
            .last_success
            .as_ref()
            .map(|(b, _)| b.name.clone())
            .unwrap_or_default(),
        last_successful_time: track
            .last_success
            .as_ref()
            .map(|(b, _)| b.created_at.clone())
            .unwrap_or_default(),
        last_verified: track
            .last_verified
            .as_ref()
            .map(|b| b.name.clone())
            .unwrap_or_default(),
        last_failure: track
            .last_failure
            .as_ref()
            .map(|(_, m)| m.clone())
            .unwrap_or_default(),
        last_failure_time: track
            .last_failure
            .as_ref()
            .map(|(at, _)| rfc3339_ms(*at))
            .unwrap_or_default(),
        next: track.next_due.map(rfc3339_ms).unwrap_or_default(),
    })
}

/// `Alarm`: True while etcd has an alarm raised on a member, with what is done about it (or
/// what to do by hand); False once none is raised; absent before any was seen.
fn alarm_condition(
    resource: &EtcdCluster,
    seen_before: bool,
    members: &[MemberStatus],
) -> Option<Condition> {
    let raised = |alarm: plan::MemberAlarm| -> Vec<String> {
        members
            .iter()
            .filter(|m| m.alarms.iter().any(|a| a == alarm.as_str()))
            .map(|m| m.name.clone())
            .collect()
    };
    // Those that wait for people first, each saying what to do.
    for (alarm, reason) in [
        (plan::MemberAlarm::Corrupt, "Corrupt"),
        (plan::MemberAlarm::DiskFull, "DiskFull"),
    ] {
        let members = raised(alarm);
        if !members.is_empty() {
            let wait = plan::WaitReason::Alarmed { alarm, members };
            return Some(condition(
                ConditionType::Alarm,
                ConditionStatus::True,
                reason,
                &wait.to_string(),
            ));
        }
    }
    let nospace = raised(plan::MemberAlarm::NoSpace);
    if !nospace.is_empty() {
        let recovers = observed_spec_recovers(resource);
        let message = if recovers {
            format!(
                "etcd raised NOSPACE on {}: the cluster refuses writes. No member is replaced for it. spec.maintenance lets the operator recover: it compacts to the current revision, defragments one member at a time (followers first, the leader last) and disarms the alarm",
                nospace.join(", ")
            )
        } else {
            plan::WaitReason::Alarmed {
                alarm: plan::MemberAlarm::NoSpace,
                members: nospace,
            }
            .to_string()
        };
        return Some(condition(
            ConditionType::Alarm,
            ConditionStatus::True,
            "NoSpace",
            &message,
        ));
    }
    // Shown once an alarm was seen, so that its clearing is visible too.
    seen_before.then(|| {
        condition(
            ConditionType::Alarm,
            ConditionStatus::False,
            "Cleared",
            "etcd has no alarm raised: the cluster takes writes",
        )
    })
}

/// Whether the spec lets the operator recover from NOSPACE.
fn observed_spec_recovers(resource: &EtcdCluster) -> bool {
    validate_cluster(resource).is_ok_and(|s| s.maintenance.recover_nospace)
}

/// `BackupHealthy`: whether the newest backup is proven restorable; absent while the spec
/// asks for no backups and none was taken.
fn backup_condition(
    resource: &EtcdCluster,
    track: &crate::backups::BackupTrack,
) -> Option<Condition> {
    let failed_last = match (&track.last_failure, &track.last_success) {
        (Some((failed, _)), Some((_, ok))) => failed >= ok,
        (Some(_), None) => true,
        _ => false,
    };
    if failed_last {
        let (_, message) = track.last_failure.as_ref()?;
        return Some(condition(
            ConditionType::BackupHealthy,
            ConditionStatus::False,
            "BackupFailed",
            &format!(
                "{message} ({} failure{} in a row; retried with a backoff; the cluster is untouched)",
                track.failures,
                if track.failures == 1 { "" } else { "s" }
            ),
        ));
    }
    match &track.last_verified {
        // Backups that are never pruned grow without bound: said, not hidden in a log.
        Some(b) if track.retention_error.is_some() => Some(condition(
            ConditionType::BackupHealthy,
            ConditionStatus::False,
            "RetentionFailed",
            &format!(
                "newest backup {} is proven restorable, but old backups could not be deleted: {}",
                b.name,
                track.retention_error.as_deref().unwrap_or_default()
            ),
        )),
        Some(b) => Some(condition(
            ConditionType::BackupHealthy,
            ConditionStatus::True,
            "BackupVerified",
            &format!(
                "newest backup {} (revision {}, {} bytes) taken at {} and proven restorable",
                b.name, b.revision, b.size_bytes, b.created_at
            ),
        )),
        None if resource.spec.backup.is_some() => Some(condition(
            ConditionType::BackupHealthy,
            ConditionStatus::Unknown,
            "NoBackupYet",
            &match track.next_due {
                Some(next) => format!("no backup yet; the first is due at {}", rfc3339_ms(next)),
                None => {
                    "no backup yet (no schedule: etcd-coordinator backup NAME takes one)".into()
                }
            },
        )),
        None => None,
    }
}

/// Where a restore's data comes from: `namespace/cluster/backup` (namespace `local` in local
/// mode), and `(earlier layout)` for a backup under `<prefix><cluster>/`.
fn restore_origin(source: &crate::record::RestoreSourceRecord, key: &ClusterKey) -> String {
    let namespace = if source.source_namespace.is_empty() {
        key.namespace.as_str()
    } else {
        source.source_namespace.as_str()
    };
    let cluster = if source.source_cluster.is_empty() {
        key.name.as_str()
    } else {
        source.source_cluster.as_str()
    };
    format!(
        "{}{}/{cluster}/{}",
        if source.legacy_layout {
            "(earlier layout) "
        } else {
            ""
        },
        etcd_operator::backup::namespace_segment(namespace),
        source.backup
    )
}

/// `Restored`, for a cluster created from a backup: from which backup, at which revision,
/// and whether revisions were bumped; or why it is not restored.
fn restored_condition(
    resource: &EtcdCluster,
    observed: &Observed,
    plan: &Plan,
    reports: &[etcd_operator::proto::HealthReport],
    recovered_from_backup: bool,
    origin: Option<&str>,
) -> Option<Condition> {
    if resource.spec.restore.is_none() && !recovered_from_backup {
        return None;
    }
    if let Some(r) = reports.iter().find(|r| !r.restored_from.is_empty()) {
        // Where the data came from: namespace/cluster/backup, from the decision record.
        let from = origin
            .filter(|o| o.ends_with(&format!("/{}", r.restored_from)))
            .unwrap_or(&r.restored_from);
        let message = if r.restored_bump > 0 {
            format!(
                "restored from backup {from} at revision {}; revisions bumped by {} and marked compacted (watchers from before get a compaction error, never a revision going backwards)",
                r.restored_revision, r.restored_bump
            )
        } else {
            format!(
                "restored from backup {from} at revision {}; this etcdutl has no --bump-revision, so revisions resume at the backup's: watchers and informers must start over",
                r.restored_revision
            )
        };
        return Some(condition(
            ConditionType::Restored,
            ConditionStatus::True,
            "Restored",
            &message,
        ));
    }
    if let Some(Err(message)) = &observed.restore {
        return Some(condition(
            ConditionType::Restored,
            ConditionStatus::False,
            "RestoreRefused",
            message,
        ));
    }
    if matches!(plan.action, Action::RefuseSpec { .. }) {
        return None;
    }
    let failing = reports.iter().find(|r| r.last_error.contains("restore"));
    Some(match failing {
        Some(r) => condition(
            ConditionType::Restored,
            ConditionStatus::False,
            "RestoreFailed",
            &r.last_error,
        ),
        None => condition(
            ConditionType::Restored,
            ConditionStatus::Unknown,
            "Restoring",
            "the seed restores the backup; nothing else starts until it runs",
        ),
    })
}

/// The members as the planner sees them at `now`: what the runtime has, each with its
/// sidecar's latest report (every time in it on the coordinator's clock, its age measured
/// on the monotonic clock: [`crate::registry::ReceivedReport::planner_report`]), the
/// upgrade step the record has under way and its last defragmentation.
pub fn planner_members(
    infos: &[MemberInfo],
    reports: &std::collections::BTreeMap<String, crate::registry::ReceivedReport>,
    record: &DecisionRecord,
    defragmented: &std::collections::BTreeMap<String, UnixMillis>,
    now: UnixMillis,
) -> Vec<RuntimeMember> {
    infos
        .iter()
        .map(|info| {
            let report = reports.get(&info.name).map(|r| r.planner_report(now));
            RuntimeMember {
                name: info.name.clone(),
                ordinal: info.ordinal,
                running: info.running,
                down_since: info.down_since,
                version: info.version,
                report,
                data: info.data,
                restart_on_request: info.restart_on_request,
                restarts: info.restarts.count,
                failing_since: info.restarts.failing_since,
                upgrade: record
                    .upgrades
                    .get(&info.name)
                    .map(|step| plan::UpgradeStep {
                        at: step.at,
                        to: step.to.parse().unwrap_or(info.version),
                        last_healthy: step.last_healthy.parse().ok(),
                        rollback: step.rollback,
                    }),
                last_exit: info.restarts.last_exit.clone(),
                defragmented_at: defragmented.get(&info.name).copied(),
            }
        })
        .collect()
}

/// Whether a pass reads the backup storage for a recovery under `quorumLoss: Restore`:
/// only when it may be needed, that is when a member's data is gone (a member the runtime
/// has no trace of included, see [`observed_members`]) or a cluster that was created has no
/// member left.
pub fn needs_recovery_backup(
    policy: etcd_operator::resource::QuorumLossPolicy,
    infos: &[MemberInfo],
    etcd_listed: bool,
    record: &DecisionRecord,
) -> bool {
    policy == etcd_operator::resource::QuorumLossPolicy::Restore
        && (infos.iter().any(|i| i.data == plan::MemberData::Gone)
            || (infos.is_empty() && !etcd_listed && record.created.is_some()))
}

/// What the planner is told of a cluster's members, from what the runtime has
/// (`infos`) and the durable record, the same way for every runtime: the survivors of a lost
/// cluster kept aside (until its restore runs) are left out; every member the record names
/// and the runtime has no trace of is there, gone with its data; and a member whose data is
/// gone is never one to start again on it, whoever would start it.
pub fn observed_members(
    mut infos: Vec<MemberInfo>,
    record: &DecisionRecord,
    cluster: &str,
    version: EtcdVersion,
    mut gone_since: impl FnMut(&str) -> UnixMillis,
) -> Vec<MemberInfo> {
    let kept: Vec<&String> = record.recovery.iter().flat_map(|r| r.kept.iter()).collect();
    infos.retain(|i| !kept.contains(&&i.name));
    for name in &record.members {
        // Decided, never made: nothing of it exists to be gone (forgotten by the caller).
        if kept.contains(&name)
            || record.unmade.contains(name)
            || infos.iter().any(|i| &i.name == name)
        {
            continue;
        }
        let Some(ordinal) = etcd_operator::naming::member_ordinal(cluster, name) else {
            continue;
        };
        infos.push(gone_member(name, ordinal, gone_since(name), version));
    }
    for info in &mut infos {
        if info.data == plan::MemberData::Gone {
            info.restart_on_request = false;
        }
    }
    infos.sort_by_key(|i| i.ordinal);
    infos
}

/// A member the decision record names and the runtime has no trace of: gone, with its
/// data (a Pod deleted with its `emptyDir`, a member directory removed by hand). Its URLs
/// are unknown; nothing can be called on it.
fn gone_member(name: &str, ordinal: u32, since: UnixMillis, version: EtcdVersion) -> MemberInfo {
    MemberInfo {
        name: name.to_string(),
        ordinal,
        running: false,
        down_since: Some(since),
        version,
        seed: false,
        client_url: String::new(),
        peer_url: String::new(),
        sidecar_url: String::new(),
        etcd_tls: false,
        data: plan::MemberData::Gone,
        restart_on_request: false,
        restarts: crate::runtime::RestartHistory {
            last_exit: "gone: the runtime has no trace of it".into(),
            ..Default::default()
        },
    }
}

/// A sidecar's refusal or failure of a call, as an act error naming the member.
fn refused_by(member: &str) -> impl FnOnce(tonic::Status) -> ActError + '_ {
    move |s| ActError::Sidecar {
        member: member.to_string(),
        message: s.message().to_string(),
    }
}

fn find<'a>(infos: &'a [MemberInfo], name: &str) -> Result<&'a MemberInfo, ActError> {
    infos
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| ActError::Runtime(RuntimeError::NoSuchMember(name.to_string())))
}

impl<R: Runtime> ClusterController<R> {
    /// A client of `info`'s sidecar over mutual TLS: the sidecar must present its member's
    /// identity, and sees the coordinator's.
    async fn sidecar_client(
        &self,
        info: &MemberInfo,
    ) -> Result<SidecarClient<tonic::transport::Channel>, ActError> {
        self.sidecar_client_for(info, Duration::from_secs(180))
            .await
    }

    /// As [`Self::sidecar_client`], with calls allowed up to `timeout`.
    async fn sidecar_client_for(
        &self,
        info: &MemberInfo,
        timeout: Duration,
    ) -> Result<SidecarClient<tonic::transport::Channel>, ActError> {
        let unreachable = |message: String| ActError::Sidecar {
            member: info.name.clone(),
            message,
        };
        let channel = etcd_operator::tls::channel(
            &info.sidecar_url,
            self.runtime.sidecar_tls(&self.key, &info.name),
            Duration::from_secs(3),
            Some(timeout),
        )
        .map_err(|e| unreachable(e.to_string()))?;
        let mut client = SidecarClient::new(channel);
        // Connect now, so an unreachable sidecar is told apart from a refused request.
        client
            .get_member_health(etcd_operator::proto::GetMemberHealthRequest {})
            .await
            .map_err(|s| unreachable(format!("unreachable: {}", s.message())))?;
        Ok(client)
    }
}

/// Why the spec's TLS setting cannot apply to the members that run, if it cannot.
pub fn tls_mismatch(spec_tls: bool, infos: &[MemberInfo]) -> Option<String> {
    let other: Vec<&str> = infos
        .iter()
        .filter(|i| i.etcd_tls != spec_tls)
        .map(|i| i.name.as_str())
        .collect();
    if other.is_empty() {
        return None;
    }
    let (asked, running) = if spec_tls {
        ("true", "without TLS")
    } else {
        ("false", "with TLS")
    };
    Some(format!(
        "spec.tls.enabled is {asked} but {} run{} {running}: TLS is chosen when a cluster is created (create a new cluster to change it)",
        other.join(", "),
        if other.len() == 1 { "s" } else { "" }
    ))
}

/// The `QuorumLost` condition: while quorum is lost (what was lost, and what the operator
/// will and will not do), and after a forced new cluster (from where, at which revision,
/// and that writes acknowledged only by the lost members may be gone).
fn quorum_condition(action: &Action, forced: Option<&ForcedRecovery>) -> Option<Condition> {
    use plan::WaitReason;
    let now_lost = match action {
        Action::Wait {
            reason: reason @ WaitReason::QuorumLost { .. },
        } => Some(("MembersDown", reason.to_string())),
        Action::Wait {
            reason: reason @ WaitReason::QuorumLostForGood { .. },
        } => Some(("DataLost", reason.to_string())),
        Action::RestoreCluster { backup, lost, .. } => Some((
            "RestoringFromBackup",
            format!(
                "quorum lost for good (the data of {} is gone): creating the cluster again from backup {backup}; writes after it are gone",
                lost.join(", ")
            ),
        )),
        Action::ForceNewCluster {
            name,
            revision,
            lost,
            ..
        } => Some((
            "ForcingNewCluster",
            format!(
                "quorum lost for good (the data of {} is gone): forcing a new cluster from {name} at revision {revision}; writes acknowledged only by the lost members may be gone",
                lost.join(", ")
            ),
        )),
        _ => None,
    };
    match (now_lost, forced) {
        (Some((reason, message)), _) => Some(condition(
            ConditionType::QuorumLost,
            ConditionStatus::True,
            reason,
            &message,
        )),
        (None, Some(f)) if f.backup.is_some() => Some(condition(
            ConditionType::QuorumLost,
            ConditionStatus::False,
            "RestoredFromBackup",
            &format!(
                "quorum was lost for good (the data of {} was gone); the cluster was created again from backup {} at {}: writes after that backup are gone (the Restored condition names its revision)",
                f.lost.join(", "),
                f.backup.as_deref().unwrap_or_default(),
                f.at
            ),
        )),
        (None, Some(f)) => Some(condition(
            ConditionType::QuorumLost,
            ConditionStatus::False,
            "ForcedNewCluster",
            &format!(
                "quorum was lost for good (the data of {} was gone); a new cluster was forced from {} at revision {} (raft index {}) at {}: writes acknowledged only by the lost members may be gone",
                f.lost.join(", "),
                f.from,
                f.revision,
                f.raft_index,
                f.at
            ),
        )),
        (None, None) => None,
    }
}

fn condition(
    type_: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: &str,
) -> Condition {
    Condition {
        r#type: proto::ConditionType::from(type_).into(),
        status: proto::ConditionStatus::from(status).into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: String::new(),
    }
}

/// `remove_dead_member` -> `RemoveDeadMember`: an action kind as a condition or Event reason.
pub(crate) fn camel(word: &str) -> String {
    word.split(['_', '-'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Now as RFC 3339 (UTC, seconds), as Kubernetes condition times are written.
pub fn rfc3339_now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `name=peerURL,...` of the initial members `names` from the runtime's members, once it
/// has every one of them with its peer URL.
fn initial_cluster(names: &[String], infos: &[MemberInfo]) -> Option<String> {
    InitialBootstrap::initial_cluster_of(names, |n| {
        infos
            .iter()
            .find(|i| i.name == n)
            .map(|i| i.peer_url.clone())
    })
}

/// The `--initial-cluster-token` of a static bootstrap: the cluster (and, on Kubernetes, its
/// uid, new when a cluster of the same name is created again) and the first initial member,
/// whose ordinal is never used twice, so every bootstrap has its own. It follows from what
/// the runtime keeps, so a coordinator restarted in the middle of a bootstrap hands the
/// members that start after it the token of those that started before.
pub fn bootstrap_token(key: &ClusterKey, uid: Option<&str>, first: &str) -> String {
    let cluster = key.to_string().replace('/', "-");
    match uid {
        Some(uid) if !uid.is_empty() => format!("{cluster}-{uid}-{first}"),
        _ => format!("{cluster}-{first}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, etcd_tls: bool) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            ordinal: 0,
            running: true,
            down_since: None,
            version: etcd_operator::version::DEFAULT_VERSION,
            seed: false,
            client_url: String::new(),
            peer_url: String::new(),
            sidecar_url: String::new(),
            etcd_tls,
            data: crate::runtime::MemberData::Intact,
            restart_on_request: false,
            restarts: Default::default(),
        }
    }

    #[test]
    fn tls_cannot_change_under_running_members() {
        assert_eq!(tls_mismatch(true, &[]), None);
        assert_eq!(tls_mismatch(true, &[info("a-0000", true)]), None);
        let message = tls_mismatch(true, &[info("a-0000", false), info("a-0001", false)]);
        assert!(
            message.as_deref().is_some_and(
                |m| m.contains("spec.tls.enabled is true but a-0000, a-0001 run without TLS")
            ),
            "{message:?}"
        );
        let message = tls_mismatch(false, &[info("a-0000", true)]);
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("a-0000 runs with TLS")),
            "{message:?}"
        );
    }

    #[test]
    fn every_bootstrap_has_its_own_token_and_a_restart_finds_the_same() {
        let k8s = ClusterKey::new("prod", "etcd");
        let local = ClusterKey::local("etcd");
        let token = bootstrap_token(&k8s, Some("uid-1"), "etcd-0000");
        assert_eq!(token, "prod-etcd-uid-1-etcd-0000");
        assert_eq!(
            token,
            bootstrap_token(&k8s, Some("uid-1"), "etcd-0000"),
            "the same members, the same token (a coordinator restarted mid-bootstrap)"
        );
        assert_ne!(
            token,
            bootstrap_token(&k8s, Some("uid-1"), "etcd-0003"),
            "a bootstrap begun again has new ordinals"
        );
        assert_ne!(
            token,
            bootstrap_token(&k8s, Some("uid-2"), "etcd-0000"),
            "a cluster of the same name created again"
        );
        assert_eq!(bootstrap_token(&local, None, "etcd-0000"), "etcd-etcd-0000");
        assert_eq!(
            bootstrap_token(&local, Some(""), "etcd-0000"),
            "etcd-etcd-0000"
        );
    }

    #[test]
    fn certificates_valid_says_when_a_ca_expires_soon_or_is_lost() {
        let now = 1_800_000_000;
        let year = 365 * 24 * 3600;
        let shown = |a: Authorities| {
            let c = a.condition(now);
            (c.status(), c.reason, c.message)
        };
        let (status, reason, message) = shown(Authorities {
            control: now + 9 * year,
            etcd: Some(Ok(now + year)),
            rotating: None,
        });
        assert_eq!(
            (status, reason.as_str()),
            (ConditionStatus::True.into(), "Valid")
        );
        assert!(message.contains("the etcd CA expires at"), "{message}");
        let (status, reason, message) = shown(Authorities {
            control: now + 9 * year,
            etcd: Some(Ok(now + 7 * 24 * 3600)),
            rotating: None,
        });
        assert_eq!(
            (status, reason.as_str()),
            (ConditionStatus::False.into(), "CAExpiresSoon")
        );
        assert!(message.starts_with("the etcd CA expires at"), "{message}");
        let (_, reason, message) = shown(Authorities {
            control: now + 24 * 3600,
            etcd: None,
            rotating: None,
        });
        assert_eq!(reason, "CAExpiresSoon");
        assert!(message.contains("control CA"), "{message}");
        let (status, reason, message) = shown(Authorities {
            control: now + 9 * year,
            etcd: Some(Err("the etcd CA of c is lost".into())),
            rotating: Some(plan::CaPhase::Trust),
        });
        assert_eq!(
            (status, reason.as_str(), message.as_str()),
            (
                ConditionStatus::False.into(),
                "CALost",
                "the etcd CA of c is lost"
            )
        );
        // A rotation under way says so, whatever the old CA's expiry.
        let (status, reason, message) = shown(Authorities {
            control: now + 9 * year,
            etcd: Some(Ok(now + 60)),
            rotating: Some(plan::CaPhase::Drop),
        });
        assert_eq!(
            (status, reason.as_str()),
            (ConditionStatus::True.into(), "CARotating")
        );
        assert!(message.contains("phase Drop"), "{message}");
    }

    #[test]
    fn camel_cases_action_kinds() {
        assert_eq!(camel("remove_dead_member"), "RemoveDeadMember");
        assert_eq!(camel("create-seed"), "CreateSeed");
    }

    #[test]
    fn rfc3339_has_the_right_shape() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }
}
