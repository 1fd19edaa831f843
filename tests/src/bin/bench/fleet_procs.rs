//! P13's simulated fleet, the processes that play it (this same binary):
//!
//! ```text
//! bench --fleet-hosts ENDPOINTS FIRST COUNT K
//! bench --fleet-watchers ENDPOINTS COUNT PREFIX
//! ```
//!
//! A hosts process plays COUNT host agents, hosts FIRST.., each a
//! `discovery::LeaseGroup` of K keys under its own lease, as `sidekick
//! --all` holds a host's containers. It prints `ready` once every group is
//! in sync, then takes commands on stdin, one per line:
//! - `rm H C`, `set H C`: host H's container C stops or starts again; it
//!   prints `t KEY d|s NANOS` (the monotonic clock, as every process on the
//!   machine reads it) the moment before it asks its group for the change;
//! - `check`: prints `leases SAME CHANGED UNSYNCED`: groups still on the
//!   lease they started with, groups that lost theirs, groups not in sync.
//!
//! A watchers process holds COUNT library watches of PREFIX (a consumer
//! each), prints `ready` once every one has its snapshot, then on `report`
//! prints, for every change it saw, `seen KEY d|s COUNT FIRST LAST` (how
//! many of its watches saw it, the first and the last moment) and `end`.
//! A key changes at most once each way in a run, so `KEY d|s` names the
//! change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// This process's stdin, line by line (read by a thread: the commands
/// come rarely, and tokio's stdin is one more feature for one use).
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Now, on the monotonic clock every process of the machine shares.
pub fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Host `h`'s container `c`: its key (a service per container slot, an
/// instance per host).
pub fn key(prefix: &str, h: usize, c: usize) -> String {
    format!("{prefix}/app{c}/h{h:04}")
}

fn value(h: usize, c: usize, generation: u32) -> String {
    format!("10.{}.{}.{}:{}", h / 250, h % 250, c + 2, 8000 + generation)
}

/// How many of one process's consumers take their snapshot at a time.
pub const STARTING: usize = 4;

/// The prefix every simulated host registers under.
pub const PREFIX: &str = "/services";

async fn connect(endpoints: &str) -> discovery::Client {
    discovery::ConnectOptions::new()
        .with_endpoints(endpoints.split(','))
        .connect()
        .await
        .expect("bench: the fleet's etcd")
}

pub async fn hosts(endpoints: &str, first: usize, count: usize, k: usize) {
    let client = connect(endpoints).await;
    let options = discovery::RegisterOptions::new(Duration::from_secs(8));
    let groups: Vec<discovery::LeaseGroup> = (first..first + count)
        .map(|h| {
            let keys = (0..k)
                .map(|c| (key(PREFIX, h, c), value(h, c, 0).into_bytes()))
                .collect();
            client.lease_group(options.clone(), keys).expect("group")
        })
        .collect();
    for g in &groups {
        let mut state = g.state();
        state
            .wait_for(|s| s.synced && s.lease.is_some())
            .await
            .expect("group in sync");
    }
    let leases: Vec<_> = groups.iter().map(|g| g.state().borrow().lease).collect();
    println!("ready");
    let mut generation: HashMap<(usize, usize), u32> = HashMap::new();
    let mut lines = stdin_lines();
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let hc = |i: usize| words.get(i).and_then(|w| w.parse::<usize>().ok());
        match (words.first().copied(), hc(1), hc(2)) {
            (Some("rm"), Some(h), Some(c)) if (first..first + count).contains(&h) => {
                let key = key(PREFIX, h, c);
                println!("t {key} d {}", mono_ns());
                groups[h - first].remove(&key);
            }
            (Some("set"), Some(h), Some(c)) if (first..first + count).contains(&h) => {
                let g = generation.entry((h, c)).or_default();
                *g += 1;
                let key = key(PREFIX, h, c);
                println!("t {key} s {}", mono_ns());
                groups[h - first]
                    .set(&key, value(h, c, *g))
                    .expect("a valid key");
            }
            (Some("check"), _, _) => {
                let (mut same, mut changed, mut unsynced) = (0, 0, 0);
                for (g, start) in groups.iter().zip(&leases) {
                    let s = g.state().borrow().clone();
                    if s.lease == *start {
                        same += 1;
                    } else {
                        changed += 1;
                    }
                    if !s.synced {
                        unsynced += 1;
                    }
                }
                println!("leases {same} {changed} {unsynced}");
            }
            _ => eprintln!("bench --fleet-hosts: {line:?} is not understood"),
        }
    }
}

/// Per change: how many watches saw it, first and last moment.
type Seen = Arc<Mutex<HashMap<String, (u32, u64, u64)>>>;

pub async fn watchers(endpoints: &str, count: usize, prefix: &str) {
    let client = connect(endpoints).await;
    let seen: Seen = Arc::default();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(count.max(1));
    // Consumers start a few at a time, as a fleet's hosts do, not all in
    // the same millisecond: 500 snapshots of the whole prefix asked at
    // once never completed on this machine (each took longer than the
    // request timeout, was retried, and the retries kept the herd alive;
    // BENCHMARKS.md, P13). What P13 measures is the steady fleet.
    let gate = Arc::new(tokio::sync::Semaphore::new(STARTING));
    for _ in 0..count {
        let (seen, ready, gate) = (seen.clone(), ready_tx.clone(), gate.clone());
        let client = client.clone();
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("the gate stays open");
            // Dropping the handle leaves the watch running.
            let (_handle, mut stream) = client
                .watch_prefix(&prefix, discovery::WatchOptions::new())
                .expect("watch");
            stream.snapshot().await.expect("the snapshot");
            drop(permit);
            let _ = ready.send(()).await;
            while let Some(msg) = stream.recv().await {
                let Ok(discovery::WatchMessage::Event(e)) = msg else {
                    continue;
                };
                let at = mono_ns();
                let kind = if e.action() == discovery::Action::Delete {
                    "d"
                } else {
                    "s"
                };
                let id = format!("{} {kind}", String::from_utf8_lossy(e.key()));
                let mut seen = seen.lock().unwrap();
                let entry = seen.entry(id).or_insert((0, at, at));
                entry.0 += 1;
                entry.1 = entry.1.min(at);
                entry.2 = entry.2.max(at);
            }
        });
    }
    for _ in 0..count {
        ready_rx.recv().await;
    }
    println!("ready");
    let mut lines = stdin_lines();
    while let Some(line) = lines.recv().await {
        if line.trim() == "report" {
            let seen = seen.lock().unwrap().clone();
            for (id, (n, first, last)) in seen {
                println!("seen {id} {n} {first} {last}");
            }
            println!("end");
        }
    }
}
