//! The sidekick's command line.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use discovery::RegisterOptions;

use crate::common::exit::usage;
use crate::common::{EtcdArgs, LogArgs};

/// Keep a container's address in etcd under a lease, the way the CoreOS
/// sidekick units did, without the bash loop: one write when the address
/// appears or changes, silent lease keep-alives in between, and an
/// immediate delete when Docker says the container stopped.
///
/// Example unit line:
///   ExecStart=/usr/local/bin/sidekick --key /services/memcached/%i --container memcached-%i --port 11211
#[derive(Parser, Debug, Clone)]
#[command(name = "sidekick", version, max_term_width = 100)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["container", "ip"]))]
pub struct Args {
    /// The etcd key to keep, such as /services/memcached/1
    #[arg(long, value_name = "KEY")]
    pub key: String,

    /// The container to follow, by name or id
    #[arg(long, value_name = "NAME_OR_ID")]
    pub container: Option<String>,

    /// Register this address instead of a container's (for a service that is not a container; no Docker needed)
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<String>,

    /// Lease TTL: how long the key outlives a sidekick that stops heart-beating (8, 8s, 1m)
    #[arg(
        long,
        env = "SIDEKICK_TTL",
        default_value = "8",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub ttl: String,

    /// Keep-alive and reconcile period; must be shorter than the TTL [default: TTL/3]
    #[arg(
        long,
        env = "SIDEKICK_INTERVAL",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub interval: Option<String>,

    /// Which Docker network's address to use [default: bridge, else the container's only network]
    #[arg(long, env = "SIDEKICK_NETWORK", value_name = "NAME")]
    pub network: Option<String>,

    /// Register IP:PORT instead of the bare IP
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Register {"ip":…,"port":…,"container":…,"host":…} instead of the bare IP
    #[arg(long)]
    pub json_value: bool,

    /// Register only while Docker reports the container healthy (needs a HEALTHCHECK)
    #[arg(long)]
    pub require_healthy: bool,

    /// Serve Prometheus metrics on this address (such as 127.0.0.1:9101)
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    #[command(flatten)]
    pub etcd: EtcdArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Where the address comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Follow this container through Docker.
    Container(String),
    /// A fixed address.
    Static(IpAddr),
}

/// The command line, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The key.
    pub key: String,
    /// Container or static address.
    pub source: Source,
    /// TTL and interval.
    pub register: RegisterOptions,
    /// The keep-alive and reconcile period.
    pub interval: Duration,
}

impl Args {
    /// Check everything that can be checked before touching etcd or Docker.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        discovery::validate_key(&self.key).map_err(|e| usage(format!("--key: {e}")))?;
        let ttl = discovery::parse_duration(&self.ttl).map_err(|e| usage(format!("--ttl: {e}")))?;
        let mut register = RegisterOptions::new(ttl);
        if let Some(i) = &self.interval {
            let i = discovery::parse_duration(i).map_err(|e| usage(format!("--interval: {e}")))?;
            register = register.with_interval(i);
        }
        register.validate().map_err(|e| {
            let flag = if e.to_string().contains("interval") {
                "--interval"
            } else {
                "--ttl"
            };
            usage(format!("{flag}: {e}"))
        })?;
        let source = match (&self.container, &self.ip) {
            (Some(c), None) => Source::Container(check_container(c)?),
            (None, Some(ip)) => {
                let ip: IpAddr = ip.trim().parse().map_err(|_| {
                    usage(format!(
                        "--ip: {ip:?} is not an IPv4 or IPv6 address (such as 10.1.0.7)"
                    ))
                })?;
                if ip.is_unspecified() {
                    return Err(usage(format!(
                        "--ip: {ip} is the unspecified address; register the address consumers should connect to"
                    )));
                }
                if self.network.is_some() {
                    return Err(usage(
                        "--network applies to --container; with --ip there is no Docker network",
                    ));
                }
                if self.require_healthy {
                    return Err(usage(
                        "--require-healthy needs --container: Docker reports health, and --ip has no container",
                    ));
                }
                Source::Static(ip)
            }
            // clap's group makes exactly one of them required.
            _ => return Err(usage("give exactly one of --container and --ip")),
        };
        if let Some(n) = &self.network {
            if n.trim().is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(usage(format!(
                    "--network: {n:?} is not a Docker network name"
                )));
            }
        }
        Ok(Plan {
            key: self.key.clone(),
            source,
            interval: register.interval(),
            register,
        })
    }
}

/// Docker names are `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (a leading `/` is tolerated);
/// ids are hex.
fn check_container(c: &str) -> anyhow::Result<String> {
    let name = c.strip_prefix('/').unwrap_or(c);
    let mut chars = name.chars();
    let ok = match chars.next() {
        Some(first) => {
            first.is_ascii_alphanumeric()
                && chars.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
        }
        None => false,
    };
    if !ok {
        return Err(usage(format!(
            "--container: {c:?} is not a Docker container name or id (letters, digits, '_', '.', '-'; starting with a letter or digit)"
        )));
    }
    Ok(name.to_owned())
}
