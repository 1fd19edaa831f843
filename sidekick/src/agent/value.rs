//! How a registered value is written: the bare IP, `IP:PORT` (`[IPv6]:PORT`)
//! or sidekick's JSON object.

use std::net::IpAddr;

use serde::Serialize;

use super::decide::Family;

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

/// The suffix of the second key `--family both` writes in the `ip` and
/// `ip:port` formats: `KEY` holds the IPv4 address, `KEY-v6` the IPv6 one.
pub const V6_SUFFIX: &str = "-v6";

/// The JSON value (`--json-value`, `discovery.value=json`). Its fields are
/// written in this order, so the same state always gives the same bytes
/// (and a restarted sidekick can adopt what it wrote).
#[derive(Serialize)]
struct JsonValue<'a> {
    /// The address consumers connect to.
    ip: String,
    /// The port, or `null` when none is registered.
    port: Option<u16>,
    /// The container's name, or `null` for `--ip`.
    container: Option<&'a str>,
    /// The machine it runs on, for people reading the registry.
    host: &'a str,
    /// With a health check: `passing` or `warning` (a critical container
    /// is not registered at all). Absent without a check, so that adding
    /// none changes no byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

/// What one key's value says, besides its format.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// The addresses: one, or with `--family both` the IPv4 and then the
    /// IPv6 one.
    pub addrs: &'a [IpAddr],
    /// `--family`: `both` writes a list, or two keys.
    pub family: Family,
    /// The port registered, if any.
    pub port: Option<u16>,
    /// The container's name (`None` for `--ip`).
    pub container: Option<&'a str>,
    /// The check's verdict, with a check (`passing`, `warning`).
    pub status: Option<&'a str>,
}

impl ValueFormat {
    /// The bytes to register for `ip` and `port` (and the container's
    /// name, if any). Deterministic, so the same state always gives the
    /// same bytes. `IpPort` without a port writes the bare IP.
    pub fn render(&self, ip: IpAddr, port: Option<u16>, container: Option<&str>) -> String {
        self.one(ip, port, container, None)
    }

    /// The keys and values to register for `key`: one key, or with
    /// `--family both` in the `ip` and `ip:port` formats, `key` for the
    /// IPv4 address and `key` + [`V6_SUFFIX`] for the IPv6 one (each only
    /// when the container has that address). With `both`, the JSON value
    /// is a list of one object per address, even when there is one.
    pub fn entries(&self, key: &str, e: Entry<'_>) -> Vec<(String, String)> {
        let one = |ip: IpAddr| self.one(ip, e.port, e.container, e.status);
        match (self.kind, e.family) {
            (ValueKind::Json, Family::Both) => {
                let list: Vec<JsonValue<'_>> = e
                    .addrs
                    .iter()
                    .map(|ip| self.json(*ip, e.port, e.container, e.status))
                    .collect();
                // Serializing plain strings and numbers cannot fail.
                vec![(
                    key.to_owned(),
                    serde_json::to_string(&list).unwrap_or_default(),
                )]
            }
            (_, Family::Both) => e
                .addrs
                .iter()
                .map(|ip| match ip {
                    IpAddr::V4(_) => (key.to_owned(), one(*ip)),
                    IpAddr::V6(_) => (format!("{key}{V6_SUFFIX}"), one(*ip)),
                })
                .collect(),
            _ => e
                .addrs
                .first()
                .map(|ip| (key.to_owned(), one(*ip)))
                .into_iter()
                .collect(),
        }
    }

    fn one(
        &self,
        ip: IpAddr,
        port: Option<u16>,
        container: Option<&str>,
        status: Option<&str>,
    ) -> String {
        match (self.kind, port) {
            (ValueKind::Json, _) => {
                // Serializing plain strings and numbers cannot fail.
                serde_json::to_string(&self.json(ip, port, container, status)).unwrap_or_default()
            }
            (ValueKind::IpPort, Some(p)) => std::net::SocketAddr::new(ip, p).to_string(),
            (ValueKind::Ip | ValueKind::IpPort, _) => ip.to_string(),
        }
    }

    fn json<'a>(
        &'a self,
        ip: IpAddr,
        port: Option<u16>,
        container: Option<&'a str>,
        status: Option<&'a str>,
    ) -> JsonValue<'a> {
        JsonValue {
            ip: ip.to_string(),
            port,
            container,
            host: &self.host,
            status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn values() {
        let f = |kind| ValueFormat {
            kind,
            host: "node1".into(),
        };
        use ValueKind::*;
        assert_eq!(f(Ip).render(ip("10.1.0.2"), Some(1), Some("m")), "10.1.0.2");
        assert_eq!(
            f(IpPort).render(ip("10.1.0.2"), Some(11211), Some("m")),
            "10.1.0.2:11211"
        );
        assert_eq!(
            f(IpPort).render(ip("fd00::2"), Some(80), None),
            "[fd00::2]:80"
        );
        assert_eq!(
            f(Json).render(ip("10.1.0.2"), Some(8091), Some("couchbase-1")),
            r#"{"ip":"10.1.0.2","port":8091,"container":"couchbase-1","host":"node1"}"#
        );
        assert_eq!(
            f(Json).render(ip("10.1.0.2"), None, None),
            r#"{"ip":"10.1.0.2","port":null,"container":null,"host":"node1"}"#
        );
    }

    #[test]
    fn both_families_are_a_list_or_two_keys_and_a_status_shows_in_json() {
        let f = |kind| ValueFormat {
            kind,
            host: "node1".into(),
        };
        let both = [ip("10.1.0.2"), ip("fd00::2")];
        let e = |addrs, family, status| Entry {
            addrs,
            family,
            port: Some(80),
            container: Some("web-1"),
            status,
        };
        use ValueKind::*;
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            f(IpPort).entries("/s/web/1", e(&both, Family::Both, None)),
            pairs(&[("/s/web/1", "10.1.0.2:80"), ("/s/web/1-v6", "[fd00::2]:80")])
        );
        assert_eq!(
            f(Ip).entries("/s/web/1", e(&both[1..], Family::Both, None)),
            pairs(&[("/s/web/1-v6", "fd00::2")])
        );
        assert_eq!(
            f(Json).entries("/s/web/1", e(&both, Family::Both, None)),
            pairs(&[(
                "/s/web/1",
                r#"[{"ip":"10.1.0.2","port":80,"container":"web-1","host":"node1"},{"ip":"fd00::2","port":80,"container":"web-1","host":"node1"}]"#
            )])
        );
        assert_eq!(
            f(Json).entries("/s/web/1", e(&both[1..], Family::V6, Some("warning"))),
            pairs(&[(
                "/s/web/1",
                r#"{"ip":"fd00::2","port":80,"container":"web-1","host":"node1","status":"warning"}"#
            )])
        );
        assert_eq!(
            f(IpPort).entries("/s/web/1", e(&both[1..], Family::Auto, Some("warning"))),
            pairs(&[("/s/web/1", "[fd00::2]:80")])
        );
    }
}
