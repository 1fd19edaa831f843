//! Active health checks, with Consul's and HAProxy's conventions: a
//! container is registered at its first passing check, withdrawn after
//! `fall` critical ones in a row, registered again after `rise` passing
//! ones, and kept registered while its check only warns.
//!
//! * this file: what a check is ([`CheckSpec`]), read from flags or labels;
//! * `health.rs`: one target's verdict from its results, a plain state
//!   machine tested on its own;
//! * `probe.rs`: running one check (tcp and http on the runtime, no
//!   process; exec and docker-exec with their exit codes);
//! * `schedule.rs`: when each target's next check runs, spread over the
//!   interval, and the checks in flight.

mod health;
mod probe;
mod schedule;

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tracing::{info, warn};

pub use health::{Health, Outcome, State, Transition};
pub use probe::Probe;
pub use schedule::Checks;

use crate::common::metrics::{Labels, Metrics};

/// The default `--check-interval`, as Consul's examples and Docker's
/// HEALTHCHECK use.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The longest default timeout: the interval, capped at this.
pub const DEFAULT_TIMEOUT_CAP: Duration = Duration::from_secs(10);
/// The default `--check-rise`: passes in a row to come back (HAProxy's).
pub const DEFAULT_RISE: u32 = 2;
/// The default `--check-fall`: criticals in a row to be withdrawn (HAProxy's).
pub const DEFAULT_FALL: u32 = 3;
/// The shortest interval: a check is a connection (or a process) each time.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The most results in a row `rise` and `fall` may ask for.
pub const MAX_COUNT: u32 = 100;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// `tcp`: connect to the registered address and port.
    Tcp,
    /// `http:PATH`: `GET PATH` from the registered address and port; 2xx
    /// passes, 429 warns, anything else is critical.
    Http {
        /// The path, with its query if any (`/health?full=1`).
        path: String,
    },
    /// `exec:CMD`: a command on the host, with `DISCOVERY_IP` and
    /// `DISCOVERY_PORT`; exit 0 passes, 1 warns, anything else is critical.
    Exec {
        /// The command, split like a shell would (no shell runs it).
        argv: Vec<String>,
    },
    /// `docker-exec:CMD`: a command inside the container (Docker's exec
    /// API), with the same exit codes.
    DockerExec {
        /// The command, split like a shell would.
        argv: Vec<String>,
    },
}

impl CheckKind {
    /// Read `tcp`, `http:PATH` (`http` alone is `http:/`), `exec:CMD` or
    /// `docker-exec:CMD`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let command = |cmd: &str| -> Result<Vec<String>, String> {
            match shlex::split(cmd) {
                Some(argv) if !argv.is_empty() => Ok(argv),
                Some(_) => Err(format!("{s:?} names no command")),
                None => Err(format!(
                    "{s:?}: the command's quotes do not close (it is split like a shell would, but no shell runs it)"
                )),
            }
        };
        if s == "tcp" {
            return Ok(CheckKind::Tcp);
        }
        if s == "http" {
            return Ok(CheckKind::Http { path: "/".into() });
        }
        if let Some(path) = s.strip_prefix("http:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{s:?}: the path must start with '/', as in http:/health"
                ));
            }
            if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "{s:?}: the path has whitespace or a control character; percent-encode it"
                ));
            }
            return Ok(CheckKind::Http {
                path: path.to_owned(),
            });
        }
        if let Some(cmd) = s.strip_prefix("exec:") {
            return Ok(CheckKind::Exec {
                argv: command(cmd)?,
            });
        }
        if let Some(cmd) = s.strip_prefix("docker-exec:") {
            return Ok(CheckKind::DockerExec {
                argv: command(cmd)?,
            });
        }
        Err(format!(
            "{s:?} is not a check: use tcp, http:PATH, exec:CMD or docker-exec:CMD"
        ))
    }

    /// Whether it connects to the registered port (so needs one).
    pub fn needs_port(&self) -> bool {
        matches!(self, CheckKind::Tcp | CheckKind::Http { .. })
    }

    /// A short name for logs and metrics: `tcp`, `http`, `exec`, `docker-exec`.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Exec { .. } => "exec",
            CheckKind::DockerExec { .. } => "docker-exec",
        }
    }
}

/// One check, with its timing and thresholds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckSpec {
    /// What to run.
    pub kind: CheckKind,
    /// How often (`--check-interval`, default 10 s).
    pub interval: Duration,
    /// How long one check may take before it is critical
    /// (`--check-timeout`, default the interval, capped at 10 s).
    pub timeout: Duration,
    /// Passes in a row that bring a withdrawn container back (`--check-rise`).
    pub rise: u32,
    /// Criticals in a row that withdraw a registered one (`--check-fall`).
    pub fall: u32,
    /// Failures before this long after the check starts do not count, and
    /// checks until the first pass run every second (`--check-start-period`,
    /// as Docker's `start_period`).
    pub start_period: Duration,
}

