//! discovery::ConnectOptions against real etcd processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use discovery::{ConnectOptions, Error};
use harness::{Etcd, EtcdCluster};

/// An endpoint nothing listens on, for as long as the port is held: the
/// harness's reservation keeps every test's server off it.
fn dead_endpoint() -> (harness::Port, String) {
    let port = harness::Port::reserve();
    let url = format!("http://{}", port.addr());
    (port, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_checks_that_etcd_answers_and_names_the_endpoints() {
    let (_reserved, dead) = dead_endpoint();
    let t = tokio::time::Instant::now();
    let err = ConnectOptions::new()
        .with_endpoints([dead.clone()])
        .with_dial_timeout(Duration::from_millis(500))
        .with_request_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    // A library error names etcdctl's variable, never a tool's flag.
    assert!(
        msg.contains(&dead) && msg.contains("ETCDCTL_ENDPOINTS") && !msg.contains("--"),
        "{msg}"
    );
    assert_eq!(err.settings(), [discovery::Setting::Endpoints]);
    // The dial timeout and the request timeout, plus slack for a loaded
    // machine: not a retry loop that goes on.
    assert!(
        t.elapsed() < Duration::from_millis(500) + Duration::from_secs(1) + Duration::from_secs(3),
        "fails within the timeouts: {:?}",
        t.elapsed()
    );
    assert!(err.is_transient());

    let etcd = Etcd::single().await;
    let ok = ConnectOptions::new()
        .with_endpoints([etcd.endpoint(0)])
        .connect()
        .await
        .unwrap();
    assert_eq!(ok.endpoints(), [etcd.endpoint(0)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_environment_and_a_dead_member_among_live_ones() {
    let mut cluster = EtcdCluster::new(3).await;
    // A dead follower (a dead leader is the audits' business: writes in
    // flight during an election may time out, and callers retry).
    let leader = cluster.leader().await;
    cluster.kill((leader + 1) % 3);
    let eps = cluster.endpoints().join(",");
    let opts =
        ConnectOptions::from_lookup(|k| (k == "ETCDCTL_ENDPOINTS").then(|| eps.clone())).unwrap();
    let c = opts.connect().await.unwrap();
    // Every call goes through at the first try, whichever member the
    // balancer picks: the library moves on from the dead one itself.
    for i in 0..50 {
        c.put(&format!("/connect/k{i}"), "v").await.unwrap();
        assert!(c.get(&format!("/connect/k{i}")).await.unwrap().is_some());
    }
    assert_eq!(c.get_prefix("/connect").await.unwrap().nodes().len(), 50);
}

#[test]
fn bad_endpoints_are_refused_before_any_io() {
    for (eps, why) in [
        (vec!["ftp://h:1"], "scheme"),
        (vec!["localhost"], "no port"),
        (vec!["http://:2379"], "host is empty"),
        (vec!["http://h:70000"], "port"),
    ] {
        let err = ConnectOptions::new()
            .with_endpoints(eps.clone())
            .validate()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidEndpoint { .. }),
            "{eps:?}: {err:?}"
        );
        assert!(err.to_string().contains(why), "{eps:?}: {err}");
    }
}
