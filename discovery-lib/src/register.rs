//! Self-registration: keep `key = value` in etcd under a lease.
//!
//! A background actor converges etcd to what the [`Registration`] handle
//! asks for (a value, or nothing) and reports where it stands. It never
//! writes a value that is already there: heartbeats are lease keep-alives,
//! which produce no watch event.

use std::time::{Duration, SystemTime};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, LeaseTimeToLiveOptions, PutOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::client::Client;
use crate::error::{Class, Error, Result, classify};
use crate::key::validate_key;
use crate::node::{Action, LeaseId, WatchMessage};
use crate::retry::Backoff;
use crate::watch::{Scope, WatchOptions, WatchStream};

/// The shortest TTL etcd honours with its default election timeout (1 s):
/// it raises anything shorter to this.
pub const MIN_TTL: Duration = Duration::from_secs(2);

/// The longest TTL etcd grants (`MaxLeaseTTL`, 9,000,000,000 s).
pub const MAX_TTL: Duration = Duration::from_secs(9_000_000_000);

/// The shortest keep-alive interval accepted: anything faster only loads
/// etcd (the lease is not any safer for it).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The key watch asks etcd for progress only after this long without a
/// message: in effect never (see `open_key_watch`).
const KEY_WATCH_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Options for [`Client::register`].
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    ttl: Duration,
    interval: Option<Duration>,
    adopt: bool,
}

impl RegisterOptions {
    /// A lease of `ttl` (whole seconds, from 2 s), kept alive every `ttl / 3`.
    pub const fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            interval: None,
            adopt: true,
        }
    }

    /// Send a keep-alive every `interval` instead of `ttl / 3`. Must be
    /// shorter than the TTL.
    pub const fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// On start, when the key already holds the same value under a live
    /// lease that holds only this key (a process restarted quickly), keep
    /// that lease alive instead of writing again, so watchers see nothing.
    /// On by default.
    pub const fn with_adopt(mut self, adopt: bool) -> Self {
        self.adopt = adopt;
        self
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The keep-alive interval: as set, or a third of the TTL.
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(self.ttl / 3)
    }

    /// Check the TTL and interval against what etcd can honour.
    pub fn validate(&self) -> Result<()> {
        let ttl = self.ttl;
        if ttl.is_zero() {
            return Err(Error::InvalidOption(
                "the TTL is 0; a lease needs at least 2s".into(),
            ));
        }
        if ttl.subsec_nanos() != 0 {
            return Err(Error::InvalidOption(format!(
                "the TTL {ttl:?} is not a whole number of seconds; etcd leases count in seconds"
            )));
        }
        if ttl < MIN_TTL {
            return Err(Error::InvalidOption(format!(
                "the TTL {ttl:?} is below etcd's minimum lease TTL of {MIN_TTL:?} (etcd would silently raise it)"
            )));
        }
        if ttl > MAX_TTL {
            return Err(Error::InvalidOption(format!(
                "the TTL {}s is above etcd's maximum lease TTL of {}s",
                ttl.as_secs(),
                MAX_TTL.as_secs()
            )));
        }
        let interval = self.interval();
        if interval.is_zero() {
            return Err(Error::InvalidOption(
                "the keep-alive interval is 0; it must be above 0 and below the TTL".into(),
            ));
        }
        if interval < MIN_INTERVAL {
            return Err(Error::InvalidOption(format!(
                "the keep-alive interval {interval:?} is below {MIN_INTERVAL:?}; that often only loads etcd (the default is TTL/3)"
            )));
        }
        if interval >= ttl {
            return Err(Error::InvalidOption(format!(
                "the keep-alive interval {interval:?} must be shorter than the TTL {ttl:?} (the default is TTL/3)"
            )));
        }
        Ok(())
    }
}

