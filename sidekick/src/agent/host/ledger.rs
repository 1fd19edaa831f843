//! The host agent's record: which containers opted in, which keys each
//! wants, and which container owns each key. Plain data, no Docker, no
//! etcd and no clock of its own (callers pass `now`), so every rule is
//! unit-tested; the event loop in `mod.rs` feeds it what Docker says and
//! hands [`Ledger::desired`] to the lease group.

use std::collections::{BTreeMap, HashMap};

use tokio::time::Instant;
use tracing::debug;

use super::super::DRAIN_LIMIT;
use super::super::check::{CheckSpec, Outcome, Probe, State};
use super::super::decide::ContainerView;
use super::super::docker::Summary;
use super::super::labels::wanted;
use super::super::plan::HostConfig;
use super::tracked::{Moved, Tracked};

/// A checked key: its container's id and the key.
pub(super) type Target = (String, String);

/// What the agent knows of the host's containers.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// The containers that opted in, by id.
    tracked: HashMap<String, Tracked>,
    /// Containers that did not opt in: id to their `docker ps` fingerprint,
    /// so a resync does not inspect them again.
    ignored: HashMap<String, String>,
    /// Which container (id) holds each key: the first to claim it keeps it.
    owners: BTreeMap<String, String>,
    /// Key conflicts: container id to the keys it claims that another
    /// container holds, each with the holder's name.
    conflicts: HashMap<String, Vec<(String, String)>>,
}

/// Where a container stands, for the `sidekick_containers` gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Standing {
    /// It holds (or is about to hold) its keys.
    Registered,
    /// It wants nothing now (stopping, no address yet).
    Withdrawn,
    /// Bad labels, a conflict or a refusal: it registers nothing.
    Problem,
}

impl Standing {
    /// Its label value in metrics.
    pub(super) fn name(self) -> &'static str {
        match self {
            Standing::Registered => "registered",
            Standing::Withdrawn => "withdrawn",
            Standing::Problem => "problem",
        }
    }
}

/// One tracked container's situation, for logs, metrics and STATUS=.
#[derive(Debug)]
pub(super) struct Situation<'a> {
    /// The container's id.
    pub id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// What is wrong with it (labels, conflicts), each a sentence.
    pub problems: Vec<String>,
    /// Where it stands.
    pub standing: Standing,
}

impl Ledger {
    /// Whether `id` opted in.
    pub(super) fn is_tracked(&self, id: &str) -> bool {
        self.tracked.contains_key(id)
    }

    /// How many containers opted in.
    pub(super) fn tracked_count(&self) -> usize {
        self.tracked.len()
    }

    /// The name of tracked container `id`.
    pub(super) fn name(&self, id: &str) -> Option<&str> {
        self.tracked.get(id).map(|t| t.name.as_str())
    }

    /// Docker says `id` is going down: it wants nothing any more (or is
    /// forgotten, when `destroyed`). Returns its name when it held keys.
    pub(super) fn down(&mut self, id: &str, destroyed: bool, now: Instant) -> Option<String> {
        if destroyed {
            self.forget(id);
            return None;
        }
        let t = self.tracked.get_mut(id)?;
        let had_keys = t.wants_any();
        t.withdraw(now);
        had_keys.then(|| t.name.clone())
    }

    /// An event asks for another look at `id`: its fingerprint no longer
    /// holds, and an `up` (start, unpause) ends a drain.
    pub(super) fn recheck(&mut self, id: &str, up: bool) {
        if let Some(t) = self.tracked.get_mut(id) {
            if up {
                t.draining = None;
            }
            t.fingerprint.clear();
        }
        self.ignored.remove(id);
    }

    /// Compare `docker ps` with what we know: returns the running
    /// containers (id to fingerprint) and the ids to inspect (new or
    /// changed, and tracked ones no longer running). Forgets ignored
    /// containers that are gone.
    pub(super) fn stale(&mut self, list: Vec<Summary>) -> (HashMap<String, String>, Vec<String>) {
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
        (running, to_inspect)
    }

    /// Note the `docker ps` fingerprint a container's inspect reflects.
    pub(super) fn note_fingerprint(&mut self, id: &str, fingerprint: String) {
        if let Some(t) = self.tracked.get_mut(id) {
            t.fingerprint = fingerprint;
        } else if let Some(f) = self.ignored.get_mut(id) {
            *f = fingerprint;
        }
    }

