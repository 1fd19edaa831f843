//! The registration actor: one task per [`Registration`](super::Registration)
//! that converges etcd to what its handle wants. This file holds its loop,
//! its writes and its watch on its own key; `lease.rs` holds the lease and
//! its keep-alives.

use std::time::{Duration, SystemTime};

use etcd_client::PutOptions;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::lease::lease_error;
use super::{Desired, KEY_WATCH_IDLE, RegistrationState};
use crate::client::Client;
use crate::error::{Class, Error, Result, classify};
use crate::keep_alive::{self, Keeper, KeeperEvent, Lease};
use crate::node::{Action, LeaseId, WatchMessage};
use crate::retry::{Backoff, sleep_until_opt};
use crate::watch::{Scope, WatchOptions, WatchStream};

/// The background task behind a [`Registration`](super::Registration): it
/// converges etcd to what the handle asks for and reports where it stands.
pub(super) struct Actor {
    /// The request path to etcd.
    pub(super) client: Client,
    /// The key we keep.
    pub(super) key: String,
    /// The lease TTL we ask for.
    pub(super) ttl: Duration,
    /// How often a keep-alive is due (TTL/3 by default).
    pub(super) interval: Duration,
    /// Look for a live lease already holding our value before granting a
    /// new one (a restarted sidekick is silent); true only until the first
    /// acquire.
    pub(super) adopt: bool,
    /// What the handle wants: a value, nothing, or to stop.
    pub(super) desired: watch::Receiver<Desired>,
    /// Where we stand, for the handle.
    pub(super) state: watch::Sender<RegistrationState>,
    /// The lease we hold, if any.
    pub(super) lease: Option<Lease>,
    /// The value we wrote under `lease`, and the revision of that write.
    pub(super) written: Option<(Vec<u8>, i64)>,
    /// The keep-alive stream for `lease`, once open.
    pub(super) keeper: Option<Keeper>,
    /// A watch on our own key from the revision we wrote it at: a safety
    /// net that sees a delete or another writer behind our back. The same
    /// engine as every prefix watch (`Scope::Key`), so a cancel, a stale
    /// token or a compaction means the same thing here as everywhere.
    pub(super) key_watch: Option<WatchStream>,
    /// When the key watch may be opened again after it failed or was
    /// cancelled: it is a safety net, never worth a busy loop.
    pub(super) key_watch_retry: Option<Instant>,
    /// Delays between attempts while etcd refuses or does not answer.
    pub(super) backoff: Backoff,
    /// When the next attempt is due after a failure.
    pub(super) retry_at: Option<Instant>,
    /// Since when attempts have failed, for the state we report.
    pub(super) failing_since: Option<SystemTime>,
}

/// What woke the actor.
enum Wake {
    Desired,
    Tick,
    KeepAlive(std::result::Result<Option<(i64, u64)>, etcd_client::Error>),
    KeyEvent(Option<Result<WatchMessage>>),
    Retry,
}

impl Actor {
    pub(super) async fn run(mut self) {
        loop {
            let desired = self.desired.borrow_and_update().clone();
            if desired == Desired::Shutdown {
                self.shutdown().await;
                return;
            }
            let step = match &desired {
                Desired::Value(v) => self.ensure_registered(v).await,
                Desired::Withdrawn => self.ensure_withdrawn().await,
                Desired::Shutdown => Ok(()),
            };
            match step {
                Ok(()) => {
                    self.backoff.reset();
                    self.retry_at = None;
                    self.failing_since = None;
                }
                Err(e) => self.failed(e),
            }
            match self.wait().await {
                Wake::Desired | Wake::Retry => {}
                Wake::Tick => self.tick().await,
                Wake::KeepAlive(r) => self.on_keep_alive(r),
                Wake::KeyEvent(r) => self.on_key_event(r),
            }
        }
    }

    /// How long one etcd request of this loop may take: at most a
    /// keep-alive interval, so that a frozen member is left in time.
    pub(super) fn op_limit(&self) -> Duration {
        self.interval.max(Duration::from_secs(1))
    }

