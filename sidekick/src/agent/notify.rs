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

use discovery::{Backoff, Client, ConnectOptions};
use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

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
    /// The last STATUS= sent: an unchanged one is not sent again.
    status: String,
    /// `WATCHDOG_USEC`: systemd's watchdog timeout, when it set one.
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

/// Connect to etcd for the first time, retrying transient failures with
/// backoff (as `ConnectOptions::connect_retrying` does) while STATUS= says
/// which etcd we wait for and why, the watchdog is fed, and READY=1 goes
/// out after [`READY_LIMIT`] if the first round has not sent it by then.
///
/// Written here rather than with `connect_retrying` because that one
/// cannot report each failure to systemd.
pub async fn connect(options: &ConnectOptions) -> discovery::Result<Client> {
    let endpoints = options.endpoints().join(",");
    spawn_ready_deadline();
    let mut notifier = Notifier::new();
    notifier.status(&format!("waiting for etcd at {endpoints}: connecting"));
    let _watchdog = WatchdogFeeder::start();
    let mut backoff = Backoff::for_watch();
    loop {
        match options.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if e.is_transient() => {
                let d = backoff.next_delay();
                warn!(error = %e, retry_in = ?d, "etcd not reachable yet");
                notifier.status(&format!("waiting for etcd at {endpoints}: {e}"));
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// READY=1 after [`READY_LIMIT`] unless it went out by then.
fn spawn_ready_deadline() {
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
}

/// Pings the watchdog until dropped (the follow loop takes over then).
struct WatchdogFeeder(Option<JoinHandle<()>>);

impl WatchdogFeeder {
    fn start() -> Self {
        let n = Notifier::new();
        let Some(period) = n.watchdog_period() else {
            return Self(None);
        };
        Self(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                n.watchdog();
            }
        })))
    }
}

impl Drop for WatchdogFeeder {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}
