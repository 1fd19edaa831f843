//! One target's verdict from its check results: a plain state machine,
//! with the clock passed in, so every rule is tested without a check.
//!
//! The counting is Consul's (`success_before_passing`,
//! `failures_before_critical`) and HAProxy's (`rise`, `fall`): a warning
//! counts as a success (the container stays registered, the value says
//! `warning`), and only results in a row count.

use tokio::time::Instant;

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Healthy: HTTP 2xx, a TCP connection, exit code 0.
    Passing,
    /// Up but degraded: HTTP 429, exit code 1. Stays registered.
    Warning(String),
    /// Down: any other answer, no answer, a timeout.
    Critical(String),
    /// The check could not run for a reason that says nothing about the
    /// container (Docker unreachable for a docker-exec check): it counts
    /// neither way.
    Unknown(String),
}

impl Outcome {
    /// Its label in `sidekick_check_results_total{outcome=…}`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Passing => "passing",
            Outcome::Warning(_) => "warning",
            Outcome::Critical(_) => "critical",
            Outcome::Unknown(_) => "unknown",
        }
    }
}

/// Where a target stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// No pass yet, and no failure that counts: not registered, not
    /// reported as failing.
    Starting,
    /// Registered.
    Passing,
    /// Registered, with `"status":"warning"` in a JSON value.
    Warning,
    /// Not registered: withdrawn after `fall` criticals, or failing since
    /// it started.
    Critical,
}

impl State {
    /// Every state, for metrics.
    pub const ALL: [State; 4] = [
        State::Starting,
        State::Passing,
        State::Warning,
        State::Critical,
    ];

    /// Its name in logs, metrics and JSON values.
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Passing => "passing",
            State::Warning => "warning",
            State::Critical => "critical",
        }
    }
}

/// A change worth a log line (a result that changes nothing is not logged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Registered: at the first pass (`first`), or after `rise` passes.
    Registered {
        /// The first pass of this run.
        first: bool,
    },
    /// Registered, and now warning.
    Warning(String),
    /// Registered, and passing again after a warning.
    Recovered,
    /// Withdrawn after this many criticals in a row.
    Withdrawn {
        /// The criticals in a row.
        fails: u32,
        /// The last one's reason.
        reason: String,
    },
    /// Never passed, and failing past the start period.
    NotStarting(String),
}

/// One target's verdict.
#[derive(Clone, Debug)]
pub struct Health {
    /// Registered, and warning or not; `None` while not registered.
    registered: Option<State>,
    /// A check has passed since this run started: from then on every
    /// failure counts, and coming back takes `rise` passes.
    ever_passed: bool,
    /// Passes (or warnings) in a row.
    oks: u32,
    /// Criticals in a row that counted.
    fails: u32,
    /// Failures before this do not count (`start_period`), until the first pass.
    start_until: Instant,
    /// The failure since start was logged (once).
    told_not_starting: bool,
    /// The last result that was not a pass, for STATUS= and logs.
    reason: Option<String>,
    /// A result came in (of any kind).
    seen: bool,
}

impl Health {
    /// A target whose checks start at `now`.
    pub fn new(now: Instant, start_period: std::time::Duration) -> Self {
        Self {
            registered: None,
            ever_passed: false,
            oks: 0,
            fails: 0,
            start_until: now + start_period,
            told_not_starting: false,
            reason: None,
            seen: false,
        }
    }

    /// Take a result in; returns the transition it causes, if any.
    pub fn record(
        &mut self,
        outcome: &Outcome,
        now: Instant,
        rise: u32,
        fall: u32,
    ) -> Option<Transition> {
        self.seen = true;
        let ok = match outcome {
            Outcome::Unknown(_) => return None,
            Outcome::Passing => State::Passing,
            Outcome::Warning(r) => {
                self.reason = Some(r.clone());
                State::Warning
            }
            Outcome::Critical(reason) => return self.critical(reason, now, fall),
        };
        self.fails = 0;
        self.oks = self.oks.saturating_add(1);
        if ok == State::Passing {
            self.reason = None;
        }
        match self.registered {
            Some(was) if was == ok => None,
            Some(_) => {
                self.registered = Some(ok);
                Some(match outcome {
                    Outcome::Warning(r) => Transition::Warning(r.clone()),
                    _ => Transition::Recovered,
                })
            }
            None if !self.ever_passed || self.oks >= rise => {
                let first = !self.ever_passed;
                self.ever_passed = true;
                self.registered = Some(ok);
                Some(Transition::Registered { first })
            }
            None => None,
        }
    }

    fn critical(&mut self, reason: &str, now: Instant, fall: u32) -> Option<Transition> {
        self.oks = 0;
        self.reason = Some(reason.to_owned());
        if !self.ever_passed && now < self.start_until {
            return None;
        }
        self.fails = self.fails.saturating_add(1);
        match self.registered {
            Some(_) if self.fails >= fall => {
                self.registered = None;
                Some(Transition::Withdrawn {
                    fails: self.fails,
                    reason: reason.to_owned(),
                })
            }
            Some(_) => None,
            None if !self.ever_passed && !self.told_not_starting => {
                self.told_not_starting = true;
                Some(Transition::NotStarting(reason.to_owned()))
            }
            None => None,
        }
    }

