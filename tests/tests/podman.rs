//! sidekick against Podman's Docker-compatible API (`podman system service`
//! on a socket of the test's own), driven by the real `podman` CLI, each
//! behaviour checked through an independent raw etcd watch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use harness::docker::unique_name;
use harness::podman::Podman;
use harness::proc::{Proc, sidekick};
use harness::{Docker, Etcd, RawWatch, unique_prefix};
use nix::sys::signal::Signal;
use tokio::time::Instant;

/// Registers the container's podman-network address; `podman stop` removes
/// the key; `podman start` registers the address it has then; SIGTERM
/// revokes.
#[tokio::test(flavor = "multi_thread")]
async fn registers_withdraws_on_podman_stop_and_registers_again_on_podman_start() {
    let etcd = Etcd::single().await;
    // The image is built for Docker first, then loaded into podman.
    Docker::connect().await;
    let podman = Podman::start().await;
    let c = podman.run(&unique_name("pod-core"), &["tcp:11211"]);
    let ip = c.ip().expect("a running podman container has an address");
    assert!(
        ip.starts_with("10.88."),
        "{ip} is on podman's default network"
    );

    let key = format!("{}/1", unique_prefix("podman"));
    let raw = RawWatch::start(&etcd, &key).await;
    let mut cmd = sidekick(
        &etcd,
        &["--key", &key, "--container", c.name(), "--ttl", "3"],
    );
    cmd.env("DOCKER_HOST", podman.docker_host());
    let mut p = Proc::spawn(cmd);
    let put = raw
        .wait_for(
            Duration::from_secs(15),
            "the registration through podman",
            |e| e.put,
        )
        .await;
    assert_eq!(put.value_str(), ip, "{}", p.dump());

    // podman stop: the key goes (podman emits no early event, so it goes at
    // `die`: at most the stop timeout after the stop; see the README).
    c.stop(1);
    let del = raw
        .wait_for(
            Duration::from_secs(15),
            "the key removed after podman stop",
            |e| !e.put,
        )
        .await;

    // podman start: the address it has now is registered.
    c.start();
    let new_ip = c.ip().expect("address after podman start");
    let put = raw
        .wait_for(
            Duration::from_secs(15),
            "the registration after podman start",
            |e| e.put && e.revision > del.revision,
        )
        .await;
    assert_eq!(put.value_str(), new_ip, "{}\n{}", p.dump(), podman.log());

    // SIGTERM revokes the lease: the key goes at once.
    p.signal(Signal::SIGTERM);
    raw.wait_for(Duration::from_secs(10), "the key revoked on SIGTERM", |e| {
        !e.put && e.revision > put.revision
    })
    .await;
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", p.dump());
}

/// Podman emits no event when a stop begins (Docker emits `kill` at once):
/// a container whose PID 1 ignores SIGTERM sends nothing until `die`, after
/// the whole stop timeout. Its inspect says `"Status": "stopping"` meanwhile.
/// sidekick is event-driven and inspects between events only at its safety
/// resync (`--resync`, 60 s by default); on a Podman host, a short
/// `--resync` acts on that status: the key goes within about one resync of
/// the stop, long before the 10 s timeout runs out.
#[tokio::test(flavor = "multi_thread")]
async fn podman_stop_of_a_container_ignoring_sigterm_withdraws_at_the_next_resync() {
    let etcd = Etcd::single().await;
    Docker::connect().await;
    let podman = Podman::start().await;
    // `sleep` as PID 1 has no SIGTERM handler, so the kernel ignores SIGTERM.
    let c = podman.run_with(
        &unique_name("pod-stubborn"),
        &["--entrypoint", "/bin/sleep"],
        &["100000"],
    );
    let ip = c.ip().expect("address");
    let key = format!("{}/1", unique_prefix("podman-stubborn"));
    let raw = RawWatch::start(&etcd, &key).await;
    let mut cmd = sidekick(
        &etcd,
        &[
            "--key",
            &key,
            "--container",
            c.name(),
            "--ttl",
            "6",
            "--resync",
            "1s",
        ],
    );
    cmd.env("DOCKER_HOST", podman.docker_host());
    let p = Proc::spawn(cmd);
    let put = raw
        .wait_for(Duration::from_secs(15), "the registration", |e| e.put)
        .await;
    assert_eq!(put.value_str(), ip);

    let stopped_at = Instant::now();
    let mut stop = c.stop_in_background(10);
    let del = raw
        .wait_for(
            Duration::from_secs(15),
            "the key removed while podman stop waits",
            |e| !e.put,
        )
        .await;
    let took = del.at.duration_since(stopped_at);
    let stop_done = stop.try_wait().expect("podman stop status");
    eprintln!("key removed {took:?} after podman stop -t 10 (resync 1 s)");
    assert!(
        stop_done.is_none() && took < Duration::from_secs(8),
        "the key went {took:?} after podman stop -t 10, with the stop {}: \
         it should go at the next resync (1 s), before the container dies\n{}",
        if stop_done.is_some() {
            "finished"
        } else {
            "still waiting"
        },
        p.dump()
    );
    let _ = stop.wait();
}

/// `sidekick --all` against Podman: a labelled container is registered at
/// its podman-network address, an unlabelled one is not, `podman stop`
/// removes the key, and `podman start` registers it again.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_agent_registers_labelled_podman_containers() {
    let etcd = Etcd::single().await;
    Docker::connect().await;
    let podman = Podman::start().await;
    let prefix = unique_prefix("podman-all");
    // This test's own opt-in label, so agents of parallel tests never meet.
    let only = format!("dt-podman-all-{:06x}", fastrand::u32(..0xff_ffff));
    let key = format!("{prefix}/%n");
    let labels = [
        "--label",
        &format!("{only}=1"),
        "--label",
        &format!("discovery.key={key}"),
        "--label",
        "discovery.port=11211",
    ];
    let c = podman.run_with(&unique_name("pod-all"), &labels, &["tcp:11211"]);
    let _plain = podman.run(&unique_name("pod-plain"), &["tcp:11211"]);
    let ip = c.ip().expect("an address");
    let want = format!("{prefix}/{}", c.name());
    let raw = RawWatch::start(&etcd, &format!("{prefix}/")).await;
    let mut cmd = sidekick(
        &etcd,
        &[
            "--all",
            "--only-label",
            &format!("{only}=1"),
            "--ttl",
            "3",
            "--allow-prefix",
            &prefix,
        ],
    );
    cmd.env("DOCKER_HOST", podman.docker_host());
    let mut p = Proc::spawn(cmd);
    let put = raw
        .wait_for(Duration::from_secs(20), "the labelled container", |e| e.put)
        .await;
    assert_eq!(put.key, want, "{}", p.dump());
    assert_eq!(put.value_str(), format!("{ip}:11211"), "{}", p.dump());

    c.stop(1);
    raw.wait_for(
        Duration::from_secs(15),
        "the key removed after podman stop",
        |e| !e.put && e.key == want,
    )
    .await;
    c.start();
    let again = raw
        .wait_for(
            Duration::from_secs(15),
            "registered after podman start",
            |e| e.put && e.revision > put.revision,
        )
        .await;
    assert_eq!(again.key, want);
    let ip = c.ip().expect("an address after the start");
    assert_eq!(again.value_str(), format!("{ip}:11211"));
    // Only the labelled container was ever registered.
    assert!(
        raw.events().iter().all(|e| e.key == want),
        "{:?}",
        raw.events()
    );
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
}
