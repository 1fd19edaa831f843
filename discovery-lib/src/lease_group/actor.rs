//! The group's actor: one task per [`LeaseGroup`](super::LeaseGroup) that
//! converges etcd to the keys its handle wants. Its loop, its conditional
//! writes in batches and its adoption of a crashed owner's lease; the keys
//! as data are the [`Ledger`]'s, the lease (grant, keep-alives, loss,
//! revoke, retry pacing) the [`LeaseHolder`]'s.

use std::collections::{BTreeMap, HashMap};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::handle::{Desired, GroupState};
use super::ledger::{Ledger, Op, adoption_candidate};
use crate::error::{Class, Error, Result, classify};
use crate::lease_holder::{LeaseHolder, LeaseNews, LeaseWake};
use crate::lease_options::RegisterOptions;
use crate::node::LeaseId;
use crate::retry::sleep_until_opt;
use crate::rpc::Rpc;

/// Keys per batch: writes go one transaction per key (see `write`); the
/// adoption read takes this many keys per transaction (etcd refuses more
/// than 128 operations in one, `--max-txn-ops`).
const BATCH: usize = 64;

/// The group's background task.
pub(super) struct Actor {
    /// What the handle wants: the keys, or to stop.
    desired: watch::Receiver<Desired>,
    /// Where the group stands, for the handle.
    state: watch::Sender<GroupState>,
    /// The lease, its keep-alives and retry pacing, and the keys written
    /// and blocked under it.
    lease: LeaseHolder<Ledger>,
    /// How long a blocked key waits before it is tried again: the TTL,
    /// within which another writer's abandoned lease expires.
    recheck_every: std::time::Duration,
    /// When to try blocked keys again.
    recheck_at: Option<Instant>,
}

/// What woke the actor.
enum Wake {
    /// The handle wants other keys (or is gone).
    Desired,
    /// The lease holder has something: a keep-alive, or the retry due.
    Lease(LeaseWake),
    /// Time to try blocked keys again.
    Recheck,
}

impl Actor {
    /// The actor for a group under `options`, starting with no lease.
    pub(super) fn new(
        rpc: &Rpc,
        options: &RegisterOptions,
        desired: watch::Receiver<Desired>,
        state: watch::Sender<GroupState>,
    ) -> Self {
        Self {
            desired,
            state,
            lease: LeaseHolder::new(rpc, options, None, Ledger::default()),
            recheck_every: options.ttl(),
            recheck_at: None,
        }
    }

    /// Converge, wait for something to change, and again, until the handle
    /// asks to stop.
    pub(super) async fn run(mut self) {
        // Whether the keys wanted, or what blocks some of them, may have
        // changed since the last converge. A keep-alive (sent or answered)
        // changes neither: with the lease and its stream intact it costs no
        // pass over the keys. (That pass, a copy of every key and value and
        // a lookup of each, twice per interval, was half of a 200-key
        // group's idle CPU: BENCHMARKS.md P8.)
        let mut dirty = true;
        loop {
            if dirty || !self.lease.is_live() {
                let desired = self.desired.borrow_and_update().clone();
                if desired.shutdown {
                    self.lease.release().await;
                    self.state.send_modify(|s| s.stopped = true);
                    return;
                }
                match self.converge(&desired.keys).await {
                    Ok(()) => {
                        self.lease.succeeded();
                        self.publish(&desired.keys, None);
                    }
                    Err(e) => {
                        let delay = self.lease.failed();
                        warn!(error = %e, retry_in = ?delay, "lease group not in sync; retrying");
                        self.publish(&desired.keys, Some(e.to_string()));
                    }
                }
            }
            dirty = match self.wait().await {
                Wake::Desired => true,
                Wake::Recheck => {
                    self.recheck_at = None;
                    self.lease.written_mut().recheck();
                    true
                }
                // A lost stream or lease is reopened or granted above
                // (`is_live`); only a retry needs the keys looked at again.
                Wake::Lease(w) => self.lease.on(w).await == LeaseNews::RetryDue,
            };
        }
    }

    /// Wait for the handle, the lease or the recheck.
    async fn wait(&mut self) -> Wake {
        let recheck_at = self.recheck_at;
        tokio::select! {
            biased;
            r = self.desired.changed() => {
                if r.is_err() {
                    self.desired = watch::channel(Desired { keys: BTreeMap::new(), shutdown: true }).1;
                }
                Wake::Desired
            }
            w = self.lease.next() => Wake::Lease(w),
            _ = sleep_until_opt(recheck_at) => Wake::Recheck,
        }
    }

