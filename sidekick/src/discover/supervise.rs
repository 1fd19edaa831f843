//! `--exec`: run a child with the discovered backends in its environment,
//! restart (or signal) it when they really change, forward signals, reap
//! every child, and exit with the child's code.
//!
//! "Really change" is judged twice: a change must be one that calls for it
//! (a set, or a delete unless `--restart-on set`; never an update), and
//! when the restart is due (after `--wait` and `--splay`), what the child
//! would be given must differ from what it has. A backend that vanishes
//! and comes back at the same address within the wait (a sidekick
//! restarted with `systemctl restart`: its SIGTERM revokes, the new one
//! registers again) costs no restart.
//!
//! The child is exec'd directly (never through a shell) in a process group
//! of its own; signals go to that group. `discover` makes itself a child
//! subreaper, so orphans of the child are reaped too: no zombies.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use discovery::Backoff;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::common::metrics::Metrics;
use crate::common::signals::{Sig, Signals};

/// How to run and restart the child.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The child's argv; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<OsString>,
    /// Wait up to this long after SIGTERM before SIGKILL.
    pub kill_timeout: Duration,
    /// Signal the child instead of restarting it.
    pub reload_signal: Option<Signal>,
    /// Quiescence: restart once nothing changed for `.0`, but never later than `.1` after the first change.
    pub wait: Option<(Duration, Duration)>,
    /// A random delay up to this before each restart.
    pub splay: Option<Duration>,
    /// Restart a child that exits by itself (with backoff) instead of exiting with its code.
    pub restart_child: bool,
    /// Write the snapshot here (atomically) before each start or reload.
    pub snapshot_file: Option<PathBuf>,
}

/// What the child should be given.
#[derive(Debug, Clone)]
pub struct ChildInput {
    /// Variables to set, on top of discover's own environment.
    pub env: Vec<(String, OsString)>,
    /// The snapshot, for `--snapshot-file`.
    pub snapshot: serde_json::Value,
}

impl ChildInput {
    /// Whether `self` and `other` give the child the same backends (or
    /// config): the same variables, whatever revision they were read at.
    fn same_backends(&self, other: &ChildInput) -> bool {
        let content = |i: &ChildInput| {
            i.env
                .iter()
                .filter(|(k, _)| k != "DISCOVER_REVISION")
                .cloned()
                .collect::<Vec<_>>()
        };
        content(self) == content(other)
    }
}

/// A child that ran at least this long before exiting by itself resets the
/// `--restart-child` backoff; one that dies sooner waits longer each time.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// What the watch side sends.
#[derive(Debug)]
pub enum Feed {
    /// The state changed; `trigger` says why a restart is due (None: no restart).
    Update {
        /// The new input.
        input: ChildInput,
        /// The reason to restart or signal, if this change calls for it.
        trigger: Option<String>,
    },
    /// The watch failed for good.
    Failed(anyhow::Error),
}

enum Then {
    Restart,
    Exit(Option<anyhow::Error>),
}

struct Stopping {
    deadline: Instant,
    then: Then,
    killed: bool,
}

struct Pending {
    first: Instant,
    last: Instant,
    splay: Duration,
    reasons: Vec<String>,
}

