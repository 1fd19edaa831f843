//! One lease held for keys, from grant to revoke: the lifecycle a
//! [`Registration`](crate::Registration) (one key) and a
//! [`LeaseGroup`](crate::LeaseGroup) (many keys) share.
//!
//! A [`LeaseHolder`] grants the lease (or adopts a live one its owner
//! found), keeps it alive on a [`Keeper`] stream that moves to another
//! member when it goes silent, notices when etcd says the lease is gone,
//! revokes it on withdrawal or shutdown, and paces its owner's retries
//! with a backoff. It also keeps what its owner wrote under the lease
//! (`W`), and forgets it the moment the lease is lost or revoked: etcd
//! deletes every key of a lease that ends, so an owner cannot go on
//! believing a key is written when its lease is gone. What else a lost
//! lease means (a key watch to reopen, a whole group to write again) is
//! the owner's.
//!
//! An owner's loop waits on [`LeaseHolder::next`] beside its own inputs
//! and hands what it returns to [`LeaseHolder::on`]. The holder adds no
//! timer of its own to the keep-alive path: the keeper's alarm wakes it
//! once per keep-alive (`alarm.rs`), and the retry timer exists only
//! while a retry is due.
//!
//! One policy for when a lease is lost: when etcd says so (a keep-alive
//! answered with TTL 0, or "lease not found" to a keep-alive or a write).
//! A lease unconfirmed for its whole TTL is reported as probably lost
//! ([`LeaseHolder::probably_lost`]), but kept: etcd renews every lease
//! when it elects a leader, so after an outage longer than the TTL the
//! lease, and the keys under it, are usually still there; dropping it then
//! would grant a new lease whose writes conflict with our own old keys
//! until they expire.

use std::time::Duration;

use etcd_client::{LeaseTimeToLiveOptions, LeaseTimeToLiveResponse};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::{Class, Error, Result, classify};
use crate::keep_alive::{self, Keeper, KeeperEvent, Lease};
use crate::lease_options::RegisterOptions;
use crate::node::LeaseId;
use crate::retry::{Backoff, sleep_until_opt};
use crate::rpc::Rpc;

/// What an owner writes under its lease: etcd deletes all of it with the
/// lease, so the holder tells it when the lease is gone.
pub(crate) trait UnderLease {
    /// The lease is gone, and with it every key etcd held under it.
    fn lease_lost(&mut self);
}

/// One write, or none: a registration's single key.
impl<T> UnderLease for Option<T> {
    fn lease_lost(&mut self) {
        *self = None;
    }
}

/// What woke a holder's owner on the holder's side ([`LeaseHolder::next`]).
#[derive(Debug)]
pub(crate) enum LeaseWake {
    /// The keep-alive stream has an answer, or a keep-alive is due.
    KeepAlive(KeeperEvent),
    /// The retry after a failure ([`LeaseHolder::failed`]) is due.
    Retry,
}

/// What a [`LeaseWake`] meant, once the holder acted on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaseNews {
    /// A keep-alive was sent or answered: nothing changed for the owner.
    Quiet,
    /// The keep-alive stream was given up (its member is avoided); the
    /// next [`LeaseHolder::hold`] opens another. The lease itself is fine.
    StreamLost,
    /// etcd says the lease is gone: what was written under it is gone too
    /// (and forgotten); the next [`LeaseHolder::hold`] grants a new one.
    LeaseLost,
    /// The owner's retry is due.
    RetryDue,
}

/// One lease and its keep-alives, for one owner (see the module docs).
pub(crate) struct LeaseHolder<W> {
    /// The request path to etcd.
    rpc: Rpc,
    /// A registration's key, for logs and errors; `None` for a group,
    /// whose lease holds many.
    key: Option<String>,
    /// The lease TTL asked of etcd.
    ttl: Duration,
    /// How often a keep-alive is due (TTL/3 by default).
    interval: Duration,
    /// Adoption is still to be tried: only before the first acquisition
    /// (a lease we lost later is not ours to take back), and only if the
    /// options allow it.
    adopt: bool,
    /// The lease, once granted or adopted.
    lease: Option<Lease>,
    /// The keep-alive stream for `lease`, once open.
    keeper: Option<Keeper>,
    /// What the owner wrote under `lease`; forgotten with it.
    written: W,
    /// Delays between the owner's attempts while etcd refuses or does not
    /// answer; reset after a success.
    backoff: Backoff,
    /// When the owner's next attempt is due after a failure.
    retry_at: Option<Instant>,
}

