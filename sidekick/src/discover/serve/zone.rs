//! The answers, precomputed: what every name in the zone holds, as ready
//! record sets, in one immutable value that the watch task replaces
//! whole (`arc_swap`) and queries only read. A query costs a few hash
//! lookups on the labels of its name, and no allocation for the lookup.
//!
//! Names (D is `--domain`):
//! * `SERVICE.D`: A and AAAA of every instance, and SRV for each instance
//!   with a port (its target `INSTANCE.SERVICE.D`, whose addresses go in
//!   the additional section);
//! * `_SERVICE._tcp.D`: the same SRV records;
//! * `INSTANCE.SERVICE.D`: A and AAAA of that instance;
//! * `_tcp.D`: exists (NODATA) while any service has an SRV record;
//! * the SkyDNS layout's names (`--skydns`), see `skydns.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::value::Addr;

/// SRV priority of every instance: one tier, nobody is a backup.
pub const SRV_PRIORITY: u16 = 0;
/// SRV weight of every instance: equal shares (RFC 2782 reserves 0 for
/// "no selection to do", which some clients read as "never, unless alone").
pub const SRV_WEIGHT: u16 = 1;

/// The record sets of one name.
#[derive(Debug, Default)]
pub struct Entry {
    /// A records.
    pub a: Vec<Record>,
    /// AAAA records.
    pub aaaa: Vec<Record>,
    /// SRV records.
    pub srv: Vec<Record>,
    /// TXT records (SkyDNS `text`).
    pub txt: Vec<Record>,
    /// A CNAME (SkyDNS: a name whose hosts are all names, not IPs). Boxed:
    /// a `Record` is some 270 bytes, and few names have a CNAME.
    pub cname: Option<Box<Record>>,
    /// The SRV targets' A and AAAA records: the additional section of an
    /// SRV answer. Shared by `SERVICE.D` and `_SERVICE._tcp.D`.
    pub extra: Arc<[Record]>,
}

impl Entry {
    /// The answer records for `qtype`, as up to four slices (ANY: all).
    pub fn answers(&self, qtype: RecordType) -> [&[Record]; 4] {
        const NONE: &[Record] = &[];
        match qtype {
            RecordType::A => [&self.a, NONE, NONE, NONE],
            RecordType::AAAA => [&self.aaaa, NONE, NONE, NONE],
            RecordType::SRV => [&self.srv, NONE, NONE, NONE],
            RecordType::TXT => [&self.txt, NONE, NONE, NONE],
            RecordType::CNAME => [self.cname_slice(), NONE, NONE, NONE],
            RecordType::ANY => [&self.a, &self.aaaa, &self.srv, &self.txt],
            _ => [NONE; 4],
        }
    }

    /// The CNAME, as a slice of zero or one record.
    pub fn cname_slice(&self) -> &[Record] {
        self.cname.as_deref().map_or(&[], std::slice::from_ref)
    }

    /// Drop the spare capacity of its record sets. A `Vec` that grew by
    /// `push` holds room for at least four records (some 1 KiB) however
    /// few it has, and most names hold one to three: without this, spare
    /// room was a fifth of the memory of a zone of 10,000 instances
    /// (issue #20).
    pub fn shrink(&mut self) {
        self.a.shrink_to_fit();
        self.aaaa.shrink_to_fit();
        self.srv.shrink_to_fit();
        self.txt.shrink_to_fit();
    }

    /// How many records it holds, by type (for the records gauge).
    pub fn count(&self, out: &mut RecordCounts) {
        out.a += self.a.len();
        out.aaaa += self.aaaa.len();
        out.srv += self.srv.len();
        out.txt += self.txt.len();
        out.cname += usize::from(self.cname.is_some());
    }
}

/// Records held, by type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts {
    /// A.
    pub a: usize,
    /// AAAA.
    pub aaaa: usize,
    /// SRV.
    pub srv: usize,
    /// TXT.
    pub txt: usize,
    /// CNAME.
    pub cname: usize,
}

/// One service's names, built together (`catalog.rs`).
#[derive(Debug, Default)]
pub struct ServiceNames {
    /// `SERVICE.D`.
    pub service: Entry,
    /// `_SERVICE._tcp.D`, when any instance has a port.
    pub srv: Option<Entry>,
    /// `INSTANCE.SERVICE.D`, by instance label.
    pub instances: HashMap<Box<[u8]>, Entry>,
}

/// One registered instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its etcd key.
    pub key: String,
    /// Which watched prefix it is under (index into the prefixes).
    pub prefix: usize,
    /// The instance name as registered (the key's path after the service).
    pub instance: String,
    /// Its instance label.
    pub label: String,
    /// Where it can be reached.
    pub addrs: Vec<Addr>,
}

