//! STATUS=, READY=1, metrics and log lines for a one-key sidekick
//! (`--container` and `--ip`), from the registration's state and what the
//! follow loop saw.

use std::sync::Arc;

use discovery::RegistrationState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::notify::Notifier;
use crate::common::metrics::Metrics;

/// What the follow loop knows, for STATUS= and readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Nothing yet.
    Unknown,
    /// Docker could not be asked.
    DockerDown(String),
    /// The container does not exist.
    Missing,
    /// It exists but should not be registered, for this reason.
    Down(String),
    /// It should be registered with this value.
    Up(String),
}

/// Follow the registration and what the loop saw: STATUS=, READY=1,
/// metrics, and a log line when etcd's side changes.
pub(crate) async fn report(
    key: String,
    mut reg: watch::Receiver<RegistrationState>,
    mut seen: watch::Receiver<Seen>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut notifier = Notifier::new();
    let mut last_reg = RegistrationState::Starting;
    let mut counted = Counted::default();
    loop {
        let r = reg.borrow_and_update().clone();
        let s = seen.borrow_and_update().clone();
        count(&metrics, &mut counted, &last_reg, &r);
        last_reg = r.clone();
        let status = match (&r, &s) {
            (RegistrationState::Refused { error }, _) => format!("etcd refuses {key}: {error}"),
            (
                RegistrationState::Retrying {
                    since,
                    error,
                    lease_lost,
                },
                _,
            ) => format!(
                "etcd unreachable for {}s ({error}); retrying{}",
                since.elapsed().unwrap_or_default().as_secs(),
                if *lease_lost {
                    "; lease lost, will re-register"
                } else {
                    ""
                }
            ),
            (
                RegistrationState::Registered {
                    lease, ttl, value, ..
                },
                Seen::DockerDown(_),
            ) => format!(
                "Docker unreachable; keeping {key} = {} (lease {lease}, ttl {}s)",
                String::from_utf8_lossy(value),
                ttl.as_secs()
            ),
            (
                RegistrationState::Registered {
                    lease, ttl, value, ..
                },
                _,
            ) => format!(
                "registered {key} = {} (lease {lease}, ttl {}s)",
                String::from_utf8_lossy(value),
                ttl.as_secs()
            ),
            (_, Seen::DockerDown(e)) => format!("nothing registered; {e}"),
            (_, Seen::Missing) => {
                format!("nothing registered; waiting for the container to exist ({key})")
            }
            (_, Seen::Down(reason)) => format!("nothing registered: {reason}"),
            (_, Seen::Unknown) | (_, Seen::Up(_)) => format!("registering {key}"),
        };
        notifier.status(&status);
        let round_done = match (&s, &r) {
            (Seen::Up(v), RegistrationState::Registered { value, .. }) => {
                v.as_bytes() == value.as_slice()
            }
            (Seen::Missing | Seen::Down(_), RegistrationState::Withdrawn) => true,
            _ => false,
        };
        if round_done && !notifier.is_ready() {
            info!(%status, "ready");
            notifier.ready();
        }
        metrics
            .up
            .set(i64::from(matches!(r, RegistrationState::Registered { .. })));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = reg.changed() => if r.is_err() { return },
            r = seen.changed() => if r.is_err() { return },
        }
    }
}

/// What the counters remember between state changes.
#[derive(Default)]
struct Counted {
    /// The lease and value last seen registered.
    registered: Option<(discovery::LeaseId, Vec<u8>)>,
    /// The registration was withdrawn on purpose since then.
    withdrawn: bool,
}

/// Update the counters for a state change. A confirmation after an outage
/// (same lease, same value) is neither a grant nor a registration; a lease
/// counts as lost when a new one replaces it without a withdrawal between.
fn count(m: &Metrics, c: &mut Counted, before: &RegistrationState, now: &RegistrationState) {
    use RegistrationState::*;
    match now {
        Registered { lease, value, .. } => {
            let (grant, register) = match c.registered.as_ref() {
                Some((l, v)) => (l != lease, l != lease || v != value),
                None => (true, true),
            };
            if grant {
                m.lease_grants.inc();
                if c.registered.is_some() && !c.withdrawn {
                    m.lease_losses.inc();
                }
            }
            if register {
                m.registrations.inc();
            }
            c.registered = Some((*lease, value.clone()));
            c.withdrawn = false;
        }
        Withdrawn | Stopped => c.withdrawn = true,
        Retrying { .. } if !matches!(before, Retrying { .. }) => {
            m.keepalive_failures.inc();
        }
        _ => {}
    }
}
