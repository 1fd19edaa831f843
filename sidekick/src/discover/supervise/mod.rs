//! `--exec`: run a child with the discovered backends in its environment,
//! restart (or signal) it when they really change, pass signals on, reap
//! every child, and exit with the child's code.
//!
//! "Really change" is judged twice: a change must be one that calls for it
//! (a set, or a delete unless `--restart-on set`; never an update), and
//! when the restart is due (after `--wait` and `--splay`), what the child
//! would be given must differ from what it has. A backend that vanishes
//! and comes back at the same address within the wait (a sidekick
//! restarted with `systemctl restart`: its SIGTERM revokes, the new one
//! registers again) costs no restart.
//!
//! The child is exec'd directly (never through a shell) in a process group
//! of its own; signals go to that group. `discover` makes itself a child
//! subreaper, so orphans of the child are reaped too: no zombies.
//!
//! Layout:
//! - this file: the types the rest of discover hands in ([`ExecOptions`],
//!   [`ChildInput`], [`Feed`]) and [`supervise`], the event loop that
//!   turns SIGCHLD, feed messages, timers and signals into calls on the
//!   state machine;
//! - `machine.rs`: the state machine, `Supervisor`:
//!   every decision, and no system call (unit-tested on tokio's paused
//!   clock in `tests.rs`);
//! - `state.rs`: what it can be in: the child's states (`Child`), a
//!   restart waiting for a burst to end (`Pending`), and `Flow`;
//! - `os.rs`: the system side behind the `ChildOs` trait: spawn, `killpg`,
//!   the snapshot file, and the reaper.

mod machine;
mod os;
mod state;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::debug;

use crate::common::metrics::Metrics;
use crate::common::signals::ExecSignals;
use crate::common::time::sleep_until_opt;
use machine::Supervisor;
use state::Flow;

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
    fn same_backends(&self, other: &ChildInput) -> bool {
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

/// Run the child until it exits by itself (its code is returned), or until
/// discover is asked to stop (the child is stopped and its code returned).
pub async fn supervise(
    opts: ExecOptions,
    initial: ChildInput,
    mut feed: mpsc::Receiver<Feed>,
    mut signals: ExecSignals,
    metrics: Arc<Metrics>,
) -> anyhow::Result<i32> {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        debug!(error = %e, "could not become a child subreaper; only direct children are reaped");
    }
    let mut sigchld = signal(SignalKind::child()).context("cannot watch SIGCHLD")?;
    let real = os::RealOs::new(&opts);
    let mut sup = Supervisor::start(opts, initial, real, metrics)?;
    let mut feed_open = true;
    loop {
        let flow = tokio::select! {
            biased;
            _ = sigchld.recv() => {
                let mut flow = Flow::Continue;
                for (pid, code) in os::reap_all() {
                    flow = sup.on_child_exit(pid, code);
                    if !matches!(flow, Flow::Continue) {
                        break;
                    }
                }
                flow
            }
            msg = feed.recv(), if feed_open => match msg {
                Some(m) => sup.on_feed(m),
                None => {
                    feed_open = false;
                    Flow::Continue
                }
            },
            _ = sleep_until_opt(sup.next_deadline()) => sup.on_timer(),
            sig = signals.recv() => sup.on_signal(sig),
        };
        if let Flow::Done(result) = flow {
            return result;
        }
    }
}
