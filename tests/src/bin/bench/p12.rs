//! P12: active health checks (issue 21). `bench --only P12` prints the
//! section as markdown:
//! - a server killed inside its container (`killall httpd`) until its key
//!   is gone, repeated, against the bound interval × fall + timeout + 1 s;
//! - a server failing every other check with rise 2 / fall 2 at a 100 ms
//!   interval: the transitions (watch events on its key) over 200 checks;
//! - `sidekick --all` with N containers, each with an http check every
//!   10 s: its CPU beside the same agent on N containers without checks
//!   and beside the floor (`bare-checker`, the same GETs with nothing
//!   else), and how the check start times spread over the interval.
//!
//! Two fleets for the CPU figure, not one: an agent reads the same labels
//! whatever its flags, so "the same agent without checks" needs containers
//! whose labels ask for none.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use harness::docker::docker_cli;
use harness::host_agent::{Fleet, Spec, etcd_map};
use harness::proc::{Proc, sidekick};
use harness::{Etcd, RawWatch};

use crate::procfs::{cpu_precise, cpu_split, wakeups};

/// What P12 measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct P12 {
    pub kills: Vec<Duration>,
    pub kill_bound: Duration,
    pub flap_checks: usize,
    pub flap_transitions: usize,
    pub n: usize,
    pub window: Duration,
    pub cpu_checks: f64,
    pub cpu_plain: f64,
    /// Check starts per tenth of the interval (phase within it).
    pub tenths: Vec<usize>,
    /// The most check starts within any 10 ms.
    pub burst_10ms: usize,
    /// The checked agent's wake-ups per check over the window, less the
    /// plain agent's over the same window: the cost of a check that no
    /// machine moves.
    #[serde(default)]
    pub wakeups_per_check: f64,
    /// The checked agent's share of its CPU time spent in the kernel
    /// (connections to containers cross a veth, a bridge and iptables,
    /// processed in the connecting task's context).
    #[serde(default)]
    pub kernel_share: f64,
    /// The floor (`bare-checker`: the same GETs on the same runtime with
    /// nothing else) over the same window: CPU s/h.
    #[serde(default)]
    pub cpu_floor: f64,
    /// The floor's wake-ups per check.
    #[serde(default)]
    pub floor_wakeups_per_check: f64,
    /// What each flapping transition's log line gave as its reason (a
    /// timeout is a real critical, which rise/fall does not hide).
    #[serde(default)]
    pub flap_reasons: Vec<String>,
}

const CHECK_LOG: &str = "warn,sidekick::agent::check=debug";

fn http_spec(suffix: String) -> Spec {
    let mut s = Spec::new(suffix);
    s.args.push("http:80".into());
    s.expose.push(80);
    s
}

