//! The sidekick: keep containers' addresses registered in etcd.
//!
//! Three shapes, one per [`Mode`]:
//! * `--container`: follow one container, as the chapter's units do
//!   (`follow.rs`); one key, one lease.
//! * `--all`: one agent per host (`host/`), every container that opts in
//!   with labels ([`labels`]); all keys under one lease.
//! * `--ip`: keep a fixed address (no Docker).
//!
//! Both Docker loops follow events through `events.rs` (subscribe from the
//! last event, give up and resubscribe with backoff, tell replays from news)
//! and decide with [`decide`]; this file turns the flags into the work to do
//! and keeps (and at the end revokes) a single key.
//!
//! Decisions:
//! * Docker's event stream is the source of truth while it is up. A
//!   container is inspected only when an event names it, when the stream
//!   is (re)subscribed, and at the safety resync (`--resync`, 60 s). The
//!   lease keep-alive, every TTL/3, is the only steady-state work.
//! * Docker events act at once: stop, die, kill (a stopping signal), pause
//!   and destroy withdraw the key; start, restart and unpause inspect and
//!   register.
//! * While Docker is unreachable, the last registration is kept: the
//!   container most likely still runs, and if its unit stops, systemd's
//!   `BindsTo=` stops the sidekick, which revokes the lease. Docker is
//!   retried with backoff and reconciled as soon as it answers.
//! * A stopping signal withdraws the key even if the container survives
//!   it for a while; if it is still running 30 s later it is registered again.

pub mod args;
pub mod decide;
pub mod docker;
mod events;
mod follow;
mod host;
pub mod labels;
pub mod notify;
mod report;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use discovery::{Registration, RegistrationState};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use args::{Address, AddressMode, Args, Mode, Plan};
use decide::{Rules, ValueFormat, ValueKind};
use docker::DockerConn;
use follow::Follower;
use notify::Notifier;
use report::{Seen, report};

use crate::common::exit::usage;
use crate::common::metrics::{self, Metrics};

/// How long a container may keep running after a stopping signal before
/// it is registered again.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// How long a graceful stop waits for etcd to confirm the revoke. Past it,
/// the process exits anyway and the key expires with its lease: a stop
/// must not hang on an unreachable etcd.
pub(crate) const REVOKE_LIMIT: Duration = Duration::from_millis(500);

/// The first subscription asks Docker to replay events from this long
/// before it was made, in case Docker's clock is a little behind ours.
pub(crate) const SINCE_MARGIN: Duration = Duration::from_secs(2);

/// Now, as Docker timestamps events (nanoseconds since the epoch).
pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The machine's host name (`%h`, and the JSON value's `host`).
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// How the binary steers a running sidekick.
#[derive(Debug, Clone)]
pub struct Control {
    /// Cancelled on the first SIGTERM/SIGINT: revoke and exit.
    pub shutdown: CancellationToken,
    /// Notified on SIGHUP: reconcile now.
    pub reconcile: Arc<Notify>,
}

/// The plan with what it needs to run: a Docker connection exactly for
/// the modes that follow Docker.
enum Work {
    /// One key under its own lease.
    One { key: String, source: Source },
    /// `--all`: every labelled container, under one host lease.
    Host {
        prefix: String,
        address: Address,
        only: Option<(String, Option<String>)>,
        docker: DockerConn,
    },
}

/// Where a single key's address comes from.
enum Source {
    /// `--ip`: a fixed address.
    Static(std::net::IpAddr),
    /// `--container`: one container, followed through Docker.
    Container {
        name: String,
        rules: Rules,
        docker: Box<DockerConn>,
    },
}

impl Work {
    /// Docker's address is checked here, before etcd is tried: a bad
    /// DOCKER_HOST is a usage error, whatever etcd's state.
    fn new(mode: Mode, port: Option<u16>) -> anyhow::Result<Self> {
        Ok(match mode {
            Mode::Static { key, ip } => Work::One {
                key,
                source: Source::Static(ip),
            },
            Mode::Container {
                key,
                name,
                address,
                require_healthy,
            } => Work::One {
                key,
                source: Source::Container {
                    name,
                    rules: Rules {
                        address,
                        port,
                        require_healthy,
                    },
                    docker: Box::new(DockerConn::from_env()?),
                },
            },
            Mode::Host {
                prefix,
                address,
                only,
            } => Work::Host {
                prefix,
                address,
                only,
                docker: DockerConn::from_env()?,
            },
        })
    }
}

/// What keeping one key needs besides its source.
struct One<'a> {
    format: ValueFormat,
    port: Option<u16>,
    resync: Duration,
    metrics: &'a Arc<Metrics>,
    ctl: &'a Control,
}

