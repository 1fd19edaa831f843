//! What the rest of discover hands the supervisor: how to run the child
//! ([`ExecOptions`]), what to give it ([`ChildInput`]), and the feed of
//! changes ([`Feed`]). A leaf: the supervisor's rooms import it, and it
//! imports none of them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

/// How to run and restart the child.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The child's argv; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<OsString>,
    /// How discover stops the child when it decides to (a restart, or a
    /// failure of its own); a SIGTERM or SIGINT sent to discover is passed
    /// on as it is.
    pub kill_signal: Signal,
    /// Wait up to this long after `kill_signal` before SIGKILL.
    pub kill_timeout: Duration,
    /// Signal the child instead of restarting it.
    pub reload_signal: Option<Signal>,
    /// Coalesce a burst of changes (`--wait MIN:MAX`).
    pub wait: Option<Wait>,
    /// A random delay up to this before each restart.
    pub splay: Option<Duration>,
    /// Restart a child that exits by itself (with backoff) instead of exiting with its code.
    pub restart_child: bool,
    /// Write the snapshot here (atomically) before each start or reload.
    pub snapshot_file: Option<PathBuf>,
}

/// `--wait MIN:MAX`: act once nothing changed for `min`, but never later
/// than `max` after the first change of the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// The quiet time that ends a burst.
    pub min: Duration,
    /// The longest a burst may put off the restart.
    pub max: Duration,
}

/// What the child should be given.
#[derive(Debug, Clone)]
pub struct ChildInput {
    /// Variables to set, on top of discover's own environment.
    pub env: Vec<(String, OsString)>,
    /// The snapshot, for `--snapshot-file`.
    pub snapshot: serde_json::Value,
}

impl ChildInput {
    /// Whether `self` and `other` give the child the same backends (or
    /// config): the same variables, whatever revision they were read at.
    pub(super) fn same_backends(&self, other: &ChildInput) -> bool {
        let content = |i: &ChildInput| {
            i.env
                .iter()
                .filter(|(k, _)| k != "DISCOVER_REVISION")
                .cloned()
                .collect::<Vec<_>>()
        };
        content(self) == content(other)
    }
}

/// What the watch side sends.
#[derive(Debug)]
pub enum Feed {
    /// The state changed; `trigger` says why a restart is due (None: no restart).
    Update {
        /// The new input.
        input: ChildInput,
        /// The reason to restart or signal, if this change calls for it.
        trigger: Option<String>,
    },
    /// The watch failed for good.
    Failed(anyhow::Error),
}
