//! The SkyDNS layout (`--skydns [PATH]`), as CoreDNS's `etcd` plugin reads
//! it, so that its users can switch without registering anew.
//!
//! A key is a domain name written backwards under PATH:
//! `/skydns/local/skydns/x1` is `x1.skydns.local.` (a trailing `/` names
//! the directory itself: `/skydns/local/skydns/` is `skydns.local.`). Its
//! value is JSON: `host` (an IP, or a name for SRV targets and CNAMEs),
//! `port`, `priority` (default 10), `weight`, `ttl` and `text`. As in
//! CoreDNS, a name answers with the records of its own key *and of every
//! key below it*: `skydns.local.` holds x1's and x2's addresses.
//!
//! What each name holds:
//! * A / AAAA: every `host` that is an IP;
//! * SRV: every entry with a `host` and a `port`; the weight of each is its
//!   share of 100 among the entries of its priority (an entry without a
//!   weight counts as 100), as CoreDNS computes it. An IP host's target is
//!   the entry's own name, whose address goes in the additional section;
//! * TXT: every `text`;
//! * CNAME: when no `host` is an IP and some are names, the first name (in
//!   key order), for A, AAAA and CNAME queries.
//!
//! The TTL is the entry's `ttl`, at most `--dns-ttl` (CoreDNS raises
//! anything under 30 s to 30 s). Names outside `--domain` are not served,
//! and reported. Not read: `group`, `targetstrip`, `mail` (MX), reverse
//! zones (PTR).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use discovery::{Node, Prefix};
use hickory_server::proto::rr::rdata::{CNAME, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use serde::Deserialize;
use serde_json::Value;

use super::catalog::Problem;
use super::zone::{self, Entry, RecordCounts, SkyNames};

/// CoreDNS's priority for an entry that gives none.
const DEFAULT_PRIORITY: u16 = 10;
/// CoreDNS's weight for an entry that gives none.
const DEFAULT_WEIGHT: u32 = 100;

/// Where a SkyDNS entry points.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    /// An address: A or AAAA records.
    Ip(IpAddr),
    /// A name: a CNAME, and the SRV target.
    Name(Name),
    /// No host: a TXT-only entry.
    None,
}

/// One key of the layout, read.
#[derive(Clone, Debug)]
struct Sky {
    /// The entry's own name.
    name: Name,
    /// `host`.
    host: Host,
    /// `port` (0: no SRV record).
    port: u16,
    /// `priority`.
    priority: u16,
    /// `weight`.
    weight: u32,
    /// `text` (TXT).
    text: String,
    /// The TTL served: the entry's `ttl`, at most `--dns-ttl` (0: `--dns-ttl`).
    ttl: u32,
}

/// The value as CoreDNS's `msg.Service` has it; numbers may also be
/// strings (CoreDNS's own README writes `"ttl":"60"`).
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct Raw {
    /// `host`: an IP or a name.
    host: String,
    /// `port`.
    port: Value,
    /// `priority`.
    priority: Value,
    /// `weight`.
    weight: Value,
    /// `text`.
    text: String,
    /// `ttl`.
    ttl: Value,
}

/// A number field, given as a JSON number or a string of one.
fn number(v: &Value, field: &str) -> Result<u64, String> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_i64().filter(|i| *i < 0).map(|_| 0))
            .ok_or_else(|| format!("{field} {n} is not a whole number")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{field} {s:?} is not a number")),
        other => Err(format!("{field} {other} is not a number")),
    }
}

/// The SkyDNS entries under one path.
#[derive(Debug)]
pub struct SkyCatalog {
    /// The watched path (`/skydns`).
    path: Prefix,
    /// `--domain`.
    origin: LowerName,
    /// `--dns-ttl`, seconds.
    ttl: u32,
    /// Key to entry, or why it is not served.
    entries: BTreeMap<String, Result<Sky, String>>,
}

impl SkyCatalog {
    /// An empty layout under `path`.
    pub fn new(path: Prefix, origin: LowerName, ttl: u32) -> Self {
        Self {
            path,
            origin,
            ttl,
            entries: BTreeMap::new(),
        }
    }