impl<W: UnderLease> LeaseHolder<W> {
    /// A holder with no lease yet. `key` names a registration's key in
    /// logs and errors (`None` for a group); `written` is what the owner
    /// holds under no lease: nothing.
    pub(crate) fn new(rpc: &Rpc, options: &RegisterOptions, key: Option<&str>, written: W) -> Self {
        Self {
            rpc: rpc.clone(),
            key: key.map(str::to_owned),
            ttl: options.ttl(),
            interval: options.interval(),
            adopt: options.adopt(),
            lease: None,
            keeper: None,
            written,
            backoff: Backoff::for_registration(),
            retry_at: None,
        }
    }

    /// The request path, for the owner's own requests.
    pub(crate) fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// How long one etcd request of the owner's loop may take: at most a
    /// keep-alive interval, so that a frozen member is left in time.
    pub(crate) fn op_limit(&self) -> Duration {
        self.interval.max(Duration::from_secs(1))
    }

    /// How often a keep-alive is due.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// The lease's id, once granted or adopted (0 is "no lease" to etcd).
    pub(crate) fn id(&self) -> Option<i64> {
        self.lease.as_ref().map(|l| l.id)
    }

    /// The TTL etcd granted the lease.
    pub(crate) fn granted(&self) -> Option<Duration> {
        self.lease.as_ref().map(|l| l.granted)
    }

    /// What the owner wrote under the lease.
    pub(crate) fn written(&self) -> &W {
        &self.written
    }

    /// What the owner wrote under the lease, to record a write.
    pub(crate) fn written_mut(&mut self) -> &mut W {
        &mut self.written
    }

    /// A lease is held and its keep-alive stream is open: nothing for
    /// [`LeaseHolder::hold`] to do.
    pub(crate) fn is_live(&self) -> bool {
        self.lease.is_some() && self.keeper.is_some()
    }

    /// No lease, or one unconfirmed for its whole TTL (etcd unreachable
    /// that long): it has probably expired. For the owner's state only:
    /// the holder keeps such a lease until etcd says it is gone.
    pub(crate) fn probably_lost(&self) -> bool {
        self.lease.as_ref().is_none_or(Lease::lapsed)
    }

    /// Whether to look for a live lease to adopt now: true once, before
    /// the first acquisition, if the options allow it. The owner then
    /// finds a candidate its own way and calls [`LeaseHolder::adopt`].
    pub(crate) fn adopting(&mut self) -> bool {
        std::mem::take(&mut self.adopt) && self.lease.is_none()
    }

    /// Take over lease `id` if it is alive, was granted with our TTL, and
    /// `ours` accepts the keys it holds. The keys, if adopted; the owner
    /// then records what it finds written under it.
    pub(crate) async fn adopt(
        &mut self,
        id: i64,
        ours: impl FnOnce(&[Vec<u8>]) -> bool,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let limit = self.op_limit();
        let ttl: LeaseTimeToLiveResponse = self
            .rpc
            .call_within("lease time-to-live", limit, |c| {
                let mut lc = c.lease();
                async move {
                    lc.time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
                        .await
                }
            })
            .await
            .map_err(|e| self.error("lease time-to-live", e))?;
        if ttl.ttl() <= 0 || ttl.granted_ttl() != self.ttl.as_secs() as i64 || !ours(ttl.keys()) {
            return Ok(None);
        }
        self.lease = Some(Lease::confirmed_now(id, ttl.granted_ttl()));
        Ok(Some(ttl.keys().to_vec()))
    }

