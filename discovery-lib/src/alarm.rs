//! The keep-alive's clock: one timer per keep-alive stream, which wakes
//! the process once per keep-alive where tokio's timer wakes it two or
//! three times.
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
    /// The timer, made on first use (inside the runtime).
    #[cfg(target_os = "linux")]
    timer: Timer,
}

/// Where an alarm's timer stands.
#[cfg(target_os = "linux")]
#[derive(Debug, Default)]
enum Timer {
    /// Not made yet.
    #[default]
    Unmade,
    /// A timerfd, armed for `armed` if that is set.
    Fd {
        /// The timer, registered with tokio's reactor.
        fd: tokio::io::unix::AsyncFd<linux::Fd>,
        /// The deadline it is armed for; `None` once it fired.
        armed: Option<Instant>,
    },
    /// The kernel refused it: tokio's timer, for good.
    Tokio,
}

impl Alarm {
    /// Resolve at `at`. Cancel-safe: dropped and called again with the
    /// same deadline, it keeps waiting for it.
    pub(crate) async fn until(&mut self, at: Instant) {
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

        if matches!(self.timer, Timer::Unmade) {
            self.timer = match linux::new()
                .map_err(std::io::Error::from)
                .and_then(linux::register)
            {
                Ok(fd) => Timer::Fd { fd, armed: None },
                Err(e) => {
                    tracing::debug!(error = %e, "no timerfd; keep-alives use tokio's timer");
                    Timer::Tokio
                }
            };
        }
        let Timer::Fd { fd, armed } = &mut self.timer else {
            return Err(());
        };
        let broken = loop {
            let now = Instant::now();
            if now >= at {
                return Ok(());
            }
            if *armed != Some(at) {
                // Relative to now: tokio's Instant is the monotonic clock,
                // but it does not give its raw time for an absolute timer.
                // Re-arming also clears an expiry of the old deadline.
                let left = Expiration::OneShot(TimeSpec::from_duration(at - now));
                if let Err(e) = fd.get_ref().0.set(left, TimerSetTimeFlags::empty()) {
                    break std::io::Error::from(e);
                }
                *armed = Some(at);
            }
            let mut ready = match fd.readable().await {
                Ok(ready) => ready,
                Err(e) => break e,
            };
            match ready.get_inner().0.wait() {
                // Fired: the loop checks the clock (and re-arms if the
                // deadline moved meanwhile).
                Ok(()) => *armed = None,
                Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => break e.into(),
            }
        };
        tracing::debug!(error = %broken, "the timerfd failed; keep-alives use tokio's timer");
        self.timer = Timer::Tokio;
        Err(())
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
        alarm.until(t0 + Duration::from_millis(30)).await;
        assert!(t0.elapsed() >= Duration::from_millis(30));

        // Dropped before its deadline, then awaited again: still fires.
        let at = Instant::now() + Duration::from_millis(40);
        let early = tokio::time::timeout(Duration::from_millis(5), alarm.until(at)).await;
        // (On a busy machine the 5 ms may outlast the 40: then it fired,
        // but not before its deadline.)
        assert!(
            early.is_err() || Instant::now() >= at,
            "fired before its deadline"
        );
        alarm.until(at).await;
        assert!(Instant::now() >= at);

        // Moved later while armed: the old expiry does not wake it early.
        let first = Instant::now() + Duration::from_millis(10);
        let _ = tokio::time::timeout(Duration::from_millis(1), alarm.until(first)).await;
        let later = first + Duration::from_millis(40);
        alarm.until(later).await;
        assert!(Instant::now() >= later);

        // A deadline already past resolves at once.
        alarm.until(t0).await;
        #[cfg(target_os = "linux")]
        assert!(
            matches!(alarm.timer, Timer::Fd { .. }),
            "the timerfd was not used"
        );
    }
}
