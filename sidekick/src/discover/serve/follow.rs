//! The watch task: one library watch per prefix (and the SkyDNS path),
//! folded with [`PrefixState`], indexed into the catalogs, and published as
//! a new [`Zone`] after each burst of messages. Queries never wait on it:
//! they read whichever zone was last published.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use discovery::{
    Action, Applied, Client, Prefix, PrefixState, WatchMessage, WatchOptions, WatchStatus,
};
use futures::{FutureExt, StreamExt};
use hickory_server::proto::rr::LowerName;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::catalog::{Catalog, Problem};
use super::health::Health;
use super::metrics::ServeMetrics;
use super::skydns::SkyCatalog;
use super::zone::{self, RecordCounts, SkyNames, Zone};
use crate::common::metrics::Metrics;

/// At most this many problems are logged one by one per round; the rest
/// are counted (a bad snapshot of thousands of keys is one screen, not
/// thousands of lines).
const LOG_LIMIT: usize = 20;

/// What the watch task needs.
#[derive(Debug)]
pub struct Setup {
    /// `--domain`.
    pub origin: LowerName,
    /// `--dns-ttl`, seconds.
    pub ttl: u32,
    /// The services prefixes.
    pub prefixes: Vec<Prefix>,
    /// The SkyDNS path, if served.
    pub skydns: Option<Prefix>,
    /// Where the zone is published.
    pub zone: Arc<ArcSwap<Zone>>,
    /// Readiness and staleness.
    pub health: Arc<Health>,
    /// Serve's own series.
    pub metrics: Arc<ServeMetrics>,
    /// The shared `discover_*` series.
    pub shared: Arc<Metrics>,
}

/// Follow the prefixes until `shutdown`; `ready` fires once every prefix
/// has had its first snapshot and the zone holds it. An `Err` is a
/// permanent watch failure (such as permission denied).
pub async fn run(
    setup: Setup,
    client: Client,
    ready: oneshot::Sender<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut watched: Vec<Prefix> = setup.prefixes.clone();
    watched.extend(setup.skydns.iter().cloned());
    let (handles, mut merged) = client
        .watch_prefixes(watched.iter().map(Prefix::as_str), WatchOptions::new())
        .context("cannot watch")?;
    let statuses: Vec<_> = handles.iter().map(|h| h.status()).collect();
    for s in &statuses {
        setup.shared.follow_watch(s.clone());
    }
    let _staleness = AbortOnDrop(tokio::spawn(follow_staleness(
        statuses,
        setup.health.clone(),
    )));
    let failed = |i: usize, e: discovery::Error| {
        anyhow::Error::new(e).context(format!("the watch of {} failed", watched[i]))
    };
    let snapshots = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        s = merged.snapshots() => s.map_err(|(i, e)| failed(i, e))?,
    };
    // The zone is built on a thread of its own; see `build_zones`.
    let (tx, rx) = std::sync::mpsc::channel::<Batch>();
    std::thread::Builder::new()
        .name("serve-zone".into())
        .spawn(move || build_zones(setup, rx, ready))
        .context("cannot start the thread that builds the zone")?;
    let first: Batch = snapshots
        .into_iter()
        .enumerate()
        .map(|(i, snap)| (i, WatchMessage::Snapshot(snap)))
        .collect();
    let stopped = || anyhow::anyhow!("the thread that builds the zone stopped");
    tx.send(first).map_err(|_| stopped())?;
    loop {
        let mut next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = merged.next() => m,
        };
        // Everything already delivered goes into one new zone.
        let mut batch = Batch::new();
        loop {
            match next {
                Some((i, Ok(m))) => batch.push((i, m)),
                Some((i, Err(e))) => return Err(failed(i, e)),
                None => anyhow::bail!("the watches ended"),
            }
            next = match merged.next().now_or_never() {
                Some(m) => m,
                None => break,
            };
        }
        tx.send(batch).map_err(|_| stopped())?;
    }
}

/// Watch messages delivered together, by watch index: one new zone.
type Batch = Vec<(usize, WatchMessage)>;

