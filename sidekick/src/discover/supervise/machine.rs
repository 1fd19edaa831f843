//! The supervisor's decisions as a state machine: one [`Child`] state at a
//! time (the states are in `state.rs`), changed only by the `on_*` methods,
//! which the event loop calls (and the unit tests, on tokio's paused
//! clock). Nothing here makes a system call; that is [`ChildOs`]'s job.

use std::sync::Arc;
use std::time::Duration;

use discovery::Backoff;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::input::{ChildInput, ExecOptions, Feed};
use super::os::ChildOs;
use super::state::{Child, Flow, Pending, Then};
use crate::common::metrics::Metrics;
use crate::common::signals::ExecSignals;

/// A child that ran at least this long before exiting by itself resets the
/// `--restart-child` backoff; one that dies sooner waits longer each time.
pub(super) const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// The `--exec` supervisor: the child's state, and everything needed to
/// decide what comes next.
#[derive(Debug)]
pub(super) struct Supervisor<O: ChildOs> {
    /// The system side: spawn, signal, snapshot.
    os: O,
    /// The flags.
    opts: ExecOptions,
    /// The newest input from the feed: the next start or reload gives the
    /// child this, whatever came between.
    current: ChildInput,
    /// Where the child is.
    child: Child,
    /// `--restart-child` delays: growing while the child keeps dying,
    /// reset after a healthy run.
    backoff: Backoff,
    /// Draws the `--splay` delays (seeded in tests).
    pub(super) rng: fastrand::Rng,
    /// `child_restarts_total{kind}`.
    metrics: Arc<Metrics>,
}

impl<O: ChildOs> Supervisor<O> {
    /// Start the first child with `initial`.
    pub(super) fn start(
        opts: ExecOptions,
        initial: ChildInput,
        os: O,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let mut sup = Self {
            os,
            opts,
            current: initial,
            child: Child::Done,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            rng: fastrand::Rng::new(),
            metrics,
        };
        if let Flow::Done(Err(e)) = sup.spawn() {
            return Err(e);
        }
        Ok(sup)
    }

