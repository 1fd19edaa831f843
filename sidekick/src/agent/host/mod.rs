//! `sidekick --all`: one agent per host, registering every running
//! container that opts in with labels (see [`super::labels`]).
//!
//! All keys live under one lease ([`discovery::LeaseGroup`]): one
//! keep-alive stream for the whole host, an explicit delete the moment
//! Docker says a container stops, every key gone within the TTL if the
//! agent dies, and, after a crash restart, the live lease adopted so that
//! watchers see nothing for containers that did not change.
//!
//! Docker's event stream drives it. A container is inspected when an
//! event names it, and at the safety resync (on every (re)subscription,
//! and every `--resync`), which lists the running containers and inspects
//! only those whose networks, ports, health or labels differ from what the
//! last inspect saw.
//!
//! The cut: [`ledger::Ledger`] is the record (containers, the keys each
//! wants, who owns each key), plain data unit-tested on its own;
//! [`HostAgent`] here is the event loop that feeds it what Docker says and
//! hands its result to the lease group; `status.rs` says where things stand.

mod ledger;
mod status;
mod tracked;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use discovery::{Client, GroupState, LeaseGroup};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Control;
use super::check::{CheckMetrics, Checks, Outcome};
use super::decide::{ContainerView, EventMeaning};
use super::docker::{DockerConn, DockerError, DockerEvent};
use super::events::EventFeed;
use super::notify::Notifier;
use super::plan::HostConfig;
use crate::common::exit::usage;
use crate::common::metrics::Metrics;
use crate::common::time::sleep_until_opt;
use ledger::{Ledger, Target};
use status::Reporter;

/// After the first resync, how long the lease group may wait for the
/// first results of the checks, beyond their timeout: the first check of
/// each comes within a second.
const FIRST_RESULTS_MARGIN: Duration = Duration::from_secs(2);

/// An inspect in flight: the container's id, the sequence number it was
/// asked with, and Docker's answer.
type Inspect =
    Pin<Box<dyn Future<Output = (String, u64, Result<Option<ContainerView>, DockerError>)> + Send>>;

/// The event loop of `sidekick --all`.
pub(crate) struct HostAgent {
    /// etcd, to start the lease group once Docker has listed the containers.
    client: Client,
    /// Docker, remade after a failure.
    docker: DockerConn,
    /// What the command line asked for.
    cfg: HostConfig,
    /// Prometheus metrics (`--metrics-addr`).
    metrics: Arc<Metrics>,
    /// The health checks' metrics.
    check_metrics: CheckMetrics,
    /// The health checks: when each runs, and those in flight.
    checks: Checks<Target>,
    /// Docker answered the first resync, and the lease group waits for the
    /// checks' first results until then at the latest.
    group_due: Option<Instant>,
    /// What we know of the containers and their keys.
    ledger: Ledger,
    /// What the lease group was last asked to hold: the ledger's result,
    /// kept to hand the group only what changed.
    desired: BTreeMap<String, Vec<u8>>,
    /// The lease group, from the first successful resync on (starting it
    /// before would delete the keys an adopted lease holds for containers
    /// not yet seen).
    group: Option<LeaseGroup>,
    /// Docker's event stream.
    feed: EventFeed,
    /// A request found Docker unreachable: drop the event stream too (over
    /// tcp:// a half-open stream would never end by itself).
    docker_failed: bool,
    /// Inspects in flight: one slow inspect must not hold up another
    /// container's delete.
    inflight: FuturesUnordered<Inspect>,
    /// The latest inspect asked for, per container: an older one that
    /// completes later is dropped.
    inspect_seq: HashMap<String, u64>,
    /// `docker ps` fingerprints of containers a resync is inspecting,
    /// noted when their inspect applies.
    resync_fp: HashMap<String, String>,
    /// What the logs, the gauge and STATUS= last said.
    reporter: Reporter,
}

