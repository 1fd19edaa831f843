//! `discover`: etcd v2-style JSON Lines on stdout (`get`, `watch`), a
//! human table (`ls`), and a supervisor that runs an app with the backends
//! in its environment (`watch --exec`, `config --exec`).

pub mod envelope;
mod feed;
pub mod naming;
mod output;
pub mod render;
pub mod supervise;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use discovery::{Action, Prefix};
use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use crate::common::etcd_args::parse_positive_duration;
use crate::common::exit::usage;
use crate::common::metrics::{self, Metrics};
use crate::common::signals::{Sig, Signals};
use crate::common::{EtcdArgs, LogArgs};

/// Service discovery for apps in any language: read and follow etcd
/// prefixes as etcd v2-style JSON lines (node-etcd code ports as is), or run
/// your app with the backends in its environment and restart it when they
/// really change, never on heartbeats.
#[derive(Parser, Debug)]
#[command(name = "discover", version, max_term_width = 100)]
#[command(
    after_help = "Unit-file form:\n  ExecStart=/usr/local/bin/discover watch /services/couchbase --exec node worker.js\n\nExit codes: 0 success, 1 runtime failure, 2 bad usage or configuration; with --exec, the child's exit code."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,

    /// Serve Prometheus metrics on this address (such as 127.0.0.1:9102)
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    #[command(flatten)]
    pub etcd: EtcdArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Print the keys under each PREFIX: one JSON line each (or values, or NAME=v1,v2)
    Get(GetArgs),
    /// Print a get line per PREFIX, then one JSON line per change; or run a command with the backends (--exec)
    Watch(WatchArgs),
    /// A table of the keys under PREFIX: value, lease TTL left, modified revision
    Ls(LsArgs),
    /// The config under PREFIX as environment variables of a command (--exec), or as JSON lines
    Config(ConfigArgs),
    /// Render templates to files from the watched prefixes, check them, and reload their reader (confd, consul-template)
    Render(render::RenderArgs),
}

/// Output formats of `get`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One etcd v2-style JSON line per prefix.
    Json,
    /// One value per line, in key order.
    Values,
    /// `NAME=v1,v2` per prefix, as --exec would set it.
    Env,
}

/// `discover get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Directory prefixes, such as /services/couchbase (a trailing / is optional)
    #[arg(required = true, value_name = "PREFIX")]
    pub prefixes: Vec<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Add "ttl" (seconds left on the key's lease) to leased nodes
    #[arg(long)]
    pub ttl: bool,
}

/// `discover watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Directory prefixes to watch
    #[arg(required = true, value_name = "PREFIX")]
    pub prefixes: Vec<String>,
    /// Print only these actions (comma-separated: set,update,delete); the get lines are always printed
    #[arg(long, value_delimiter = ',', value_parser = Action::from_str, value_name = "ACTIONS")]
    pub actions: Vec<Action>,
    /// Continue from revision R: the get lines show the state at R, then every change after R
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(i64).range(1..))]
    pub since_revision: Option<i64>,
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// `discover ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// The directory prefix to list
    #[arg(value_name = "PREFIX")]
    pub prefix: String,
}

/// `discover config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// The config prefix, such as /config/web: /config/web/port becomes PORT, /config/web/db/host becomes DB_HOST
    #[arg(value_name = "PREFIX")]
    pub prefix: String,
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// Supervisor flags, shared by `watch` and `config`.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Running a command (--exec)")]
pub struct ExecArgs {
    /// Run this command (exec'd directly, never through a shell) with the backends in its environment; everything after --exec is its argv
    #[arg(long, num_args = 0.., allow_hyphen_values = true, value_name = "CMD [ARGS]...")]
    pub exec: Option<Vec<OsString>>,
    /// Name the variable for PREFIX yourself (default: /services/couchbase gives SERVICES_COUCHBASE)
    #[arg(long, value_name = "NAME=PREFIX")]
    pub env_name: Vec<String>,
    /// Write the current snapshot as JSON to PATH (atomically) before each start or reload; DISCOVER_SNAPSHOT_FILE tells the child where
    #[arg(long, value_name = "PATH")]
    pub snapshot_file: Option<PathBuf>,
    /// Which changes restart (or signal) the child: set, or set,delete [default: set,delete]
    #[arg(long, value_delimiter = ',', value_name = "ACTIONS")]
    pub restart_on: Vec<String>,
    /// How long the child gets to exit after SIGTERM before SIGKILL
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub kill_timeout: Duration,
    /// Send this signal (such as SIGHUP) instead of restarting; the child re-reads --snapshot-file
    #[arg(long, value_name = "SIG")]
    pub reload_signal: Option<String>,
    /// Coalesce a burst of changes: act once MIN passed with no further change, but never later than MAX [default MAX: 4*MIN]
    #[arg(long, value_name = "MIN[:MAX]")]
    pub wait: Option<String>,
    /// A random delay up to DURATION before each restart, so a fleet does not restart at once
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    pub splay: Option<Duration>,
    /// Restart a child that exits by itself (with backoff) instead of exiting with its code
    #[arg(long)]
    pub restart_child: bool,
}

