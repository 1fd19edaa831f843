//! Registrator compatibility: `SERVICE_NAME` (or `SERVICE_<port>_NAME`),
//! as a label or in the environment, registers `IP:PORT` at
//! `<prefix>/<name>/<hostname>:<container>:<port>` for each exposed port
//! (or that one port); `SERVICE_IGNORE` / `SERVICE_<port>_IGNORE` skip.
//!
//! Its Consul backend's checks map onto ours: `SERVICE_CHECK_HTTP=PATH`
//! is `http:PATH`, `SERVICE_CHECK_TCP=true` is `tcp`, with
//! `SERVICE_CHECK_INTERVAL` and `SERVICE_CHECK_TIMEOUT` (each also as
//! `SERVICE_<port>_CHECK_*`, for one port). Its other check kinds have no
//! equivalent here and are reported, not ignored.

use std::collections::BTreeMap;

use super::super::check::Settings;
use super::super::decide::{ContainerView, Rules};
use super::super::plan::HostConfig;
use super::super::value::ValueKind;
use super::{Spec, Wanted, allowed_check, check_keys, trust};

/// The check settings registrator's Consul backend has that we map.
const CHECK_SETTINGS: [&str; 4] = ["HTTP", "TCP", "INTERVAL", "TIMEOUT"];

/// registrator's `SERVICE_*` settings: labels first, then the environment.
fn settings(view: &ContainerView) -> BTreeMap<String, String> {
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

/// Add the specs (or problems) of `view`'s `SERVICE_*` settings to `w`.
pub(super) fn specs(view: &ContainerView, cfg: &HostConfig, w: &mut Wanted) {
    let s = settings(view);
    if !s.keys().any(|k| k.ends_with("_NAME")) {
        return;
    }
    for (k, v) in &s {
        if let Err(e) = trust::check_size(k, v) {
            w.problems.push(e);
        }
        if let Some(what) = unmapped_check(k) {
            w.problems.push(format!(
                "{k} is registrator's Consul {what} check, which has no equivalent here: remove it, and use SERVICE_CHECK_HTTP, SERVICE_CHECK_TCP or the label discovery.check (tcp, http:PATH, docker-exec:CMD)"
            ));
        }
    }
    if !w.problems.is_empty() {
        return;
    }
    let name_for = |port: u16| -> Option<&String> {
        s.get(&format!("SERVICE_{port}_NAME"))
            .or_else(|| s.get("SERVICE_NAME"))
    };
    let ignored = |port: u16| {
        s.contains_key("SERVICE_IGNORE") || s.contains_key(&format!("SERVICE_{port}_IGNORE"))
    };
    let mut ports: Vec<u16> = view.exposed.clone();
    // A SERVICE_<port>_NAME names a port even if it is not exposed.
    ports.extend(s.keys().filter_map(|k| {
        k.strip_prefix("SERVICE_")?
            .strip_suffix("_NAME")?
            .parse::<u16>()
            .ok()
    }));
    ports.sort_unstable();
    ports.dedup();
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
        match spec(view, cfg, &s, name.trim(), port) {
            Ok(spec) => w.specs.push(spec),
            Err(p) => w.problems.push(p),
        }
    }
}

/// The spec of service `name` on `port`.
fn spec(
    view: &ContainerView,
    cfg: &HostConfig,
    s: &BTreeMap<String, String>,
    name: &str,
    port: u16,
) -> Result<Spec, String> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "service name {name:?} for port {port} is not a single key segment"
        ));
    }
    let key = format!(
        "{}/{name}/{}:{}:{port}",
        cfg.prefix, cfg.hostname, view.name
    );
    check_keys(&key, cfg.address.family(), ValueKind::IpPort, cfg)
        .map_err(|e| format!("service {name:?} on port {port}: {e}"))?;
    Ok(Spec {
        key,
        rules: Rules {
            address: cfg.address.clone(),
            port: Some(port),
            require_healthy: false,
        },
        value: ValueKind::IpPort,
        check: check(s, port, cfg)?,
    })
}