impl HostAgent {
    /// An agent that knows nothing yet.
    pub(crate) fn new(
        client: Client,
        docker: DockerConn,
        cfg: HostConfig,
        metrics: Arc<Metrics>,
        check_metrics: CheckMetrics,
    ) -> Self {
        Self {
            client,
            docker,
            cfg,
            metrics,
            check_metrics,
            checks: Checks::new(),
            group_due: None,
            ledger: Ledger::default(),
            desired: BTreeMap::new(),
            group: None,
            feed: EventFeed::new(),
            docker_failed: false,
            inflight: FuturesUnordered::new(),
            inspect_seq: HashMap::new(),
            resync_fp: HashMap::new(),
            reporter: Reporter::default(),
        }
    }

    /// Run until shutdown; then revoke the lease (every key goes at once).
    pub(crate) async fn run(mut self, ctl: &Control) -> anyhow::Result<()> {
        let outcome = self.follow(ctl).await;
        Notifier::new().stopping();
        if let Some(group) = self.group.take() {
            let t = Instant::now();
            let keys = self.desired.len();
            match tokio::time::timeout(Duration::from_secs(1), group.shutdown()).await {
                Ok(_) => {
                    info!(keys, took = ?t.elapsed(), "lease revoked, every key withdrawn; exiting")
                }
                Err(_) => warn!(
                    keys,
                    "etcd did not confirm the revoke in time; exiting, and the keys expire with the lease"
                ),
            }
        }
        outcome
    }

    async fn follow(&mut self, ctl: &Control) -> anyhow::Result<()> {
        let resync = self.cfg.resync;
        let mut tick = tokio::time::interval_at(Instant::now() + resync, resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut notifier = Notifier::new();
        let period = notifier.watchdog_period();
        let mut watchdog = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        let mut group_state: Option<watch::Receiver<GroupState>> = None;
        // The last turn was a check result that moved nothing STATUS=
        // shows: the report is skipped (it looks at every container; with
        // 100 checked, perf put it at a third of the agent's user time).
        let mut quiet = false;
        loop {
            match self.feed.subscribe(&mut self.docker).await {
                Ok(true) => {
                    quiet = false;
                    if self.resync().await? {
                        self.feed.settled();
                        if self.group.is_none() && self.group_due.is_none() {
                            let longest = self.ledger.checks().map(|(_, _, s)| s.timeout).max();
                            let wait = longest.map_or(Duration::ZERO, |t| t + FIRST_RESULTS_MARGIN);
                            self.group_due = Some(Instant::now() + wait);
                        }
                    }
                }
                Ok(false) => {}
                Err(DockerError::Refused(m)) => return Err(usage(m)),
                Err(e) => {
                    quiet = false;
                    self.docker_down(&e);
                }
            }
            if std::mem::take(&mut self.docker_failed) && self.feed.is_live() {
                quiet = false;
                self.feed.lost(&mut self.docker);
            }
            // The group starts once every check had its first result (or
            // its time is up), so that its first set of keys is complete.
            let group_due = self.group_due.filter(|_| self.group.is_none());
            if group_due
                .is_some_and(|due| !self.ledger.awaiting_first_results() || Instant::now() >= due)
            {
                self.start_group()?;
                group_state = self.group.as_ref().map(LeaseGroup::state);
                quiet = false;
            }
            if !std::mem::take(&mut quiet) {
                let group_now = group_state.as_ref().map(|g| g.borrow().clone());
                self.reporter.status(
                    &self.ledger,
                    self.desired.len(),
                    group_now.as_ref(),
                    &mut notifier,
                    &self.metrics,
                );
            }
            let live = self.feed.is_live();
            let resubscribe_at = self.feed.resubscribe_at();
            let drain_end = self.ledger.drain_end();
            tokio::select! {
                biased;
                _ = ctl.shutdown.cancelled() => return Ok(()),
                ev = self.feed.next() => match ev {
                    Some(e) => self.on_event(&e).await?,
                    None => self.feed.lost(&mut self.docker),
                },
                Some((id, seq, r)) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.inspected(id, seq, r)?;
                }
                (target, outcome) = self.checks.next(self.docker.cached()) => {
                    quiet = !self.checked(&target, &outcome);
                }
                _ = sleep_until_opt(group_due) => {}
                r = changed(&mut group_state) => {
                    if !r {
                        return Err(anyhow::anyhow!("the lease group stopped unexpectedly; nothing keeps the lease alive"));
                    }
                }
                _ = ctl.reconcile.notified() => {
                    info!("SIGHUP: resyncing now");
                    self.resync().await?;
                }
                _ = tick.tick() => {
                    if live {
                        debug!("safety resync");
                        self.resync().await?;
                    }
                }
                _ = sleep_until_opt(drain_end), if live => {
                    for id in self.ledger.drained(Instant::now()) {
                        self.inspect_soon(&id).await?;
                    }
                }
                _ = sleep_until_opt(resubscribe_at) => {}
                _ = watchdog.tick(), if period.is_some() => {
                    if group_state.as_ref().is_none_or(|s| !s.borrow().stopped) {
                        notifier.watchdog();
                    }
                }
            }
        }
    }

