//! P10 and P11: `discover serve`, side by side with its peers in one run.
//!
//! * P10: queries per second under Debian's `dnsperf` (mixed A and SRV over
//!   1,000 services × 3 instances), beside (a) the same records as a static
//!   zone served by Debian's `knot` (what a DNS server can do on this
//!   machine), and (b) the ceiling of any per-query-etcd design such as
//!   CoreDNS's `etcd` plugin: the rate at which etcd itself serves the same
//!   prefix read (`Range` of `SERVICE/`, linearizable, as the plugin does)
//!   at the same concurrency, before any DNS work or `LeaseTimeToLive`
//!   call. Then the answer time dnsperf sees at half our peak rate.
//! * P11: a put or delete in etcd until a direct query (no cache) sees it;
//!   the etcd requests per DNS query, from etcd's own `/metrics` over
//!   100,000 queries; and the resident memory holding 10,000 instances.
//!
//! Every server answers on 127.0.0.1 and the records' addresses are never
//! contacted: only DNS is measured.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etcd_client::{GetOptions, Txn, TxnOp};
use harness::{EtcdCluster, EtcdConfig, Port, Proc};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use crate::procfs;
use crate::stats::{ms, quantiles};

pub const DOMAIN: &str = "discovery.internal";
const PREFIX: &str = "/bench/dns/services";
/// dnsperf's queries in flight, and the etcd reads in flight for the ceiling.
pub const CONCURRENCY: usize = 64;

/// Answer times kept per server: order statistics enough for a CDF and
/// its p99, not every one of dnsperf's answers.
const KEPT: usize = 2001;

/// What P10 and P11 measured, raw: the report (`report/p10_p11.rs`) lays
/// it out and charts it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Dns {
    /// Services × instances of the P10 data set.
    pub services: usize,
    /// Our queries per second (dnsperf, peak).
    pub qps_ours: f64,
    /// knot's, on the same records.
    pub qps_knot: f64,
    /// etcd's prefix reads per second at the same concurrency.
    pub etcd_reads: f64,
    /// Answer times dnsperf saw at half our peak rate (ms), ours and
    /// knot's, thinned to [`KEPT`] order statistics.
    pub latency_ours: Vec<f64>,
    pub latency_knot: Vec<f64>,
    /// The rate those latency runs were held at.
    pub half_rate: f64,
    /// Queries dnsperf lost (no answer within its timeout) over every run.
    pub lost: u64,
    /// Put → the direct answer has it, delete → NXDOMAIN (ms).
    pub change_put: Vec<f64>,
    pub change_delete: Vec<f64>,
    /// DNS queries sent while counting etcd's requests.
    pub queries: u64,
    /// etcd Range + LeaseTimeToLive requests meanwhile.
    pub etcd_requests: f64,
    /// The same count per read during the per-query-etcd ceiling run: the
    /// peer's figure, measured the same way (and proof that the counter
    /// counts).
    pub etcd_requests_peer: f64,
    /// Instances held for the memory figure, and the RSS (MiB).
    pub rss_instances: usize,
    pub rss_mib: f64,
    /// The commands, for the report.
    pub commands: Vec<String>,
}

/// One A query for `name`, as the wire has it (id 0x5151).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(u8::try_from(l.len()).unwrap());
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// (rcode, answer count) of a query to 127.0.0.1:`port`, or None.
async fn ask(sock: &UdpSocket, port: u16, name: &str) -> Option<(u8, u16)> {
    let id = fastrand::u16(..);
    sock.send_to(&query(id, name), ("127.0.0.1", port))
        .await
        .ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return Some((buf[3] & 0x0f, u16::from_be_bytes([buf[6], buf[7]])));
        }
    }
}

/// `(service, instance, value)` for `services` × 3.
fn records(services: usize) -> Vec<(String, String, String)> {
    (1..=services)
        .flat_map(|s| {
            (1..=3).map(move |i| {
                (
                    format!("svc{s}"),
                    format!("{i}"),
                    format!("10.{}.{}.{i}:8080", s / 250, s % 250),
                )
            })
        })
        .collect()
}

async fn load(etcd: &EtcdCluster, prefix: &str, recs: &[(String, String, String)]) {
    let mut c = etcd.raw_client().await;
    for chunk in recs.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(s, i, v)| TxnOp::put(format!("{prefix}/{s}/{i}"), v.as_str(), None))
            .collect();
        c.txn(Txn::new().and_then(ops)).await.expect("load keys");
    }
}

