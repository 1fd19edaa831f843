//! `sidekick --all`: one agent registering every labelled container on the
//! host, against the real Docker engine and a real etcd. The oracle is
//! `docker ps` + `docker inspect` through the CLI, compared with etcd
//! through a raw client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use harness::docker::{DOCKER_SOCKET, FLANNEL_NETWORK};
use harness::host_agent::{Fleet, Spec, converges, etcd_map, host_agent};
use harness::notify::NotifySocket;
use harness::proc::{Proc, sidekick};
use harness::socket_proxy::SocketProxy;
use harness::{Etcd, RawWatch, eventually, eventually_async, unique_prefix};
use nix::sys::signal::Signal;
use tokio::time::Instant;

/// Generous: 50 containers on a busy 2-core machine.
const CONVERGE: Duration = Duration::from_secs(30);

fn hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

/// `n` containers `m0..` labelled `discovery.key=<prefix>/memcached/%n`
/// and `discovery.port=11211`.
fn memcached(prefix: &str, n: usize) -> Vec<Spec> {
    (0..n)
        .map(|i| {
            Spec::new(format!("m{i}"))
                .label("discovery.key", &format!("{prefix}/memcached/%n"))
                .label("discovery.port", "11211")
                .tcp(11211)
        })
        .collect()
}

/// What etcd should hold for the running `m*` containers of `fleet`.
fn expected_memcached(fleet: &Fleet, prefix: &str) -> BTreeMap<String, String> {
    let m = format!("{}-m", fleet.run());
    fleet
        .running()
        .into_iter()
        .filter(|(name, _)| name.starts_with(&m))
        .map(|(name, ip)| (format!("{prefix}/memcached/{name}"), format!("{ip}:11211")))
        .collect()
}

async fn scrape(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    Some(buf)
}