    /// Make sure a lease is held and kept alive: grant one if there is
    /// none, and open its keep-alive stream if it has none. A lease that
    /// expired while etcd was out of reach is replaced at once.
    pub(crate) async fn hold(&mut self) -> Result<()> {
        if self.lease.is_none() {
            self.grant().await?;
        }
        if self.keeper.is_some() {
            return Ok(());
        }
        match self.open_keeper().await {
            Ok(()) => Ok(()),
            Err(e) if classify(&e) == Class::LeaseNotFound => {
                warn!(
                    key = self.key.as_deref().map(tracing::field::display),
                    "lease expired while etcd was unreachable; granting a new one"
                );
                self.lose();
                self.grant().await?;
                self.open_keeper()
                    .await
                    .map_err(|e| Error::request("keep alive", e))
            }
            Err(e) => Err(Error::request("keep alive", e)),
        }
    }

    /// The lease is gone (etcd said so to one of the owner's writes):
    /// forget it, its stream and what was written under it.
    pub(crate) fn lose(&mut self) {
        self.lease = None;
        self.keeper = None;
        self.written.lease_lost();
    }

    /// The next thing the holder has for its owner: something for the
    /// keep-alive (an answer first, when both are ready), or the retry
    /// due. Never, with neither. Cancel-safe: a `select!` arm beside the
    /// owner's own inputs; act on it with [`LeaseHolder::on`].
    pub(crate) async fn next(&mut self) -> LeaseWake {
        let retry_at = self.retry_at;
        tokio::select! {
            biased;
            ev = keep_alive::next_event(&mut self.keeper) => LeaseWake::KeepAlive(ev),
            _ = sleep_until_opt(retry_at) => LeaseWake::Retry,
        }
    }

    /// Act on what [`LeaseHolder::next`] returned: send the keep-alive
    /// that is due, take an answer, or give up a stream that failed.
    pub(crate) async fn on(&mut self, wake: LeaseWake) -> LeaseNews {
        match wake {
            LeaseWake::Retry => LeaseNews::RetryDue,
            LeaseWake::KeepAlive(KeeperEvent::Due) => self.tick().await,
            LeaseWake::KeepAlive(KeeperEvent::Answer(r)) => self.answered(r),
        }
    }

    /// The owner's attempt succeeded: the next failure starts the backoff
    /// from its shortest delay.
    pub(crate) fn succeeded(&mut self) {
        self.backoff.reset();
        self.retry_at = None;
    }

    /// The owner's attempt failed: its next one is due after the next
    /// backoff delay, which this returns.
    pub(crate) fn failed(&mut self) -> Duration {
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    /// The owner's next attempt is due after `delay`, whatever the
    /// backoff says (a refusal retried at the slowest pace).
    pub(crate) fn retry_in(&mut self, delay: Duration) {
        self.retry_at = Some(Instant::now() + delay);
    }

    /// Revoke the lease: etcd deletes its keys at once. The keep-alives
    /// stop first, so that if the revoke cannot reach etcd the keys still
    /// go within the TTL. Always revoked, however long etcd was away (a
    /// restarted etcd renews every lease, so the keys may well still be
    /// there); a lease etcd no longer knows is fine.
    pub(crate) async fn revoke(&mut self) -> Result<()> {
        self.keeper = None;
        let Some(id) = self.id() else {
            return Ok(());
        };
        let revoked = self
            .rpc
            .call_within("revoke", self.op_limit(), |c| {
                let mut lc = c.lease();
                async move { lc.revoke(id).await }
            })
            .await;
        match revoked {
            Ok(_) => {}
            Err(e) if classify(&e) == Class::LeaseNotFound => {}
            Err(e) => return Err(self.error("revoke lease", e)),
        }
        info!(
            key = self.key.as_deref().map(tracing::field::display),
            lease = %LeaseId(id),
            "lease revoked; its keys are removed"
        );
        self.lose();
        Ok(())
    }

    /// Revoke on the way out, waiting at most about a second: past that,
    /// the keys expire with the TTL.
    pub(crate) async fn release(&mut self) {
        self.keeper = None;
        if self.lease.is_none() {
            return;
        }
        let limit = Duration::from_millis(900).min(self.rpc.request_timeout());
        let key = self.key.clone();
        let key = key.as_deref().map(tracing::field::display);
        match tokio::time::timeout(limit, self.revoke()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(key, error = %e, "could not revoke the lease; its keys expire with its TTL")
            }
            Err(_) => {
                warn!(
                    key,
                    "etcd did not answer the revoke in time; its keys expire with its TTL"
                )
            }
        }
    }

