//! What `discover` prints on stdout: JSON lines, values, env lines, a table.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;

use clap::ValueEnum;
use discovery::{Action, Client, LeaseId, Node, Prefix, WatchMessage, WatchOptions};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{envelope, naming};
use crate::common::metrics::Metrics;

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

/// Lines to stdout, written in bursts and flushed before every wait, so a
/// reader sees each line as soon as it exists. A closed pipe ends quietly.
struct Out {
    /// stdout, buffered: one write per burst of lines, not per line.
    w: io::BufWriter<io::Stdout>,
    /// One event's line, reused.
    line: Vec<u8>,
}

impl Out {
    /// Buffered stdout, with room for a burst of lines.
    fn new() -> Self {
        Self {
            w: io::BufWriter::with_capacity(64 * 1024, io::stdout()),
            line: Vec::with_capacity(512),
        }
    }

    /// Queue one watch event's line.
    fn event(&mut self, e: &discovery::Event) -> io::Result<()> {
        self.line.clear();
        envelope::encode_event(&mut self.line, e);
        self.w.write_all(&self.line)
    }

    /// Queue one line that is already encoded (without its newline).
    fn line(&mut self, l: &[u8]) -> io::Result<()> {
        self.w.write_all(l)?;
        self.w.write_all(b"\n")
    }

    /// Write the queued lines out: before every wait.
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Whether the reader of our stdout has gone away (a pipe whose read end is
/// closed polls as an error). Lets `discover watch … | head -1` exit
/// without waiting for the next event to fail a write.
fn stdout_closed() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let stdout = io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
        _ => false,
    }
}

