//! What a template sees: each watched prefix as a list of nodes, the
//! revision, and the config tree.
//!
//! A node is `{key, name, value, ip, port, createdIndex, modifiedIndex,
//! json}`. `ip` and `port` are there only when the value says them (an
//! `IP:PORT`, a bare IP, or sidekick's `--json-value` object), and `json`
//! only when the value is JSON: a template that prints a field the data
//! lacks fails (strict undefined), so the old file stays, instead of
//! writing `server 10.1.0.7:;`.

use std::net::IpAddr;

use discovery::{Node, Prefix, PrefixState};
use serde_json::{Map, Value, json};

/// Names a template cannot use for a prefix: the context's own keys and
/// Jinja's constants.
pub const RESERVED: &[&str] = &[
    "revision", "prefixes", "config", "loop", "true", "false", "none", "True", "False", "None",
];

/// One node as the template sees it.
pub fn node_json(n: &Node) -> Value {
    let key = String::from_utf8_lossy(n.key()).into_owned();
    let value = String::from_utf8_lossy(n.value()).into_owned();
    let name = key.rsplit('/').next().unwrap_or_default().to_owned();
    let mut o = Map::new();
    let parsed: Option<Value> = serde_json::from_str(&value).ok();
    let (ip, port) = match &parsed {
        Some(Value::Object(m)) => (
            m.get("ip").and_then(Value::as_str).map(str::to_owned),
            m.get("port").and_then(json_port),
        ),
        _ => ip_port(&value),
    };
    o.insert("key".into(), json!(key));
    o.insert("name".into(), json!(name));
    o.insert("value".into(), json!(value));
    if let Some(ip) = ip {
        o.insert("ip".into(), json!(ip));
    }
    if let Some(port) = port {
        o.insert("port".into(), json!(port));
    }
    o.insert("createdIndex".into(), json!(n.create_revision()));
    o.insert("modifiedIndex".into(), json!(n.mod_revision()));
    if let Some(j) = parsed {
        o.insert("json".into(), j);
    }
    Value::Object(o)
}

/// A JSON value's `port`, given as a number or a string of digits.
fn json_port(v: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `10.1.0.7:8080`, `[fd00::7]:8080`, `10.1.0.7` or `fd00::7` as an IP and
/// maybe a port; anything else as neither.
pub fn ip_port(v: &str) -> (Option<String>, Option<u16>) {
    let v = v.trim();
    if let Ok(ip) = v.parse::<IpAddr>() {
        return (Some(ip.to_string()), None);
    }
    if let Ok(sa) = v.parse::<std::net::SocketAddr>() {
        return (Some(sa.ip().to_string()), Some(sa.port()));
    }
    (None, None)
}

/// The default template name of a prefix: its last segment, with anything
/// that is not a letter, digit or `_` as `_` (`/services/web-lb` gives
/// `web_lb`).
pub fn default_name(p: &Prefix) -> String {
    let last = p
        .as_str()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let mut s: String = last
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Whether `name` can be a template variable.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "{name:?} is not a template variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "{name:?} is taken by the template context ({})",
            RESERVED.join(", ")
        ));
    }
    Ok(())
}

/// The whole context: `revision`, `prefixes` (prefix to nodes), each
/// prefix under its name, and `config` when a config prefix is followed.
///
/// Each prefix's state is the library's one fold ([`PrefixState`]), so
/// render sees exactly what `--exec` and membership see.
pub fn build(watched: &[(Prefix, String, PrefixState)], config: Option<&Value>) -> Value {
    let mut ctx = Map::new();
    let mut prefixes = Map::new();
    let mut revision = 0;
    for (p, name, nodes) in watched {
        let list = Value::Array(nodes.nodes().map(node_json).collect());
        prefixes.insert(p.as_str().trim_end_matches('/').to_owned(), list.clone());
        ctx.insert(name.clone(), list);
        revision = revision.max(nodes.revision());
    }
    ctx.insert("revision".into(), json!(revision));
    ctx.insert("prefixes".into(), Value::Object(prefixes));
    if let Some(c) = config {
        ctx.insert("config".into(), c.clone());
    }
    Value::Object(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_ip_and_port() {
        assert_eq!(
            ip_port("10.1.0.7:8080"),
            (Some("10.1.0.7".into()), Some(8080))
        );
        assert_eq!(ip_port("10.1.0.7"), (Some("10.1.0.7".into()), None));
        assert_eq!(
            ip_port("[fd00::7]:11211"),
            (Some("fd00::7".into()), Some(11211))
        );
        assert_eq!(ip_port("fd00::7"), (Some("fd00::7".into()), None));
        assert_eq!(ip_port("db.example:5432"), (None, None));
    }

    #[test]
    fn names_of_prefixes() {
        let p = |s: &str| Prefix::new(s).unwrap();
        assert_eq!(default_name(&p("/services/web")), "web");
        assert_eq!(default_name(&p("/services/web-lb/")), "web_lb");
        assert_eq!(default_name(&p("/s/1web")), "_1web");
        assert!(check_name("config").is_err());
        assert!(check_name("9x").is_err());
        assert!(check_name("web_lb").is_ok());
    }
}
