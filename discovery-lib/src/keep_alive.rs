//! One lease kept alive: the lease as etcd last confirmed it, and its
//! keep-alive stream, which is given up (and its member avoided) when a
//! keep-alive goes unanswered, so the next one opens on another member.
//!
//! The stream under the one [`LeaseHolder`](crate::lease_holder::LeaseHolder)
//! that a single [`Registration`](crate::Registration) and a
//! [`LeaseGroup`](crate::LeaseGroup) both hold the lease with.

use std::fmt;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::time::Instant;

use crate::alarm::Alarm;
use crate::rpc::Rpc;

/// A lease as we last knew it.
#[derive(Debug)]
pub(crate) struct Lease {
    /// etcd's id of the lease, which every key under it carries.
    pub(crate) id: i64,
    /// The TTL etcd granted.
    pub(crate) granted: Duration,
    /// When etcd last confirmed it alive.
    pub(crate) confirmed: Instant,
}

impl Lease {
    /// A lease etcd has just confirmed, granted with `ttl` seconds.
    pub(crate) fn confirmed_now(id: i64, ttl: i64) -> Self {
        Self {
            id,
            granted: Duration::from_secs(ttl.max(1) as u64),
            confirmed: Instant::now(),
        }
    }

    /// Unconfirmed for its whole TTL: gone, whatever etcd says later.
    pub(crate) fn lapsed(&self) -> bool {
        self.confirmed.elapsed() >= self.granted
    }
}

/// Why a keep-alive stream was given up.
#[derive(Debug)]
pub(crate) enum Dead {
    /// The last keep-alive went unanswered for this long.
    Unanswered(Duration),
    /// The stream refused the keep-alive.
    Broken(etcd_client::Error),
}

impl Dead {
    /// A word for the pool's log of avoided members.
    pub(crate) fn why(&self) -> &'static str {
        match self {
            Dead::Unanswered(_) => "unanswered",
            Dead::Broken(_) => "stream broken",
        }
    }
}

impl fmt::Display for Dead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dead::Unanswered(waited) => write!(f, "keep-alive unanswered after {waited:?}"),
            Dead::Broken(e) => write!(f, "keep-alive stream broken: {e}"),
        }
    }
}

/// The keep-alive stream of one lease.
#[derive(Debug)]
pub(crate) struct Keeper {
    /// Where keep-alives are sent.
    keeper: LeaseKeeper,
    /// Where etcd's answers arrive: the TTL left, and the member's id.
    stream: LeaseKeepAliveStream,
    /// When to send the next keep-alive, or, while one is out, when to
    /// give up waiting for its answer.
    next: Instant,
    /// A keep-alive is out and unanswered since then.
    pending: Option<Instant>,
    /// The pool's index of the member this stream lives on.
    conn: usize,
    /// The etcd member that answers this stream, once one has.
    member: Option<u64>,
    /// What wakes the owner when `next` comes.
    alarm: Alarm,
}

impl Keeper {
    /// Open a stream for `lease` (within `limit`); the first keep-alive is
    /// due `interval` from now. Opening confirms the lease.
    pub(crate) async fn open(
        rpc: &Rpc,
        lease: &mut Lease,
        limit: Duration,
        interval: Duration,
    ) -> Result<Self, etcd_client::Error> {
        let id = lease.id;
        let ((keeper, stream), conn) = rpc
            .call_on("keep alive", limit, |c| {
                let mut lc = c.lease();
                async move { lc.keep_alive(id).await }
            })
            .await?;
        lease.confirmed = Instant::now();
        Ok(Self {
            keeper,
            stream,
            next: Instant::now() + interval,
            pending: None,
            conn,
            member: None,
            alarm: Alarm::default(),
        })
    }

    /// Send the keep-alive that is due, or find that the last one went
    /// unanswered (then the stream is dead: [`Keeper::retire`] it).
    pub(crate) async fn send(&mut self, interval: Duration) -> Result<(), Dead> {
        if let Some(sent) = self.pending {
            return Err(Dead::Unanswered(sent.elapsed()));
        }
        self.keeper.keep_alive().await.map_err(Dead::Broken)?;
        self.pending = Some(Instant::now());
        // A live member answers in milliseconds; half an interval leaves
        // the rest of the lease to find another one.
        self.next = Instant::now() + interval / 2;
        Ok(())
    }

    /// A live answer from `member`: the next keep-alive is due an interval
    /// after the one answered. The member, if it is a new one.
    pub(crate) fn answered(&mut self, member: u64, interval: Duration) -> Option<u64> {
        if let Some(sent) = self.pending.take() {
            self.next = sent + interval;
        }
        (self.member != Some(member)).then(|| {
            self.member = Some(member);
            member
        })
    }

    /// Give the stream up; the pool avoids its member for the next one.
    pub(crate) fn retire(self, rpc: &Rpc, why: &str) {
        rpc.pool().avoid(self.conn, "keep alive", why);
    }
}

/// What a keep-alive stream has for its owner.
#[derive(Debug)]
pub(crate) enum KeeperEvent {
    /// An answer on the stream: the TTL left and the member that answered;
    /// `None` when the stream ended.
    Answer(Result<Option<(i64, u64)>, etcd_client::Error>),
    /// [`Keeper::send`] is due.
    Due,
}

/// The next thing `k` has for its owner: an answer, or a keep-alive due
/// (an answer first, when both are ready). Never, without a stream.
/// Cancel-safe.
pub(crate) async fn next_event(k: &mut Option<Keeper>) -> KeeperEvent {
    let Some(k) = k else {
        return std::future::pending().await;
    };
    let next = k.next;
    tokio::select! {
        biased;
        r = k.stream.message() => KeeperEvent::Answer(r.map(|r| {
            r.map(|r| {
                let member = r.header().map(|h| h.member_id()).unwrap_or_default();
                (r.ttl(), member)
            })
        })),
        _ = k.alarm.until(next) => KeeperEvent::Due,
    }
}
