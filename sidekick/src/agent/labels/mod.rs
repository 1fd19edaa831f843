//! Which keys a container asks for in host mode (`--all`), from its labels
//! (and, for registrator's `SERVICE_*`, its environment). Pure functions,
//! unit-tested without a daemon.
//!
//! | label | meaning |
//! |---|---|
//! | `discovery.key` | the etcd key; `%n` container name, `%h` host name, `%p` the port |
//! | `discovery.port` | the container port to register (the value becomes `IP:PORT`) |
//! | `discovery.network` | which network's address (default: bridge, else the only one) |
//! | `discovery.family` | `4`, `6` or `both` (default: IPv4, else IPv6) |
//! | `discovery.value` | `ip`, `ip:port` or `json` |
//! | `discovery.require-healthy` | `true`: only while Docker reports it healthy |
//! | `discovery.check` | `tcp`, `http:PATH`, `exec:CMD` or `docker-exec:CMD` |
//! | `discovery.check-interval`, `-timeout`, `-rise`, `-fall`, `-start-period` | as the flags |
//!
//! Registrator compatibility is in `registrator.rs`; what a key may be, in
//! `trust.rs`.

mod registrator;
mod trust;

use std::collections::BTreeMap;

use super::check::{CheckKind, CheckSpec, Settings};
use super::decide::{Address, ContainerView, Family, Rules};
use super::plan::HostConfig;
use super::value::{V6_SUFFIX, ValueKind};
pub use trust::MAX_LABEL_VALUE;

/// One key a container asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The etcd key, placeholders expanded.
    pub key: String,
    /// How to find the address.
    pub rules: Rules,
    /// What the value holds.
    pub value: ValueKind,
    /// Its health check, if any: registered only while it passes.
    pub check: Option<CheckSpec>,
}

/// What a container's labels ask for: its keys, and what is wrong with
/// them (each problem names the label and what to do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// The keys to register.
    pub specs: Vec<Spec>,
    /// Problems; a container with problems registers nothing.
    pub problems: Vec<String>,
}

impl Wanted {
    /// Whether the container opts in at all.
    pub fn opted_in(&self) -> bool {
        !self.specs.is_empty() || !self.problems.is_empty()
    }
}

/// Every label `--all` reads, with what it means. The man page's LABELS
/// section is generated from this table (`packaging/docgen`), so a label
/// added here is documented there.
pub const LABELS: [(&str, &str); 12] = [
    (
        "discovery.key",
        "the etcd key; %n is the container name, %h the host name, %p the port",
    ),
    (
        "discovery.port",
        "the container port to register (the value becomes IP:PORT)",
    ),
    (
        "discovery.network",
        "which network's address (default: bridge, else the container's only network)",
    ),
    (
        "discovery.family",
        "4, 6 or both: which of the container's addresses to register, as --family",
    ),
    (
        "discovery.value",
        "what the value holds: ip, ip:port or json",
    ),
    (
        "discovery.require-healthy",
        "true: registered only while Docker reports the container healthy",
    ),
    (
        "discovery.check",
        "an active health check, as --check: tcp, http:PATH, docker-exec:CMD (exec:CMD with --allow-exec-checks)",
    ),
    (
        "discovery.check-interval",
        "time between checks, as --check-interval",
    ),
    (
        "discovery.check-timeout",
        "how long one check may take, as --check-timeout",
    ),
    (
        "discovery.check-rise",
        "consecutive passes before the key is written again, as --check-rise",
    ),
    (
        "discovery.check-fall",
        "consecutive failures before the key is withdrawn, as --check-fall",
    ),
    (
        "discovery.check-start-period",
        "failures do not count before this, as --check-start-period",
    ),
];

/// Whether `label` is one of [`LABELS`].
fn known(label: &str) -> bool {
    LABELS.iter().any(|(name, _)| *name == label)
}

