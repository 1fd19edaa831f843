//! P10 and P11: `discover serve`, DNS answered from the live watch, beside
//! a static zone in knot and the ceiling of a per-query-etcd design.

use std::fmt::Write;

use super::{Section, met};
use crate::chart::{Bar, Chart};
use crate::dns::{CONCURRENCY, DOMAIN, Dns};
use crate::stats::{Summary, num};

pub fn section(d: &Dns) -> Section {
    let mut s = Section::default();
    let vs_knot = d.qps_ours / d.qps_knot.max(1.0);
    let vs_etcd = d.qps_ours / d.etcd_reads.max(1.0);
    let per_query = d.etcd_requests / (d.queries.max(1) as f64);
    let (lo, lk) = (Summary::of(&d.latency_ours), Summary::of(&d.latency_knot));
    let changes: Vec<f64> = d
        .change_put
        .iter()
        .chain(&d.change_delete)
        .copied()
        .collect();
    let ch = Summary::of(&changes);
    s.row([
        "P10",
        "`discover serve`: queries/s (dnsperf, mixed A and SRV)",
        &num(d.qps_ours),
        &format!(
            "knot, static zone: {}; etcd prefix reads: {}",
            num(d.qps_knot),
            num(d.etcd_reads)
        ),
        &format!("{}× knot; {}× etcd", num(vs_knot), num(vs_etcd)),
        "≥ 0.5× knot; ≥ 10× etcd",
        met(vs_knot >= 0.5 && vs_etcd >= 10.0),
    ]);
    s.row([
        "P10",
        &format!(
            "`discover serve`: answer time at half its peak ({} q/s), p99",
            num(d.half_rate)
        ),
        &format!("{} ms (p50 {} ms)", num(lo.p99), num(lo.p50)),
        &format!("knot {} ms (p50 {} ms)", num(lk.p99), num(lk.p50)),
        "—",
        "p99 ≤ 1 ms",
        met(lo.p99 <= 1.0),
    ]);
    s.row([
        "P11",
        "`discover serve`: put or delete in etcd → a direct query sees it, p99",
        &format!("{} ms (p50 {} ms, n {})", num(ch.p99), num(ch.p50), ch.n),
        "CoreDNS-etcd: up to its 30 s TTL floor (on paper)",
        "—",
        "p99 ≤ 50 ms",
        met(ch.n > 0 && ch.p99 <= 50.0),
    ]);
    s.row([
        "P11",
        &format!(
            "`discover serve`: etcd requests (Range + LeaseTimeToLive, etcd's /metrics) per DNS query, over {} queries",
            d.queries
        ),
        &num(per_query),
        &format!(
            "per-query designs: ≥ 1 (etcd's own prefix reads, counted the same way: {} per read)",
            num(d.etcd_requests_peer)
        ),
        "—",
        "0",
        met(d.queries > 0 && d.etcd_requests == 0.0),
    ]);
    s.row([
        "P11",
        &format!(
            "`discover serve`: resident memory holding {} instances",
            d.rss_instances
        ),
        &format!("{} MiB", num(d.rss_mib)),
        "—",
        "—",
        "≤ 48 MiB",
        met(d.rss_mib > 0.0 && d.rss_mib <= 48.0),
    ]);

    s.text("## P10 and P11: discover serve (DNS from the live watch)\n\n");
    let _ = writeln!(
        s.body_mut(),
        "`discover serve` answers from memory a zone of {} services × 3 instances read from etcd; Debian's `dnsperf` asks it a \
         shuffled mix of A (`SERVICE.{DOMAIN}`) and SRV (`_SERVICE._tcp.{DOMAIN}`) queries, {CONCURRENCY} in flight. Peers in the \
         same run: Debian's `knot` serving the same records as a static zone (2 UDP workers), and the ceiling of any \
         per-query-etcd design such as CoreDNS's `etcd` plugin: etcd serving the same prefix read (`SERVICE/`, as the plugin reads \
         it, linearizable) at the same concurrency, before any DNS work and before the `LeaseTimeToLive` call the plugin adds per \
         leased record. dnsperf runs on the same 2 cores as the servers.\n",
        d.services
    );
    s.rows_here();
    s.text("### Queries per second\n\n| | queries/s | against discover serve |\n|---|---|---|\n");
    let peers: [(&str, f64); 3] = [
        ("discover serve", d.qps_ours),
        ("knot, static zone", d.qps_knot),
        ("etcd prefix reads (per-query ceiling)", d.etcd_reads),
    ];
    for (who, q) in peers {
        let _ = writeln!(
            s.body_mut(),
            "| {who} | {} | {}× |",
            num(q),
            num(q / d.qps_ours.max(f64::MIN_POSITIVE))
        );
    }
    s.text("\n");
    let bars: Vec<Bar> = peers.iter().map(|(w, q)| (*w, *q, None)).collect();
    s.chart(Chart::bars(
        "p10-qps.svg",
        "P10: DNS queries per second, discover serve beside knot and etcd's own reads",
        "queries per second",
        "",
        false,
        &bars,
    ));
    let _ = writeln!(
        s.body_mut(),
        "### Answer time at half our peak\n\nBoth servers held at {} queries/s (half of discover serve's peak), each answer's time \
         as dnsperf saw it (`-v`; kept as {} evenly spaced order statistics, enough for the curve and its p99).\n",
        num(d.half_rate),
        d.latency_ours.len().max(d.latency_knot.len())
    );
    s.latencies(
        "p10-latency.svg",
        "P10: answer time at half discover serve's peak rate (CDF)",
        true,
        &[
            ("discover serve", &d.latency_ours),
            ("knot, static zone", &d.latency_knot),
        ],
    );
    s.text(
        "### A change in etcd → the answer changes\n\nFrom the `put` (or `delete`) call until a query sent directly to discover \
         serve (no resolver, no cache) first sees the change, polling back to back.\n\n",
    );
    s.latencies(
        "p11.svg",
        "P11: a put or delete in etcd → discover serve's answer changes (CDF)",
        true,
        &[
            ("put → the name answers", &d.change_put),
            ("delete → NXDOMAIN", &d.change_delete),
        ],
    );
    let _ = writeln!(
        s.body_mut(),
        "dnsperf lost {} queries over every run. etcd's count is the difference of `grpc_server_started_total` for `Range` and \
         `LeaseTimeToLive` before and after the queries. The memory is VmRSS of the serve process once its first snapshot is in \
         and it has answered.\n\nCommands (PORT and QUERIES filled in by the bench):\n",
        d.lost
    );
    for c in &d.commands {
        let _ = writeln!(s.body_mut(), "- `{c}`");
    }
    s.text("\n");
    s
}
