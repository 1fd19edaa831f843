//! --metrics-addr on both tools: Prometheus text that moves with reality.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use harness::proc::{Proc, discover, sidekick};
use harness::{Etcd, eventually_async};

async fn scrape(addr: &str) -> Option<String> {
    request(addr, "GET /metrics HTTP/1.1", "").await
}

/// One request on its own connection (`Connection: close`); the whole answer.
async fn request(addr: &str, line: &str, headers: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("{line}\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    Some(buf)
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

async fn wait_metric(addr: &str, series: &str, want: impl Fn(f64) -> bool) -> String {
    eventually_async(
        Duration::from_secs(10),
        format!("{series} on {addr}"),
        || async {
            let text = scrape(addr).await?;
            want(value(&text, series)?).then_some(text)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sidekick_and_discover_export_what_they_do() {
    let mut etcd = Etcd::single().await;
    let sk_addr_port = harness::Port::reserve();
    let sk_addr = sk_addr_port.addr();
    let _sk = Proc::spawn(sidekick(
        &etcd,
        &[
            "--key",
            "/services/m/1",
            "--ip",
            "10.9.0.1",
            "--ttl",
            "3",
            "--metrics-addr",
            &sk_addr,
        ],
    ));
    let text = wait_metric(&sk_addr, "sidekick_registrations_total", |v| v >= 1.0).await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    // The content type follows Accept: OpenMetrics when asked for, else
    // Prometheus' classic text format; other paths are 404, other methods 405.
    assert!(
        text.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    let om = request(
        &sk_addr,
        "GET /metrics HTTP/1.1",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    )
    .await
    .unwrap();
    assert!(
        om.to_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0")
            && om.trim_end().ends_with("# EOF"),
        "{om}"
    );
    let missing = request(&sk_addr, "GET /nope HTTP/1.1", "").await.unwrap();
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post = request(&sk_addr, "POST /metrics HTTP/1.1", "Content-Length: 0\r\n")
        .await
        .unwrap();
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    assert_eq!(
        value(&text, "sidekick_lease_grants_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, "sidekick_up"), Some(1.0), "{text}");
    assert!(
        text.contains("# TYPE sidekick_keepalive_failures counter")
            && text.trim_end().ends_with("# EOF"),
        "{text}"
    );

    let d_addr_port = harness::Port::reserve();
    let d_addr = d_addr_port.addr();
    let d = Proc::spawn(discover(
        &etcd,
        &["watch", "/services/m", "--metrics-addr", &d_addr],
    ));
    d.wait_stdout(Duration::from_secs(10), "get line", |l| {
        l.contains("\"get\"")
    })
    .await;
    let c = etcd.client().await;
    c.put("/services/m/2", "a").await.unwrap();
    c.put("/services/m/2", "a").await.unwrap();
    c.delete("/services/m/2").await.unwrap();
    let text = wait_metric(&d_addr, "discover_events_total{action=\"delete\"}", |v| {
        v >= 1.0
    })
    .await;
    assert_eq!(
        value(&text, "discover_events_total{action=\"set\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "discover_events_total{action=\"update\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, "discover_up"), Some(1.0), "{text}");

    // An etcd restart shows as a reconnect on the watcher and a failed
    // keep-alive round on the sidekick.
    etcd.kill(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    etcd.restart(0).await;
    wait_metric(&d_addr, "discover_watch_reconnects_total", |v| v >= 1.0).await;
    wait_metric(&sk_addr, "sidekick_keepalive_failures_total", |v| v >= 1.0).await;
    let text = wait_metric(&sk_addr, "sidekick_up", |v| v == 1.0).await;
    // The lease survived the restart: no new grant, no new registration.
    assert_eq!(
        value(&text, "sidekick_lease_grants_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "sidekick_registrations_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "sidekick_lease_losses_total"),
        Some(0.0),
        "{text}"
    );
    // A lease revoked behind its back is a loss, and a new grant.
    let lease = c
        .get("/services/m/1")
        .await
        .unwrap()
        .unwrap()
        .lease()
        .unwrap();
    etcd.raw_client().await.lease_revoke(lease.0).await.unwrap();
    let text = wait_metric(&sk_addr, "sidekick_lease_losses_total", |v| v == 1.0).await;
    assert_eq!(
        value(&text, "sidekick_lease_grants_total"),
        Some(2.0),
        "{text}"
    );
    println!(
        "METRICS sidekick after an etcd restart:\n{}",
        text.lines()
            .filter(|l| l.starts_with("sidekick_"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Child restarts are counted by kind.
    let x_addr_port = harness::Port::reserve();
    let x_addr = x_addr_port.addr();
    let _x = Proc::spawn(discover(
        &etcd,
        &[
            "watch",
            "/services/m",
            "--metrics-addr",
            &x_addr,
            "--exec",
            "sleep",
            "60",
        ],
    ));
    // Its watch is live (the --exec mode reports it too), so the next put
    // is a change the child must get.
    wait_metric(&x_addr, "discover_up", |v| v == 1.0).await;
    c.put("/services/m/3", "b").await.unwrap();
    wait_metric(
        &x_addr,
        "discover_child_restarts_total{kind=\"restart\"}",
        |v| v >= 1.0,
    )
    .await;
    // Cut off and back: a reconnect, and up again.
    etcd.kill(0);
    wait_metric(&x_addr, "discover_up", |v| v == 0.0).await;
    etcd.restart(0).await;
    wait_metric(&x_addr, "discover_watch_reconnects_total", |v| v >= 1.0).await;
    wait_metric(&x_addr, "discover_up", |v| v == 1.0).await;
}
