//! P13: the fleet, by simulation. A real 3-member etcd cluster; N host
//! agents, each a `LeaseGroup` of K keys under its own lease, played by a
//! few processes (`bench --fleet-hosts`); W consumers watching `/services`
//! through the library (`bench --fleet-watchers`); one real `discover
//! watch /services`, what one host's consumer costs; then a steady window
//! (keep-alives only) and a churn across the fleet, measured from the host
//! agent's change to the last of the W watchers that saw it, and at etcd
//! (its `/metrics`: CPU, memory, database size, requests).

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use harness::proc::{Proc, discover};
use harness::{EtcdCluster, EtcdConfig, RawWatch};

use crate::etcd_metrics::{Scrape, delta, scrape_all};
use crate::fleet_procs::{PREFIX, key};
use crate::procfs::{cpu_precise, rss_kib};

/// How big a fleet, and how long each window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scale {
    /// Hosts (lease groups), keys per host, watchers.
    pub n: usize,
    pub k: usize,
    pub w: usize,
    /// How many hosts and watchers one process plays.
    pub hosts_per_proc: usize,
    pub watchers_per_proc: usize,
    pub steady: Duration,
    pub churn: Duration,
    /// Changes per second asked for, across the fleet.
    pub rate: f64,
}

impl Scale {
    pub fn full() -> Self {
        Self {
            n: 500,
            k: 20,
            w: 500,
            hosts_per_proc: 250,
            watchers_per_proc: 100,
            steady: Duration::from_secs(30),
            churn: Duration::from_secs(60),
            rate: 10.0,
        }
    }

    pub fn quick() -> Self {
        Self {
            n: 6,
            k: 4,
            w: 6,
            hosts_per_proc: 6,
            watchers_per_proc: 3,
            steady: Duration::from_secs(3),
            churn: Duration::from_secs(3),
            rate: 5.0,
        }
    }
}

/// Per member and summed: what etcd said about itself.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EtcdSide {
    /// CPU, in cores (CPU seconds per second), of each member.
    pub cpu_steady: Vec<f64>,
    pub cpu_churn: Vec<f64>,
    /// Resident memory of each member after the churn, MiB.
    pub rss_mib: Vec<f64>,
    /// The database file (the largest member's), bytes: empty, with every
    /// key registered, after the churn; and in use after the churn.
    pub db_empty: f64,
    pub db_registered: f64,
    pub db_after: f64,
    pub db_in_use_after: f64,
    /// Requests per second, all members: lease keep-alives (steady), every
    /// gRPC message received (steady, churn), watch responses sent (churn).
    pub keepalives_per_s: f64,
    pub requests_steady_per_s: f64,
    pub requests_churn_per_s: f64,
    pub watch_sent_churn_per_s: f64,
    /// Watchers etcd counts (all members).
    pub watchers: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Fleet {
    pub scale: Scale,
    /// Start of the hosts to every key registered; of the watchers to
    /// every snapshot.
    pub registered_in: Duration,
    pub watching_in: Duration,
    /// Changes made, and their windows' real lengths.
    pub changes: usize,
    pub steady_secs: f64,
    pub churn_secs: f64,
    /// Per change seen by all W: ms from the host's change to the first
    /// and to the last watcher.
    pub first: Vec<f64>,
    pub last: Vec<f64>,
    /// Changes that some watcher never saw.
    pub missed: usize,
    /// Events at etcd on keys the churn did not touch (a lease lost and
    /// the keys written again, or expired).
    pub unexpected: usize,
    /// Groups that lost the lease they started with; groups not in sync.
    pub leases_changed: usize,
    pub unsynced: usize,
    /// Keys etcd holds at the end, and how many it should.
    pub keys_found: usize,
    pub keys_expected: usize,
    pub etcd: EtcdSide,
    /// One real `discover watch /services`: CPU s/h in each window, RSS MiB.
    pub consumer_steady: f64,
    pub consumer_churn: f64,
    pub consumer_rss_mib: f64,
    /// Our simulation's own cost during the churn, CPU s/h: per host
    /// agent, per library watch.
    pub per_host: f64,
    pub per_watch: f64,
}

