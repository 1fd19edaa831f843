//! Self-tests of the harness: if these fail, nothing else can be trusted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use harness::docker::{ContainerSpec, FLANNEL_NETWORK, cli_inspect_ip, unique_name};
use harness::{Docker, Etcd, EtcdCluster};

/// The matrix is only a matrix if `DISCOVERY_TEST_ETCD` really picks the
/// server: ask the running etcd its version, and the paired etcdctl its own.
#[tokio::test(flavor = "multi_thread")]
async fn the_selected_etcd_version_is_the_one_running() {
    let etcd = Etcd::single().await;
    let mut c = etcd.raw_client().await;
    let running = c.status().await.unwrap().version().to_owned();
    let ctl = std::process::Command::new(harness::etcd::etcdctl_binary())
        .arg("version")
        .output()
        .unwrap();
    let ctl = String::from_utf8_lossy(&ctl.stdout).into_owned();
    eprintln!(
        "{}={:?}: etcd {running}, etcdctl {ctl:?}",
        harness::etcd::ETCD_SELECT_VAR,
        std::env::var(harness::etcd::ETCD_SELECT_VAR).unwrap_or_default()
    );
    if let Some(minor) = harness::etcd::EtcdFlavor::expected_minor() {
        assert!(
            running.starts_with(&format!("{minor}.")),
            "selected etcd {minor}, but the server says {running}"
        );
        assert!(
            ctl.contains(&format!("etcdctl version: {minor}.")),
            "selected etcdctl {minor}, but it says {ctl}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn single_etcd_serves_and_cleans_up() {
    let etcd = Etcd::single().await;
    let mut c = etcd.raw_client().await;
    c.put("/harness/k", "v", None).await.unwrap();
    let got = c.get("/harness/k", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");
    let dir = etcd.dir().to_owned();
    let ep = etcd.endpoint(0);
    drop(etcd);
    assert!(!dir.exists(), "data dir removed on drop");
    let dead = etcd_client::Client::connect(
        [ep],
        Some(etcd_client::ConnectOptions::new().with_timeout(Duration::from_millis(500))),
    )
    .await
    .unwrap()
    .status()
    .await;
    assert!(dead.is_err(), "etcd process gone after drop");
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_elects_replaces_leader_and_restarted_member_catches_up() {
    let mut cluster = EtcdCluster::new(3).await;
    // A 3-member cluster elects a leader.
    let first = cluster.leader().await;

    // A leader kill leads to a new leader among the other two.
    cluster.kill(first);
    let second = cluster.leader().await;
    assert_ne!(first, second, "a new leader after killing m{first}");

    // Writes while the old leader is down...
    let mut c = cluster.raw_client_live().await;
    for i in 0..50 {
        c.put(format!("/harness/catchup/{i}"), "x", None)
            .await
            .unwrap();
    }
    let rev = cluster.revision().await;

    // ...reach it once it is restarted on its data dir.
    cluster.restart(first).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = cluster.member_revision(first).await;
        if r >= rev {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "m{first} at revision {r}, cluster at {rev}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut m = cluster.raw_member_client(first).await;
    let got = m
        .get(
            "/harness/catchup/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_serializable(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(got.kvs().len(), 50, "restarted member holds every write");
}

#[tokio::test(flavor = "multi_thread")]
async fn freeze_thaw_and_compact() {
    let mut cluster = EtcdCluster::new(3).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    cluster.freeze(follower);
    let mut frozen = cluster.raw_member_client(follower).await;
    let r = tokio::time::timeout(Duration::from_millis(500), frozen.status()).await;
    assert!(
        r.is_err() || r.unwrap().is_err(),
        "a frozen member answers nothing"
    );
    cluster.thaw(follower);
    cluster.wait_member(follower).await;

    let mut c = cluster.raw_client_live().await;
    let r1 = c
        .put("/harness/compact", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.put("/harness/compact", "2", None).await.unwrap();
    cluster.compact(r1 + 1).await;
    let old = c
        .get(
            "/harness/compact",
            Some(etcd_client::GetOptions::new().with_revision(r1)),
        )
        .await;
    let msg = old
        .expect_err("history before the compaction is gone")
        .to_string();
    assert!(msg.contains("compacted"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn container_ip_matches_docker_inspect_on_bridge_and_flannel_network() {
    let docker = Docker::connect().await;
    let on_bridge = docker
        .run(ContainerSpec::new(unique_name("ip")).tcp(11211))
        .await;
    let ip = on_bridge.bridge_ip().await.expect("a bridge IP");
    assert_eq!(
        ip,
        cli_inspect_ip(on_bridge.name(), "bridge"),
        "API and CLI agree"
    );
    // The listener is reachable from the host, for real.
    let reply = tcp_line(&ip, 11211).await;
    assert!(reply.starts_with("VERSION"), "{reply}");

    let on_flannel = docker
        .run(
            ContainerSpec::new(unique_name("ipf"))
                .http(8091)
                .network(FLANNEL_NETWORK),
        )
        .await;
    let fip = on_flannel.ip(FLANNEL_NETWORK).await.expect("a flannel IP");
    assert!(fip.starts_with("10.1."), "{fip} in 10.1.0.0/16");
    assert_eq!(fip, cli_inspect_ip(on_flannel.name(), FLANNEL_NETWORK));
    assert!(
        on_flannel.bridge_ip().await.is_none(),
        "not on the default bridge"
    );

    // Stop, start, kill: the harness drives the real engine.
    on_bridge.stop().await;
    assert!(on_bridge.bridge_ip().await.is_none(), "no IP once stopped");
    on_bridge.start().await;
    assert!(
        on_bridge.bridge_ip().await.is_some(),
        "an IP again once started"
    );
    on_bridge.kill().await;
    let state = on_bridge.inspect().await.state.unwrap();
    assert_eq!(state.running, Some(false));
}

async fn tcp_line(ip: &str, port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
    // memcached keeps the connection open: ask, then say goodbye.
    s.write_all(b"version\r\nquit\r\n").await.unwrap();
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf
}

/// `kill` is a crash of etcd, not of what etcd acknowledged: a write
/// answered just before the SIGKILL is there after the restart. (etcd
/// 3.5.0-3.5.2 can lose it, etcd issue 13766; the harness makes those
/// commit first, see `EtcdCluster::kill`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_write_acknowledged_before_a_kill_survives_the_restart() {
    let mut etcd = Etcd::single().await;
    for n in 0..15 {
        let value = format!("v{n}");
        let rev = etcd
            .client()
            .await
            .put("/harness/kill/k", value.as_str())
            .await
            .unwrap();
        etcd.kill(0);
        etcd.restart(0).await;
        let got = etcd.client().await.get("/harness/kill/k").await.unwrap();
        assert_eq!(
            got.as_ref().map(|n| (n.mod_revision(), n.value_str())),
            Some((rev, Some(value.as_str()))),
            "round {n}: the write acknowledged at revision {rev} before the kill; etcd now at {}",
            etcd.revision().await
        );
    }
}
