//! A prefix watch that never loses or repeats an event.
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

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{WatchOptions, WatchStatus, list};
use crate::client::Client;
use crate::error::{Error, Result, chain, classify, classify_cancel};
use crate::key::Prefix;
use crate::node::{Node, Snapshot, WatchMessage};
use crate::retry::Backoff;

/// How a stream ended.
pub(super) enum Flow {
    /// Resume from `rev + 1` after backing off.
    Reconnect(String),
    /// etcd compacted history past `rev`: re-list and diff.
    Compacted(i64),
    /// The member answered a progress request with a revision below `rev`:
    /// it does not have what this watch already applied (it lags, or its
    /// history differs), and a stream on it would wait, silent, for
    /// revisions it may never reach. Leave it; if every member says so,
    /// etcd's history went back (a restore from a snapshot): re-list.
    Behind(i64),
    /// Cancelled or the consumer went away.
    Stop,
}
/// The task behind one watch: it keeps the prefix's state, resumes after
/// any failure from the last revision it fully applied, and resyncs after
/// compaction (see the module docs).
pub(super) struct Engine {
    /// The request path to etcd.
    pub(super) client: Client,
    /// What is watched, for the range, logs and snapshots.
    pub(super) prefix: Prefix,
    /// The etcd `[start, end)` range to list and watch (from `opts.scope`).
    pub(super) range: (Vec<u8>, Vec<u8>),
    /// The caller's options: start revision, liveness, progress marks, scope.
    pub(super) opts: WatchOptions,
    /// Where batches go; closed when the consumer drops its stream.
    pub(super) tx: mpsc::Sender<Result<Vec<WatchMessage>>>,
    /// Where the watch stands, for [`WatchHandle::status`](super::WatchHandle::status).
    pub(super) status: watch::Sender<WatchStatus>,
    /// Cancelled by [`WatchHandle::cancel`](super::WatchHandle::cancel).
    pub(super) cancel: CancellationToken,
    /// The prefix as delivered so far: classifies each event (set or
    /// update, and the previous value) and is what a resync diffs against.
    /// Unordered: every event looks a key up; only a resync needs the keys
    /// in order, and sorts them then.
    pub(super) state: HashMap<Bytes, Node>,
    /// The last revision fully applied: a stream resumes at `rev + 1`.
    pub(super) rev: i64,
    /// Delays between reconnects, reset when a stream is live again.
    pub(super) backoff: Backoff,
    /// When the stream last broke, for the status and the "resumed" log.
    pub(super) down_since: Option<SystemTime>,
    /// Reconnects since the last live stream.
    pub(super) attempt: u32,
    /// The token was refreshed after a refusal and no stream has worked
    /// since: a second permission refusal is real.
    pub(super) reauthenticated: bool,
    /// Streams in a row whose member was behind `rev` ([`Flow::Behind`]):
    /// once every member has been, the history went back for all of them.
    pub(super) behind: usize,
}

impl Engine {
    pub(super) async fn run(mut self) {
        match self.run_inner().await {
            Ok(()) => debug!(prefix = %self.prefix, "watch stopped"),
            Err(e) => {
                warn!(prefix = %self.prefix, error = %e, "watch failed permanently");
                let _ = self.tx.send(Err(e)).await;
            }
        }
        self.status.send_replace(WatchStatus::Stopped);
    }

    fn stopped(&self) -> bool {
        self.cancel.is_cancelled() || self.tx.is_closed()
    }

