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

mod docker_side;
mod publish;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use discovery::{Client, GroupState, LeaseGroup, RegisterOptions};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::args::Address;
use super::decide::{ContainerView, Decision, EventMeaning, ValueFormat, decide};
use super::docker::{DockerConn, DockerError, DockerEvent};
use super::events::EventFeed;
use super::labels::wanted;
use super::notify::Notifier;
use super::{Control, DRAIN_LIMIT};
use crate::common::exit::usage;
use crate::common::metrics::Metrics;
use crate::common::time::sleep_until_opt;

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
    /// Docker's event stream.
    feed: EventFeed,
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
            feed: EventFeed::new(),
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
        let resync = self.cfg.resync;
        let mut tick = tokio::time::interval_at(Instant::now() + resync, resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut notifier = Notifier::new();
        let period = notifier.watchdog_period();
        let mut watchdog = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        let mut group_state: Option<watch::Receiver<GroupState>> = None;
        loop {
            match self.feed.subscribe(&mut self.docker).await {
                Ok(true) => {
                    if self.resync().await? {
                        self.feed.settled();
                        if self.group.is_none() {
                            self.start_group()?;
                            group_state = self.group.as_ref().map(LeaseGroup::state);
                        }
                    }
                }
                Ok(false) => {}
                Err(DockerError::Refused(m)) => return Err(usage(m)),
                Err(e) => self.docker_down(&e),
            }
            if std::mem::take(&mut self.docker_failed) && self.feed.is_live() {
                self.feed.lost(&mut self.docker);
            }
            self.report(&mut notifier, group_state.as_ref());
            let live = self.feed.is_live();
            let resubscribe_at = self.feed.resubscribe_at();
            let drain_end = self
                .tracked
                .values()
                .filter_map(|t| t.draining.as_ref().map(|(_, at)| *at + DRAIN_LIMIT))
                .min();
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
                _ = sleep_until_opt(drain_end), if live => self.drained().await?,
                _ = sleep_until_opt(resubscribe_at) => {}
                _ = watchdog.tick(), if period.is_some() => {
                    if group_state.as_ref().is_none_or(|s| !s.borrow().stopped) {
                        notifier.watchdog();
                    }
                }
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
        Ok(())
    }

    /// The drain limit is up for containers that survived a stopping
    /// signal: look at them again.
    async fn drained(&mut self) -> anyhow::Result<()> {
        let due: Vec<String> = self
            .tracked
            .iter()
            .filter(|(_, t)| {
                t.draining
                    .as_ref()
                    .is_some_and(|(_, at)| at.elapsed() >= DRAIN_LIMIT)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(t) = self.tracked.get_mut(&id) {
                t.draining = None;
            }
            self.inspect_soon(&id).await?;
        }
        Ok(())
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
}

/// Wait for the group's state to change; false when the group is gone.
async fn changed(rx: &mut Option<watch::Receiver<GroupState>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
