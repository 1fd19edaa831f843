//! P1-P3: sidekick against the chapter's bash loop, 20 containers each,
//! side by side on the same etcd and Docker engine.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use tokio::time::Instant;

use harness::docker::{ContainerSpec, FLANNEL_NETWORK, TestContainer, unique_name};
use harness::proc::{Proc, discover, sidekick};
use harness::{Docker, Etcd, RawWatch};

use crate::peer;
use crate::v2::V2Watch;

#[derive(Debug, Serialize, Deserialize)]
pub struct Agents {
    pub stop_ours: Vec<Duration>,
    pub stop_peer: Vec<Duration>,
    pub start_ours: Vec<Duration>,
    /// How long Docker itself took to answer `docker start`.
    pub docker_start: Vec<Duration>,
    pub start_peer: Vec<Duration>,
    pub move_ours: Vec<Duration>,
    pub move_peer: Vec<Duration>,
    /// How the loop announced each move: "update" (missed by consumers
    /// that act on set) or "set".
    pub move_peer_actions: Vec<String>,
}

fn quiet_sidekick(etcd: &Etcd, args: &[&str]) -> Proc {
    let mut c = sidekick(etcd, args);
    // Quiet while measured; BENCH_SIDEKICK_LOG=debug to see why one misbehaves.
    c.env(
        "RUST_LOG",
        std::env::var("BENCH_SIDEKICK_LOG").unwrap_or_else(|_| "warn".into()),
    );
    Proc::spawn(c)
}