    fn failed(&mut self, e: Error) {
        if !e.is_transient() {
            warn!(key = %self.key, error = %e, "etcd refuses the registration");
            // Retry at the slowest pace: someone may fix the permissions.
            let mut slow = Backoff::for_watch();
            let delay = (0..8).map(|_| slow.next_delay()).last().unwrap_or_default();
            self.retry_at = Some(Instant::now() + delay);
            self.state.send_replace(RegistrationState::Refused {
                error: e.to_string(),
            });
            return;
        }
        let since = *self.failing_since.get_or_insert_with(SystemTime::now);
        let lease_lost = match &self.lease {
            Some(l) => l.lapsed(),
            None => true,
        };
        let delay = self.backoff.next_delay();
        warn!(key = %self.key, error = %e, retry_in = ?delay, lease_lost, "registration not confirmed; retrying");
        self.retry_at = Some(Instant::now() + delay);
        self.state.send_replace(RegistrationState::Retrying {
            since,
            error: e.to_string(),
            lease_lost,
        });
    }

    async fn wait(&mut self) -> Wake {
        let retry_at = self.retry_at;
        tokio::select! {
            biased;
            r = self.desired.changed() => {
                if r.is_err() {
                    // Every handle is gone: treat as a shutdown request.
                    self.desired = watch::channel(Desired::Shutdown).1;
                }
                Wake::Desired
            }
            // Keep-alives before the key watch: nothing it does may delay them.
            ev = keep_alive::next_event(&mut self.keeper) => match ev {
                KeeperEvent::Answer(r) => Wake::KeepAlive(r),
                KeeperEvent::Due => Wake::Tick,
            },
            r = next_key_event(&mut self.key_watch) => Wake::KeyEvent(r),
            _ = sleep_until_opt(retry_at) => Wake::Retry,
        }
    }

    fn on_key_event(&mut self, msg: Option<Result<WatchMessage>>) {
        let our_lease = self.lease.as_ref().map(|l| l.id);
        // The node the message says holds our key now, if any.
        let (present, lease) = match msg {
            Some(Ok(WatchMessage::Snapshot(s))) => match s.nodes().first() {
                Some(n) => (true, n.lease),
                None => (false, 0),
            },
            Some(Ok(WatchMessage::Event(e))) => (e.action() != Action::Delete, e.node().lease),
            Some(Ok(_)) => return,
            // A permanent error, or the engine stopped: a safety net only,
            // so reopen it after an interval.
            Some(Err(e)) => {
                self.key_watch_failed(&e.to_string());
                return;
            }
            None => {
                self.key_watch_failed("the watch ended");
                return;
            }
        };
        if !present {
            if self.written.take().is_some() {
                warn!(key = %self.key, "the key was deleted behind our back; writing it again");
            }
            self.key_watch = None;
        } else if Some(lease) != our_lease {
            warn!(
                key = %self.key,
                lease = %LeaseId(lease),
                "another writer replaced the key; leaving it (our lease stays alive)"
            );
        }
    }

    async fn ensure_registered(&mut self, value: &[u8]) -> Result<()> {
        if self.lease.is_none() {
            self.acquire(value).await?;
        }
        if self.keeper.is_none() {
            if let Err(e) = self.open_keeper().await {
                if classify(&e) == Class::LeaseNotFound {
                    warn!(key = %self.key, "lease expired while etcd was unreachable; granting a new one");
                    self.lose_lease();
                    self.acquire(value).await?;
                    self.open_keeper()
                        .await
                        .map_err(|e| lease_error("keep alive", e))?;
                } else {
                    return Err(lease_error("keep alive", e));
                }
            }
        }
        let current = self.written.as_ref().map(|(v, _)| v.as_slice());
        if current != Some(value) {
            let lease_id = self.lease.as_ref().map(|l| l.id).unwrap_or_default();
            let rev = match self.put(value, lease_id).await {
                Ok(rev) => rev,
                Err(e) if classify(&e) == Class::LeaseNotFound => {
                    // Expired or revoked behind our back: a new lease, at once.
                    warn!(key = %self.key, "lease gone; granting a new one");
                    self.lose_lease();
                    self.acquire(value).await?;
                    self.open_keeper()
                        .await
                        .map_err(|e| lease_error("keep alive", e))?;
                    let lease_id = self.lease.as_ref().map(|l| l.id).unwrap_or_default();
                    self.put(value, lease_id)
                        .await
                        .map_err(|e| Error::from_etcd("put", &self.key, e))?
                }
                Err(e) => return Err(Error::from_etcd("put", &self.key, e)),
            };
            self.written = Some((value.to_vec(), rev));
            self.key_watch = None;
        }
        if self.key_watch.is_none() {
            let written = self.written.as_ref().map(|(_, r)| *r).unwrap_or_default();
            self.open_key_watch(written);
        }
        self.publish_registered(value);
        Ok(())
    }