    /// Grant a new lease of our TTL; nothing is written under it yet.
    async fn grant(&mut self) -> Result<()> {
        let ttl = self.ttl.as_secs() as i64;
        let granted = self
            .rpc
            .call_within("grant", self.op_limit(), |c| {
                let mut lc = c.lease();
                async move { lc.grant(ttl, None).await }
            })
            .await
            .map_err(|e| self.error("grant lease", e))?;
        let lease = Lease::confirmed_now(granted.id(), granted.ttl());
        let key = self.key.as_deref().map(tracing::field::display);
        if lease.granted.as_secs() != self.ttl.as_secs() {
            warn!(key, asked = ?self.ttl, granted = ?lease.granted, "etcd granted a different TTL than asked");
        }
        info!(key, lease = %LeaseId(lease.id), ttl = ?lease.granted, "lease granted");
        self.lease = Some(lease);
        self.written.lease_lost();
        Ok(())
    }

    /// Open the keep-alive stream for the lease held (which confirms it).
    async fn open_keeper(&mut self) -> std::result::Result<(), etcd_client::Error> {
        let (limit, interval) = (self.op_limit(), self.interval);
        let Some(lease) = self.lease.as_mut() else {
            return Ok(());
        };
        self.keeper = Some(Keeper::open(&self.rpc, lease, limit, interval).await?);
        Ok(())
    }

    /// Time to send a keep-alive, or to notice the last one went unanswered.
    async fn tick(&mut self) -> LeaseNews {
        let Some(k) = self.keeper.as_mut() else {
            return LeaseNews::Quiet;
        };
        match k.send(self.interval).await {
            Ok(()) => LeaseNews::Quiet,
            Err(dead) => {
                warn!(
                    key = self.key.as_deref().map(tracing::field::display),
                    %dead,
                    "reconnecting the keep-alive to another member"
                );
                self.drop_keeper(dead.why())
            }
        }
    }

    /// An answer on the keep-alive stream (`None`: the stream ended).
    fn answered(
        &mut self,
        r: std::result::Result<Option<(i64, u64)>, etcd_client::Error>,
    ) -> LeaseNews {
        let key = self.key.clone();
        let key = key.as_deref().map(tracing::field::display);
        match r {
            Ok(Some((ttl, member))) if ttl > 0 => {
                if let Some(l) = self.lease.as_mut() {
                    l.confirmed = Instant::now();
                }
                let new = self
                    .keeper
                    .as_mut()
                    .and_then(|k| k.answered(member, self.interval));
                if let Some(member) = new {
                    debug!(
                        key,
                        member = format_args!("{member:x}"),
                        "keep-alive stream live"
                    );
                }
                LeaseNews::Quiet
            }
            Ok(Some(_)) => {
                warn!(key, "lease expired; granting a new one and writing again");
                self.lose();
                LeaseNews::LeaseLost
            }
            Ok(None) => {
                debug!(key, "keep-alive stream ended; reconnecting");
                self.drop_keeper("stream ended")
            }
            Err(e) => {
                warn!(key, error = %e, "keep-alive stream failed; reconnecting");
                self.drop_keeper("stream failed")
            }
        }
    }

    /// Give the keep-alive stream up; the next one goes to another member.
    fn drop_keeper(&mut self, why: &str) -> LeaseNews {
        if let Some(k) = self.keeper.take() {
            k.retire(&self.rpc, why);
        }
        LeaseNews::StreamLost
    }

    /// An etcd error of `op`, naming a registration's key when etcd
    /// refuses it.
    fn error(&self, op: &'static str, e: etcd_client::Error) -> Error {
        match &self.key {
            Some(k) => Error::from_etcd(op, k, e),
            None => Error::request(op, e),
        }
    }
}