/// The names of [`LABELS`], for a message.
fn known_names() -> String {
    let names: Vec<&str> = LABELS.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

/// Read the labels (and environment) of `view`, for an agent configured
/// by `cfg`.
pub fn wanted(view: &ContainerView, cfg: &HostConfig) -> Wanted {
    let mut w = Wanted::default();
    let labels = &view.labels;
    for (k, v) in labels {
        if !k.starts_with("discovery.") {
            continue;
        }
        if !known(k) {
            w.problems
                .push(format!("unknown label {k:?} (known: {})", known_names()));
        } else if let Err(e) = trust::check_size(&format!("label {k}"), v) {
            w.problems.push(e);
        }
    }
    if !w.problems.is_empty() {
        return w;
    }
    if let Some(template) = labels.get("discovery.key") {
        match discovery_spec(view, template, cfg) {
            Ok(spec) => w.specs.push(spec),
            Err(p) => w.problems.push(p),
        }
    } else if labels.keys().any(|k| known(k)) {
        w.problems.push(
            "discovery.* labels without discovery.key: add --label discovery.key=/services/NAME/%n"
                .into(),
        );
    }
    registrator::specs(view, cfg, &mut w);
    if !w.problems.is_empty() {
        w.specs.clear();
    }
    w
}

fn discovery_spec(view: &ContainerView, template: &str, cfg: &HostConfig) -> Result<Spec, String> {
    let labels = &view.labels;
    let label = |k: &str| labels.get(k).map(|v| v.trim());
    let port = match label("discovery.port") {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("discovery.port={p:?} is not a port number (1-65535)"))?,
        ),
    };
    let value = match label("discovery.value") {
        None if port.is_some() => ValueKind::IpPort,
        None | Some("ip") => ValueKind::Ip,
        Some("ip:port") if port.is_some() => ValueKind::IpPort,
        Some("ip:port") => {
            return Err("discovery.value=ip:port needs discovery.port".into());
        }
        Some("json") => ValueKind::Json,
        Some(other) => {
            return Err(format!(
                "discovery.value={other:?} is not one of ip, ip:port, json"
            ));
        }
    };
    let require_healthy = match label("discovery.require-healthy") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "discovery.require-healthy={other:?} is not true or false"
            ));
        }
    };
    let address = address(
        &cfg.address,
        label("discovery.network"),
        label("discovery.family"),
    )?;
    if matches!(address, Address::Published { .. }) && port.is_none() {
        return Err(
            "--address published needs discovery.port: the container port whose host binding to register"
                .into(),
        );
    }
    if template.contains("%p") && port.is_none() {
        return Err(format!(
            "discovery.key={template:?} uses %p but there is no discovery.port"
        ));
    }
    let key = expand(template, &view.name, &cfg.hostname, port);
    check_keys(&key, address.family(), value, cfg)
        .map_err(|e| format!("discovery.key={template:?}: {e}"))?;
    let check = check(labels, port, cfg)?;
    Ok(Spec {
        key,
        rules: Rules {
            address,
            port,
            require_healthy,
        },
        value,
        check,
    })
}

/// `discovery.network` and `discovery.family` over the agent's `--address`.
fn address(
    agent: &Address,
    network: Option<&str>,
    family: Option<&str>,
) -> Result<Address, String> {
    match agent {
        Address::Published { .. } if network.is_some() => Err(
            "discovery.network does not apply: this agent registers published ports (--address published)"
                .into(),
        ),
        Address::Published { .. } if family.is_some() => Err(
            "discovery.family does not apply: this agent registers published ports (--address published), whose address is --host-ip"
                .into(),
        ),
        Address::Published { .. } => Ok(agent.clone()),
        Address::Container {
            network: default_network,
            family: default_family,
        } => {
            let network = match network {
                None => default_network.clone(),
                Some("") => return Err("discovery.network=\"\" is not a network name".into()),
                Some(n) => Some(n.to_owned()),
            };
            let family = match family {
                None => *default_family,
                Some(f) => Family::parse(f)
                    .ok_or_else(|| format!("discovery.family={f:?} is not one of 4, 6, both"))?,
            };
            Ok(Address::Container { network, family })
        }
    }
}