/// A process of this binary playing part of the fleet, talking over
/// stdin and stdout.
struct Helper {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: Arc<Mutex<Vec<String>>>,
    what: String,
}

impl Helper {
    fn spawn(what: &str, args: &[String]) -> Self {
        let mut c = tokio::process::Command::new(std::env::current_exe().unwrap());
        c.args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("bench: start {what}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let l = lines.clone();
        tokio::spawn(async move {
            let mut out = BufReader::new(out).lines();
            while let Ok(Some(line)) = out.next_line().await {
                l.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            stdin,
            lines,
            what: what.to_owned(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id().map_or(0, |p| p as i32)
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("bench: {} is gone: {e}", self.what));
    }

    /// Wait for a line `pred` accepts, after the first `from` lines.
    async fn wait(&mut self, from: usize, limit: Duration, pred: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .skip(from)
                .position(|l| pred(l))
            {
                return from + i;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("bench: {} exited ({status}) before answering", self.what);
            }
            assert!(
                Instant::now() < deadline,
                "bench: {} did not answer within {limit:?}",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// CPU cores each member used between two scrapes `secs` apart.
fn cores(before: &[Scrape], after: &[Scrape], secs: f64) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            (a.sum("process_cpu_seconds_total", &[]) - b.sum("process_cpu_seconds_total", &[]))
                / secs
        })
        .collect()
}

const DB: [&str; 2] = [
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_debugging_mvcc_db_total_size_in_bytes",
];

fn db(s: &[Scrape]) -> f64 {
    s.iter().map(|m| m.first_of(&DB)).fold(0.0, f64::max)
}

pub async fn run(scale: &Scale) -> Fleet {
    let (n, k, w) = (scale.n, scale.k, scale.w);
    eprintln!("bench: P13, a fleet of {n} hosts x {k} keys, {w} watchers, on a 3-member etcd");
    let etcd = EtcdCluster::start(EtcdConfig::new(3)).await;
    let endpoints = etcd.endpoints();
    let ep = etcd.endpoints_arg();
    let s_empty = scrape_all(&endpoints);

    let t = Instant::now();
    let mut hosts: Vec<(usize, usize, Helper)> = (0..n)
        .step_by(scale.hosts_per_proc.max(1))
        .map(|first| {
            let count = scale.hosts_per_proc.min(n - first);
            let args = [
                "--fleet-hosts",
                &ep,
                &first.to_string(),
                &count.to_string(),
                &k.to_string(),
            ];
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            (
                first,
                count,
                Helper::spawn(&format!("hosts {first}.."), &args),
            )
        })
        .collect();
    for (_, _, h) in &mut hosts {
        h.wait(0, Duration::from_secs(300), |l| l == "ready").await;
    }
    let registered_in = t.elapsed();
    eprintln!("bench: P13 {} keys registered in {registered_in:?}", n * k);
    let s_registered = scrape_all(&endpoints);

    let t = Instant::now();
    let mut watchers: Vec<Helper> = (0..w)
        .step_by(scale.watchers_per_proc.max(1))
        .map(|first| {
            let count = scale.watchers_per_proc.min(w - first);
            let args = ["--fleet-watchers", &ep, &count.to_string(), PREFIX];
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            Helper::spawn(&format!("watchers {first}.."), &args)
        })
        .collect();
    for h in &mut watchers {
        h.wait(0, Duration::from_secs(600), |l| l == "ready").await;
    }
    let watching_in = t.elapsed();
    eprintln!("bench: P13 {w} watchers have their snapshot after {watching_in:?}");
    let mut c = discover(&etcd, &["watch", PREFIX]);
    c.env("RUST_LOG", "warn");
    let consumer = Proc::spawn(c);
    consumer
        .wait_stdout(Duration::from_secs(60), "the consumer's listing", |l| {
            l.contains("\"get\"")
        })
        .await;
    let raw = RawWatch::start(&etcd, &format!("{PREFIX}/")).await;

    // Steady: keep-alives only.
    let (s0, c0, t0) = (
        scrape_all(&endpoints),
        cpu_precise(consumer.pid()),
        Instant::now(),
    );
    tokio::time::sleep(scale.steady).await;
    let (s1, c1, steady_secs) = (
        scrape_all(&endpoints),
        cpu_precise(consumer.pid()),
        t0.elapsed().as_secs_f64(),
    );

    // Churn: fresh keys stop; each comes back (a new value) 2 s or more
    // later, so every change is one key changing once each way.
    eprintln!(
        "bench: P13 churn at {} changes/s for {:?}",
        scale.rate, scale.churn
    );
    let helpers_cpu = |hosts: &[(usize, usize, Helper)], watchers: &[Helper]| {
        (
            hosts
                .iter()
                .map(|(_, _, h)| cpu_precise(h.pid()))
                .sum::<Duration>(),
            watchers
                .iter()
                .map(|h| cpu_precise(h.pid()))
                .sum::<Duration>(),
        )
    };
    let cpu_before = helpers_cpu(&hosts, &watchers);
    let mut rng = fastrand::Rng::with_seed(13);
    let mut touched: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut away: std::collections::VecDeque<((usize, usize), Instant)> = Default::default();
    let (mut removed, mut back) = (Vec::new(), Vec::new());
    let every = Duration::from_secs_f64(1.0 / scale.rate.max(0.1));
    let t1 = Instant::now();
    let mut next = t1;
    let mut i = 0usize;
    while t1.elapsed() < scale.churn && touched.len() < n * k {
        tokio::time::sleep_until(next).await;
        next += every;
        let due = away
            .front()
            .is_some_and(|(_, at)| at.elapsed() >= Duration::from_secs(2));
        let (cmd, (h, c)) = if i % 2 == 1 && due {
            let (hc, _) = away.pop_front().unwrap();
            back.push(hc);
            ("set", hc)
        } else {
            let hc = loop {
                let hc = (rng.usize(..n), rng.usize(..k));
                if touched.insert(hc) {
                    break hc;
                }
            };
            away.push_back((hc, Instant::now()));
            removed.push(hc);
            ("rm", hc)
        };
        let (_, _, helper) = hosts
            .iter_mut()
            .find(|(first, count, _)| (*first..first + count).contains(&h))
            .unwrap();
        helper.send(&format!("{cmd} {h} {c}")).await;
        i += 1;
    }
    let churn_secs = t1.elapsed().as_secs_f64();
    let (s2, c2) = (scrape_all(&endpoints), cpu_precise(consumer.pid()));
    let cpu_after = helpers_cpu(&hosts, &watchers);
    let changes = removed.len() + back.len();
    eprintln!("bench: P13 {changes} changes in {churn_secs:.1} s");

    // Every watcher has seen every change, or 30 s have passed.
    let planned: BTreeSet<String> = removed
        .iter()
        .map(|(h, c)| format!("{} d", key(PREFIX, *h, *c)))
        .chain(
            back.iter()
                .map(|(h, c)| format!("{} s", key(PREFIX, *h, *c))),
        )
        .collect();
    let mut seen: HashMap<String, (usize, u64, u64)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        seen.clear();
        for h in &mut watchers {
            let from = h.lines().len();
            h.send("report").await;
            let end = h.wait(from, Duration::from_secs(60), |l| l == "end").await;
            for l in &h.lines()[from..end] {
                let f: Vec<&str> = l.split_whitespace().collect();
                if let [_, key, kind, count, first, last] = f[..] {
                    let e = seen
                        .entry(format!("{key} {kind}"))
                        .or_insert((0, u64::MAX, 0));
                    e.0 += count.parse::<usize>().unwrap_or(0);
                    e.1 = e.1.min(first.parse().unwrap_or(u64::MAX));
                    e.2 = e.2.max(last.parse().unwrap_or(0));
                }
            }
        }
        let all = planned
            .iter()
            .all(|id| seen.get(id).is_some_and(|s| s.0 >= w));
        if all || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // When each host made its change.
    let mut made: HashMap<String, u64> = HashMap::new();
    for (_, _, h) in &hosts {
        for l in h.lines() {
            if let [_, key, kind, ns] = l.split_whitespace().collect::<Vec<_>>()[..] {
                made.insert(format!("{key} {kind}"), ns.parse().unwrap_or(0));
            }
        }
    }
    let (mut first, mut last, mut missed) = (Vec::new(), Vec::new(), 0);
    for id in &planned {
        match (made.get(id), seen.get(id)) {
            (Some(t0), Some((count, a, b))) if *count >= w => {
                first.push(a.saturating_sub(*t0) as f64 / 1e6);
                last.push(b.saturating_sub(*t0) as f64 / 1e6);
            }
            _ => missed += 1,
        }
    }

    // Nothing else happened: no key the churn did not touch changed, no
    // group lost its lease, and etcd holds what the hosts hold.
    let touched_keys: BTreeSet<String> = touched.iter().map(|(h, c)| key(PREFIX, *h, *c)).collect();
    let unexpected = raw
        .events()
        .iter()
        .filter(|e| !touched_keys.contains(&e.key))
        .count();
    let (mut leases_changed, mut unsynced) = (0, 0);
    for (_, _, h) in &mut hosts {
        let from = h.lines().len();
        h.send("check").await;
        let at = h
            .wait(from, Duration::from_secs(30), |l| l.starts_with("leases "))
            .await;
        let f: Vec<usize> = h.lines()[at]
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        leases_changed += f.get(1).copied().unwrap_or(0);
        unsynced += f.get(2).copied().unwrap_or(0);
    }
    let keys_found = etcd
        .client()
        .await
        .get_prefix(PREFIX)
        .await
        .map_or(0, |s| s.nodes().len());
    let s3 = scrape_all(&endpoints);
    let cpu_h = |d: Duration, secs: f64| d.as_secs_f64() * 3600.0 / secs;
    let per_host = cpu_h(cpu_after.0.saturating_sub(cpu_before.0), churn_secs) / n as f64;
    let per_watch = cpu_h(cpu_after.1.saturating_sub(cpu_before.1), churn_secs) / w as f64;
    let etcd_side = EtcdSide {
        cpu_steady: cores(&s0, &s1, steady_secs),
        cpu_churn: cores(&s1, &s2, churn_secs),
        rss_mib: s3
            .iter()
            .map(|m| m.sum("process_resident_memory_bytes", &[]) / 1048576.0)
            .collect(),
        db_empty: db(&s_empty),
        db_registered: db(&s_registered),
        db_after: db(&s3),
        db_in_use_after: s3
            .iter()
            .map(|m| m.sum("etcd_mvcc_db_total_size_in_use_in_bytes", &[]))
            .fold(0.0, f64::max),
        keepalives_per_s: delta(
            &s0,
            &s1,
            "grpc_server_msg_received_total",
            &["grpc_method=\"LeaseKeepAlive\""],
        ) / steady_secs,
        requests_steady_per_s: delta(&s0, &s1, "grpc_server_msg_received_total", &[]) / steady_secs,
        requests_churn_per_s: delta(&s1, &s2, "grpc_server_msg_received_total", &[]) / churn_secs,
        watch_sent_churn_per_s: delta(
            &s1,
            &s2,
            "grpc_server_msg_sent_total",
            &["grpc_method=\"Watch\""],
        ) / churn_secs,
        watchers: s2
            .iter()
            .map(|m| m.sum("etcd_debugging_mvcc_watcher_total", &[]))
            .sum(),
    };
    let fleet = Fleet {
        scale: scale.clone(),
        registered_in,
        watching_in,
        changes,
        steady_secs,
        churn_secs,
        first,
        last,
        missed,
        unexpected,
        leases_changed,
        unsynced,
        keys_found,
        keys_expected: n * k - removed.len() + back.len(),
        etcd: etcd_side,
        consumer_steady: cpu_h(c1.saturating_sub(c0), steady_secs),
        consumer_churn: cpu_h(c2.saturating_sub(c1), churn_secs),
        consumer_rss_mib: rss_kib(consumer.pid()) as f64 / 1024.0,
        per_host,
        per_watch,
    };
    drop(consumer);
    drop(watchers);
    drop(hosts);
    fleet
}