async fn wait(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !cond().await {
        assert!(
            t.elapsed() < limit,
            "bench: P12 {what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn run(etcd: &Etcd, n: usize, window: Duration, kills: usize) -> P12 {
    // 1. Server dies -> key gone.
    let fleet = Fleet::new("p12");
    fleet
        .start(vec![http_spec("dead".into()), http_spec("flap".into())])
        .await;
    let dead = fleet.name("dead");
    let key = "/bench/p12/dead";
    // The bound for these flags: interval × fall + timeout + 1 s.
    let kill_bound = Duration::from_secs(1) * 2 + Duration::from_secs(1) + Duration::from_secs(1);
    let p = Proc::spawn(sidekick(
        etcd,
        &[
            "--key",
            key,
            "--container",
            &dead,
            "--port",
            "80",
            "--check",
            "http:/index.html",
            "--check-interval",
            "1s",
            "--check-fall",
            "2",
            "--check-rise",
            "2",
        ],
    ));
    let watch = RawWatch::start(etcd, key).await;
    let mut gone = Vec::new();
    for i in 0..kills {
        wait("registered", Duration::from_secs(30), async || {
            !etcd_map(etcd, key).await.is_empty()
        })
        .await;
        let t = Instant::now();
        docker_cli(&["exec", &dead, "killall", "httpd"]);
        wait("withdrawn", Duration::from_secs(30), async || {
            watch.events().iter().any(|e| !e.put && e.at > t)
        })
        .await;
        let at = watch
            .events()
            .iter()
            .find(|e| !e.put && e.at > t)
            .map(|e| e.at)
            .unwrap_or(t);
        gone.push(at - t);
        eprintln!("bench: P12 kill {i}: key gone after {:?}", at - t);
        docker_cli(&["exec", "-d", &dead, "httpd", "-f", "-p", "80", "-h", "/www"]);
    }
    drop(p);

    // 2. Flapping: rise 2 / fall 2, 100 ms, every other check fails.
    let flap = fleet.name("flap");
    let fkey = "/bench/p12/flap";
    let mut c = sidekick(
        etcd,
        &[
            "--key",
            fkey,
            "--container",
            &flap,
            "--port",
            "80",
            "--check",
            "http:/cgi-bin/check",
            "--check-interval",
            "100ms",
            "--check-fall",
            "2",
            "--check-rise",
            "2",
        ],
    );
    c.env("RUST_LOG", CHECK_LOG);
    let p = Proc::spawn(c);
    wait("flap registered", Duration::from_secs(30), async || {
        !etcd_map(etcd, fkey).await.is_empty()
    })
    .await;
    let fwatch = RawWatch::start(etcd, fkey).await;
    docker_cli(&["exec", &flap, "sh", "-c", "echo flap > /tmp/check"]);
    let started = || p.stderr_count(|l| l.contains("check started"));
    let from = started();
    let flap_checks = 200;
    wait(
        "200 flapping checks",
        Duration::from_secs(120),
        async || started() >= from + flap_checks,
    )
    .await;
    let flap_transitions = fwatch.events().len();
    let flap_reasons = p
        .stderr()
        .lines()
        .filter(|l| l.contains("check critical; withdrawn"))
        .map(|l| l.split_once("reason=").map_or(l, |(_, r)| r).to_owned())
        .collect();
    drop(p);
    drop(fleet);

    // 3. CPU and spread: N containers with an http check every 10 s, and N
    // without.
    let checked = Fleet::new("p12c");
    let plain = Fleet::new("p12p");
    for (fleet, check) in [(&checked, true), (&plain, false)] {
        let specs: Vec<Spec> = (0..n)
            .map(|i| {
                let s = http_spec(format!("c{i}"))
                    .label("discovery.key", &format!("/bench/{}/%n", fleet.run()))
                    .label("discovery.port", "80");
                match check {
                    true => s.label("discovery.check", "http:/index.html"),
                    false => s,
                }
            })
            .collect();
        for chunk in specs.chunks(16) {
            fleet.start(chunk.to_vec()).await;
        }
    }
    // `log`: the checked agent's check starts are read from its debug log
    // (for the spread); the CPU is measured on agents that log as a
    // deployment does, since formatting a line per check costs more than
    // the check.
    let agent = |fleet: &Fleet, log: bool| {
        let only = fleet.only_label();
        let allow = format!("/bench/{}", fleet.run());
        let mut c = sidekick(
            etcd,
            &["--all", "--only-label", &only, "--allow-prefix", &allow],
        );
        if log {
            c.env("RUST_LOG", CHECK_LOG);
        }
        Proc::spawn(c)
    };
    let all_registered = async |f: &Fleet| {
        let prefix = format!("/bench/{}/", f.run());
        wait("all registered", Duration::from_secs(300), async || {
            etcd_map(etcd, &prefix).await.len() >= n
        })
        .await;
    };
    let interval = Duration::from_secs(10);
    // The spread: two intervals of check starts, once the phases settled.
    let a_logged = agent(&checked, true);
    all_registered(&checked).await;
    tokio::time::sleep(interval).await;
    let t0 = Instant::now();
    tokio::time::sleep(2 * interval).await;
    let starts: Vec<Instant> = a_logged
        .stderr_timed()
        .into_iter()
        .filter(|(at, l)| *at >= t0 && l.contains("check started"))
        .map(|(at, _)| at)
        .collect();
    drop(a_logged);
    let mut tenths = vec![0usize; 10];
    for s in &starts {
        let phase = (*s - t0).as_secs_f64() % interval.as_secs_f64();
        tenths[((phase / interval.as_secs_f64() * 10.0) as usize).min(9)] += 1;
    }
    let burst_10ms = starts
        .iter()
        .map(|s| {
            starts
                .iter()
                .filter(|o| **o >= *s && **o - *s < Duration::from_millis(10))
                .count()
        })
        .max()
        .unwrap_or(0);
    // The CPU: the checked agent beside the same agent without checks,
    // and beside the floor: the same GETs, with nothing else, to the plain
    // fleet's servers (which no agent checks).
    let (a_checked, a_plain) = (agent(&checked, false), agent(&plain, false));
    let mut floor = std::process::Command::new(harness::proc::bin_path("bare-checker"));
    floor
        .arg(interval.as_millis().to_string())
        .arg("/index.html");
    floor.args(plain.running().values().map(|ip| format!("{ip}:80")));
    let floor = Proc::spawn(floor);
    for f in [&checked, &plain] {
        all_registered(f).await;
    }
    // One interval for the phases to settle, then the window.
    tokio::time::sleep(interval).await;
    let (t0, c0, p0) = (
        Instant::now(),
        cpu_precise(a_checked.pid()),
        cpu_precise(a_plain.pid()),
    );
    let (w0, wp0, split0) = (
        wakeups(a_checked.pid()),
        wakeups(a_plain.pid()),
        cpu_split(a_checked.pid()),
    );
    let (f0, wf0) = (cpu_precise(floor.pid()), wakeups(floor.pid()));
    tokio::time::sleep(window).await;
    let took = t0.elapsed();
    let (w1, wp1, split1) = (
        wakeups(a_checked.pid()),
        wakeups(a_plain.pid()),
        cpu_split(a_checked.pid()),
    );
    let (f1, wf1) = (cpu_precise(floor.pid()), wakeups(floor.pid()));
    let checks = n as f64 * took.as_secs_f64() / interval.as_secs_f64();
    let extra_wakeups = (w1 - w0) as f64 - (wp1 - wp0) as f64;
    let (user, kernel) = (
        split1.0.saturating_sub(split0.0).as_secs_f64(),
        split1.1.saturating_sub(split0.1).as_secs_f64(),
    );
    let per_hour = |a: Duration, b: Duration| {
        (a.saturating_sub(b)).as_secs_f64() * 3600.0 / took.as_secs_f64()
    };
    let cpu_checks = per_hour(cpu_precise(a_checked.pid()), c0);
    let cpu_plain = per_hour(cpu_precise(a_plain.pid()), p0);
    let cpu_floor = per_hour(f1, f0);
    drop(floor);
    P12 {
        kills: gone,
        kill_bound,
        flap_checks,
        flap_transitions,
        n,
        window: took,
        cpu_checks,
        cpu_plain,
        tenths,
        burst_10ms,
        wakeups_per_check: extra_wakeups / checks.max(1.0),
        kernel_share: kernel / (user + kernel).max(f64::MIN_POSITIVE),
        cpu_floor,
        floor_wakeups_per_check: (wf1 - wf0) as f64 / checks.max(1.0),
        flap_reasons,
    }
}
