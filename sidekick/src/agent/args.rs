//! The sidekick's command line as the user types it; `plan.rs` checks it
//! and turns it into what the sidekick does.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::check::CheckKind;
use crate::common::etcd_args::parse_positive_duration;
use crate::common::{EtcdArgs, LogArgs};

/// Keep a container's address in etcd under a lease, the way the CoreOS
/// sidekick units did, without the bash loop: one write when the address
/// appears or changes, silent lease keep-alives in between, and an
/// immediate delete when Docker says the container stopped.
///
/// Example unit lines:
///   ExecStart=/usr/local/bin/sidekick --key /services/memcached/%i --container memcached-%i --port 11211
///   ExecStart=/usr/local/bin/sidekick --all      (one per host: every container labelled discovery.key=...)
#[derive(Parser, Debug, Clone)]
#[command(name = "sidekick", version, max_term_width = 100)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["container", "ip", "all"]))]
pub struct Args {
    /// The etcd key to keep, such as /services/memcached/1
    #[arg(
        long,
        value_name = "KEY",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub key: Option<String>,

    /// The container to follow, by name or id
    #[arg(long, value_name = "NAME_OR_ID")]
    pub container: Option<String>,

    /// Register this address instead of a container's (for a service that is not a container; no Docker needed)
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<String>,

    /// One agent per host: register every running container labelled discovery.key=KEY (or registrator's SERVICE_NAME)
    #[arg(long)]
    pub all: bool,

    /// With --all: where registrator-style SERVICE_NAME containers go (PREFIX/NAME/HOST:CONTAINER:PORT)
    #[arg(
        long,
        env = "SIDEKICK_PREFIX",
        default_value = "/services",
        value_name = "PREFIX"
    )]
    pub prefix: String,

    /// With --all: consider only containers carrying this label (KEY or KEY=VALUE), to run several agents on one host
    #[arg(
        long,
        env = "SIDEKICK_ONLY_LABEL",
        value_name = "KEY[=VALUE]",
        requires = "all"
    )]
    pub only_label: Option<String>,

    /// With --all: the only prefixes containers' labels may name keys under (repeatable) [default: --prefix]
    #[arg(
        long,
        env = "SIDEKICK_ALLOW_PREFIX",
        value_name = "PREFIX",
        value_delimiter = ','
    )]
    pub allow_prefix: Vec<String>,

    /// With --all: let containers' labels ask for exec:CMD checks, which run CMD on this host as sidekick's user
    #[arg(long, env = "SIDEKICK_ALLOW_EXEC_CHECKS")]
    pub allow_exec_checks: bool,

    /// Lease TTL: how long the key outlives a sidekick that stops heart-beating (8, 8s, 1m)
    #[arg(
        long,
        env = "SIDEKICK_TTL",
        default_value = "8",
        value_name = "DURATION",
        allow_hyphen_values = true,
        value_parser = discovery::parse_duration
    )]
    pub ttl: Duration,

    /// Keep-alive period; must be shorter than the TTL [default: TTL/3]
    #[arg(
        long,
        env = "SIDEKICK_INTERVAL",
        value_name = "DURATION",
        allow_hyphen_values = true,
        value_parser = discovery::parse_duration
    )]
    pub interval: Option<Duration>,

    /// Safety resync: a full look at Docker this often, besides its event stream (60, 5m)
    #[arg(
        long,
        env = "SIDEKICK_RESYNC",
        default_value = "60",
        value_name = "DURATION",
        value_parser = parse_positive_duration
    )]
    pub resync: Duration,

    /// Which Docker network's address to use [default: bridge, else the container's only network]
    #[arg(long, env = "SIDEKICK_NETWORK", value_name = "NAME")]
    pub network: Option<String>,

    /// Which of the container's addresses to register: 4, 6, or both (a JSON list, or KEY and KEY-v6) [default: IPv4, else IPv6]
    #[arg(long, env = "SIDEKICK_FAMILY", value_enum, value_name = "4|6|both")]
    pub family: Option<FamilyArg>,

    /// Register IP:PORT instead of the bare IP (with --address published: the container port whose binding to use)
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Which address to register: the container's own (ip), or --host-ip with the host port Docker publishes (published)
    #[arg(long, env = "SIDEKICK_ADDRESS", value_enum, default_value_t = AddressMode::Ip)]
    pub address: AddressMode,

    /// With --address published: the host's address other hosts reach it by (IPv4 or IPv6)
    #[arg(long, env = "SIDEKICK_HOST_IP", value_name = "ADDR")]
    pub host_ip: Option<IpAddr>,

    /// Register {"ip":…,"port":…,"container":…,"host":…} instead of the bare IP
    #[arg(long)]
    pub json_value: bool,

    /// Register only while Docker reports the container healthy (needs a HEALTHCHECK)
    #[arg(long)]
    pub require_healthy: bool,

    /// Register only while this check passes: tcp, http:PATH, exec:CMD (on this host) or docker-exec:CMD (in the container)
    #[arg(long, value_name = "KIND", value_parser = CheckKind::parse)]
    pub check: Option<CheckKind>,

    /// How often to check [default: 10s]
    #[arg(long, value_name = "DURATION", requires = "check", value_parser = discovery::parse_duration)]
    pub check_interval: Option<Duration>,

    /// How long one check may take before it counts as critical [default: the interval, at most 10s]
    #[arg(long, value_name = "DURATION", requires = "check", value_parser = discovery::parse_duration)]
    pub check_timeout: Option<Duration>,

    /// Passing checks in a row that register a withdrawn container again [default: 2]
    #[arg(long, value_name = "N", requires = "check", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub check_rise: Option<u32>,

    /// Critical checks in a row that withdraw a registered container [default: 3]
    #[arg(long, value_name = "N", requires = "check", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub check_fall: Option<u32>,

    /// Failures this soon after the start do not count, and until the first pass checks come every second [default: 0]
    #[arg(long, value_name = "DURATION", requires = "check", value_parser = discovery::parse_duration)]
    pub check_start_period: Option<Duration>,

    /// Serve Prometheus metrics on this address (such as 127.0.0.1:9101)
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// The etcd connection (`--endpoints`, TLS, auth, timeouts), as etcdctl names them.
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// `--log-format`: how the log lines on stderr are written.
    #[command(flatten)]
    pub log: LogArgs,
}

/// `--family`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    /// The IPv4 address only.
    #[value(name = "4")]
    V4,
    /// The IPv6 address only.
    #[value(name = "6")]
    V6,
    /// Both: a JSON list, or two keys (KEY for IPv4, KEY-v6 for IPv6).
    Both,
}

/// `--address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AddressMode {
    /// The container's address on its Docker network.
    Ip,
    /// `--host-ip` and the host port a `-p` binding publishes.
    Published,
}
