//! `make bench`: every figure of BENCHMARKS.md, measured side by side with
//! its peer in one run, and its charts (`docs/bench/*.svg`).
//!
//! ```text
//! bench [--out BENCHMARKS.md] [--quick] [--only P4|P5|P8|P10|P12|P13|agents|render]
//! bench --redraw docs/bench/samples.json [--out BENCHMARKS.md]
//! bench --storm-to ENDPOINT COUNT
//! bench --lease-probe group|leases N ENDPOINT      (P8's lease comparison)
//! bench --fleet-hosts ENDPOINTS FIRST COUNT K      (P13's host agents)
//! bench --fleet-watchers ENDPOINTS COUNT PREFIX    (P13's consumers)
//! ```
//!
//! `--quick` runs everything at a tiny scale (a smoke test keeps it working).
//! `--only` runs one part and prints its section (and writes it, its charts
//! and samples, only if `--out` is given). `--redraw` lays out the document
//! and draws the charts again from a run's raw samples, measuring nothing.
//! `P13` takes `--fleet N,K,W` (hosts, keys per host, watchers) to try
//! another size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agents;
mod chart;
mod cost;
mod dns;
mod etcd_metrics;
mod fleet;
mod fleet_procs;
mod get;
mod host;
mod p12;
mod peer;
mod procfs;
mod render;
mod report;
mod stats;
mod stream;
mod v2;

use std::process::Command;
use std::time::Duration;
use tokio::time::Instant;

use harness::{Docker, EtcdCluster, EtcdConfig};

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

const USAGE: &str = "usage: bench [--out FILE] [--quick] [--only P4|P5|P8|P10|P12|P13|agents|render] [--fleet N,K,W]\n       bench --redraw SAMPLES.json [--out FILE]\n       bench --storm-to ENDPOINT COUNT";

const ONLY: [&str; 8] = ["P4", "P5", "P8", "P10", "P12", "P13", "agents", "render"];

fn fleet_size(v: &str) -> Option<(usize, usize, usize)> {
    let n: Vec<usize> = v
        .split(',')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    match n[..] {
        [n, k, w] if n > 0 && k > 0 && w > 0 => Some((n, k, w)),
        _ => None,
    }
}