    /// An event names a container: withdraw it at once if it is going
    /// down, or look at it again.
    async fn on_event(&mut self, e: &DockerEvent) -> anyhow::Result<()> {
        let id = &e.container_id;
        if id.is_empty() {
            return Ok(());
        }
        let what = self.feed.meaning(e);
        let tracked = self.ledger.is_tracked(id);
        match what {
            EventMeaning::Ignore => {}
            EventMeaning::Down if tracked => {
                let destroyed = e.action == "destroy";
                if let Some(name) = self.ledger.down(id, destroyed, Instant::now()) {
                    info!(container = %name, event = %e.action, signal = ?e.signal, "container going down; keys withdrawn");
                }
                self.publish();
            }
            // Not tracked, but an inspect is in flight (it started a moment
            // ago): that inspect may predate the stop, so look again.
            EventMeaning::Down if self.inspect_seq.contains_key(id) => {
                self.inspect_soon(id).await?;
            }
            EventMeaning::Down => {}
            // An untracked container matters on start (it may have just
            // been created with labels, or with SERVICE_* in its
            // environment), or when its event shows our labels.
            EventMeaning::Up | EventMeaning::Recheck
                if tracked || e.labelled || e.action == "start" =>
            {
                self.ledger.recheck(id, what == EventMeaning::Up);
                self.inspect_soon(id).await?;
            }
            EventMeaning::Up | EventMeaning::Recheck => {}
        }
        Ok(())
    }

    /// List the running containers; inspect the ones that are new or
    /// changed, and the tracked ones that are gone. Returns whether Docker
    /// answered.
    async fn resync(&mut self) -> anyhow::Result<bool> {
        let list = match self.docker.list_running().await {
            Ok(l) => l,
            Err(DockerError::Refused(m)) => return Err(usage(m)),
            Err(e) => {
                self.docker_down(&e);
                return Ok(false);
            }
        };
        let (running, to_inspect) = self.ledger.stale(list);
        let n = to_inspect.len();
        for id in to_inspect {
            let fp = running.get(&id).cloned();
            if self.group.is_some() {
                // Running: never block the event loop on a resync (a
                // hundred inspects on a busy engine take seconds, and a
                // stop meanwhile must still be a delete within
                // milliseconds). The fingerprint is noted when it applies.
                self.resync_fp.insert(id.clone(), fp.unwrap_or_default());
                self.inspect_soon(&id).await?;
                continue;
            }
            // Before the group starts, every container is looked at first,
            // so that the group's first set of keys is complete.
            self.inspect_seq.remove(&id);
            let view = match self.docker.inspect(&id).await {
                Ok(v) => v,
                Err(DockerError::Refused(m)) => return Err(usage(m)),
                Err(e) => {
                    self.docker_down(&e);
                    return Ok(false);
                }
            };
            self.ledger.apply(&id, view, &self.cfg, Instant::now());
            if let Some(fp) = fp {
                self.ledger.note_fingerprint(&id, fp);
            }
        }
        debug!(
            running = running.len(),
            inspected = n,
            "resynced with docker ps"
        );
        self.publish();
        Ok(true)
    }

