//! When each target's next check runs, and the checks in flight.
//!
//! Spread: each target gets a phase, drawn at random within the interval,
//! and after its first check it runs at that phase of every interval, so
//! 200 containers started together are not checked in the same
//! millisecond. The first check comes sooner, within a second (a new
//! container must not wait a whole interval to be registered), and until
//! the first pass, within the start period, checks come every second.
//! Checks of one target never overlap: the next is scheduled when the
//! result is in ([`Checks::after`]).
//!
//! Each check runs as a task of its own on the agent's runtime, so that it
//! progresses, and its timeout is measured, while the agent's loop waits
//! on Docker: a slow `docker ps` must not turn a check's answer into a
//! timeout.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::debug;

use super::health::Outcome;
use super::{CheckSpec, Probe};

/// The cadence before the first pass (within the start period), and the
/// latest the first check of a new target comes.
const START_INTERVAL: Duration = Duration::from_secs(1);

/// Every target's schedule. `T` names a target: `(container, key)` for the
/// host agent, `()` for a single container.
pub struct Checks<T> {
    /// The targets: what to run and when.
    targets: HashMap<T, Slot>,
    /// When each scheduled check is due, earliest first (the number makes
    /// keys unique).
    due: BTreeMap<(Instant, u64), T>,
    /// The checks in flight, each a task yielding its target, the
    /// generation it was started for, and its result.
    running: JoinSet<(T, u64, Outcome)>,
    /// A counter for due keys and generations.
    seq: u64,
    /// The origin of every target's phase.
    epoch: Instant,
}

/// One target's schedule.
struct Slot {
    /// What to run.
    probe: Probe,
    /// Its interval, timeout and thresholds.
    spec: CheckSpec,
    /// Where in each interval its checks run, after the first.
    phase: Duration,
    /// Changes when the probe or spec does: a result of an older
    /// generation is dropped.
    generation: u64,
    /// Its entry in `due`, when scheduled (none while a check runs).
    due: Option<(Instant, u64)>,
    /// The check in flight, to stop it when the target goes.
    running: Option<AbortHandle>,
    /// When the last check was due (it started then).
    last: Instant,
}

impl<T: Clone + Eq + Hash + Debug + Send + 'static> Checks<T> {
    /// No targets.
    pub fn new() -> Self {
        Self {
            targets: HashMap::new(),
            due: BTreeMap::new(),
            running: JoinSet::new(),
            seq: 0,
            epoch: Instant::now(),
        }
    }

    /// Check `target` with `probe` per `spec`, from `now`. Nothing changes
    /// if it is already checked so; otherwise it starts over, its first
    /// check within a second.
    pub fn set(&mut self, target: T, probe: Probe, spec: &CheckSpec, now: Instant) {
        if self
            .targets
            .get(&target)
            .is_some_and(|s| s.probe == probe && s.spec == *spec)
        {
            return;
        }
        self.remove(&target);
        self.seq += 1;
        let first = now + random_below(spec.interval.min(START_INTERVAL));
        let slot = Slot {
            probe,
            spec: spec.clone(),
            phase: random_below(spec.interval),
            generation: self.seq,
            due: None,
            running: None,
            last: now,
        };
        self.targets.insert(target.clone(), slot);
        self.schedule(target, first);
    }

    /// Stop checking `target`; a check in flight is dropped when it ends.
    pub fn remove(&mut self, target: &T) {
        if let Some(slot) = self.targets.remove(target) {
            if let Some(k) = slot.due {
                self.due.remove(&k);
            }
            if let Some(task) = slot.running {
                task.abort();
            }
        }
    }

    /// Stop checking every target `keep` refuses.
    pub fn retain(&mut self, keep: impl Fn(&T) -> bool) {
        let gone: Vec<T> = self.targets.keys().filter(|t| !keep(t)).cloned().collect();
        for t in gone {
            self.remove(&t);
        }
    }

    /// Whether `target` is checked.
    pub fn contains(&self, target: &T) -> bool {
        self.targets.contains_key(target)
    }

    /// How many targets are checked.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether no target is checked.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The next result, starting the checks that fall due meanwhile;
    /// `docker` is the engine's client for docker-exec checks. Never
    /// returns while there is nothing to check. The target has no next
    /// check until [`Checks::after`] schedules it. Cancel-safe: all that
    /// happens between awaits is synchronous.
    pub async fn next(&mut self, docker: Option<&bollard::Docker>) -> (T, Outcome) {
        loop {
            let due = self.due.first_key_value().map(|((at, _), _)| *at);
            tokio::select! {
                _ = crate::common::time::sleep_until_opt(due) => self.start_due(docker),
                Some(done) = self.running.join_next(), if !self.running.is_empty() => {
                    // An aborted check (its target went) is dropped.
                    let Ok((target, generation, outcome)) = done else { continue };
                    if let Some(slot) = self.targets.get_mut(&target).filter(|s| s.generation == generation) {
                        slot.running = None;
                        return (target, outcome);
                    }
                }
            }
        }
    }

    /// Schedule `target`'s next check after a result: in a second while it
    /// is `starting` (no pass yet, within its start period), else at its
    /// phase of the interval, at least half an interval after the last.
    pub fn after(&mut self, target: &T, starting: bool, now: Instant) {
        let Some(slot) = self.targets.get(target) else {
            return;
        };
        if slot.due.is_some() {
            return;
        }
        let interval = slot.spec.interval;
        let at = if starting {
            (slot.last + interval.min(START_INTERVAL)).max(now)
        } else {
            let earliest = (slot.last + interval / 2).max(now);
            // The first time at or after `earliest` that is at the phase.
            let since = earliest.saturating_duration_since(self.epoch + slot.phase);
            let periods = since.as_nanos().div_ceil(interval.as_nanos().max(1));
            self.epoch + slot.phase + interval * u32::try_from(periods).unwrap_or(u32::MAX)
        };
        self.schedule(target.clone(), at);
    }

    fn schedule(&mut self, target: T, at: Instant) {
        self.seq += 1;
        let key = (at, self.seq);
        if let Some(slot) = self.targets.get_mut(&target) {
            slot.due = Some(key);
            self.due.insert(key, target);
        }
    }

    /// Start every check that is due.
    fn start_due(&mut self, docker: Option<&bollard::Docker>) {
        let now = Instant::now();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), target) = entry.remove_entry();
            let Some(slot) = self.targets.get_mut(&target) else {
                continue;
            };
            slot.due = None;
            slot.last = at;
            debug!(target = ?target, check = slot.probe.kind.name(), late = ?now.saturating_duration_since(at), "check started");
            let run = slot.probe.run(slot.spec.timeout, docker.cloned());
            let generation = slot.generation;
            let task = self.running.spawn(async move {
                let outcome = run.await;
                (target, generation, outcome)
            });
            slot.running = Some(task);
        }
    }
}

