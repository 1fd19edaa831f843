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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use discovery::{Backoff, Client, GroupState, LeaseGroup, RegisterOptions};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::args::Address;
use super::decide::{ContainerView, Decision, EventMeaning, ValueFormat, decide, meaning};
use super::docker::{DockerConn, DockerError, DockerEvent};
use super::follow::{Events, next_event};
use super::labels::wanted;
use super::notify::Notifier;
use super::{Control, DRAIN_LIMIT, SINCE_MARGIN, now_nanos};
use crate::common::exit::usage;
use crate::common::metrics::Metrics;

type Inspect =
    Pin<Box<dyn Future<Output = (String, u64, Result<Option<ContainerView>, DockerError>)> + Send>>;

/// What host mode needs from the command line.
#[derive(Debug, Clone)]
pub(crate) struct HostConfig {
    /// `--prefix`, for registrator-style names.
    pub prefix: String,
    /// `--address`, `--host-ip`.
    pub address: Address,
    /// `--only-label`.
    pub only: Option<(String, Option<String>)>,
    /// TTL and keep-alive interval of the host lease.
    pub register: RegisterOptions,
    /// `--resync`.
    pub resync: Duration,
    /// `%h`.
    pub hostname: String,
}

/// One container that opted in, as last inspected.
#[derive(Debug, Default)]
struct Tracked {
    name: String,
    /// `docker ps`'s fingerprint when last inspected (empty: inspect at
    /// the next resync).
    fingerprint: String,
    /// StartedAt of the run last inspected.
    started_at: String,
    /// A stopping signal was sent to this run, at this time.
    draining: Option<(String, Instant)>,
    /// Key to value this container should hold now.
    wants: BTreeMap<String, String>,
    /// Why it holds nothing (bad labels, no address), if so.
    problems: Vec<String>,
    /// Network of each key's last registration, kept while attached.
    networks: HashMap<String, String>,
}

/// The agent. Fields:
pub(crate) struct HostAgent {
    /// etcd.
    client: Client,
    /// Docker, remade after a failure.
    docker: DockerConn,
    /// The flags.
    cfg: HostConfig,
    /// Prometheus metrics.
    metrics: Arc<Metrics>,
    /// The containers that opted in, by id.
    tracked: HashMap<String, Tracked>,
    /// Containers that did not opt in: id to their fingerprint, so a
    /// resync does not inspect them again.
    ignored: HashMap<String, String>,
    /// Which container holds each key (the first to claim it keeps it).
    owners: BTreeMap<String, String>,
    /// Key conflicts: container id to the keys another container holds.
    conflicts: HashMap<String, Vec<(String, String)>>,
    /// What the lease group was last asked to hold.
    desired: BTreeMap<String, Vec<u8>>,
    /// The lease group, from the first successful resync on.
    group: Option<LeaseGroup>,
    /// `timeNano` of the last event, to resubscribe from.
    since: Option<i64>,
    /// Events at or before this time (ns) are reflected by the resync that
    /// followed the last subscription; replayed, they only ask for an
    /// inspect, so an old `die` cannot withdraw a container that runs again.
    fresh_after: i64,
    /// A request found Docker unreachable: drop the event stream too.
    docker_failed: bool,
    /// Inspects in flight, each with its container id and sequence number.
    inflight: FuturesUnordered<Inspect>,
    /// The latest inspect asked for, per container: an older one that
    /// completes later is dropped.
    inspect_seq: HashMap<String, u64>,
    /// `docker ps` fingerprints of containers a resync is inspecting,
    /// noted when their inspect applies.
    resync_fp: HashMap<String, String>,
    /// What STATUS= last said.
    status: String,
    /// The last problems logged per container, to log each once.
    logged: HashMap<String, Vec<String>>,
}

