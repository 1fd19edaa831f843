//! `discover render`: confd's and consul-template's job. Watch prefixes
//! (and a config prefix), render minijinja templates to files atomically,
//! check each new file before it replaces the old one, and reload the
//! reader once per burst of changes.
//!
//! * [`template`]: the Jinja environment; syntax errors stop the start (exit 2).
//! * [`context`]: what a template sees, folded from the watches.
//! * [`write`]: temporary file, fsync, `--check-cmd`, rename.
//! * [`reload`]: `--reload-cmd`, `--reload-signal`, `--reload-unit`.

mod context;
mod reload;
mod template;
mod write;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use discovery::{
    Applied, Client, ConfigOptions, ConfigWatch, Prefix, PrefixState, WatchMessage, WatchOptions,
};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::reload::Reload;
use self::template::Templates;
use self::write::{Check, Outcome, Owner, Target};
use crate::common::etcd_args::parse_positive_duration;
use crate::common::exit::usage;
use crate::common::metrics::{self, Labels, Metrics};

/// `discover render`.
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  discover render --watch /services/web \\\n    --template /etc/nginx/web-lb.conf.j2:/etc/nginx/web-lb.conf \\\n    --check-cmd 'nginx -t -q -c {{src}}' --reload-cmd 'nginx -s reload -c /etc/nginx/web-lb.conf' --wait 100ms:2s"
)]
pub struct RenderArgs {
    /// Render the template SRC to DEST (MODE in octal, such as 0644; default: DEST's mode, or 0644); repeat for more
    #[arg(long = "template", required = true, value_name = "SRC:DEST[:MODE]")]
    pub templates: Vec<String>,
    /// Watch PREFIX; templates see its keys as NAME (default: its last segment) and as prefixes["PREFIX"]
    #[arg(long = "watch", value_name = "[NAME=]PREFIX")]
    pub watch: Vec<String>,
    /// Follow the typed config under PREFIX; templates see it as `config`
    #[arg(long, value_name = "PREFIX")]
    pub config: Option<String>,
    /// Check each new rendering before it replaces DEST; {{src}} is the new file's path (such as "nginx -t -c {{src}}"); split into argv, no shell
    #[arg(long, value_name = "CMD")]
    pub check_cmd: Option<String>,
    /// After a DEST changed, run CMD (split into argv, no shell: write sh -c '...' for one)
    #[arg(long, value_name = "CMD", conflicts_with_all = ["reload_signal", "reload_unit"])]
    pub reload_cmd: Option<String>,
    /// After a DEST changed, send SIG (such as SIGHUP) to the process in --pid-file
    #[arg(
        long,
        value_name = "SIG",
        requires = "pid_file",
        conflicts_with = "reload_unit"
    )]
    pub reload_signal: Option<String>,
    /// The pid file for --reload-signal
    #[arg(long, value_name = "FILE", requires = "reload_signal")]
    pub pid_file: Option<PathBuf>,
    /// After a DEST changed, run `systemctl reload NAME`
    #[arg(long, value_name = "NAME")]
    pub reload_unit: Option<String>,
    /// Give each DEST to USER (and GROUP); default: DEST's current owner
    #[arg(long, value_name = "USER[:GROUP]")]
    pub owner: Option<String>,
    /// Coalesce a burst: render once MIN passed with no further change, never later than MAX after the first [default MAX: 4*MIN; 0: at once]
    #[arg(long, value_name = "MIN[:MAX]")]
    pub wait: Option<String>,
    /// How long --check-cmd and the reload may run before they are killed (and count as failed)
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub command_timeout: Duration,
    /// Render once and exit: 0 when every template rendered (and checked, and the reload worked), 1 otherwise
    #[arg(long)]
    pub once: bool,
    /// Print the renderings to stdout instead of writing, checking or reloading
    #[arg(long)]
    pub dry_run: bool,
}

/// Everything the command line says, checked before any I/O.
#[derive(Debug)]
struct Plan {
    targets: Vec<Target>,
    templates: Templates,
    watched: Vec<(Prefix, String)>,
    config: Option<Prefix>,
    check: Option<Check>,
    reload: Reload,
    owner: Owner,
    wait: (Duration, Duration),
    timeout: Duration,
    once: bool,
    dry_run: bool,
}