/// The check of the service on `port`: its `SERVICE_<port>_CHECK_*`, else
/// `SERVICE_CHECK_*`. HTTP wins over TCP, as in registrator.
fn check(
    s: &BTreeMap<String, String>,
    port: u16,
    cfg: &HostConfig,
) -> Result<Option<super::super::check::CheckSpec>, String> {
    let get = |what: &str| {
        let scoped = format!("SERVICE_{port}_CHECK_{what}");
        let global = format!("SERVICE_CHECK_{what}");
        s.get_key_value(&scoped)
            .or_else(|| s.get_key_value(&global))
            .map(|(k, v)| (k.clone(), v.as_str()))
    };
    let (http, tcp) = (get("HTTP"), get("TCP"));
    let kind = match (&http, &tcp) {
        (Some((k, path)), _) => Some((k.clone(), format!("http:{}", path.trim()))),
        (None, Some((_, v))) if v.trim().eq_ignore_ascii_case("false") => None,
        (None, Some((k, _))) => Some((k.clone(), "tcp".to_owned())),
        (None, None) => None,
    };
    let settings = Settings {
        check: kind.as_ref().map(|(k, v)| (k.clone(), v.as_str())),
        interval: get("INTERVAL"),
        timeout: get("TIMEOUT"),
        ..Default::default()
    };
    let spec = settings.spec()?;
    if let (Some(spec), Some((name, _))) = (&spec, &kind) {
        allowed_check(&spec.kind, name, true, "a port", cfg)?;
    }
    Ok(spec)
}

/// For a `SERVICE_CHECK_X` (or `SERVICE_<port>_CHECK_X`) we do not map, X
/// in lower case.
fn unmapped_check(k: &str) -> Option<String> {
    let rest = k.strip_prefix("SERVICE_")?;
    let what = match rest.split_once("_CHECK_") {
        Some((port, what)) if port.parse::<u16>().is_ok() => what,
        _ => rest.strip_prefix("CHECK_")?,
    };
    (!CHECK_SETTINGS.contains(&what)).then(|| what.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::super::super::check::CheckKind;
    use super::super::tests::{cfg, view};
    use super::super::wanted;
    use std::time::Duration;

    #[test]
    fn registrator_names() {
        let mut v = view(&[("SERVICE_NAME", "web")]);
        v.exposed = vec![80, 443];
        v.env = vec!["SERVICE_443_NAME=web-tls".into(), "PATH=/bin".into()];
        let w = wanted(&v, &cfg());
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
        assert_eq!(wanted(&v, &cfg()).specs.len(), 1);
        let v = view(&[("SERVICE_NAME", "web")]);
        assert!(wanted(&v, &cfg()).problems[0].contains("exposes no TCP port"));
        let mut v = view(&[("SERVICE_NAME", "..")]);
        v.exposed = vec![80];
        assert!(wanted(&v, &cfg()).problems[0].contains("not a single key segment"));
    }

    #[test]
    fn registrators_consul_checks_map_onto_ours() {
        let mut v = view(&[
            ("SERVICE_NAME", "web"),
            ("SERVICE_CHECK_TCP", "true"),
            ("SERVICE_80_CHECK_HTTP", "/health"),
            ("SERVICE_CHECK_INTERVAL", "15s"),
            ("SERVICE_CHECK_TIMEOUT", "1s"),
        ]);
        v.exposed = vec![80, 11211];
        let w = wanted(&v, &cfg());
        assert_eq!(w.problems, Vec::<String>::new());
        let checks: Vec<_> = w
            .specs
            .iter()
            .map(|s| {
                let c = s.check.clone().unwrap();
                (s.rules.port, c.kind, c.interval, c.timeout)
            })
            .collect();
        let secs = Duration::from_secs;
        assert_eq!(
            checks,
            [
                (
                    Some(80),
                    CheckKind::Http {
                        path: "/health".into()
                    },
                    secs(15),
                    secs(1)
                ),
                (Some(11211), CheckKind::Tcp, secs(15), secs(1)),
            ]
        );
        // Its other check kinds are reported, not ignored.
        let mut v = view(&[
            ("SERVICE_NAME", "web"),
            ("SERVICE_CHECK_SCRIPT", "curl localhost"),
        ]);
        v.exposed = vec![80];
        let w = wanted(&v, &cfg());
        assert!(w.specs.is_empty());
        assert!(
            w.problems[0].contains("SERVICE_CHECK_SCRIPT is registrator's Consul script check"),
            "{:?}",
            w.problems
        );
        // And keys outside the allowed prefixes are refused like any.
        let mut c = cfg();
        c.prefix = "/elsewhere".into();
        let mut v = view(&[("SERVICE_NAME", "web")]);
        v.exposed = vec![80];
        assert!(wanted(&v, &c).problems[0].contains("outside the prefixes"));
    }
}