/// Split `argv` at the first `--exec`: clap sees everything up to and
/// including `--exec`; everything after it is the child's argv, untouched
/// (a leading `--` is dropped).
pub fn split_exec(argv: Vec<OsString>) -> (Vec<OsString>, Option<Vec<OsString>>) {
    match argv.iter().position(|a| a == "--exec") {
        Some(i) => {
            let mut head = argv;
            let mut tail = head.split_off(i + 1);
            if tail.first().is_some_and(|a| a == "--") {
                tail.remove(0);
            }
            (head, Some(tail))
        }
        None => (argv, None),
    }
}

/// Parse `--reload-signal`: `SIGHUP`, `HUP`, `hup` or a number.
pub fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    let t = s.trim();
    let sig = if let Ok(n) = t.parse::<i32>() {
        Signal::try_from(n).ok()
    } else {
        let upper = t.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&name).ok()
    };
    match sig {
        Some(Signal::SIGKILL | Signal::SIGSTOP) => Err(usage(format!(
            "--reload-signal {s}: SIGKILL and SIGSTOP cannot be handled by a process; use SIGHUP, SIGUSR1 or SIGUSR2"
        ))),
        Some(sig) => Ok(sig),
        None => Err(usage(format!(
            "--reload-signal {s:?} is not a signal; use a name such as SIGHUP, HUP or SIGUSR1, or a number"
        ))),
    }
}

/// Parse `--wait MIN[:MAX]`.
pub fn parse_wait(s: &str) -> anyhow::Result<(Duration, Duration)> {
    let (min, max) = match s.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let min = parse_positive_duration(min).map_err(|e| usage(format!("--wait: {e}")))?;
    let max = match max {
        Some(m) => parse_positive_duration(m).map_err(|e| usage(format!("--wait: {e}")))?,
        None => min * 4,
    };
    if max < min {
        return Err(usage(format!(
            "--wait {s}: MAX ({max:?}) is shorter than MIN ({min:?})"
        )));
    }
    Ok((min, max))
}

