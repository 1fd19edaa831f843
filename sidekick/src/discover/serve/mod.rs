//! `discover serve`: one watch per host, answered as DNS (A, AAAA, SRV) and
//! as Prometheus HTTP service discovery, from memory: no query ever
//! reaches etcd.
//!
//! * this file: the command line, checked before any I/O, and [`run`];
//! * `follow.rs`: the watch task, which folds the prefixes and publishes
//!   a new zone after each burst of changes;
//! * `catalog.rs` (services layout), `skydns.rs` (SkyDNS layout),
//!   `names.rs` (names to DNS labels) and `value.rs` (values to
//!   addresses): what the zone is built from;
//! * `zone.rs`: the published answers; `dns.rs`: the DNS server;
//!   `http.rs`: `/prometheus`; `health.rs`: readiness and staleness;
//!   `metrics.rs`: serve's series.

mod catalog;
mod dns;
mod follow;
mod health;
mod http;
mod metrics;
mod names;
mod skydns;
mod value;
mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::Args;
use discovery::{ConnectOptions, Prefix};
use hickory_server::proto::rr::{LowerName, Name};
use sd_notify::NotifyState;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::common::exit::usage;
use crate::common::metrics::{self as shared_metrics, Metrics};

/// The default zone: `.internal` is reserved for private use (ICANN, 2024).
pub const DEFAULT_DOMAIN: &str = "discovery.internal.";

/// `discover serve`.
#[derive(Args, Debug)]
#[command(
    after_help = "Names: SERVICE.DOMAIN (A, AAAA, SRV), INSTANCE.SERVICE.DOMAIN (A, AAAA), _SERVICE._tcp.DOMAIN (SRV), for keys PREFIX/SERVICE/INSTANCE.\nExample: discover serve /services --dns 127.0.0.1:5353 --http 127.0.0.1:9153"
)]
pub struct ServeArgs {
    /// Prefixes whose keys are PREFIX/SERVICE/INSTANCE [default: /services]
    #[arg(value_name = "PREFIX")]
    pub prefixes: Vec<String>,
    /// Answer DNS over UDP and TCP on this address (port 0: a free port, logged as dns=…)
    #[arg(long, value_name = "ADDR:PORT", env = "DISCOVER_SERVE_DNS")]
    pub dns: Option<SocketAddr>,
    /// The zone to answer for, authoritatively; names outside it are REFUSED
    #[arg(long, value_name = "DOMAIN", default_value = DEFAULT_DOMAIN, env = "DISCOVER_SERVE_DOMAIN")]
    pub domain: String,
    /// The TTL of every answer, at most: how long a resolver may keep a removed instance
    #[arg(long, value_name = "D", default_value = "5s", value_parser = discovery::parse_duration, env = "DISCOVER_SERVE_DNS_TTL")]
    pub dns_ttl: Duration,
    /// Serve Prometheus HTTP SD at /prometheus[/SERVICE], and /metrics, on this address
    #[arg(long, value_name = "ADDR:PORT", env = "DISCOVER_SERVE_HTTP")]
    pub http: Option<SocketAddr>,
    /// Also serve the SkyDNS/CoreDNS etcd layout under PATH (write --skydns=PATH; bare: /skydns)
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "/skydns",
        env = "DISCOVER_SERVE_SKYDNS"
    )]
    pub skydns: Option<String>,
    /// Answer SERVFAIL once the state is this much older than etcd (etcd unreachable); "off": never
    #[arg(long, value_name = "D", default_value = "24h", value_parser = parse_max_stale, env = "DISCOVER_SERVE_MAX_STALE")]
    pub max_stale: MaxStale,
}

/// `--max-stale`: a duration, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxStale(pub Option<Duration>);

/// `--max-stale`: a duration, or `off`.
fn parse_max_stale(s: &str) -> Result<MaxStale, String> {
    if matches!(s.trim(), "off" | "none" | "never") {
        return Ok(MaxStale(None));
    }
    discovery::parse_duration(s).map(|d| MaxStale(Some(d)))
}

/// The largest TTL (RFC 2181 section 8).
const MAX_TTL: u64 = (1 << 31) - 1;

/// A checked command line.
#[derive(Debug)]
struct Plan {
    /// The services prefixes (PREFIX ...).
    prefixes: Vec<Prefix>,
    /// `--skydns`: the SkyDNS/CoreDNS layout's path, if on.
    skydns: Option<Prefix>,
    /// `--domain`, as a DNS name.
    origin: LowerName,
    /// `--dns-ttl`, in seconds.
    ttl: u32,
    /// `--dns`.
    dns: Option<SocketAddr>,
    /// `--http`.
    http: Option<SocketAddr>,
    /// `--max-stale` (None: never SERVFAIL).
    max_stale: Option<Duration>,
}

