//! Clients of etcd for tests: connections with short timeouts, TLS from a bundle
//! directory, `etcdctl`, and etcd's `/version`.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions, TlsOptions};

/// Connects an etcd client to `endpoints` with short timeouts.
pub async fn etcd_client(endpoints: &[String]) -> anyhow::Result<Client> {
    etcd_client_tls(endpoints, None).await
}

/// Connects an etcd client to `endpoints` with short timeouts, over TLS when given.
pub async fn etcd_client_tls(
    endpoints: &[String],
    tls: Option<&etcd_client::TlsOptions>,
) -> anyhow::Result<Client> {
    Ok(Client::connect(endpoints, Some(connect_options(tls))).await?)
}

fn connect_options(tls: Option<&etcd_client::TlsOptions>) -> etcd_client::ConnectOptions {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3));
    match tls {
        Some(tls) => options.with_tls(tls.clone()),
        None => options,
    }
}

/// etcd client TLS from a bundle directory (`ca.crt`, `tls.crt`, `tls.key`).
pub fn tls_options(dir: &Path) -> anyhow::Result<etcd_client::TlsOptions> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).with_context(|| format!("{}/{name}", dir.display()))
    };
    Ok(etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read("ca.crt")?))
        .identity(etcd_client::Identity::from_pem(
            read("tls.crt")?,
            read("tls.key")?,
        )))
}

/// Connect options carrying only `tls` (none without it), as the plain clients of the
/// testkit use.
pub fn tls_only(tls: &Option<TlsOptions>) -> Option<ConnectOptions> {
    tls.as_ref()
        .map(|t| ConnectOptions::new().with_tls(t.clone()))
}

/// Runs `etcdctl` (API 3) with `args` against `endpoints`; returns its standard output,
/// or an error with its standard error.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .context("running etcdctl (Debian package etcd-client)")?;
    if !out.status.success() {
        bail!(
            "etcdctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `GET /version` of an etcd client URL: `(etcdserver, etcdcluster)`.
pub async fn http_version(client_url: &str) -> anyhow::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = client_url
        .strip_prefix("http://")
        .with_context(|| format!("{client_url} is not an http URL"))?;
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        stream
            .write_all(format!("GET /version HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        anyhow::Ok(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(3), fetch).await??;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .with_context(|| format!("no HTTP body from {client_url}: {text:?}"))?;
    let json: serde_json::Value = serde_json::from_str(body)
        .with_context(|| format!("/version of {client_url}: {body:?}"))?;
    let field = |f: &str| json[f].as_str().unwrap_or_default().to_string();
    Ok((field("etcdserver"), field("etcdcluster")))
}