    /// Replace every entry (a snapshot).
    pub fn replace<'a>(&mut self, nodes: impl Iterator<Item = &'a Node>) {
        self.entries.clear();
        for n in nodes {
            self.put(n);
        }
    }

    /// A key was set.
    pub fn put(&mut self, node: &Node) {
        let key = String::from_utf8_lossy(node.key()).into_owned();
        let entry = self.read(&key, node.value());
        self.entries.insert(key, entry);
    }

    /// A key was deleted.
    pub fn delete(&mut self, key: &[u8]) {
        self.entries.remove(String::from_utf8_lossy(key).as_ref());
    }

    /// Keys that are not served, and why.
    pub fn problems(&self) -> impl Iterator<Item = Problem> + '_ {
        self.entries.iter().filter_map(|(k, e)| {
            e.as_ref().err().map(|why| Problem {
                what: k.clone(),
                why: why.clone(),
            })
        })
    }

    /// Read one key of the layout: its name from the reversed path, and its JSON value.
    fn read(&self, key: &str, value: &[u8]) -> Result<Sky, String> {
        let rel = key.strip_prefix(&self.path.dir()).unwrap_or(key);
        let rel = rel.strip_suffix('/').unwrap_or(rel);
        let labels: Vec<&str> = rel.split('/').rev().collect();
        if labels.iter().any(|l| l.is_empty()) {
            return Err("an empty path segment is not a DNS label".into());
        }
        let name = Name::from_labels(labels.iter().map(|l| l.to_ascii_lowercase().into_bytes()))
            .map_err(|e| format!("not a domain name: {e}"))?;
        let name = {
            let mut n = name;
            n.set_fqdn(true);
            n
        };
        if !self.origin.zone_of(&LowerName::new(&name)) {
            return Err(format!(
                "{name} is outside --domain {}; serve that domain to answer for it",
                *self.origin
            ));
        }
        let raw: Raw = serde_json::from_slice(value).map_err(|e| {
            format!(
                "the value is not SkyDNS JSON ({e}); write {{\"host\":\"10.0.0.1\",\"port\":80}}"
            )
        })?;
        let host = raw.host.trim();
        let host = if host.is_empty() {
            Host::None
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            Host::Ip(ip)
        } else {
            let mut n = Name::from_utf8(host).map_err(|e| format!("host {host:?}: {e}"))?;
            n.set_fqdn(true);
            Host::Name(n)
        };
        let clamp16 = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
        let port = number(&raw.port, "port")?;
        let port = u16::try_from(port).map_err(|_| format!("port {port} is not 0-65535"))?;
        let priority = match number(&raw.priority, "priority")? {
            0 => DEFAULT_PRIORITY,
            p => clamp16(p),
        };
        let weight = match number(&raw.weight, "weight")? {
            0 => DEFAULT_WEIGHT,
            w => u32::from(clamp16(w)),
        };
        let ttl = match number(&raw.ttl, "ttl")? {
            0 => self.ttl,
            t => u32::try_from(t).unwrap_or(u32::MAX).min(self.ttl),
        };
        if host == Host::None && raw.text.is_empty() {
            return Err("neither host nor text: the entry answers nothing".into());
        }
        Ok(Sky {
            name,
            host,
            port,
            priority,
            weight,
            text: raw.text,
            ttl,
        })
    }

    /// Every name the layout answers for, with its records.
    pub fn build(&self) -> (Arc<SkyNames>, RecordCounts) {
        // Each entry counts for its own name and every name above it, up
        // to the zone's apex: CoreDNS reads a name as a key prefix.
        let apex_labels = usize::from(self.origin.num_labels());
        let mut under: HashMap<LowerName, Vec<&Sky>> = HashMap::new();
        for sky in self.entries.values().flatten() {
            let mut n = sky.name.clone();
            while usize::from(n.num_labels()) >= apex_labels {
                under.entry(LowerName::new(&n)).or_default().push(sky);
                if usize::from(n.num_labels()) == apex_labels {
                    break;
                }
                n = n.base_name();
            }
        }
        let mut counts = RecordCounts::default();
        let names: SkyNames = under
            .into_iter()
            .map(|(name, entries)| {
                let e = entry(&name, &entries);
                e.count(&mut counts);
                (name, e)
            })
            .collect();
        (Arc::new(names), counts)
    }
}

/// The records of one name, from the entries at or below it (key order).
fn entry(name: &LowerName, entries: &[&Sky]) -> Entry {
    let owner: &Name = name;
    let mut e = Entry::default();
    let mut ips = HashSet::new();
    let mut texts = HashSet::new();
    for s in entries {
        if let Host::Ip(ip) = s.host
            && ips.insert(ip)
        {
            let rec = zone::address(owner, s.ttl, ip);
            if ip.is_ipv4() {
                e.a.push(rec);
            } else {
                e.aaaa.push(rec);
            }
        }
        if !s.text.is_empty() && texts.insert(s.text.as_str()) {
            e.txt.push(Record::from_rdata(
                owner.clone(),
                s.ttl,
                RData::TXT(TXT::new(split255(&s.text))),
            ));
        }
    }
    if ips.is_empty()
        && let Some(s) = entries.iter().find(|s| match &s.host {
            Host::Name(n) => LowerName::new(n) != *name,
            _ => false,
        })
        && let Host::Name(target) = &s.host
    {
        e.cname = Some(Box::new(Record::from_rdata(
            owner.clone(),
            s.ttl,
            RData::CNAME(CNAME(target.clone())),
        )));
    }
    // SRV: weights as shares of 100 within each priority.
    let with_port: Vec<&&Sky> = entries
        .iter()
        .filter(|s| s.port != 0 && s.host != Host::None)
        .collect();
    let mut totals: HashMap<u16, u32> = HashMap::new();
    for s in &with_port {
        *totals.entry(s.priority).or_default() += s.weight;
    }
    let mut seen = HashSet::new();
    let mut extra = Vec::new();
    for s in with_port {
        let total = totals.get(&s.priority).copied().unwrap_or(1).max(1);
        let weight = u16::try_from(100 * s.weight / total)
            .unwrap_or(u16::MAX)
            .max(1);
        let target = match &s.host {
            Host::Name(n) => n.clone(),
            _ => s.name.clone(),
        };
        if !seen.insert((LowerName::new(&target), s.port)) {
            continue;
        }
        if let Host::Ip(ip) = s.host {
            extra.push(zone::address(&target, s.ttl, ip));
        }
        e.srv
            .push(zone::srv(owner, s.ttl, s.priority, weight, s.port, &target));
    }
    e.extra = extra.into();
    e.shrink();
    e
}

