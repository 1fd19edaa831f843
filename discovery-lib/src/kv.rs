//! Plain reads and writes, for tools and tests.

use std::time::Duration;

use etcd_client::{DeleteOptions, PutOptions};

use crate::connect::Client;
use crate::error::{Error, Result};
use crate::key::validate_key;
use crate::node::{LeaseId, Node};

impl Client {
    /// Read one key.
    pub async fn get(&self, key: &str) -> Result<Option<Node>> {
        validate_key(key)?;
        let resp = self
            .call("get", |c| {
                let mut kv = c.kv();
                async move { kv.get(key, None).await }
            })
            .await
            .map_err(|e| Error::from_etcd("get", key, e))?;
        Ok(resp.kvs().first().map(Node::from_kv))
    }

    /// Write one key without a lease. Returns the write's revision.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64> {
        self.put_with_lease(key, value, None).await
    }

    /// Write one key, attached to `lease` if given. Returns the write's revision.
    pub async fn put_with_lease(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        lease: Option<LeaseId>,
    ) -> Result<i64> {
        validate_key(key)?;
        let mut opts = PutOptions::new();
        if let Some(l) = lease {
            opts = opts.with_lease(l.0);
        }
        let value: Vec<u8> = value.into();
        let resp = self
            .call("put", |c| {
                let (mut kv, value, opts) = (c.kv(), value.clone(), opts.clone());
                async move { kv.put(key, value, Some(opts)).await }
            })
            .await
            .map_err(|e| Error::from_etcd("put", key, e))?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Delete one key. Returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let resp = self
            .call("delete", |c| {
                let mut kv = c.kv();
                async move { kv.delete(key, Some(DeleteOptions::new())).await }
            })
            .await
            .map_err(|e| Error::from_etcd("delete", key, e))?;
        Ok(resp.deleted() > 0)
    }

    /// How long `lease` has left, or `None` if it no longer exists.
    pub async fn lease_time_left(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let resp = self
            .call("lease time-to-live", |c| {
                let mut lc = c.lease();
                async move { lc.time_to_live(lease.0, None).await }
            })
            .await
            .map_err(|e| Error::from_etcd("lease time-to-live", &lease.to_string(), e))?;
        Ok((resp.ttl() >= 0).then(|| Duration::from_secs(resp.ttl() as u64)))
    }
}
