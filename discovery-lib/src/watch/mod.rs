//! A prefix watch that never loses or repeats an event: the options,
//! handle and stream users see, and the one consistent listing. The engine
//! that does the work, and its design, is in `engine.rs`.

mod apply;
mod engine;
mod failure;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use etcd_client::GetOptions;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::error::{Class, Error, Result, classify};
use crate::key::Prefix;
use crate::node::{Node, Snapshot, WatchMessage};
use crate::retry::Backoff;
use engine::Engine;

/// Options for [`Client::watch_prefix`].
#[derive(Clone, Debug)]
pub struct WatchOptions {
    start_revision: i64,
    liveness: Duration,
    probe_timeout: Duration,
    buffer: usize,
    progress_marks: bool,
    /// Which keys the prefix stands for: set by the library's own users
    /// (config, the registration's key watch), not by crate users.
    pub(crate) scope: Scope,
}

/// Which keys a watch of a prefix `P` covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The keys under `P/` (etcd v2's directory): what users watch.
    Dir,
    /// `P` itself and the keys under `P/`: a config is either one JSON
    /// document at `P` or one key per field under it.
    SelfAndDir,
    /// `P` alone: the registration's watch on its own key.
    Key,
}

impl Scope {
    /// The etcd `[start, end)` range to list and watch. May hold more than
    /// the scope (see [`Prefix::self_and_dir_range`]); [`Scope::covers`]
    /// filters.
    fn range(self, p: &Prefix) -> (Vec<u8>, Vec<u8>) {
        match self {
            Scope::Dir => p.dir_range(),
            Scope::SelfAndDir => p.self_and_dir_range(),
            Scope::Key => {
                let key = p.as_str().as_bytes().to_vec();
                // The smallest key after `key`: etcd's range of one key.
                let mut end = key.clone();
                end.push(0);
                (key, end)
            }
        }
    }

    fn covers(self, p: &Prefix, key: &[u8]) -> bool {
        match self {
            Scope::Dir => p.contains(key),
            Scope::SelfAndDir => p.covers(key),
            Scope::Key => key == p.as_str().as_bytes(),
        }
    }
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchOptions {
    /// Start now: the snapshot is the current state.
    pub const fn new() -> Self {
        Self {
            start_revision: 0,
            liveness: Duration::from_secs(3),
            probe_timeout: Duration::from_secs(2),
            buffer: 64,
            progress_marks: false,
            scope: Scope::Dir,
        }
    }

    /// Continue from a known revision: the snapshot is the prefix as it was
    /// at `revision` (an etcd range read at that revision) and events start
    /// at `revision + 1` (etcd's watch `start_revision`).
    ///
    /// If etcd has compacted `revision` away, the snapshot is the current
    /// state instead and is marked [`Snapshot::is_resync`].
    pub const fn with_start_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }

    /// After this long without any message, ask etcd for a progress
    /// notification (`WatchProgressRequest`); if nothing at all arrives
    /// within `timeout` after that, the stream is treated as dead and
    /// resumed elsewhere. Catches frozen members and half-open connections.
    pub const fn with_liveness(mut self, idle: Duration, timeout: Duration) -> Self {
        self.liveness = idle;
        self.probe_timeout = timeout;
        self
    }

    /// Send a [`WatchMessage::Progress`] after each batch of events (all
    /// the events of one or more whole revisions) and after a resync.
    pub const fn with_progress_marks(mut self, on: bool) -> Self {
        self.progress_marks = on;
        self
    }

    /// How many batches (etcd responses) may wait for a slow consumer before
    /// the engine stops reading from etcd (etcd then buffers on its side).
    pub const fn with_buffer(mut self, messages: usize) -> Self {
        self.buffer = if messages == 0 { 1 } else { messages };
        self
    }
}

/// Where a watch stands, for logs, status lines and readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchStatus {
    /// Listing the prefix or opening the first stream.
    Connecting,
    /// Streaming; everything up to `revision` has been delivered.
    Live {
        /// The last revision applied.
        revision: i64,
        /// The etcd member id serving the stream.
        member: u64,
    },
    /// The stream failed; retrying with backoff.
    Reconnecting {
        /// When the stream was last healthy.
        since: SystemTime,
        /// Attempts so far.
        attempt: u32,
        /// The last failure.
        error: String,
    },
    /// The watch ended (cancelled, dropped, or a permanent error).
    Stopped,
}

/// Control over a running watch. Dropping it does not stop the watch;
/// dropping the [`WatchStream`] or calling [`WatchHandle::cancel`] does.
#[derive(Debug, Clone)]
pub struct WatchHandle {
    cancel: CancellationToken,
    status: watch::Receiver<WatchStatus>,
    prefix: Prefix,
}

impl WatchHandle {
    /// Stop the watch; the stream ends.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The watch's connection state.
    pub fn status(&self) -> watch::Receiver<WatchStatus> {
        self.status.clone()
    }

    /// The watched prefix.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }
}