    /// Wait for `fut` unless the watch is cancelled or its consumer is gone.
    async fn guard<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            _ = self.tx.closed() => None,
            v = fut => Some(v),
        }
    }

    async fn send(&self, msg: WatchMessage) -> bool {
        self.send_batch(vec![msg]).await
    }

    pub(super) async fn send_batch(&self, batch: Vec<WatchMessage>) -> bool {
        if batch.is_empty() {
            return true;
        }
        matches!(self.guard(self.tx.send(Ok(batch))).await, Some(Ok(())))
    }

    /// Record a failure and sleep the next backoff delay. False if stopped meanwhile.
    async fn back_off(&mut self, error: String) -> bool {
        self.attempt += 1;
        let since = *self.down_since.get_or_insert_with(SystemTime::now);
        let delay = self.backoff.next_delay();
        warn!(
            prefix = %self.prefix,
            error = %error,
            resume_from = self.rev + 1,
            attempt = self.attempt,
            retry_in = ?delay,
            "watch disconnected"
        );
        self.status.send_replace(WatchStatus::Reconnecting {
            since,
            attempt: self.attempt,
            error,
        });
        self.guard(tokio::time::sleep(delay)).await.is_some()
    }

    fn healthy(&mut self, member: u64) {
        debug!(prefix = %self.prefix, from = self.rev + 1, member = format_args!("{member:x}"), "watch live");
        if self.down_since.take().is_some() {
            info!(
                prefix = %self.prefix,
                revision = self.rev,
                attempts = self.attempt,
                member = format_args!("{member:x}"),
                "watch resumed"
            );
        }
        self.attempt = 0;
        self.backoff.reset();
        self.status.send_replace(WatchStatus::Live {
            revision: self.rev,
            member,
        });
    }

    /// List with retries. `Ok(None)`: stopped.
    pub(super) async fn list_retrying(
        &mut self,
        revision: i64,
    ) -> Result<Option<(i64, Vec<Node>)>> {
        loop {
            let r = self
                .guard(list(&self.client, &self.prefix, &self.range, revision))
                .await;
            match r {
                None => return Ok(None),
                Some(Ok(v)) => return Ok(Some(v)),
                Some(Err(e)) if e.is_transient() => {
                    if !self.back_off(e.to_string()).await {
                        return Ok(None);
                    }
                }
                Some(Err(e)) => return Err(e),
            }
        }
    }

    async fn run_inner(&mut self) -> Result<()> {
        // 1. The snapshot.
        let start = self.opts.start_revision;
        let (revision, nodes, resync) = match self.list_retrying(start).await {
            Ok(Some((r, n))) => (r, n, false),
            Ok(None) => return Ok(()),
            Err(Error::Compacted { .. }) if start > 0 => {
                warn!(prefix = %self.prefix, requested = start, "start revision compacted; sending the current state as a resync snapshot");
                match self.list_retrying(0).await? {
                    Some((r, n)) => (r, n, true),
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        };
        self.rev = revision;
        self.state = nodes.iter().map(|n| (n.key.clone(), n.clone())).collect();
        let snap = Snapshot {
            prefix: self.prefix.clone(),
            revision,
            nodes,
            resync,
        };
        if !self.send(WatchMessage::Snapshot(snap)).await {
            return Ok(());
        }

        // 2.-4. Stream, resume, resync.
        loop {
            if self.stopped() {
                return Ok(());
            }
            match self.stream_once().await? {
                Flow::Stop => return Ok(()),
                Flow::Reconnect(why) => {
                    if !self.back_off(why).await {
                        return Ok(());
                    }
                }
                Flow::Compacted(compacted) => {
                    let why =
                        format!("the history it needs was compacted (up to revision {compacted})");
                    if !self.resync(&why).await? {
                        return Ok(());
                    }
                }
                Flow::Behind(at) => {
                    self.behind += 1;
                    let why = format!(
                        "etcd answers at revision {at}, behind the {} this watch has applied",
                        self.rev
                    );
                    if self.behind >= self.client.endpoints().len() {
                        self.behind = 0;
                        let why = format!(
                            "{why} on every member: its history went back (a restore from a snapshot?)"
                        );
                        if !self.resync(&why).await? {
                            return Ok(());
                        }
                    } else if !self.back_off(format!("{why}; trying another member")).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Open one stream from `rev + 1` and pump it until it ends.
    async fn stream_once(&mut self) -> Result<Flow> {
        let opts = etcd_client::WatchOptions::new()
            .with_range(self.range.1.clone())
            .with_start_revision(self.rev + 1);
        let client = &self.client;
        let start = &self.range.0;
        // A healthy member answers a watch at once; do not wait the full
        // request timeout on a frozen one.
        let limit = self.opts.probe_timeout + Duration::from_secs(1);
        let opened = self
            .guard(client.call_on("watch", limit, |c| {
                let (mut wc, start, opts) = (c.watch_client(), start.clone(), opts.clone());
                async move { wc.watch(start, Some(opts)).await }
            }))
            .await;
        let (stream, member) = match opened {
            None => return Ok(Flow::Stop),
            Some(Ok(s)) => s,
            Some(Err(e)) => return self.failed(classify(&e), chain(&e), None).await,
        };
        // A stream that broke, went silent, or was cancelled by a member
        // that lost its leader: open the next one on another member. (Not
        // after a fresh authentication: that member is fine.)
        let flow = self.pump(stream, member).await;
        match &flow {
            Ok(Flow::Reconnect(why)) if !self.reauthenticated => {
                self.client.pool().avoid(member, "watch", why);
            }
            Ok(Flow::Behind(at)) => {
                let why = format!("at revision {at}, behind {}", self.rev);
                self.client.pool().avoid(member, "watch", &why);
            }
            _ => {}
        }
        flow
    }

    async fn pump(&mut self, stream: etcd_client::WatchStream, member: usize) -> Result<Flow> {
        let (mut requests, mut responses) = stream.split();
        let mut deadline = Instant::now() + self.opts.liveness;
        let mut probing = false;
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok(Flow::Stop),
                _ = self.tx.closed() => return Ok(Flow::Stop),
                msg = responses.message() => match msg {
                    Ok(Some(resp)) => {
                        let probed = std::mem::take(&mut probing);
                        deadline = Instant::now() + self.opts.liveness;
                        if resp.created() {
                            let member = resp.header().map(|h| h.member_id()).unwrap_or_default();
                            self.healthy(member);
                        }
                        if resp.compact_revision() > 0 {
                            return Ok(Flow::Compacted(resp.compact_revision()));
                        }
                        if resp.canceled() {
                            let reason = resp.cancel_reason().to_owned();
                            let text = if reason.is_empty() { "etcd cancelled the watch".to_owned() } else { format!("etcd cancelled the watch: {reason}") };
                            return self.failed(classify_cancel(&reason), text, Some(member)).await;
                        }
                        self.reauthenticated = false;
                        // The answer to a progress request: where the member
                        // stands. (Only after a quiet liveness window: a
                        // healthy follower has long caught up by then.)
                        if probed && resp.events().is_empty() && !resp.created() {
                            let at = resp.header().map(|h| h.revision()).unwrap_or_default();
                            if at > 0 && at < self.rev {
                                return Ok(Flow::Behind(at));
                            }
                            self.behind = 0;
                        }
                        if !resp.events().is_empty() {
                            self.behind = 0;
                        }
                        if !self.apply(resp.events()).await {
                            return Ok(Flow::Stop);
                        }
                    }
                    Ok(None) => return Ok(Flow::Reconnect("the watch stream ended".into())),
                    Err(e) => return self.failed(classify(&e), chain(&e), Some(member)).await,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if probing {
                        return Ok(Flow::Reconnect(format!(
                            "no answer from etcd for {:?}",
                            self.opts.liveness + self.opts.probe_timeout
                        )));
                    }
                    if let Err(e) = requests.request_progress().await {
                        return self.failed(classify(&e), chain(&e), Some(member)).await;
                    }
                    probing = true;
                    deadline = Instant::now() + self.opts.probe_timeout;
                }
            }
        }
    }
}
