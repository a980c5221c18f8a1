//! The sidecar's error type.

use thiserror::Error;

/// What went wrong in a lifecycle step; `category()` is a stable word for logs and metrics.
#[derive(Debug, Error)]
pub enum SidecarError {
    /// An etcd call failed.
    #[error("etcd {op}: {source}")]
    Etcd {
        /// The call.
        op: &'static str,
        /// The error.
        #[source]
        source: etcd_client::Error,
    },
    /// A coordinator call failed.
    #[error("coordinator {op}: {source}")]
    Coordinator {
        /// The call.
        op: &'static str,
        /// The status.
        #[source]
        source: tonic::Status,
    },
    /// The member directory could not be changed.
    #[error("member directory: {0}")]
    Io(#[from] std::io::Error),
    /// A step was refused because doing it would be unsafe or impossible.
    #[error("refused: {0}")]
    Refused(String),
    /// A step did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl SidecarError {
    /// A stable word for the kind of failure.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Etcd { .. } => "etcd",
            Self::Coordinator { .. } => "coordinator",
            Self::Io(_) => "io",
            Self::Refused(_) => "refused",
            Self::Timeout(_) => "timeout",
        }
    }

    /// Wraps an etcd error with the call's name.
    pub fn etcd(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Self {
        move |source| Self::Etcd { op, source }
    }
}

/// The etcd error `e` is, when etcd answered one of those callers act on.
pub fn etcd_error(e: &etcd_client::Error) -> Option<etcd_operator::etcd_error::EtcdError> {
    match e {
        etcd_client::Error::GRpcStatus(s) => etcd_operator::etcd_error::EtcdError::of(s.message()),
        _ => None,
    }
}

/// True for etcd errors worth retrying: the cluster is briefly unable, not refusing.
pub fn is_transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Aborted
            ) || etcd_operator::etcd_error::EtcdError::of(s.message())
                .is_some_and(|e| e.is_transient())
        }
        _ => false,
    }
}
