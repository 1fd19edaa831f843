//! Many keys under one lease: the registrations of a whole host.
//!
//! A [`LeaseGroup`] keeps a set of `key = value` pairs in etcd under a
//! single lease. One keep-alive stream serves every key, so a host with 200
//! registrations costs etcd (and the agent) what one registration costs;
//! a key that must go is deleted explicitly, in the same round trip as any
//! other change pending. If the owner dies, the lease expires and every
//! key goes with it, within the TTL.
//!
//! Why one lease and not one per key (measured, see BENCHMARKS.md P8): a
//! lease per key means a keep-alive per key every TTL/3, which is 200
//! messages where one does; the only thing a per-key lease buys is that a
//! withdrawal is a revoke instead of a delete, and both are one request.
//!
//! Every write is conditional, in one transaction per batch:
//! * a put happens only if the key is absent or already under our lease;
//!   a key held under another lease is a conflict, reported with its
//!   holder, and retried every TTL (the holder's lease may expire);
//! * a delete happens only if the key is still under our lease, so a
//!   withdrawal never removes another writer's key.
//!
//! On start, the group adopts the live lease that already holds its keys
//! with the same values (an agent restarted after a crash): nothing is
//! written for them, so watchers see no event. Keys that lease holds and
//! the group no longer wants are deleted. After a lost lease (etcd down
//! longer than the TTL), a new lease is granted and every key put again.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, LeaseTimeToLiveOptions, PutOptions, Txn,
    TxnOp, TxnOpResponse,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::Client;
use crate::error::{Class, Error, Result, classify};
use crate::key::validate_key;
use crate::node::LeaseId;
use crate::register::RegisterOptions;
use crate::retry::Backoff;

/// Keys per transaction: etcd refuses more than 128 operations in one
/// (`--max-txn-ops`), and each key here is a nested transaction.
const BATCH: usize = 64;

/// Where a group stands, for status lines and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupState {
    /// The lease holding the keys, once granted or adopted.
    pub lease: Option<LeaseId>,
    /// Keys etcd holds for us with the value asked for.
    pub held: usize,
    /// Keys asked for and not (yet) written: pending, conflicting or refused.
    pub pending: usize,
    /// Every key asked for is held and nothing else is: etcd is in sync.
    pub synced: bool,
    /// The last failure, while retrying; `None` once a round succeeded.
    pub retrying: Option<String>,
    /// Keys held under another lease: key to the holder's lease.
    pub conflicts: BTreeMap<String, LeaseId>,
    /// Keys etcd refuses (permission denied, too large): key to the reason.
    pub refused: BTreeMap<String, String>,
    /// The group was shut down.
    pub stopped: bool,
}

#[derive(Clone, Debug, Default)]
struct Desired {
    keys: BTreeMap<String, Vec<u8>>,
    shutdown: bool,
}

/// A handle on a group of keys under one lease. Dropping it revokes the
/// lease in the background; [`LeaseGroup::shutdown`] does so and waits.
#[derive(Debug)]
pub struct LeaseGroup {
    desired: watch::Sender<Desired>,
    state: watch::Receiver<GroupState>,
    task: Option<JoinHandle<()>>,
}

impl Client {
    /// Keep `initial` (and later changes) in etcd under one lease of
    /// `options.ttl()`, kept alive every `options.interval()`.
    ///
    /// Give the keys known at start in `initial`: the group adopts a live
    /// lease that already holds them with the same values, so a restarted
    /// owner writes nothing. Returns at once; the work happens in the
    /// background, retrying while etcd is unreachable.
    pub fn lease_group(
        &self,
        options: RegisterOptions,
        initial: BTreeMap<String, Vec<u8>>,
    ) -> Result<LeaseGroup> {
        options.validate()?;
        for k in initial.keys() {
            validate_key(k)?;
        }
        let (desired_tx, desired_rx) = watch::channel(Desired {
            keys: initial,
            shutdown: false,
        });
        let (state_tx, state_rx) = watch::channel(GroupState::default());
        let actor = Actor {
            client: self.clone(),
            ttl: options.ttl(),
            interval: options.interval(),
            adopt: true,
            desired: desired_rx,
            state: state_tx,
            lease: None,
            written: HashMap::new(),
            blocked: HashMap::new(),
            conflicts: BTreeMap::new(),
            refused: BTreeMap::new(),
            keeper: None,
            backoff: Backoff::for_registration(),
            retry_at: None,
            recheck_at: None,
        };
        Ok(LeaseGroup {
            desired: desired_tx,
            state: state_rx,
            task: Some(tokio::spawn(actor.run())),
        })
    }
}