    /// Tell the handle where the group stands (once per change).
    fn publish(&self, desired: &BTreeMap<String, Vec<u8>>, retrying: Option<String>) {
        let lease = self.lease.id().map(LeaseId);
        let next = self.lease.written().state(desired, lease, retrying);
        self.state.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    }

    /// One pass towards `desired`: adopt or grant the lease, keep it
    /// alive, and write what differs.
    async fn converge(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        if self.lease.adopting() && !desired.is_empty() {
            self.try_adopt(desired).await?;
        }
        self.lease.hold().await?;
        let ops = self.lease.written_mut().plan(desired);
        for chunk in ops.chunks(BATCH) {
            self.write(chunk).await?;
        }
        Ok(())
    }

    /// Apply a batch, each key in a transaction of its own.
    ///
    /// Each key's guard and write are a top-level txn, never a txn nested
    /// in a batch: etcd 3.4.23 and 3.5.1 check the permission of a txn's
    /// top-level operations only, so a nested put would write outside the
    /// etcd user's role instead of being refused (the RBAC test in
    /// tests/tests/trust.rs). One round trip per key costs about a
    /// millisecond on loopback; a group's keys change one at a time after
    /// the first pass.
    async fn write(&mut self, ops: &[Op]) -> Result<()> {
        for op in ops {
            self.write_one(op).await?;
        }
        Ok(())
    }

    /// One key's conditional write (`key_txn`).
    async fn write_one(&mut self, op: &Op) -> Result<()> {
        let lease = self.lease.id().unwrap_or_default();
        let txn = key_txn(op, lease);
        let resp = self
            .lease
            .rpc()
            .call_within("txn", self.lease.op_limit(), |c| {
                let (mut kv, txn) = (c.kv(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) if classify(&e) == Class::LeaseNotFound => {
                warn!(lease = %LeaseId(lease), "the group's lease is gone; granting a new one and writing every key again");
                self.lease.lose();
                return Err(Error::request("put", e));
            }
            Err(e) if matches!(classify(&e), Class::PermissionDenied | Class::Fatal) => {
                let why = Error::from_etcd("put", op.key(), e).to_string();
                warn!(key = op.key(), error = %why, "etcd refuses this key; the others go on");
                self.lease.written_mut().refused(op, why);
                self.blocked();
                return Ok(());
            }
            Err(e) => return Err(Error::request("txn", e)),
        };
        match op {
            Op::Put(k, v) if resp.succeeded() => {
                // The guard held: another lease has the key.
                let holder = resp
                    .op_responses()
                    .into_iter()
                    .find_map(|r| match r {
                        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.lease()),
                        _ => None,
                    })
                    .unwrap_or_default();
                warn!(key = %k, holder = %LeaseId(holder), "another writer holds this key; not overwriting it");
                self.lease
                    .written_mut()
                    .conflict(k, v.clone(), LeaseId(holder));
                self.blocked();
            }
            _ => self.lease.written_mut().applied(op),
        }
        Ok(())
    }

    /// A key was blocked: try blocked keys again within a TTL.
    fn blocked(&mut self) {
        if self.recheck_at.is_none() {
            self.recheck_at = Some(Instant::now() + self.recheck_every);
        }
    }

    /// Find the live lease that holds most of our keys with our values,
    /// and take it over if it was granted with our TTL.
    async fn try_adopt(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Result<()> {
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
                .lease
                .rpc()
                .call_within("get", self.lease.op_limit(), |c| {
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
        let Some(id) = adoption_candidate(desired, &found) else {
            return Ok(());
        };
        let Some(keys) = self.lease.adopt(id, |_| true).await? else {
            return Ok(());
        };
        let ledger = self.lease.written_mut();
        ledger.adopted(id, &keys, &found);
        info!(
            lease = %LeaseId(id),
            keys = ledger.held(),
            "adopting the live lease that already holds these registrations"
        );
        Ok(())
    }
}

/// A key's conditional write: put unless another lease holds the key
/// (then read it, to name the holder); delete only while it is ours.
fn key_txn(op: &Op, lease: i64) -> Txn {
    match op {
        Op::Put(k, v) => Txn::new()
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
        Op::Delete(k) => Txn::new()
            .when([Compare::lease(k.as_str(), CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(k.as_str(), None)]),
    }
}
