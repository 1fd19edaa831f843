//! `make bench`: every figure of BENCHMARKS.md, measured side by side with
//! its peer in one run.
//!
//! ```text
//! bench [--out BENCHMARKS.md] [--quick] [--only P4|P5|P8|agents|render]
//! bench --storm-to ENDPOINT COUNT
//! bench --lease-probe group|leases N ENDPOINT   (P8's lease comparison)
//! ```
//!
//! `--quick` runs everything at a tiny scale (a smoke test keeps it working).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agents;
mod cost;
mod get;
mod host;
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

const USAGE: &str = "usage: bench [--out FILE] [--quick] [--only P4|P5|P8|agents|render]\n       bench --storm-to ENDPOINT COUNT";

/// Anything this tool does not know stops it before it starts etcd and
/// Docker work that takes minutes (`--help` included: this is the help).
fn check_usage(args: &[String]) {
    let mut i = 0;
    let mut bad = None;
    while i < args.len() && bad.is_none() {
        match args[i].as_str() {
            "--quick" => i += 1,
            "--out" if i + 1 < args.len() => i += 2,
            "--only"
                if matches!(
                    args.get(i + 1).map(String::as_str),
                    Some("P4" | "P5" | "P8" | "agents" | "render")
                ) =>
            {
                i += 2
            }
            "--storm-to" if args.len() == 3 && i == 0 && args[2].parse::<u64>().is_ok() => i += 3,
            "--lease-probe"
                if args.len() == 4
                    && i == 0
                    && matches!(args[1].as_str(), "group" | "leases")
                    && args[2].parse::<usize>().is_ok() =>
            {
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    check_usage(&args[1..]);
    if args.get(1).map(String::as_str) == Some("--lease-probe") {
        host::lease_probe(&args[2], args[3].parse().unwrap_or(1), &args[4]).await;
        return;
    }
    // For profiling a consumer by hand: write a storm to an etcd and stop.
    if let Some(i) = args.iter().position(|a| a == "--storm-to") {
        let endpoint = args.get(i + 1).expect("--storm-to ENDPOINT COUNT");
        let count: u64 = args.get(i + 2).and_then(|c| c.parse().ok()).expect("COUNT");
        let raw = etcd_client::Client::connect([endpoint.as_str()], None)
            .await
            .expect("etcd");
        stream::storm(&raw, "/bench/storm", 0, count, 100).await;
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "BENCHMARKS.md".into());
    let started = Instant::now();
    let machine = vec![
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
    ];
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
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let etcd = EtcdCluster::start(EtcdConfig::new(1).with_v2()).await;
    if only.as_deref() == Some("P5") {
        // For profiling one figure: print its raw numbers and stop.
        let t = stream::throughput(&etcd, storm, storm * 10, 100, rounds).await;
        for (w, name) in stream::CONSUMERS.iter().enumerate() {
            println!(
                "{name}: live {:.0} events/s, replay {:?}",
                t.live[w],
                t.replay[w].iter().map(|r| r.round()).collect::<Vec<_>>()
            );
        }
        return;
    }
    if only.as_deref() == Some("render") {
        // discover render: an etcd change until nginx serves it (--wait 0).
        let r = render::run(&etcd, if quick { 10 } else { 200 }).await;
        print!("{}", report::render_nginx(&r));
        return;
    }
    let docker = Docker::connect().await;
    let (p8_n, p8_window, p8_churn) = if quick {
        (10, Duration::from_secs(6), Duration::from_secs(3))
    } else {
        (200, Duration::from_secs(120), Duration::from_secs(30))
    };
    if matches!(only.as_deref(), Some("P4" | "P8")) {
        // One figure alone (with its peers side by side), as a markdown
        // section to paste into BENCHMARKS.md.
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "Command: `bench --only {}`{}\n\n",
            only.as_deref().unwrap_or_default(),
            if quick { " --quick" } else { "" }
        );
        for (k, v) in &machine {
            text.push_str(&format!("- {k}: {v}\n"));
        }
        text.push('\n');
        if only.as_deref() == Some("P4") {
            let c = cost::run(&etcd, &docker, dir.path(), window).await;
            text.push_str(&report::render_p4(&c));
        } else {
            let p = host::run(&etcd, &docker, dir.path(), p8_n, p8_window, p8_churn).await;
            text.push_str(&report::render_p8(&p));
        }
        print!("{text}");
        return;
    }
    if only.as_deref() == Some("agents") {
        // For chasing a misbehaving sidekick: P1-P3 alone.
        let dir = tempfile::tempdir().unwrap();
        let a = agents::run(&etcd, &docker, dir.path(), n).await;
        println!(
            "agents: stop {:?} start {:?} move {:?}",
            stats::Summary::of_durations_ms(&a.stop_ours).p50,
            stats::Summary::of_durations_ms(&a.start_ours).p50,
            stats::Summary::of_durations_ms(&a.move_ours).p50
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agents = agents::run(&etcd, &docker, dir.path(), n).await;
    let cost = cost::run(&etcd, &docker, dir.path(), window).await;
    let throughput = stream::throughput(&etcd, storm, storm * 10, 100, rounds).await;
    let latency = stream::latency(&etcd, lat).await;
    let gets = get::gets(&etcd, keys, if quick { 2 } else { 10 }).await;
    let many = get::many(&etcd, regs, regs_window).await;
    let p8 = host::run(&etcd, &docker, dir.path(), p8_n, p8_window, p8_churn).await;
    let render = render::run(&etcd, if quick { 10 } else { 200 }).await;
    let all = report::All {
        command: if quick {
            "bench --quick (smoke test)".into()
        } else {
            "make bench".into()
        },
        machine,
        took: started.elapsed(),
        agents,
        cost,
        throughput,
        latency,
        gets,
        many,
        p8,
        render,
    };
    let text = report::render(&all);
    std::fs::write(&out, &text).unwrap_or_else(|e| panic!("write {out}: {e}"));
    print!("{text}");
}