impl HostAgent {
    pub(crate) fn new(
        client: Client,
        docker: DockerConn,
        cfg: HostConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            docker,
            cfg,
            metrics,
            tracked: HashMap::new(),
            ignored: HashMap::new(),
            owners: BTreeMap::new(),
            conflicts: HashMap::new(),
            desired: BTreeMap::new(),
            group: None,
            since: None,
            fresh_after: 0,
            docker_failed: false,
            inflight: FuturesUnordered::new(),
            inspect_seq: HashMap::new(),
            resync_fp: HashMap::new(),
            status: String::new(),
            logged: HashMap::new(),
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
        let mut events: Option<Events> = None;
        let mut resubscribe_at = Instant::now();
        let mut backoff = Backoff::for_watch();
        let resync = self.cfg.resync;
        let mut tick = tokio::time::interval_at(Instant::now() + resync, resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut notifier = Notifier::new();
        let period = notifier.watchdog_period();
        let mut watchdog = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        let mut group_state: Option<watch::Receiver<GroupState>> = None;
        loop {
            if events.is_none() && Instant::now() >= resubscribe_at {
                let since = self
                    .since
                    .unwrap_or_else(|| now_nanos().saturating_sub(SINCE_MARGIN.as_nanos() as i64));
                match self.docker.events(Some(since)).await {
                    Ok(s) => {
                        debug!(since, "following Docker events");
                        self.since = Some(since);
                        events = Some(Box::pin(s));
                        if self.resync().await? {
                            backoff.reset();
                            self.fresh_after = now_nanos();
                            if self.group.is_none() {
                                self.start_group()?;
                                group_state = self.group.as_ref().map(LeaseGroup::state);
                            }
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
            self.report(&mut notifier, group_state.as_ref());
            let drain_end = self
                .tracked
                .values()
                .filter_map(|t| t.draining.as_ref().map(|(_, at)| *at + DRAIN_LIMIT))
                .min();
            tokio::select! {
                biased;
                _ = ctl.shutdown.cancelled() => return Ok(()),
                ev = next_event(&mut events) => match ev {
                    Some(Ok(msg)) => {
                        let e = DockerEvent::from_message(&msg);
                        if e.time_nano > 0 {
                            self.since = Some(e.time_nano);
                        }
                        self.on_event(&e).await?;
                    }
                    Some(Err(e)) => {
                        warn!(error = %discovery::error_chain(&e), "Docker event stream failed; resubscribing");
                        events = None;
                        self.docker.reset();
                        resubscribe_at = Instant::now() + backoff.next_delay();
                    }
                    None => {
                        warn!("Docker event stream ended (daemon restarted?); resubscribing and resyncing");
                        events = None;
                        self.docker.reset();
                        resubscribe_at = Instant::now() + backoff.next_delay();
                    }
                },
                Some((id, seq, r)) = self.inflight.next(), if !self.inflight.is_empty() => {
                    if self.inspect_seq.get(&id) == Some(&seq) {
                        self.inspect_seq.remove(&id);
                        match r {
                            Ok(view) => {
                                self.apply(&id, view);
                                if let Some(fp) = self.resync_fp.remove(&id) {
                                    if let Some(t) = self.tracked.get_mut(&id) {
                                        t.fingerprint = fp;
                                    } else if let Some(f) = self.ignored.get_mut(&id) {
                                        *f = fp;
                                    }
                                }
                            }
                            Err(DockerError::Refused(m)) => return Err(usage(m)),
                            Err(e) => {
                                self.docker.reset();
                                self.docker_down(&e);
                            }
                        }
                        self.publish();
                    }
                }
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
                    if events.is_some() {
                        debug!("safety resync");
                        self.resync().await?;
                    }
                }
                _ = tokio::time::sleep_until(drain_end.unwrap_or(resubscribe_at)),
                    if drain_end.is_some() && events.is_some() => {
                    let due: Vec<String> = self
                        .tracked
                        .iter()
                        .filter(|(_, t)| t.draining.as_ref().is_some_and(|(_, at)| at.elapsed() >= DRAIN_LIMIT))
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in due {
                        if let Some(t) = self.tracked.get_mut(&id) {
                            t.draining = None;
                        }
                        self.inspect_soon(&id).await?;
                    }
                }
                _ = tokio::time::sleep_until(resubscribe_at), if events.is_none() => {}
                _ = watchdog.tick(), if period.is_some() => {
                    if group_state.as_ref().is_none_or(|s| !s.borrow().stopped) {
                        notifier.watchdog();
                    }
                }
            }
        }
    }

    fn start_group(&mut self) -> anyhow::Result<()> {
        info!(
            keys = self.desired.len(),
            containers = self.tracked.len(),
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
        let mut running: HashMap<String, String> = HashMap::new();
        let mut to_inspect = Vec::new();
        for s in list {
            let known = self
                .tracked
                .get(&s.id)
                .map(|t| &t.fingerprint)
                .or_else(|| self.ignored.get(&s.id));
            if known != Some(&s.fingerprint) {
                to_inspect.push(s.id.clone());
            }
            running.insert(s.id, s.fingerprint);
        }
        // Gone since: stopped or removed while we were not looking.
        to_inspect.extend(
            self.tracked
                .keys()
                .filter(|id| !running.contains_key(*id))
                .cloned(),
        );
        self.ignored.retain(|id, _| running.contains_key(id));
        let n = to_inspect.len();
        for id in to_inspect {
            if self.group.is_some() {
                // Running: never block the event loop on a resync (a
                // hundred inspects on a busy engine take seconds, and a
                // stop meanwhile must still be a delete within
                // milliseconds). The fingerprint is noted when it applies.
                let fp = running.get(&id).cloned().unwrap_or_default();
                self.resync_fp.insert(id.clone(), fp);
                self.inspect_soon(&id).await?;
                continue;
            }
            if !self.inspect(&id).await? {
                return Ok(false);
            }
            if let Some(fp) = running.get(&id) {
                if let Some(t) = self.tracked.get_mut(&id) {
                    t.fingerprint = fp.clone();
                } else {
                    self.ignored.insert(id, fp.clone());
                }
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

    async fn on_event(&mut self, e: &DockerEvent) -> anyhow::Result<()> {
        let id = &e.container_id;
        if id.is_empty() {
            return Ok(());
        }
        let mut what = meaning(&e.kind, &e.action, e.signal.as_deref());
        if e.time_nano > 0 && e.time_nano <= self.fresh_after && what != EventMeaning::Ignore {
            what = EventMeaning::Recheck;
        }
        let tracked = self.tracked.contains_key(id);
        match what {
            EventMeaning::Ignore => {}
            EventMeaning::Down if tracked => {
                if e.action == "destroy" {
                    self.forget(id);
                } else if let Some(t) = self.tracked.get_mut(id) {
                    t.draining = Some((t.started_at.clone(), Instant::now()));
                    if !t.wants.is_empty() {
                        info!(container = %t.name, event = %e.action, signal = ?e.signal, "container going down; keys withdrawn");
                    }
                    t.wants.clear();
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
                if let Some(t) = self.tracked.get_mut(id) {
                    if what == EventMeaning::Up {
                        t.draining = None;
                    }
                    t.fingerprint.clear();
                }
                self.ignored.remove(id);
                self.inspect_soon(id).await?;
            }
            EventMeaning::Up | EventMeaning::Recheck => {}
        }
        Ok(())
    }

    fn forget(&mut self, id: &str) {
        if let Some(t) = self.tracked.remove(id) {
            debug!(container = %t.name, "no longer tracked");
        }
        self.logged.remove(id);
        self.conflicts.remove(id);
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

    /// Inspect one container now and record what it wants. Returns
    /// whether Docker answered.
    async fn inspect(&mut self, id: &str) -> anyhow::Result<bool> {
        // Supersedes any inspect in flight for it.
        self.inspect_seq.remove(id);
        let view = match self.docker.inspect(id).await {
            Ok(v) => v,
            Err(DockerError::Refused(m)) => return Err(usage(m)),
            Err(e) => {
                self.docker_down(&e);
                return Ok(false);
            }
        };
        self.apply(id, view);
        Ok(true)
    }

    /// Record what an inspect of `id` says the container wants.
    fn apply(&mut self, id: &str, view: Option<ContainerView>) {
        let Some(view) = view else {
            self.forget(id);
            return;
        };
        let w = wanted(
            &view,
            &self.cfg.address,
            &self.cfg.prefix,
            &self.cfg.hostname,
        );
        let selected = match &self.cfg.only {
            None => true,
            Some((k, v)) => view
                .labels
                .get(k)
                .is_some_and(|have| v.as_ref().is_none_or(|v| v == have)),
        };
        if !selected || !w.opted_in() {
            self.forget(id);
            self.ignored.insert(id.to_owned(), String::new());
            return;
        }
        let t = self.tracked.entry(id.to_owned()).or_default();
        t.name = view.name.clone();
        t.started_at = view.started_at.clone();
        if let Some((run, since)) = &t.draining {
            if (!run.is_empty() && *run != view.started_at) || since.elapsed() > DRAIN_LIMIT {
                t.draining = None;
            }
        }
        t.problems = w.problems;
        t.wants.clear();
        for spec in w.specs {
            let format = ValueFormat {
                kind: spec.value,
                host: self.cfg.hostname.clone(),
            };
            let preferred = t.networks.get(&spec.key).map(String::as_str);
            match decide(&view, &spec.rules, t.draining.is_some(), preferred) {
                Decision::Register { ip, port, network } => {
                    t.networks.insert(spec.key.clone(), network);
                    t.wants
                        .insert(spec.key, format.render(&ip, port, Some(&view.name)));
                }
                Decision::Withdraw(reason) => {
                    debug!(container = %view.name, key = %spec.key, %reason, "not registering");
                }
                Decision::Misconfigured(m) => t.problems.push(m),
            }
        }
        if !t.problems.is_empty() {
            t.wants.clear();
        }
    }

    /// Decide who holds each key and hand the result to the lease group.
    /// A key stays with the container that holds it; a second container
    /// claiming it is a conflict, reported with the holder's name.
    fn publish(&mut self) {
        let mut owners = BTreeMap::new();
        let mut desired: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut conflicts: HashMap<String, Vec<(String, String)>> = HashMap::new();
        // Current holders first, then the others by name: deterministic.
        let mut order: Vec<(&String, &Tracked)> = self.tracked.iter().collect();
        order.sort_by_key(|(id, t)| (!self.owners.values().any(|o| o == *id), t.name.clone()));
        for (id, t) in order {
            for (key, value) in &t.wants {
                match owners.get(key) {
                    Some(h) => {
                        let name = self
                            .tracked
                            .get(h)
                            .map(|o| o.name.clone())
                            .unwrap_or_default();
                        conflicts
                            .entry(id.clone())
                            .or_default()
                            .push((key.clone(), name));
                    }
                    None => {
                        owners.insert(key.clone(), id.clone());
                        desired.insert(key.clone(), value.clone().into_bytes());
                    }
                }
            }
        }
        self.owners = owners;
        self.conflicts = conflicts;
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
        self.log_problems();
    }

    /// Each container's problems, logged when they change.
    fn log_problems(&mut self) {
        let mut counts = [0i64; 3];
        for (id, t) in &self.tracked {
            let mut problems = t.problems.clone();
            for (key, holder) in self.conflicts.get(id).into_iter().flatten() {
                problems.push(format!(
                    "key {key} is already registered by container {holder:?}; give each container its own key (use %n in discovery.key)"
                ));
            }
            let state = if !problems.is_empty() {
                2
            } else if t.wants.is_empty() {
                1
            } else {
                0
            };
            counts[state] += 1;
            if self.logged.get(id) != Some(&problems) {
                for p in &problems {
                    warn!(container = %t.name, problem = %p, "not registering this container");
                }
                self.logged.insert(id.clone(), problems);
            }
        }
        for (state, n) in ["registered", "withdrawn", "problem"].iter().zip(counts) {
            self.metrics
                .containers
                .get_or_create(&vec![("state".to_owned(), (*state).to_owned())])
                .set(n);
        }
    }

    /// STATUS=, READY=1 and `up`.
    fn report(&mut self, notifier: &mut Notifier, group: Option<&watch::Receiver<GroupState>>) {
        let problems: Vec<String> = {
            let mut v: Vec<(&String, &Vec<String>)> =
                self.logged.iter().filter(|(_, p)| !p.is_empty()).collect();
            v.sort();
            v.into_iter()
                .filter_map(|(id, p)| {
                    let name = &self.tracked.get(id)?.name;
                    Some(format!("{name}: {}", p.join("; ")))
                })
                .collect()
        };
        let status = match group.map(|g| g.borrow().clone()) {
            None => "waiting for Docker to list the containers".to_owned(),
            Some(g) => {
                let mut s = match (&g.retrying, g.lease) {
                    (Some(e), _) => format!(
                        "etcd unreachable ({e}); retrying, {} of {} keys held",
                        g.held,
                        self.desired.len()
                    ),
                    (None, Some(lease)) => format!(
                        "registered {} of {} keys (lease {lease}, {} containers)",
                        g.held,
                        self.desired.len(),
                        self.tracked.len()
                    ),
                    (None, None) => "registering".to_owned(),
                };
                for (k, l) in &g.conflicts {
                    s.push_str(&format!("; {k} is held by another writer (lease {l})"));
                }
                for (k, r) in &g.refused {
                    s.push_str(&format!("; etcd refuses {k}: {r}"));
                }
                if g.synced && g.retrying.is_none() && !notifier.is_ready() {
                    info!(keys = g.held, "ready");
                    notifier.ready();
                }
                self.metrics
                    .up
                    .set(i64::from(g.lease.is_some() && g.retrying.is_none()));
                s
            }
        };
        let status = if problems.is_empty() {
            status
        } else {
            // STATUS= is one line of modest length.
            let mut all = problems.join(" | ");
            if all.len() > 400 {
                let mut cut = 400;
                while !all.is_char_boundary(cut) {
                    cut -= 1;
                }
                all.truncate(cut);
                all.push('…');
            }
            format!("{status}; {} with problems: {all}", problems.len())
        };
        if status != self.status {
            notifier.status(&status);
            self.status = status;
        }
    }
}

/// Wait for the group's state to change; false when the group is gone.
async fn changed(rx: &mut Option<watch::Receiver<GroupState>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
