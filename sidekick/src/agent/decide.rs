//! What to register, given what Docker says about the container. Pure
//! functions, so every rule is unit-tested without a daemon.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

pub use super::args::Address;

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
    /// Network name to IPv4 address (empty when Docker gave none).
    pub networks: BTreeMap<String, String>,
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

/// What a registered value holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// The bare IP.
    Ip,
    /// `IP:PORT` (`[IP]:PORT` for IPv6).
    IpPort,
    /// `{"ip":…,"port":…,"container":…,"host":…}`.
    Json,
}

/// How the registered value is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueFormat {
    /// What the value holds.
    pub kind: ValueKind,
    /// The machine's host name, for the JSON form.
    pub host: String,
}

#[derive(Serialize)]
struct JsonValue<'a> {
    ip: &'a str,
    port: Option<u16>,
    container: Option<&'a str>,
    host: &'a str,
}

impl ValueFormat {
    /// The bytes to register for `ip` and `port` (and the container's
    /// name, if any). Deterministic, so the same state always gives the
    /// same bytes. `IpPort` without a port writes the bare IP.
    pub fn render(&self, ip: &str, port: Option<u16>, container: Option<&str>) -> String {
        match (self.kind, port) {
            (ValueKind::Json, _) => {
                let v = JsonValue {
                    ip,
                    port,
                    container,
                    host: &self.host,
                };
                // Serializing plain strings and numbers cannot fail.
                serde_json::to_string(&v).unwrap_or_default()
            }
            (ValueKind::IpPort, Some(p)) if ip.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6()) => {
                format!("[{ip}]:{p}")
            }
            (ValueKind::IpPort, Some(p)) => format!("{ip}:{p}"),
            (ValueKind::Ip | ValueKind::IpPort, _) => ip.to_owned(),
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
    /// Register this IP (and port).
    Register {
        /// The address.
        ip: String,
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
    let name = &view.name;
    if !view.running {
        return Decision::Withdraw(format!("container {name:?} is not running"));
    }
    if view.paused {
        return Decision::Withdraw(format!("container {name:?} is paused"));
    }
    if view.restarting {
        return Decision::Withdraw(format!("container {name:?} is restarting"));
    }
    if draining {
        return Decision::Withdraw(format!("container {name:?} is stopping"));
    }
    if rules.require_healthy {
        match view.health.as_deref() {
            None => {
                return Decision::Misconfigured(format!(
                    "--require-healthy needs a HEALTHCHECK, and container {name:?} has none \
                     (add HEALTHCHECK to its image, or --health-cmd to docker run)"
                ));
            }
            Some("healthy") => {}
            Some(other) => {
                return Decision::Withdraw(format!("container {name:?} is {other}, not healthy"));
            }
        }
    }
    if let Address::Published { host_ip } = &rules.address {
        return published(view, rules.port, *host_ip);
    }
    let network_flag = match &rules.address {
        Address::Container { network } => network.clone(),
        Address::Published { .. } => None,
    };
    let attached = || {
        let names: Vec<&str> = view.networks.keys().map(String::as_str).collect();
        if names.is_empty() {
            "no network".to_owned()
        } else {
            names.join(", ")
        }
    };
    let (network, ip) = match &network_flag {
        Some(wanted) => match view.networks.get(wanted) {
            Some(ip) => (wanted.clone(), ip.clone()),
            None => {
                let hint = match view.networks.keys().next() {
                    Some(first) if view.networks.len() == 1 => format!(" (use --network {first})"),
                    _ => String::new(),
                };
                return Decision::Misconfigured(format!(
                    "container {name:?} has no IP on network {wanted:?}; it is attached to: {}{hint}",
                    attached()
                ));
            }
        },
        None => {
            let kept = preferred
                .and_then(|p| view.networks.get_key_value(p))
                .filter(|(_, ip)| !ip.is_empty());
            if let Some(ip) = view.networks.get("bridge") {
                ("bridge".to_owned(), ip.clone())
            } else if view.networks.len() == 1 {
                let (n, ip) = view
                    .networks
                    .iter()
                    .next()
                    .map(|(n, i)| (n.clone(), i.clone()))
                    .unwrap_or_default();
                (n, ip)
            } else if view.networks.is_empty() {
                return Decision::Misconfigured(format!(
                    "container {name:?} is on no network with an address; for a container on the host's network, register the host's address with --ip"
                ));
            } else if let Some((n, ip)) = kept {
                (n.clone(), ip.clone())
            } else {
                return Decision::Misconfigured(format!(
                    "container {name:?} is on several networks and none is the default bridge; choose one with --network: {}",
                    attached()
                ));
            }
        }
    };
    if ip.is_empty() {
        if network == "host" || network == "none" {
            return Decision::Misconfigured(format!(
                "container {name:?} uses network mode {network:?}, which gives it no address of its own; use --ip with the host's address"
            ));
        }
        return Decision::Withdraw(format!(
            "container {name:?} has no address on {network:?} yet"
        ));
    }
    Decision::Register {
        ip,
        port: rules.port,
        network,
    }
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
            ip: host_ip.to_string(),
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
                .map(|(n, i)| (n.to_string(), i.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn rules(network: Option<&str>) -> Rules {
        Rules {
            address: Address::Container {
                network: network.map(str::to_owned),
            },
            port: None,
            require_healthy: false,
        }
    }

    #[test]
    fn default_network_choice() {
        let reg = |ip: &str, net: &str| Decision::Register {
            ip: ip.into(),
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
                ip: "172.17.0.2".into(),
                port: None,
                network: "bridge".into()
            }
        );
        // Several networks and no bridge: the one registered is kept.
        let v = view(&[("a", "10.1.0.2"), ("b", "10.2.0.2")]);
        assert_eq!(
            decide(&v, &rules(None), false, Some("a")),
            Decision::Register {
                ip: "10.1.0.2".into(),
                port: None,
                network: "a".into()
            }
        );
        // Gone from it: the usual rules apply (its only network now).
        let v = view(&[("b", "10.2.0.2")]);
        assert_eq!(
            decide(&v, &rules(None), false, Some("a")),
            Decision::Register {
                ip: "10.2.0.2".into(),
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
                ip: "10.1.0.5".into(),
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
    fn values() {
        let f = |kind| ValueFormat {
            kind,
            host: "node1".into(),
        };
        use ValueKind::*;
        assert_eq!(f(Ip).render("10.1.0.2", Some(1), Some("m")), "10.1.0.2");
        assert_eq!(
            f(IpPort).render("10.1.0.2", Some(11211), Some("m")),
            "10.1.0.2:11211"
        );
        assert_eq!(f(IpPort).render("fd00::2", Some(80), None), "[fd00::2]:80");
        assert_eq!(
            f(Json).render("10.1.0.2", Some(8091), Some("couchbase-1")),
            r#"{"ip":"10.1.0.2","port":8091,"container":"couchbase-1","host":"node1"}"#
        );
        assert_eq!(
            f(Json).render("10.1.0.2", None, None),
            r#"{"ip":"10.1.0.2","port":null,"container":null,"host":"node1"}"#
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
                ip: "192.0.2.1".into(),
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