/// Check the keys a spec writes: `key`, and with `both` in the `ip` and
/// `ip:port` formats also `key-v6`.
fn check_keys(key: &str, family: Family, value: ValueKind, cfg: &HostConfig) -> Result<(), String> {
    trust::check_key(key, &cfg.allow)?;
    if family == Family::Both && value != ValueKind::Json {
        trust::check_key(&format!("{key}{V6_SUFFIX}"), &cfg.allow)?;
    }
    Ok(())
}

/// The `discovery.check*` labels.
fn check(
    labels: &BTreeMap<String, String>,
    port: Option<u16>,
    cfg: &HostConfig,
) -> Result<Option<CheckSpec>, String> {
    let get = |k: &str| {
        labels
            .get_key_value(k)
            .map(|(k, v)| (k.clone(), v.as_str()))
    };
    let settings = Settings {
        check: get("discovery.check"),
        interval: get("discovery.check-interval"),
        timeout: get("discovery.check-timeout"),
        rise: get("discovery.check-rise"),
        fall: get("discovery.check-fall"),
        start_period: get("discovery.check-start-period"),
    };
    let spec = settings.spec()?;
    if let Some(s) = &spec {
        allowed_check(
            &s.kind,
            "discovery.check",
            port.is_some(),
            "discovery.port",
            cfg,
        )?;
    }
    Ok(spec)
}

/// Whether the agent runs this kind of check for a container: tcp and
/// http need a port, and a command on the host only with
/// `--allow-exec-checks` (a label must not run commands on the host
/// unless its operator said so: Consul's `enable_script_checks`).
pub(super) fn allowed_check(
    kind: &CheckKind,
    name: &str,
    has_port: bool,
    port_name: &str,
    cfg: &HostConfig,
) -> Result<(), String> {
    if kind.needs_port() && !has_port {
        return Err(format!(
            "{name}={} needs {port_name}: the port to connect to",
            kind.name()
        ));
    }
    if matches!(kind, CheckKind::Exec { .. }) && !cfg.allow_exec_checks {
        return Err(format!(
            "{name}=exec:… runs a command on the host as the agent's user, which this agent does not allow (start it with --allow-exec-checks); docker-exec:… runs it inside the container instead"
        ));
    }
    Ok(())
}

