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

mod lease;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::Client;
use crate::error::{Class, Error, Result, classify};
use crate::keep_alive::{self, Keeper, KeeperEvent, Lease};
use crate::key::validate_key;
use crate::node::LeaseId;
use crate::register::RegisterOptions;
use crate::retry::{Backoff, sleep_until_opt};

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

/// Start the actor behind [`Client::lease_group`].
pub(crate) fn spawn(
    client: &Client,
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
        client: client.clone(),
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

/// Why a key is not written: it will be tried again at the next recheck,
/// or at once when the value asked for changes.
struct Blocked {
    value: Vec<u8>,
}

/// The group's background task.
struct Actor {
    /// The request path to etcd.
    client: Client,
    /// The lease TTL asked for.
    ttl: Duration,
    /// How often a keep-alive is due (TTL/3 by default).
    interval: Duration,
    /// Adopt a live lease on the first acquisition only: after that, a
    /// lease we lost is not ours to take back.
    adopt: bool,
    /// What the handle wants: the keys, or to stop.
    desired: watch::Receiver<Desired>,
    /// Where the group stands, for the handle.
    state: watch::Sender<GroupState>,
    /// The lease holding the keys, once granted or adopted.
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
    /// The keep-alive stream for `lease`, once open.
    keeper: Option<Keeper>,
    /// Delays between attempts while etcd refuses or does not answer.
    backoff: Backoff,
    /// When the next attempt is due after a failure.
    retry_at: Option<Instant>,
    /// When to try blocked keys again.
    recheck_at: Option<Instant>,
}

enum Wake {
    Desired,
    Tick,
    KeepAlive(std::result::Result<Option<(i64, u64)>, etcd_client::Error>),
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
        // Whether the keys wanted, or what blocks some of them, may have
        // changed since the last converge. A keep-alive (sent or answered)
        // changes neither: with the lease and its stream intact it costs no
        // pass over the keys. (That pass, a copy of every key and value and
        // a lookup of each, twice per interval, was half of a 200-key
        // group's idle CPU: BENCHMARKS.md P8.)
        let mut dirty = true;
        loop {
            if dirty || self.lease.is_none() || self.keeper.is_none() {
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
            }
            dirty = match self.wait().await {
                Wake::Desired | Wake::Retry => true,
                Wake::Recheck => {
                    self.recheck_at = None;
                    self.blocked.clear();
                    self.conflicts.clear();
                    self.refused.clear();
                    true
                }
                Wake::Tick => {
                    self.tick().await;
                    false
                }
                Wake::KeepAlive(r) => {
                    self.on_keep_alive(r);
                    false
                }
            };
        }
    }

    fn op_limit(&self) -> Duration {
        self.interval.max(Duration::from_secs(1))
    }

    async fn wait(&mut self) -> Wake {
        let (retry_at, recheck_at) = (self.retry_at, self.recheck_at);
        tokio::select! {
            biased;
            r = self.desired.changed() => {
                if r.is_err() {
                    self.desired = watch::channel(Desired { keys: BTreeMap::new(), shutdown: true }).1;
                }
                Wake::Desired
            }
            ev = keep_alive::next_event(&mut self.keeper) => match ev {
                KeeperEvent::Answer(r) => Wake::KeepAlive(r),
                KeeperEvent::Due => Wake::Tick,
            },
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