/// Anything this tool does not know stops it before it starts etcd and
/// Docker work that takes minutes (`--help` included: this is the help).
fn check_usage(args: &[String]) {
    let mut i = 0;
    let mut bad = None;
    let val = |i: usize| args.get(i + 1).map(String::as_str);
    while i < args.len() && bad.is_none() {
        match args[i].as_str() {
            "--quick" => i += 1,
            "--out" | "--redraw" if val(i).is_some() => i += 2,
            "--only" if val(i).is_some_and(|v| ONLY.contains(&v)) => i += 2,
            "--fleet" if val(i).and_then(fleet_size).is_some() => i += 2,
            "--storm-to" if args.len() == 3 && i == 0 && args[2].parse::<u64>().is_ok() => i += 3,
            "--lease-probe"
                if args.len() == 4
                    && i == 0
                    && matches!(args[1].as_str(), "group" | "leases")
                    && args[2].parse::<usize>().is_ok() =>
            {
                i += 4
            }
            "--fleet-hosts"
                if args.len() == 5
                    && i == 0
                    && args[2..].iter().all(|a| a.parse::<usize>().is_ok()) =>
            {
                i += 5
            }
            "--fleet-watchers" if args.len() == 4 && i == 0 && args[2].parse::<usize>().is_ok() => {
                i += 4
            }
            other => bad = Some(other.to_owned()),
        }
    }
    if let Some(bad) = bad {
        eprintln!("bench: {bad:?} is not understood here (or lacks its value)\n{USAGE}");
        std::process::exit(2);
    }
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn machine() -> Vec<(String, String)> {
    vec![
        ("Date".to_owned(), sh("date -u '+%Y-%m-%d %H:%M UTC'")),
        (
            "CPU".to_owned(),
            format!(
                "{} cores, {}",
                sh("nproc"),
                sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs")
            ),
        ),
        (
            "Memory".to_owned(),
            sh("free -g | awk '/Mem:/{print $2\" GiB\"}'"),
        ),
        ("Kernel".to_owned(), sh("uname -r")),
        (
            "Docker Engine".to_owned(),
            sh("docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'"),
        ),
        ("etcd".to_owned(), sh("etcd --version | head -1")),
        (
            "Storage driver".to_owned(),
            sh("docker info --format '{{.Driver}}'"),
        ),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    check_usage(&args[1..]);
    match args.get(1).map(String::as_str) {
        Some("--lease-probe") => {
            host::lease_probe(&args[2], args[3].parse().unwrap_or(1), &args[4]).await;
            return;
        }
        Some("--fleet-hosts") => {
            let n = |i: usize| args[i].parse().unwrap_or(0);
            fleet_procs::hosts(&args[2], n(3), n(4), n(5)).await;
            return;
        }
        Some("--fleet-watchers") => {
            fleet_procs::watchers(&args[2], args[3].parse().unwrap_or(0), &args[4]).await;
            return;
        }
        // For profiling a consumer by hand: write a storm to an etcd and stop.
        Some("--storm-to") => {
            let raw = etcd_client::Client::connect([args[2].as_str()], None)
                .await
                .expect("etcd");
            stream::storm(&raw, "/bench/storm", 0, args[3].parse().unwrap_or(0), 100).await;
            return;
        }
        _ => {}
    }
    let out = arg(&args, "--out");
    if let Some(samples) = arg(&args, "--redraw") {
        let all = report::read(std::path::Path::new(&samples)).unwrap_or_else(|e| {
            eprintln!("bench: {e}");
            std::process::exit(2);
        });
        let out = out.unwrap_or_else(|| "BENCHMARKS.md".into());
        match report::write(&all, std::path::Path::new(&out)) {
            Ok(_) => eprintln!("bench: {out} and its charts drawn again from {samples}"),
            Err(e) => {
                eprintln!("bench: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only = arg(&args, "--only");
    let started = Instant::now();
    let mut all = report::All {
        command: match (&only, quick) {
            (None, false) => "make bench".into(),
            (None, true) => "bench --quick (smoke test)".into(),
            (Some(o), q) => format!("bench --only {o}{}", if q { " --quick" } else { "" }),
        },
        machine: machine(),
        ..Default::default()
    };
    let (n, window, storm, rounds, lat, keys, regs, regs_window) = if quick {
        (
            2,
            Duration::from_secs(6),
            2_000,
            1,
            20,
            500,
            50,
            Duration::from_secs(3),
        )
    } else {
        (
            20,
            Duration::from_secs(120),
            100_000,
            5,
            300,
            10_000,
            1_000,
            Duration::from_secs(30),
        )
    };
    let (p8_n, p8_window, p8_churn) = if quick {
        (10, Duration::from_secs(6), Duration::from_secs(3))
    } else {
        (200, Duration::from_secs(120), Duration::from_secs(30))
    };
    let mut scale = if quick {
        fleet::Scale::quick()
    } else {
        fleet::Scale::full()
    };
    if let Some((n, k, w)) = arg(&args, "--fleet").as_deref().and_then(fleet_size) {
        (scale.n, scale.k, scale.w) = (n, k, w);
    }
    let wants = |part: &str| only.is_none() || only.as_deref() == Some(part);
    let dir = tempfile::tempdir().unwrap();
    // The single-member etcd every part but P13 (its own cluster) runs on.
    let etcd = EtcdCluster::start(EtcdConfig::new(1).with_v2()).await;
    let needs_docker = ["agents", "P4", "P8"].iter().any(|p| wants(p));
    let docker = if needs_docker {
        Some(Docker::connect().await)
    } else {
        None
    };
    if let Some(docker) = &docker {
        if wants("agents") {
            all.agents = Some(agents::run(&etcd, docker, dir.path(), n).await);
        }
        if wants("P4") {
            all.cost = Some(cost::run(&etcd, docker, dir.path(), window).await);
        }
    }
    if wants("P5") {
        all.throughput = Some(stream::throughput(&etcd, storm, storm * 10, 100, rounds).await);
    }
    if only.is_none() {
        all.latency = Some(stream::latency(&etcd, lat).await);
        all.gets = Some(get::gets(&etcd, keys, if quick { 2 } else { 10 }).await);
        all.many = Some(get::many(&etcd, regs, regs_window).await);
    }
    if let (Some(docker), true) = (&docker, wants("P8")) {
        all.p8 = Some(host::run(&etcd, docker, dir.path(), p8_n, p8_window, p8_churn).await);
    }
    if wants("render") {
        all.render = Some(render::run(&etcd, if quick { 10 } else { 200 }).await);
    }
    drop(etcd);
    // P12 takes minutes of container start-up even at the quick scale, so
    // the smoke test's `--quick` leaves it out unless asked for by name.
    if wants("P12") && (!quick || only.is_some()) {
        // Active health checks (issue 21), on an etcd of their own.
        let (n, window, kills) = if quick {
            (20, Duration::from_secs(20), 3)
        } else {
            (200, Duration::from_secs(60), 10)
        };
        let etcd = EtcdCluster::start(EtcdConfig::new(1)).await;
        all.p12 = Some(p12::run(&etcd, n, window, kills).await);
    }
    if wants("P10") {
        // discover serve (P10 and P11), on an etcd of its own.
        all.dns = Some(dns::run(quick).await);
    }
    if wants("P13") {
        all.fleet = Some(fleet::run(&scale).await);
    }
    all.took = started.elapsed();
    let text = match (&only, out) {
        (Some(_), None) => report::render(&all).0,
        (_, out) => {
            let out = out.unwrap_or_else(|| "BENCHMARKS.md".into());
            report::write(&all, std::path::Path::new(&out)).unwrap_or_else(|e| {
                eprintln!("bench: {e}");
                std::process::exit(1);
            })
        }
    };
    print!("{text}");
}
