//! What to register, given what Docker says about the container. Pure
//! functions, so every rule is unit-tested without a daemon.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the sidekick needs to know about a container, from `docker inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ContainerView {
    /// The full id.
    pub id: String,
    /// The name, without the leading `/`.
    pub name: String,
    /// `State.Running` (true while paused too).
    pub running: bool,
    /// `State.Paused`.
    pub paused: bool,
    /// `State.Restarting`.
    pub restarting: bool,
    /// `State.StartedAt`: identifies one run of the container.
    pub started_at: String,
    /// Network name to the container's addresses on it.
    pub networks: BTreeMap<String, NetAddrs>,
    /// `State.Health.Status` when the image or run defines a HEALTHCHECK.
    pub health: Option<String>,
    /// TCP container port to the host ports Docker publishes it on.
    pub published: BTreeMap<u16, Vec<u16>>,
    /// TCP ports the container exposes (`EXPOSE`, `--expose`, `-p`).
    pub exposed: Vec<u16>,
    /// The container's labels.
    pub labels: BTreeMap<String, String>,
    /// The container's environment (`Config.Env`), for registrator's `SERVICE_*`.
    pub env: Vec<String>,
}

/// A container's addresses on one network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NetAddrs {
    /// `IPAddress`: none on an IPv6-only network, or before it is assigned.
    pub v4: Option<Ipv4Addr>,
    /// `GlobalIPv6Address`: set on a network created with `--ipv6`.
    pub v6: Option<Ipv6Addr>,
}

impl NetAddrs {
    /// Whether Docker gave no address at all.
    pub fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }
}

/// Which of a container's addresses to register (`--family`,
/// `discovery.family`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Family {
    /// No choice made: the IPv4 address, or the IPv6 one on a network
    /// that gives the container no IPv4 address.
    #[default]
    Auto,
    /// `4`: the IPv4 address only.
    V4,
    /// `6`: the IPv6 address only.
    V6,
    /// `both`: every address the container has on the network.
    Both,
}

impl Family {
    /// Read `4`, `6` or `both`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "4" => Some(Family::V4),
            "6" => Some(Family::V6),
            "both" => Some(Family::Both),
            _ => None,
        }
    }
}

/// Where a registered address comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// The container's IP on a Docker network (`--network`, or the default rule).
    Container {
        /// `--network`.
        network: Option<String>,
        /// `--family`: which of its addresses on that network.
        family: Family,
    },
    /// This host address, with the host port Docker publishes.
    Published {
        /// `--host-ip`.
        host_ip: IpAddr,
    },
}

impl Address {
    /// The family asked for (a published address is whatever `--host-ip` is).
    pub fn family(&self) -> Family {
        match self {
            Address::Container { family, .. } => *family,
            Address::Published { .. } => Family::Auto,
        }
    }
}

/// The rules from the command line (or a container's labels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Where the address comes from.
    pub address: Address,
    /// The container port registered (`--port`, `discovery.port`).
    pub port: Option<u16>,
    /// `--require-healthy`.
    pub require_healthy: bool,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Register these addresses (and port).
    Register {
        /// The addresses: one, or with `--family both` the IPv4 one and
        /// then the IPv6 one.
        addrs: Vec<IpAddr>,
        /// The port to register: the container port, or the host port it
        /// is published on.
        port: Option<u16>,
        /// The network it is on (`published` for a host binding).
        network: String,
    },
    /// Nothing should be registered now, for this reason.
    Withdraw(String),
    /// The configuration cannot work with this container: exit 2 with this message.
    Misconfigured(String),
}

/// Decide what to register for `view`. `draining` is true while a stop
/// that Docker announced for this run of the container is under way.
///
/// The network, unless `--network` names one: `bridge` if the container is
/// on it, else its only network. The same rule every time, so a restarted
/// sidekick picks what the running one picked. `preferred`, the network
/// registered last, only settles the case the rule cannot: several
/// networks, none of them `bridge`, after one was registered (a network
/// attached at run time); at startup that case is a usage error.
pub fn decide(
    view: &ContainerView,
    rules: &Rules,
    draining: bool,
    preferred: Option<&str>,
) -> Decision {
    if let Some(not_now) = not_runnable(view, rules, draining) {
        return not_now;
    }
    let (network_flag, family) = match &rules.address {
        Address::Published { host_ip } => return published(view, rules.port, *host_ip),
        Address::Container { network, family } => (network.as_deref(), *family),
    };
    let (network, addrs) = match network(view, network_flag, preferred) {
        Ok(chosen) => chosen,
        Err(d) => return d,
    };
    match pick(&view.name, network, addrs, family) {
        Ok(addrs) => Decision::Register {
            addrs,
            port: rules.port,
            network: network.to_owned(),
        },
        Err(d) => d,
    }
}

