//! P4: what it costs to keep one registration alive, sidekick against the
//! bash loop and everything it forks, measured side by side: the sidekick
//! at its defaults (a keep-alive every TTL/3 = 2.67 s; Docker is inspected
//! only on events and at the 60 s safety resync) and
//! at the loop's own cadence (every 5 s), and the bare stack doing the same
//! two operations with no logic at all (the floor), also split into each
//! operation alone, and a process that only wakes up. The window is cut
//! into slices, each a measurement. Each of our processes runs in
//! [`COPIES`] side by side: on a VM, the same process measures several
//! times cheaper or dearer depending on its core and neighbours, so the
//! median is taken over copies and slices together. Wake-ups (voluntary
//! context switches) are counted too: unlike CPU time, they do not depend
//! on the machine.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use harness::docker::{ContainerSpec, unique_name};
use harness::proc::{Proc, sidekick};
use harness::{Docker, Etcd, RawWatch};

use crate::peer;
use crate::procfs::{cpu, cpu_precise, rss_kib, tree_rss_kib, wakeups};
use crate::v2::V2Watch;

/// The measured processes, in report order.
pub const WHO: [&str; 8] = [
    "sidekick (defaults: keep-alive every 2.67 s, resync 60 s)",
    "sidekick --interval 5s (the loop's cadence)",
    "bash loop (and its children)",
    "floor: keep-alive + inspect, every 2.67 s",
    "floor: keep-alive alone, every 2.67 s",
    "floor: inspect alone, every 2.67 s",
    "floor: keep-alive + inspect, every 5 s",
    "floor: wake-up alone (tokio's timer, no I/O), every 2.67 s",
];

/// Each one's cadence, in milliseconds (wake-ups are counted per cycle).
pub const CADENCE_MS: [u64; 8] = [2667, 5000, 5000, 2667, 2667, 2667, 5000, 2667];

/// Copies of each of our processes (the loop runs once: it is the heavy one).
pub const COPIES: usize = 3;

/// The index of the bash loop in [`WHO`].
pub const LOOP: usize = 2;

#[derive(Debug, Serialize, Deserialize)]
pub struct Cost {
    pub window: Duration,
    /// CPU seconds per hour, for each of [`WHO`], for each copy, one value
    /// per slice.
    pub per_hour: Vec<Vec<Vec<f64>>>,
    /// Wake-ups per cycle ([`CADENCE_MS`]), laid out as `per_hour`, for
    /// each of [`WHO`] but the loop (whose forks make it meaningless).
    pub wakes: Vec<Vec<Vec<f64>>>,
    pub rss_ours: Vec<f64>,
    pub rss_peer: Vec<f64>,
    pub writes_ours: usize,
    pub writes_peer: usize,
}

pub async fn run(etcd: &Etcd, docker: &Docker, dir: &std::path::Path, window: Duration) -> Cost {
    eprintln!("bench: P4 over {window:?}");
    let spec = |n: &str| ContainerSpec::new(unique_name(n)).tcp(11211);
    let o = docker.run(spec("cost-o")).await;
    let o5 = docker.run(spec("cost-o5")).await;
    let p = docker.run(spec("cost-p")).await;
    let f = docker.run(spec("cost-f")).await;
    let raw = RawWatch::start(etcd, "/services/cost/").await;
    let v2 = V2Watch::start(
        etcd.endpoint(0).trim_start_matches("http://"),
        "/services/costpeer",
    );
    let quiet = |args: &[&str]| {
        let mut c = sidekick(etcd, args);
        c.env("RUST_LOG", "warn");
        Proc::spawn(c)
    };
    let key = |base: &str, k: usize| {
        if k == 0 {
            base.to_owned()
        } else {
            format!("{base}-{k}")
        }
    };
    let script = peer::script(dir, None);
    let floor = |every_ms: &str, mode: &str| {
        let mut c = std::process::Command::new(harness::proc::bin_path("bare-sidekick"));
        c.args([etcd.endpoint(0).as_str(), f.name(), every_ms, mode])
            .env_remove("DOCKER_HOST");
        Proc::spawn(c)
    };
    // procs[i] holds the copies of WHO[i].
    let mut procs: Vec<Vec<Proc>> = (0..WHO.len()).map(|_| Vec::new()).collect();
    for k in 0..COPIES {
        let k1 = key("/services/cost/1", k);
        let k5 = key("/services/cost/5", k);
        procs[0].push(quiet(&["--key", &k1, "--container", o.name()]));
        procs[1].push(quiet(&[
            "--key",
            &k5,
            "--container",
            o5.name(),
            "--interval",
            "5s",
        ]));
        procs[3].push(floor("2667", "both"));
        procs[4].push(floor("2667", "keepalive"));
        procs[5].push(floor("2667", "inspect"));
        procs[6].push(floor("5000", "both"));
        procs[7].push(floor("2667", "idle"));
    }
    procs[LOOP].push(peer::spawn(
        &script,
        &etcd.endpoint(0),
        "costpeer",
        1,
        p.name(),
    ));
    // Let everything settle into its steady state first (the loop's first
    // write comes after its first 5 s sleep).
    tokio::time::sleep(Duration::from_secs(7).min(window * 2)).await;
    let sample = |procs: &[Vec<Proc>]| -> Vec<Vec<(Duration, u64)>> {
        procs
            .iter()
            .enumerate()
            .map(|(i, copies)| {
                copies
                    .iter()
                    .map(|p| {
                        if i == LOOP {
                            (cpu(p.pid(), true), 0)
                        } else {
                            (cpu_precise(p.pid()), wakeups(p.pid()))
                        }
                    })
                    .collect()
            })
            .collect()
    };
    let writes = |raw: &RawWatch| {
        raw.events()
            .iter()
            .filter(|e| e.key == "/services/cost/1")
            .count()
    };
    let (ro0, rp0) = (writes(&raw), v2.events().len());
    let slices = 6u32;
    let slice = window / slices;
    let shape = || -> Vec<Vec<Vec<f64>>> {
        procs
            .iter()
            .map(|copies| vec![Vec::new(); copies.len()])
            .collect()
    };
    let (mut per_hour, mut wakes) = (shape(), shape());
    let mut rss_ours = Vec::new();
    let mut rss_peer = Vec::new();
    let (ours, loop_pid) = (procs[0][0].pid(), procs[LOOP][0].pid());
    let t0 = Instant::now();
    for _ in 0..slices {
        let (start, before) = (Instant::now(), sample(&procs));
        while start.elapsed() < slice {
            rss_ours.push(rss_kib(ours) as f64 / 1024.0);
            rss_peer.push(tree_rss_kib(loop_pid) as f64 / 1024.0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (took, after) = (start.elapsed(), sample(&procs));
        for i in 0..WHO.len() {
            let cycles = took.as_secs_f64() * 1000.0 / CADENCE_MS[i] as f64;
            for (k, (b, a)) in before[i].iter().zip(&after[i]).enumerate() {
                let used = a.0.saturating_sub(b.0);
                per_hour[i][k].push(used.as_secs_f64() * 3600.0 / took.as_secs_f64());
                if i != LOOP {
                    wakes[i][k].push(a.1.saturating_sub(b.1) as f64 / cycles);
                }
            }
        }
    }
    let cost = Cost {
        window: t0.elapsed(),
        per_hour,
        wakes,
        rss_ours,
        rss_peer,
        writes_ours: writes(&raw) - ro0,
        writes_peer: v2.events().len() - rp0,
    };
    drop(procs);
    for c in [o, o5, p, f] {
        c.remove().await;
    }
    cost
}