impl Plan {
    /// Check the flags: any error is a usage error (exit 2) naming the flag.
    fn new(a: &ServeArgs) -> anyhow::Result<Self> {
        if a.dns.is_none() && a.http.is_none() {
            return Err(usage(
                "nothing to serve: give --dns ADDR:PORT (DNS), --http ADDR:PORT (Prometheus SD), or both",
            ));
        }
        let raw: Vec<&str> = if a.prefixes.is_empty() {
            vec!["/services"]
        } else {
            a.prefixes.iter().map(String::as_str).collect()
        };
        let prefixes = raw
            .iter()
            .map(|p| Prefix::new(p))
            .collect::<Result<Vec<_>, _>>()?;
        let skydns = a.skydns.as_deref().map(Prefix::new).transpose()?;
        let all: Vec<&Prefix> = prefixes.iter().chain(skydns.iter()).collect();
        for (i, p) in all.iter().enumerate() {
            for q in &all[i + 1..] {
                if p == q || p.contains(q.as_str().as_bytes()) || q.contains(p.as_str().as_bytes())
                {
                    return Err(usage(format!(
                        "{p} and {q} overlap: a key would be read twice; give one of them"
                    )));
                }
            }
        }
        let origin = domain(&a.domain)?;
        let secs = a.dns_ttl.as_secs();
        if secs > MAX_TTL || a.dns_ttl.subsec_nanos() != 0 {
            return Err(usage(format!(
                "--dns-ttl {:?} is not a whole number of seconds up to {MAX_TTL} (RFC 2181)",
                a.dns_ttl
            )));
        }
        Ok(Self {
            prefixes,
            skydns,
            origin,
            ttl: u32::try_from(secs).unwrap_or(u32::MAX),
            dns: a.dns,
            http: a.http,
            max_stale: a.max_stale.0,
        })
    }
}

/// `--domain` as a lower-case absolute name with room for
/// `INSTANCE.SERVICE.` (two labels of up to 63 bytes) under it.
fn domain(raw: &str) -> anyhow::Result<LowerName> {
    let bad = |why: String| usage(format!("--domain {raw:?}: {why}"));
    let mut n = Name::from_utf8(raw.trim()).map_err(|e| bad(e.to_string()))?;
    n.set_fqdn(true);
    if n.is_root() {
        return Err(bad(
            "the root is not a zone to serve; use a name such as discovery.internal".into(),
        ));
    }
    // A name is at most 255 bytes on the wire: leave room for two labels.
    if n.len() > 255 - 2 * 64 {
        return Err(bad(format!(
            "too long ({} bytes); at most {} leaves room for INSTANCE.SERVICE.",
            n.len(),
            255 - 2 * 64
        )));
    }
    Ok(LowerName::new(&n))
}

/// Run `discover serve`; returns the exit code.
pub async fn run(
    a: &ServeArgs,
    connect: ConnectOptions,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<i32> {
    let plan = Plan::new(a)?;
    let health = Arc::new(health::Health::new(plan.max_stale));
    let zone = Arc::new(ArcSwap::from_pointee(zone::Zone::empty(
        &plan.origin,
        plan.ttl,
    )));
    let mut m = Metrics::with_prefix("discover");
    let serve_metrics = Arc::new(metrics::ServeMetrics::register(&mut m, health.clone()));
    let shared = Arc::new(m);

    // Bind everything first, so that a taken or forbidden address fails
    // the start (exit 2) before etcd is even asked.
    let dns = match plan.dns {
        Some(addr) => {
            // One UDP socket per runtime worker (`bin/discover.rs` runs two).
            let s = dns::bind(addr, 2).map_err(|e| bind_error("--dns", addr, &e))?;
            info!(dns = %s.addr, zone = %*plan.origin, "answering DNS over UDP and TCP");
            Some(dns::start(
                s,
                dns::Answerer {
                    zone: zone.clone(),
                    health: health.clone(),
                    metrics: serve_metrics.clone(),
                },
            ))
        }
        None => None,
    };
    if let Some(addr) = plan.http {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| bind_error("--http", addr, &e))?;
        info!(http = %l.local_addr()?, "serving Prometheus SD at /prometheus and metrics at /metrics");
        let routes = http::routes(
            zone.clone(),
            health.clone(),
            Arc::new(plan.prefixes.clone()),
        );
        shared_metrics::serve_on(l, shared.clone(), Some(routes), shutdown.clone());
    }
    if let Some(addr) = metrics_addr {
        shared_metrics::serve(addr, shared.clone(), shutdown.clone())
            .await
            .map_err(|e| bind_error("--metrics-addr", addr, &e))?;
    }
    notify(&[NotifyState::Status("connecting to etcd")]);
    let client = tokio::select! {
        c = connect.connect_retrying() => c.context("cannot use etcd")?,
        _ = shutdown.cancelled() => return Ok(0),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let setup = follow::Setup {
        origin: plan.origin.clone(),
        ttl: plan.ttl,
        prefixes: plan.prefixes.clone(),
        skydns: plan.skydns.clone(),
        zone: zone.clone(),
        health: health.clone(),
        metrics: serve_metrics,
        shared: shared.clone(),
    };
    let mut watch = tokio::spawn(follow::run(setup, client, ready_tx, shutdown.clone()));
    let watched: Vec<String> = plan
        .prefixes
        .iter()
        .chain(plan.skydns.iter())
        .map(ToString::to_string)
        .collect();
    notify(&[NotifyState::Status(&format!(
        "waiting for the first snapshot of {}",
        watched.join(" ")
    ))]);
    let mut ready_rx = Some(ready_rx);
    let outcome = loop {
        tokio::select! {
            r = &mut watch => break r.context("the watch task failed")?,
            Ok(()) = async { ready_rx.as_mut().expect("polled only while Some").await }, if ready_rx.is_some() => {
                ready_rx = None;
                let z = zone.load();
                let status = format!(
                    "serving {} in {}: {} services, {} A, {} AAAA, {} SRV records",
                    watched.join(" "),
                    *plan.origin,
                    z.services.len(),
                    z.counts.a,
                    z.counts.aaaa,
                    z.counts.srv
                );
                info!(services = z.services.len(), a = z.counts.a, aaaa = z.counts.aaaa, srv = z.counts.srv, "first snapshot in; answering");
                notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            }
        }
    };
    if let Some(mut server) = dns {
        // The UDP and TCP loops stop accepting; queries in flight finish.
        if tokio::time::timeout(Duration::from_secs(1), server.shutdown_gracefully())
            .await
            .is_err()
        {
            debug!("DNS queries still in flight at exit");
        }
    }
    outcome.map(|()| 0)
}

/// A bind failure as a usage error, with what to do for the usual causes.
fn bind_error(flag: &str, addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            " (a port below 1024 needs CAP_NET_BIND_SERVICE: run as root, give the unit AmbientCapabilities=CAP_NET_BIND_SERVICE, or use a port above 1023)"
        }
        std::io::ErrorKind::AddrInUse => " (something else listens there; pick another port)",
        std::io::ErrorKind::AddrNotAvailable => " (no interface has this address)",
        _ => "",
    };
    usage(format!("{flag} {addr}: cannot bind: {e}{hint}"))
}