    fn publish_registered(&mut self, value: &[u8]) {
        let (Some(lease), Some((_, revision))) = (&self.lease, &self.written) else {
            return;
        };
        let state = RegistrationState::Registered {
            lease: LeaseId(lease.id),
            ttl: lease.granted,
            revision: *revision,
            value: value.to_vec(),
        };
        let changed = self.state.send_if_modified(|s| {
            if *s == state {
                false
            } else {
                *s = state.clone();
                true
            }
        });
        if changed {
            info!(
                key = %self.key,
                value = %String::from_utf8_lossy(value),
                lease = %LeaseId(lease.id),
                ttl = ?lease.granted,
                revision,
                "registered"
            );
        }
    }

    /// Watch our key from the revision after `written` (the snapshot is
    /// the key as we wrote it; events follow).
    fn open_key_watch(&mut self, written: i64) {
        if self.key_watch_retry.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let mut opts = WatchOptions::new()
            .with_start_revision(written)
            // No progress probes: the keep-alives already notice a frozen
            // member, and a probe every few seconds per registration would
            // cost more than the keep-alives themselves.
            .with_liveness(KEY_WATCH_IDLE, self.op_limit())
            .with_buffer(4);
        opts.scope = Scope::Key;
        match self.client.watch_prefix(&self.key, opts) {
            Ok((_handle, stream)) => {
                self.key_watch = Some(stream);
                self.key_watch_retry = None;
            }
            Err(e) => self.key_watch_failed(&e.to_string()),
        }
    }

    /// Drop the key watch; the next attempt waits an interval.
    fn key_watch_failed(&mut self, why: &str) {
        debug!(key = %self.key, why, "no watch on our own key; trying again in an interval");
        self.key_watch = None;
        self.key_watch_retry = Some(Instant::now() + self.interval);
    }

    async fn put(&self, value: &[u8], lease: i64) -> std::result::Result<i64, etcd_client::Error> {
        let resp = self
            .client
            .call_within("put", self.op_limit(), |c| {
                let (mut kv, key, value) = (c.kv(), self.key.clone(), value.to_vec());
                async move {
                    kv.put(key, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    async fn ensure_withdrawn(&mut self) -> Result<()> {
        // Stop heart-beating first: if the revoke cannot reach etcd, the
        // key still goes away within the TTL.
        self.keeper = None;
        self.key_watch = None;
        // Always revoke, however long etcd was away: a restarted etcd renews
        // every lease, so the key may well still be there. An expired lease
        // answers "not found", which is fine.
        self.revoke().await?;
        if *self.state.borrow() != RegistrationState::Withdrawn {
            self.state.send_replace(RegistrationState::Withdrawn);
        }
        Ok(())
    }

    async fn shutdown(&mut self) {
        self.keeper = None;
        self.key_watch = None;
        if self.lease.is_some() {
            let limit = Duration::from_millis(900).min(self.client.request_timeout());
            match tokio::time::timeout(limit, self.revoke()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(key = %self.key, error = %e, "could not revoke the lease; the key expires with its TTL")
                }
                Err(_) => {
                    warn!(key = %self.key, "etcd did not answer the revoke in time; the key expires with its TTL")
                }
            }
        }
        self.state.send_replace(RegistrationState::Stopped);
    }
}

async fn next_key_event(w: &mut Option<WatchStream>) -> Option<Result<WatchMessage>> {
    match w {
        Some(w) => w.recv().await,
        None => std::future::pending().await,
    }
}
