//! The `--exec` flags and the checks clap cannot make: the command exists,
//! the snapshot's directory exists, the variable names are usable.
//! Values are parsed by clap (`parse.rs`); flags that only make sense with
//! `--exec` say so with clap's `requires`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use discovery::Prefix;
use nix::sys::signal::Signal;

use super::naming;
use super::parse::{Trigger, parse_kill_signal, parse_signal, parse_trigger, parse_wait, which};
use super::supervise::{ExecOptions, Wait};
use crate::common::etcd_args::parse_positive_duration;
use crate::common::exit::usage;

/// Supervisor flags, shared by `watch` and `config`.
#[derive(Args, Debug)]
#[command(next_help_heading = "Running a command (--exec)")]
pub struct ExecArgs {
    /// Run this command (exec'd directly, never through a shell) with the backends in its environment; everything after --exec is its argv
    #[arg(long, num_args = 0.., allow_hyphen_values = true, value_name = "CMD [ARGS]...")]
    pub exec: Option<Vec<OsString>>,
    /// Write the current snapshot as JSON to PATH (atomically) before each start or reload; DISCOVER_SNAPSHOT_FILE tells the child where
    #[arg(long, value_name = "PATH", requires = "exec")]
    pub snapshot_file: Option<PathBuf>,
    /// The signal that stops the child for a restart, or when discover gives up; a SIGTERM or SIGINT sent to discover is passed on as it is
    #[arg(long, default_value = "SIGTERM", value_parser = parse_kill_signal, value_name = "SIG", requires = "exec")]
    pub kill_signal: Signal,
    /// How long the child gets to exit after --kill-signal (or a passed-on SIGTERM) before SIGKILL
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION", requires = "exec")]
    pub kill_timeout: Duration,
    /// Send this signal (such as SIGHUP) instead of restarting; the child re-reads --snapshot-file
    #[arg(long, value_parser = parse_signal, value_name = "SIG", requires = "exec")]
    pub reload_signal: Option<Signal>,
    /// Coalesce a burst of changes: act once MIN passed with no further change, but never later than MAX [default MAX: 4*MIN; 0: at once]
    #[arg(long, value_parser = parse_wait, value_name = "MIN[:MAX]", requires = "exec")]
    pub wait: Option<(Duration, Duration)>,
    /// A random delay up to DURATION before each restart, so a fleet does not restart at once
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION", requires = "exec")]
    pub splay: Option<Duration>,
    /// Restart a child that exits by itself (with backoff) instead of exiting with its code
    #[arg(long, requires = "exec")]
    pub restart_child: bool,
}

/// Supervisor flags only `watch` has: `config` keys name their own
/// variables, and every change of a config calls for a restart.
#[derive(Args, Debug)]
#[command(next_help_heading = "Running a command (--exec)")]
pub struct WatchExecArgs {
    /// Name the variable for PREFIX yourself (default: /services/couchbase gives SERVICES_COUCHBASE)
    #[arg(long, value_name = "NAME=PREFIX", requires = "exec")]
    pub env_name: Vec<String>,
    /// Which changes restart (or signal) the child: set, or set,delete [default: set,delete]
    #[arg(long, value_delimiter = ',', value_parser = parse_trigger, value_name = "ACTIONS", requires = "exec")]
    pub restart_on: Vec<Trigger>,
}

/// `watch`'s `--env-name` and `--restart-on`, refused by `config` with a
/// reason. Hidden, so that `config --help` does not offer them; without
/// them clap would only say "unexpected argument" and suggest
/// `--restart-child`.
#[derive(Args, Debug)]
pub struct ConfigRefusedArgs {
    /// Never set: its parser refuses every value with the reason.
    #[arg(long, hide = true, value_parser = refuse_env_name)]
    env_name: Option<String>,
    /// Never set: its parser refuses every value with the reason.
    #[arg(long, hide = true, value_parser = refuse_restart_on)]
    restart_on: Option<String>,
}

/// `--env-name` on `config --exec`: always refused, with the reason.
fn refuse_env_name(_: &str) -> Result<String, String> {
    Err("--env-name applies to watch; config keys name their own variables".into())
}

/// `--restart-on` on `config --exec`: always refused, with the reason.
fn refuse_restart_on(_: &str) -> Result<String, String> {
    Err("--restart-on applies to watch; config restarts (or signals) the child on every change of the config".into())
}

impl ExecArgs {
    /// The checked supervisor settings, or `None` without `--exec`.
    pub fn options(&self) -> anyhow::Result<Option<ExecOptions>> {
        let Some(argv) = &self.exec else {
            return Ok(None);
        };
        let Some(prog) = argv.first() else {
            return Err(usage(
                "--exec needs a command, such as --exec node worker.js",
            ));
        };
        if which(prog).is_none() {
            return Err(usage(format!(
                "--exec: {prog:?} is not an executable file or a command in PATH"
            )));
        }
        if let Some(path) = &self.snapshot_file {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !dir.is_dir() {
                return Err(usage(format!(
                    "--snapshot-file {}: the directory {} does not exist",
                    path.display(),
                    dir.display()
                )));
            }
        }
        Ok(Some(ExecOptions {
            argv: argv.clone(),
            kill_signal: self.kill_signal,
            kill_timeout: self.kill_timeout,
            reload_signal: self.reload_signal,
            // `--wait 0`: at once, as without --wait.
            wait: self
                .wait
                .filter(|(min, _)| !min.is_zero())
                .map(|(min, max)| Wait { min, max }),
            splay: self.splay,
            restart_child: self.restart_child,
            snapshot_file: self.snapshot_file.clone(),
        }))
    }
}

/// Pair each prefix with its variable name, honouring `--env-name NAME=PREFIX`.
pub(super) fn env_names(
    prefixes: &[Prefix],
    overrides: &[String],
) -> anyhow::Result<Vec<(Prefix, String)>> {
    let mut named = Vec::new();
    for o in overrides {
        let Some((name, p)) = o.split_once('=') else {
            return Err(usage(format!(
                "--env-name {o:?}: write NAME=PREFIX, such as COUCHBASE=/services/couchbase"
            )));
        };
        naming::check_env_name(name).map_err(|e| usage(format!("--env-name: {e}")))?;
        let p = Prefix::new(p)?;
        if !prefixes.contains(&p) {
            return Err(usage(format!(
                "--env-name {o}: {p} is not one of the watched prefixes"
            )));
        }
        if named.iter().any(|(q, _)| *q == p) {
            return Err(usage(format!("--env-name names {p} twice")));
        }
        named.push((p, name.to_owned()));
    }
    let mut out: Vec<(Prefix, String)> = Vec::new();
    for p in prefixes {
        let given = named.iter().find(|(q, _)| q == p).map(|(_, n)| n.clone());
        let name = given.clone().unwrap_or_else(|| naming::env_name(p));
        if let Err(e) = naming::check_not_reserved(&name) {
            return Err(usage(match given {
                Some(_) => format!("--env-name {name}={p}: {e}"),
                None => {
                    format!("{p} would be passed as {name}: {e}; name it with --env-name NAME={p}")
                }
            }));
        }
        if let Some((q, _)) = out.iter().find(|(_, n)| *n == name) {
            return Err(usage(format!(
                "{q} and {p} would both be passed as {name}; name one of them with --env-name NAME=PREFIX"
            )));
        }
        out.push((p.clone(), name));
    }
    Ok(out)
}
