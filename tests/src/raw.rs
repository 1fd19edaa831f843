//! An independent watch with a bare etcd-client: the oracle tests check the
//! code under test against. It knows nothing of our library.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::etcd::EtcdCluster;

/// One event as etcd reported it.
#[derive(Clone, Debug)]
pub struct RawEvent {
    /// True for a put, false for a delete.
    pub put: bool,
    /// The key, lossily as text.
    pub key: String,
    /// The value (empty for a delete).
    pub value: Vec<u8>,
    /// The event's revision.
    pub revision: i64,
    /// The key's lease (0 for none or a delete).
    pub lease: i64,
    /// When the watcher received it.
    pub at: Instant,
}

impl RawEvent {
    /// The value as text.
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// Records every event under a raw key prefix (no directory semantics),
/// from the moment [`RawWatch::start`] returns. Reconnects by itself.
pub struct RawWatch {
    events: Arc<Mutex<Vec<RawEvent>>>,
    task: JoinHandle<()>,
}

impl RawWatch {
    /// Start watching `prefix` on `etcd`; returns once the watch is created.
    pub async fn start(etcd: &EtcdCluster, prefix: &str) -> Self {
        let client = etcd.raw_client().await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(record(client, prefix.to_owned(), events.clone(), ready_tx));
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("raw watch created within 10s")
            .expect("raw watch task alive");
        Self { events, task }
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<RawEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Wait until an event matching `pred` has been recorded; return it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&RawEvent) -> bool,
    ) -> RawEvent {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "raw watch: no event for {what} within {timeout:?}; saw {:#?}",
                    self.events()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for RawWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    mut client: etcd_client::Client,
    prefix: String,
    events: Arc<Mutex<Vec<RawEvent>>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut next = loop {
        match client
            .get(
                prefix.clone(),
                Some(etcd_client::GetOptions::new().with_count_only()),
            )
            .await
        {
            Ok(r) => break r.header().map(|h| h.revision()).unwrap_or(0) + 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    loop {
        let opts = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_start_revision(next);
        let mut stream = match client.watch(prefix.clone(), Some(opts)).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while let Ok(Some(resp)) = stream.message().await {
            if resp.created() {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            if resp.canceled() {
                break;
            }
            let now = Instant::now();
            let mut guard = events.lock().unwrap();
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                next = next.max(kv.mod_revision() + 1);
                guard.push(RawEvent {
                    put: ev.event_type() == etcd_client::EventType::Put,
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: kv.value().to_vec(),
                    revision: kv.mod_revision(),
                    lease: kv.lease(),
                    at: now,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