/// The checked supervisor settings, or `None` without `--exec`.
fn exec_options(a: &ExecArgs) -> anyhow::Result<Option<(supervise::ExecOptions, bool)>> {
    let Some(argv) = &a.exec else {
        for (set, flag) in [
            (!a.env_name.is_empty(), "--env-name"),
            (a.snapshot_file.is_some(), "--snapshot-file"),
            (!a.restart_on.is_empty(), "--restart-on"),
            (a.reload_signal.is_some(), "--reload-signal"),
            (a.wait.is_some(), "--wait"),
            (a.splay.is_some(), "--splay"),
            (a.restart_child, "--restart-child"),
        ] {
            if set {
                return Err(usage(format!("{flag} only applies with --exec CMD")));
            }
        }
        return Ok(None);
    };
    let Some(prog) = argv.first() else {
        return Err(usage(
            "--exec needs a command, such as --exec node worker.js",
        ));
    };
    if which(prog).is_none() {
        return Err(usage(format!(
            "--exec: {:?} is not an executable file or a command in PATH",
            prog
        )));
    }
    let mut restart_on_delete = true;
    if !a.restart_on.is_empty() {
        restart_on_delete = false;
        for r in &a.restart_on {
            match r.trim() {
                "set" => {}
                "delete" => restart_on_delete = true,
                "update" => {
                    return Err(usage(
                        "--restart-on update is refused: an update is a same-value re-put (a heartbeat), and restarting on it is the bug this tool exists to avoid",
                    ));
                }
                other => {
                    return Err(usage(format!(
                        "--restart-on: {other:?} is not set or delete"
                    )));
                }
            }
        }
        if !a.restart_on.iter().any(|r| r.trim() == "set") {
            return Err(usage(
                "--restart-on must include set (a new location is what the child must learn)",
            ));
        }
    }
    let reload_signal = a.reload_signal.as_deref().map(parse_signal).transpose()?;
    let wait = a.wait.as_deref().map(parse_wait).transpose()?;
    if let Some(path) = &a.snapshot_file {
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
    Ok(Some((
        supervise::ExecOptions {
            argv: argv.clone(),
            kill_timeout: a.kill_timeout,
            reload_signal,
            wait,
            splay: a.splay,
            restart_child: a.restart_child,
            snapshot_file: a.snapshot_file.clone(),
        },
        restart_on_delete,
    )))
}

/// Find `prog` as a path or in `PATH`, as execvp would.
fn which(prog: &OsString) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let p = std::path::Path::new(prog);
    if p.components().count() > 1 || prog.to_string_lossy().contains('/') {
        return is_exec(p).then(|| p.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|c| is_exec(c))
}

fn prefixes(raw: &[String]) -> anyhow::Result<Vec<Prefix>> {
    raw.iter()
        .map(|p| Prefix::new(p).map_err(anyhow::Error::from))
        .collect()
}

/// Pair each prefix with its variable name, honouring `--env-name NAME=PREFIX`.
fn env_names(prefixes: &[Prefix], overrides: &[String]) -> anyhow::Result<Vec<(Prefix, String)>> {
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

/// Wait for `fut`, unless SIGTERM or SIGINT comes first (None): before a
/// child exists there is nothing to stop, and discover just exits.
async fn before_child<T>(
    signals: &mut Signals,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            v = &mut fut => return Some(v),
            sig = signals.recv() => {
                if sig != Sig::Hup {
                    tracing::info!(signal = sig.name(), "stopping before the child was started");
                    return None;
                }
            }
        }
    }
}

