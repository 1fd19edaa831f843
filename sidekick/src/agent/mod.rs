//! The sidekick: follow one container through the Docker API and keep its
//! address registered in etcd (or keep a fixed `--ip` registered).
//!
//! Decisions:
//! * Docker events act at once: stop, die, kill (a stopping signal), pause
//!   and destroy withdraw the key; start, restart and unpause inspect and
//!   register. Every interval an inspect reconciles anyway.
//! * While Docker is unreachable, the last registration is kept: the
//!   container most likely still runs, and if its unit stops, systemd's
//!   `BindsTo=` stops the sidekick, which revokes the lease. Docker is
//!   retried with backoff and reconciled as soon as it answers.
//! * A stopping signal withdraws the key even if the container survives
//!   it for a while; if it is still running 30 s later it is registered again.

pub mod args;
pub mod decide;
pub mod docker;
pub mod notify;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bollard::errors::Error as BollardError;
use bollard::models::EventMessage;
use discovery::{Backoff, Registration, RegistrationState};
use futures::{Stream, StreamExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use args::{Args, Plan, Source};
use decide::{Decision, EventMeaning, Rules, ValueFormat, decide, meaning};
use docker::{DockerConn, DockerError, DockerEvent};
use notify::Notifier;

use crate::common::exit::usage;
use crate::common::metrics::{self, Metrics};

/// How long a container may keep running after a stopping signal before
/// it is registered again.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// How long a graceful stop waits for etcd to confirm the revoke. Past it,
/// the process exits anyway and the key expires with its lease: a stop
/// must not hang on an unreachable etcd.
const REVOKE_LIMIT: Duration = Duration::from_millis(500);

/// The first subscription asks Docker to replay events from this long
/// before it was made, in case Docker's clock is a little behind ours.
const SINCE_MARGIN: Duration = Duration::from_secs(2);

/// Now, as Docker timestamps events (nanoseconds since the epoch).
fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How the binary steers a running sidekick.
#[derive(Debug, Clone)]
pub struct Control {
    /// Cancelled on the first SIGTERM/SIGINT: revoke and exit.
    pub shutdown: CancellationToken,
    /// Notified on SIGHUP: reconcile now.
    pub reconcile: Arc<Notify>,
}

/// What the follow loop knows, for STATUS= and readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
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

/// Run until `ctl.shutdown` (then revoke and return `Ok`), or until a
/// configuration problem shows up (usage error, exit 2).
pub async fn run(
    args: Args,
    user_source: Option<clap::parser::ValueSource>,
    ctl: Control,
) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let connect = args.etcd.connect_options(user_source)?;
    let mut docker = match &plan.source {
        Source::Container(_) => Some(DockerConn::from_env()?),
        Source::Static(_) => None,
    };
    let metrics = Arc::new(Metrics::with_prefix("sidekick"));
    if let Some(addr) = args.metrics_addr {
        metrics::serve(addr, metrics.clone(), ctl.shutdown.clone())
            .await
            .map_err(|e| usage(format!("--metrics-addr {addr}: {e}")))?;
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let format = ValueFormat {
        port: args.port,
        json: args.json_value,
        host,
    };

    info!(key = %plan.key, endpoints = %connect.endpoints().join(","), "connecting to etcd");
    // With STATUS=, the watchdog and a bounded READY=1 while etcd does not answer.
    let client = tokio::select! {
        r = notify::connect(&connect) => r.context("cannot use etcd")?,
        _ = ctl.shutdown.cancelled() => return Ok(()),
    };
    let reg = client.registration(&plan.key, plan.register.clone())?;
    let (seen_tx, seen_rx) = watch::channel(Seen::Unknown);
    let reporter = tokio::spawn(report(
        plan.key.clone(),
        reg.state(),
        seen_rx,
        metrics.clone(),
        ctl.shutdown.clone(),
    ));

    let outcome = match (&plan.source, docker.as_mut()) {
        (Source::Static(ip), _) => {
            let value = format.render(&ip.to_string(), None);
            reg.set_value(value.clone());
            seen_tx.send_replace(Seen::Up(value));
            tokio::select! {
                r = watch_refusal(&reg, &ctl.shutdown) => r,
                () = static_watchdog(&reg) => Ok(()),
            }
        }
        (Source::Container(name), Some(docker)) => {
            let follower = Follower {
                name: name.clone(),
                docker,
                rules: Rules {
                    network: args.network.clone(),
                    require_healthy: args.require_healthy,
                },
                format,
                reg: &reg,
                seen: seen_tx,
                id: None,
                draining: None,
                since: None,
                fresh_after: 0,
                docker_failed: false,
                missing: None,
                last_started: String::new(),
                network: None,
            };
            tokio::select! {
                r = follower.run(plan.interval, &ctl) => r,
                r = watch_refusal(&reg, &ctl.shutdown) => r,
            }
        }
        (Source::Container(_), None) => Ok(()),
    };

    // Graceful stop (or a configuration error): revoke, so the key goes now.
    Notifier::new().stopping();
    let t = Instant::now();
    match tokio::time::timeout(REVOKE_LIMIT, reg.deregister()).await {
        Ok(_) => info!(key = %plan.key, took = ?t.elapsed(), "deregistered; exiting"),
        Err(_) => warn!(
            key = %plan.key,
            waited = ?REVOKE_LIMIT,
            ttl = ?plan.register.ttl(),
            "etcd did not confirm the revoke in time; exiting, and the key expires with its lease"
        ),
    }
    reporter.abort();
    outcome
}

/// In static mode there is no Docker loop: ping the watchdog (if enabled)
/// for as long as the registration task is alive.
async fn static_watchdog(reg: &Registration) {
    let notifier = Notifier::new();
    let Some(period) = notifier.watchdog_period() else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if !matches!(*reg.state().borrow(), RegistrationState::Stopped) {
            notifier.watchdog();
        }
    }
}

