//! The steady writer: one client of the generator writing a fresh key every ~20 ms over
//! the live endpoints, and the reads that prove every acknowledged key survived.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::bail;
use etcd_client::GetOptions;
use tokio::{sync::watch, task::JoinHandle};

use super::{Pace, Route, Workload, run_client};
use crate::{
    clients::etcd_client_tls,
    history::{History, Recorder},
};

/// The key prefix a [`Writer`] uses.
pub const WRITE_PREFIX: &str = "w/";

/// How long one write of a [`Writer`] may take, all endpoints tried included.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a [`Writer`] writes.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// What a writer did.
#[derive(Clone, Debug, Default)]
pub struct WriterLog {
    /// Keys whose put was acknowledged, in order.
    pub acked: Vec<String>,
    /// Writes that no endpoint acknowledged in time: when (since the writer started), the
    /// key and the last error.
    pub failures: Vec<(Duration, String, String)>,
    /// The longest time between two acknowledged writes.
    pub longest_gap: Duration,
    /// Acknowledged writes per endpoint.
    pub acked_by: BTreeMap<String, usize>,
}

/// Steady client traffic of one client of the generator: a fresh key `w/<n>` every
/// ~20 ms, each put tried on the live endpoints in turn within [`WRITE_TIMEOUT`]; keeps
/// what was acknowledged ([`WriterLog`]) beside the recorded history of every try.
pub struct Writer {
    log: Arc<Mutex<WriterLog>>,
    recorder: Recorder,
    task: JoinHandle<()>,
    _stop: watch::Sender<bool>,
}

impl Writer {
    /// Starts writing to the endpoints `endpoints()` returns at each write.
    pub fn start(endpoints: impl Fn() -> Vec<String> + Send + Sync + 'static) -> Self {
        Self::start_tls(endpoints, None)
    }

    /// As [`Writer::start`], over TLS when `tls` is given.
    pub fn start_tls(
        endpoints: impl Fn() -> Vec<String> + Send + Sync + 'static,
        tls: Option<etcd_client::TlsOptions>,
    ) -> Self {
        Self::start_with(endpoints, tls, None)
    }

    /// As [`Writer::start_tls`], with the TLS `tls()` reads before every new connection,
    /// and a new connection after any failed try: an application that picks up its
    /// certificates again as they rotate (a client certificate of a new CA, a CA bundle).
    pub fn start_tls_reloading(
        endpoints: impl Fn() -> Vec<String> + Send + Sync + 'static,
        tls: impl Fn() -> Option<etcd_client::TlsOptions> + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(endpoints, None, Some(Arc::new(tls)))
    }

    fn start_with(
        endpoints: impl Fn() -> Vec<String> + Send + Sync + 'static,
        tls: Option<etcd_client::TlsOptions>,
        reload_tls: Option<super::ops::TlsSource>,
    ) -> Self {
        let log = Arc::new(Mutex::new(WriterLog::default()));
        let recorder = Recorder::new();
        let (stop, stopped) = watch::channel(false);
        let route = Route::Failover {
            endpoints: Arc::new(endpoints),
            tls,
            reload_tls,
            clients: HashMap::new(),
            good: BTreeSet::new(),
            sent: 0,
        };
        let workload = Workload::FreshKeys {
            prefix: WRITE_PREFIX.into(),
            next: 0,
        };
        let task = tokio::spawn(run_client(
            0,
            workload,
            route,
            Pace::steady(WRITE_INTERVAL, WRITE_TIMEOUT),
            recorder.clone(),
            stopped,
            Some(Arc::clone(&log)),
        ));
        Self {
            log,
            recorder,
            task,
            _stop: stop,
        }
    }

    /// What was done so far.
    pub fn log(&self) -> WriterLog {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every try so far, as a history (one operation per endpoint tried).
    pub fn history(&self) -> History {
        self.recorder.history()
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acked
            .len()
    }

    /// Waits until `more` writes beyond the current count are acknowledged.
    pub async fn wait_acked(&self, more: usize, within: Duration) -> anyhow::Result<()> {
        let target = self.acked() + more;
        crate::wait_for(
            &format!("{more} more acknowledged writes"),
            within,
            || async { (self.acked() >= target).then_some(()) },
        )
        .await
    }

    /// Stops writing (a write under way is abandoned and not counted) and returns the log.
    pub async fn stop(mut self) -> WriterLog {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.log()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks that every acknowledged key is readable, with a linearizable prefix read, from
/// each of `endpoints` (so every member has them); returns how many keys each holds.
pub async fn verify_acked(endpoints: &[String], acked: &[String]) -> anyhow::Result<usize> {
    verify_acked_tls(endpoints, acked, None).await
}

/// As [`verify_acked`], over TLS when given.
pub async fn verify_acked_tls(
    endpoints: &[String],
    acked: &[String],
    tls: Option<&etcd_client::TlsOptions>,
) -> anyhow::Result<usize> {
    read_acked(endpoints, acked, tls, false)
        .await
        .map(|(held, _)| held)
}

/// How many of the `acked` writes are missing on the cluster at `endpoints` (read from
/// each, the most any of them misses): for a recovery that may lose writes and must say
/// how many.
pub async fn count_missing_acked(endpoints: &[String], acked: &[String]) -> anyhow::Result<usize> {
    read_acked(endpoints, acked, None, true)
        .await
        .map(|(_, missing)| missing)
}

async fn read_acked(
    endpoints: &[String],
    acked: &[String],
    tls: Option<&etcd_client::TlsOptions>,
    tolerate_missing: bool,
) -> anyhow::Result<(usize, usize)> {
    let mut most_missing = 0;
    if endpoints.is_empty() {
        bail!("no endpoint to verify the writes on");
    }
    let mut held = 0;
    for endpoint in endpoints {
        let keys = crate::wait_for(
            &format!("a linearizable read of {WRITE_PREFIX}* on {endpoint}"),
            Duration::from_secs(20),
            || async {
                let mut c = etcd_client_tls(std::slice::from_ref(endpoint), tls)
                    .await
                    .ok()?;
                let resp = tokio::time::timeout(
                    Duration::from_secs(5),
                    c.get(
                        WRITE_PREFIX,
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    ),
                )
                .await
                .ok()?
                .ok()?;
                Some(
                    resp.kvs()
                        .iter()
                        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                        .collect::<BTreeSet<String>>(),
                )
            },
        )
        .await?;
        let missing: Vec<&String> = acked.iter().filter(|k| !keys.contains(*k)).collect();
        if !missing.is_empty() && !tolerate_missing {
            bail!(
                "{} of {} acknowledged writes are missing on {endpoint}: {:?}{}",
                missing.len(),
                acked.len(),
                &missing[..missing.len().min(10)],
                if missing.len() > 10 { " ..." } else { "" }
            );
        }
        most_missing = most_missing.max(missing.len());
        held = keys.len();
    }
    Ok((held, most_missing))
}
