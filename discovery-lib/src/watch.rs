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

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use etcd_client::{EventType, GetOptions};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::Client;
use crate::error::{Class, Error, Result, chain, classify, classify_cancel};
use crate::key::Prefix;
use crate::node::{Action, Event, Node, Snapshot, WatchMessage};
use crate::retry::Backoff;

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

/// How a stream ended.
enum Flow {
    /// Resume from `rev + 1` after backing off.
    Reconnect(String),
    /// etcd compacted history past `rev`: re-list and diff.
    Compacted(i64),
    /// Cancelled or the consumer went away.
    Stop,
}

struct Engine {
    client: Client,
    prefix: Prefix,
    range: (Vec<u8>, Vec<u8>),
    opts: WatchOptions,
    tx: mpsc::Sender<Result<Vec<WatchMessage>>>,
    status: watch::Sender<WatchStatus>,
    cancel: CancellationToken,
    /// Unordered: every event looks a key up; only a resync needs the
    /// keys in order, and sorts them then.
    state: HashMap<Bytes, Node>,
    rev: i64,
    backoff: Backoff,
    down_since: Option<SystemTime>,
    attempt: u32,
    /// The token was refreshed after a permission refusal and no stream has
    /// worked since: a second refusal is real.
    reauthenticated: bool,
}

impl Engine {
    async fn run(mut self) {
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
    async fn list_retrying(&mut self, revision: i64) -> Result<Option<(i64, Vec<Node>)>> {
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
                    if !self.resync(compacted).await? {
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
        if let Ok(Flow::Reconnect(why)) = &flow {
            if !self.reauthenticated {
                self.client.pool().avoid(member, "watch", why);
            }
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
                        probing = false;
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

    /// What a failed or cancelled stream means, and what to do about it:
    /// the one policy for every watch of this crate (the registration's
    /// watch on its own key is one too). `member` is the pool's index of
    /// the member that served the stream, if one did.
    async fn failed(&mut self, class: Class, why: String, member: Option<usize>) -> Result<Flow> {
        match class {
            // etcd forgot our token (a restart, or its TTL): a fresh one,
            // then the same member again, as often as it takes (the
            // reconnect is backed off).
            Class::StaleToken => {
                self.refresh_token(member).await;
                Ok(Flow::Reconnect(format!("{why}; authenticated again")))
            }
            // etcd 3.4 refuses a watch made with a forgotten token as it
            // refuses one the user may not make: once more with a fresh
            // token; a second refusal with no working stream between is real.
            Class::PermissionDenied if !self.reauthenticated => {
                self.refresh_token(member).await;
                Ok(Flow::Reconnect(format!("{why}; authenticated again")))
            }
            Class::PermissionDenied => Err(Error::PermissionDenied {
                op: "watch",
                key: self.prefix.to_string(),
                reason: why,
            }),
            Class::Unauthenticated | Class::Fatal | Class::FutureRevision => {
                Err(Error::request("watch", etcd_client::Error::WatchError(why)))
            }
            // etcd may refuse the start revision this way rather than with
            // a compact_revision in a response: the same resync applies.
            Class::Compacted => Ok(Flow::Compacted(0)),
            Class::Unavailable | Class::Transient | Class::LeaseNotFound => {
                Ok(Flow::Reconnect(why))
            }
        }
    }

    async fn refresh_token(&mut self, member: Option<usize>) {
        self.reauthenticated = true;
        if let Some(i) = member {
            let refresh = self.client.pool().refresh_token(i);
            if tokio::time::timeout(self.client.request_timeout(), refresh)
                .await
                .is_err()
            {
                debug!(prefix = %self.prefix, "no answer to the token refresh in time");
            }
        }
    }

    /// Apply and forward one response's events. False if the consumer is gone.
    async fn apply(&mut self, events: &[etcd_client::Event]) -> bool {
        // Everything at or below `floor` was delivered before: a resumed
        // stream never repeats it, even if etcd were to resend it.
        let floor = self.rev;
        let mut top = floor;
        let mut batch = Vec::with_capacity(events.len() + 1);
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            let revision = kv.mod_revision();
            if revision <= floor || !self.prefix_covers(kv.key()) {
                continue;
            }
            top = top.max(revision);
            // etcd's mvccpb.Event.EventType has exactly PUT (0) and DELETE (1);
            // `event_type` panics only on a value no etcd server sends.
            let event = match ev.event_type() {
                EventType::Put => {
                    let node = Node::from_kv(kv);
                    let prev = self.state.insert(node.key.clone(), node.clone());
                    let action = match &prev {
                        Some(p) if p.value == node.value => Action::Update,
                        _ => Action::Set,
                    };
                    Event {
                        action,
                        revision,
                        node,
                        prev,
                        resync: false,
                    }
                }
                EventType::Delete => {
                    let prev = self.state.remove(kv.key());
                    Event {
                        action: Action::Delete,
                        revision,
                        node: deleted(Bytes::copy_from_slice(kv.key()), revision),
                        prev,
                        resync: false,
                    }
                }
            };
            batch.push(WatchMessage::Event(event));
        }
        let advanced = top > floor;
        self.rev = top;
        if advanced && self.opts.progress_marks {
            batch.push(WatchMessage::Progress { revision: top });
        }
        self.send_batch(batch).await
    }

    fn prefix_covers(&self, key: &[u8]) -> bool {
        self.opts.scope.covers(&self.prefix, key)
    }

    /// Re-list and emit the difference. False if stopped.
    async fn resync(&mut self, compacted: i64) -> Result<bool> {
        warn!(
            prefix = %self.prefix,
            needed = self.rev + 1,
            compacted,
            "watch history was compacted; re-listing and sending the difference"
        );
        let Some((revision, nodes)) = self.list_retrying(0).await? else {
            return Ok(false);
        };
        let fresh: HashMap<Bytes, Node> = nodes.into_iter().map(|n| (n.key.clone(), n)).collect();
        let old = std::mem::take(&mut self.state);
        let keys: BTreeSet<&Bytes> = old.keys().chain(fresh.keys()).collect();
        let mut diff = Vec::new();
        for k in keys {
            let event = match (old.get(k), fresh.get(k)) {
                (Some(o), None) => Event {
                    action: Action::Delete,
                    revision,
                    node: deleted(k.clone(), revision),
                    prev: Some(o.clone()),
                    resync: true,
                },
                (None, Some(n)) => Event {
                    action: Action::Set,
                    revision,
                    node: n.clone(),
                    prev: None,
                    resync: true,
                },
                (Some(o), Some(n)) if o.value != n.value => Event {
                    action: Action::Set,
                    revision,
                    node: n.clone(),
                    prev: Some(o.clone()),
                    resync: true,
                },
                _ => continue,
            };
            diff.push(event);
        }
        self.state = fresh;
        self.rev = revision;
        info!(prefix = %self.prefix, revision, changes = diff.len(), "resynced after compaction");
        let mut batch: Vec<WatchMessage> = diff.into_iter().map(WatchMessage::Event).collect();
        if self.opts.progress_marks {
            batch.push(WatchMessage::Progress { revision });
        }
        Ok(self.send_batch(batch).await)
    }
}

fn deleted(key: Bytes, revision: i64) -> Node {
    Node {
        key,
        value: Bytes::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        lease: 0,
    }
}