/// A check's timing and thresholds as given, before defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Given {
    /// Its interval.
    pub interval: Option<Duration>,
    /// Its timeout.
    pub timeout: Option<Duration>,
    /// Its rise.
    pub rise: Option<u32>,
    /// Its fall.
    pub fall: Option<u32>,
    /// Its start period.
    pub start_period: Option<Duration>,
}

impl CheckSpec {
    /// `kind` with `given`'s settings and the defaults for the rest,
    /// checked together. `name("interval")` is how the user wrote that
    /// setting (`--check-interval`, `discovery.check-interval`), for the
    /// message.
    pub fn new(
        kind: CheckKind,
        given: Given,
        name: impl Fn(&str) -> String,
    ) -> Result<Self, String> {
        let interval = given.interval.unwrap_or(DEFAULT_INTERVAL);
        if interval < MIN_INTERVAL {
            return Err(format!(
                "{}: {interval:?} is too short; checks run at most every {MIN_INTERVAL:?}",
                name("interval")
            ));
        }
        let timeout = given.timeout.unwrap_or(interval.min(DEFAULT_TIMEOUT_CAP));
        if timeout.is_zero() {
            return Err(format!("{}: it must be above zero", name("timeout")));
        }
        if timeout > interval {
            return Err(format!(
                "{}: {timeout:?} is longer than the interval ({interval:?}); checks of one container never overlap, so give a timeout up to the interval",
                name("timeout")
            ));
        }
        for (setting, n) in [("rise", given.rise), ("fall", given.fall)] {
            if n.is_some_and(|n| !(1..=MAX_COUNT).contains(&n)) {
                return Err(format!(
                    "{}: give a count from 1 to {MAX_COUNT}",
                    name(setting)
                ));
            }
        }
        Ok(CheckSpec {
            kind,
            interval,
            timeout,
            rise: given.rise.unwrap_or(DEFAULT_RISE),
            fall: given.fall.unwrap_or(DEFAULT_FALL),
            start_period: given.start_period.unwrap_or_default(),
        })
    }
}