/// Return an error if etcd refuses the registration for good (exit 2) or
/// the registration task is gone (exit 1); Ok on shutdown.
async fn watch_refusal(reg: &Registration, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut state = reg.state();
    loop {
        if let RegistrationState::Refused { error } = &*state.borrow_and_update() {
            return Err(usage(format!(
                "etcd refuses to register {}: {error}",
                reg.key()
            )));
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            r = state.changed() => if r.is_err() {
                return Err(anyhow::anyhow!(
                    "the registration of {} stopped unexpectedly; nothing keeps its lease alive",
                    reg.key()
                ));
            },
        }
    }
}

struct Follower<'a> {
    name: String,
    docker: &'a mut DockerConn,
    rules: Rules,
    format: ValueFormat,
    reg: &'a Registration,
    seen: watch::Sender<Seen>,
    /// The container's id once known.
    id: Option<String>,
    /// A stopping signal was sent to this run (its StartedAt), at this time.
    draining: Option<(String, Instant)>,
    /// `timeNano` of the last event, to resubscribe from.
    since: Option<i64>,
    /// Events at or before this time (ns) are already reflected by the
    /// inspect that followed the last subscription: when Docker replays
    /// them, they only ask for another inspect, so an old `die` cannot
    /// withdraw a container that runs again.
    fresh_after: i64,
    /// An inspect found Docker unreachable: drop the event stream too
    /// (over tcp:// a half-open stream would never end by itself).
    docker_failed: bool,
    /// While the container does not exist: the checks so far and the next.
    missing: Option<MissingWait>,
    /// StartedAt of the run last inspected.
    last_started: String,
    /// The network of the last registration (kept while attached).
    network: Option<String>,
}

/// Waiting for a container that does not exist yet. Its `start` event
/// registers it at once; these checks, with backoff, are the safety net.
struct MissingWait {
    attempts: u32,
    backoff: Backoff,
    next: Instant,
}

type Events = Pin<Box<dyn Stream<Item = Result<EventMessage, BollardError>> + Send>>;

async fn next_event(events: &mut Option<Events>) -> Option<Result<EventMessage, BollardError>> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

