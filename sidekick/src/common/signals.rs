//! Signals as intent: SIGTERM and SIGINT ask for a graceful stop (a second
//! one for an immediate one), SIGHUP for a reload where that makes sense.
//! A supervisor of a child (`discover --exec`) uses [`ExecSignals`]
//! instead: stop requests, plus the signals it passes on to the child.

use tokio::signal::unix::{Signal, SignalKind, signal};

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
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Install the handlers (must run inside the tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Term,
            _ = self.int.recv() => Sig::Int,
            _ = self.hup.recv() => Sig::Hup,
        }
    }
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