impl LeaseGroup {
    /// Keep `key = value`. Writes only if etcd does not already hold it.
    pub fn set(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<()> {
        validate_key(key)?;
        let value = value.into();
        self.desired.send_if_modified(|d| {
            if d.keys.get(key) == Some(&value) {
                return false;
            }
            d.keys.insert(key.to_owned(), value);
            true
        });
        Ok(())
    }

    /// Delete `key` now (if the group holds it).
    pub fn remove(&self, key: &str) {
        self.desired
            .send_if_modified(|d| d.keys.remove(key).is_some());
    }

    /// The keys the group is asked to hold.
    pub fn keys(&self) -> Vec<String> {
        self.desired.borrow().keys.keys().cloned().collect()
    }

    /// Where the group stands, updated as it changes.
    pub fn state(&self) -> watch::Receiver<GroupState> {
        self.state.clone()
    }

    /// Revoke the lease (every key disappears at once) and stop. Waits at
    /// most about a second; past that the keys expire with the TTL.
    pub async fn shutdown(mut self) -> Result<()> {
        self.desired.send_modify(|d| d.shutdown = true);
        if let Some(task) = self.task.take() {
            task.await.map_err(|_| Error::Stopped("lease group"))?;
        }
        Ok(())
    }
}

impl Drop for LeaseGroup {
    fn drop(&mut self) {
        self.desired.send_modify(|d| d.shutdown = true);
    }
}

struct Lease {
    id: i64,
    /// When etcd last confirmed it alive, and for how long it was granted.
    confirmed: Instant,
    granted: Duration,
}

struct Keeper {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    /// The next keep-alive, or while one is out, when to give up on it.
    next: Instant,
    /// A keep-alive is out, unanswered since then.
    pending: Option<Instant>,
    conn: usize,
}

/// Why a key is not written: it will be tried again at the next recheck,
/// or at once when the value asked for changes.
struct Blocked {
    value: Vec<u8>,
}

/// The group's background task. Fields:
struct Actor {
    client: Client,
    ttl: Duration,
    interval: Duration,
    /// Adopt a live lease on the first acquisition only: after that, a
    /// lease we lost is not ours to take back.
    adopt: bool,
    desired: watch::Receiver<Desired>,
    state: watch::Sender<GroupState>,
    lease: Option<Lease>,
    /// What etcd holds under our lease: key to value (`None` when adopted
    /// without knowing the value, which is then rewritten or deleted).
    written: HashMap<String, Option<Vec<u8>>>,
    /// Keys not written because of a conflict or a refusal, with the value
    /// that was refused (a new value is tried at once).
    blocked: HashMap<String, Blocked>,
    /// Blocked keys held under another lease: key to the holder.
    conflicts: BTreeMap<String, LeaseId>,
    /// Blocked keys etcd refuses: key to the reason.
    refused: BTreeMap<String, String>,
    keeper: Option<Keeper>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// When to try blocked keys again.
    recheck_at: Option<Instant>,
}

enum Wake {
    Desired,
    Tick,
    KeepAlive(std::result::Result<Option<i64>, etcd_client::Error>),
    Retry,
    Recheck,
}

/// One key's write in a batch.
enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Actor {
    async fn run(mut self) {
        loop {
            let desired = self.desired.borrow_and_update().clone();
            if desired.shutdown {
                self.shutdown().await;
                return;
            }
            match self.converge(&desired.keys).await {
                Ok(()) => {
                    self.backoff.reset();
                    self.retry_at = None;
                    self.publish(&desired.keys, None);
                }
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    warn!(error = %e, retry_in = ?delay, "lease group not in sync; retrying");
                    self.retry_at = Some(Instant::now() + delay);
                    self.publish(&desired.keys, Some(e.to_string()));
                }
            }
            match self.wait().await {
                Wake::Desired | Wake::Retry => {}
                Wake::Recheck => {
                    self.recheck_at = None;
                    self.blocked.clear();
                    self.conflicts.clear();
                    self.refused.clear();
                }
                Wake::Tick => self.tick().await,
                Wake::KeepAlive(r) => self.on_keep_alive(r),
            }
        }
    }

