//! The registration's lease: granting or adopting it, and keeping it
//! alive on a stream that moves to another member when it goes silent.

use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, LeaseTimeToLiveOptions};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::actor::Actor;
use crate::error::{Class, Error, Result, classify};
use crate::node::LeaseId;

/// Our lease as we last knew it.
#[derive(Debug)]
pub(super) struct Lease {
    pub(super) id: i64,
    pub(super) granted: Duration,
    /// When etcd last confirmed it alive.
    pub(super) confirmed: Instant,
}
#[derive(Debug)]
pub(super) struct Keeper {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    /// When to send the next keep-alive, or, while one is out, when to
    /// give up waiting for its answer.
    pub(super) next: Instant,
    /// A keep-alive is out and unanswered since then.
    pending: Option<Instant>,
    /// The pool's index of the member this stream lives on.
    conn: usize,
    /// The etcd member that answers this stream, once one has.
    member: Option<u64>,
}

impl Actor {
    /// Time to send a keep-alive, or to notice the last one went unanswered.
    pub(super) async fn tick(&mut self) {
        let interval = self.interval;
        let Some(k) = self.keeper.as_mut() else {
            return;
        };
        if let Some(sent) = k.pending {
            warn!(key = %self.key, waited = ?sent.elapsed(), "keep-alive unanswered; reconnecting to another member");
            self.drop_keeper("unanswered");
            return;
        }
        match k.keeper.keep_alive().await {
            Ok(()) => {
                k.pending = Some(Instant::now());
                // A live member answers in milliseconds; half an interval
                // leaves the rest of the lease to find another one.
                k.next = Instant::now() + interval / 2;
            }
            Err(e) => {
                warn!(key = %self.key, error = %e, "keep-alive stream broken; reconnecting");
                self.drop_keeper("stream broken");
            }
        }
    }

    pub(super) fn on_keep_alive(
        &mut self,
        r: std::result::Result<Option<(i64, u64)>, etcd_client::Error>,
    ) {
        match r {
            Ok(Some((ttl, member))) if ttl > 0 => {
                let interval = self.interval;
                if let Some(k) = self.keeper.as_mut() {
                    if let Some(sent) = k.pending.take() {
                        k.next = sent + interval;
                    }
                    if k.member != Some(member) {
                        k.member = Some(member);
                        debug!(key = %self.key, member = format_args!("{member:x}"), "keep-alive stream live");
                    }
                }
                if let Some(l) = self.lease.as_mut() {
                    l.confirmed = Instant::now();
                }
            }
            Ok(Some(_)) => {
                warn!(key = %self.key, "lease expired; granting a new one and registering again");
                self.lose_lease();
            }
            Ok(None) => {
                debug!(key = %self.key, "keep-alive stream ended; reconnecting");
                self.drop_keeper("stream ended");
            }
            Err(e) => {
                warn!(key = %self.key, error = %e, "keep-alive stream failed; reconnecting");
                self.drop_keeper("stream failed");
            }
        }
    }

    /// Close the keep-alive stream after it failed; the next one goes to
    /// another member.
    pub(super) fn drop_keeper(&mut self, why: &str) {
        if let Some(k) = self.keeper.take() {
            self.client.pool().avoid(k.conn, "keep alive", why);
        }
    }

    pub(super) fn lose_lease(&mut self) {
        self.lease = None;
        self.keeper = None;
        self.key_watch = None;
        self.written = None;
    }

    /// Get a lease for `value`: adopt a matching live one, or grant and write.
    pub(super) async fn acquire(&mut self, value: &[u8]) -> Result<()> {
        if self.adopt {
            // Only the first time: after that, a lease we lost is not ours to adopt.
            self.adopt = false;
            if self.try_adopt(value).await? {
                return Ok(());
            }
        }
        let ttl = self.ttl.as_secs() as i64;
        let granted = self
            .client
            .call_within("grant", self.op_limit(), |c| {
                let mut lc = c.lease();
                async move { lc.grant(ttl, None).await }
            })
            .await
            .map_err(|e| Error::from_etcd("grant lease", &self.key, e))?;
        if granted.ttl() != ttl {
            warn!(key = %self.key, asked = ttl, granted = granted.ttl(), "etcd granted a different TTL than asked");
        }
        self.lease = Some(Lease {
            id: granted.id(),
            granted: Duration::from_secs(granted.ttl().max(1) as u64),
            confirmed: Instant::now(),
        });
        self.written = None;
        Ok(())
    }

