//! The modes that keep one container's or address's key (`--container`
//! and `--ip`): the registration (two with `--family both` in the `ip` and
//! `ip:port` formats: `KEY` and `KEY-v6`), its reporter, and a revoke at
//! the end.

use std::sync::Arc;
use std::time::Duration;

use discovery::{Client, RegisterOptions, Registration, RegistrationState};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::check::CheckMetrics;
use super::decide::Family;
use super::docker::DockerConn;
use super::follow::{Follower, Keys};
use super::notify::Notifier;
use super::plan::FollowConfig;
use super::report::{Seen, report};
use super::value::{V6_SUFFIX, ValueKind};
use super::{Control, REVOKE_LIMIT};
use crate::common::exit::usage;
use crate::common::metrics::Metrics;

/// `--container`: follow the container until shutdown or a refusal, then
/// revoke the key.
pub(super) async fn follow(
    client: &Client,
    mut docker: DockerConn,
    cfg: FollowConfig,
    metrics: &Arc<Metrics>,
    check_metrics: CheckMetrics,
    ctl: &Control,
) -> anyhow::Result<()> {
    let family = cfg.rules.address.family();
    let mut keys = vec![cfg.key.clone()];
    if family == Family::Both && cfg.format.kind != ValueKind::Json {
        keys.push(format!("{}{V6_SUFFIX}", cfg.key));
    }
    let regs = keys
        .iter()
        .map(|k| client.registration(k, cfg.register.clone()))
        .collect::<discovery::Result<Vec<_>>>()?;
    let (seen_tx, seen_rx) = watch::channel(Seen::Unknown);
    let reporter = spawn_reporter(&regs, seen_rx, metrics, ctl);
    let keys = Keys::new(&regs, cfg.format, family, cfg.check, check_metrics);
    let follower = Follower::new(cfg.name, &mut docker, cfg.rules, keys, seen_tx);
    let refusals = futures::future::select_all(
        regs.iter()
            .map(|r| Box::pin(watch_refusal(r, &ctl.shutdown))),
    );
    let outcome = tokio::select! {
        r = follower.run(cfg.resync, ctl) => r,
        (r, _, _) = refusals => r,
    };
    reporter.abort();
    // Graceful stop (or a configuration error): revoke, so the key goes now.
    let ttl = cfg.register.ttl();
    futures::future::join_all(regs.into_iter().map(|r| deregister(r, ttl))).await;
    outcome
}

/// `--ip`: keep `value` at `key` until shutdown or a refusal, then revoke.
pub(super) async fn keep_static(
    client: &Client,
    key: &str,
    value: String,
    register: RegisterOptions,
    metrics: &Arc<Metrics>,
    ctl: &Control,
) -> anyhow::Result<()> {
    let reg = client.registration(key, register.clone())?;
    let (seen_tx, seen_rx) = watch::channel(Seen::Unknown);
    let reporter = spawn_reporter(std::slice::from_ref(&reg), seen_rx, metrics, ctl);
    reg.set_value(value.clone());
    seen_tx.send_replace(Seen::up(key, value));
    let outcome = tokio::select! {
        r = watch_refusal(&reg, &ctl.shutdown) => r,
        () = static_watchdog(&reg) => Ok(()),
    };
    reporter.abort();
    deregister(reg, register.ttl()).await;
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
    regs: &[Registration],
    seen: watch::Receiver<Seen>,
    metrics: &Arc<Metrics>,
    ctl: &Control,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(report(
        regs.iter()
            .map(|r| (r.key().to_owned(), r.state()))
            .collect(),
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
