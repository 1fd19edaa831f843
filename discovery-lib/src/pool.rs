//! One connection per etcd member, and which members to avoid for a while.
//!
//! etcd-client balances requests over all endpoints, but its balancer
//! cannot be told that a member stopped answering (frozen by SIGSTOP, or
//! behind a half-open network path): the connection looks healthy until
//! TCP (or HTTP/2 pings, when asked for) gives up, which takes seconds at
//! best, and meanwhile requests and new streams keep landing there. A
//! registration whose keep-alives land on a frozen member twice in a row
//! loses its lease.
//!
//! So the library keeps a connection per member of its own. Each request
//! goes to a member it has no reason to doubt (in turn, to spread the
//! load), moves on to the next member when an attempt gets no answer in
//! time or cannot reach it, and a member that failed is avoided for a
//! while. Long-lived streams (watches, lease keep-alives) are opened the
//! same way and stay on the member that answered; when one goes silent,
//! its owner marks that member to avoid before opening a new stream.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

/// How long a member that failed is tried only after the others.
const AVOID_FOR: Duration = Duration::from_secs(10);

/// Large prefixes come back in one response; tonic's 4 MiB default would
/// refuse a listing of a few tens of thousands of keys.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

pub(crate) struct Pool {
    /// The members' client URLs, in the order given.
    urls: Vec<String>,
    /// How every member's connection is made (timeouts, auth, TLS).
    options: etcd_client::ConnectOptions,
    /// `--insecure-skip-tls-verify`: connections are made over a channel of
    /// our own that accepts any server certificate (see `insecure`).
    insecure: Option<crate::insecure::Settings>,
    /// One per URL, same order.
    members: Vec<Member>,
    /// Where the next request starts looking, so load is spread in turn.
    next: AtomicUsize,
}

struct Member {
    /// Made on first use: with auth, connecting is itself a request.
    conn: tokio::sync::Mutex<Option<etcd_client::Client>>,
    /// Tried only after the others until then: it failed or went silent.
    avoid_until: Mutex<Option<Instant>>,
}

impl Pool {
    pub(crate) fn new(
        urls: Vec<String>,
        options: etcd_client::ConnectOptions,
        insecure: Option<crate::insecure::Settings>,
    ) -> Self {
        let members = urls
            .iter()
            .map(|_| Member {
                conn: tokio::sync::Mutex::new(None),
                avoid_until: Mutex::new(None),
            })
            .collect();
        Self {
            urls,
            options,
            insecure,
            members,
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    fn avoided_until(&self, i: usize) -> Option<Instant> {
        let until = *self.members[i]
            .avoid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        until.filter(|t| *t > Instant::now())
    }

    /// The members to try for one call: in turn from a moving start, the
    /// ones to avoid last (those that may come back soonest first).
    pub(crate) fn order(&self) -> Vec<usize> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        // Stable: members not avoided keep their turn, and None sorts first.
        order.sort_by_key(|i| self.avoided_until(*i));
        order
    }

    pub(crate) async fn conn(&self, i: usize) -> Result<Conn, etcd_client::Error> {
        let mut slot = self.members[i].conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(Conn(c.clone()));
        }
        let url = self.urls[i].as_str();
        let c = match &self.insecure {
            Some(s) if url.starts_with("https://") => {
                let channel = crate::insecure::channel(url, s)?;
                etcd_client::Client::from_channel(
                    etcd_client::Channel::Tonic(channel),
                    Some(self.options.clone()),
                )
                .await?
            }
            _ => etcd_client::Client::connect([url], Some(self.options.clone())).await?,
        };
        *slot = Some(c.clone());
        Ok(Conn(c))
    }

    /// Try member `i` after the others for a while.
    pub(crate) fn avoid(&self, i: usize, op: &str, why: &str) {
        if self.members.len() < 2 {
            return;
        }
        debug!(member = %self.urls[i], op, why, avoid_for = ?AVOID_FOR, "avoiding a member that did not answer");
        *self.members[i]
            .avoid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + AVOID_FOR);
    }

    pub(crate) fn trust(&self, i: usize) {
        let mut until = self.members[i]
            .avoid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if until.is_some() {
            *until = None;
        }
    }

    /// Authenticate member `i`'s connection again (a token etcd forgot).
    pub(crate) async fn refresh_token(&self, i: usize) -> Result<(), etcd_client::Error> {
        self.conn(i).await?.0.refresh_token().await
    }
}

/// One member's connection, as a request sees it. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Conn(etcd_client::Client);

impl Conn {
    pub(crate) fn kv(&self) -> etcd_client::KvClient {
        self.0.kv_client().max_decoding_message_size(MAX_MESSAGE)
    }

    pub(crate) fn watch_client(&self) -> etcd_client::WatchClient {
        self.0.watch_client().max_decoding_message_size(MAX_MESSAGE)
    }

    pub(crate) fn lease(&self) -> etcd_client::LeaseClient {
        self.0.lease_client()
    }

    pub(crate) fn maintenance(&self) -> etcd_client::MaintenanceClient {
        self.0.maintenance_client()
    }
}