/// TXT strings are at most 255 bytes each (cut at a character boundary).
fn split255(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while rest.len() > 255 {
        let mut cut = 255;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    out.push(rest.to_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(domain: &str, kv: &[(&str, &str)]) -> SkyCatalog {
        let origin = LowerName::new(&Name::from_ascii(domain).unwrap());
        let mut c = SkyCatalog::new(Prefix::new("/skydns").unwrap(), origin, 30);
        for (k, v) in kv {
            c.put(&Node::new(*k, *v, 1, 1, None));
        }
        c
    }

    fn get<'a>(names: &'a SkyNames, n: &str) -> &'a Entry {
        &names[&LowerName::new(&Name::from_ascii(n).unwrap())]
    }

    #[test]
    fn the_coredns_readme_examples() {
        // "Zone name as A record" with round robin.
        let c = cat(
            "skydns.local.",
            &[
                ("/skydns/local/skydns/", r#"{"host":"1.1.1.1","ttl":60}"#),
                (
                    "/skydns/local/skydns/x1",
                    r#"{"host":"1.1.1.1","ttl":"60"}"#,
                ),
                (
                    "/skydns/local/skydns/x2",
                    r#"{"host":"1.1.1.2","ttl":"60"}"#,
                ),
            ],
        );
        let (names, _) = c.build();
        let apex = get(&names, "skydns.local.");
        assert_eq!(apex.a.len(), 2, "{apex:?}");
        assert_eq!(apex.a[0].ttl, 30, "ttl capped at --dns-ttl");
        assert_eq!(get(&names, "x2.skydns.local.").a.len(), 1);

        let c = cat(
            "skydns.local.",
            &[(
                "/skydns/local/skydns/x5",
                r#"{"host":"skydns-local.server","ttl":60,"priority":10,"port":8080}"#,
            )],
        );
        let (names, _) = c.build();
        let srv = &get(&names, "skydns.local.").srv;
        assert_eq!(srv.len(), 1);
        assert_eq!(
            srv[0].data.to_string(),
            "10 100 8080 skydns-local.server.",
            "{srv:?}"
        );

        let c = cat(
            "skydns.local.",
            &[(
                "/skydns/local/skydns/x6",
                r#"{"ttl":60,"text":"this is a random text message."}"#,
            )],
        );
        let (names, _) = c.build();
        assert_eq!(
            get(&names, "skydns.local.").txt[0].data.to_string(),
            "this is a random text message."
        );
    }

    #[test]
    fn weights_are_shares_and_ip_hosts_get_their_own_name_as_target() {
        let c = cat(
            "skydns.local.",
            &[
                ("/skydns/local/skydns/a", r#"{"host":"10.0.0.1","port":80}"#),
                (
                    "/skydns/local/skydns/b",
                    r#"{"host":"10.0.0.2","port":80,"weight":300}"#,
                ),
                (
                    "/skydns/local/skydns/c",
                    r#"{"host":"10.0.0.3","port":80,"priority":20}"#,
                ),
            ],
        );
        let (names, counts) = c.build();
        let e = get(&names, "skydns.local.");
        let srv: Vec<String> = e.srv.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(
            srv,
            [
                "10 25 80 a.skydns.local.",
                "10 75 80 b.skydns.local.",
                "20 100 80 c.skydns.local."
            ]
        );
        assert_eq!(e.extra.len(), 3);
        assert_eq!(counts.a, 3 + 3, "apex holds 3, each name its own");
    }

    #[test]
    fn bad_entries_and_outsiders_are_reported() {
        let c = cat(
            "skydns.local.",
            &[
                ("/skydns/local/skydns/bad", "not json"),
                ("/skydns/com/example/x", r#"{"host":"10.0.0.1"}"#),
                ("/skydns/local/skydns/empty", r#"{"port":80}"#),
                ("/skydns/local/skydns/ok", r#"{"host":"10.0.0.1"}"#),
            ],
        );
        let problems: Vec<Problem> = c.problems().collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.why.contains("outside --domain")));
        let (names, _) = c.build();
        assert!(names.contains_key(&LowerName::new(
            &Name::from_ascii("ok.skydns.local.").unwrap()
        )));
    }

    #[test]
    fn a_name_of_names_is_a_cname() {
        let c = cat(
            "skydns.local.",
            &[("/skydns/local/skydns/www", r#"{"host":"web.example.org"}"#)],
        );
        let (names, _) = c.build();
        let e = get(&names, "www.skydns.local.");
        assert_eq!(
            e.cname.as_ref().map(|r| r.data.to_string()),
            Some("web.example.org.".into())
        );
    }
}
