//! The etcd CA's rotation on Kubernetes against a stateful in-memory API server
//! (kube-fake-client): the CA Secret as the durable record of the new CA, the trust bundle
//! and the leaves following each phase into the members' Secrets, a coordinator started
//! again mid-rotation, a write whose answer was lost, the `rotate-ca` annotation, and a CA
//! Secret deleted mid-rotation. No etcd runs here (the planner's side is
//! `plan/tests/ca_rotation.rs`; the rolling restarts with real etcd are local mode's
//! `ca_rotation.rs`).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use etcd_coordinator::{
    k8s::{
        ANNOTATION_RECORD, ANNOTATION_ROTATE_CA, Context, KubeRuntime,
        build::PodSettings,
        reconcile,
        reconcile::{RotateCaAnnotation, ask_for_ca_rotation},
    },
    plan::CaPhase,
    runtime::Runtime,
};
use etcd_operator::{
    ClusterKey, EtcdVersion,
    pki::{Authority, etcd_files_digest, issued_by},
    resource::{EtcdCluster, EtcdClusterSpec, TlsSpec},
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Client, ResourceExt,
    api::{Api, DeleteParams, Patch, PatchParams},
};
use kube_fake_client::{ClientBuilder, interceptor};
use serde_json::json;

const NS: &str = "default";
const NAME: &str = "etcd-cluster";
const CA_SECRET: &str = "etcd-cluster-etcd-ca";
const MEMBERS: [&str; 3] = [
    "etcd-cluster-0000",
    "etcd-cluster-0001",
    "etcd-cluster-0002",
];

fn tls_cluster() -> EtcdCluster {
    let mut c = EtcdCluster::new(
        NAME,
        EtcdClusterSpec {
            size: 3,
            version: "3.6.15".into(),
            tls: Some(TlsSpec { enabled: true }),
            ..Default::default()
        },
    );
    c.metadata.namespace = Some(NS.into());
    c
}

fn settings() -> PodSettings {
    PodSettings {
        operator_image: "registry.example/etcd-operator:test".into(),
        image_pull_policy: None,
        coordinator_url: "https://etcd-coordinator.default.svc:7443".into(),
        cluster_domain: "cluster.local".into(),
    }
}

async fn fake(funcs: Option<interceptor::Funcs>) -> Client {
    let mut builder = ClientBuilder::new()
        .with_resource::<EtcdCluster>()
        .with_status_subresource::<EtcdCluster>()
        .with_object(tls_cluster());
    if let Some(f) = funcs {
        builder = builder.with_interceptor_funcs(f);
    }
    builder.build().await.expect("fake client")
}

fn key() -> ClusterKey {
    ClusterKey::new(NS, NAME)
}

async fn get_cluster(client: &Client) -> EtcdCluster {
    Api::<EtcdCluster>::namespaced(client.clone(), NS)
        .get(NAME)
        .await
        .expect("the cluster exists")
}

/// A runtime as a coordinator (started again) has it: nothing in memory but the cluster.
async fn runtime(client: &Client) -> KubeRuntime {
    let runtime = KubeRuntime::for_tests(
        client.clone(),
        settings(),
        etcd_operator::pki::DEFAULT_CERT_VALIDITY,
    );
    runtime.track(&key(), &get_cluster(client).await);
    runtime
}

/// Three TLS members, their Secrets and the CA's made by the runtime.
async fn three_tls_members(client: &Client) {
    let runtime = runtime(client).await;
    for (i, name) in MEMBERS.into_iter().enumerate() {
        runtime
            .create_member(&key(), name, EtcdVersion::new(3, 6, 15), i == 0, true)
            .await
            .unwrap();
    }
}

async fn files(client: &Client, secret: &str) -> BTreeMap<String, String> {
    Api::<Secret>::namespaced(client.clone(), NS)
        .get(secret)
        .await
        .unwrap_or_else(|e| panic!("Secret {secret}: {e}"))
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
        .collect()
}

fn certificates(pem: &str) -> usize {
    pem.matches("BEGIN CERTIFICATE").count()
}