/// Run a parsed command line; returns the exit code.
pub async fn run(
    cli: Cli,
    user_source: Option<clap::parser::ValueSource>,
    shutdown: CancellationToken,
) -> anyhow::Result<i32> {
    let connect = cli.etcd.connect_options(user_source)?;
    // Check everything the command line says before any I/O.
    let plan = match &cli.cmd {
        Cmd::Get(a) => Plan::Get(prefixes(&a.prefixes)?),
        Cmd::Ls(a) => Plan::Ls(Prefix::new(&a.prefix)?),
        Cmd::Watch(a) => {
            let ps = prefixes(&a.prefixes)?;
            let exec = exec_options(&a.exec)?;
            let named = env_names(&ps, &a.exec.env_name)?;
            if exec.is_some() && !a.actions.is_empty() {
                return Err(usage(
                    "--actions filters printed lines; with --exec nothing is printed (use --restart-on)",
                ));
            }
            Plan::Watch(named, exec)
        }
        Cmd::Config(a) => {
            let p = Prefix::new(&a.prefix)?;
            if !a.exec.env_name.is_empty() {
                return Err(usage(
                    "--env-name applies to watch; config keys name their own variables",
                ));
            }
            if !a.exec.restart_on.is_empty() {
                return Err(usage(
                    "--restart-on applies to watch; config restarts (or signals) the child on every change of the config",
                ));
            }
            Plan::Config(p, exec_options(&a.exec)?)
        }
        Cmd::Render(a) => return render::run(a, connect, cli.metrics_addr, shutdown).await,
    };
    let metrics = Arc::new(Metrics::with_prefix("discover"));
    if let Some(addr) = cli.metrics_addr {
        metrics::serve(addr, metrics.clone(), shutdown.clone())
            .await
            .map_err(|e| usage(format!("--metrics-addr {addr}: {e}")))?;
    }
    let long_running = matches!(plan, Plan::Watch(..) | Plan::Config(..));
    // With --exec the supervisor owns the signals (it forwards them to the
    // child); until the child runs, a stop signal just ends discover.
    let exec_mode = matches!(plan, Plan::Watch(_, Some(_)) | Plan::Config(_, Some(_)));
    let mut signals = if exec_mode {
        Some(Signals::install().context("cannot install signal handlers")?)
    } else {
        None
    };
    let client = match signals.as_mut() {
        Some(sig) => match before_child(sig, connect.connect_retrying()).await {
            Some(c) => c.context("cannot use etcd")?,
            None => return Ok(0),
        },
        None if long_running => tokio::select! {
            c = connect.connect_retrying() => c.context("cannot use etcd")?,
            _ = shutdown.cancelled() => return Ok(0),
        },
        None => connect.connect().await.context("cannot use etcd")?,
    };
    match (plan, &cli.cmd) {
        (Plan::Get(ps), Cmd::Get(a)) => output::get(&client, &ps, a.format, a.ttl).await,
        (Plan::Ls(p), _) => output::ls(&client, &p).await,
        (Plan::Watch(named, None), Cmd::Watch(a)) => {
            output::watch(
                &client,
                &named,
                &a.actions,
                a.since_revision,
                metrics,
                shutdown,
            )
            .await
        }
        (Plan::Watch(named, Some((opts, on_delete))), Cmd::Watch(a)) => {
            let mut signals = signals.context("signal handlers")?;
            let setup = feed::watch_feed(
                &client,
                &named,
                a.since_revision,
                on_delete,
                metrics.clone(),
            );
            let Some(setup) = before_child(&mut signals, setup).await else {
                return Ok(0);
            };
            let (initial, rx) = setup?;
            supervise::supervise(opts, initial, rx, signals, metrics).await
        }
        (Plan::Config(p, None), _) => output::config(&client, &p, shutdown).await,
        (Plan::Config(p, Some((opts, _))), _) => {
            let mut signals = signals.context("signal handlers")?;
            let setup = feed::config_feed(&client, &p, metrics.clone());
            let Some(setup) = before_child(&mut signals, setup).await else {
                return Ok(0);
            };
            let (initial, rx) = setup?;
            supervise::supervise(opts, initial, rx, signals, metrics).await
        }
        (plan, _) => Err(anyhow::anyhow!(
            "internal error: the {} plan does not match its subcommand",
            plan.name()
        )),
    }
}

enum Plan {
    Get(Vec<Prefix>),
    Ls(Prefix),
    Watch(
        Vec<(Prefix, String)>,
        Option<(supervise::ExecOptions, bool)>,
    ),
    Config(Prefix, Option<(supervise::ExecOptions, bool)>),
}

impl Plan {
    fn name(&self) -> &'static str {
        match self {
            Plan::Get(_) => "get",
            Plan::Ls(_) => "ls",
            Plan::Watch(..) => "watch",
            Plan::Config(..) => "config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_split_keeps_the_child_argv_intact() {
        let v = |s: &[&str]| s.iter().map(OsString::from).collect::<Vec<_>>();
        let (head, tail) = split_exec(v(&[
            "discover", "watch", "/p", "--exec", "node", "w.js", "--port", "3", "--exec",
        ]));
        assert_eq!(head, v(&["discover", "watch", "/p", "--exec"]));
        assert_eq!(tail.unwrap(), v(&["node", "w.js", "--port", "3", "--exec"]));
        let (_, tail) = split_exec(v(&["discover", "watch", "/p", "--exec", "--", "-x"]));
        assert_eq!(tail.unwrap(), v(&["-x"]));
        assert!(split_exec(v(&["discover", "get", "/p"])).1.is_none());
    }

    #[test]
    fn signals_and_waits() {
        assert_eq!(parse_signal("SIGHUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("usr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(
            parse_signal("SIGNOPE")
                .unwrap_err()
                .to_string()
                .contains("not a signal")
        );
        assert!(
            parse_signal("KILL")
                .unwrap_err()
                .to_string()
                .contains("cannot be handled")
        );
        assert_eq!(
            parse_wait("200ms:2s").unwrap(),
            (Duration::from_millis(200), Duration::from_secs(2))
        );
        assert_eq!(
            parse_wait("1s").unwrap(),
            (Duration::from_secs(1), Duration::from_secs(4))
        );
        assert!(
            parse_wait("2s:1s")
                .unwrap_err()
                .to_string()
                .contains("shorter")
        );
        assert!(parse_wait("0").is_err());
    }
}
