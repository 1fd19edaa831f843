//! `discover render`: confd's and consul-template's job. Watch prefixes
//! (and a config prefix), render minijinja templates to files atomically,
//! check each new file before it replaces the old one, and reload the
//! reader once per burst of changes.
//!
//! * `args`: the command line, checked before any I/O.
//! * `template`: the Jinja environment; syntax errors stop the start (exit 2).
//! * `context`: what a template sees, folded from the watches.
//! * `write`: temporary file, fsync, `--check-cmd`, rename.
//! * `reload`: `--reload-cmd`, `--reload-signal`, `--reload-unit`.

mod args;
mod context;
mod reload;
mod template;
mod write;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
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

use self::args::Plan;
pub use self::args::RenderArgs;
use self::write::Outcome;
use crate::common::exit::usage;
use crate::common::metrics::{self, Labels, Metrics};

/// The counters render keeps, in the shared registry.
struct Counters {
    /// `discover_render_templates{outcome}`: each template's renderings.
    renders: Family<Labels, Counter>,
    /// `discover_render_reloads{outcome}`: the reloads after a change.
    reloads: Family<Labels, Counter>,
}

impl Counters {
    /// Count one template's rendering by its outcome.
    fn render(&self, outcome: &str) {
        self.renders
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }
    /// Count one reload by its outcome.
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

/// `--config`'s prefix read once, as JSON values, and then followed.
async fn read_config(client: &Client, p: &Prefix) -> anyhow::Result<ConfigWatch<Value>> {
    client
        .config_with::<Value, _>(p.as_str(), ConfigOptions::new(), |_| Ok(()))
        .await
        .with_context(|| format!("cannot read the config under {p}"))
}

/// `--once`: render from one read of every prefix (and the config), install
/// and reload if anything changed, and exit (1 if any template failed).
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
    let Some(failures) = round(plan, &ctx, counters, &mut shown).await? else {
        return Ok(0);
    };
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
    let (handles, mut merged) = client.watch_prefixes(
        plan.watched.iter().map(|(p, _)| p.as_str()),
        WatchOptions::new(),
    )?;
    for h in &handles {
        metrics.follow_watch(h.status());
    }
    let snapshots = tokio::select! {
        s = merged.snapshots() => s.map_err(|(i, e)| {
            anyhow::Error::new(e).context(format!("cannot watch {}", plan.watched[i].0))
        })?,
        _ = shutdown.cancelled() => return Ok(0),
    };
    let mut state = Vec::new();
    for ((p, name), snap) in plan.watched.iter().zip(snapshots) {
        let mut st = PrefixState::new();
        st.apply(&WatchMessage::Snapshot(snap));
        state.push((p.clone(), name.clone(), st));
    }
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
    let ctx = context::build(&state, cfg_now.as_deref());
    if round(&mut plan, &ctx, counters, &mut shown)
        .await?
        .is_none()
    {
        return Ok(0);
    }
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
            _ = discovery::sleep_until_opt(fire_at) => {
                pending = None;
                let cfg_now = cfg_values.as_mut().map(|v| v.borrow_and_update().clone());
                let ctx = context::build(&state, cfg_now.as_deref());
                let Some(failures) = round(&mut plan, &ctx, counters, &mut shown).await? else {
                    return Ok(0);
                };
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

/// The next change of the config, or never when there is no `--config`
/// (so the `select!` arm stays quiet).
async fn config_changed(
    v: &mut Option<tokio::sync::watch::Receiver<Arc<Value>>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match v {
        Some(v) => v.changed().await,
        None => std::future::pending().await,
    }
}

/// The config's next rejected update, or never when there is no
/// `--config`.
async fn config_error(c: &mut Option<ConfigWatch<Value>>) -> Option<discovery::Error> {
    match c {
        Some(c) => c.next_error().await,
        None => std::future::pending().await,
    }
}

/// Render every template with `ctx`, install the changed ones, and reload
/// once if any changed. Returns what failed (already logged), or `None`
/// when --dry-run's stdout was closed (`| head`: exit 0).
async fn round(
    plan: &mut Plan,
    ctx: &Value,
    counters: &Counters,
    shown: &mut [Option<String>],
) -> anyhow::Result<Option<Vec<String>>> {
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
                match r {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        debug!("stdout closed; exiting");
                        return Ok(None);
                    }
                    Err(e) => return Err(anyhow::Error::new(e).context("cannot write to stdout")),
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
    Ok(Some(failures))
}