/// The CA of `cert`/`key` in the CA Secret's files.
fn authority(files: &BTreeMap<String, String>, cert: &str, key: &str) -> Authority {
    Authority::from_pem(&files[cert], &files[key]).unwrap()
}

/// Whether every etcd leaf of every member, and the applications' certificate, is `ca`'s.
async fn every_leaf_of(client: &Client, ca: &Authority) -> bool {
    let mut all = true;
    for member in MEMBERS {
        let f = files(client, &format!("{member}-tls")).await;
        for leaf in ["etcd-server.crt", "etcd-peer.crt", "etcd-client.crt"] {
            all &= issued_by(&f[leaf], ca);
        }
    }
    all && issued_by(
        &files(client, "etcd-cluster-client-tls").await["tls.crt"],
        ca,
    )
}

/// What every member trusts (its `etcd-ca.crt`), and the applications' bundle's `ca.crt`.
async fn trusted(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for member in MEMBERS {
        out.push(files(client, &format!("{member}-tls")).await["etcd-ca.crt"].clone());
    }
    out.push(files(client, "etcd-cluster-client-tls").await["ca.crt"].clone());
    out
}

/// A rotation through every phase, each step by a coordinator started again (a runtime with
/// nothing in memory): the new CA is written to the CA Secret once and kept (never a
/// third), members trust both CAs from Trust on, leaves move to the new CA in Reissue and
/// the holders still on the old one are listed until they do, the old CA is dropped from
/// every trust file in Drop, the phase never moves back, and the end makes the new CA the
/// cluster's in the Secret.
#[tokio::test]
async fn a_rotation_keeps_one_new_ca_in_its_secret_and_moves_only_forward() {
    let client = fake(None).await;
    three_tls_members(&client).await;
    let before = files(&client, CA_SECRET).await;
    let old = authority(&before, "ca.crt", "ca.key");
    assert_eq!(before["trust.crt"].trim(), before["ca.crt"].trim());
    assert!(every_leaf_of(&client, &old).await);

    // Trust: the new CA beside the old one, trusted by every member and the applications.
    let rt = runtime(&client).await;
    assert!(rt.rotates_etcd_ca());
    assert_eq!(
        rt.set_etcd_ca_rotation(&key(), Some(CaPhase::Trust))
            .await
            .unwrap(),
        Some(CaPhase::Trust)
    );
    let trust = files(&client, CA_SECRET).await;
    assert_eq!(trust["rotation"], "Trust");
    assert_eq!(trust["ca.crt"], before["ca.crt"], "the old CA still issues");
    let new = authority(&trust, "next.crt", "next.key");
    assert_eq!(certificates(&trust["trust.crt"]), 2);
    assert!(rt.etcd_trust(&key()).await.unwrap().is_some());
    assert!(rt.renew_certificates(&key()).await.unwrap() >= 4);
    for file in trusted(&client).await {
        assert_eq!(certificates(&file), 2, "both CAs trusted: {file}");
    }
    assert!(
        every_leaf_of(&client, &old).await,
        "leaves stay the old CA's"
    );
    assert!(rt.etcd_leaves_elsewhere(&key()).await.unwrap().is_empty());
    // What the sidecar must report before its restart: the digest of its Secret's files.
    let member = files(&client, &format!("{}-tls", MEMBERS[1])).await;
    assert_eq!(
        rt.etcd_files_digest(&key(), MEMBERS[1]).await.unwrap(),
        Some(etcd_files_digest(|name| member.get(name).cloned()))
    );

    // Started again, asked for Trust again: the same new CA, never a third.
    let rt = runtime(&client).await;
    assert_eq!(
        rt.set_etcd_ca_rotation(&key(), Some(CaPhase::Trust))
            .await
            .unwrap(),
        Some(CaPhase::Trust)
    );
    assert_eq!(files(&client, CA_SECRET).await, trust, "never a third CA");

    // Reissue: the new CA issues; every holder is listed until its leaves follow.
    let rt = runtime(&client).await;
    assert_eq!(
        rt.set_etcd_ca_rotation(&key(), Some(CaPhase::Reissue))
            .await
            .unwrap(),
        Some(CaPhase::Reissue)
    );
    let elsewhere = rt.etcd_leaves_elsewhere(&key()).await.unwrap();
    assert_eq!(
        elsewhere,
        [MEMBERS[0], MEMBERS[1], MEMBERS[2], "client"],
        "the old CA's leaves are listed"
    );
    rt.renew_certificates(&key()).await.unwrap();
    assert!(rt.etcd_leaves_elsewhere(&key()).await.unwrap().is_empty());
    assert!(
        every_leaf_of(&client, &new).await,
        "every leaf is the new CA's"
    );
    for file in trusted(&client).await {
        assert_eq!(certificates(&file), 2, "the old CA still trusted: {file}");
    }
    // Never back, by this coordinator or one started again.
    assert_eq!(
        runtime(&client)
            .await
            .set_etcd_ca_rotation(&key(), Some(CaPhase::Trust))
            .await
            .unwrap(),
        Some(CaPhase::Reissue)
    );
    assert_eq!(files(&client, CA_SECRET).await["rotation"], "Reissue");

    // Drop: the new CA alone.
    let rt = runtime(&client).await;
    assert_eq!(
        rt.set_etcd_ca_rotation(&key(), Some(CaPhase::Drop))
            .await
            .unwrap(),
        Some(CaPhase::Drop)
    );
    assert!(rt.etcd_trust(&key()).await.unwrap().is_none());
    rt.renew_certificates(&key()).await.unwrap();
    for file in trusted(&client).await {
        assert_eq!(file.trim(), new.cert_pem().trim(), "the new CA alone");
    }
    assert!(rt.etcd_leaves_elsewhere(&key()).await.unwrap().is_empty());

    // The end: the new CA is the cluster's, in one write; ended once.
    let rt = runtime(&client).await;
    assert_eq!(rt.set_etcd_ca_rotation(&key(), None).await.unwrap(), None);
    let after = files(&client, CA_SECRET).await;
    let keys: Vec<&str> = after.keys().map(String::as_str).collect();
    assert_eq!(keys, ["ca.crt", "ca.key", "trust.crt"]);
    assert_eq!(after["ca.crt"], trust["next.crt"]);
    assert_eq!(after["ca.key"], trust["next.key"]);
    assert_eq!(rt.set_etcd_ca_rotation(&key(), None).await.unwrap(), None);
    let rt = runtime(&client).await;
    assert_eq!(
        rt.existing_etcd_ca(&key())
            .await
            .unwrap()
            .unwrap()
            .cert_pem(),
        new.cert_pem()
    );
    // Nothing of etcd's changes at the end (each runtime of these tests has a control CA
    // of its own, so the control-path files do).
    let digest = |f: BTreeMap<String, String>| etcd_files_digest(|name| f.get(name).cloned());
    let ended = digest(files(&client, &format!("{}-tls", MEMBERS[0])).await);
    rt.renew_certificates(&key()).await.unwrap();
    assert_eq!(
        digest(files(&client, &format!("{}-tls", MEMBERS[0])).await),
        ended
    );
    assert!(every_leaf_of(&client, &new).await);
}

