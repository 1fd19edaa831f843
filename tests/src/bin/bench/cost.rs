//! P4: what it costs to keep one registration alive, sidekick against the
//! bash loop and everything it forks, measured side by side: the sidekick
//! at its defaults (a keep-alive every TTL/3 = 2.67 s; Docker is inspected
//! only on events and at the 60 s safety resync) and
//! at the loop's own cadence (every 5 s), and the bare stack doing the same
//! two operations with no logic at all (the floor), also split into each
//! operation alone. The window is cut into slices, each a measurement.

use std::time::Duration;

use tokio::time::Instant;

use harness::docker::{ContainerSpec, unique_name};
use harness::proc::{Proc, sidekick};
use harness::{Docker, Etcd, RawWatch};

use crate::peer;
use crate::procfs::{cpu, cpu_precise, rss_kib, tree_rss_kib};
use crate::v2::V2Watch;

/// The measured processes, in report order.
pub const WHO: [&str; 7] = [
    "sidekick (defaults: keep-alive every 2.67 s, resync 60 s)",
    "sidekick --interval 5s (the loop's cadence)",
    "bash loop (and its children)",
    "floor: keep-alive + inspect, every 2.67 s",
    "floor: keep-alive alone, every 2.67 s",
    "floor: inspect alone, every 2.67 s",
    "floor: keep-alive + inspect, every 5 s",
];

pub struct Cost {
    pub window: Duration,
    /// CPU seconds per hour, one value per slice, for each of [`WHO`].
    pub per_hour: [Vec<f64>; 7],
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
    let ours = quiet(&["--key", "/services/cost/1", "--container", o.name()]);
    let ours5 = quiet(&[
        "--key",
        "/services/cost/5",
        "--container",
        o5.name(),
        "--interval",
        "5s",
    ]);
    let script = peer::script(dir, None);
    let loop_ = peer::spawn(&script, &etcd.endpoint(0), "costpeer", 1, p.name());
    let floor = |every_ms: &str, mode: &str| {
        let mut c = std::process::Command::new(harness::proc::bin_path("bare-sidekick"));
        c.args([etcd.endpoint(0).as_str(), f.name(), every_ms, mode])
            .env_remove("DOCKER_HOST");
        Proc::spawn(c)
    };
    let floors = [
        floor("2667", "both"),
        floor("2667", "keepalive"),
        floor("2667", "inspect"),
        floor("5000", "both"),
    ];
    // Let everything settle into its steady state first (the loop's first
    // write comes after its first 5 s sleep).
    tokio::time::sleep(Duration::from_secs(7).min(window * 2)).await;
    let sample = || -> [Duration; 7] {
        [
            cpu_precise(ours.pid()),
            cpu_precise(ours5.pid()),
            cpu(loop_.pid(), true),
            cpu_precise(floors[0].pid()),
            cpu_precise(floors[1].pid()),
            cpu_precise(floors[2].pid()),
            cpu_precise(floors[3].pid()),
        ]
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
    let mut per_hour: [Vec<f64>; 7] = Default::default();
    let mut rss_ours = Vec::new();
    let mut rss_peer = Vec::new();
    let t0 = Instant::now();
    for _ in 0..slices {
        let (start, before) = (Instant::now(), sample());
        while start.elapsed() < slice {
            rss_ours.push(rss_kib(ours.pid()) as f64 / 1024.0);
            rss_peer.push(tree_rss_kib(loop_.pid()) as f64 / 1024.0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (took, after) = (start.elapsed(), sample());
        for (i, v) in per_hour.iter_mut().enumerate() {
            let used = after[i].saturating_sub(before[i]);
            v.push(used.as_secs_f64() * 3600.0 / took.as_secs_f64());
        }
    }
    let cost = Cost {
        window: t0.elapsed(),
        per_hour,
        rss_ours,
        rss_peer,
        writes_ours: writes(&raw) - ro0,
        writes_peer: v2.events().len() - rp0,
    };
    drop((ours, ours5, loop_, floors));
    for c in [o, o5, p, f] {
        c.remove().await;
    }
    cost
}