fn split_cmd(flag: &str, s: &str) -> anyhow::Result<Vec<String>> {
    let argv = shlex::split(s).ok_or_else(|| usage(format!("{flag} {s:?}: unbalanced quotes")))?;
    let Some(prog) = argv.first() else {
        return Err(usage(format!("{flag} is empty; give a command")));
    };
    if super::which(&prog.into()).is_none() {
        return Err(usage(format!(
            "{flag}: {prog:?} is not an executable file or a command in PATH"
        )));
    }
    Ok(argv)
}

/// `--wait MIN[:MAX]`, where 0 means at once.
fn parse_wait(s: &str) -> anyhow::Result<(Duration, Duration)> {
    let bad = |e: String| usage(format!("--wait {s}: {e}"));
    let (min, max) = match s.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let min = discovery::parse_duration(min).map_err(bad)?;
    let max = match max {
        Some(m) => discovery::parse_duration(m).map_err(bad)?,
        None => min * 4,
    };
    if max < min {
        return Err(usage(format!(
            "--wait {s}: MAX ({max:?}) is shorter than MIN ({min:?})"
        )));
    }
    Ok((min, max))
}

fn parse_owner(s: &str) -> anyhow::Result<Owner> {
    use nix::unistd::{Gid, Group, Uid, User};
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => Uid::from_raw(n),
        Err(_) => {
            User::from_name(u)
                .ok()
                .flatten()
                .ok_or_else(|| usage(format!("--owner {s}: there is no user {u:?}")))?
                .uid
        }
    };
    let gid = match g {
        None | Some("") => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => Gid::from_raw(n),
            Err(_) => {
                Group::from_name(g)
                    .ok()
                    .flatten()
                    .ok_or_else(|| usage(format!("--owner {s}: there is no group {g:?}")))?
                    .gid
            }
        }),
    };
    Ok(Owner {
        uid: Some(uid),
        gid,
    })
}

fn parse_target(s: &str) -> anyhow::Result<Target> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dest, mode) = match parts.as_slice() {
        [src, dest] => (*src, *dest, None),
        [src, dest, mode] => {
            let m = u32::from_str_radix(mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    usage(format!(
                        "--template {s}: {mode:?} is not an octal mode such as 0644"
                    ))
                })?;
            (*src, *dest, Some(m))
        }
        _ => {
            return Err(usage(format!(
                "--template {s:?}: write SRC:DEST or SRC:DEST:MODE, such as web.conf.j2:/etc/nginx/web.conf:0644"
            )));
        }
    };
    if src.is_empty() || dest.is_empty() {
        return Err(usage(format!(
            "--template {s:?}: SRC and DEST must not be empty"
        )));
    }
    let dest = PathBuf::from(dest);
    let dir = write::dir_of(&dest);
    if !dir.is_dir() {
        return Err(usage(format!(
            "--template {s}: the directory {} does not exist",
            dir.display()
        )));
    }
    Ok(Target {
        src: src.into(),
        dest,
        mode,
    })
}

