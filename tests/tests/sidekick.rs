//! The sidekick binary against the real Docker engine and a real etcd,
//! each behaviour checked through an independent raw etcd watch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use harness::docker::{ContainerSpec, FLANNEL_NETWORK, unique_name};
use harness::notify::NotifySocket;
use harness::proc::{Proc, sidekick};
use harness::{Docker, Etcd, RawWatch, eventually_async, unique_prefix};
use nix::sys::signal::Signal;
use tokio::time::Instant;

const TTL: &str = "3";

async fn value(etcd: &Etcd, key: &str) -> Option<String> {
    let mut c = etcd.raw_client().await;
    let r = c.get(key, None).await.ok()?;
    r.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

/// How long the registration said it would wait before its next attempt,
/// in its last "retrying" line (`retry_in=1.5s`, `retry_in=250ms`).
fn last_retry_in(p: &Proc) -> Option<Duration> {
    let err = p.stderr();
    let line = err.lines().rev().find(|l| l.contains("retrying"))?;
    let v = line.split("retry_in=").nth(1)?.split_whitespace().next()?;
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic() || c == 'µ')?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" | "us" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Slack for a loaded machine on top of a delay the code under test chose:
/// it bounds scheduling, a grant and a put, never a feature's own timing.
const SLACK: Duration = Duration::from_secs(3);

/// Start a sidekick and wait until the key holds `want`.
async fn start(etcd: &Etcd, args: &[&str], key: &str, want: &str) -> Proc {
    let p = Proc::spawn(sidekick(etcd, args));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if value(etcd, key).await.as_deref() == Some(want) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "key {key} never held {want:?}\n{}",
            p.dump()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_the_bridge_ip_once_then_stays_silent() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(ContainerSpec::new(unique_name("steady")).tcp(11211))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("steady"));
    let raw = RawWatch::start(&etcd, &key).await;
    let notify = NotifySocket::new();
    let mut cmd = sidekick(
        &etcd,
        &["--key", &key, "--container", c.name(), "--ttl", TTL],
    );
    cmd.env("NOTIFY_SOCKET", notify.path());
    let p = Proc::spawn(cmd);
    let put = raw
        .wait_for(Duration::from_secs(10), "the registration", |e| e.put)
        .await;
    assert_eq!(
        put.value_str(),
        ip,
        "the value is the container's bridge IP"
    );
    // READY=1 once registered, and a STATUS= line saying what and where.
    notify
        .wait_for(Duration::from_secs(5), "READY=1", |l| l == "READY=1")
        .await;
    let status = notify
        .wait_for(Duration::from_secs(5), "STATUS=registered", |l| {
            l.starts_with("STATUS=registered")
        })
        .await;
    assert!(
        status.contains(&key) && status.contains(&ip) && status.contains("lease"),
        "{status}"
    );

    let mut raw_client = etcd.raw_client().await;
    let ttl = raw_client
        .lease_time_to_live(put.lease, None)
        .await
        .unwrap();
    assert!(
        ttl.granted_ttl() <= 3 && ttl.granted_ttl() > 0,
        "lease TTL {} <= --ttl",
        ttl.granted_ttl()
    );

    // Three TTLs of steady state: exactly that one PUT. A deliberate quiet
    // period: it asserts an absence (no second write), so there is no event
    // to wait for.
    tokio::time::sleep(Duration::from_secs(3 * 3 + 1)).await;
    let events = raw.events();
    assert_eq!(
        events.len(),
        1,
        "exactly 1 PUT then nothing: {events:#?}\n{}",
        p.dump()
    );
    assert_eq!(
        value(&etcd, &key).await.as_deref(),
        Some(ip.as_str()),
        "still registered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_stop_and_start_act_on_dockers_events() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(ContainerSpec::new(unique_name("stopstart")).tcp(11211))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("stopstart"));
    let want = format!("{ip}:11211");
    let p = start(
        &etcd,
        &[
            "--key",
            &key,
            "--container",
            c.name(),
            "--port",
            "11211",
            "--ttl",
            TTL,
        ],
        &key,
        &want,
    )
    .await;
    let raw = RawWatch::start(&etcd, &key).await;
    // "At once" is proved by cause, not by a stopwatch: each change comes
    // from Docker's events (the sidekick logs each it acts on), not from
    // its periodic re-inspection (60 s). The figures are P1 and P2 of
    // `make bench`. A stop logs "container going down" for its `kill`,
    // `die` and `stop`; the first withdraws the key ("key withdrawn"),
    // unless an inspect that an earlier event asked for saw the container
    // dead first ("not registering": Docker replays the container's own
    // `start` to a sidekick that subscribed just after it).
    let withdrawn = |l: &str| l.contains("container going down");
    let inspected_on_start =
        |l: &str| l.contains("container up; inspecting") && l.contains("event=start");
    for round in 0..3 {
        let t = Instant::now();
        let (w0, s0) = (
            p.stderr_count(withdrawn),
            p.stderr_count(inspected_on_start),
        );
        c.stop().await;
        let gone = raw
            .wait_for(Duration::from_secs(10), "key gone after docker stop", |e| {
                !e.put && e.at >= t
            })
            .await;
        // (The log line may trail the delete it announces.)
        p.wait_stderr_nth(
            Duration::from_secs(5),
            "Docker's down event handled",
            w0 + 1,
            withdrawn,
        )
        .await;
        let stop_ms = (gone.at - t).as_secs_f64() * 1000.0;
        // From the moment Docker reports the container started (the API call
        // returns), which under load can itself take a while.
        let before = Instant::now();
        c.start().await;
        let t = Instant::now();
        let back = raw
            .wait_for(
                Duration::from_secs(10),
                "key back after docker start",
                |e| e.put && e.at >= before,
            )
            .await;
        p.wait_stderr_nth(
            Duration::from_secs(5),
            "registered on Docker's start event",
            s0 + 1,
            inspected_on_start,
        )
        .await;
        let start_ms = back.at.saturating_duration_since(t).as_secs_f64() * 1000.0;
        assert_eq!(
            back.value_str(),
            format!("{}:11211", c.bridge_ip().await.unwrap())
        );
        println!(
            "SIDEKICK round {round}: docker stop -> key gone {stop_ms:.1} ms; docker start -> key visible {start_ms:.1} ms"
        );
    }
    // pause and unpause act the same way (timed from Docker's answer: the
    // cgroup freeze itself can be slow on a loaded machine).
    let before = raw.events().last().map(|e| e.revision).unwrap_or(0);
    c.pause().await;
    let gone = raw
        .wait_for(Duration::from_secs(10), "key gone after pause", |e| {
            !e.put && e.revision > before
        })
        .await;
    c.unpause().await;
    raw.wait_for(Duration::from_secs(10), "key back after unpause", |e| {
        e.put && e.revision > gone.revision
    })
    .await;
    drop(p);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_ip_is_exactly_one_set_on_a_named_flannel_network() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(
            ContainerSpec::new(unique_name("move"))
                .tcp(11211)
                .network(FLANNEL_NETWORK),
        )
        .await;
    let old = c.ip(FLANNEL_NETWORK).await.unwrap();
    assert!(old.starts_with("10.1."), "{old}");
    let key = format!("{}/1", unique_prefix("move"));
    let p = start(
        &etcd,
        &[
            "--key",
            &key,
            "--container",
            c.name(),
            "--network",
            FLANNEL_NETWORK,
            "--ttl",
            TTL,
        ],
        &key,
        &old,
    )
    .await;
    let raw = RawWatch::start(&etcd, &key).await;

    // While it is stopped, it is given another address, so it comes back
    // elsewhere.
    c.stop().await;
    let moved_to = harness::docker::move_stopped_container(c.name(), FLANNEL_NETWORK, &old);
    c.start().await;
    let new = c.ip(FLANNEL_NETWORK).await.unwrap();
    assert_eq!(new, moved_to);
    assert_ne!(new, old, "the container moved");
    raw.wait_for(Duration::from_secs(10), "the new address", |e| {
        e.put && e.value_str() == new
    })
    .await;
    // A deliberate quiet period: "exactly one set" asserts that no second
    // write follows, which no event can announce.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let puts: Vec<String> = raw
        .events()
        .iter()
        .filter(|e| e.put)
        .map(|e| e.value_str())
        .collect();
    assert_eq!(
        puts,
        vec![new.clone()],
        "exactly one set, with the new value\n{}",
        p.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_networks_without_network_flag_is_a_usage_error() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let n1 = docker.network(&unique_name("neta")).await;
    let n2 = docker.network(&unique_name("netb")).await;
    let c = docker
        .run(
            ContainerSpec::new(unique_name("multi"))
                .tcp(1)
                .network(n1.name()),
        )
        .await;
    c.connect_network(n2.name()).await;
    let key = format!("{}/1", unique_prefix("multi"));
    let mut p = Proc::spawn(sidekick(&etcd, &["--key", &key, "--container", c.name()]));
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2), "{}", p.dump());
    let err = p.stderr();
    assert!(
        err.contains("several networks")
            && err.contains(n1.name())
            && err.contains(n2.name())
            && err.contains("--network"),
        "{err}"
    );
    // Naming one of them works.
    let ip = c.ip(n2.name()).await.unwrap();
    let _p = start(
        &etcd,
        &[
            "--key",
            &key,
            "--container",
            c.name(),
            "--network",
            n2.name(),
        ],
        &key,
        &ip,
    )
    .await;
    // Naming one it is not on says where it is.
    let mut p = Proc::spawn(sidekick(
        &etcd,
        &[
            "--key",
            &format!("{key}x"),
            "--container",
            c.name(),
            "--network",
            "bridge",
        ],
    ));
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await.code(), Some(2));
    assert!(
        p.stderr()
            .contains("has no IP on network \"bridge\"; it is attached to:"),
        "{}",
        p.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn require_healthy_follows_the_healthcheck() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(
            ContainerSpec::new(unique_name("health"))
                .tcp(11211)
                .health_file(),
        )
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("health"));
    let raw = RawWatch::start(&etcd, &key).await;
    let p = Proc::spawn(sidekick(
        &etcd,
        &[
            "--key",
            &key,
            "--container",
            c.name(),
            "--require-healthy",
            "--ttl",
            TTL,
        ],
    ));
    p.wait_stderr(Duration::from_secs(10), "not healthy yet", |l| {
        l.contains("not registering")
    })
    .await;
    assert!(
        raw.events().is_empty(),
        "nothing registered while unhealthy"
    );
    c.exec(&["touch", "/tmp/healthy"]).await;
    let e = raw
        .wait_for(Duration::from_secs(5), "registered once healthy", |e| e.put)
        .await;
    assert_eq!(e.value_str(), ip);
    c.exec(&["rm", "/tmp/healthy"]).await;
    raw.wait_for(Duration::from_secs(5), "withdrawn once unhealthy", |e| {
        !e.put
    })
    .await;
    let t = Instant::now();
    c.exec(&["touch", "/tmp/healthy"]).await;
    raw.wait_for(Duration::from_secs(5), "back once healthy again", |e| {
        e.put && e.at >= t
    })
    .await;

    // Without a HEALTHCHECK, --require-healthy is a configuration error.
    let plain = docker
        .run(ContainerSpec::new(unique_name("nohealth")).tcp(1))
        .await;
    let mut p2 = Proc::spawn(sidekick(
        &etcd,
        &[
            "--key",
            &format!("{key}-b"),
            "--container",
            plain.name(),
            "--require-healthy",
        ],
    ));
    assert_eq!(p2.wait_exit(Duration::from_secs(10)).await.code(), Some(2));
    assert!(p2.stderr().contains("needs a HEALTHCHECK"), "{}", p2.dump());
    drop(p);
}