impl Follower<'_> {
    async fn run(mut self, interval: Duration, ctl: &Control) -> anyhow::Result<()> {
        let mut events: Option<Events> = None;
        let mut resubscribe_at = Instant::now();
        let mut backoff = Backoff::for_watch();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let notifier_period = Notifier::new().watchdog_period();
        let mut watchdog =
            tokio::time::interval(notifier_period.unwrap_or(Duration::from_secs(3600)));
        let watchdog_on = Notifier::new();
        loop {
            if events.is_none() && Instant::now() >= resubscribe_at {
                // Subscribe, then inspect. bollard sends the request only
                // when the stream is first polled, after that inspect; `since`
                // (the last event seen, or a moment before now) makes Docker
                // replay whatever happened in between.
                let since = self
                    .since
                    .unwrap_or_else(|| now_nanos().saturating_sub(SINCE_MARGIN.as_nanos() as i64));
                match self.docker.events(Some(since)).await {
                    Ok(s) => {
                        debug!(since, "following Docker events");
                        // Covered from here on: a later resubscription
                        // starts here, or at the last event if later.
                        self.since = Some(since);
                        events = Some(Box::pin(s));
                        if self.reconcile().await? {
                            backoff.reset();
                            self.fresh_after = now_nanos();
                        }
                    }
                    Err(DockerError::Refused(m)) => return Err(usage(m)),
                    Err(e) => {
                        self.docker_down(&e);
                        resubscribe_at = Instant::now() + backoff.next_delay();
                    }
                }
            }
            if std::mem::take(&mut self.docker_failed) && events.is_some() {
                events = None;
                self.docker.reset();
                resubscribe_at = Instant::now() + backoff.next_delay();
            }
            let missing_next = self.missing.as_ref().map(|m| m.next);
            tokio::select! {
                biased;
                _ = ctl.shutdown.cancelled() => return Ok(()),
                ev = next_event(&mut events) => match ev {
                    Some(Ok(msg)) => {
                        let e = DockerEvent::from_message(&msg);
                        if e.time_nano > 0 {
                            self.since = Some(e.time_nano);
                        }
                        if e.concerns(&self.name, self.id.as_deref()) {
                            self.on_event(&e).await?;
                        }
                    }
                    Some(Err(e)) => {
                        warn!(error = %discovery::error_chain(&e), "Docker event stream failed; resubscribing");
                        events = None;
                        self.docker.reset();
                        resubscribe_at = Instant::now() + backoff.next_delay();
                    }
                    None => {
                        warn!("Docker event stream ended (daemon restarted?); resubscribing and reconciling");
                        events = None;
                        self.docker.reset();
                        resubscribe_at = Instant::now() + backoff.next_delay();
                    }
                },
                _ = ctl.reconcile.notified() => {
                    info!("SIGHUP: reconciling now");
                    self.reconcile().await?;
                }
                _ = tick.tick() => {
                    // While the container is missing, its own schedule applies.
                    if events.is_some() && self.missing.is_none() {
                        self.reconcile().await?;
                    }
                }
                _ = tokio::time::sleep_until(missing_next.unwrap_or(resubscribe_at)),
                    if missing_next.is_some() && events.is_some() => {
                    self.reconcile().await?;
                }
                _ = tokio::time::sleep_until(resubscribe_at), if events.is_none() => {}
                _ = watchdog.tick(), if notifier_period.is_some() => {
                    // Only a loop that is turning pings; and only while the
                    // registration task is alive to keep the lease.
                    if !matches!(*self.reg.state().borrow(), RegistrationState::Stopped) {
                        watchdog_on.watchdog();
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, e: &DockerEvent) -> anyhow::Result<()> {
        let mut what = meaning(&e.kind, &e.action, e.signal.as_deref());
        if e.time_nano > 0 && e.time_nano <= self.fresh_after && what != EventMeaning::Ignore {
            // A replay of something the last inspect already saw.
            what = EventMeaning::Recheck;
        }
        match what {
            EventMeaning::Down => {
                self.reg.withdraw();
                self.draining = Some((self.last_started.clone(), Instant::now()));
                if matches!(&*self.seen.borrow(), Seen::Up(_)) {
                    info!(container = %self.name, event = %e.action, signal = ?e.signal, "container going down; key withdrawn");
                } else {
                    debug!(container = %self.name, event = %e.action, "container going down");
                }
                let reason = format!("container {:?} is going down ({})", self.name, e.action);
                self.see(Seen::Down(reason));
            }
            EventMeaning::Up => {
                debug!(container = %self.name, event = %e.action, "container up; inspecting");
                self.draining = None;
                self.reconcile().await?;
            }
            EventMeaning::Recheck => {
                debug!(container = %self.name, event = %e.action, "re-inspecting");
                self.reconcile().await?;
            }
            EventMeaning::Ignore => {}
        }
        Ok(())
    }

    /// Publish what the loop saw, waking the status task only on a change
    /// (a steady container is inspected every interval).
    fn see(&self, seen: Seen) {
        self.seen.send_if_modified(|s| {
            if *s == seen {
                false
            } else {
                *s = seen;
                true
            }
        });
    }

    fn docker_down(&mut self, e: &DockerError) {
        let msg = e.to_string();
        if !matches!(&*self.seen.borrow(), Seen::DockerDown(_)) {
            warn!(error = %msg, "Docker unreachable; keeping the last registration and retrying");
        } else {
            debug!(error = %msg, "Docker still unreachable");
        }
        self.see(Seen::DockerDown(msg));
        self.docker_failed = true;
    }

    /// Inspect and converge. Returns whether Docker answered; a
    /// configuration problem is an error (exit 2).
    async fn reconcile(&mut self) -> anyhow::Result<bool> {
        let view = match self.docker.inspect(&self.name).await {
            Ok(v) => v,
            Err(DockerError::Refused(m)) => return Err(usage(m)),
            Err(e) => {
                self.docker_down(&e);
                return Ok(false);
            }
        };
        let Some(view) = view else {
            let wait = self.missing.get_or_insert_with(|| MissingWait {
                attempts: 0,
                backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
                next: Instant::now(),
            });
            wait.attempts += 1;
            let retry_in = wait.backoff.next_delay();
            wait.next = Instant::now() + retry_in;
            info!(container = %self.name, attempt = wait.attempts, ?retry_in, "container does not exist (yet); waiting for it");
            self.reg.withdraw();
            self.id = None;
            self.see(Seen::Missing);
            return Ok(true);
        };
        if let Some(wait) = self.missing.take() {
            info!(container = %self.name, checks = wait.attempts, "the container exists now");
        }
        self.id = Some(view.id.clone());
        self.last_started = view.started_at.clone();
        if let Some((run, since)) = &self.draining {
            let other_run = !run.is_empty() && *run != view.started_at;
            if other_run || since.elapsed() > DRAIN_LIMIT {
                self.draining = None;
            }
        }
        let seen = match decide(
            &view,
            &self.rules,
            self.draining.is_some(),
            self.network.as_deref(),
        ) {
            Decision::Register { ip, network } => {
                self.network = Some(network.clone());
                let value = self.format.render(&ip, Some(&view.name));
                if self.seen.borrow().clone() != Seen::Up(value.clone()) {
                    info!(container = %self.name, %ip, %network, %value, "container up; registering");
                }
                self.reg.set_value(value.clone());
                Seen::Up(value)
            }
            Decision::Withdraw(reason) => {
                if self.seen.borrow().clone() != Seen::Down(reason.clone()) {
                    info!(container = %self.name, %reason, "not registering");
                }
                self.reg.withdraw();
                Seen::Down(reason)
            }
            // Wrong from the start is a configuration error; after the
            // container was registered once, it is a transient state (a
            // network being swapped): withdraw and wait.
            Decision::Misconfigured(m) if self.network.is_none() => return Err(usage(m)),
            Decision::Misconfigured(m) => {
                if self.seen.borrow().clone() != Seen::Down(m.clone()) {
                    warn!(container = %self.name, problem = %m, "cannot register now; waiting");
                }
                self.reg.withdraw();
                Seen::Down(m)
            }
        };
        self.see(seen);
        Ok(true)
    }
}

/// Follow the registration and what the loop saw: STATUS=, READY=1,
/// metrics, and a log line when etcd's side changes.
async fn report(
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