/// The write of the new CA lands but its answer is lost: asked again, the coordinator reads
/// the Secret and goes on with the CA it wrote; it never makes another.
#[tokio::test]
async fn a_new_ca_whose_write_answer_was_lost_is_never_made_again() {
    let lose = Arc::new(AtomicBool::new(false));
    let losing = Arc::clone(&lose);
    let funcs = interceptor::Funcs::new().replace(move |ctx| {
        if ctx.name == CA_SECRET && losing.swap(false, Ordering::SeqCst) {
            let secret: Secret = serde_json::from_value(ctx.object.clone()).unwrap();
            ctx.client.update(ctx.namespace, &secret, ctx.params)?;
            return Err(kube_fake_client::Error::Internal(
                "the connection closed before the answer".into(),
            ));
        }
        Ok(None)
    });
    let client = fake(Some(funcs)).await;
    three_tls_members(&client).await;
    lose.store(true, Ordering::SeqCst);
    let rt = runtime(&client).await;
    rt.set_etcd_ca_rotation(&key(), Some(CaPhase::Trust))
        .await
        .expect_err("the answer was lost");
    let written = files(&client, CA_SECRET).await;
    assert_eq!(written["rotation"], "Trust", "the write landed");
    for rt in [rt, runtime(&client).await] {
        assert_eq!(
            rt.set_etcd_ca_rotation(&key(), Some(CaPhase::Trust))
                .await
                .unwrap(),
            Some(CaPhase::Trust)
        );
        assert_eq!(files(&client, CA_SECRET).await, written, "the same new CA");
    }
}