/// Run until `ctl.shutdown` (then revoke and return `Ok`), or until a
/// configuration problem shows up (usage error, exit 2).
pub async fn run(
    args: Args,
    user_source: Option<clap::parser::ValueSource>,
    ctl: Control,
) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let connect = args.etcd.connect_options(user_source)?;
    let work = Work::new(plan.mode, args.port)?;
    let metrics = Arc::new(Metrics::with_prefix("sidekick"));
    if let Some(addr) = args.metrics_addr {
        metrics::serve(addr, metrics.clone(), ctl.shutdown.clone())
            .await
            .map_err(|e| usage(format!("--metrics-addr {addr}: {e}")))?;
    }
    let format = ValueFormat {
        kind: match (args.json_value, args.port) {
            (true, _) => ValueKind::Json,
            (false, Some(_)) => ValueKind::IpPort,
            (false, None) => ValueKind::Ip,
        },
        host: hostname(),
    };

    info!(endpoints = %connect.endpoints().join(","), "connecting to etcd");
    // With STATUS=, the watchdog and a bounded READY=1 while etcd does not answer.
    let client = tokio::select! {
        r = notify::connect(&connect) => r.context("cannot use etcd")?,
        _ = ctl.shutdown.cancelled() => return Ok(()),
    };
    match work {
        Work::Host {
            prefix,
            address,
            only,
            docker,
        } => {
            let config = host::HostConfig {
                prefix,
                address,
                only,
                register: plan.register,
                resync: plan.resync,
                hostname: format.host,
            };
            host::HostAgent::new(client, docker, config, metrics)
                .run(&ctl)
                .await
        }
        Work::One { key, source } => {
            let reg = client.registration(&key, plan.register.clone())?;
            let one = One {
                format,
                port: args.port,
                resync: plan.resync,
                metrics: &metrics,
                ctl: &ctl,
            };
            let outcome = keep_one(&reg, source, one).await;
            // Graceful stop (or a configuration error): revoke, so the key
            // goes now.
            deregister(reg, plan.register.ttl()).await;
            outcome
        }
    }
}

/// Keep one key until shutdown or a refusal.
async fn keep_one(reg: &Registration, source: Source, one: One<'_>) -> anyhow::Result<()> {
    let (seen_tx, seen_rx) = watch::channel(Seen::Unknown);
    let reporter = spawn_reporter(reg, seen_rx, one.metrics, one.ctl);
    let outcome = match source {
        Source::Static(ip) => {
            let value = one.format.render(&ip.to_string(), one.port, None);
            reg.set_value(value.clone());
            seen_tx.send_replace(Seen::Up(value));
            tokio::select! {
                r = watch_refusal(reg, &one.ctl.shutdown) => r,
                () = static_watchdog(reg) => Ok(()),
            }
        }
        Source::Container {
            name,
            rules,
            mut docker,
        } => {
            let follower = Follower::new(name, &mut docker, rules, one.format, reg, seen_tx);
            tokio::select! {
                r = follower.run(one.resync, one.ctl) => r,
                r = watch_refusal(reg, &one.ctl.shutdown) => r,
            }
        }
    };
    reporter.abort();
    outcome
}

/// Revoke the lease, waiting at most [`REVOKE_LIMIT`]: past it the key
/// expires with its lease.
async fn deregister(reg: Registration, ttl: Duration) {
    Notifier::new().stopping();
    let t = Instant::now();
    let key = reg.key().to_owned();
    match tokio::time::timeout(REVOKE_LIMIT, reg.deregister()).await {
        Ok(_) => info!(%key, took = ?t.elapsed(), "deregistered; exiting"),
        Err(_) => warn!(
            %key,
            waited = ?REVOKE_LIMIT,
            ?ttl,
            "etcd did not confirm the revoke in time; exiting, and the key expires with its lease"
        ),
    }
}

fn spawn_reporter(
    reg: &Registration,
    seen: watch::Receiver<Seen>,
    metrics: &Arc<Metrics>,
    ctl: &Control,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(report(
        reg.key().to_owned(),
        reg.state(),
        seen,
        metrics.clone(),
        ctl.shutdown.clone(),
    ))
}

/// In static mode there is no Docker loop: ping the watchdog (if enabled)
/// for as long as the registration task is alive.
async fn static_watchdog(reg: &Registration) {
    let notifier = Notifier::new();
    let Some(period) = notifier.watchdog_period() else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if !matches!(*reg.state().borrow(), RegistrationState::Stopped) {
            notifier.watchdog();
        }
    }
}

/// Return an error if etcd refuses the registration for good (exit 2) or
/// the registration task is gone (exit 1); Ok on shutdown.
async fn watch_refusal(reg: &Registration, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut state = reg.state();
    loop {
        if let RegistrationState::Refused { error } = &*state.borrow_and_update() {
            return Err(usage(format!(
                "etcd refuses to register {}: {error}",
                reg.key()
            )));
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            r = state.changed() => if r.is_err() {
                return Err(anyhow::anyhow!(
                    "the registration of {} stopped unexpectedly; nothing keeps its lease alive",
                    reg.key()
                ));
            },
        }
    }
}