/// Fold each batch of `rx` and publish the zone it makes; the first batch
/// is every prefix's snapshot, after which `ready` fires. Ends when the
/// sender is dropped.
///
/// This runs on a thread of its own so that every allocation of the zone
/// comes from one glibc arena. Built on the runtime's worker threads, a
/// rebuilt service's records landed in whichever arena the task's current
/// thread had, while the old ones were freed into another, and the freed
/// room was not reused: rewriting each of 10,002 keys twice grew the RSS
/// from 39 to 58 MiB at a heap of 28 MiB (issue #20; heaptrack); on
/// this thread it stays at 44 MiB.
fn build_zones(setup: Setup, rx: std::sync::mpsc::Receiver<Batch>, ready: oneshot::Sender<()>) {
    let health = setup.health.clone();
    let mut fold = Fold::new(setup);
    let Ok(first) = rx.recv() else {
        return;
    };
    for (i, m) in &first {
        fold.apply(*i, m);
    }
    drop(first);
    fold.publish(true);
    health.set_ready();
    let _ = ready.send(());
    for batch in rx {
        let mut changed = Changed::default();
        for (i, m) in &batch {
            changed.add(fold.apply(*i, m));
        }
        drop(batch);
        // One re-list (its set and delete events arrive together) is one
        // resync, however many keys it changed.
        for _ in changed.resynced.iter() {
            fold.shared.watch_resyncs.inc();
        }
        if changed.any {
            fold.publish(changed.sky);
        }
    }
}

/// What a burst of messages changed.
#[derive(Debug, Default)]
struct Changed {
    /// Some key's value (or presence).
    any: bool,
    /// Some key of the SkyDNS layout.
    sky: bool,
    /// The watches (by index) that re-listed.
    resynced: BTreeSet<usize>,
}

impl Changed {
    /// Note one event's outcome: (watch index, SkyDNS key, resync) when it changed something.
    fn add(&mut self, one: Option<(usize, bool, bool)>) {
        if let Some((i, sky, resync)) = one {
            self.any = true;
            self.sky |= sky;
            if resync {
                self.resynced.insert(i);
            }
        }
    }
}

/// The fold: each prefix's state, indexed into the two layouts.
struct Fold {
    /// `--domain`.
    origin: LowerName,
    /// `--dns-ttl`, in seconds.
    ttl: u32,
    /// How many of the watched prefixes are services prefixes (the
    /// SkyDNS path, if any, comes after them).
    services: usize,
    /// Each watched prefix's keys and values, in watch order.
    states: Vec<PrefixState>,
    /// The services layout, indexed by service.
    catalog: Catalog,
    /// The SkyDNS layout, when `--skydns` is on.
    sky: Option<SkyCatalog>,
    /// The SkyDNS names last built, reused while no SkyDNS key changes.
    sky_built: (Arc<SkyNames>, RecordCounts),
    /// The problems last logged.
    reported: BTreeSet<Problem>,
    /// Where the built zone is published for the queries.
    zone: Arc<ArcSwap<Zone>>,
    /// The records, staleness and resync series.
    metrics: Arc<ServeMetrics>,
    /// The registry, for the library's watch metrics.
    shared: Arc<Metrics>,
}

impl Fold {
    /// An empty fold for `s`'s prefixes.
    fn new(s: Setup) -> Self {
        let services = s.prefixes.len();
        let n = services + usize::from(s.skydns.is_some());
        Self {
            catalog: Catalog::new(s.origin.clone(), s.ttl, s.prefixes),
            sky: s
                .skydns
                .map(|p| SkyCatalog::new(p, s.origin.clone(), s.ttl)),
            origin: s.origin,
            ttl: s.ttl,
            services,
            states: vec![PrefixState::new(); n],
            sky_built: Default::default(),
            reported: BTreeSet::new(),
            zone: s.zone,
            metrics: s.metrics,
            shared: s.shared,
        }
    }

