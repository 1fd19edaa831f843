//! Timers for `select!` loops.

use tokio::time::Instant;

/// Sleep until `at`; without a deadline, never (a `select!` branch that
/// stays quiet).
pub async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
