//! `discover`: etcd v2-style JSON Lines on stdout (`get`, `watch`), a
//! human table (`ls`), and a supervisor that runs an app with the backends
//! in its environment (`watch --exec`, `config --exec`).
//!
//! Layout:
//! - this file: the command line ([`Cli`]), the `Plan` it becomes once
//!   checked (before any I/O), and [`run`], which carries the plan out;
//! - `exec_args.rs`: the `--exec` flags and the checks clap cannot make;
//!   `parse.rs`: their value parsers;
//! - `output.rs` and `envelope.rs`: `get`, `watch`, `ls`, `config` output;
//!   `naming.rs`: prefix and config key to variable name;
//! - `feed.rs`: what an `--exec` child is given, kept current by watches;
//!   `supervise/`: the `--exec` supervisor;
//! - `render/`: `discover render`; `serve/`: `discover serve` (DNS and
//!   Prometheus SD).
//!
//! Every item here is documented, private ones too (the lint below), so
//! that a reader learns why each field and helper exists.

#![warn(clippy::missing_docs_in_private_items)]

pub mod envelope;
pub(crate) mod exec_args;
mod feed;
pub mod naming;
mod output;
pub mod parse;
pub mod render;
pub mod serve;
pub mod supervise;

pub use exec_args::{ExecArgs, WatchExecArgs};
pub use output::Format;
pub use parse::{RestartOn, parse_kill_signal, parse_signal, parse_wait};

use std::ffi::OsString;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use discovery::{Action, Prefix};
use tokio_util::sync::CancellationToken;

use crate::common::exit::usage;
use crate::common::metrics::{self, Metrics};
use crate::common::signals::ExecSignals;
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
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,

    /// Serve Prometheus metrics on this address (such as 127.0.0.1:9102)
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// How to reach etcd (etcdctl's flags and environment).
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// `--log-format`.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Cli {
    /// Whether discover runs a child (`--exec`): the supervisor then owns
    /// the signals, to pass them on.
    pub fn supervises(&self) -> bool {
        match &self.cmd {
            Cmd::Watch(a) => a.exec.exec.is_some(),
            Cmd::Config(a) => a.exec.exec.is_some(),
            Cmd::Get(_) | Cmd::Ls(_) | Cmd::Render(_) | Cmd::Serve(_) => false,
        }
    }
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
    /// Answer DNS (A, AAAA, SRV) and Prometheus HTTP SD from a watch of the prefixes, with no etcd read per query
    Serve(serve::ServeArgs),
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
    /// `--exec` and the supervisor's flags.
    #[command(flatten)]
    pub exec: ExecArgs,
    /// The supervisor flags only `watch` has.
    #[command(flatten)]
    pub watch_exec: WatchExecArgs,
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
    /// `--exec` and the supervisor's flags.
    #[command(flatten)]
    pub exec: ExecArgs,
    /// `watch`'s own flags, refused with a reason.
    #[command(flatten)]
    refused: exec_args::ConfigRefusedArgs,
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

use exec_args::env_names;

/// The command line's prefixes, checked by the library's [`Prefix`].
fn prefixes(raw: &[String]) -> anyhow::Result<Vec<Prefix>> {
    raw.iter()
        .map(|p| Prefix::new(p).map_err(anyhow::Error::from))
        .collect()
}

/// Wait for `fut`, unless SIGTERM or SIGINT comes first (None): before a
/// child exists there is nothing to stop, and discover just exits; any
/// other signal has no child to go to yet.
async fn before_child<T>(
    signals: &mut ExecSignals,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            v = &mut fut => return Some(v),
            sig = signals.recv() => {
                if ExecSignals::is_stop(sig) {
                    tracing::info!(signal = %sig, "stopping before the child was started");
                    return None;
                }
                tracing::info!(signal = %sig, "no child to pass the signal on to yet");
            }
        }
    }
}

/// What a checked command line asks for: each variant owns all it needs.
#[derive(Debug)]
enum Plan {
    /// `get`: print each prefix once.
    Get {
        /// The prefixes, in the order given.
        prefixes: Vec<Prefix>,
        /// `--format`.
        format: Format,
        /// `--ttl`: add each leased key's seconds left.
        ttl: bool,
    },
    /// `ls`: a table.
    Ls(Prefix),
    /// `watch` without `--exec`: print lines.
    Watch {
        /// The prefixes, each paired with the variable name `--exec` would
        /// give it (printing uses only the prefixes).
        named: Vec<(Prefix, String)>,
        /// `--actions`: the events to print (empty: all).
        actions: Vec<Action>,
        /// `--since-revision`: where the watch starts.
        since: Option<i64>,
    },
    /// `watch --exec`: supervise a child fed by the watches.
    WatchExec {
        /// The prefixes, each with the variable the child gets it in.
        named: Vec<(Prefix, String)>,
        /// `--since-revision`: where the watches start.
        since: Option<i64>,
        /// `--restart-on`: which changes restart (or signal) the child.
        restart_on: RestartOn,
        /// The child and how to run it.
        exec: supervise::ExecOptions,
    },
    /// `config` without `--exec`: print the config as JSON lines.
    Config(Prefix),
    /// `config --exec`: supervise a child fed by the config.
    ConfigExec {
        /// The config prefix.
        prefix: Prefix,
        /// The child and how to run it.
        exec: supervise::ExecOptions,
    },
}

