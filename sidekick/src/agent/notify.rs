//! systemd's notification protocol: READY=1, STATUS=, WATCHDOG=1. All of it
//! is a no-op when NOTIFY_SOCKET is not set.
//!
//! Readiness (what `systemctl start` waits for):
//! * normally READY=1 follows the first round: the container's address is
//!   registered in etcd (or its absence is known and nothing is), so units
//!   ordered `After=` a sidekick start once the registration exists;
//! * but at the latest [`READY_LIMIT`] after the start, whatever the state:
//!   while etcd is unreachable, `systemctl start` (and the README's
//!   `systemctl enable --now`) returns anyway, STATUS= says what the
//!   sidekick waits for, and the registration follows once etcd answers.
//!   The units bound `TimeoutStartSec=` above this limit, so a sidekick
//!   that cannot even send READY=1 fails its start instead of hanging it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tracing::{debug, info};

/// The longest a start waits for the first registration before READY=1 is
/// sent anyway. Under the units' `TimeoutStartSec=30s`.
pub const READY_LIMIT: Duration = Duration::from_secs(10);

/// READY=1 went out (from whichever task sent it first).
static READY_SENT: AtomicBool = AtomicBool::new(false);

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// Tells systemd how we are doing.
#[derive(Debug, Default)]
pub struct Notifier {
    status: String,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Read `WATCHDOG_USEC`.
    pub fn new() -> Self {
        Self {
            status: String::new(),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// READY=1, once per process.
    pub fn ready(&mut self) {
        if !READY_SENT.swap(true, Ordering::SeqCst) {
            send(&[NotifyState::Ready]);
        }
    }

    /// Whether READY was sent.
    pub fn is_ready(&self) -> bool {
        READY_SENT.load(Ordering::SeqCst)
    }

    /// STATUS=…, when it changed.
    pub fn status(&mut self, status: &str) {
        if self.status != status {
            self.status = status.to_owned();
            send(&[NotifyState::Status(status)]);
        }
    }

    /// How often to ping the watchdog (half its timeout), if enabled.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// WATCHDOG=1.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            send(&[NotifyState::Watchdog]);
        }
    }

    /// STOPPING=1.
    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }
}

/// The start phase, from before the first connection to etcd until the
/// follow loop runs: STATUS= says which etcd we wait for, the watchdog is
/// fed (connecting with auth can retry for long), and READY=1 goes out
/// after [`READY_LIMIT`] if the first round has not sent it by then.
///
/// Dropping it ends the status and the watchdog pings (the follow loop
/// takes over); the READY=1 deadline keeps running until it fired.
#[derive(Debug)]
pub struct Startup {
    connecting: JoinHandle<()>,
}

impl Startup {
    /// Begin; `endpoints` as the user gave them.
    pub fn begin(endpoints: String) -> Self {
        tokio::spawn(async move {
            tokio::time::sleep(READY_LIMIT).await;
            if !READY_SENT.load(Ordering::SeqCst) {
                info!(
                    waited = ?READY_LIMIT,
                    "ready before the first registration: etcd or Docker is slow to answer; \
                     registering as soon as they do (see the unit's status)"
                );
                Notifier::new().ready();
            }
        });
        let connecting = tokio::spawn(async move {
            let mut n = Notifier::new();
            n.status(&format!("waiting for etcd at {endpoints}: connecting"));
            let Some(period) = n.watchdog_period() else {
                return;
            };
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                n.watchdog();
            }
        });
        Self { connecting }
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        self.connecting.abort();
    }
}
