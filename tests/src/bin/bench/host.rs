//! P8: one `sidekick --all` agent with N labelled containers, side by side
//! with lone single-container sidekicks (each one process on a container of
//! its own, as P4 runs it, in [`COPIES`]) and the chapter's loop (one,
//! extrapolated to N). Then start-up, churn, and the lease choice: N keys
//! under one lease against N leases, each in a probe process of its own
//! (`bench --lease-probe`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use bollard::query_parameters::StopContainerOptionsBuilder;
use harness::docker::{ContainerSpec, unique_name};
use harness::host_agent::{Fleet, Spec, etcd_map};
use harness::proc::{Proc, sidekick};
use harness::{Docker, Etcd, RawWatch};

use crate::cost::COPIES;
use crate::peer;
use crate::procfs::{cpu, cpu_precise, rss_kib, wakeups};

/// The agent's keep-alive cycle at its defaults (TTL 8 s / 3), in ms:
/// wake-ups are counted per cycle.
pub const CYCLE_MS: f64 = 8000.0 / 3.0;

#[derive(Debug, Serialize, Deserialize)]
pub struct P8 {
    pub n: usize,
    pub window: Duration,
    /// Agent start to all N keys in etcd.
    pub startup: Duration,
    /// CPU s/h per slice: the agent; one loop.
    pub cpu_agent: Vec<f64>,
    pub cpu_loop: Vec<f64>,
    /// CPU s/h of each lone sidekick copy, per slice.
    pub cpu_lone: Vec<Vec<f64>>,
    /// Wake-ups per keep-alive cycle, per slice: the agent; each lone copy.
    pub wakes_agent: Vec<f64>,
    pub wakes_lone: Vec<Vec<f64>>,
    pub rss_agent: Vec<f64>,
    pub rss_lone: Vec<f64>,
    pub writes_agent: usize,
    /// Churn: operations done, seconds, stop -> key gone, and the final check.
    pub churn_ops: usize,
    pub churn_secs: f64,
    pub churn_stop: Vec<Duration>,
    /// Churn: Docker's `kill` event (its own timestamp) -> key gone: the
    /// agent's share of the stop latency.
    pub churn_event: Vec<Duration>,
    /// Churn: Docker's `kill` event (its timestamp) -> the agent's log line
    /// saying the container goes down (its timestamp): dockerd's delivery
    /// of the event and the agent's reading of it, both on the wall clock.
    #[serde(default)]
    pub churn_delivery: Vec<Duration>,
    /// Churn: the same events' delivery to the bench's own subscriber
    /// (its receipt against the event's timestamp): the peer that tells
    /// dockerd's delay from the agent's.
    #[serde(default)]
    pub churn_peer_delivery: Vec<Duration>,
    pub stale: usize,
    pub missing: usize,
    /// Lease probes: CPU s/h of N keys under one lease, and of N leases.
    pub probe_group: Vec<f64>,
    pub probe_leases: Vec<f64>,
}

fn quiet(mut c: std::process::Command) -> Proc {
    c.env("RUST_LOG", "warn");
    Proc::spawn(c)
}

/// The agent's "container going down" lines: the container's name and the
/// line's own timestamp, in ns since the epoch.
fn down_lines(agent: &Proc) -> Vec<(String, i64)> {
    agent
        .stderr()
        .lines()
        .filter(|l| l.contains("container going down"))
        .filter_map(|l| {
            let at = humantime::parse_rfc3339(l.split_whitespace().next()?).ok()?;
            let at = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
            let name = l.split("container=").nth(1)?.split_whitespace().next()?;
            Some((name.to_owned(), i64::try_from(at).ok()?))
        })
        .collect()
}