    /// Where it stands.
    pub fn state(&self) -> State {
        match self.registered {
            Some(s) => s,
            None if self.fails == 0 && !self.ever_passed => State::Starting,
            None => State::Critical,
        }
    }

    /// The status a registered target's JSON value carries (`passing`,
    /// `warning`); `None` while it must not be registered.
    pub fn status(&self) -> Option<&'static str> {
        self.registered.map(State::name)
    }

    /// Whether checks should come every second: no pass yet, within the
    /// start period.
    pub fn starting(&self, now: Instant) -> bool {
        !self.ever_passed && now < self.start_until
    }

    /// Whether a result came in yet.
    pub fn seen(&self) -> bool {
        self.seen
    }

    /// Why it is not passing, from its last result that did not pass.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn crit() -> Outcome {
        Outcome::Critical("connection refused".into())
    }

    #[test]
    fn registered_at_the_first_pass_withdrawn_after_fall_back_after_rise() {
        let t = Instant::now();
        let mut h = Health::new(t, Duration::ZERO);
        assert_eq!((h.state(), h.status()), (State::Starting, None));
        // The first pass registers, whatever rise says.
        assert_eq!(
            h.record(&Outcome::Passing, t, 3, 2),
            Some(Transition::Registered { first: true })
        );
        assert_eq!(h.status(), Some("passing"));
        assert_eq!(h.record(&crit(), t, 3, 2), None);
        assert_eq!(h.status(), Some("passing"), "one critical is not fall 2");
        assert_eq!(
            h.record(&crit(), t, 3, 2),
            Some(Transition::Withdrawn {
                fails: 2,
                reason: "connection refused".into()
            })
        );
        assert_eq!((h.state(), h.status()), (State::Critical, None));
        assert_eq!(h.reason(), Some("connection refused"));
        // Rise 3: two passes, a critical, then three passes.
        assert_eq!(h.record(&Outcome::Passing, t, 3, 2), None);
        assert_eq!(h.record(&Outcome::Passing, t, 3, 2), None);
        assert_eq!(h.record(&crit(), t, 3, 2), None);
        assert_eq!(h.record(&Outcome::Passing, t, 3, 2), None);
        assert_eq!(h.record(&Outcome::Passing, t, 3, 2), None);
        assert_eq!(
            h.record(&Outcome::Passing, t, 3, 2),
            Some(Transition::Registered { first: false })
        );
        assert_eq!(h.state(), State::Passing);
    }

    #[test]
    fn failing_every_other_check_with_rise_2_and_fall_2_changes_nothing() {
        let t = Instant::now();
        let mut h = Health::new(t, Duration::ZERO);
        h.record(&Outcome::Passing, t, 2, 2);
        for i in 0..200 {
            let o = if i % 2 == 0 { crit() } else { Outcome::Passing };
            assert_eq!(h.record(&o, t, 2, 2), None, "result {i}");
        }
        assert_eq!(h.status(), Some("passing"));
    }

    #[test]
    fn a_warning_stays_registered_and_counts_as_a_success() {
        let t = Instant::now();
        let mut h = Health::new(t, Duration::ZERO);
        let warn = Outcome::Warning("HTTP 429".into());
        assert_eq!(
            h.record(&warn, t, 2, 2),
            Some(Transition::Registered { first: true })
        );
        assert_eq!((h.state(), h.status()), (State::Warning, Some("warning")));
        assert_eq!(h.record(&warn, t, 2, 2), None);
        assert_eq!(
            h.record(&Outcome::Passing, t, 2, 2),
            Some(Transition::Recovered)
        );
        assert_eq!(
            h.record(&warn, t, 2, 2),
            Some(Transition::Warning("HTTP 429".into()))
        );
        // A critical between warnings is counted; a warning resets it.
        assert_eq!(h.record(&crit(), t, 2, 2), None);
        assert_eq!(h.record(&warn, t, 2, 2), None);
        assert_eq!(h.record(&crit(), t, 2, 2), None);
        assert_eq!(h.status(), Some("warning"));
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_and_unknown_never_does() {
        let t = Instant::now();
        let mut h = Health::new(t, Duration::from_secs(30));
        for s in [1, 10, 29] {
            assert_eq!(h.record(&crit(), t + Duration::from_secs(s), 2, 1), None);
            assert_eq!(h.state(), State::Starting);
            assert!(h.starting(t + Duration::from_secs(s)));
        }
        // Past it, still no pass: reported once, not registered.
        let late = t + Duration::from_secs(31);
        assert_eq!(
            h.record(&crit(), late, 2, 1),
            Some(Transition::NotStarting("connection refused".into()))
        );
        assert_eq!(h.record(&crit(), late, 2, 1), None);
        assert_eq!(h.state(), State::Critical);
        assert!(!h.starting(late));
        assert_eq!(
            h.record(&Outcome::Unknown("Docker unreachable".into()), late, 2, 1),
            None
        );
        assert_eq!(
            h.record(&Outcome::Passing, late, 2, 1),
            Some(Transition::Registered { first: true })
        );
        // Once it passed, the start period is over even within it.
        let mut h = Health::new(t, Duration::from_secs(30));
        h.record(&Outcome::Passing, t, 2, 1);
        assert!(matches!(
            h.record(&crit(), t + Duration::from_secs(1), 2, 1),
            Some(Transition::Withdrawn { .. })
        ));
    }
}
