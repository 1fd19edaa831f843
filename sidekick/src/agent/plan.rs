//! The command line, checked, as the work to do: each [`Plan`] variant
//! holds everything its loop needs and nothing it must work out again.
//! Everything here is checked before etcd or Docker is touched, so a
//! mistake is exit 2 with what to fix, whatever state they are in.

use std::net::IpAddr;
use std::time::Duration;

use discovery::RegisterOptions;

use discovery::Prefix;

use super::args::{AddressMode, Args, FamilyArg};
use super::check::{CheckKind, CheckSpec, Given};
use super::decide::{Address, Family, Rules};
use super::value::{V6_SUFFIX, ValueFormat, ValueKind};
use crate::common::exit::usage;

/// What one sidekick process does.
#[derive(Debug, Clone)]
pub enum Plan {
    /// `--ip`: keep a fixed value at one key; no Docker.
    Static {
        /// `--key`.
        key: String,
        /// The value, rendered once: the address never changes.
        value: String,
        /// `--ttl` and `--interval` of the key's lease.
        register: RegisterOptions,
    },
    /// `--container`: follow one container, one key.
    Container(FollowConfig),
    /// `--all`: every labelled container on the host, under one lease.
    Host(HostConfig),
}

impl Plan {
    /// Whether the plan follows Docker (so `DOCKER_HOST` must make sense).
    pub fn needs_docker(&self) -> bool {
        !matches!(self, Plan::Static { .. })
    }
}

/// What `--container` needs.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// `--key`: where the address goes.
    pub key: String,
    /// `--container`: the container's name or id, as given.
    pub name: String,
    /// Which address to register, and when (`--network`, `--port`,
    /// `--address`, `--require-healthy`).
    pub rules: Rules,
    /// How the value is written (`--port`, `--json-value`).
    pub format: ValueFormat,
    /// `--check` and its settings: registered only while it passes.
    pub check: Option<CheckSpec>,
    /// `--ttl` and `--interval` of the key's lease.
    pub register: RegisterOptions,
    /// `--resync`: how often the container is inspected besides its events.
    pub resync: Duration,
}

/// What `--all` needs.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// `--prefix`, for registrator-style names (no trailing `/`).
    pub prefix: String,
    /// `--address` and `--host-ip`: every container's default, which its
    /// `discovery.network` label may refine.
    pub address: Address,
    /// `--only-label`: a label key, and the value it must have, for a
    /// container to be considered at all.
    pub only: Option<(String, Option<String>)>,
    /// `--allow-prefix` (default `--prefix`): the only prefixes labels may
    /// name keys under, so a container cannot write anywhere the agent can.
    pub allow: Vec<Prefix>,
    /// `--allow-exec-checks`: labels may ask for checks that run commands
    /// on the host.
    pub allow_exec_checks: bool,
    /// `--ttl` and `--interval` of the host's one lease.
    pub register: RegisterOptions,
    /// `--resync`: how often `docker ps` is compared with what we know.
    pub resync: Duration,
    /// The machine's host name: `%h` in keys, `host` in JSON values.
    pub hostname: String,
}

