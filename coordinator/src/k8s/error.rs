//! Errors of the Kubernetes side, each with a stable category for logs, metrics and Events.

use thiserror::Error;

use super::build::BuildError;

/// A reconcile of one `EtcdCluster` failed.
#[derive(Debug, Error)]
pub enum Error {
    /// An API call failed.
    #[error("{op} {object}: {source}")]
    Kube {
        /// The call, for example "apply Service".
        op: &'static str,
        /// The object it was about (`namespace/name`).
        object: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// An object could not be built.
    #[error("building the objects of {cluster}: {source}")]
    Build {
        /// The cluster.
        cluster: String,
        /// Why.
        #[source]
        source: BuildError,
    },
    /// The object lacks metadata the API server always sets.
    #[error("the object has no {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// A stable word for the kind of failure.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::Build { .. } => "build",
            Self::MissingMetadata(_) => "metadata",
        }
    }

    /// A CamelCase reason for an Event or a condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "ApiCallFailed",
            Self::Build { .. } => "BuildFailed",
            Self::MissingMetadata(_) => "MissingMetadata",
        }
    }

    /// A closure mapping a client error of `op` on `object` into this type.
    pub fn kube(op: &'static str, object: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let object = object.into();
        move |source| Self::Kube { op, object, source }
    }
}