/// Why nothing can be registered for this run right now, if so: it does
/// not run, or is stopping, or is not healthy while that is required.
fn not_runnable(view: &ContainerView, rules: &Rules, draining: bool) -> Option<Decision> {
    let name = &view.name;
    if !view.running {
        return Some(Decision::Withdraw(format!(
            "container {name:?} is not running"
        )));
    }
    if view.paused {
        return Some(Decision::Withdraw(format!("container {name:?} is paused")));
    }
    if view.restarting {
        return Some(Decision::Withdraw(format!(
            "container {name:?} is restarting"
        )));
    }
    if draining {
        return Some(Decision::Withdraw(format!(
            "container {name:?} is stopping"
        )));
    }
    if !rules.require_healthy {
        return None;
    }
    match view.health.as_deref() {
        None => Some(Decision::Misconfigured(format!(
            "--require-healthy needs a HEALTHCHECK, and container {name:?} has none \
             (add HEALTHCHECK to its image, or --health-cmd to docker run)"
        ))),
        Some("healthy") => None,
        Some(other) => Some(Decision::Withdraw(format!(
            "container {name:?} is {other}, not healthy"
        ))),
    }
}

/// The network whose address to register, and the addresses on it.
fn network<'v>(
    view: &'v ContainerView,
    flag: Option<&str>,
    preferred: Option<&str>,
) -> Result<(&'v str, &'v NetAddrs), Decision> {
    let name = &view.name;
    let attached = || {
        let names: Vec<&str> = view.networks.keys().map(String::as_str).collect();
        if names.is_empty() {
            "no network".to_owned()
        } else {
            names.join(", ")
        }
    };
    if let Some(wanted) = flag {
        return match view.networks.get_key_value(wanted) {
            Some((n, a)) => Ok((n, a)),
            None => {
                let hint = match view.networks.keys().next() {
                    Some(first) if view.networks.len() == 1 => format!(" (use --network {first})"),
                    _ => String::new(),
                };
                Err(Decision::Misconfigured(format!(
                    "container {name:?} has no IP on network {wanted:?}; it is attached to: {}{hint}",
                    attached()
                )))
            }
        };
    }
    if let Some((n, a)) = view.networks.get_key_value("bridge") {
        return Ok((n, a));
    }
    if view.networks.len() == 1 {
        if let Some((n, a)) = view.networks.iter().next() {
            return Ok((n, a));
        }
    }
    if view.networks.is_empty() {
        return Err(Decision::Misconfigured(format!(
            "container {name:?} is on no network with an address; for a container on the host's network, register the host's address with --ip"
        )));
    }
    match preferred
        .and_then(|p| view.networks.get_key_value(p))
        .filter(|(_, a)| !a.is_empty())
    {
        Some((n, a)) => Ok((n, a)),
        None => Err(Decision::Misconfigured(format!(
            "container {name:?} is on several networks and none is the default bridge; choose one with --network: {}",
            attached()
        ))),
    }
}

/// The addresses `family` asks for among `addrs`, the container's on `network`.
fn pick(
    name: &str,
    network: &str,
    addrs: &NetAddrs,
    family: Family,
) -> Result<Vec<IpAddr>, Decision> {
    if addrs.is_empty() {
        if network == "host" || network == "none" {
            return Err(Decision::Misconfigured(format!(
                "container {name:?} uses network mode {network:?}, which gives it no address of its own; use --ip with the host's address"
            )));
        }
        return Err(Decision::Withdraw(format!(
            "container {name:?} has no address on {network:?} yet"
        )));
    }
    let (v4, v6) = (addrs.v4.map(IpAddr::V4), addrs.v6.map(IpAddr::V6));
    let picked: Vec<IpAddr> = match family {
        Family::Auto => v4.or(v6).into_iter().collect(),
        Family::V4 => v4.into_iter().collect(),
        Family::V6 => v6.into_iter().collect(),
        Family::Both => v4.into_iter().chain(v6).collect(),
    };
    if !picked.is_empty() {
        return Ok(picked);
    }
    Err(Decision::Misconfigured(match (family, v4, v6) {
        (Family::V4, _, Some(v6)) => format!(
            "container {name:?} has only an IPv6 address on network {network:?} ({v6}); register it with family 6 or both (--family, or the label discovery.family)"
        ),
        (_, Some(v4), _) => format!(
            "container {name:?} has no IPv6 address on network {network:?}, only {v4}; attach it to a network created with --ipv6, or register IPv4 with family 4 (--family, or the label discovery.family)"
        ),
        _ => format!("container {name:?} has no address of the family asked for on {network:?}"),
    }))
}

