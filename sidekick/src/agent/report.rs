//! STATUS=, READY=1, metrics and log lines for a one-container sidekick
//! (`--container` and `--ip`), from its registrations' states and what
//! the follow loop saw. One key, or two with `--family both` in the `ip`
//! and `ip:port` formats (`KEY` and `KEY-v6`).

use std::collections::BTreeMap;
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
    /// It should be registered once its check passes: not yet, and no
    /// failure that counts either (starting).
    Checking(String),
    /// It should be registered with these values, by key (a key not in
    /// the map should hold nothing), and its check warns, if it does.
    Up {
        /// Key to value.
        values: BTreeMap<String, String>,
        /// The check's warning, if it warns.
        warning: Option<String>,
    },
}

impl Seen {
    /// Up with `value` at `key`, no warning.
    pub(crate) fn up(key: &str, value: String) -> Self {
        Seen::Up {
            values: BTreeMap::from([(key.to_owned(), value)]),
            warning: None,
        }
    }
}

/// One registration the reporter follows: its key and its state.
pub(crate) type Followed = (String, watch::Receiver<RegistrationState>);

/// Follow the registrations and what the loop saw: STATUS=, READY=1,
/// metrics, and a log line when etcd's side changes. `regs` holds one
/// registration, or two (`KEY`, `KEY-v6`).
pub(crate) async fn report(
    mut regs: Vec<Followed>,
    mut seen: watch::Receiver<Seen>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut notifier = Notifier::new();
    let mut last: Vec<RegistrationState> = vec![RegistrationState::Starting; regs.len()];
    let mut counted: Vec<Counted> = regs.iter().map(|_| Counted::default()).collect();
    loop {
        let states: Vec<(String, RegistrationState)> = regs
            .iter_mut()
            .map(|(k, rx)| (k.clone(), rx.borrow_and_update().clone()))
            .collect();
        let s = seen.borrow_and_update().clone();
        for (i, (_, r)) in states.iter().enumerate() {
            count(&metrics, &mut counted[i], &last[i], r);
            last[i] = r.clone();
        }
        let status = status_line(&states, &s);
        notifier.status(&status);
        if round_done(&states, &s) && !notifier.is_ready() {
            info!(%status, "ready");
            notifier.ready();
        }
        let registered = states
            .iter()
            .any(|(_, r)| matches!(r, RegistrationState::Registered { .. }));
        metrics.up.set(i64::from(registered));
        let Some(((_, first), rest)) = regs.split_first_mut() else {
            return;
        };
        let second = rest.first_mut().map(|(_, rx)| rx);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = first.changed() => if r.is_err() { return },
            r = changed_opt(second) => if r.is_err() { return },
            r = seen.changed() => if r.is_err() { return },
        }
    }
}

/// A second registration's next change; never without one.
async fn changed_opt(
    rx: Option<&mut watch::Receiver<RegistrationState>>,
) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// Whether the first round is done: every key etcd should hold is held
/// with its value, and the others are withdrawn.
fn round_done(states: &[(String, RegistrationState)], seen: &Seen) -> bool {
    states.iter().all(|(key, r)| match (seen, r) {
        (Seen::Up { values, .. }, RegistrationState::Registered { value, .. }) => values
            .get(key)
            .is_some_and(|v| v.as_bytes() == value.as_slice()),
        (Seen::Up { values, .. }, RegistrationState::Withdrawn | RegistrationState::Starting) => {
            !values.contains_key(key) && states.len() > 1
        }
        (Seen::Missing | Seen::Down(_), RegistrationState::Withdrawn) => true,
        _ => false,
    })
}

/// STATUS=: the main key as it stands, then the second key when it holds
/// something.
fn status_line(states: &[(String, RegistrationState)], seen: &Seen) -> String {
    let parts: Vec<String> = states
        .iter()
        .enumerate()
        .filter_map(|(i, (key, r))| key_status(key, r, seen, i > 0))
        .collect();
    let mut line = parts.join("; ");
    if let Seen::Up {
        warning: Some(w), ..
    } = seen
    {
        line.push_str(&format!("; check warning: {w}"));
    }
    line
}

/// One key's part of STATUS=; `None` for a second key with nothing to say.
fn key_status(key: &str, r: &RegistrationState, s: &Seen, second: bool) -> Option<String> {
    let wanted = match s {
        Seen::Up { values, .. } => values.contains_key(key),
        _ => false,
    };
    Some(match (r, s) {
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
        _ if second && !wanted => return None,
        (_, Seen::DockerDown(e)) => format!("nothing registered; {e}"),
        (_, Seen::Missing) => {
            format!("nothing registered; waiting for the container to exist ({key})")
        }
        (_, Seen::Down(reason) | Seen::Checking(reason)) => {
            format!("nothing registered: {reason}")
        }
        (_, Seen::Up { .. }) if !wanted => {
            format!("nothing registered at {key}: the container has no address of that family")
        }
        (_, Seen::Unknown) | (_, Seen::Up { .. }) => format!("registering {key}"),
    })
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