pub async fn run(
    etcd: &Etcd,
    docker: &Docker,
    dir: &std::path::Path,
    n: usize,
    window: Duration,
    churn: Duration,
) -> P8 {
    eprintln!("bench: P8 with {n} containers, window {window:?}");
    let prefix = "/bench/p8";
    let fleet = Fleet::new("p8");
    let specs: Vec<Spec> = (0..n)
        .map(|i| {
            Spec::new(format!("c{i}"))
                .label("discovery.key", &format!("{prefix}/%n"))
                .label("discovery.port", "11211")
                .tcp(11211)
        })
        .collect();
    // Started 16 at a time: the engine serialises most of the work anyway.
    let t = Instant::now();
    let chunks: Vec<Vec<Spec>> = specs.chunks(16).map(<[Spec]>::to_vec).collect();
    for c in chunks {
        fleet.start(c).await;
    }
    eprintln!("bench: P8 {n} containers started in {:?}", t.elapsed());

    // Start-up.
    let only = fleet.only_label();
    // Its keys are outside the default --allow-prefix (/services).
    let agent_cmd = || {
        sidekick(
            etcd,
            &["--all", "--only-label", &only, "--allow-prefix", prefix],
        )
    };
    let t = Instant::now();
    // Quiet, but for the line each stop logs (none in steady state): its
    // timestamp splits the churn latency into Docker's and ours.
    let agent = {
        let mut c = agent_cmd();
        c.env("RUST_LOG", "warn,sidekick::agent::host=info");
        Proc::spawn(c)
    };
    let startup = loop {
        if etcd_map(etcd, prefix).await.len() >= n {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "bench: P8 agent never registered all {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("bench: P8 all {n} registered {startup:?} after the agent started");

    // Peers: lone sidekicks, each on a container of its own (one process
    // for one container, as P4 runs it), and one chapter loop.
    let names: Vec<String> = (0..n).map(|i| fleet.name(&format!("c{i}"))).collect();
    let mut lone_containers = Vec::new();
    for _ in 0..COPIES {
        lone_containers.push(
            docker
                .run(ContainerSpec::new(unique_name("p8-lone")).tcp(11211))
                .await,
        );
    }
    let lone: Vec<Proc> = lone_containers
        .iter()
        .enumerate()
        .map(|(k, c)| {
            quiet(sidekick(
                etcd,
                &[
                    "--key",
                    &format!("/bench/p8lone/{k}"),
                    "--container",
                    c.name(),
                ],
            ))
        })
        .collect();
    let script = peer::script(dir, None);
    let loop_ = peer::spawn(&script, &etcd.endpoint(0), "p8loop", 1, &names[0]);
    let t = Instant::now();
    while etcd_map(etcd, "/bench/p8lone/").await.len() < COPIES {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "bench: P8 lone sidekicks never registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Lease probes.
    let probe = |mode: &str| {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args(["--lease-probe", mode, &n.to_string(), &etcd.endpoint(0)]);
        quiet(c)
    };
    let probes = [probe("group"), probe("leases")];
    tokio::time::sleep(Duration::from_secs(7).min(window)).await;

    let raw = RawWatch::start(etcd, prefix).await;
    let slices = 6u32;
    let slice = window / slices;
    let (mut cpu_agent, mut cpu_loop) = (Vec::new(), Vec::new());
    let mut cpu_lone = vec![Vec::new(); COPIES];
    let mut wakes_lone = vec![Vec::new(); COPIES];
    let mut wakes_agent = Vec::new();
    let (mut probe_group, mut probe_leases) = (Vec::new(), Vec::new());
    let (mut rss_agent, mut rss_lone) = (Vec::new(), Vec::new());
    // CPU of the agent, the loop, the probes, then each lone copy; wake-ups
    // of the agent, then each lone copy.
    let sample = || {
        let mut cpu_now = vec![
            cpu_precise(agent.pid()),
            cpu(loop_.pid(), true),
            cpu_precise(probes[0].pid()),
            cpu_precise(probes[1].pid()),
        ];
        cpu_now.extend(lone.iter().map(|p| cpu_precise(p.pid())));
        let mut wakes_now = vec![wakeups(agent.pid())];
        wakes_now.extend(lone.iter().map(|p| wakeups(p.pid())));
        (cpu_now, wakes_now)
    };
    let t0 = Instant::now();
    for _ in 0..slices {
        let (start, before) = (Instant::now(), sample());
        while start.elapsed() < slice {
            rss_agent.push(rss_kib(agent.pid()) as f64 / 1024.0);
            rss_lone.push(rss_kib(lone[0].pid()) as f64 / 1024.0);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (took, after) = (start.elapsed(), sample());
        let per_hour = |i: usize| {
            after.0[i].saturating_sub(before.0[i]).as_secs_f64() * 3600.0 / took.as_secs_f64()
        };
        let cycles = took.as_secs_f64() * 1000.0 / CYCLE_MS;
        let per_cycle = |i: usize| after.1[i].saturating_sub(before.1[i]) as f64 / cycles;
        cpu_agent.push(per_hour(0));
        cpu_loop.push(per_hour(1));
        probe_group.push(per_hour(2));
        probe_leases.push(per_hour(3));
        wakes_agent.push(per_cycle(0));
        for k in 0..COPIES {
            cpu_lone[k].push(per_hour(4 + k));
            wakes_lone[k].push(per_cycle(1 + k));
        }
    }
    let window = t0.elapsed();
    let writes_agent = raw.events().len();
    drop((lone, loop_, probes));
    for c in lone_containers {
        c.remove().await;
    }

    // Churn: stop and start containers as fast as the engine sustains,
    // several at once, timing each stop from its request to the delete.
    eprintln!("bench: P8 churn for {churn:?}");
    let key = |name: &str| format!("{prefix}/{name}");
    let t_end = Instant::now() + churn;
    let workers = 8;
    let ops = futures::stream::iter(0..workers)
        .map(|w| {
            let names = names.clone();
            let api = docker.api().clone();
            async move {
                let mut stops: Vec<(String, Instant)> = Vec::new();
                let mut ops = 0;
                // This worker's containers, stopped on one pass and
                // started on the next.
                let mine: Vec<&String> = names.iter().skip(w).step_by(workers).collect();
                let mut pass = 0;
                'churn: loop {
                    for name in &mine {
                        if Instant::now() >= t_end {
                            break 'churn;
                        }
                        if pass % 2 == 0 {
                            // Through the API, as P1 does: the docker CLI's own
                            // start-up (hundreds of ms on a busy machine) is not
                            // the agent's latency.
                            let t = Instant::now();
                            let stop = StopContainerOptionsBuilder::new().t(1).build();
                            if api.stop_container(name, Some(stop)).await.is_ok() {
                                stops.push(((*name).clone(), t));
                                ops += 1;
                            }
                        } else if api.start_container(name, None).await.is_ok() {
                            ops += 1;
                        }
                    }
                    pass += 1;
                }
                (stops, ops)
            }
        })
        .buffer_unordered(workers)
        .collect::<Vec<_>>();
    // Docker's own record of each stop: the `kill` event's timestamp,
    // mapped onto this process's clock.
    let kills = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<(String, Instant, i64, Duration)>::new(),
    ));
    let recorder = {
        let kills = kills.clone();
        let api = docker.api().clone();
        let run = fleet.run().to_owned();
        tokio::spawn(async move {
            let filters = std::collections::HashMap::from([
                ("type", vec!["container"]),
                ("event", vec!["kill"]),
            ]);
            let opts = bollard::query_parameters::EventsOptionsBuilder::new()
                .filters(&filters)
                .build();
            let mut events = api.events(Some(opts));
            while let Some(Ok(e)) = events.next().await {
                let name = e
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|a| a.get("name").cloned())
                    .unwrap_or_default();
                let Some(nanos) = e.time_nano else { continue };
                if !name.starts_with(&run) {
                    continue;
                }
                let now_sys = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as i64;
                let ago = Duration::from_nanos(now_sys.saturating_sub(nanos).max(0) as u64);
                kills
                    .lock()
                    .unwrap()
                    .push((name, Instant::now() - ago, nanos, ago));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let done = ops.await;
    let churn_secs = t.elapsed().as_secs_f64();
    let churn_ops = done.iter().map(|(_, n)| n).sum();
    // From `t` to the delete of `name`'s key that the raw watch saw.
    let gone_after = |events: &[harness::RawEvent], name: &str, t: Instant| {
        events
            .iter()
            .find(|e| !e.put && e.key == key(name) && e.at >= t)
            .map(|e| e.at - t)
    };
    let events = raw.events();
    let churn_stop: Vec<Duration> = done
        .iter()
        .flat_map(|(s, _)| s.iter())
        .filter_map(|(name, t)| gone_after(&events, name, *t))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    recorder.abort();
    let events = raw.events();
    let churn_event: Vec<Duration> = kills
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(name, t, _, _)| gone_after(&events, name, *t))
        .collect();
    let downs = down_lines(&agent);
    let churn_delivery: Vec<Duration> = kills
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(name, _, at, _)| {
            // The first line for this container at or after the event.
            let seen = downs
                .iter()
                .filter(|(n, t)| n == name && t >= at)
                .map(|(_, t)| *t)
                .min()?;
            Some(Duration::from_nanos(u64::try_from(seen - at).ok()?))
        })
        .collect();
    let churn_peer_delivery: Vec<Duration> = kills
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, _, ago)| *ago)
        .collect();
    // Then etcd must say exactly what docker ps says.
    let want = || -> BTreeMap<String, String> {
        fleet
            .running()
            .into_iter()
            .map(|(name, ip)| (key(&name), format!("{ip}:11211")))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (stale, missing) = loop {
        let (want, have) = (want(), etcd_map(etcd, prefix).await);
        let stale = have.iter().filter(|(k, v)| want.get(*k) != Some(v)).count();
        let missing = want.iter().filter(|(k, v)| have.get(*k) != Some(v)).count();
        if (stale == 0 && missing == 0) || Instant::now() > deadline {
            break (stale, missing);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(agent);
    drop(fleet);
    P8 {
        n,
        window,
        startup,
        cpu_agent,
        cpu_loop,
        cpu_lone,
        wakes_agent,
        wakes_lone,
        rss_agent,
        rss_lone,
        writes_agent,
        churn_ops,
        churn_secs,
        churn_stop,
        churn_event,
        churn_delivery,
        churn_peer_delivery,
        stale,
        missing,
        probe_group,
        probe_leases,
    }
}

/// `bench --lease-probe group|leases N ENDPOINT`: hold N keys, under one
/// lease (discovery::LeaseGroup) or one lease each (discovery::Registration),
/// until killed. TTL 8 s, keep-alives every 2.67 s, like the agent.
pub async fn lease_probe(mode: &str, n: usize, endpoint: &str) {
    let client = discovery::ConnectOptions::new()
        .with_endpoints([endpoint])
        .connect()
        .await
        .expect("etcd");
    let ttl = discovery::RegisterOptions::new(Duration::from_secs(8));
    let key = |i: usize| format!("/bench/probe-{mode}/{i}");
    let mut hold: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    if mode == "group" {
        let keys = (0..n)
            .map(|i| (key(i), b"10.0.0.1:11211".to_vec()))
            .collect();
        hold.push(Box::new(client.lease_group(ttl, keys).expect("group")));
    } else {
        for i in 0..n {
            hold.push(Box::new(
                client
                    .register(&key(i), "10.0.0.1:11211", ttl.clone())
                    .expect("register"),
            ));
        }
    }
    std::future::pending::<()>().await;
}
