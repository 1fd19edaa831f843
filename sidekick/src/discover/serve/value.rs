//! A registered value as addresses, read as `discover render` reads it:
//! `IP:PORT`, `[IPv6]:PORT`, a bare IP, or sidekick's JSON value
//! (`{"ip":…,"port":…}`, or a list of them for a dual-stack container).

use std::net::IpAddr;

use serde_json::Value;

/// One address an instance can be reached at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr {
    /// The IP.
    pub ip: IpAddr,
    /// The port, when the value gives one.
    pub port: Option<u16>,
}

/// The addresses in `value`, or why it has none.
pub fn addresses(value: &[u8]) -> Result<Vec<Addr>, String> {
    let Ok(text) = std::str::from_utf8(value) else {
        return Err("the value is not UTF-8".into());
    };
    let text = text.trim();
    if let Some(a) = text_addr(text) {
        return Ok(vec![a]);
    }
    let parsed: Value = serde_json::from_str(text).map_err(|_| not_an_address(text))?;
    let one = |v: &Value| -> Option<Addr> {
        match v {
            Value::Object(m) => {
                let ip = m.get("ip")?.as_str()?.trim().parse().ok()?;
                let port = m.get("port").and_then(json_port);
                Some(Addr { ip, port })
            }
            Value::String(s) => text_addr(s.trim()),
            _ => None,
        }
    };
    let out: Vec<Addr> = match &parsed {
        Value::Array(items) => items.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    };
    if out.is_empty() {
        return Err(not_an_address(text));
    }
    Ok(out)
}

/// The error text for a value that is not an address (its first 60 characters).
fn not_an_address(text: &str) -> String {
    let shown: String = text.chars().take(60).collect();
    format!(
        "{shown:?} is not an address (IP:PORT, [IPv6]:PORT, a bare IP, or JSON with \"ip\" and \"port\")"
    )
}

/// `10.1.0.7:8080`, `[fd00::7]:8080`, `10.1.0.7` or `fd00::7`; the same
/// forms as render's `ip` and `port`
/// (`discover::render::context::ip_port`).
fn text_addr(v: &str) -> Option<Addr> {
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(Addr { ip, port: None });
    }
    let sa = v.parse::<std::net::SocketAddr>().ok()?;
    Some(Addr {
        ip: sa.ip(),
        port: Some(sa.port()),
    })
}

/// A JSON port: a number or a numeric string, 1 to 65535 (0 is no port).
fn json_port(v: &Value) -> Option<u16> {
    let p = match v {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    (p != 0).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ip: &str, port: Option<u16>) -> Addr {
        Addr {
            ip: ip.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn every_form_render_reads() {
        assert_eq!(
            addresses(b"10.1.0.7:8080"),
            Ok(vec![a("10.1.0.7", Some(8080))])
        );
        assert_eq!(
            addresses(b"[fd00::7]:11211"),
            Ok(vec![a("fd00::7", Some(11211))])
        );
        assert_eq!(addresses(b" 10.1.0.7\n"), Ok(vec![a("10.1.0.7", None)]));
        assert_eq!(addresses(b"fd00::7"), Ok(vec![a("fd00::7", None)]));
        assert_eq!(
            addresses(br#"{"ip":"10.1.0.2","port":8091,"container":"c","host":"h"}"#),
            Ok(vec![a("10.1.0.2", Some(8091))])
        );
        assert_eq!(
            addresses(br#"{"ip":"10.1.0.2","port":null}"#),
            Ok(vec![a("10.1.0.2", None)])
        );
        assert_eq!(
            addresses(br#"{"ip":"10.1.0.2","port":"80"}"#),
            Ok(vec![a("10.1.0.2", Some(80))])
        );
        assert_eq!(
            addresses(br#"[{"ip":"10.1.0.2","port":80},{"ip":"fd00::2","port":80}]"#),
            Ok(vec![a("10.1.0.2", Some(80)), a("fd00::2", Some(80))])
        );
    }

    #[test]
    fn anything_else_says_why() {
        for bad in [
            &b"db.example:5432"[..],
            b"",
            b"{}",
            br#"{"ip":"nope"}"#,
            b"[]",
            b"\xff\xfe",
            b"10.1.0.7:99999",
        ] {
            let e = addresses(bad).expect_err(&String::from_utf8_lossy(bad));
            assert!(e.contains("not"), "{e}");
        }
    }
}
