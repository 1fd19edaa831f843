//! Signals as intent: SIGTERM and SIGINT ask for a graceful stop (a second
//! one for an immediate one), SIGHUP for a reload where that makes sense.
//!
//! Both binaries run the one loop, [`handle`]; what differs between them is
//! data, an [`Intents`]: what SIGHUP asks for, and what the first stop
//! request is logged as. A supervisor of a child (`discover --exec`) uses
//! [`ExecSignals`] instead: stop requests, plus the signals it passes on to
//! the child.

use std::sync::Arc;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The signals the tools react to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    /// SIGTERM.
    Term,
    /// SIGINT.
    Int,
    /// SIGHUP.
    Hup,
}

impl Sig {
    /// The signal's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Sig::Term => "SIGTERM",
            Sig::Int => "SIGINT",
            Sig::Hup => "SIGHUP",
        }
    }

    /// The signal number.
    pub fn number(self) -> i32 {
        match self {
            Sig::Term => nix::libc::SIGTERM,
            Sig::Int => nix::libc::SIGINT,
            Sig::Hup => nix::libc::SIGHUP,
        }
    }
}

/// Handlers for SIGTERM, SIGINT and SIGHUP, installed together.
#[derive(Debug)]
struct Signals {
    /// SIGTERM's stream.
    term: Signal,
    /// SIGINT's stream.
    int: Signal,
    /// SIGHUP's stream.
    hup: Signal,
}

impl Signals {
    /// Install the handlers (must run inside the tokio runtime).
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Term,
            _ = self.int.recv() => Sig::Int,
            _ = self.hup.recv() => Sig::Hup,
        }
    }
}

/// What SIGHUP asks of a binary.
#[derive(Clone, Debug)]
pub enum OnHup {
    /// Nothing to reload (`discover get`, `watch`, `render`): logged, then
    /// ignored, so that a stray SIGHUP does not end the process (its
    /// default action).
    Ignore,
    /// Reload: wake whoever waits here (the sidekick reconciles with Docker
    /// at once).
    Reload(Arc<Notify>),
}

/// What each signal means to one binary: the only part of the signal loop
/// that differs between them.
#[derive(Clone, Debug)]
pub struct Intents {
    /// What SIGHUP asks for.
    pub hup: OnHup,
    /// The log line of the first stop request, saying what the stop does
    /// (the sidekick's: `stopping: revoking the lease`).
    pub stopping: &'static str,
}

/// What to do about one signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// The first SIGTERM or SIGINT: stop gracefully.
    Stop,
    /// Another one while the graceful stop runs: exit at once, with this
    /// code (128 + the signal's number, as a shell reports a death by it).
    ExitNow(i32),
    /// SIGHUP, where it means reload.
    Reload,
    /// SIGHUP, where there is nothing to reload.
    Ignore,
}

impl Intents {
    /// What `sig` asks for; `stopping`: a graceful stop was asked for
    /// already.
    pub fn of(&self, sig: Sig, stopping: bool) -> Intent {
        match (sig, &self.hup) {
            (Sig::Hup, OnHup::Reload(_)) => Intent::Reload,
            (Sig::Hup, OnHup::Ignore) => Intent::Ignore,
            (Sig::Term | Sig::Int, _) if stopping => Intent::ExitNow(128 + sig.number()),
            (Sig::Term | Sig::Int, _) => Intent::Stop,
        }
    }
}

/// Install the handlers for SIGTERM, SIGINT and SIGHUP (inside the tokio
/// runtime), then act on each signal as `intents` says, for the life of
/// the process: a stop cancels `stop`, a second one exits at once, a reload
/// notifies.
pub fn handle(intents: Intents, stop: CancellationToken) -> std::io::Result<()> {
    let mut signals = Signals::install()?;
    tokio::spawn(async move {
        loop {
            let sig = signals.recv().await;
            match intents.of(sig, stop.is_cancelled()) {
                Intent::Stop => {
                    info!(signal = sig.name(), "{}", intents.stopping);
                    stop.cancel();
                }
                Intent::ExitNow(code) => {
                    warn!(signal = sig.name(), code, "second signal: exiting now");
                    std::process::exit(code);
                }
                Intent::Reload => {
                    // The woken side logs what the reload does.
                    debug!(signal = sig.name(), "reload requested");
                    if let OnHup::Reload(notify) = &intents.hup {
                        notify.notify_one();
                    }
                }
                Intent::Ignore => info!(signal = sig.name(), "nothing to reload; ignored"),
            }
        }
    });
    Ok(())
}

