//! Which keys a container asks for in host mode (`--all`), from its labels
//! (and, for registrator's `SERVICE_*`, its environment). Pure functions,
//! unit-tested without a daemon.
//!
//! | label | meaning |
//! |---|---|
//! | `discovery.key` | the etcd key; `%n` container name, `%h` host name, `%p` the port |
//! | `discovery.port` | the container port to register (the value becomes `IP:PORT`) |
//! | `discovery.network` | which network's address (default: bridge, else the only one) |
//! | `discovery.value` | `ip`, `ip:port` or `json` |
//! | `discovery.require-healthy` | `true`: only while Docker reports it healthy |
//!
//! Registrator compatibility: `SERVICE_NAME` (or `SERVICE_<port>_NAME`),
//! as a label or in the environment, registers `IP:PORT` at
//! `<prefix>/<name>/<hostname>:<container>:<port>` for each exposed port
//! (or that one port); `SERVICE_IGNORE` / `SERVICE_<port>_IGNORE` skip.

use std::collections::BTreeMap;

use super::args::Address;
use super::decide::{ContainerView, Rules, ValueKind};

/// One key a container asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The etcd key, placeholders expanded.
    pub key: String,
    /// How to find the address.
    pub rules: Rules,
    /// What the value holds.
    pub value: ValueKind,
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

const KNOWN: [&str; 5] = [
    "discovery.key",
    "discovery.port",
    "discovery.network",
    "discovery.value",
    "discovery.require-healthy",
];

/// Read the labels (and environment) of `view`.
pub fn wanted(view: &ContainerView, address: &Address, prefix: &str, host: &str) -> Wanted {
    let mut w = Wanted::default();
    let labels = &view.labels;
    for k in labels.keys() {
        if k.starts_with("discovery.") && !KNOWN.contains(&k.as_str()) {
            w.problems
                .push(format!("unknown label {k:?} (known: {})", KNOWN.join(", ")));
        }
    }
    if let Some(template) = labels.get("discovery.key") {
        match discovery_spec(view, labels, template, address, host) {
            Ok(spec) => w.specs.push(spec),
            Err(p) => w.problems.push(p),
        }
    } else if labels.keys().any(|k| KNOWN.contains(&k.as_str())) && w.problems.is_empty() {
        w.problems.push(
            "discovery.* labels without discovery.key: add --label discovery.key=/services/NAME/%n"
                .into(),
        );
    }
    registrator(view, address, prefix, host, &mut w);
    if !w.problems.is_empty() {
        w.specs.clear();
    }
    w
}

fn discovery_spec(
    view: &ContainerView,
    labels: &BTreeMap<String, String>,
    template: &str,
    address: &Address,
    host: &str,
) -> Result<Spec, String> {
    let port = match labels.get("discovery.port") {
        None => None,
        Some(p) => Some(
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("discovery.port={p:?} is not a port number (1-65535)"))?,
        ),
    };
    let value = match labels.get("discovery.value").map(|v| v.trim()) {
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
    let require_healthy = match labels.get("discovery.require-healthy").map(|v| v.trim()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "discovery.require-healthy={other:?} is not true or false"
            ));
        }
    };
    let address = match (address, labels.get("discovery.network")) {
        (a, None) => a.clone(),
        (Address::Container { .. }, Some(n)) if !n.trim().is_empty() => Address::Container {
            network: Some(n.trim().to_owned()),
        },
        (Address::Container { .. }, Some(n)) => {
            return Err(format!("discovery.network={n:?} is not a network name"));
        }
        (Address::Published { .. }, Some(_)) => {
            return Err(
                "discovery.network does not apply: this agent registers published ports (--address published)"
                    .into(),
            );
        }
    };
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
    let key = expand(template, &view.name, host, port);
    discovery::validate_key(&key).map_err(|e| format!("discovery.key={template:?}: {e}"))?;
    Ok(Spec {
        key,
        rules: Rules {
            address,
            port,
            require_healthy,
        },
        value,
    })
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

