//! The act side of an etcd CA rotation ([`crate::plan::ca_rotation`]): each phase is
//! written in the decision record (`caRotation`) before the CA files of the phase are
//! written and before the restarts it enables; every step is idempotent, so a coordinator
//! that stops anywhere carries the rotation on from the record at its next pass. The new CA
//! is made once and kept by the runtime beside the old one (never a third); the old CA is
//! dropped only once the runtime shows every leaf issued by the new one.

use std::collections::BTreeSet;

use etcd_operator::pki;

use super::*;
use crate::{
    plan::{CaObservation, CaPhase, CaRotation, CaRotationStep, RestartReason},
    record::CaRotationRecord,
};

impl<R: Runtime> ClusterController<R> {
    /// What the planner knows of the cluster's etcd CA: the rotation the record holds, or
    /// whether one is due (less than a third of the CA's life left). A CA that cannot be
    /// read (lost) never starts one: nothing is replaced on a failed read.
    pub(super) async fn observe_ca(
        &self,
        resource: &EtcdCluster,
        record: &DecisionRecord,
    ) -> CaObservation {
        if !resource.spec.etcd_tls() {
            return CaObservation::default();
        }
        let rotation = record.ca_rotation.as_ref().and_then(|r| {
            Some(CaRotation {
                phase: CaPhase::parse(&r.phase)?,
                pending: r.pending.iter().cloned().collect(),
            })
        });
        if rotation.is_some() || !self.runtime.rotates_etcd_ca() {
            return CaObservation {
                rotation,
                due: None,
            };
        }
        let requested = self
            .registry
            .with(&self.key, |entry, _| entry.ca_rotation_requested);
        let due = if requested {
            Some("an operator asked for it".to_string())
        } else {
            self.ca_expiry_due().await
        };
        if due.is_none() {
            return CaObservation { rotation, due };
        }
        // A rotation waits on every member's files in place, which its sidecar reports:
        // one whose sidecar predates that report would hold a rotation in its middle.
        let silent = self.sidecars_without_files_digest().await;
        if !silent.is_empty() {
            warn!(
                members = %silent.join(", "),
                "no etcd CA rotation begins: these members' sidecars predate it (they report no digest of their certificate files); it begins once they run the current sidecar"
            );
            return CaObservation {
                rotation,
                due: None,
            };
        }
        CaObservation { rotation, due }
    }

    /// Why the etcd CA is due for a rotation on its own: less than a third of its life left.
    /// A CA that cannot be read is never due (nothing is replaced on a failed read).
    async fn ca_expiry_due(&self) -> Option<String> {
        match self.runtime.existing_etcd_ca(&self.key).await {
            Ok(Some(ca)) => pki::validity(ca.cert_pem())
                .ok()
                .filter(|v| v.renewal_due(crate::security::now_secs()))
                .map(|v| {
                    format!(
                        "the etcd CA has less than a third of its life left (it expires at {})",
                        jiff::Timestamp::from_second(v.not_after)
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    )
                }),
            _ => None,
        }
    }

    /// Brings the runtime's CA storage to `phase` and the members' files to it. A runtime
    /// that holds a later phase (a record lost meanwhile) is followed, with every member to
    /// restart again.
    async fn apply_ca_phase(&self, infos: &[MemberInfo], phase: CaPhase) -> Result<(), ActError> {
        self.epoch()?;
        let in_effect = self
            .runtime
            .set_etcd_ca_rotation(&self.key, Some(phase))
            .await?;
        if let Some(later) = in_effect.filter(|p| *p != phase) {
            warn!(
                recorded = phase.as_str(),
                kept = later.as_str(),
                "the CA files are at a later phase of the rotation than the record; following them"
            );
            let members = member_names(infos);
            self.registry
                .decide(&self.key, |r| {
                    if let Some(rotation) = &mut r.ca_rotation {
                        rotation.phase = later.as_str().to_string();
                        rotation.pending = members.clone();
                    }
                })
                .await?;
        }
        self.epoch()?;
        self.runtime.renew_certificates(&self.key).await?;
        Ok(())
    }