/// `discover serve PREFIX --dns 127.0.0.1:0`, ready: the process and its port.
async fn serve(etcd: &EtcdCluster, prefix: &str) -> (Proc, u16) {
    let mut cmd = Proc::command("discover");
    cmd.env("RUST_LOG", "info")
        .env("ETCDCTL_ENDPOINTS", etcd.endpoints_arg())
        .args(["serve", prefix, "--dns", "127.0.0.1:0"]);
    let p = Proc::spawn(cmd);
    let line = p
        .wait_stderr(Duration::from_secs(60), "discover serve's address", |l| {
            l.contains("answering DNS")
        })
        .await;
    let port = line
        .split("dns=127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("dns= in the log");
    p.wait_stderr(Duration::from_secs(120), "the first snapshot", |l| {
        l.contains("first snapshot in")
    })
    .await;
    (p, port)
}

/// knot serving the same records as a static zone, ready on a reserved
/// port (the harness's reservation, kept as long as knot runs).
async fn knot(dir: &Path, recs: &[(String, String, String)]) -> (Proc, Port) {
    let mut zone = format!(
        "$ORIGIN {DOMAIN}.\n$TTL 5\n@ SOA ns.dns hostmaster 1 7200 1800 86400 5\n@ NS ns.dns\nns.dns A 127.0.0.1\n"
    );
    for (s, i, v) in recs {
        let (ip, port) = v.rsplit_once(':').unwrap();
        let _ = writeln!(
            zone,
            "{s} A {ip}\n{i}.{s} A {ip}\n{s} SRV 0 1 {port} {i}.{s}\n_{s}._tcp SRV 0 1 {port} {i}.{s}"
        );
    }
    std::fs::write(dir.join("zone"), zone).unwrap();
    for _ in 0..5 {
        let reserved = Port::reserve();
        let port = reserved.number();
        let conf = format!(
            "server:\n  listen: 127.0.0.1@{port}\n  rundir: {d}\n  udp-workers: 2\n  tcp-workers: 1\n  background-workers: 1\n\
             database:\n  storage: {d}/db\nlog:\n  - target: stderr\n    any: warning\n\
             zone:\n  - domain: {DOMAIN}\n    file: {d}/zone\n    journal-content: none\n",
            d = dir.display()
        );
        std::fs::write(dir.join("knot.conf"), conf).unwrap();
        let mut cmd = Command::new("knotd");
        cmd.arg("-c").arg(dir.join("knot.conf"));
        let mut p = Proc::spawn(cmd);
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && p.try_exit().is_none() {
            if ask(&sock, port, &format!("svc1.{DOMAIN}")).await == Some((0, 3)) {
                return (p, reserved);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("knotd did not answer on a free port in 5 tries");
}

/// One dnsperf run: queries per second, lost queries, and each answer's
/// latency in ms (with `-v`).
struct Perf {
    qps: f64,
    lost: u64,
    latencies: Vec<f64>,
    completed: u64,
}

fn dnsperf(port: u16, file: &Path, args: &[String], verbose: bool) -> (Perf, String) {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", "127.0.0.1", "-p", &port.to_string()])
        .arg("-d")
        .arg(file)
        .args(["-c", "4", "-T", "2", "-q", &CONCURRENCY.to_string()])
        .args(args);
    if verbose {
        cmd.arg("-v");
    }
    let line = format!(
        "dnsperf -s 127.0.0.1 -p PORT -d QUERIES -c 4 -T 2 -q {CONCURRENCY} {}{}",
        args.join(" "),
        if verbose { " -v" } else { "" }
    );
    let out = cmd.output().expect("run dnsperf");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let latencies = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    (
        Perf {
            qps: field("Queries per second:"),
            lost: field("Queries lost:") as u64,
            completed: field("Queries completed:") as u64,
            latencies,
        },
        line,
    )
}

/// etcd's prefix reads per second with `CONCURRENCY` in flight for `d`,
/// and how many reads that was.
async fn etcd_ceiling(etcd: &EtcdCluster, services: usize, d: Duration) -> (f64, u64) {
    let c = etcd.raw_client().await;
    let stop = Instant::now() + d;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let mut c = c.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut s = w % services + 1;
                while Instant::now() < stop {
                    c.get(
                        format!("{PREFIX}/svc{s}/"),
                        Some(GetOptions::new().with_prefix()),
                    )
                    .await
                    .expect("etcd prefix read");
                    n += 1;
                    s = s % services + 1;
                }
                n
            })
        })
        .collect();
    let t = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    (total as f64 / t.elapsed().as_secs_f64(), total)
}