/// `--address published`: the host address and the host port Docker
/// binds to the container port.
fn published(view: &ContainerView, port: Option<u16>, host_ip: IpAddr) -> Decision {
    let name = &view.name;
    let Some(port) = port else {
        return Decision::Misconfigured(format!(
            "container {name:?}: --address published needs the container port to look up (--port, or the discovery.port label)"
        ));
    };
    match view.published.get(&port).and_then(|p| p.first()) {
        Some(host_port) => Decision::Register {
            addrs: vec![host_ip],
            port: Some(*host_port),
            network: "published".to_owned(),
        },
        None => {
            let have: Vec<String> = view.published.keys().map(u16::to_string).collect();
            Decision::Misconfigured(format!(
                "container {name:?} publishes no host port for {port}/tcp (published: {}); run it with -p HOSTPORT:{port}, or use --address ip",
                if have.is_empty() {
                    "none".to_owned()
                } else {
                    have.join(", ")
                }
            ))
        }
    }
}

/// Docker container events and what they mean for the registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventMeaning {
    /// The container is stopping or stopped: deregister at once.
    Down,
    /// It (re)started or resumed: inspect and register.
    Up,
    /// Something that may change the address or health: inspect.
    Recheck,
    /// Not ours to act on.
    Ignore,
}

