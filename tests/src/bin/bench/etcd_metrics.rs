//! etcd's own account of itself: its Prometheus `/metrics` on each
//! member's client URL (process CPU and memory, database size, gRPC
//! requests by method).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One scrape of one member: `name{labels}` and value, as etcd printed them.
#[derive(Clone, Debug, Default)]
pub struct Scrape(Vec<(String, f64)>);

impl Scrape {
    /// GET `/metrics` from `endpoint` (`http://127.0.0.1:PORT`).
    pub fn of(endpoint: &str) -> Result<Self, String> {
        let addr = endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut text = String::new();
        s.read_to_string(&mut text)
            .map_err(|e| format!("{addr}: {e}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or_else(|| format!("{addr}: no HTTP body in {} bytes", text.len()))?;
        Ok(Self(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_owned(), value.parse().ok()?))
                })
                .collect(),
        ))
    }

    /// The sum of every series of metric `name` whose labels hold each of
    /// `labels` (such as `grpc_method="LeaseKeepAlive"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(n, _)| {
                n.split('{').next() == Some(name) && labels.iter().all(|l| n.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The first of `names` that etcd exports (names moved between
    /// releases), summed as [`Scrape::sum`].
    pub fn first_of(&self, names: &[&str]) -> f64 {
        names
            .iter()
            .find(|n| self.0.iter().any(|(m, _)| m.split('{').next() == Some(**n)))
            .map_or(0.0, |n| self.sum(n, &[]))
    }
}

/// Every member's scrape.
pub fn scrape_all(endpoints: &[String]) -> Vec<Scrape> {
    endpoints
        .iter()
        .map(|e| Scrape::of(e).unwrap_or_else(|err| panic!("bench: etcd metrics: {err}")))
        .collect()
}

/// The sum over members of `after - before` of metric `name` with `labels`.
pub fn delta(before: &[Scrape], after: &[Scrape], name: &str, labels: &[&str]) -> f64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.sum(name, labels) - b.sum(name, labels))
        .sum()
}
