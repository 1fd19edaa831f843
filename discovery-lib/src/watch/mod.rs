//! A prefix watch that never loses or repeats an event: the handle and
//! stream users see, and the function that starts the engine behind them.
//!
//! From the bottom up: what a watch is asked for and where it stands
//! (`options.rs`), the one consistent listing (`list.rs`), the prefix as
//! delivered and its diffing (`mirror.rs`) and the record of failures and
//! what each means (`failure.rs`), both plain data tested without etcd;
//! the engine that streams, resumes and resyncs on them (`engine.rs`); and
//! this module on top, which starts it.
//!
//! # Design
//!
//! The engine keeps the prefix's current state (`key -> Node`) and the last
//! revision it has fully applied, `rev`.
//!
//! 1. It lists the prefix at revision R (a consistent range read) and yields
//!    the [`Snapshot`]; `rev = R`.
//! 2. It watches the key range from `rev + 1`. Every event is classified
//!    against the state it keeps (new key or new value: set; same bytes:
//!    update; delete: delete), applied, and yielded; `rev` advances once a
//!    whole response (all events of its revisions) has been applied.
//! 3. When the stream fails in any way (error, end, cancel by a member that
//!    lost its leader, or silence: no answer to a progress request within
//!    the liveness window), it backs off (capped, jittered) and watches again
//!    from `rev + 1`. etcd replays exactly the revisions after `rev`, so
//!    nothing is lost; events at or below `rev` are dropped, so nothing is
//!    repeated. The balanced channel sends the new stream to a live member.
//! 4. When etcd says the revisions after `rev` were compacted, it re-lists
//!    the prefix and yields the difference against its state as set and
//!    delete events marked [`Event::is_resync`], then carries on from the
//!    listing's revision.
//! 5. When a member answers the progress request with a revision below
//!    `rev`, it lacks what the watch already applied: a follower that lags
//!    by seconds, or one whose history differs (etcd 3.5.0-3.5.2 can lose
//!    applied entries when killed, etcd issue 13766). A stream there would
//!    wait, silent, for revisions it may never reach, so the engine leaves
//!    that member as in step 3. When every member in turn says so, etcd's
//!    history itself went back (a restore from a snapshot): the engine
//!    re-lists and yields the difference, as in step 4.
//!
//! The previous value of an event comes from that state, not from etcd's
//! `prev_kv`: the two agree while the state is complete, and the state is
//! also what a resync diffs against, so one source serves both (and the
//! watch carries each value once, not twice).
//!
//! `rev` moves only on events, never on progress notifications: before
//! etcd 3.4.24 and 3.5.8 a progress notification can overtake events not
//! yet sent (etcd issue 15220), and resuming past them would lose them.
//! A quiet prefix therefore resumes from its last event; if that revision
//! has been compacted meanwhile, the resync of step 4 applies.

mod engine;
mod failure;
mod list;
mod mirror;
mod options;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::key::Prefix;
use crate::node::{Snapshot, WatchMessage};
use crate::rpc::Rpc;
use engine::Engine;
use list::list;
pub(crate) use options::Scope;
pub use options::{WatchOptions, WatchStatus};

/// Control over a running watch. Dropping it does not stop the watch;
/// dropping the [`WatchStream`] or calling [`WatchHandle::cancel`] does.
#[derive(Debug, Clone)]
pub struct WatchHandle {
    /// Stops the engine ([`WatchHandle::cancel`]).
    cancel: CancellationToken,
    /// The engine's connection state, as it reports it.
    status: watch::Receiver<WatchStatus>,
    /// The watched prefix, for [`WatchHandle::prefix`].
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
    /// The engine's batches: one per etcd response.
    rx: mpsc::Receiver<Result<Vec<WatchMessage>>>,
    /// The rest of the batch being handed out one message at a time.
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
    /// A stream over batches sent by hand, for tests of consumers.
    #[cfg(test)]
    pub(crate) fn from_batches(rx: mpsc::Receiver<Result<Vec<WatchMessage>>>) -> Self {
        Self {
            rx,
            pending: VecDeque::new(),
        }
    }

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

/// Start the engine behind [`Client::watch_prefix`](crate::Client::watch_prefix) (and the registration's
/// watch on its own key) on the current tokio runtime.
pub(crate) fn start(
    rpc: &Rpc,
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
    let engine = Engine::new(rpc, prefix.clone(), options, tx, status_tx, cancel.clone());
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

/// [`Client::get_prefix`](crate::Client::get_prefix).
pub(crate) async fn get_prefix(rpc: &Rpc, prefix: &str) -> Result<Snapshot> {
    let prefix = Prefix::new(prefix)?;
    let (revision, nodes) = list(rpc, &prefix, &prefix.dir_range(), 0).await?;
    Ok(Snapshot {
        prefix,
        revision,
        nodes,
        resync: false,
    })
}
