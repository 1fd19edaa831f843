//! `discover serve`'s own series, beside the shared `discover_*` ones
//! (`discover_watch_resyncs_total`, `discover_up`, …):
//!
//! * `discover_serve_queries_total{type,rcode}`: DNS queries answered;
//! * `discover_serve_answer_seconds`: time from a decoded query to its
//!   answer handed to the socket;
//! * `discover_serve_records{type}`: records held (what is served);
//! * `discover_serve_stale_seconds`: how long the state has not been
//!   known current (0 while every watch is live);
//! * `discover_serve_problems{kind}`: keys not served (`key`) and names
//!   that did not get their plain label (`collision`).

use std::sync::Arc;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::health::Health;
use super::zone::RecordCounts;
use crate::common::metrics::{Labels, Metrics};

/// Query types counted by name; the rest count as `other`.
const TYPES: [&str; 9] = [
    "A", "AAAA", "SRV", "TXT", "CNAME", "SOA", "NS", "ANY", "other",
];
/// Response codes counted by name; the rest count as `other`.
const RCODES: [&str; 8] = [
    "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP", "BADVERS", "other",
];

/// The slot of `t` in the per-type counters (`other` last).
fn type_index(t: RecordType) -> usize {
    match t {
        RecordType::A => 0,
        RecordType::AAAA => 1,
        RecordType::SRV => 2,
        RecordType::TXT => 3,
        RecordType::CNAME => 4,
        RecordType::SOA => 5,
        RecordType::NS => 6,
        RecordType::ANY => 7,
        _ => 8,
    }
}

/// The slot of `r` in the per-rcode counters (`other` last).
fn rcode_index(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 0,
        ResponseCode::NXDomain => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::Refused => 3,
        ResponseCode::FormErr => 4,
        ResponseCode::NotImp => 5,
        ResponseCode::BADVERS => 6,
        _ => 7,
    }
}

/// The staleness gauge, read from [`Health`] when scraped (no timer).
#[derive(Debug)]
struct Staleness(Arc<Health>);

impl EncodeMetric for Staleness {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0.staleness().as_secs_f64())
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// The counters a query touches, made once: counting is on every query's
/// path, so it never takes the family's lock.
#[derive(Debug)]
pub struct ServeMetrics {
    /// Queries by type × response code, indexed by `type_index` and `rcode_index`.
    by_type_rcode: Vec<Counter>,
    /// Answer time.
    answer: Histogram,
    /// Records served, by type (A, AAAA, SRV, TXT, CNAME).
    records: [Gauge; 5],
    /// Keys that could not be served: unreadable values and name collisions.
    problems: [Gauge; 2],
}

impl ServeMetrics {
    /// Register the series in `m`.
    pub fn register(m: &mut Metrics, health: Arc<Health>) -> Self {
        let queries = Family::<Labels, Counter>::default();
        m.register(
            "serve_queries",
            "DNS queries answered, by query type and response code",
            queries.clone(),
        );
        let mut by_type_rcode = Vec::with_capacity(TYPES.len() * RCODES.len());
        for t in TYPES {
            for r in RCODES {
                by_type_rcode.push(
                    queries
                        .get_or_create(&vec![
                            ("type".to_owned(), t.to_owned()),
                            ("rcode".to_owned(), r.to_owned()),
                        ])
                        .clone(),
                );
            }
        }
        // 5 µs to 50 ms: an answer from memory takes microseconds; the
        // upper buckets catch a starved runtime.
        let answer = Histogram::new([
            5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 5e-2,
        ]);
        m.register(
            "serve_answer_seconds",
            "Time from a decoded DNS query to its answer handed to the socket",
            answer.clone(),
        );
        let records = Family::<Labels, Gauge>::default();
        m.register("serve_records", "Records served, by type", records.clone());
        let records = ["A", "AAAA", "SRV", "TXT", "CNAME"].map(|t| {
            records
                .get_or_create(&vec![("type".to_owned(), t.to_owned())])
                .clone()
        });
        let problems = Family::<Labels, Gauge>::default();
        m.register(
            "serve_problems",
            "Keys not served (kind=key) and names served under a disambiguated label (kind=collision)",
            problems.clone(),
        );
        let problems = ["key", "collision"].map(|k| {
            problems
                .get_or_create(&vec![("kind".to_owned(), k.to_owned())])
                .clone()
        });
        m.register(
            "serve_stale_seconds",
            "How long the served state has not been known current (0 while every watch is live)",
            Staleness(health),
        );
        Self {
            by_type_rcode,
            answer,
            records,
            problems,
        }
    }

    /// Count one answered query.
    pub fn query(&self, qtype: RecordType, rcode: ResponseCode, seconds: f64) {
        let i = type_index(qtype) * RCODES.len() + rcode_index(rcode);
        if let Some(c) = self.by_type_rcode.get(i) {
            c.inc();
        }
        self.answer.observe(seconds);
    }

    /// The records now served.
    pub fn records(&self, c: &RecordCounts) {
        for (g, n) in self
            .records
            .iter()
            .zip([c.a, c.aaaa, c.srv, c.txt, c.cname])
        {
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Keys not served, and names with a disambiguated label.
    pub fn problems(&self, keys: usize, collisions: usize) {
        for (g, n) in self.problems.iter().zip([keys, collisions]) {
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