impl Plan {
    fn new(a: &RenderArgs) -> anyhow::Result<Self> {
        let targets = a
            .templates
            .iter()
            .map(|t| parse_target(t))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (i, t) in targets.iter().enumerate() {
            if targets[..i].iter().any(|o| o.dest == t.dest) {
                return Err(usage(format!(
                    "two --template flags write {}",
                    t.dest.display()
                )));
            }
        }
        let mut templates = Templates::new()?;
        for t in &targets {
            if !templates.has(&t.src) {
                templates.add(&t.src).map_err(usage)?;
            }
        }
        let mut watched: Vec<(Prefix, String)> = Vec::new();
        for w in &a.watch {
            let (name, p) = match w.split_once('=') {
                Some((n, p)) => (Some(n), p),
                None => (None, w.as_str()),
            };
            let p = Prefix::new(p)?;
            let name = name.map_or_else(|| context::default_name(&p), str::to_owned);
            context::check_name(&name).map_err(|e| {
                usage(format!(
                    "--watch {w}: {e}; name it yourself with --watch NAME={p}"
                ))
            })?;
            if let Some((q, _)) = watched.iter().find(|(_, n)| *n == name) {
                return Err(usage(format!(
                    "--watch: {q} and {p} would both be `{name}` in templates; name one with --watch NAME=PREFIX"
                )));
            }
            watched.push((p, name));
        }
        let config = a.config.as_deref().map(Prefix::new).transpose()?;
        if watched.is_empty() && config.is_none() {
            return Err(usage(
                "nothing to watch: give --watch PREFIX (and/or --config PREFIX)",
            ));
        }
        let check = a
            .check_cmd
            .as_deref()
            .map(|c| split_cmd("--check-cmd", c))
            .transpose()?
            .map(|argv| Check {
                argv,
                timeout: a.command_timeout,
            });
        let reload = match (&a.reload_cmd, &a.reload_signal, &a.pid_file, &a.reload_unit) {
            (Some(c), ..) => Reload::Command(split_cmd("--reload-cmd", c)?),
            (None, Some(sig), Some(pid_file), _) => Reload::Signal {
                signal: super::parse_signal(sig)?,
                pid_file: pid_file.clone(),
            },
            (None, None, None, Some(unit)) => Reload::Unit(unit.clone()),
            // clap makes --reload-signal and --pid-file go together.
            _ => Reload::Nothing,
        };
        let owner = a
            .owner
            .as_deref()
            .map(parse_owner)
            .transpose()?
            .unwrap_or_default();
        let wait = a
            .wait
            .as_deref()
            .map(parse_wait)
            .transpose()?
            .unwrap_or_default();
        Ok(Plan {
            targets,
            templates,
            watched,
            config,
            check,
            reload,
            owner,
            wait,
            timeout: a.command_timeout,
            once: a.once,
            dry_run: a.dry_run,
        })
    }
}

/// The counters render keeps, in the shared registry.
struct Counters {
    renders: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
}

impl Counters {
    fn render(&self, outcome: &str) {
        self.renders
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }
    fn reload(&self, outcome: &str) {
        self.reloads
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }
}

