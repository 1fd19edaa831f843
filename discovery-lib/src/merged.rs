//! Several prefix watches as one stream, for consumers that fold many
//! prefixes into one view (a rendered file, a child's environment, JSON
//! lines, DNS answers): [`Client::watch_prefixes`](crate::Client::watch_prefixes).
//!
//! Hand-written rather than `futures::stream::select_all` or
//! tokio-stream's `StreamMap`: the snapshots are taken first, in the order
//! the prefixes were given, before any merging; and one watch that ends
//! must end the whole stream, where both of those drop an ended stream and
//! carry on with the others. The merge itself is a round-robin poll.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

use crate::error::{Error, Result};
use crate::key::Prefix;
use crate::node::{Snapshot, WatchMessage};
use crate::rpc::Rpc;
use crate::watch::{WatchHandle, WatchOptions, WatchStream};

/// The watches of several prefixes as one stream of `(index, message)`,
/// where `index` is the prefix's place in the list given to
/// [`Client::watch_prefixes`](crate::Client::watch_prefixes) (as
/// tokio-stream's `StreamMap` tags each item with its key).
///
/// * **Start:** [`MergedWatchStream::snapshots`] waits for every prefix's
///   snapshot and returns them in the order given. Without it, each
///   prefix's snapshot is simply its first message.
/// * **Order:** each prefix's messages come in its own revision order,
///   exactly as from [`WatchStream`]: nothing lost, nothing repeated, with
///   resume and resync inside. Messages of different prefixes are
///   interleaved as they arrive, taken in turn so that a busy prefix does
///   not hold back a quiet one; there is no order across prefixes (each
///   has its own revisions, and a quiet one may lag a busy one).
/// * **Failure:** a permanent error of any one prefix's watch is the last
///   item (tagged with that prefix), and the other watches stop. A watch
///   cancelled through its [`WatchHandle`] ends the stream too, without an
///   error: a merged view that silently lost a prefix would mislead.
/// * **Stop:** dropping the stream stops every watch.
#[derive(Debug)]
pub struct MergedWatchStream {
    /// One watch per prefix, in the order given. Emptied when the stream
    /// ends, which drops them, and so stops their engines.
    streams: Vec<WatchStream>,
    /// Which watch is polled first next time: the one after the last that
    /// yielded, so that each gets its turn.
    next: usize,
    /// A message has been taken already: the snapshots are no longer
    /// each watch's next message.
    started: bool,
}