async fn wait<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "bench: timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn run(etcd: &Etcd, docker: &Docker, dir: &std::path::Path, n: usize) -> Agents {
    let v2_addr = etcd.endpoint(0).trim_start_matches("http://").to_owned();
    let script = peer::script(dir, None);
    let base = unique_name("bench");

    // --- P1 and P2: stop and start on the default bridge.
    eprintln!("bench: P1/P2 with {n} containers per side");
    let mut ours: Vec<TestContainer> = Vec::new();
    let mut peers: Vec<TestContainer> = Vec::new();
    for i in 0..n {
        ours.push(
            docker
                .run(ContainerSpec::new(format!("{base}-o{i}")).tcp(11211))
                .await,
        );
        peers.push(
            docker
                .run(ContainerSpec::new(format!("{base}-p{i}")).tcp(11211))
                .await,
        );
    }
    let raw = RawWatch::start(etcd, "/services/ours/").await;
    let v2 = V2Watch::start(&v2_addr, "/services/peer");
    let mut procs = Vec::new();
    for i in 0..n {
        procs.push(quiet_sidekick(
            etcd,
            &[
                "--key",
                &format!("/services/ours/{i}"),
                "--container",
                ours[i].name(),
            ],
        ));
        procs.push(peer::spawn(
            &script,
            &etcd.endpoint(0),
            "peer",
            i,
            peers[i].name(),
        ));
    }
    wait("every sidekick registered", Duration::from_secs(30), || {
        (raw.events().iter().filter(|e| e.put).count() >= n).then_some(())
    })
    .await;
    wait("every loop registered", Duration::from_secs(30), || {
        (v2.events().iter().filter(|e| e.action == "set").count() >= n).then_some(())
    })
    .await;

    let mut t_ours = Vec::new();
    let mut t_peer = Vec::new();
    for i in 0..n {
        t_ours.push(Instant::now());
        ours[i].stop().await;
        t_peer.push(Instant::now());
        peers[i].stop().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = |s: &str, i: usize| format!("/services/{s}/{i}");
    let stop_ours = wait("sidekick keys gone", Duration::from_secs(20), || {
        let ev = raw.events();
        (0..n)
            .map(|i| {
                ev.iter()
                    .find(|e| !e.put && e.key == key("ours", i) && e.at >= t_ours[i])
                    .map(|e| e.at - t_ours[i])
            })
            .collect::<Option<Vec<_>>>()
    })
    .await;
    let stop_peer = wait("loop keys gone", Duration::from_secs(30), || {
        let ev = v2.events();
        (0..n)
            .map(|i| {
                ev.iter()
                    .find(|e| {
                        (e.action == "expire" || e.action == "delete")
                            && e.key == key("peer", i)
                            && e.at >= t_peer[i]
                    })
                    .map(|e| e.at - t_peer[i])
            })
            .collect::<Option<Vec<_>>>()
    })
    .await;

    // Timed from Docker's answer to `docker start` (the container runs from
    // then on); Docker's own start time is the same for both and reported apart.
    let mut t_ours = Vec::new();
    let mut t_peer = Vec::new();
    let mut docker_start = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        ours[i].start().await;
        t_ours.push(Instant::now());
        docker_start.push(t.elapsed());
        peers[i].start().await;
        t_peer.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start_ours = wait("sidekick keys back", Duration::from_secs(20), || {
        let ev = raw.events();
        (0..n)
            .map(|i| {
                ev.iter()
                    .find(|e| {
                        e.put && e.key == key("ours", i) && e.at + docker_start[i] >= t_ours[i]
                    })
                    .map(|e| e.at.saturating_duration_since(t_ours[i]))
            })
            .collect::<Option<Vec<_>>>()
    })
    .await;
    let start_peer = wait("loop keys back", Duration::from_secs(30), || {
        let ev = v2.events();
        (0..n)
            .map(|i| {
                ev.iter()
                    .find(|e| {
                        e.action == "set"
                            && e.key == key("peer", i)
                            && e.at + docker_start[i] >= t_peer[i]
                    })
                    .map(|e| e.at.saturating_duration_since(t_peer[i]))
            })
            .collect::<Option<Vec<_>>>()
    })
    .await;
    drop(procs);
    for c in ours.into_iter().chain(peers) {
        c.remove().await;
    }

    // --- P3: the container moves to a new address (on a user network, so
    // that another container can take its old address while it is stopped).
    eprintln!("bench: P3 with {n} moves per side");
    let moved = peer::script(dir, Some(FLANNEL_NETWORK));
    let mut ours = Vec::new();
    let mut peers = Vec::new();
    for i in 0..n {
        ours.push(
            docker
                .run(
                    ContainerSpec::new(format!("{base}-mo{i}"))
                        .tcp(11211)
                        .network(FLANNEL_NETWORK),
                )
                .await,
        );
        peers.push(
            docker
                .run(
                    ContainerSpec::new(format!("{base}-mp{i}"))
                        .tcp(11211)
                        .network(FLANNEL_NETWORK),
                )
                .await,
        );
    }
    let consumer = Proc::spawn(discover(etcd, &["watch", "/services/mvours"]));
    // Its listing first: a sidekick that registered before it would show up
    // in the snapshot, not as a set line, and the count below would fall short.
    consumer
        .wait_stdout(Duration::from_secs(10), "the consumer's listing", |l| {
            l.contains("\"get\"")
        })
        .await;
    let v2m = V2Watch::start(&v2_addr, "/services/mvpeer");
    let mut procs = Vec::new();
    for i in 0..n {
        procs.push(quiet_sidekick(
            etcd,
            &[
                "--key",
                &format!("/services/mvours/{i}"),
                "--container",
                ours[i].name(),
                "--network",
                FLANNEL_NETWORK,
            ],
        ));
        procs.push(peer::spawn(
            &moved,
            &etcd.endpoint(0),
            "mvpeer",
            i,
            peers[i].name(),
        ));
    }
    // Twenty loops forking docker, jq and etcdctl at once take a while on
    // two cores; say which side is short if it takes too long.
    let counts = || {
        let sets = consumer
            .stdout_lines()
            .iter()
            .filter(|l| l.contains("\"set\""))
            .count();
        let peer_sets = v2m.events().iter().filter(|e| e.action == "set").count();
        (sets, peer_sets)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (sets, peer_sets) = counts();
        if sets >= n && peer_sets >= n {
            break;
        }
        if Instant::now() >= deadline {
            let mut raw = etcd.raw_client().await;
            let got = raw
                .get(
                    "/services/mvours/",
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .unwrap();
            let keys: Vec<String> = got
                .kvs()
                .iter()
                .map(|kv| {
                    format!(
                        "{}={}",
                        kv.key_str().unwrap_or("?"),
                        kv.value_str().unwrap_or("?")
                    )
                })
                .collect();
            let missing: Vec<usize> = (0..n)
                .filter(|i| {
                    !keys
                        .iter()
                        .any(|k| k.starts_with(&format!("/services/mvours/{i}=")))
                })
                .collect();
            for i in &missing {
                eprintln!(
                    "bench: sidekick {i} (container {}):\n{}",
                    ours[*i].name(),
                    procs[2 * i].dump()
                );
            }
            eprintln!("bench: the consumer:\n{}", consumer.dump());
            panic!(
                "bench: movers registered: {sets} of {n} set lines, {peer_sets} of {n} loops after 60 s; etcd holds {} keys {keys:?}; missing {missing:?}",
                keys.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut moves: Vec<(Instant, String, Instant, String)> = Vec::new();
    for i in 0..n {
        let mut pair = Vec::new();
        for c in [&ours[i], &peers[i]] {
            let old = c
                .ip(FLANNEL_NETWORK)
                .await
                .expect("address before the move");
            c.stop().await;
            // A new address outside Docker's allocation range, as the tests
            // move containers: squatting the old one raced with containers
            // Docker placed for other runs ("Address already in use").
            let moved = harness::docker::move_stopped_container(c.name(), FLANNEL_NETWORK, &old);
            c.start().await;
            let t = Instant::now();
            let new = c.ip(FLANNEL_NETWORK).await.expect("address after the move");
            assert_eq!(new, moved);
            pair.push((t, new));
        }
        moves.push((pair[0].0, pair[0].1.clone(), pair[1].0, pair[1].1.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let move_ours = wait(
        "consumers saw every move as a set",
        Duration::from_secs(20),
        || {
            let lines = consumer.stdout_timed();
            moves
                .iter()
                .map(|(t, ip, _, _)| {
                    lines
                        .iter()
                        .find(|(_, l)| {
                            l.contains("\"set\"") && l.contains(&format!("\"value\":\"{ip}\""))
                        })
                        .map(|(at, _)| at.saturating_duration_since(*t))
                })
                .collect::<Option<Vec<_>>>()
        },
    )
    .await;
    let peer_moves = wait(
        "the loop wrote every new address",
        Duration::from_secs(30),
        || {
            let ev = v2m.events();
            moves
                .iter()
                .map(|(_, _, t, ip)| {
                    ev.iter()
                        .find(|e| e.value.as_deref() == Some(ip.as_str()))
                        .map(|e| (e.at.saturating_duration_since(*t), e.action.clone()))
                })
                .collect::<Option<Vec<_>>>()
        },
    )
    .await;
    drop(procs);
    drop(consumer);
    for c in ours.into_iter().chain(peers) {
        c.remove().await;
    }
    Agents {
        stop_ours,
        stop_peer,
        start_ours,
        start_peer,
        docker_start,
        move_ours,
        move_peer: peer_moves.iter().map(|(d, _)| *d).collect(),
        move_peer_actions: peer_moves.into_iter().map(|(_, a)| a).collect(),
    }
}