/// The CA Secret deleted in the middle of a rotation: lost. A coordinator started again
/// neither carries the rotation on nor makes a CA; it says what to do.
#[tokio::test]
async fn a_ca_secret_deleted_mid_rotation_is_lost_not_replaced() {
    let client = fake(None).await;
    three_tls_members(&client).await;
    runtime(&client)
        .await
        .set_etcd_ca_rotation(&key(), Some(CaPhase::Trust))
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    secrets
        .delete(CA_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let rt = runtime(&client).await;
    let e = rt
        .set_etcd_ca_rotation(&key(), Some(CaPhase::Reissue))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is gone"), "{e}");
    let e = rt.existing_etcd_ca(&key()).await.unwrap_err();
    assert!(e.to_string().contains("is lost"), "{e}");
    assert!(rt.renew_certificates(&key()).await.is_err());
    assert!(
        secrets.get_opt(CA_SECRET).await.unwrap().is_none(),
        "no CA was made"
    );
}

fn context(client: &Client) -> Arc<Context> {
    let runtime = KubeRuntime::for_tests(
        client.clone(),
        settings(),
        etcd_operator::pki::DEFAULT_CERT_VALIDITY,
    );
    Context::for_tests(client.clone(), Arc::new(runtime))
}

async fn reconcile_once(ctx: &Arc<Context>) {
    let obj = ctx
        .clusters(NS)
        .get(NAME)
        .await
        .expect("the cluster exists");
    reconcile(Arc::new(obj), Arc::clone(ctx))
        .await
        .expect("reconcile succeeds");
}

fn requested(ctx: &Context) -> bool {
    ctx.registry
        .with(&key(), |entry, _| entry.ca_rotation_requested)
}

/// The `rotate-ca` annotation asks for a rotation as the admin call does, and stays until
/// the rotation is recorded as begun; then a coordinator (started again) removes it and
/// drops the request, so it never starts a second rotation once this one ends. Meanwhile
/// the status says `CARotating`.
#[tokio::test]
async fn the_rotate_ca_annotation_asks_once_and_goes_once_the_rotation_began() {
    let client = fake(None).await;
    let clusters = Api::<EtcdCluster>::namespaced(client.clone(), NS);
    let annotate = |value: serde_json::Value| json!({"metadata": {"annotations": {ANNOTATION_ROTATE_CA: value}}});
    clusters
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&annotate(json!("now"))),
        )
        .await
        .unwrap();
    let ctx = context(&client);
    reconcile_once(&ctx).await;
    assert!(requested(&ctx), "the annotation asks for a rotation");
    assert!(
        get_cluster(&client)
            .await
            .annotations()
            .contains_key(ANNOTATION_ROTATE_CA),
        "kept until the rotation begins"
    );

    // The rotation begins (its record written, as the planner's first step writes it); a
    // coordinator started again sees the record and the annotation.
    let mut record: serde_json::Value = serde_json::from_str(
        get_cluster(&client)
            .await
            .annotations()
            .get(ANNOTATION_RECORD)
            .map(String::as_str)
            .unwrap_or("{}"),
    )
    .unwrap();
    record["caRotation"] = json!({
        "phase": "Trust",
        "pending": MEMBERS,
        "beganAt": 1,
        "reason": "an operator asked for it",
    });
    clusters
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {
                ANNOTATION_RECORD: record.to_string(),
            }}})),
        )
        .await
        .unwrap();
    let restarted = context(&client);
    reconcile_once(&restarted).await;
    let after = get_cluster(&client).await;
    assert!(
        !after.annotations().contains_key(ANNOTATION_ROTATE_CA),
        "removed once the rotation began"
    );
    assert!(!requested(&restarted), "no request left for a second one");
    let status = after.status.expect("a status");
    let valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == "CertificatesValid")
        .expect("the condition");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("True", "CARotating"),
        "{}",
        valid.message
    );

    // Asked again while the rotation runs, and the rotation ends in that very pass: after
    // the pass, on the object read before it (annotated), nothing asks for another.
    clusters
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&annotate(json!("again"))),
        )
        .await
        .unwrap();
    let read_before_the_pass = restarted.clusters(NS).get(NAME).await.unwrap();
    record.as_object_mut().unwrap().remove("caRotation");
    clusters
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {
                ANNOTATION_RECORD: record.to_string(),
            }}})),
        )
        .await
        .unwrap();
    let again = context(&client);
    ask_for_ca_rotation(
        &read_before_the_pass,
        &again,
        &key(),
        RotateCaAnnotation::RemoveOnly,
    )
    .await
    .unwrap();
    assert!(
        !requested(&again),
        "a pass that ended a rotation asks for no second one"
    );
}

