//! The one path every etcd request of this crate takes: [`Rpc::call`],
//! [`Rpc::call_within`] and [`Rpc::call_on`] pick a member from the
//! [`Pool`], bound each attempt in time, move on from a member that does
//! not answer, and refresh a token etcd forgot.
//!
//! The bottom floor of the library: the watch engine, the keep-alives and
//! every actor hold an [`Rpc`] and nothing above it; the public
//! [`Client`](crate::Client) holds one too and starts them with it (as
//! etcd-client's `rpc/*` never see its `Client`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Class, chain, classify};
use crate::pool::{Conn, Pool};

/// The request path: the members' connections and the request timeout.
/// Cheap to clone; clones share one connection per member.
#[derive(Clone)]
pub(crate) struct Rpc {
    /// The members' connections, shared by every clone and every task.
    pool: Arc<Pool>,
    /// The request timeout: the most any single request may take.
    timeout: Duration,
}

/// The error of an attempt at `op` that got no answer within `within`.
fn no_answer(op: &str, within: Duration) -> etcd_client::Error {
    etcd_client::Error::GRpcStatus(tonic::Status::deadline_exceeded(format!(
        "no answer to {op} within {within:?}"
    )))
}

impl Rpc {
    /// The request path over `pool`, each request bounded by `timeout`.
    pub(crate) fn new(pool: Pool, timeout: Duration) -> Self {
        Self {
            pool: Arc::new(pool),
            timeout,
        }
    }

    /// The endpoint URLs requests are spread over.
    pub(crate) fn endpoints(&self) -> &[String] {
        self.pool.urls()
    }

    /// The most any single request may take.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.timeout
    }

    /// The members' connections, for a stream's owner that marks its
    /// member to avoid, or refreshes its token.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
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

    /// [`Rpc::call`] with a tighter bound than the request timeout, for
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

    /// [`Rpc::call_within`], also saying which member answered: a stream
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
