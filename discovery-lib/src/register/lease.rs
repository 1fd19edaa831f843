//! The registration's lease: granting or adopting it, and keeping it
//! alive on a stream that moves to another member when it goes silent.

use tracing::{debug, info, warn};

use super::actor::Actor;
use crate::error::{Class, Error, Result, classify};
use crate::keep_alive::{self, Keeper};
use crate::node::LeaseId;

impl Actor {
    /// Time to send a keep-alive, or to notice the last one went unanswered.
    pub(super) async fn tick(&mut self) {
        let interval = self.interval;
        let Some(k) = self.keeper.as_mut() else {
            return;
        };
        if let Err(dead) = k.send(interval).await {
            warn!(key = %self.key, %dead, "reconnecting the keep-alive to another member");
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
                    debug!(key = %self.key, member = format_args!("{member:x}"), "keep-alive stream live");
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
    /// another member. The key watch is reopened too: it has no liveness
    /// probe of its own (it is quiet by design), and a member that stopped
    /// answering keep-alives may hold it as well.
    pub(super) fn drop_keeper(&mut self, why: &str) {
        if let Some(k) = self.keeper.take() {
            k.retire(&self.client, why);
            self.key_watch = None;
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
        let lease = keep_alive::grant(&self.client, self.ttl, self.op_limit())
            .await
            .map_err(|e| Error::from_etcd("grant lease", &self.key, e))?;
        if lease.granted.as_secs() != self.ttl.as_secs() {
            warn!(key = %self.key, asked = ?self.ttl, granted = ?lease.granted, "etcd granted a different TTL than asked");
        }
        self.lease = Some(lease);
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
        let ttl = keep_alive::time_to_live(&self.client, id, self.op_limit())
            .await
            .map_err(|e| Error::from_etcd("lease time-to-live", &self.key, e))?;
        let only_ours = ttl.keys().len() == 1 && ttl.keys()[0] == self.key.as_bytes();
        if ttl.ttl() <= 0 || !only_ours || ttl.granted_ttl() != self.ttl.as_secs() as i64 {
            return Ok(false);
        }
        info!(key = %self.key, lease = %LeaseId(existing.lease()), "adopting the live lease that already holds this value");
        self.lease = Some(keep_alive::Lease::confirmed_now(id, ttl.granted_ttl()));
        self.written = Some((value.to_vec(), existing.mod_revision()));
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