/// One service as built: its names and its members (for HTTP SD).
#[derive(Debug)]
pub struct Service {
    /// The service name as registered.
    pub name: String,
    /// Its label (`SERVICE` in `SERVICE.D`).
    pub label: String,
    /// Its instances, in key order.
    pub members: Vec<Member>,
    /// Its names and record sets.
    pub names: ServiceNames,
    /// Records held, by type.
    pub counts: RecordCounts,
}

/// Names of the SkyDNS layout, by full (lower-case) name.
pub type SkyNames = HashMap<LowerName, Entry>;

/// Everything a query is answered from.
#[derive(Debug)]
pub struct Zone {
    /// `--domain`, lower case.
    pub origin: LowerName,
    /// The zone's SOA (serial: the etcd revision).
    pub soa: Record,
    /// Services by label.
    pub services: HashMap<Box<[u8]>, Arc<Service>>,
    /// Whether `_tcp.D` has names under it.
    pub any_srv: bool,
    /// The SkyDNS layout's names.
    pub sky: Arc<SkyNames>,
    /// Records held, by type.
    pub counts: RecordCounts,
}

/// What a name is in the zone.
#[derive(Debug)]
pub enum Found<'z> {
    /// Outside the zone: not ours to answer (REFUSED).
    Outside,
    /// In the zone, but no such name (NXDOMAIN).
    NoName,
    /// The name exists; its record sets, from the services layout and the
    /// SkyDNS layout (either may be absent, both for an empty name such
    /// as the apex or `_tcp.D`).
    Name {
        /// The zone's apex.
        apex: bool,
        /// From `/services`.
        services: Option<&'z Entry>,
        /// From `--skydns`.
        sky: Option<&'z Entry>,
    },
}

impl Zone {
    /// An empty zone: the apex and its SOA only.
    pub fn empty(origin: &LowerName, ttl: u32) -> Self {
        Self {
            origin: origin.clone(),
            soa: soa(origin, ttl, 0),
            services: HashMap::new(),
            any_srv: false,
            sky: Arc::default(),
            counts: RecordCounts::default(),
        }
    }

    /// Where `name` stands.
    pub fn find(&self, name: &LowerName) -> Found<'_> {
        if !self.origin.zone_of(name) {
            return Found::Outside;
        }
        let sky = self.sky.get(name);
        let depth = usize::from(name.num_labels()) - usize::from(self.origin.num_labels());
        let mut labels = name.iter();
        let (l0, l1) = (labels.next(), labels.next());
        let services = match (depth, l0, l1) {
            (1, Some(s), _) => self.services.get(s).map(|n| &n.names.service),
            // `_SERVICE._tcp`: labels never start with `_`, so no
            // instance can be named like this.
            (2, Some(i), Some(b"_tcp")) => i
                .strip_prefix(b"_")
                .and_then(|s| self.services.get(s))
                .and_then(|n| n.names.srv.as_ref()),
            (2, Some(i), Some(s)) => self.services.get(s).and_then(|n| n.names.instances.get(i)),
            _ => None,
        };
        let apex = depth == 0;
        let tcp = depth == 1 && l0 == Some(b"_tcp") && self.any_srv;
        if services.is_none() && sky.is_none() && !apex && !tcp {
            return Found::NoName;
        }
        Found::Name {
            apex,
            services,
            sky,
        }
    }
}

/// The zone's SOA: `ns.dns.D` and `hostmaster.D` as CoreDNS names them,
/// the serial from the etcd revision, and the negative-caching TTL
/// (RFC 2308: the minimum of the SOA's TTL and its MINIMUM) at `ttl`.
pub fn soa(origin: &LowerName, ttl: u32, revision: i64) -> Record {
    let o: &Name = origin;
    let named = |l: &[&str]| {
        l.iter()
            .rev()
            .try_fold(o.clone(), |n, l| n.prepend_label(*l))
            .unwrap_or_else(|_| o.clone())
    };
    // Serials compare modulo 2^32 (RFC 1982); the low 32 bits of the
    // revision keep increasing in that arithmetic.
    let serial = (revision as u64 & 0xffff_ffff) as u32;
    Record::from_rdata(
        o.clone(),
        ttl,
        RData::SOA(SOA::new(
            named(&["ns", "dns"]),
            named(&["hostmaster"]),
            serial,
            7200,
            1800,
            86400,
            ttl,
        )),
    )
}

/// An A or AAAA record.
pub fn address(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

/// An SRV record.
pub fn srv(name: &Name, ttl: u32, priority: u16, weight: u16, port: u16, target: &Name) -> Record {
    Record::from_rdata(
        name.clone(),
        ttl,
        RData::SRV(SRV::new(priority, weight, port, target.clone())),
    )
}