/// Tell systemd (`Type=notify`); outside systemd, nothing.
fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::discover::{Cli, Cmd};

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let mut v = vec!["discover", "serve"];
        v.extend_from_slice(args);
        let cli = Cli::try_parse_from(v)?;
        let Cmd::Serve(a) = cli.cmd else {
            panic!("not serve")
        };
        Plan::new(&a)
    }

    #[test]
    fn defaults_and_checks_before_any_io() {
        let p = plan(&["--dns", "127.0.0.1:0"]).unwrap();
        assert_eq!(p.prefixes, [Prefix::new("/services").unwrap()]);
        assert_eq!(p.origin.to_string(), "discovery.internal.");
        assert_eq!(p.ttl, 5);
        assert_eq!(p.max_stale, Some(Duration::from_secs(86_400)));
        assert!(p.skydns.is_none());
        let p = plan(&[
            "/a",
            "--dns",
            "127.0.0.1:0",
            "--skydns",
            "--domain",
            "Skydns.Local",
        ])
        .unwrap();
        assert_eq!(p.skydns, Some(Prefix::new("/skydns").unwrap()));
        assert_eq!(p.origin.to_string(), "skydns.local.");
        assert_eq!(p.prefixes, [Prefix::new("/a").unwrap()]);
        let p = plan(&[
            "--http",
            "127.0.0.1:0",
            "--skydns=/dns",
            "--max-stale",
            "off",
        ])
        .unwrap();
        assert_eq!(p.skydns, Some(Prefix::new("/dns").unwrap()));
        assert_eq!(p.max_stale, None);
        // A bare --skydns does not swallow the prefix after it.
        let p = plan(&["--dns", "127.0.0.1:0", "--skydns", "/x"]).unwrap();
        assert_eq!(p.prefixes, [Prefix::new("/x").unwrap()]);
    }

    #[test]
    fn bad_command_lines_say_what_to_do() {
        let err = |args: &[&str]| plan(args).expect_err("must fail").to_string();
        assert!(err(&[]).contains("nothing to serve"));
        assert!(err(&["/services", "/services/web", "--dns", "127.0.0.1:0"]).contains("overlap"));
        assert!(err(&["--dns", "127.0.0.1:0", "--skydns=/services"]).contains("overlap"));
        assert!(err(&["--dns", "127.0.0.1:0", "--domain", "."]).contains("root"));
        let long = format!("{}.x", "a".repeat(63));
        let long = format!("{long}.{long}");
        assert!(err(&["--dns", "127.0.0.1:0", "--domain", &long]).contains("too long"));
        assert!(err(&["--dns", "127.0.0.1:0", "--dns-ttl", "1.5"]).contains("whole number"));
        assert!(err(&["--dns", "127.0.0.1:0", "--dns-ttl", "100y"]).contains("RFC 2181"));
        assert!(err(&["--dns", "nope"]).contains("invalid socket address"));
        assert!(err(&["--dns", "127.0.0.1:0", "services"]).contains("/"));
    }
}