/// Run the child until it exits by itself (its code is returned), or until
/// discover is asked to stop (the child is stopped and its code returned).
pub async fn supervise(
    opts: ExecOptions,
    initial: ChildInput,
    mut feed: mpsc::Receiver<Feed>,
    mut signals: Signals,
    metrics: Arc<Metrics>,
) -> anyhow::Result<i32> {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        debug!(error = %e, "could not become a child subreaper; only direct children are reaped");
    }
    let mut sigchld = signal(SignalKind::child()).context("cannot watch SIGCHLD")?;
    let mut current = initial;
    let mut child: Option<Pid> = Some(spawn(&opts, &current)?);
    // What the running child was given, and when it started.
    let mut given = current.clone();
    let mut started = Instant::now();
    let mut pending: Option<Pending> = None;
    let mut stopping: Option<Stopping> = None;
    let mut respawn_at: Option<Instant> = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut feed_open = true;
    loop {
        let pending_at = pending.as_ref().map(|p| fire_time(&opts, p));
        let stop_at = stopping.as_ref().filter(|s| !s.killed).map(|s| s.deadline);
        tokio::select! {
            biased;
            _ = sigchld.recv() => {
                for (pid, code) in reap_all() {
                    if Some(pid) != child {
                        debug!(pid = pid.as_raw(), code, "reaped an orphaned descendant");
                        continue;
                    }
                    // The group may still hold stragglers of the old child.
                    let _ = killpg(pid, Signal::SIGKILL);
                    child = None;
                    match stopping.take() {
                        Some(Stopping { then: Then::Restart, .. }) => {
                            info!(code, "child stopped; starting it again with the new backends");
                            child = Some(spawn(&opts, &current)?);
                            given = current.clone();
                            started = Instant::now();
                        }
                        Some(Stopping { then: Then::Exit(err), .. }) => {
                            info!(code, "child stopped; exiting with its code");
                            return match err {
                                Some(e) => Err(e),
                                None => Ok(code),
                            };
                        }
                        None if opts.restart_child => {
                            if started.elapsed() >= HEALTHY_RUN {
                                backoff.reset();
                            }
                            let d = backoff.next_delay();
                            warn!(code, restart_in = ?d, "child exited; restarting it (--restart-child)");
                            respawn_at = Some(Instant::now() + d);
                        }
                        None => {
                            info!(code, "child exited; exiting with its code");
                            return Ok(code);
                        }
                    }
                }
            }
            msg = feed.recv(), if feed_open => match msg {
                Some(Feed::Update { input, trigger }) => {
                    current = input;
                    if let Some(reason) = trigger {
                        let now = Instant::now();
                        let p = pending.get_or_insert_with(|| Pending {
                            first: now,
                            last: now,
                            splay: opts.splay.map(random_below).unwrap_or_default(),
                            reasons: Vec::new(),
                        });
                        p.last = now;
                        if p.reasons.len() < 5 {
                            p.reasons.push(reason);
                        }
                    }
                }
                Some(Feed::Failed(e)) => {
                    if child.is_none() {
                        return Err(e);
                    }
                    warn!(error = %format!("{e:#}"), "watch failed; stopping the child");
                    feed_open = false;
                    begin_stop(child, &mut stopping, opts.kill_timeout, Then::Exit(Some(e)));
                }
                None => feed_open = false,
            },
            _ = sleep_opt(pending_at) => {
                let Some(p) = pending.take() else { continue };
                if stopping.is_some() {
                    continue;
                }
                let why = p.reasons.join("; ");
                if current.same_backends(&given) {
                    info!(reason = %why, "the backends are what the child already has; nothing to do");
                    continue;
                }
                match (opts.reload_signal, child) {
                    (Some(sig), Some(pid)) => {
                        if let Err(e) = write_snapshot(&opts, &current) {
                            warn!(error = %format!("{e:#}"), "cannot update the snapshot; stopping the child");
                            begin_stop(child, &mut stopping, opts.kill_timeout, Then::Exit(Some(e)));
                            continue;
                        }
                        info!(signal = %sig, reason = %why, "backends changed; signalling the child");
                        metrics.child_restart("signal");
                        let _ = killpg(pid, sig);
                        given = current.clone();
                    }
                    (None, Some(_)) => {
                        info!(reason = %why, "backends changed; restarting the child");
                        metrics.child_restart("restart");
                        begin_stop(child, &mut stopping, opts.kill_timeout, Then::Restart);
                    }
                    // Waiting to respawn after an exit (its backoff runs):
                    // the respawn takes the newest backends.
                    (_, None) => {}
                }
            }
            _ = sleep_opt(stop_at) => {
                if let (Some(s), Some(pid)) = (stopping.as_mut(), child) {
                    warn!(timeout = ?opts.kill_timeout, "child ignored SIGTERM; sending SIGKILL");
                    let _ = killpg(pid, Signal::SIGKILL);
                    s.killed = true;
                }
            }
            _ = sleep_opt(respawn_at) => {
                respawn_at = None;
                if child.is_none() && stopping.is_none() {
                    metrics.child_restart("respawn");
                    child = Some(spawn(&opts, &current)?);
                    given = current.clone();
                    started = Instant::now();
                }
            }
            sig = signals.recv() => match sig {
                Sig::Hup => {
                    if let Some(pid) = child {
                        if opts.reload_signal == Some(Signal::SIGHUP) {
                            if let Err(e) = write_snapshot(&opts, &current) {
                                warn!(error = %format!("{e:#}"), "cannot update the snapshot; stopping the child");
                                begin_stop(child, &mut stopping, opts.kill_timeout, Then::Exit(Some(e)));
                                continue;
                            }
                            given = current.clone();
                        }
                        info!("SIGHUP: forwarding to the child");
                        let _ = killpg(pid, Signal::SIGHUP);
                    }
                }
                Sig::Term | Sig::Int => {
                    let nix_sig = if sig == Sig::Term { Signal::SIGTERM } else { Signal::SIGINT };
                    match (child, stopping.as_mut()) {
                        // Between a child's exit and its respawn: nothing to stop.
                        (None, _) => {
                            info!(signal = sig.name(), "stopping (no child running)");
                            return Ok(0);
                        }
                        (Some(pid), Some(s)) if matches!(s.then, Then::Exit(_)) => {
                            warn!(signal = sig.name(), "second signal: killing the child now");
                            let _ = killpg(pid, Signal::SIGKILL);
                            s.killed = true;
                        }
                        (Some(pid), _) => {
                            info!(signal = sig.name(), "forwarding to the child, then exiting with its code");
                            let _ = killpg(pid, nix_sig);
                            stopping = Some(Stopping {
                                deadline: Instant::now() + opts.kill_timeout,
                                then: Then::Exit(None),
                                killed: false,
                            });
                        }
                    }
                }
            },
        }
    }
}