/// The end of a rotation makes the new CA the cluster's and forgets the old one's key: it is
/// refused from any phase but Drop (members still trust, and leaves still come from, the old
/// CA), whatever a record says, and nothing is written.
#[tokio::test]
async fn a_rotation_ends_only_from_drop() {
    let client = fake(None).await;
    three_tls_members(&client).await;
    let rt = runtime(&client).await;
    for phase in [CaPhase::Trust, CaPhase::Reissue] {
        rt.set_etcd_ca_rotation(&key(), Some(phase)).await.unwrap();
        let before = files(&client, CA_SECRET).await;
        let refused = rt
            .set_etcd_ca_rotation(&key(), None)
            .await
            .expect_err("no end before Drop");
        assert!(refused.to_string().contains("cannot end"), "{refused}");
        assert_eq!(
            files(&client, CA_SECRET).await,
            before,
            "nothing written at {phase:?}"
        );
    }
    rt.set_etcd_ca_rotation(&key(), Some(CaPhase::Drop))
        .await
        .unwrap();
    assert_eq!(rt.set_etcd_ca_rotation(&key(), None).await.unwrap(), None);
}

/// A CA Secret of the same name owned by another `EtcdCluster` (an earlier cluster of the
/// same name, orphaned or awaiting garbage collection) is neither used nor rotated.
#[tokio::test]
async fn a_ca_secret_of_another_cluster_of_the_same_name_is_never_used_or_changed() {
    let mut cluster = tls_cluster();
    cluster.metadata.uid = Some("uid-now".into());
    let client = ClientBuilder::new()
        .with_resource::<EtcdCluster>()
        .with_status_subresource::<EtcdCluster>()
        .with_object(cluster)
        .build()
        .await
        .expect("fake client");
    three_tls_members(&client).await;
    // The Secret is made another object's (as an earlier cluster's would be).
    let owner = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "etcd.operator.rs/v1alpha1", "kind": "EtcdCluster",
        "name": NAME, "uid": "uid-earlier", "controller": true,
    }]}});
    Api::<Secret>::namespaced(client.clone(), NS)
        .patch(CA_SECRET, &PatchParams::default(), &Patch::Merge(&owner))
        .await
        .unwrap();
    let before = files(&client, CA_SECRET).await;
    let rt = runtime(&client).await;
    let refused = rt
        .set_etcd_ca_rotation(&key(), Some(CaPhase::Trust))
        .await
        .expect_err("another cluster's CA is not rotated");
    assert!(refused.to_string().contains("not owned"), "{refused}");
    let unused = rt
        .existing_etcd_ca(&key())
        .await
        .expect_err("another cluster's CA is not used");
    assert!(unused.to_string().contains("not owned"), "{unused}");
    assert_eq!(files(&client, CA_SECRET).await, before, "nothing written");
}