/// Run `discover render`; returns the exit code.
pub async fn run(
    a: &RenderArgs,
    connect: discovery::ConnectOptions,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<i32> {
    let mut plan = Plan::new(a)?;
    let mut m = Metrics::with_prefix("discover");
    let counters = Counters {
        renders: m.register_family(
            "render_templates",
            "Template renderings by outcome (written, unchanged, render_failed, check_failed, write_failed)",
        ),
        reloads: m.register_family("render_reloads", "Reloads by outcome (ok, failed)"),
    };
    let metrics = Arc::new(m);
    if let Some(addr) = metrics_addr {
        metrics::serve(addr, metrics.clone(), shutdown.clone())
            .await
            .map_err(|e| usage(format!("--metrics-addr {addr}: {e}")))?;
    }
    let client = if plan.once {
        connect.connect().await.context("cannot use etcd")?
    } else {
        tokio::select! {
            c = connect.connect_retrying() => c.context("cannot use etcd")?,
            _ = shutdown.cancelled() => return Ok(0),
        }
    };
    if plan.once {
        return once(&mut plan, &client, &counters).await;
    }
    follow(plan, &client, &counters, &metrics, shutdown).await
}

async fn read_config(client: &Client, p: &Prefix) -> anyhow::Result<ConfigWatch<Value>> {
    client
        .config_with::<Value, _>(p.as_str(), ConfigOptions::new(), |_| Ok(()))
        .await
        .with_context(|| format!("cannot read the config under {p}"))
}

async fn once(plan: &mut Plan, client: &Client, counters: &Counters) -> anyhow::Result<i32> {
    let mut state = Vec::new();
    for (p, name) in &plan.watched {
        let snap = client
            .get_prefix(p.as_str())
            .await
            .with_context(|| format!("cannot list {p}"))?;
        let mut st = PrefixState::new();
        st.apply(&WatchMessage::Snapshot(snap));
        state.push((p.clone(), name.clone(), st));
    }
    let cfg = match &plan.config {
        Some(p) => Some(read_config(client, p).await?.current()),
        None => None,
    };
    let ctx = context::build(&state, cfg.as_deref());
    let mut shown = vec![None; plan.targets.len()];
    let failures = round(plan, &ctx, counters, &mut shown).await?;
    if failures.is_empty() {
        Ok(0)
    } else {
        Err(anyhow::anyhow!("{}", failures.join("; ")))
    }
}

/// Watch, and render after each burst of changes, until stopped.
async fn follow(
    mut plan: Plan,
    client: &Client,
    counters: &Counters,
    metrics: &Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<i32> {
    let mut state = Vec::new();
    let mut streams = Vec::new();
    let mut handles = Vec::new();
    for (i, (p, name)) in plan.watched.iter().enumerate() {
        let (h, mut s) = client.watch_prefix(p.as_str(), WatchOptions::new())?;
        let first = tokio::select! {
            m = s.recv() => m,
            _ = shutdown.cancelled() => return Ok(0),
        };
        let mut st = PrefixState::new();
        match first {
            Some(Ok(m @ WatchMessage::Snapshot(_))) => st.apply(&m),
            Some(Err(e)) => return Err(anyhow::Error::new(e).context(format!("cannot watch {p}"))),
            _ => anyhow::bail!("the watch of {p} ended before its first listing"),
        };
        state.push((p.clone(), name.clone(), st));
        metrics.follow_watch(h.status());
        handles.push(h);
        streams.push(s.map(move |m| (i, m)));
    }
    let mut merged = futures::stream::select_all(streams);
    let mut cfg = match &plan.config {
        Some(p) => {
            let c = read_config(client, p).await?;
            metrics.follow_watch(c.status());
            Some(c)
        }
        None => None,
    };
    let mut cfg_values = cfg.as_ref().map(ConfigWatch::values);
    let mut shown = vec![None; plan.targets.len()];
    let mut pending: Option<(Instant, Instant)> = None;
    let cfg_now = cfg_values.as_mut().map(|v| v.borrow_and_update().clone());
    round(
        &mut plan,
        &context::build(&state, cfg_now.as_deref()),
        counters,
        &mut shown,
    )
    .await?;
    info!(
        templates = plan.targets.len(),
        prefixes = plan.watched.len(),
        "rendering; following etcd"
    );
    loop {
        let fire_at = pending.map(|(first, last)| (last + plan.wait.0).min(first + plan.wait.1));
        let mut changed = false;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(0),
            msg = merged.next(), if !handles.is_empty() => match msg {
                Some((i, Ok(m))) => {
                    if let WatchMessage::Event(e) = &m {
                        metrics.event(e.action());
                        if e.is_resync() {
                            metrics.watch_resyncs.inc();
                        }
                    }
                    // An update (same value written again) renders too: a
                    // template may print modifiedIndex; an unchanged
                    // rendering writes nothing.
                    changed = matches!(
                        state[i].2.apply(&m),
                        Applied::Snapshot | Applied::Changed(_) | Applied::Unchanged
                    );
                }
                Some((i, Err(e))) => {
                    return Err(anyhow::Error::new(e).context(format!("the watch of {} failed", state[i].0)));
                }
                None => anyhow::bail!("the watches ended"),
            },
            r = config_changed(&mut cfg_values) => {
                r.context("the config watch stopped")?;
                changed = true;
            }
            Some(e) = config_error(&mut cfg) => {
                warn!(error = %e, "config update rejected; templates keep the last good config");
            }
            _ = sleep_until(fire_at) => {
                pending = None;
                let cfg_now = cfg_values.as_mut().map(|v| v.borrow_and_update().clone());
                let ctx = context::build(&state, cfg_now.as_deref());
                let failures = round(&mut plan, &ctx, counters, &mut shown).await?;
                if !failures.is_empty() {
                    debug!(failures = failures.len(), "kept the old files; waiting for the next change");
                }
            }
        }
        if changed {
            let now = Instant::now();
            let p = pending.get_or_insert((now, now));
            p.1 = now;
        }
    }
}

async fn config_changed(
    v: &mut Option<tokio::sync::watch::Receiver<Arc<Value>>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match v {
        Some(v) => v.changed().await,
        None => std::future::pending().await,
    }
}

async fn config_error(c: &mut Option<ConfigWatch<Value>>) -> Option<discovery::Error> {
    match c {
        Some(c) => c.next_error().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Render every template with `ctx`, install the changed ones, and reload
/// once if any changed. Returns what failed (already logged); an error
/// only when stdout is gone in --dry-run.
async fn round(
    plan: &mut Plan,
    ctx: &Value,
    counters: &Counters,
    shown: &mut [Option<String>],
) -> anyhow::Result<Vec<String>> {
    let mut failures = Vec::new();
    let mut written = Vec::new();
    let many = plan.targets.len() > 1;
    for (i, t) in plan.targets.iter().enumerate() {
        let text = match plan.templates.render(&t.src, ctx) {
            Ok(text) => text,
            Err(e) => {
                warn!(template = %t.src.display(), dest = %t.dest.display(), error = %e, "cannot render; the old file stays");
                counters.render("render_failed");
                failures.push(e);
                continue;
            }
        };
        if plan.dry_run {
            if shown[i].as_deref() != Some(text.as_str()) {
                let mut out = std::io::stdout().lock();
                let head = if many {
                    format!("==> {} <==\n", t.dest.display())
                } else {
                    String::new()
                };
                let r = out
                    .write_all(head.as_bytes())
                    .and_then(|()| out.write_all(text.as_bytes()))
                    .and_then(|()| out.flush());
                if let Err(e) = r {
                    return Err(anyhow::Error::new(e).context("cannot write to stdout"));
                }
                shown[i] = Some(text);
            }
            continue;
        }
        match write::install(t, plan.owner, &text, plan.check.as_ref()).await {
            Ok(o) => {
                counters.render(o.label());
                match o {
                    Outcome::Unchanged => {
                        debug!(dest = %t.dest.display(), "rendering unchanged; nothing written")
                    }
                    Outcome::Written => {
                        info!(dest = %t.dest.display(), "written");
                        written.push(t.dest.display().to_string());
                    }
                    Outcome::CheckFailed(out) => {
                        warn!(dest = %t.dest.display(), output = %out, "--check-cmd refused the new rendering; the old file stays");
                        failures.push(format!(
                            "{}: --check-cmd refused it: {out}",
                            t.dest.display()
                        ));
                    }
                }
            }
            Err(e) => {
                warn!(dest = %t.dest.display(), error = %format!("{e:#}"), "cannot write; the old file stays");
                counters.render("write_failed");
                failures.push(format!("{e:#}"));
            }
        }
    }
    if !written.is_empty() && !plan.reload.is_nothing() {
        match plan.reload.run(plan.timeout).await {
            Ok(()) => {
                info!(changed = ?written, "reloaded");
                counters.reload("ok");
            }
            Err(e) => {
                warn!(changed = ?written, error = %format!("{e:#}"), "reload failed");
                counters.reload("failed");
                failures.push(format!("reload failed: {e:#}"));
            }
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_targets_and_owners() {
        assert_eq!(parse_wait("0").unwrap(), (Duration::ZERO, Duration::ZERO));
        assert_eq!(
            parse_wait("1s").unwrap(),
            (Duration::from_secs(1), Duration::from_secs(4))
        );
        assert!(parse_wait("2s:1s").is_err());
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("x.conf");
        let t = parse_target(&format!("a.j2:{}:0640", dest.display())).unwrap();
        assert_eq!(t.mode, Some(0o640));
        assert!(parse_target(&format!("a.j2:{}:rw", dest.display())).is_err());
        assert!(parse_target("a.j2:/no/such/dir/x.conf").is_err());
        assert!(parse_target("a.j2").is_err());
        assert_eq!(
            parse_owner("0:0").unwrap().uid,
            Some(nix::unistd::Uid::from_raw(0))
        );
        assert!(parse_owner("no-such-user-here").is_err());
    }
}