/// `Ok(0)` for a closed pipe (`discover watch … | head -1`), the error otherwise.
fn done(r: io::Result<()>) -> anyhow::Result<Option<i32>> {
    match r {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            debug!("stdout closed; exiting");
            Ok(Some(0))
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// The seconds left on each distinct lease of `nodes` (`get --with-ttl`);
/// a lease that expired meanwhile is left out.
async fn lease_ttls(client: &Client, nodes: &[Node]) -> anyhow::Result<HashMap<LeaseId, u64>> {
    let mut ttls = HashMap::new();
    for lease in nodes.iter().filter_map(Node::lease) {
        if let std::collections::hash_map::Entry::Vacant(e) = ttls.entry(lease) {
            if let Some(left) = client.lease_time_left(lease).await? {
                e.insert(left.as_secs());
            }
        }
    }
    Ok(ttls)
}

/// `discover get`.
pub async fn get(
    client: &Client,
    prefixes: &[Prefix],
    format: Format,
    with_ttl: bool,
) -> anyhow::Result<i32> {
    let mut out = Out::new();
    for p in prefixes {
        let snap = client.get_prefix(p.as_str()).await?;
        let r = match format {
            Format::Json => {
                let ttls = if with_ttl {
                    lease_ttls(client, snap.nodes()).await?
                } else {
                    HashMap::new()
                };
                let line = envelope::get_line(&snap, &|n: &Node| {
                    n.lease().and_then(|l| ttls.get(&l).copied())
                });
                out.line(line.as_bytes())
            }
            Format::Values => snap.nodes().iter().try_for_each(|n| out.line(n.value())),
            Format::Env => {
                let mut l = naming::env_name(p).into_bytes();
                l.push(b'=');
                l.extend(std::os::unix::ffi::OsStringExt::into_vec(
                    naming::env_value(snap.nodes().iter().map(Node::value)),
                ));
                out.line(&l)
            }
        };
        if let Some(code) = done(r)? {
            return Ok(code);
        }
    }
    Ok(done(out.flush())?.unwrap_or(0))
}

/// `discover ls`: KEY VALUE TTL MODIFIED, aligned; and CHECK when a value
/// carries a sidekick health check's status (`passing`, `warning`).
pub async fn ls(client: &Client, prefix: &Prefix) -> anyhow::Result<i32> {
    let snap = client.get_prefix(prefix.as_str()).await?;
    let ttls = lease_ttls(client, snap.nodes()).await?;
    let checks: Vec<Option<&'static str>> = snap
        .nodes()
        .iter()
        .map(|n| n.value_str().and_then(check_status))
        .collect();
    let mut rows = vec![vec![
        "KEY".to_owned(),
        "VALUE".to_owned(),
        "TTL".to_owned(),
        "MODIFIED".to_owned(),
    ]];
    let with_checks = checks.iter().any(Option::is_some);
    if with_checks {
        rows[0].push("CHECK".to_owned());
    }
    for (n, check) in snap.nodes().iter().zip(&checks) {
        let key = String::from_utf8_lossy(n.key()).into_owned();
        let value = match n.value_str() {
            Some(v) => v.escape_debug().to_string(),
            None => format!("<{} bytes, not UTF-8>", n.value().len()),
        };
        let ttl = match n.lease() {
            None => "-".to_owned(),
            Some(l) => ttls
                .get(&l)
                .map(|t| format!("{t}s"))
                .unwrap_or_else(|| "expired".into()),
        };
        let mut row = vec![key, value, ttl, n.mod_revision().to_string()];
        if with_checks {
            row.push(check.unwrap_or("-").to_owned());
        }
        rows.push(row);
    }
    let last = rows[0].len() - 1;
    let widths: Vec<usize> = (0..=last)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = Out::new();
    for r in &rows {
        let mut l = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c == last {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        if let Some(code) = done(out.line(l.trim_end().as_bytes()))? {
            return Ok(code);
        }
    }
    if snap.nodes().is_empty() {
        eprintln!(
            "discover: nothing under {}/ at revision {}",
            prefix.as_str().trim_end_matches('/'),
            snap.revision()
        );
    }
    Ok(done(out.flush())?.unwrap_or(0))
}

/// The health check status a sidekick JSON value carries (`"status"`, in
/// an object or in any object of a list): `warning` if any warns.
fn check_status(value: &str) -> Option<&'static str> {
    let v: serde_json::Value = serde_json::from_str(value).ok()?;
    let objects = match &v {
        serde_json::Value::Array(list) => list.iter().collect(),
        _ => vec![&v],
    };
    let statuses: Vec<&str> = objects
        .iter()
        .filter_map(|o| o.get("status")?.as_str())
        .collect();
    if statuses.contains(&"warning") {
        Some("warning")
    } else if statuses.contains(&"passing") {
        Some("passing")
    } else {
        None
    }
}

/// `discover watch` without `--exec`.
pub async fn watch(
    client: &Client,
    prefixes: &[(Prefix, String)],
    actions: &[Action],
    since: Option<i64>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<i32> {
    let mut opts = WatchOptions::new().with_buffer(4096);
    if let Some(r) = since {
        opts = opts.with_start_revision(r);
    }
    let (handles, mut merged) =
        client.watch_prefixes(prefixes.iter().map(|(p, _)| p.as_str()), opts)?;
    for h in &handles {
        metrics.follow_watch(h.status());
    }
    let mut out = Out::new();
    // The get lines first, in argument order.
    let snapshots = tokio::select! {
        s = merged.snapshots() => s.map_err(|(_, e)| e)?,
        _ = shutdown.cancelled() => return Ok(0),
    };
    for snap in &snapshots {
        if let Some(code) = done(out.line(envelope::get_line(snap, &|_| None).as_bytes()))? {
            return Ok(code);
        }
    }
    if let Some(code) = done(out.flush())? {
        return Ok(code);
    }
    let mut reader_check = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        let first = tokio::select! {
            m = merged.next() => m,
            _ = shutdown.cancelled() => return Ok(done(out.flush())?.unwrap_or(0)),
            _ = reader_check.tick() => {
                if stdout_closed() {
                    debug!("stdout reader gone; exiting");
                    return Ok(0);
                }
                continue;
            }
        };
        let mut next = first;
        // Write everything that is ready, then flush once.
        loop {
            match next {
                Some((_, Ok(WatchMessage::Event(e)))) => {
                    metrics.event(e.action());
                    if e.is_resync() {
                        metrics.watch_resyncs.inc();
                    }
                    if actions.is_empty() || actions.contains(&e.action()) {
                        if let Some(code) = done(out.event(&e))? {
                            return Ok(code);
                        }
                    }
                }
                Some((_, Ok(_))) => {}
                Some((_, Err(e))) => {
                    let _ = out.flush();
                    return Err(e.into());
                }
                None => return Ok(done(out.flush())?.unwrap_or(1)),
            }
            match merged.next().now_or_never() {
                Some(m) => next = m,
                None => break,
            }
        }
        if let Some(code) = done(out.flush())? {
            return Ok(code);
        }
    }
}

/// `discover config` without `--exec`: one JSON line per valid config.
pub async fn config(
    client: &Client,
    prefix: &Prefix,
    shutdown: CancellationToken,
) -> anyhow::Result<i32> {
    let mut cfg = client.config::<serde_json::Value>(prefix.as_str()).await?;
    let mut values = cfg.values();
    let mut out = Out::new();
    loop {
        let line = serde_json::to_string(&**values.borrow_and_update()).unwrap_or_default();
        if let Some(code) = done(out.line(line.as_bytes()).and_then(|()| out.flush()))? {
            return Ok(code);
        }
        tokio::select! {
            r = values.changed() => if r.is_err() { return Ok(1) },
            Some(e) = cfg.next_error() => tracing::warn!(error = %e, "config update rejected"),
            _ = shutdown.cancelled() => return Ok(0),
        }
    }
}