/// Start one watch per prefix behind
/// [`Client::watch_prefixes`](crate::Client::watch_prefixes). Every prefix
/// is checked before any watch starts.
pub(crate) fn start<P: AsRef<str>>(
    rpc: &Rpc,
    prefixes: impl IntoIterator<Item = P>,
    options: WatchOptions,
) -> Result<(Vec<WatchHandle>, MergedWatchStream)> {
    let prefixes = prefixes
        .into_iter()
        .map(|p| Prefix::new(p.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let mut handles = Vec::with_capacity(prefixes.len());
    let mut streams = Vec::with_capacity(prefixes.len());
    for p in &prefixes {
        let (h, s) = crate::watch::start(rpc, p.as_str(), options.clone())?;
        handles.push(h);
        streams.push(s);
    }
    Ok((handles, MergedWatchStream::new(streams)))
}

impl MergedWatchStream {
    fn new(streams: Vec<WatchStream>) -> Self {
        Self {
            streams,
            next: 0,
            started: false,
        }
    }

    /// Wait for every prefix's snapshot, and return them in the order the
    /// prefixes were given. Events that arrive meanwhile wait in their own
    /// watch (each buffers as [`WatchOptions::with_buffer`] says, then etcd
    /// holds them); the stream then yields events only.
    ///
    /// An `Err` names the prefix (its index) whose watch failed or ended
    /// before its snapshot; the stream has ended then, and every watch
    /// stopped. Call it first: once a message has been taken, the
    /// snapshots are behind it, and this returns [`Error::InvalidOption`]
    /// (with index 0) at once.
    pub async fn snapshots(&mut self) -> std::result::Result<Vec<Snapshot>, (usize, Error)> {
        if self.started {
            return Err((
                0,
                Error::InvalidOption(
                    "the snapshots were asked for after the first message; ask first".into(),
                ),
            ));
        }
        let mut snaps = Vec::with_capacity(self.streams.len());
        for i in 0..self.streams.len() {
            match self.streams[i].snapshot().await {
                Ok(s) => snaps.push(s),
                Err(e) => {
                    self.streams.clear();
                    return Err((i, e));
                }
            }
        }
        self.started = true;
        Ok(snaps)
    }

    /// Receive the next message and the index of its prefix; `None` once
    /// the stream has ended.
    pub async fn recv(&mut self) -> Option<(usize, Result<WatchMessage>)> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for MergedWatchStream {
    type Item = (usize, Result<WatchMessage>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.started = true;
        let n = this.streams.len();
        for k in 0..n {
            let i = (this.next + k) % n;
            match Pin::new(&mut this.streams[i]).poll_next(cx) {
                Poll::Ready(Some(Ok(m))) => {
                    this.next = (i + 1) % n;
                    return Poll::Ready(Some((i, Ok(m))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.streams.clear();
                    return Poll::Ready(Some((i, Err(e))));
                }
                Poll::Ready(None) => {
                    this.streams.clear();
                    return Poll::Ready(None);
                }
                // Polled: this watch wakes the task when it has more.
                Poll::Pending => {}
            }
        }
        if this.streams.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    //! The merge alone, over watches fed by hand: tagging, order within a
    //! prefix, turns across prefixes, and how it ends. The watches
    //! themselves run against a real etcd in the suite's `lib_watch`.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use futures::FutureExt;
    use tokio::sync::mpsc;

    use super::*;
    use crate::node::{Action, Event, Node};

    type Feed = mpsc::Sender<Result<Vec<WatchMessage>>>;

    fn watches(n: usize) -> (Vec<Feed>, MergedWatchStream) {
        let (txs, streams) = (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::channel(16);
                (tx, WatchStream::from_batches(rx))
            })
            .unzip();
        (txs, MergedWatchStream::new(streams))
    }

    fn prefix(i: usize) -> Prefix {
        Prefix::new(&format!("/p{i}")).unwrap()
    }

    fn snapshot(i: usize) -> WatchMessage {
        WatchMessage::Snapshot(Snapshot::new(prefix(i), 1, Vec::new(), false))
    }

    fn event(i: usize, revision: i64) -> WatchMessage {
        let key = format!("/p{i}/k");
        WatchMessage::Event(Event {
            action: Action::Set,
            revision,
            node: Node::new(key.as_bytes(), b"v", revision, revision, None),
            prev: None,
            resync: false,
        })
    }

    /// The index and revision of the next message, which must be ready.
    fn next_now(m: &mut MergedWatchStream) -> Option<(usize, i64)> {
        let (i, msg) = m.recv().now_or_never().expect("a message ready")?;
        match msg.unwrap() {
            WatchMessage::Event(e) => Some((i, e.revision())),
            WatchMessage::Snapshot(s) => Some((i, s.revision())),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn snapshots_come_in_the_order_given_whatever_order_they_arrive_in() {
        let (tx, mut m) = watches(3);
        tx[2]
            .send(Ok(vec![snapshot(2), event(2, 5)]))
            .await
            .unwrap();
        tx[1].send(Ok(vec![snapshot(1)])).await.unwrap();
        tx[0].send(Ok(vec![snapshot(0)])).await.unwrap();
        let snaps = m.snapshots().await.unwrap();
        let order: Vec<String> = snaps.iter().map(|s| s.prefix().to_string()).collect();
        assert_eq!(order, ["/p0", "/p1", "/p2"]);
        // The event that arrived with a snapshot is still there, tagged.
        assert_eq!(next_now(&mut m), Some((2, 5)));
        assert!(m.recv().now_or_never().is_none(), "nothing else is ready");
        // And the snapshots cannot be asked for twice.
        let (_, e) = m.snapshots().await.unwrap_err();
        assert!(e.to_string().contains("ask first"), "{e}");
    }

    #[tokio::test]
    async fn each_prefix_keeps_its_order_and_a_busy_one_does_not_starve_a_quiet_one() {
        let (tx, mut m) = watches(2);
        // Prefix 0 has a burst of ten revisions in two batches; prefix 1 one event.
        tx[0]
            .send(Ok((1..=5).map(|r| event(0, r)).collect()))
            .await
            .unwrap();
        tx[0]
            .send(Ok((6..=10).map(|r| event(0, r)).collect()))
            .await
            .unwrap();
        tx[1].send(Ok(vec![event(1, 3)])).await.unwrap();
        let got: Vec<(usize, i64)> = (0..11).map(|_| next_now(&mut m).unwrap()).collect();
        let of = |p: usize| -> Vec<i64> {
            got.iter()
                .filter(|(i, _)| *i == p)
                .map(|(_, r)| *r)
                .collect()
        };
        assert_eq!(of(0), (1..=10).collect::<Vec<_>>(), "{got:?}");
        assert_eq!(of(1), vec![3], "{got:?}");
        let quiet_at = got.iter().position(|(i, _)| *i == 1).unwrap();
        assert!(
            quiet_at <= 1,
            "the quiet prefix waited behind {quiet_at} messages of the busy one: {got:?}"
        );
    }

    #[tokio::test]
    async fn a_permanent_error_is_the_last_item_and_stops_every_watch() {
        let (tx, mut m) = watches(3);
        tx[0].send(Ok(vec![event(0, 1)])).await.unwrap();
        tx[1].send(Err(Error::Stopped("watch"))).await.unwrap();
        let mut seen = Vec::new();
        while let Some((i, r)) = m.recv().await {
            seen.push((i, r.is_ok()));
        }
        assert!(seen.ends_with(&[(1, false)]), "{seen:?}");
        assert_eq!(seen.iter().filter(|(_, ok)| !ok).count(), 1, "{seen:?}");
        // Every watch's receiver is gone: their engines see the consumer gone.
        for (i, t) in tx.iter().enumerate() {
            assert!(t.is_closed(), "watch {i} still has a consumer");
        }
        assert!(m.recv().await.is_none(), "ended for good");
    }

    #[tokio::test]
    async fn one_watch_ending_ends_the_stream() {
        let (mut tx, mut m) = watches(2);
        tx[1].send(Ok(vec![event(1, 4)])).await.unwrap();
        // Watch 0 ends without an error (its handle cancelled it).
        drop(tx.remove(0));
        let mut seen = Vec::new();
        while let Some((i, r)) = m.recv().await {
            seen.push((i, r.unwrap()));
        }
        assert!(seen.len() <= 1, "{seen:?}");
        assert!(tx[0].is_closed(), "the other watch was stopped");
    }

    #[tokio::test]
    async fn a_snapshot_that_never_comes_is_an_error_naming_its_prefix() {
        let (mut tx, mut m) = watches(2);
        tx[0].send(Ok(vec![snapshot(0)])).await.unwrap();
        tx[1]
            .send(Err(Error::InvalidOption("refused".into())))
            .await
            .unwrap();
        let (i, e) = m.snapshots().await.unwrap_err();
        assert_eq!(i, 1);
        assert!(e.to_string().contains("refused"), "{e}");
        assert!(tx.remove(0).is_closed(), "the other watch was stopped");
        assert!(m.recv().await.is_none());
    }

    #[tokio::test]
    async fn no_prefix_is_an_empty_stream() {
        let (_, mut m) = watches(0);
        assert!(m.snapshots().await.unwrap().is_empty());
        assert!(m.recv().await.is_none());
    }
}