/// The signals `discover --exec` passes on to its child's process group,
/// as envconsul does: every catchable signal that means nothing to the
/// supervisor itself and that people and tools send as a message.
///
/// Left out on purpose, with why:
/// - SIGTERM and SIGINT: they are a stop request (see [`ExecSignals`]);
/// - SIGCHLD: the supervisor reaps with it;
/// - SIGPIPE: raised by discover's own writes (Rust ignores it);
/// - SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS: a report of
///   discover's own fault (tokio refuses handlers for some of them);
/// - SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGIO, SIGURG: limits, timers and
///   I/O notices about discover itself;
/// - SIGTSTP, SIGTTIN, SIGTTOU, SIGCONT: job control belongs to the terminal
///   (Ctrl-Z still stops discover, as it does today);
/// - SIGKILL and SIGSTOP cannot be caught.
pub const FORWARDED: &[nix::sys::signal::Signal] = {
    use nix::sys::signal::Signal::*;
    &[SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM, SIGPWR]
};

/// Handlers for a supervisor of a child (`discover --exec`): SIGTERM and
/// SIGINT (a stop request) and every signal in [`FORWARDED`], installed
/// together. Without them, a SIGUSR1 sent to discover would end it (the
/// default action) and orphan its child.
#[derive(Debug)]
pub struct ExecSignals {
    /// One handler per signal, stop requests first so that they win a tie.
    handlers: Vec<(nix::sys::signal::Signal, Signal)>,
}

impl ExecSignals {
    /// Install the handlers (must run inside the tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        use nix::sys::signal::Signal as S;
        let mut handlers = Vec::new();
        for sig in [S::SIGTERM, S::SIGINT].iter().chain(FORWARDED) {
            handlers.push((*sig, signal(SignalKind::from_raw(*sig as i32))?));
        }
        Ok(Self { handlers })
    }

    /// Whether `sig` asks the supervisor to stop (SIGTERM, SIGINT).
    pub fn is_stop(sig: nix::sys::signal::Signal) -> bool {
        matches!(
            sig,
            nix::sys::signal::Signal::SIGTERM | nix::sys::signal::Signal::SIGINT
        )
    }

    /// The next signal.
    pub async fn recv(&mut self) -> nix::sys::signal::Signal {
        std::future::poll_fn(|cx| {
            for (sig, handler) in &mut self.handlers {
                // A handler's stream never ends while it is held.
                if handler.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*sig);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_then_exit_now_and_hup_as_each_binary_says() {
        let notify = Arc::new(Notify::new());
        let sidekick = Intents {
            hup: OnHup::Reload(notify),
            stopping: "stopping: revoking the lease",
        };
        let discover = Intents {
            hup: OnHup::Ignore,
            stopping: "stopping",
        };
        for i in [&sidekick, &discover] {
            assert_eq!(i.of(Sig::Term, false), Intent::Stop);
            assert_eq!(i.of(Sig::Int, false), Intent::Stop);
            assert_eq!(i.of(Sig::Term, true), Intent::ExitNow(143));
            assert_eq!(i.of(Sig::Int, true), Intent::ExitNow(130));
        }
        // A SIGHUP is never a stop, not even during one.
        for stopping in [false, true] {
            assert_eq!(sidekick.of(Sig::Hup, stopping), Intent::Reload);
            assert_eq!(discover.of(Sig::Hup, stopping), Intent::Ignore);
        }
    }
}