    fn op_limit(&self) -> Duration {
        self.interval.max(Duration::from_secs(1))
    }

    async fn wait(&mut self) -> Wake {
        let keeper_next = self.keeper.as_ref().map(|k| k.next);
        let (retry_at, recheck_at) = (self.retry_at, self.recheck_at);
        tokio::select! {
            biased;
            r = self.desired.changed() => {
                if r.is_err() {
                    self.desired = watch::channel(Desired { keys: BTreeMap::new(), shutdown: true }).1;
                }
                Wake::Desired
            }
            r = next_keep_alive(&mut self.keeper) => Wake::KeepAlive(r),
            _ = sleep_until_opt(keeper_next) => Wake::Tick,
            _ = sleep_until_opt(retry_at) => Wake::Retry,
            _ = sleep_until_opt(recheck_at) => Wake::Recheck,
        }
    }

    fn publish(&self, desired: &BTreeMap<String, Vec<u8>>, retrying: Option<String>) {
        let held = desired
            .iter()
            .filter(|(k, v)| self.written.get(*k).is_some_and(|w| w.as_ref() == Some(*v)))
            .count();
        let next = GroupState {
            lease: self.lease.as_ref().map(|l| LeaseId(l.id)),
            held,
            pending: desired.len() - held,
            synced: held == desired.len() && self.written.len() == held,
            retrying,
            conflicts: self.conflicts.clone(),
            refused: self.refused.clone(),
            stopped: false,
        };
        self.state.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    }

    async fn converge(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        if self.lease.is_none() {
            self.acquire(desired).await?;
        }
        if self.keeper.is_none() {
            if let Err(e) = self.open_keeper().await {
                if classify(&e) == Class::LeaseNotFound {
                    warn!(
                        "the group's lease expired; granting a new one and writing every key again"
                    );
                    self.lose_lease();
                }
                return Err(Error::request("keep alive", e));
            }
        }
        // A blocked key whose wanted value changed is tried again at once.
        self.blocked
            .retain(|k, b| desired.get(k).is_some_and(|v| *v == b.value));
        let blocked = &self.blocked;
        self.conflicts.retain(|k, _| blocked.contains_key(k));
        self.refused.retain(|k, _| blocked.contains_key(k));
        let mut ops: Vec<Op> = self
            .written
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .map(|k| Op::Delete(k.clone()))
            .collect();
        ops.extend(
            desired
                .iter()
                .filter(|(k, v)| {
                    !self.blocked.contains_key(*k)
                        && self.written.get(*k).is_none_or(|w| w.as_ref() != Some(*v))
                })
                .map(|(k, v)| Op::Put(k.clone(), v.clone())),
        );
        // Deletes first: they are what a consumer waits on.
        for chunk in ops.chunks(BATCH) {
            self.write(chunk).await?;
        }
        Ok(())
    }