/// The messages of a watch: one [`WatchMessage::Snapshot`], then
/// [`WatchMessage::Event`]s. Transient failures are retried inside; an
/// `Err` item is permanent (permission denied, bad revision) and is the last.
#[derive(Debug)]
pub struct WatchStream {
    // The engine sends one batch per etcd response, so that a burst costs
    // one channel operation rather than one per event.
    rx: mpsc::Receiver<Result<Vec<WatchMessage>>>,
    pending: VecDeque<WatchMessage>,
}

impl Stream for WatchStream {
    type Item = Result<WatchMessage>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(m)));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(batch))) => self.pending.extend(batch),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl WatchStream {
    /// Wait for the first message, the snapshot, and return it: the start
    /// of every consumer that folds a prefix into state (see
    /// [`PrefixState`](crate::PrefixState)). An `Err` is the watch's
    /// permanent error, or [`Error::Stopped`] if it ended first.
    pub async fn snapshot(&mut self) -> Result<Snapshot> {
        match self.recv().await {
            Some(Ok(WatchMessage::Snapshot(s))) => Ok(s),
            Some(Err(e)) => Err(e),
            // The engine sends the snapshot first and nothing before it.
            Some(Ok(_)) | None => Err(Error::Stopped("watch")),
        }
    }

    /// Receive the next message; `None` once the watch has ended.
    pub async fn recv(&mut self) -> Option<Result<WatchMessage>> {
        futures::StreamExt::next(self).await
    }

    /// The next message if one is ready now, without waiting. Lets a
    /// consumer write a burst in one go and flush once.
    pub fn try_recv(&mut self) -> Option<Result<WatchMessage>> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Some(Ok(m));
            }
            match self.rx.try_recv() {
                Ok(Ok(batch)) => self.pending.extend(batch),
                Ok(Err(e)) => return Some(Err(e)),
                Err(_) => return None,
            }
        }
    }
}

/// Start the engine behind [`Client::watch_prefix`] (and the registration's
/// watch on its own key) on the current tokio runtime.
pub(crate) fn start(
    client: &Client,
    prefix: &str,
    options: WatchOptions,
) -> Result<(WatchHandle, WatchStream)> {
    let prefix = Prefix::new(prefix)?;
    if options.start_revision < 0 {
        return Err(Error::InvalidOption(format!(
            "start revision {} is negative",
            options.start_revision
        )));
    }
    let (tx, rx) = mpsc::channel(options.buffer);
    let (status_tx, status_rx) = watch::channel(WatchStatus::Connecting);
    let cancel = CancellationToken::new();
    let range = options.scope.range(&prefix);
    let engine = Engine {
        client: client.clone(),
        prefix: prefix.clone(),
        range,
        opts: options,
        tx,
        status: status_tx,
        cancel: cancel.clone(),
        state: HashMap::new(),
        rev: 0,
        backoff: Backoff::for_watch(),
        down_since: None,
        attempt: 0,
        reauthenticated: false,
        behind: 0,
    };
    tokio::spawn(engine.run());
    Ok((
        WatchHandle {
            cancel,
            status: status_rx,
            prefix,
        },
        WatchStream {
            rx,
            pending: VecDeque::new(),
        },
    ))
}

/// [`Client::get_prefix`].
pub(crate) async fn get_prefix(client: &Client, prefix: &str) -> Result<Snapshot> {
    let prefix = Prefix::new(prefix)?;
    let (revision, nodes) = list(client, &prefix, &prefix.dir_range(), 0).await?;
    Ok(Snapshot {
        prefix,
        revision,
        nodes,
        resync: false,
    })
}

/// A consistent listing of `range` at `revision` (0: now). Returns the
/// listing's revision and the nodes in key order.
pub(crate) async fn list(
    client: &Client,
    prefix: &Prefix,
    range: &(Vec<u8>, Vec<u8>),
    revision: i64,
) -> Result<(i64, Vec<Node>)> {
    let mut opts = GetOptions::new().with_range(range.1.clone());
    if revision > 0 {
        opts = opts.with_revision(revision);
    }
    let resp = client
        .call("get", |c| {
            let (mut kv, start, opts) = (c.kv(), range.0.clone(), opts.clone());
            async move { kv.get(start, Some(opts)).await }
        })
        .await
        .map_err(|e| get_error(prefix, revision, e))?;
    let head = resp.header().map(|h| h.revision()).unwrap_or_default();
    let nodes = resp
        .kvs()
        .iter()
        .filter(|kv| prefix.covers(kv.key()))
        .map(Node::from_kv)
        .collect();
    Ok((if revision > 0 { revision } else { head }, nodes))
}

fn get_error(prefix: &Prefix, revision: i64, e: etcd_client::Error) -> Error {
    let msg = crate::error::status_message(&e);
    match classify(&e) {
        Class::Compacted => Error::Compacted {
            requested: revision,
            compacted: None,
        },
        Class::Fatal if msg.contains("future revision") => Error::InvalidOption(format!(
            "revision {revision} is in the future; etcd has not reached it yet"
        )),
        _ => Error::from_etcd("get", prefix.as_str(), e),
    }
}
