//! The services layout: the keys under the watched prefixes as services
//! and instances (`PREFIX/SERVICE/INSTANCE`), and their names built into
//! record sets. A change rebuilds only the services it touched; the rest
//! of the zone is shared with the previous one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use discovery::{Node, Prefix};
use hickory_server::proto::rr::{LowerName, Name, Record};

use super::names::{self, Clash};
use super::value::{self, Addr};
use super::zone::{
    self, Entry, Member, RecordCounts, SRV_PRIORITY, SRV_WEIGHT, Service, ServiceNames,
};

/// A key that is not served, or a name that did not get its plain label:
/// what the operator is told.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The etcd key (or service name) it is about.
    pub what: String,
    /// What is wrong and what to do.
    pub why: String,
}

/// The keys of the watched prefixes, by service.
#[derive(Debug)]
pub struct Catalog {
    /// `--domain`.
    origin: LowerName,
    /// `--dns-ttl`, in seconds.
    ttl: u32,
    /// The watched prefixes.
    prefixes: Vec<Prefix>,
    /// Service name to key to what the key says.
    services: BTreeMap<String, Keys>,
    /// Keys that are not served, and why.
    skipped: BTreeMap<String, String>,
    /// Service name to label.
    labels: BTreeMap<String, String>,
    /// Service names without their plain label.
    service_clashes: BTreeMap<String, (String, Clash)>,
    /// Keys without their plain instance label, by service.
    instance_clashes: BTreeMap<String, BTreeMap<String, (String, Clash)>>,
    /// The services as last built.
    built: BTreeMap<String, Arc<Service>>,
    /// Services changed since the last build.
    dirty: BTreeSet<String>,
    /// The set of service names changed since the last build.
    relabel: bool,
}

impl Catalog {
    /// An empty catalog for these prefixes.
    pub fn new(origin: LowerName, ttl: u32, prefixes: Vec<Prefix>) -> Self {
        Self {
            origin,
            ttl,
            prefixes,
            services: BTreeMap::new(),
            skipped: BTreeMap::new(),
            labels: BTreeMap::new(),
            service_clashes: BTreeMap::new(),
            instance_clashes: BTreeMap::new(),
            built: BTreeMap::new(),
            dirty: BTreeSet::new(),
            relabel: false,
        }
    }

