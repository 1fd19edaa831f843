//! The group's writes: what differs between the keys wanted and the keys
//! written (`converge`), sent as conditional transactions in batches
//! (`write`), with conflicts and refusals set aside (`block`).

use super::*;

impl Actor {
    pub(super) async fn converge(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Result<()> {
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
    pub(super) async fn write(&mut self, ops: &[Op]) -> Result<()> {
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

    pub(super) fn block(&mut self, key: &str, value: Vec<u8>) {
        self.blocked.insert(key.to_owned(), Blocked { value });
        if self.recheck_at.is_none() {
            self.recheck_at = Some(Instant::now() + self.ttl);
        }
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