    /// One step of a rotation that restarts nothing.
    pub(super) async fn rotate_ca(
        &self,
        infos: &[MemberInfo],
        step: &CaRotationStep,
    ) -> Result<(), ActError> {
        match step {
            CaRotationStep::Begin { reason } => {
                info!(%reason, "the etcd CA rotates: members trust the old and the new CA first");
                let members = member_names(infos);
                let began_at = now_ms();
                self.registry
                    .decide(&self.key, |r| {
                        r.ca_rotation.get_or_insert_with(|| CaRotationRecord {
                            phase: CaPhase::Trust.as_str().to_string(),
                            pending: members.clone(),
                            began_at,
                            reason: reason.clone(),
                        });
                    })
                    .await?;
                // Asked for: begun (and recorded), so the request is done.
                self.registry
                    .with(&self.key, |entry, _| entry.ca_rotation_requested = false);
                etcd_operator::failpoint!("coordinator.rotate-ca.after-begin-record");
                self.apply_ca_phase(infos, CaPhase::Trust).await?;
            }
            CaRotationStep::Reissue => {
                self.set_recorded_phase(CaPhase::Reissue, BTreeSet::new())
                    .await?;
                etcd_operator::failpoint!("coordinator.rotate-ca.after-reissue-record");
                self.apply_ca_phase(infos, CaPhase::Reissue).await?;
                etcd_operator::failpoint!("coordinator.rotate-ca.after-reissue");
                // Positive proof before the old CA goes: every leaf is the new CA's.
                let elsewhere = self.runtime.etcd_leaves_elsewhere(&self.key).await?;
                if !elsewhere.is_empty() {
                    return Err(RuntimeError::Certificates(format!(
                        "CA rotation: {} still hold leaves of the old CA; it is not dropped yet",
                        elsewhere.join(", ")
                    ))
                    .into());
                }
                // And in every Pod: a member restarted trusting the new CA alone refuses a
                // peer whose Pod still presents a leaf of the old one.
                self.files_in_place(&member_names(infos)).await?;
                info!("every leaf is the new CA's; dropping the old CA from every trust file");
                self.set_recorded_phase(CaPhase::Drop, member_names(infos))
                    .await?;
                etcd_operator::failpoint!("coordinator.rotate-ca.after-drop-record");
                self.apply_ca_phase(infos, CaPhase::Drop).await?;
            }
            CaRotationStep::Finish => {
                self.epoch()?;
                self.runtime.set_etcd_ca_rotation(&self.key, None).await?;
                etcd_operator::failpoint!("coordinator.rotate-ca.after-finish-files");
                self.registry
                    .decide(&self.key, |r| r.ca_rotation = None)
                    .await?;
                info!("the etcd CA rotation is over");
            }
        }
        Ok(())
    }

    /// Moves the recorded rotation to `phase` (never back) with `pending` to restart in it.
    async fn set_recorded_phase(
        &self,
        phase: CaPhase,
        pending: BTreeSet<String>,
    ) -> Result<(), ActError> {
        self.registry
            .decide(&self.key, |r| {
                if let Some(rotation) = &mut r.ca_rotation
                    && CaPhase::parse(&rotation.phase).is_none_or(|p| p < phase)
                {
                    rotation.phase = phase.as_str().to_string();
                    rotation.pending = pending.clone();
                }
            })
            .await?;
        Ok(())
    }

    /// Restarts `name` on its data, as an upgrade step to the version it runs (handoff,
    /// restart, the planner waiting for it to be healthy again), after the files of the
    /// phase are in place; then takes it out of the phase's pending members.
    pub(super) async fn rolling_restart(
        &self,
        infos: &[MemberInfo],
        name: &str,
        reason: RestartReason,
    ) -> Result<(), ActError> {
        let phase = match reason {
            RestartReason::CaTrustNew => CaPhase::Trust,
            RestartReason::CaDropOld => CaPhase::Drop,
        };
        self.apply_ca_phase(infos, phase).await?;
        // etcd reads its trusted CA file when it starts: not before the file holds the
        // phase's CAs.
        self.files_in_place(&BTreeSet::from([name.to_string()]))
            .await?;
        etcd_operator::failpoint!("coordinator.rotate-ca.before-restart");
        let version = find(infos, name)?.version;
        info!(member = %name, reason = reason.as_str(), "restarting the member on its data");
        self.with_grant(name, ChangeKind::Upgrade, |grant| {
            self.upgrade(infos, name, version, grant)
        })
        .await?;
        etcd_operator::failpoint!("coordinator.rotate-ca.after-restart");
        self.registry
            .decide(&self.key, |r| {
                if let Some(rotation) = &mut r.ca_rotation
                    && rotation.phase == phase.as_str()
                {
                    rotation.pending.remove(name);
                }
            })
            .await?;
        Ok(())
    }
}

impl<R: Runtime> ClusterController<R> {
    /// Positive proof that each of `members` has the etcd files the runtime holds for it
    /// (its sidecar's latest report carries their digest), where the runtime writes them
    /// with a delay ([`Runtime::etcd_files_digest`]); an error naming those that do not yet,
    /// or do not say (the pass is tried again).
    /// The members whose sidecars report no digest of their certificate files where the
    /// runtime has one to compare it with (sidecars older than the rotation on Kubernetes).
    async fn sidecars_without_files_digest(&self) -> Vec<String> {
        let silent: Vec<String> = self.registry.with(&self.key, |entry, _| {
            entry
                .reports
                .iter()
                .filter(|(_, r)| r.report.etcd_files_sha256.is_empty())
                .map(|(name, _)| name.clone())
                .collect()
        });
        let mut out = Vec::new();
        for name in silent {
            if let Ok(Some(_)) = self.runtime.etcd_files_digest(&self.key, &name).await {
                out.push(name);
            }
        }
        out
    }

    async fn files_in_place(&self, members: &BTreeSet<String>) -> Result<(), ActError> {
        let mut behind = Vec::new();
        for name in members {
            let Some(expected) = self.runtime.etcd_files_digest(&self.key, name).await? else {
                continue;
            };
            let reported = self.registry.with(&self.key, |entry, _| {
                entry
                    .reports
                    .get(name)
                    .map(|r| r.report.etcd_files_sha256.clone())
            });
            if reported.as_deref() != Some(expected.as_str()) {
                behind.push(name.clone());
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        Err(RuntimeError::Certificates(format!(
            "CA rotation: the certificate files in the Pods of {} are not yet those of their Secrets (the kubelet writes a Secret's update into a Pod after a delay); waiting",
            behind.join(", ")
        ))
        .into())
    }
}

fn member_names(infos: &[MemberInfo]) -> BTreeSet<String> {
    infos.iter().map(|m| m.name.clone()).collect()
}
