//! End to end: a container started under `sidekick --all` resolves through
//! `discover serve`; `docker stop` takes it out of the answer; a `kill -9`
//! of the agent takes it out once the lease expires. Real Docker, real
//! etcd, real dig.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod serve_support;

use std::time::Duration;

use harness::host_agent::{Fleet, Spec, host_agent};
use harness::{Etcd, Proc, unique_prefix};
use nix::sys::signal::Signal;
use serve_support::Serve;
use tokio::time::Instant;

/// A busy 2-core machine starting containers.
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn containers_under_the_host_agent_resolve_and_leave_the_answer() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-agent");
    let fleet = Fleet::new("serve");
    let spec = |s: &str| {
        Spec::new(s)
            .label("discovery.key", &format!("{p}/web/%n"))
            .label("discovery.port", "8080")
            .tcp(8080)
    };
    fleet.start(vec![spec("a"), spec("b")]).await;
    let ttl = "3";
    let mut agent = Proc::spawn(host_agent(
        &etcd,
        &fleet,
        &["--ttl", ttl, "--allow-prefix", &p],
    ));
    let s = Serve::start(&etcd, &[&p], false).await;
    let running = fleet.running();
    let ip = |n: &str| running[&fleet.name(n)].clone();
    let (a, b) = (ip("a"), ip("b"));
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    let web = "web.discovery.internal.";
    s.dig_until(WAIT, "both containers", &[web, "A"], |d| {
        d.data("A") == both
    })
    .await;
    // Each container by its own name, and SRV with its port.
    let one = format!("{}.web.discovery.internal.", fleet.name("a"));
    assert_eq!(
        s.dig(&[&one, "A"]).await.data("A"),
        std::slice::from_ref(&a)
    );
    let srv = s.dig(&["_web._tcp.discovery.internal.", "SRV"]).await;
    assert!(
        srv.data("SRV").contains(&format!("0 1 8080 {one}")),
        "{}",
        srv.raw
    );

    // docker stop: out of the answer (the agent deletes the key at once).
    let t = Instant::now();
    fleet.cli(&["stop", "-t", "1"], &["b"]).await;
    s.dig_until(WAIT, "b gone after docker stop", &[web, "A"], |d| {
        d.data("A") == std::slice::from_ref(&a)
    })
    .await;
    println!("serve: docker stop to out of the answer: {:?}", t.elapsed());

    // kill -9 of the agent: the key stays until its lease expires, then
    // the name is gone.
    agent.signal(Signal::SIGKILL);
    agent.wait_exit(WAIT).await;
    let killed = Instant::now();
    assert_eq!(
        s.dig(&[web, "A"]).await.data("A"),
        std::slice::from_ref(&a),
        "still registered right after the kill"
    );
    let d = s
        .dig_until(WAIT, "a gone once the lease expired", &[web, "A"], |d| {
            d.status == "NXDOMAIN"
        })
        .await;
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "gone only with the lease ({ttl} s), not before: {took:?}\n{}",
        d.raw
    );
    println!("serve: agent SIGKILL to out of the answer: {took:?} (lease TTL {ttl} s)");
}
