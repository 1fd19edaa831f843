//! [`Client`]: the handle every feature of this crate hangs off, and the
//! one path through which every etcd request goes.
//!
//! * The request path: [`Client::call`], [`Client::call_within`] and
//!   [`Client::call_on`] pick a member from the [`Pool`], bound each attempt
//!   in time, move on from a member that does not answer, and refresh a
//!   token etcd forgot. Every module sends its requests through them.
//! * The public calls: plain reads and writes here; watches, membership,
//!   config and registration delegate to their modules (`watch`,
//!   `members`, `config`, `register`), which hold the machinery.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{DeleteOptions, PutOptions};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{ConfigOptions, ConfigWatch};
use crate::error::{Class, Error, Result, chain, classify};
use crate::key::validate_key;
use crate::lease_group::LeaseGroup;
use crate::members::Membership;
use crate::node::{LeaseId, Node, Snapshot};
use crate::pool::{Conn, Pool};
use crate::register::{RegisterOptions, Registration};
use crate::watch::{WatchHandle, WatchOptions, WatchStream};

/// A connected etcd client. Cheap to clone; clones share one connection
/// per member (see the `pool` module for how members are chosen).
#[derive(Clone)]
pub struct Client {
    /// The members' connections, shared by every clone and every task.
    pool: Arc<Pool>,
    /// The request timeout: the most any single request may take.
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.pool.urls())
            .finish_non_exhaustive()
    }
}

fn no_answer(op: &str, within: Duration) -> etcd_client::Error {
    etcd_client::Error::GRpcStatus(tonic::Status::deadline_exceeded(format!(
        "no answer to {op} within {within:?}"
    )))
}

impl Client {
    pub(crate) fn new(pool: Pool, timeout: Duration) -> Self {
        Self {
            pool: Arc::new(pool),
            timeout,
        }
    }

    /// The endpoint URLs this client spreads its requests over.
    pub fn endpoints(&self) -> &[String] {
        self.pool.urls()
    }

    /// The request timeout from [`ConnectOptions::with_request_timeout`](crate::ConnectOptions::with_request_timeout).
    pub fn request_timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
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
        crate::watch::start(self, prefix, options)
    }

    /// List the keys under the directory `prefix` at the current revision.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Snapshot> {
        crate::watch::get_prefix(self, prefix).await
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
        crate::members::follow(self, prefix).await
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
        crate::config::follow(self, prefix, options, validate).await
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
        crate::register::spawn(self, key, Some(value.into()), options)
    }

    /// A registration that starts withdrawn: nothing is written until
    /// [`Registration::set_value`] is called. The sidekick uses this while
    /// its container is not running yet.
    pub fn registration(&self, key: &str, options: RegisterOptions) -> Result<Registration> {
        crate::register::spawn(self, key, None, options)
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
        crate::lease_group::spawn(self, options, initial)
    }
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

    /// Send one request, bounded by the request timeout, moving on to
    /// another member when the one picked does not answer.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        request: F,
    ) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_within(op, self.request_timeout(), request).await
    }

    /// [`Client::call`] with a tighter bound than the request timeout, for
    /// loops that must leave a frozen member in time (a keep-alive loop
    /// waits at most one interval).
    pub(crate) async fn call_within<T, F, Fut>(
        &self,
        op: &'static str,
        limit: Duration,
        request: F,
    ) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_on(op, limit, request).await.map(|(v, _)| v)
    }

    /// [`Client::call_within`], also saying which member answered: a stream
    /// opened this way lives on that member, and its owner marks it to
    /// avoid ([`Pool::avoid`]) when the stream goes silent.
    ///
    /// With several members, one attempt may use at most half the limit,
    /// so that a member that does not answer leaves time to ask another. A
    /// request that got no answer may have been applied all the same: sent
    /// again, a put of the same value is an `update`, a second revoke finds
    /// no lease; every caller here tolerates that.
    pub(crate) async fn call_on<T, F, Fut>(
        &self,
        op: &'static str,
        limit: Duration,
        mut request: F,
    ) -> Result<(T, usize), etcd_client::Error>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let pool = self.pool();
        let limit = limit.min(self.request_timeout());
        let deadline = Instant::now() + limit;
        let n = pool.urls().len();
        let per_try = if n > 1 { limit / 2 } else { limit };
        let mut last = None;
        let mut refreshed = false;
        // Every member in turn; around again while time remains, since a
        // member that refuses connections fails at once.
        for i in pool.order().into_iter().cycle().take(3 * n) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let until = deadline.min(now + per_try);
            let attempt = async {
                let conn = pool.conn(i).await?;
                request(conn).await
            };
            match tokio::time::timeout_at(until, attempt).await {
                Ok(Ok(v)) => {
                    pool.trust(i);
                    return Ok((v, i));
                }
                Ok(Err(e)) if classify(&e) == Class::Unavailable => {
                    pool.avoid(i, op, &chain(&e));
                    last = Some(e);
                }
                // etcd forgot our token (a restart, or its TTL): a fresh one
                // on this member, and the request again.
                Ok(Err(e)) if classify(&e) == Class::StaleToken && !refreshed => {
                    refreshed = true;
                    let refresh = pool.refresh_token(i);
                    if tokio::time::timeout_at(deadline, refresh).await.is_err() {
                        return Err(e);
                    }
                    last = Some(e);
                    continue;
                }
                // An answer (a refusal, a compaction, an expired lease): the
                // member works, and another would say the same.
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    pool.avoid(i, op, "no answer in time");
                    last = Some(no_answer(op, until - now));
                }
            }
            if n == 1 && !refreshed {
                break;
            }
        }
        Err(last.unwrap_or_else(|| no_answer(op, limit)))
    }
}