    /// When [`on_timer`](Self::on_timer) has something to do, if ever.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        match &self.child {
            Child::Running {
                pending: Some(p), ..
            } => Some(self.fire_time_of(p)),
            Child::Stopping { kill_at, .. } => *kill_at,
            Child::WaitingToRespawn { at } => Some(*at),
            Child::Running { pending: None, .. } | Child::Done => None,
        }
    }

    /// A deadline passed: restart (or reload), SIGKILL, or respawn.
    pub(super) fn on_timer(&mut self) -> Flow {
        if self.next_deadline().is_none_or(|t| t > Instant::now()) {
            return Flow::Continue;
        }
        match self.child {
            Child::Running { .. } => self.act_on_changes(),
            Child::Stopping {
                pid,
                signal,
                ref mut kill_at,
                ..
            } => {
                warn!(signal = %signal, timeout = ?self.opts.kill_timeout, "the child ignored {signal}; sending SIGKILL");
                self.os.signal(pid, Signal::SIGKILL);
                *kill_at = None;
                Flow::Continue
            }
            Child::WaitingToRespawn { .. } => {
                self.metrics.child_restart("respawn");
                self.spawn()
            }
            Child::Done => Flow::Continue,
        }
    }

    /// A message from the watch side.
    pub(super) fn on_feed(&mut self, msg: Feed) -> Flow {
        match msg {
            Feed::Update { input, trigger } => {
                self.current = input;
                if let (Some(reason), Child::Running { pending, .. }) = (trigger, &mut self.child) {
                    let now = Instant::now();
                    let splay = match self.opts.splay {
                        Some(d) => d.mul_f64(self.rng.f64()),
                        None => Duration::ZERO,
                    };
                    let p = pending.get_or_insert_with(|| Pending {
                        first: now,
                        last: now,
                        splay,
                        reasons: Vec::new(),
                    });
                    p.last = now;
                    if p.reasons.len() < 5 {
                        p.reasons.push(reason);
                    }
                }
                // Any other state starts the next child with `current`.
                Flow::Continue
            }
            Feed::Failed(e) => match self.child {
                Child::Running { .. } => {
                    warn!(error = %format!("{e:#}"), "watch failed; stopping the child");
                    self.stop(Then::Exit(Some(e)))
                }
                Child::Stopping { ref mut then, .. } => {
                    warn!(error = %format!("{e:#}"), "watch failed while the child stops; exiting once it has");
                    *then = Then::Exit(Some(e));
                    Flow::Continue
                }
                Child::WaitingToRespawn { .. } | Child::Done => Flow::Done(Err(e)),
            },
        }
    }

    /// A child (or an orphan the subreaper inherited) exited with `code`.
    pub(super) fn on_child_exit(&mut self, pid: Pid, code: i32) -> Flow {
        let ours = matches!(&self.child,
            Child::Running { pid: p, .. } | Child::Stopping { pid: p, .. } if *p == pid);
        if !ours {
            debug!(pid = pid.as_raw(), code, "reaped an orphaned descendant");
            return Flow::Continue;
        }
        // The group may still hold stragglers of the old child.
        self.os.signal(pid, Signal::SIGKILL);
        match std::mem::replace(&mut self.child, Child::Done) {
            Child::Stopping {
                then: Then::Restart,
                ..
            } => {
                info!(
                    code,
                    "child stopped; starting it again with the new backends"
                );
                self.spawn()
            }
            Child::Stopping {
                then: Then::Exit(err),
                ..
            } => {
                info!(code, "child stopped; exiting with its code");
                Flow::Done(err.map_or(Ok(code), Err))
            }
            Child::Running { started, .. } if self.opts.restart_child => {
                if started.elapsed() >= HEALTHY_RUN {
                    self.backoff.reset();
                }
                let d = self.backoff.next_delay();
                warn!(code, restart_in = ?d, "child exited; restarting it (--restart-child)");
                self.child = Child::WaitingToRespawn {
                    at: Instant::now() + d,
                };
                Flow::Continue
            }
            Child::Running { .. } => {
                info!(code, "child exited; exiting with its code");
                Flow::Done(Ok(code))
            }
            // Not reached: `ours` matched Running or Stopping.
            other => {
                self.child = other;
                Flow::Continue
            }
        }
    }

    /// A signal sent to discover.
    pub(super) fn on_signal(&mut self, sig: Signal) -> Flow {
        if ExecSignals::is_stop(sig) {
            return self.on_stop_request(sig);
        }
        match &mut self.child {
            Child::Running { pid, given, .. } => {
                // The child's reload signal: make the snapshot current
                // first, so its handler reads what it is meant to.
                if self.opts.reload_signal == Some(sig) {
                    if let Err(e) = self.os.write_snapshot(&self.current) {
                        warn!(error = %format!("{e:#}"), "cannot update the snapshot; stopping the child");
                        return self.stop(Then::Exit(Some(e)));
                    }
                    *given = self.current.clone();
                }
                info!(signal = %sig, "passing the signal on to the child");
                self.os.signal(*pid, sig);
            }
            Child::Stopping { pid, .. } => {
                info!(signal = %sig, "passing the signal on to the stopping child");
                self.os.signal(*pid, sig);
            }
            Child::WaitingToRespawn { .. } | Child::Done => {
                info!(signal = %sig, "no child to pass the signal on to");
            }
        }
        Flow::Continue
    }

    /// SIGTERM or SIGINT: pass it on and exit with the child's code; a
    /// second one kills the child now.
    fn on_stop_request(&mut self, sig: Signal) -> Flow {
        let now = Instant::now();
        match &mut self.child {
            Child::WaitingToRespawn { .. } | Child::Done => {
                info!(signal = %sig, "stopping (no child running)");
                Flow::Done(Ok(0))
            }
            Child::Stopping {
                pid,
                kill_at,
                then: Then::Exit(_),
                ..
            } => {
                warn!(signal = %sig, "second signal: killing the child now");
                self.os.signal(*pid, Signal::SIGKILL);
                *kill_at = None;
                Flow::Continue
            }
            Child::Running { pid, .. }
            | Child::Stopping {
                pid,
                then: Then::Restart,
                ..
            } => {
                let pid = *pid;
                info!(signal = %sig, "passing the signal on to the child, then exiting with its code");
                self.os.signal(pid, sig);
                self.child = Child::Stopping {
                    pid,
                    signal: sig,
                    kill_at: Some(now + self.opts.kill_timeout),
                    then: Then::Exit(None),
                };
                Flow::Continue
            }
        }
    }

    /// The burst is over: restart or reload the child, unless what it
    /// would get is what it has.
    fn act_on_changes(&mut self) -> Flow {
        let Child::Running {
            pid,
            given,
            pending,
            ..
        } = &mut self.child
        else {
            return Flow::Continue;
        };
        let why = pending
            .take()
            .map(|p| p.reasons.join("; "))
            .unwrap_or_default();
        if self.current.same_backends(given) {
            info!(reason = %why, "the backends are what the child already has; nothing to do");
            return Flow::Continue;
        }
        let Some(sig) = self.opts.reload_signal else {
            info!(reason = %why, "backends changed; restarting the child");
            self.metrics.child_restart("restart");
            return self.stop(Then::Restart);
        };
        if let Err(e) = self.os.write_snapshot(&self.current) {
            warn!(error = %format!("{e:#}"), "cannot update the snapshot; stopping the child");
            return self.stop(Then::Exit(Some(e)));
        }
        info!(signal = %sig, reason = %why, "backends changed; signalling the child");
        self.metrics.child_restart("signal");
        self.os.signal(*pid, sig);
        *given = self.current.clone();
        Flow::Continue
    }

    /// Ask a running child to stop with `--kill-signal`; `then` once it has.
    fn stop(&mut self, then: Then) -> Flow {
        let Child::Running { pid, .. } = self.child else {
            return Flow::Continue;
        };
        let sig = self.opts.kill_signal;
        self.os.signal(pid, sig);
        self.child = Child::Stopping {
            pid,
            signal: sig,
            // After SIGKILL there is nothing left to escalate to.
            kill_at: (sig != Signal::SIGKILL).then(|| Instant::now() + self.opts.kill_timeout),
            then,
        };
        Flow::Continue
    }

    /// Start a child with the newest input.
    fn spawn(&mut self) -> Flow {
        match self.os.spawn(&self.current) {
            Ok(pid) => {
                self.child = Child::Running {
                    pid,
                    given: self.current.clone(),
                    started: Instant::now(),
                    pending: None,
                };
                Flow::Continue
            }
            Err(e) => {
                self.child = Child::Done;
                Flow::Done(Err(e))
            }
        }
    }

    /// When a burst's restart is due: after `--wait`, plus its splay.
    fn fire_time_of(&self, p: &Pending) -> Instant {
        let at = match self.opts.wait {
            Some(w) => (p.last + w.min).min(p.first + w.max),
            None => p.first,
        };
        at + p.splay
    }
}
