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
//! - this file: [`supervise`], the event loop that turns SIGCHLD, feed
//!   messages, timers and signals into calls on the state machine;
//! - `input.rs`: the types the rest of discover hands in ([`ExecOptions`],
//!   [`ChildInput`], [`Feed`]), a leaf that every room here imports;
//! - `machine.rs`: the state machine, `Supervisor`:
//!   every decision, and no system call (unit-tested on tokio's paused
//!   clock in `tests.rs`);
//! - `state.rs`: what it can be in: the child's states (`Child`), a
//!   restart waiting for a burst to end (`Pending`), and `Flow`;
//! - `os.rs`: the system side behind the `ChildOs` trait: spawn, `killpg`,
//!   the snapshot file, and the reaper.

mod input;
mod machine;
mod os;
mod state;
#[cfg(test)]
mod tests;

pub use input::{ChildInput, ExecOptions, Feed, Wait};

use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::debug;

use crate::common::metrics::Metrics;
use crate::common::signals::ExecSignals;
use crate::common::time::sleep_until_opt;
use machine::Supervisor;
use state::Flow;

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