fn fire_time(opts: &ExecOptions, p: &Pending) -> Instant {
    let at = match opts.wait {
        Some((min, max)) => (p.last + min).min(p.first + max),
        None => p.first,
    };
    at + p.splay
}

fn random_below(d: Duration) -> Duration {
    d.mul_f64(fastrand::f64())
}

fn begin_stop(child: Option<Pid>, stopping: &mut Option<Stopping>, timeout: Duration, then: Then) {
    if let Some(pid) = child {
        let _ = killpg(pid, Signal::SIGTERM);
    }
    *stopping = Some(Stopping {
        deadline: Instant::now() + timeout,
        then,
        killed: false,
    });
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Reap every child that has exited: `(pid, exit code)`, with 128+N for
/// a child killed by signal N.
fn reap_all() -> Vec<(Pid, i32)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid, 128 + sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}

fn spawn(opts: &ExecOptions, input: &ChildInput) -> anyhow::Result<Pid> {
    write_snapshot(opts, input)?;
    let (prog, args) = opts.argv.split_first().context("--exec needs a command")?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args);
    // Our own environment, minus etcd credentials, plus the backends.
    for secret in crate::common::etcd_args::SECRET_ENV {
        cmd.env_remove(secret);
    }
    if std::env::var("ETCDCTL_USER").is_ok_and(|u| u.contains(':')) {
        cmd.env_remove("ETCDCTL_USER");
    }
    for (k, v) in &input.env {
        cmd.env(k, v);
    }
    if let Some(path) = &opts.snapshot_file {
        cmd.env("DISCOVER_SNAPSHOT_FILE", path);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {:?}", prog))?;
    let pid = Pid::from_raw(child.id() as i32);
    // The reaper waits for it; dropping the handle neither waits nor kills.
    drop(child);
    let names: Vec<&str> = input.env.iter().map(|(k, _)| k.as_str()).collect();
    info!(pid = pid.as_raw(), command = ?opts.argv, env = ?names, "child started");
    Ok(pid)
}

/// Write the snapshot atomically (a temporary file in the same directory, then rename).
fn write_snapshot(opts: &ExecOptions, input: &ChildInput) -> anyhow::Result<()> {
    let Some(path) = &opts.snapshot_file else {
        return Ok(());
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut text = serde_json::to_string_pretty(&input.snapshot).unwrap_or_default();
    text.push('\n');
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    debug!(path = %path.display(), "snapshot written");
    Ok(())
}
