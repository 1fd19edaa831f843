//! Service discovery on etcd v3, for services run as plain systemd units
//! and containers: the engine under the `sidekick` and `discover` tools,
//! and a crate your Rust services can embed.
//!
//! # Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use discovery::{ConnectOptions, RegisterOptions, WatchMessage, WatchOptions};
//!
//! # async fn run() -> Result<(), discovery::Error> {
//! // ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ... as etcdctl reads them.
//! let client = ConnectOptions::from_env()?.connect().await?;
//!
//! // Register ourselves under a lease; heartbeats wake no watcher.
//! let me = client.register("/services/api/1", "10.1.0.7:8080", RegisterOptions::new(Duration::from_secs(8)))?;
//!
//! // Follow the memcached backends: changes only on set and delete.
//! let mut memcached = client.members("/services/memcached").await?;
//! println!("memcached: {:?}", memcached.borrow().values_lossy());
//!
//! // Or see every event, classified set / update / delete.
//! let (_watch, mut events) = client.watch_prefix("/services/couchbase", WatchOptions::new())?;
//! while let Some(msg) = events.recv().await {
//!     if let WatchMessage::Event(e) = msg? {
//!         println!("{} {}", e.action(), String::from_utf8_lossy(e.key()));
//!     }
//! }
//! me.deregister().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! * [`ConnectOptions`] and [`Client`]: endpoints, TLS, auth, timeouts;
//!   `connect` checks that etcd really answers.
//! * [`Client::watch_prefix`]: a snapshot, then [`Event`]s classified
//!   [`Action::Set`] (new key or new value), [`Action::Update`] (same bytes
//!   written again) and [`Action::Delete`]. It resumes from the last
//!   revision after any disconnect (no loss, no duplicate) and resyncs with
//!   a diff after compaction.
//! * [`PrefixState`]: the one fold from a watch's snapshot and events
//!   into the current keys of a prefix; membership, config and the tools
//!   all keep their state with it.
//! * [`Client::members`]: a live ordered map of a prefix, changing only on
//!   set and delete.
//! * [`Client::register`]: a key kept alive under a lease (keep-alives are
//!   not writes), with no set while the value is unchanged, automatic
//!   re-registration after a lost lease, and revocation on
//!   [`Registration::deregister`] or drop.
//! * [`Client::config`]: a typed, validated configuration that keeps the
//!   last good value when an update is bad.
//! * [`Prefix`], [`validate_key`], [`parse_duration`]: the input rules
//!   every tool shares.
//!
//! The crate never installs a tracing subscriber or a signal handler; it
//! logs through `tracing` and leaves both to the binary.
//!
//! # Source layout
//!
//! * `client.rs`: [`Client`], its public calls, and the one request path
//!   every etcd call goes through (member choice, time bounds, token
//!   refresh); `pool.rs`: one connection per member and which to avoid.
//! * `connect/`: [`ConnectOptions`] (`mod.rs`) and turning them into a
//!   client (`establish.rs`, with `tls_probe.rs` and `insecure.rs`).
//! * `error.rs`: the error type, and the only code that reads etcd's
//!   wording (`classify`, `classify_cancel`).
//! * `watch/`: the public watch types (`mod.rs`), the engine that resumes
//!   and resyncs (`engine.rs`), what a failed or cancelled stream means
//!   (`failure.rs`), and how events fold into its state (`apply.rs`);
//!   `state.rs`: [`PrefixState`] for consumers.
//! * `register/`: the registration handle (`mod.rs`), its actor
//!   (`actor.rs`) and its lease (`lease.rs`).
//! * `lease_group/`: many keys under one lease (`mod.rs`), their
//!   conditional writes (`write.rs`) and the group's lease (`lease.rs`).
//! * `keep_alive.rs`: what both keep a lease alive with: the lease as last
//!   confirmed, and a keep-alive stream that moves to another member when
//!   it goes silent; `alarm.rs`: the timer that wakes it, once per
//!   keep-alive.
//! * `members.rs`, `config.rs`: views built on the watch.
#![deny(missing_docs)]

mod alarm;
mod client;
mod config;
mod connect;
mod duration;
mod error;
mod insecure;
mod keep_alive;
mod key;
mod lease_group;
mod members;
mod node;
mod pool;
mod register;
mod retry;
mod state;
mod tls_probe;
mod watch;

pub use client::Client;
pub use config::{ConfigOptions, ConfigWatch};
pub use connect::{ConnectOptions, DEFAULT_ENDPOINT, Password, Setting};
pub use duration::parse_duration;
pub use error::{Error, RequestError, Result, error_chain};
pub use key::{MAX_KEY_LEN, Prefix, validate_key};
pub use lease_group::{GroupState, LeaseGroup};
pub use members::Membership;
pub use node::{Action, Event, LeaseId, Node, Snapshot, WatchMessage};
pub use register::{
    MAX_TTL, MIN_INTERVAL, MIN_TTL, RegisterOptions, Registration, RegistrationState,
};
pub use retry::Backoff;
pub use state::{Applied, PrefixState};
pub use watch::{WatchHandle, WatchOptions, WatchStatus, WatchStream};
