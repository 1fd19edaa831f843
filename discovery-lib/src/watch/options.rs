//! What a watch is asked for ([`WatchOptions`], and the [`Scope`] of keys
//! a prefix stands for) and where it stands ([`WatchStatus`]): plain
//! data, below the engine and the handle that both read it.

use std::time::{Duration, SystemTime};

use crate::key::Prefix;

/// Options for [`Client::watch_prefix`](crate::Client::watch_prefix).
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The revision to start from ([`WatchOptions::with_start_revision`]); 0 for now.
    pub(super) start_revision: i64,
    /// Silence after which etcd is asked for progress ([`WatchOptions::with_liveness`]).
    pub(super) liveness: Duration,
    /// How long a progress probe may go unanswered before the member is left.
    pub(super) probe_timeout: Duration,
    /// How many batches may wait for a slow consumer ([`WatchOptions::with_buffer`]).
    pub(super) buffer: usize,
    /// Send a [`WatchMessage::Progress`](crate::WatchMessage::Progress) after each batch ([`WatchOptions::with_progress_marks`]).
    pub(super) progress_marks: bool,
    /// Which keys the prefix stands for: set by the library's own users
    /// (config, the registration's key watch), not by crate users.
    pub(crate) scope: Scope,
}

/// Which keys a watch of a prefix `P` covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The keys under `P/` (etcd v2's directory): what users watch.
    Dir,
    /// `P` itself and the keys under `P/`: a config is either one JSON
    /// document at `P` or one key per field under it.
    SelfAndDir,
    /// `P` alone: the registration's watch on its own key.
    Key,
}

impl Scope {
    /// The etcd `[start, end)` range to list and watch. May hold more than
    /// the scope (see [`Prefix::self_and_dir_range`]); [`Scope::covers`]
    /// filters.
    pub(super) fn range(self, p: &Prefix) -> (Vec<u8>, Vec<u8>) {
        match self {
            Scope::Dir => p.dir_range(),
            Scope::SelfAndDir => p.self_and_dir_range(),
            Scope::Key => {
                let key = p.as_str().as_bytes().to_vec();
                // The smallest key after `key`: etcd's range of one key.
                let mut end = key.clone();
                end.push(0);
                (key, end)
            }
        }
    }

    pub(super) fn covers(self, p: &Prefix, key: &[u8]) -> bool {
        match self {
            Scope::Dir => p.contains(key),
            Scope::SelfAndDir => p.covers(key),
            Scope::Key => key == p.as_str().as_bytes(),
        }
    }
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchOptions {
    /// Start now: the snapshot is the current state.
    pub const fn new() -> Self {
        Self {
            start_revision: 0,
            liveness: Duration::from_secs(3),
            probe_timeout: Duration::from_secs(2),
            buffer: 64,
            progress_marks: false,
            scope: Scope::Dir,
        }
    }

    /// Continue from a known revision: the snapshot is the prefix as it was
    /// at `revision` (an etcd range read at that revision) and events start
    /// at `revision + 1` (etcd's watch `start_revision`).
    ///
    /// If etcd has compacted `revision` away, the snapshot is the current
    /// state instead and is marked [`Snapshot::is_resync`](crate::Snapshot::is_resync).
    pub const fn with_start_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }

    /// After this long without any message, ask etcd for a progress
    /// notification (`WatchProgressRequest`); if nothing at all arrives
    /// within `timeout` after that, the stream is treated as dead and
    /// resumed elsewhere. Catches frozen members and half-open connections.
    pub const fn with_liveness(mut self, idle: Duration, timeout: Duration) -> Self {
        self.liveness = idle;
        self.probe_timeout = timeout;
        self
    }

    /// Send a [`WatchMessage::Progress`](crate::WatchMessage::Progress) after each batch of events (all
    /// the events of one or more whole revisions) and after a resync.
    pub const fn with_progress_marks(mut self, on: bool) -> Self {
        self.progress_marks = on;
        self
    }

    /// How many batches (etcd responses) may wait for a slow consumer before
    /// the engine stops reading from etcd (etcd then buffers on its side).
    pub const fn with_buffer(mut self, messages: usize) -> Self {
        self.buffer = if messages == 0 { 1 } else { messages };
        self
    }
}

/// Where a watch stands, for logs, status lines and readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchStatus {
    /// Listing the prefix or opening the first stream.
    Connecting,
    /// Streaming; everything up to `revision` has been delivered.
    Live {
        /// The last revision applied.
        revision: i64,
        /// The etcd member id serving the stream.
        member: u64,
    },
    /// The stream failed; retrying with backoff.
    Reconnecting {
        /// When the stream was last healthy.
        since: SystemTime,
        /// Attempts so far.
        attempt: u32,
        /// The last failure.
        error: String,
    },
    /// The watch ended (cancelled, dropped, or a permanent error).
    Stopped,
}