    pub(super) async fn try_adopt(&mut self, value: &[u8]) -> Result<bool> {
        let got = self
            .client
            .call_within("get", self.op_limit(), |c| {
                let (mut kv, key) = (c.kv(), self.key.clone());
                async move { kv.get(key, None).await }
            })
            .await
            .map_err(|e| Error::from_etcd("get", &self.key, e))?;
        let Some(existing) = got.kvs().first() else {
            return Ok(false);
        };
        if existing.value() != value || existing.lease() == 0 {
            return Ok(false);
        }
        let id = existing.lease();
        let ttl = self
            .client
            .call_within("lease time-to-live", self.op_limit(), |c| {
                let mut lc = c.lease();
                async move {
                    lc.time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
                        .await
                }
            })
            .await
            .map_err(|e| Error::from_etcd("lease time-to-live", &self.key, e))?;
        let only_ours = ttl.keys().len() == 1 && ttl.keys()[0] == self.key.as_bytes();
        if ttl.ttl() <= 0 || !only_ours || ttl.granted_ttl() != self.ttl.as_secs() as i64 {
            return Ok(false);
        }
        info!(key = %self.key, lease = %LeaseId(existing.lease()), "adopting the live lease that already holds this value");
        self.lease = Some(Lease {
            id: existing.lease(),
            granted: Duration::from_secs(ttl.granted_ttl().max(1) as u64),
            confirmed: Instant::now(),
        });
        self.written = Some((value.to_vec(), existing.mod_revision()));
        Ok(true)
    }

    pub(super) async fn open_keeper(&mut self) -> std::result::Result<(), etcd_client::Error> {
        let limit = self.op_limit();
        let Some(lease) = self.lease.as_mut() else {
            return Ok(());
        };
        let id = lease.id;
        let client = &self.client;
        let ((keeper, stream), conn) = client
            .call_on("keep alive", limit, |c| {
                let mut lc = c.lease();
                async move { lc.keep_alive(id).await }
            })
            .await?;
        lease.confirmed = Instant::now();
        self.keeper = Some(Keeper {
            keeper,
            stream,
            next: Instant::now() + self.interval,
            pending: None,
            conn,
            member: None,
        });
        Ok(())
    }

    pub(super) async fn revoke(&mut self) -> Result<()> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        let id = lease.id;
        let revoked = self
            .client
            .call_within("revoke", self.op_limit(), |c| {
                let mut lc = c.lease();
                async move { lc.revoke(id).await }
            })
            .await;
        match revoked {
            Ok(_) => {}
            Err(e) if classify(&e) == Class::LeaseNotFound => {}
            Err(e) => return Err(Error::from_etcd("revoke lease", &self.key, e)),
        }
        info!(key = %self.key, lease = %LeaseId(id), "lease revoked; key removed");
        self.lose_lease();
        Ok(())
    }
}

pub(super) fn lease_error(op: &'static str, e: etcd_client::Error) -> Error {
    Error::request(op, e)
}
/// The next keep-alive answer: the TTL left, and the member that answered.
pub(super) async fn next_keep_alive(
    k: &mut Option<Keeper>,
) -> std::result::Result<Option<(i64, u64)>, etcd_client::Error> {
    match k {
        Some(k) => k.stream.message().await.map(|r| {
            r.map(|r| {
                let member = r.header().map(|h| h.member_id()).unwrap_or_default();
                (r.ttl(), member)
            })
        }),
        None => std::future::pending().await,
    }
}
