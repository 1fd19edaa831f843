//! The registration actor: one task per [`Registration`](super::Registration)
//! that converges etcd to what its handle wants. Its loop, its write, its
//! adoption of a live lease and its watch on its own key; the lease itself
//! (grant, keep-alives, loss, revoke, retry pacing) is its
//! [`LeaseHolder`]'s.

use std::time::{Duration, SystemTime};

use etcd_client::PutOptions;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::handle::{Desired, RegistrationState};
use crate::error::{Class, Error, Result, classify};
use crate::lease_holder::{LeaseHolder, LeaseNews, LeaseWake};
use crate::lease_options::RegisterOptions;
use crate::node::{Action, LeaseId, WatchMessage};
use crate::retry::Backoff;
use crate::rpc::Rpc;
use crate::watch::{Scope, WatchOptions, WatchStream};

/// The key watch asks etcd for progress only after this long without a
/// message: in effect never (see [`Actor::open_key_watch`]).
const KEY_WATCH_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Our one write under the lease.
#[derive(Debug)]
pub(super) struct Put {
    /// The value written.
    value: Vec<u8>,
    /// The revision of the write (or of the adopted key's last write).
    revision: i64,
}

/// The background task behind a [`Registration`](super::Registration): it
/// converges etcd to what the handle asks for and reports where it stands.
pub(super) struct Actor {
    /// The key we keep.
    key: String,
    /// What the handle wants: a value, nothing, or to stop.
    desired: watch::Receiver<Desired>,
    /// Where we stand, for the handle.
    state: watch::Sender<RegistrationState>,
    /// The lease, its keep-alives and retry pacing, and our write under it
    /// (forgotten with the lease).
    lease: LeaseHolder<Option<Put>>,
    /// A watch on our own key from the revision we wrote it at: a safety
    /// net that sees a delete or another writer behind our back. The same
    /// engine as every prefix watch (`Scope::Key`), so a cancel, a stale
    /// token or a compaction means the same thing here as everywhere.
    key_watch: Option<WatchStream>,
    /// When the key watch may be opened again after it failed or was
    /// cancelled: it is a safety net, never worth a busy loop.
    key_watch_retry: Option<Instant>,
    /// Since when attempts have failed, for the state we report.
    failing_since: Option<SystemTime>,
}

/// What woke the actor.
enum Wake {
    /// The handle wants something else (or is gone).
    Desired,
    /// The lease holder has something: a keep-alive, or the retry due.
    Lease(LeaseWake),
    /// The watch on our own key has a message, or ended (`None`).
    KeyEvent(Option<Result<WatchMessage>>),
}

impl Actor {
    /// The actor for `key`, starting with no lease.
    pub(super) fn new(
        rpc: &Rpc,
        key: &str,
        options: &RegisterOptions,
        desired: watch::Receiver<Desired>,
        state: watch::Sender<RegistrationState>,
    ) -> Self {
        Self {
            key: key.to_owned(),
            desired,
            state,
            lease: LeaseHolder::new(rpc, options, Some(key), None),
            key_watch: None,
            key_watch_retry: None,
            failing_since: None,
        }
    }

    /// Converge, wait for something to change, and again, until the handle
    /// asks to stop.
    pub(super) async fn run(mut self) {
        loop {
            let desired = self.desired.borrow_and_update().clone();
            let step = match &desired {
                Desired::Value(v) => self.ensure_registered(v).await,
                Desired::Withdrawn => self.ensure_withdrawn().await,
                Desired::Shutdown => {
                    self.shutdown().await;
                    return;
                }
            };
            match step {
                Ok(()) => {
                    self.lease.succeeded();
                    self.failing_since = None;
                }
                Err(e) => self.failed(e),
            }
            match self.wait().await {
                Wake::Desired => {}
                Wake::Lease(wake) => match self.lease.on(wake).await {
                    LeaseNews::Quiet | LeaseNews::RetryDue => {}
                    // The key watch is reopened too: it has no liveness
                    // probe of its own (it is quiet by design), and a member
                    // that stopped answering keep-alives may hold it as well.
                    // After a lost lease, the key is written again and watched
                    // from that write.
                    LeaseNews::StreamLost | LeaseNews::LeaseLost => self.key_watch = None,
                },
                Wake::KeyEvent(r) => self.on_key_event(r),
            }
        }
    }

    /// Report a failed step and schedule the next try.
    fn failed(&mut self, e: Error) {
        if !e.is_transient() {
            warn!(key = %self.key, error = %e, "etcd refuses the registration");
            // Retry at the slowest pace: someone may fix the permissions.
            let mut slow = Backoff::for_watch();
            let delay = (0..8).map(|_| slow.next_delay()).last().unwrap_or_default();
            self.lease.retry_in(delay);
            self.state.send_replace(RegistrationState::Refused {
                error: e.to_string(),
            });
            return;
        }
        let since = *self.failing_since.get_or_insert_with(SystemTime::now);
        let lease_lost = self.lease.probably_lost();
        let delay = self.lease.failed();
        warn!(key = %self.key, error = %e, retry_in = ?delay, lease_lost, "registration not confirmed; retrying");
        self.state.send_replace(RegistrationState::Retrying {
            since,
            error: e.to_string(),
            lease_lost,
        });
    }