    /// When the earliest drain ends.
    pub(super) fn drain_end(&self) -> Option<Instant> {
        self.tracked
            .values()
            .filter_map(|t| t.draining.as_ref().map(|(_, at)| *at + DRAIN_LIMIT))
            .min()
    }

    /// End the drains that are up at `now`: those containers survived a
    /// stopping signal; returns their ids, to look at again.
    pub(super) fn drained(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for (id, t) in &mut self.tracked {
            if t.draining
                .as_ref()
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= DRAIN_LIMIT)
            {
                t.draining = None;
                due.push(id.clone());
            }
        }
        due
    }

    /// Forget `id` (removed, or no longer opted in).
    pub(super) fn forget(&mut self, id: &str) {
        if let Some(t) = self.tracked.remove(id) {
            debug!(container = %t.name, "no longer tracked");
        }
        self.conflicts.remove(id);
    }

    /// Record what an inspect of `id` says the container wants (`None`:
    /// it no longer exists).
    pub(super) fn apply(
        &mut self,
        id: &str,
        view: Option<ContainerView>,
        cfg: &HostConfig,
        now: Instant,
    ) {
        let Some(view) = view else {
            self.forget(id);
            return;
        };
        let w = wanted(&view, cfg);
        let selected = match &cfg.only {
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
        self.tracked
            .entry(id.to_owned())
            .or_default()
            .apply(&view, w, &cfg.hostname, now);
    }

    /// Every checked key, with its check: what the scheduler should run.
    pub(super) fn checks(&self) -> impl Iterator<Item = (Target, &Probe, &CheckSpec)> {
        self.tracked.iter().flat_map(|(id, t)| {
            t.checks()
                .map(|(key, c)| ((id.clone(), key.clone()), &c.probe, &c.spec))
        })
    }

    /// Whether `target` is still checked.
    pub(super) fn is_checked(&self, target: &Target) -> bool {
        self.tracked
            .get(&target.0)
            .is_some_and(|t| t.checks().any(|(k, _)| *k == target.1))
    }

    /// Whether a checked key has not had its first result: the lease group
    /// waits for them (a crash-restarted agent then adopts its keys
    /// instead of deleting those it has not checked yet).
    pub(super) fn awaiting_first_results(&self) -> bool {
        self.tracked.values().any(Tracked::awaiting_first_result)
    }

    /// Take in a check result; what it moved.
    pub(super) fn check_result(
        &mut self,
        target: &Target,
        outcome: &Outcome,
        now: Instant,
    ) -> Moved {
        match self.tracked.get_mut(&target.0) {
            Some(t) => t.check_result(&target.1, outcome, now),
            None => Moved::default(),
        }
    }

    /// One checked key's state, with its container's name: what a result
    /// that changed nothing registered may still have moved (starting to
    /// critical).
    pub(super) fn check_state(&self, target: &Target) -> Option<(&str, State)> {
        let t = self.tracked.get(&target.0)?;
        t.check_states()
            .find(|(key, _, _)| *key == target.1)
            .map(|(_, state, _)| (t.name.as_str(), state))
    }

    /// Each checked key's state, with its container's name and the reason
    /// it is not passing.
    pub(super) fn check_states(&self) -> impl Iterator<Item = (&str, &str, State, Option<&str>)> {
        self.tracked.values().flat_map(|t| {
            t.check_states()
                .map(|(key, state, reason)| (t.name.as_str(), key, state, reason))
        })
    }

    /// Decide who holds each key and return what the lease group should
    /// hold. A key stays with the container that holds it; a second
    /// container claiming it is a conflict, reported with the holder's name.
    pub(super) fn desired(&mut self) -> BTreeMap<String, Vec<u8>> {
        let mut owners = BTreeMap::new();
        let mut desired: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut conflicts: HashMap<String, Vec<(String, String)>> = HashMap::new();
        // Current holders first, then the others by name: deterministic.
        let mut order: Vec<(&String, &Tracked)> = self.tracked.iter().collect();
        order.sort_by_key(|(id, t)| (!self.owners.values().any(|o| o == *id), t.name.clone()));
        for (id, t) in order {
            for (key, value) in t.entries() {
                match owners.get(&key) {
                    Some(holder) => {
                        let name = self
                            .tracked
                            .get(holder)
                            .map(|o| o.name.clone())
                            .unwrap_or_default();
                        conflicts.entry(id.clone()).or_default().push((key, name));
                    }
                    None => {
                        owners.insert(key.clone(), id.clone());
                        desired.insert(key, value.into_bytes());
                    }
                }
            }
        }
        self.owners = owners;
        self.conflicts = conflicts;
        desired
    }

    /// Every tracked container's situation, as of the last
    /// [`Ledger::desired`].
    pub(super) fn situations(&self) -> impl Iterator<Item = Situation<'_>> {
        self.tracked.iter().map(|(id, t)| {
            let mut problems = t.problems.clone();
            for (key, holder) in self.conflicts.get(id).into_iter().flatten() {
                problems.push(format!(
                    "key {key} is already registered by container {holder:?}; give each container its own key (use %n in discovery.key)"
                ));
            }
            let standing = if !problems.is_empty() {
                Standing::Problem
            } else if !t.wants_any() {
                Standing::Withdrawn
            } else {
                Standing::Registered
            };
            Situation {
                id,
                name: &t.name,
                problems,
                standing,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::decide::NetAddrs;
    use super::super::super::labels::tests::cfg;
    use super::*;
    use std::time::Duration;

    fn view(id: &str, name: &str, ip: &str, labels: &[(&str, &str)]) -> ContainerView {
        ContainerView {
            id: id.into(),
            name: name.into(),
            running: true,
            started_at: "t1".into(),
            networks: [(
                "bridge".to_owned(),
                NetAddrs {
                    v4: ip.parse().ok(),
                    v6: None,
                },
            )]
            .into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn keyed(id: &str, name: &str, ip: &str, key: &str) -> ContainerView {
        view(
            id,
            name,
            ip,
            &[("discovery.key", key), ("discovery.port", "11211")],
        )
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn labelled_containers_are_tracked_and_others_ignored() {
        let (mut l, now) = (Ledger::default(), Instant::now());
        l.apply(
            "a",
            Some(keyed("a", "m1", "10.0.0.2", "/s/m/%n")),
            &cfg(),
            now,
        );
        l.apply("b", Some(view("b", "plain", "10.0.0.3", &[])), &cfg(), now);
        assert!(l.is_tracked("a") && !l.is_tracked("b"));
        assert_eq!(l.desired(), map(&[("/s/m/m1", "10.0.0.2:11211")]));
        // The ignored one is not inspected again while its fingerprint holds.
        l.note_fingerprint("b", "fp-b".into());
        let ps = |fp_b: &str| {
            vec![
                Summary {
                    id: "a".into(),
                    name: "m1".into(),
                    fingerprint: String::new(),
                },
                Summary {
                    id: "b".into(),
                    name: "plain".into(),
                    fingerprint: fp_b.into(),
                },
            ]
        };
        l.note_fingerprint("a", String::new());
        let (_, to_inspect) = l.stale(ps("fp-b"));
        assert!(to_inspect.is_empty(), "{to_inspect:?}");
        let (_, to_inspect) = l.stale(ps("fp-b2"));
        assert_eq!(to_inspect, ["b"]);
        // A tracked container gone from docker ps is looked at again.
        let (_, to_inspect) = l.stale(Vec::new());
        assert_eq!(to_inspect, ["a"]);
    }

    #[test]
    fn the_first_holder_keeps_a_key_and_the_other_is_a_conflict_until_it_goes() {
        let (mut l, now) = (Ledger::default(), Instant::now());
        l.apply(
            "b",
            Some(keyed("b", "zz", "10.0.0.3", "/s/m/one")),
            &cfg(),
            now,
        );
        assert_eq!(l.desired(), map(&[("/s/m/one", "10.0.0.3:11211")]));
        // "aa" sorts first by name, but "zz" holds the key.
        l.apply(
            "a",
            Some(keyed("a", "aa", "10.0.0.2", "/s/m/one")),
            &cfg(),
            now,
        );
        assert_eq!(l.desired(), map(&[("/s/m/one", "10.0.0.3:11211")]));
        let aa = l.situations().find(|s| s.id == "a").unwrap();
        assert_eq!(aa.standing, Standing::Problem);
        assert!(
            aa.problems[0].contains("already registered by container \"zz\""),
            "{:?}",
            aa.problems
        );
        // The holder stops: the other takes the key over.
        assert_eq!(l.down("b", false, now).as_deref(), Some("zz"));
        assert_eq!(l.desired(), map(&[("/s/m/one", "10.0.0.2:11211")]));
        assert!(l.situations().all(|s| s.id != "a" || s.problems.is_empty()));
    }

    #[test]
    fn a_stopping_signal_withdraws_until_a_new_run_or_the_drain_limit() {
        let (mut l, t0) = (Ledger::default(), Instant::now());
        let v = keyed("a", "m1", "10.0.0.2", "/s/m/%n");
        l.apply("a", Some(v.clone()), &cfg(), t0);
        assert_eq!(l.down("a", false, t0).as_deref(), Some("m1"));
        assert!(l.desired().is_empty());
        // Still the same run, still running: withdrawn while it drains.
        l.apply("a", Some(v.clone()), &cfg(), t0 + Duration::from_secs(1));
        assert!(l.desired().is_empty());
        assert_eq!(l.drain_end(), Some(t0 + DRAIN_LIMIT));
        assert!(l.drained(t0 + Duration::from_secs(2)).is_empty());
        // It survived the signal: looked at again, and registered.
        assert_eq!(l.drained(t0 + DRAIN_LIMIT), ["a"]);
        l.apply("a", Some(v.clone()), &cfg(), t0 + DRAIN_LIMIT);
        assert_eq!(l.desired(), map(&[("/s/m/m1", "10.0.0.2:11211")]));
        // A new run ends a drain at once.
        l.down("a", false, t0);
        let mut next_run = v;
        next_run.started_at = "t2".into();
        l.apply("a", Some(next_run), &cfg(), t0 + Duration::from_secs(1));
        assert_eq!(l.desired(), map(&[("/s/m/m1", "10.0.0.2:11211")]));
        // Destroyed: forgotten.
        l.down("a", true, t0);
        assert!(!l.is_tracked("a") && l.desired().is_empty());
    }

    #[test]
    fn a_check_result_moves_only_what_it_changes() {
        let (mut l, now) = (Ledger::default(), Instant::now());
        let v = view(
            "a",
            "m1",
            "10.0.0.2",
            &[
                ("discovery.key", "/s/m/%n"),
                ("discovery.port", "80"),
                ("discovery.check", "tcp"),
                ("discovery.check-fall", "2"),
            ],
        );
        l.apply("a", Some(v), &cfg(), now);
        let t: Target = ("a".into(), "/s/m/m1".into());
        let crit = |why: &str| Outcome::Critical(why.into());
        let moved = |registered, shown| Moved {
            registered,
            shown,
            starting: false,
        };
        // The first pass registers it, and STATUS= no longer counts it as
        // starting.
        let m = l.check_result(&t, &Outcome::Passing, now);
        assert!(m.registered && m.shown, "{m:?}");
        assert_eq!(l.desired(), map(&[("/s/m/m1", "10.0.0.2:80")]));
        // Results that change nothing move nothing: no publish, no report.
        assert_eq!(
            l.check_result(&t, &Outcome::Passing, now),
            moved(false, false)
        );
        assert_eq!(
            l.check_result(&t, &crit("refused"), now),
            moved(false, false)
        );
        assert_eq!(
            l.check_result(&t, &Outcome::Passing, now),
            moved(false, false)
        );
        // The fall-th critical withdraws it.
        l.check_result(&t, &crit("refused"), now);
        assert_eq!(l.check_result(&t, &crit("refused"), now), moved(true, true));
        assert!(l.desired().is_empty());
        // Still critical, for the same reason: nothing; for another: what
        // STATUS= says of it.
        assert_eq!(
            l.check_result(&t, &crit("refused"), now),
            moved(false, false)
        );
        assert_eq!(
            l.check_result(&t, &crit("timed out"), now),
            moved(false, true)
        );
    }

    #[test]
    fn bad_labels_and_only_label_are_applied() {
        let (mut l, now) = (Ledger::default(), Instant::now());
        let bad = view(
            "a",
            "m1",
            "10.0.0.2",
            &[("discovery.key", "/s/%n"), ("discovery.port", "http")],
        );
        l.apply("a", Some(bad), &cfg(), now);
        assert!(l.desired().is_empty());
        let s = l.situations().next().unwrap();
        assert_eq!(s.standing, Standing::Problem);
        assert!(
            s.problems[0].contains("not a port number"),
            "{:?}",
            s.problems
        );
        let mut only = cfg();
        only.only = Some(("team".into(), Some("a".into())));
        l.apply(
            "b",
            Some(keyed("b", "m2", "10.0.0.3", "/s/m/%n")),
            &only,
            now,
        );
        assert!(!l.is_tracked("b"));
    }
}
