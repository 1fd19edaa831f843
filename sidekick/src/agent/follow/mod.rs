//! Follow one container (`--container`): Docker's event stream says what
//! changed; an inspect follows each event that names the container, each
//! (re)subscription, and a slow safety resync (`--resync`). What its keys
//! hold, and its health check, are `keys.rs`'s.

mod keys;

use std::time::Duration;

use discovery::{Backoff, RegistrationState};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::decide::{Decision, EventMeaning, Rules, decide};
use super::docker::{DockerConn, DockerError, DockerEvent};
use super::events::EventFeed;
use super::notify::Notifier;
use super::report::Seen;
use super::{Control, DRAIN_LIMIT};
use crate::common::exit::usage;
use crate::common::time::sleep_until_opt;
pub(crate) use keys::Keys;

/// The follow loop of one container (`--container`).
pub(crate) struct Follower<'a> {
    /// The container's name (or id) as given.
    pub(crate) name: String,
    /// The Docker connection, remade after a failure.
    pub(crate) docker: &'a mut DockerConn,
    /// What to register, from the flags.
    pub(crate) rules: Rules,
    /// The keys in etcd, and the check that gates them.
    pub(crate) keys: Keys<'a>,
    /// What the loop saw, for the reporter.
    pub(crate) seen: watch::Sender<Seen>,
    /// The container's id once known.
    pub(crate) id: Option<String>,
    /// A stopping signal was sent to this run (its StartedAt), at this time.
    pub(crate) draining: Option<(String, Instant)>,
    /// Docker's event stream.
    pub(crate) feed: EventFeed,
    /// An inspect found Docker unreachable: drop the event stream too
    /// (over tcp:// a half-open stream would never end by itself).
    pub(crate) docker_failed: bool,
    /// While the container does not exist: the checks so far and the next.
    pub(crate) missing: Option<MissingWait>,
    /// StartedAt of the run last inspected.
    pub(crate) last_started: String,
    /// The network of the last registration (kept while attached).
    pub(crate) network: Option<String>,
}

impl<'a> Follower<'a> {
    /// A follower that knows nothing of the container yet.
    pub(crate) fn new(
        name: String,
        docker: &'a mut DockerConn,
        rules: Rules,
        keys: Keys<'a>,
        seen: watch::Sender<Seen>,
    ) -> Self {
        Self {
            name,
            docker,
            rules,
            keys,
            seen,
            id: None,
            draining: None,
            feed: EventFeed::new(),
            docker_failed: false,
            missing: None,
            last_started: String::new(),
            network: None,
        }
    }
}

/// Waiting for a container that does not exist yet. Its `start` event
/// registers it at once; these checks, with backoff, are the safety net.
pub(crate) struct MissingWait {
    /// Inspects that found no container so far, for the log.
    attempts: u32,
    /// Delays between those inspects (250 ms doubling to 30 s).
    backoff: Backoff,
    /// When the next inspect is due.
    next: Instant,
}

impl Follower<'_> {
    /// Follow the container until shutdown. Docker's events drive
    /// everything; a full inspect happens on (re)subscription and every
    /// `resync`, as a safety net, never on the keep-alive's cadence.
    pub(crate) async fn run(mut self, resync: Duration, ctl: &Control) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval_at(Instant::now() + resync, resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let notifier_period = Notifier::new().watchdog_period();
        let mut watchdog =
            tokio::time::interval(notifier_period.unwrap_or(Duration::from_secs(3600)));
        let watchdog_on = Notifier::new();
        loop {
            match self.feed.subscribe(self.docker).await {
                Ok(true) => {
                    if self.reconcile().await? {
                        self.feed.settled();
                    }
                }
                Ok(false) => {}
                Err(DockerError::Refused(m)) => return Err(usage(m)),
                Err(e) => self.docker_down(&e),
            }
            if std::mem::take(&mut self.docker_failed) && self.feed.is_live() {
                self.feed.lost(self.docker);
            }
            let live = self.feed.is_live();
            let resubscribe_at = self.feed.resubscribe_at();
            let missing_next = self.missing.as_ref().map(|m| m.next);
            // A stopping signal the container survived: look again when
            // the drain limit is up, not only at the next resync.
            let drain_end = self.draining.as_ref().map(|(_, at)| *at + DRAIN_LIMIT);
            tokio::select! {
                biased;
                _ = ctl.shutdown.cancelled() => return Ok(()),
                ev = self.feed.next() => match ev {
                    Some(e) => {
                        if e.concerns(&self.name, self.id.as_deref()) {
                            self.on_event(&e).await?;
                        }
                    }
                    None => self.feed.lost(self.docker),
                },
                _ = ctl.reconcile.notified() => {
                    info!("SIGHUP: reconciling now");
                    self.reconcile().await?;
                }
                _ = tick.tick() => {
                    // While the container is missing, its own schedule applies.
                    if live && self.missing.is_none() {
                        debug!(container = %self.name, "safety resync");
                        self.reconcile().await?;
                    }
                }
                _ = sleep_until_opt(drain_end), if live => {
                    self.reconcile().await?;
                }
                _ = sleep_until_opt(missing_next), if live => {
                    self.reconcile().await?;
                }
                _ = sleep_until_opt(resubscribe_at) => {}
                seen = self.keys.next_check(self.docker.cached()) => self.see(seen),
                _ = watchdog.tick(), if notifier_period.is_some() => {
                    // Only a loop that is turning pings; and only while the
                    // registration task is alive to keep the lease.
                    if self.keys.main().is_some_and(|r| !matches!(*r.state().borrow(), RegistrationState::Stopped)) {
                        watchdog_on.watchdog();
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, e: &DockerEvent) -> anyhow::Result<()> {
        let what = self.feed.meaning(e);
        match what {
            EventMeaning::Down => {
                self.keys.withdraw();
                self.draining = Some((self.last_started.clone(), Instant::now()));
                if matches!(&*self.seen.borrow(), Seen::Up { .. }) {
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
    /// (a resync of a steady container changes nothing).
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
            self.keys.withdraw();
            self.id = None;
            self.see(Seen::Missing);
            return Ok(true);
        };
        if let Some(wait) = self.missing.take() {
            info!(container = %self.name, checks = wait.attempts, "the container exists now");
        }
        self.id = Some(view.id.clone());
        let new_run = self.last_started != view.started_at;
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
            Decision::Register {
                addrs,
                port,
                network,
            } => {
                self.network = Some(network.clone());
                let ip = addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ");
                let seen = self.keys.register(&view, addrs, port, new_run);
                if *self.seen.borrow() != seen {
                    match &seen {
                        Seen::Up { values, .. } => {
                            let value = values.values().cloned().collect::<Vec<_>>().join(" ");
                            info!(container = %self.name, %ip, %network, %value, "container up; registering");
                        }
                        _ => {
                            info!(container = %self.name, %ip, %network, "container up; checking it before registering")
                        }
                    }
                }
                seen
            }
            Decision::Withdraw(reason) => {
                if self.seen.borrow().clone() != Seen::Down(reason.clone()) {
                    info!(container = %self.name, %reason, "not registering");
                }
                self.keys.withdraw();
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
                self.keys.withdraw();
                Seen::Down(m)
            }
        };
        self.see(seen);
        Ok(true)
    }
}
