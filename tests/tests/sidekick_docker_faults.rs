//! The sidekick when Docker's socket misbehaves: a proxy between the
//! sidekick and the real socket (DOCKER_HOST=unix://proxy) is severed or
//! taken away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use harness::docker::{ContainerSpec, DOCKER_SOCKET, unique_name};
use harness::proc::{Proc, sidekick};
use harness::socket_proxy::SocketProxy;
use harness::{Docker, Etcd, RawWatch, eventually_async, unique_prefix};
use tokio::time::Instant;

async fn value(etcd: &Etcd, key: &str) -> Option<String> {
    let mut c = etcd.raw_client().await;
    let r = c.get(key, None).await.ok()?;
    r.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

fn proxy() -> (tempfile::TempDir, SocketProxy) {
    let dir = tempfile::tempdir().unwrap();
    let p = SocketProxy::start(&dir.path().join("docker.sock"), Path::new(DOCKER_SOCKET));
    (dir, p)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_severed_event_stream_is_resubscribed_and_what_it_missed_is_applied() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(ContainerSpec::new(unique_name("sever")).tcp(1))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("sever"));
    let (_d, proxy) = proxy();
    // A long reconcile interval: only the event stream (and the inspect
    // that follows a resubscription) can make a change show fast.
    let mut cmd = sidekick(
        &etcd,
        &[
            "--key",
            &key,
            "--container",
            c.name(),
            "--ttl",
            "30",
            "--interval",
            "10s",
        ],
    );
    cmd.env("DOCKER_HOST", proxy.docker_host());
    let p = Proc::spawn(cmd);
    eventually_async(Duration::from_secs(10), "registered", || async {
        (value(&etcd, &key).await.as_deref() == Some(ip.as_str())).then_some(())
    })
    .await;
    let raw = RawWatch::start(&etcd, &key).await;
    // The event stream is live once an event gets through: a SIGHUP, which
    // the container's PID 1 ignores and the sidekick answers with an inspect.
    // Counted from before the signal (the events replayed at start-up are
    // re-inspections too), and done once Docker answered that inspect: an
    // inspect that starts after the proxy holds hangs, and the sidekick
    // waiting on it could not notice the cut.
    let live = || {
        let (p, name, proxy) = (&p, c.name().to_owned(), &proxy);
        async move {
            let from = p.stderr().matches("re-inspecting").count();
            let answered = proxy.responses();
            harness::docker::docker_cli(&["kill", "-s", "HUP", &name]);
            harness::eventually(
                Duration::from_secs(10),
                "an event through the stream",
                || (p.stderr().matches("re-inspecting").count() > from).then_some(()),
            )
            .await;
            harness::eventually(
                Duration::from_secs(10),
                "Docker's answer to the inspect",
                || (proxy.responses() > answered).then_some(()),
            )
            .await;
        }
    };
    // The cut is noticed by the stream itself, or by a request that was in
    // flight on the connection cut (then the stream is dropped with it).
    let noticed_after = |from: usize| {
        let p = &p;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let err = p.stderr();
                let new = err.get(from..).unwrap_or_default();
                if new.contains("event stream") || new.contains("Docker unreachable") {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cut was not noticed within 10 s\n{}",
                    p.dump()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // 1. The stream is cut and stays down (Docker holds every request)
    //    while the container restarts. When it returns, Docker replays
    //    kill, die, stop and start; the inspect after the resubscription
    //    already shows the container running, so the replayed die must not
    //    withdraw it: consumers see no delete (a set only if its address
    //    changed).
    live().await;
    let before = p.stderr().len();
    proxy.hold();
    proxy.sever();
    noticed_after(before).await;
    c.stop().await;
    c.start().await;
    let ip2 = c.bridge_ip().await.unwrap();
    proxy.release();
    eventually_async(
        Duration::from_secs(5),
        "resubscribed and reconciled",
        || async { (value(&etcd, &key).await.as_deref() == Some(ip2.as_str())).then_some(()) },
    )
    .await;
    // A deliberate quiet period: "no delete" is an absence.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = raw.events();
    assert!(
        seen.iter().all(|e| e.put && e.value_str() == ip2),
        "a restart while the stream was down is no delete: {seen:#?}\n{}",
        p.dump()
    );
    assert_eq!(seen.len(), usize::from(ip2 != ip), "{seen:#?}");

    // 2. Cut again, and the container stops meanwhile: the key stays (the
    //    sidekick cannot know), and goes as soon as the stream returns.
    live().await;
    let before = p.stderr().len();
    proxy.hold();
    proxy.sever();
    noticed_after(before).await;
    c.stop().await;
    // A deliberate quiet period: "the key stays" is an absence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(value(&etcd, &key).await.as_deref(), Some(ip2.as_str()));
    let t = Instant::now();
    proxy.release();
    let gone = raw
        .wait_for(
            Duration::from_secs(10),
            "key gone once the stream returned",
            |e| !e.put,
        )
        .await;
    println!(
        "FAULT docker event stream cut, container stopped meanwhile -> key gone {:?} after the stream returned",
        gone.at - t
    );

    // 3. And the resubscribed stream delivers the next start at once.
    let t = Instant::now();
    c.start().await;
    raw.wait_for(Duration::from_secs(1), "registered again on start", |e| {
        e.put && e.at >= t
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_gone_keeps_the_key_and_a_stop_meanwhile_is_applied_when_it_returns() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(ContainerSpec::new(unique_name("gone")).tcp(1))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("gone"));
    let (_d, proxy) = proxy();
    let mut cmd = sidekick(
        &etcd,
        &["--key", &key, "--container", c.name(), "--ttl", "3"],
    );
    cmd.env("DOCKER_HOST", proxy.docker_host());
    let p = Proc::spawn(cmd);
    eventually_async(Duration::from_secs(10), "registered", || async {
        (value(&etcd, &key).await.as_deref() == Some(ip.as_str())).then_some(())
    })
    .await;

    // The socket disappears (daemon down, socket removed).
    proxy.stop_listening();
    p.wait_stderr(Duration::from_secs(5), "Docker unreachable", |l| {
        l.contains("Docker unreachable")
    })
    .await;
    // Documented: the last registration is kept while Docker cannot be asked,
    // for longer than the TTL (keep-alives go on). A deliberate quiet
    // period: "kept" is an absence of a delete.
    tokio::time::sleep(Duration::from_secs(3 * 2)).await;
    assert_eq!(
        value(&etcd, &key).await.as_deref(),
        Some(ip.as_str()),
        "kept while Docker is gone\n{}",
        p.dump()
    );

    // The container stops while the sidekick cannot see it...
    c.stop().await;
    // A deliberate quiet period: "it cannot know yet" is an absence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(value(&etcd, &key).await.is_some(), "it cannot know yet");
    // ...and once Docker is back, the missed stop is applied: no stale key.
    let raw = RawWatch::start(&etcd, &key).await;
    proxy.resume_listening();
    let t = Instant::now();
    raw.wait_for(
        Duration::from_secs(15),
        "stale key removed once Docker answers",
        |e| !e.put,
    )
    .await;
    println!(
        "FAULT docker socket gone 6.5s, container stopped meanwhile -> key removed {:?} after the socket returned",
        t.elapsed()
    );
    // And it follows the container again.
    let t = Instant::now();
    c.start().await;
    raw.wait_for(Duration::from_secs(10), "registered again on start", |e| {
        e.put && e.at >= t
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_denying_access_is_a_configuration_error() {
    let etcd = Etcd::single().await;
    let key = format!("{}/1", unique_prefix("eacces"));
    // Root may open any socket; as nobody, the engine's root:docker 0660
    // socket refuses us, as it would a sidekick not in the docker group.
    let exe = harness::proc::bin_path("sidekick");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(exe)
        .args(["--key", &key, "--container", "anything"])
        .env("ETCDCTL_ENDPOINTS", etcd.endpoints_arg())
        .env("DOCKER_HOST", format!("unix://{DOCKER_SOCKET}"));
    let mut p = Proc::spawn(cmd);
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2), "{}", p.dump());
    let err = p.stderr();
    assert!(
        err.contains("refused") && err.contains("docker group"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_socket_is_retried_not_fatal() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let c = docker
        .run(ContainerSpec::new(unique_name("nosock")).tcp(1))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("nosock"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    let mut cmd = sidekick(&etcd, &["--key", &key, "--container", c.name()]);
    cmd.env("DOCKER_HOST", format!("unix://{}", path.display()));
    let mut p = Proc::spawn(cmd);
    p.wait_stderr(Duration::from_secs(5), "retrying Docker", |l| {
        l.contains("Docker unreachable")
    })
    .await;
    // A deliberate quiet period: "keeps trying" is an absence of an exit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(p.try_exit().is_none(), "keeps trying\n{}", p.dump());
    // The socket appears (dockerd starting after us): it registers.
    let _proxy = SocketProxy::start(&path, Path::new(DOCKER_SOCKET));
    eventually_async(
        Duration::from_secs(15),
        "registered once the socket exists",
        || async { (value(&etcd, &key).await.as_deref() == Some(ip.as_str())).then_some(()) },
    )
    .await;
}
