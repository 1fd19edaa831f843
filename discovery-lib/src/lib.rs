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
//!   a diff after compaction. [`Client::watch_prefixes`] merges the
//!   watches of several prefixes into one stream, each message tagged with
//!   its prefix.
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
//! Imports run one way, bottom to top (`tools/imports.py` checks it):
//!
//! * Leaves: `error.rs` (the error type, and the only code that reads
//!   etcd's wording: `classify`, `classify_cancel`), `setting.rs`,
//!   `key.rs`, `node.rs`, `state.rs` ([`PrefixState`] for consumers),
//!   `lease_options.rs` ([`RegisterOptions`], shared by both lease
//!   holders), `retry.rs`, `duration.rs`, `alarm.rs` (the timer that wakes
//!   a keep-alive, once per keep-alive), `insecure.rs` and `tls_probe.rs`.
//! * The transport: `rpc.rs`, the one path every etcd request takes
//!   (member choice, time bounds, token refresh), over `pool.rs`, one
//!   connection per member and which to avoid.
//! * The engines, which hold an `Rpc` and nothing above it: `watch/`,
//!   from the bottom: what a watch is asked for and where it stands
//!   (`options.rs`), the one consistent listing (`list.rs`), the prefix
//!   as delivered and its diffing (`mirror.rs`) and what a failed or
//!   cancelled stream means and how long to wait (`failure.rs`), both
//!   plain data unit-tested without etcd, the engine that streams, resumes
//!   and resyncs on them (`engine.rs`), and the public handle and stream
//!   on top (`mod.rs`); `keep_alive.rs`, the lease as last confirmed and a
//!   keep-alive stream that moves to another member when it goes silent.
//! * `lease_holder.rs`: one lease held for keys, from grant (or adoption)
//!   through keep-alives and loss to revoke, with the retry backoff; both
//!   lease-holding features own one.
//! * The features, each started with an `Rpc`: `register/` (the handle in
//!   `handle.rs`, the actor in `actor.rs`: its write, its adoption and the
//!   watch on its own key), `lease_group/` (many keys under one lease: the
//!   handle in `handle.rs`, the keys held and blocked and their diff as
//!   plain data in `ledger.rs`, the actor's conditional writes in
//!   `actor.rs`), the views `members.rs` and `config.rs`, and
//!   `merged.rs`, several prefix watches as one stream.
//! * The facade: `client.rs`, [`Client`], which starts them all; and
//!   `connect/`, [`ConnectOptions`] (`mod.rs`) and turning them into a
//!   client (`establish.rs`).
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
mod lease_holder;
mod lease_options;
mod members;
mod merged;
mod node;
mod pool;
mod register;
mod retry;
mod rpc;
mod setting;
mod state;
mod tls_probe;
mod watch;

pub use client::Client;
pub use config::{ConfigOptions, ConfigWatch};
pub use connect::{ConnectOptions, DEFAULT_ENDPOINT, Password};
pub use duration::parse_duration;
pub use error::{Error, RequestError, Result, error_chain};
pub use key::{MAX_KEY_LEN, Prefix, validate_key};
pub use lease_group::{GroupState, LeaseGroup};
pub use lease_options::{MAX_TTL, MIN_INTERVAL, MIN_TTL, RegisterOptions};
pub use members::Membership;
pub use merged::MergedWatchStream;
pub use node::{Action, Event, LeaseId, Node, Snapshot, WatchMessage};
pub use register::{Registration, RegistrationState};
pub use retry::{Backoff, sleep_until_opt};
pub use setting::Setting;
pub use state::{Applied, PrefixState};
pub use watch::{WatchHandle, WatchOptions, WatchStatus, WatchStream};