/// SIGHUP asks for a reconcile with Docker at once, and never stops the
/// sidekick (its default action would), not even during a stop: the
/// registration stays, and a SIGTERM afterwards is still the first stop.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reconciles_now_and_never_stops() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(ContainerSpec::new(unique_name("hup")).tcp(1))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("hup"));
    let args = ["--key", &key, "--container", c.name(), "--ttl", TTL];
    let mut p = start(&etcd, &args, &key, &ip).await;
    // Two, each once the one before was taken (two pending SIGHUPs are one
    // to the kernel).
    for n in 1..=2 {
        p.signal(Signal::SIGHUP);
        p.wait_stderr_nth(Duration::from_secs(10), "the SIGHUP's reconcile", n, |l| {
            l.contains("SIGHUP: reconciling now")
        })
        .await;
    }
    assert!(
        p.try_exit().is_none(),
        "SIGHUP ended the sidekick\n{}",
        p.dump()
    );
    assert_eq!(value(&etcd, &key).await.as_deref(), Some(ip.as_str()));
    p.signal(Signal::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", p.dump());
    assert!(
        p.stderr().contains("stopping: revoking the lease"),
        "{}",
        p.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_revokes_at_once_and_sigkill_expires_within_the_ttl() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(ContainerSpec::new(unique_name("sig")).tcp(1))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("sig"));
    let mut p = start(
        &etcd,
        &["--key", &key, "--container", c.name(), "--ttl", TTL],
        &key,
        &ip,
    )
    .await;
    let raw = RawWatch::start(&etcd, &key).await;
    let ttl = Duration::from_secs(TTL.parse().unwrap());
    let t = Instant::now();
    p.signal(Signal::SIGTERM);
    // "At once" against the TTL: the key goes by the revoke, not by expiry.
    // The sidekick says so, and the key is gone before its lease could have
    // run out (its last keep-alive was at most TTL/3 before the signal).
    let gone = raw
        .wait_for(ttl, "key gone after SIGTERM", |e| !e.put)
        .await;
    let status = p.wait_exit(Duration::from_secs(10)).await;
    let exited = t.elapsed();
    assert_eq!(status.code(), Some(0), "{}", p.dump());
    assert!(
        p.stderr().contains("deregistered; exiting"),
        "the revoke was confirmed\n{}",
        p.dump()
    );
    println!(
        "SIDEKICK SIGTERM -> key gone {:?}, exited {exited:?}",
        gone.at - t,
    );

    let mut p = start(
        &etcd,
        &["--key", &key, "--container", c.name(), "--ttl", TTL],
        &key,
        &ip,
    )
    .await;
    let t = Instant::now();
    p.signal(Signal::SIGKILL);
    p.wait_exit(Duration::from_secs(10)).await;
    // etcd expires a lease on its own schedule (a check every 500 ms, then
    // a raft round): slack on top of the TTL.
    let gone = raw
        .wait_for(ttl + SLACK, "key expired after SIGKILL", |e| {
            !e.put && e.at > t
        })
        .await;
    println!(
        "SIDEKICK SIGKILL -> key expired after {:?} (TTL 3s)",
        gone.at - t
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_within_the_ttl_with_etcd_frozen_and_a_second_signal_at_once() {
    let mut etcd = Etcd::single().await;
    let key = format!("{}/1", unique_prefix("sigfrozen"));
    let args = ["--key", key.as_str(), "--ip", "10.1.7.7", "--ttl", TTL];
    let mut p = start(&etcd, &args, &key, "10.1.7.7").await;
    // etcd cannot answer the revoke: the stop must not wait for it. A stop
    // that outlasts the TTL would be no better than letting the lease
    // expire; the sidekick gives up after its revoke limit (500 ms) and
    // says so.
    let ttl = Duration::from_secs(TTL.parse().unwrap());
    etcd.freeze(0);
    let t = Instant::now();
    p.signal(Signal::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(10)).await;
    let exited = t.elapsed();
    assert_eq!(status.code(), Some(0), "{}", p.dump());
    assert!(
        exited < ttl,
        "exited {exited:?} after SIGTERM, not within the TTL\n{}",
        p.dump()
    );
    assert!(
        p.stderr().contains("expires with its lease"),
        "{}",
        p.dump()
    );
    println!("SIDEKICK SIGTERM with etcd frozen -> exited {exited:?}");
    etcd.thaw(0);

    // A second signal while the first stop waits: exit now. (The key may
    // still be there from the first process: wait for this one to own it.)
    let mut p = Proc::spawn(sidekick(&etcd, &args));
    p.wait_stderr(Duration::from_secs(10), "registered", |l| {
        l.contains("ready")
    })
    .await;
    etcd.freeze(0);
    p.signal(Signal::SIGTERM);
    // Two pending SIGTERMs are one to the kernel: send the second only once
    // the first has been taken (the stop it started is waiting on etcd).
    p.wait_stderr(Duration::from_secs(10), "the first SIGTERM taken", |l| {
        l.contains("stopping: revoking the lease")
    })
    .await;
    let t = Instant::now();
    p.signal(Signal::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(10)).await;
    let exited = t.elapsed();
    assert_eq!(status.code(), Some(128 + 15), "{}", p.dump());
    assert!(p.stderr().contains("second signal"), "{}", p.dump());
    // Before the revoke limit, as an order of events rather than a
    // stopwatch: had the limit run out first, the stop would have said so
    // and exited 0.
    assert!(
        !p.stderr().contains("did not confirm the revoke in time"),
        "the second signal exits before the revoke limit\n{}",
        p.dump()
    );
    println!("SIDEKICK second SIGTERM -> exited {exited:?} after it");
    etcd.thaw(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn watchdog_pings_while_the_loop_turns_and_journald_logs_carry_no_timestamp() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(ContainerSpec::new(unique_name("wd")).tcp(1))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("wd"));
    let notify = NotifySocket::new();
    let mut cmd = sidekick(
        &etcd,
        &["--key", &key, "--container", c.name(), "--ttl", TTL],
    );
    // A 400 ms watchdog: a ping every 200 ms is due.
    cmd.env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "400000")
        .env("JOURNAL_STREAM", "8:12345");
    let p = Proc::spawn(cmd);
    notify
        .wait_for(Duration::from_secs(10), "READY=1", |l| l == "READY=1")
        .await;
    assert_eq!(value(&etcd, &key).await.as_deref(), Some(ip.as_str()));
    // Pings are due every half period (200 ms). Count PINGS of them and
    // check that, on average, they came faster than the watchdog period: a
    // sidekick pinging once per period (or slower) fails, while one that a
    // loaded machine held up for a while still passes.
    const PINGS: usize = 10;
    let watchdog = Duration::from_millis(400);
    let pings = || notify.lines().iter().filter(|l| *l == "WATCHDOG=1").count();
    let before = pings();
    let t = Instant::now();
    harness::eventually(
        Duration::from_secs(30),
        format!("{PINGS} more WATCHDOG=1"),
        || (pings() >= before + PINGS).then_some(()),
    )
    .await;
    let took = t.elapsed();
    assert!(
        took < watchdog * PINGS as u32,
        "{PINGS} WATCHDOG=1 took {took:?}: slower than one per {watchdog:?} watchdog period"
    );
    println!("SIDEKICK watchdog 400 ms -> {PINGS} pings in {took:?}");

    let err = p.stderr();
    assert!(err.lines().count() >= 2, "{err}");
    for line in err.lines() {
        let starts_with_date = line.len() >= 10
            && line.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && line.as_bytes()[4] == b'-';
        assert!(
            !starts_with_date && !line.contains('\u{1b}'),
            "under journald a line has no timestamp and no colour: {line:?}"
        );
    }
    // Without JOURNAL_STREAM the same lines do carry one (the check can fail).
    let plain = Proc::spawn(sidekick(
        &etcd,
        &["--key", &key, "--ip", "10.1.7.8", "--ttl", TTL],
    ));
    plain
        .wait_stderr(Duration::from_secs(10), "a log line", |l| {
            l.as_bytes().first().is_some_and(u8::is_ascii_digit)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_expired_while_cut_off_from_etcd_is_replaced_at_the_next_retry() {
    // etcd stays up; only the sidekick is cut off (a proxy in between), long
    // enough for etcd to expire its lease. etcd killed and restarted, in the
    // test above, renews leases instead: this is the path of a lost lease.
    let etcd = Etcd::single().await;
    let proxy = harness::tcp_proxy::TcpProxy::start(etcd.endpoint(0).trim_start_matches("http://"));
    let key = format!("{}/1", unique_prefix("cutoff"));
    let raw = RawWatch::start(&etcd, &key).await;
    let mut cmd = sidekick(&etcd, &["--key", &key, "--ip", "10.1.7.9", "--ttl", TTL]);
    cmd.env("ETCDCTL_ENDPOINTS", proxy.endpoint());
    let p = Proc::spawn(cmd);
    let first = raw
        .wait_for(Duration::from_secs(10), "registered", |e| e.put)
        .await;
    proxy.cut();
    let gone = raw
        .wait_for(Duration::from_secs(3 + 3), "the lease expired", |e| !e.put)
        .await;
    p.wait_stderr(Duration::from_secs(5), "the loss noticed", |l| {
        l.contains("retrying")
    })
    .await;
    let t = Instant::now();
    proxy.restore();
    // The next attempt comes at most one retry delay (as last logged) after
    // etcd is reachable again.
    let retry_in = last_retry_in(&p).unwrap_or_else(|| panic!("no retry_in\n{}", p.dump()));
    let back = raw
        .wait_for(retry_in + SLACK, "re-registered at the next retry", |e| {
            e.put && e.revision > gone.revision
        })
        .await;
    assert_ne!(back.lease, first.lease, "a new lease");
    assert_eq!(back.value_str(), "10.1.7.9");
    println!(
        "SIDEKICK lease expired while cut off from etcd -> re-registered {:?} after etcd was reachable again",
        back.at - t
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_at_the_same_ip_changes_nothing_in_etcd() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(ContainerSpec::new(unique_name("rs")).tcp(1))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("rs"));
    let args = ["--key", key.as_str(), "--container", c.name(), "--ttl", TTL];
    let mut p = start(&etcd, &args, &key, &ip).await;
    let raw = RawWatch::start(&etcd, &key).await;
    // A crash (as systemd's Restart=always would follow with a new process).
    p.signal(Signal::SIGKILL);
    p.wait_exit(Duration::from_secs(10)).await;
    let p2 = Proc::spawn(sidekick(&etcd, &args));
    p2.wait_stderr(Duration::from_secs(10), "registered again", |l| {
        l.contains("registered")
    })
    .await;
    // A deliberate quiet period of two TTLs: it asserts an absence (no
    // event at all), so there is nothing to wait for.
    tokio::time::sleep(Duration::from_secs(3 * 2)).await;
    assert!(
        raw.events().is_empty(),
        "no event at all: {:#?}\n{}",
        raw.events(),
        p2.dump()
    );
    assert!(p2.stderr().contains("adopting"), "{}", p2.dump());
    assert_eq!(value(&etcd, &key).await.as_deref(), Some(ip.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn reregisters_at_the_next_retry_after_etcd_was_down_longer_than_the_ttl() {
    let mut etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(ContainerSpec::new(unique_name("etcddown")).tcp(1))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("etcddown"));
    let p = start(
        &etcd,
        &["--key", &key, "--container", c.name(), "--ttl", TTL],
        &key,
        &ip,
    )
    .await;
    etcd.kill(0);
    p.wait_stderr(
        Duration::from_secs(10),
        "retrying while etcd is down",
        |l| l.contains("retrying"),
    )
    .await;
    // Pacing, not synchronisation: the scenario is an etcd down for longer
    // than the TTL (two of them).
    tokio::time::sleep(Duration::from_secs(3 * 2)).await;
    etcd.restart(0).await;
    let t = Instant::now();
    // At most one retry delay (as last logged) after etcd answers.
    let retry_in = last_retry_in(&p).unwrap_or_else(|| panic!("no retry_in\n{}", p.dump()));
    eventually_async(
        retry_in + SLACK,
        "registered at the next retry after etcd answered",
        || async { (value(&etcd, &key).await.as_deref() == Some(ip.as_str())).then_some(()) },
    )
    .await;
    let seen = t.elapsed();
    // The sidekick itself confirms it: a "registered" after its last "retrying".
    harness::eventually(
        Duration::from_secs(10),
        "the sidekick confirms its registration",
        || {
            let err = p.stderr();
            let lines: Vec<&str> = err.lines().collect();
            let last_retry = lines.iter().rposition(|l| l.contains("retrying"))?;
            lines[last_retry..]
                .iter()
                .any(|l| l.contains(" registered ") || l.contains("INFO registered"))
                .then_some(())
        },
    )
    .await;
    println!("SIDEKICK etcd down 6s (TTL 3s) -> key present {seen:?} after etcd answered");
    // The lease is really alive (not a leftover that is about to expire):
    // a deliberate quiet period longer than the TTL, asserting the key
    // does not go.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        value(&etcd, &key).await.as_deref(),
        Some(ip.as_str()),
        "{}",
        p.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_for_a_missing_container_and_registers_when_it_appears() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let name = unique_name("late");
    let key = format!("{}/1", unique_prefix("late"));
    let notify = NotifySocket::new();
    let mut cmd = sidekick(&etcd, &["--key", &key, "--container", &name, "--ttl", TTL]);
    cmd.env("NOTIFY_SOCKET", notify.path());
    let mut p = Proc::spawn(cmd);
    p.wait_stderr(Duration::from_secs(10), "waiting for the container", |l| {
        l.contains("does not exist")
    })
    .await;
    // Confirmed not running is a finished first round: READY.
    notify
        .wait_for(Duration::from_secs(5), "READY=1 while waiting", |l| {
            l == "READY=1"
        })
        .await;
    // A deliberate quiet period: "it does not exit" is an absence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        p.try_exit().is_none(),
        "it waits, it does not exit\n{}",
        p.dump()
    );
    let c = docker.run(ContainerSpec::new(name.clone()).tcp(1)).await;
    let ip = c.bridge_ip().await.unwrap();
    eventually_async(
        Duration::from_secs(10),
        "registered once it appears",
        || async { (value(&etcd, &key).await.as_deref() == Some(ip.as_str())).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn static_ip_mode_needs_no_docker() {
    let etcd = Etcd::single().await;
    let key = format!("{}/1", unique_prefix("static"));
    let mut cmd = sidekick(
        &etcd,
        &[
            "--key",
            &key,
            "--ip",
            "192.0.2.10",
            "--port",
            "8080",
            "--json-value",
        ],
    );
    cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let mut p = Proc::spawn(cmd);
    let want = r#"{"ip":"192.0.2.10","port":8080,"container":null,"host":""#;
    eventually_async(Duration::from_secs(5), "static registration", || async {
        value(&etcd, &key).await.filter(|v| v.starts_with(want))
    })
    .await;
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
    assert!(value(&etcd, &key).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_usage_exits_2_with_a_message_that_says_what_to_fix() {
    // No etcd and no Docker needed: everything is refused before any I/O.
    let cases: &[(&[&str], &str)] = &[
        (&["--container", "c"], "--key"),
        (&["--key", "/k"], "--container"),
        (
            &["--key", "/k", "--container", "c", "--ip", "10.0.0.1"],
            "cannot be used with",
        ),
        (
            &["--key", "services/m/1", "--container", "c"],
            "must start with '/'",
        ),
        (
            &["--key", "/services//1", "--container", "c"],
            "empty segment",
        ),
        (
            &["--key", "/services/m/", "--container", "c"],
            "ends with '/'",
        ),
        (
            &["--key", "/services/m 1", "--container", "c"],
            "whitespace",
        ),
        (
            &["--key", "/services/m\u{7}1", "--container", "c"],
            "control character",
        ),
        (&["--key", "/k", "--container", "c", "--ttl", "0"], "--ttl"),
        (
            &["--key", "/k", "--container", "c", "--ttl", "-5"],
            "negative",
        ),
        (
            &["--key", "/k", "--container", "c", "--ttl", "1"],
            "minimum",
        ),
        (
            &["--key", "/k", "--container", "c", "--ttl", "1.5s"],
            "whole number",
        ),
        (
            &["--key", "/k", "--container", "c", "--ttl", "eight"],
            "not a duration",
        ),
        (
            &["--key", "/k", "--container", "c", "--ttl", "9000000001"],
            "maximum",
        ),
        (
            &[
                "--key",
                "/k",
                "--container",
                "c",
                "--ttl",
                "8",
                "--interval",
                "8",
            ],
            "--interval",
        ),
        (
            &[
                "--key",
                "/k",
                "--container",
                "c",
                "--ttl",
                "8",
                "--interval",
                "0",
            ],
            "--interval",
        ),
        (
            &["--key", "/k", "--container", "c", "--interval", "10ms"],
            "below 100ms",
        ),
        (
            &["--key", "/k", "--container", "c", "--port", "0"],
            "--port",
        ),
        (
            &["--key", "/k", "--container", "c", "--port", "70000"],
            "--port",
        ),
        (
            &["--key", "/k", "--ip", "10.0.0.300"],
            "not an IPv4 or IPv6",
        ),
        (&["--key", "/k", "--ip", "0.0.0.0"], "unspecified"),
        (
            &["--key", "/k", "--ip", "10.0.0.1", "--network", "n"],
            "--network applies to --container",
        ),
        (
            &["--key", "/k", "--ip", "10.0.0.1", "--require-healthy"],
            "needs --container",
        ),
        (
            &["--key", "/k", "--container", "bad name!"],
            "not a Docker container name",
        ),
        (
            &[
                "--key",
                "/k",
                "--container",
                "c",
                "--endpoints",
                "ftp://h:1",
            ],
            "scheme",
        ),
        (
            &[
                "--key",
                "/k",
                "--container",
                "c",
                "--endpoints",
                "localhost",
            ],
            "no port",
        ),
        (
            &["--key", "/k", "--container", "c", "--user", "root:secret"],
            "must not carry a password",
        ),
        (
            &[
                "--key",
                "/k",
                "--container",
                "c",
                "--cacert",
                "/nonexistent/ca.pem",
                "--endpoints",
                "https://h:1",
            ],
            "CA certificate",
        ),
        (
            &["--key", "/k", "--container", "c", "--cert", "/tmp/c.pem"],
            "--tls-key",
        ),
        (
            &[
                "--key",
                "/k",
                "--container",
                "c",
                "--metrics-addr",
                "not-an-addr",
            ],
            "--metrics-addr",
        ),
    ];
    for (args, want) in cases {
        let mut cmd = Proc::command("sidekick");
        cmd.args(*args)
            .env_remove("ETCDCTL_ENDPOINTS")
            .env("DOCKER_HOST", "unix:///nonexistent");
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} should exit 2: {err}");
        assert!(
            err.contains(want),
            "{args:?}: message should mention {want:?}, got: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            !err.contains("secret"),
            "{args:?}: the password must not be echoed: {err}"
        );
    }
    // A DOCKER_HOST we cannot use.
    let out = Proc::command("sidekick")
        .args(["--key", "/k", "--container", "c"])
        .env("DOCKER_HOST", "ftp://docker")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DOCKER_HOST"));
    println!("SIDEKICK bad-usage cases: {}", cases.len() + 1);
    // --help and --version touch neither etcd nor Docker.
    for flag in ["--help", "--version"] {
        let out = Proc::command("sidekick")
            .arg(flag)
            .env("DOCKER_HOST", "ftp://x")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
    }
}