/// Where a registration stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// Not yet registered; the first attempt is under way.
    Starting,
    /// The key holds the value under a live lease.
    Registered {
        /// The lease.
        lease: LeaseId,
        /// The TTL etcd granted.
        ttl: Duration,
        /// The revision of the write (or of the adopted key).
        revision: i64,
        /// The value.
        value: Vec<u8>,
    },
    /// Deliberately not registered (see [`Registration::withdraw`]).
    Withdrawn,
    /// etcd failed; retrying with backoff.
    Retrying {
        /// Since when the registration is not confirmed.
        since: SystemTime,
        /// The last error.
        error: String,
        /// True once the lease has probably expired (etcd unreachable for
        /// longer than the TTL, or etcd said so): a new lease will be granted.
        lease_lost: bool,
    },
    /// etcd refuses the registration for a reason retrying will not fix
    /// by itself (permission denied, a value too large). Still retried,
    /// slowly, in case the cause is fixed; tools usually exit on this.
    Refused {
        /// What etcd said.
        error: String,
    },
    /// The registration was deregistered and its task has ended.
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Desired {
    Value(Vec<u8>),
    Withdrawn,
    Shutdown,
}

/// A handle on a registration. Dropping it revokes the lease in the
/// background; [`Registration::deregister`] does so and waits.
#[derive(Debug)]
pub struct Registration {
    key: String,
    desired: watch::Sender<Desired>,
    state: watch::Receiver<RegistrationState>,
    task: Option<JoinHandle<()>>,
}

/// Start the actor behind [`Client::register`] and [`Client::registration`].
pub(crate) fn spawn(
    client: &Client,
    key: &str,
    value: Option<Vec<u8>>,
    options: RegisterOptions,
) -> Result<Registration> {
    validate_key(key)?;
    options.validate()?;
    let desired = match value {
        Some(v) => Desired::Value(v),
        None => Desired::Withdrawn,
    };
    let (desired_tx, desired_rx) = watch::channel(desired);
    let (state_tx, state_rx) = watch::channel(RegistrationState::Starting);
    let actor = Actor {
        client: client.clone(),
        key: key.to_owned(),
        ttl: options.ttl,
        interval: options.interval(),
        adopt: options.adopt,
        desired: desired_rx,
        state: state_tx,
        lease: None,
        written: None,
        keeper: None,
        key_watch: None,
        key_watch_retry: None,
        backoff: Backoff::for_registration(),
        retry_at: None,
        failing_since: None,
    };
    let task = tokio::spawn(actor.run());
    Ok(Registration {
        key: key.to_owned(),
        desired: desired_tx,
        state: state_rx,
        task: Some(task),
    })
}

impl Registration {
    /// The registered key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Register `value`, or keep it registered. A value equal to the one in
    /// etcd writes nothing; a different one is written under the same lease
    /// (watchers see a `set`). Re-registers after [`Registration::withdraw`].
    pub fn set_value(&self, value: impl Into<Vec<u8>>) {
        let value = value.into();
        self.desired.send_if_modified(|d| {
            if *d == Desired::Value(value.clone()) {
                false
            } else {
                *d = Desired::Value(value);
                true
            }
        });
    }

    /// Remove the key now by revoking the lease, keeping the handle for a
    /// later [`Registration::set_value`].
    pub fn withdraw(&self) {
        self.desired.send_if_modified(|d| {
            if *d == Desired::Withdrawn {
                false
            } else {
                *d = Desired::Withdrawn;
                true
            }
        });
    }

    /// The registration's state, updated as it changes.
    pub fn state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Wait until the current value is registered; returns the state then.
    pub async fn wait_registered(&self) -> Result<RegistrationState> {
        let mut rx = self.state.clone();
        loop {
            let want = match &*self.desired.borrow() {
                Desired::Value(v) => v.clone(),
                _ => return Err(Error::InvalidOption("the registration is withdrawn".into())),
            };
            {
                let s = rx.borrow_and_update();
                match &*s {
                    RegistrationState::Registered { value, .. } if *value == want => {
                        return Ok(s.clone());
                    }
                    RegistrationState::Stopped => return Err(Error::Stopped("registration")),
                    _ => {}
                }
            }
            rx.changed()
                .await
                .map_err(|_| Error::Stopped("registration"))?;
        }
    }

    /// Revoke the lease (the key disappears at once) and stop. Waits at
    /// most about a second: if etcd does not answer by then, the key
    /// expires with its TTL instead.
    pub async fn deregister(mut self) -> Result<()> {
        let _ = self.desired.send(Desired::Shutdown);
        if let Some(task) = self.task.take() {
            task.await.map_err(|_| Error::Stopped("registration"))?;
        }
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The actor revokes the lease when it sees this (or the sender gone).
        let _ = self.desired.send(Desired::Shutdown);
    }
}

