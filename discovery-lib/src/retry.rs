//! Capped exponential backoff with jitter, on top of `backon`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Retry delays: exponential from `min` up to `max`, each stretched by a
/// random factor between 1 and 2 so that a fleet does not retry in lock-step.
///
/// Every retry loop in this crate (and in the tools) uses one of these and
/// calls [`Backoff::reset`] after a success, so that the next failure starts
/// again from `min`.
#[derive(Debug)]
pub struct Backoff {
    /// The policy (min, max, factor, jitter), to start over after a reset.
    builder: ExponentialBuilder,
    /// The delays left in the current run of failures.
    delays: <ExponentialBuilder as BackoffBuilder>::Backoff,
    /// The shortest delay: the fallback should `delays` ever end.
    min: Duration,
}

impl Backoff {
    /// Delays from `min`, doubling, capped at `max` (before jitter).
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max.max(min))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            delays: builder.build(),
            builder,
            min,
        }
    }

    /// The policy the registration loop uses: 100 ms up to 500 ms (so at most
    /// 1 s with jitter), short enough that a registration comes back within
    /// about a second of etcd answering again.
    pub fn for_registration() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_millis(500))
    }

    /// The policy watches and other loops use: 100 ms up to 2 s (at most 4 s
    /// with jitter).
    pub fn for_watch() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// The next delay to sleep before retrying.
    pub fn next_delay(&mut self) -> Duration {
        // `without_max_times` makes the iterator endless; fall back to the
        // floor rather than trusting that with an unwrap.
        self.delays.next().unwrap_or(self.min)
    }

    /// Start again from the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

/// Sleep until `t`, or forever without one: a `select!` arm for a
/// deadline that may not be set. The registration and the lease group wait
/// on their next retry this way, and the tools on their timers.
///
/// ```no_run
/// # async fn f(mut retry_at: Option<tokio::time::Instant>, mut rx: tokio::sync::mpsc::Receiver<()>) {
/// loop {
///     tokio::select! {
///         m = rx.recv() => if m.is_none() { break },
///         // Quiet while no retry is due.
///         _ = discovery::sleep_until_opt(retry_at) => retry_at = None,
///     }
/// }
/// # }
/// ```
pub async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delays a failing loop actually sleeps, measured on tokio's paused
    /// clock: each within [base, 2*base], doubling to the cap, and back to
    /// the floor after a reset. (The top is inclusive: backon stretches by
    /// `delay.mul_f32(r)` with r below 1, and f32 rounding can land on 2x;
    /// the exclusive bound failed about 1 run in 30.)
    #[tokio::test(start_paused = true)]
    async fn delay_sequence_is_capped_jittered_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let mut slept = Vec::new();
        for _ in 0..7 {
            let t0 = tokio::time::Instant::now();
            tokio::time::sleep(b.next_delay()).await;
            slept.push(t0.elapsed());
        }
        let bases = [100u64, 200, 400, 800, 800, 800, 800];
        for (d, base) in slept.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *d >= base && *d <= base * 2,
                "slept {d:?}, base {base:?}: {slept:?}"
            );
        }
        b.reset();
        let d = b.next_delay();
        assert!(
            d >= Duration::from_millis(100) && d <= Duration::from_millis(200),
            "{d:?}"
        );
    }

    #[test]
    fn registration_policy_stays_under_a_second() {
        let mut b = Backoff::for_registration();
        for _ in 0..50 {
            assert!(b.next_delay() < Duration::from_secs(1));
        }
    }
}
