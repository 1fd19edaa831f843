//! One container that opted in, as the host agent knows it: what its last
//! inspect says it wants, and each check's verdict, kept across the
//! inspects of one run. Plain data; the ledger holds one per container.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use tokio::time::Instant;
use tracing::debug;

use super::super::DRAIN_LIMIT;
use super::super::check::{CheckSpec, Health, Outcome, Probe, State, log_transition};
use super::super::decide::{ContainerView, Decision, Family, decide};
use super::super::labels::Wanted;
use super::super::value::{Entry, ValueFormat};

/// One container that opted in, as last inspected.
#[derive(Debug, Default)]
pub(super) struct Tracked {
    /// Its name, for logs, STATUS= and conflict messages.
    pub name: String,
    /// `docker ps`'s fingerprint when last inspected (empty: inspect at
    /// the next resync).
    pub fingerprint: String,
    /// StartedAt of the run last inspected: tells a new run from the one
    /// a stopping signal was sent to (and resets its checks).
    pub started_at: String,
    /// A stopping signal was sent to this run (its StartedAt), at this
    /// time: nothing is registered until the run ends or [`DRAIN_LIMIT`]
    /// passes.
    pub draining: Option<(String, Instant)>,
    /// What it asks for now, by the key its labels name.
    pub wants: BTreeMap<String, Want>,
    /// Why it holds nothing (bad labels, no address), if so.
    pub problems: Vec<String>,
    /// The network of each key's last registration, kept while attached,
    /// so an ambiguous choice does not flip between inspects.
    networks: HashMap<String, String>,
    /// Each checked key's check and verdict: kept while the key wants the
    /// same check of the same address in the same run.
    checks: HashMap<String, Checked>,
}

/// What one key asks for: the decided addresses, and how to write them.
#[derive(Debug)]
pub(super) struct Want {
    /// The addresses (one, or IPv4 then IPv6 with `both`).
    addrs: Vec<IpAddr>,
    /// The port registered, if any.
    port: Option<u16>,
    /// `discovery.family`: `both` writes a list, or two keys.
    family: Family,
    /// How the value is written.
    format: ValueFormat,
}

/// A checked key's check.
#[derive(Debug)]
pub(super) struct Checked {
    /// What runs, against which address.
    pub probe: Probe,
    /// Its timing and thresholds.
    pub spec: CheckSpec,
    /// Its verdict so far.
    pub health: Health,
}

impl Tracked {
    /// Take in an inspect of this container and what its labels ask for.
    pub(super) fn apply(&mut self, view: &ContainerView, w: Wanted, hostname: &str, now: Instant) {
        self.name = view.name.clone();
        if self.started_at != view.started_at {
            // A new run must pass its checks again.
            self.checks.clear();
        }
        self.started_at = view.started_at.clone();
        if let Some((run, since)) = &self.draining {
            let other_run = !run.is_empty() && *run != view.started_at;
            if other_run || now.saturating_duration_since(*since) > DRAIN_LIMIT {
                self.draining = None;
            }
        }
        self.problems = w.problems;
        self.wants.clear();
        let mut checked = HashMap::new();
        for spec in w.specs {
            let preferred = self.networks.get(&spec.key).map(String::as_str);
            let (addrs, port) = match decide(view, &spec.rules, self.draining.is_some(), preferred)
            {
                Decision::Register {
                    addrs,
                    port,
                    network,
                } => {
                    self.networks.insert(spec.key.clone(), network);
                    (addrs, port)
                }
                Decision::Withdraw(reason) => {
                    debug!(container = %view.name, key = %spec.key, %reason, "not registering");
                    continue;
                }
                Decision::Misconfigured(m) => {
                    self.problems.push(m);
                    continue;
                }
            };
            if let (Some(check), Some(ip)) = (spec.check, addrs.first()) {
                let probe = Probe {
                    kind: check.kind.clone(),
                    ip: *ip,
                    port,
                    container_id: view.id.clone(),
                    container_name: view.name.clone(),
                };
                let kept = self
                    .checks
                    .remove(&spec.key)
                    .filter(|c| c.probe == probe && c.spec == check);
                let health =
                    kept.map_or_else(|| Health::new(now, check.start_period), |c| c.health);
                let c = Checked {
                    probe,
                    spec: check,
                    health,
                };
                checked.insert(spec.key.clone(), c);
            }
            let format = ValueFormat {
                kind: spec.value,
                host: hostname.to_owned(),
            };
            let family = spec.rules.address.family();
            let want = Want {
                addrs,
                port,
                family,
                format,
            };
            self.wants.insert(spec.key, want);
        }
        self.checks = checked;
        if !self.problems.is_empty() {
            self.wants.clear();
            self.checks.clear();
        }
    }

    /// Going down: it wants nothing until it is looked at again.
    pub(super) fn withdraw(&mut self, now: Instant) {
        self.draining = Some((self.started_at.clone(), now));
        self.wants.clear();
        self.checks.clear();
    }

    /// The keys and values it should hold now: every wanted key whose
    /// check (if any) lets it be registered, with the check's status.
    pub(super) fn entries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (key, want) in &self.wants {
            let status = match self.checks.get(key) {
                None => None,
                Some(c) => match c.health.status() {
                    Some(s) => Some(s),
                    None => continue,
                },
            };
            let entry = Entry {
                addrs: &want.addrs,
                family: want.family,
                port: want.port,
                container: Some(&self.name),
                status,
            };
            out.extend(want.format.entries(key, entry));
        }
        out
    }

    /// Whether it wants anything registered now.
    pub(super) fn wants_any(&self) -> bool {
        !self.entries().is_empty()
    }

    /// Its checked keys.
    pub(super) fn checks(&self) -> impl Iterator<Item = (&String, &Checked)> {
        self.checks.iter()
    }

    /// Whether a checked key has not had its first result yet.
    pub(super) fn awaiting_first_result(&self) -> bool {
        self.checks.values().any(|c| !c.health.seen())
    }

    /// Take in a result of `key`'s check; logs a transition, and says
    /// what the result moved.
    pub(super) fn check_result(&mut self, key: &str, outcome: &Outcome, now: Instant) -> Moved {
        let Some(c) = self.checks.get_mut(key) else {
            return Moved::default();
        };
        // What STATUS= shows of a check: its state, and why it does not
        // pass (a passing check shows nothing).
        let shown = |h: &Health| match h.state() {
            State::Passing => (State::Passing, None),
            s => (s, h.reason().map(str::to_owned)),
        };
        let (status, said) = (c.health.status(), shown(&c.health));
        let transition = c.health.record(outcome, now, c.spec.rise, c.spec.fall);
        if let Some(t) = &transition {
            log_transition(&self.name, key, &c.spec, t);
        }
        Moved {
            registered: c.health.status() != status,
            shown: shown(&c.health) != said,
            starting: c.health.starting(now),
        }
    }

    /// Each checked key's state and the reason it is not passing, for
    /// STATUS= and metrics.
    pub(super) fn check_states(&self) -> impl Iterator<Item = (&str, State, Option<&str>)> {
        self.checks
            .iter()
            .map(|(k, c)| (k.as_str(), c.health.state(), c.health.reason()))
    }
}

/// What one check result moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Moved {
    /// What is registered for the key (or its status): publish.
    pub(super) registered: bool,
    /// What STATUS= says of the check (its state, or why it fails).
    pub(super) shown: bool,
    /// The key is still starting, so its next check comes in a second.
    pub(super) starting: bool,
}
