//! The group's lease: granted, or adopted from a crashed owner
//! (`try_adopt`), and kept alive on a stream that moves to another member
//! when it goes silent.

use super::*;

impl Actor {
    pub(super) fn lose_lease(&mut self) {
        self.lease = None;
        self.keeper = None;
        self.written.clear();
    }

    pub(super) async fn acquire(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        if std::mem::take(&mut self.adopt) && !desired.is_empty() && self.try_adopt(desired).await?
        {
            return Ok(());
        }
        let lease = keep_alive::grant(&self.client, self.ttl, self.op_limit())
            .await
            .map_err(|e| Error::request("grant lease", e))?;
        info!(lease = %LeaseId(lease.id), ttl = ?lease.granted, "lease granted for the group");
        self.lease = Some(lease);
        self.written.clear();
        Ok(())
    }

    /// Find the live lease that holds most of our keys with our values,
    /// and take it over if it was granted with our TTL.
    pub(super) async fn try_adopt(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Result<bool> {
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
        let ttl = keep_alive::time_to_live(&self.client, id, self.op_limit())
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
        self.lease = Some(keep_alive::Lease::confirmed_now(id, ttl.granted_ttl()));
        Ok(true)
    }

    pub(super) async fn open_keeper(&mut self) -> std::result::Result<(), etcd_client::Error> {
        let (limit, interval) = (self.op_limit(), self.interval);
        let Some(lease) = self.lease.as_mut() else {
            return Ok(());
        };
        self.keeper = Some(Keeper::open(&self.client, lease, limit, interval).await?);
        Ok(())
    }

    pub(super) async fn tick(&mut self) {
        let interval = self.interval;
        let Some(k) = self.keeper.as_mut() else {
            return;
        };
        if let Err(dead) = k.send(interval).await {
            warn!(%dead, "reconnecting the group's keep-alive to another member");
            self.drop_keeper(dead.why());
        }
    }

    pub(super) fn on_keep_alive(
        &mut self,
        r: std::result::Result<Option<(i64, u64)>, etcd_client::Error>,
    ) {
        match r {
            Ok(Some((ttl, member))) if ttl > 0 => {
                let new =
                    keep_alive::answered(&mut self.keeper, &mut self.lease, member, self.interval);
                if let Some(member) = new {
                    debug!(
                        member = format_args!("{member:x}"),
                        "the group's keep-alive stream is live"
                    );
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
        if self.lease.as_ref().is_some_and(keep_alive::Lease::lapsed) {
            self.lose_lease();
        }
    }

    pub(super) fn drop_keeper(&mut self, why: &str) {
        if let Some(k) = self.keeper.take() {
            k.retire(&self.client, why);
        }
    }
}