impl<T: Clone + Eq + Hash + Debug + Send + 'static> Default for Checks<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Debug for Checks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checks")
            .field("targets", &self.targets.len())
            .field("running", &self.running.len())
            .finish()
    }
}

/// A duration drawn uniformly from `[0, d)`.
fn random_below(d: Duration) -> Duration {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(fastrand::u64(..nanos))
}

#[cfg(test)]
mod tests {
    use super::super::CheckKind;
    use super::*;

    fn spec(interval: Duration) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Tcp,
            interval,
            timeout: Duration::from_millis(50),
            rise: 2,
            fall: 2,
            start_period: Duration::ZERO,
        }
    }

    fn probe(port: u16) -> Probe {
        Probe {
            kind: CheckKind::Tcp,
            ip: "127.0.0.1".parse().unwrap(),
            port: Some(port),
            container_id: "c".into(),
            container_name: "c".into(),
        }
    }

    /// A port nothing listens on (bound, then closed): every check of it
    /// is critical at once.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test(start_paused = true)]
    async fn two_hundred_targets_are_spread_over_the_interval() {
        let interval = Duration::from_secs(10);
        let port = closed_port();
        let mut checks: Checks<u32> = Checks::new();
        let t0 = Instant::now();
        for i in 0..200 {
            checks.set(i, probe(port), &spec(interval), t0);
        }
        // The first round comes within a second.
        let mut starts: HashMap<u32, Vec<Instant>> = HashMap::new();
        while starts.len() < 200 || starts.values().any(|s| s.len() < 4) {
            let (i, o) = checks.next(None).await;
            assert!(matches!(o, Outcome::Critical(_)), "{o:?}");
            let at = checks.targets[&i].last;
            starts.entry(i).or_default().push(at);
            checks.after(&i, false, Instant::now());
        }
        let firsts: Vec<Duration> = starts.values().map(|s| s[0] - t0).collect();
        assert!(firsts.iter().all(|d| *d < Duration::from_secs(1)));
        // Later rounds: every target once per interval, at its own phase,
        // and the phases cover the interval (no 200-check burst).
        let mut buckets = [0u32; 10];
        for s in starts.values() {
            assert_eq!(s[3] - s[2], interval);
            assert_eq!(s[2] - s[1], interval);
            let phase = (s[2] - t0).as_nanos() % interval.as_nanos();
            buckets[(phase * 10 / interval.as_nanos()) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|b| (2..=50).contains(b)),
            "checks per tenth of the interval: {buckets:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_starting_target_is_checked_every_second_and_a_replaced_one_starts_over() {
        let mut checks: Checks<()> = Checks::new();
        let t0 = Instant::now();
        let port = closed_port();
        checks.set((), probe(port), &spec(Duration::from_secs(10)), t0);
        let mut last = None;
        for _ in 0..3 {
            checks.next(None).await;
            let at = checks.targets[&()].last;
            if let Some(l) = last {
                assert_eq!(at - l, Duration::from_secs(1));
            }
            last = Some(at);
            checks.after(&(), true, Instant::now());
        }
        // The same probe again changes nothing; another one starts over.
        let generation = checks.targets[&()].generation;
        checks.set(
            (),
            probe(port),
            &spec(Duration::from_secs(10)),
            Instant::now(),
        );
        assert_eq!(checks.targets[&()].generation, generation);
        checks.set(
            (),
            probe(port + 1),
            &spec(Duration::from_secs(10)),
            Instant::now(),
        );
        assert_ne!(checks.targets[&()].generation, generation);
        checks.remove(&());
        assert!(checks.is_empty() && checks.due.is_empty());
    }
}