    /// Apply one message of watch `i`. When it changed a key: `(i, whether
    /// it is the SkyDNS layout's, whether it is a resync)`.
    fn apply(&mut self, i: usize, msg: &WatchMessage) -> Option<(usize, bool, bool)> {
        let applied = self.states[i].apply(msg);
        let is_sky = i >= self.services;
        match (msg, applied) {
            (WatchMessage::Snapshot(_), Applied::Snapshot) => {
                let nodes = self.states[i].nodes();
                match (&mut self.sky, is_sky) {
                    (Some(c), true) => c.replace(nodes),
                    _ => self.catalog.replace(i, nodes),
                }
                Some((i, is_sky, false))
            }
            (WatchMessage::Event(e), Applied::Changed(action)) => {
                self.shared.event(action);
                let deleted = action == Action::Delete;
                match (&mut self.sky, is_sky, deleted) {
                    (Some(c), true, true) => c.delete(e.key()),
                    (Some(c), true, false) => c.put(e.node()),
                    (_, _, true) => self.catalog.delete(i, e.key()),
                    (_, _, false) => self.catalog.put(i, e.node()),
                }
                Some((i, is_sky, e.is_resync()))
            }
            // The same value written again: counted, nothing to rebuild.
            (WatchMessage::Event(e), _) => {
                self.shared.event(e.action());
                None
            }
            _ => None,
        }
    }

    /// Build the changed parts and publish a new zone.
    fn publish(&mut self, sky_changed: bool) {
        if let (Some(c), true) = (&self.sky, sky_changed) {
            self.sky_built = c.build();
        }
        let built = self.catalog.build();
        let mut counts = self.sky_built.1;
        let mut any_srv = false;
        for s in built.values() {
            any_srv |= s.names.srv.is_some();
            counts.a += s.counts.a;
            counts.aaaa += s.counts.aaaa;
            counts.srv += s.counts.srv;
        }
        let revision = self
            .states
            .iter()
            .map(PrefixState::revision)
            .max()
            .unwrap_or(0);
        self.zone.store(Arc::new(Zone {
            origin: self.origin.clone(),
            soa: zone::soa(&self.origin, self.ttl, revision),
            services: built,
            any_srv,
            sky: self.sky_built.0.clone(),
            counts,
        }));
        self.metrics.records(&counts);
        let mut problems = self.catalog.problems();
        if let Some(c) = &self.sky {
            problems.extend(c.problems());
        }
        let collisions = self.catalog.collisions();
        self.metrics
            .problems(problems.len().saturating_sub(collisions), collisions);
        report(&self.reported, &problems);
        self.reported = problems;
        debug!(
            revision,
            a = counts.a,
            aaaa = counts.aaaa,
            srv = counts.srv,
            "zone published"
        );
    }
}

/// Log what became a problem and what stopped being one.
fn report(before: &BTreeSet<Problem>, now: &BTreeSet<Problem>) {
    let new: Vec<&Problem> = now.difference(before).collect();
    for p in new.iter().take(LOG_LIMIT) {
        warn!(key = %p.what, problem = %p.why, "not served as registered");
    }
    if new.len() > LOG_LIMIT {
        warn!(
            more = new.len() - LOG_LIMIT,
            "more keys not served as registered (see discover_serve_problems)"
        );
    }
    let fixed = before.difference(now).count();
    if fixed > 0 {
        info!(fixed, "problems resolved");
    }
}

/// Keep `health`'s staleness in step with the watches' status: fresh
/// while every watch is live, else since the oldest moment one of them
/// was last known healthy.
async fn follow_staleness(mut statuses: Vec<watch::Receiver<WatchStatus>>, health: Arc<Health>) {
    loop {
        let now_i = Instant::now();
        let now_s = SystemTime::now();
        let mut oldest: Option<Instant> = None;
        for s in &mut statuses {
            let at = match &*s.borrow_and_update() {
                WatchStatus::Live { .. } => None,
                WatchStatus::Reconnecting { since, .. } => {
                    let ago = now_s.duration_since(*since).unwrap_or(Duration::ZERO);
                    Some(now_i.checked_sub(ago).unwrap_or(now_i))
                }
                // Connecting (before the first snapshot) or stopped.
                _ => Some(now_i),
            };
            oldest = match (oldest, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        health.set_stale_since(oldest);
        let changes = statuses.iter_mut().map(|s| Box::pin(s.changed()));
        let (r, _, _) = futures::future::select_all(changes).await;
        if r.is_err() {
            return;
        }
    }
}

/// Abort a task when dropped (the watch task's helpers end with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