/// Wait until a line of `p`'s log matches; panic with the log if none does.
async fn in_log(p: &Proc, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !p.stderr().lines().any(&pred) {
        assert!(
            Instant::now() < deadline,
            "no log line for {what} within 15 s\n{}",
            p.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_labelled_containers_are_registered_the_rest_ignored_or_reported() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("host50");
    let fleet = Fleet::new("host50");
    let host = hostname();
    let mut specs = memcached(&prefix, 50);
    specs.push(Spec::new("plain").tcp(11211));
    specs.push(
        Spec::new("bad")
            .label("discovery.key", &format!("{prefix}/bad/%n"))
            .label("discovery.port", "http"),
    );
    // Registrator-style, as a label and in the environment.
    specs.push(Spec::new("svc").label("SERVICE_NAME", "web").tcp(80));
    specs.push(Spec::new("svcenv").env("SERVICE_8080_NAME=api").tcp(8080));
    let t = Instant::now();
    fleet.start(specs).await;
    println!("HOST started 54 containers in {:?}", t.elapsed());

    let notify = NotifySocket::new();
    let metrics_port = harness::Port::reserve();
    let metrics = metrics_port.addr();
    let services = format!("{prefix}/services");
    let mut cmd = host_agent(
        &etcd,
        &fleet,
        &[
            "--prefix",
            &services,
            "--allow-prefix",
            &prefix,
            "--metrics-addr",
            &metrics,
        ],
    );
    cmd.env("NOTIFY_SOCKET", notify.path());
    let t = Instant::now();
    let p = Proc::spawn(cmd);
    let expected = || {
        let running = fleet.running();
        let mut want = expected_memcached(&fleet, &prefix);
        let svc = fleet.name("svc");
        let svcenv = fleet.name("svcenv");
        if let Some(ip) = running.get(&svc) {
            want.insert(
                format!("{services}/web/{host}:{svc}:80"),
                format!("{ip}:80"),
            );
        }
        if let Some(ip) = running.get(&svcenv) {
            want.insert(
                format!("{services}/api/{host}:{svcenv}:8080"),
                format!("{ip}:8080"),
            );
        }
        want
    };
    converges(&etcd, &prefix, CONVERGE, expected, || p.dump()).await;
    assert_eq!(etcd_map(&etcd, &prefix).await.len(), 52);
    println!(
        "HOST 52 keys registered {:?} after the agent started",
        t.elapsed()
    );

    // The bad label is reported (log, STATUS=, metric), and the agent goes on.
    let bad = fleet.name("bad");
    in_log(&p, "the bad label", |l| {
        l.contains(&format!("container={bad}"))
            && l.contains(r#"discovery.port="http" is not a port number"#)
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "READY=1 and the problem in STATUS=",
        || {
            let lines = notify.lines();
            let ready = lines.iter().any(|l| l == "READY=1");
            let status = lines
                .iter()
                .rev()
                .find(|l| l.starts_with("STATUS="))
                .cloned()
                .unwrap_or_default();
            (ready && status.contains("1 with problems") && status.contains(&bad)).then_some(())
        },
    )
    .await;
    eventually_async(Duration::from_secs(10), "the problem metric", || async {
        let text = scrape(&metrics).await?;
        text.contains("sidekick_containers{state=\"problem\"} 1")
            .then_some(())
    })
    .await;

    // Stop, kill, start, restart: the key follows each time.
    let watch = RawWatch::start(&etcd, &format!("{prefix}/memcached/")).await;
    let key = |s: &str| format!("{prefix}/memcached/{}", fleet.name(s));
    let t = Instant::now();
    fleet.cli(&["stop", "-t", "1"], &["m0"]).await;
    let gone = watch
        .wait_for(Duration::from_secs(10), "m0 deleted", |e| {
            !e.put && e.key == key("m0")
        })
        .await;
    println!(
        "HOST docker stop -> key gone {:?} after the command",
        gone.at - t
    );
    fleet.cli(&["kill"], &["m1"]).await;
    watch
        .wait_for(Duration::from_secs(10), "m1 deleted", |e| {
            !e.put && e.key == key("m1")
        })
        .await;
    converges(&etcd, &prefix, CONVERGE, expected, || p.dump()).await;
    fleet.cli(&["start"], &["m0", "m1"]).await;
    fleet.cli(&["restart", "-t", "1"], &["m2"]).await;
    converges(&etcd, &prefix, CONVERGE, expected, || p.dump()).await;
    // Move m3 to a new address while it is stopped: off the default bridge
    // (where Docker may hand a freed address straight back, or to another
    // test's container) onto a user-defined network, at an address Docker
    // never allocates. Its only network now, so the one the agent uses.
    let before = etcd_map(&etcd, &prefix).await[&key("m3")].clone();
    fleet.cli(&["stop", "-t", "1"], &["m3"]).await;
    harness::Docker::connect().await; // the user-defined network exists
    let m3 = fleet.name("m3");
    harness::docker::docker_cli(&["network", "disconnect", "bridge", &m3]);
    let ip = harness::docker::connect_pinned(&m3, FLANNEL_NETWORK, "");
    fleet.cli(&["start"], &["m3"]).await;
    converges(&etcd, &prefix, CONVERGE, expected, || p.dump()).await;
    let after = etcd_map(&etcd, &prefix).await[&key("m3")].clone();
    assert_ne!(before, after, "m3 moved to a new address\n{}", p.dump());
    assert_eq!(after, format!("{ip}:11211"), "{}", p.dump());
    assert!(p.stderr().matches("panicked").count() == 0, "{}", p.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_containers_claiming_one_key_is_a_conflict_that_names_the_holder() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("hostconflict");
    let fleet = Fleet::new("hostconflict");
    let key = format!("{prefix}/same");
    fleet
        .start(vec![Spec::new("a").label("discovery.key", &key)])
        .await;
    let p = Proc::spawn(host_agent(&etcd, &fleet, &["--allow-prefix", &prefix]));
    let a_ip = fleet.running()[&fleet.name("a")].clone();
    converges(
        &etcd,
        &prefix,
        CONVERGE,
        || BTreeMap::from([(key.clone(), a_ip.clone())]),
        || p.dump(),
    )
    .await;
    fleet
        .start(vec![Spec::new("b").label("discovery.key", &key)])
        .await;
    let (a, b) = (fleet.name("a"), fleet.name("b"));
    in_log(&p, "the conflict", |l| {
        l.contains(&format!("container={b}"))
            && l.contains(&format!("already registered by container \"{a}\""))
    })
    .await;
    // The holder keeps the key; when it stops, the other takes it over.
    assert_eq!(etcd_map(&etcd, &prefix).await[&key], a_ip);
    fleet.cli(&["stop", "-t", "1"], &["a"]).await;
    let b_ip = fleet.running()[&b].clone();
    converges(
        &etcd,
        &prefix,
        CONVERGE,
        || BTreeMap::from([(key.clone(), b_ip.clone())]),
        || p.dump(),
    )
    .await;
}

/// Stop and start some of `fleet`'s containers in turn until told to stop.
fn churn(
    fleet: &Fleet,
    which: &[&str],
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<usize>,
) {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let names: Vec<String> = which.iter().map(|s| fleet.name(s)).collect();
    let task = tokio::spawn(async move {
        let mut n = 0;
        for i in 0.. {
            if *rx.borrow_and_update() {
                break;
            }
            let name = &names[i % names.len()];
            let verb: &[&str] = if (i / names.len()) % 2 == 0 {
                &["stop", "-t", "1"]
            } else {
                &["start"]
            };
            let _ = tokio::process::Command::new("docker")
                .args(verb)
                .arg(name)
                .output()
                .await;
            n += 1;
        }
        n
    });
    (tx, task)
}

async fn stop_churn(
    c: (
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<usize>,
    ),
) -> usize {
    c.0.send_replace(true);
    tokio::time::timeout(Duration::from_secs(60), c.1)
        .await
        .expect("churn stops within 60 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_restarted_agent_adopts_its_keys_and_watchers_see_nothing_for_unchanged_ones() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("hostkill");
    let fleet = Fleet::new("hostkill");
    fleet.start(memcached(&prefix, 12)).await;
    // A TTL long enough that the restart comes well within it.
    let args = ["--ttl", "15", "--allow-prefix", &prefix];
    let mut p = Proc::spawn(host_agent(&etcd, &fleet, &args));
    let expected = || expected_memcached(&fleet, &prefix);
    converges(&etcd, &prefix, CONVERGE, expected, || p.dump()).await;
    let watch = RawWatch::start(&etcd, &prefix).await;
    let churning = ["m0", "m1", "m2", "m3"];
    let c = churn(&fleet, &churning);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    p.signal(Signal::SIGKILL);
    p.wait_exit(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = stop_churn(c).await;
    let p2 = Proc::spawn(host_agent(&etcd, &fleet, &args));
    // Wait for the adoption itself: etcd can already match Docker before the
    // new agent has written anything (the churn may end where it was killed),
    // so convergence alone does not show that the agent has done its work.
    p2.wait_stderr(CONVERGE, "the new agent to adopt the lease", |l| {
        l.contains("adopting the live lease")
    })
    .await;
    p2.wait_stderr(CONVERGE, "the new agent to be ready", |l| {
        l.contains("INFO ready")
    })
    .await;
    converges(&etcd, &prefix, CONVERGE, expected, || {
        format!("{}\nfirst agent:\n{}", p2.dump(), p.dump())
    })
    .await;
    // Give any late write time to show, then: nothing for the 8 unchanged.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let unchanged: Vec<String> = (4..12)
        .map(|i| format!("{prefix}/memcached/{}", fleet.name(&format!("m{i}"))))
        .collect();
    let noise: Vec<_> = watch
        .events()
        .into_iter()
        .filter(|e| unchanged.contains(&e.key))
        .collect();
    assert!(
        noise.is_empty(),
        "watchers saw events for containers that did not change: {noise:#?}\n{}",
        p2.dump()
    );
    println!(
        "HOST SIGKILL mid-churn ({n} docker commands) and restart: 0 events for 8 unchanged containers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_withdraws_every_key_and_a_killed_agents_keys_expire_within_the_ttl() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("hostterm");
    let fleet = Fleet::new("hostterm");
    fleet.start(memcached(&prefix, 5)).await;
    let expected = || expected_memcached(&fleet, &prefix);
    let args = ["--ttl", "3", "--allow-prefix", &prefix];
    let mut p = Proc::spawn(host_agent(&etcd, &fleet, &args));
    converges(&etcd, &prefix, CONVERGE, expected, || p.dump()).await;
    let t = Instant::now();
    p.signal(Signal::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(5)).await;
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0), "{}", p.dump());
    assert!(etcd_map(&etcd, &prefix).await.is_empty(), "{}", p.dump());
    println!("HOST SIGTERM: every key withdrawn and exit 0 in {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?}\n{}",
        p.dump()
    );

    let mut p = Proc::spawn(host_agent(&etcd, &fleet, &args));
    converges(&etcd, &prefix, CONVERGE, expected, || p.dump()).await;
    let t = Instant::now();
    p.signal(Signal::SIGKILL);
    p.wait_exit(Duration::from_secs(5)).await;
    converges(
        &etcd,
        &prefix,
        Duration::from_secs(10),
        BTreeMap::new,
        || p.dump(),
    )
    .await;
    let took = t.elapsed();
    println!("HOST SIGKILL: every key expired {took:?} after the kill (TTL 3 s)");
    assert!(
        took >= Duration::from_secs(1),
        "keys went before the lease could expire"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_restart_mid_churn_ends_with_etcd_matching_docker_ps() {
    let mut etcd = Etcd::single().await;
    let prefix = unique_prefix("hostetcd");
    let fleet = Fleet::new("hostetcd");
    fleet.start(memcached(&prefix, 10)).await;
    let p = Proc::spawn(host_agent(&etcd, &fleet, &["--allow-prefix", &prefix]));
    let expected = || expected_memcached(&fleet, &prefix);
    converges(&etcd, &prefix, CONVERGE, expected, || p.dump()).await;
    let c = churn(&fleet, &["m0", "m1", "m2"]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    etcd.restart(0).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop_churn(c).await;
    converges(&etcd, &prefix, CONVERGE, expected, || {
        format!("{}\n{}", p.dump(), etcd.logs())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_docker_event_stream_mid_churn_ends_with_etcd_matching_docker_ps() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("hostcut");
    let fleet = Fleet::new("hostcut");
    fleet.start(memcached(&prefix, 10)).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = SocketProxy::start(&dir.path().join("docker.sock"), Path::new(DOCKER_SOCKET));
    let mut cmd = host_agent(&etcd, &fleet, &["--allow-prefix", &prefix]);
    cmd.env("DOCKER_HOST", proxy.docker_host());
    let p = Proc::spawn(cmd);
    let expected = || expected_memcached(&fleet, &prefix);
    converges(&etcd, &prefix, CONVERGE, expected, || p.dump()).await;
    let c = churn(&fleet, &["m0", "m1", "m2"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Cut, and keep Docker away while containers change.
    proxy.hold();
    proxy.sever();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_churn(c).await;
    fleet.cli(&["stop", "-t", "1"], &["m5"]).await;
    proxy.release();
    converges(&etcd, &prefix, CONVERGE, expected, || p.dump()).await;
    assert!(
        !etcd_map(&etcd, &prefix)
            .await
            .contains_key(&format!("{prefix}/memcached/{}", fleet.name("m5"))),
        "stopped while the stream was cut, and gone once it returned"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn published_ports_register_the_host_address_in_both_modes() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("hostpub");
    let fleet = Fleet::new("hostpub");
    fleet
        .start(vec![
            Spec::new("web")
                .label("discovery.key", &format!("{prefix}/web/%n"))
                .label("discovery.port", "80")
                .publish("127.0.0.1::80")
                .tcp(80),
            Spec::new("nobind")
                .label("discovery.key", &format!("{prefix}/nobind/%n"))
                .label("discovery.port", "81")
                .tcp(81),
        ])
        .await;
    let web = fleet.name("web");
    let out = std::process::Command::new("docker")
        .args(["port", &web, "80/tcp"])
        .output()
        .unwrap();
    let host_port = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next().map(str::to_owned))
        .unwrap();
    let p = Proc::spawn(host_agent(
        &etcd,
        &fleet,
        &[
            "--address",
            "published",
            "--host-ip",
            "192.0.2.7",
            "--allow-prefix",
            &prefix,
        ],
    ));
    let want = BTreeMap::from([(
        format!("{prefix}/web/{web}"),
        format!("192.0.2.7:{host_port}"),
    )]);
    converges(&etcd, &prefix, CONVERGE, || want.clone(), || p.dump()).await;
    let nobind = fleet.name("nobind");
    in_log(&p, "the missing binding", |l| {
        l.contains(&nobind) && l.contains("publishes no host port for 81/tcp")
    })
    .await;

    // The single-container mode does the same; an IPv6 host address is
    // written in brackets before the port.
    let mut singles = Vec::new();
    for (suffix, host_ip, want) in [
        ("single", "192.0.2.8", format!("192.0.2.8:{host_port}")),
        (
            "single6",
            "2001:db8::8",
            format!("[2001:db8::8]:{host_port}"),
        ),
    ] {
        let key = format!("{prefix}/{suffix}");
        singles.push(Proc::spawn(sidekick(
            &etcd,
            &[
                "--key",
                &key,
                "--container",
                &web,
                "--port",
                "80",
                "--address",
                "published",
                "--host-ip",
                host_ip,
            ],
        )));
        eventually_async(
            Duration::from_secs(10),
            &format!("single mode registers the binding at {host_ip}"),
            || async { (etcd_map(&etcd, &key).await.get(&key) == Some(&want)).then_some(()) },
        )
        .await;
    }
    let mut refused = Proc::spawn(sidekick(
        &etcd,
        &[
            "--key",
            &format!("{prefix}/single2"),
            "--container",
            &nobind,
            "--port",
            "81",
            "--address",
            "published",
            "--host-ip",
            "192.0.2.8",
        ],
    ));
    let status = refused.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2), "{}", refused.dump());
    assert!(
        refused
            .stderr()
            .contains("publishes no host port for 81/tcp"),
        "{}",
        refused.dump()
    );
    drop(singles);
}
