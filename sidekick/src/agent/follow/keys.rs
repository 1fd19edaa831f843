//! What one followed container's keys hold: its registrations (`KEY`, and
//! `KEY-v6` with `--family both` in the `ip` and `ip:port` formats), the
//! address last decided, and its health check, which gates them.

use std::net::IpAddr;

use discovery::Registration;
use tokio::time::Instant;

use super::super::check::{CheckMetrics, CheckSpec, Checks, Health, Probe, State, log_transition};
use super::super::decide::{ContainerView, Family};
use super::super::report::Seen;
use super::super::value::{Entry, ValueFormat};

/// A followed container's keys.
pub(crate) struct Keys<'a> {
    /// The registrations: `--key`, then `KEY-v6` if it is written.
    regs: &'a [Registration],
    /// How values are written.
    format: ValueFormat,
    /// `--family`: `both` writes a list, or two keys.
    family: Family,
    /// `--check` and its settings.
    spec: Option<CheckSpec>,
    /// What should be registered, as last decided (`None`: nothing).
    want: Option<Want>,
    /// The check of `want`'s address and its verdict, while there is one.
    health: Option<(Probe, Health)>,
    /// When the check runs next, and the one in flight.
    checks: Checks<()>,
    /// The checks' metrics.
    metrics: CheckMetrics,
}

/// The address decided for the container.
struct Want {
    /// One address, or IPv4 and IPv6 with `both`.
    addrs: Vec<IpAddr>,
    /// The port, if one is registered.
    port: Option<u16>,
    /// The container's name, for the JSON value.
    name: String,
}

impl<'a> Keys<'a> {
    /// Keys that hold nothing yet.
    pub(crate) fn new(
        regs: &'a [Registration],
        format: ValueFormat,
        family: Family,
        spec: Option<CheckSpec>,
        metrics: CheckMetrics,
    ) -> Self {
        Self {
            regs,
            format,
            family,
            spec,
            want: None,
            health: None,
            checks: Checks::new(),
            metrics,
        }
    }

    /// The main registration (`--key`).
    pub(crate) fn main(&self) -> Option<&Registration> {
        self.regs.first()
    }

    /// Withdraw every key, and stop checking.
    pub(crate) fn withdraw(&mut self) {
        for r in self.regs {
            r.withdraw();
        }
        self.want = None;
        self.stop_checking();
    }

    fn stop_checking(&mut self) {
        self.checks.remove(&());
        if let (Some((p, _)), Some(key)) = (self.health.take(), self.regs.first()) {
            self.metrics.forget(&p.container_name, key.key());
        }
    }

    /// The container should be registered at `addrs` (and `port`):
    /// register it, or, with a check, start checking that address (a new
    /// address or a new run starts over: not registered until it passes).
    pub(crate) fn register(
        &mut self,
        view: &ContainerView,
        addrs: Vec<IpAddr>,
        port: Option<u16>,
        new_run: bool,
    ) -> Seen {
        if let (Some(spec), Some(ip)) = (&self.spec, addrs.first()) {
            let probe = Probe {
                kind: spec.kind.clone(),
                ip: *ip,
                port,
                container_id: view.id.clone(),
                container_name: view.name.clone(),
            };
            let now = Instant::now();
            if new_run || self.health.as_ref().is_none_or(|(p, _)| *p != probe) {
                self.health = Some((probe.clone(), Health::new(now, spec.start_period)));
            }
            self.checks.set((), probe, spec, now);
        }
        self.want = Some(Want {
            addrs,
            port,
            name: view.name.clone(),
        });
        self.apply()
    }

    /// Run the checks, applying each result, until one changes what is
    /// registered (or its status, or where the check stands); returns what
    /// the loop sees then. Never returns without a check. Cancel-safe: a
    /// result is applied in full before the next await.
    pub(crate) async fn next_check(&mut self, docker: Option<&bollard::Docker>) -> Seen {
        loop {
            let ((), outcome) = self.checks.next(docker).await;
            self.metrics.result(&outcome);
            let now = Instant::now();
            let (Some(spec), Some((probe, health))) = (&self.spec, self.health.as_mut()) else {
                continue;
            };
            let before = (health.status(), health.state());
            let transition = health.record(&outcome, now, spec.rise, spec.fall);
            let starting = health.starting(now);
            if let Some(main) = self.regs.first() {
                if let Some(t) = &transition {
                    log_transition(&probe.container_name, main.key(), spec, t);
                }
                self.metrics
                    .state(&probe.container_name, main.key(), health.state());
            }
            let changed = (health.status(), health.state()) != before;
            self.checks.after(&(), starting, now);
            if changed {
                return self.apply();
            }
        }
    }

    /// Hand each registration what it should hold now; returns what the
    /// loop sees.
    fn apply(&mut self) -> Seen {
        let Some(want) = &self.want else {
            return Seen::Down("nothing to register".into());
        };
        let (status, warning) = match &self.health {
            None => (None, None),
            Some((_, h)) => match h.state() {
                State::Passing => (Some("passing"), None),
                State::Warning => (Some("warning"), h.reason().map(str::to_owned)),
                state => {
                    for r in self.regs {
                        r.withdraw();
                    }
                    let why = h.reason().unwrap_or("no result yet");
                    let said = format!("container {:?}: check {} ({why})", want.name, state.name());
                    // Starting: the first round is not done (no READY=1 yet).
                    return match state {
                        State::Starting => Seen::Checking(said),
                        _ => Seen::Down(said),
                    };
                }
            },
        };
        let Some(main) = self.regs.first() else {
            return Seen::Down("no key".into());
        };
        let entry = Entry {
            addrs: &want.addrs,
            family: self.family,
            port: want.port,
            container: Some(&want.name),
            status,
        };
        let values: std::collections::BTreeMap<String, String> =
            self.format.entries(main.key(), entry).into_iter().collect();
        for r in self.regs {
            match values.get(r.key()) {
                Some(v) => r.set_value(v.clone()),
                None => r.withdraw(),
            }
        }
        Seen::Up { values, warning }
    }
}
