//! [`Client`]: the public facade. It holds the request path ([`Rpc`]) and
//! starts every feature with it: watches (`watch`), membership
//! (`members`), config (`config`), registrations (`register`) and lease
//! groups (`lease_group`), which hold the machinery; plain reads and
//! writes are here. Nothing below imports this module.

use std::time::Duration;

use etcd_client::{DeleteOptions, PutOptions};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::config::{ConfigOptions, ConfigWatch};
use crate::error::{Error, Result};
use crate::key::validate_key;
use crate::lease_group::LeaseGroup;
use crate::lease_options::RegisterOptions;
use crate::members::Membership;
use crate::merged::MergedWatchStream;
use crate::node::{LeaseId, Node, Snapshot};
use crate::register::Registration;
use crate::rpc::Rpc;
use crate::watch::{WatchHandle, WatchOptions, WatchStream};

/// A connected etcd client. Cheap to clone; clones share one connection
/// per member (see the `pool` module for how members are chosen).
#[derive(Clone)]
pub struct Client {
    /// The request path every call and every feature started here uses.
    rpc: Rpc,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.rpc.endpoints())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The facade over a request path that has been checked to answer
    /// (see `ConnectOptions::connect`).
    pub(crate) fn new(rpc: Rpc) -> Self {
        Self { rpc }
    }

    /// The endpoint URLs this client spreads its requests over.
    pub fn endpoints(&self) -> &[String] {
        self.rpc.endpoints()
    }

    /// The request timeout from [`ConnectOptions::with_request_timeout`](crate::ConnectOptions::with_request_timeout).
    pub fn request_timeout(&self) -> Duration {
        self.rpc.request_timeout()
    }

    /// Watch every key under the directory `prefix`: first a snapshot, then
    /// each change, classified set / update / delete, with automatic resume
    /// and compaction resync (see the module docs of this crate).
    ///
    /// Returns at once; the snapshot is the stream's first message. The
    /// watch runs on the current tokio runtime until the stream is dropped
    /// or the handle cancels it.
    ///
    /// ```no_run
    /// # async fn f(client: discovery::Client) -> Result<(), discovery::Error> {
    /// use discovery::{WatchMessage, WatchOptions, Action};
    /// let (_handle, mut stream) = client.watch_prefix("/services/couchbase", WatchOptions::new())?;
    /// while let Some(msg) = stream.recv().await {
    ///     match msg? {
    ///         WatchMessage::Snapshot(s) => println!("backends: {:?}", s.values_lossy()),
    ///         WatchMessage::Event(e) if e.action() == Action::Update => {} // a heartbeat re-put
    ///         WatchMessage::Event(e) => println!("{} {:?}", e.action(), e.node().value_str()),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch_prefix(
        &self,
        prefix: &str,
        options: WatchOptions,
    ) -> Result<(WatchHandle, WatchStream)> {
        crate::watch::start(&self.rpc, prefix, options)
    }

    /// Watch several prefixes as one stream: one watch per prefix (each as
    /// [`Client::watch_prefix`], with the same `options`), merged into a
    /// stream of `(index, message)` where `index` is the prefix's place in
    /// `prefixes`. Returns one handle per prefix, in the same order.
    ///
    /// What it promises (see [`MergedWatchStream`]): each prefix's
    /// messages in its own revision order, with nothing lost or repeated;
    /// different prefixes interleaved as their changes arrive, with no
    /// order across them; a permanent error of any one watch ends the
    /// stream with that error (tagged with its prefix) and stops the
    /// others. Every prefix is checked before any watch starts.
    ///
    /// ```no_run
    /// # async fn f(client: discovery::Client) -> Result<(), discovery::Error> {
    /// use discovery::{WatchMessage, WatchOptions};
    /// let prefixes = ["/services/web", "/services/db"];
    /// let (_handles, mut stream) = client.watch_prefixes(&prefixes, WatchOptions::new())?;
    /// let snapshots = stream.snapshots().await.map_err(|(_, e)| e)?;
    /// for s in &snapshots {
    ///     println!("{}: {:?}", s.prefix(), s.values_lossy());
    /// }
    /// while let Some((i, msg)) = stream.recv().await {
    ///     if let WatchMessage::Event(e) = msg? {
    ///         println!("{}: {} {}", prefixes[i], e.action(), String::from_utf8_lossy(e.key()));
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch_prefixes<P: AsRef<str>>(
        &self,
        prefixes: impl IntoIterator<Item = P>,
        options: WatchOptions,
    ) -> Result<(Vec<WatchHandle>, MergedWatchStream)> {
        crate::merged::start(&self.rpc, prefixes, options)
    }

    /// List the keys under the directory `prefix` at the current revision.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Snapshot> {
        crate::watch::get_prefix(&self.rpc, prefix).await
    }

    /// Follow the members under `prefix`.
    ///
    /// Waits for the first listing, then returns a receiver whose value
    /// changes only on a **set** or a **delete**, never on an update (a
    /// same-value re-put) or a lease keep-alive. Built on
    /// [`Client::watch_prefix`], so it resumes after disconnects and resyncs
    /// after compaction. The background task ends when every receiver is
    /// dropped, or on a permanent error (logged; the receiver then reports
    /// the sender closed).
    ///
    /// ```no_run
    /// # async fn f(client: discovery::Client) -> Result<(), discovery::Error> {
    /// let mut members = client.members("/services/memcached").await?;
    /// loop {
    ///     println!("memcached: {:?}", members.borrow_and_update().values_lossy());
    ///     if members.changed().await.is_err() { break }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn members(&self, prefix: &str) -> Result<watch::Receiver<Membership>> {
        crate::members::follow(&self.rpc, prefix).await
    }

    /// Follow the configuration under `prefix` as a `T`.
    ///
    /// Returns once the current configuration has been read; fails if it
    /// does not deserialize. Later updates that do not deserialize keep the
    /// last good value and are reported through [`ConfigWatch::next_error`]
    /// and a `warn!`. All keys written in one transaction apply together.
    ///
    /// ```no_run
    /// # async fn f(client: discovery::Client) -> Result<(), discovery::Error> {
    /// #[derive(serde::Deserialize, Debug)]
    /// struct Web { port: u16, greeting: String }
    /// let cfg = client.config::<Web>("/config/web").await?;
    /// let mut values = cfg.values();
    /// loop {
    ///     println!("config: {:?}", values.borrow_and_update());
    ///     if values.changed().await.is_err() { break }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn config<T>(&self, prefix: &str) -> Result<ConfigWatch<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.config_with(prefix, ConfigOptions::new(), |_: &T| Ok(()))
            .await
    }

    /// [`Client::config`] with options and a validation step: an update
    /// that deserializes but fails `validate` is rejected the same way.
    pub async fn config_with<T, V>(
        &self,
        prefix: &str,
        options: ConfigOptions,
        validate: V,
    ) -> Result<ConfigWatch<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
        V: Fn(&T) -> std::result::Result<(), String> + Send + 'static,
    {
        crate::config::follow(&self.rpc, prefix, options, validate).await
    }

    /// Register `key = value` under a lease of `options.ttl()`.
    ///
    /// Returns at once; the work happens in the background on the current
    /// tokio runtime, retrying forever while etcd is unreachable. Watch
    /// [`Registration::state`] or await [`Registration::wait_registered`].
    ///
    /// ```no_run
    /// # async fn f(client: discovery::Client) -> Result<(), discovery::Error> {
    /// use std::time::Duration;
    /// use discovery::RegisterOptions;
    /// let reg = client.register("/services/api/1", "10.1.0.7:8080", RegisterOptions::new(Duration::from_secs(8)))?;
    /// reg.wait_registered().await?;
    /// // ... serve ...
    /// reg.deregister().await?; // revokes the lease: the key is gone at once
    /// # Ok(()) }
    /// ```
    pub fn register(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        options: RegisterOptions,
    ) -> Result<Registration> {
        crate::register::spawn(&self.rpc, key, Some(value.into()), options)
    }

    /// A registration that starts withdrawn: nothing is written until
    /// [`Registration::set_value`] is called. The sidekick uses this while
    /// its container is not running yet.
    pub fn registration(&self, key: &str, options: RegisterOptions) -> Result<Registration> {
        crate::register::spawn(&self.rpc, key, None, options)
    }

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
        initial: std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Result<LeaseGroup> {
        crate::lease_group::spawn(&self.rpc, options, initial)
    }
    /// Read one key.
    pub async fn get(&self, key: &str) -> Result<Option<Node>> {
        validate_key(key)?;
        let resp = self
            .rpc
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
            .rpc
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
            .rpc
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
            .rpc
            .call("lease time-to-live", |c| {
                let mut lc = c.lease();
                async move { lc.time_to_live(lease.0, None).await }
            })
            .await
            .map_err(|e| Error::from_etcd("lease time-to-live", &lease.to_string(), e))?;
        Ok((resp.ttl() >= 0).then(|| Duration::from_secs(resp.ttl() as u64)))
    }
}
