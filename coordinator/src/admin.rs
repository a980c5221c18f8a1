//! An operator's commands against a running local coordinator, over its control port:
//! `etcd-coordinator delete-member` and `etcd-coordinator backup`.
//!
//! The control port answers only callers with a certificate of the state directory's CA.
//! A command holds one only if it can read the CA's key under `<state>/pki/` (0600, the
//! coordinator's user): it issues itself a short-lived certificate naming
//! `spiffe://etcd-operator/operator`, which the coordinator accepts for these methods and
//! no other, and it checks that the server presents the coordinator's identity.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use etcd_operator::tls::{ClientTls, channel};
use etcd_operator::{
    ClusterKey,
    identity::{OPERATOR_URI, PeerIdentity},
    pki::{LeafRequest, Usage},
    proto::{
        Backup, DeleteMemberRequest, TakeBackupRequest, coordinator_client::CoordinatorClient,
    },
};
use thiserror::Error;

use crate::{local::LocalPki, security::Issuing};

/// How long the command's certificate is valid: enough for one command.
const COMMAND_CERT_VALIDITY: Duration = Duration::from_secs(600);

/// Why a command failed.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The state directory holds no coordinator's CA.
    #[error(
        "no coordinator state in {0}: pass the --state-dir the coordinator runs with (its CA is read from <state>/pki/)"
    )]
    NoState(String),
    /// The CA could not be read (permissions, corrupt files).
    #[error("reading the control path's CA: {0}")]
    Ca(String),
    /// The coordinator could not be reached.
    #[error("the coordinator at {addr} is not reachable: {message}")]
    Unreachable {
        /// The control address.
        addr: SocketAddr,
        /// What the connection said.
        message: String,
    },
    /// The coordinator refused or failed the request.
    #[error("{0}")]
    Refused(String),
}

/// A client of the coordinator's control port, as an operator's command.
async fn control_client(
    state_dir: &Path,
    control_addr: SocketAddr,
) -> Result<CoordinatorClient<tonic::transport::Channel>, AdminError> {
    let ca_key = state_dir.join("pki").join("ca.key");
    if !ca_key.is_file() {
        return Err(AdminError::NoState(state_dir.display().to_string()));
    }
    let (_, ca) = LocalPki::open(state_dir).map_err(|e| AdminError::Ca(e.to_string()))?;
    let identity = Issuing::new(
        Arc::new(ca),
        LeafRequest {
            common_name: "etcd-operator".into(),
            uris: vec![OPERATOR_URI.into()],
            hosts: vec![],
            usage: Usage::CLIENT,
            validity: COMMAND_CERT_VALIDITY,
        },
    );
    let tls = ClientTls::new(Arc::new(identity), PeerIdentity::Coordinator);
    let channel = channel(
        &format!("https://{control_addr}"),
        tls,
        Duration::from_secs(3),
        Some(Duration::from_secs(1900)),
    )
    .map_err(|e| AdminError::Unreachable {
        addr: control_addr,
        message: e.to_string(),
    })?;
    Ok(CoordinatorClient::new(channel))
}

/// Deletes `member` of the local cluster `cluster` with its data, through the coordinator
/// at `control_addr` (its planner then replaces it under a new ordinal). Returns the name
/// of the member deleted.
pub async fn delete_member(
    state_dir: &Path,
    control_addr: SocketAddr,
    cluster: &str,
    member: &str,
) -> Result<String, AdminError> {
    let mut client = control_client(state_dir, control_addr).await?;
    let response = client
        .delete_member(DeleteMemberRequest {
            cluster: Some((&ClusterKey::local(cluster)).into()),
            member_name: member.to_string(),
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => AdminError::Unreachable {
                addr: control_addr,
                message: status.message().to_string(),
            },
            _ => AdminError::Refused(status.message().to_string()),
        })?;
    Ok(response.into_inner().member_name)
}

/// Asks the coordinator at `control_addr` to rotate the etcd CA of the local cluster
/// `cluster`; returns what it answered.
pub async fn rotate_ca(
    state_dir: &Path,
    control_addr: SocketAddr,
    cluster: &str,
) -> Result<String, AdminError> {
    let mut client = control_client(state_dir, control_addr).await?;
    let response = client
        .rotate_ca(etcd_operator::proto::RotateCaRequest {
            cluster: Some((&ClusterKey::local(cluster)).into()),
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => AdminError::Unreachable {
                addr: control_addr,
                message: status.message().to_string(),
            },
            _ => AdminError::Refused(status.message().to_string()),
        })?;
    Ok(response.into_inner().message)
}

/// Takes a backup of the local cluster `cluster` now, through the coordinator at
/// `control_addr`; returns it once it is stored and proven restorable.
pub async fn take_backup(
    state_dir: &Path,
    control_addr: SocketAddr,
    cluster: &str,
) -> Result<Backup, AdminError> {
    let mut client = control_client(state_dir, control_addr).await?;
    let response = client
        .take_backup(TakeBackupRequest {
            cluster: Some((&ClusterKey::local(cluster)).into()),
        })
        .await
        .map_err(|status| AdminError::Refused(status.message().to_string()))?;
    Ok(response.into_inner())
}
