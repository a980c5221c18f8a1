//! Reads after traffic: the final linearizable read of every key, and every member's
//! `HashKV`.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::time::Instant;

use super::{HASH_KV_TIMEOUT, READ_RETRY_PAUSE, TrafficError};
use crate::{
    checker::MemberHash,
    history::{FinalRead, KeyValue},
};

/// Linearizable reads of every key in `keys` (with their mod revisions), retrying each
/// until it succeeds or `within` has passed. Use once traffic has stopped.
pub async fn final_read(
    endpoints: &[String],
    keys: &[String],
    within: Duration,
) -> Result<FinalRead, TrafficError> {
    if endpoints.is_empty() {
        return Err(TrafficError::NoEndpoints);
    }
    let what = |key: &str| format!("linearizable read of {key}");
    let deadline = Instant::now() + within;
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(5));
    let mut client = Client::connect(endpoints, Some(options))
        .await
        .map_err(|source| TrafficError::Etcd {
            what: "connecting".into(),
            endpoints: endpoints.join(","),
            source,
        })?;
    let mut read = FinalRead::default();
    for key in keys {
        let resp = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left, client.get(key.as_str(), None)).await;
            match attempt {
                Ok(Ok(resp)) => break resp,
                Ok(Err(source)) if Instant::now() + READ_RETRY_PAUSE >= deadline => {
                    return Err(TrafficError::Etcd {
                        what: what(key),
                        endpoints: endpoints.join(","),
                        source,
                    });
                }
                Err(_) => {
                    return Err(TrafficError::Timeout {
                        what: what(key),
                        endpoints: endpoints.join(","),
                        within,
                    });
                }
                // Retrying a read is harmless; the cluster may still be recovering.
                Ok(Err(_)) => tokio::time::sleep(READ_RETRY_PAUSE).await,
            }
        };
        if let Some(h) = resp.header() {
            read.revision = read.revision.max(h.revision());
            read.read_at.insert(key.clone(), h.revision());
        }
        let value = resp.kvs().first().map(|kv| KeyValue {
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            mod_revision: kv.mod_revision(),
        });
        read.keys.insert(key.clone(), value);
    }
    Ok(read)
}

/// `HashKV` of every member, each asked on its own endpoint, all at one revision:
/// `revision`, or (when `None`) the lowest current revision among the members, so that
/// every member can answer it.
pub async fn hash_kv_all(
    member_endpoints: &[String],
    revision: Option<i64>,
) -> Result<Vec<MemberHash>, TrafficError> {
    if member_endpoints.is_empty() {
        return Err(TrafficError::NoEndpoints);
    }
    let mut clients = Vec::new();
    for endpoint in member_endpoints {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(HASH_KV_TIMEOUT);
        let client = Client::connect([endpoint.as_str()], Some(options))
            .await
            .map_err(|source| TrafficError::Etcd {
                what: "connecting".into(),
                endpoints: endpoint.clone(),
                source,
            })?;
        clients.push((endpoint, client));
    }
    let revision = match revision {
        Some(r) => r,
        None => {
            let mut lowest = i64::MAX;
            for (endpoint, client) in &mut clients {
                // A serializable read answers with the member's own current revision.
                let options = Some(GetOptions::new().with_serializable());
                let resp = timed(endpoint, "reading the current revision", async {
                    client.get("\0", options).await
                })
                .await?;
                lowest = lowest.min(resp.header().map_or(0, |h| h.revision()));
            }
            lowest
        }
    };
    let mut hashes = Vec::new();
    for (endpoint, client) in &mut clients {
        let resp = timed(endpoint, &format!("HashKV at revision {revision}"), async {
            client.hash_kv(revision).await
        })
        .await?;
        hashes.push(MemberHash {
            endpoint: endpoint.clone(),
            member_id: resp.header().map_or(0, |h| h.member_id()),
            hash: resp.hash(),
            compact_revision: resp.compact_version(),
            hash_revision: resp.hash_revision(),
        });
    }
    Ok(hashes)
}

async fn timed<T>(
    endpoint: &str,
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, TrafficError> {
    match tokio::time::timeout(HASH_KV_TIMEOUT, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(TrafficError::Etcd {
            what: what.into(),
            endpoints: endpoint.into(),
            source,
        }),
        Err(_) => Err(TrafficError::Timeout {
            what: what.into(),
            endpoints: endpoint.into(),
            within: HASH_KV_TIMEOUT,
        }),
    }
}
