//! Signals as intent: SIGTERM and SIGINT ask for a graceful stop (a second
//! one for an immediate one), SIGHUP for a reload where that makes sense.

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