    /// Wait for the handle, the lease or the key watch.
    async fn wait(&mut self) -> Wake {
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
            w = self.lease.next() => Wake::Lease(w),
            r = next_key_event(&mut self.key_watch) => Wake::KeyEvent(r),
        }
    }

    /// What the watch on our key says: a delete behind our back is written
    /// again at the next step; another writer's value is left alone.
    fn on_key_event(&mut self, msg: Option<Result<WatchMessage>>) {
        let our_lease = self.lease.id();
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
            if self.lease.written_mut().take().is_some() {
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

    /// One step towards `value` under a live lease: adopt or grant the
    /// lease, keep it alive, write the value if etcd lacks it, watch it.
    async fn ensure_registered(&mut self, value: &[u8]) -> Result<()> {
        if self.lease.adopting() {
            self.try_adopt(value).await?;
        }
        self.lease.hold().await?;
        let written = self.lease.written().as_ref().map(|p| p.value.as_slice());
        if written != Some(value) {
            let revision = match self.put(value).await {
                Ok(rev) => rev,
                Err(e) if classify(&e) == Class::LeaseNotFound => {
                    // Expired or revoked behind our back: a new lease, at once.
                    warn!(key = %self.key, "lease gone; granting a new one");
                    self.lease.lose();
                    self.key_watch = None;
                    self.lease.hold().await?;
                    self.put(value)
                        .await
                        .map_err(|e| Error::from_etcd("put", &self.key, e))?
                }
                Err(e) => return Err(Error::from_etcd("put", &self.key, e)),
            };
            *self.lease.written_mut() = Some(Put {
                value: value.to_vec(),
                revision,
            });
            self.key_watch = None;
        }
        if self.key_watch.is_none() {
            let from = self.lease.written().as_ref().map(|p| p.revision);
            self.open_key_watch(from.unwrap_or_default());
        }
        self.publish_registered(value);
        Ok(())
    }

    /// Adopt the live lease that already holds `value` at our key, and
    /// only it (a process restarted quickly): nothing is written, so
    /// watchers see nothing.
    async fn try_adopt(&mut self, value: &[u8]) -> Result<()> {
        let got = self
            .lease
            .rpc()
            .call_within("get", self.lease.op_limit(), |c| {
                let (mut kv, key) = (c.kv(), self.key.clone());
                async move { kv.get(key, None).await }
            })
            .await
            .map_err(|e| Error::from_etcd("get", &self.key, e))?;
        let Some(existing) = got.kvs().first() else {
            return Ok(());
        };
        if existing.value() != value || existing.lease() == 0 {
            return Ok(());
        }
        let (id, revision) = (existing.lease(), existing.mod_revision());
        let key = self.key.as_bytes();
        let only_ours = |keys: &[Vec<u8>]| keys.len() == 1 && keys[0] == key;
        if self.lease.adopt(id, only_ours).await?.is_some() {
            info!(key = %self.key, lease = %LeaseId(id), "adopting the live lease that already holds this value");
            *self.lease.written_mut() = Some(Put {
                value: value.to_vec(),
                revision,
            });
        }
        Ok(())
    }

    /// Tell the handle the key holds `value` (once per change).
    fn publish_registered(&mut self, value: &[u8]) {
        let (Some(lease), Some(ttl), Some(put)) = (
            self.lease.id(),
            self.lease.granted(),
            self.lease.written().as_ref(),
        ) else {
            return;
        };
        let revision = put.revision;
        let state = RegistrationState::Registered {
            lease: LeaseId(lease),
            ttl,
            revision,
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
                lease = %LeaseId(lease),
                ttl = ?ttl,
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
            .with_liveness(KEY_WATCH_IDLE, self.lease.op_limit())
            .with_buffer(4);
        opts.scope = Scope::Key;
        match crate::watch::start(self.lease.rpc(), &self.key, opts) {
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
        self.key_watch_retry = Some(Instant::now() + self.lease.interval());
    }

    /// Write `value` under our lease; the write's revision.
    async fn put(&self, value: &[u8]) -> std::result::Result<i64, etcd_client::Error> {
        let lease = self.lease.id().unwrap_or_default();
        let resp = self
            .lease
            .rpc()
            .call_within("put", self.lease.op_limit(), |c| {
                let (mut kv, key, value) = (c.kv(), self.key.clone(), value.to_vec());
                async move {
                    kv.put(key, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// One step towards no key: revoke the lease (the key goes at once).
    async fn ensure_withdrawn(&mut self) -> Result<()> {
        self.key_watch = None;
        self.lease.revoke().await?;
        if *self.state.borrow() != RegistrationState::Withdrawn {
            self.state.send_replace(RegistrationState::Withdrawn);
        }
        Ok(())
    }

    /// Revoke the lease (within about a second) and say we stopped.
    async fn shutdown(&mut self) {
        self.key_watch = None;
        self.lease.release().await;
        self.state.send_replace(RegistrationState::Stopped);
    }
}

/// The next message of the key watch; never, without one.
async fn next_key_event(w: &mut Option<WatchStream>) -> Option<Result<WatchMessage>> {
    match w {
        Some(w) => w.recv().await,
        None => std::future::pending().await,
    }
}
