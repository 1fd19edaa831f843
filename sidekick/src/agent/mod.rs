//! The sidekick: keep containers' addresses registered in etcd.
//!
//! Three shapes, one per [`Plan`]:
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
pub mod check;
pub mod decide;
pub mod docker;
mod events;
mod follow;
mod host;
pub mod labels;
pub mod notify;
mod one;
pub mod plan;
mod report;
pub mod value;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use args::{AddressMode, Args};
use docker::DockerConn;
pub use plan::Plan;

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

/// Run until `ctl.shutdown` (then revoke and return `Ok`), or until a
/// configuration problem shows up (usage error, exit 2).
pub async fn run(
    args: Args,
    user_source: Option<clap::parser::ValueSource>,
    ctl: Control,
) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let connect = args.etcd.connect_options(user_source)?;
    // Docker's address is checked here, before etcd is tried: a bad
    // DOCKER_HOST is a usage error, whatever etcd's state.
    let docker = match plan.needs_docker() {
        true => Some(DockerConn::from_env()?),
        false => None,
    };
    let mut metrics = Metrics::with_prefix("sidekick");
    let check_metrics = check::CheckMetrics::register(&mut metrics);
    let metrics = Arc::new(metrics);
    if let Some(addr) = args.metrics_addr {
        metrics::serve(addr, metrics.clone(), ctl.shutdown.clone())
            .await
            .map_err(|e| usage(format!("--metrics-addr {addr}: {e}")))?;
    }

    info!(endpoints = %connect.endpoints().join(","), "connecting to etcd");
    // With STATUS=, the watchdog and a bounded READY=1 while etcd does not answer.
    let client = tokio::select! {
        r = notify::connect(&connect) => r.context("cannot use etcd")?,
        _ = ctl.shutdown.cancelled() => return Ok(()),
    };
    match (plan, docker) {
        (Plan::Host(cfg), Some(docker)) => {
            host::HostAgent::new(client, docker, cfg, metrics, check_metrics)
                .run(&ctl)
                .await
        }
        (Plan::Container(cfg), Some(docker)) => {
            one::follow(&client, docker, cfg, &metrics, check_metrics, &ctl).await
        }
        (
            Plan::Static {
                key,
                value,
                register,
            },
            _,
        ) => one::keep_static(&client, &key, value, register, &metrics, &ctl).await,
        // `needs_docker` made a connection for every plan that follows Docker.
        (_, None) => Err(anyhow::anyhow!(
            "no Docker connection for a plan that needs one"
        )),
    }
}