    /// Apply one batch in one transaction. A refusal of the whole batch
    /// (one key not permitted) is retried key by key, to block only it.
    async fn write(&mut self, ops: &[Op]) -> Result<()> {
        let lease = self.lease.as_ref().map(|l| l.id).unwrap_or_default();
        let txn = Txn::new().and_then(ops.iter().map(|op| op_txn(op, lease)).collect::<Vec<_>>());
        let resp = self
            .client
            .call_within("txn", self.op_limit(), |c| {
                let (mut kv, txn) = (c.kv(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) if classify(&e) == Class::LeaseNotFound => {
                warn!(lease = %LeaseId(lease), "the group's lease is gone; granting a new one and writing every key again");
                self.lose_lease();
                return Err(Error::request("put", e));
            }
            Err(e)
                if ops.len() > 1
                    && matches!(classify(&e), Class::PermissionDenied | Class::Fatal) =>
            {
                for op in ops {
                    Box::pin(self.write(std::slice::from_ref(op))).await?;
                }
                return Ok(());
            }
            Err(e) if matches!(classify(&e), Class::PermissionDenied | Class::Fatal) => {
                let (key, value) = match &ops[0] {
                    Op::Put(k, v) => (k.clone(), v.clone()),
                    Op::Delete(k) => (k.clone(), Vec::new()),
                };
                let why = Error::from_etcd("put", &key, e).to_string();
                warn!(%key, error = %why, "etcd refuses this key; the others go on");
                self.block(&key, value);
                self.refused.insert(key.clone(), why);
                if matches!(ops[0], Op::Delete(_)) {
                    self.written.remove(&key);
                }
                return Ok(());
            }
            Err(e) => return Err(Error::request("txn", e)),
        };
        for (op, r) in ops.iter().zip(resp.op_responses()) {
            let TxnOpResponse::Txn(inner) = r else {
                continue;
            };
            match op {
                Op::Delete(k) => {
                    // Not ours any more (someone else wrote it): forget it all the same.
                    self.written.remove(k);
                }
                Op::Put(k, v) if inner.succeeded() => {
                    // The guard held: another lease has the key.
                    let holder = inner
                        .op_responses()
                        .into_iter()
                        .find_map(|r| match r {
                            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.lease()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    warn!(key = %k, holder = %LeaseId(holder), "another writer holds this key; not overwriting it");
                    self.written.remove(k);
                    self.block(k, v.clone());
                    self.conflicts.insert(k.clone(), LeaseId(holder));
                }
                Op::Put(k, v) => {
                    self.written.insert(k.clone(), Some(v.clone()));
                }
            }
        }
        Ok(())
    }

    fn block(&mut self, key: &str, value: Vec<u8>) {
        self.blocked.insert(key.to_owned(), Blocked { value });
        if self.recheck_at.is_none() {
            self.recheck_at = Some(Instant::now() + self.ttl);
        }
    }

    fn lose_lease(&mut self) {
        self.lease = None;
        self.keeper = None;
        self.written.clear();
    }

    async fn acquire(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        if std::mem::take(&mut self.adopt) && !desired.is_empty() && self.try_adopt(desired).await?
        {
            return Ok(());
        }
        let ttl = self.ttl.as_secs() as i64;
        let granted = self
            .client
            .call_within("grant", self.op_limit(), |c| {
                let mut lc = c.lease();
                async move { lc.grant(ttl, None).await }
            })
            .await
            .map_err(|e| Error::request("grant lease", e))?;
        info!(lease = %LeaseId(granted.id()), ttl = granted.ttl(), "lease granted for the group");
        self.lease = Some(Lease {
            id: granted.id(),
            confirmed: Instant::now(),
            granted: Duration::from_secs(granted.ttl().max(1) as u64),
        });
        self.written.clear();
        Ok(())
    }

    /// Find the live lease that holds most of our keys with our values,
    /// and take it over if it was granted with our TTL.
    async fn try_adopt(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Result<bool> {
        let keys: Vec<&String> = desired.keys().collect();
        let mut found: HashMap<String, (Vec<u8>, i64)> = HashMap::new();
        for chunk in keys.chunks(BATCH) {
            let txn = Txn::new().and_then(
                chunk
                    .iter()
                    .map(|k| TxnOp::get(k.as_str(), None))
                    .collect::<Vec<_>>(),
            );
            let resp = self
                .client
                .call_within("get", self.op_limit(), |c| {
                    let (mut kv, txn) = (c.kv(), txn.clone());
                    async move { kv.txn(txn).await }
                })
                .await
                .map_err(|e| Error::request("get", e))?;
            for r in resp.op_responses() {
                if let TxnOpResponse::Get(g) = r {
                    for kv in g.kvs() {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        found.insert(key, (kv.value().to_vec(), kv.lease()));
                    }
                }
            }
        }
        let mut votes: HashMap<i64, usize> = HashMap::new();
        for (k, (v, lease)) in &found {
            if *lease != 0 && desired.get(k) == Some(v) {
                *votes.entry(*lease).or_default() += 1;
            }
        }
        let Some((&id, _)) = votes.iter().max_by_key(|(_, n)| **n) else {
            return Ok(false);
        };
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
            .map_err(|e| Error::request("lease time-to-live", e))?;
        if ttl.ttl() <= 0 || ttl.granted_ttl() != self.ttl.as_secs() as i64 {
            return Ok(false);
        }
        self.written = ttl
            .keys()
            .iter()
            .map(|k| {
                let key = String::from_utf8_lossy(k).into_owned();
                let value = found
                    .get(&key)
                    .filter(|(_, l)| *l == id)
                    .map(|(v, _)| v.clone());
                (key, value)
            })
            .collect();
        info!(
            lease = %LeaseId(id),
            keys = self.written.len(),
            "adopting the live lease that already holds these registrations"
        );
        self.lease = Some(Lease {
            id,
            confirmed: Instant::now(),
            granted: Duration::from_secs(ttl.granted_ttl().max(1) as u64),
        });
        Ok(true)
    }

    async fn open_keeper(&mut self) -> std::result::Result<(), etcd_client::Error> {
        let limit = self.op_limit();
        let Some(lease) = self.lease.as_mut() else {
            return Ok(());
        };
        let id = lease.id;
        let ((keeper, stream), conn) = self
            .client
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
        });
        Ok(())
    }

    async fn tick(&mut self) {
        let interval = self.interval;
        let Some(k) = self.keeper.as_mut() else {
            return;
        };
        if k.pending.is_some() {
            warn!("keep-alive unanswered; reconnecting to another member");
            self.drop_keeper("unanswered");
            return;
        }
        match k.keeper.keep_alive().await {
            Ok(()) => {
                k.pending = Some(Instant::now());
                k.next = Instant::now() + interval / 2;
            }
            Err(e) => {
                warn!(error = %e, "keep-alive stream broken; reconnecting");
                self.drop_keeper("stream broken");
            }
        }
    }

    fn on_keep_alive(&mut self, r: std::result::Result<Option<i64>, etcd_client::Error>) {
        match r {
            Ok(Some(ttl)) if ttl > 0 => {
                if let Some(k) = self.keeper.as_mut() {
                    if let Some(sent) = k.pending.take() {
                        k.next = sent + self.interval;
                    }
                }
                if let Some(l) = self.lease.as_mut() {
                    l.confirmed = Instant::now();
                }
            }
            Ok(Some(_)) => {
                warn!("the group's lease expired; granting a new one and writing every key again");
                self.lose_lease();
            }
            Ok(None) => self.drop_keeper("stream ended"),
            Err(e) => {
                debug!(error = %e, "keep-alive stream failed; reconnecting");
                self.drop_keeper("stream failed");
            }
        }
        // A lease unconfirmed for its whole TTL is gone, whatever etcd says later.
        if self
            .lease
            .as_ref()
            .is_some_and(|l| l.confirmed.elapsed() >= l.granted)
        {
            self.lose_lease();
        }
    }

    fn drop_keeper(&mut self, why: &str) {
        if let Some(k) = self.keeper.take() {
            self.client.pool().avoid(k.conn, "keep alive", why);
        }
    }

    async fn shutdown(&mut self) {
        self.keeper = None;
        if let Some(lease) = self.lease.take() {
            let limit = Duration::from_millis(900).min(self.client.request_timeout());
            let id = lease.id;
            let revoke = self.client.call_within("revoke", limit, |c| {
                let mut lc = c.lease();
                async move { lc.revoke(id).await }
            });
            match tokio::time::timeout(limit, revoke).await {
                Ok(Ok(_)) => {
                    info!(lease = %LeaseId(id), keys = self.written.len(), "lease revoked; every key removed")
                }
                Ok(Err(e)) if classify(&e) == Class::LeaseNotFound => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "could not revoke the lease; the keys expire with its TTL")
                }
                Err(_) => {
                    warn!("etcd did not answer the revoke in time; the keys expire with its TTL")
                }
            }
        }
        self.state.send_modify(|s| s.stopped = true);
    }
}

/// A key's conditional write: put unless another lease holds the key
/// (then read it, to name the holder); delete only while it is ours.
fn op_txn(op: &Op, lease: i64) -> TxnOp {
    match op {
        Op::Put(k, v) => TxnOp::txn(
            Txn::new()
                .when([
                    Compare::create_revision(k.as_str(), CompareOp::Greater, 0),
                    Compare::lease(k.as_str(), CompareOp::NotEqual, lease),
                ])
                .and_then([TxnOp::get(k.as_str(), None)])
                .or_else([TxnOp::put(
                    k.as_str(),
                    v.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )]),
        ),
        Op::Delete(k) => TxnOp::txn(
            Txn::new()
                .when([Compare::lease(k.as_str(), CompareOp::Equal, lease)])
                .and_then([TxnOp::delete(k.as_str(), None)]),
        ),
    }
}

async fn next_keep_alive(
    k: &mut Option<Keeper>,
) -> std::result::Result<Option<i64>, etcd_client::Error> {
    match k {
        Some(k) => k.stream.message().await.map(|r| r.map(|r| r.ttl())),
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