/// registrator's `SERVICE_*` settings: labels first, then the environment.
fn service_settings(view: &ContainerView) -> BTreeMap<String, String> {
    let mut s: BTreeMap<String, String> = view
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .filter(|(k, _)| k.starts_with("SERVICE_"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (k, v) in &view.labels {
        if k.starts_with("SERVICE_") {
            s.insert(k.clone(), v.clone());
        }
    }
    s
}

fn registrator(view: &ContainerView, address: &Address, prefix: &str, host: &str, w: &mut Wanted) {
    let s = service_settings(view);
    let name_for = |port: u16| -> Option<&String> {
        s.get(&format!("SERVICE_{port}_NAME"))
            .or_else(|| s.get("SERVICE_NAME"))
    };
    let ignored = |port: u16| {
        s.contains_key("SERVICE_IGNORE") || s.contains_key(&format!("SERVICE_{port}_IGNORE"))
    };
    let mut ports: Vec<u16> = view.exposed.clone();
    // A SERVICE_<port>_NAME names a port even if it is not exposed.
    for k in s.keys() {
        if let Some(p) = k
            .strip_prefix("SERVICE_")
            .and_then(|r| r.strip_suffix("_NAME"))
            .and_then(|p| p.parse::<u16>().ok())
        {
            ports.push(p);
        }
    }
    ports.sort_unstable();
    ports.dedup();
    if !s.keys().any(|k| k.ends_with("_NAME")) {
        return;
    }
    if ports.is_empty() {
        w.problems.push(
            "SERVICE_NAME is set but the container exposes no TCP port: EXPOSE one, or name it with SERVICE_<port>_NAME".into(),
        );
        return;
    }
    for port in ports {
        let Some(name) = name_for(port) else { continue };
        if ignored(port) {
            continue;
        }
        let name = name.trim();
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
            w.problems.push(format!(
                "service name {name:?} for port {port} is not a single key segment"
            ));
            continue;
        }
        let key = format!("{prefix}/{name}/{host}:{}:{port}", view.name);
        if let Err(e) = discovery::validate_key(&key) {
            w.problems.push(format!("service key {key:?}: {e}"));
            continue;
        }
        w.specs.push(Spec {
            key,
            rules: Rules {
                address: address.clone(),
                port: Some(port),
                require_healthy: false,
            },
            value: ValueKind::IpPort,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(labels: &[(&str, &str)]) -> ContainerView {
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

    fn ip() -> Address {
        Address::Container { network: None }
    }

    #[test]
    fn unlabelled_containers_are_ignored() {
        assert!(!wanted(&view(&[("other", "x")]), &ip(), "/services", "h").opted_in());
    }

    #[test]
    fn discovery_key_with_placeholders() {
        let w = wanted(
            &view(&[
                ("discovery.key", "/services/memcached/%h/%n/%p"),
                ("discovery.port", "11211"),
            ]),
            &ip(),
            "/services",
            "node1",
        );
        assert_eq!(w.problems, Vec::<String>::new());
        assert_eq!(
            w.specs[0].key,
            "/services/memcached/node1/memcached-1/11211"
        );
        assert_eq!(w.specs[0].value, ValueKind::IpPort);
        assert_eq!(w.specs[0].rules.port, Some(11211));
    }

    #[test]
    fn bad_labels_are_problems_and_register_nothing() {
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
        ] {
            let w = wanted(&view(&labels), &ip(), "/services", "h");
            assert!(w.specs.is_empty(), "{labels:?}");
            assert!(
                w.problems.iter().any(|p| p.contains(want)),
                "{labels:?}: {:?}",
                w.problems
            );
        }
    }

    #[test]
    fn registrator_names() {
        let mut v = view(&[("SERVICE_NAME", "web")]);
        v.exposed = vec![80, 443];
        v.env = vec!["SERVICE_443_NAME=web-tls".into(), "PATH=/bin".into()];
        let w = wanted(&v, &ip(), "/services", "node1");
        let keys: Vec<&str> = w.specs.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/services/web/node1:memcached-1:80",
                "/services/web-tls/node1:memcached-1:443"
            ]
        );
        let mut v = view(&[("SERVICE_NAME", "web"), ("SERVICE_443_IGNORE", "1")]);
        v.exposed = vec![80, 443];
        assert_eq!(wanted(&v, &ip(), "/services", "n").specs.len(), 1);
        let v = view(&[("SERVICE_NAME", "web")]);
        assert!(wanted(&v, &ip(), "/services", "n").problems[0].contains("exposes no TCP port"));
    }

    #[test]
    fn placeholders() {
        assert_eq!(
            expand("/a/%n/%h/%p/%%/%x", "c", "h", Some(1)),
            "/a/c/h/1/%/%x"
        );
    }
}