fn expand(template: &str, name: &str, host: &str, port: Option<u16>) -> String {
    let mut out = String::with_capacity(template.len() + name.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(name),
            Some('h') => out.push_str(host),
            Some('p') => out.push_str(&port.map(|p| p.to_string()).unwrap_or_default()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use discovery::{Prefix, RegisterOptions};
    use std::time::Duration;

    pub(crate) fn cfg() -> HostConfig {
        HostConfig {
            prefix: "/services".into(),
            address: Address::Container {
                network: None,
                family: Family::Auto,
            },
            only: None,
            allow: vec![
                Prefix::new("/s").unwrap(),
                Prefix::new("/services").unwrap(),
            ],
            allow_exec_checks: false,
            register: RegisterOptions::new(Duration::from_secs(8)),
            resync: Duration::from_secs(60),
            hostname: "node1".into(),
        }
    }

    pub(crate) fn view(labels: &[(&str, &str)]) -> ContainerView {
        ContainerView {
            id: "abc".into(),
            name: "memcached-1".into(),
            running: true,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn unlabelled_containers_are_ignored() {
        assert!(!wanted(&view(&[("other", "x")]), &cfg()).opted_in());
    }

    #[test]
    fn discovery_key_with_placeholders() {
        let w = wanted(
            &view(&[
                ("discovery.key", "/services/memcached/%h/%n/%p"),
                ("discovery.port", "11211"),
            ]),
            &cfg(),
        );
        assert_eq!(w.problems, Vec::<String>::new());
        assert_eq!(
            w.specs[0].key,
            "/services/memcached/node1/memcached-1/11211"
        );
        assert_eq!(w.specs[0].value, ValueKind::IpPort);
        assert_eq!(w.specs[0].rules.port, Some(11211));
        assert_eq!(w.specs[0].check, None);
    }

    #[test]
    fn bad_labels_are_problems_and_register_nothing() {
        let long = "x".repeat(MAX_LABEL_VALUE + 1);
        for (labels, want) in [
            (
                vec![("discovery.key", "/s/%n"), ("discovery.port", "http")],
                "not a port",
            ),
            (
                vec![("discovery.key", "/s/%n"), ("discovery.value", "xml")],
                "not one of",
            ),
            (vec![("discovery.key", "/s/%p")], "uses %p"),
            (vec![("discovery.key", "s/%n")], "must start with '/'"),
            (
                vec![("discovery.key", "/s/%n"), ("discovery.prot", "1")],
                "unknown label",
            ),
            (vec![("discovery.port", "1")], "without discovery.key"),
            (
                vec![
                    ("discovery.key", "/s/%n"),
                    ("discovery.require-healthy", "yes"),
                ],
                "true or false",
            ),
            (
                vec![("discovery.key", "/s/%n"), ("discovery.family", "5")],
                "not one of 4, 6, both",
            ),
            (
                vec![("discovery.key", "/s/%n"), ("discovery.check", "tcp")],
                "needs discovery.port",
            ),
            (
                vec![("discovery.key", "/s/%n"), ("discovery.check", "exec:true")],
                "--allow-exec-checks",
            ),
            (
                vec![("discovery.key", "/s/%n"), ("discovery.check-fall", "2")],
                "no check to apply it to",
            ),
            (
                vec![("discovery.key", "/s/%n"), ("discovery.check", &long)],
                "4097 bytes long",
            ),
        ] {
            let w = wanted(&view(&labels), &cfg());
            assert!(w.specs.is_empty(), "{labels:?}");
            assert!(
                w.problems.iter().any(|p| p.contains(want)),
                "{labels:?}: {:?}",
                w.problems
            );
        }
    }

    #[test]
    fn keys_must_stay_under_the_allowed_prefixes_after_expansion() {
        for template in [
            "/config/web-lb/listen",
            "/services/../config/%n",
            "/services/%n/../../config/x",
            "/servic%n",
        ] {
            let w = wanted(&view(&[("discovery.key", template)]), &cfg());
            assert!(w.specs.is_empty(), "{template}");
            assert!(
                w.problems[0].contains("outside the prefixes")
                    || w.problems[0].contains("'..' segment"),
                "{template}: {:?}",
                w.problems
            );
        }
        // The second key of `both` is checked too.
        let mut c = cfg();
        c.allow = vec![Prefix::new("/services/web/1").unwrap()];
        let w = wanted(
            &view(&[
                ("discovery.key", "/services/web/1/a"),
                ("discovery.family", "both"),
            ]),
            &c,
        );
        assert!(w.problems.is_empty(), "{:?}", w.problems);
    }

    #[test]
    fn checks_and_families_from_labels() {
        let w = wanted(
            &view(&[
                ("discovery.key", "/s/%n"),
                ("discovery.port", "80"),
                ("discovery.family", "both"),
                ("discovery.check", "http:/health"),
                ("discovery.check-interval", "2s"),
                ("discovery.check-fall", "2"),
            ]),
            &cfg(),
        );
        assert_eq!(w.problems, Vec::<String>::new());
        let s = &w.specs[0];
        assert_eq!(s.rules.address.family(), Family::Both);
        let check = s.check.as_ref().unwrap();
        assert_eq!(
            check.kind,
            CheckKind::Http {
                path: "/health".into()
            }
        );
        assert_eq!(
            (check.interval, check.timeout, check.fall),
            (Duration::from_secs(2), Duration::from_secs(2), 2)
        );
        let mut c = cfg();
        c.allow_exec_checks = true;
        let w = wanted(
            &view(&[("discovery.key", "/s/%n"), ("discovery.check", "exec:true")]),
            &c,
        );
        assert_eq!(w.problems, Vec::<String>::new());
    }

    #[test]
    fn placeholders() {
        assert_eq!(
            expand("/a/%n/%h/%p/%%/%x", "c", "h", Some(1)),
            "/a/c/h/1/%/%x"
        );
    }
}
