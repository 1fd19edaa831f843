//! The task behind one watch: it streams from `rev + 1`, resumes after any
//! failure and resyncs after a compaction, as the module's design says
//! (`mod.rs`). Its state is its mirror (`mirror.rs`) and its record of
//! failures (`failure.rs`), both plain data; here are the streams, the
//! channel and the logs.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::failure::{Flow, Outage, Trouble, Verdict};
use super::list::list;
use super::mirror::{Change, Mirror};
use super::options::{WatchOptions, WatchStatus};
use crate::error::{Class, Error, Result, chain, classify, classify_cancel};
use crate::key::Prefix;
use crate::node::{Node, Snapshot, WatchMessage};
use crate::retry::Backoff;
use crate::rpc::Rpc;

/// The task behind one watch: it keeps the prefix's state, resumes after
/// any failure from the last revision it fully applied, and resyncs after
/// compaction (see the module docs).
pub(super) struct Engine {
    /// The request path to etcd.
    rpc: Rpc,
    /// What is watched, for the range, logs and snapshots.
    prefix: Prefix,
    /// The etcd `[start, end)` range to list and watch (from `opts.scope`).
    range: (Vec<u8>, Vec<u8>),
    /// The caller's options: start revision, liveness, progress marks, scope.
    opts: WatchOptions,
    /// Where batches go; closed when the consumer drops its stream.
    tx: mpsc::Sender<Result<Vec<WatchMessage>>>,
    /// Where the watch stands, for [`WatchHandle::status`](super::WatchHandle::status).
    status: watch::Sender<WatchStatus>,
    /// Cancelled by [`WatchHandle::cancel`](super::WatchHandle::cancel).
    cancel: CancellationToken,
    /// The prefix as delivered so far and the last revision fully
    /// applied (`rev`): what classifies each event and what a resync
    /// diffs against.
    mirror: Mirror,
    /// How the last streams failed: what makes a refusal final and a
    /// lagging member a sign that the history went back.
    trouble: Trouble,
    /// The current outage, if any, and the delays between its reconnects.
    outage: Outage,
}

