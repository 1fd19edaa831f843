//! Whether the answers can be trusted: ready (a first snapshot of every
//! prefix arrived) and how stale (how long since the watches were last
//! known to be current). Read on every query, so it is two atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// `stale_since` while every watch is live.
const FRESH: u64 = u64::MAX;

/// Readiness and staleness, shared by the watch task (writer) and the
/// DNS and HTTP servers (readers).
#[derive(Debug)]
pub struct Health {
    /// The clock's origin for `stale_since`.
    start: Instant,
    /// Milliseconds after `start` since which some watch is not live (the
    /// last moment the state was known current), or [`FRESH`].
    stale_since: AtomicU64,
    /// Every prefix has had its first snapshot.
    ready: AtomicBool,
    /// `--max-stale`: past this, answers are SERVFAIL.
    max_stale: Option<Duration>,
}

impl Health {
    /// Not ready, fresh, with this limit.
    pub fn new(max_stale: Option<Duration>) -> Self {
        Self {
            start: Instant::now(),
            stale_since: AtomicU64::new(FRESH),
            ready: AtomicBool::new(false),
            max_stale,
        }
    }

    /// The first snapshot of every prefix is in.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the first snapshot of every prefix is in.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The state was last known current at `at` (None: it is current now).
    pub fn set_stale_since(&self, at: Option<Instant>) {
        let v = match at {
            None => FRESH,
            Some(t) => u64::try_from(t.saturating_duration_since(self.start).as_millis())
                .unwrap_or(FRESH - 1),
        };
        self.stale_since.store(v, Ordering::Release);
    }

    /// How long the state has not been known current; zero while live.
    pub fn staleness(&self) -> Duration {
        match self.stale_since.load(Ordering::Acquire) {
            FRESH => Duration::ZERO,
            ms => self
                .start
                .elapsed()
                .saturating_sub(Duration::from_millis(ms)),
        }
    }

    /// Whether answers may be given: ready, and not staler than
    /// `--max-stale`.
    pub fn answerable(&self) -> bool {
        if !self.is_ready() {
            return false;
        }
        match self.max_stale {
            None => true,
            Some(max) => self.staleness() <= max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn staleness_counts_from_the_last_known_current_moment() {
        let h = Health::new(Some(Duration::from_secs(10)));
        assert!(!h.answerable(), "not before the first snapshot");
        h.set_ready();
        assert!(h.answerable());
        assert_eq!(h.staleness(), Duration::ZERO);
        let lost = Instant::now();
        tokio::time::advance(Duration::from_secs(4)).await;
        h.set_stale_since(Some(lost));
        assert_eq!(h.staleness(), Duration::from_secs(4));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(h.answerable(), "at the limit");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!h.answerable(), "past --max-stale");
        h.set_stale_since(None);
        assert!(h.answerable(), "live again");
        let unlimited = Health::new(None);
        unlimited.set_ready();
        unlimited.set_stale_since(Some(Instant::now()));
        tokio::time::advance(Duration::from_secs(86_400 * 30)).await;
        assert!(unlimited.answerable());
    }
}