/// etcd's Range + LeaseTimeToLive requests so far, from its `/metrics`.
/// Never 0 here (loading the keys and every snapshot read a range), so a
/// missing counter stops the bench instead of reading as "no requests".
async fn etcd_requests(etcd: &EtcdCluster) -> f64 {
    let url = format!("{}/metrics", etcd.endpoint(0));
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", &url])
        .output()
        .await
        .expect("curl etcd /metrics");
    let text = String::from_utf8_lossy(&out.stdout);
    let n = text
        .lines()
        .filter(|l| {
            l.starts_with("grpc_server_started_total")
                && (l.contains("grpc_method=\"Range\"")
                    || l.contains("grpc_method=\"LeaseTimeToLive\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        n > 0.0,
        "no grpc_server_started_total for Range in etcd's {url}:\n{text}"
    );
    n
}

/// P11's first figure: puts and deletes of a name until a direct query
/// sees each change.
async fn changes(etcd: &EtcdCluster, port: u16, rounds: usize) -> Vec<Duration> {
    let c = etcd.client().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut out = Vec::with_capacity(rounds * 2);
    for r in 0..rounds {
        let name = format!("chg{r}.{DOMAIN}");
        let key = format!("{PREFIX}/chg{r}/1");
        for put in [true, false] {
            let t = Instant::now();
            if put {
                c.put(&key, "10.250.0.1:80").await.expect("put");
            } else {
                c.delete(&key).await.expect("delete");
            }
            let deadline = t + Duration::from_secs(10);
            loop {
                let seen = ask(&sock, port, &name).await;
                let done = if put {
                    seen == Some((0, 1))
                } else {
                    seen.is_some_and(|(rc, _)| rc == 3)
                };
                if done {
                    out.push(t.elapsed());
                    break;
                }
                assert!(Instant::now() < deadline, "{name}: no change within 10 s");
            }
        }
    }
    out
}

/// Run P10 and P11 on an etcd of their own.
pub async fn run(quick: bool) -> Dns {
    let services = if quick { 100 } else { 1_000 };
    let (peak_s, lat_s, rounds, counted, rss_n) = if quick {
        (2, 1, 10, 2_000u64, 1_000usize)
    } else {
        (20, 10, 100, 100_000, 10_000)
    };
    let etcd = EtcdCluster::start(EtcdConfig::new(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let recs = records(services);
    load(&etcd, PREFIX, &recs).await;
    // Mixed A and SRV, every service, shuffled once.
    let mut lines: Vec<String> = recs
        .iter()
        .filter(|(_, i, _)| i == "1")
        .flat_map(|(s, _, _)| [format!("{s}.{DOMAIN} A"), format!("_{s}._tcp.{DOMAIN} SRV")])
        .collect();
    fastrand::Rng::with_seed(10).shuffle(&mut lines);
    let qfile = dir.path().join("queries");
    std::fs::write(&qfile, lines.join("\n") + "\n").unwrap();
    let (ours, port) = serve(&etcd, PREFIX).await;
    let kdir = dir.path().join("knot");
    std::fs::create_dir_all(&kdir).unwrap();
    let (knot_proc, kport_reserved) = knot(&kdir, &recs).await;
    let kport = kport_reserved.number();
    // Both answer the same thing.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for n in [format!("svc1.{DOMAIN}"), format!("1.svc2.{DOMAIN}")] {
        assert_eq!(
            ask(&sock, port, &n).await,
            ask(&sock, kport, &n).await,
            "{n}"
        );
    }

    let mut commands = Vec::new();
    let peak = vec!["-l".to_owned(), peak_s.to_string()];
    let (o, cmd) = dnsperf(port, &qfile, &peak, false);
    commands.push(cmd);
    let (k, _) = dnsperf(kport, &qfile, &peak, false);
    let before = etcd_requests(&etcd).await;
    let (etcd_reads, reads) = etcd_ceiling(&etcd, services, Duration::from_secs(peak_s)).await;
    let etcd_requests_peer = (etcd_requests(&etcd).await - before) / reads.max(1) as f64;
    let half_rate = (o.qps / 2.0).round();
    let half = vec![
        "-l".to_owned(),
        lat_s.to_string(),
        "-Q".to_owned(),
        format!("{half_rate:.0}"),
    ];
    let (ol, cmd) = dnsperf(port, &qfile, &half, true);
    commands.push(cmd);
    let (kl, _) = dnsperf(kport, &qfile, &half, true);
    drop(knot_proc);
    drop(kport_reserved);

    // P11: changes, then etcd's requests over `counted` queries.
    let change = changes(&etcd, port, rounds).await;
    let before = etcd_requests(&etcd).await;
    let runs = (counted as usize).div_ceil(lines.len());
    let (n, cmd) = dnsperf(port, &qfile, &["-n".to_owned(), runs.to_string()], false);
    commands.push(cmd);
    let after = etcd_requests(&etcd).await;
    drop(ours);

    // Memory: a serve holding `rss_n` instances.
    let big = format!("{PREFIX}-rss");
    load(&etcd, &big, &records(rss_n.div_ceil(3))).await;
    let (holder, hport) = serve(&etcd, &big).await;
    // Answer a round of queries first, so the figure is of a working server.
    for s in 1..=100 {
        let _ = ask(&sock, hport, &format!("svc{s}.{DOMAIN}")).await;
    }
    let rss_mib = procfs::rss_kib(holder.pid()) as f64 / 1024.0;
    drop(holder);

    Dns {
        services,
        qps_ours: o.qps,
        qps_knot: k.qps,
        etcd_reads,
        latency_ours: quantiles(&ol.latencies, KEPT),
        latency_knot: quantiles(&kl.latencies, KEPT),
        half_rate,
        lost: o.lost + k.lost + ol.lost + kl.lost + n.lost,
        change_put: ms(&change.iter().step_by(2).copied().collect::<Vec<_>>()),
        change_delete: ms(&change
            .iter()
            .skip(1)
            .step_by(2)
            .copied()
            .collect::<Vec<_>>()),
        queries: n.completed,
        etcd_requests: after - before,
        etcd_requests_peer,
        rss_instances: rss_n.div_ceil(3) * 3,
        rss_mib,
        commands,
    }
}
