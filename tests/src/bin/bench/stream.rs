//! P5 and P6: discover against `etcdctl watch` and a bare etcd-client watch.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::Etcd;
use harness::proc::{Proc, bin_path};
use tokio::time::Instant;

#[derive(Debug, Serialize, Deserialize)]
pub struct Throughput {
    pub puts: u64,
    /// How many events each replay delivers (the storm and more written
    /// after it, so that the consumers' start-up weighs little).
    pub replay_puts: u64,
    pub batch: u64,
    pub storm_rate: f64,
    /// Events per second each consumer kept up with during the storm.
    pub live: [f64; 3],
    /// Events per second replaying the storm's history, per run.
    pub replay: [Vec<f64>; 3],
}

pub const CONSUMERS: [&str; 3] = [
    "discover watch",
    "etcdctl watch -w json",
    "bare etcd-client watch",
];

/// A consumer whose stdout is counted as it streams, without keeping it:
/// lines for discover (minus its get line), `{"kv":` for etcdctl's JSON,
/// and the bare watch's own count.
struct Counted {
    child: Child,
    events: Arc<AtomicU64>,
    done_at: Arc<Mutex<Option<Instant>>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn counted(etcd: &Etcd, which: usize, prefix: &str, from: i64, until: u64) -> Counted {
    let ep = etcd.endpoint(0);
    let mut c = match which {
        0 => {
            let mut c = Command::new(bin_path("discover"));
            c.args(["watch", prefix, "--endpoints", &ep]);
            if from > 0 {
                c.arg("--since-revision").arg((from - 1).to_string());
            }
            c.env("RUST_LOG", "warn");
            c
        }
        1 => {
            let mut c = Command::new("etcdctl");
            c.env("ETCDCTL_API", "3").args([
                "watch",
                "--prefix",
                prefix,
                "-w",
                "json",
                "--endpoints",
                &ep,
            ]);
            if from > 0 {
                c.arg("--rev").arg(from.to_string());
            }
            c
        }
        _ => {
            let mut c = Command::new(bin_path("bare-watch"));
            c.args([
                ep.as_str(),
                prefix,
                &from.to_string(),
                "--until",
                &until.to_string(),
            ]);
            c
        }
    };
    c.env_remove("ETCDCTL_ENDPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start consumer");
    let events = Arc::new(AtomicU64::new(0));
    let done_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (e, d) = (events.clone(), done_at.clone());
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut out = out;
        let pattern: &[u8] = if which == 1 { b"{\"kv\":" } else { b"\n" };
        let finder = memchr::memmem::Finder::new(pattern);
        let mut buf = vec![0u8; 1024 * 1024];
        let mut carry: Vec<u8> = Vec::new();
        let mut skip_first_line = which == 0;
        loop {
            let n = match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            carry.extend_from_slice(&buf[..n]);
            let mut count = 0u64;
            let mut i = 0;
            for at in finder.find_iter(&carry) {
                if skip_first_line {
                    skip_first_line = false;
                } else {
                    count += 1;
                }
                i = at + pattern.len();
            }
            // Keep a tail that may hold the start of a pattern split across reads.
            i = i.max(carry.len().saturating_sub(pattern.len() - 1));
            carry.drain(..i);
            if count > 0 {
                e.fetch_add(count, Ordering::SeqCst);
                if e.load(Ordering::SeqCst) >= until {
                    d.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
        }
    });
    if which == 2 {
        let (e, d) = (events.clone(), done_at.clone());
        std::thread::spawn(move || {
            let mut s = String::new();
            let mut err = err;
            let _ = err.read_to_string(&mut s);
            if let Some(n) = s
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
            {
                e.store(n, Ordering::SeqCst);
                d.lock().unwrap().get_or_insert_with(Instant::now);
            }
        });
    }
    Counted {
        child,
        events,
        done_at,
    }
}

async fn finished(c: &Counted, label: &str, n: u64, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = *c.done_at.lock().unwrap() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "bench: {label} saw {} of {n} events",
            c.events.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Write `count` puts from index `from`, `batch` per transaction, with 8
/// concurrent writers, to keys `prefix/k0` .. `prefix/k999`.
pub async fn storm(
    raw: &etcd_client::Client,
    prefix: &'static str,
    from: u64,
    count: u64,
    batch: u64,
) {
    let writers = 8u64;
    let txns = count.div_ceil(batch);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut c = raw.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = w;
            while t < txns {
                let ops: Vec<etcd_client::TxnOp> = (0..batch)
                    .map(|j| {
                        let i = from + t * batch + j;
                        etcd_client::TxnOp::put(
                            format!("{prefix}/k{}", i % 1000),
                            format!("v{i}"),
                            None,
                        )
                    })
                    .collect();
                c.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
                t += writers;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A storm of `puts` puts, `batch` per transaction (so that a revision
/// carries many events and the consumers, not etcd's pace, set the rate),
/// watched live by the three consumers; then `replay_puts - puts` more,
/// and each consumer replays all of them from the storm's first revision,
/// from its start to its last event, `rounds` times, interleaved.
pub async fn throughput(
    etcd: &Etcd,
    puts: u64,
    replay_puts: u64,
    batch: u64,
    rounds: usize,
) -> Throughput {
    eprintln!(
        "bench: P5 with {puts} puts in transactions of {batch}, then {rounds} replays of {replay_puts} per consumer"
    );
    let prefix = "/bench/storm";
    let live: Vec<Counted> = (0..3)
        .map(|w| counted(etcd, w, prefix, 0, puts + 1))
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut raw = etcd.raw_client().await;
    let first = raw
        .put(format!("{prefix}/k0"), "v0", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let t0 = Instant::now();
    storm(&raw, prefix, 0, puts, batch).await;
    let storm_took = t0.elapsed();
    // The consumers also saw the first put: the storm's events come after it.
    let mut live_rates = [0.0; 3];
    for (w, c) in live.iter().enumerate() {
        let at = finished(c, CONSUMERS[w], puts, Duration::from_secs(120)).await;
        live_rates[w] = puts as f64 / (at - t0).as_secs_f64();
    }
    drop(live);
    storm(&raw, prefix, puts, replay_puts.saturating_sub(puts), batch).await;
    let mut replay: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (w, r) in replay.iter_mut().enumerate() {
            let t = Instant::now();
            let c = counted(etcd, w, prefix, first + 1, replay_puts);
            let at = finished(&c, CONSUMERS[w], replay_puts, Duration::from_secs(300)).await;
            r.push(replay_puts as f64 / (at - t).as_secs_f64());
        }
    }
    Throughput {
        puts,
        replay_puts,
        batch,
        storm_rate: puts as f64 / storm_took.as_secs_f64(),
        live: live_rates,
        replay,
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Latency {
    pub ours: Vec<Duration>,
    pub bare: Vec<Duration>,
}

pub async fn latency(etcd: &Etcd, puts: usize) -> Latency {
    eprintln!("bench: P6 with {puts} puts");
    let prefix = "/bench/lat";
    let mut oc = Command::new(bin_path("discover"));
    oc.args(["watch", prefix, "--endpoints", &etcd.endpoint(0)])
        .env("RUST_LOG", "warn");
    let ours = Proc::spawn(oc);
    let mut bc = Command::new(bin_path("bare-watch"));
    bc.args([etcd.endpoint(0).as_str(), prefix, "0", "--print"]);
    let bare = Proc::spawn(bc);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut raw = etcd.raw_client().await;
    let mut sent = Vec::new();
    for i in 0..puts {
        let t = Instant::now();
        raw.put(format!("{prefix}/k"), format!("v{i}"), None)
            .await
            .unwrap();
        sent.push(t);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pick = |p: &Proc, marker: &dyn Fn(usize) -> String| -> Vec<Duration> {
        let lines = p.stdout_timed();
        (0..puts)
            .filter_map(|i| {
                let m = marker(i);
                lines
                    .iter()
                    .find(|(_, l)| l.contains(&m))
                    .map(|(at, _)| at.saturating_duration_since(sent[i]))
            })
            .collect()
    };
    Latency {
        ours: pick(&ours, &|i| format!("\"value\":\"v{i}\"")),
        bare: pick(&bare, &|i| format!(" {prefix}/k v{i}")),
    }
}
