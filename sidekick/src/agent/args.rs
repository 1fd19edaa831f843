//! The sidekick's command line, and the plan it becomes once checked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use discovery::RegisterOptions;

use crate::common::etcd_args::parse_positive_duration;
use crate::common::exit::usage;
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

    /// Register IP:PORT instead of the bare IP (with --address published: the container port whose binding to use)
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Which address to register: the container's own (ip), or --host-ip with the host port Docker publishes (published)
    #[arg(long, env = "SIDEKICK_ADDRESS", value_enum, default_value_t = AddressMode::Ip)]
    pub address: AddressMode,

    /// With --address published: the host's address other hosts reach it by
    #[arg(long, env = "SIDEKICK_HOST_IP", value_name = "ADDR")]
    pub host_ip: Option<IpAddr>,

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

/// `--address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AddressMode {
    /// The container's address on its Docker network.
    Ip,
    /// `--host-ip` and the host port a `-p` binding publishes.
    Published,
}

/// Where a registered address comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// The container's IP on a Docker network (`--network`, or the default rule).
    Container {
        /// `--network`.
        network: Option<String>,
    },
    /// This host address, with the host port Docker publishes.
    Published {
        /// `--host-ip`.
        host_ip: IpAddr,
    },
}

/// What one sidekick process does, checked.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Keep a fixed address at `key`.
    Static {
        /// The key.
        key: String,
        /// The address.
        ip: IpAddr,
    },
    /// Follow one container.
    Container {
        /// The key.
        key: String,
        /// The container's name or id.
        name: String,
        /// Where its address comes from.
        address: Address,
        /// `--require-healthy`.
        require_healthy: bool,
    },
    /// Every labelled container on the host.
    Host {
        /// Prefix for registrator-style `SERVICE_NAME` containers.
        prefix: String,
        /// Where addresses come from (a container's labels may name a network).
        address: Address,
        /// `--only-label`: a label key, and the value it must have.
        only: Option<(String, Option<String>)>,
    },
}

/// The command line, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What to do.
    pub mode: Mode,
    /// TTL and keep-alive interval.
    pub register: RegisterOptions,
    /// The safety resync period.
    pub resync: Duration,
}

impl Args {
    /// Check everything that can be checked before touching etcd or Docker.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let register = self.register_options()?;
        let address = self.address()?;
        let mode = match (&self.key, &self.container, &self.ip, self.all) {
            (_, None, None, true) => self.host_mode(address)?,
            (Some(key), Some(c), None, false) => {
                check_key(key)?;
                Mode::Container {
                    key: key.clone(),
                    name: check_container(c)?,
                    address,
                    require_healthy: self.require_healthy,
                }
            }
            (Some(key), None, Some(ip), false) => self.static_mode(key, ip)?,
            // clap's group and `required_unless_present` rule these out.
            _ => return Err(usage("give exactly one of --container, --ip and --all")),
        };
        Ok(Plan {
            mode,
            register,
            resync: self.resync,
        })
    }

    /// `--ttl` and `--interval`.
    fn register_options(&self) -> anyhow::Result<RegisterOptions> {
        // The TTL alone first: an error then is --ttl's, and one that only
        // the interval brings is --interval's (no reading of the message).
        let mut register = RegisterOptions::new(self.ttl);
        register
            .validate()
            .map_err(|e| usage(format!("--ttl: {e}")))?;
        if let Some(i) = self.interval {
            register = register.with_interval(i);
            register
                .validate()
                .map_err(|e| usage(format!("--interval: {e}")))?;
        }
        Ok(register)
    }

    /// `--address`, `--host-ip` and `--network`.
    fn address(&self) -> anyhow::Result<Address> {
        if let Some(n) = &self.network {
            if n.trim().is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(usage(format!(
                    "--network: {n:?} is not a Docker network name"
                )));
            }
        }
        match (self.address, self.host_ip) {
            (AddressMode::Ip, None) => Ok(Address::Container {
                network: self.network.clone(),
            }),
            (AddressMode::Ip, Some(_)) => Err(usage(
                "--host-ip applies to --address published; add it, or drop --host-ip",
            )),
            (AddressMode::Published, None) => Err(usage(
                "--address published needs --host-ip ADDR: the host address other hosts reach the published port by",
            )),
            (AddressMode::Published, Some(ip)) if ip.is_unspecified() => Err(usage(format!(
                "--host-ip: {ip} is the unspecified address; give the address other hosts connect to"
            ))),
            (AddressMode::Published, Some(_)) if self.network.is_some() => Err(usage(
                "--network applies to --address ip; a published port is reached through --host-ip",
            )),
            (AddressMode::Published, Some(_)) if self.port.is_none() && !self.all => Err(usage(
                "--address published needs --port: the container port whose host binding to register",
            )),
            (AddressMode::Published, Some(host_ip)) => Ok(Address::Published { host_ip }),
        }
    }

    /// `--all`: every labelled container.
    fn host_mode(&self, address: Address) -> anyhow::Result<Mode> {
        discovery::Prefix::new(&self.prefix).map_err(|e| usage(format!("--prefix: {e}")))?;
        if self.port.is_some() || self.json_value || self.require_healthy {
            return Err(usage(
                "--port, --json-value and --require-healthy apply to one container; with --all use the labels discovery.port, discovery.value and discovery.require-healthy",
            ));
        }
        let only = match self.only_label.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(usage("--only-label: give a label key, or KEY=VALUE"));
            }
            Some(l) => Some(match l.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (l.to_owned(), None),
            }),
        };
        Ok(Mode::Host {
            prefix: self.prefix.trim_end_matches('/').to_owned(),
            address,
            only,
        })
    }

    /// `--ip`: a fixed address, no Docker.
    fn static_mode(&self, key: &str, ip: &str) -> anyhow::Result<Mode> {
        check_key(key)?;
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
        if self.address == AddressMode::Published {
            return Err(usage(
                "--address published needs --container or --all: the port binding comes from Docker",
            ));
        }
        Ok(Mode::Static {
            key: key.to_owned(),
            ip,
        })
    }
}

fn check_key(key: &str) -> anyhow::Result<()> {
    discovery::validate_key(key).map_err(|e| usage(format!("--key: {e}")))
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
