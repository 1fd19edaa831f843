//! A live view of the members registered under a prefix.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use tokio::sync::watch;
use tracing::warn;

use crate::error::Result;
use crate::node::WatchMessage;
use crate::rpc::Rpc;
use crate::state::{Applied, PrefixState};
use crate::watch::WatchOptions;

/// The members under a prefix, key to value, ordered by key. Cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The etcd revision this membership was read at.
    revision: i64,
    /// Key to value, shared so that a clone costs a reference count.
    entries: Arc<BTreeMap<Bytes, Bytes>>,
}

impl Membership {
    fn of(state: &PrefixState) -> Self {
        Self {
            revision: state.revision(),
            entries: Arc::new(
                state
                    .nodes()
                    .map(|n| (n.key.clone(), n.value.clone()))
                    .collect(),
            ),
        }
    }

    /// The revision of the last set or delete reflected here.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value registered under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Bytes::as_ref)
    }

    /// Key and value pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// The values in key order, as text (lossy where not UTF-8): typically
    /// the backends' addresses.
    pub fn values_lossy(&self) -> Vec<String> {
        self.entries
            .values()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// [`Client::members`](crate::Client::members).
pub(crate) async fn follow(rpc: &Rpc, prefix: &str) -> Result<watch::Receiver<Membership>> {
    let (handle, mut stream) =
        crate::watch::start(rpc, prefix, WatchOptions::new().with_progress_marks(true))?;
    let mut state = PrefixState::new();
    state.apply(&WatchMessage::Snapshot(stream.snapshot().await?));
    state.take_changed();
    let (tx, rx) = watch::channel(Membership::of(&state));
    let prefix = handle.prefix().clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = tx.closed() => break,
                m = stream.recv() => m,
            };
            match msg {
                // Changes of one revision (a transaction) are published
                // together, at the progress mark that ends them.
                Some(Ok(m)) => {
                    if matches!(state.apply(&m), Applied::Progress(_)) && state.take_changed() {
                        tx.send_replace(Membership::of(&state));
                    }
                }
                Some(Err(e)) => {
                    warn!(prefix = %prefix, error = %e, "membership watch failed");
                    break;
                }
                None => break,
            }
        }
        handle.cancel();
    });
    Ok(rx)
}