    /// Replace everything under prefix `p` with `nodes` (a snapshot).
    pub fn replace<'a>(&mut self, p: usize, nodes: impl Iterator<Item = &'a Node>) {
        let dir = self.prefixes[p].dir();
        let gone: Vec<(String, String)> = self
            .services
            .iter()
            .flat_map(|(s, keys)| {
                keys.iter()
                    .filter(|(_, (q, _, _))| *q == p)
                    .map(move |(k, _)| (s.clone(), k.clone()))
            })
            .collect();
        for (s, k) in gone {
            self.remove(&s, &k);
        }
        self.skipped.retain(|k, _| !k.starts_with(&dir));
        for n in nodes {
            self.put(p, n);
        }
    }

    /// A key under prefix `p` was set.
    pub fn put(&mut self, p: usize, node: &Node) {
        let key = String::from_utf8_lossy(node.key()).into_owned();
        self.skipped.remove(&key);
        let placed = self.place(p, &key);
        let (service, instance) = match placed {
            Ok(v) => v,
            Err(why) => {
                self.skipped.insert(key, why);
                return;
            }
        };
        let addrs = match value::addresses(node.value()) {
            Ok(a) => a,
            Err(why) => {
                // The key's old value, if it had one, is not served either.
                self.remove(&service, &key);
                self.skipped.insert(key, why);
                return;
            }
        };
        if !self.services.contains_key(&service) {
            self.relabel = true;
        }
        let keys = self.services.entry(service.clone()).or_default();
        keys.insert(key, (p, instance, addrs));
        self.dirty.insert(service);
    }

    /// A key under prefix `p` was deleted.
    pub fn delete(&mut self, p: usize, key: &[u8]) {
        let key = String::from_utf8_lossy(key).into_owned();
        self.skipped.remove(&key);
        if let Ok((service, _)) = self.place(p, &key) {
            self.remove(&service, &key);
        }
    }

    /// Take `key` out of `service`, and the service out once it has no keys.
    fn remove(&mut self, service: &str, key: &str) {
        let Some(keys) = self.services.get_mut(service) else {
            return;
        };
        if keys.remove(key).is_some() {
            self.dirty.insert(service.to_owned());
        }
        if keys.is_empty() {
            self.services.remove(service);
            self.relabel = true;
        }
    }

    /// `PREFIX/SERVICE/INSTANCE[/…]` as (service, instance).
    fn place(&self, p: usize, key: &str) -> Result<(String, String), String> {
        let prefix = &self.prefixes[p];
        let rel = key.strip_prefix(&prefix.dir()).unwrap_or(key);
        match rel.split_once('/') {
            Some((s, i)) if !s.is_empty() && !i.is_empty() => Ok((s.to_owned(), i.to_owned())),
            _ => Err(format!(
                "not a PREFIX/SERVICE/INSTANCE key under {prefix} (serve a prefix whose children are services, such as /services)"
            )),
        }
    }

    /// Keys not served, and names without their plain label.
    pub fn problems(&self) -> BTreeSet<Problem> {
        let mut out: BTreeSet<Problem> = self
            .skipped
            .iter()
            .map(|(k, why)| Problem {
                what: k.clone(),
                why: why.clone(),
            })
            .collect();
        for (s, (label, clash)) in &self.service_clashes {
            out.insert(Problem {
                what: format!("service {s:?}"),
                why: clash_text("service", label, clash, self.labels.get(s)),
            });
        }
        for (s, keys) in &self.instance_clashes {
            let labels = self.built.get(s);
            for (k, (label, clash)) in keys {
                let got = labels
                    .and_then(|b| b.members.iter().find(|m| &m.key == k))
                    .map(|m| &m.label);
                out.insert(Problem {
                    what: k.clone(),
                    why: clash_text("instance", label, clash, got),
                });
            }
        }
        out
    }

    /// How many names did not get their plain label.
    pub fn collisions(&self) -> usize {
        self.service_clashes.len()
            + self
                .instance_clashes
                .values()
                .map(BTreeMap::len)
                .sum::<usize>()
    }

    /// Rebuild what changed; the services by label for the next zone.
    pub fn build(&mut self) -> HashMap<Box<[u8]>, Arc<Service>> {
        if self.relabel {
            let assigned = names::assign(self.services.keys().map(|s| (s.clone(), s.clone())));
            for (s, l) in &assigned.labels {
                if self.labels.get(s) != Some(l) {
                    self.dirty.insert(s.clone());
                }
            }
            self.labels = assigned.labels;
            self.service_clashes = assigned.clashes;
            self.relabel = false;
        }
        for s in std::mem::take(&mut self.dirty) {
            match (self.services.get(&s), self.labels.get(&s)) {
                (Some(keys), Some(label)) => {
                    let (svc, clashes) = build_service(&self.origin, self.ttl, &s, label, keys);
                    if clashes.is_empty() {
                        self.instance_clashes.remove(&s);
                    } else {
                        self.instance_clashes.insert(s.clone(), clashes);
                    }
                    self.built.insert(s, Arc::new(svc));
                }
                _ => {
                    self.built.remove(&s);
                    self.instance_clashes.remove(&s);
                }
            }
        }
        self.built
            .values()
            .map(|svc| (svc.label.as_bytes().into(), svc.clone()))
            .collect()
    }
}

/// The log text of a name collision: which keys wanted `label` and which one got it.
fn clash_text(kind: &str, label: &str, clash: &Clash, got: Option<&String>) -> String {
    let got = got.map(String::as_str).unwrap_or("?");
    match clash {
        Clash::Empty => {
            format!(
                "the {kind} name has no letter or digit to make a DNS label of; it is served as {got:?}"
            )
        }
        Clash::With(others) => format!(
            "the {kind} label {label:?} is also claimed by {}; to keep either from answering for the other, it is served as {got:?} (rename one of them)",
            others.join(", ")
        ),
    }
}

/// A service's keys: key → (the watch it came from, its instance label, its addresses).
type Keys = BTreeMap<String, (usize, String, Vec<Addr>)>;