/// Our lease as we last knew it.
#[derive(Debug)]
struct Lease {
    id: i64,
    granted: Duration,
    /// When etcd last confirmed it alive.
    confirmed: Instant,
}

#[derive(Debug)]
struct Keeper {
    keeper: LeaseKeeper,
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
}

struct Actor {
    client: Client,
    key: String,
    ttl: Duration,
    interval: Duration,
    adopt: bool,
    desired: watch::Receiver<Desired>,
    state: watch::Sender<RegistrationState>,
    lease: Option<Lease>,
    /// The value we wrote under `lease`, and the revision of that write.
    written: Option<(Vec<u8>, i64)>,
    keeper: Option<Keeper>,
    /// A watch on our own key from the revision we wrote it at: a safety
    /// net that sees a delete or another writer behind our back. The same
    /// engine as every prefix watch (`Scope::Key`), so a cancel, a stale
    /// token or a compaction means the same thing here as everywhere.
    key_watch: Option<WatchStream>,
    /// When the key watch may be opened again after it failed or was
    /// cancelled: it is a safety net, never worth a busy loop.
    key_watch_retry: Option<Instant>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    failing_since: Option<SystemTime>,
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
    async fn run(mut self) {
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
    fn op_limit(&self) -> Duration {
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
            Some(l) => l.confirmed.elapsed() >= l.granted,
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
        let keeper_next = self.keeper.as_ref().map(|k| k.next);
        tokio::select! {
            biased;
            r = self.desired.changed() => {
                if r.is_err() {
                    // Every handle is gone: treat as a shutdown request.
                    self.desired = watch::channel(Desired::Shutdown).1;
                }
                Wake::Desired
            }
            r = next_keep_alive(&mut self.keeper) => Wake::KeepAlive(r),
            // Keep-alives before the key watch: nothing it does may delay them.
            _ = sleep_until_opt(keeper_next) => Wake::Tick,
            r = next_key_event(&mut self.key_watch) => Wake::KeyEvent(r),
            _ = sleep_until_opt(retry_at) => Wake::Retry,
        }
    }

    /// Time to send a keep-alive, or to notice the last one went unanswered.
    async fn tick(&mut self) {
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

    fn on_keep_alive(&mut self, r: std::result::Result<Option<(i64, u64)>, etcd_client::Error>) {
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

    /// Close the keep-alive stream after it failed; the next one goes to
    /// another member.
    fn drop_keeper(&mut self, why: &str) {
        if let Some(k) = self.keeper.take() {
            self.client.pool().avoid(k.conn, "keep alive", why);
        }
    }

    fn lose_lease(&mut self) {
        self.lease = None;
        self.keeper = None;
        self.key_watch = None;
        self.written = None;
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

    /// Get a lease for `value`: adopt a matching live one, or grant and write.
    async fn acquire(&mut self, value: &[u8]) -> Result<()> {
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

    async fn try_adopt(&mut self, value: &[u8]) -> Result<bool> {
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

    async fn open_keeper(&mut self) -> std::result::Result<(), etcd_client::Error> {
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

    async fn revoke(&mut self) -> Result<()> {
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

fn lease_error(op: &'static str, e: etcd_client::Error) -> Error {
    Error::request(op, e)
}

/// The next keep-alive answer: the TTL left, and the member that answered.
async fn next_keep_alive(
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

async fn next_key_event(w: &mut Option<WatchStream>) -> Option<Result<WatchMessage>> {
    match w {
        Some(w) => w.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rules() {
        let ok = RegisterOptions::new(Duration::from_secs(8));
        assert!(ok.validate().is_ok());
        assert_eq!(ok.interval(), Duration::from_secs(8) / 3);
        for (opts, why) in [
            (RegisterOptions::new(Duration::ZERO), "is 0"),
            (
                RegisterOptions::new(Duration::from_millis(1500)),
                "whole number",
            ),
            (RegisterOptions::new(Duration::from_secs(1)), "minimum"),
            (
                RegisterOptions::new(Duration::from_secs(9_000_000_001)),
                "maximum",
            ),
            (
                RegisterOptions::new(Duration::from_secs(8)).with_interval(Duration::from_secs(8)),
                "shorter than the TTL",
            ),
            (
                RegisterOptions::new(Duration::from_secs(8)).with_interval(Duration::ZERO),
                "interval is 0",
            ),
        ] {
            let e = opts.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{opts:?}: {e}");
        }
    }
}