    /// Start an inspect of `id` without waiting for it: its result is
    /// applied when it comes, unless a newer one was asked for meanwhile.
    async fn inspect_soon(&mut self, id: &str) -> anyhow::Result<()> {
        match self.docker.inspect_later(id).await {
            Ok(fut) => {
                let seq = self.inspect_seq.entry(id.to_owned()).or_default();
                *seq += 1;
                let (id, seq) = (id.to_owned(), *seq);
                self.inflight
                    .push(Box::pin(async move { (id, seq, fut.await) }));
                Ok(())
            }
            Err(DockerError::Refused(m)) => Err(usage(m)),
            Err(e) => {
                self.docker_down(&e);
                Ok(())
            }
        }
    }

    /// An inspect came back: apply it unless a newer one was asked for.
    fn inspected(
        &mut self,
        id: String,
        seq: u64,
        r: Result<Option<ContainerView>, DockerError>,
    ) -> anyhow::Result<()> {
        if self.inspect_seq.get(&id) != Some(&seq) {
            return Ok(());
        }
        self.inspect_seq.remove(&id);
        match r {
            Ok(view) => {
                self.ledger.apply(&id, view, &self.cfg, Instant::now());
                if let Some(fp) = self.resync_fp.remove(&id) {
                    self.ledger.note_fingerprint(&id, fp);
                }
            }
            Err(DockerError::Refused(m)) => return Err(usage(m)),
            Err(e) => {
                self.docker.reset();
                self.docker_down(&e);
            }
        }
        self.publish();
        Ok(())
    }

    /// A check's result is in: count it, schedule the next, and publish
    /// if it changes what is registered. Returns whether STATUS= may say
    /// something new.
    fn checked(&mut self, target: &Target, outcome: &Outcome) -> bool {
        self.check_metrics.result(outcome);
        let now = Instant::now();
        let moved = self.ledger.check_result(target, outcome, now);
        self.checks.after(target, moved.starting, now);
        if moved.registered {
            self.publish();
        } else if let Some((name, state)) = self.ledger.check_state(target) {
            // Only this key's state can have moved: updating it alone keeps
            // a check's cost flat in the number of containers (a full
            // report per result was most of a check's CPU with 200).
            self.check_metrics.state(name, &target.1, state);
        }
        moved.registered || moved.shown
    }

    /// Hand the group what changed in the ledger's result, have the checks
    /// follow the ledger's, and say where the containers stand.
    fn publish(&mut self) {
        let desired = self.ledger.desired();
        if let Some(group) = &self.group {
            for k in self.desired.keys() {
                if !desired.contains_key(k) {
                    group.remove(k);
                }
            }
            for (k, v) in &desired {
                if self.desired.get(k) != Some(v) {
                    if let Err(e) = group.set(k, v.clone()) {
                        warn!(key = %k, error = %e, "cannot register this key");
                    }
                }
            }
        }
        self.desired = desired;
        let now = Instant::now();
        let ledger = &self.ledger;
        self.checks.retain(|t| ledger.is_checked(t));
        for (target, probe, spec) in ledger.checks() {
            self.checks.set(target, probe.clone(), spec, now);
        }
        self.reporter
            .problems(&self.ledger, &self.metrics, &self.check_metrics);
    }

    fn start_group(&mut self) -> anyhow::Result<()> {
        info!(
            keys = self.desired.len(),
            containers = self.ledger.tracked_count(),
            ttl = ?self.cfg.register.ttl(),
            "registering the host's containers under one lease"
        );
        let group = self
            .client
            .lease_group(self.cfg.register.clone(), self.desired.clone())
            .map_err(|e| usage(e.to_string()))?;
        self.group = Some(group);
        Ok(())
    }

    fn docker_down(&mut self, e: &DockerError) {
        warn!(error = %e, "Docker unreachable; keeping the registrations and retrying");
        self.docker_failed = true;
    }
}

/// Wait for the group's state to change; false when the group is gone.
async fn changed(rx: &mut Option<watch::Receiver<GroupState>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
