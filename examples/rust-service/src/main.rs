//! A Rust service that embeds `discovery` instead of running beside a
//! sidekick: it registers its own address under a lease, follows the
//! memcached members, reads a typed config from etcd, and logs each change.
//!
//! ```text
//! ETCDCTL_ENDPOINTS=127.0.0.1:2379 SERVICE_ID=1 LISTEN=127.0.0.1:7000 rust-service
//! ```
//!
//! Environment: `ETCDCTL_*` (as etcdctl), `SERVICE_ID` (default 1),
//! `LISTEN` (default 127.0.0.1:7000), `TTL` (seconds, default 8).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use discovery::{ConnectOptions, RegisterOptions, RegistrationState};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// What this service reads from `/config/rust-service` (one key per field,
/// or one JSON document).
#[derive(Debug, Deserialize, PartialEq)]
struct Config {
    /// The line it greets clients with.
    greeting: String,
    /// How many memcached backends it wants before it calls itself healthy.
    #[serde(default = "one")]
    min_memcached: usize,
}

fn one() -> usize {
    1
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run().await {
        eprintln!("rust-service: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let id = std::env::var("SERVICE_ID").unwrap_or_else(|_| "1".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:7000".into());
    let ttl: u64 = std::env::var("TTL")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(8);

    let client = ConnectOptions::from_env()?
        .connect()
        .await
        .context("cannot use etcd")?;

    // Typed config: refuse to start on a bad one; later bad updates keep the last good value.
    let mut config = client.config::<Config>("/config/rust-service").await?;
    let mut config_values = config.values();
    info!(config = ?*config_values.borrow(), "config loaded");

    // Serve something, then register where we serve.
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let greeting = Arc::new(std::sync::Mutex::new(
        config_values.borrow().greeting.clone(),
    ));
    let g = greeting.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let line = format!("{}\n", g.lock().map(|s| s.clone()).unwrap_or_default());
            tokio::spawn(async move {
                let _ = sock.write_all(line.as_bytes()).await;
            });
        }
    });

    let key = format!("/services/rust-service/{id}");
    let reg = client.register(
        &key,
        addr.to_string(),
        RegisterOptions::new(Duration::from_secs(ttl)),
    )?;
    let mut reg_state = reg.state();

    // The memcached backends, changing only on set and delete.
    let mut memcached = client.members("/services/memcached").await?;
    info!(members = ?memcached.borrow_and_update().values_lossy(), "memcached members");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            r = memcached.changed() => {
                r.context("the membership watch stopped")?;
                let m = memcached.borrow_and_update().clone();
                let want = config_values.borrow().min_memcached;
                info!(members = ?m.values_lossy(), healthy = m.len() >= want, "memcached members changed");
            }
            r = config_values.changed() => {
                r.context("the config watch stopped")?;
                let c = config_values.borrow_and_update();
                info!(config = ?*c, "config changed");
                if let Ok(mut g) = greeting.lock() {
                    g.clone_from(&c.greeting);
                }
            }
            Some(e) = config.next_error() => warn!(error = %e, "config update rejected; keeping the last good one"),
            r = reg_state.changed() => {
                r.context("the registration stopped")?;
                match &*reg_state.borrow_and_update() {
                    RegistrationState::Registered { lease, .. } => info!(%key, %addr, %lease, "registered"),
                    RegistrationState::Retrying { error, .. } => warn!(%key, %error, "registration retrying"),
                    other => info!(%key, state = ?other, "registration"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!(%key, "stopping: deregistering");
    reg.deregister().await?;
    Ok(())
}
