//! What the tests of the Kubernetes runtime build the same way every time (as kube-rs
//! controller-rs's `Context::test()`): a runtime over a given API client with a fresh control
//! CA, and a reconcile context around it. Production wiring is [`super::operator`]'s; this
//! module is public only so that the crate's integration tests reach it.

use std::{sync::Arc, time::Duration};

use etcd_operator::pki::Authority;
use kube::{Client, runtime::events::Reporter};

use super::{Context, KubeRuntime, PodDns, build::PodSettings};
use crate::{
    plan::Policy,
    registry::Registry,
    security::{ControlPlane, now_secs},
};

/// The coordinator's side of the control path under a CA generated now, its own certificate
/// naming 127.0.0.1, members' certificates valid for `validity`.
pub fn control_plane(validity: Duration) -> Arc<ControlPlane> {
    let ca = Authority::generate("test control CA", now_secs()).expect("a CA can be generated");
    ControlPlane::new(ca, vec!["127.0.0.1".into()], validity)
}

impl KubeRuntime {
    /// For tests: Pods built with `settings`, members addressed by their Pod DNS names, and
    /// certificates of a fresh control CA ([`control_plane`]) valid for `validity`.
    pub fn for_tests(client: Client, settings: PodSettings, validity: Duration) -> Self {
        Self::new(client, settings, Arc::new(PodDns), control_plane(validity))
    }
}

impl Context {
    /// For tests: a context over `client` whose members live in `runtime`, with a registry of
    /// its own (this coordinator leads), the default [`Policy`], and Events reported by
    /// `etcd-operator`, instance `test`.
    pub fn for_tests(client: Client, runtime: Arc<KubeRuntime>) -> Arc<Self> {
        Arc::new(Self::for_tests_with(
            client,
            runtime,
            Registry::new(),
            "test",
        ))
    }

    /// For tests: as [`Context::for_tests`], with `registry` (one of several coordinators',
    /// say, that does not lead yet) and Events reported by instance `instance`, not yet
    /// shared, so that a test can shorten its requeue and backoff times first.
    pub fn for_tests_with(
        client: Client,
        runtime: Arc<KubeRuntime>,
        registry: Registry,
        instance: &str,
    ) -> Self {
        Self::new(
            client,
            registry,
            runtime,
            Reporter {
                controller: "etcd-operator".into(),
                instance: Some(instance.into()),
            },
            Policy::default(),
        )
    }
}