/// Classify a container or network event by its action (and, for `kill`,
/// the signal: a SIGHUP sent to reload a server does not stop it).
pub fn meaning(kind: &str, action: &str, signal: Option<&str>) -> EventMeaning {
    match (kind, action) {
        ("container", "die" | "stop" | "pause" | "destroy") => EventMeaning::Down,
        // A process in the container was OOM-killed; the container may well
        // survive it (then nothing changes), and if not, `die` follows.
        ("container", "oom") => EventMeaning::Recheck,
        ("container", "kill") => {
            let sig = signal.unwrap_or("");
            let harmless = [
                "1", "10", "12", "28", "18", "SIGHUP", "HUP", "SIGUSR1", "USR1", "SIGUSR2", "USR2",
                "SIGWINCH", "WINCH", "SIGCONT", "CONT",
            ];
            if harmless.contains(&sig) {
                EventMeaning::Recheck
            } else {
                EventMeaning::Down
            }
        }
        ("container", "start" | "restart" | "unpause") => EventMeaning::Up,
        ("container", a) if a.starts_with("health_status") => EventMeaning::Recheck,
        ("container", "rename" | "update") => EventMeaning::Recheck,
        ("network", "connect" | "disconnect") => EventMeaning::Recheck,
        _ => EventMeaning::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(nets: &[(&str, &str)]) -> ContainerView {
        ContainerView {
            id: "abc".into(),
            name: "memcached-1".into(),
            running: true,
            started_at: "t1".into(),
            networks: nets
                .iter()
                .map(|(n, a)| (n.to_string(), addrs(a)))
                .collect(),
            ..Default::default()
        }
    }

    /// `"172.17.0.2"`, `"fd00::2"`, `"172.17.0.2,fd00::2"` or `""`.
    fn addrs(a: &str) -> NetAddrs {
        let mut n = NetAddrs::default();
        for ip in a.split(',').filter(|s| !s.is_empty()) {
            match ip.parse().unwrap() {
                IpAddr::V4(v4) => n.v4 = Some(v4),
                IpAddr::V6(v6) => n.v6 = Some(v6),
            }
        }
        n
    }

    fn rules(network: Option<&str>) -> Rules {
        family_rules(network, Family::Auto)
    }

    fn family_rules(network: Option<&str>, family: Family) -> Rules {
        Rules {
            address: Address::Container {
                network: network.map(str::to_owned),
                family,
            },
            port: None,
            require_healthy: false,
        }
    }

    #[test]
    fn default_network_choice() {
        let reg = |ip: &str, net: &str| Decision::Register {
            addrs: vec![ip.parse().unwrap()],
            port: None,
            network: net.into(),
        };
        assert_eq!(
            decide(
                &view(&[("bridge", "172.17.0.2")]),
                &rules(None),
                false,
                None
            ),
            reg("172.17.0.2", "bridge")
        );
        // The default bridge wins even alongside others (flannel configures docker0).
        assert_eq!(
            decide(
                &view(&[("bridge", "172.17.0.2"), ("net1", "10.1.0.5")]),
                &rules(None),
                false,
                None
            ),
            reg("172.17.0.2", "bridge")
        );
        assert_eq!(
            decide(&view(&[("net1", "10.1.0.5")]), &rules(None), false, None),
            reg("10.1.0.5", "net1")
        );
        let Decision::Misconfigured(m) = decide(
            &view(&[("a", "1.1.1.1"), ("b", "2.2.2.2")]),
            &rules(None),
            false,
            None,
        ) else {
            panic!()
        };
        assert!(
            m.contains("several networks") && m.contains("a, b") && m.contains("--network"),
            "{m}"
        );
        let Decision::Misconfigured(m) = decide(&view(&[("host", "")]), &rules(None), false, None)
        else {
            panic!()
        };
        assert!(m.contains("--ip"), "{m}");
    }

    #[test]
    fn the_registered_network_only_settles_what_the_rule_cannot() {
        // The rule decides whenever it can, whatever was registered before,
        // so a restarted sidekick agrees with the one it replaces.
        let v = view(&[("bridge", "172.17.0.2"), ("a", "10.1.0.2")]);
        assert_eq!(
            decide(&v, &rules(None), false, Some("a")),
            Decision::Register {
                addrs: vec!["172.17.0.2".parse().unwrap()],
                port: None,
                network: "bridge".into()
            }
        );
        // Several networks and no bridge: the one registered is kept.
        let v = view(&[("a", "10.1.0.2"), ("b", "10.2.0.2")]);
        assert_eq!(
            decide(&v, &rules(None), false, Some("a")),
            Decision::Register {
                addrs: vec!["10.1.0.2".parse().unwrap()],
                port: None,
                network: "a".into()
            }
        );
        // Gone from it: the usual rules apply (its only network now).
        let v = view(&[("b", "10.2.0.2")]);
        assert_eq!(
            decide(&v, &rules(None), false, Some("a")),
            Decision::Register {
                addrs: vec!["10.2.0.2".parse().unwrap()],
                port: None,
                network: "b".into()
            }
        );
    }

    #[test]
    fn named_network() {
        assert_eq!(
            decide(
                &view(&[("bridge", "172.17.0.2"), ("net1", "10.1.0.5")]),
                &rules(Some("net1")),
                false,
                None
            ),
            Decision::Register {
                addrs: vec!["10.1.0.5".parse().unwrap()],
                port: None,
                network: "net1".into()
            }
        );
        let Decision::Misconfigured(m) = decide(
            &view(&[("overlay0", "10.2.0.2")]),
            &rules(Some("bridge")),
            false,
            None,
        ) else {
            panic!()
        };
        assert_eq!(
            m,
            "container \"memcached-1\" has no IP on network \"bridge\"; it is attached to: overlay0 (use --network overlay0)"
        );
    }

    #[test]
    fn states_withdraw() {
        let mut v = view(&[("bridge", "172.17.0.2")]);
        assert!(
            matches!(decide(&v, &rules(None), true, None), Decision::Withdraw(m) if m.contains("stopping"))
        );
        v.paused = true;
        assert!(
            matches!(decide(&v, &rules(None), false, None), Decision::Withdraw(m) if m.contains("paused"))
        );
        v.paused = false;
        v.running = false;
        assert!(
            matches!(decide(&v, &rules(None), false, None), Decision::Withdraw(m) if m.contains("not running"))
        );
        let v = view(&[("bridge", "")]);
        assert!(
            matches!(decide(&v, &rules(None), false, None), Decision::Withdraw(m) if m.contains("no address"))
        );
    }

    #[test]
    fn health() {
        let strict = Rules {
            require_healthy: true,
            ..rules(None)
        };
        let mut v = view(&[("bridge", "172.17.0.2")]);
        assert!(
            matches!(decide(&v, &strict, false, None), Decision::Misconfigured(m) if m.contains("HEALTHCHECK"))
        );
        v.health = Some("starting".into());
        assert!(
            matches!(decide(&v, &strict, false, None), Decision::Withdraw(m) if m.contains("starting"))
        );
        v.health = Some("healthy".into());
        assert!(matches!(
            decide(&v, &strict, false, None),
            Decision::Register { .. }
        ));
        v.health = Some("unhealthy".into());
        assert!(
            matches!(
                decide(&v, &rules(None), false, None),
                Decision::Register { .. }
            ),
            "health ignored unless required"
        );
    }

    #[test]
    fn published_ports() {
        let mut v = view(&[("bridge", "172.17.0.2")]);
        v.published.insert(11211, vec![32768]);
        let r = |port| Rules {
            address: Address::Published {
                host_ip: "192.0.2.1".parse().unwrap(),
            },
            port,
            require_healthy: false,
        };
        assert_eq!(
            decide(&v, &r(Some(11211)), false, None),
            Decision::Register {
                addrs: vec!["192.0.2.1".parse().unwrap()],
                port: Some(32768),
                network: "published".into()
            }
        );
        let Decision::Misconfigured(m) = decide(&v, &r(Some(80)), false, None) else {
            panic!()
        };
        assert!(
            m.contains("no host port for 80/tcp") && m.contains("-p HOSTPORT:80"),
            "{m}"
        );
    }

    #[test]
    fn families_on_ipv4_only_dual_stack_and_ipv6_only_networks() {
        let reg = |ips: &[&str]| Decision::Register {
            addrs: ips.iter().map(|i| i.parse().unwrap()).collect(),
            port: None,
            network: "net".into(),
        };
        let v4 = view(&[("net", "10.1.0.2")]);
        let dual = view(&[("net", "10.1.0.2,fd00::2")]);
        let v6 = view(&[("net", "fd00::2")]);
        let d = |v: &ContainerView, f| decide(v, &family_rules(None, f), false, None);
        // The default: today's IPv4, and the IPv6 address where there is no other.
        assert_eq!(d(&v4, Family::Auto), reg(&["10.1.0.2"]));
        assert_eq!(d(&dual, Family::Auto), reg(&["10.1.0.2"]));
        assert_eq!(d(&v6, Family::Auto), reg(&["fd00::2"]));
        assert_eq!(d(&dual, Family::V4), reg(&["10.1.0.2"]));
        assert_eq!(d(&dual, Family::V6), reg(&["fd00::2"]));
        assert_eq!(d(&v6, Family::V6), reg(&["fd00::2"]));
        assert_eq!(d(&dual, Family::Both), reg(&["10.1.0.2", "fd00::2"]));
        assert_eq!(d(&v6, Family::Both), reg(&["fd00::2"]));
        assert_eq!(d(&v4, Family::Both), reg(&["10.1.0.2"]));
        let Decision::Misconfigured(m) = d(&v6, Family::V4) else {
            panic!()
        };
        assert!(
            m.contains("only an IPv6 address") && m.contains("fd00::2"),
            "{m}"
        );
        let Decision::Misconfigured(m) = d(&v4, Family::V6) else {
            panic!()
        };
        assert!(m.contains("no IPv6 address") && m.contains("--ipv6"), "{m}");
        assert!(matches!(
            d(&view(&[("net", "")]), Family::V6),
            Decision::Withdraw(_)
        ));
    }

    #[test]
    fn event_meanings() {
        assert_eq!(meaning("container", "die", None), EventMeaning::Down);
        assert_eq!(meaning("container", "kill", Some("15")), EventMeaning::Down);
        assert_eq!(meaning("container", "kill", Some("9")), EventMeaning::Down);
        assert_eq!(
            meaning("container", "kill", Some("1")),
            EventMeaning::Recheck
        );
        assert_eq!(meaning("container", "start", None), EventMeaning::Up);
        assert_eq!(meaning("container", "oom", None), EventMeaning::Recheck);
        assert_eq!(
            meaning("container", "health_status: healthy", None),
            EventMeaning::Recheck
        );
        assert_eq!(
            meaning("network", "disconnect", None),
            EventMeaning::Recheck
        );
        assert_eq!(
            meaning("container", "exec_start: sh", None),
            EventMeaning::Ignore
        );
    }
}
