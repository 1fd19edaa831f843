//! The keep-alive's clock: one timer per lease that wakes the process once
//! per keep-alive, where tokio's timer wakes it two or three times.
//!
//! Why not `tokio::time::sleep_until`: tokio keeps its timers in a
//! hierarchical wheel, and a deadline seconds away sits in a coarse level.
//! The runtime wakes when that level's slot comes due (up to 64 ms early)
//! to move the entry down a level, and again when it fires; firing from
//! inside the driver also writes its eventfd to wake itself (two more
//! system calls). Measured on this project's 2-core VM (`make bench`,
//! P4's wake-up table): a process that only sleeps 2.67 s at a time with
//! tokio's timer wakes 2.66 times per sleep (`bare-sidekick idle`); the
//! same loop on a timerfd read through tokio's reactor (a one-off program,
//! 4 copies of each side by side for 120 s) woke 1.00 times,
//! for about half the CPU; and the sidekick went from 3.99 wake-ups per
//! keep-alive to 2.27, 2 being the least a keep-alive can cost (sending
//! it, and etcd's answer). On a VM every wake-up is dear, and a sidekick
//! spends most of its life waiting for its next keep-alive.
//!
//! Elsewhere than on Linux, or if the kernel refuses a timerfd, the alarm
//! falls back to tokio's timer. It needs tokio's I/O driver, as the etcd
//! client does anyway. It follows the real monotonic clock, so it does
//! not advance with tokio's paused test clock.

use tokio::time::Instant;

/// One re-armable deadline.
#[derive(Debug, Default)]
pub(crate) struct Alarm {
    /// The timer, once made (on first use, inside the runtime); `None`
    /// until then, and for good where it cannot be made.
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<linux::Fd>>,
    /// The timer could not be made: use tokio's.
    #[cfg(target_os = "linux")]
    unavailable: bool,
    /// The deadline the timer is armed for.
    #[cfg(target_os = "linux")]
    armed: Option<Instant>,
}

impl Alarm {
    /// Resolve at `at`; never, without a deadline. Cancel-safe: dropped
    /// and called again with the same deadline, it keeps waiting for it.
    pub(crate) async fn until(&mut self, at: Option<Instant>) {
        let Some(at) = at else {
            return std::future::pending().await;
        };
        #[cfg(target_os = "linux")]
        if self.wait_fd(at).await.is_ok() {
            return;
        }
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsFd, AsRawFd, RawFd};

    use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};

    /// A timerfd, for tokio's reactor (which wants a raw descriptor).
    #[derive(Debug)]
    pub(super) struct Fd(pub(super) TimerFd);

    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    /// Hand the timer to tokio's reactor.
    #[allow(unsafe_code)]
    pub(super) fn register(fd: Fd) -> std::io::Result<tokio::io::unix::AsyncFd<Fd>> {
        // SAFETY: `Fd` owns its descriptor (nix's `TimerFd` is an `OwnedFd`),
        // and nothing replaces or closes it while the `AsyncFd` holds it:
        // it is closed only when the `AsyncFd`, which deregisters first,
        // drops it. This is the contract `AsyncFd::register` asks for.
        unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::from)
    }

    pub(super) fn new() -> nix::Result<Fd> {
        TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map(Fd)
    }
}

#[cfg(target_os = "linux")]
impl Alarm {
    /// Wait on the timerfd; `Err` when there is none to wait on (then the
    /// caller uses tokio's timer).
    async fn wait_fd(&mut self, at: Instant) -> Result<(), ()> {
        use nix::errno::Errno;
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};

        if self.unavailable {
            return Err(());
        }
        if self.fd.is_none() {
            let made = linux::new()
                .map_err(std::io::Error::from)
                .and_then(linux::register);
            match made {
                Ok(fd) => self.fd = Some(fd),
                Err(e) => {
                    tracing::debug!(error = %e, "no timerfd; keep-alives use tokio's timer");
                    self.unavailable = true;
                    return Err(());
                }
            }
        }
        let Some(fd) = self.fd.as_ref() else {
            return Err(());
        };
        loop {
            let now = Instant::now();
            if now >= at {
                return Ok(());
            }
            if self.armed != Some(at) {
                // Relative to now: tokio's Instant is the monotonic clock,
                // but it does not give its raw time for an absolute timer.
                // Re-arming also clears an expiry of the old deadline.
                let left = TimeSpec::from_duration(at - now);
                if fd
                    .get_ref()
                    .0
                    .set(Expiration::OneShot(left), TimerSetTimeFlags::empty())
                    .is_err()
                {
                    self.unavailable = true;
                    return Err(());
                }
                self.armed = Some(at);
            }
            let Ok(mut ready) = fd.readable().await else {
                self.unavailable = true;
                return Err(());
            };
            match ready.get_inner().0.wait() {
                // Fired: the loop checks the clock (and re-arms if the
                // deadline moved meanwhile).
                Ok(()) => self.armed = None,
                Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(_) => {
                    self.unavailable = true;
                    return Err(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn fires_at_its_deadline_and_again_after_being_moved_or_dropped() {
        let mut alarm = Alarm::default();
        let t0 = Instant::now();
        alarm.until(Some(t0 + Duration::from_millis(30))).await;
        assert!(t0.elapsed() >= Duration::from_millis(30));

        // Dropped before its deadline, then awaited again: still fires.
        let at = Instant::now() + Duration::from_millis(40);
        let early = tokio::time::timeout(Duration::from_millis(5), alarm.until(Some(at))).await;
        assert!(early.is_err(), "fired 35 ms early");
        alarm.until(Some(at)).await;
        assert!(Instant::now() >= at);

        // Moved later while armed: the old expiry does not wake it early.
        let first = Instant::now() + Duration::from_millis(10);
        let _ = tokio::time::timeout(Duration::from_millis(1), alarm.until(Some(first))).await;
        let later = first + Duration::from_millis(40);
        alarm.until(Some(later)).await;
        assert!(Instant::now() >= later);

        // A deadline already past resolves at once; none never does.
        alarm.until(Some(t0)).await;
        let never = tokio::time::timeout(Duration::from_millis(20), alarm.until(None)).await;
        assert!(never.is_err());
        #[cfg(target_os = "linux")]
        assert!(!alarm.unavailable, "the timerfd was not used");
    }
}