/// Build one service's names from its keys.
fn build_service(
    origin: &Name,
    ttl: u32,
    name: &str,
    label: &str,
    keys: &Keys,
) -> (Service, BTreeMap<String, (String, Clash)>) {
    let assigned = names::assign(keys.iter().map(|(k, (_, i, _))| (k.clone(), i.clone())));
    let mut names = ServiceNames::default();
    let mut members = Vec::with_capacity(keys.len());
    // Owner names; a label is at most 63 bytes and the domain was checked
    // to leave room for two of them, so these only fail for `_SERVICE`
    // when the label is 63 bytes long (then there is no `_SERVICE._tcp`).
    let Ok(sname) = origin.prepend_label(label.as_bytes()) else {
        return (empty_service(name, label), assigned.clashes);
    };
    let srvname = origin
        .prepend_label(&b"_tcp"[..])
        .and_then(|n| n.prepend_label(format!("_{label}").as_bytes()))
        .ok();
    let mut seen: HashSet<std::net::IpAddr> = HashSet::new();
    let mut srv: Vec<Record> = Vec::new();
    let mut srv_tcp: Vec<Record> = Vec::new();
    let mut extra: Vec<Record> = Vec::new();
    for (key, (p, instance, addrs)) in keys {
        let Some(ilabel) = assigned.labels.get(key) else {
            continue;
        };
        let Ok(iname) = sname.prepend_label(ilabel.as_bytes()) else {
            continue;
        };
        let mut ientry = Entry::default();
        let mut iseen: HashSet<std::net::IpAddr> = HashSet::new();
        for a in addrs {
            if iseen.insert(a.ip) {
                let rec = zone::address(&iname, ttl, a.ip);
                push_by_family(&mut ientry, rec);
            }
            if seen.insert(a.ip) {
                push_by_family(&mut names.service, zone::address(&sname, ttl, a.ip));
            }
        }
        let mut ports: Vec<u16> = addrs.iter().filter_map(|a| a.port).collect();
        ports.sort_unstable();
        ports.dedup();
        if !ports.is_empty() {
            extra.extend(ientry.a.iter().chain(&ientry.aaaa).cloned());
        }
        for port in ports {
            srv.push(zone::srv(
                &sname,
                ttl,
                SRV_PRIORITY,
                SRV_WEIGHT,
                port,
                &iname,
            ));
            if let Some(n) = &srvname {
                srv_tcp.push(zone::srv(n, ttl, SRV_PRIORITY, SRV_WEIGHT, port, &iname));
            }
        }
        ientry.shrink();
        names.instances.insert(ilabel.as_bytes().into(), ientry);
        members.push(Member {
            key: key.clone(),
            prefix: *p,
            instance: instance.clone(),
            label: ilabel.clone(),
            addrs: addrs.clone(),
        });
    }
    let extra: Arc<[Record]> = extra.into();
    names.service.srv = srv;
    names.service.extra = extra.clone();
    names.service.shrink();
    if let (Some(_), false) = (&srvname, srv_tcp.is_empty()) {
        let mut e = Entry {
            srv: srv_tcp,
            extra,
            ..Entry::default()
        };
        e.shrink();
        names.srv = Some(e);
    }
    names.instances.shrink_to_fit();
    let mut counts = RecordCounts::default();
    names.service.count(&mut counts);
    if let Some(e) = &names.srv {
        e.count(&mut counts);
    }
    for e in names.instances.values() {
        e.count(&mut counts);
    }
    let svc = Service {
        name: name.to_owned(),
        label: label.to_owned(),
        members,
        names,
        counts,
    };
    (svc, assigned.clashes)
}

/// A service with no members yet, under its etcd name and its DNS label.
fn empty_service(name: &str, label: &str) -> Service {
    Service {
        name: name.to_owned(),
        label: label.to_owned(),
        members: Vec::new(),
        names: ServiceNames::default(),
        counts: RecordCounts::default(),
    }
}

/// File `rec` under A or AAAA by its type.
fn push_by_family(e: &mut Entry, rec: Record) {
    match rec.record_type() {
        hickory_server::proto::rr::RecordType::A => e.a.push(rec),
        _ => e.aaaa.push(rec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #20: spare room in the record sets was a fifth of the memory
    /// of a zone of 10,000 instances; every built set holds only its records.
    #[test]
    fn built_record_sets_hold_no_spare_room() {
        let origin = LowerName::new(&Name::from_ascii("discovery.internal.").unwrap());
        let mut c = Catalog::new(origin, 5, vec![Prefix::new("/services").unwrap()]);
        for (k, v) in [
            ("/services/web/1", "10.0.0.1:80"),
            ("/services/web/2", "10.0.0.2:80"),
            (
                "/services/web/3",
                r#"[{"ip":"10.0.0.3","port":80},{"ip":"fd00::3","port":80}]"#,
            ),
        ] {
            c.put(0, &Node::new(k, v, 1, 1, None));
        }
        let built = c.build();
        let web = &built[&b"web"[..]];
        let names = &web.names;
        let srv = names.srv.as_ref().expect("_web._tcp");
        let mut entries = vec![&names.service, srv];
        entries.extend(names.instances.values());
        assert_eq!(entries.len(), 5);
        for e in entries {
            for set in [&e.a, &e.aaaa, &e.srv, &e.txt] {
                assert_eq!(set.capacity(), set.len(), "{e:?}");
            }
        }
        assert_eq!(names.service.a.len(), 3);
        assert_eq!(names.service.srv.len(), 3);
        assert_eq!(srv.extra.len(), 4, "three A and one AAAA");
    }
}