/// What a command line asks for: `render` checks its own flags
/// (`render::args`); every other subcommand becomes a [`Plan`].
#[derive(Debug)]
enum Command {
    /// `render`, which checks its own flags when it starts.
    Render(render::RenderArgs),
    /// `serve`, which checks its own flags when it starts.
    Serve(serve::ServeArgs),
    /// Every other subcommand, checked.
    Plan(Plan),
}

impl Command {
    /// Check everything the command line says, before any I/O.
    fn new(cmd: Cmd) -> anyhow::Result<Self> {
        Ok(Command::Plan(match cmd {
            Cmd::Get(a) => Plan::Get {
                prefixes: prefixes(&a.prefixes)?,
                format: a.format,
                ttl: a.ttl,
            },
            Cmd::Ls(a) => Plan::Ls(Prefix::new(&a.prefix)?),
            Cmd::Watch(a) => {
                let ps = prefixes(&a.prefixes)?;
                let named = env_names(&ps, &a.watch_exec.env_name)?;
                let since = a.since_revision;
                match a.exec.options()? {
                    None => Plan::Watch {
                        named,
                        actions: a.actions,
                        since,
                    },
                    Some(_) if !a.actions.is_empty() => {
                        return Err(usage(
                            "--actions filters printed lines; with --exec nothing is printed (use --restart-on)",
                        ));
                    }
                    Some(exec) => Plan::WatchExec {
                        named,
                        since,
                        restart_on: RestartOn::from_triggers(&a.watch_exec.restart_on)?,
                        exec,
                    },
                }
            }
            Cmd::Config(a) => {
                let prefix = Prefix::new(&a.prefix)?;
                match a.exec.options()? {
                    None => Plan::Config(prefix),
                    Some(exec) => Plan::ConfigExec { prefix, exec },
                }
            }
            Cmd::Render(a) => return Ok(Command::Render(a)),
            Cmd::Serve(a) => return Ok(Command::Serve(a)),
        }))
    }
}

/// Run a parsed command line; returns the exit code.
pub async fn run(
    cli: Cli,
    user_source: Option<clap::parser::ValueSource>,
    shutdown: CancellationToken,
) -> anyhow::Result<i32> {
    let connect = cli.etcd.connect_options(user_source)?;
    let plan = match Command::new(cli.cmd)? {
        Command::Render(a) => return render::run(&a, connect, cli.metrics_addr, shutdown).await,
        Command::Serve(a) => return serve::run(&a, connect, cli.metrics_addr, shutdown).await,
        Command::Plan(p) => p,
    };
    let metrics = Arc::new(Metrics::with_prefix("discover"));
    if let Some(addr) = cli.metrics_addr {
        metrics::serve(addr, metrics.clone(), shutdown.clone())
            .await
            .map_err(|e| usage(format!("--metrics-addr {addr}: {e}")))?;
    }
    let (feed, exec) = match plan {
        Plan::Get {
            prefixes,
            format,
            ttl,
        } => {
            let client = connect.connect().await.context("cannot use etcd")?;
            return output::get(&client, &prefixes, format, ttl).await;
        }
        Plan::Ls(p) => {
            let client = connect.connect().await.context("cannot use etcd")?;
            return output::ls(&client, &p).await;
        }
        Plan::Watch {
            named,
            actions,
            since,
        } => {
            let client = tokio::select! {
                c = connect.connect_retrying() => c.context("cannot use etcd")?,
                _ = shutdown.cancelled() => return Ok(0),
            };
            return output::watch(&client, &named, &actions, since, metrics, shutdown).await;
        }
        Plan::Config(p) => {
            let client = tokio::select! {
                c = connect.connect_retrying() => c.context("cannot use etcd")?,
                _ = shutdown.cancelled() => return Ok(0),
            };
            return output::config(&client, &p, shutdown).await;
        }
        Plan::WatchExec {
            named,
            since,
            restart_on,
            exec,
        } => (FeedPlan::Watch(named, since, restart_on), exec),
        Plan::ConfigExec { prefix, exec } => (FeedPlan::Config(prefix), exec),
    };
    // With --exec the supervisor owns the signals (it passes them on to
    // the child); until the child runs, a stop request just ends discover.
    let mut signals = ExecSignals::install().context("cannot install signal handlers")?;
    let Some(client) = before_child(&mut signals, connect.connect_retrying()).await else {
        return Ok(0);
    };
    let client = client.context("cannot use etcd")?;
    let setup = async {
        match &feed {
            FeedPlan::Watch(named, since, restart_on) => {
                feed::watch_feed(&client, named, *since, *restart_on, metrics.clone()).await
            }
            FeedPlan::Config(prefix) => feed::config_feed(&client, prefix, metrics.clone()).await,
        }
    };
    let Some(setup) = before_child(&mut signals, setup).await else {
        return Ok(0);
    };
    let (initial, rx) = setup?;
    supervise::supervise(exec, initial, rx, signals, metrics).await
}

