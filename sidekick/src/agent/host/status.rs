//! Where the host agent stands, said once per change: each container's
//! problems in the log, the `sidekick_containers` gauge, and systemd's
//! `STATUS=` and `READY=1`.

use std::collections::{BTreeSet, HashMap, HashSet};

use discovery::GroupState;
use tracing::{info, warn};

use super::super::check::{CheckMetrics, State};
use super::super::notify::Notifier;
use super::ledger::{Ledger, Standing};
use crate::common::metrics::Metrics;

/// The longest `STATUS=` list of problems: systemd shows one line.
const STATUS_PROBLEMS_MAX: usize = 400;

/// What was last said, so that each thing is said once.
#[derive(Debug, Default)]
pub(super) struct Reporter {
    /// What `STATUS=` last said.
    status: String,
    /// The problems last logged per container id: a problem is logged when
    /// it appears, not at every resync.
    logged: HashMap<String, Vec<String>>,
    /// The (container, key) pairs whose check state is exported, to drop
    /// those no longer checked.
    exported: BTreeSet<(String, String)>,
}

impl Reporter {
    /// Log each container's problems when they change, and set the gauges.
    pub(super) fn problems(&mut self, ledger: &Ledger, metrics: &Metrics, checks: &CheckMetrics) {
        let mut counts: HashMap<Standing, i64> = HashMap::new();
        let mut seen = HashSet::new();
        for s in ledger.situations() {
            *counts.entry(s.standing).or_default() += 1;
            if self.logged.get(s.id) != Some(&s.problems) {
                for p in &s.problems {
                    warn!(container = %s.name, problem = %p, "not registering this container");
                }
                self.logged.insert(s.id.to_owned(), s.problems);
            }
            seen.insert(s.id);
        }
        // A container forgotten and seen again is logged again.
        self.logged.retain(|id, _| seen.contains(id.as_str()));
        for standing in [Standing::Registered, Standing::Withdrawn, Standing::Problem] {
            metrics
                .containers
                .get_or_create(&vec![("state".to_owned(), standing.name().to_owned())])
                .set(counts.get(&standing).copied().unwrap_or(0));
        }
        let mut exported = BTreeSet::new();
        for (name, key, state, _) in ledger.check_states() {
            checks.state(name, key, state);
            exported.insert((name.to_owned(), key.to_owned()));
        }
        for (name, key) in self.exported.difference(&exported) {
            checks.forget(name, key);
        }
        self.exported = exported;
    }

    /// `STATUS=`, `READY=1` (once etcd holds every key) and `up`. `group`
    /// is `None` until Docker answered the first resync; `keys` is how
    /// many keys the group is asked to hold.
    pub(super) fn status(
        &mut self,
        ledger: &Ledger,
        keys: usize,
        group: Option<&GroupState>,
        notifier: &mut Notifier,
        metrics: &Metrics,
    ) {
        let problems: Vec<String> = {
            let mut v: Vec<(&String, &Vec<String>)> =
                self.logged.iter().filter(|(_, p)| !p.is_empty()).collect();
            v.sort();
            v.into_iter()
                .filter_map(|(id, p)| Some(format!("{}: {}", ledger.name(id)?, p.join("; "))))
                .collect()
        };
        let status = match group {
            None => "waiting for Docker to list the containers".to_owned(),
            Some(g) => {
                let mut s = match (&g.retrying, g.lease) {
                    (Some(e), _) => format!(
                        "etcd unreachable ({e}); retrying, {} of {keys} keys held",
                        g.held
                    ),
                    (None, Some(lease)) => format!(
                        "registered {} of {keys} keys (lease {lease}, {} containers)",
                        g.held,
                        ledger.tracked_count()
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
                metrics
                    .up
                    .set(i64::from(g.lease.is_some() && g.retrying.is_none()));
                s
            }
        };
        let status = status + &checks_line(ledger);
        let status = if problems.is_empty() {
            status
        } else {
            // STATUS= is one line of modest length.
            let all = cut(problems.join(" | "));
            format!("{status}; {} with problems: {all}", problems.len())
        };
        if status != self.status {
            notifier.status(&status);
            self.status = status;
        }
    }
}

/// What STATUS= says of the checks that do not pass: the containers
/// withdrawn (or never registered) by name, with why; those that warn; how
/// many are starting.
fn checks_line(ledger: &Ledger) -> String {
    let mut failing = Vec::new();
    let mut warning = Vec::new();
    let mut starting = 0;
    let said = |name: &str, reason: Option<&str>| {
        format!("{name} ({})", reason.unwrap_or("no answer yet"))
    };
    for (name, _, state, reason) in ledger.check_states() {
        match state {
            State::Critical => failing.push(said(name, reason)),
            State::Warning => warning.push(said(name, reason)),
            State::Starting => starting += 1,
            State::Passing => {}
        }
    }
    failing.sort();
    warning.sort();
    let mut s = String::new();
    if !failing.is_empty() {
        s.push_str(&format!(
            "; {} failing checks: {}",
            failing.len(),
            cut(failing.join(", "))
        ));
    }
    if !warning.is_empty() {
        s.push_str(&format!(
            "; {} warning: {}",
            warning.len(),
            cut(warning.join(", "))
        ));
    }
    if starting > 0 {
        s.push_str(&format!("; {starting} checks starting"));
    }
    s
}

/// `s`, cut to STATUS= size.
fn cut(mut s: String) -> String {
    if s.len() > STATUS_PROBLEMS_MAX {
        let mut at = STATUS_PROBLEMS_MAX;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push('…');
    }
    s
}