/// The settings of one check as text (labels, registrator's variables),
/// each `(name, value)` so that a message names what the user wrote.
#[derive(Clone, Debug, Default)]
pub struct Settings<'a> {
    /// The check (`discovery.check`).
    pub check: Option<(String, &'a str)>,
    /// Its interval.
    pub interval: Option<(String, &'a str)>,
    /// Its timeout.
    pub timeout: Option<(String, &'a str)>,
    /// Its rise.
    pub rise: Option<(String, &'a str)>,
    /// Its fall.
    pub fall: Option<(String, &'a str)>,
    /// Its start period.
    pub start_period: Option<(String, &'a str)>,
}

impl Settings<'_> {
    /// The check these settings describe (`None` without one), with the
    /// defaults filled in; a message naming the setting if one is wrong.
    pub fn spec(&self) -> Result<Option<CheckSpec>, String> {
        let all = [
            ("interval", &self.interval),
            ("timeout", &self.timeout),
            ("rise", &self.rise),
            ("fall", &self.fall),
            ("start-period", &self.start_period),
        ];
        let Some((check_name, check)) = &self.check else {
            return match all.iter().find_map(|(_, s)| s.as_ref()) {
                Some((name, _)) => Err(format!(
                    "{name} is set, but there is no check to apply it to"
                )),
                None => Ok(None),
            };
        };
        let kind = CheckKind::parse(check).map_err(|e| format!("{check_name}: {e}"))?;
        let duration = |s: &Option<(String, &str)>| -> Result<Option<Duration>, String> {
            s.as_ref()
                .map(|(name, v)| discovery::parse_duration(v).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        let count = |s: &Option<(String, &str)>| -> Result<Option<u32>, String> {
            s.as_ref()
                .map(|(name, v)| {
                    v.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("{name}: {v:?} is not a count from 1 to {MAX_COUNT}"))
                })
                .transpose()
        };
        let given = Given {
            interval: duration(&self.interval)?,
            timeout: duration(&self.timeout)?,
            rise: count(&self.rise)?,
            fall: count(&self.fall)?,
            start_period: duration(&self.start_period)?,
        };
        let name = |setting: &str| {
            all.iter()
                .find(|(s, _)| *s == setting)
                .and_then(|(_, v)| v.as_ref())
                .map_or_else(|| setting.to_owned(), |(n, _)| n.clone())
        };
        CheckSpec::new(kind, given, name).map(Some)
    }
}

/// Log a check's transition (results that change nothing are not logged).
pub fn log_transition(container: &str, key: &str, spec: &CheckSpec, t: &Transition) {
    let check = spec.kind.name();
    match t {
        Transition::Registered { first: true } => {
            info!(%container, %key, check, "check passes; registering")
        }
        Transition::Registered { first: false } => {
            info!(%container, %key, check, rise = spec.rise, "check passes again; registering")
        }
        Transition::Warning(reason) => {
            warn!(%container, %key, check, %reason, "check warns; still registered, with status warning")
        }
        Transition::Recovered => {
            info!(%container, %key, check, "check passes again (no more warning)")
        }
        Transition::Withdrawn { fails, reason } => {
            warn!(%container, %key, check, fails, %reason, "check critical; withdrawn")
        }
        Transition::NotStarting(reason) => {
            warn!(%container, %key, check, %reason, "check has not passed since the container started; not registered")
        }
    }
}

/// The checks' metrics: results by outcome, and each checked key's state.
#[derive(Clone, Debug)]
pub struct CheckMetrics {
    /// `sidekick_check_results_total{outcome=passing|warning|critical|unknown}`.
    results: Family<Labels, Counter>,
    /// `sidekick_check_state{container,key,state}`: 1 for the key's state,
    /// 0 for the others (a state set, as OpenMetrics has it).
    states: Family<Labels, Gauge>,
}

impl CheckMetrics {
    /// Register the families in `m`, before it is shared.
    pub fn register(m: &mut Metrics) -> Self {
        let results = m.register_family(
            "check_results",
            "Health check results by outcome (passing, warning, critical, unknown)",
        );
        for o in ["passing", "warning", "critical", "unknown"] {
            let _ = results.get_or_create(&vec![("outcome".to_owned(), o.to_owned())]);
        }
        Self {
            results,
            states: m.register_gauge_family(
                "check_state",
                "Each checked container and key: 1 for its state (starting, passing, warning, critical), 0 for the others",
            ),
        }
    }

    /// Count one result.
    pub fn result(&self, outcome: &Outcome) {
        self.results
            .get_or_create(&vec![("outcome".to_owned(), outcome.name().to_owned())])
            .inc();
    }

    fn labels(container: &str, key: &str, state: State) -> Labels {
        vec![
            ("container".to_owned(), container.to_owned()),
            ("key".to_owned(), key.to_owned()),
            ("state".to_owned(), state.name().to_owned()),
        ]
    }

    /// Show `container`'s `key` in `state`.
    pub fn state(&self, container: &str, key: &str, state: State) {
        for s in State::ALL {
            self.states
                .get_or_create(&Self::labels(container, key, s))
                .set(i64::from(s == state));
        }
    }

    /// Drop `container`'s `key` (no longer checked).
    pub fn forget(&self, container: &str, key: &str) {
        for s in State::ALL {
            self.states.remove(&Self::labels(container, key, s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, v: &'static str) -> Option<(String, &'static str)> {
        Some((name.to_owned(), v))
    }

    #[test]
    fn kinds() {
        assert_eq!(CheckKind::parse("tcp"), Ok(CheckKind::Tcp));
        assert_eq!(
            CheckKind::parse("http"),
            Ok(CheckKind::Http { path: "/".into() })
        );
        assert_eq!(
            CheckKind::parse("http:/health?full=1"),
            Ok(CheckKind::Http {
                path: "/health?full=1".into()
            })
        );
        assert_eq!(
            CheckKind::parse("exec:/usr/lib/check 'a b'"),
            Ok(CheckKind::Exec {
                argv: vec!["/usr/lib/check".into(), "a b".into()]
            })
        );
        assert_eq!(
            CheckKind::parse("docker-exec:pidof httpd"),
            Ok(CheckKind::DockerExec {
                argv: vec!["pidof".into(), "httpd".into()]
            })
        );
        for (bad, why) in [
            ("udp", "not a check"),
            ("http:health", "must start with '/'"),
            ("http:/a b", "whitespace"),
            ("exec:", "names no command"),
            ("docker-exec:sh -c 'x", "quotes do not close"),
        ] {
            let e = CheckKind::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_and_limits() {
        let s = Settings {
            check: set("--check", "http:/"),
            ..Default::default()
        };
        let spec = s.spec().unwrap().unwrap();
        assert_eq!(
            (spec.interval, spec.timeout, spec.rise, spec.fall),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT_CAP, 2, 3)
        );
        assert_eq!(spec.start_period, Duration::ZERO);
        let s = Settings {
            check: set("--check", "tcp"),
            interval: set("--check-interval", "2m"),
            ..Default::default()
        };
        // The default timeout is the interval, capped at 10 s.
        assert_eq!(s.spec().unwrap().unwrap().timeout, DEFAULT_TIMEOUT_CAP);
        let s = Settings {
            check: set("--check", "tcp"),
            interval: set("--check-interval", "500ms"),
            ..Default::default()
        };
        assert_eq!(
            s.spec().unwrap().unwrap().timeout,
            Duration::from_millis(500)
        );
        for (s, why) in [
            (
                Settings {
                    check: set("--check", "tcp"),
                    interval: set("--check-interval", "10ms"),
                    ..Default::default()
                },
                "--check-interval: 10ms is too short",
            ),
            (
                Settings {
                    check: set("--check", "tcp"),
                    interval: set("--check-interval", "1s"),
                    timeout: set("--check-timeout", "2s"),
                    ..Default::default()
                },
                "longer than the interval",
            ),
            (
                Settings {
                    check: set("discovery.check", "tcp"),
                    fall: set("discovery.check-fall", "0"),
                    ..Default::default()
                },
                "discovery.check-fall: give a count from 1",
            ),
            (
                Settings {
                    rise: set("--check-rise", "2"),
                    ..Default::default()
                },
                "--check-rise is set, but there is no check",
            ),
        ] {
            let e = s.spec().unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