impl Engine {
    /// The engine for `prefix` under `opts`, not yet started: it sends
    /// batches on `tx`, reports on `status` and stops on `cancel`.
    pub(super) fn new(
        rpc: &Rpc,
        prefix: Prefix,
        opts: WatchOptions,
        tx: mpsc::Sender<Result<Vec<WatchMessage>>>,
        status: watch::Sender<WatchStatus>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            rpc: rpc.clone(),
            range: opts.scope.range(&prefix),
            prefix,
            opts,
            tx,
            status,
            cancel,
            mirror: Mirror::default(),
            trouble: Trouble::default(),
            outage: Outage::new(Backoff::for_watch()),
        }
    }

    /// Run until cancelled, the consumer is gone, or a permanent error
    /// (sent as the stream's last item).
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

    async fn send_batch(&self, batch: Vec<WatchMessage>) -> bool {
        if batch.is_empty() {
            return true;
        }
        matches!(self.guard(self.tx.send(Ok(batch))).await, Some(Ok(())))
    }

    /// Record a failure and sleep the next backoff delay. False if stopped meanwhile.
    async fn back_off(&mut self, error: String) -> bool {
        let attempt = self.outage.failed();
        warn!(
            prefix = %self.prefix,
            error = %error,
            resume_from = self.mirror.rev() + 1,
            attempt = attempt.number,
            retry_in = ?attempt.delay,
            "watch disconnected"
        );
        self.status.send_replace(WatchStatus::Reconnecting {
            since: attempt.since,
            attempt: attempt.number,
            error,
        });
        self.guard(tokio::time::sleep(attempt.delay))
            .await
            .is_some()
    }

    fn healthy(&mut self, member: u64) {
        debug!(prefix = %self.prefix, from = self.mirror.rev() + 1, member = format_args!("{member:x}"), "watch live");
        if let Some(attempts) = self.outage.ended() {
            info!(
                prefix = %self.prefix,
                revision = self.mirror.rev(),
                attempts,
                member = format_args!("{member:x}"),
                "watch resumed"
            );
        }
        self.status.send_replace(WatchStatus::Live {
            revision: self.mirror.rev(),
            member,
        });
    }

    /// List with retries. `Ok(None)`: stopped.
    async fn list_retrying(&mut self, revision: i64) -> Result<Option<(i64, Vec<Node>)>> {
        loop {
            let r = self
                .guard(list(&self.rpc, &self.prefix, &self.range, revision))
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
        self.mirror.reset(revision, &nodes);
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
                    let why = format!(
                        "etcd answers at revision {at}, behind the {} this watch has applied",
                        self.mirror.rev()
                    );
                    if self.trouble.behind(self.rpc.endpoints().len()) {
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
            .with_start_revision(self.mirror.rev() + 1);
        let rpc = &self.rpc;
        let start = &self.range.0;
        // A healthy member answers a watch at once; do not wait the full
        // request timeout on a frozen one.
        let limit = self.opts.probe_timeout + Duration::from_secs(1);
        let opened = self
            .guard(rpc.call_on("watch", limit, |c| {
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
            Ok(Flow::Reconnect(why)) if !self.trouble.reauthenticating() => {
                self.rpc.pool().avoid(member, "watch", why);
            }
            Ok(Flow::Behind(at)) => {
                let why = format!("at revision {at}, behind {}", self.mirror.rev());
                self.rpc.pool().avoid(member, "watch", &why);
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
                        self.trouble.answered();
                        // The answer to a progress request: where the member
                        // stands. (Only after a quiet liveness window: a
                        // healthy follower has long caught up by then.)
                        if probed && resp.events().is_empty() && !resp.created() {
                            let at = resp.header().map(|h| h.revision()).unwrap_or_default();
                            if at > 0 && at < self.mirror.rev() {
                                return Ok(Flow::Behind(at));
                            }
                            self.trouble.caught_up();
                        }
                        if !resp.events().is_empty() {
                            self.trouble.caught_up();
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
    /// Apply and forward one response's events. False if the consumer is gone.
    async fn apply(&mut self, events: &[etcd_client::Event]) -> bool {
        let changes = Change::from_events(events, self.opts.scope, &self.prefix);
        let (events, moved) = self.mirror.apply(changes);
        let mut batch: Vec<WatchMessage> = events.into_iter().map(WatchMessage::Event).collect();
        if let Some(revision) = moved.filter(|_| self.opts.progress_marks) {
            batch.push(WatchMessage::Progress { revision });
        }
        self.send_batch(batch).await
    }

    /// Re-list and emit the difference; `why` says why the watch cannot
    /// simply resume. False if stopped.
    async fn resync(&mut self, why: &str) -> Result<bool> {
        warn!(
            prefix = %self.prefix,
            needed = self.mirror.rev() + 1,
            "watch cannot resume: {why}; re-listing and sending the difference"
        );
        let Some((revision, nodes)) = self.list_retrying(0).await? else {
            return Ok(false);
        };
        let diff = self.mirror.resync(revision, nodes);
        info!(prefix = %self.prefix, revision, changes = diff.len(), "resynced");
        let mut batch: Vec<WatchMessage> = diff.into_iter().map(WatchMessage::Event).collect();
        if self.opts.progress_marks {
            batch.push(WatchMessage::Progress { revision });
        }
        Ok(self.send_batch(batch).await)
    }

    /// Act on what a failed or cancelled stream means ([`Trouble::judge`]).
    /// `member` is the pool's index of the member that served the stream,
    /// if one did: the one whose token is refreshed.
    async fn failed(&mut self, class: Class, why: String, member: Option<usize>) -> Result<Flow> {
        match self.trouble.judge(class, why, self.prefix.as_str()) {
            Verdict::Reauthenticate(why) => {
                if let Some(i) = member {
                    let refresh = self.rpc.pool().refresh_token(i);
                    if tokio::time::timeout(self.rpc.request_timeout(), refresh)
                        .await
                        .is_err()
                    {
                        debug!(prefix = %self.prefix, "no answer to the token refresh in time");
                    }
                }
                Ok(Flow::Reconnect(why))
            }
            Verdict::Reconnect(why) => Ok(Flow::Reconnect(why)),
            Verdict::Compacted => Ok(Flow::Compacted(0)),
            Verdict::Fatal(e) => Err(e),
        }
    }
}