impl Args {
    /// Check everything that can be checked before touching etcd or Docker.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        // Checked here, not with clap's `requires`: clap counts a flag's
        // implicit `false` as present.
        if !self.all && (!self.allow_prefix.is_empty() || self.allow_exec_checks) {
            return Err(usage(
                "--allow-prefix and --allow-exec-checks apply to --all, the agent for labelled containers (for a unit, put SIDEKICK_ALLOW_PREFIX in /etc/default/sidekick-host)",
            ));
        }
        let register = self.register_options()?;
        let address = self.address()?;
        match (&self.key, &self.container, &self.ip, self.all) {
            (_, None, None, true) => self.host_plan(address, register),
            (Some(key), Some(c), None, false) => {
                check_key(key)?;
                let format = self.format();
                if address.family() == Family::Both && format.kind != ValueKind::Json {
                    check_key(&format!("{key}{V6_SUFFIX}"))?;
                }
                Ok(Plan::Container(FollowConfig {
                    key: key.clone(),
                    name: check_container(c)?,
                    rules: Rules {
                        address,
                        port: self.port,
                        require_healthy: self.require_healthy,
                    },
                    format,
                    check: self.check_spec()?,
                    register,
                    resync: self.resync,
                }))
            }
            (Some(key), None, Some(ip), false) => self.static_plan(key, ip, register),
            // clap's group and `required_unless_present` rule these out.
            _ => Err(usage("give exactly one of --container, --ip and --all")),
        }
    }

    /// `--json-value` and `--port`: how a single key's value is written.
    fn format(&self) -> ValueFormat {
        ValueFormat {
            kind: match (self.json_value, self.port) {
                (true, _) => ValueKind::Json,
                (false, Some(_)) => ValueKind::IpPort,
                (false, None) => ValueKind::Ip,
            },
            host: super::hostname(),
        }
    }

    /// `--check` and its settings, for one container.
    fn check_spec(&self) -> anyhow::Result<Option<CheckSpec>> {
        let Some(kind) = self.check.clone() else {
            return Ok(None);
        };
        if kind.needs_port() && self.port.is_none() {
            return Err(usage(format!(
                "--check {} needs --port: the port to connect to",
                kind.name()
            )));
        }
        if let CheckKind::Exec { argv } = &kind {
            let prog = std::ffi::OsString::from(&argv[0]);
            if crate::discover::parse::which(&prog).is_none() {
                return Err(usage(format!(
                    "--check exec:…: {:?} is not an executable file, nor in PATH",
                    argv[0]
                )));
            }
        }
        let given = Given {
            interval: self.check_interval,
            timeout: self.check_timeout,
            rise: self.check_rise,
            fall: self.check_fall,
            start_period: self.check_start_period,
        };
        CheckSpec::new(kind, given, |s| format!("--check-{s}"))
            .map(Some)
            .map_err(usage)
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
        let family = match self.family {
            None => Family::Auto,
            Some(FamilyArg::V4) => Family::V4,
            Some(FamilyArg::V6) => Family::V6,
            Some(FamilyArg::Both) => Family::Both,
        };
        if self.family.is_some() && (self.address == AddressMode::Published || self.ip.is_some()) {
            return Err(usage(
                "--family chooses among a container's own addresses (--address ip); a published port is reached through --host-ip, and --ip registers the address given, IPv4 or IPv6",
            ));
        }
        match (self.address, self.host_ip) {
            (AddressMode::Ip, None) => Ok(Address::Container {
                network: self.network.clone(),
                family,
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
    fn host_plan(&self, address: Address, register: RegisterOptions) -> anyhow::Result<Plan> {
        discovery::Prefix::new(&self.prefix).map_err(|e| usage(format!("--prefix: {e}")))?;
        if self.port.is_some() || self.json_value || self.require_healthy {
            return Err(usage(
                "--port, --json-value and --require-healthy apply to one container; with --all use the labels discovery.port, discovery.value and discovery.require-healthy",
            ));
        }
        if self.check.is_some() {
            return Err(usage(
                "--check and its settings apply to one container; with --all use the labels discovery.check, discovery.check-interval and so on",
            ));
        }
        let allow = match self.allow_prefix.is_empty() {
            true => vec![self.prefix.as_str()],
            false => self.allow_prefix.iter().map(String::as_str).collect(),
        };
        let allow = allow
            .into_iter()
            .map(|p| Prefix::new(p).map_err(|e| usage(format!("--allow-prefix: {e}"))))
            .collect::<anyhow::Result<Vec<_>>>()?;
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
        Ok(Plan::Host(HostConfig {
            prefix: self.prefix.trim_end_matches('/').to_owned(),
            address,
            only,
            allow,
            allow_exec_checks: self.allow_exec_checks,
            register,
            resync: self.resync,
            hostname: super::hostname(),
        }))
    }

    /// `--ip`: a fixed address, no Docker.
    fn static_plan(&self, key: &str, ip: &str, register: RegisterOptions) -> anyhow::Result<Plan> {
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
        if self.check.is_some() {
            return Err(usage(
                "--check needs --container (or --all and the label discovery.check): --ip keeps a fixed address",
            ));
        }
        if self.address == AddressMode::Published {
            return Err(usage(
                "--address published needs --container or --all: the port binding comes from Docker",
            ));
        }
        Ok(Plan::Static {
            key: key.to_owned(),
            value: self.format().render(ip, self.port, None),
            register,
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