/// Where an `--exec` child's input comes from.
enum FeedPlan {
    /// Watches of these prefixes, from a revision, with a restart rule.
    Watch(Vec<(Prefix, String)>, Option<i64>, RestartOn),
    /// The config under a prefix.
    Config(Prefix),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;
    use nix::sys::signal::Signal;

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

    /// render's command timeout and the global etcd request timeout are two
    /// flags: setting one leaves the other at its default (once they shared
    /// a clap id, and etcd requests under render waited 60 s).
    #[test]
    fn render_command_timeout_is_not_the_etcd_request_timeout() {
        let cli = |args: &[&str]| {
            let mut v = vec![
                "discover",
                "render",
                "--watch",
                "/p",
                "--template",
                "/etc/hostname:/tmp/x",
            ];
            v.extend_from_slice(args);
            let c = Cli::try_parse_from(v).unwrap();
            let Cmd::Render(r) = &c.cmd else { panic!() };
            (c.etcd.command_timeout, r.cmd_timeout)
        };
        let (s, m) = (Duration::from_secs, Duration::from_millis);
        assert_eq!(cli(&[]), (s(5), s(60)));
        assert_eq!(cli(&["--command-timeout", "7s"]), (s(7), s(60)));
        assert_eq!(cli(&["--cmd-timeout", "500ms"]), (s(5), m(500)));
    }

    /// The flag groups as clap sees them: exec-only flags need --exec, and
    /// `config` does not offer what it would refuse.
    #[test]
    fn exec_only_flags_need_exec_and_config_has_no_watch_flags() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        for flag in [
            &["--snapshot-file", "/tmp/f"][..],
            &["--kill-signal", "QUIT"],
            &["--kill-timeout", "3s"],
            &["--reload-signal", "HUP"],
            &["--wait", "1s"],
            &["--splay", "1s"],
            &["--restart-child"],
            &["--env-name", "A=/x"],
            &["--restart-on", "set"],
        ] {
            let mut args = vec!["discover", "watch", "/x"];
            args.extend_from_slice(flag);
            let e = parse(&args).expect_err("needs --exec");
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{flag:?}"
            );
            assert!(e.to_string().contains("--exec"), "{flag:?}: {e}");
            args.push("--exec");
            assert!(parse(&args).is_ok(), "{flag:?} with --exec");
        }
        // Defaults do not count as given.
        assert!(parse(&["discover", "watch", "/x"]).is_ok());
        assert!(parse(&["discover", "config", "/c"]).is_ok());
        for flag in ["--env-name", "--restart-on"] {
            let e = parse(&["discover", "config", "/c", flag, "x", "--exec"]).expect_err(flag);
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
            assert!(
                e.to_string().contains(&format!("{flag} applies to watch")),
                "{e}"
            );
        }
        let help = Cli::command()
            .find_subcommand_mut("config")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(
            help.contains("--kill-signal")
                && !help.contains("--env-name")
                && !help.contains("--restart-on"),
            "{help}"
        );
    }

    /// The shared plan of a command line that is not `render`.
    fn shared(cmd: Cmd) -> anyhow::Result<Plan> {
        Command::new(cmd).map(|c| match c {
            Command::Plan(p) => p,
            Command::Render(a) => panic!("not a shared plan: {a:?}"),
            Command::Serve(a) => panic!("not a shared plan: {a:?}"),
        })
    }

    #[test]
    fn plans_own_their_data() {
        let plan = |args: &[&str]| {
            let cli = Cli::try_parse_from(args.iter().copied()).unwrap();
            shared(cli.cmd)
        };
        let mut cli = Cli::try_parse_from([
            "discover",
            "watch",
            "/x",
            "--restart-on",
            "set",
            "--wait",
            "1s",
            "--kill-signal",
            "QUIT",
            "--exec",
        ])
        .unwrap();
        if let Cmd::Watch(a) = &mut cli.cmd {
            a.exec.exec = Some(vec!["true".into()]);
        }
        match shared(cli.cmd).unwrap() {
            Plan::WatchExec {
                restart_on,
                exec,
                named,
                ..
            } => {
                assert_eq!(restart_on, RestartOn::SetOnly);
                assert_eq!(exec.kill_signal, Signal::SIGQUIT);
                assert_eq!(exec.wait.map(|w| w.max), Some(Duration::from_secs(4)));
                assert_eq!(named[0].1, "X");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan(&["discover", "watch", "/x", "--actions", "set"]),
            Ok(Plan::Watch { .. })
        ));
        let e = plan(&["discover", "watch", "/x", "--exec"]).unwrap_err();
        assert!(e.to_string().contains("needs a command"), "{e}");
    }
}
