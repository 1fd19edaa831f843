//! systemd's notification protocol: READY=1, STATUS=, WATCHDOG=1. All of it
//! is a no-op when NOTIFY_SOCKET is not set.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// Tells systemd how we are doing.
#[derive(Debug, Default)]
pub struct Notifier {
    ready: bool,
    status: String,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Read `WATCHDOG_USEC`.
    pub fn new() -> Self {
        Self {
            ready: false,
            status: String::new(),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    fn send(&self, state: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(state) {
            debug!(error = %e, "sd_notify failed");
        }
    }

    /// READY=1, once.
    pub fn ready(&mut self) {
        if !self.ready {
            self.ready = true;
            self.send(&[NotifyState::Ready]);
        }
    }

    /// Whether READY was sent.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// STATUS=…, when it changed.
    pub fn status(&mut self, status: &str) {
        if self.status != status {
            self.status = status.to_owned();
            self.send(&[NotifyState::Status(status)]);
        }
    }

    /// How often to ping the watchdog (half its timeout), if enabled.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// WATCHDOG=1.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// STOPPING=1.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }
}
