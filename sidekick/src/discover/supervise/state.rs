//! What the supervisor can be in: the child's states, the restart a burst
//! of changes is waiting for, and what the event loop does next. Only
//! [`Supervisor`](super::machine::Supervisor)'s `on_*` methods move
//! between them.

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::time::Instant;

use super::input::ChildInput;

/// What the event loop does after an event.
#[derive(Debug)]
pub(super) enum Flow {
    /// Keep going.
    Continue,
    /// discover is done: the child's exit code, or why discover failed.
    Done(anyhow::Result<i32>),
}

/// What happens once a child we are stopping has exited.
#[derive(Debug)]
pub(super) enum Then {
    /// Start it again with the newest input (a restart).
    Restart,
    /// Exit: with the child's code (`None`), or with this error.
    Exit(Option<anyhow::Error>),
}

/// A burst of changes that calls for a restart, not acted on yet.
#[derive(Debug)]
pub(super) struct Pending {
    /// The burst's first change: `--wait` MAX counts from here, so a
    /// steady trickle of changes cannot put the restart off for ever.
    pub(super) first: Instant,
    /// The latest change: `--wait` MIN counts from here.
    pub(super) last: Instant,
    /// The `--splay` delay, drawn once per burst so that each change does
    /// not move the restart again.
    pub(super) splay: Duration,
    /// The first few changes, for the log line that says why.
    pub(super) reasons: Vec<String>,
}

/// Where the child is. One value at a time, so "stopping, yet no child"
/// or "waiting to respawn while one runs" cannot be written down.
#[derive(Debug)]
pub(super) enum Child {
    /// A child runs.
    Running {
        /// Its pid, which is also its process group's id.
        pid: Pid,
        /// What it was started (or last reloaded) with: a restart is due
        /// only if the newest input differs from this.
        given: ChildInput,
        /// When it started, to tell a healthy run from a crash loop.
        started: Instant,
        /// A restart that waits for the burst to end (`--wait`, `--splay`).
        /// Only a running child has one: any other state starts the next
        /// child with the newest input anyway.
        pending: Option<Pending>,
    },
    /// We sent the child a signal to stop and wait for it to exit.
    Stopping {
        /// Its pid (and process group).
        pid: Pid,
        /// The signal it was sent, for the log.
        signal: Signal,
        /// When to send SIGKILL (`--kill-timeout`); `None` once it was sent.
        kill_at: Option<Instant>,
        /// What to do once it has exited.
        then: Then,
    },
    /// The child exited by itself and `--restart-child` starts another one
    /// at `at`, after the backoff.
    WaitingToRespawn {
        /// When to start it.
        at: Instant,
    },
    /// The child has exited and discover is on its way out.
    Done,
}
